//! Self-tests of the OTLP and Prometheus helpers in `common/`, without tracepkt: the receivers
//! decode what the real opentelemetry-otlp exporters send, the hung collector never answers,
//! and a real Prometheus stores an exemplar from an OpenMetrics scrape.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::otlp::{Hung, Receiver, Span, Value};
use common::prom::Prometheus;
use opentelemetry::trace::{Span as _, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

fn now_unix() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// The ids of the spans `emit` sent, as the receiver should report them.
struct Sent {
    trace_id: String,
    parent_id: String,
    child_id: String,
}

/// Sends a root span and a child of it, with attributes of each type, an error status and
/// resource attributes, through `exporter` with a simple (synchronous) processor: each span is
/// exported, one request each, before `end()` returns.
fn emit(exporter: SpanExporter) -> Sent {
    let resource = Resource::builder_empty()
        .with_attribute(KeyValue::new("service.name", "tracepkt-harness"))
        .with_attribute(KeyValue::new("host.name", "lab-1"))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("harness-scope");
    let parent = tracer.start("probe");
    let cx = Context::current_with_span(parent);
    let mut child = tracer.start_with_context("hop", &cx);
    child.set_attribute(KeyValue::new("net.interface", "eth0"));
    child.set_attribute(KeyValue::new("probe.seq", 7_i64));
    child.set_attribute(KeyValue::new("rtt.ms", 1.5));
    child.set_attribute(KeyValue::new("dropped", true));
    child.set_status(Status::error("dropped by netfilter"));
    let sent = Sent {
        trace_id: child.span_context().trace_id().to_string(),
        parent_id: cx.span().span_context().span_id().to_string(),
        child_id: child.span_context().span_id().to_string(),
    };
    child.end();
    cx.span().end();
    provider.shutdown().unwrap();
    sent
}

fn check(rx: &Receiver, sent: &Sent, before: f64) {
    let spans = rx.wait_for(Duration::from_secs(10), |s| s.len() >= 2);
    assert_eq!(spans.len(), 2, "{spans:#?}");
    assert_eq!(rx.requests(), 2, "the simple processor sends one request per span");
    let by_name = |n: &str| -> &Span {
        spans
            .iter()
            .find(|s| s.name == n)
            .unwrap_or_else(|| panic!("{n}: {spans:#?}"))
    };
    let (parent, child) = (by_name("probe"), by_name("hop"));

    assert_eq!(sent.trace_id.len(), 32);
    assert_eq!(child.trace_id, sent.trace_id);
    assert_eq!(parent.trace_id, sent.trace_id);
    assert_eq!(child.span_id, sent.child_id);
    assert_eq!(parent.span_id, sent.parent_id);
    assert_eq!(child.parent_span_id, sent.parent_id);
    assert_eq!(parent.parent_span_id, "", "a root has no parent");

    assert_eq!(child.attr_str("net.interface").as_deref(), Some("eth0"));
    assert_eq!(child.attr_int("probe.seq"), Some(7));
    assert_eq!(child.attributes.get("rtt.ms"), Some(&Value::Double(1.5)));
    assert_eq!(child.attributes.get("dropped"), Some(&Value::Bool(true)));
    assert_eq!(child.attr_int("net.interface"), None, "a string is not an int");
    assert_eq!(child.status_code, 2);
    assert_eq!(child.status_message, "dropped by netfilter");
    assert_eq!(parent.status_code, 0);

    for s in [parent, child] {
        assert_eq!(s.resource_str("service.name").as_deref(), Some("tracepkt-harness"));
        assert_eq!(s.resource_str("host.name").as_deref(), Some("lab-1"));
        assert_eq!(s.scope, "harness-scope");
        let (start, end) = (s.start_unix_nano as f64 / 1e9, s.end_unix_nano as f64 / 1e9);
        assert!(before <= start && start <= end && end <= now_unix(), "{s:?}");
    }
}

#[test]
fn grpc_receiver_decodes_real_exporter() {
    let rx = Receiver::grpc();
    assert!(rx.endpoint.starts_with("http://127.0.0.1:"), "{}", rx.endpoint);
    // tonic's channel needs a tokio runtime to spawn its connection on; the simple processor
    // blocks this thread on the export while the runtime's worker drives the I/O.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _in_rt = rt.enter();
    let exporter = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(&rx.endpoint)
        .with_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let before = now_unix();
    let sent = emit(exporter);
    check(&rx, &sent, before);
}

#[test]
fn http_receiver_decodes_real_exporter() {
    let rx = Receiver::http();
    // A programmatic endpoint is used as given: the exporter appends /v1/traces only to
    // OTEL_EXPORTER_OTLP_ENDPOINT.
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{}/v1/traces", rx.endpoint))
        .with_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let before = now_unix();
    let sent = emit(exporter);
    check(&rx, &sent, before);
}

#[test]
fn http_receiver_refuses_json() {
    let rx = Receiver::http();
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Content-Type: application/json",
        ])
        .args(["--data", "{}", &format!("{}/v1/traces", rx.endpoint)])
        .output()
        .expect("run curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "415");
    assert_eq!(rx.requests(), 1);
    assert!(rx.spans().is_empty());
}

#[test]
fn hung_collector_accepts_and_never_answers() {
    let hung = Hung::start();
    let addr = hung.endpoint.trim_start_matches("http://");
    let mut conn = TcpStream::connect(addr).expect("connect to the hung collector");
    // The HTTP/2 connection preface, which a gRPC server would answer with its SETTINGS.
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut buf = [0u8; 64];
    match conn.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        Ok(0) => panic!("the hung collector closed the connection"),
        other => panic!("the hung collector answered: {other:?}"),
    }
    assert_eq!(hung.connections(), 1);
}

/// The real exporters stall on it until their own timeout: it stands in for a hung collector.
#[test]
fn hung_collector_stalls_real_exporters_until_their_timeout() {
    let hung = Hung::start();
    let timeout = Duration::from_secs(1);
    let export = |exporter: SpanExporter| -> Duration {
        let provider = SdkTracerProvider::builder().with_simple_exporter(exporter).build();
        let t = Instant::now();
        provider.tracer("hung").start("lost").end();
        let took = t.elapsed();
        let _ = provider.shutdown();
        took
    };
    let http = export(
        SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{}/v1/traces", hung.endpoint))
            .with_timeout(timeout)
            .build()
            .unwrap(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let grpc = {
        let _in_rt = rt.enter();
        export(
            SpanExporter::builder()
                .with_tonic()
                .with_endpoint(&hung.endpoint)
                .with_timeout(timeout)
                .build()
                .unwrap(),
        )
    };
    for (what, took) in [("http", http), ("grpc", grpc)] {
        assert!(took >= timeout && took < timeout * 5, "{what} export took {took:?}");
    }
    assert!(hung.connections() >= 2, "{} connections", hung.connections());
}

/// A one-route HTTP server on 127.0.0.1 serving a fixed OpenMetrics body on every request,
/// stopped on drop.
struct Fixed {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Fixed {
    fn start(body: String) -> Fixed {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                // Read the request head; a scrape is a GET with no body.
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                        _ => break,
                    }
                }
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Fixed {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Fixed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the blocking accept so the thread sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn prometheus_stores_openmetrics_exemplars() {
    const TEST: &str = "prometheus_stores_openmetrics_exemplars";
    let start = now_unix();
    // One exemplar with a timestamp and one without: Prometheus gives the latter the scrape's.
    let body = format!(
        "# TYPE demo_seconds histogram\n\
         demo_seconds_bucket{{le=\"0.1\"}} 1 # {{trace_id=\"0123456789abcdef0123456789abcdef\"}} 0.05 {start:.3}\n\
         demo_seconds_bucket{{le=\"1.0\"}} 2 # {{trace_id=\"fedcba9876543210fedcba9876543210\"}} 0.5\n\
         demo_seconds_bucket{{le=\"+Inf\"}} 2\n\
         demo_seconds_sum 0.55\n\
         demo_seconds_count 2\n\
         # EOF\n"
    );
    let target = Fixed::start(body);
    let prom = match Prometheus::start(&format!("127.0.0.1:{}", target.port), Duration::from_secs(1)) {
        Ok(p) => p,
        Err(reason) => {
            common::skip(TEST, &reason);
            return;
        }
    };
    prom.wait_up(Duration::from_secs(30));
    assert_eq!(prom.query("demo_seconds_count")[0]["value"][1], "2");

    let deadline = Instant::now() + Duration::from_secs(30);
    let exemplars = loop {
        let e = prom.exemplars("demo_seconds_bucket", start - 60.0, now_unix() + 60.0);
        if e.len() >= 2 || Instant::now() > deadline {
            break e;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    // Compared as numbers: whether `le` keeps the exposition's spelling varies by version.
    let find = |le: f64| {
        exemplars
            .iter()
            .find(|e| e.series.get("le").and_then(|v| v.parse().ok()) == Some(le))
            .unwrap_or_else(|| panic!("no exemplar on le={le}: {exemplars:#?}"))
    };

    let timed = find(0.1);
    assert_eq!(timed.labels["trace_id"], "0123456789abcdef0123456789abcdef");
    assert_eq!(timed.series["__name__"], "demo_seconds_bucket");
    assert_eq!(timed.series["job"], "target");
    assert_eq!(timed.value, 0.05);
    assert!(
        (timed.ts - start).abs() < 0.01,
        "the exemplar keeps its own timestamp: {timed:?}"
    );

    let untimed = find(1.0);
    assert_eq!(untimed.labels["trace_id"], "fedcba9876543210fedcba9876543210");
    assert_eq!(untimed.value, 0.5);
    assert!(untimed.ts >= start.floor(), "stamped at scrape time: {untimed:?}");
}
