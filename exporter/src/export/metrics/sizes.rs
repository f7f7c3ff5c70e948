//! Targets with `size:`, probed in rounds of one probe per size: which sizes got through,
//! `tracepkt_probe_size_success`, and the largest that did, `tracepkt_path_mtu_bytes`.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Unit;

use super::{Group, Registrar, TargetFamily};
use crate::export::labels::TargetLabels;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BySize {
    size: u16,
}

/// What a round showed.
pub struct Round {
    /// Some size got its reply.
    pub any: bool,
    /// Every size did.
    pub all: bool,
}

#[derive(Default)]
pub struct Sizes {
    size_success: TargetFamily<(TargetLabels, BySize), Gauge>,
    path_mtu: TargetFamily<TargetLabels, Gauge>,
    /// Target name → its sizes; only sized targets are here.
    sizes: Mutex<HashMap<String, Vec<u16>>>,
}

impl Sizes {
    /// Makes a target's sizes known: its rounds are then recorded by [`Sizes::round`].
    pub fn set_sizes(&self, t: &TargetLabels, sizes: &[u16]) {
        self.sizes.lock().unwrap().insert(t.target.clone(), sizes.to_vec());
    }

    pub fn is_sized(&self, t: &TargetLabels) -> bool {
        self.sizes.lock().unwrap().get(&t.target).is_some_and(|s| !s.is_empty())
    }

    /// Records a round: which sizes were answered (a size missing from `answered` was not).
    /// The path MTU is the largest that was.
    pub fn round(&self, t: &TargetLabels, answered: &[(u16, bool)]) -> Round {
        let all = self.sizes.lock().unwrap();
        let sizes = all.get(&t.target).map(Vec::as_slice).unwrap_or_default();
        let ok = |size: u16| answered.iter().any(|&(sz, ok)| sz == size && ok);
        for &size in sizes {
            self.size_success
                .get_or_create(&(t.clone(), BySize { size }))
                .set(i64::from(ok(size)));
        }
        let largest = sizes.iter().copied().filter(|&sz| ok(sz)).max();
        self.path_mtu.get_or_create(t).set(largest.map_or(0, i64::from));
        Round {
            any: largest.is_some(),
            all: sizes.iter().all(|&sz| ok(sz)),
        }
    }
}

impl Group for Sizes {
    fn register(&self, r: &mut Registrar) {
        r.per_target(
            "tracepkt_probe_size_success",
            "Targets with size: whether the last round's probes of each size got their reply (1) or not (0)",
            None,
            &self.size_success,
        );
        r.per_target(
            "tracepkt_path_mtu",
            "Targets with size: the largest size whose probe got its reply in the last round; 0 when none did",
            Some(Unit::Bytes),
            &self.path_mtu,
        );
    }

    fn forget_target(&self, t: &TargetLabels) {
        self.sizes.lock().unwrap().remove(&t.target);
    }
}
