//! Other nodes' probes crossing this node. The kernel programs report them (within the
//! foreign-probe budget) with the trace context their payload carries; their events are
//! gathered per probe, by trace id, and once a probe has been quiet for a moment they become a
//! [`RemoteJourney`]: the hops this node saw, to be sent as spans in the sender's trace and
//! counted by origin.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use probe_common::payload::{FLAG_SAMPLED, TraceContext};
use probe_common::{Direction, Proto};

use crate::journey::{Hop, Journey};
use crate::kernel::events::KernelEvent;
use crate::names::Names;
use crate::outcome::Outcome;

/// How long a probe's events may pause before its journey here is taken as complete: far
/// longer than a packet takes to cross a node, and its reply comes back within the sender's
/// timeout, which the reply's own group then covers.
pub const QUIET: Duration = Duration::from_millis(500);
/// Probes gathered at once, and events per probe: more are counted, not kept.
const MAX_OPEN: usize = 1024;
const MAX_EVENTS: usize = 256;
/// This node's own latest probes remembered, far more than can be out at once.
const OWN_REMEMBERED: usize = 4096;

/// Another node's probe as this node saw it.
#[derive(Debug, Clone)]
pub struct RemoteJourney {
    /// The sender's trace id and root span, from the probe's payload.
    pub trace: TraceContext,
    pub proto: Proto,
    /// The address the probe came from, as this node first saw it: the sending node's (or its
    /// pod's) address.
    pub origin: IpAddr,
    pub hops: Vec<Hop>,
}

struct Group {
    parent_span_id: [u8; 8],
    events: Vec<KernelEvent>,
    last: Instant,
}

/// What became of an event the kernel reported as another node's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filed {
    Kept,
    /// Too many probes or events at once.
    Full,
    /// One of this node's own probes, seen after its journey closed (a late reply): it is
    /// in `PROBES` no more, so the kernel took it for another node's.
    Own,
}

/// The other nodes' probes being gathered.
#[derive(Default)]
pub struct Gatherer {
    open: HashMap<[u8; 16], Group>,
    own: HashSet<[u8; 16]>,
    own_order: VecDeque<[u8; 16]>,
}

impl Gatherer {
    /// Remembers the trace id of one of this node's probes, before it is sent.
    pub fn own(&mut self, trace_id: [u8; 16]) {
        if self.own.insert(trace_id) {
            self.own_order.push_back(trace_id);
        }
        while self.own_order.len() > OWN_REMEMBERED {
            if let Some(old) = self.own_order.pop_front() {
                self.own.remove(&old);
            }
        }
    }

    /// Files one event of another node's probe.
    pub fn add(&mut self, ev: KernelEvent, now: Instant) -> Filed {
        if self.own.contains(&ev.trace_id) {
            return Filed::Own;
        }
        let full = self.open.len() >= MAX_OPEN;
        match self.open.get_mut(&ev.trace_id) {
            Some(g) if g.events.len() < MAX_EVENTS => {
                g.last = now;
                g.events.push(ev);
                Filed::Kept
            }
            Some(_) => Filed::Full,
            None if full => Filed::Full,
            None => {
                self.open.insert(
                    ev.trace_id,
                    Group {
                        parent_span_id: ev.parent_span_id,
                        events: vec![ev],
                        last: now,
                    },
                );
                Filed::Kept
            }
        }
    }

    /// Takes every probe quiet for [`QUIET`] and builds its journey here.
    pub fn due(&mut self, now: Instant, names: &mut Names) -> Vec<RemoteJourney> {
        let done: Vec<[u8; 16]> = self
            .open
            .iter()
            .filter(|(_, g)| now.duration_since(g.last) >= QUIET)
            .map(|(id, _)| *id)
            .collect();
        done.into_iter()
            .filter_map(|id| self.open.remove(&id).map(|g| (id, g)))
            .filter_map(|(trace_id, g)| assemble(trace_id, g, names))
            .collect()
    }
}

fn assemble(trace_id: [u8; 16], g: Group, names: &mut Names) -> Option<RemoteJourney> {
    let first = g.events.iter().min_by_key(|e| e.ts_ns)?;
    let key = (first.proto, first.id, first.seq);
    let proto = first.proto;
    // The request's source, or the reply's destination: where the probe started. Outside a
    // tunnel, whose outer addresses are the nodes' rather than the probe's.
    let inner = || g.events.iter().filter(|e| e.tunnel.is_none());
    let origin = inner()
        .find(|e| e.direction == Direction::Request)
        .map(|e| e.saddr)
        .or_else(|| inner().find(|e| e.direction == Direction::Reply).map(|e| e.daddr))
        .unwrap_or(first.saddr);
    // The outcome is the sender's to know; the journey here is its hops.
    let j = Journey::assemble(key, g.events, Outcome::Timeout, names);
    Some(RemoteJourney {
        trace: TraceContext {
            trace_id,
            parent_span_id: g.parent_span_id,
            flags: FLAG_SAMPLED,
        },
        proto,
        origin,
        hops: j.hops,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::events::Detail;
    use crate::kernel::loader::DropReasons;
    use probe_common::{Hook, Tunnel};

    fn ev(trace: u8, ts: u64, dir: Direction, tunnel: Option<Tunnel>) -> KernelEvent {
        KernelEvent {
            ts_ns: ts,
            skb: 1,
            hook: Hook::NetifReceiveSkb,
            direction: dir,
            proto: Proto::Icmp,
            id: 7,
            seq: 1,
            sport: 0,
            dport: 0,
            saddr: if tunnel.is_some() { "192.0.2.1" } else { "198.51.100.2" }
                .parse()
                .unwrap(),
            daddr: "198.51.100.9".parse().unwrap(),
            netns: 1,
            ifindex: ts as u32,
            ifname: format!("if{ts}"),
            trace_id: [trace; 16],
            parent_span_id: [trace + 1; 8],
            foreign: true,
            tunnel,
            detail: Detail::Interface,
        }
    }

    fn names() -> Names {
        Names::new(DropReasons::new(Default::default()))
    }

    #[test]
    fn a_probe_is_handed_over_once_quiet_with_its_origin_and_parent() {
        let mut g = Gatherer::default();
        let t0 = Instant::now();
        assert_eq!(
            g.add(ev(1, 10, Direction::Request, Some(Tunnel::Vxlan)), t0),
            Filed::Kept
        );
        assert_eq!(g.add(ev(1, 20, Direction::Request, None), t0), Filed::Kept);
        assert_eq!(g.add(ev(2, 30, Direction::Request, None), t0 + QUIET), Filed::Kept);
        let mut n = names();
        assert!(g.due(t0 + QUIET / 2, &mut n).is_empty());
        let due = g.due(t0 + QUIET, &mut n);
        assert_eq!(due.len(), 1, "only the quiet probe");
        let j = &due[0];
        assert_eq!(j.trace.trace_id, [1; 16]);
        assert_eq!(j.trace.parent_span_id, [2; 8]);
        assert_eq!(
            j.origin,
            "198.51.100.2".parse::<IpAddr>().unwrap(),
            "the inner source, not the tunnel's"
        );
        assert_eq!(j.hops.len(), 2);
        assert_eq!(j.hops[0].tunnel, Some("vxlan"));
        assert_eq!(g.open.len(), 1);
    }

    #[test]
    fn bounded_in_probes_and_events() {
        let mut g = Gatherer::default();
        let t0 = Instant::now();
        for i in 0..MAX_EVENTS {
            assert_eq!(g.add(ev(1, i as u64, Direction::Request, None), t0), Filed::Kept);
        }
        let over = g.add(ev(1, 0, Direction::Request, None), t0);
        assert_eq!(over, Filed::Full, "one probe's events are bounded");
        for i in 1..MAX_OPEN {
            let mut e = ev(0, 1, Direction::Request, None);
            e.trace_id[..8].copy_from_slice(&(i as u64).to_le_bytes());
            e.trace_id[8] = 0xee;
            assert_eq!(g.add(e, t0), Filed::Kept);
        }
        let over = g.add(ev(9, 1, Direction::Request, None), t0);
        assert_eq!(over, Filed::Full, "probes at once are bounded");
    }

    #[test]
    fn a_late_packet_of_this_nodes_own_probe_is_not_another_nodes() {
        let mut g = Gatherer::default();
        g.own([5; 16]);
        assert_eq!(g.add(ev(5, 1, Direction::Reply, None), Instant::now()), Filed::Own);
        for i in 0..OWN_REMEMBERED as u64 {
            let mut id = [0xaa; 16];
            id[..8].copy_from_slice(&i.to_le_bytes());
            g.own(id);
        }
        assert_eq!(g.own.len(), OWN_REMEMBERED, "bounded");
        let late = g.add(ev(5, 1, Direction::Reply, None), Instant::now());
        assert_eq!(late, Filed::Kept, "forgotten once older than the last {OWN_REMEMBERED}");
    }
}
