//! Human names for what the kernel reports as numbers: network namespace inodes, drop
//! reasons, kernel addresses.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::kernel::loader::DropReasons;
use crate::kernel::symbols::Symbols;

/// Network namespace inode → name: the bind mounts under `/run/netns` (what `ip netns add`
/// creates) first; otherwise the container or Kubernetes pod of a process living in it, from
/// its cgroup (`pod:<uid>`, `container:<id>`).
pub struct NetnsNames {
    dir: PathBuf,
    proc_root: PathBuf,
    by_inode: HashMap<u32, String>,
    /// Kept apart: `/run/netns` is rescanned more often and must not flush these.
    containers: HashMap<u32, String>,
    scanned: Option<Instant>,
    procs_scanned: Option<Instant>,
}

/// A miss rescans `/run/netns` at most this often: namespaces come and go, lookups are per hop.
const RESCAN: Duration = Duration::from_millis(500);
/// Walking `/proc` costs more: at most this often.
const RESCAN_PROCS: Duration = Duration::from_secs(5);

impl NetnsNames {
    pub fn new() -> Self {
        Self::with_dirs(Path::new("/run/netns"), Path::new("/proc"))
    }

    #[cfg(test)]
    pub fn with_dir(dir: &Path) -> Self {
        Self::with_dirs(dir, Path::new("/nonexistent"))
    }

    pub fn with_dirs(dir: &Path, proc_root: &Path) -> Self {
        NetnsNames {
            dir: dir.to_owned(),
            proc_root: proc_root.to_owned(),
            by_inode: HashMap::new(),
            containers: HashMap::new(),
            scanned: None,
            procs_scanned: None,
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

    /// Names namespaces after the container or pod of the first process found in each.
    fn scan_procs(&mut self) {
        self.procs_scanned = Some(Instant::now());
        self.containers.clear();
        let Ok(entries) = std::fs::read_dir(&self.proc_root) else {
            return;
        };
        for e in entries.flatten() {
            if !e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(meta) = std::fs::metadata(e.path().join("ns/net")) else {
                continue;
            };
            let inode = meta.ino() as u32;
            if self.containers.contains_key(&inode) {
                continue;
            }
            let cgroup = std::fs::read_to_string(e.path().join("cgroup")).unwrap_or_default();
            if let Some(label) = container_of_cgroup(&cgroup) {
                self.containers.insert(inode, label);
            }
        }
    }

    pub fn name(&mut self, inode: u32) -> Option<String> {
        if inode == 0 {
            return None;
        }
        let known = |me: &Self| me.by_inode.get(&inode).or_else(|| me.containers.get(&inode)).cloned();
        if let Some(n) = known(self) {
            return Some(n);
        }
        if self.scanned.is_none_or(|t| t.elapsed() >= RESCAN) {
            self.scan();
        }
        if !self.by_inode.contains_key(&inode) && self.procs_scanned.is_none_or(|t| t.elapsed() >= RESCAN_PROCS) {
            self.scan_procs();
        }
        known(self)
    }
}

/// `pod:<uid>` or `container:<12 hex>` from a `/proc/<pid>/cgroup` text, for the layouts of
/// the kubelet (cgroupfs and systemd drivers), Docker, containerd and CRI-O.
pub fn container_of_cgroup(text: &str) -> Option<String> {
    for line in text.lines() {
        let path = line.rsplit(':').next().unwrap_or_default();
        for seg in path.split('/') {
            // kubepods-besteffort-pod<uid>.slice, kubepods/burstable/pod<uid>
            if let Some(i) = seg.rfind("pod")
                && (seg.starts_with("kubepods") || path.contains("/kubepods"))
            {
                let uid: String = seg[i + 3..].trim_end_matches(".slice").replace('_', "-");
                if uid.len() >= 32 && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                    return Some(format!("pod:{uid}"));
                }
            }
        }
        for seg in path.split('/').rev() {
            let id = seg
                .trim_end_matches(".scope")
                .rsplit(['-', ':'])
                .next()
                .unwrap_or_default();
            if id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit()) {
                return Some(format!("container:{}", &id[..12]));
            }
        }
    }
    None
}

impl Default for NetnsNames {
    fn default() -> Self {
        Self::new()
    }
}

/// Everything needed to turn kernel events into readable hops.
pub struct Names {
    pub netns: NetnsNames,
    pub drop_reasons: DropReasons,
}

impl Names {
    pub fn new(drop_reasons: DropReasons) -> Self {
        Names {
            netns: NetnsNames::new(),
            drop_reasons,
        }
    }

    /// Symbolised kernel address; kallsyms is read on the first drop, not at start.
    pub fn location(&self, addr: u64) -> String {
        match Symbols::shared() {
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
    fn containers_and_pods_from_cgroups() {
        let id = "4f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0";
        assert_eq!(
            container_of_cgroup(&format!("0::/system.slice/docker-{id}.scope\n")),
            Some("container:4f1e2d3c4b5a".into())
        );
        assert_eq!(
            container_of_cgroup(&format!("12:pids:/docker/{id}\n")),
            Some("container:4f1e2d3c4b5a".into())
        );
        let k8s = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1a2b3c4d_5e6f_7a8b_9c0d_1e2f3a4b5c6d.slice/cri-containerd-{id}.scope\n"
        );
        assert_eq!(
            container_of_cgroup(&k8s),
            Some("pod:1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d".into())
        );
        let cgroupfs = format!("0::/kubepods/burstable/pod1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d/{id}\n");
        assert_eq!(
            container_of_cgroup(&cgroupfs),
            Some("pod:1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d".into())
        );
        assert_eq!(
            container_of_cgroup("0::/user.slice/user-0.slice/session-1.scope\n"),
            None
        );
        assert_eq!(container_of_cgroup("0::/\n"), None);
    }

    #[test]
    fn names_netns_after_the_container_of_a_process_in_it() {
        // A fake /proc: pid 42's netns is a file whose inode stands for the namespace.
        let root = std::env::temp_dir().join(format!("tracepkt-proc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("42/ns")).unwrap();
        std::fs::create_dir_all(root.join("self")).unwrap();
        std::fs::write(root.join("42/ns/net"), b"").unwrap();
        let id = "4f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0";
        std::fs::write(root.join("42/cgroup"), format!("0::/system.slice/docker-{id}.scope\n")).unwrap();
        let ino = std::fs::metadata(root.join("42/ns/net")).unwrap().ino() as u32;
        let mut n = NetnsNames::with_dirs(&root.join("no-run-netns"), &root);
        assert_eq!(n.name(ino).as_deref(), Some("container:4f1e2d3c4b5a"));
        std::fs::remove_dir_all(&root).unwrap();
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
