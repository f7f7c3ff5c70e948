//! The Grafana dashboards (`dashboards/`) and the Prometheus alert rules (`alerts/`) that ship
//! with tracepkt, proven on live data: every PromQL expression of every panel, template
//! variable and alert is evaluated by a real Prometheus scraping two real `tracepkt serve`s
//! (two "nodes" of one "cluster", labelled as the chart's scrape configs label them), and must
//! return data; with another cluster or node picked, none. Every metric family the two expose
//! has a panel. The alerts that the topology provokes must fire on the right targets and
//! nodes, and the others stay quiet while the series they read exist; stopping the tracepkts
//! fires the alerts on tracepkt being down. Also: the dashboards' JSON and their variables,
//! each alert's runbook section, and `promtool check rules` / `promtool test rules`.
//!
//! Addresses come from 198.18.110.0/24 to 198.18.115.0/24 and exist only inside namespaces
//! this test creates; their names start with `tpkdb`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
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

/// The targets of the live topology, as their configs name them.
const TARGETS: [&str; 8] = [
    "passing",
    "failing",
    "dropping",
    "flapping",
    "partial",
    "mtu",
    "dns-right",
    "dns-wrong",
];

/// The `cluster` and `node` labels the test's Prometheus gives the two tracepkts' series, as
/// Thanos or an external label and the chart's relabelings give them.
const CLUSTER: &str = "tpkdb";
const NODE_A: &str = "tpkdb-a";
const NODE_B: &str = "tpkdb-b";

/// The name DNS targets ask for, and the address the responder answers.
const DNS_NAME: &str = "web.tpkdb.test";
const DNS_ANSWER: [u8; 4] = [198, 18, 115, 10];

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
    /// As the dashboard has it, with its variables.
    raw: String,
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
            let expr = t["expr"].as_str().expect("every target has an expr").to_string();
            out.push(Query {
                place: format!(
                    "{name} / {} [{}]",
                    p["title"].as_str().unwrap(),
                    t["refId"].as_str().unwrap()
                ),
                raw: expr.clone(),
                expr,
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
        let expr = format!("count by ({}) ({})", label.trim(), selector.trim());
        out.push(Query {
            place: format!("{name} / variable {}", v["name"].as_str().unwrap()),
            raw: expr.clone(),
            expr,
            exemplar: false,
        });
    }
    out
}

/// What the dashboards' variables are set to: the cluster picked, and the regex of "All" or of
/// a multi-value selection for the node and the target.
#[derive(Clone, Copy)]
struct Vars<'a> {
    cluster: &'a str,
    node: &'a str,
    target: &'a str,
}

const ALL: Vars = Vars {
    cluster: CLUSTER,
    node: ".*",
    target: ".*",
};

/// Replaces Grafana's variables as Grafana would for the whole time range: `$cluster`,
/// `$node` and `$target` by `vars`, the intervals by fixed ones. An unknown variable fails:
/// the dashboard would send it to Prometheus as is.
fn substitute(expr: &str, vars: Vars) -> String {
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
            "cluster" => vars.cluster,
            "node" => vars.node,
            "target" => vars.target,
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

/// The values of `label` over the rows of a query's result.
fn keys_of(r: &Value, label: &str) -> BTreeSet<String> {
    r.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["metric"][label].as_str().map(str::to_string))
        .collect()
}

/// The single value of an instant query's only row, if it has exactly one.
fn single(r: &Value) -> Option<f64> {
    match r.as_array().map(Vec::as_slice) {
        Some([row]) => row["value"][1].as_str()?.parse().ok(),
        _ => None,
    }
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
        // Series of several clusters (Thanos, Mimir) are told apart by `cluster`, one picked at
        // a time; nodes by the `node` label the chart's relabelings set, several or All, where
        // All must also match series without the label.
        let cluster = var("cluster");
        assert_eq!(
            (&cluster["type"], &cluster["query"]["query"]),
            (&"query".into(), &"label_values(tracepkt_build_info, cluster)".into()),
            "{name}"
        );
        assert_eq!(cluster["multi"], false, "{name}");
        let node = var("node");
        assert_eq!(
            node["query"]["query"], "label_values(tracepkt_build_info{cluster=\"$cluster\"}, node)",
            "{name}"
        );
        assert_eq!(
            (&node["multi"], &node["includeAll"], &node["allValue"]),
            (&true.into(), &true.into(), &".*".into()),
            "{name}"
        );
        assert!(
            vars.iter().all(|v| v["name"] != "instance"),
            "{name}: nodes are picked by name, not by scrape address"
        );
        let target = var("target");
        assert_eq!(target["type"], "query", "{name}");
        assert_eq!(
            target["query"]["query"],
            "label_values(tracepkt_probe_success{cluster=\"$cluster\",node=~\"$node\"}, target)",
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
                let expr = t["expr"].as_str().unwrap();
                assert!(
                    expr.contains("cluster=\"$cluster\"") && expr.contains("node=~\"$node\""),
                    "{name} / {title}: not filtered by the cluster and node variables: {expr}"
                );
                assert!(
                    !t["legendFormat"].as_str().unwrap_or_default().contains("{{instance}}"),
                    "{name} / {title}: a legend by scrape address"
                );
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

/// Every alert links its own section of docs/runbook.md by an absolute URL (the alert's name
/// in lower case is the anchor), every section is an alert's, and every alert has a
/// `promtool test rules` case where it fires and one where it stays quiet.
#[test]
fn every_alert_has_a_runbook_section_and_promtool_cases() {
    let runbook = std::fs::read_to_string(repo().join("docs/runbook.md")).unwrap();
    let sections: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_string())
        .collect();
    let tests: Value =
        serde_norway::from_str(&std::fs::read_to_string(repo().join("alerts/tracepkt.rules.test.yml")).unwrap())
            .unwrap();
    let (mut fired, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for t in tests["tests"].as_array().unwrap() {
        for a in t["alert_rule_test"].as_array().into_iter().flatten() {
            let name = a["alertname"].as_str().unwrap().to_string();
            if rows(&a["exp_alerts"]) > 0 {
                fired.insert(name);
            } else {
                quiet.insert(name);
            }
        }
    }
    let mut alerts = BTreeSet::new();
    for g in rules()["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let alert = r["alert"].as_str().unwrap();
            alerts.insert(alert.to_string());
            let url = r["annotations"]["runbook_url"].as_str().unwrap_or_default();
            let (page, anchor) = url.rsplit_once('#').unwrap_or_else(|| panic!("{alert}: {url:?}"));
            assert!(
                page.starts_with("https://") && page.ends_with("/docs/runbook.md"),
                "{alert}: runbook_url {url:?} is not an absolute link to docs/runbook.md"
            );
            assert_eq!(anchor, alert.to_lowercase(), "{alert}: {url}");
            assert!(
                sections.contains(alert),
                "{alert}: no \"## {alert}\" in docs/runbook.md"
            );
            for a in ["summary", "description", "runbook"] {
                assert!(r["annotations"][a].is_string(), "{alert}: no {a}");
            }
            assert!(fired.contains(alert), "{alert}: no promtool case where it fires");
            assert!(quiet.contains(alert), "{alert}: no promtool case where it stays quiet");
        }
    }
    assert_eq!(sections, alerts, "docs/runbook.md's sections and the alerts differ");
    eprintln!(
        "{} alerts, each with its runbook section and promtool cases",
        alerts.len()
    );
}

/// What an alert must do on the live topology: fire for these values of `by` (a label of its
/// rows) and not for those.
struct Expect {
    by: &'static str,
    fire: &'static [&'static str],
    quiet: &'static [&'static str],
}

fn expectation(alert: &str) -> Expect {
    let (by, fire, quiet): (&str, &[&str], &[&str]) = match alert {
        // partial answers A and not B: down from some nodes only, so not down.
        "TracepktTargetDown" => ("target", &["failing", "dropping"], &["passing", "partial"]),
        "TracepktTargetUnreachableFromNode" => ("target", &["partial"], &["passing", "failing", "dropping"]),
        // Not "passing is quiet": in a VM on a loaded host, a stalled guest can close a journey
        // before its last events are read, and that journey's path differs from the others'.
        "TracepktPathChanged" => ("target", &["flapping"], &[]),
        "TracepktPathNotAsExpected" => ("target", &["dropping"], &["passing"]),
        "TracepktNetfilterDrops" => ("target", &["dropping"], &["passing"]),
        "TracepktDNSAnswerWrong" => ("target", &["dns-wrong"], &["dns-right"]),
        "TracepktPathMTUTooSmall" => ("target", &["mtu"], &[]),
        "TracepktConfigReloadFailed" => ("node", &[NODE_B], &[NODE_A]),
        // Nothing in the topology loses events or misses a hook. The last two fire once the
        // tracepkts are stopped, at the end.
        "TracepktEventsLost" | "TracepktHookNotAttached" | "TracepktDown" | "TracepktAbsent" => ("node", &[], &[]),
        other => panic!("alert {other} has no expectation here: add one"),
    };
    Expect { by, fire, quiet }
}

/// Fire only when tracepkt is not scraped: checked after stopping the two tracepkts.
const FIRE_WHEN_STOPPED: [&str; 2] = ["TracepktDown", "TracepktAbsent"];

/// Four namespaces behind veth pairs: `passing` answers; `failing` receives the echo request
/// and blackholes its reply; `dropping` drops the request in an nftables input chain; and
/// `flapping` has such a rule added and removed every 1.5 s, so its path keeps changing. Then
/// `mtu`, whose interface has an MTU of 1280, so that larger packets vanish there, and `dns`,
/// where a DNS responder answers.
fn topology(c: &mut Cleanup) {
    c.veth_ns("tpkdb-pass", "tpkdbpa", "198.18.110");
    c.veth_ns("tpkdb-fail", "tpkdbfa", "198.18.111");
    sh("ip -n tpkdb-fail route add blackhole 198.18.111.1/32");
    c.veth_ns("tpkdb-drop", "tpkdbdr", "198.18.112");
    nft_input_rule("tpkdb-drop", "icmp type echo-request drop");
    c.veth_ns("tpkdb-flap", "tpkdbfl", "198.18.113");
    nft_input_rule("tpkdb-flap", "icmp type echo-request drop");
    c.veth_ns("tpkdb-mtu", "tpkdbmt", "198.18.114");
    sh("ip -n tpkdb-mtu link set dev eth0 mtu 1280");
    c.veth_ns("tpkdb-dns", "tpkdbdn", "198.18.115");
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

/// Answers A queries for `DNS_NAME` with `DNS_ANSWER`, anything else with NXDOMAIN, on port 53
/// of `addr` inside network namespace `ns`, until dropped.
struct Responder {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Responder {
    fn start(ns: &str, addr: &str) -> Responder {
        use hickory_proto::op::{Message, OpCode, ResponseCode};
        use hickory_proto::rr::rdata::A;
        use hickory_proto::rr::{RData, Record, RecordType};

        let stop = Arc::new(AtomicBool::new(false));
        let ns_file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
        let (addr, flag) = (addr.to_owned(), stop.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            // SAFETY: setns on a file this thread owns; it changes only this thread's namespace,
            // and the thread ends with the responder.
            assert_eq!(unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            let socket = UdpSocket::bind((addr.as_str(), 53)).unwrap();
            socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            ready_tx.send(()).unwrap();
            let mut buf = [0u8; 1500];
            while !flag.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
                let mut r = Message::response(q.metadata.id, OpCode::Query);
                r.metadata.recursion_desired = q.metadata.recursion_desired;
                r.metadata.recursion_available = true;
                r.queries = q.queries.clone();
                match q.queries.first() {
                    Some(query)
                        if query.query_type() == RecordType::A
                            && query.name().to_string().trim_end_matches('.') == DNS_NAME =>
                    {
                        let [a, b, c, d] = DNS_ANSWER;
                        r.answers.push(Record::from_rdata(
                            query.name().clone(),
                            30,
                            RData::A(A::new(a, b, c, d)),
                        ));
                    }
                    _ => r.metadata.response_code = ResponseCode::NXDomain,
                }
                let _ = socket.send_to(&r.to_vec().unwrap(), from);
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the responder started");
        Responder {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Responder {
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

/// The metric families of a scrape (OpenMetrics `# TYPE` lines), with their types.
fn families(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_string(), t.trim().to_string()))
        .collect()
}

/// Whether `expr` reads family `name` (`name`, or one of its samples' suffixes, as a whole
/// word).
fn reads_family(expr: &str, name: &str) -> bool {
    expr.match_indices(name).any(|(i, _)| {
        let before = expr[..i].chars().next_back();
        let rest = &expr[i + name.len()..];
        let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
        let suffix = ["_total", "_bucket", "_sum", "_count", "_info", ""]
            .iter()
            .any(|s| rest.starts_with(s) && !rest[s.len()..].starts_with(word));
        !before.is_some_and(word) && suffix
    })
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
    let _responder = Responder::start("tpkdb-dns", "198.18.115.2");
    let rx = Receiver::grpc();
    let dir = TempDir::new("dashboards");
    let (port_a, port_b) = (free_port(), free_port());
    let common_settings = "interval: 1s\ntimeout: 800ms\nrtt_buckets: [0.0005, 0.001, 0.01, 0.1]\n";
    let expect = "expect: {no_drop: true}";
    let dns = |answer: &str| {
        format!("{{protocol: dns, query: {DNS_NAME}/A, server: 198.18.115.2, expect: {{answer: [{answer}]}}}}")
    };
    // Node A probes everything; node B probes two targets of the same names, and partial
    // where nothing answers, and follows A's probes (cross_node) within a small budget.
    let config_a = dir.path("a.yaml");
    write(
        &config_a,
        &format!(
            "listen: 127.0.0.1:{port_a}\n{common_settings}otlp:\n  endpoint: {}\n  sample_ratio: 1.0\ntargets:\n\
             \x20 - {{name: passing, address: 198.18.110.2, {expect}}}\n\
             \x20 - {{name: failing, address: 198.18.111.2, {expect}}}\n\
             \x20 - {{name: dropping, address: 198.18.112.2, {expect}}}\n\
             \x20 - {{name: flapping, address: 198.18.113.2, {expect}}}\n\
             \x20 - {{name: partial, address: 198.18.110.2}}\n\
             \x20 - {{name: mtu, address: 198.18.114.2, size: [1000, 1400], dont_fragment: true}}\n\
             \x20 - {{name: dns-right, {}\n\
             \x20 - {{name: dns-wrong, {}\n",
            rx.endpoint,
            &dns("198.18.115.10")[1..],
            &dns("198.18.115.99")[1..],
        ),
    );
    let config_b = dir.path("b.yaml");
    let body_b = format!(
        "listen: 127.0.0.1:{port_b}\n{common_settings}cross_node: {{enabled: true, budget: 20}}\ntargets:\n\
         \x20 - {{name: passing, address: 198.18.110.2}}\n\
         \x20 - {{name: partial, address: 198.18.111.2}}\n"
    );
    write(&config_b, &body_b);
    let (log_a, log_b) = (dir.path("a.log"), dir.path("b.log"));
    let serve_a = common::serve(&config_a, &log_a);
    let serve_b = common::serve(&config_b, &log_b);
    wait_for(60, "a first reply", &log_a, || {
        sample(&scrape(port_a), r#"tracepkt_probe_rtt_seconds_count{target="passing"}"#).filter(|v| *v >= 1.0)
    });
    wait_for(60, "node B's first reply", &log_b, || {
        sample(&scrape(port_b), r#"tracepkt_probe_rtt_seconds_count{target="passing"}"#).filter(|v| *v >= 1.0)
    });
    // A reload of the same config on A, so that the reloads panel has a row; one that B
    // refuses (B keeps its config), so that the alert on failed reloads fires.
    sh(&format!("kill -HUP {}", serve_a.0.id()));
    wait_for(30, "the reload", &log_a, || {
        scrape(port_a)
            .contains(r#"tracepkt_config_reloads_total{result="success"} 1"#)
            .then_some(())
    });
    write(&config_b, &body_b.replace("targets:", "targetz:"));
    sh(&format!("kill -HUP {}", serve_b.0.id()));
    wait_for(30, "node B's refused reload", &log_b, || {
        scrape(port_b)
            .contains(r#"tracepkt_config_reloads_total{result="failure"} 1"#)
            .then_some(())
    });
    write(&config_b, &body_b);
    let netfilter = common::netfilter_visible_in(&std::fs::read_to_string(&log_a).unwrap(), "nft_do_chain", test);

    // One scrape job for both, named as the chart's monitors name it; `cluster` and `node` as
    // external labels and the chart's relabelings give them.
    let file_sd = dir.path("node-b.json");
    write(
        &file_sd,
        &format!(r#"[{{"targets": ["127.0.0.1:{port_b}"], "labels": {{"node": "{NODE_B}"}}}}]"#),
    );
    let job = [
        "file_sd_configs:".to_string(),
        format!("  - files: ['{}']", file_sd.display()),
        "relabel_configs:".into(),
        "  - {target_label: job, replacement: tracepkt}".into(),
        format!("  - {{target_label: cluster, replacement: {CLUSTER}}}"),
        format!("  - {{source_labels: [node], regex: '', target_label: node, replacement: {NODE_A}}}"),
    ];
    let job: Vec<&str> = job.iter().map(String::as_str).collect();
    let prom = match Prometheus::start_with(&format!("127.0.0.1:{port_a}"), Duration::from_secs(1), &job) {
        Ok(p) => p,
        Err(reason) => {
            common::skip(test, &reason);
            return;
        }
    };
    let up = |node: &str| format!("up{{job=\"tracepkt\",cluster=\"{CLUSTER}\",node=\"{node}\"}} == 1");
    let deadline = Instant::now() + Duration::from_secs(60);
    while [NODE_A, NODE_B].iter().any(|n| rows(&prom.query(&up(n))) == 0) {
        assert!(
            Instant::now() < deadline,
            "prometheus does not scrape both tracepkts as job tracepkt: {}",
            prom.query("up")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let started = now_unix();

    // Every expression with every node and target ("All"), and again with each node and each
    // target picked by name where that makes another expression.
    let (each_node, each_target) = (format!("({NODE_A}|{NODE_B})"), format!("({})", TARGETS.join("|")));
    let each = Vars {
        cluster: CLUSTER,
        node: &each_node,
        target: &each_target,
    };
    let mut queries: Vec<Query> = Vec::new();
    for name in DASHBOARDS {
        for q in dashboard_queries(name, &dashboard(name)) {
            let all = substitute(&q.raw, ALL);
            let picked = substitute(&q.raw, each);
            if picked != all {
                queries.push(Query {
                    place: format!("{} (node and target=each)", q.place),
                    raw: q.raw.clone(),
                    expr: picked,
                    exemplar: q.exemplar,
                });
            }
            queries.push(Query {
                place: q.place,
                raw: q.raw,
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
                raw: v.to_string(),
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
        .filter(|(a, e)| !expectation(a).fire.is_empty() && (netfilter || !e.contains(NETFILTER_METRIC)))
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
            fired.insert(alert.clone(), keys_of(&prom.query(expr), expectation(alert).by));
        }
        let data = results.values().all(|n| *n > 0) && results.len() == checked.len();
        let traced = exemplars.values().all(|n| *n > 0);
        let fire = firing
            .iter()
            .all(|(a, _)| expectation(a).fire.iter().all(|t| fired[a].contains(*t)));
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

    // Another cluster, or a node that is not there, picked: no panel shows anything, so no
    // selector of any panel lets other clusters' or nodes' series through.
    for (what, vars) in [
        (
            "cluster elsewhere",
            Vars {
                cluster: "elsewhere",
                ..ALL
            },
        ),
        ("node nowhere", Vars { node: "nowhere", ..ALL }),
    ] {
        for q in checked.iter().filter(|q| q.raw.contains("$cluster")) {
            let expr = substitute(&q.raw, vars);
            if what.starts_with("node") && !q.raw.contains("$node") {
                continue;
            }
            let r = prom.query(&expr);
            if rows(&r) > 0 {
                failures.push(format!("{what}: {} still shows {r}: {expr}", q.place));
            }
        }
    }

    // Counted per target, not per node × target pair: passing is answered by both nodes, and
    // partial by one of them.
    let overview = dashboard("tracepkt-overview");
    let stat = |title: &str, target: &str| -> Option<f64> {
        let p = panels(&overview)
            .into_iter()
            .find(|p| p["title"] == title)
            .unwrap_or_else(|| panic!("overview: no panel {title:?}"));
        let expr = substitute(p["targets"][0]["expr"].as_str().unwrap(), Vars { target, ..ALL });
        single(&prom.query(&expr))
    };
    for (title, target, want) in [
        ("Targets answering", "passing", Some(1.0)),
        ("Targets answering", "passing|partial", Some(1.0)),
        ("Targets failing from some nodes", "partial", Some(1.0)),
        ("Targets failing from some nodes", "passing|failing", None),
        ("Targets down from every node", "failing|dropping|partial", Some(2.0)),
        ("Nodes", ".*", Some(2.0)),
    ] {
        let got = stat(title, target);
        eprintln!("overview / {title} with target {target}: {got:?}");
        if got != want {
            failures.push(format!(
                "overview / {title} with target {target}: {got:?}, wanted {want:?}"
            ));
        }
    }

    // Every metric family the two tracepkts expose is on some panel.
    let exposed: BTreeMap<String, String> = [port_a, port_b].iter().flat_map(|p| families(&scrape(*p))).collect();
    let read: Vec<String> = DASHBOARDS
        .iter()
        .flat_map(|n| dashboard_queries(n, &dashboard(n)))
        .map(|q| q.raw)
        .collect();
    for family in exposed.keys() {
        if !read.iter().any(|e| reads_family(e, family)) {
            failures.push(format!("metric family {family} is on no dashboard"));
        }
    }
    eprintln!("{test}: {} metric families exposed, each on a dashboard", exposed.len());

    for (alert, expr) in &alerts {
        let Expect { by, fire, quiet } = expectation(alert);
        if !netfilter && expr.contains(NETFILTER_METRIC) {
            eprintln!("SKIPPED (no netfilter hooks on this kernel)  alert {alert}: {expr}");
            continue;
        }
        let result = prom.query(expr);
        let got = keys_of(&result, by);
        eprintln!(
            "{:>4} series  alert {alert} fires for {by} {got:?}: {expr}",
            rows(&result)
        );
        if fire.is_empty() && rows(&result) > 0 {
            failures.push(format!("alert {alert} fires where nothing should: {result}"));
        }
        if fire.is_empty() && value_side(expr).is_none() && !FIRE_WHEN_STOPPED.contains(&alert.as_str()) {
            failures.push(format!("alert {alert}: quiet, and no series to check it by: {expr}"));
        }
        for t in fire.iter().filter(|t| !fired[alert].contains(**t)) {
            failures.push(format!("alert {alert} did not fire for {by} {t}: {result}"));
        }
        for t in quiet.iter().filter(|t| got.contains(**t)) {
            failures.push(format!("alert {alert} fires for {by} {t}: {result}"));
        }
    }

    // Node B's tracepkt stops: TracepktDown fires for it (its expression; `for:` is the rule
    // evaluation's), and only for it; then A stops too, and TracepktAbsent fires.
    let expr_of = |name: &str| alerts.iter().find(|(a, _)| a == name).unwrap().1.clone();
    drop(serve_b);
    let down = poll(&prom, &expr_of("TracepktDown"), |r| !keys_of(r, "node").is_empty());
    eprintln!("node B stopped: TracepktDown fires for {:?}", keys_of(&down, "node"));
    if keys_of(&down, "node") != BTreeSet::from([NODE_B.to_string()]) {
        failures.push(format!("TracepktDown with node B stopped: {down}"));
    }
    if rows(&prom.query(&expr_of("TracepktAbsent"))) > 0 {
        failures.push("TracepktAbsent fires while node A's tracepkt is up".into());
    }
    drop(serve_a);
    let absent = poll(&prom, &expr_of("TracepktAbsent"), |r| rows(r) > 0);
    eprintln!("both stopped: TracepktAbsent gives {absent}");
    if rows(&absent) != 1 {
        failures.push(format!("TracepktAbsent with both stopped: {absent}"));
    }

    eprintln!(
        "{test}: {} expressions and {} alerts evaluated, {} skipped",
        checked.len(),
        alerts.len(),
        skipped.len()
    );
    assert!(
        failures.is_empty(),
        "{}\nnode A's log:\n{}\nnode B's log:\n{}",
        failures.join("\n"),
        std::fs::read_to_string(&log_a).unwrap_or_default(),
        std::fs::read_to_string(&log_b).unwrap_or_default()
    );
}

/// Evaluates `expr` until `done` holds for its result, for at most 30 s; the last result.
fn poll(prom: &Prometheus, expr: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = prom.query(expr);
        if done(&r) || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn substitution_and_value_side() {
    assert_eq!(
        substitute(
            r#"rate(x{cluster="$cluster",node=~"$node",target=~"${target}"}[$__rate_interval]) + y[$__range]"#,
            Vars {
                cluster: "c1",
                node: ".*",
                target: "(a|b)"
            }
        ),
        r#"rate(x{cluster="c1",node=~".*",target=~"(a|b)"}[1m]) + y[5m]"#
    );
    assert_eq!(value_side("increase(x[10m]) > 0"), Some("increase(x[10m])"));
    assert_eq!(value_side("x{p=~\"a|b\"} == 0"), Some("x{p=~\"a|b\"}"));
    assert_eq!(value_side("a > 0 or sum without () (b unless c)"), None);
    assert!(reads_family(
        "rate(tracepkt_probes_sent_total{a=\"b\"}[1m])",
        "tracepkt_probes_sent"
    ));
    assert!(reads_family("tracepkt_build_info", "tracepkt_build"));
    assert!(!reads_family("tracepkt_probe_size_success", "tracepkt_probe_size"));
    assert!(!reads_family("tracepkt_probe_size_success", "tracepkt_probe_success"));
    assert!(!reads_family("x_tracepkt_probe_success", "tracepkt_probe_success"));
}
