//! What each target's last journeys looked like, kept for the built-in page and its JSON API.
//!
//! Journeys are stored as views: plain data in the shape the API documents
//! (`docs/api/*.schema.json`), so the HTML page and the JSON endpoints show the same thing.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::TraceId;
use serde::Serialize;

use crate::journey::{Hop, HopDetail, Journey};
use crate::outcome::{Ending, Outcome};

/// Journeys kept per target: the page's history and the success ratio's window.
pub const KEEP: usize = 20;

/// A target as the page shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TargetView {
    pub name: String,
    pub address: String,
    pub protocol: &'static str,
    pub labels: BTreeMap<String, String>,
    pub interval_seconds: f64,
}

/// One hop of a journey, as `tracepkt trace` prints it, with its share of the journey's time.
#[derive(Debug, Clone, Serialize)]
pub struct HopView {
    pub index: usize,
    pub direction: &'static str,
    pub kind: &'static str,
    pub netns: u32,
    pub netns_name: Option<String>,
    pub interface: String,
    /// TCP and UDP: the ports as they are at this hop.
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// `tx`, `rx`, `nf` (a netfilter chain) or `-` (a drop).
    pub io: &'static str,
    pub saddr: String,
    pub daddr: String,
    /// The netfilter verdict (`filter/input:ACCEPT`) or the drop (`DROP reason`); empty for an
    /// interface crossing.
    pub verdict: String,
    /// Drop rows: the function that freed the packet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Time from the journey's first hop to this one.
    pub offset_seconds: f64,
    /// Time from this hop to the next; 0 for the last.
    pub latency_seconds: f64,
    /// Where the packet ended without reaching its destination (`Hop::is_fatal`).
    #[serde(skip)]
    pub fatal: bool,
}

/// Where a failed probe was last seen.
#[derive(Debug, Clone, Serialize)]
pub struct LastSeen {
    pub netns: u32,
    pub netns_name: Option<String>,
    pub interface: String,
    pub kind: &'static str,
    /// The drop reason or netfilter verdict there; empty for an interface crossing.
    pub verdict: String,
}

/// One journey.
#[derive(Debug, Clone, Serialize)]
pub struct JourneyView {
    pub seq: u16,
    /// When it ended, Unix seconds.
    pub at_unix: f64,
    pub outcome: Ending,
    pub detail: Option<String>,
    pub rtt_seconds: Option<f64>,
    /// Set when the journey was sent as a trace.
    pub trace_id: Option<String>,
    /// The first expectation of the target's path this journey broke.
    pub expect_violation: Option<String>,
    /// Events the kernel lost (ring buffer full) while the probe was out: hops may be missing.
    pub events_lost: u64,
    /// Its path differs from the previous journey's.
    pub path_changed: bool,
    pub last_seen: Option<LastSeen>,
    pub hops: Vec<HopView>,
    #[serde(skip)]
    signature: Option<u64>,
}

impl JourneyView {
    pub fn replied(&self) -> bool {
        self.outcome == Ending::Replied
    }

    /// The width of a hop's time bar, in percent of the journey's longest hop.
    pub fn bar(&self, hop: &HopView) -> String {
        let longest = self.hops.iter().map(|h| h.latency_seconds).fold(0.0, f64::max);
        let pct = if longest > 0.0 {
            100.0 * hop.latency_seconds / longest
        } else {
            0.0
        };
        format!("{pct:.1}")
    }
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn hop_view(i: usize, h: &Hop, first_ts: u64, next_ts: Option<u64>) -> HopView {
    let io = match &h.detail {
        HopDetail::Interface { io } => io.as_str(),
        HopDetail::Netfilter { .. } => "nf",
        HopDetail::Drop { .. } => "-",
    };
    HopView {
        index: i,
        direction: h.direction.as_str(),
        kind: h.kind().as_str(),
        netns: h.netns,
        netns_name: h.netns_name.clone(),
        interface: h.ifname.clone(),
        sport: h.sport,
        dport: h.dport,
        io,
        saddr: h.saddr.to_string(),
        daddr: h.daddr.to_string(),
        verdict: h.verdict_text(),
        location: match &h.detail {
            HopDetail::Drop { location, .. } => Some(location.clone()),
            _ => None,
        },
        offset_seconds: h.ts_ns.saturating_sub(first_ts) as f64 / 1e9,
        latency_seconds: next_ts.map(|n| n.saturating_sub(h.ts_ns) as f64 / 1e9).unwrap_or(0.0),
        fatal: h.is_fatal(),
    }
}

impl JourneyView {
    pub fn of(j: &Journey, trace: Option<TraceId>) -> Self {
        let (outcome, detail) = j.ending();
        let first = j.hops.first().map(|h| h.ts_ns).unwrap_or(0);
        let hops = j
            .hops
            .iter()
            .enumerate()
            .map(|(i, h)| hop_view(i, h, first, j.hops.get(i + 1).map(|n| n.ts_ns)))
            .collect();
        let last_seen = j.last_hop().filter(|_| !j.replied()).map(|h| LastSeen {
            netns: h.netns,
            netns_name: h.netns_name.clone(),
            interface: h.ifname.clone(),
            kind: h.kind().as_str(),
            verdict: h.verdict_text(),
        });
        JourneyView {
            seq: j.seq,
            at_unix: now_unix(),
            outcome,
            detail,
            rtt_seconds: match j.outcome {
                Outcome::Reply { rtt } => Some(rtt.as_secs_f64()),
                _ => None,
            },
            trace_id: trace.map(|t| t.to_string()),
            expect_violation: j.violation.clone(),
            events_lost: j.events_lost,
            path_changed: false,
            last_seen,
            hops,
            signature: Some(j.signature()),
        }
    }

    /// A probe that could not be sent because its target did not resolve.
    pub fn unresolved(reason: String) -> Self {
        Self::not_sent(Ending::ResolveError, reason)
    }

    /// A probe that was not sent: `outcome` says why, `reason` in the user's words.
    pub fn not_sent(outcome: Ending, reason: String) -> Self {
        JourneyView {
            seq: 0,
            at_unix: now_unix(),
            outcome,
            detail: Some(reason),
            rtt_seconds: None,
            trace_id: None,
            expect_violation: None,
            events_lost: 0,
            path_changed: false,
            last_seen: None,
            hops: Vec::new(),
            signature: None,
        }
    }
}

/// A target's summary: the row of the page and of `/api/targets`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    #[serde(flatten)]
    pub target: TargetView,
    /// `None` before the first journey.
    pub up: Option<bool>,
    pub last_rtt_seconds: Option<f64>,
    /// Answered share of the journeys kept; `None` before the first.
    pub success_ratio: Option<f64>,
    /// How many journeys are kept, at most `window`.
    pub kept: usize,
    pub window: usize,
    pub last: Option<JourneyView>,
}

struct Entry {
    target: TargetView,
    journeys: VecDeque<JourneyView>,
}

/// The last journeys of every target.
#[derive(Default)]
pub struct Board {
    targets: RwLock<HashMap<String, Entry>>,
    /// Where a trace id links to, `{trace_id}` replaced: from `otlp.trace_url`.
    pub trace_url: Option<String>,
}

impl Board {
    pub fn new(trace_url: Option<String>) -> Self {
        Board {
            targets: RwLock::default(),
            trace_url,
        }
    }

    /// Adds a target, or updates its settings while keeping its journeys.
    pub fn set_target(&self, t: TargetView) {
        let mut all = self.targets.write().unwrap();
        match all.get_mut(&t.name) {
            Some(e) => e.target = t,
            None => {
                all.insert(
                    t.name.clone(),
                    Entry {
                        target: t,
                        journeys: VecDeque::with_capacity(KEEP),
                    },
                );
            }
        }
    }

    pub fn remove_target(&self, name: &str) {
        self.targets.write().unwrap().remove(name);
    }

    pub fn record(&self, name: &str, mut view: JourneyView) {
        let mut all = self.targets.write().unwrap();
        let Some(e) = all.get_mut(name) else {
            return;
        };
        let previous = e.journeys.back().and_then(|p| p.signature);
        view.path_changed = matches!((previous, view.signature), (Some(a), Some(b)) if a != b);
        if e.journeys.len() == KEEP {
            e.journeys.pop_front();
        }
        e.journeys.push_back(view);
    }

    /// Every target, by name.
    pub fn summaries(&self) -> Vec<Summary> {
        let all = self.targets.read().unwrap();
        let mut out: Vec<Summary> = all.values().map(summary).collect();
        out.sort_by(|a, b| a.target.name.cmp(&b.target.name));
        out
    }

    /// One target and its journeys, newest first.
    pub fn target(&self, name: &str) -> Option<(Summary, Vec<JourneyView>)> {
        let all = self.targets.read().unwrap();
        let e = all.get(name)?;
        Some((summary(e), e.journeys.iter().rev().cloned().collect()))
    }

    pub fn trace_link(&self, trace_id: &str) -> Option<String> {
        self.trace_url.as_ref().map(|u| u.replace("{trace_id}", trace_id))
    }
}

fn summary(e: &Entry) -> Summary {
    let last = e.journeys.back().cloned();
    let n = e.journeys.len();
    let ok = e.journeys.iter().filter(|j| j.replied()).count();
    Summary {
        target: e.target.clone(),
        up: last.as_ref().map(JourneyView::replied),
        last_rtt_seconds: last.as_ref().and_then(|j| j.rtt_seconds),
        success_ratio: (n > 0).then(|| ok as f64 / n as f64),
        kept: n,
        window: KEEP,
        last,
    }
}
