//! `tracepkt_hops_total`: interface crossings, from the `HOPS` map (`probe-ebpf`'s
//! `interfaces.rs` counts them).

use probe_common::{Direction, HopKey};
use prometheus_client::encoding::EncodeLabelSet;

use super::{Collect, CounterMap, Labelling};
use crate::export::labels::TargetLabels;
use crate::kernel::maps::Counters;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HopLabels {
    #[prometheus(flatten)]
    target: TargetLabels,
    netns: String,
    interface: String,
    direction: &'static str,
}

fn labels(k: &HopKey, target: TargetLabels, l: &Labelling) -> HopLabels {
    HopLabels {
        target,
        netns: l.netns(k.netns),
        interface: l.ifname(k.netns, k.ifindex),
        direction: Direction::from_u8(k.direction).map_or("unknown", Direction::as_str),
    }
}

pub(super) fn collector(map: Counters<HopKey>) -> Box<dyn Collect> {
    Box::new(CounterMap {
        name: "interfaces",
        metric: "tracepkt_hops",
        help: "Interface crossings of probe packets, counted in the kernel (transmit and receive)",
        map: map.into(),
        labels,
    })
}
