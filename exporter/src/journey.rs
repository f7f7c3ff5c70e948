//! Kernel events → per-packet journeys: the ordered hops of one probe packet and its reply,
//! the latency between them, where the packet was last seen, and a path signature.
//!
//! A journey is plain data: the `trace` table, `/metrics` and the OTLP exporter all read it.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use crate::kernel::events::{Detail, Direction, Hook, KernelEvent};
use crate::names::{self, Names};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HopKind {
    Interface,
    Netfilter,
    Drop,
}

impl HopKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HopKind::Interface => "interface",
            HopKind::Netfilter => "netfilter",
            HopKind::Drop => "drop",
        }
    }
}

/// One row of a journey: an interface crossing, a netfilter verdict, or a drop.
#[derive(Debug, Clone, Serialize)]
pub struct Hop {
    /// Echo id.
    pub probe: u16,
    pub seq: u16,
    pub direction: Direction,
    pub kind: HopKind,
    pub netns: u32,
    pub netns_name: Option<String>,
    pub ifname: String,
    pub ifindex: u32,
    pub saddr: IpAddr,
    pub daddr: IpAddr,
    /// CLOCK_MONOTONIC nanoseconds of the first event of the hop.
    pub ts_ns: u64,
    /// Interface hops: `tx` (queued for transmit) or `rx` (received).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io: Option<&'static str>,
    /// Kernel hooks that saw this hop, in order.
    pub sources: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

impl Hop {
    /// The namespace as labels show it: its name when known, else its inode.
    pub fn netns_label(&self) -> String {
        self.netns_name.clone().unwrap_or_else(|| self.netns.to_string())
    }

    /// What the hop did, as the trace table's last column shows it:
    /// `filter.INPUT:DROP` (iptables), `filter/input:ACCEPT` (nftables), `DROP reason`.
    pub fn verdict_text(&self) -> String {
        match self.kind {
            HopKind::Interface => String::new(),
            HopKind::Netfilter => {
                let table = self.table.as_deref().unwrap_or("?");
                let verdict = self.verdict.unwrap_or("?");
                match self.chain.as_deref() {
                    Some(chain) => format!("{table}/{chain}:{verdict}"),
                    None => format!("{table}.{}:{verdict}", self.hook.unwrap_or("?")),
                }
            }
            HopKind::Drop => format!("DROP {}", self.reason.as_deref().unwrap_or("?")),
        }
    }

    /// A short, bounded name for the place of this hop, for latency labels and signatures.
    pub fn place(&self) -> String {
        match self.kind {
            HopKind::Interface => format!("{}:{}@{}", self.ifname, self.io.unwrap_or("?"), self.netns_label()),
            HopKind::Netfilter => format!("{}@{}", self.verdict_text(), self.netns_label()),
            HopKind::Drop => format!("drop@{}", self.netns_label()),
        }
    }
}

/// How the probe ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Reply {
        rtt: Duration,
    },
    Timeout,
    /// Answered by an ICMP error instead of a reply (host unreachable, time exceeded...).
    IcmpError(String),
    /// The probe could not be sent (no route, permission...).
    SendError(String),
}

#[derive(Debug, Clone)]
pub struct Journey {
    pub probe: u16,
    pub seq: u16,
    pub hops: Vec<Hop>,
    pub outcome: Outcome,
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

impl Journey {
    /// Builds the journey of probe `(probe, seq)` from its events (any order).
    pub fn assemble(
        probe: u16,
        seq: u16,
        mut events: Vec<KernelEvent>,
        outcome: Outcome,
        names: &mut Names,
        not_specified: Option<u32>,
    ) -> Journey {
        events.retain(|e| e.id == probe && e.seq == seq);
        events.sort_by_key(|e| e.ts_ns);
        let mut hops: Vec<Hop> = Vec::with_capacity(events.len());
        for (i, ev) in events.iter().enumerate() {
            if matches!(ev.detail, Detail::Drop { .. }) && !is_real_drop(ev, &events[i + 1..], not_specified) {
                continue;
            }
            let io = match (&ev.detail, ev.hook) {
                (Detail::Interface, Hook::NetDevQueue) => Some("tx"),
                (Detail::Interface, _) => Some("rx"),
                _ => None,
            };
            // The receive entry points (netif_rx, GRO) and netif_receive_skb see the same
            // crossing: one hop, several sources.
            if let Some(last) = hops.last_mut()
                && last.kind == HopKind::Interface
                && matches!(ev.detail, Detail::Interface)
                && last.direction == ev.direction
                && last.netns == ev.netns
                && last.ifindex == ev.ifindex
                && last.io == io
                && !last.sources.contains(&ev.hook.as_str())
            {
                last.sources.push(ev.hook.as_str());
                continue;
            }
            let mut hop = Hop {
                probe,
                seq,
                direction: ev.direction,
                kind: HopKind::Interface,
                netns: ev.netns,
                netns_name: names.netns.name(ev.netns),
                ifname: ev.ifname.clone(),
                ifindex: ev.ifindex,
                saddr: ev.saddr,
                daddr: ev.daddr,
                ts_ns: ev.ts_ns,
                io,
                sources: vec![ev.hook.as_str()],
                family: None,
                hook: None,
                table: None,
                chain: None,
                verdict: None,
                reason: None,
                location: None,
            };
            match &ev.detail {
                Detail::Interface => {}
                Detail::Netfilter {
                    pf,
                    hook,
                    table,
                    chain,
                    verdict,
                } => {
                    hop.kind = HopKind::Netfilter;
                    hop.family = Some(names::nf_family(*pf));
                    hop.hook = Some(names::nf_hook(*hook));
                    hop.table = Some(table.clone());
                    hop.chain = (!chain.is_empty()).then(|| chain.clone());
                    hop.verdict = Some(names::nf_verdict(*verdict));
                }
                Detail::Drop { reason, location } => {
                    hop.kind = HopKind::Drop;
                    hop.reason = Some(names.drop_reason(*reason));
                    hop.location = Some(names.location(*location));
                }
            }
            hops.push(hop);
        }
        Journey {
            probe,
            seq,
            hops,
            outcome,
        }
    }

    pub fn replied(&self) -> bool {
        matches!(self.outcome, Outcome::Reply { .. })
    }

    /// Where the packet was last seen: the last hop of the journey.
    pub fn last_hop(&self) -> Option<&Hop> {
        self.hops.last()
    }

    /// Time between each hop and the next, with the places of both.
    pub fn latencies(&self) -> Vec<(String, String, Duration)> {
        self.hops
            .windows(2)
            .map(|w| {
                (
                    w[0].place(),
                    w[1].place(),
                    Duration::from_nanos(w[1].ts_ns.saturating_sub(w[0].ts_ns)),
                )
            })
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
    use std::collections::HashMap;

    fn ev(ts: u64, hook: Hook, dir: Direction, netns: u32, ifindex: u32, ifname: &str, detail: Detail) -> KernelEvent {
        KernelEvent {
            ts_ns: ts,
            skb: 1,
            hook,
            direction: dir,
            id: 42,
            seq: 1,
            saddr: "10.0.0.1".parse().unwrap(),
            daddr: "10.0.0.2".parse().unwrap(),
            netns,
            ifindex,
            ifname: ifname.into(),
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
        Names::new(reasons)
    }

    use Direction::{Reply, Request};
    use Hook::*;

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
            42,
            1,
            events,
            Outcome::Reply {
                rtt: Duration::from_micros(50),
            },
            &mut names(),
            Some(2),
        );
        let rows: Vec<(Direction, &str, Option<&str>, u32)> = j
            .hops
            .iter()
            .map(|h| (h.direction, h.ifname.as_str(), h.io, h.netns))
            .collect();
        assert_eq!(
            rows,
            vec![
                (Request, "veth0", Some("tx"), 1),
                (Request, "eth0", Some("rx"), 2),
                (Reply, "eth0", Some("tx"), 2),
                (Reply, "veth0", Some("rx"), 1),
            ]
        );
        assert_eq!(j.hops[1].sources, vec!["netif_rx", "netif_receive_skb"]);
        assert_eq!(j.hops[1].ts_ns, 20);
        let lat = j.latencies();
        assert_eq!(lat.len(), 3);
        assert_eq!(lat[0].2, Duration::from_nanos(10));
        assert_eq!(j.last_hop().unwrap().ifname, "veth0");
    }

    #[test]
    fn other_probes_events_are_ignored() {
        let mut other = ev(5, NetDevQueue, Request, 1, 5, "veth0", Detail::Interface);
        other.seq = 2;
        let j = Journey::assemble(42, 1, vec![other], Outcome::Timeout, &mut names(), Some(2));
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
        let j = Journey::assemble(42, 1, events, Outcome::Timeout, &mut names(), Some(2));
        let kinds: Vec<HopKind> = j.hops.iter().map(|h| h.kind).collect();
        assert_eq!(
            kinds,
            vec![
                HopKind::Interface,
                HopKind::Interface,
                HopKind::Netfilter,
                HopKind::Drop
            ]
        );
        assert_eq!(j.hops[2].verdict_text(), "filter.INPUT:DROP");
        assert_eq!(j.hops[3].verdict_text(), "DROP NETFILTER_DROP");
        assert_eq!(j.last_hop().unwrap().netns, 2);

        // NOT_SPECIFIED as the very last thing seen is the packet's end.
        let events = vec![
            ev(10, NetDevQueue, Request, 1, 5, "veth0", Detail::Interface),
            freed(15, 1, 5, "veth0", 2),
        ];
        let j = Journey::assemble(42, 1, events, Outcome::Timeout, &mut names(), Some(2));
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
            42,
            1,
            vec![ev(1, NftDoChain, Request, 1, 0, "", nf)],
            Outcome::Timeout,
            &mut names(),
            None,
        );
        assert_eq!(j.hops[0].verdict_text(), "tp/out:ACCEPT");
        assert_eq!(j.hops[0].hook, Some("OUTPUT"));
        assert_eq!(j.hops[0].family, Some("ip"));
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
        let sig =
            |e: Vec<KernelEvent>, n: &mut Names| Journey::assemble(42, 1, e, Outcome::Timeout, n, None).signature();
        assert_eq!(sig(a.clone(), &mut n), sig(b, &mut n));
        assert_ne!(sig(a, &mut n), sig(c, &mut n));
    }
}
