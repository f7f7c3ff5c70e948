//! A probe's life in the engine: an id leased for its user ([`Lease`]), then for each probe a
//! [`Flight`]: registered in the kernel, programs armed, journey open, until it lands and its
//! events are handed back ([`Landed`]).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry_sdk::trace::IdGenerator as _;
use probe_common::payload::{self, TraceContext};
use probe_common::{Proto, probe_key};

use super::{Engine, Open, Shared};
use crate::clock;
use crate::journey::Journey;
use crate::kernel::events::KernelEvent;
use crate::outcome::Outcome;

/// How long a journey stays open after its probe ended, for events still in the ring buffer.
const GRACE: Duration = Duration::from_millis(25);

/// What a journey's events are filed under: the protocol, what names the probe within it (the
/// echo id, or the bound port), and the echo sequence (0 for TCP and UDP).
pub type JourneyKey = (Proto, u16, u16);

/// An echo id the engine owns for one user (a target, a trace) until dropped. `tag` names the
/// user in the kernel's counters, for every protocol it probes with.
pub struct Lease {
    id: u16,
    tag: u32,
    shared: Arc<Shared>,
}

impl Lease {
    /// The echo id: what an ICMP probe of this user carries, and what names its journeys when
    /// a probe could not be sent.
    pub fn id(&self) -> u16 {
        self.id
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut st = self.shared.state.lock().unwrap();
        st.registry.unregister(probe_key(Proto::Icmp, self.id));
        st.ids.give_back(self.id);
    }
}

/// One probe in flight: registered in the kernel, programs armed, journey open. Dropping it,
/// normally or because its task was cancelled, undoes all three.
pub struct Flight<'a> {
    shared: &'a Shared,
    key: JourneyKey,
    /// A sized probe's IP length, let past the programs' first test while it is in flight.
    len: Option<u16>,
    /// The kernel's count of lost events when the probe went out.
    lost_before: u64,
    /// CLOCK_MONOTONIC just before the probe is handed to its socket.
    sent_ns: u64,
}

/// What a probe brought back, for [`Engine::journey`].
pub struct Landed {
    key: JourneyKey,
    outcome: Outcome,
    events: Vec<KernelEvent>,
    /// Events lost to a full ring buffer while the probe was out (its own or others').
    lost: u64,
    sent_ns: u64,
    ended_ns: u64,
}

impl Landed {
    /// A probe that could not be sent (a namespace gone, a socket refused): its journey says
    /// why, and has no hop.
    pub fn unsent(key: JourneyKey, error: &anyhow::Error) -> Landed {
        Landed {
            key,
            outcome: Outcome::SendError(format!("{error:#}")),
            events: Vec::new(),
            lost: 0,
            sent_ns: 0,
            ended_ns: 0,
        }
    }
}

impl Engine {
    /// An echo id for `tag`'s probes, or `None` when all 65,535 are taken.
    pub fn lease(&self, tag: u32) -> Option<Lease> {
        let id = self.shared.state.lock().unwrap().ids.take()?;
        Some(Lease {
            id,
            tag,
            shared: self.shared.clone(),
        })
    }

    /// Opens the journey `key` of one of `lease`'s probes: registers the probe in the kernel
    /// under the lease's tag and arms the programs. Events of another trace than `trace_id`
    /// (when the probe carries one) are not its own. `len`: a sized probe's IP length, let past
    /// the programs' length filter while it is out.
    pub fn begin(
        &self,
        lease: &Lease,
        key: JourneyKey,
        trace_id: Option<[u8; 16]>,
        len: Option<u16>,
    ) -> anyhow::Result<Flight<'_>> {
        let shared = &*self.shared;
        let (proto, id, _) = key;
        let mut st = shared.state.lock().unwrap();
        if let Some(len) = len {
            st.registry
                .allow_length(len)
                .context("letting the probe's size past the kernel's filter")?;
        }
        // Each step undone if a later one fails: the length, then the registration.
        let registered = st
            .registry
            .register(probe_key(proto, id), lease.tag)
            .context("registering the probe in the kernel")
            .and_then(|()| {
                st.gate
                    .arm(key)
                    .inspect_err(|_| st.registry.unregister(probe_key(proto, id)))
            });
        if let Err(e) = registered {
            if let Some(len) = len {
                st.registry.release_length(len);
            }
            return Err(e);
        }
        st.open.insert(
            key,
            Open {
                trace_id,
                events: Vec::new(),
            },
        );
        drop(st);
        let lost_before = shared.stats.events_lost().unwrap_or(0);
        Ok(Flight {
            shared,
            key,
            len,
            lost_before,
            sent_ns: clock::monotonic_ns(),
        })
    }
}

impl Engine {
    /// A new trace context for a probe: a random trace id, and the id its root span will have.
    /// With other nodes' probes followed, the trace is known as this node's own.
    pub fn trace_context(&self) -> TraceContext {
        let shared = &*self.shared;
        let trace = TraceContext {
            trace_id: shared.ids.new_trace_id().to_bytes(),
            parent_span_id: shared.ids.new_span_id().to_bytes(),
            flags: payload::FLAG_SAMPLED,
        };
        if let Some(remote) = &shared.remote {
            remote.lock().unwrap().own(trace.trace_id);
        }
        trace
    }

    /// The journey of a probe that carried `trace`, from what it brought back.
    pub fn journey(&self, landed: Landed, trace: TraceContext) -> Journey {
        let mut journey = {
            let mut names = self.shared.names.lock().unwrap();
            Journey::assemble(landed.key, landed.events, landed.outcome, &mut names)
        };
        journey.trace = trace;
        journey.sent_ns = landed.sent_ns;
        journey.ended_ns = landed.ended_ns;
        journey.events_lost = landed.lost;
        journey
    }
}

impl Flight<'_> {
    /// The probe's answer is known: waits a moment for the last events, then closes the
    /// journey and hands back its events.
    pub async fn land(self, outcome: Outcome) -> Landed {
        let ended_ns = clock::monotonic_ns();
        tokio::time::sleep(GRACE).await;
        let lost = self
            .shared
            .stats
            .events_lost()
            .map_or(0, |now| now.saturating_sub(self.lost_before));
        let events = {
            let mut st = self.shared.state.lock().unwrap();
            st.open.remove(&self.key).map(|o| o.events).unwrap_or_default()
        };
        Landed {
            key: self.key,
            outcome,
            events,
            lost,
            sent_ns: self.sent_ns,
            ended_ns,
        }
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        let (proto, id, _) = self.key;
        let mut st = self.shared.state.lock().unwrap();
        st.open.remove(&self.key);
        // An echo id stays leased; the kernel stops following it until its next probe.
        st.registry.unregister(probe_key(proto, id));
        if let Some(len) = self.len {
            st.registry.release_length(len);
        }
        st.gate.disarm(self.key);
    }
}
