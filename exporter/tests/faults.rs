//! Faults around `tracepkt serve` that must not stop it: a ring buffer too small for a
//! journey, a crowd of scrapers, and config reloads while both go on.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const ROUTERS: usize = 10;

/// A chain of `ROUTERS` routing namespaces ending in one that answers: a journey of about 44
/// hops, which all happen in one softirq run, faster than user space can drain them.
fn chain(c: &mut Cleanup) -> String {
    let net = |i: usize| format!("198.18.{}", 121 + i);
    let names: Vec<String> = (0..=ROUTERS).map(|i| c.netns(&format!("tpkrg{i}"))).collect();
    c.host_link("tpkrgh");
    sh(&format!(
        "ip link add tpkrgh type veth peer name eth0 netns {n} && ip addr add {a}.1/24 dev tpkrgh && \
         ip link set tpkrgh up && ip -n {n} addr add {a}.2/24 dev eth0 && ip -n {n} link set eth0 up",
        n = names[0],
        a = net(0)
    ));
    for i in 0..ROUTERS {
        let (this, next) = (&names[i], &names[i + 1]);
        let a = net(i + 1);
        sh(&format!(
            "ip -n {this} link add eth1 type veth peer name eth0 netns {next} && \
             ip -n {this} addr add {a}.1/24 dev eth1 && ip -n {this} link set eth1 up && \
             ip -n {next} addr add {a}.2/24 dev eth0 && ip -n {next} link set eth0 up && \
             ip netns exec {this} sysctl -qw net.ipv4.ip_forward=1 && \
             ip -n {this} route add default via {a}.2 && \
             ip -n {next} route add {first}.0/24 via {a}.1",
            first = net(0)
        ));
    }
    let end = format!("{}.2", net(ROUTERS));
    c.on_exit(&format!("ip route del {end}/32"));
    sh(&format!("ip route replace {end}/32 via {}.2", net(0)));
    end
}

#[test]
fn a_full_ring_buffer_is_counted_and_marks_journeys_incomplete() {
    let test = "a_full_ring_buffer_is_counted_and_marks_journeys_incomplete";
    require_privileges!(test);
    let mut c = Cleanup::new();
    let end = chain(&mut c);
    // The chain works before tracepkt is asked about it.
    let (out, hops) = trace_json(None, &[&end, "--timeout", "5"]);
    assert!(out.status.success(), "the chain does not answer: {}", describe(&out));
    println!("one journey through the chain: {} hops", hops.len());

    let dir = TempDir::new(test);
    let port = free_port();
    let config = dir.path("config.yaml");
    write(
        &config,
        &format!(
            "listen: 127.0.0.1:{port}\ninterval: 300ms\ntimeout: 250ms\nattach: always\nring_buffer_bytes: 4096\n\
             targets:\n  - {{name: far, address: {end}}}\n"
        ),
    );
    let log = dir.path("serve.log");
    let _serve = common::serve(&config, &log);
    let text = wait_for(120, "events lost and a journey marked incomplete", &log, || {
        let t = scrape(port);
        (sample(&t, "tracepkt_events_lost_total").unwrap_or(0.0) > 0.0
            && sample(&t, "tracepkt_journeys_incomplete_total{target=\"far\"}").unwrap_or(0.0) > 0.0)
            .then_some(t)
    });
    let show = |name: &str| sample(&text, name).unwrap_or(f64::NAN);
    println!(
        "lost {} events; {} of {} journeys incomplete",
        show("tracepkt_events_lost_total"),
        show("tracepkt_journeys_incomplete_total{target=\"far\"}"),
        show("tracepkt_probes_sent_total{target=\"far\"}"),
    );
    // Probing goes on, answered, and the page says which journeys miss hops.
    wait_for(60, "an answered probe after the losses", &log, || {
        (sample(&scrape(port), "tracepkt_probe_success{target=\"far\"}") == Some(1.0)).then_some(())
    });
    let journeys: serde_json::Value = serde_json::from_str(
        &http_get(&format!("http://127.0.0.1:{port}/api/targets/far/journeys")).expect("journeys"),
    )
    .unwrap();
    let marked = journeys["journeys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["events_lost"].as_u64().unwrap_or(0) > 0)
        .count();
    println!("{marked} of the kept journeys carry events_lost");
    assert!(marked > 0, "{journeys:#}");
}

#[test]
fn fifty_scrapers_and_reloads_under_load_change_nothing_else() {
    let test = "fifty_scrapers_and_reloads_under_load_change_nothing_else";
    require_privileges!(test);
    let dir = TempDir::new(test);
    let port = free_port();
    let config = dir.path("config.yaml");
    let targets = |n: usize| -> String {
        (1..=n)
            .map(|i| format!("  - {{name: lo{i}, address: 127.0.0.{i}}}\n"))
            .collect()
    };
    let write_config = |n: usize| {
        write(
            &config,
            &format!(
                "listen: 127.0.0.1:{port}\ninterval: 200ms\ntimeout: 150ms\ntargets:\n{}",
                targets(n)
            ),
        )
    };
    write_config(20);
    let log = dir.path("serve.log");
    let serve = common::serve(&config, &log);
    wait_for(120, "every target answered", &log, || {
        let t = scrape(port);
        (1..=20)
            .all(|i| sample(&t, &format!("tracepkt_probe_success{{target=\"lo{i}\"}}")) == Some(1.0))
            .then_some(())
    });

    // 50 scrapers, back to back, for 30 s; meanwhile the config is reloaded every 2 s,
    // alternating between 20 and 30 targets. Each scraper has its own source address, as 50
    // Prometheus servers would: one address alone may hold only 32 connections.
    let url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = Instant::now() + Duration::from_secs(30);
    let scrapers: Vec<_> = (0..50)
        .map(|i| {
            let url = url.clone();
            let source = format!("127.1.0.{}", i + 1);
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0u32, 0u32);
                while Instant::now() < deadline {
                    let out = Command::new("curl")
                        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10"])
                        .args(["--interface", &source, &url])
                        .output()
                        .unwrap();
                    if out.stdout == b"200" {
                        ok += 1;
                    } else {
                        failed += 1;
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let mut reloads = 0;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(2));
        write_config(if reloads % 2 == 0 { 30 } else { 20 });
        Command::new("kill")
            .args(["-HUP", &serve.0.id().to_string()])
            .status()
            .unwrap();
        reloads += 1;
    }
    let (mut ok, mut failed) = (0, 0);
    for s in scrapers {
        let (o, f) = s.join().unwrap();
        ok += o;
        failed += f;
    }
    println!("{ok} scrapes answered, {failed} failed, {reloads} reloads");
    assert_eq!(
        failed,
        0,
        "scrapes failed\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(ok >= 50, "only {ok} scrapes in 30 s");

    // Every reload took, and every target of the last config still answers.
    let last = if reloads % 2 == 1 { 30 } else { 20 };
    let t = wait_for(60, "the last config's targets answering", &log, || {
        let t = scrape(port);
        ((1..=last).all(|i| sample(&t, &format!("tracepkt_probe_success{{target=\"lo{i}\"}}")) == Some(1.0))
            && sample(&t, "tracepkt_config_reloads_total{result=\"success\"}") == Some(reloads as f64))
        .then_some(t)
    });
    // The failure series appears with the first failure.
    assert_eq!(
        sample(&t, "tracepkt_config_reloads_total{result=\"failure\"}").unwrap_or(0.0),
        0.0,
        "{t}"
    );
    let series = t.lines().filter(|l| l.starts_with("tracepkt_probe_success{")).count();
    assert_eq!(series, last, "targets removed by a reload must leave no series:\n{t}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!logged.contains("panicked"), "{logged}");
}

/// Restores `/etc/hosts` when the test ends, pass or fail.
struct HostsEntry(String);

impl HostsEntry {
    fn add(line: &str) -> std::io::Result<HostsEntry> {
        let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        std::fs::write("/etc/hosts", format!("{hosts}{line}\n"))?;
        Ok(HostsEntry(line.to_owned()))
    }

    fn remove(&self) {
        let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        let kept: String = hosts
            .lines()
            .filter(|l| *l != self.0)
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write("/etc/hosts", kept).unwrap();
    }
}

impl Drop for HostsEntry {
    fn drop(&mut self) {
        self.remove();
    }
}

#[test]
fn a_name_that_stops_resolving_and_a_namespace_deleted_while_probed() {
    let test = "a_name_that_stops_resolving_and_a_namespace_deleted_while_probed";
    require_privileges!(test);
    let name = "tpk-flaky.test";
    // A name that resolves, then does not: /etc/hosts is the resolver every node has.
    let hosts = match HostsEntry::add(&format!("198.18.132.2 {name}")) {
        Ok(h) => h,
        Err(e) => {
            skip(test, &format!("cannot write /etc/hosts ({e}): a read-only root"));
            return;
        }
    };
    let mut c = Cleanup::new();
    c.veth_ns("tpkflt-a", "tpkflta", "198.18.132");
    c.veth_ns("tpkflt-b", "tpkfltb", "198.18.133");
    // Once the namespace (and with it the route) is gone, its target's probes must fail here,
    // not follow the machine's default route out: the same failure with or without one.
    sh("ip route add unreachable 198.18.133.0/24 metric 4000");
    c.on_exit("ip route del unreachable 198.18.133.0/24 metric 4000");
    let dir = TempDir::new(test);
    let port = free_port();
    let config = dir.path("config.yaml");
    write(
        &config,
        &format!(
            "listen: 127.0.0.1:{port}\ninterval: 100ms\ntimeout: 90ms\nattach: always\ntargets:\n\
             - {{name: flaky, address: {name}}}\n  - {{name: doomed, address: 198.18.133.2}}\n  \
             - {{name: steady, address: 127.0.0.1}}\n"
        )
        .replace("\n- ", "\n  - "),
    );
    let log = dir.path("serve.log");
    let _serve = common::serve(&config, &log);
    let ok = |t: &str, target: &str| sample(t, &format!("tracepkt_probe_success{{target=\"{target}\"}}")) == Some(1.0);
    wait_for(120, "every target answering", &log, || {
        let t = scrape(port);
        (ok(&t, "flaky") && ok(&t, "doomed") && ok(&t, "steady")).then_some(())
    });

    // The name goes away; then the namespace of another target, with probes in flight every
    // 100 ms.
    hosts.remove();
    sh("ip netns del tpkflt-b");
    let errors = |t: &str, target: &str, reason: &str| {
        sample(
            t,
            &format!("tracepkt_probe_errors_total{{target=\"{target}\",reason=\"{reason}\"}}"),
        )
        .unwrap_or(0.0)
    };
    let t = wait_for(60, "both failures counted", &log, || {
        let t = scrape(port);
        (errors(&t, "flaky", "resolve") >= 5.0 && errors(&t, "doomed", "send") >= 5.0).then_some(t)
    });
    assert!(ok(&t, "steady"), "the other target suffered:\n{t}");
    println!(
        "resolve errors {}, unsendable probes of the deleted namespace's target {}",
        errors(&t, "flaky", "resolve"),
        errors(&t, "doomed", "send")
    );

    // The name comes back: probing resumes.
    let _back = HostsEntry::add(&format!("198.18.132.2 {name}")).unwrap();
    wait_for(60, "the name resolving again", &log, || {
        ok(&scrape(port), "flaky").then_some(())
    });
    let logged = std::fs::read_to_string(&log).unwrap();
    let said = |needle: &str| logged.lines().filter(|l| l.contains(needle)).count();
    // Logged once when it broke and once when it mended, not once per probe.
    assert_eq!(said(&format!("cannot resolve {name}")), 1, "{logged}");
    assert_eq!(said("probing works again"), 1, "{logged}");
    assert!(!logged.contains("panicked"), "{logged}");
}
