//! Traces: the trace context each probe carries, the span tree a journey becomes, as an OTLP
//! receiver decodes it over gRPC and HTTP, the RTT exemplar a real Prometheus stores, and a
//! collector that hangs. Needs root; skips with a reason otherwise.
//!
//! Addresses come from 198.18.70.0/24 to 198.18.76.0/24 and exist only inside namespaces these
//! tests create.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::otlp::{Hung, Receiver, Span};
use common::prom::Prometheus;
use common::{Cleanup, Proc, TempDir, addr_up, describe, free_port, netns_inode, sample, scrape, sh, trace_json};

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// The trace id `trace` printed for its probe (`...; trace <32 hex digits>`).
fn printed_trace_id(text: &str) -> Option<String> {
    let at = text.find("; trace ")? + "; trace ".len();
    let id: String = text[at..].chars().take_while(|c| c.is_ascii_hexdigit()).collect();
    (id.len() == 32).then_some(id)
}

/// A bridge `br` at `<net>.1/24` with one namespace `ns` behind it at `<net>.11`.
fn bridge_with_one_container(c: &mut Cleanup, br: &str, ns: &str, hostif: &str, net: &str) -> String {
    c.host_link(br);
    sh(&format!(
        "ip link add {br} type bridge && ip addr add {net}.1/24 dev {br} && ip link set dev {br} up"
    ));
    let ns = c.netns(ns);
    sh(&format!("ip link add {hostif} type veth peer name eth0 netns {ns}"));
    sh(&format!(
        "ip link set dev {hostif} master {br} && ip link set dev {hostif} up"
    ));
    addr_up(&ns, "eth0", &format!("{net}.11/24"));
    sh(&format!("ip -n {ns} route add default via {net}.1"));
    ns
}

/// The spans of one trace, once its root and `expected` spans in all have arrived.
fn spans_of(rx: &Receiver, trace_id: &str, expected: usize) -> Vec<Span> {
    let all = rx.wait_for(Duration::from_secs(30), |spans| {
        spans.iter().filter(|s| s.trace_id == trace_id).count() >= expected
    });
    let mine: Vec<Span> = all.into_iter().filter(|s| s.trace_id == trace_id).collect();
    assert_eq!(
        mine.len(),
        expected,
        "spans of trace {trace_id}: {:#?}",
        mine.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    mine
}

fn one<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one span named {name:?}: {:#?}", spans);
    found[0]
}

/// The hop spans in hop order.
fn hop_spans(spans: &[Span]) -> Vec<&Span> {
    let mut hops: Vec<&Span> = spans
        .iter()
        .filter(|s| s.attr_int("tracepkt.hop.index").is_some())
        .collect();
    hops.sort_by_key(|s| s.attr_int("tracepkt.hop.index"));
    hops
}

/// Checks the tree and every hop span against the rows `trace --json` printed for the
/// same probe.
fn check_tree(spans: &[Span], rows: &[serde_json::Value], root_name: &str) -> (Span, Span) {
    let root = one(spans, root_name).clone();
    assert_eq!(root.parent_span_id, "", "the probe span is the root");
    let request = one(spans, "request").clone();
    assert_eq!(request.parent_span_id, root.span_id);
    let reply = spans.iter().find(|s| s.name == "reply");
    if let Some(r) = reply {
        assert_eq!(r.parent_span_id, root.span_id);
    }
    let hops = hop_spans(spans);
    assert_eq!(hops.len(), rows.len(), "one hop span per row of trace --json");
    for (i, (span, row)) in hops.iter().zip(rows).enumerate() {
        let what = format!("hop {i}: span {span:#?}\nrow {row}");
        assert_eq!(span.attr_int("tracepkt.hop.index"), Some(i as i64), "{what}");
        let direction = row["direction"].as_str().unwrap();
        let parent = if direction == "request" {
            &request.span_id
        } else {
            &reply.expect("a reply span for reply hops").span_id
        };
        assert_eq!(&span.parent_span_id, parent, "{what}");
        assert_eq!(
            span.attr_str("tracepkt.direction").as_deref(),
            Some(direction),
            "{what}"
        );
        assert_eq!(
            span.attr_str("tracepkt.hop.kind").as_deref(),
            row["kind"].as_str(),
            "{what}"
        );
        assert_eq!(
            span.attr_str("network.interface.name").as_deref(),
            row["ifname"].as_str(),
            "{what}"
        );
        assert_eq!(span.attr_int("tracepkt.netns.inode"), row["netns"].as_i64(), "{what}");
        assert_eq!(
            span.attr_str("tracepkt.netns.name").as_deref(),
            row["netns_name"].as_str(),
            "{what}"
        );
        assert_eq!(
            span.attr_str("source.address").as_deref(),
            row["saddr"].as_str(),
            "{what}"
        );
        assert_eq!(
            span.attr_str("destination.address").as_deref(),
            row["daddr"].as_str(),
            "{what}"
        );
        if row["kind"] == "interface" {
            assert_eq!(span.attr_str("tracepkt.io").as_deref(), row["io"].as_str(), "{what}");
        }
        // Inside the probe: from its send to its end, in hop order.
        assert!(
            root.start_unix_nano <= span.start_unix_nano && span.start_unix_nano <= root.end_unix_nano,
            "{what}\nroot {} .. {}",
            root.start_unix_nano,
            root.end_unix_nano
        );
        assert!(span.end_unix_nano >= span.start_unix_nano, "{what}");
        if i > 0 {
            assert!(span.start_unix_nano >= hops[i - 1].start_unix_nano, "{what}");
            assert_eq!(
                hops[i - 1].end_unix_nano,
                span.start_unix_nano,
                "a hop lasts until the next"
            );
        }
    }
    (root, request)
}

fn check_resource(span: &Span) {
    assert_eq!(span.resource_str("service.name").as_deref(), Some("tracepkt"));
    assert_eq!(
        span.resource_str("service.version").as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(span.resource_str("host.name").as_deref(), Some(host.trim()));
    assert_eq!(span.resource_str("os.version"), Some(common::kernel()));
    assert_eq!(span.scope, "tracepkt");
}

/// `trace --json --otlp` through a bridge: the decoded span tree matches the printed rows.
fn trace_through_a_bridge(test: &str, rx: Receiver, protocol: &str, br: &str, net: &str) {
    let mut c = Cleanup::new();
    let ns = bridge_with_one_container(&mut c, br, &format!("tpk-{br}"), &format!("{br}h"), net);
    let target = format!("{net}.11");
    let before = SystemTime::now();
    let (out, rows) = trace_json(None, &[&target, "--otlp", &rx.endpoint, "--otlp-protocol", protocol]);
    let after = SystemTime::now();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let trace_id =
        printed_trace_id(&stderr).unwrap_or_else(|| panic!("{test}: no trace id printed\n{}", describe(&out)));
    assert_eq!(rows.len(), 6, "bridge, veth, container and back: {}", describe(&out));
    let spans = spans_of(&rx, &trace_id, rows.len() + 3);
    let (root, _) = check_tree(&spans, &rows, &format!("probe {target}"));

    assert_eq!(root.status_code, 0, "an answered probe is not an error: {root:#?}");
    assert_eq!(root.attr_str("tracepkt.outcome").as_deref(), Some("replied"));
    assert_eq!(root.attr_str("server.address"), Some(target.clone()));
    assert_eq!(root.attr_str("network.peer.address"), Some(target.clone()));
    assert_eq!(root.attr_str("network.type").as_deref(), Some("ipv4"));
    assert_eq!(root.attr_str("tracepkt.target"), Some(target.clone()));
    assert_eq!(root.attr_int("tracepkt.probe.id"), rows[0]["probe"].as_i64());
    assert_eq!(root.attr_int("tracepkt.probe.seq"), Some(0));
    assert_eq!(root.attr_int("tracepkt.hops"), Some(rows.len() as i64));
    let rtt = root.attributes["tracepkt.rtt_seconds"].as_f64().expect("rtt");
    assert!(rtt > 0.0 && rtt < 1.0, "{rtt}");
    // Wall-clock placement: the probe ran while `trace` did.
    assert!(
        unix_nanos(before) <= root.start_unix_nano && root.end_unix_nano <= unix_nanos(after),
        "root {} .. {} outside the run {:?} .. {:?}",
        root.start_unix_nano,
        root.end_unix_nano,
        before,
        after
    );
    // The root runs from just before the send to just after the answer: it holds the RTT,
    // plus what the socket calls around it took (milliseconds under CPU emulation).
    let lasted = (root.end_unix_nano - root.start_unix_nano) as f64 / 1e9;
    assert!(
        lasted >= rtt && lasted < rtt + 0.5,
        "root lasted {lasted} s for an RTT of {rtt} s"
    );
    check_resource(&root);

    // The namespace of the container's hops is named on its spans.
    let inner = netns_inode(&ns) as i64;
    assert!(
        spans
            .iter()
            .filter(|s| s.attr_int("tracepkt.netns.inode") == Some(inner))
            .all(|s| s.attr_str("tracepkt.netns.name").as_deref() == Some(ns.as_str()))
    );
    eprintln!("{test}: trace {trace_id}\n{}", tree(&spans));
}

/// The span tree as text, children under their parent with their attributes: what the test
/// log shows of a decoded trace.
fn tree(spans: &[Span]) -> String {
    fn walk(spans: &[Span], parent: &str, depth: usize, out: &mut String) {
        let mut children: Vec<&Span> = spans.iter().filter(|s| s.parent_span_id == parent).collect();
        children.sort_by_key(|s| (s.start_unix_nano, s.attr_int("tracepkt.hop.index")));
        for s in children {
            let attrs: Vec<String> = s.attributes.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            let status = match s.status_code {
                2 => format!(" ERROR({})", s.status_message),
                _ => String::new(),
            };
            out.push_str(&format!(
                "{}{} [{} ns]{status} {}\n",
                "  ".repeat(depth),
                s.name,
                s.end_unix_nano - s.start_unix_nano,
                attrs.join(" ")
            ));
            walk(spans, &s.span_id, depth + 1, out);
        }
    }
    let mut out = String::new();
    walk(spans, "", 0, &mut out);
    out
}

#[test]
fn trace_sends_its_journey_over_grpc() {
    require_privileges!("trace_sends_its_journey_over_grpc");
    trace_through_a_bridge(
        "trace_sends_its_journey_over_grpc",
        Receiver::grpc(),
        "grpc",
        "tpkob1",
        "198.18.72",
    );
}

#[test]
fn trace_sends_its_journey_over_http() {
    require_privileges!("trace_sends_its_journey_over_http");
    trace_through_a_bridge(
        "trace_sends_its_journey_over_http",
        Receiver::http(),
        "http/protobuf",
        "tpkob2",
        "198.18.73",
    );
}

#[test]
fn a_dropped_probe_is_an_error_span_naming_the_drop() {
    let test = "a_dropped_probe_is_an_error_span_naming_the_drop";
    require_privileges!(test);
    if !common::have_tool(test, "nft") {
        return;
    }
    let mut c = Cleanup::new();
    let ns = c.veth_ns("tpk-odrop", "tpkod0", "198.18.74");
    common::nft_input_rule(&ns, "icmp type echo-request drop");
    let rx = Receiver::grpc();
    let (out, rows) = trace_json(None, &["198.18.74.2", "--timeout", "0.5", "--otlp", &rx.endpoint]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let trace_id = printed_trace_id(&stderr).unwrap_or_else(|| panic!("no trace id printed\n{}", describe(&out)));
    let Some(drop_row) = rows.iter().find(|r| r["kind"] == "drop") else {
        common::skip(
            test,
            &format!("the kernel reported no drop row for the probe: {}", describe(&out)),
        );
        return;
    };
    let spans = spans_of(&rx, &trace_id, rows.len() + 2);
    let (root, request) = check_tree(&spans, &rows, "probe 198.18.74.2");
    assert!(spans.iter().all(|s| s.name != "reply"), "no reply leg: {spans:#?}");
    let reason = drop_row["reason"].as_str().unwrap();
    assert_eq!(root.status_code, 2, "{root:#?}");
    assert_eq!(root.attr_str("tracepkt.outcome").as_deref(), Some("dropped"));
    assert!(root.status_message.contains(reason), "{root:#?}");
    assert_eq!(root.attr_str("tracepkt.last_seen.netns").as_deref(), Some(ns.as_str()));
    assert_eq!(request.status_code, 2, "the leg that died is an error: {request:#?}");
    let drop = spans
        .iter()
        .find(|s| s.attr_str("tracepkt.hop.kind").as_deref() == Some("drop"))
        .expect("a drop span");
    assert_eq!(drop.status_code, 2, "{drop:#?}");
    assert_eq!(drop.attr_str("tracepkt.drop.reason").as_deref(), Some(reason));
    assert!(drop.status_message.contains(reason), "{drop:#?}");
    assert_eq!(
        drop.attr_str("tracepkt.drop.location"),
        drop_row["location"].as_str().map(str::to_string)
    );
    assert_eq!(drop.name, format!("drop {reason}"));
    eprintln!("{test}: trace {trace_id}\n{}", tree(&spans));
}

/// Sniffs the first tracepkt probe arriving on `eth0`, then sends 20 echo requests with its
/// echo id and sequence, the same length and another payload, back to the sender.
const FORGER: &str = r#"
import socket, struct, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
s.bind(("eth0", 0))
s.settimeout(20)
print("ready", flush=True)
while True:
    pkt, addr = s.recvfrom(4096)
    if addr[2] == socket.PACKET_OUTGOING:
        continue
    ip = pkt[14:]
    if len(ip) < 20 or ip[9] != 1:
        continue
    icmp = ip[(ip[0] & 15) * 4:]
    if icmp[0] == 8 and icmp[8:12] == b"TPKT":
        ident, seq = struct.unpack("!HH", icmp[4:8])
        break
def csum(b):
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    t = (t >> 16) + (t & 0xffff)
    t += t >> 16
    return ~t & 0xffff
r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
for i in range(20):
    body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"X" * 32
    body = body[:2] + struct.pack("!H", csum(body)) + body[4:]
    r.sendto(body, (sys.argv[1], 0))
    time.sleep(0.005)
print("forged", ident, seq, flush=True)
"#;

#[test]
fn foreign_echoes_with_our_id_are_not_followed() {
    let test = "foreign_echoes_with_our_id_are_not_followed";
    require_privileges!(test);
    if !common::have_tool(test, "nft") || !common::have_tool(test, "python3") {
        return;
    }
    let mut c = Cleanup::new();
    let ns = c.veth_ns("tpk-oforge", "tpkof0", "198.18.70");
    // The probe itself is dropped in the namespace, so it stays in flight for the whole
    // timeout while the forged echoes, with its id and sequence, cross both interfaces and are
    // answered.
    common::nft_input_rule(&ns, "icmp type echo-request @th,64,32 0x54504b54 drop");
    let mut forger = Proc(
        Command::new("ip")
            .args(["netns", "exec", &ns, "python3", "-c", FORGER, "198.18.70.1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the forger"),
    );
    let mut stdout = std::io::BufReader::new(forger.0.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line.trim(), "ready", "forger did not start");

    let (out, rows) = trace_json(None, &["198.18.70.2", "--timeout", "2"]);
    line.clear();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    let forged: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(forged.first(), Some(&"forged"), "forger: {line:?}\n{}", describe(&out));
    assert_eq!(
        rows.first()
            .and_then(|r| r["probe"].as_u64())
            .map(|p| p.to_string())
            .as_deref(),
        forged.get(1).copied(),
        "the forged echoes carry the probe's id: {}",
        describe(&out)
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    for r in &rows {
        assert_eq!(r["direction"], "request", "no reply of a forged echo is followed: {r}");
        assert_eq!(r["saddr"], "198.18.70.1", "no forged request is followed: {r}");
    }
    let interface_rows = rows.iter().filter(|r| r["kind"] == "interface").count();
    assert_eq!(
        interface_rows,
        2,
        "out of the host, into the namespace: {}",
        describe(&out)
    );
}

fn serve_config(dir: &TempDir, port: u16, target: &str, otlp: &str) -> std::path::PathBuf {
    let config = dir.path("config.yaml");
    common::write(
        &config,
        &format!(
            "listen: 127.0.0.1:{port}\nattach: always\nrtt_buckets: [0.0005, 0.001, 0.01, 0.1]\n\
             targets:\n  - address: {target}\n    interval: 1s\n    timeout: 500ms\n{otlp}"
        ),
    );
    config
}

#[test]
fn prometheus_stores_the_rtt_exemplar_of_the_trace_sent() {
    let test = "prometheus_stores_the_rtt_exemplar_of_the_trace_sent";
    require_privileges!(test);
    let mut c = Cleanup::new();
    c.veth_ns("tpk-oprom", "tpkop0", "198.18.75");
    let rx = Receiver::grpc();
    let dir = TempDir::new("otlp-prom");
    let port = free_port();
    let config = serve_config(
        &dir,
        port,
        "198.18.75.2",
        &format!("otlp:\n  endpoint: {}\n  sample_ratio: 1.0\n", rx.endpoint),
    );
    let log = dir.path("serve.log");
    let _serve = common::serve(&config, &log);
    common::wait_for(20, "a first journey", &log, || {
        sample(&scrape(port), "tracepkt_probe_rtt_seconds_count{").filter(|v| *v >= 1.0)
    });
    let prom = match Prometheus::start(&format!("127.0.0.1:{port}"), Duration::from_secs(1)) {
        Ok(p) => p,
        Err(reason) => {
            common::skip(test, &reason);
            return;
        }
    };
    prom.wait_up(Duration::from_secs(60));
    let start = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64() - 600.0;
    let deadline = Instant::now() + Duration::from_secs(60);
    let (exemplar, root) = loop {
        let end = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64() + 60.0;
        let roots: BTreeMap<String, Span> = rx
            .spans()
            .into_iter()
            .filter(|s| s.parent_span_id.is_empty())
            .map(|s| (s.trace_id.clone(), s))
            .collect();
        let found = prom
            .exemplars("tracepkt_probe_rtt_seconds_bucket", start, end)
            .into_iter()
            .find_map(|e| {
                let root = roots.get(e.labels.get("trace_id")?)?.clone();
                Some((e, root))
            });
        if let Some(f) = found {
            break f;
        }
        assert!(
            Instant::now() < deadline,
            "no exemplar with a received trace id; exemplars: {:#?}; received roots: {}",
            prom.exemplars("tracepkt_probe_rtt_seconds_bucket", start, end),
            roots.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(exemplar.series.get("target").map(String::as_str), Some("198.18.75.2"));
    let rtt = root.attributes["tracepkt.rtt_seconds"].as_f64().unwrap();
    assert!(
        (exemplar.value - rtt).abs() < 1e-9,
        "exemplar {exemplar:?} vs root RTT {rtt}"
    );
    eprintln!(
        "{test}: exemplar {:?} value {} on {:?}; root span {} {:?}",
        exemplar.labels, exemplar.value, exemplar.series, root.name, root.attributes
    );
}

#[test]
fn a_hung_collector_stops_neither_probing_nor_scrapes() {
    let test = "a_hung_collector_stops_neither_probing_nor_scrapes";
    require_privileges!(test);
    let mut c = Cleanup::new();
    c.veth_ns("tpk-ohung", "tpkoh0", "198.18.76");
    let hung = Hung::start();
    let dir = TempDir::new("otlp-hung");
    let port = free_port();
    let config = serve_config(
        &dir,
        port,
        "198.18.76.2",
        &format!("otlp:\n  endpoint: {}\n  timeout: 1s\n", hung.endpoint),
    );
    let log = dir.path("serve.log");
    let _serve = common::serve(&config, &log);
    let dropped = common::wait_for(60, "spans counted as dropped", &log, || {
        sample(&scrape(port), "tracepkt_spans_dropped_total{reason=\"export_failed\"}").filter(|v| *v > 0.0)
    });
    assert!(hung.connections() >= 1, "tracepkt never reached the collector");
    // Probing and scraping go on: every scrape answers quickly, and the probes keep replying.
    let first = sample(&scrape(port), "tracepkt_probe_rtt_seconds_count{").unwrap_or(0.0);
    for _ in 0..10 {
        let t = Instant::now();
        let body = scrape(port);
        assert!(
            !body.is_empty(),
            "scrape failed\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(t.elapsed() < Duration::from_secs(2), "scrape took {:?}", t.elapsed());
        std::thread::sleep(Duration::from_millis(400));
    }
    let text = scrape(port);
    let later = sample(&text, "tracepkt_probe_rtt_seconds_count{").unwrap_or(0.0);
    assert!(later >= first + 3.0, "probes went on: {first} -> {later}");
    assert_eq!(sample(&text, "tracepkt_probe_success{"), Some(1.0));
    let exported = sample(&text, "tracepkt_spans_exported_total").unwrap_or(-1.0);
    assert_eq!(exported, 0.0, "nothing reached a collector that never answers");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        log_text.matches("OTLP export failed").count(),
        1,
        "logged once, not per batch:\n{log_text}"
    );
    eprintln!("{test}: {dropped} spans dropped, {later} replies meanwhile");
}
