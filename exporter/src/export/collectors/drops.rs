//! `tracepkt_drops_total`: drops with the kernel's reason, from the `DROPS` map
//! (`probe-ebpf`'s `drops.rs` counts them).

use probe_common::DropKey;
use prometheus_client::encoding::EncodeLabelSet;

use super::{Collect, CounterMap, Labelling};
use crate::export::labels::TargetLabels;
use crate::kernel::maps::Counters;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DropLabels {
    #[prometheus(flatten)]
    target: TargetLabels,
    netns: String,
    interface: String,
    reason: String,
}

fn labels(k: &DropKey, target: TargetLabels, l: &Labelling) -> DropLabels {
    DropLabels {
        target,
        netns: l.netns(k.netns),
        interface: l.ifname(k.netns, k.ifindex),
        reason: l.drop_reasons.name(k.reason),
    }
}

pub(super) fn collector(map: Counters<DropKey>) -> Box<dyn Collect> {
    Box::new(CounterMap {
        name: "drops",
        metric: "tracepkt_drops",
        help: "Probe packets dropped by the kernel, by drop reason",
        map: map.into(),
        labels,
    })
}
