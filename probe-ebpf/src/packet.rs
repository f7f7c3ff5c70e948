//! "Is it ours?" and the packet fields an event carries.
//!
//! Foreign traffic must cost as little as possible, so checks run cheapest first, and most
//! packets are turned away from the skb's own fields alone: first their IP length, which must
//! be a probe's (one of the fixed `PROBE_L3_LEN_*`, or a configured `size:` while such a probe
//! is in flight: one bit of the `PROBE_LENGTHS` bitmap; on receive hooks the length is one
//! field), then the ethertype.
//! Only then are packet bytes read: the IP protocol; for ICMP the echo type, the `PROBES` map
//! and last the payload's magic and version; for TCP and UDP the ports, in the `PROBES` map.
//! In BTF-typed programs the skb fields are plain loads the verifier checks against BTF,
//! not helper calls: a foreign packet costs a load or two and a compare.
//!
//! Another node's probe is in no `PROBES` entry here: while recognising those is on (the
//! settings' `foreign_budget`), an echo or UDP packet that misses the map is taken when its
//! payload is a tracepkt one and the budget has room. While `tunnels` is on, a VXLAN,
//! Geneve or IPIP packet is looked into once, and the probe inside reported with the outer
//! addresses.

use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_buf};
use probe_common::{
    DNS_L3_LEN_V4, DNS_L3_LEN_V6, Direction, Event, FLAG_FOREIGN, FLAG_TUNNEL_SHIFT, FOREIGN_TAG, Hook,
    PROBE_L3_LEN_V4, PROBE_L3_LEN_V6, ProbeInfo, Proto, Tunnel, payload, probe_key,
};

use crate::PROBES;

const ETH_P_IP_BE: u16 = 0x0800u16.to_be();
const ETH_P_IPV6_BE: u16 = 0x86DDu16.to_be();
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_IPIP: u8 = 4;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
/// Transparent Ethernet bridging: a Geneve packet carrying an Ethernet frame.
const ETH_P_TEB: u16 = 0x6558;
/// `(typeof(skb->network_header))~0U`: header offset not set.
const HEADER_UNSET: u16 = 0xffff;

/// Where the IP header is, relative to what the hook knows.
#[derive(Clone, Copy)]
pub enum L3 {
    /// Receive hooks run after `eth_type_trans`: `skb->data` points at the IP header, while
    /// `network_header` may still hold a stale value.
    Data,
    /// `net_dev_queue`: `__dev_queue_xmit` has just reset the MAC header to `skb->data`, and
    /// the stack has set `network_header`; the link header is the distance between them.
    Transmit,
    /// Netfilter and free paths: the stack has set `network_header`; `skb->data` may sit
    /// before or after it.
    NetworkHeader,
}

/// How a program may read the skb's fields.
#[derive(Clone, Copy)]
pub enum Access {
    /// `tp_btf`: the skb is a BTF-typed pointer; fields are direct loads.
    Btf,
    /// Classic tracepoints and kprobes: through `bpf_probe_read_kernel`.
    Probe,
}

#[inline(always)]
fn field<T: Copy>(skb: usize, off: usize, access: Access) -> Option<T> {
    match access {
        // SAFETY: the verifier checks the load against sk_buff's BTF and turns it into a
        // fault-tolerant load; `off` is a frozen constant naming a field of that type.
        Access::Btf => Some(unsafe { core::ptr::read((skb + off) as *const T) }),
        Access::Probe => unsafe { read(skb, off) },
    }
}

/// One of our probe packets, as seen at a hook.
#[derive(Clone, Copy)]
pub struct Probe {
    pub info: ProbeInfo,
    pub ip_version: u8,
    pub proto: Proto,
    pub direction: Direction,
    pub id: u16,
    pub seq: u16,
    pub sport: u16,
    pub dport: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// Payload bytes 8..32: trace id and parent span id.
    pub trace: [u64; 3],
    /// `FLAG_FOREIGN` and the tunnel, as [`Event::flags`]. Also makes what would be padding a
    /// field: LLVM copies padding as undefined bytes, and may fill them from a register that
    /// holds a pointer; the 6.1 verifier refuses such a partial pointer spill ("invalid size
    /// of register spill") when the probe is stashed.
    pub flags: u8,
}

impl Probe {
    #[inline(always)]
    fn empty() -> Self {
        Probe {
            info: ProbeInfo { tag: 0 },
            ip_version: 0,
            proto: Proto::Icmp,
            direction: Direction::Request,
            id: 0,
            seq: 0,
            sport: 0,
            dport: 0,
            saddr: [0; 16],
            daddr: [0; 16],
            trace: [0; 3],
            flags: 0,
        }
    }
}

#[inline(always)]
unsafe fn read<T>(base: usize, off: usize) -> Option<T> {
    unsafe { bpf_probe_read_kernel((base + off) as *const T).ok() }
}

/// Whether an IP length is a probe's: the first test every packet meets (see
/// `PROBE_LENGTHS`).
#[inline(always)]
fn probe_sized(l3_len: usize) -> bool {
    crate::probe_length(l3_len)
}

/// Returns the probe this skb carries, or `None` for every packet that is not one of ours.
#[inline(always)]
pub fn ours(skb: usize, l3: L3, access: Access) -> Option<Probe> {
    if skb == 0 {
        return None;
    }
    // The IP length first, from as few fields as the hook allows: almost no other packet has
    // a probe's length, so almost every packet is turned away here.
    let len = field::<u32>(skb, off!(SkbLen), access)? as usize;
    let (ip, l3_len) = match l3 {
        L3::Data => {
            if !probe_sized(len) {
                return None;
            }
            (field::<usize>(skb, off!(SkbData), access)?, len)
        }
        L3::Transmit => {
            let nh: u16 = field(skb, off!(SkbNetworkHeader), access)?;
            let mac: u16 = field(skb, off!(SkbMacHeader), access)?;
            let l3_len = len.wrapping_sub(nh.wrapping_sub(mac) as usize);
            if !probe_sized(l3_len) || nh == HEADER_UNSET {
                return None;
            }
            let head: usize = field(skb, off!(SkbHead), access)?;
            (head + nh as usize, l3_len)
        }
        L3::NetworkHeader => {
            let nh: u16 = field(skb, off!(SkbNetworkHeader), access)?;
            if nh == HEADER_UNSET {
                return None;
            }
            let data: usize = field(skb, off!(SkbData), access)?;
            let head: usize = field(skb, off!(SkbHead), access)?;
            let ip = head + nh as usize;
            // skb->len counts from skb->data, which may sit before (link header still on)
            // or after (already pulled to the transport header) the IP header.
            let l3_len = (len + data).wrapping_sub(ip);
            if !probe_sized(l3_len) {
                return None;
            }
            (ip, l3_len)
        }
    };
    if ip == 0 {
        return None;
    }
    let ethertype: u16 = field(skb, off!(SkbProtocol), access)?;
    let mut p = Probe::empty();
    let (ipproto, l4) = network(&mut p, ethertype, ip)?;
    // A probe inside a tunnel: the outer packet passed the first test only if the tunnelled
    // lengths are allowed, which user space does only while `tunnels` is on.
    if crate::tunnels()
        && p.ip_version == 4
        && let Some((tunnel, inner_ip)) = tunnel_inner(ipproto, l4, l3_len)
    {
        // The same `Probe` for the inner packet: the programs' stack, shared with the event
        // and the callers' frames, has no room for a second one.
        let outer: [u8; 8] = [
            p.saddr[0], p.saddr[1], p.saddr[2], p.saddr[3], p.daddr[0], p.daddr[1], p.daddr[2], p.daddr[3],
        ];
        p = Probe::empty();
        let (inner_proto, inner_l4) = network(&mut p, ETH_P_IP_BE, inner_ip)?;
        transport(
            &mut p,
            inner_proto,
            inner_l4,
            l3_len.wrapping_sub(inner_ip.wrapping_sub(ip)),
        )?;
        // The hop is the tunnel's: it shows the outer addresses.
        p.saddr[..4].copy_from_slice(&outer[..4]);
        p.daddr[..4].copy_from_slice(&outer[4..]);
        p.flags |= (tunnel as u8) << FLAG_TUNNEL_SHIFT;
        return Some(p);
    }
    transport(&mut p, ipproto, l4, l3_len)?;
    if p.ip_version == 6 {
        // Only for our own packets: the addresses are the bulk of an IPv6 header.
        unsafe {
            bpf_probe_read_kernel_buf((ip + 8) as *const u8, &mut p.saddr).ok()?;
            bpf_probe_read_kernel_buf((ip + 24) as *const u8, &mut p.daddr).ok()?;
        }
    }
    Some(p)
}

/// Reads the IP header at `ip`: the version and, for IPv4, the addresses into `p`. Returns
/// the transport protocol and where its header starts. Extension headers are not followed:
/// tracepkt's own probes carry none.
#[inline(always)]
fn network(p: &mut Probe, ethertype: u16, ip: usize) -> Option<(u8, usize)> {
    if ethertype == ETH_P_IP_BE {
        let hdr: [u8; 20] = unsafe { read(ip, 0)? };
        if hdr[0] >> 4 != 4 {
            return None;
        }
        p.ip_version = 4;
        p.saddr[..4].copy_from_slice(&hdr[12..16]);
        p.daddr[..4].copy_from_slice(&hdr[16..20]);
        Some((hdr[9], ip + ((hdr[0] & 0x0f) as usize) * 4))
    } else if ethertype == ETH_P_IPV6_BE {
        let hdr: [u8; 8] = unsafe { read(ip, 0)? };
        if hdr[0] >> 4 != 6 {
            return None;
        }
        p.ip_version = 6;
        Some((hdr[6], ip + 40))
    } else {
        None
    }
}

/// Where the inner IPv4 header of a VXLAN, Geneve or IPIP packet starts, if this is one that
/// may carry a probe (not itself a UDP probe's length).
#[inline(always)]
fn tunnel_inner(ipproto: u8, l4: usize, l3_len: usize) -> Option<(Tunnel, usize)> {
    match ipproto {
        IPPROTO_IPIP => Some((Tunnel::Ipip, l4)),
        IPPROTO_UDP if l3_len != PROBE_L3_LEN_V4 && l3_len != DNS_L3_LEN_V4 => {
            // The UDP header and the 8-byte VXLAN or Geneve header after it.
            let h: [u8; 16] = unsafe { read(l4, 0)? };
            let dport = u16::from_be_bytes([h[2], h[3]]);
            let (tunnel, eth) = if dport == Tunnel::VXLAN_PORT {
                (Tunnel::Vxlan, l4 + 16)
            } else if dport == Tunnel::GENEVE_PORT && u16::from_be_bytes([h[10], h[11]]) == ETH_P_TEB {
                // Geneve's option length is in 4-byte words.
                (Tunnel::Geneve, l4 + 16 + ((h[8] & 0x3f) as usize) * 4)
            } else {
                return None;
            };
            let ethertype: u16 = unsafe { read(eth, 12)? };
            (ethertype == ETH_P_IP_BE).then_some((tunnel, eth + 14))
        }
        _ => None,
    }
}

/// Recognises the probe from its transport header (and payload), given the IP protocol, where
/// the transport header starts and the IP length.
#[inline(always)]
fn transport(p: &mut Probe, ipproto: u8, l4: usize, l3_len: usize) -> Option<()> {
    let icmp_len = if p.ip_version == 4 {
        PROBE_L3_LEN_V4
    } else {
        PROBE_L3_LEN_V6
    };
    match ipproto {
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            // A sized probe is longer: its payload starts the same, padded with zeros.
            if l3_len < icmp_len || (ipproto == IPPROTO_ICMP) != (p.ip_version == 4) {
                return None;
            }
            let echo: [u8; 8] = unsafe { read(l4, 0)? };
            p.direction = match (p.ip_version, echo[0]) {
                (4, 8) | (6, 128) => Direction::Request,
                (4, 0) | (6, 129) => Direction::Reply,
                _ => return None,
            };
            p.id = u16::from_be_bytes([echo[4], echo[5]]);
            p.seq = u16::from_be_bytes([echo[6], echo[7]]);
            match unsafe { PROBES.get(probe_key(Proto::Icmp, p.id)) } {
                Some(info) => {
                    p.info = *info;
                    // The payload's magic and version, so that a foreign echo reusing a
                    // registered id is not taken for ours: one fixed-size read, for packets
                    // that passed every cheaper test.
                    p.trace = payload_trace(l4 + 8)?;
                }
                None => p.trace = foreign(p, l4 + 8)?,
            }
        }
        IPPROTO_TCP | IPPROTO_UDP => {
            let proto = if ipproto == IPPROTO_TCP { Proto::Tcp } else { Proto::Udp };
            // UDP probes carry the payload, so they are ICMP-sized, or a padded DNS query;
            // TCP segments are a SYN (or SYN-ACK) or a bare segment.
            let dns_len = if p.ip_version == 4 {
                DNS_L3_LEN_V4
            } else {
                DNS_L3_LEN_V6
            };
            if (proto == Proto::Udp && l3_len != icmp_len && l3_len != dns_len)
                || (proto == Proto::Tcp && l3_len > PROBE_L3_LEN_V6)
            {
                return None;
            }
            let ports: [u8; 4] = unsafe { read(l4, 0)? };
            p.proto = proto;
            p.sport = u16::from_be_bytes([ports[0], ports[1]]);
            p.dport = u16::from_be_bytes([ports[2], ports[3]]);
            // The port tracepkt bound is the source on the way out and the destination on the
            // way back; NAT rewrites the other side's.
            if let Some(info) = unsafe { PROBES.get(probe_key(proto, p.sport)) } {
                p.info = *info;
                p.id = p.sport;
            } else if let Some(info) = unsafe { PROBES.get(probe_key(proto, p.dport)) } {
                p.info = *info;
                p.id = p.dport;
                p.direction = Direction::Reply;
            } else if proto == Proto::Udp {
                // Another node's UDP probe, told by its payload; which way it goes is not
                // known here, so it is taken as a request.
                p.id = p.sport;
                p.trace = foreign(p, l4 + 8)?;
                return Some(());
            } else {
                return None;
            }
            if proto == Proto::Udp {
                // A payload of the user's own carries no trace context.
                p.trace = payload_trace(l4 + 8).unwrap_or([0; 3]);
            }
        }
        _ => return None,
    }
    Some(())
}

/// Another node's probe, recognised by its payload while recognising them is on and this
/// second's budget has room: marks `p` as foreign and returns its trace context.
#[inline(always)]
fn foreign(p: &mut Probe, payload: usize) -> Option<[u64; 3]> {
    if crate::foreign_budget() == 0 {
        return None;
    }
    let trace = payload_trace(payload)?;
    if !crate::foreign_admit() {
        return None;
    }
    p.info = ProbeInfo { tag: FOREIGN_TAG };
    p.flags |= FLAG_FOREIGN;
    Some(trace)
}

/// The trace context of a tracepkt payload at `at`, or `None` for any other payload.
#[inline(always)]
fn payload_trace(at: usize) -> Option<[u64; 3]> {
    let pl: [u64; payload::LEN / 8] = unsafe { read(at, 0)? };
    if !payload::is_head(u64::from_le(pl[0])) {
        return None;
    }
    Some([pl[1], pl[2], pl[3]])
}

/// The device an skb is on.
#[derive(Clone, Copy)]
pub struct Dev {
    pub ifindex: u32,
    pub netns: u32,
    pub ifname: [u8; 16],
}

/// The device an skb is on: its ifindex, name and network namespace inode.
#[inline(always)]
pub fn dev_of(skb: usize) -> Dev {
    let mut d = Dev {
        ifindex: 0,
        netns: 0,
        ifname: [0; 16],
    };
    let Some(dev) = (unsafe { read::<usize>(skb, off!(SkbDev)) }) else {
        return d;
    };
    if dev == 0 {
        return d;
    }
    d.ifindex = unsafe { read::<u32>(dev, off!(DevIfindex)) }.unwrap_or(0);
    unsafe {
        let _ = bpf_probe_read_kernel_buf((dev + off!(DevName)) as *const u8, &mut d.ifname);
    }
    d.netns = netns_of_dev(dev);
    d
}

/// Copies the device of an skb into an event.
#[inline(always)]
pub fn device(skb: usize, ev: &mut Event) {
    set_dev(ev, &dev_of(skb));
}

#[inline(always)]
pub fn set_dev(ev: &mut Event, d: &Dev) {
    ev.ifindex = d.ifindex;
    ev.netns = d.netns;
    ev.ifname = d.ifname;
}

/// `dev->nd_net.net->ns.inum`
#[inline(always)]
pub fn netns_of_dev(dev: usize) -> u32 {
    match unsafe { read::<usize>(dev, off!(DevNdNet)) } {
        Some(net) if net != 0 => netns_of_net(net),
        _ => 0,
    }
}

#[inline(always)]
pub fn netns_of_net(net: usize) -> u32 {
    unsafe { read::<u32>(net, off!(NetNsInum)) }.unwrap_or(0)
}

/// Fills the packet part of an event.
#[inline(always)]
pub fn fill(ev: &mut Event, p: &Probe, skb: usize, hook: Hook) {
    ev.ts_ns = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    ev.skb = skb as u64;
    ev.kind = hook.spec().kind as u8;
    ev.hook = hook as u8;
    ev.direction = p.direction as u8;
    ev.ip_version = p.ip_version;
    ev.id = p.id;
    ev.seq = p.seq;
    ev.saddr = p.saddr;
    ev.daddr = p.daddr;
    ev.trace = p.trace;
    ev.sport = p.sport;
    ev.dport = p.dport;
    ev.proto = p.proto as u8;
    ev.flags = p.flags;
}
