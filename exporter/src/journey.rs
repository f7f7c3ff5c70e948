//! Kernel events → per-packet journeys: the ordered hops of one probe packet and its reply,
//! how long each stage took, where the packet was last seen, and a path signature.
//!
//! A journey is plain data: the `trace` table, `/metrics` and the span exporter all read it.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::time::Duration;

use probe_common::payload::TraceContext;
use probe_common::{Direction, Io, Kind, Proto};
use serde::Serialize;

use crate::kernel::events::{Detail, KernelEvent};
use crate::names::{self, Names, Verdict};
use crate::outcome::{Ending, Outcome};

/// What happened at a hop. Serialised flat into the hop, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum HopDetail {
    Interface {
        io: Io,
    },
    Netfilter {
        family: &'static str,
        hook: &'static str,
        table: String,
        /// nftables chains have names; iptables chains are named by their hook.
        #[serde(skip_serializing_if = "Option::is_none")]
        chain: Option<String>,
        verdict: Verdict,
    },
    Drop {
        reason: String,
        location: String,
    },
}

/// One row of a journey: an interface crossing, a netfilter verdict, or a drop.
#[derive(Debug, Clone, Serialize)]
pub struct Hop {
    pub proto: Proto,
    /// The echo id, or for TCP and UDP the port tracepkt's socket is bound to.
    pub probe: u16,
    pub seq: u16,
    /// TCP and UDP: the ports as they are at this hop (NAT may rewrite them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    pub direction: Direction,
    pub netns: u32,
    pub netns_name: Option<String>,
    pub ifname: String,
    pub ifindex: u32,
    pub saddr: IpAddr,
    pub daddr: IpAddr,
    /// CLOCK_MONOTONIC nanoseconds of the first event of the hop.
    pub ts_ns: u64,
    /// Kernel hooks that saw this hop, in order.
    pub sources: Vec<&'static str>,
    /// The tunnel (`vxlan`, `geneve`, `ipip`) the probe was inside at this hop, whose outer
    /// addresses `saddr` and `daddr` are then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<&'static str>,
    #[serde(flatten)]
    pub detail: HopDetail,
}

impl Hop {
    pub fn kind(&self) -> Kind {
        match self.detail {
            HopDetail::Interface { .. } => Kind::Interface,
            HopDetail::Netfilter { .. } => Kind::Netfilter,
            HopDetail::Drop { .. } => Kind::Drop,
        }
    }

    /// The namespace as labels show it: its name when known, else its inode.
    pub fn netns_label(&self) -> String {
        self.netns_name.clone().unwrap_or_else(|| self.netns.to_string())
    }

    /// What the hop did, as the trace table's last column shows it:
    /// `filter.INPUT:DROP` (iptables), `filter/input:ACCEPT` (nftables), `DROP reason`.
    pub fn verdict_text(&self) -> String {
        match &self.detail {
            HopDetail::Interface { .. } => String::new(),
            HopDetail::Netfilter {
                table,
                chain: Some(chain),
                verdict,
                ..
            } => format!("{table}/{chain}:{verdict}"),
            HopDetail::Netfilter {
                table,
                chain: None,
                hook,
                verdict,
                ..
            } => format!("{table}.{hook}:{verdict}"),
            HopDetail::Drop { reason, .. } => format!("DROP {reason}"),
        }
    }

    /// The addresses as they are at this hop, with the ports for TCP and UDP; inside a tunnel,
    /// the tunnel and its outer addresses.
    pub fn addresses(&self) -> String {
        match (self.tunnel, self.sport, self.dport) {
            (Some(t), _, _) => format!("{t} {} -> {}", self.saddr, self.daddr),
            (None, Some(sp), Some(dp)) => format!(
                "{} -> {}",
                std::net::SocketAddr::new(self.saddr, sp),
                std::net::SocketAddr::new(self.daddr, dp)
            ),
            _ => format!("{} -> {}", self.saddr, self.daddr),
        }
    }

    /// Whether this hop is where the packet ended without reaching its destination: a drop,
    /// or a chain's DROP verdict.
    pub fn is_fatal(&self) -> bool {
        match &self.detail {
            HopDetail::Drop { .. } => true,
            HopDetail::Netfilter { verdict, .. } => *verdict == Verdict::Drop,
            HopDetail::Interface { .. } => false,
        }
    }

    /// A short, bounded name for the place of this hop, for path signatures.
    fn place(&self) -> String {
        match &self.detail {
            HopDetail::Interface { io } => format!("{}:{}@{}", self.ifname, io.as_str(), self.netns_label()),
            HopDetail::Netfilter { .. } => format!("{}@{}", self.verdict_text(), self.netns_label()),
            HopDetail::Drop { .. } => format!("drop@{}", self.netns_label()),
        }
    }
}

/// A stage of a journey, bounded in number whatever the path: the metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// From the request's first hop to its last.
    Request,
    /// From the request's last hop to the reply's first: the time spent at the target.
    Turnaround,
    /// From the reply's first hop to its last.
    Reply,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::Request, Stage::Turnaround, Stage::Reply];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Request => "request",
            Stage::Turnaround => "turnaround",
            Stage::Reply => "reply",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Journey {
    pub proto: Proto,
    pub probe: u16,
    pub seq: u16,
    pub hops: Vec<Hop>,
    pub outcome: Outcome,
    /// The trace context the probe carried in its payload.
    pub trace: TraceContext,
    /// CLOCK_MONOTONIC nanoseconds (the kernel events' clock) just before the probe was
    /// handed to its socket, and when its outcome was known; 0 when it was never sent.
    pub sent_ns: u64,
    pub ended_ns: u64,
    /// The first expectation of the target's path (`expect:`) this journey broke.
    pub violation: Option<String>,
    /// Events the kernel could not queue (ring buffer full) while the probe was out: when not
    /// 0, hops may be missing from this journey.
    pub events_lost: u64,
}

/// Whether a drop event ends the packet or only frees a copy of it.
fn is_real_drop(ev: &KernelEvent, later: &[KernelEvent], not_specified: Option<u32>) -> bool {
    let Detail::Drop { reason, .. } = ev.detail else {
        return false;
    };
    if Some(reason) != not_specified {
        return true;
    }
    // NOT_SPECIFIED also frees clones and consumed copies on normal paths: it is the packet's
    // end only if nothing of this direction (or, for a request, no reply at all) came later.
    !later
        .iter()
        .any(|l| l.direction == ev.direction || (ev.direction == Direction::Request && l.direction == Direction::Reply))
}

fn detail_of(ev: &KernelEvent, names: &Names) -> HopDetail {
    match &ev.detail {
        Detail::Interface => HopDetail::Interface {
            // Interface events come from interface hooks, and every one of those has a way.
            io: ev.hook.spec().io.unwrap_or(Io::Rx),
        },
        Detail::Netfilter {
            pf,
            hook,
            table,
            chain,
            verdict,
        } => HopDetail::Netfilter {
            family: names::nf_family(*pf),
            hook: names::nf_hook(*hook),
            table: table.clone(),
            chain: (!chain.is_empty()).then(|| chain.clone()),
            verdict: names::nf_verdict(*verdict),
        },
        Detail::Drop { reason, location } => HopDetail::Drop {
            reason: names.drop_reasons.name(*reason),
            location: names.location(*location),
        },
    }
}

impl Journey {
    /// Builds the journey of probe `(protocol, id, seq)` from its events (any order).
    pub fn assemble(
        (proto, probe, seq): (Proto, u16, u16),
        mut events: Vec<KernelEvent>,
        outcome: Outcome,
        names: &mut Names,
    ) -> Journey {
        let not_specified = names.drop_reasons.not_specified();
        events.retain(|e| e.proto == proto && e.id == probe && e.seq == seq);
        events.sort_by_key(|e| e.ts_ns);
        let mut hops: Vec<Hop> = Vec::with_capacity(events.len());
        for (i, ev) in events.iter().enumerate() {
            if matches!(ev.detail, Detail::Drop { .. }) && !is_real_drop(ev, &events[i + 1..], not_specified) {
                continue;
            }
            let detail = detail_of(ev, names);
            // The receive entry points (netif_rx, GRO) and netif_receive_skb see the same
            // crossing: one hop, several sources.
            if let Some(last) = hops.last_mut()
                && matches!(detail, HopDetail::Interface { .. })
                && last.detail == detail
                && last.direction == ev.direction
                && last.netns == ev.netns
                && last.ifindex == ev.ifindex
                && last.tunnel == ev.tunnel.map(|t| t.as_str())
                && !last.sources.contains(&ev.hook.name())
            {
                last.sources.push(ev.hook.name());
                continue;
            }
            let ports = proto != Proto::Icmp;
            hops.push(Hop {
                proto,
                probe,
                seq,
                sport: ports.then_some(ev.sport),
                dport: ports.then_some(ev.dport),
                direction: ev.direction,
                netns: ev.netns,
                netns_name: names.netns.name(ev.netns),
                ifname: ev.ifname.clone(),
                ifindex: ev.ifindex,
                saddr: ev.saddr,
                daddr: ev.daddr,
                ts_ns: ev.ts_ns,
                sources: vec![ev.hook.name()],
                tunnel: ev.tunnel.map(|t| t.as_str()),
                detail,
            });
        }
        Journey {
            proto,
            probe,
            seq,
            hops,
            outcome,
            trace: TraceContext::default(),
            sent_ns: 0,
            ended_ns: 0,
            violation: None,
            events_lost: 0,
        }
    }

    pub fn replied(&self) -> bool {
        matches!(self.outcome, Outcome::Reply { .. })
    }

    /// How the journey ended, and what explains a failure.
    pub fn ending(&self) -> (Ending, Option<String>) {
        match &self.outcome {
            Outcome::Reply { .. } => (Ending::Replied, None),
            Outcome::SendError(e) => (Ending::SendError, Some(e.clone())),
            Outcome::IcmpError(e) => (Ending::IcmpError, Some(e.clone())),
            Outcome::Refused => (Ending::Refused, None),
            Outcome::Unreachable(e) => (Ending::Unreachable, Some(e.clone())),
            // The kernel's drop row names the reason; a chain's DROP verdict, which comes
            // first, only names the chain.
            Outcome::Timeout => match self
                .hops
                .iter()
                .find(|h| matches!(h.detail, HopDetail::Drop { .. }))
                .or_else(|| self.hops.iter().find(|h| h.is_fatal()))
            {
                Some(h) => {
                    let mut place = format!("{} in netns {}", h.verdict_text(), h.netns_label());
                    if !h.ifname.is_empty() {
                        place.push_str(&format!(" on {}", h.ifname));
                    }
                    if let HopDetail::Drop { location, .. } = &h.detail {
                        place.push_str(&format!(" at {location}"));
                    }
                    (Ending::Dropped, Some(place))
                }
                None => (
                    Ending::Timeout,
                    self.last_hop()
                        .map(|h| format!("last seen in netns {} on {}", h.netns_label(), h.ifname)),
                ),
            },
        }
    }

    /// Where the packet was last seen: the last hop of the journey.
    pub fn last_hop(&self) -> Option<&Hop> {
        self.hops.last()
    }

    /// How long each stage took, for the stages whose both ends were seen.
    pub fn stages(&self) -> Vec<(Stage, Duration)> {
        let first = |d: Direction| self.hops.iter().find(|h| h.direction == d).map(|h| h.ts_ns);
        let last = |d: Direction| self.hops.iter().rev().find(|h| h.direction == d).map(|h| h.ts_ns);
        let span = |a: Option<u64>, b: Option<u64>| Some(Duration::from_nanos(b?.checked_sub(a?)?));
        [
            (
                Stage::Request,
                span(first(Direction::Request), last(Direction::Request)),
            ),
            (
                Stage::Turnaround,
                span(last(Direction::Request), first(Direction::Reply)),
            ),
            (Stage::Reply, span(first(Direction::Reply), last(Direction::Reply))),
        ]
        .into_iter()
        .filter_map(|(s, d)| Some((s, d?)))
        .collect()
    }

    /// A hash of the ordered places the packet went through; equal signatures mean the same
    /// path. Timings and ids do not take part.
    pub fn signature(&self) -> u64 {
        let mut h = DefaultHasher::new();
        for hop in &self.hops {
            hop.direction.hash(&mut h);
            hop.place().hash(&mut h);
        }
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::loader::DropReasons;
    use std::collections::HashMap;

    fn ev(ts: u64, hook: Hook, dir: Direction, netns: u32, ifindex: u32, ifname: &str, detail: Detail) -> KernelEvent {
        KernelEvent {
            ts_ns: ts,
            skb: 1,
            hook,
            direction: dir,
            proto: Proto::Icmp,
            id: 42,
            seq: 1,
            sport: 0,
            dport: 0,
            saddr: "10.0.0.1".parse().unwrap(),
            daddr: "10.0.0.2".parse().unwrap(),
            netns,
            ifindex,
            ifname: ifname.into(),
            trace_id: [0; 16],
            parent_span_id: [0; 8],
            foreign: false,
            tunnel: None,
            detail,
        }
    }

    /// The skb freed by kfree_skb with `reason` on interface `ifname` (ifindex `ifx`) of `netns`.
    fn freed(ts: u64, netns: u32, ifx: u32, ifname: &str, reason: u32) -> KernelEvent {
        ev(
            ts,
            KfreeSkb,
            Request,
            netns,
            ifx,
            ifname,
            Detail::Drop { reason, location: 0 },
        )
    }

    fn names() -> Names {
        let mut reasons = HashMap::new();
        reasons.insert(2, "NOT_SPECIFIED".to_string());
        reasons.insert(12, "NETFILTER_DROP".to_string());
        Names::new(DropReasons::new(reasons))
    }

    use Direction::{Reply, Request};
    use probe_common::Hook::{self, *};

    #[test]
    fn merges_receive_entry_points_and_orders_by_time() {
        let events = vec![
            ev(30, NetifReceiveSkb, Request, 2, 9, "eth0", Detail::Interface),
            ev(10, NetDevQueue, Request, 1, 5, "veth0", Detail::Interface),
            ev(20, NetifRx, Request, 2, 9, "eth0", Detail::Interface),
            ev(40, NetDevQueue, Reply, 2, 9, "eth0", Detail::Interface),
            ev(50, NetifRx, Reply, 1, 5, "veth0", Detail::Interface),
            ev(60, NetifReceiveSkb, Reply, 1, 5, "veth0", Detail::Interface),
        ];
        let j = Journey::assemble(
            (Proto::Icmp, 42, 1),
            events,
            Outcome::Reply {
                rtt: Duration::from_micros(50),
            },
            &mut names(),
        );
        let rows: Vec<(Direction, &str, HopDetail, u32)> = j
            .hops
            .iter()
            .map(|h| (h.direction, h.ifname.as_str(), h.detail.clone(), h.netns))
            .collect();
        let (tx, rx) = (HopDetail::Interface { io: Io::Tx }, HopDetail::Interface { io: Io::Rx });
        assert_eq!(
            rows,
            vec![
                (Request, "veth0", tx.clone(), 1),
                (Request, "eth0", rx.clone(), 2),
                (Reply, "eth0", tx, 2),
                (Reply, "veth0", rx, 1),
            ]
        );
        assert_eq!(j.hops[1].sources, vec!["netif_rx", "netif_receive_skb"]);
        assert_eq!(j.hops[1].ts_ns, 20);
        // Request 10 → 20, at the target 20 → 40, reply 40 → 50 (the reply's receive merged).
        assert_eq!(
            j.stages(),
            vec![
                (Stage::Request, Duration::from_nanos(10)),
                (Stage::Turnaround, Duration::from_nanos(20)),
                (Stage::Reply, Duration::from_nanos(10)),
            ]
        );
        assert_eq!(j.last_hop().unwrap().ifname, "veth0");
    }

    #[test]
    fn other_probes_events_are_ignored() {
        let mut other = ev(5, NetDevQueue, Request, 1, 5, "veth0", Detail::Interface);
        other.seq = 2;
        let j = Journey::assemble((Proto::Icmp, 42, 1), vec![other], Outcome::Timeout, &mut names());
        assert!(j.hops.is_empty());
    }

    #[test]
    fn drop_rows_and_not_specified_clones() {
        let nf = Detail::Netfilter {
            pf: 2,
            hook: 1,
            table: "filter".into(),
            chain: String::new(),
            verdict: 0,
        };
        let events = vec![
            ev(10, NetDevQueue, Request, 1, 5, "veth0", Detail::Interface),
            // A clone freed on the way: the packet goes on, so this is not its end.
            freed(15, 1, 5, "veth0", 2),
            ev(20, NetifReceiveSkb, Request, 2, 9, "eth0", Detail::Interface),
            ev(30, IptDoTable, Request, 2, 9, "eth0", nf),
            freed(40, 2, 9, "eth0", 12),
        ];
        let j = Journey::assemble((Proto::Icmp, 42, 1), events, Outcome::Timeout, &mut names());
        let kinds: Vec<Kind> = j.hops.iter().map(|h| h.kind()).collect();
        assert_eq!(
            kinds,
            vec![Kind::Interface, Kind::Interface, Kind::Netfilter, Kind::Drop]
        );
        // A dropped request has no reply stages.
        assert_eq!(j.stages(), vec![(Stage::Request, Duration::from_nanos(30))]);
        assert_eq!(j.hops[2].verdict_text(), "filter.INPUT:DROP");
        assert_eq!(j.hops[3].verdict_text(), "DROP NETFILTER_DROP");
        assert_eq!(j.last_hop().unwrap().netns, 2);

        // NOT_SPECIFIED as the very last thing seen is the packet's end.
        let events = vec![
            ev(10, NetDevQueue, Request, 1, 5, "veth0", Detail::Interface),
            freed(15, 1, 5, "veth0", 2),
        ];
        let j = Journey::assemble((Proto::Icmp, 42, 1), events, Outcome::Timeout, &mut names());
        assert_eq!(j.hops.last().unwrap().verdict_text(), "DROP NOT_SPECIFIED");
    }

    #[test]
    fn nftables_rows_name_table_and_chain() {
        let nf = Detail::Netfilter {
            pf: 2,
            hook: 3,
            table: "tp".into(),
            chain: "out".into(),
            verdict: 1,
        };
        let j = Journey::assemble(
            (Proto::Icmp, 42, 1),
            vec![ev(1, NftDoChain, Request, 1, 0, "", nf)],
            Outcome::Timeout,
            &mut names(),
        );
        assert_eq!(j.hops[0].verdict_text(), "tp/out:ACCEPT");
        assert!(matches!(
            j.hops[0].detail,
            HopDetail::Netfilter {
                hook: "OUTPUT",
                family: "ip",
                ..
            }
        ));
    }

    #[test]
    fn signature_follows_the_path_not_the_timing() {
        let a = vec![
            ev(10, NetDevQueue, Request, 1, 5, "veth0", Detail::Interface),
            ev(20, NetifReceiveSkb, Request, 2, 9, "eth0", Detail::Interface),
        ];
        let mut b = a.clone();
        b[1].ts_ns = 90;
        let mut c = a.clone();
        c[1].ifname = "eth1".into();
        c[1].ifindex = 10;
        let mut n = names();
        let sig = |e: Vec<KernelEvent>, n: &mut Names| {
            Journey::assemble((Proto::Icmp, 42, 1), e, Outcome::Timeout, n).signature()
        };
        assert_eq!(sig(a.clone(), &mut n), sig(b, &mut n));
        assert_ne!(sig(a, &mut n), sig(c, &mut n));
    }
}
