//! `tracepkt trace`: a few probes to one target, every hop printed, as the original tool did.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use probe_common::{Kind, Mechanism};

use crate::cli::TraceArgs;
use crate::config::{AttachMode, Otlp, OtlpProtocol};
use crate::engine::{self, Engine, ProbeKind, Spec};
use crate::export::otlp::{self, SpanCounts, TargetInfo};
use crate::journey::{Hop, HopDetail, Journey};
use crate::kernel::loader::{Mechanisms, Sizing};
use crate::pods::{self, Locator};
use crate::prober::{self, IpVersion, Outcome};

/// Runs the trace. `Ok(true)` when every probe got its reply.
pub async fn run(args: TraceArgs, mechanisms: Vec<Mechanism>) -> anyhow::Result<bool> {
    let family = match (args.ipv4, args.ipv6) {
        (true, _) => IpVersion::V4,
        (_, true) => IpVersion::V6,
        _ => IpVersion::Any,
    };
    let target = prober::resolve(&args.target, family).await?;
    let kind = match (args.tcp, args.udp) {
        (Some(port), _) => ProbeKind::Tcp { port },
        (_, Some(port)) => ProbeKind::Udp { port, payload: None },
        _ => ProbeKind::Icmp,
    };
    let from = match (&args.from, &args.from_pod) {
        (None, None) => None,
        (_, Some(pod)) => Some(
            Locator::new(pods::Roots::from_env(), pod.parse().map_err(anyhow::Error::msg)?)
                .netns()
                .map_err(anyhow::Error::msg)?,
        ),
        (Some(ns), None) => {
            let path = if ns.starts_with('/') {
                PathBuf::from(ns)
            } else {
                Path::new("/run/netns").join(ns)
            };
            anyhow::ensure!(
                path.exists(),
                "network namespace {ns:?} not found ({} does not exist)",
                path.display()
            );
            Some(path)
        }
    };
    let spec = Spec {
        addr: target,
        kind,
        size: args.size,
        dont_fragment: args.df,
        from,
        timeout: Duration::from_secs_f64(args.timeout),
    };
    // A trace lives for a few probes: gating the programs per probe would save nothing, and
    // would patch kernel text (tracepoint static keys) for every probe.
    let (engine, telemetry) = Engine::start(engine::Options {
        attach: AttachMode::Always,
        sizing: Sizing::for_targets(1),
        mechanisms: Mechanisms::only(mechanisms),
    })?;
    let blind = telemetry.blind_spots();
    if !blind.is_empty() {
        eprintln!(
            "tracepkt: not visible on this kernel ({}): {}",
            telemetry.release,
            blind.join("; ")
        );
    }
    let lease = engine.lease(0).context("no echo id available")?;
    let span_counts = SpanCounts::default();
    let tracer = match &args.otlp {
        None => None,
        Some(endpoint) => {
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
            otlp::start(settings, &span_counts).await?
        }
    };
    let info = TargetInfo {
        name: &args.target,
        address: &args.target,
        port: args.tcp.or(args.udp),
        labels: &[],
    };

    let mut out = std::io::stdout().lock();
    // The namespace column widens to the longest name of the first journey (pod names run
    // long), and keeps that width after it so the rows stay under their header.
    let mut netns_width = None;
    let mut all_replied = true;
    for seq in 0..args.count {
        if seq > 0 && args.interval > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(args.interval)).await;
        }
        let journey = engine.probe(&lease, seq, &spec).await;
        if !args.json && netns_width.is_none() {
            let width = journey.hops.iter().map(|h| netns_cell(h).chars().count()).max();
            let width = width.unwrap_or(0).max(NETNS_WIDTH);
            writeln!(out, "{}", header(width))?;
            netns_width = Some(width);
        }
        for hop in &journey.hops {
            if args.json {
                writeln!(out, "{}", serde_json::to_string(hop)?)?;
            } else {
                writeln!(out, "{}", row(hop, netns_width.unwrap_or(NETNS_WIDTH)))?;
            }
        }
        let mut summary = summary(&journey, seq, args.count, &spec);
        if let Some(id) = tracer.as_ref().and_then(|t| t.record(&info, Some(target), &journey)) {
            summary.push_str(&format!("; trace {id}"));
        }
        if args.json {
            eprintln!("{summary}");
        } else {
            writeln!(out, "{summary}")?;
        }
        out.flush()?;
        all_replied &= journey.replied();
    }
    drop(lease);
    engine.shutdown();
    if let Some(t) = &tracer {
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
    Ok(all_replied)
}

/// The namespace column's least width: an inode and a short name.
const NETNS_WIDTH: usize = 28;

fn header(netns_width: usize) -> String {
    format!(
        "{:<netns_width$} {:<16} {:<3} {:<8} {:<34} {}",
        "NETWORK NS", "INTERFACE", "IO", "TYPE", "ADDRESSES", "NETFILTER / DROP"
    )
}

fn netns_cell(hop: &Hop) -> String {
    match &hop.netns_name {
        Some(n) => format!("[{:>10}] {n}", hop.netns),
        None => format!("[{:>10}]", hop.netns),
    }
}

fn row(hop: &Hop, netns_width: usize) -> String {
    let ifname = if hop.ifname.is_empty() {
        "-"
    } else {
        hop.ifname.as_str()
    };
    let io = match &hop.detail {
        HopDetail::Interface { io } => io.as_str(),
        HopDetail::Netfilter { .. } => "nf",
        HopDetail::Drop { .. } => "-",
    };
    format!(
        "{:<netns_width$} {:<16} {:<3} {:<8} {:<34} {}",
        netns_cell(hop),
        ifname,
        io,
        hop.direction.as_str(),
        hop.addresses(),
        hop.verdict_text()
    )
    .trim_end()
    .to_string()
}

fn summary(j: &Journey, seq: u16, count: u16, spec: &Spec) -> String {
    let head = match spec.kind {
        ProbeKind::Icmp => format!(
            "probe {}/{} to {} (id {} seq {seq}{}{}):",
            seq + 1,
            count,
            spec.addr,
            j.probe,
            spec.size.map(|s| format!(", {s} bytes")).unwrap_or_default(),
            if spec.dont_fragment { ", don't fragment" } else { "" }
        ),
        ProbeKind::Tcp { port } | ProbeKind::Udp { port, .. } => format!(
            "probe {}/{} to {} over {} (from port {}):",
            seq + 1,
            count,
            std::net::SocketAddr::new(spec.addr, port),
            j.proto.as_str(),
            j.probe
        ),
    };
    let answer = match spec.kind {
        ProbeKind::Icmp => "reply",
        ProbeKind::Tcp { .. } => "connected",
        ProbeKind::Udp { .. } => "answered",
    };
    let text = match &j.outcome {
        Outcome::Reply { rtt } => format!(
            "{head} {answer} in {:.3} ms, {} hops",
            rtt.as_secs_f64() * 1e3,
            j.hops.len()
        ),
        other => {
            let why = match other {
                Outcome::SendError(e) => format!("not sent: {e}"),
                Outcome::IcmpError(e) => format!("no reply: {e}"),
                Outcome::Refused => "refused".to_string(),
                Outcome::Unreachable(e) => format!("unreachable: {e}"),
                _ => "no reply".to_string(),
            };
            match j.last_hop() {
                Some(h) => format!(
                    "{head} {why}; last seen in netns {}{} on {} ({})",
                    h.netns,
                    h.netns_name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default(),
                    if h.ifname.is_empty() { "-" } else { &h.ifname },
                    match &h.detail {
                        HopDetail::Interface { io } => format!("{}, {}", Kind::Interface.as_str(), io.as_str()),
                        _ => h.verdict_text(),
                    }
                ),
                None => format!("{head} {why}; never seen by the kernel hooks"),
            }
        }
    };
    // Fragments carry no probe header the kernel programs could know them by.
    let text = if spec.size.is_some() && j.hops.is_empty() {
        format!("{text}; no hop seen: a probe sent in fragments (without --df, beyond a path MTU) is not followed")
    } else {
        text
    };
    if j.events_lost > 0 {
        format!(
            "{text}; incomplete: the kernel lost {} events (ring buffer full) meanwhile",
            j.events_lost
        )
    } else {
        text
    }
}
