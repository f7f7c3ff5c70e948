//! The labels every series of a target carries, and the targets known by the probe tag their
//! kernel counters are keyed by: what the recorded groups (`metrics/`) and the kernel
//! counters' collectors (`collectors/`) both label by.

use std::collections::HashMap;
use std::sync::RwLock;

use prometheus_client::encoding::EncodeLabelSet;

/// What the metrics know of a target: its name and the extra labels of its config.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TargetLabels {
    pub target: String,
    #[prometheus(flatten)]
    pub extra: Vec<(String, String)>,
}

/// The targets known to the metrics, by probe tag.
///
/// Adding and removing a target hold the lock while its series are created or removed, and
/// every write of a target's series runs under [`Targets::if_current`]: a task stopped by a
/// reload may still be finishing a probe on another thread, and must not bring back the
/// series its removal just deleted.
#[derive(Debug, Default)]
pub struct Targets {
    by_tag: RwLock<HashMap<u32, TargetLabels>>,
}

impl Targets {
    /// Makes `t` known under `tag`, after `start` has created the series it starts with.
    pub fn add(&self, tag: u32, t: TargetLabels, start: impl FnOnce(&TargetLabels)) {
        let mut by_tag = self.by_tag.write().unwrap();
        start(&t);
        by_tag.insert(tag, t);
    }

    /// Forgets the target known under `tag`, if any, running `remove` (which removes its
    /// series) before any write can see it gone.
    pub fn remove(&self, tag: u32, remove: impl FnOnce(&TargetLabels)) {
        let mut by_tag = self.by_tag.write().unwrap();
        if let Some(t) = by_tag.remove(&tag) {
            remove(&t);
        }
    }

    /// Runs `write` only while `t` is still the target known under `tag`.
    pub fn if_current(&self, tag: u32, t: &TargetLabels, write: impl FnOnce()) {
        let by_tag = self.by_tag.read().unwrap();
        if by_tag.get(&tag) == Some(t) {
            write();
        }
    }

    /// A copy, so that a scrape does not hold up probes recording their journeys.
    pub fn snapshot(&self) -> HashMap<u32, TargetLabels> {
        self.by_tag.read().unwrap().clone()
    }
}
