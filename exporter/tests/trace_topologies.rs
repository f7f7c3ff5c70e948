//! `tracepkt trace` against real topologies built in network namespaces: the exact hop
//! sequence, interface names and namespace inodes. Needs root; skips with a reason otherwise.
//!
//! Addresses come from 198.18.0.0/15 (reserved for benchmarking, RFC 2544) and fd00:7470::/32,
//! and exist only inside namespaces these tests create.

mod common;

use common::{Cleanup, addr_up, describe, hop, host_netns_inode, netns_inode, path, sh, trace_json};

#[test]
fn veth_pair_into_a_namespace() {
    require_privileges!("veth_pair_into_a_namespace");
    let mut c = Cleanup::new();
    let ns = c.veth_ns("tpk-veth", "tpkv0", "198.18.1");

    let (out, hops) = trace_json(None, &["198.18.1.2"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let host = host_netns_inode();
    let inner = netns_inode(&ns);
    assert_eq!(
        path(&hops),
        vec![
            hop("request", "tx", "tpkv0", host),
            hop("request", "rx", "eth0", inner),
            hop("reply", "tx", "eth0", inner),
            hop("reply", "rx", "tpkv0", host),
        ],
        "{}",
        describe(&out)
    );
    for h in &hops {
        assert_eq!(h["kind"], "interface", "no drop or netfilter rows expected: {h}");
        let expected_name = if h["netns"].as_u64() == Some(inner) {
            serde_json::json!(ns)
        } else {
            serde_json::Value::Null
        };
        assert_eq!(h["netns_name"], expected_name, "{h}");
        let (src, dst) = if h["direction"] == "request" {
            ("198.18.1.1", "198.18.1.2")
        } else {
            ("198.18.1.2", "198.18.1.1")
        };
        assert_eq!(
            (h["saddr"].as_str().unwrap(), h["daddr"].as_str().unwrap()),
            (src, dst),
            "{h}"
        );
        assert_eq!(h["seq"], 0);
        assert!(h["ifindex"].as_u64().unwrap() > 0);
        assert!(h["ts_ns"].as_u64().unwrap() > 0);
    }
    // One echo id for the whole run, and hops in time order.
    assert!(hops.iter().all(|h| h["probe"] == hops[0]["probe"]));
    let ts: Vec<u64> = hops.iter().map(|h| h["ts_ns"].as_u64().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{ts:?}");
}

#[test]
fn bridge_with_two_containers() {
    require_privileges!("bridge_with_two_containers");
    let mut c = Cleanup::new();
    c.host_link("tpkbr0");
    sh("ip link add tpkbr0 type bridge && ip addr add 198.18.2.1/24 dev tpkbr0 && ip link set dev tpkbr0 up");
    for i in 1..=2 {
        let ns = c.netns(&format!("tpk-c{i}"));
        sh(&format!("ip link add tpkc{i}h type veth peer name eth0 netns {ns}"));
        sh(&format!(
            "ip link set dev tpkc{i}h master tpkbr0 && ip link set dev tpkc{i}h up"
        ));
        addr_up(&ns, "eth0", &format!("198.18.2.1{i}/24"));
        sh(&format!("ip -n {ns} route add default via 198.18.2.1"));
    }

    let (out, hops) = trace_json(None, &["198.18.2.11"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let host = host_netns_inode();
    let c1 = netns_inode("tpk-c1");
    assert_eq!(
        path(&hops),
        vec![
            hop("request", "tx", "tpkbr0", host),
            hop("request", "tx", "tpkc1h", host),
            hop("request", "rx", "eth0", c1),
            hop("reply", "tx", "eth0", c1),
            hop("reply", "rx", "tpkc1h", host),
            hop("reply", "rx", "tpkbr0", host),
        ],
        "{}",
        describe(&out)
    );
    assert!(
        hops.iter().all(|h| h["netns"].as_u64() != Some(netns_inode("tpk-c2"))),
        "nothing reaches the other container"
    );
    assert!(
        hops.iter()
            .filter(|h| h["netns"].as_u64() == Some(c1))
            .all(|h| h["netns_name"] == "tpk-c1")
    );
}

#[test]
fn namespace_routing_between_two_others() {
    require_privileges!("namespace_routing_between_two_others");
    let mut c = Cleanup::new();
    let a = c.netns("tpk-ra");
    let r = c.netns("tpk-rr");
    let b = c.netns("tpk-rb");
    sh(&format!("ip -n {a} link add eth0 type veth peer name ra netns {r}"));
    sh(&format!("ip -n {b} link add eth0 type veth peer name rb netns {r}"));
    addr_up(&a, "eth0", "198.18.3.2/24");
    addr_up(&b, "eth0", "198.18.4.2/24");
    addr_up(&r, "ra", "198.18.3.1/24");
    addr_up(&r, "rb", "198.18.4.1/24");
    sh(&format!("ip netns exec {r} sysctl -qw net.ipv4.ip_forward=1"));
    sh(&format!("ip -n {a} route add default via 198.18.3.1"));
    sh(&format!("ip -n {b} route add default via 198.18.4.1"));

    // tracepkt runs inside namespace a: it must find tracefs and BTF there too.
    let (out, hops) = trace_json(Some(&a), &["198.18.4.2"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let (ia, ir, ib) = (netns_inode(&a), netns_inode(&r), netns_inode(&b));
    assert_eq!(
        path(&hops),
        vec![
            hop("request", "tx", "eth0", ia),
            hop("request", "rx", "ra", ir),
            hop("request", "tx", "rb", ir),
            hop("request", "rx", "eth0", ib),
            hop("reply", "tx", "eth0", ib),
            hop("reply", "rx", "rb", ir),
            hop("reply", "tx", "ra", ir),
            hop("reply", "rx", "eth0", ia),
        ],
        "{}",
        describe(&out)
    );
    // Forwarding keeps the addresses: the router is not the source.
    assert!(
        hops.iter()
            .filter(|h| h["direction"] == "request")
            .all(|h| h["saddr"] == "198.18.3.2" && h["daddr"] == "198.18.4.2")
    );
}

#[test]
fn ipv6_veth_pair() {
    require_privileges!("ipv6_veth_pair");
    let mut c = Cleanup::new();
    let ns = c.veth_ns6("tpk-v6", "tpk6v0", "fd00:7470:6::");

    let (out, hops) = trace_json(None, &["-6", "fd00:7470:6::2"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let host = host_netns_inode();
    let inner = netns_inode(&ns);
    assert_eq!(
        path(&hops),
        vec![
            hop("request", "tx", "tpk6v0", host),
            hop("request", "rx", "eth0", inner),
            hop("reply", "tx", "eth0", inner),
            hop("reply", "rx", "tpk6v0", host),
        ],
        "{}",
        describe(&out)
    );
    assert_eq!(hops[0]["saddr"], "fd00:7470:6::1");
    assert_eq!(hops[0]["daddr"], "fd00:7470:6::2");
}

#[test]
fn unanswered_probe_exits_1_and_says_where_it_was_last_seen() {
    require_privileges!("unanswered_probe_exits_1_and_says_where_it_was_last_seen");
    let mut c = Cleanup::new();
    let ns = c.veth_ns("tpk-lost", "tpkl0", "198.18.5");
    // The namespace has no route back: the request arrives, the reply cannot leave.
    sh(&format!("ip -n {ns} route flush dev eth0"));

    let (out, hops) = trace_json(None, &["--timeout", "0.5", "198.18.5.2"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let inner = netns_inode(&ns);
    let p = path(&hops);
    assert_eq!(
        p.first(),
        Some(&hop("request", "tx", "tpkl0", host_netns_inode())),
        "{}",
        describe(&out)
    );
    assert!(p.contains(&hop("request", "rx", "eth0", inner)), "{}", describe(&out));
    assert!(p.iter().all(|h| h.0 == "request"), "no reply hop: {}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no reply") && stderr.contains(&format!("last seen in netns {inner} (tpk-lost)")),
        "{}",
        describe(&out)
    );
}

#[test]
fn table_output_has_one_row_per_hop() {
    require_privileges!("table_output_has_one_row_per_hop");
    let out = std::process::Command::new(common::BIN)
        .args(["trace", "127.0.0.1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("NETWORK NS") && lines[0].contains("INTERFACE") && lines[0].contains("ADDRESSES"),
        "{text}"
    );
    let rows: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with('[')).collect();
    assert_eq!(rows.len(), 4, "{text}");
    for (row, (io, ty)) in rows
        .iter()
        .zip([("tx", "request"), ("rx", "request"), ("tx", "reply"), ("rx", "reply")])
    {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(&cols[1..6], &["lo", io, ty, "127.0.0.1", "->"], "{row}");
    }
    assert!(lines.last().unwrap().contains("reply in"), "{text}");
}

#[test]
fn host_unreachable_error_is_not_a_reply() {
    require_privileges!("host_unreachable_error_is_not_a_reply");
    let mut c = Cleanup::new();
    c.veth_ns("tpk-unr", "tpku0", "198.18.8");
    // Nobody answers ARP for .99: after the kernel's retries, it sends "host unreachable" back.
    let (out, hops) = trace_json(None, &["--timeout", "8", "198.18.8.99"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no reply: host unreachable from 198.18.8.1"),
        "{}",
        describe(&out)
    );
    assert!(hops.iter().all(|h| h["direction"] == "request"), "{}", describe(&out));
}
