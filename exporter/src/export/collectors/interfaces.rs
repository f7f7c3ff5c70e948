//! `tracepkt_hops_total`: interface crossings, from the `HOPS` map (`probe-ebpf`'s
//! `interfaces.rs` counts them).

use std::collections::HashMap;
use std::sync::Mutex;

use probe_common::{Direction, HopKey};
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};

use super::{Collect, CollectError, Labelling, counter_family};
use crate::export::metrics::TargetLabels;
use crate::kernel::maps::Counters;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HopLabels {
    #[prometheus(flatten)]
    target: TargetLabels,
    netns: String,
    interface: String,
    direction: &'static str,
}

pub struct Interfaces {
    map: Mutex<Counters<HopKey>>,
}

impl Interfaces {
    pub fn new(map: Counters<HopKey>) -> Self {
        Interfaces { map: Mutex::new(map) }
    }
}

impl Collect for Interfaces {
    fn name(&self) -> &'static str {
        "interfaces"
    }

    fn collect(
        &self,
        labels: &Labelling,
        targets: &HashMap<u32, TargetLabels>,
        encoder: &mut DescriptorEncoder,
    ) -> Result<(), CollectError> {
        let counts = self.map.lock().unwrap().read()?;
        // Counters of tags that no longer name a target (removed by a reload) are not shown.
        let rows = counts.into_iter().filter_map(|(k, v)| {
            let l = HopLabels {
                target: targets.get(&k.tag)?.clone(),
                netns: labels.netns(k.netns),
                interface: labels.ifname(k.netns, k.ifindex),
                direction: Direction::from_u8(k.direction).map_or("unknown", Direction::as_str),
            };
            Some((l, v))
        });
        counter_family(
            encoder,
            "tracepkt_hops",
            "Interface crossings of probe packets, counted in the kernel (transmit and receive)",
            rows,
        )?;
        Ok(())
    }

    fn forget(&self, tag: u32) {
        self.map.lock().unwrap().forget(tag);
    }
}
