//! Shared pieces of the privileged integration tests: skip rules, network namespaces that
//! clean up after themselves, and running the real `tracepkt` binary.
#![allow(dead_code)]

pub mod otlp;
pub mod prom;

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Why this machine cannot run privileged tests, if it cannot. Every skip is printed and
/// appended to `$TRACEPKT_SKIP_LOG`, so the suite's summary shows it: a skip is never a
/// silent pass.
pub fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (BPF, network namespaces)".into());
    }
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Some("kernel has no BTF (/sys/kernel/btf/vmlinux)".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("iproute2 (`ip`) is not installed".into());
    }
    None
}

pub fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Records a skip; returns true so callers can `if skip(...) { return; }`.
pub fn skip(test: &str, reason: &str) -> bool {
    let line = format!("SKIP kernel={} test={test}: {reason}", kernel());
    eprintln!("{line}");
    if let Ok(path) = std::env::var("TRACEPKT_SKIP_LOG")
        && let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path)
    {
        let _ = writeln!(f, "{line}");
    }
    true
}

/// Skips the calling test when privileged tests cannot run here.
#[macro_export]
macro_rules! require_privileges {
    ($name:expr) => {
        if let Some(reason) = common::skip_reason() {
            common::skip($name, &reason);
            return;
        }
    };
}

/// Whether `tool` is installed; when it is not, records the skip of `test` and returns false.
pub fn have_tool(test: &str, tool: &str) -> bool {
    if Command::new(tool).arg("--version").output().is_ok() {
        return true;
    }
    skip(test, &format!("{tool} is not installed"));
    false
}

/// Adds `rule` (for example `icmp type echo-request drop`) to an input-hook chain of namespace
/// `ns`, created for it (table `inet tpk`, chain `input`).
pub fn nft_input_rule(ns: &str, rule: &str) {
    sh(&format!(
        "ip netns exec {ns} nft add table inet tpk && \
         ip netns exec {ns} nft 'add chain inet tpk input {{ type filter hook input priority 0; }}' && \
         ip netns exec {ns} nft add rule inet tpk input {rule}"
    ));
}

/// Gives `dev` in namespace `ns` the address `cidr` and brings it up.
pub fn addr_up(ns: &str, dev: &str, cidr: &str) {
    sh(&format!(
        "ip -n {ns} addr add {cidr} dev {dev} && ip -n {ns} link set dev {dev} up"
    ));
}

/// Runs a shell command, panicking with its output when it fails.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("spawn sh");
    assert!(
        out.status.success(),
        "command failed: {cmd}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Things to undo when a test ends, in reverse order, pass or fail (Drop runs on panic too).
#[derive(Default)]
pub struct Cleanup {
    cmds: Vec<String>,
}

impl Cleanup {
    pub fn new() -> Self {
        Self::default()
    }

    /// A network namespace that is deleted at the end of the test (with every interface in it).
    pub fn netns(&mut self, name: &str) -> String {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        // Quoted: names may carry shell metacharacters (the markup-escaping tests use some).
        sh(&format!("ip netns add '{name}'"));
        sh(&format!("ip -n '{name}' link set dev lo up"));
        self.cmds.push(format!("ip netns del '{name}'"));
        name.to_string()
    }

    /// A veth pair into a new namespace `ns`: `hostif` here with `<net>.1/24`, `eth0` there
    /// with `<net>.2/24`, both up. `net` is the first three octets, e.g. `198.18.1`.
    pub fn veth_ns(&mut self, ns: &str, hostif: &str, net: &str) -> String {
        let ns = self.veth(ns, hostif);
        sh(&format!(
            "ip addr add {net}.1/24 dev {hostif} && ip link set dev {hostif} up"
        ));
        sh(&format!(
            "ip -n {ns} addr add {net}.2/24 dev eth0 && ip -n {ns} link set dev eth0 up"
        ));
        ns
    }

    /// The same over IPv6: `<prefix>1/64` here, `<prefix>2/64` there, e.g. `fd00:7470:6::`.
    pub fn veth_ns6(&mut self, ns: &str, hostif: &str, prefix: &str) -> String {
        let ns = self.veth(ns, hostif);
        sh(&format!(
            "ip -6 addr add {prefix}1/64 dev {hostif} nodad && ip link set dev {hostif} up"
        ));
        sh(&format!(
            "ip -n {ns} -6 addr add {prefix}2/64 dev eth0 nodad && ip -n {ns} link set dev eth0 up"
        ));
        ns
    }

    fn veth(&mut self, ns: &str, hostif: &str) -> String {
        let ns = self.netns(ns);
        self.host_link(hostif);
        sh(&format!("ip link add {hostif} type veth peer name eth0 netns {ns}"));
        ns
    }

    /// A host-side link that is deleted at the end (deleting one end of a veth deletes both).
    pub fn host_link(&mut self, name: &str) {
        self.cmds.push(format!("ip link del {name}"));
    }

    pub fn on_exit(&mut self, cmd: &str) {
        self.cmds.push(cmd.to_string());
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in self.cmds.iter().rev() {
            let _ = Command::new("sh").arg("-c").arg(format!("{c} 2>/dev/null")).status();
        }
    }
}

/// Inode of a named network namespace, as `stat -L -c %i /run/netns/<name>` prints it.
pub fn netns_inode(name: &str) -> u64 {
    std::fs::metadata(format!("/run/netns/{name}"))
        .expect("netns exists")
        .ino()
}

/// Inode of this process's network namespace.
pub fn host_netns_inode() -> u64 {
    std::fs::metadata("/proc/self/ns/net").unwrap().ino()
}

pub const BIN: &str = env!("CARGO_BIN_EXE_tracepkt");

/// Runs `tracepkt trace --json ARGS`, optionally inside a namespace, and parses the hops.
pub fn trace_json(netns: Option<&str>, args: &[&str]) -> (Output, Vec<serde_json::Value>) {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, BIN]);
            c
        }
        None => Command::new(BIN),
    };
    cmd.args(["trace", "--json"]).args(args);
    let out = cmd.output().expect("run tracepkt");
    let hops = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    (out, hops)
}

/// A hop reduced to what a path assertion needs: (direction, io, ifname, netns inode).
pub fn path(hops: &[serde_json::Value]) -> Vec<(String, String, String, u64)> {
    hops.iter()
        .filter(|h| h["kind"] == "interface")
        .map(|h| {
            (
                h["direction"].as_str().unwrap().to_string(),
                h["io"].as_str().unwrap().to_string(),
                h["ifname"].as_str().unwrap().to_string(),
                h["netns"].as_u64().unwrap(),
            )
        })
        .collect()
}

pub fn hop(direction: &str, io: &str, ifname: &str, netns: u64) -> (String, String, String, u64) {
    (direction.into(), io.into(), ifname.into(), netns)
}

pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---- `tracepkt serve` under test: config files, the process, scrapes ----

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("tracepkt-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed when the test ends.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn serve(config: &Path, log: &Path) -> Proc {
    serve_with_env(config, log, &[])
}

/// `tracepkt serve` with these environment variables added (`K8S_NODE_NAME`, say).
pub fn serve_with_env(config: &Path, log: &Path, env: &[(&str, &str)]) -> Proc {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start tracepkt serve");
    Proc(child)
}

pub fn http_get(url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "5", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls until `f` returns Some, or panics with `what` and the serve log after `secs`.
pub fn wait_for<T>(secs: u64, what: &str, log: &Path, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}\ntracepkt log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// One answered scrape: a scrape that gets no answer within curl's 5 s is tried again, for up to
/// a minute, since under a VM's software emulation an answer can take longer than 5 s; how quick
/// the answer is is not what these tests are about. Empty if none came.
pub fn scrape(port: u16) -> String {
    let url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match http_get(&url) {
            Some(text) => return text,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(250)),
            None => return String::new(),
        }
    }
}

pub fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

pub fn write(path: &Path, text: &str) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Whether tracepkt saw the netfilter function `func` on this kernel; if not, records the skip
/// of the netfilter part of `test` with tracepkt's own explanation. A program the kernel
/// refused to load is tracepkt's bug, not a missing kernel feature: that fails the test.
pub fn netfilter_visible(out: &Output, func: &str, test: &str) -> bool {
    netfilter_visible_in(&String::from_utf8_lossy(&out.stderr), func, test)
}

/// [`netfilter_visible`] on a log already read, such as a `tracepkt serve`'s.
pub fn netfilter_visible_in(log: &str, func: &str, test: &str) -> bool {
    match log
        .lines()
        .find(|l| l.contains("not visible on this kernel") && l.contains(func))
    {
        Some(line) => {
            assert!(
                !line.contains("BPF_PROG_LOAD"),
                "{test}: the kernel refused tracepkt's netfilter program: {line}"
            );
            skip(&format!("{test} (netfilter rows)"), line.trim());
            false
        }
        None => true,
    }
}
