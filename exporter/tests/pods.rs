//! Pod names on a node without Kubernetes: a real network namespace whose only process sits in
//! a cgroup named as the kubelet names a pod's, and a `/var/log/pods` stand-in
//! (`TRACEPKT_POD_LOGS`) naming that pod. tracepkt must show `namespace/pod` for the namespace,
//! start probes inside it from `--from-pod` and `from: {pod: ...}`, and say plainly when the pod
//! is gone.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const UID: &str = "7c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f";
const POD: &str = "shop/cart-6f7d9c-x2x4q";
const HOSTIF: &str = "tpkpod0";
const NET: &str = "198.18.120";

/// A cgroup v2 hierarchy to build the kubelet-like cgroup in (the unified one in hybrid mode).
fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == "cgroup2")
        .map(|f| PathBuf::from(f[1]))
}

/// A pod stand-in: a process in a new network namespace, in a cgroup named like a kubelet's
/// (systemd driver), joined to the host by a veth pair (`<NET>.1` here, `<NET>.2` there).
struct FakePod {
    _serial: std::sync::MutexGuard<'static, ()>,
    process: Child,
    cgroup: PathBuf,
    logs: TempDir,
    _cleanup: Cleanup,
}

impl FakePod {
    fn start(test: &str) -> Option<FakePod> {
        // One at a time: they share the veth, the cgroup and the addresses.
        static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(reason) = skip_reason() {
            skip(test, &reason);
            return None;
        }
        let Some(cg_root) = cgroup2_root() else {
            skip(test, "no cgroup v2 hierarchy is mounted");
            return None;
        };
        let mut cleanup = Cleanup::new();
        let process = Command::new("unshare")
            .args(["--net", "sleep", "300"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare");
        let pid = process.id();
        // unshare execs sleep once the namespace exists.
        wait_until(|| {
            std::fs::read_link(format!("/proc/{pid}/ns/net")).ok() != std::fs::read_link("/proc/self/ns/net").ok()
        });
        let cgroup = cg_root
            .join("kubepods.slice/kubepods-besteffort.slice")
            .join(format!("kubepods-besteffort-pod{}.slice", UID.replace('-', "_")))
            .join("cri-containerd-0f9e8d7c6b5a49382716a5b4c3d2e1f00112233445566778899aabbccddeeff.scope");
        std::fs::create_dir_all(&cgroup).expect("create the pod's cgroup");
        std::fs::write(cgroup.join("cgroup.procs"), pid.to_string()).expect("move the process into it");
        cleanup.host_link(HOSTIF);
        sh(&format!(
            "ip link add {HOSTIF} type veth peer name eth0 netns /proc/{pid}/ns/net && \
             ip addr add {NET}.1/24 dev {HOSTIF} && ip link set {HOSTIF} up && \
             nsenter -t {pid} -n sh -c 'ip link set lo up && ip addr add {NET}.2/24 dev eth0 && ip link set eth0 up'"
        ));
        let logs = TempDir::new(&format!("pod-logs-{test}"));
        let (ns, name) = POD.split_once('/').unwrap();
        std::fs::create_dir_all(logs.path(&format!("{ns}_{name}_{UID}"))).unwrap();
        Some(FakePod {
            _serial: serial,
            process,
            cgroup,
            logs,
            _cleanup: cleanup,
        })
    }

    fn logs(&self) -> PathBuf {
        self.logs.path("")
    }

    fn netns_inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/proc/{}/ns/net", self.process.id()))
            .unwrap()
            .ino()
    }

    fn kill(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Drop for FakePod {
    fn drop(&mut self) {
        self.kill();
        // Empty now: remove the scope and the slices made for it, innermost first.
        let mut dir = Some(self.cgroup.as_path());
        for _ in 0..3 {
            let Some(d) = dir else { break };
            let _ = std::fs::remove_dir(d);
            dir = d.parent();
        }
    }
}

fn wait_until(mut f: impl FnMut() -> bool) {
    for _ in 0..100 {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out");
}

fn trace(pod: &FakePod, args: &[&str]) -> (std::process::Output, Vec<serde_json::Value>) {
    let out = Command::new(BIN)
        .env("TRACEPKT_POD_LOGS", pod.logs())
        .args(["trace", "--json"])
        .args(args)
        .output()
        .expect("run tracepkt");
    let hops = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    (out, hops)
}

/// (netns inode, netns name) of each interface hop, in order.
fn namespaces(hops: &[serde_json::Value]) -> Vec<(u64, String)> {
    hops.iter()
        .filter(|h| h["kind"] == "interface")
        .map(|h| {
            (
                h["netns"].as_u64().unwrap(),
                h["netns_name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn a_pods_namespace_is_shown_by_its_pod_name() {
    let Some(pod) = FakePod::start("a_pods_namespace_is_shown_by_its_pod_name") else {
        return;
    };
    let (out, hops) = trace(&pod, &[&format!("{NET}.2")]);
    assert!(out.status.success(), "{}", describe(&out));
    let inside: Vec<_> = namespaces(&hops)
        .into_iter()
        .filter(|(ino, _)| *ino == pod.netns_inode())
        .collect();
    assert!(!inside.is_empty(), "no hop in the pod's namespace\n{}", describe(&out));
    for (_, name) in &inside {
        assert_eq!(name, POD, "{}", describe(&out));
    }
    // The human form names the pod too, and its rows stay under their header.
    let text = Command::new(BIN)
        .env("TRACEPKT_POD_LOGS", pod.logs())
        .args(["trace", &format!("{NET}.2")])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&text.stdout);
    let column = |l: &str, word: &str| l.find(word);
    let header = stdout.lines().next().unwrap_or_default();
    let rows: Vec<&str> = stdout.lines().filter(|l| l.contains(&format!("] {POD} "))).collect();
    assert!(!rows.is_empty(), "{}", describe(&text));
    for r in rows {
        assert_eq!(column(r, "eth0"), column(header, "INTERFACE"), "{}", describe(&text));
    }
}

#[test]
fn a_probe_starts_inside_a_pod_named_on_the_command_line() {
    let Some(mut pod) = FakePod::start("a_probe_starts_inside_a_pod_named_on_the_command_line") else {
        return;
    };
    let rx = common::otlp::Receiver::grpc();
    let (out, hops) = trace(&pod, &["--from-pod", POD, &format!("{NET}.1"), "--otlp", &rx.endpoint]);
    assert!(out.status.success(), "{}", describe(&out));
    // The hop spans in the pod carry its name the semantic conventions' way.
    let (namespace, name) = POD.split_once('/').unwrap();
    let spans = rx.wait_for(Duration::from_secs(10), |s| {
        s.iter().any(|s| s.attr_str("k8s.pod.name").is_some())
    });
    let in_pod: Vec<_> = spans
        .iter()
        .filter(|s| s.attr_int("tracepkt.netns.inode") == Some(pod.netns_inode() as i64))
        .collect();
    assert!(!in_pod.is_empty(), "no span in the pod: {spans:#?}");
    for s in in_pod {
        assert_eq!(s.attr_str("k8s.pod.name").as_deref(), Some(name), "{s:#?}");
        assert_eq!(s.attr_str("k8s.namespace.name").as_deref(), Some(namespace), "{s:#?}");
        assert_eq!(s.attr_str("tracepkt.netns.name").as_deref(), Some(POD), "{s:#?}");
    }
    let ns = namespaces(&hops);
    assert_eq!(
        ns.first().map(|(ino, name)| (*ino, name.as_str())),
        Some((pod.netns_inode(), POD)),
        "the first hop is not in the pod\n{}",
        describe(&out)
    );
    assert!(
        hops.iter().any(|h| h["kind"] == "interface" && h["ifname"] == HOSTIF),
        "the probe did not cross {HOSTIF}\n{}",
        describe(&out)
    );

    let (out, _) = trace(&pod, &["--from-pod", "shop/nothing-here", &format!("{NET}.1")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pod shop/nothing-here not found on this node"),
        "{}",
        describe(&out)
    );

    pod.kill();
    let (out, _) = trace(&pod, &["--from-pod", POD, &format!("{NET}.1")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("pod {POD} has no running process on this node")),
        "{}",
        describe(&out)
    );
}

#[test]
fn serve_probes_from_a_pod_and_labels_its_namespace() {
    let test = "serve_probes_from_a_pod_and_labels_its_namespace";
    let Some(mut pod) = FakePod::start(test) else {
        return;
    };
    let dir = TempDir::new("pods-serve");
    let port = free_port();
    let config = dir.path("config.yaml");
    write(
        &config,
        &format!(
            "listen: 127.0.0.1:{port}\ninterval: 300ms\ntimeout: 250ms\nattach: always\n\
             targets:\n  - {{name: from-pod, address: {NET}.1, from: {{pod: {POD}}}}}\n"
        ),
    );
    let log = dir.path("serve.log");
    let logfile = std::fs::File::create(&log).unwrap();
    let _serve = Proc(
        Command::new(BIN)
            .env("TRACEPKT_POD_LOGS", pod.logs())
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(logfile)
            .spawn()
            .unwrap(),
    );
    let labelled = format!("netns=\"{POD}\"");
    let text = wait_for(120, "a hop counted in the pod's namespace", &log, || {
        let t = scrape(port);
        (sample(&t, "tracepkt_probe_success{target=\"from-pod\"}") == Some(1.0)
            && t.lines()
                .any(|l| l.starts_with("tracepkt_hops_total") && l.contains(&labelled)))
        .then_some(t)
    });
    println!(
        "{}",
        text.lines()
            .filter(|l| l.contains(&labelled))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The pod goes away: its probes fail with a reason, tracepkt goes on.
    pod.kill();
    wait_for(120, "the probe failing once the pod is gone", &log, || {
        let t = scrape(port);
        (sample(&t, "tracepkt_probe_success{target=\"from-pod\"}") == Some(0.0)
            && sample(&t, "tracepkt_probe_errors_total{target=\"from-pod\",reason=\"send\"}").unwrap_or(0.0) > 0.0)
            .then_some(())
    });
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains(&format!("pod {POD} has no running process on this node")),
        "{logged}"
    );
}
