//! What `/metrics` serves: one registry, built once, of the recorded groups (`metrics/`), the
//! kernel counters' collectors (`collectors/`) and, with traces on, the span counts; and the
//! life of a target in it, from its first probe to its removal by a reload.
//!
//! Probe outcomes and journeys are recorded into the groups as they complete. The kernel's
//! own counters (hops, verdicts, drops) are not mirrored: the collectors read them at scrape
//! time and label them by target through the tag each probe id carries.

use std::sync::Arc;

use opentelemetry::trace::TraceId;
use prometheus_client::registry::Registry;

use super::collectors::{Kernel, Labelling};
use super::labels::{TargetLabels, Targets};
use super::metrics::{ErrorReason, Groups, Rcode};
use super::otlp::SpanCounts;
use crate::journey::Journey;
use crate::outcome::Outcome;
use crate::remote::RemoteJourney;
use crate::telemetry::Telemetry;

pub struct Metrics {
    pub registry: Registry,
    groups: Groups,
    targets: Arc<Targets>,
    labelling: Arc<Labelling>,
    kernel: Arc<Kernel>,
}

impl Metrics {
    /// `spans`: what became of the spans, when journeys are sent as traces.
    pub fn new(telemetry: Telemetry, rtt_buckets: &[f64], spans: Option<&SpanCounts>) -> Self {
        let mut registry = Registry::default();
        if let Some(spans) = spans {
            spans.register(&mut registry);
        }
        let groups = Groups::new(rtt_buckets, &telemetry.report, &telemetry.release, &mut registry);
        let targets = Arc::new(Targets::default());
        let labelling = Arc::new(Labelling::new(telemetry.names.clone(), telemetry.drop_reasons.clone()));
        let kernel = Arc::new(Kernel::new(telemetry, labelling.clone(), targets.clone()));
        registry.register_collector(Box::new(kernel.clone()));
        Metrics {
            registry,
            groups,
            targets,
            labelling,
            kernel,
        }
    }

    /// Makes a target known under its probe tag; its counters start at zero.
    pub fn add_target(&self, tag: u32, t: TargetLabels) {
        self.targets.add(tag, t, |t| self.groups.add_target(t));
    }

    /// Makes a target's sizes known (`size:`): its success is then set per round, by
    /// [`Metrics::record_round`], and it gets the per-size series.
    pub fn set_sizes(&self, tag: u32, t: &TargetLabels, sizes: &[u16]) {
        self.targets
            .if_current(tag, t, || self.groups.sizes.set_sizes(t, sizes));
    }

    /// Removes every series of a target (after a reload dropped it or changed its labels).
    pub fn remove_target(&self, tag: u32, forget_kernel_counters: bool) {
        self.targets.remove(tag, |t| {
            self.groups.remove_target(t);
            if forget_kernel_counters {
                self.kernel.forget(tag);
            }
        });
    }

    pub fn probe_sent(&self, tag: u32, t: &TargetLabels) {
        self.targets.if_current(tag, t, || self.groups.probe.sent(t));
    }

    /// A DNS target's answer: its response code, whether it held what was expected, its TTL.
    pub fn dns_answer(&self, tag: u32, t: &TargetLabels, rcode: &str, ok: bool, ttl: Option<u32>) {
        self.targets
            .if_current(tag, t, || self.groups.dns.answer(t, Rcode::of(rcode), ok, ttl));
    }

    /// A DNS target whose question got no answer to check.
    pub fn dns_unanswered(&self, tag: u32, t: &TargetLabels) {
        self.targets.if_current(tag, t, || self.groups.dns.unanswered(t));
    }

    pub fn probe_error(&self, tag: u32, t: &TargetLabels, reason: ErrorReason) {
        self.targets.if_current(tag, t, || {
            self.groups.probe.error(t, reason);
            // A sized target's success is its round's.
            if !self.groups.sizes.is_sized(t) {
                self.groups.probe.success(t, false);
            }
        });
    }

    /// Records whether the last journey's path was as expected.
    pub fn path_expected(&self, tag: u32, t: &TargetLabels, ok: bool) {
        self.targets.if_current(tag, t, || self.groups.path.expected(t, ok));
    }

    pub fn reload(&self, ok: bool) {
        self.groups.process.reload(ok);
    }

    /// Counts the hops of another node's probe seen here.
    pub fn remote_journey(&self, j: &RemoteJourney) {
        self.groups.remote.journey(j);
    }

    /// Records a finished journey; `trace` is its trace id when the journey was sent as a
    /// trace, and becomes the RTT observation's exemplar. `size`: a sized probe's IP length.
    pub fn record(&self, tag: u32, t: &TargetLabels, j: &Journey, trace: Option<TraceId>, size: Option<u16>) {
        self.targets.if_current(tag, t, || {
            self.labelling.learn_interfaces(j);
            if size.is_none() {
                self.groups.probe.success(t, j.replied());
            }
            if let Outcome::Reply { rtt } = j.outcome {
                self.groups.probe.reply(t, rtt, trace);
            }
            self.groups.path.journey(t, j, size);
        });
    }

    /// Records a sized target's round: which sizes were answered (a size missing from
    /// `answered` was not). Its success is whether any was, and its path MTU the largest
    /// that was.
    pub fn record_round(&self, tag: u32, t: &TargetLabels, answered: &[(u16, bool)]) {
        self.targets.if_current(tag, t, || {
            let round = self.groups.sizes.round(t, answered);
            self.groups.probe.success(t, round.any);
            // Where the round's last failed probe was seen stays until a round fails none.
            if round.all {
                self.groups.path.round_passed(t);
            }
        });
    }
}
