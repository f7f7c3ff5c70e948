//! Netfilter verdicts and drop reasons, on whatever kernel runs the suite. Drops
//! (`skb:kfree_skb`) are asserted on every kernel; a netfilter row is asserted where tracepkt
//! reports its hook attached, and the test says which it could not check otherwise.
//!
//! Rules live only inside namespaces the tests create; the host's rulesets are not touched.

mod common;

use common::{Cleanup, addr_up, describe, hop, host_netns_inode, netns_inode, path, sh, trace_json};
use serde_json::Value;

use common::netfilter_visible;

fn rows<'a>(hops: &'a [Value], kind: &str) -> Vec<&'a Value> {
    hops.iter().filter(|h| h["kind"] == kind).collect()
}

fn assert_netfilter_drop(hops: &[Value], netns: u64, ifname: &str, out: &std::process::Output) {
    let drops = rows(hops, "drop");
    assert_eq!(drops.len(), 1, "one drop: {}", describe(out));
    let d = drops[0];
    assert_eq!(d["reason"], "NETFILTER_DROP", "{d}");
    assert_eq!(d["netns"].as_u64(), Some(netns), "{d}");
    assert_eq!(d["ifname"], ifname, "{d}");
    assert_eq!(d["direction"], "request", "{d}");
    // Where the kernel freed it: nf_hook_slow, or nft_do_chain itself on newer kernels.
    let location = d["location"].as_str().unwrap();
    assert!(
        ["nf_hook_slow+0x", "nft_do_chain+0x"]
            .iter()
            .any(|f| location.starts_with(f)),
        "{d}"
    );
    assert_eq!(
        hops.last().unwrap(),
        d,
        "the drop is where the packet was last seen: {}",
        describe(out)
    );
}

#[test]
fn nftables_drop_names_table_chain_and_reason() {
    require_privileges!("nftables_drop_names_table_chain_and_reason");
    let mut c = Cleanup::new();
    let ns = c.veth_ns("tpk-nftd", "tpknd0", "198.18.10");
    sh(&format!(
        "ip netns exec {ns} nft -f - <<'EOF'
table inet tpkfilter {{
  chain tpkinput {{ type filter hook input priority 0; policy accept; icmp type echo-request drop; }}
}}
EOF"
    ));
    let (out, hops) = trace_json(None, &["--timeout", "0.5", "198.18.10.2"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let inner = netns_inode(&ns);
    assert_eq!(
        path(&hops),
        vec![
            hop("request", "tx", "tpknd0", host_netns_inode()),
            hop("request", "rx", "eth0", inner)
        ],
        "{}",
        describe(&out)
    );
    assert_netfilter_drop(&hops, inner, "eth0", &out);
    if netfilter_visible(&out, "nft_do_chain", "nftables_drop_names_table_chain_and_reason") {
        let nf = rows(&hops, "netfilter");
        let verdict = nf
            .iter()
            .find(|h| h["table"] == "tpkfilter")
            .unwrap_or_else(|| panic!("no tpkfilter row: {}", describe(&out)));
        assert_eq!(verdict["chain"], "tpkinput");
        assert_eq!(verdict["hook"], "INPUT");
        assert_eq!(verdict["verdict"], "DROP");
        assert_eq!(verdict["family"], "ip");
        assert_eq!(verdict["netns"].as_u64(), Some(inner));
    }
}

#[test]
fn nftables_accept_names_table_and_chain() {
    require_privileges!("nftables_accept_names_table_and_chain");
    let mut c = Cleanup::new();
    let ns = c.veth_ns("tpk-nfta", "tpkna0", "198.18.11");
    sh(&format!(
        "ip netns exec {ns} nft -f - <<'EOF'
table ip tpkacc {{
  chain tpkin {{ type filter hook input priority 0; policy accept; }}
  chain tpkout {{ type filter hook output priority 0; policy accept; }}
}}
EOF"
    ));
    let (out, hops) = trace_json(None, &["198.18.11.2"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(rows(&hops, "drop").is_empty(), "{}", describe(&out));
    if !netfilter_visible(&out, "nft_do_chain", "nftables_accept_names_table_and_chain") {
        return;
    }
    let inner = netns_inode(&ns);
    let nf: Vec<(String, String, String, String)> = rows(&hops, "netfilter")
        .iter()
        .filter(|h| h["table"] == "tpkacc")
        .map(|h| {
            assert_eq!(h["netns"].as_u64(), Some(inner), "{h}");
            let s = |k: &str| h[k].as_str().unwrap().to_string();
            (s("direction"), s("chain"), s("hook"), s("verdict"))
        })
        .collect();
    let t = |d: &str, c: &str, h: &str| (d.to_string(), c.to_string(), h.to_string(), "ACCEPT".to_string());
    assert_eq!(
        nf,
        vec![t("request", "tpkin", "INPUT"), t("reply", "tpkout", "OUTPUT")],
        "{}",
        describe(&out)
    );
}

#[test]
fn iptables_legacy_filter_input_drop_and_accept() {
    require_privileges!("iptables_legacy_filter_input_drop_and_accept");
    if !common::have_tool("iptables_legacy_filter_input_drop_and_accept", "iptables-legacy") {
        return;
    }
    let mut c = Cleanup::new();
    let drop_ns = c.veth_ns("tpk-iptd", "tpkid0", "198.18.12");
    sh(&format!(
        "ip netns exec {drop_ns} iptables-legacy -A INPUT -p icmp --icmp-type echo-request -j DROP"
    ));
    let (out, hops) = trace_json(None, &["--timeout", "0.5", "198.18.12.2"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let inner = netns_inode(&drop_ns);
    assert_netfilter_drop(&hops, inner, "eth0", &out);
    let test = "iptables_legacy_filter_input_drop_and_accept";
    if netfilter_visible(&out, "ipt_do_table", test) {
        let nf = rows(&hops, "netfilter");
        let filter: Vec<&&Value> = nf.iter().filter(|h| h["table"] == "filter").collect();
        assert_eq!(filter.len(), 1, "{}", describe(&out));
        assert_eq!(filter[0]["hook"], "INPUT");
        assert_eq!(filter[0]["verdict"], "DROP");
        assert!(
            filter[0]["chain"].is_null(),
            "iptables rows have no chain name: {}",
            filter[0]
        );
        assert_eq!(filter[0]["netns"].as_u64(), Some(inner));
    }

    let acc_ns = c.veth_ns("tpk-ipta", "tpkia0", "198.18.13");
    sh(&format!(
        "ip netns exec {acc_ns} iptables-legacy -A INPUT -p icmp -j ACCEPT"
    ));
    let (out, hops) = trace_json(None, &["198.18.13.2"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(rows(&hops, "drop").is_empty(), "{}", describe(&out));
    if netfilter_visible(&out, "ipt_do_table", test) {
        let inner = netns_inode(&acc_ns);
        let seen: Vec<(String, String)> = rows(&hops, "netfilter")
            .iter()
            .filter(|h| h["table"] == "filter" && h["netns"].as_u64() == Some(inner))
            .map(|h| {
                (
                    h["hook"].as_str().unwrap().to_string(),
                    h["verdict"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![("INPUT".into(), "ACCEPT".into()), ("OUTPUT".into(), "ACCEPT".into())],
            "{}",
            describe(&out)
        );
    }
}

#[test]
fn iptables_legacy_nat_output_dnat_reaches_the_rewritten_namespace() {
    let test = "iptables_legacy_nat_output_dnat_reaches_the_rewritten_namespace";
    require_privileges!(test);
    if !common::have_tool(test, "iptables-legacy") {
        return;
    }
    // a: where tracepkt runs, with a nat OUTPUT rule; b: the address probed; c: where DNAT sends it.
    let mut c = Cleanup::new();
    let a = c.netns("tpk-na");
    let b = c.netns("tpk-nb");
    let cc = c.netns("tpk-nc");
    sh(&format!("ip -n {a} link add tob type veth peer name eth0 netns {b}"));
    sh(&format!("ip -n {a} link add toc type veth peer name eth0 netns {cc}"));
    addr_up(&a, "tob", "198.18.14.1/24");
    addr_up(&a, "toc", "198.18.15.1/24");
    addr_up(&b, "eth0", "198.18.14.2/24");
    addr_up(&cc, "eth0", "198.18.15.2/24");
    sh(&format!("ip -n {cc} route add default via 198.18.15.1"));
    sh(&format!(
        "ip netns exec {a} iptables-legacy -t nat -A OUTPUT -d 198.18.14.2 -p icmp -j DNAT --to-destination 198.18.15.2"
    ));

    let (out, hops) = trace_json(Some(&a), &["198.18.14.2"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let (ia, ic) = (netns_inode(&a), netns_inode(&cc));
    assert_eq!(
        path(&hops),
        vec![
            hop("request", "tx", "toc", ia),
            hop("request", "rx", "eth0", ic),
            hop("reply", "tx", "eth0", ic),
            hop("reply", "rx", "toc", ia),
        ],
        "DNAT sends the probe to c, not b: {}",
        describe(&out)
    );
    let arrived = hops.iter().find(|h| h["netns"].as_u64() == Some(ic)).unwrap();
    assert_eq!(arrived["daddr"], "198.18.15.2", "rewritten destination: {arrived}");
    assert!(hops.iter().all(|h| h["netns"].as_u64() != Some(netns_inode(&b))));
    if netfilter_visible(&out, "ipt_do_table", test) {
        let nat: Vec<&Value> = rows(&hops, "netfilter")
            .into_iter()
            .filter(|h| h["table"] == "nat")
            .collect();
        let first = nat.first().unwrap_or_else(|| panic!("no nat row: {}", describe(&out)));
        assert_eq!(
            (first["hook"].as_str(), first["verdict"].as_str()),
            (Some("OUTPUT"), Some("ACCEPT")),
            "{first}"
        );
        assert_eq!(
            first["daddr"], "198.18.14.2",
            "nat.OUTPUT sees the address before rewriting: {first}"
        );
        assert_eq!(first["netns"].as_u64(), Some(ia));
    }
}

#[test]
fn ip6tables_legacy_drop_over_ipv6() {
    let test = "ip6tables_legacy_drop_over_ipv6";
    require_privileges!(test);
    if !common::have_tool(test, "ip6tables-legacy") {
        return;
    }
    let mut c = Cleanup::new();
    let ns = c.veth_ns6("tpk-ip6d", "tpki6d0", "fd00:7470:16::");
    sh(&format!(
        "ip netns exec {ns} ip6tables-legacy -A INPUT -p ipv6-icmp --icmpv6-type echo-request -j DROP"
    ));

    let (out, hops) = trace_json(None, &["--timeout", "0.5", "fd00:7470:16::2"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let inner = netns_inode(&ns);
    assert_netfilter_drop(&hops, inner, "eth0", &out);
    assert_eq!(hops.last().unwrap()["saddr"], "fd00:7470:16::1");
    if netfilter_visible(&out, "ip6t_do_table", test) {
        let nf: Vec<&Value> = rows(&hops, "netfilter")
            .into_iter()
            .filter(|h| h["table"] == "filter")
            .collect();
        assert_eq!(nf.len(), 1, "{}", describe(&out));
        assert_eq!(nf[0]["family"], "ip6");
        assert_eq!(nf[0]["hook"], "INPUT");
        assert_eq!(nf[0]["verdict"], "DROP");
        assert_eq!(nf[0]["netns"].as_u64(), Some(inner));
    }
}
