//! What `trace` prints: one row per hop (a table, or a JSON object per line) and one summary
//! line per probe.

use std::io::Write;

use probe_common::Kind;

use crate::journey::{Hop, HopDetail, Journey};
use crate::outcome::Outcome;
use crate::probes::{Asked, Words};

/// The namespace column's least width: an inode and a short name.
const NETNS_WIDTH: usize = 28;

/// Prints the hops of each journey, under one header.
pub(super) struct Table<W> {
    out: W,
    json: bool,
    /// The namespace column widens to the longest name of the first journey (pod names run
    /// long), and keeps that width after it so the rows stay under their header.
    netns_width: Option<usize>,
}

impl<W: Write> Table<W> {
    pub fn new(out: W, json: bool) -> Self {
        Table {
            out,
            json,
            netns_width: None,
        }
    }

    pub fn hops(&mut self, journey: &Journey) -> std::io::Result<()> {
        if !self.json && self.netns_width.is_none() {
            let width = journey.hops.iter().map(|h| netns_cell(h).chars().count()).max();
            let width = width.unwrap_or(0).max(NETNS_WIDTH);
            writeln!(self.out, "{}", header(width))?;
            self.netns_width = Some(width);
        }
        for hop in &journey.hops {
            if self.json {
                writeln!(self.out, "{}", serde_json::to_string(hop)?)?;
            } else {
                writeln!(self.out, "{}", row(hop, self.netns_width.unwrap_or(NETNS_WIDTH)))?;
            }
        }
        Ok(())
    }

    /// The probe's summary line: after the table, or on stderr beside the JSON.
    pub fn summary(&mut self, line: &str) -> std::io::Result<()> {
        if self.json {
            eprintln!("{line}");
        } else {
            writeln!(self.out, "{line}")?;
        }
        self.out.flush()
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

/// Probe `seq` of `count`: where it went, how it ended in its kind's words, and where a
/// failed one was last seen.
pub(super) fn summary(asked: &Asked, words: &Words, seq: u16, count: u16) -> String {
    let j = &asked.journey;
    let head = format!("probe {}/{} to {}:", seq + 1, count, words.to);
    let mut text = match &j.outcome {
        Outcome::Reply { rtt } => format!(
            "{head} {} in {:.3} ms, {} hops",
            words.answered,
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
    if let Some(note) = &words.note {
        text.push_str("; ");
        text.push_str(note);
    }
    if j.events_lost > 0 {
        text.push_str(&format!(
            "; incomplete: the kernel lost {} events (ring buffer full) meanwhile",
            j.events_lost
        ));
    }
    text
}
