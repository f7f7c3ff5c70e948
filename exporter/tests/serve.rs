//! `tracepkt serve` scraped by a real Prometheus server, with targets that live in test
//! namespaces: a reachable one, an unreachable one and one behind a drop rule. Assertions are
//! PromQL queries against that server. Also `promtool check metrics`, config rejection through
//! the binary, and a SIGHUP reload that adds and removes targets.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{BIN, Cleanup, Proc, TempDir, free_port, http_get, sample, scrape, serve, sh, wait_for, write};
use serde_json::Value;

/// A PromQL instant query; returns the result vector.
fn promql(port: u16, q: &str) -> Vec<Value> {
    let out = Command::new("curl")
        .args([
            "-sf",
            "--max-time",
            "5",
            &format!("http://127.0.0.1:{port}/api/v1/query"),
            "--data-urlencode",
        ])
        .arg(format!("query={q}"))
        .output()
        .unwrap();
    if !out.status.success() {
        return vec![];
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

fn value(sample: &Value) -> f64 {
    sample["value"][1].as_str().unwrap().parse().unwrap()
}

/// Namespaces for the three kinds of target: `ok` answers, `drop` drops echo requests in an
/// nftables input chain, and 198.18.20.99 is a neighbour nobody answers for.
fn topology(c: &mut Cleanup) {
    c.veth_ns("tpk-sv-ok", "tpksvok", "198.18.20");
    c.veth_ns("tpk-sv-drop", "tpksvdr", "198.18.21");
    sh("ip netns exec tpk-sv-drop nft add table inet tpk");
    sh("ip netns exec tpk-sv-drop nft add chain inet tpk in '{ type filter hook input priority 0; }'");
    sh("ip netns exec tpk-sv-drop nft add rule inet tpk in icmp type echo-request drop");
}

#[test]
fn prometheus_scrapes_reachable_unreachable_and_dropped_targets() {
    require_privileges!("prometheus_scrapes_reachable_unreachable_and_dropped_targets");
    if !common::have_tool(
        "prometheus_scrapes_reachable_unreachable_and_dropped_targets",
        "prometheus",
    ) {
        return;
    }
    let mut c = Cleanup::new();
    topology(&mut c);
    let dir = TempDir::new("prom");
    let (tp_port, prom_port) = (free_port(), free_port());
    let config = dir.path("tracepkt.yaml");
    write(
        &config,
        &format!(
            "listen: 127.0.0.1:{tp_port}\ninterval: 1s\ntimeout: 500ms\nrtt_buckets: [0.01, 1]\ntargets:\n\
             \x20 - {{name: reachable, address: 198.18.20.2, labels: {{site: lab}}}}\n\
             \x20 - {{name: unreachable, address: 198.18.20.99}}\n\
             \x20 - {{name: dropped, address: 198.18.21.2}}\n"
        ),
    );
    let log = dir.path("tracepkt.log");
    let _serve = serve(&config, &log);
    wait_for(30, "tracepkt /metrics", &log, || {
        http_get(&format!("http://127.0.0.1:{tp_port}/metrics"))
    });

    write(
        &dir.path("prometheus.yml"),
        &format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n  - job_name: tracepkt\n    static_configs: [{{targets: ['127.0.0.1:{tp_port}']}}]\n"
        ),
    );
    let prom = Command::new("prometheus")
        .arg(format!("--config.file={}", dir.path("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    let _prom = Proc(prom);

    // Each query waits until the server has scraped what it asks for.
    let one = |q: &str| -> f64 {
        let r = wait_for(60, q, &log, || {
            let r = promql(prom_port, q);
            (r.len() == 1).then_some(r)
        });
        value(&r[0])
    };
    assert_eq!(one(r#"up{job="tracepkt"}"#), 1.0);
    assert_eq!(
        one(r#"tracepkt_probe_success{target="reachable",site="lab"} == 1"#),
        1.0
    );
    assert_eq!(one(r#"tracepkt_probe_success{target="unreachable"} == 0"#), 0.0);
    assert_eq!(one(r#"tracepkt_probe_success{target="dropped"} == 0"#), 0.0);
    // The RTT histogram counts the replies; its buckets are the configured ones (and +Inf).
    assert!(one(r#"tracepkt_probe_rtt_seconds_count{target="reachable"} > 0"#) >= 1.0);
    assert_eq!(one(r#"tracepkt_probe_rtt_seconds_count{target="dropped"}"#), 0.0);
    assert_eq!(one(r#"tracepkt_probe_rtt_seconds_count{target="unreachable"}"#), 0.0);
    assert_eq!(
        one(r#"count(tracepkt_probe_rtt_seconds_bucket{target="reachable"})"#),
        3.0
    );
    assert!(one(r#"tracepkt_probes_sent_total{target="unreachable"} > 0"#) >= 1.0);

    // Kernel-side counters, read from the per-CPU maps at scrape time.
    for (netns, iface, dir_) in [
        ("tpk-sv-ok", "eth0", "request"),
        ("tpk-sv-ok", "eth0", "reply"),
        ("0", "tpksvok", "request"),
    ] {
        let sel = if netns == "0" {
            format!(r#"tracepkt_hops_total{{target="reachable",interface="{iface}",direction="{dir_}"}} > 0"#)
        } else {
            format!(
                r#"tracepkt_hops_total{{target="reachable",netns="{netns}",interface="{iface}",direction="{dir_}"}} > 0"#
            )
        };
        assert!(one(&sel) >= 1.0, "{sel}");
    }
    // One crossing per interface per probe: transmit and receive of a veth pair, both ways.
    assert_eq!(one(r#"count(tracepkt_hops_total{target="reachable"})"#), 4.0);
    // Every request crossing has its reply crossing (a scrape may land mid-journey: wait for
    // a balanced one).
    assert_eq!(
        one(
            r#"(sum(tracepkt_hops_total{target="reachable",direction="request"}) - sum(tracepkt_hops_total{target="reachable",direction="reply"})) == 0"#
        ),
        0.0
    );
    assert!(
        one(
            r#"tracepkt_drops_total{target="dropped",netns="tpk-sv-drop",interface="eth0",reason="NETFILTER_DROP"} > 0"#
        ) >= 1.0
    );
    assert_eq!(
        one(r#"tracepkt_last_hop_info{target="dropped",netns="tpk-sv-drop",interface="eth0",kind="drop"}"#),
        1.0
    );
    assert!(promql(prom_port, r#"tracepkt_last_hop_info{target="reachable"}"#).is_empty());
    assert_eq!(one(r#"tracepkt_path_hops{target="reachable"}"#), 4.0);
    // Every stage of an answered journey; only the request's stage of a dropped one.
    assert_eq!(
        one(r#"count(tracepkt_journey_stage_seconds{target="reachable"} > 0)"#),
        3.0
    );
    assert_eq!(
        one(r#"count(tracepkt_journey_stage_seconds{target="dropped",stage="request"} > 0)"#),
        1.0
    );
    assert!(
        promql(
            prom_port,
            r#"tracepkt_journey_stage_seconds{target="dropped",stage!="request"}"#
        )
        .is_empty()
    );
    assert_eq!(one(r#"tracepkt_events_lost_total"#), 0.0);
    // Each kernel collector read its map, and nothing went wrong between kernel and user space.
    assert_eq!(one(r#"count(tracepkt_scrape_collector_success == 1)"#), 4.0);
    assert_eq!(one(r#"sum(tracepkt_kernel_anomalies_total)"#), 0.0);
    assert_eq!(one(r#"tracepkt_program_attached{program="net_dev_queue"}"#), 1.0);
    assert_eq!(one(r#"count(tracepkt_build_info{version!="",kernel!=""})"#), 1.0);

    // The exposition itself passes promtool's lint, in both formats.
    for accept in ["text/plain", "application/openmetrics-text; version=1.0.0"] {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "curl -sf -H '{accept}' http://127.0.0.1:{tp_port}/metrics | promtool check metrics"
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool ({accept}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        http_get(&format!("http://127.0.0.1:{tp_port}/healthz"))
            .unwrap()
            .contains("ok")
    );
    assert!(
        http_get(&format!("http://127.0.0.1:{tp_port}/"))
            .unwrap()
            .contains("href=\"/metrics\"")
    );
}

#[test]
fn sighup_reload_adds_and_removes_targets_and_keeps_counters() {
    require_privileges!("sighup_reload_adds_and_removes_targets_and_keeps_counters");
    let dir = TempDir::new("reload");
    let port = free_port();
    let config = dir.path("tracepkt.yaml");
    let cfg = |targets: &str| format!("listen: 127.0.0.1:{port}\ninterval: 300ms\ntimeout: 200ms\ntargets:\n{targets}");
    write(
        &config,
        &cfg("  - {name: keep, address: 127.0.0.1}\n  - {name: old, address: '::1'}\n"),
    );
    let log = dir.path("tracepkt.log");
    let serve = serve(&config, &log);
    let kept = r#"tracepkt_probes_sent_total{target="keep"}"#;
    let before = wait_for(30, "probes to `keep` and `old`", &log, || {
        let t = scrape(port);
        let v = sample(&t, kept)?;
        (v >= 2.0 && t.contains(r#"tracepkt_hops_total{target="old""#)).then_some(v)
    });

    write(
        &config,
        &cfg("  - {name: keep, address: 127.0.0.1}\n  - {name: new, address: localhost, ip_version: 4}\n"),
    );
    sh(&format!("kill -HUP {}", serve.0.id()));
    let after = wait_for(30, "the reloaded target set", &log, || {
        let t = scrape(port);
        sample(&t, r#"tracepkt_probe_rtt_seconds_count{target="new"}"#)
            .is_some_and(|v| v >= 1.0)
            .then_some(t)
    });
    assert!(
        !after.contains(r#"target="old""#),
        "series of a removed target disappear:\n{after}"
    );
    assert!(
        sample(&after, kept).unwrap() >= before,
        "counters of a kept target are not reset:\n{after}"
    );
    assert!(
        after.contains(r#"tracepkt_config_reloads_total{result="success"} 1"#),
        "{after}"
    );

    // A broken config is refused and the running one stays in force.
    write(&config, "listen: 127.0.0.1:1\ntargets: []\n");
    sh(&format!("kill -HUP {}", serve.0.id()));
    let refused = wait_for(30, "the failed reload to be counted", &log, || {
        let t = scrape(port);
        t.contains(r#"tracepkt_config_reloads_total{result="failure"} 1"#)
            .then_some(t)
    });
    assert!(
        refused.contains(r#"target="new""#) && refused.contains(r#"target="keep""#),
        "{refused}"
    );
    let logtext = std::fs::read_to_string(&log).unwrap();
    assert!(
        logtext.contains("running configuration stays in force") && logtext.contains("tracepkt.yaml:"),
        "{logtext}"
    );
}

#[test]
fn bad_config_is_rejected_with_file_and_line_and_exit_2() {
    let dir = TempDir::new("badcfg");
    let config = dir.path("bad.yaml");
    for (text, line, what) in [
        ("targets:\n  - address: 127.0.0.1\n    colour: blue\n", 3, "colour"),
        ("interval: 10 parsecs\ntargets:\n  - address: 127.0.0.1\n", 1, "parsecs"),
        (
            "targets:\n  - {name: a, address: 127.0.0.1}\n  - {name: a, address: '::1'}\n",
            3,
            "duplicate",
        ),
        ("targets: []\n", 1, "target"),
        ("targets:\n  - address: 10.0.0.300\n", 2, "10.0.0.300"),
    ] {
        write(&config, text);
        let out = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(
            err.contains(&format!("bad.yaml:{line}:")),
            "{text}: expected line {line}: {err}"
        );
        assert!(err.contains(what), "{text}: {err}");
    }
    let out = Command::new(BIN)
        .args(["serve", "--config", "/nonexistent/tracepkt.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/tracepkt.yaml"));
}

/// BPF links (attached programs) a process holds: its fds whose fdinfo has a `link_type`.
fn links_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .map(|d| {
            d.flatten()
                .filter(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("link_type:")))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn programs_are_attached_only_while_probes_are_in_flight() {
    let test = "programs_are_attached_only_while_probes_are_in_flight";
    require_privileges!(test);
    for mode in ["in-flight", "always"] {
        let port = free_port();
        let dir = TempDir::new(&format!("gate-{mode}"));
        let config = dir.path("tracepkt.yaml");
        // One probe, then a long quiet interval in which nothing is in flight.
        write(
            &config,
            &format!(
                "listen: 127.0.0.1:{port}\nattach: {mode}\ninterval: 60s\ntimeout: 2s\ntargets: [{{address: 127.0.0.1}}]\n"
            ),
        );
        let log = dir.path("tracepkt.log");
        let serve = serve(&config, &log);
        let text = wait_for(60, "the first reply", &log, || {
            let t = scrape(port);
            sample(&t, r#"tracepkt_probe_rtt_seconds_count{target="127.0.0.1"}"#)
                .filter(|v| *v >= 1.0)
                .map(|_| t)
        });
        // The probe was followed while it was out: one transmit and one receive on lo each way.
        let hops = sample(&text, r#"tracepkt_hops_total{target="127.0.0.1",netns="#).unwrap();
        assert_eq!(hops, 2.0, "{mode}\n{text}");
        let before = sample(&text, "tracepkt_attached_seconds_total").unwrap();
        assert!(before > 0.0, "{mode}: the programs were attached for the probe\n{text}");
        let links = links_of(serve.0.id());
        std::thread::sleep(Duration::from_secs(1));
        let after = sample(&scrape(port), "tracepkt_attached_seconds_total").unwrap();
        // Kprobes (netfilter, where the kernel has them) stay for the whole run: an entry and
        // a return link each.
        let kprobes = text
            .lines()
            .filter(|l| l.starts_with("tracepkt_program_attached{") && l.contains(r#"mechanism="kprobe""#))
            .count();
        match mode {
            "in-flight" => {
                assert_eq!(links, 2 * kprobes, "only kprobe links between probes\n{text}");
                assert_eq!(after, before, "the attached clock stands still between probes");
            }
            _ => {
                assert!(links >= 5, "{mode}: {links} links");
                assert!(after > before, "{mode}: attached {before} then {after}");
            }
        }
    }
}
