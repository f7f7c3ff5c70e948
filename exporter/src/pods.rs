//! Kubernetes pods as the node itself knows them, without asking the API server.
//!
//! A process's cgroup path names its pod's uid (the kubelet builds it, with either cgroup
//! driver); the kubelet's log directories, `/var/log/pods/<namespace>_<name>_<uid>`, map that
//! uid to the pod's namespace and name. Both exist on every node whatever the container
//! runtime, and both are plain files: reading them needs no credentials and no network.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where the kubelet keeps pod log directories; `TRACEPKT_POD_LOGS` overrides it (for a node
/// whose kubelet logs elsewhere, or a container that mounts it elsewhere).
pub const DEFAULT_LOG_ROOT: &str = "/var/log/pods";

/// The file-system roots pods are read from.
#[derive(Debug, Clone)]
pub struct Roots {
    pub proc: PathBuf,
    pub logs: PathBuf,
}

impl Roots {
    pub fn from_env() -> Self {
        Roots {
            proc: PathBuf::from("/proc"),
            logs: std::env::var_os("TRACEPKT_POD_LOGS")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_LOG_ROOT)),
        }
    }
}

/// A pod as a user names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodName {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for PodName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl std::str::FromStr for PodName {
    type Err = String;

    /// `namespace/name`, each a DNS label or subdomain as Kubernetes allows them.
    fn from_str(s: &str) -> Result<Self, String> {
        let Some((namespace, name)) = s.split_once('/') else {
            return Err(format!("{s:?} is not namespace/name"));
        };
        let valid = |part: &str, max: usize| {
            !part.is_empty()
                && part.len() <= max
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
                && !part.starts_with(['-', '.'])
                && !part.ends_with(['-', '.'])
        };
        if !valid(namespace, 63) || namespace.contains('.') {
            return Err(format!("{namespace:?} is not a Kubernetes namespace name"));
        }
        if !valid(name, 253) {
            return Err(format!("{name:?} is not a Kubernetes pod name"));
        }
        Ok(PodName {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

/// The pod uid in a `/proc/<pid>/cgroup` text, for the kubelet's cgroupfs
/// (`/kubepods/burstable/pod<uid>/…`) and systemd (`kubepods-besteffort-pod<uid_with_underscores>.slice`)
/// drivers.
pub fn pod_uid_of_cgroup(text: &str) -> Option<String> {
    for line in text.lines() {
        let path = line.rsplit(':').next().unwrap_or_default();
        if !path.contains("kubepods") {
            continue;
        }
        for seg in path.split('/') {
            let Some(i) = seg.rfind("pod") else { continue };
            let uid = seg[i + 3..].trim_end_matches(".slice").replace('_', "-");
            if uid.len() >= 32 && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                return Some(uid);
            }
        }
    }
    None
}

/// uid → pod, from the kubelet's log directories. Namespace and pod names cannot hold `_`, so
/// the directory name splits without ambiguity.
pub fn pods_by_uid(log_root: &Path) -> HashMap<String, PodName> {
    let mut pods = HashMap::new();
    let Ok(entries) = std::fs::read_dir(log_root) else {
        return pods;
    };
    for e in entries.flatten() {
        let dir = e.file_name();
        let Some((namespace, rest)) = dir.to_str().and_then(|d| d.split_once('_')) else {
            continue;
        };
        let Some((name, uid)) = rest.rsplit_once('_') else {
            continue;
        };
        if namespace.is_empty() || name.is_empty() || uid.is_empty() {
            continue;
        }
        pods.insert(
            uid.to_owned(),
            PodName {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            },
        );
    }
    pods
}

/// The inode of `/proc/<pid>/ns/net`: which network namespace the process is in.
pub fn netns_inode(proc_root: &Path, pid: u32) -> Option<u32> {
    std::fs::metadata(proc_root.join(pid.to_string()).join("ns/net"))
        .ok()
        .map(|m| m.ino() as u32)
}

/// Process ids under `proc_root`, in no particular order.
pub fn pids(proc_root: &Path) -> impl Iterator<Item = u32> {
    std::fs::read_dir(proc_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
}

/// The pod a process belongs to, by uid.
pub fn pod_uid_of_pid(proc_root: &Path, pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
    pod_uid_of_cgroup(&text)
}

/// Finds the network namespace of a pod, by name, for a probe that starts inside it. The
/// process found is remembered and checked again on each use: a pod that was deleted and
/// created again under the same name is found anew, never mistaken for the old one.
#[derive(Debug)]
pub struct Locator {
    roots: Roots,
    pod: PodName,
    found: Option<(u32, String)>,
}

impl Locator {
    pub fn new(roots: Roots, pod: PodName) -> Self {
        Locator {
            roots,
            pod,
            found: None,
        }
    }

    /// `/proc/<pid>/ns/net` of a process of the pod, or why there is none.
    pub fn netns(&mut self) -> Result<PathBuf, String> {
        let dir_of = |uid: &str| {
            self.roots
                .logs
                .join(format!("{}_{}_{uid}", self.pod.namespace, self.pod.name))
        };
        if let Some((pid, uid)) = &self.found
            && dir_of(uid).is_dir()
            && pod_uid_of_pid(&self.roots.proc, *pid).as_deref() == Some(uid.as_str())
        {
            return Ok(self.path(*pid));
        }
        self.found = None;
        let uids: Vec<String> = pods_by_uid(&self.roots.logs)
            .into_iter()
            .filter(|(_, p)| *p == self.pod)
            .map(|(uid, _)| uid)
            .collect();
        if uids.is_empty() {
            return Err(format!(
                "pod {} not found on this node (no {} directory)",
                self.pod,
                dir_of("*").display()
            ));
        }
        let pid = pids(&self.roots.proc)
            .find(|&pid| pod_uid_of_pid(&self.roots.proc, pid).is_some_and(|u| uids.contains(&u)))
            .ok_or_else(|| format!("pod {} has no running process on this node", self.pod))?;
        let uid = pod_uid_of_pid(&self.roots.proc, pid).expect("just read");
        self.found = Some((pid, uid));
        Ok(self.path(pid))
    }

    fn path(&self, pid: u32) -> PathBuf {
        self.roots.proc.join(pid.to_string()).join("ns/net")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d";

    #[test]
    fn pod_uids_from_both_cgroup_drivers() {
        let id = "4f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0";
        let systemd = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{id}.scope\n",
            UID.replace('-', "_")
        );
        assert_eq!(pod_uid_of_cgroup(&systemd).as_deref(), Some(UID));
        let cgroupfs = format!("12:pids:/kubepods/burstable/pod{UID}/{id}\n0::/\n");
        assert_eq!(pod_uid_of_cgroup(&cgroupfs).as_deref(), Some(UID));
        assert_eq!(
            pod_uid_of_cgroup(&format!("0::/system.slice/docker-{id}.scope\n")),
            None
        );
        assert_eq!(pod_uid_of_cgroup("0::/user.slice/podman-1.scope\n"), None);
        assert_eq!(pod_uid_of_cgroup("0::/\n"), None);
    }

    #[test]
    fn pod_names_parse_and_refuse_what_kubernetes_refuses() {
        let p: PodName = "kube-system/coredns-5d78c9869d-abcde".parse().unwrap();
        assert_eq!(p.namespace, "kube-system");
        assert_eq!(p.to_string(), "kube-system/coredns-5d78c9869d-abcde");
        for bad in [
            "web",
            "/web",
            "default/",
            "Default/web",
            "a.b/web",
            "default/web_1",
            "default/-web",
        ] {
            assert!(bad.parse::<PodName>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn log_directories_name_pods_by_uid() {
        let root = std::env::temp_dir().join(format!("tracepkt-pods-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join(format!("kube-system_coredns-5d78c9869d-abcde_{UID}"))).unwrap();
        std::fs::create_dir_all(root.join("not-a-pod-dir")).unwrap();
        let pods = pods_by_uid(&root);
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[UID].to_string(), "kube-system/coredns-5d78c9869d-abcde");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn the_locator_finds_the_pods_process_and_notices_a_new_pod_under_the_old_name() {
        let root = std::env::temp_dir().join(format!("tracepkt-locator-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (proc_root, logs) = (root.join("proc"), root.join("logs"));
        let process = |pid: u32, uid: &str| {
            std::fs::create_dir_all(proc_root.join(format!("{pid}/ns"))).unwrap();
            std::fs::write(proc_root.join(format!("{pid}/ns/net")), b"").unwrap();
            std::fs::write(
                proc_root.join(format!("{pid}/cgroup")),
                format!("0::/kubepods/besteffort/pod{uid}/abc\n"),
            )
            .unwrap();
        };
        process(7, "00000000-0000-0000-0000-000000000001");
        process(42, UID);
        std::fs::create_dir_all(logs.join(format!("default_web-0_{UID}"))).unwrap();
        let roots = Roots {
            proc: proc_root.clone(),
            logs: logs.clone(),
        };
        let mut l = Locator::new(roots.clone(), "default/web-0".parse().unwrap());
        assert_eq!(l.netns().unwrap(), proc_root.join("42/ns/net"));

        // The pod is deleted and created again: a new uid, a new process.
        let new_uid = "99999999-0000-0000-0000-000000000009";
        std::fs::remove_dir_all(logs.join(format!("default_web-0_{UID}"))).unwrap();
        std::fs::create_dir_all(logs.join(format!("default_web-0_{new_uid}"))).unwrap();
        process(43, new_uid);
        assert_eq!(l.netns().unwrap(), proc_root.join("43/ns/net"));

        std::fs::remove_dir_all(proc_root.join("43")).unwrap();
        let e = l.netns().unwrap_err();
        assert_eq!(e, "pod default/web-0 has no running process on this node");
        let e = Locator::new(roots, "default/gone".parse().unwrap())
            .netns()
            .unwrap_err();
        assert!(e.starts_with("pod default/gone not found on this node"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
