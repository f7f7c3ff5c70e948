//! One OpenTelemetry trace per probe journey, sent over OTLP.
//!
//! A journey is complete when it is turned into spans, so spans are built after the fact with
//! their recorded times and handed straight to the SDK's batching processor: no span is open
//! while a probe is in flight, and the sampling decision is taken when the journey has ended,
//! knowing whether it failed.
//!
//! The tree of one journey:
//! ```text
//! probe <target>            the probe: outcome, RTT, addresses; id = the parent span id in the payload
//! ├── request               the echo request's way out
//! │   ├── <hop>             one span per hop, from its kernel timestamp to the next hop's
//! │   └── ...
//! └── reply                 the reply's way back
//!     └── <hop> ...
//! ```
//!
//! Export never blocks probing or `/metrics`: spans go to a bounded queue drained by the
//! processor's own thread, and a journey whose spans do not fit is dropped whole and counted.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, IdGenerator, RandomIdGenerator, SpanData, SpanEvents, SpanExporter,
    SpanLinks, SpanProcessor,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tracing::{info, warn};

use crate::clock;
use crate::config::{Otlp, OtlpProtocol};
use crate::journey::{Hop, HopDetail, Journey};
use crate::outcome::Outcome;
use crate::remote::RemoteJourney;
use probe_common::Direction;

/// Spans waiting to be sent, at most: a journey is a dozen spans, so this holds about 170
/// journeys while the collector is slow.
const QUEUE_SPANS: usize = 2048;
/// Spans per export request.
const BATCH_SPANS: usize = 512;
/// How long spans wait for company before they are sent.
const BATCH_DELAY: Duration = Duration::from_secs(1);
/// How long `shutdown` waits for the last spans to leave.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(3);

/// Where spans go and how many, from the config file first, then the standard environment
/// variables, then the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `None`: the exporter reads `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` itself, with the standard path rules.
    pub endpoint: Option<String>,
    /// What the logs show as the destination.
    pub shown: String,
    pub protocol: OtlpProtocol,
    /// `None`: `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, `OTEL_EXPORTER_OTLP_TIMEOUT`, or 10 s.
    pub timeout: Option<Duration>,
    pub service_name: String,
    /// Fraction of answered probes whose trace is kept; failed ones are always kept.
    pub sample_ratio: f64,
}

impl Settings {
    /// `None` when no endpoint is set anywhere: tracing is off.
    pub fn resolve(file: Option<&Otlp>, env: impl Fn(&str) -> Option<String>) -> Result<Option<Settings>, String> {
        let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let env_endpoint = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"));
        let file_endpoint = file.and_then(|f| f.endpoint.clone());
        let shown = match (&file_endpoint, &env_endpoint) {
            (Some(e), _) => e.clone(),
            (None, Some(e)) => e.clone(),
            (None, None) => return Ok(None),
        };
        let protocol = match file.and_then(|f| f.protocol) {
            Some(p) => p,
            None => match env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL")) {
                None => OtlpProtocol::default(),
                Some(p) => match p.trim() {
                    "grpc" => OtlpProtocol::Grpc,
                    "http/protobuf" => OtlpProtocol::HttpProtobuf,
                    other => {
                        return Err(format!(
                            "OTEL_EXPORTER_OTLP_PROTOCOL={other:?} is not supported: use grpc or http/protobuf"
                        ));
                    }
                },
            },
        };
        if file_endpoint.is_none() && shown.starts_with("https://") {
            return Err(format!(
                "OTLP endpoint {shown:?}: tracepkt sends plain-text OTLP only; point it at a collector on http://"
            ));
        }
        let endpoint = file_endpoint.map(|e| match protocol {
            OtlpProtocol::Grpc => e,
            OtlpProtocol::HttpProtobuf => http_traces_url(&e),
        });
        Ok(Some(Settings {
            endpoint,
            shown,
            protocol,
            timeout: file.and_then(|f| f.timeout),
            service_name: file
                .and_then(|f| f.service_name.clone())
                .or_else(|| env("OTEL_SERVICE_NAME"))
                .unwrap_or_else(|| "tracepkt".to_string()),
            sample_ratio: file.map(|f| f.sample_ratio).unwrap_or(1.0),
        }))
    }
}

/// The OTLP/HTTP traces URL of a collector given by its base URL, as the standard
/// `OTEL_EXPORTER_OTLP_ENDPOINT` rule builds it; a URL that already has a path is kept.
fn http_traces_url(base: &str) -> String {
    let rest = base.split_once("://").map(|(_, r)| r).unwrap_or(base);
    match rest.find('/') {
        Some(i) if rest[i..].trim_end_matches('/').is_empty() => format!("{}v1/traces", base),
        Some(_) => base.to_string(),
        None => format!("{base}/v1/traces"),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DecisionLabels {
    decision: &'static str,
}

/// What became of the spans: exported, or dropped and why. Registered in the metrics.
#[derive(Debug, Clone)]
pub struct SpanCounts {
    exported: Counter,
    dropped: Family<ReasonLabels, Counter>,
    queue_full: Counter,
    export_failed: Counter,
    traces: Family<DecisionLabels, Counter>,
    kept: Counter,
    sampled_out: Counter,
}

impl Default for SpanCounts {
    fn default() -> Self {
        let dropped = Family::<ReasonLabels, Counter>::default();
        let traces = Family::<DecisionLabels, Counter>::default();
        let queue_full = dropped.get_or_create(&ReasonLabels { reason: "queue_full" }).clone();
        let export_failed = dropped
            .get_or_create(&ReasonLabels {
                reason: "export_failed",
            })
            .clone();
        let kept = traces.get_or_create(&DecisionLabels { decision: "kept" }).clone();
        let sampled_out = traces
            .get_or_create(&DecisionLabels {
                decision: "sampled_out",
            })
            .clone();
        SpanCounts {
            exported: Counter::default(),
            dropped,
            queue_full,
            export_failed,
            traces,
            kept,
            sampled_out,
        }
    }
}

impl SpanCounts {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "tracepkt_spans_exported",
            "Spans the OTLP collector accepted",
            self.exported.clone(),
        );
        registry.register(
            "tracepkt_spans_dropped",
            "Spans not sent: queue_full (the collector is slower than the probes), export_failed (the collector refused them, or did not answer in time)",
            self.dropped.clone(),
        );
        registry.register(
            "tracepkt_traces",
            "Journeys by tracing decision: kept (sent as a trace) or sampled_out (answered, and not in the sampled fraction)",
            self.traces.clone(),
        );
    }

    /// Spans exported, and spans dropped for any reason, so far.
    pub fn totals(&self) -> (u64, u64) {
        (self.exported.get(), self.queue_full.get() + self.export_failed.get())
    }
}

/// The OTLP exporter, counting what it sends and what fails; it logs when exports start
/// failing and when they recover, not once per batch.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    pending: Arc<AtomicUsize>,
    counts: SpanCounts,
    failing: AtomicBool,
    shown: String,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let result = self.inner.export(batch).await;
        self.pending.fetch_sub(n, Ordering::Relaxed);
        match &result {
            Ok(()) => {
                self.counts.exported.inc_by(n as u64);
                if self.failing.swap(false, Ordering::Relaxed) {
                    info!(endpoint = %self.shown, "OTLP export works again");
                }
            }
            Err(e) => {
                self.counts.export_failed.inc_by(n as u64);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    warn!(endpoint = %self.shown, "OTLP export failed, spans are dropped and counted until it works again: {e}");
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// What the spans say about the target, beyond the journey.
pub struct TargetInfo<'a> {
    pub name: &'a str,
    /// As configured: an address or a host name.
    pub address: &'a str,
    /// TCP and UDP targets.
    pub port: Option<u16>,
    pub labels: &'a [(String, String)],
}

/// Turns journeys into traces and sends them.
pub struct Tracer {
    processor: Arc<BatchSpanProcessor>,
    pending: Arc<AtomicUsize>,
    counts: SpanCounts,
    sample_ratio: f64,
    scope: InstrumentationScope,
    ids: RandomIdGenerator,
    shown: String,
}

/// The node's identity for the resource: host name, kernel release, and the Kubernetes node
/// name when the downward API passes it in `K8S_NODE_NAME`.
fn node_attributes() -> Vec<KeyValue> {
    let read = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_string());
    let mut kv = vec![
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("os.type", "linux"),
    ];
    if let Some(h) = read("/proc/sys/kernel/hostname") {
        kv.push(KeyValue::new("host.name", h));
    }
    if let Some(r) = read("/proc/sys/kernel/osrelease") {
        kv.push(KeyValue::new("os.version", r));
    }
    if let Some(n) = std::env::var("K8S_NODE_NAME").ok().filter(|n| !n.is_empty()) {
        kv.push(KeyValue::new("k8s.node.name", n));
    }
    kv
}

impl Tracer {
    /// Builds the exporter and its processor. Must run inside the tokio runtime (the gRPC
    /// channel's worker lives there), outside its async workers (the HTTP client blocks).
    pub fn start(settings: &Settings, counts: SpanCounts) -> anyhow::Result<Tracer> {
        let exporter = match settings.protocol {
            OtlpProtocol::Grpc => {
                let mut b = opentelemetry_otlp::SpanExporter::builder().with_tonic();
                if let Some(e) = &settings.endpoint {
                    b = b.with_endpoint(e.clone());
                }
                if let Some(t) = settings.timeout {
                    b = b.with_timeout(t);
                }
                b.build()
            }
            OtlpProtocol::HttpProtobuf => {
                let mut b = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary);
                if let Some(e) = &settings.endpoint {
                    b = b.with_endpoint(e.clone());
                }
                if let Some(t) = settings.timeout {
                    b = b.with_timeout(t);
                }
                b.build()
            }
        }
        .with_context(|| format!("setting up the OTLP exporter for {}", settings.shown))?;
        let pending = Arc::new(AtomicUsize::new(0));
        let mut counted = Counted {
            inner: exporter,
            pending: pending.clone(),
            counts: counts.clone(),
            failing: AtomicBool::new(false),
            shown: settings.shown.clone(),
        };
        let resource = Resource::builder()
            .with_service_name(settings.service_name.clone())
            .with_attributes(node_attributes())
            .build();
        counted.set_resource(&resource);
        let config = BatchConfigBuilder::default()
            .with_max_queue_size(QUEUE_SPANS)
            .with_max_export_batch_size(BATCH_SPANS)
            .with_scheduled_delay(BATCH_DELAY)
            .build();
        let processor = BatchSpanProcessor::builder(counted).with_batch_config(config).build();
        Ok(Tracer {
            processor: Arc::new(processor),
            pending,
            counts,
            sample_ratio: settings.sample_ratio,
            scope: InstrumentationScope::builder("tracepkt")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            ids: RandomIdGenerator::default(),
            shown: settings.shown.clone(),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.shown
    }

    /// Sends the journey as a trace if it is kept: every failed journey, and the sampled
    /// fraction of answered ones. Returns its trace id when it was handed to the exporter.
    pub fn record(&self, target: &TargetInfo<'_>, addr: Option<IpAddr>, journey: &Journey) -> Option<TraceId> {
        if !keep(journey, self.sample_ratio) {
            self.counts.sampled_out.inc();
            return None;
        }
        self.counts.kept.inc();
        let spans = self.spans(target, addr, journey, clock::wall_offset_ns());
        self.enqueue(spans).then(|| TraceId::from_bytes(journey.trace.trace_id))
    }

    /// Hands a journey's spans to the exporter together, or drops them together (counted) when
    /// the queue has no room for all of them.
    fn enqueue(&self, spans: Vec<SpanData>) -> bool {
        let n = spans.len();
        if self.pending.fetch_add(n, Ordering::Relaxed) + n > QUEUE_SPANS {
            self.pending.fetch_sub(n, Ordering::Relaxed);
            self.counts.queue_full.inc_by(n as u64);
            return false;
        }
        for s in spans {
            self.processor.on_end(s);
        }
        true
    }

    /// Sends the hops another node's probe made here as spans in the sender's trace: children
    /// of the sender's root span, which the probe's payload names, under this node's resource
    /// (`host.name`, `k8s.node.name`). Every probe seen is sent: the sender's sample ratio is
    /// not known here.
    pub fn record_remote(&self, j: &RemoteJourney) {
        let offset = clock::wall_offset_ns();
        let wall = |ns: u64| clock::to_wall(ns, offset);
        let trace_id = TraceId::from_bytes(j.trace.trace_id);
        let parent = SpanId::from_bytes(j.trace.parent_span_id);
        let last = j.hops.last().map(|h| h.ts_ns).unwrap_or(0);
        let spans: Vec<SpanData> = j
            .hops
            .iter()
            .enumerate()
            .map(|(i, hop)| {
                let next = j.hops.get(i + 1).map(|h| h.ts_ns).unwrap_or(last);
                let ctx = SpanContext::new(
                    trace_id,
                    self.ids.new_span_id(),
                    TraceFlags::SAMPLED,
                    false,
                    TraceState::default(),
                );
                let mut attrs = hop_attributes(hop, i);
                attrs.push(KeyValue::new("tracepkt.remote", true));
                attrs.push(KeyValue::new("tracepkt.origin", j.origin.to_string()));
                attrs.push(KeyValue::new("tracepkt.protocol", j.proto.as_str()));
                let mut span = self.span(
                    (ctx, parent),
                    SpanKind::Internal,
                    hop_name(hop),
                    (wall(hop.ts_ns), wall(next.max(hop.ts_ns))),
                    attrs,
                    hop_status(hop),
                );
                span.parent_span_is_remote = true;
                span
            })
            .collect();
        self.enqueue(spans);
    }

    /// Sends what is queued, waiting at most a few seconds: a hung collector must not hold
    /// up the exit.
    pub async fn shutdown(&self) {
        let processor = self.processor.clone();
        let done = tokio::task::spawn_blocking(move || processor.shutdown_with_timeout(SHUTDOWN_WAIT));
        match tokio::time::timeout(SHUTDOWN_WAIT + Duration::from_secs(1), done).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => warn!("OTLP exporter shutdown: {e}"),
            _ => warn!("OTLP exporter did not shut down in time; queued spans are lost"),
        }
        let left = self.pending.swap(0, Ordering::Relaxed);
        if left > 0 {
            self.counts.export_failed.inc_by(left as u64);
        }
    }

    fn context(&self, journey: &Journey, span_id: SpanId) -> SpanContext {
        SpanContext::new(
            TraceId::from_bytes(journey.trace.trace_id),
            span_id,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        )
    }

    fn span(
        &self,
        (ctx, parent): (SpanContext, SpanId),
        kind: SpanKind,
        name: String,
        (start, end): (SystemTime, SystemTime),
        attributes: Vec<KeyValue>,
        status: Status,
    ) -> SpanData {
        SpanData {
            span_context: ctx,
            parent_span_id: parent,
            parent_span_is_remote: false,
            span_kind: kind,
            name: Cow::Owned(name),
            start_time: start,
            end_time: end.max(start),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        }
    }

    /// The journey's spans: root, `request`, `reply`, and one per hop.
    fn spans(&self, target: &TargetInfo<'_>, addr: Option<IpAddr>, j: &Journey, offset: i128) -> Vec<SpanData> {
        let wall = |ns: u64| clock::to_wall(ns, offset);
        let root_id = SpanId::from_bytes(j.trace.parent_span_id);
        let never_sent = j.sent_ns == 0;
        let last_ts = j.hops.iter().map(|h| h.ts_ns).max().unwrap_or(0);
        let end_ns = j.ended_ns.max(last_ts);
        let (start, end) = if never_sent {
            let now = SystemTime::now();
            (now, now)
        } else {
            (wall(j.sent_ns), wall(end_ns))
        };
        let (outcome, why) = j.ending();
        let mut attrs = vec![
            KeyValue::new("tracepkt.target", target.name.to_string()),
            KeyValue::new("server.address", target.address.to_string()),
            KeyValue::new("tracepkt.probe.id", i64::from(j.probe)),
            KeyValue::new("tracepkt.probe.seq", i64::from(j.seq)),
            KeyValue::new("tracepkt.outcome", outcome.as_str()),
            KeyValue::new("tracepkt.hops", j.hops.len() as i64),
            KeyValue::new("tracepkt.protocol", j.proto.as_str()),
        ];
        if j.events_lost > 0 {
            attrs.push(KeyValue::new("tracepkt.events_lost", j.events_lost as i64));
        }
        if j.proto != probe_common::Proto::Icmp {
            attrs.push(KeyValue::new("network.transport", j.proto.as_str()));
            if let Some(p) = target.port {
                attrs.push(KeyValue::new("server.port", i64::from(p)));
            }
        }
        if let Some(v) = &j.violation {
            attrs.push(KeyValue::new("tracepkt.expect.violation", v.clone()));
        }
        if let Some(a) = addr {
            attrs.push(KeyValue::new("network.peer.address", a.to_string()));
            attrs.push(KeyValue::new("network.type", if a.is_ipv4() { "ipv4" } else { "ipv6" }));
        }
        if let Outcome::Reply { rtt } = j.outcome {
            attrs.push(KeyValue::new("tracepkt.rtt_seconds", rtt.as_secs_f64()));
        }
        if let Some(why) = &why {
            attrs.push(KeyValue::new("tracepkt.outcome.detail", why.clone()));
        }
        if let Some(h) = j.last_hop().filter(|_| !j.replied()) {
            attrs.push(KeyValue::new("tracepkt.last_seen.netns", h.netns_label()));
            attrs.push(KeyValue::new("tracepkt.last_seen.interface", h.ifname.clone()));
        }
        for (k, v) in target.labels {
            attrs.push(KeyValue::new(format!("tracepkt.label.{k}"), v.clone()));
        }
        let status = match &why {
            Some(w) if !j.replied() => Status::error(format!("{outcome}: {w}")),
            _ if !j.replied() => Status::error(outcome.as_str()),
            _ => Status::Unset,
        };
        let mut out = Vec::with_capacity(j.hops.len() + 3);
        out.push(self.span(
            (self.context(j, root_id), SpanId::INVALID),
            SpanKind::Client,
            format!("probe {}", target.name),
            (start, end),
            attrs,
            status,
        ));
        if never_sent {
            return out;
        }
        let first_reply = j.hops.iter().find(|h| h.direction == Direction::Reply).map(|h| h.ts_ns);
        let request_id = self.ids.new_span_id();
        let request_end = first_reply.unwrap_or(end_ns);
        let fatal = |h: &Hop| h.is_fatal();
        let leg_status = |d: Direction| match j.hops.iter().find(|h| h.direction == d && fatal(h)) {
            Some(h) => Status::error(h.verdict_text()),
            None => Status::Unset,
        };
        out.push(self.span(
            (self.context(j, request_id), root_id),
            SpanKind::Internal,
            "request".to_string(),
            (start, wall(request_end)),
            vec![KeyValue::new("tracepkt.direction", "request")],
            leg_status(Direction::Request),
        ));
        let reply_id = self.ids.new_span_id();
        if first_reply.is_some() || j.replied() {
            let reply_start = first_reply.unwrap_or(end_ns);
            out.push(self.span(
                (self.context(j, reply_id), root_id),
                SpanKind::Internal,
                "reply".to_string(),
                (wall(reply_start), end),
                vec![KeyValue::new("tracepkt.direction", "reply")],
                leg_status(Direction::Reply),
            ));
        }
        for (i, hop) in j.hops.iter().enumerate() {
            let next = j.hops.get(i + 1).map(|h| h.ts_ns).unwrap_or(end_ns);
            let parent = match hop.direction {
                Direction::Request => request_id,
                Direction::Reply => reply_id,
            };
            out.push(self.span(
                (self.context(j, self.ids.new_span_id()), parent),
                SpanKind::Internal,
                hop_name(hop),
                (wall(hop.ts_ns), wall(next.max(hop.ts_ns))),
                hop_attributes(hop, i),
                hop_status(hop),
            ));
        }
        out
    }
}

/// Every failed journey is kept; an answered one when its trace id falls in the sampled
/// fraction (the trace id's last 8 bytes against the ratio, as the standard ratio sampler
/// decides, so the decision is the same wherever it is taken).
fn keep(j: &Journey, ratio: f64) -> bool {
    if !j.replied() {
        return true;
    }
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    let x = u64::from_be_bytes(j.trace.trace_id[8..16].try_into().expect("8 bytes"));
    (x >> 1) < (ratio * (1u64 << 63) as f64) as u64
}

/// A hop where the packet ended is an error span, with what ended it.
fn hop_status(h: &Hop) -> Status {
    if h.is_fatal() {
        Status::error(h.verdict_text())
    } else {
        Status::Unset
    }
}

fn hop_name(h: &Hop) -> String {
    match &h.detail {
        HopDetail::Interface { io } => format!("{} {}", if h.ifname.is_empty() { "-" } else { &h.ifname }, io.as_str()),
        HopDetail::Netfilter { .. } => format!("netfilter {}", h.verdict_text()),
        HopDetail::Drop { reason, .. } => format!("drop {reason}"),
    }
}

fn hop_attributes(h: &Hop, index: usize) -> Vec<KeyValue> {
    let mut kv = vec![
        KeyValue::new("tracepkt.hop.index", index as i64),
        KeyValue::new("tracepkt.hop.kind", h.kind().as_str()),
        KeyValue::new("tracepkt.direction", h.direction.as_str()),
        KeyValue::new("tracepkt.netns.inode", i64::from(h.netns)),
        KeyValue::new("network.interface.name", h.ifname.clone()),
        KeyValue::new("tracepkt.ifindex", i64::from(h.ifindex)),
        KeyValue::new("source.address", h.saddr.to_string()),
        KeyValue::new("destination.address", h.daddr.to_string()),
        KeyValue::new("tracepkt.hooks", h.sources.join(",")),
    ];
    if let Some(t) = h.tunnel {
        // The addresses above are then the tunnel's outer ones.
        kv.push(KeyValue::new("tracepkt.tunnel", t));
    }
    if let (Some(sp), Some(dp)) = (h.sport, h.dport) {
        kv.push(KeyValue::new("source.port", i64::from(sp)));
        kv.push(KeyValue::new("destination.port", i64::from(dp)));
    }
    if let Some(n) = &h.netns_name {
        kv.push(KeyValue::new("tracepkt.netns.name", n.clone()));
        // Only a pod's name holds a '/': names under /run/netns cannot.
        if let Some((namespace, pod)) = n.split_once('/') {
            kv.push(KeyValue::new("k8s.namespace.name", namespace.to_owned()));
            kv.push(KeyValue::new("k8s.pod.name", pod.to_owned()));
        }
    }
    match &h.detail {
        HopDetail::Interface { io } => kv.push(KeyValue::new("tracepkt.io", io.as_str())),
        HopDetail::Netfilter {
            family,
            hook,
            table,
            chain,
            verdict,
        } => {
            kv.push(KeyValue::new("tracepkt.netfilter.family", *family));
            kv.push(KeyValue::new("tracepkt.netfilter.hook", *hook));
            kv.push(KeyValue::new("tracepkt.netfilter.table", table.clone()));
            if let Some(c) = chain {
                kv.push(KeyValue::new("tracepkt.netfilter.chain", c.clone()));
            }
            kv.push(KeyValue::new("tracepkt.netfilter.verdict", verdict.as_str()));
        }
        HopDetail::Drop { reason, location } => {
            kv.push(KeyValue::new("tracepkt.drop.reason", reason.clone()));
            kv.push(KeyValue::new("tracepkt.drop.location", location.clone()));
        }
    }
    kv
}

/// Starts the tracer the settings ask for, or none.
pub async fn start(settings: Option<Settings>, counts: &SpanCounts) -> anyhow::Result<Option<Arc<Tracer>>> {
    let Some(settings) = settings else {
        return Ok(None);
    };
    let counts = counts.clone();
    let tracer = tokio::task::spawn_blocking(move || Tracer::start(&settings, counts))
        .await
        .context("starting the OTLP exporter")??;
    info!(endpoint = %tracer.endpoint(), "sending one trace per journey over OTLP");
    Ok(Some(Arc::new(tracer)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    fn file(endpoint: Option<&str>, protocol: Option<OtlpProtocol>) -> Otlp {
        Otlp {
            endpoint: endpoint.map(str::to_string),
            protocol,
            timeout: None,
            service_name: None,
            sample_ratio: 1.0,
            trace_url: None,
        }
    }

    #[test]
    fn no_endpoint_anywhere_means_off() {
        assert_eq!(Settings::resolve(None, env(&[])).unwrap(), None);
        assert_eq!(Settings::resolve(Some(&file(None, None)), env(&[])).unwrap(), None);
    }

    #[test]
    fn the_file_wins_over_the_environment() {
        let s = Settings::resolve(
            Some(&file(Some("http://file:4318"), Some(OtlpProtocol::HttpProtobuf))),
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_SERVICE_NAME", "from-env"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://file:4318/v1/traces"));
        assert_eq!(s.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(s.service_name, "from-env");
    }

    #[test]
    fn the_environment_alone_turns_tracing_on() {
        let s = Settings::resolve(
            None,
            env(&[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://env:4318/v1/traces"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ]),
        )
        .unwrap()
        .unwrap();
        // The exporter reads the variable itself, with the standard path rules.
        assert_eq!(s.endpoint, None);
        assert_eq!(s.shown, "http://env:4318/v1/traces");
        assert_eq!(s.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(s.service_name, "tracepkt");
        let err = Settings::resolve(
            None,
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ]),
        )
        .unwrap_err();
        assert!(err.contains("http/json"), "{err}");
        let err = Settings::resolve(None, env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://x:4317")])).unwrap_err();
        assert!(err.contains("plain-text"), "{err}");
    }

    #[test]
    fn http_urls_get_the_traces_path_once() {
        assert_eq!(http_traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(http_traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            http_traces_url("http://c:4318/custom/v1/traces"),
            "http://c:4318/custom/v1/traces"
        );
    }

    fn journey(replied: bool, trace_low: u64) -> Journey {
        let mut trace_id = [0u8; 16];
        trace_id[8..].copy_from_slice(&trace_low.to_be_bytes());
        Journey {
            proto: probe_common::Proto::Icmp,
            probe: 1,
            seq: 0,
            hops: Vec::new(),
            outcome: if replied {
                Outcome::Reply {
                    rtt: Duration::from_millis(1),
                }
            } else {
                Outcome::Timeout
            },
            trace: probe_common::payload::TraceContext {
                trace_id,
                ..Default::default()
            },
            sent_ns: 1,
            ended_ns: 2,
            violation: None,
            events_lost: 0,
        }
    }

    #[test]
    fn failures_are_always_kept_and_successes_by_ratio() {
        assert!(keep(&journey(false, u64::MAX), 0.0));
        assert!(!keep(&journey(true, 0), 0.0));
        assert!(keep(&journey(true, u64::MAX), 1.0));
        assert!(keep(&journey(true, 0), 0.5));
        assert!(!keep(&journey(true, u64::MAX), 0.5));
        let kept = (0..10_000u64)
            .filter(|i| keep(&journey(true, i.wrapping_mul(0x9E37_79B9_7F4A_7C15)), 0.25))
            .count();
        assert!((2_200..2_800).contains(&kept), "{kept}");
    }
}
