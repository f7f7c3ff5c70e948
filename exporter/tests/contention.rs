//! Contention: while probes are in flight, foreign packets cross the same hooks on every CPU.
//! None of them may show up in a journey or in a probe's counters, and no verdict row may carry
//! the verdict a chain gave to someone else's packet.
//!
//! Foreign traffic comes from `scripts/flood.py`: ICMP echo requests exactly the size of a
//! probe (so they pass the length filter and reach the id lookup), UDP datagrams and TCP SYNs.
//! Its echo ids are 0xFFFE and 0xFFFF; tracepkt could hand out one of those only in a run that
//! starts its id pool there, about once in 30,000 runs.

mod common;

use std::process::{Command, Stdio};

use common::{Cleanup, Proc, TempDir, free_port, scrape, serve, sh, trace_json, wait_for, write};
use serde_json::Value;

const FLOOD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/flood.py");

/// Floods `to` for `seconds` at `pps` packets per second of each kind, until dropped.
fn flood(to: &str, seconds: u32, pps: u32) -> Proc {
    let child = Command::new("python3")
        .args([
            FLOOD,
            "--to",
            to,
            "--seconds",
            &seconds.to_string(),
            "--pps",
            &pps.to_string(),
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("start scripts/flood.py");
    Proc(child)
}

/// Sum of the samples of one family whose line starts with `prefix` (labels included).
fn total(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// On this machine's kernel: every interface crossing and drop a probe's counters show is one
/// its journeys saw, exactly, while the host floods both targets' namespaces.
#[test]
fn probe_counters_match_their_journeys_under_foreign_floods() {
    let test = "probe_counters_match_their_journeys_under_foreign_floods";
    require_privileges!(test);
    if !common::have_tool(test, "python3") {
        return;
    }
    let mut c = Cleanup::new();
    c.veth_ns("tpk-ct-ok", "tpkctok", "198.18.62");
    c.veth_ns("tpk-ct-drop", "tpkctdr", "198.18.63");
    sh("ip netns exec tpk-ct-drop nft add table inet tpk");
    sh("ip netns exec tpk-ct-drop nft add chain inet tpk in '{ type filter hook input priority 0; }'");
    sh("ip netns exec tpk-ct-drop nft add rule inet tpk in icmp type echo-request drop");
    // Under emulation (the kernel-matrix VMs) everything is slower: a lighter flood, and
    // rounds further apart. The programs stay attached: under qemu's emulation, attaching and
    // detaching them for every probe while the flood runs the patched code on the other vCPU
    // crashed the guest kernel (see the README's tests section).
    let emulated = std::env::var_os("TRACEPKT_VM_KERNEL").is_some();
    let (pps, interval) = if emulated { (300, 60) } else { (2000, 20) };
    let _floods = [flood("198.18.62.2", 300, pps), flood("198.18.63.2", 300, pps)];

    // One round of 25 probes per target; the counters are read between the first rounds and
    // the second ones. Targets start spread over the interval: `dropped` at once (its round
    // takes about 25 × 225 ms), `ok` half an interval later (its round takes under a second).
    const PROBES: f64 = 25.0;
    let dir = TempDir::new("contention");
    let port = free_port();
    let config = dir.path("tracepkt.yaml");
    write(
        &config,
        &format!(
            "listen: 127.0.0.1:{port}\nattach: always\ninterval: {interval}s\ntimeout: 200ms\ntargets:\n\
             \x20 - {{name: dropped, address: 198.18.63.2, count: 25}}\n\
             \x20 - {{name: ok, address: 198.18.62.2, count: 25}}\n"
        ),
    );
    let log = dir.path("tracepkt.log");
    let _serve = serve(&config, &log);
    wait_for(2 * interval, "both rounds sent", &log, || {
        let t = scrape(port);
        (total(&t, r#"tracepkt_probes_sent_total{target="ok"}"#) == PROBES
            && total(&t, r#"tracepkt_probes_sent_total{target="dropped"}"#) == PROBES)
            .then_some(())
    });
    // The last probe of each round: its timeout and the journey's grace.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let t = scrape(port);
    assert_eq!(
        total(&t, "tracepkt_probes_sent_total"),
        2.0 * PROBES,
        "read between the first rounds and the second: {t}"
    );

    assert_eq!(
        total(&t, r#"tracepkt_probe_rtt_seconds_count{target="ok"}"#),
        PROBES,
        "{t}"
    );
    // A journey over a veth pair is four counted crossings: out and in, both ways.
    let ok_hops: Vec<&str> = t
        .lines()
        .filter(|l| l.starts_with(r#"tracepkt_hops_total{target="ok""#))
        .collect();
    assert_eq!(ok_hops.len(), 4, "{t}");
    for l in &ok_hops {
        assert!(l.ends_with(" 25"), "one crossing per probe: {l}\n{t}");
    }
    // A dropped probe: out of the host, into the namespace, dropped there once.
    let dropped: Vec<&str> = t.lines().filter(|l| l.contains(r#"target="dropped""#)).collect();
    assert_eq!(
        total(&t, r#"tracepkt_hops_total{target="dropped""#),
        2.0 * PROBES,
        "{}",
        dropped.join("\n")
    );
    assert_eq!(
        total(
            &t,
            r#"tracepkt_drops_total{target="dropped",netns="tpk-ct-drop",interface="eth0",reason="NETFILTER_DROP"}"#
        ),
        PROBES,
        "{t}"
    );
    assert_eq!(total(&t, r#"tracepkt_drops_total{target="ok""#), 0.0, "{t}");
    assert_eq!(total(&t, "tracepkt_events_lost_total"), 0.0, "{t}");
    assert_eq!(total(&t, "tracepkt_kernel_anomalies_total"), 0.0, "{t}");
}

/// In the VM, on a host bridge, with the host flooding the VM (scripts/test.sh sets this up):
/// every netfilter row of every journey carries the verdict the chain gave to the probe.
///
/// Receive processing runs in softirq on whichever vCPU takes the NIC's interrupt (or RPS's),
/// usually idle, so the current task is the idle task on both CPUs: the case where pairing a
/// chain's entry and return by task mixes up packets. The guest's input chain drops the flood
/// and accepts the probes' replies, so a borrowed verdict shows as DROP (or STOLEN).
#[test]
fn netfilter_rows_carry_the_probes_own_verdict_under_foreign_floods() {
    let test = "netfilter_rows_carry_the_probes_own_verdict_under_foreign_floods";
    require_privileges!(test);
    let (Ok(peer), Ok(addr)) = (
        std::env::var("TRACEPKT_CONTENTION_PEER"),
        std::env::var("TRACEPKT_CONTENTION_ADDR"),
    ) else {
        common::skip(
            test,
            "needs a VM NIC on a host bridge with the host flooding it: scripts/test.sh vm runs it",
        );
        return;
    };
    sh(&format!("ip link set eth0 up && ip addr add {addr} dev eth0"));
    // Receive processing on both vCPUs at once.
    sh("echo 3 > /sys/class/net/eth0/queues/rx-0/rps_cpus");
    sh("nft -f - <<'EOF'
table inet tpkc {
  chain in {
    type filter hook input priority 0; policy accept;
    icmp type echo-request drop
    udp dport 9 drop
    tcp dport 9 drop
  }
}
EOF");
    let rx = || -> u64 {
        std::fs::read_to_string("/sys/class/net/eth0/statistics/rx_packets")
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let before = rx();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let flooded = rx() - before;
    assert!(
        flooded > 1000,
        "the host's flood does not reach eth0 ({flooded} packets in 2 s)"
    );

    let (out, hops) = trace_json(
        None,
        &["--count", "1000", "--interval", "0.01", "--timeout", "1", &peer],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    if let Some(line) = stderr
        .lines()
        .find(|l| l.contains("not visible on this kernel") && l.contains("nft_do_chain"))
    {
        common::skip(test, line.trim());
        return;
    }
    let replied = stderr.lines().filter(|l| l.contains(": reply in ")).count();
    let nf: Vec<&Value> = hops.iter().filter(|h| h["kind"] == "netfilter").collect();
    // The probe's own rows: the flooded chain accepting a reply, and the guest's iptables
    // tables (loaded, with no rules) accepting it on the hook its direction takes.
    let flooded_chain = |h: &Value| {
        h["table"] == "tpkc"
            && h["chain"] == "in"
            && h["hook"] == "INPUT"
            && h["direction"] == "reply"
            && h["verdict"] == "ACCEPT"
    };
    let iptables = |h: &Value| {
        let hooks: &[&str] = match h["direction"].as_str() {
            Some("request") => &["OUTPUT", "POSTROUTING"],
            _ => &["PREROUTING", "INPUT"],
        };
        ["filter", "nat", "mangle", "raw"].contains(&h["table"].as_str().unwrap_or(""))
            && h.get("chain").is_none()
            && hooks.contains(&h["hook"].as_str().unwrap_or(""))
            && h["verdict"] == "ACCEPT"
    };
    let ours = nf.iter().filter(|h| flooded_chain(h)).count();
    // Anything else is another packet's verdict, or another packet's chain read as ours.
    let foreign: Vec<&&Value> = nf.iter().filter(|h| !flooded_chain(h) && !iptables(h)).collect();
    eprintln!(
        "contention: {replied} replies, {} netfilter rows: {ours} of the flooded chain (one per reply expected), {} carrying another packet's verdict, chain or hook",
        nf.len(),
        foreign.len()
    );
    assert!(replied >= 1000, "every probe answered: {replied} of 1000\n{stderr}");
    assert!(
        foreign.is_empty(),
        "{} of {} netfilter rows are another packet's, e.g. {}",
        foreign.len(),
        nf.len(),
        foreign[0]
    );
    assert_eq!(ours, replied, "one row of the flooded chain per reply");
}
