//! The kernel side's health, from the `STATS` map and the engine's own counts: events lost
//! or unmatched, anomalies, and how long the programs were attached.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;

use super::{Collect, CollectError, Labelling, counter_family};
use crate::export::labels::TargetLabels;
use crate::kernel::maps::KernelStats;
use crate::telemetry::{AttachClock, EngineCounts};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AnomalyLabels {
    kind: &'static str,
}

pub struct Stats {
    stats: Arc<KernelStats>,
    counts: Arc<EngineCounts>,
    clock: Arc<AttachClock>,
}

impl Stats {
    pub fn new(stats: Arc<KernelStats>, counts: Arc<EngineCounts>, clock: Arc<AttachClock>) -> Self {
        Stats { stats, counts, clock }
    }
}

fn counter<T: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    c: T,
) -> Result<(), std::fmt::Error> {
    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
}

impl Collect for Stats {
    fn name(&self) -> &'static str {
        "stats"
    }

    fn collect(
        &self,
        _labels: &Labelling,
        _targets: &HashMap<u32, TargetLabels>,
        encoder: &mut DescriptorEncoder,
    ) -> Result<(), CollectError> {
        let lost = self.stats.events_lost()?;
        let anomalies = self.stats.anomalies()?;
        counter(
            encoder,
            "tracepkt_events_lost",
            "Kernel events that did not fit in the ring buffer (hops missing from journeys)",
            ConstCounter::new(lost),
        )?;
        counter(
            encoder,
            "tracepkt_foreign_events_over_budget",
            "Events of other nodes' probes the kernel programs did not report, past cross_node.budget",
            ConstCounter::new(self.stats.foreign_over_budget()?),
        )?;
        counter(
            encoder,
            "tracepkt_events_unmatched",
            "Kernel events that arrived after their probe's journey was closed",
            ConstCounter::new(self.counts.unmatched.load(Ordering::Relaxed)),
        )?;
        counter_family(
            encoder,
            "tracepkt_kernel_anomalies",
            "Things that went wrong between the kernel programs and tracepkt, by kind (see the README)",
            anomalies
                .into_iter()
                .chain([
                    ("undecodable_event", self.counts.undecodable.load(Ordering::Relaxed)),
                    ("foreign_trace_event", self.counts.foreign_trace.load(Ordering::Relaxed)),
                    (
                        "remote_event_dropped",
                        self.counts.remote_dropped.load(Ordering::Relaxed),
                    ),
                ])
                .map(|(kind, v)| (AnomalyLabels { kind }, v)),
        )?;
        counter(
            encoder,
            "tracepkt_attached_seconds",
            "Time the kernel programs have been attached (with attach: in-flight, its rate is the duty cycle)",
            ConstCounter::new(self.clock.total().as_secs_f64()),
        )?;
        Ok(())
    }
}
