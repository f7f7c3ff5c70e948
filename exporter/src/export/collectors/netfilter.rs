//! `tracepkt_netfilter_verdicts_total`: chain traversals and their verdicts, from the
//! `VERDICTS` map (`probe-ebpf`'s `netfilter.rs` counts them).

use std::collections::HashMap;
use std::sync::Mutex;

use probe_common::VerdictKey;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};

use super::{Collect, CollectError, Labelling, counter_family};
use crate::export::metrics::TargetLabels;
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

pub struct Netfilter {
    map: Mutex<Counters<VerdictKey>>,
}

impl Netfilter {
    pub fn new(map: Counters<VerdictKey>) -> Self {
        Netfilter { map: Mutex::new(map) }
    }
}

impl Collect for Netfilter {
    fn name(&self) -> &'static str {
        "netfilter"
    }

    fn collect(
        &self,
        labels: &Labelling,
        targets: &HashMap<u32, TargetLabels>,
        encoder: &mut DescriptorEncoder,
    ) -> Result<(), CollectError> {
        let counts = self.map.lock().unwrap().read()?;
        let rows = counts.into_iter().filter_map(|(k, v)| {
            let l = VerdictLabels {
                target: targets.get(&k.tag)?.clone(),
                netns: labels.netns(k.netns),
                family: names::nf_family(k.pf),
                hook: names::nf_hook(k.hook),
                table: cstr(&k.table),
                chain: cstr(&k.chain),
                verdict: names::nf_verdict(k.verdict),
            };
            Some((l, v))
        });
        counter_family(
            encoder,
            "tracepkt_netfilter_verdicts",
            "Netfilter chain traversals of probe packets, by verdict, counted in the kernel",
            rows,
        )?;
        Ok(())
    }

    fn forget(&self, tag: u32) {
        self.map.lock().unwrap().forget(tag);
    }
}
