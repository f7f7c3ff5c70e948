//! Human names for what the kernel reports as numbers: network namespace inodes, drop
//! reasons, kernel addresses.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::kernel::symbols::Symbols;

/// Network namespace inode → name, from the bind mounts under `/run/netns` (what
/// `ip netns add` creates).
pub struct NetnsNames {
    dir: PathBuf,
    by_inode: HashMap<u32, String>,
    scanned: Option<Instant>,
}

/// A miss rescans at most this often: namespaces come and go, lookups are per hop.
const RESCAN: Duration = Duration::from_millis(500);

impl NetnsNames {
    pub fn new() -> Self {
        Self::with_dir(Path::new("/run/netns"))
    }

    pub fn with_dir(dir: &Path) -> Self {
        NetnsNames {
            dir: dir.to_owned(),
            by_inode: HashMap::new(),
            scanned: None,
        }
    }

    fn scan(&mut self) {
        self.by_inode.clear();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if let Ok(meta) = std::fs::metadata(e.path()) {
                    self.by_inode
                        .insert(meta.ino() as u32, e.file_name().to_string_lossy().into_owned());
                }
            }
        }
        self.scanned = Some(Instant::now());
    }

    pub fn name(&mut self, inode: u32) -> Option<String> {
        if inode == 0 {
            return None;
        }
        if let Some(n) = self.by_inode.get(&inode) {
            return Some(n.clone());
        }
        if self.scanned.is_none_or(|t| t.elapsed() >= RESCAN) {
            self.scan();
        }
        self.by_inode.get(&inode).cloned()
    }
}

impl Default for NetnsNames {
    fn default() -> Self {
        Self::new()
    }
}

/// Everything needed to turn kernel events into readable hops.
pub struct Names {
    pub netns: NetnsNames,
    pub drop_reasons: HashMap<u32, String>,
    symbols: OnceLock<Option<Symbols>>,
}

impl Names {
    pub fn new(drop_reasons: HashMap<u32, String>) -> Self {
        Names {
            netns: NetnsNames::new(),
            drop_reasons,
            symbols: OnceLock::new(),
        }
    }

    pub fn drop_reason(&self, v: u32) -> String {
        self.drop_reasons
            .get(&v)
            .cloned()
            .unwrap_or_else(|| format!("reason_{v}"))
    }

    /// Symbolised kernel address; kallsyms is read on the first drop, not at start.
    pub fn location(&self, addr: u64) -> String {
        match self.symbols.get_or_init(|| Symbols::load().ok()) {
            Some(s) => s.describe(addr),
            None => format!("{addr:#x}"),
        }
    }
}

/// Netfilter protocol family (`NFPROTO_*`) as nft spells it.
pub fn nf_family(pf: u8) -> &'static str {
    match pf {
        1 => "inet",
        2 => "ip",
        3 => "arp",
        5 => "netdev",
        7 => "bridge",
        10 => "ip6",
        _ => "unknown",
    }
}

/// Netfilter hook (`NF_INET_*`) as iptables spells it.
pub fn nf_hook(hook: u8) -> &'static str {
    match hook {
        0 => "PREROUTING",
        1 => "INPUT",
        2 => "FORWARD",
        3 => "OUTPUT",
        4 => "POSTROUTING",
        5 => "INGRESS",
        _ => "UNKNOWN",
    }
}

/// Netfilter verdict (`NF_*`, low byte).
pub fn nf_verdict(v: u32) -> &'static str {
    match v & 0xff {
        0 => "DROP",
        1 => "ACCEPT",
        2 => "STOLEN",
        3 => "QUEUE",
        4 => "REPEAT",
        5 => "STOP",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_netns_from_bind_mount_dir() {
        // Any file works for the lookup: the name is the entry, the key its inode.
        let dir = std::env::temp_dir().join(format!("tracepkt-netns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("blue"), b"").unwrap();
        let ino = std::fs::metadata(dir.join("blue")).unwrap().ino() as u32;
        let mut n = NetnsNames::with_dir(&dir);
        assert_eq!(n.name(ino).as_deref(), Some("blue"));
        assert_eq!(n.name(ino.wrapping_add(1)), None);
        assert_eq!(n.name(0), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn netfilter_names() {
        assert_eq!(nf_hook(3), "OUTPUT");
        assert_eq!(nf_family(10), "ip6");
        assert_eq!(nf_verdict(1), "ACCEPT");
        // Queue verdicts carry the queue number in the upper bits.
        assert_eq!(nf_verdict((5 << 16) | 3), "QUEUE");
    }
}
