//! `tracepkt trace`: a few probes to one target, every hop printed, as the original tool did.

use std::io::Write;
use std::time::Duration;

use anyhow::Context as _;

use crate::cli::TraceArgs;
use crate::journey::{Hop, HopKind, Journey, Outcome};
use crate::kernel::events::KernelEvent;
use crate::kernel::loader;
use crate::kernel::maps::{EventReader, KernelStats, ProbeRegistry};
use crate::names::Names;
use crate::prober::{self, Family, IdPool, Prober};

/// How long to keep reading after a probe ends: events of the last hops may still be on
/// their way through the ring buffer.
const GRACE: Duration = Duration::from_millis(25);

/// Runs the trace. `Ok(true)` when every probe got its reply.
pub async fn run(args: TraceArgs) -> anyhow::Result<bool> {
    let family = match (args.ipv4, args.ipv6) {
        (true, _) => Family::V4,
        (_, true) => Family::V6,
        _ => Family::Any,
    };
    let target = prober::resolve(&args.target, family).await?;
    let mut kernel = loader::load()?;
    let blind = kernel.blind_spots();
    if !blind.is_empty() {
        eprintln!(
            "tracepkt: not visible on this kernel ({}): {}",
            kernel.release,
            blind.join("; ")
        );
    }
    let mut registry = ProbeRegistry::take(&mut kernel)?;
    let mut reader = EventReader::take(&mut kernel)?;
    let stats = KernelStats::take(&mut kernel)?;
    let prober = Prober::new()?;
    let mut names = Names::new(kernel.drop_reasons.clone());
    let not_specified = kernel.not_specified_reason;

    let id = IdPool::new().take().context("no echo id available")?;
    registry.register(id, 0)?;

    let mut out = std::io::stdout().lock();
    if !args.json {
        writeln!(out, "{}", header())?;
    }
    let mut all_replied = true;
    let mut pending: Vec<KernelEvent> = Vec::new();
    for seq in 0..args.count {
        if seq > 0 && args.interval > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(args.interval)).await;
        }
        let outcome = prober
            .probe(target, id, seq, Duration::from_secs_f64(args.timeout))
            .await;
        tokio::time::sleep(GRACE).await;
        reader.drain(&mut pending);
        let (mine, rest): (Vec<_>, Vec<_>) = pending.drain(..).partition(|e| e.id == id && e.seq == seq);
        pending = rest;
        let journey = Journey::assemble(id, seq, mine, outcome, &mut names, not_specified);
        for hop in &journey.hops {
            if args.json {
                writeln!(out, "{}", serde_json::to_string(hop)?)?;
            } else {
                writeln!(out, "{}", row(hop))?;
            }
        }
        let summary = summary(&journey, seq, args.count, target);
        if args.json {
            eprintln!("{summary}");
        } else {
            writeln!(out, "{summary}")?;
        }
        out.flush()?;
        all_replied &= journey.replied();
    }
    registry.unregister(id);
    let lost = stats.events_lost();
    if lost > 0 || reader.undecodable > 0 {
        eprintln!(
            "tracepkt: {lost} kernel events did not fit in the ring buffer and {} could not be decoded: hops may be missing",
            reader.undecodable
        );
    }
    Ok(all_replied)
}

fn header() -> String {
    format!(
        "{:<28} {:<16} {:<3} {:<8} {:<34} {}",
        "NETWORK NS", "INTERFACE", "IO", "TYPE", "ADDRESSES", "NETFILTER / DROP"
    )
}

fn netns_cell(hop: &Hop) -> String {
    match &hop.netns_name {
        Some(n) => format!("[{:>10}] {n}", hop.netns),
        None => format!("[{:>10}]", hop.netns),
    }
}

pub fn row(hop: &Hop) -> String {
    let ifname = if hop.ifname.is_empty() {
        "-"
    } else {
        hop.ifname.as_str()
    };
    let io = hop.io.unwrap_or(match hop.kind {
        HopKind::Netfilter => "nf",
        _ => "-",
    });
    format!(
        "{:<28} {:<16} {:<3} {:<8} {:<34} {}",
        netns_cell(hop),
        ifname,
        io,
        hop.direction.as_str(),
        format!("{} -> {}", hop.saddr, hop.daddr),
        hop.verdict_text()
    )
    .trim_end()
    .to_string()
}

fn summary(j: &Journey, seq: u16, count: u16, target: std::net::IpAddr) -> String {
    let head = format!("probe {}/{} to {target} (id {} seq {seq}):", seq + 1, count, j.probe);
    match &j.outcome {
        Outcome::Reply { rtt } => format!(
            "{head} reply in {:.3} ms, {} hops",
            rtt.as_secs_f64() * 1e3,
            j.hops.len()
        ),
        other => {
            let why = match other {
                Outcome::SendError(e) => format!("not sent: {e}"),
                Outcome::IcmpError(e) => format!("no reply: {e}"),
                _ => "no reply".to_string(),
            };
            match j.last_hop() {
                Some(h) => format!(
                    "{head} {why}; last seen in netns {}{} on {} ({})",
                    h.netns,
                    h.netns_name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default(),
                    if h.ifname.is_empty() { "-" } else { &h.ifname },
                    match h.kind {
                        HopKind::Interface => format!("interface, {}", h.io.unwrap_or("?")),
                        _ => h.verdict_text(),
                    }
                ),
                None => format!("{head} {why}; never seen by the kernel hooks"),
            }
        }
    }
}
