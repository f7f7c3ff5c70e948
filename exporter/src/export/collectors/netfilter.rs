//! `tracepkt_netfilter_verdicts_total`: chain traversals and their verdicts, from the
//! `VERDICTS` map (`probe-ebpf`'s `netfilter.rs` counts them).

use probe_common::VerdictKey;
use prometheus_client::encoding::EncodeLabelSet;

use super::{Collect, CounterMap, Labelling};
use crate::export::labels::TargetLabels;
use crate::kernel::events::cstr;
use crate::kernel::maps::Counters;
use crate::names;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VerdictLabels {
    #[prometheus(flatten)]
    target: TargetLabels,
    netns: String,
    family: &'static str,
    hook: &'static str,
    table: String,
    chain: String,
    verdict: &'static str,
}

fn labels(k: &VerdictKey, target: TargetLabels, l: &Labelling) -> VerdictLabels {
    VerdictLabels {
        target,
        netns: l.netns(k.netns),
        family: names::nf_family(k.pf),
        hook: names::nf_hook(k.hook),
        table: cstr(&k.table),
        chain: cstr(&k.chain),
        verdict: names::nf_verdict(k.verdict).as_str(),
    }
}

pub(super) fn collector(map: Counters<VerdictKey>) -> Box<dyn Collect> {
    Box::new(CounterMap {
        name: "netfilter",
        metric: "tracepkt_netfilter_verdicts",
        help: "Netfilter chain traversals of probe packets, by verdict, counted in the kernel",
        map: map.into(),
        labels,
    })
}
