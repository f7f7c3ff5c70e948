//! Sources against real answers: a real DNS server (dnsmasq, on a loopback port of its own)
//! whose zone changes under them, and real files written, changed, broken and fixed. Each test
//! drives a source's refreshes itself, so "within one refresh" is exactly the next one.

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::identity::Names;
use super::source::{Finder, Task};
use super::status::{Rejected, SourceStatus};
use super::*;
use crate::config::Config;

/// Why these tests cannot run here, printed (and logged for the suite's summary) when they
/// skip: never a silent pass.
fn skip_without_dnsmasq(test: &str) -> bool {
    if Command::new("dnsmasq").arg("--version").output().is_ok() {
        return false;
    }
    let line = format!("SKIP test={test}: dnsmasq is not installed (scripts/deps.sh test)");
    eprintln!("{line}");
    if let Ok(path) = std::env::var("TRACEPKT_SKIP_LOG")
        && let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path)
    {
        let _ = writeln!(f, "{line}");
    }
    true
}

/// A directory of its own for one test, removed at its end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("tracepkt-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Replaces a file whole, as a tool feeding file_sd would (write, then rename).
    fn write(&self, name: &str, text: &str) {
        let tmp = self.path(&format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.path(name)).unwrap();
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// dnsmasq answering from a hosts file (re-read on SIGHUP) and fixed SRV records, on a
/// loopback port of its own.
struct Dnsmasq {
    child: Option<Child>,
    addr: SocketAddr,
    hosts: PathBuf,
    srv: Vec<String>,
}

impl Dnsmasq {
    fn start(dir: &Scratch, hosts: &str, srv: &[&str]) -> Dnsmasq {
        let path = dir.path("hosts");
        std::fs::write(&path, hosts).unwrap();
        // A free port: taken by the system, then let go for dnsmasq.
        let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut d = Dnsmasq {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            hosts: path,
            srv: srv.iter().map(|s| s.to_string()).collect(),
        };
        d.restart();
        d
    }

    /// Starts it (again, on the same port).
    fn restart(&mut self) {
        let mut cmd = Command::new("dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--pid-file=",
            "--local-ttl=7",
            // Its own zone: a name or type it lacks is NXDOMAIN or NODATA, not REFUSED.
            "--local=/tpk.test/",
        ])
        .arg(format!("--port={}", self.addr.port()))
        .arg(format!("--addn-hosts={}", self.hosts.display()));
        for s in &self.srv {
            cmd.arg(format!("--srv-host={s}"));
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // Root dnsmasq would drop to `nobody`, who may not read the test's files.
            cmd.arg("--user=root");
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn dnsmasq");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(self.addr).is_err() {
            assert!(Instant::now() < deadline, "dnsmasq did not start on {}", self.addr);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The zone it will answer from when it starts.
    fn set_hosts_before_start(&self, hosts: &str) {
        std::fs::write(&self.hosts, hosts).unwrap();
    }

    /// A new zone: the hosts file rewritten and re-read.
    fn set_hosts(&self, hosts: &str) {
        std::fs::write(&self.hosts, hosts).unwrap();
        let pid = self.child.as_ref().expect("running").id();
        // SAFETY: a signal to our own child.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
        // dnsmasq re-reads on its next turn of its loop; a query after that sees the new zone.
        std::thread::sleep(Duration::from_millis(300));
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The sources of a configuration whose `discovery:` is `lines`.
fn sources(lines: &str) -> Vec<config::Discovery> {
    let text = format!("targets: []\ndiscovery:\n{lines}");
    match Config::parse(&text, "test.yaml") {
        Ok(c) => c.discovery,
        Err(e) => panic!("{e}\n{text}"),
    }
}

/// This test node's own addresses, as its interfaces would give them.
fn own_addresses() -> Vec<std::net::IpAddr> {
    vec!["198.18.0.1".parse().unwrap()]
}

/// A source's task, driven by the test.
fn task(config: config::Discovery) -> Task {
    Task {
        own_addresses,
        finder: Finder::new(&config.source),
        config,
        // No peer answers on port 9 (discard): peers are named by their addresses.
        names: Names::new(9),
        status: Arc::new(Mutex::new(SourceStatus::default())),
        published: Arc::new(Mutex::new(Arc::new(Vec::new()))),
        changed: Arc::new(Notify::new()),
        said: Default::default(),
    }
}

impl Task {
    fn names(&self) -> Vec<String> {
        self.published.lock().unwrap().iter().map(|t| t.name.clone()).collect()
    }

    fn state(&self) -> SourceStatus {
        self.status.lock().unwrap().clone()
    }
}

fn dns_source(server: SocketAddr, key: &str, name: &str, extra: &str) -> config::Discovery {
    sources(&format!(
        "  - {{name: peers, {key}: {name}, server: \"{server}\", refresh: 1s{extra}}}\n"
    ))
    .remove(0)
}

#[tokio::test]
async fn a_dns_source_follows_its_zone_and_keeps_its_targets_through_failures() {
    if skip_without_dnsmasq("a_dns_source_follows_its_zone") {
        return;
    }
    let dir = Scratch::new("dns-zone");
    let mut server = Dnsmasq::start(&dir, "198.18.0.1 web.tpk.test\nfd00::1 web.tpk.test\n", &[]);
    let mut t = task(dns_source(server.addr, "dns", "web.tpk.test", ""));
    let next = t.refresh().await;
    assert_eq!(t.names(), ["peers/198.18.0.1", "peers/fd00::1"]);
    assert_eq!(next, Duration::from_secs(1), "refresh: given wins over the TTL");

    // An address added appears at the next refresh; one removed goes.
    server.set_hosts("198.18.0.1 web.tpk.test\n198.18.0.2 web.tpk.test\n");
    t.refresh().await;
    assert_eq!(t.names(), ["peers/198.18.0.1", "peers/198.18.0.2"]);
    let s = t.state();
    assert_eq!((s.lookups, s.failures, s.failing), (2, 0, false));

    // The server stopped: the lookup fails, is counted, and the last targets stay.
    server.stop();
    t.refresh().await;
    t.refresh().await;
    assert_eq!(t.names(), ["peers/198.18.0.1", "peers/198.18.0.2"]);
    let s = t.state();
    assert_eq!((s.lookups, s.failures, s.failing), (4, 2, true));

    // Back: it recovers with the answer of the moment.
    server.set_hosts_before_start("198.18.0.3 web.tpk.test\n");
    server.restart();
    t.refresh().await;
    assert_eq!(t.names(), ["peers/198.18.0.3"]);
    let s = t.state();
    assert_eq!((s.lookups, s.failures, s.failing), (5, 2, false));
}

#[tokio::test]
async fn the_ttl_sets_the_refresh_within_bounds() {
    if skip_without_dnsmasq("the_ttl_sets_the_refresh") {
        return;
    }
    let dir = Scratch::new("dns-ttl");
    let _server = Dnsmasq::start(&dir, "198.18.0.1 web.tpk.test\n", &[]);
    let config = sources(&format!(
        "  - {{name: web, dns: web.tpk.test, server: \"{}\"}}\n",
        _server.addr
    ))
    .remove(0);
    let mut t = task(config);
    // dnsmasq gives its hosts a TTL of 7 s here (--local-ttl).
    assert_eq!(t.refresh().await, Duration::from_secs(7));
}

#[tokio::test]
async fn names_that_do_not_resolve_fail_and_keep_nothing_made_up() {
    if skip_without_dnsmasq("names_that_do_not_resolve") {
        return;
    }
    let dir = Scratch::new("dns-nx");
    let server = Dnsmasq::start(&dir, "198.18.0.1 web.tpk.test\n", &[]);
    let mut t = task(dns_source(server.addr, "dns", "nothing.tpk.test", ""));
    t.refresh().await;
    assert!(t.names().is_empty());
    let s = t.state();
    assert_eq!((s.failures, s.failing), (1, true));
}

#[tokio::test]
async fn a_huge_answer_is_capped_and_counted() {
    if skip_without_dnsmasq("a_huge_answer_is_capped") {
        return;
    }
    let dir = Scratch::new("dns-huge");
    // 3,000 A records: the answer comes over TCP after a truncated one over UDP.
    let hosts: String = (0..3000)
        .map(|i| format!("198.18.{}.{} big.tpk.test\n", i / 250, i % 250 + 1))
        .collect();
    let server = Dnsmasq::start(&dir, &hosts, &[]);
    let mut t = task(dns_source(
        server.addr,
        "dns",
        "big.tpk.test",
        ", target: {ip_version: 4}",
    ));
    t.refresh().await;
    assert_eq!(t.names().len(), MAX_SOURCE_TARGETS);
    let s = t.state();
    assert_eq!(s.rejected.get(Rejected::Capped), 3000 - MAX_SOURCE_TARGETS as u64);
    assert!(!s.failing);
    // The same on every node: the first addresses in order.
    assert_eq!(t.names()[0], "peers/198.18.0.1");

    // A mesh places them all on its ring and probes max_peers of them.
    let mut mesh = task(dns_source(
        server.addr,
        "dns",
        "big.tpk.test",
        ", peers: true, max_peers: 3",
    ));
    mesh.refresh().await;
    assert_eq!(mesh.names().len(), 3);
    let s = mesh.state();
    // This node, 198.18.0.1, is one of them.
    assert_eq!(s.peers, Some((2999, 3)));
    assert_eq!(s.rejected.get(Rejected::Capped), 0);
    let peer = &mesh.published.lock().unwrap()[0];
    assert_eq!(
        peer.labels.get("peer"),
        Some(&peer.address),
        "no identity: named by address"
    );
}

#[tokio::test]
async fn srv_records_give_ports_and_a_target_that_points_nowhere_is_counted() {
    if skip_without_dnsmasq("srv_records_give_ports") {
        return;
    }
    let dir = Scratch::new("dns-srv");
    let server = Dnsmasq::start(
        &dir,
        "198.18.0.1 a.tpk.test\nfd00::1 a.tpk.test\n198.18.0.2 b.tpk.test\n",
        &[
            "_probe._tcp.tpk.test,a.tpk.test,443",
            "_probe._tcp.tpk.test,b.tpk.test,8443",
            "_probe._tcp.tpk.test,nowhere.tpk.test,80",
        ],
    );
    let mut t = task(dns_source(
        server.addr,
        "srv",
        "_probe._tcp.tpk.test",
        ", target: {protocol: tcp}",
    ));
    t.refresh().await;
    assert_eq!(
        t.names(),
        ["peers/198.18.0.1:443", "peers/198.18.0.2:8443", "peers/[fd00::1]:443"]
    );
    let ports: Vec<Option<u16>> = t.published.lock().unwrap().iter().map(|t| t.probe.port()).collect();
    assert_eq!(ports, [Some(443), Some(8443), Some(443)]);
    let s = t.state();
    assert_eq!(s.rejected.get(Rejected::Unresolved), 1);
    assert!(!s.failing);

    // An ICMP template takes the hosts and leaves the ports.
    let mut icmp = task(dns_source(server.addr, "srv", "_probe._tcp.tpk.test", ""));
    icmp.refresh().await;
    assert_eq!(icmp.names(), ["peers/198.18.0.1", "peers/198.18.0.2", "peers/fd00::1"]);
}

/// A file source over `dir`'s YAML files, with this template.
fn file_source(dir: &Scratch, template: &str) -> config::Discovery {
    sources(&format!(
        "  - {{name: extra, file: \"{}/*.yaml\", target: {template}}}\n",
        dir.0.display()
    ))
    .remove(0)
}

const LABELLED: &str = "{labels: {from: file}}";

fn labels_of(t: &Task, name: &str) -> Vec<(String, String)> {
    let published = t.published.lock().unwrap();
    let target = published.iter().find(|t| t.name == name).expect(name);
    target.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[tokio::test]
async fn file_sd_files_written_changed_broken_and_fixed() {
    let dir = Scratch::new("file-sd");
    let mut t = task(file_source(&dir, LABELLED));
    t.refresh().await;
    assert!(t.names().is_empty(), "no file yet: no target, no failure");
    assert_eq!(t.state().failures, 0);

    dir.write(
        "a.yaml",
        "- targets: [198.18.0.1, \"[fd00::2]:9100\"]\n  labels: {site: paris, __meta_x: y}\n",
    );
    dir.write("b.yaml", "- targets: [db.tpk.test]\n");
    t.refresh().await;
    assert_eq!(t.names(), ["extra/198.18.0.1", "extra/db.tpk.test", "extra/fd00::2"]);
    assert_eq!(
        labels_of(&t, "extra/198.18.0.1"),
        [("from".into(), "file".into()), ("site".into(), "paris".into())],
        "the file's labels join the template's; __ labels are Prometheus' own"
    );

    // Changed: re-read.
    dir.write("a.yaml", "- targets: [198.18.0.3]\n  labels: {site: lyon}\n");
    t.refresh().await;
    assert_eq!(t.names(), ["extra/198.18.0.3", "extra/db.tpk.test"]);

    // Broken: what it gave stays, counted once for this version of it.
    dir.write("a.yaml", "- targets: [198.18.0.4\n  labels: {site: ");
    t.refresh().await;
    t.refresh().await;
    assert_eq!(t.names(), ["extra/198.18.0.3", "extra/db.tpk.test"]);
    let s = t.state();
    assert_eq!((s.failures, s.failing), (1, true));

    // Fixed.
    dir.write("a.yaml", "[{\"targets\": [\"198.18.0.5\"]}]\n");
    t.refresh().await;
    assert_eq!(t.names(), ["extra/198.18.0.5", "extra/db.tpk.test"]);
    let s = t.state();
    assert_eq!((s.failures, s.failing), (1, false));

    // Gone.
    std::fs::remove_file(dir.path("b.yaml")).unwrap();
    t.refresh().await;
    assert_eq!(t.names(), ["extra/198.18.0.5"]);
}

#[tokio::test]
async fn bad_entries_are_left_out_alone_and_counted() {
    let dir = Scratch::new("file-sd-bad");
    dir.write(
        "a.yaml",
        concat!(
            "- targets: [198.18.0.1, \"198.18.0.2:0\", \"not an address\", 198.18.0.1, \"[fd00::1\"]\n",
            "- targets: [198.18.0.3]\n",
            "  labels: {\"bad-name\": x}\n",
            "- targets: [198.18.0.4]\n",
            "  labels: {target: x}\n",
        ),
    );
    let mut t = task(file_source(&dir, LABELLED));
    t.refresh().await;
    assert_eq!(t.names(), ["extra/198.18.0.1"]);
    let s = t.state();
    // A bad port and an unclosed bracket, a bad address, a bad and a reserved label name.
    assert_eq!(s.rejected.get(Rejected::Invalid), 5);
    assert_eq!(s.rejected.get(Rejected::Duplicate), 1);
    assert!(!s.failing, "a bad entry is not a broken file");

    // A TCP template needs the port from the entry when it has none of its own.
    let mut tcp = task(file_source(&dir, "{protocol: tcp}"));
    dir.write("a.yaml", "- targets: [\"198.18.0.1:443\", 198.18.0.2]\n");
    tcp.refresh().await;
    assert_eq!(tcp.names(), ["extra/198.18.0.1:443"]);
    assert_eq!(tcp.state().rejected.get(Rejected::Invalid), 1);
}

#[test]
fn duplicates_across_sources_keep_the_first_and_are_counted() {
    let config = Config::parse(
        &[
            "targets:",
            "  - {address: 198.18.0.1, name: listed}",
            "discovery:",
            "  - {name: a, file: /x/*.yaml}",
            "  - {name: b, file: /y/*.yaml}",
            "  - {name: c, file: /z/*.yaml, target: {protocol: tcp, port: 80}}",
        ]
        .join("\n"),
        "test.yaml",
    )
    .unwrap();
    let make = |source: usize, host: &str| {
        config.discovery[source]
            .template
            .instantiate(
                format!("{}/{host}", config.discovery[source].name),
                host,
                None,
                &Default::default(),
            )
            .unwrap()
    };
    let a = Arc::new(vec![make(0, "198.18.0.1"), make(0, "198.18.0.2")]);
    let b = Arc::new(vec![make(1, "198.18.0.2"), make(1, "198.18.0.3")]);
    // Another probe of the same address is not a duplicate.
    let c = Arc::new(vec![make(2, "198.18.0.1")]);
    let (all, outs) = merge(&config.targets, &[a, b, c]);
    let names: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["listed", "a/198.18.0.2", "b/198.18.0.3", "c/198.18.0.1"]);
    assert_eq!(outs[0].0, 1);
    assert_eq!(outs[0].1.get(Rejected::Duplicate), 1);
    assert_eq!(outs[1].1.get(Rejected::Duplicate), 1);
    assert_eq!(outs[2].1.get(Rejected::Duplicate), 0);

    // Past the limit in all, the last are left out.
    let many = Arc::new(
        (0..MAX_TARGETS as u32 + 5)
            .map(|i| make(0, &std::net::Ipv4Addr::from(0xc612_0000 + 100 + i).to_string()))
            .collect::<Vec<_>>(),
    );
    let (all, outs) = merge(&config.targets, &[many]);
    assert_eq!(all.len(), MAX_TARGETS);
    assert_eq!(outs[0].1.get(Rejected::OverLimit), 6);
}

#[tokio::test]
async fn a_reload_keeps_unchanged_sources_and_their_targets() {
    let dir = Scratch::new("reload");
    dir.write("a.yaml", "- targets: [198.18.0.1]\n");
    let pattern = format!("{}/*.yaml", dir.0.display());
    let one = sources(&format!("  - {{name: a, file: \"{pattern}\"}}\n"));
    let mut d = Discovery::start(&one, 9);
    tokio::time::timeout(Duration::from_secs(10), d.changed())
        .await
        .expect("the first answer");
    assert_eq!(d.targets(&[]).len(), 1);
    let task_before = d.running[0].task.id();
    let two = sources(&format!(
        "  - {{name: a, file: \"{pattern}\"}}\n  - {{name: b, file: \"{pattern}\", target: {{protocol: tcp, port: 1}}}}\n"
    ));
    d.reload(&two);
    assert_eq!(d.running[0].task.id(), task_before, "an unchanged source runs on");
    assert_eq!(d.targets(&[]).len(), 1, "it keeps what it found");
    d.reload(&[]);
    assert!(d.targets(&[]).is_empty());
}
