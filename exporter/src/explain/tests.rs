//! Against the real kernel: namespaces made here, rulesets loaded with the real `nft` and
//! `iptables-nft-restore`, real packets. Privileged; each test skips with a printed reason
//! where it cannot run. Run them inside `/work/coord/isolated` (or any private network
//! namespace): they use fixed namespace names.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use super::journey::{ProbeKey, Row, RuleState, Session};
use super::kube::{Fact, ServicePort};
use super::listen::Listener;
use super::rules::CommentSource;
use super::table::{self, PortProto, TraceTable};
use super::trace::{L4, TraceKind, Verdict};
use super::{Anomalies, Anomaly, Family};

// ---- helpers in the style of tests/common ----

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces, nftables)".into());
    }
    for tool in ["ip", "nft", "iptables-nft-restore"] {
        if Command::new(tool).arg("--version").output().is_err() {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

fn skip(test: &str, reason: &str) {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let line = format!("SKIP kernel={} test={test}: {reason}", kernel.trim());
    eprintln!("{line}");
    if let Ok(path) = std::env::var("TRACEPKT_SKIP_LOG")
        && let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

macro_rules! require_privileges {
    ($name:expr) => {
        if let Some(reason) = skip_reason() {
            skip($name, &reason);
            return;
        }
    };
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("spawn sh");
    assert!(
        out.status.success(),
        "command failed: {cmd}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Things to undo when a test ends, pass or fail.
#[derive(Default)]
struct Cleanup(Vec<String>);

impl Cleanup {
    fn netns(&mut self, name: &str) -> PathBuf {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        sh(&format!("ip netns add {name} && ip -n {name} link set lo up"));
        self.0.push(format!("ip netns del {name}"));
        PathBuf::from(format!("/run/netns/{name}"))
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in self.0.iter().rev() {
            let _ = Command::new("sh").arg("-c").arg(format!("{c} 2>/dev/null")).status();
        }
    }
}

/// Runs `f` on a thread that entered namespace `ns`.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: setns on a descriptor this thread owns; it only moves this thread.
        assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        f()
    })
    .join()
    .unwrap()
}

/// tracepkt's 32-byte payload: magic, version 1, flags, zeros, trace id, span id.
fn payload(trace: [u8; 16]) -> Vec<u8> {
    let mut p = b"TPKT\x01\x01\0\0".to_vec();
    p.extend_from_slice(&trace);
    p.extend_from_slice(&[0x5a; 8]);
    p
}

/// The handles of a chain's rules, in order, as `nft -a` lists them.
fn handles(ns: &str, family: &str, table: &str, chain: &str) -> Vec<u64> {
    sh(&format!(
        "ip netns exec {ns} nft -a list chain {family} {table} {chain}"
    ))
    .lines()
    .filter(|l| !l.contains("chain ") && !l.contains("type "))
    .filter_map(|l| l.rsplit_once("# handle ").and_then(|(_, h)| h.trim().parse().ok()))
    .collect()
}

fn tables(ns: &str) -> String {
    sh(&format!("ip netns exec {ns} nft list tables"))
}

/// A pod, a node that routes it and holds the rules, and a backend with two addresses:
///
/// `PREFIX-pod` 198.18.70.2 — 198.18.70.1 `PREFIX-node` 198.18.71.1 — 198.18.71.2, .3 `PREFIX-back`
///
/// Cluster IPs 198.18.72.10 (a Service with the backend as endpoint) and 198.18.72.11 (none)
/// are routed by the pod to the node.
struct Topology {
    pod: String,
    node: String,
    back: String,
    _cleanup: Cleanup,
}

const POD: &str = "198.18.70.2";
const BACKEND: &str = "198.18.71.2";
const FENCED: &str = "198.18.71.3";
const CLUSTER_IP: &str = "198.18.72.10";
const EMPTY_IP: &str = "198.18.72.11";

fn topology(prefix: &str) -> Topology {
    let mut c = Cleanup::default();
    let (pod, node, back) = (
        format!("{prefix}-pod"),
        format!("{prefix}-node"),
        format!("{prefix}-back"),
    );
    for ns in [&pod, &node, &back] {
        c.netns(ns);
    }
    sh(&format!(
        "ip -n {node} link add eth0 type veth peer name eth0 netns {pod} && \
         ip -n {node} link add eth1 type veth peer name eth0 netns {back} && \
         ip -n {pod} addr add {POD}/24 dev eth0 && ip -n {pod} link set eth0 up && \
         ip -n {pod} route add default via 198.18.70.1 && \
         ip -n {node} addr add 198.18.70.1/24 dev eth0 && ip -n {node} link set eth0 up && \
         ip -n {node} addr add 198.18.71.1/24 dev eth1 && ip -n {node} link set eth1 up && \
         ip netns exec {node} sysctl -qw net.ipv4.ip_forward=1 && \
         ip -n {node} route add default via {BACKEND} && \
         ip -n {back} addr add {BACKEND}/24 dev eth0 && ip -n {back} addr add {FENCED}/24 dev eth0 && \
         ip -n {back} link set eth0 up && ip -n {back} route add default via 198.18.71.1"
    ));
    Topology {
        pod,
        node,
        back,
        _cleanup: c,
    }
}

/// A comment of 255 bytes (iptables' longest), with quotes and markup in it.
fn long_comment() -> String {
    let head = "long \"quoted\" <b>markup</b> & more: ";
    format!("{head}{}", "x".repeat(255 - head.len()))
}

/// kube-proxy's iptables-mode rules for Service shop/cart:http (198.18.72.10:80, one
/// endpoint 198.18.71.2:8080) and shop/empty:http (198.18.72.11:80, no endpoints), its
/// masquerade mark, and two commented rules on the UDP probe's way: one 255 bytes long, one
/// not UTF-8.
fn kube_proxy_rules(node: &str) {
    let rules = format!(
        "*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-CARTHTTPAAAAAAAA - [0:0]
:KUBE-SEP-CARTHTTPBBBBBBBB - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING
-A KUBE-SERVICES -d {CLUSTER_IP}/32 -p tcp -m comment --comment \"shop/cart:http cluster IP\" -m tcp --dport 80 -j KUBE-SVC-CARTHTTPAAAAAAAA
-A KUBE-SVC-CARTHTTPAAAAAAAA ! -s 10.244.0.0/16 -d {CLUSTER_IP}/32 -p tcp -m comment --comment \"shop/cart:http cluster IP\" -m tcp --dport 80 -j KUBE-MARK-MASQ
-A KUBE-SVC-CARTHTTPAAAAAAAA -m comment --comment \"shop/cart:http -> {BACKEND}:8080\" -j KUBE-SEP-CARTHTTPBBBBBBBB
-A KUBE-SEP-CARTHTTPBBBBBBBB -s {BACKEND}/32 -m comment --comment \"shop/cart:http\" -j KUBE-MARK-MASQ
-A KUBE-SEP-CARTHTTPBBBBBBBB -p tcp -m comment --comment \"shop/cart:http\" -m tcp -j DNAT --to-destination {BACKEND}:8080
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A FORWARD -p udp -m udp --dport 9999 -m comment --comment \"{long}\"
-A FORWARD -p udp -m udp --dport 9999 -m comment --comment \"bad \\xff\\xfe utf8\"
-A KUBE-SERVICES -d {EMPTY_IP}/32 -p tcp -m comment --comment \"shop/empty:http has no endpoints\" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable
COMMIT
",
        long = long_comment().replace('"', "\\\"")
    );
    let file = std::env::temp_dir().join(format!("{node}.iptables"));
    // The non-UTF-8 bytes go in as bytes.
    let bytes = rules.replace("\\xff\\xfe", "\u{1}\u{2}").into_bytes();
    let bytes: Vec<u8> = bytes
        .iter()
        .map(|b| match b {
            1 => 0xff,
            2 => 0xfe,
            b => *b,
        })
        .collect();
    std::fs::write(&file, bytes).unwrap();
    sh(&format!(
        "ip netns exec {node} iptables-nft-restore < {}",
        file.display()
    ));
    let _ = std::fs::remove_file(file);
}

/// A native ruleset: a user chain that drops the UDP probe's port (comment with quotes and
/// markup), and a base chain whose policy drops everything to the fenced address.
fn native_rules(node: &str) {
    let rules = format!(
        "table inet shop {{
  chain forward {{
    type filter hook forward priority 10; policy accept;
    udp dport 9999 counter jump quarantine comment \"send 9999 to quarantine\"
  }}
  chain quarantine {{
    meta l4proto udp counter drop comment \"it's <b>quarantined</b> & 'dropped'\"
  }}
}}
table ip strict {{
  chain forward {{
    type filter hook forward priority 20; policy drop;
    ip daddr != {FENCED} accept
  }}
}}
"
    );
    let file = std::env::temp_dir().join(format!("{node}.nft"));
    std::fs::write(&file, rules).unwrap();
    sh(&format!("ip netns exec {node} nft -f {}", file.display()));
    let _ = std::fs::remove_file(file);
}

/// What became of a probe, as its sender sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Answered,
    Refused,
    Silent,
}

/// A TCP socket bound in `ns`, and its port.
fn tcp_socket(ns: &str) -> (Socket, u16) {
    in_ns(ns, || {
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        s.bind(&"0.0.0.0:0".parse::<SocketAddr>().unwrap().into()).unwrap();
        let port = s.local_addr().unwrap().as_socket().unwrap().port();
        (s, port)
    })
}

fn tcp_connect(s: Socket, to: &str, port: u16) -> Outcome {
    let addr: SocketAddr = format!("{to}:{port}").parse().unwrap();
    match s.connect_timeout(&addr.into(), Duration::from_millis(700)) {
        Ok(()) => Outcome::Answered,
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => Outcome::Refused,
        Err(_) => Outcome::Silent,
    }
}

/// A UDP socket bound in `ns`, and its port.
fn udp_socket(ns: &str) -> (UdpSocket, u16) {
    in_ns(ns, || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        let port = s.local_addr().unwrap().port();
        (s, port)
    })
}

fn udp_exchange(s: &UdpSocket, to: &str, port: u16, data: &[u8]) -> Outcome {
    s.connect(format!("{to}:{port}")).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
    s.send(data).unwrap();
    let mut buf = [0u8; 64];
    match s.recv(&mut buf) {
        Ok(_) => Outcome::Answered,
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => Outcome::Refused,
        Err(_) => Outcome::Silent,
    }
}

/// Sends an ICMP echo request with `data` from `ns` and waits for its reply.
fn ping(ns: &str, to: &str, id: u16, seq: u16, data: Vec<u8>) -> Outcome {
    let to: IpAddr = to.parse().unwrap();
    in_ns(ns, move || {
        let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).unwrap();
        let mut pkt = vec![8, 0, 0, 0];
        pkt.extend_from_slice(&id.to_be_bytes());
        pkt.extend_from_slice(&seq.to_be_bytes());
        pkt.extend_from_slice(&data);
        let sum = checksum(&pkt);
        pkt[2..4].copy_from_slice(&sum.to_be_bytes());
        s.send_to(&pkt, &SocketAddr::new(to, 0).into()).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_millis(700);
        let mut buf = [std::mem::MaybeUninit::new(0u8); 1500];
        while std::time::Instant::now() < deadline {
            if let Ok(n) = s.recv(&mut buf) {
                // SAFETY: recv initialised the first n bytes.
                let b: Vec<u8> = buf[..n].iter().map(|b| unsafe { b.assume_init() }).collect();
                let ihl = usize::from(b[0] & 0xf) * 4;
                if b.get(ihl) == Some(&0) && b.get(ihl + 4..ihl + 8) == Some(&pkt[4..8]) {
                    return Outcome::Answered;
                }
            }
        }
        Outcome::Silent
    })
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in b.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A listening TCP socket on the backend, kept open for the test.
fn backend_listener(ns: &str) -> std::net::TcpListener {
    in_ns(ns, || std::net::TcpListener::bind(format!("{BACKEND}:8080")).unwrap())
}

fn svc(s: &str) -> ServicePort {
    let (ns, rest) = s.split_once('/').unwrap();
    let (name, port) = rest
        .split_once(':')
        .map(|(n, p)| (n, Some(p.to_string())))
        .unwrap_or((rest, None));
    ServicePort {
        namespace: ns.into(),
        name: name.into(),
        port,
    }
}

/// A row as the assertions compare it.
#[derive(Debug, PartialEq)]
struct Seen {
    at: String,
    handle: Option<u64>,
    kind: TraceKind,
    verdict: Option<Verdict>,
    comment: Option<String>,
}

fn seen(r: &Row) -> Seen {
    Seen {
        at: format!("{} {} {}", r.family, r.table, r.chain),
        handle: r.handle,
        kind: r.kind,
        verdict: r.verdict.clone(),
        comment: r.comment.as_ref().map(|c| c.text.clone()),
    }
}

fn row(at: &str, handle: Option<u64>, kind: TraceKind, verdict: Verdict, comment: Option<&str>) -> Seen {
    Seen {
        at: at.into(),
        handle,
        kind,
        verdict: Some(verdict),
        comment: comment.map(str::to_string),
    }
}

/// The rows of the probe's request (from the pod; for TCP, its SYN), leaving out the answers
/// and the rest of the connection.
fn requests(rows: &[Row]) -> Vec<&Row> {
    rows.iter()
        .filter(|r| {
            r.packet
                .as_ref()
                .is_some_and(|p| p.src.to_string() == POD && !matches!(p.l4, L4::Tcp { flags, .. } if flags != 2))
        })
        .collect()
}

fn print(rows: &[Row]) {
    for r in rows {
        eprintln!(
            "  {} {} {} handle={:?} {:?} {:?} mark={:?} comment={:?} text={:?} facts={:?} packet={:?}",
            r.family,
            r.table,
            r.chain,
            r.handle,
            r.kind,
            r.verdict,
            r.mark,
            r.comment.as_ref().map(|c| &c.text),
            r.text,
            r.facts,
            r.packet
        );
    }
}

// ---- the tests ----

#[tokio::test]
async fn the_trace_table_is_made_removed_and_a_leftover_found() {
    require_privileges!("the_trace_table_is_made_removed_and_a_leftover_found");
    let mut c = Cleanup::default();
    let ns = c.netns("tpkx-table");
    let name = "tpkx-table";

    assert!(!table::exists(Some(&ns)).await.unwrap());
    assert!(
        !table::remove_leftover(Some(&ns)).await.unwrap(),
        "nothing to remove yet"
    );

    let mut t = TraceTable::create(Some(&ns)).await.unwrap();
    assert!(!t.leftover_removed);
    assert!(t.owned, "6.18 has owned tables");
    let listing = sh(&format!("ip netns exec {name} nft list table inet tracepkt"));
    eprintln!("{listing}");
    for want in [
        "flags owner",
        "type filter hook prerouting priority -2147483648; policy accept;",
        "type filter hook output priority -2147483648; policy accept;",
        "meta l4proto icmp @th,64,32 0x54504b54 meta nftrace set 1",
        "meta l4proto ipv6-icmp @th,64,32 0x54504b54 meta nftrace set 1",
        "meta l4proto udp @th,64,32 0x54504b54 meta nftrace set 1",
        "tcp sport @tcp_ports meta nftrace set 1",
        "tcp dport @tcp_ports meta nftrace set 1",
        "udp sport @udp_ports meta nftrace set 1",
        "udp dport @udp_ports meta nftrace set 1",
    ] {
        assert!(listing.contains(want), "missing {want:?}");
    }
    // Nothing in it decides: no verdict statement anywhere.
    for verdict in ["accept\n", "drop", "reject", "jump", "goto", "return", "queue"] {
        let rules: String = listing
            .lines()
            .filter(|l| !l.contains("policy"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            !rules.contains(verdict.trim()),
            "a verdict in the trace table: {verdict}"
        );
    }

    t.add_port(PortProto::Tcp, 40001).unwrap();
    t.add_port(PortProto::Udp, 40002).unwrap();
    t.add_port(PortProto::Tcp, 40001).unwrap();
    let sets = sh(&format!("ip netns exec {name} nft list set inet tracepkt tcp_ports"));
    assert!(sets.contains("40001"), "{sets}");
    t.remove_port(PortProto::Tcp, 40001).unwrap();
    t.remove_port(PortProto::Tcp, 40001).unwrap();
    let sets = sh(&format!("ip netns exec {name} nft list set inet tracepkt tcp_ports"));
    assert!(!sets.contains("40001"), "{sets}");

    // A second tracepkt in the same namespace cannot take it over.
    assert!(TraceTable::create(Some(&ns)).await.is_err());

    t.remove().unwrap();
    assert_eq!(tables(name), "", "removing leaves no table");

    // Dropping the owner closes its socket: the kernel removes the table, as on kill -9.
    let t = TraceTable::create(Some(&ns)).await.unwrap();
    assert!(table::exists(Some(&ns)).await.unwrap());
    drop(t);
    assert!(
        !table::exists(Some(&ns)).await.unwrap(),
        "an owned table goes with its socket"
    );

    // A leftover (a table by that name no socket owns, as a kernel without owned tables
    // leaves after kill -9) is found and removed, at start as on its own.
    sh(&format!("ip netns exec {name} nft add table inet tracepkt"));
    assert!(table::remove_leftover(Some(&ns)).await.unwrap());
    assert_eq!(tables(name), "");
    sh(&format!("ip netns exec {name} nft add table inet tracepkt"));
    let t = TraceTable::create(Some(&ns)).await.unwrap();
    assert!(t.leftover_removed);
    t.remove().unwrap();
    assert_eq!(tables(name), "");

    // A namespace that is not there is an error that says so.
    let gone = PathBuf::from("/run/netns/tpkx-not-there");
    let e = TraceTable::create(Some(&gone)).await.err().unwrap().to_string();
    assert!(e.contains("tpkx-not-there"), "{e}");
}

/// The node's trace table and a session on it, with the ruleset loaded.
async fn explained(t: &Topology) -> (TraceTable, Session, Arc<Anomalies>) {
    let node = PathBuf::from(format!("/run/netns/{}", t.node));
    let anomalies = Arc::new(Anomalies::default());
    let session = Session::open(Some(&node), anomalies.clone()).await.unwrap();
    let table = TraceTable::create(Some(&node)).await.unwrap();
    (table, session, anomalies)
}

#[tokio::test]
async fn kube_proxy_rules_name_the_service_the_endpoint_and_the_missing_endpoints() {
    require_privileges!("kube_proxy_rules_name_the_service_the_endpoint_and_the_missing_endpoints");
    let t = topology("tpkx-kp");
    kube_proxy_rules(&t.node);
    let _listener = backend_listener(&t.back);
    let (mut table, mut s, anomalies) = explained(&t).await;
    let h = |family: &str, tbl: &str, chain: &str| handles(&t.node, family, tbl, chain);

    // A TCP SYN to the ClusterIP: DNAT to the endpoint, masquerade mark, answered.
    let (sock, port) = tcp_socket(&t.pod);
    table.add_port(PortProto::Tcp, port).unwrap();
    let probe = s.collector.watch(ProbeKey::Tcp { port });
    assert_eq!(tcp_connect(sock, CLUSTER_IP, 80), Outcome::Answered);
    s.pump_until_quiet(Duration::from_millis(300)).await.unwrap();
    let rows = s.collector.take(probe);
    print(&rows);
    let req = requests(&rows);
    let nat = "ip nat";
    let (pre, services, svc_chain, sep, masq, post, kpost) = (
        h("ip", "nat", "PREROUTING"),
        h("ip", "nat", "KUBE-SERVICES"),
        h("ip", "nat", "KUBE-SVC-CARTHTTPAAAAAAAA"),
        h("ip", "nat", "KUBE-SEP-CARTHTTPBBBBBBBB"),
        h("ip", "nat", "KUBE-MARK-MASQ"),
        h("ip", "nat", "POSTROUTING"),
        h("ip", "nat", "KUBE-POSTROUTING"),
    );
    let (fwd, fservices) = (h("ip", "filter", "FORWARD"), h("ip", "filter", "KUBE-SERVICES"));
    let rule = TraceKind::Rule;
    let jump = |c: &str| Verdict::Jump(c.into());
    let want = vec![
        row(
            &format!("{nat} PREROUTING"),
            Some(pre[0]),
            rule,
            jump("KUBE-SERVICES"),
            Some("kubernetes service portals"),
        ),
        row(
            &format!("{nat} KUBE-SERVICES"),
            Some(services[0]),
            rule,
            jump("KUBE-SVC-CARTHTTPAAAAAAAA"),
            Some("shop/cart:http cluster IP"),
        ),
        row(
            &format!("{nat} KUBE-SVC-CARTHTTPAAAAAAAA"),
            Some(svc_chain[0]),
            rule,
            jump("KUBE-MARK-MASQ"),
            Some("shop/cart:http cluster IP"),
        ),
        row(
            &format!("{nat} KUBE-MARK-MASQ"),
            Some(masq[0]),
            rule,
            Verdict::Continue,
            None,
        ),
        row(
            &format!("{nat} KUBE-MARK-MASQ"),
            None,
            TraceKind::Return,
            Verdict::Continue,
            None,
        ),
        row(
            &format!("{nat} KUBE-SVC-CARTHTTPAAAAAAAA"),
            Some(svc_chain[1]),
            rule,
            jump("KUBE-SEP-CARTHTTPBBBBBBBB"),
            Some(&format!("shop/cart:http -> {BACKEND}:8080")),
        ),
        row(
            &format!("{nat} KUBE-SEP-CARTHTTPBBBBBBBB"),
            Some(sep[1]),
            rule,
            Verdict::Accept,
            Some("shop/cart:http"),
        ),
        row(
            "ip filter FORWARD",
            Some(fwd[0]),
            rule,
            jump("KUBE-SERVICES"),
            Some("kubernetes service portals"),
        ),
        row(
            "ip filter KUBE-SERVICES",
            None,
            TraceKind::Return,
            Verdict::Continue,
            None,
        ),
        row("ip filter FORWARD", None, TraceKind::Return, Verdict::Continue, None),
        row("ip filter FORWARD", None, TraceKind::Policy, Verdict::Accept, None),
        row(
            &format!("{nat} POSTROUTING"),
            Some(post[0]),
            rule,
            jump("KUBE-POSTROUTING"),
            Some("kubernetes postrouting rules"),
        ),
        row(
            &format!("{nat} KUBE-POSTROUTING"),
            Some(kpost[1]),
            rule,
            Verdict::Continue,
            None,
        ),
        row(
            &format!("{nat} KUBE-POSTROUTING"),
            Some(kpost[2]),
            rule,
            Verdict::Accept,
            Some("kubernetes service traffic requiring SNAT"),
        ),
    ];
    let got: Vec<Seen> = req.iter().map(|r| seen(r)).collect();
    assert_eq!(got, want);
    // The facts, the texts, the mark and what NAT did to the headers.
    let cart = svc("shop/cart:http");
    assert_eq!(req[1].facts, vec![Fact::Service { service: cart.clone() }]);
    assert_eq!(
        req[5].facts,
        vec![Fact::Endpoint {
            service: cart.clone(),
            endpoint: format!("{BACKEND}:8080").parse().unwrap()
        }]
    );
    assert_eq!(req[6].facts, vec![Fact::Service { service: cart.clone() }]);
    assert!(req.iter().all(|r| r.rule == RuleState::Read || r.handle.is_none()));
    assert_eq!(req[1].comment.as_ref().unwrap().source, CommentSource::Xt);
    eprintln!("texts: {:#?}", req.iter().map(|r| r.text.clone()).collect::<Vec<_>>());
    assert_eq!(req[3].mark, Some(0x4000), "KUBE-MARK-MASQ sets the masquerade mark");
    assert!(req[3].marked && req[3].decided());
    assert!(req[12].marked, "KUBE-POSTROUTING clears it again");
    assert!(
        req[6]
            .text
            .as_deref()
            .unwrap()
            .contains(&format!("DNAT to {BACKEND}:8080"))
    );
    let before = req[0].packet.as_ref().unwrap();
    let after = req[7].packet.as_ref().unwrap();
    assert_eq!(before.dst.to_string(), CLUSTER_IP, "prerouting sees the ClusterIP");
    assert_eq!(
        after.dst.to_string(),
        BACKEND,
        "forward sees the endpoint: DNAT rewrote the header"
    );
    assert!(matches!(after.l4, L4::Tcp { dport: 8080, sport, .. } if sport == port));
    // 6.18 says what conntrack knows: the SYN is new, and its entry was DNATed by then.
    let ct = req[7].ct.as_ref().expect("conntrack attributes");
    assert_eq!(ct.state_name().as_deref(), Some("new"));
    assert_eq!(ct.dnat(), Some(true));
    assert_eq!(ct.reply, Some(false));
    table.remove_port(PortProto::Tcp, port).unwrap();

    // A TCP SYN to the Service without endpoints: kube-proxy's REJECT.
    let (sock, port) = tcp_socket(&t.pod);
    table.add_port(PortProto::Tcp, port).unwrap();
    let probe = s.collector.watch(ProbeKey::Tcp { port });
    assert_eq!(tcp_connect(sock, EMPTY_IP, 80), Outcome::Refused);
    s.pump_until_quiet(Duration::from_millis(300)).await.unwrap();
    let rows = s.collector.take(probe);
    print(&rows);
    let req = requests(&rows);
    let last = req.last().unwrap();
    assert_eq!(
        seen(last),
        row(
            "ip filter KUBE-SERVICES",
            Some(fservices[0]),
            rule,
            Verdict::Drop,
            Some("shop/empty:http has no endpoints")
        )
    );
    assert_eq!(
        last.facts,
        vec![Fact::NoEndpoints {
            service: svc("shop/empty:http"),
            local: false
        }]
    );
    assert!(last.text.as_deref().unwrap().contains("REJECT"), "{:?}", last.text);

    // A UDP probe through the two odd comments: 255 bytes, and bytes that are not UTF-8.
    let (sock, port) = udp_socket(&t.pod);
    let probe = s.collector.watch(ProbeKey::Udp {
        port,
        trace: Some([0xa1, 0xa2, 0xa3, 0xa4]),
    });
    let mut trace = [0u8; 16];
    trace[..4].copy_from_slice(&[0xa1, 0xa2, 0xa3, 0xa4]);
    udp_exchange(&sock, BACKEND, 9999, &payload(trace));
    s.pump_until_quiet(Duration::from_millis(300)).await.unwrap();
    let rows = s.collector.take(probe);
    print(&rows);
    let comments: Vec<_> = rows.iter().filter_map(|r| r.comment.clone()).collect();
    let long = comments
        .iter()
        .find(|c| c.text.starts_with("long"))
        .expect("the 255-byte comment");
    assert_eq!(long.text, long_comment());
    assert_eq!(long.raw.len(), 255);
    let bad = comments
        .iter()
        .find(|c| c.text.starts_with("bad"))
        .expect("the non-UTF-8 comment");
    assert_eq!(bad.raw, b"bad \xff\xfe utf8");
    assert_eq!(bad.text, "bad \u{fffd}\u{fffd} utf8");
    assert!(matches!(
        rows[0].packet.as_ref().unwrap().l4,
        L4::Udp {
            dport: 9999,
            magic: Some([0xa1, 0xa2, 0xa3, 0xa4]),
            ..
        }
    ));
    for a in Anomaly::ALL {
        eprintln!("anomaly {}: {}", a.as_str(), anomalies.get(a));
    }
    assert_eq!(anomalies.get(Anomaly::Truncated), 0);
    assert_eq!(anomalies.get(Anomaly::UnknownAttribute), 0);
    table.remove().unwrap();
}

#[tokio::test]
async fn native_rules_name_the_user_chain_drop_and_the_policy_drop() {
    require_privileges!("native_rules_name_the_user_chain_drop_and_the_policy_drop");
    let t = topology("tpkx-nat");
    native_rules(&t.node);
    let (table, mut s, anomalies) = explained(&t).await;
    let h = |family: &str, tbl: &str, chain: &str| handles(&t.node, family, tbl, chain);

    // UDP with tracepkt's payload into a user chain that drops it.
    let (sock, port) = udp_socket(&t.pod);
    let probe = s.collector.watch(ProbeKey::Udp { port, trace: None });
    assert_eq!(udp_exchange(&sock, BACKEND, 9999, &payload([7; 16])), Outcome::Silent);
    s.pump_until_quiet(Duration::from_millis(300)).await.unwrap();
    let rows = s.collector.take(probe);
    print(&rows);
    let got: Vec<Seen> = rows.iter().map(seen).collect();
    assert_eq!(
        got,
        vec![
            row(
                "inet shop forward",
                Some(h("inet", "shop", "forward")[0]),
                TraceKind::Rule,
                Verdict::Jump("quarantine".into()),
                Some("send 9999 to quarantine")
            ),
            row(
                "inet shop quarantine",
                Some(h("inet", "shop", "quarantine")[0]),
                TraceKind::Rule,
                Verdict::Drop,
                Some("it's <b>quarantined</b> & 'dropped'")
            ),
        ]
    );
    assert_eq!(rows[1].comment.as_ref().unwrap().source, CommentSource::Native);
    assert_eq!(
        rows[0].text.as_deref(),
        Some("meta l4proto udp udp dport 9999 counter jump quarantine")
    );
    assert_eq!(rows[1].text.as_deref(), Some("meta l4proto udp counter drop"));

    // ICMP echo with the payload to the fenced address: the base chain's policy drops it.
    let probe = s.collector.watch(ProbeKey::Echo {
        id: 0x7470,
        seq: 1,
        trace: None,
    });
    assert_eq!(ping(&t.pod, FENCED, 0x7470, 1, payload([9; 16])), Outcome::Silent);
    s.pump_until_quiet(Duration::from_millis(300)).await.unwrap();
    let rows = s.collector.take(probe);
    print(&rows);
    let got: Vec<Seen> = rows.iter().map(seen).collect();
    assert_eq!(
        got,
        vec![
            row("inet shop forward", None, TraceKind::Return, Verdict::Continue, None),
            row("inet shop forward", None, TraceKind::Policy, Verdict::Accept, None),
            row("ip strict forward", None, TraceKind::Return, Verdict::Continue, None),
            row("ip strict forward", None, TraceKind::Policy, Verdict::Drop, None),
        ]
    );
    let decided: Vec<bool> = rows.iter().map(Row::decided).collect();
    assert_eq!(
        decided,
        vec![false, true, false, true],
        "a chain's end decides nothing; its policy does"
    );
    assert!(matches!(
        rows[0].packet.as_ref().unwrap().l4,
        L4::Echo {
            reply: false,
            id: 0x7470,
            seq: 1,
            ..
        }
    ));

    // A rule deleted while the probe is in flight: the row keeps what the trace said.
    let probe = s.collector.watch(ProbeKey::Udp { port, trace: None });
    udp_exchange(&sock, BACKEND, 9999, &payload([7; 16]));
    let quarantine = h("inet", "shop", "quarantine")[0];
    sh(&format!(
        "ip netns exec {} nft delete rule inet shop quarantine handle {quarantine}",
        t.node
    ));
    s.pump_until_quiet(Duration::from_millis(300)).await.unwrap();
    let rows = s.collector.take(probe);
    print(&rows);
    assert_eq!(rows[1].handle, Some(quarantine));
    assert_eq!(rows[1].verdict, Some(Verdict::Drop));
    assert_eq!(rows[1].rule, RuleState::Gone);
    assert_eq!(rows[1].comment, None);
    assert_eq!(anomalies.get(Anomaly::RuleGone), 1);
    table.remove().unwrap();
    assert_eq!(tables(&t.node).lines().filter(|l| l.contains("tracepkt")).count(), 0);
}

#[tokio::test]
async fn the_trace_table_changes_no_verdict() {
    require_privileges!("the_trace_table_changes_no_verdict");
    let t = topology("tpkx-same");
    kube_proxy_rules(&t.node);
    native_rules(&t.node);
    let _listener = backend_listener(&t.back);
    let outcomes = |t: &Topology, mut table: Option<&mut TraceTable>| {
        let mut tcp = |to: &str| {
            let (sock, port) = tcp_socket(&t.pod);
            if let Some(table) = table.as_mut() {
                table.add_port(PortProto::Tcp, port).unwrap();
            }
            tcp_connect(sock, to, 80)
        };
        let cluster = tcp(CLUSTER_IP);
        let empty = tcp(EMPTY_IP);
        let (sock, _) = udp_socket(&t.pod);
        let dropped = udp_exchange(&sock, BACKEND, 9999, &payload([1; 16]));
        let (sock, _) = udp_socket(&t.pod);
        let refused = udp_exchange(&sock, BACKEND, 9998, &payload([1; 16]));
        let fenced = ping(&t.pod, FENCED, 0x7471, 1, payload([2; 16]));
        let open = ping(&t.pod, BACKEND, 0x7471, 2, payload([2; 16]));
        vec![cluster, empty, dropped, refused, fenced, open]
    };
    let without = outcomes(&t, None);
    assert_eq!(
        without,
        vec![
            Outcome::Answered,
            Outcome::Refused,
            Outcome::Silent,
            Outcome::Refused,
            Outcome::Silent,
            Outcome::Answered
        ]
    );
    let (mut table, mut s, _) = explained(&t).await;
    let with = outcomes(&t, Some(&mut table));
    let traced = s.pump_until_quiet(Duration::from_millis(300)).await.unwrap();
    assert!(traced > 20, "the probes were traced ({traced} messages)");
    assert_eq!(
        with, without,
        "the same ruleset gives the same outcomes with the trace table"
    );
    table.remove().unwrap();
    assert!(!tables(&t.node).contains("tracepkt"));
}

#[tokio::test]
async fn a_namespace_that_disappears_ends_cleanly() {
    require_privileges!("a_namespace_that_disappears_ends_cleanly");
    let mut c = Cleanup::default();
    let ns = c.netns("tpkx-gone");
    let anomalies = Arc::new(Anomalies::default());
    let mut listener = Listener::open(Some(&ns), anomalies.clone()).await.unwrap();
    let table = TraceTable::create(Some(&ns)).await.unwrap();
    sh("ip netns del tpkx-gone");
    // The sockets keep the namespace alive: removing the table still works, and the
    // listener simply hears nothing.
    table.remove().unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), listener.next())
            .await
            .is_err()
    );
    drop(listener);
    // Opening anything in it now fails with a message naming it.
    let e = Session::open(Some(&ns), anomalies).await.err().unwrap().to_string();
    assert!(e.contains("tpkx-gone"), "{e}");
    let _ = Family::Inet;
}

/// Captures the fixtures the decoders' unit tests read (`fixtures/`), from the real kernel.
#[tokio::test]
#[ignore = "writes exporter/src/explain/fixtures: run with --ignored to capture them again"]
async fn capture_fixtures() {
    require_privileges!("capture_fixtures");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/explain/fixtures");
    std::fs::create_dir_all(&dir).unwrap();
    let t = topology("tpkx-cap");
    kube_proxy_rules(&t.node);
    native_rules(&t.node);
    let node = PathBuf::from(format!("/run/netns/{}", t.node));
    let anomalies = Arc::new(Anomalies::default());
    let mut listener = Listener::open(Some(&node), anomalies.clone()).await.unwrap();
    let table = TraceTable::create(Some(&node)).await.unwrap();
    let mut datagrams = Vec::new();
    let (sock, _) = udp_socket(&t.pod);
    udp_exchange(&sock, BACKEND, 9999, &payload([7; 16]));
    ping(&t.pod, FENCED, 0x7470, 1, payload([9; 16]));
    while let Ok(Ok(d)) = tokio::time::timeout(Duration::from_millis(300), listener.next_raw()).await {
        datagrams.push(d.to_vec());
    }
    let pick = |pred: &dyn Fn(&super::trace::TraceMessage) -> bool| {
        datagrams
            .iter()
            .find(|d| super::trace::decode(d, &anomalies).iter().any(pred))
            .cloned()
            .expect("a captured message")
    };
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).unwrap();
    write(
        "trace-jump.bin",
        &pick(&|m| matches!(m.verdict, Some(Verdict::Jump(_))) && m.network.is_some()),
    );
    write(
        "trace-drop.bin",
        &pick(&|m| m.chain.as_deref() == Some("quarantine") && m.verdict == Some(Verdict::Drop)),
    );
    write(
        "trace-policy.bin",
        &pick(&|m| m.table.as_deref() == Some("strict") && m.kind == Some(TraceKind::Policy)),
    );
    let mut nl = super::netlink::Nfnl::open(Some(&node)).await.unwrap();
    for (family, tbl, chain, name) in [
        (Family::Ip, "nat", "KUBE-SVC-CARTHTTPAAAAAAAA", "rules-xt.bin"),
        (Family::Ip, "nat", "KUBE-SEP-CARTHTTPBBBBBBBB", "rules-xt-dnat.bin"),
        (Family::Inet, "shop", "forward", "rules-native.bin"),
    ] {
        use netlink_packet_netfilter::nftables::{NfTablesMessage, RuleAttribute, RuleMessage};
        let replies = nl
            .request(
                "dump",
                family.into(),
                NfTablesMessage::GetRule(RuleMessage {
                    attributes: vec![RuleAttribute::Table(tbl.into()), RuleAttribute::Chain(chain.into())],
                }),
                true,
            )
            .unwrap();
        // Each body prefixed with its length (u32, little-endian).
        let mut out = Vec::new();
        for r in replies {
            out.extend_from_slice(&(r.body.len() as u32).to_le_bytes());
            out.extend_from_slice(&r.body);
        }
        write(name, &out);
    }
    table.remove().unwrap();
}

/// kube-proxy's nftables mode for Service shop/cart:http, as its proxier writes it: a
/// verdict map from ClusterIP . protocol . port to the Service's chain, and from there to the
/// endpoint's chain, whose names carry the Service and the endpoint.
fn kube_proxy_nft_rules(node: &str) {
    let svc = "service-ULMVA6XW-shop/cart/tcp/http";
    let ep = format!("endpoint-5OJB2KTY-shop/cart/tcp/http__{BACKEND}/8080");
    let rules = format!(
        "table ip kube-proxy {{
  comment \"rules for kube-proxy\"
  map service-ips {{
    type ipv4_addr . inet_proto . inet_service : verdict
    comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\"
  }}
  chain mark-for-masquerade {{ mark set mark or 0x4000; }}
  chain {ep} {{
    ip saddr {BACKEND} jump mark-for-masquerade
    meta l4proto tcp dnat to {BACKEND}:8080
  }}
  chain {svc} {{
    ip daddr {CLUSTER_IP} tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
    numgen random mod 1 vmap {{ 0 : goto {ep} }}
  }}
  chain services {{ ip daddr . meta l4proto . th dport vmap @service-ips; }}
  chain nat-prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    jump services
  }}
}}
add element ip kube-proxy service-ips {{ {CLUSTER_IP} . tcp . 80 : goto {svc} }}
"
    );
    let file = std::env::temp_dir().join(format!("{node}.kube.nft"));
    std::fs::write(&file, rules).unwrap();
    sh(&format!("ip netns exec {node} nft -f {}", file.display()));
    let _ = std::fs::remove_file(file);
}

#[tokio::test]
async fn kube_proxy_nftables_mode_names_the_service_and_the_endpoint() {
    require_privileges!("kube_proxy_nftables_mode_names_the_service_and_the_endpoint");
    let t = topology("tpkx-kpn");
    kube_proxy_nft_rules(&t.node);
    let _listener = backend_listener(&t.back);
    let (mut table, mut s, _) = explained(&t).await;
    let (sock, port) = tcp_socket(&t.pod);
    table.add_port(PortProto::Tcp, port).unwrap();
    let probe = s.collector.watch(ProbeKey::Tcp { port });
    assert_eq!(tcp_connect(sock, CLUSTER_IP, 80), Outcome::Answered);
    s.pump_until_quiet(Duration::from_millis(300)).await.unwrap();
    let rows = s.collector.take(probe);
    print(&rows);
    let req = requests(&rows);
    let svc_chain = "service-ULMVA6XW-shop/cart/tcp/http";
    let ep_chain = format!("endpoint-5OJB2KTY-shop/cart/tcp/http__{BACKEND}/8080");
    let decided: Vec<(String, Option<Verdict>)> = req
        .iter()
        .filter(|r| r.decided())
        .map(|r| (r.chain.clone(), r.verdict.clone()))
        .collect();
    assert_eq!(
        decided,
        vec![
            ("nat-prerouting".to_string(), Some(Verdict::Jump("services".into()))),
            ("services".to_string(), Some(Verdict::Goto(svc_chain.into()))),
            (svc_chain.to_string(), Some(Verdict::Jump("mark-for-masquerade".into()))),
            ("mark-for-masquerade".to_string(), Some(Verdict::Continue)),
            (svc_chain.to_string(), Some(Verdict::Goto(ep_chain.clone()))),
            (ep_chain.clone(), Some(Verdict::Accept)),
        ]
    );
    let cart = svc("shop/cart:http");
    let by_chain = |c: &str| {
        req.iter()
            .filter(|r| r.chain == c)
            .flat_map(|r| r.facts.clone())
            .collect::<Vec<_>>()
    };
    assert!(
        by_chain(svc_chain)
            .iter()
            .all(|f| *f == Fact::Service { service: cart.clone() })
    );
    assert!(!by_chain(svc_chain).is_empty());
    assert_eq!(
        by_chain(&ep_chain),
        vec![Fact::Endpoint {
            service: cart.clone(),
            endpoint: format!("{BACKEND}:8080").parse().unwrap()
        }]
    );
    let texts: Vec<&str> = req.iter().filter_map(|r| r.text.as_deref()).collect();
    for want in [
        "ip daddr . meta l4proto . th dport vmap @service-ips".to_string(),
        format!("meta l4proto tcp dnat to {BACKEND}:8080"),
        "meta mark set meta mark | 0x4000".to_string(),
    ] {
        assert!(texts.contains(&want.as_str()), "{want:?} not in {texts:#?}");
    }
    table.remove().unwrap();
}
