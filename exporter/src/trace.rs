//! `tracepkt trace`: a few probes to one target, every hop printed, as the original tool did.

use std::io::Write;
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
    let from = match (&args.from, &args.from_pod) {
        (None, None) => None,
        (_, Some(pod)) => Some(
            Locator::new(pods::Roots::from_env(), pod.parse().map_err(anyhow::Error::msg)?)
                .netns()
                .map_err(anyhow::Error::msg)?,
        ),
        (Some(path), None) => {
            anyhow::ensure!(
                path.exists(),
                "network namespace not found: {} does not exist",
                path.display()
            );
            Some(path.clone())
        }
    };
    let dns: Option<crate::dns::DnsQuery> = args.dns.as_deref().map(|q| q.parse().expect("checked by the parser"));
    let (target, kind) = match (&dns, &args.target) {
        (Some(_), _) => {
            let server = match args.server {
                Some(s) => s,
                None => crate::dns::resolver_of(from.as_deref())
                    .map_err(|e| anyhow::anyhow!("no DNS server to ask: {e}"))?,
            };
            let kind = ProbeKind::Udp {
                port: server.port(),
                payload: None,
            };
            (server.ip(), kind)
        }
        (None, Some(host)) => {
            let target = prober::resolve(host, family).await?;
            let kind = match (args.tcp, args.udp) {
                (Some(port), _) => ProbeKind::Tcp { port },
                (_, Some(port)) => ProbeKind::Udp { port, payload: None },
                _ => ProbeKind::Icmp,
            };
            (target, kind)
        }
        (None, None) => unreachable!("clap requires a target without --dns"),
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
    let (engine, telemetry, _) = Engine::start(engine::Options {
        attach: AttachMode::Always,
        sizing: Sizing::for_targets(1),
        mechanisms: Mechanisms::only(mechanisms),
        foreign: None,
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
    let target_name = match (&dns, &args.target) {
        (Some(q), _) => format!("dns:{q}"),
        (None, t) => t.clone().unwrap_or_default(),
    };
    let info = TargetInfo {
        name: &target_name,
        address: &target_name,
        port: args.tcp.or(args.udp).or(dns.as_ref().map(|_| spec.port())),
        labels: &[],
    };

    let mut out = std::io::stdout().lock();
    // The namespace column widens to the longest name of the first journey (pod names run
    // long), and keeps that width after it so the rows stay under their header.
    let mut netns_width = None;
    let mut all_replied = true;
    let mut dns_ids = crate::dns::QueryIds::new();
    for seq in 0..args.count {
        if seq > 0 && args.interval > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(args.interval)).await;
        }
        let mut spec = spec.clone();
        let dns_id = dns.as_ref().map(|q| {
            let id = dns_ids.next();
            spec.kind = ProbeKind::Udp {
                port: spec.port(),
                payload: Some(q.encode(id).expect("checked by the parser")),
            };
            id
        });
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
        if let (Some(q), Some(id)) = (&dns, dns_id) {
            let (text, ok) = dns_summary(q, id, &journey);
            summary.push_str(&text);
            all_replied &= ok;
        }
        // The trace id is the probe's whether or not this run exports it: other nodes' tracepkts
        // (cross_node:) file the hops they saw under it.
        match tracer.as_ref().and_then(|t| t.record(&info, Some(target), &journey)) {
            Some(id) => summary.push_str(&format!("; trace {id}")),
            None if journey.sent_ns != 0 && journey.proto != probe_common::Proto::Tcp => summary.push_str(&format!(
                "; trace {} (not exported here; other nodes' hops are under it)",
                opentelemetry::trace::TraceId::from_bytes(journey.trace.trace_id)
            )),
            None => {}
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

/// What a DNS probe's answer said, for the summary line, and whether it is right.
fn dns_summary(q: &crate::dns::DnsQuery, id: u16, j: &Journey) -> (String, bool) {
    let Some(answer) = j.answer.as_deref() else {
        return (String::new(), false);
    };
    match crate::dns::DnsAnswer::decode(answer, id, q) {
        Ok(a) => {
            let ttl = a.ttl.map(|t| format!(", ttl {t}s")).unwrap_or_default();
            let text = format!("; {q}: {} [{}]{ttl}", a.rcode, a.values.join(", "));
            match a.violation(None) {
                None => (text, true),
                Some(v) => (format!("{text} ({v})"), false),
            }
        }
        Err(e) => (format!("; {q}: {e}"), false),
    }
}

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
