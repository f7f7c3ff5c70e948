//! The Grafana dashboards (`dashboards/`) and the Prometheus alert rules (`alerts/`) that ship
//! with tracepkt, proven on live data: every PromQL expression of every panel, template
//! variable and alert is evaluated by a real Prometheus scraping a real `tracepkt serve`, and
//! must return data. The alerts that the topology provokes must fire on the right targets,
//! and the others stay quiet while the series they read exist. Also: the dashboards' JSON and
//! their data source variable, and `promtool check rules` / `promtool test rules`.
//!
//! Addresses come from 198.18.110.0/24 to 198.18.113.0/24 and exist only inside namespaces
//! this test creates; their names start with `tpkdb`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::otlp::Receiver;
use common::prom::Prometheus;
use common::{Cleanup, TempDir, free_port, nft_input_rule, sample, scrape, sh, wait_for, write};
use serde_json::Value;

const DASHBOARDS: [&str; 5] = [
    "tracepkt-overview",
    "tracepkt-path",
    "tracepkt-netfilter",
    "tracepkt-drops",
    "tracepkt-health",
];

/// The targets of the live topology, as their config names them.
const TARGETS: [&str; 4] = ["passing", "failing", "dropping", "flapping"];

/// The only series that exist only where tracepkt sees netfilter (kprobes on `nft_do_chain`).
const NETFILTER_METRIC: &str = "tracepkt_netfilter_verdicts_total";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn dashboard(name: &str) -> Value {
    let path = repo().join("dashboards").join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

fn rules() -> Value {
    let path = repo().join("alerts/tracepkt.rules.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every panel of a dashboard, those inside collapsed rows included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// One PromQL expression and where it comes from.
struct Query {
    place: String,
    expr: String,
    /// The panel asks Prometheus for its exemplars too.
    exemplar: bool,
}

/// The expressions of a dashboard: its panels' targets, and its query variables as the
/// instant query that has the same series (`label_values(S, L)` lists L over S).
fn dashboard_queries(name: &str, d: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(Query {
                place: format!(
                    "{name} / {} [{}]",
                    p["title"].as_str().unwrap(),
                    t["refId"].as_str().unwrap()
                ),
                expr: t["expr"].as_str().expect("every target has an expr").to_string(),
                exemplar: t["exemplar"] == true,
            });
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]["query"].as_str().unwrap();
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{name}: variable {} is not label_values(..): {q}", v["name"]));
        let (selector, label) = inner.rsplit_once(',').unwrap();
        out.push(Query {
            place: format!("{name} / variable {}", v["name"].as_str().unwrap()),
            expr: format!("count by ({}) ({})", label.trim(), selector.trim()),
            exemplar: false,
        });
    }
    out
}

/// Replaces Grafana's variables as Grafana would for the whole time range: `$target` by
/// `target` (the regex of "All", or of a multi-value selection), the intervals by fixed ones.
/// An unknown variable fails: the dashboard would send it to Prometheus as is.
fn substitute(expr: &str, target: &str) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, len) = match after.strip_prefix('{') {
            Some(braced) => {
                let end = braced.find('}').unwrap_or_else(|| panic!("unclosed ${{ in {expr}"));
                (braced[..end].split(':').next().unwrap(), end + 2)
            }
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        out.push_str(match name {
            "__rate_interval" => "1m",
            "__interval" => "15s",
            "__range" => "5m",
            "instance" => ".*",
            "target" => target,
            other => panic!("unknown variable ${other} in {expr}"),
        });
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

/// The left side of an expression ending in a comparison with a number at the top level
/// (`increase(x[10m]) > 0` → `increase(x[10m])`): the series an alert reads, which must exist
/// even while it is quiet.
fn value_side(expr: &str) -> Option<&str> {
    let (left, number) = expr.trim().rsplit_once(char::is_whitespace)?;
    number.parse::<f64>().ok()?;
    let left = left.trim_end();
    let left = ["==", "!=", ">=", "<=", ">", "<"]
        .iter()
        .find_map(|op| left.strip_suffix(op))?
        .trim_end();
    (left.matches('(').count() == left.matches(')').count()).then_some(left)
}

fn rows(r: &Value) -> usize {
    r.as_array().map_or(0, Vec::len)
}

fn targets_of(r: &Value) -> BTreeSet<String> {
    r.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["metric"]["target"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn dashboards_parse_and_query_through_the_datasource_variable() {
    for name in DASHBOARDS {
        let d = dashboard(name);
        assert_eq!(d["uid"], name, "{name}: uid");
        assert_eq!(d["schemaVersion"], 39, "{name}");
        let vars = d["templating"]["list"].as_array().unwrap();
        let var = |n: &str| {
            vars.iter()
                .find(|v| v["name"] == n)
                .unwrap_or_else(|| panic!("{name}: no variable {n}"))
        };
        let ds = var("datasource");
        assert_eq!(
            (&ds["type"], &ds["query"]),
            (&"datasource".into(), &"prometheus".into()),
            "{name}"
        );
        let target = var("target");
        assert_eq!(target["type"], "query", "{name}");
        assert!(
            target["query"]["query"]
                .as_str()
                .unwrap()
                .starts_with("label_values(tracepkt_probe_success"),
            "{name}: {target}"
        );
        assert_eq!(
            (&target["multi"], &target["includeAll"]),
            (&true.into(), &true.into()),
            "{name}"
        );
        // No data source is named: every query goes through the variable.
        let through_variable = serde_json::json!({"type": "prometheus", "uid": "${datasource}"});
        let mut queries = 0;
        for p in panels(&d) {
            let title = p["title"].as_str().unwrap_or_default();
            if p["type"] == "row" {
                continue;
            }
            assert_eq!(p["datasource"], through_variable, "{name} / {title}");
            let targets = p["targets"]
                .as_array()
                .unwrap_or_else(|| panic!("{name} / {title}: no targets"));
            assert!(!targets.is_empty(), "{name} / {title}: no targets");
            for t in targets {
                assert_eq!(t["datasource"], through_variable, "{name} / {title}");
                queries += 1;
            }
        }
        for v in vars.iter().filter(|v| v["type"] == "query") {
            assert_eq!(v["datasource"], through_variable, "{name}: variable {}", v["name"]);
        }
        let text = serde_json::to_string(&d).unwrap();
        for uid in text.match_indices("\"uid\":\"").map(|(i, _)| &text[i + 7..]) {
            let uid = &uid[..uid.find('"').unwrap()];
            assert!(
                [name, "${datasource}", "-- Grafana --"].contains(&uid),
                "{name}: a hard-coded uid {uid:?}"
            );
        }
        eprintln!("{name}: {} panels, {queries} queries", panels(&d).len());
    }
    // RTT panels show their exemplars and link them to the trace UI.
    for name in ["tracepkt-overview", "tracepkt-path"] {
        let d = dashboard(name);
        let rtt: Vec<&Value> = panels(&d)
            .into_iter()
            .filter(|p| p["targets"].to_string().contains("tracepkt_probe_rtt_seconds_bucket"))
            .collect();
        assert!(!rtt.is_empty(), "{name}: no RTT panel");
        for p in rtt {
            assert!(
                p["targets"].to_string().contains("\"exemplar\":true"),
                "{name}: {}",
                p["title"]
            );
            assert!(
                p["fieldConfig"].to_string().contains("${trace_url}${__value.raw}"),
                "{name}: {}: no trace link",
                p["title"]
            );
        }
        assert!(
            d["templating"]["list"].to_string().contains("\"name\":\"trace_url\""),
            "{name}"
        );
    }
}

#[test]
fn alert_rules_pass_promtool() {
    let test = "alert_rules_pass_promtool";
    if !common::have_tool(test, "promtool") {
        return;
    }
    let alerts = repo().join("alerts");
    for (what, file) in [("check", "tracepkt.rules.yml"), ("test", "tracepkt.rules.test.yml")] {
        let out = Command::new("promtool")
            .args([what, "rules"])
            .arg(alerts.join(file))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("promtool {what} rules {file}:\n{text}");
        assert!(out.status.success(), "promtool {what} rules {file} failed:\n{text}");
    }
}

/// What an alert must do on the live topology: fire for these targets and not those.
fn expectation(alert: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match alert {
        "TracepktProbeFailing" => (&["failing", "dropping"], &["passing"]),
        // Not "passing is quiet": in a VM on a loaded host, a stalled guest can close a journey
        // before its last events are read, and that journey's path differs from the others'.
        "TracepktPathChanged" => (&["flapping"], &[]),
        "TracepktNetfilterDrops" => (&["dropping"], &["passing"]),
        // Nothing in the topology loses events or misses a hook.
        "TracepktEventsLost" | "TracepktHookNotAttached" => (&[], &[]),
        other => panic!("alert {other} has no expectation here: add one"),
    }
}

/// Four namespaces behind veth pairs: `passing` answers; `failing` receives the echo request
/// and blackholes its reply; `dropping` drops the request in an nftables input chain; and
/// `flapping` has such a rule added and removed every 1.5 s, so its path keeps changing.
fn topology(c: &mut Cleanup) {
    c.veth_ns("tpkdb-pass", "tpkdbpa", "198.18.110");
    c.veth_ns("tpkdb-fail", "tpkdbfa", "198.18.111");
    sh("ip -n tpkdb-fail route add blackhole 198.18.111.1/32");
    c.veth_ns("tpkdb-drop", "tpkdbdr", "198.18.112");
    nft_input_rule("tpkdb-drop", "icmp type echo-request drop");
    c.veth_ns("tpkdb-flap", "tpkdbfl", "198.18.113");
    nft_input_rule("tpkdb-flap", "icmp type echo-request drop");
}

/// Toggles `flapping`'s drop rule until dropped.
struct Flapper {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flapper {
    fn start() -> Flapper {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut dropping = true;
            while !s.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1500));
                let cmd = if dropping {
                    "ip netns exec tpkdb-flap nft flush chain inet tpk input"
                } else {
                    "ip netns exec tpkdb-flap nft add rule inet tpk input icmp type echo-request drop"
                };
                let _ = Command::new("sh").arg("-c").arg(cmd).status();
                dropping = !dropping;
            }
        });
        Flapper {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Flapper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn now_unix() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

#[test]
fn every_dashboard_and_alert_query_returns_data_on_a_live_topology() {
    let test = "every_dashboard_and_alert_query_returns_data_on_a_live_topology";
    require_privileges!(test);
    if !common::have_tool(test, "nft") {
        return;
    }
    let mut c = Cleanup::new();
    topology(&mut c);
    let _flapper = Flapper::start();
    let rx = Receiver::grpc();
    let dir = TempDir::new("dashboards");
    let port = free_port();
    let config = dir.path("tracepkt.yaml");
    let targets: String = TARGETS
        .iter()
        .zip(110..)
        .map(|(name, net)| format!("  - {{name: {name}, address: 198.18.{net}.2, expect: {{no_drop: true}}}}\n"))
        .collect();
    write(
        &config,
        &format!(
            "listen: 127.0.0.1:{port}\ninterval: 1s\ntimeout: 800ms\nrtt_buckets: [0.0005, 0.001, 0.01, 0.1]\n\
             otlp:\n  endpoint: {}\n  sample_ratio: 1.0\ntargets:\n{targets}",
            rx.endpoint
        ),
    );
    let log = dir.path("tracepkt.log");
    let serve = common::serve(&config, &log);
    wait_for(60, "a first reply", &log, || {
        sample(&scrape(port), r#"tracepkt_probe_rtt_seconds_count{target="passing"}"#).filter(|v| *v >= 1.0)
    });
    // A reload of the same config, so that the reloads panel has a row.
    sh(&format!("kill -HUP {}", serve.0.id()));
    wait_for(30, "the reload", &log, || {
        scrape(port)
            .contains(r#"tracepkt_config_reloads_total{result="success"} 1"#)
            .then_some(())
    });
    let netfilter = common::netfilter_visible_in(&std::fs::read_to_string(&log).unwrap(), "nft_do_chain", test);
    let prom = match Prometheus::start(&format!("127.0.0.1:{port}"), Duration::from_secs(1)) {
        Ok(p) => p,
        Err(reason) => {
            common::skip(test, &reason);
            return;
        }
    };
    prom.wait_up(Duration::from_secs(60));
    let started = now_unix();

    // Every expression with "All" selected, and again with every target picked by name where
    // that makes another expression.
    let all_targets = format!("({})", TARGETS.join("|"));
    let mut queries: Vec<Query> = Vec::new();
    for name in DASHBOARDS {
        for q in dashboard_queries(name, &dashboard(name)) {
            let all = substitute(&q.expr, ".*");
            let each = substitute(&q.expr, &all_targets);
            if each != all {
                queries.push(Query {
                    place: format!("{} (target=each)", q.place),
                    expr: each,
                    exemplar: q.exemplar,
                });
            }
            queries.push(Query {
                place: q.place,
                expr: all,
                exemplar: q.exemplar,
            });
        }
    }
    let mut alerts: Vec<(String, String)> = Vec::new();
    for g in rules()["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            alerts.push((
                r["alert"].as_str().unwrap().into(),
                r["expr"].as_str().unwrap().trim().into(),
            ));
        }
    }
    // The series each alert reads (quiet ones included); firing ones must also fire.
    for (alert, expr) in &alerts {
        if let Some(v) = value_side(expr) {
            queries.push(Query {
                place: format!("alert {alert} (its series)"),
                expr: v.to_string(),
                exemplar: false,
            });
        }
    }

    let (checked, skipped): (Vec<Query>, Vec<Query>) = queries
        .into_iter()
        .partition(|q| netfilter || !q.expr.contains(NETFILTER_METRIC));
    let firing: Vec<&(String, String)> = alerts
        .iter()
        .filter(|(a, e)| !expectation(a).0.is_empty() && (netfilter || !e.contains(NETFILTER_METRIC)))
        .collect();

    // Poll until every query has data and every alert that should fire does, or time runs out.
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut results: BTreeMap<usize, usize> = BTreeMap::new();
    let mut fired: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut exemplars: BTreeMap<usize, usize> = BTreeMap::new();
    loop {
        for (i, q) in checked.iter().enumerate() {
            let done = results.get(&i).is_some_and(|n| *n > 0) && (!q.exemplar || exemplars.get(&i) > Some(&0));
            if done {
                continue;
            }
            results.insert(i, rows(&prom.query(&q.expr)));
            if q.exemplar {
                let with_trace = prom
                    .exemplars(&q.expr, started - 600.0, now_unix() + 60.0)
                    .into_iter()
                    .filter(|e| e.labels.get("trace_id").is_some_and(|t| t.len() == 32))
                    .count();
                exemplars.insert(i, with_trace);
            }
        }
        for (alert, expr) in &firing {
            fired.insert(alert.clone(), targets_of(&prom.query(expr)));
        }
        let data = results.values().all(|n| *n > 0) && results.len() == checked.len();
        let traced = exemplars.values().all(|n| *n > 0);
        let fire = firing
            .iter()
            .all(|(a, _)| expectation(a).0.iter().all(|t| fired[a].contains(*t)));
        if (data && traced && fire) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }

    let mut failures = Vec::new();
    eprintln!("\n{test}: {} expressions evaluated", checked.len());
    for (i, q) in checked.iter().enumerate() {
        let n = results[&i];
        let ex = exemplars
            .get(&i)
            .map(|e| format!(", {e} exemplars with a trace id"))
            .unwrap_or_default();
        eprintln!("{n:>4} series{ex}  {}: {}", q.place, q.expr);
        if n == 0 {
            failures.push(format!("no data: {}: {}", q.place, q.expr));
        }
        if exemplars.get(&i) == Some(&0) {
            failures.push(format!("no exemplar with a trace id: {}: {}", q.place, q.expr));
        }
    }
    for q in &skipped {
        eprintln!("SKIPPED (no netfilter hooks on this kernel)  {}: {}", q.place, q.expr);
    }
    if !skipped.is_empty() {
        // The skip itself was recorded with tracepkt's reason when the log was read.
        eprintln!(
            "{test}: {} dashboard queries and alert TracepktNetfilterDrops read {NETFILTER_METRIC}, which this kernel cannot fill",
            skipped.len()
        );
    }
    for (alert, expr) in &alerts {
        let (fire, quiet) = expectation(alert);
        if !netfilter && expr.contains(NETFILTER_METRIC) {
            eprintln!("SKIPPED (no netfilter hooks on this kernel)  alert {alert}: {expr}");
            continue;
        }
        let result = prom.query(expr);
        let got = targets_of(&result);
        eprintln!("{:>4} series  alert {alert} fires for {got:?}: {expr}", rows(&result));
        if fire.is_empty() && rows(&result) > 0 {
            failures.push(format!("alert {alert} fires where nothing should: {result}"));
        }
        if fire.is_empty() && value_side(expr).is_none() {
            failures.push(format!("alert {alert}: quiet, and no series to check it by: {expr}"));
        }
        for t in fire.iter().filter(|t| !fired[alert].contains(**t)) {
            failures.push(format!("alert {alert} did not fire for {t}: {result}"));
        }
        for t in quiet.iter().filter(|t| got.contains(**t)) {
            failures.push(format!("alert {alert} fires for {t}: {result}"));
        }
    }
    eprintln!(
        "{test}: {} expressions and {} alerts evaluated, {} skipped",
        checked.len(),
        alerts.len(),
        skipped.len()
    );
    assert!(
        failures.is_empty(),
        "{}\ntracepkt log:\n{}",
        failures.join("\n"),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

#[test]
fn substitution_and_value_side() {
    assert_eq!(
        substitute(
            r#"rate(x{instance=~"$instance",target=~"${target}"}[$__rate_interval]) + y[$__range]"#,
            "(a|b)"
        ),
        r#"rate(x{instance=~".*",target=~"(a|b)"}[1m]) + y[5m]"#
    );
    assert_eq!(value_side("increase(x[10m]) > 0"), Some("increase(x[10m])"));
    assert_eq!(value_side("x{p=~\"a|b\"} == 0"), Some("x{p=~\"a|b\"}"));
    assert_eq!(value_side("a > 0 or sum without () (b unless c)"), None);
}
