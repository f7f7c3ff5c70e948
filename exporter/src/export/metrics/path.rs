//! The path of a target's journeys: `tracepkt_journey_stage_seconds`, `tracepkt_path_hops`,
//! `tracepkt_path_changes_total`, `tracepkt_last_hop_info`, `tracepkt_path_expected`,
//! `tracepkt_journeys_incomplete_total`.
//!
//! The time a journey spent in each of its stages is a gauge of the last journey per bounded
//! stage (as probers conventionally export phase durations), not a histogram per hop pair:
//! the per-hop detail is in `tracepkt trace` and the spans.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use probe_common::Kind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Unit;

use super::{Group, Name, Named, Registrar, TargetFamily};
use crate::export::labels::TargetLabels;
use crate::journey::{Journey, Stage};

impl Name for Stage {
    fn name(self) -> &'static str {
        self.as_str()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ByStage {
    stage: Named<Stage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LastHop {
    netns: String,
    interface: String,
    kind: Named<Kind>,
}

/// What the group remembers of a target's journeys.
#[derive(Default)]
struct Seen {
    /// The last path, per probe size (`None`: an unsized target's probe): a sweep's sizes
    /// take different paths when some die on the way, which is no path change.
    signatures: HashMap<Option<u16>, u64>,
    last_hop: Option<(TargetLabels, LastHop)>,
}

#[derive(Default)]
pub struct Path {
    stages: TargetFamily<(TargetLabels, ByStage), Gauge<f64, AtomicU64>>,
    changes: TargetFamily<TargetLabels, Counter>,
    incomplete: TargetFamily<TargetLabels, Counter>,
    hops: TargetFamily<TargetLabels, Gauge>,
    last_hop: TargetFamily<(TargetLabels, LastHop), Gauge>,
    expected: TargetFamily<TargetLabels, Gauge>,
    /// Target name → what its journeys showed.
    seen: Mutex<HashMap<String, Seen>>,
}

impl Path {
    /// Records a finished journey. `size`: a sized probe's IP length.
    pub fn journey(&self, t: &TargetLabels, j: &Journey, size: Option<u16>) {
        self.hops.get_or_create(t).set(j.hops.len() as i64);
        if j.events_lost > 0 {
            self.incomplete.get_or_create(t).inc();
        }
        self.stages(t, j);
        let mut seen = self.seen.lock().unwrap();
        let s = seen.entry(t.target.clone()).or_default();
        let sig = j.signature();
        if s.signatures.insert(size, sig).is_some_and(|old| old != sig) {
            self.changes.get_or_create(t).inc();
        }
        let replied = j.replied();
        // A sized probe's reply says nothing of the round's other sizes: `round_passed` clears.
        if (size.is_none() || !replied)
            && let Some(old) = s.last_hop.take()
        {
            self.last_hop.remove(&old);
        }
        if !replied && let Some(h) = j.last_hop() {
            let l = LastHop {
                netns: h.netns_label(),
                interface: h.ifname.clone(),
                kind: Named(h.kind()),
            };
            let l = (t.clone(), l);
            self.last_hop.get_or_create(&l).set(1);
            s.last_hop = Some(l);
        }
    }

    fn stages(&self, t: &TargetLabels, j: &Journey) {
        let seen = j.stages();
        for stage in Stage::ALL {
            let l = (t.clone(), ByStage { stage: Named(stage) });
            match seen.iter().find(|(s, _)| *s == stage) {
                Some((_, d)) => {
                    self.stages.get_or_create(&l).set(d.as_secs_f64());
                }
                // A stage the last journey never reached has no current value.
                None => self.stages.remove(&l),
            }
        }
    }

    /// A sized target's round in which every size was answered: where its last failed probe
    /// was seen is no longer news.
    pub fn round_passed(&self, t: &TargetLabels) {
        if let Some(old) = self
            .seen
            .lock()
            .unwrap()
            .get_mut(&t.target)
            .and_then(|s| s.last_hop.take())
        {
            self.last_hop.remove(&old);
        }
    }

    /// Whether the last journey's path was as expected.
    pub fn expected(&self, t: &TargetLabels, ok: bool) {
        self.expected.get_or_create(t).set(i64::from(ok));
    }
}

impl Group for Path {
    fn register(&self, r: &mut Registrar) {
        r.per_target(
            "tracepkt_journey_stage",
            "Time the last journey spent in each stage: request (first to last hop out), turnaround (at the target), reply (first to last hop back)",
            Some(Unit::Seconds),
            &self.stages,
        );
        r.per_target(
            "tracepkt_path_changes",
            "Journeys whose path differed from the previous journey's",
            None,
            &self.changes,
        );
        r.per_target(
            "tracepkt_journeys_incomplete",
            "Journeys during which the kernel lost events to a full ring buffer: hops may be missing",
            None,
            &self.incomplete,
        );
        r.per_target(
            "tracepkt_path_hops",
            "Hops in the last journey (interfaces, verdicts, drops)",
            None,
            &self.hops,
        );
        r.per_target(
            "tracepkt_last_hop_info",
            "Where the last unanswered probe was last seen (1); absent after a reply",
            None,
            &self.last_hop,
        );
        r.per_target(
            "tracepkt_path_expected",
            "Whether the last journey's path was as the target's expect: says (1) or not (0); only for targets with expect:",
            None,
            &self.expected,
        );
    }

    fn add_target(&self, t: &TargetLabels) {
        self.changes.get_or_create(t);
        self.incomplete.get_or_create(t);
    }

    fn forget_target(&self, t: &TargetLabels) {
        self.seen.lock().unwrap().remove(&t.target);
    }
}
