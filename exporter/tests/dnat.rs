//! TCP and UDP probes sent from inside a "pod" namespace to a "service IP" that a "node"
//! namespace rewrites with DNAT to backend namespaces, as kube-proxy does: with iptables-legacy
//! and with nftables. Needs root; skips with a reason otherwise.
//!
//! Addresses come from 198.18.80.0/22 (iptables) and 198.18.84.0/22 (nftables) and exist only
//! inside namespaces these tests create.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Cleanup, Proc, TempDir, describe, free_port, sample, scrape, sh, trace_json};

/// Accepts TCP connections on `port` and closes them.
const TCP_SERVER: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(64)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.close()
"#;

/// Sends every UDP datagram on `port` back.
const UDP_ECHO: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
while True:
    d, a = s.recvfrom(4096)
    s.sendto(d, a)
"#;

fn server(ns: &str, script: &str, port: u16) -> Proc {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", script, &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a server");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "ready", "server in {ns} did not start");
    Proc(child)
}

/// The cluster in miniature. `net` is the second-to-last octet of the first of four /24s:
/// client `.net`, backend A `.net+1`, backend B `.net+2`, service IP `198.18.(net+3).10`.
struct Cluster {
    client: String,
    node: String,
    backend_a: String,
    backend_b: String,
    service: String,
    a_addr: String,
    _servers: Vec<Proc>,
}

/// Rules to rewrite the service IP, in either flavour.
enum Nat {
    IptablesLegacy,
    Nftables,
}

fn link(node: &str, node_if: &str, ns: &str, net: &str) {
    sh(&format!(
        "ip link add {node_if} netns {node} type veth peer name eth0 netns {ns} && \
         ip -n {node} addr add {net}.1/24 dev {node_if} && ip -n {node} link set dev {node_if} up && \
         ip -n {ns} addr add {net}.2/24 dev eth0 && ip -n {ns} link set dev eth0 up && \
         ip -n {ns} route add default via {net}.1"
    ));
}

fn cluster(c: &mut Cleanup, tag: &str, net: u8, nat: &Nat) -> Result<Cluster, String> {
    let client = c.netns(&format!("tpk-{tag}-client"));
    let node = c.netns(&format!("tpk-{tag}-node"));
    let backend_a = c.netns(&format!("tpk-{tag}-ba"));
    let backend_b = c.netns(&format!("tpk-{tag}-bb"));
    let (n0, n1, n2, n3) = (net, net + 1, net + 2, net + 3);
    link(&node, "cl0", &client, &format!("198.18.{n0}"));
    link(&node, "ba0", &backend_a, &format!("198.18.{n1}"));
    link(&node, "bb0", &backend_b, &format!("198.18.{n2}"));
    sh(&format!("ip netns exec {node} sysctl -qw net.ipv4.ip_forward=1"));
    let service = format!("198.18.{n3}.10");
    let a = format!("198.18.{n1}.2");
    let b = format!("198.18.{n2}.2");
    let rules: Vec<String> = match nat {
        Nat::IptablesLegacy => {
            let ipt = format!("ip netns exec {node} iptables-legacy");
            let probe = Command::new("sh")
                .arg("-c")
                .arg(format!("{ipt} -t nat -L -n"))
                .output()
                .map_err(|e| format!("iptables-legacy: {e}"))?;
            if !probe.status.success() {
                return Err(format!(
                    "iptables-legacy has no nat table on this kernel: {}",
                    String::from_utf8_lossy(&probe.stderr).trim()
                ));
            }
            vec![
                format!("{ipt} -t nat -A PREROUTING -d {service} -p tcp --dport 80 -j DNAT --to-destination {a}:8080"),
                format!("{ipt} -t nat -A PREROUTING -d {service} -p tcp --dport 81 -j DNAT --to-destination {a}:8081"),
                format!("{ipt} -t nat -A PREROUTING -d {service} -p tcp --dport 82 -j DNAT --to-destination {a}:8082"),
                format!("{ipt} -t nat -A PREROUTING -d {service} -p udp --dport 53 -j DNAT --to-destination {b}:5353"),
                format!("{ipt} -t nat -A PREROUTING -d {service} -p udp --dport 54 -j DNAT --to-destination {b}:5354"),
                format!("{ipt} -A FORWARD -d {a} -p tcp --dport 8082 -j DROP"),
            ]
        }
        Nat::Nftables => {
            let nft = format!("ip netns exec {node} nft");
            vec![
                format!("{nft} add table ip nat"),
                format!("{nft} 'add chain ip nat pre {{ type nat hook prerouting priority -100; }}'"),
                format!("{nft} add rule ip nat pre ip daddr {service} tcp dport 80 dnat to {a}:8080"),
                format!("{nft} add rule ip nat pre ip daddr {service} tcp dport 81 dnat to {a}:8081"),
                format!("{nft} add rule ip nat pre ip daddr {service} tcp dport 82 dnat to {a}:8082"),
                format!("{nft} add rule ip nat pre ip daddr {service} udp dport 53 dnat to {b}:5353"),
                format!("{nft} add rule ip nat pre ip daddr {service} udp dport 54 dnat to {b}:5354"),
                format!("{nft} add table ip filter"),
                format!("{nft} 'add chain ip filter tpkfwd {{ type filter hook forward priority 0; }}'"),
                format!("{nft} add rule ip filter tpkfwd ip daddr {a} tcp dport 8082 drop"),
            ]
        }
    };
    for r in rules {
        sh(&r);
    }
    let servers = vec![server(&backend_a, TCP_SERVER, 8080), server(&backend_b, UDP_ECHO, 5353)];
    Ok(Cluster {
        client,
        node,
        backend_a,
        backend_b,
        service,
        a_addr: a,
        _servers: servers,
    })
}

fn netns(name: &str) -> u64 {
    common::netns_inode(name)
}

/// Every check of one flavour: TCP through DNAT, refused, dropped; UDP answered and refused.
fn through_dnat(test: &str, tag: &str, net: u8, nat: Nat) {
    if !common::have_tool(test, "python3") {
        return;
    }
    let mut c = Cleanup::new();
    let k = match cluster(&mut c, tag, net, &nat) {
        Ok(k) => k,
        Err(reason) => {
            common::skip(test, &reason);
            return;
        }
    };
    let (client, node, ba) = (netns(&k.client), netns(&k.node), netns(&k.backend_a));

    // TCP to the service IP from inside the client: the whole path through DNAT and back.
    let (out, rows) = trace_json(None, &["--tcp", "80", "--from", &k.client, &k.service]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("over tcp") && stderr.contains("connected in"),
        "{stderr}"
    );
    let iface: Vec<&serde_json::Value> = rows.iter().filter(|r| r["kind"] == "interface").collect();
    let port = rows[0]["probe"].as_u64().unwrap();
    let find = |dir: &str, ns: u64, io: &str, ifname: &str| {
        iface
            .iter()
            .position(|r| r["direction"] == dir && r["netns"] == ns && r["io"] == io && r["ifname"] == ifname)
            .unwrap_or_else(|| panic!("no {dir} {io} on {ifname} in netns {ns}: {}", describe(&out)))
    };
    let out_client = find("request", client, "tx", "eth0");
    let into_node = find("request", node, "rx", "cl0");
    let out_node = find("request", node, "tx", "ba0");
    let into_backend = find("request", ba, "rx", "eth0");
    assert!(out_client < into_node && into_node < out_node && out_node < into_backend);
    // The rewrite: the service address until the node routes it, the backend's after.
    let svc = format!("{}:80", k.service);
    let backend = format!("{}:8080", k.a_addr);
    let to = |i: usize| format!("{}:{}", iface[i]["daddr"].as_str().unwrap(), iface[i]["dport"]);
    assert_eq!(to(out_client), svc, "{}", describe(&out));
    assert_eq!(to(into_node), svc, "{}", describe(&out));
    assert_eq!(to(out_node), backend, "{}", describe(&out));
    assert_eq!(to(into_backend), backend, "{}", describe(&out));
    assert!(iface.iter().all(|r| r["proto"] == "tcp"));
    assert!(
        iface
            .iter()
            .filter(|r| r["direction"] == "request")
            .all(|r| r["sport"].as_u64() == Some(port)),
        "the client's port names the probe on the way out: {}",
        describe(&out)
    );
    // And back through the reverse NAT: the client sees the service answer.
    let back = find("reply", client, "rx", "eth0");
    assert_eq!(
        format!("{}:{}", iface[back]["saddr"].as_str().unwrap(), iface[back]["sport"]),
        svc
    );
    assert_eq!(iface[back]["dport"].as_u64(), Some(port));
    find("reply", ba, "tx", "eth0");
    // Where the kernel shows netfilter verdicts (kprobes), the nat table's are there too.
    let nf_func = match nat {
        Nat::IptablesLegacy => "ipt_do_table",
        Nat::Nftables => "nft_do_chain",
    };
    if common::netfilter_visible(&out, nf_func, test) {
        assert!(
            rows.iter()
                .any(|r| r["kind"] == "netfilter" && r["table"] == "nat" && r["netns"] == node),
            "a nat verdict in the node: {}",
            describe(&out)
        );
    }

    // A closed port behind the service is refused; a dropped one times out at the drop.
    let (out, _) = trace_json(None, &["--tcp", "81", "--from", &k.client, &k.service]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused"),
        "{}",
        describe(&out)
    );
    let (out, rows) = trace_json(
        None,
        &["--tcp", "82", "--timeout", "0.5", "--from", &k.client, &k.service],
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let last = rows.last().unwrap_or_else(|| panic!("no hop: {}", describe(&out)));
    assert_eq!(last["kind"], "drop", "the drop is the last hop: {}", describe(&out));
    assert_eq!(last["netns"], node, "{}", describe(&out));
    assert!(last["reason"].as_str().is_some_and(|r| !r.is_empty()));

    // UDP: the echo answers through DNAT; a closed port is refused.
    let (out, rows) = trace_json(None, &["--udp", "53", "--from", &k.client, &k.service]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        rows.iter()
            .any(|r| r["direction"] == "request" && r["netns"] == netns(&k.backend_b) && r["dport"] == 5353),
        "{}",
        describe(&out)
    );
    assert!(rows.iter().any(|r| r["direction"] == "reply" && r["netns"] == client));
    let (out, _) = trace_json(None, &["--udp", "54", "--from", &k.client, &k.service]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused"),
        "{}",
        describe(&out)
    );
    eprintln!("{test}: ok");
}

#[test]
fn tcp_and_udp_through_iptables_dnat() {
    let test = "tcp_and_udp_through_iptables_dnat";
    require_privileges!(test);
    if !common::have_tool(test, "iptables-legacy") {
        return;
    }
    through_dnat(test, "ipt", 80, Nat::IptablesLegacy);
}

#[test]
fn tcp_and_udp_through_nftables_dnat() {
    let test = "tcp_and_udp_through_nftables_dnat";
    require_privileges!(test);
    if !common::have_tool(test, "nft") {
        return;
    }
    through_dnat(test, "nft", 84, Nat::Nftables);
}

#[test]
fn serve_checks_the_expected_path_and_survives_a_deleted_namespace() {
    let test = "serve_checks_the_expected_path_and_survives_a_deleted_namespace";
    require_privileges!(test);
    if !common::have_tool(test, "nft") || !common::have_tool(test, "python3") {
        return;
    }
    let mut c = Cleanup::new();
    let k = match cluster(&mut c, "exp", 88, &Nat::Nftables) {
        Ok(k) => k,
        Err(reason) => {
            common::skip(test, &reason);
            return;
        }
    };
    // A second client that goes away mid-run.
    let gone = c.netns("tpk-exp-gone");
    link(&k.node, "go0", &gone, "198.18.92");
    let dir = TempDir::new("dnat-serve");
    let port = free_port();
    let config = dir.path("config.yaml");
    common::write(
        &config,
        &format!(
            "listen: 127.0.0.1:{port}\nattach: always\ninterval: 1s\ntimeout: 500ms\ntargets:\n\
             \x20 - name: svc\n    address: {svc}\n    protocol: tcp\n    port: 80\n    from: {{netns: {client}}}\n\
             \x20   expect: {{through: [{ba}], not_through: [{bb}], no_drop: true}}\n\
             \x20 - name: gone\n    address: {svc}\n    protocol: udp\n    port: 53\n    from: {{netns: {gone}}}\n",
            svc = k.service,
            client = k.client,
            ba = k.backend_a,
            bb = k.backend_b,
        ),
    );
    let log = dir.path("serve.log");
    let _serve = common::serve(&config, &log);
    let svc = |text: &str, m: &str| sample(text, &format!("{m}{{target=\"svc\"}}"));
    common::wait_for(30, "the expected path, and an answer from both targets", &log, || {
        let t = scrape(port);
        let ok = svc(&t, "tracepkt_path_expected") == Some(1.0)
            && svc(&t, "tracepkt_probe_success") == Some(1.0)
            && sample(&t, "tracepkt_probe_success{target=\"gone\"}") == Some(1.0);
        ok.then_some(())
    });
    let t = scrape(port);
    assert!(svc(&t, "tracepkt_probe_rtt_seconds_count").unwrap_or(0.0) >= 1.0, "{t}");

    // A rule now drops the service's traffic in the node: the path is no longer as expected.
    sh(&format!(
        "ip netns exec {} nft insert rule ip filter tpkfwd ip daddr {} tcp dport 8080 drop",
        k.node, k.a_addr
    ));
    // And the second client's namespace disappears.
    sh(&format!("ip netns del {gone}"));
    common::wait_for(
        30,
        "the broken expectation, and the gone namespace's failures",
        &log,
        || {
            let t = scrape(port);
            let ok = svc(&t, "tracepkt_path_expected") == Some(0.0)
                && sample(&t, "tracepkt_probe_errors_total{target=\"gone\",reason=\"send\"}").unwrap_or(0.0) >= 2.0;
            ok.then_some(())
        },
    );
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains(&format!("path not as expected: did not cross {}", k.backend_a)),
        "the first broken expectation is named:\n{log_text}"
    );
    assert!(
        log_text.contains("tpk-exp-gone") && log_text.contains("No such file"),
        "the gone namespace is named:\n{log_text}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let t = scrape(port);
    assert_eq!(svc(&t, "tracepkt_probe_success"), Some(0.0), "{t}");
    assert_eq!(
        sample(&t, "tracepkt_probe_errors_total{target=\"svc\",reason=\"send\"}").unwrap_or(0.0),
        0.0,
        "the other target is not failed by the gone namespace: {t}"
    );
    assert!(
        sample(&t, "tracepkt_probe_errors_total{target=\"svc\",reason=\"timeout\"}").unwrap_or(0.0) >= 1.0,
        "{t}"
    );
}
