//! Every attach mechanism, forced with `--mechanism`, follows probes on each kernel where it
//! loads: BTF tracepoints and classic tracepoints for the interface and drop hooks, each with
//! kprobes for netfilter. Where a forced mechanism does not load, the test skips with
//! tracepkt's own reason.

mod common;

use common::{Cleanup, describe, hop, host_netns_inode, netns_inode, path, sh, trace_json};
use serde_json::Value;

/// Runs `tracepkt -v trace --json` with only `mechanism` (and kprobes) allowed. `None` when
/// the mechanism cannot attach any interface hook here (the skip is recorded).
fn trace_by(mechanism: &str, test: &str, args: &[&str]) -> Option<(std::process::Output, Vec<Value>)> {
    let mut all = vec!["-v", "--mechanism", mechanism, "--mechanism", "kprobe"];
    all.extend_from_slice(args);
    let (out, hops) = trace_json(None, &all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(2) && stderr.contains("no interface hook could be attached") {
        common::skip(test, &format!("{mechanism} does not load here: {}", stderr.trim()));
        return None;
    }
    // The report names the forced mechanism for every interface and drop hook that attached.
    let attached: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("(interface): attached by") || l.contains("(drop): attached by"))
        .collect();
    assert!(!attached.is_empty(), "no attach report: {}", describe(&out));
    for l in &attached {
        assert!(l.contains(&format!("attached by {mechanism}")), "{l}");
    }
    Some((out, hops))
}

/// `short` names the namespace and interface, `net` their /24.
fn follows_a_veth_pair_and_a_netfilter_drop(mechanism: &str, short: &str, net: &str, test: &str) {
    let mut c = Cleanup::new();
    let ifname = format!("tpkme{short}");
    let ns = c.veth_ns(&format!("tpk-me-{short}"), &ifname, net);
    let Some((out, hops)) = trace_by(mechanism, test, &["--timeout", "1", &format!("{net}.2")]) else {
        return;
    };
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let (host, inner) = (host_netns_inode(), netns_inode(&ns));
    assert_eq!(
        path(&hops),
        vec![
            hop("request", "tx", &ifname, host),
            hop("request", "rx", "eth0", inner),
            hop("reply", "tx", "eth0", inner),
            hop("reply", "rx", &ifname, host),
        ],
        "{}",
        describe(&out)
    );

    sh(&format!(
        "ip netns exec {ns} nft add table inet tpkme && \
         ip netns exec {ns} nft add chain inet tpkme in '{{ type filter hook input priority 0; }}' && \
         ip netns exec {ns} nft add rule inet tpkme in icmp type echo-request drop"
    ));
    let Some((out, hops)) = trace_by(mechanism, test, &["--timeout", "0.5", &format!("{net}.2")]) else {
        return;
    };
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let drop = hops.last().expect("hops");
    assert_eq!(drop["kind"], "drop", "{}", describe(&out));
    assert_eq!(drop["reason"], "NETFILTER_DROP", "{drop}");
    assert_eq!(drop["netns"].as_u64(), Some(inner), "{drop}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    match stderr
        .lines()
        .find(|l| l.contains("not visible on this kernel") && l.contains("nft_do_chain"))
    {
        Some(line) => {
            common::skip(&format!("{test} (netfilter row)"), line.trim());
        }
        None => {
            let nf: Vec<&Value> = hops.iter().filter(|h| h["kind"] == "netfilter").collect();
            assert!(
                nf.iter()
                    .any(|h| h["table"] == "tpkme" && h["chain"] == "in" && h["verdict"] == "DROP"),
                "{}",
                describe(&out)
            );
        }
    }
}

#[test]
fn btf_tracepoints_forced() {
    let test = "btf_tracepoints_forced";
    require_privileges!(test);
    follows_a_veth_pair_and_a_netfilter_drop("tp_btf", "btf", "198.18.64", test);
}

#[test]
fn classic_tracepoints_forced() {
    let test = "classic_tracepoints_forced";
    require_privileges!(test);
    follows_a_veth_pair_and_a_netfilter_drop("tracepoint", "tp", "198.18.65", test);
}
