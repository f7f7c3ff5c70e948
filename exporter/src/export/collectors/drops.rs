//! `tracepkt_drops_total`: drops with the kernel's reason, from the `DROPS` map
//! (`probe-ebpf`'s `drops.rs` counts them).

use std::collections::HashMap;
use std::sync::Mutex;

use probe_common::DropKey;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};

use super::{Collect, CollectError, Labelling, counter_family};
use crate::export::metrics::TargetLabels;
use crate::kernel::maps::Counters;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DropLabels {
    #[prometheus(flatten)]
    target: TargetLabels,
    netns: String,
    interface: String,
    reason: String,
}

pub struct Drops {
    map: Mutex<Counters<DropKey>>,
}

impl Drops {
    pub fn new(map: Counters<DropKey>) -> Self {
        Drops { map: Mutex::new(map) }
    }
}

impl Collect for Drops {
    fn name(&self) -> &'static str {
        "drops"
    }

    fn collect(
        &self,
        labels: &Labelling,
        targets: &HashMap<u32, TargetLabels>,
        encoder: &mut DescriptorEncoder,
    ) -> Result<(), CollectError> {
        let counts = self.map.lock().unwrap().read()?;
        let rows = counts.into_iter().filter_map(|(k, v)| {
            let l = DropLabels {
                target: targets.get(&k.tag)?.clone(),
                netns: labels.netns(k.netns),
                interface: labels.ifname(k.netns, k.ifindex),
                reason: labels.drop_reasons.name(k.reason),
            };
            Some((l, v))
        });
        counter_family(
            encoder,
            "tracepkt_drops",
            "Probe packets dropped by the kernel, by drop reason",
            rows,
        )?;
        Ok(())
    }

    fn forget(&self, tag: u32) {
        self.map.lock().unwrap().forget(tag);
    }
}
