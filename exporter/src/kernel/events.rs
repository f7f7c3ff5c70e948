//! Ring-buffer records → typed events.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use probe_common::{Direction, Event, FLAG_FOREIGN, Hook, Kind, Proto, Tunnel};

/// What an event says beyond where the packet was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detail {
    Interface,
    Netfilter {
        pf: u8,
        hook: u8,
        table: String,
        chain: String,
        verdict: u32,
    },
    Drop {
        reason: u32,
        location: u64,
    },
}

/// One decoded ring-buffer record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelEvent {
    /// CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    pub skb: u64,
    pub hook: Hook,
    pub direction: Direction,
    pub proto: Proto,
    /// The echo id, or the port tracepkt bound (TCP, UDP).
    pub id: u16,
    pub seq: u16,
    /// TCP and UDP: the ports at this hop.
    pub sport: u16,
    pub dport: u16,
    pub saddr: IpAddr,
    pub daddr: IpAddr,
    pub netns: u32,
    pub ifindex: u32,
    pub ifname: String,
    /// The trace id the probe's payload carries.
    pub trace_id: [u8; 16],
    /// The span the probe's payload names as its parent: the sender's root span.
    pub parent_span_id: [u8; 8],
    /// Another node's probe.
    pub foreign: bool,
    /// Seen inside this tunnel: the addresses are the outer header's.
    pub tunnel: Option<Tunnel>,
    pub detail: Detail,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes, expected {1}")]
    Size(usize, usize),
    #[error("unknown {0} value {1}")]
    Unknown(&'static str, u8),
}

pub(crate) fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn addr(version: u8, b: &[u8; 16]) -> IpAddr {
    if version == 6 {
        IpAddr::V6(Ipv6Addr::from(*b))
    } else {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    }
}

impl KernelEvent {
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let size = std::mem::size_of::<Event>();
        if bytes.len() < size {
            return Err(DecodeError::Size(bytes.len(), size));
        }
        // SAFETY: Event is plain old data and the slice is long enough; read_unaligned copes
        // with any alignment of the ring-buffer slot.
        let e: Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let direction = Direction::from_u8(e.direction).ok_or(DecodeError::Unknown("direction", e.direction))?;
        let hook = Hook::from_u8(e.hook).ok_or(DecodeError::Unknown("hook", e.hook))?;
        let kind = Kind::from_u8(e.kind).ok_or(DecodeError::Unknown("kind", e.kind))?;
        let proto = Proto::from_u8(e.proto).ok_or(DecodeError::Unknown("proto", e.proto))?;
        let detail = match kind {
            Kind::Interface => Detail::Interface,
            Kind::Netfilter => Detail::Netfilter {
                pf: e.nf_pf,
                hook: e.nf_hook,
                table: cstr(&e.table),
                chain: cstr(&e.chain),
                verdict: e.verdict,
            },
            Kind::Drop => Detail::Drop {
                reason: e.verdict,
                location: e.location,
            },
        };
        Ok(KernelEvent {
            ts_ns: e.ts_ns,
            skb: e.skb,
            hook,
            direction,
            proto,
            id: e.id,
            seq: e.seq,
            sport: e.sport,
            dport: e.dport,
            saddr: addr(e.ip_version, &e.saddr),
            daddr: addr(e.ip_version, &e.daddr),
            netns: e.netns,
            ifindex: e.ifindex,
            ifname: cstr(&e.ifname),
            trace_id: e.trace_ids().0,
            parent_span_id: e.trace_ids().1,
            foreign: e.flags & FLAG_FOREIGN != 0,
            tunnel: Tunnel::from_flags(e.flags),
            detail,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn raw(kind: Kind, hook: Hook, dir: Direction) -> Event {
        let mut e = Event::zeroed();
        e.ts_ns = 1_000;
        e.skb = 0xffff_8880_1234_5600;
        e.kind = kind as u8;
        e.hook = hook as u8;
        e.direction = dir as u8;
        e.ip_version = 4;
        e.proto = Proto::Icmp as u8;
        e.id = 0xbeef;
        e.seq = 7;
        e.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        e.daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        e.netns = 4026531840;
        e.ifindex = 3;
        e.ifname[..5].copy_from_slice(b"veth0");
        e
    }

    pub fn bytes(e: &Event) -> Vec<u8> {
        // SAFETY: Event is repr(C) with no padding; viewing it as bytes is sound.
        unsafe { std::slice::from_raw_parts((e as *const Event).cast::<u8>(), std::mem::size_of::<Event>()) }.to_vec()
    }

    /// Real records for the fuzz target's seed corpus: one of each kind, over IPv4 and IPv6
    /// (TRACEPKT_UPDATE_FUZZ_SEEDS=1 rewrites the committed copies).
    #[test]
    fn fuzz_seeds_are_current() {
        let interface = raw(Kind::Interface, Hook::NetDevQueue, Direction::Request);
        let mut netfilter = raw(Kind::Netfilter, Hook::NftDoChain, Direction::Reply);
        netfilter.ip_version = 6;
        netfilter.saddr = "fd00::1".parse::<Ipv6Addr>().unwrap().octets();
        netfilter.daddr = "fd00::2".parse::<Ipv6Addr>().unwrap().octets();
        netfilter.table[..6].copy_from_slice(b"filter");
        netfilter.chain[..5].copy_from_slice(b"input");
        netfilter.nf_pf = 10;
        netfilter.nf_hook = 1;
        netfilter.verdict = 1;
        let mut drop = raw(Kind::Drop, Hook::KfreeSkb, Direction::Request);
        drop.proto = Proto::Tcp as u8;
        drop.sport = 40000;
        drop.dport = 443;
        drop.verdict = 12;
        drop.location = 0xffffffff81a00180;
        for (name, e) in [
            ("interface.bin", interface),
            ("netfilter-ipv6.bin", netfilter),
            ("drop-tcp.bin", drop),
        ] {
            let b = bytes(&e);
            KernelEvent::decode(&b).unwrap();
            crate::fuzzing::check_seed("event", name, &b);
        }
    }

    #[test]
    fn decodes_interface_event() {
        let ev = KernelEvent::decode(&bytes(&raw(Kind::Interface, Hook::NetDevQueue, Direction::Request))).unwrap();
        assert_eq!(ev.hook, Hook::NetDevQueue);
        assert_eq!(ev.direction, Direction::Request);
        assert_eq!(ev.id, 0xbeef);
        assert_eq!(ev.seq, 7);
        assert_eq!(ev.saddr, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(ev.daddr, "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(ev.ifname, "veth0");
        assert_eq!(ev.netns, 4026531840);
        assert_eq!(ev.detail, Detail::Interface);
        assert!(!ev.foreign && ev.tunnel.is_none());
    }

    #[test]
    fn decodes_another_nodes_probe_seen_inside_a_tunnel() {
        let mut e = raw(Kind::Interface, Hook::NetifReceiveSkb, Direction::Request);
        e.flags = probe_common::FLAG_FOREIGN | (Tunnel::Geneve as u8) << probe_common::FLAG_TUNNEL_SHIFT;
        e.trace = [1u64.to_be(), 2u64.to_be(), 3u64.to_be()];
        let ev = KernelEvent::decode(&bytes(&e)).unwrap();
        assert!(ev.foreign);
        assert_eq!(ev.tunnel, Some(Tunnel::Geneve));
        assert_eq!(ev.trace_id[7], 1);
        assert_eq!(ev.trace_id[15], 2);
        assert_eq!(ev.parent_span_id, 3u64.to_be_bytes());
    }

    #[test]
    fn decodes_ipv6_netfilter_and_drop() {
        let mut e = raw(Kind::Netfilter, Hook::NftDoChain, Direction::Reply);
        e.ip_version = 6;
        e.saddr = "fd00::1".parse::<Ipv6Addr>().unwrap().octets();
        e.table[..6].copy_from_slice(b"filter");
        e.chain[..5].copy_from_slice(b"input");
        e.nf_pf = 10;
        e.nf_hook = 1;
        e.verdict = 0;
        let ev = KernelEvent::decode(&bytes(&e)).unwrap();
        assert_eq!(ev.saddr, "fd00::1".parse::<IpAddr>().unwrap());
        assert_eq!(
            ev.detail,
            Detail::Netfilter {
                pf: 10,
                hook: 1,
                table: "filter".into(),
                chain: "input".into(),
                verdict: 0
            }
        );
        let mut d = raw(Kind::Drop, Hook::KfreeSkb, Direction::Request);
        d.verdict = 12;
        d.location = 0xffffffff81a00180;
        let ev = KernelEvent::decode(&bytes(&d)).unwrap();
        assert_eq!(
            ev.detail,
            Detail::Drop {
                reason: 12,
                location: 0xffffffff81a00180
            }
        );
    }

    #[test]
    fn every_truncation_and_random_bytes_are_errors() {
        let size = std::mem::size_of::<Event>();
        let b = bytes(&raw(Kind::Netfilter, Hook::NftDoChain, Direction::Reply));
        for len in 0..size {
            let e = KernelEvent::decode(&b[..len]).unwrap_err();
            assert_eq!(e.to_string(), format!("record of {len} bytes, expected {size}"));
        }
        // A longer slot (the ring buffer rounds records up) decodes as the record it starts with.
        let mut longer = b.clone();
        longer.extend_from_slice(&[0xff; 8]);
        assert_eq!(KernelEvent::decode(&longer), KernelEvent::decode(&b));
        // Random records: decoded or refused by name, never a panic.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let (mut decoded, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let record: Vec<u8> = (0..size)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    // Small values so that some records carry valid enums.
                    (state % 4) as u8
                })
                .collect();
            match KernelEvent::decode(&record) {
                Ok(_) => decoded += 1,
                Err(e) => {
                    assert!(e.to_string().starts_with("unknown "), "{e}");
                    refused += 1;
                }
            }
        }
        assert!(decoded > 0 && refused > 0, "{decoded} decoded, {refused} refused");
    }

    #[test]
    fn rejects_short_and_garbled_records() {
        let b = bytes(&raw(Kind::Interface, Hook::NetifRx, Direction::Reply));
        assert!(matches!(KernelEvent::decode(&b[..10]), Err(DecodeError::Size(10, _))));
        let mut bad = raw(Kind::Interface, Hook::NetifRx, Direction::Reply);
        bad.kind = 9;
        assert_eq!(KernelEvent::decode(&bytes(&bad)), Err(DecodeError::Unknown("kind", 9)));
        bad.kind = Kind::Interface as u8;
        bad.direction = 0;
        assert_eq!(
            KernelEvent::decode(&bytes(&bad)),
            Err(DecodeError::Unknown("direction", 0))
        );
    }
}
