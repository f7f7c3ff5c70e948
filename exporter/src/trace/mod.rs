//! `tracepkt trace`: a few probes to one target, every hop printed, as the original tool did.
//!
//! The probe goes through its kind as `serve`'s do; this front-end prints it instead.

mod table;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use probe_common::{Mechanism, Proto};

use self::table::Table;
use crate::cli::TraceArgs;
use crate::config::{AttachMode, Otlp, OtlpProtocol};
use crate::engine::{self, Engine};
use crate::export::otlp::{self, SpanCounts, TargetInfo, Tracer};
use crate::kernel::loader::{Mechanisms, Sizing};
use crate::probes::{self, IpVersion, Kit, Probe, Shot, Start};
use crate::telemetry::Telemetry;

/// Runs the trace. `Ok(true)` when every probe got its reply (and, for a DNS probe, the right
/// answer).
pub async fn run(args: TraceArgs, mechanisms: Vec<Mechanism>) -> anyhow::Result<bool> {
    let from = origin(&args)?;
    let target = Target::of(&args);
    let addr = target
        .probe
        .resolve(&target.address, target.family, from.as_deref())
        .await?;
    // A trace lives for a few probes: gating the programs per probe would save nothing, and
    // would patch kernel text (tracepoint static keys) for every probe.
    let (engine, telemetry, _) = Engine::start(engine::Options {
        attach: AttachMode::Always,
        sizing: Sizing::for_targets(1),
        mechanisms: Mechanisms::only(mechanisms),
        foreign: None,
    })?;
    let kit = Kit::new(engine)?;
    let blind = telemetry.blind_spots();
    if !blind.is_empty() {
        eprintln!(
            "tracepkt: not visible on this kernel ({}): {}",
            telemetry.release,
            blind.join("; ")
        );
    }
    let span_counts = SpanCounts::default();
    let tracer = tracer(&args, &span_counts).await?;
    let info = TargetInfo {
        name: &target.name,
        address: &target.name,
        port: target.probe.port(),
        labels: &[],
    };
    let lease = kit.engine().lease(0).context("no echo id available")?;
    let mut table = Table::new(std::io::stdout().lock(), args.json);
    let mut all_right = true;
    for seq in 0..args.count {
        if seq > 0 && args.interval > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(args.interval)).await;
        }
        let shot = Shot {
            lease: &lease,
            seq,
            addr,
            from: from.as_deref(),
            timeout: Duration::from_secs_f64(args.timeout),
            index: 0,
        };
        let asked = target.probe.ask(&kit, shot).await;
        table.hops(&asked.journey)?;
        let mut line = table::summary(&asked, &target.probe.words(&asked), seq, args.count);
        if let Some(reading) = &asked.reading {
            let (text, right) = reading.summary();
            if let Some(text) = text {
                line.push_str(&format!("; {text}"));
            }
            all_right &= right;
        }
        line.push_str(&trace_id(tracer.as_deref(), &info, &asked));
        table.summary(&line)?;
        all_right &= asked.journey.replied();
    }
    drop(lease);
    finish(kit.engine(), tracer.as_deref(), &span_counts, &telemetry).await;
    Ok(all_right)
}

/// The namespace the probes start in, checked to exist.
fn origin(args: &TraceArgs) -> anyhow::Result<Option<PathBuf>> {
    match (&args.from, &args.from_pod) {
        (None, None) => Ok(None),
        (_, Some(pod)) => Start::pod(pod.clone()).locate().map_err(anyhow::Error::msg),
        (Some(path), None) => {
            anyhow::ensure!(
                path.exists(),
                "network namespace not found: {} does not exist",
                path.display()
            );
            Ok(Some(path.clone()))
        }
    }
}

/// What the command line asks to probe.
struct Target {
    probe: Probe,
    /// As the spans name the target: the address or host name given, or the DNS question.
    name: String,
    address: String,
    family: IpVersion,
}

impl Target {
    fn of(args: &TraceArgs) -> Target {
        let address = args.target.clone().unwrap_or_default();
        let family = match (args.ipv4, args.ipv6) {
            (true, _) => IpVersion::V4,
            (_, true) => IpVersion::V6,
            _ => IpVersion::Any,
        };
        if let Some(query) = &args.dns {
            // -4 and -6 choose among a host name's addresses; the DNS server is as given.
            return Target {
                name: format!("dns:{query}"),
                probe: probes::dns::Dns {
                    query: query.clone(),
                    server: args.server,
                    answer: None,
                }
                .into(),
                address,
                family: IpVersion::Any,
            };
        }
        let probe = match (args.tcp, args.udp) {
            (Some(port), _) => probes::Tcp { port }.into(),
            (_, Some(port)) => probes::Udp { port, payload: None }.into(),
            _ if args.size.is_some() || args.df => probes::SizedIcmp {
                sizes: args.size.into_iter().collect(),
                dont_fragment: args.df,
            }
            .into(),
            _ => probes::Icmp.into(),
        };
        Target {
            probe,
            name: address.clone(),
            address,
            family,
        }
    }
}

/// The span exporter `--otlp` asks for.
async fn tracer(args: &TraceArgs, counts: &SpanCounts) -> anyhow::Result<Option<std::sync::Arc<Tracer>>> {
    let Some(endpoint) = &args.otlp else {
        return Ok(None);
    };
    let file = Otlp {
        endpoint: Some(endpoint.clone()),
        protocol: Some(if args.otlp_protocol == "http/protobuf" {
            OtlpProtocol::HttpProtobuf
        } else {
            OtlpProtocol::Grpc
        }),
        timeout: None,
        service_name: None,
        sample_ratio: 1.0,
        trace_url: None,
    };
    let settings =
        otlp::Settings::resolve(Some(&file), |k| std::env::var(k).ok()).map_err(|e| anyhow::anyhow!("{e}"))?;
    otlp::start(settings, counts).await
}

/// The end of the summary line: the probe's trace id, whether or not this run exports it:
/// other nodes' tracepkts (cross_node:) file the hops they saw under it.
fn trace_id(tracer: Option<&Tracer>, info: &TargetInfo<'_>, asked: &probes::Asked) -> String {
    let j = &asked.journey;
    match tracer.and_then(|t| t.record(info, Some(asked.addr), j)) {
        Some(id) => format!("; trace {id}"),
        None if j.sent_ns != 0 && j.proto != Proto::Tcp => format!(
            "; trace {} (not exported here; other nodes' hops are under it)",
            opentelemetry::trace::TraceId::from_bytes(j.trace.trace_id)
        ),
        None => String::new(),
    }
}

/// Detaches the programs, lets the spans drain, and says what could not be seen or sent.
async fn finish(engine: &Engine, tracer: Option<&Tracer>, span_counts: &SpanCounts, telemetry: &Telemetry) {
    engine.shutdown();
    if let Some(t) = tracer {
        t.shutdown().await;
        let (sent, dropped) = span_counts.totals();
        if dropped > 0 {
            eprintln!(
                "tracepkt: {dropped} spans could not be sent to {} ({sent} were)",
                t.endpoint()
            );
        }
    }
    let lost = telemetry.stats.events_lost().unwrap_or(0);
    let undecodable = telemetry.counts.undecodable.load(Ordering::Relaxed);
    if lost > 0 || undecodable > 0 {
        eprintln!(
            "tracepkt: {lost} kernel events did not fit in the ring buffer and {undecodable} could not be decoded: hops may be missing"
        );
    }
}
