//! What the engine hands to the metrics: the attach report, handles on the kernel's counters,
//! and the engine's own counts. Defined below both, so that the metrics read what the engine
//! writes without knowing the engine.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use probe_common::{DropKey, HopKey, VerdictKey};

use crate::kernel::loader::{self, Attach, DropReasons};
use crate::kernel::maps::{Counters, KernelStats};
use crate::names::Names;

/// Cumulative time the kernel programs have been attached: with `attach: in-flight`, the
/// duty cycle is its rate.
#[derive(Default)]
pub struct AttachClock {
    inner: Mutex<(Duration, Option<Instant>)>,
}

impl AttachClock {
    pub fn start(&self) {
        self.inner.lock().unwrap().1.get_or_insert_with(Instant::now);
    }

    pub fn stop(&self) {
        let mut g = self.inner.lock().unwrap();
        if let Some(since) = g.1.take() {
            g.0 += since.elapsed();
        }
    }

    pub fn total(&self) -> Duration {
        let g = self.inner.lock().unwrap();
        g.0 + g.1.map(|s| s.elapsed()).unwrap_or_default()
    }
}

/// The engine's own counts of what did not fit anywhere: never hidden.
#[derive(Default)]
pub struct EngineCounts {
    /// Events that arrived after their journey closed.
    pub unmatched: AtomicU64,
    /// Ring-buffer records that could not be decoded.
    pub undecodable: Arc<AtomicU64>,
    /// Events with the echo id and sequence of a probe in flight but another trace in their
    /// payload: another tracepkt's probe, or a forged one.
    pub foreign_trace: AtomicU64,
    /// Other nodes' probe events not kept (too many probes or events at once), and their
    /// journeys not handed over (nobody reading them fast enough).
    pub remote_dropped: AtomicU64,
}

/// The attach report and handles on the kernel's counters and the engine's.
pub struct Telemetry {
    pub report: Vec<Attach>,
    pub release: String,
    pub drop_reasons: DropReasons,
    pub hops: Counters<HopKey>,
    pub verdicts: Counters<VerdictKey>,
    pub drops: Counters<DropKey>,
    pub stats: Arc<KernelStats>,
    pub clock: Arc<AttachClock>,
    pub names: Arc<Mutex<Names>>,
    pub counts: Arc<EngineCounts>,
}

impl Telemetry {
    /// Kinds of hop no hook of which attached: what cannot be seen on this kernel.
    pub fn blind_spots(&self) -> Vec<String> {
        loader::blind_spots(&self.report)
    }
}
