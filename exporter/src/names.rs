//! Human names for what the kernel reports as numbers: network namespace inodes, drop
//! reasons, kernel addresses.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::kernel::loader::DropReasons;
use crate::kernel::symbols::Symbols;
use crate::pods::{self, Roots};

/// Network namespace inode → name: the bind mounts under `/run/netns` (what `ip netns add`
/// creates) first; otherwise the pod (`namespace/name`, else `pod:<uid>`) or container
/// (`container:<id>`) of a process living in it, from its cgroup and the kubelet's pod log
/// directories.
///
/// Namespace inodes are reused once a namespace is gone, so a name found earlier is checked
/// against its source again before it is shown once it is older than [`RECHECK`]: the bind
/// mount or the process it came from must still be in that namespace. The maps hold only what
/// the latest scan found.
pub struct NetnsNames {
    dir: PathBuf,
    roots: Roots,
    bound: HashMap<u32, Found>,
    /// Kept apart: `/run/netns` is rescanned more often and must not flush these.
    processes: HashMap<u32, Found>,
    scanned: Option<Instant>,
    procs_scanned: Option<Instant>,
}

struct Found {
    name: String,
    /// The bind mount, or `/proc/<pid>/ns/net` of the process, the name was found through.
    source: PathBuf,
    checked: Instant,
}

/// A miss rescans `/run/netns` at most this often: namespaces come and go, lookups are per hop.
const RESCAN: Duration = Duration::from_millis(500);
/// Walking `/proc` costs more: at most this often.
const RESCAN_PROCS: Duration = Duration::from_secs(5);
/// A name older than this is checked against its source before it is shown again.
const RECHECK: Duration = Duration::from_secs(1);
/// Pods come and go without a lookup missing (a `pod:<uid>` whose log directory appeared
/// later): the process names are rebuilt at least this often while in use.
const REFRESH_PROCS: Duration = Duration::from_secs(30);

impl NetnsNames {
    pub fn new() -> Self {
        Self::with_dirs(Path::new("/run/netns"), Roots::from_env())
    }

    #[cfg(test)]
    pub fn with_dir(dir: &Path) -> Self {
        Self::with_dirs(
            dir,
            Roots {
                proc: "/nonexistent".into(),
                logs: "/nonexistent".into(),
            },
        )
    }

    pub fn with_dirs(dir: &Path, roots: Roots) -> Self {
        NetnsNames {
            dir: dir.to_owned(),
            roots,
            bound: HashMap::new(),
            processes: HashMap::new(),
            scanned: None,
            procs_scanned: None,
        }
    }

    fn scan(&mut self) {
        self.bound.clear();
        let now = Instant::now();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if let Ok(meta) = std::fs::metadata(e.path()) {
                    let name = e.file_name().to_string_lossy().into_owned();
                    self.bound.insert(
                        meta.ino() as u32,
                        Found {
                            name,
                            source: e.path(),
                            checked: now,
                        },
                    );
                }
            }
        }
        self.scanned = Some(now);
    }

    /// Names namespaces after the pod or container of the first process found in each.
    fn scan_procs(&mut self) {
        let now = Instant::now();
        self.procs_scanned = Some(now);
        self.processes.clear();
        let pods = pods::pods_by_uid(&self.roots.logs);
        for pid in pods::pids(&self.roots.proc) {
            let Some(inode) = pods::netns_inode(&self.roots.proc, pid) else {
                continue;
            };
            if self.processes.contains_key(&inode) {
                continue;
            }
            let dir = self.roots.proc.join(pid.to_string());
            let cgroup = std::fs::read_to_string(dir.join("cgroup")).unwrap_or_default();
            let name = match pods::pod_uid_of_cgroup(&cgroup) {
                Some(uid) => match pods.get(&uid) {
                    Some(pod) => pod.to_string(),
                    None => format!("pod:{uid}"),
                },
                None => match container_of_cgroup(&cgroup) {
                    Some(c) => c,
                    None => continue,
                },
            };
            self.processes.insert(
                inode,
                Found {
                    name,
                    source: dir.join("ns/net"),
                    checked: now,
                },
            );
        }
    }

    /// The name, if known and still true: its source must still be in namespace `inode`.
    fn known(&mut self, inode: u32) -> Option<String> {
        for map in [&mut self.bound, &mut self.processes] {
            let Some(f) = map.get_mut(&inode) else { continue };
            if f.checked.elapsed() < RECHECK {
                return Some(f.name.clone());
            }
            if std::fs::metadata(&f.source).is_ok_and(|m| m.ino() as u32 == inode) {
                f.checked = Instant::now();
                return Some(f.name.clone());
            }
            map.remove(&inode);
        }
        None
    }

    pub fn name(&mut self, inode: u32) -> Option<String> {
        if inode == 0 {
            return None;
        }
        if !self.processes.is_empty() && self.procs_scanned.is_some_and(|t| t.elapsed() >= REFRESH_PROCS) {
            self.scan_procs();
        }
        if let Some(n) = self.known(inode) {
            return Some(n);
        }
        if self.scanned.is_none_or(|t| t.elapsed() >= RESCAN) {
            self.scan();
        }
        if !self.bound.contains_key(&inode) && self.procs_scanned.is_none_or(|t| t.elapsed() >= RESCAN_PROCS) {
            self.scan_procs();
        }
        self.known(inode)
    }
}

/// `container:<12 hex>` from a `/proc/<pid>/cgroup` text, for the layouts of Docker,
/// containerd, CRI-O and podman.
pub fn container_of_cgroup(text: &str) -> Option<String> {
    for line in text.lines() {
        let path = line.rsplit(':').next().unwrap_or_default();
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

/// A netfilter verdict (`NF_*`), as iptables and nft spell it at the edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Drop,
    Accept,
    Stolen,
    Queue,
    Repeat,
    Stop,
    Unknown,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Drop => "DROP",
            Verdict::Accept => "ACCEPT",
            Verdict::Stolen => "STOLEN",
            Verdict::Queue => "QUEUE",
            Verdict::Repeat => "REPEAT",
            Verdict::Stop => "STOP",
            Verdict::Unknown => "UNKNOWN",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Netfilter verdict (`NF_*`, low byte).
pub fn nf_verdict(v: u32) -> Verdict {
    match v & 0xff {
        0 => Verdict::Drop,
        1 => Verdict::Accept,
        2 => Verdict::Stolen,
        3 => Verdict::Queue,
        4 => Verdict::Repeat,
        5 => Verdict::Stop,
        _ => Verdict::Unknown,
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
    fn containers_from_cgroups() {
        let id = "4f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0";
        assert_eq!(
            container_of_cgroup(&format!("0::/system.slice/docker-{id}.scope\n")),
            Some("container:4f1e2d3c4b5a".into())
        );
        assert_eq!(
            container_of_cgroup(&format!("12:pids:/docker/{id}\n")),
            Some("container:4f1e2d3c4b5a".into())
        );
        assert_eq!(
            container_of_cgroup(&format!("0::/kubepods/burstable/pod{UID}/cri-containerd-{id}.scope\n")),
            Some("container:4f1e2d3c4b5a".into())
        );
        assert_eq!(
            container_of_cgroup("0::/user.slice/user-0.slice/session-1.scope\n"),
            None
        );
        assert_eq!(container_of_cgroup("0::/\n"), None);
    }

    const UID: &str = "1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d";

    /// A fake `/proc` and `/var/log/pods`: pid `pid`'s netns is a file whose inode stands for
    /// the namespace.
    fn fake_process(root: &Path, pid: u32, cgroup: &str) -> u32 {
        std::fs::create_dir_all(root.join(format!("proc/{pid}/ns"))).unwrap();
        std::fs::write(root.join(format!("proc/{pid}/ns/net")), b"").unwrap();
        std::fs::write(root.join(format!("proc/{pid}/cgroup")), cgroup).unwrap();
        std::fs::metadata(root.join(format!("proc/{pid}/ns/net")))
            .unwrap()
            .ino() as u32
    }

    fn fake_roots(tag: &str) -> (PathBuf, NetnsNames) {
        let root = std::env::temp_dir().join(format!("tracepkt-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("logs")).unwrap();
        let names = NetnsNames::with_dirs(
            &root.join("no-run-netns"),
            Roots {
                proc: root.join("proc"),
                logs: root.join("logs"),
            },
        );
        (root, names)
    }

    #[test]
    fn names_netns_after_the_pod_or_container_of_a_process_in_it() {
        let (root, mut n) = fake_roots("proc");
        let id = "4f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0";
        let docker = fake_process(&root, 42, &format!("0::/system.slice/docker-{id}.scope\n"));
        let systemd_pod = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{id}.scope\n",
            UID.replace('-', "_")
        );
        let named = fake_process(&root, 43, &systemd_pod);
        std::fs::create_dir_all(root.join(format!("logs/shop_cart-7d9f_{UID}"))).unwrap();
        let other = "00000000-1111-2222-3333-444444444444";
        let unnamed = fake_process(&root, 44, &format!("1:pids:/kubepods/besteffort/pod{other}/{id}\n"));
        assert_eq!(n.name(docker).as_deref(), Some("container:4f1e2d3c4b5a"));
        assert_eq!(n.name(named).as_deref(), Some("shop/cart-7d9f"));
        assert_eq!(n.name(unnamed), Some(format!("pod:{other}")));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_name_is_not_shown_once_its_process_has_left_the_namespace() {
        let (root, mut n) = fake_roots("stale");
        let ino = fake_process(&root, 42, &format!("0::/kubepods/besteffort/pod{UID}/x\n"));
        std::fs::create_dir_all(root.join(format!("logs/default_web-0_{UID}"))).unwrap();
        assert_eq!(n.name(ino).as_deref(), Some("default/web-0"));
        // The pod is gone; the kernel may hand its namespace's inode to a new one.
        std::fs::remove_dir_all(root.join("proc/42")).unwrap();
        std::thread::sleep(RECHECK + Duration::from_millis(50));
        assert_eq!(n.name(ino), None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn netfilter_names() {
        assert_eq!(nf_hook(3), "OUTPUT");
        assert_eq!(nf_family(10), "ip6");
        assert_eq!(nf_verdict(1), Verdict::Accept);
        // Queue verdicts carry the queue number in the upper bits.
        assert_eq!(nf_verdict((5 << 16) | 3).as_str(), "QUEUE");
    }
}
