//! The attach gate: the tracepoint programs attached only while a probe is in flight, or all
//! the time.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::Context as _;
use tracing::warn;

use super::flight::JourneyKey;
use crate::config::AttachMode;
use crate::kernel::loader::Kernel;
use crate::telemetry::AttachClock;

/// Keeps the tracepoint programs attached while any probe is in flight (`attach: in-flight`),
/// or all the time (`attach: always`): between probes the node's own packets cross no
/// tracepkt code at the interface and drop hooks. Creating a tracepoint link is cheap enough
/// per probe window. Kprobes (netfilter) stay attached for the whole run: see `Link::gated`.
pub(super) struct Gate {
    pub(super) kernel: Kernel,
    mode: AttachMode,
    in_flight: HashSet<JourneyKey>,
    clock: Arc<AttachClock>,
}

impl Gate {
    pub(super) fn new(mut kernel: Kernel, mode: AttachMode, clock: Arc<AttachClock>) -> anyhow::Result<Self> {
        match mode {
            AttachMode::InFlight => kernel
                .detach_gated()
                .context("detaching the programs until the first probe")?,
            AttachMode::Always => clock.start(),
        }
        Ok(Gate {
            kernel,
            mode,
            in_flight: HashSet::new(),
            clock,
        })
    }

    pub(super) fn arm(&mut self, probe: JourneyKey) -> anyhow::Result<()> {
        if self.mode == AttachMode::InFlight && self.in_flight.is_empty() {
            self.kernel
                .attach_gated()
                .context("attaching the programs for a probe")?;
            self.clock.start();
        }
        self.in_flight.insert(probe);
        Ok(())
    }

    pub(super) fn disarm(&mut self, probe: JourneyKey) {
        if self.in_flight.remove(&probe) && self.in_flight.is_empty() && self.mode == AttachMode::InFlight {
            if let Err(e) = self.kernel.detach_gated() {
                warn!("detaching the programs between probes failed: {e}");
            }
            self.clock.stop();
        }
    }
}
