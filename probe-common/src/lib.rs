//! Types shared by the kernel programs (`probe-ebpf`) and user space (`exporter`): the records
//! that cross the boundary, the map names and keys, and the hook table that says which kernel
//! hook is followed by which programs and needs which struct offsets.
//!
//! Everything that crosses the kernel/user boundary as raw bytes is `#[repr(C)]` with explicit
//! padding fields: no implicit padding, no uninitialised bytes. Enums cross as their `u8`
//! value and are checked on the way back in.
#![no_std]

mod hooks;
mod offsets;
pub mod payload;
mod settings;

pub use hooks::{HOOKS, HookSpec, Point, Via};
pub use offsets::{Off, Offsets, Source};
pub use settings::{Reasons, Settings};

pub const IFNAMSIZ: usize = 16;
/// Longest netfilter table or chain name kept (`XT_TABLE_MAXNAMELEN`; nftables allows longer
/// names, which are cut, never overflowed).
pub const NAME_LEN: usize = 32;

/// Bytes of payload after the ICMP echo or UDP header in every probe (and so in every reply).
pub const PROBE_PAYLOAD_LEN: usize = payload::LEN;
/// Total IP length of an ICMP or UDP probe packet, and of a TCP SYN or SYN-ACK with Linux's
/// options (MSS, SACK, timestamps, window scale: a 40-byte TCP header). The kernel programs
/// reject every packet of another length from the skb's own fields, before reading a byte of
/// the packet.
pub const PROBE_L3_LEN_V4: usize = 20 + 8 + PROBE_PAYLOAD_LEN;
pub const PROBE_L3_LEN_V6: usize = 40 + 8 + PROBE_PAYLOAD_LEN;
/// IP length of a TCP segment without options: the RST that refuses a probe, or ends it.
pub const TCP_BARE_L3_LEN_V4: usize = 20 + 20;
pub const TCP_BARE_L3_LEN_V6: usize = 40 + 20;
/// A DNS probe's query, padded to this many bytes (EDNS(0) padding), so that its IP length is
/// fixed too. Answers vary in length: only the query's way out is followed.
pub const DNS_QUERY_LEN: usize = 128;
pub const DNS_L3_LEN_V4: usize = 20 + 8 + DNS_QUERY_LEN;
pub const DNS_L3_LEN_V6: usize = 40 + 8 + DNS_QUERY_LEN;

/// The largest IP length a sized probe may have (`size:`): the IPv4 total length field's
/// limit, which IPv6 probes share.
pub const MAX_PROBE_LEN: usize = 65535;
/// 64-bit words of the kernel programs' `PROBE_LENGTHS` bitmap: one bit per IP length
/// 0..=[`MAX_PROBE_LEN`].
pub const PROBE_LENGTH_WORDS: usize = (MAX_PROBE_LEN + 1) / 64;
/// The lengths every probe-related packet may have whatever the configuration: an ICMP or UDP
/// probe of the default size (IPv4 and IPv6), and the bare TCP segments (40, and 60 as
/// IPv6), which refuse or end a TCP probe, and a DNS probe's padded query. A TCP SYN is 60 or 80 too.
pub const FIXED_PROBE_LENGTHS: [usize; 5] = [
    TCP_BARE_L3_LEN_V4,
    PROBE_L3_LEN_V4,
    PROBE_L3_LEN_V6,
    DNS_L3_LEN_V4,
    DNS_L3_LEN_V6,
];

/// The bitmap of IP lengths the kernel programs let past their first test: bit `n % 64` of
/// word `n / 64` is set for each allowed length `n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct ProbeLengths(pub [u64; PROBE_LENGTH_WORDS]);

impl ProbeLengths {
    /// Only [`FIXED_PROBE_LENGTHS`].
    pub const fn fixed() -> Self {
        let mut w = [0u64; PROBE_LENGTH_WORDS];
        let mut i = 0;
        while i < FIXED_PROBE_LENGTHS.len() {
            let n = FIXED_PROBE_LENGTHS[i];
            w[n / 64] |= 1 << (n % 64);
            i += 1;
        }
        ProbeLengths(w)
    }

    /// [`ProbeLengths::fixed`] and the same lengths inside each [`Tunnel`].
    pub fn fixed_and_tunnelled() -> Self {
        let mut l = Self::fixed();
        for n in FIXED_PROBE_LENGTHS {
            for t in Tunnel::ALL {
                l.allow((n + t.overhead()) as u16);
            }
        }
        l
    }

    pub fn allow(&mut self, len: u16) {
        self.0[len as usize / 64] |= 1 << (len % 64);
    }

    #[inline(always)]
    pub fn allows(&self, len: usize) -> bool {
        len <= MAX_PROBE_LEN && (self.0[len / 64] >> (len % 64)) & 1 == 1
    }
}

/// What a probe is sent over. The value is the IP protocol number (ICMPv6 probes are
/// `Icmp` too).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(serde::Serialize), serde(rename_all = "lowercase"))]
pub enum Proto {
    Icmp = 1,
    Tcp = 6,
    Udp = 17,
}

impl Proto {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Proto::Icmp),
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Proto::Icmp => "icmp",
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// Key of the `PROBES` map: the protocol and what identifies a probe within it, the ICMP echo
/// id or the TCP/UDP port tracepkt bound its socket to.
pub const fn probe_key(proto: Proto, id: u16) -> u32 {
    ((proto as u32) << 16) | id as u32
}

/// The tag of another node's probe: no target of this node's. Its counters and events are
/// the cross-node ones.
pub const FOREIGN_TAG: u32 = u32::MAX;

/// [`Event::flags`]: the packet is another tracepkt's probe (its id is in no `PROBES` entry
/// of this node), recognised by its payload.
pub const FLAG_FOREIGN: u8 = 1;
/// [`Event::flags`]: bits 1-2 name the tunnel the probe was seen inside ([`Tunnel`]); the
/// event's addresses are then the outer header's.
pub const FLAG_TUNNEL_SHIFT: u8 = 1;

/// Encapsulations the programs look one level into: the outer packet's IP length is the
/// probe's plus [`Tunnel::overhead`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tunnel {
    Vxlan = 1,
    Geneve = 2,
    Ipip = 3,
}

impl Tunnel {
    pub const ALL: [Tunnel; 3] = [Tunnel::Vxlan, Tunnel::Geneve, Tunnel::Ipip];
    /// Well-known UDP destination ports.
    pub const VXLAN_PORT: u16 = 4789;
    pub const GENEVE_PORT: u16 = 6081;

    pub const fn from_flags(flags: u8) -> Option<Self> {
        match (flags >> FLAG_TUNNEL_SHIFT) & 3 {
            1 => Some(Tunnel::Vxlan),
            2 => Some(Tunnel::Geneve),
            3 => Some(Tunnel::Ipip),
            _ => None,
        }
    }

    /// Bytes an IPv4 outer header adds: VXLAN and Geneve (without options) an IP, a UDP, an
    /// 8-byte tunnel header and the inner Ethernet header; IPIP an IP header.
    pub const fn overhead(self) -> usize {
        match self {
            Tunnel::Vxlan | Tunnel::Geneve => 20 + 8 + 8 + 14,
            Tunnel::Ipip => 20,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Tunnel::Vxlan => "vxlan",
            Tunnel::Geneve => "geneve",
            Tunnel::Ipip => "ipip",
        }
    }
}

/// Ring buffer size in bytes (power of two, multiple of the page size). One buffer for all
/// CPUs, so its memory does not grow with the CPU count.
pub const EVENTS_RING_BYTES: u32 = 1 << 20;

/// `BPF_F_NO_PREALLOC`: the counter maps take memory per key in use, not per key allowed.
pub const BPF_F_NO_PREALLOC: u32 = 1;

/// Map names, as the loader resizes and takes them.
pub mod map {
    pub const PROBES: &str = "PROBES";
    /// The programs' writable globals: only `IN_FLIGHT`, the number of ids in `PROBES`.
    pub const BSS: &str = ".bss";
    /// The programs' initialised writable globals: only `PROBE_LENGTHS`.
    pub const DATA: &str = ".data";
    pub const EVENTS: &str = "EVENTS";
    pub const HOPS: &str = "HOPS";
    pub const VERDICTS: &str = "VERDICTS";
    pub const DROPS: &str = "DROPS";
    pub const STATS: &str = "STATS";
}

/// Which way a probe packet is going.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "user", derive(serde::Serialize), serde(rename_all = "lowercase"))]
pub enum Direction {
    Request = 1,
    Reply = 2,
}

impl Direction {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Direction::Request),
            2 => Some(Direction::Reply),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::Request => "request",
            Direction::Reply => "reply",
        }
    }
}

/// Which way a packet crosses an interface (the hook table's [`HookSpec::io`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(serde::Serialize), serde(rename_all = "lowercase"))]
pub enum Io {
    /// Queued for transmit.
    Tx,
    /// Received.
    Rx,
}

impl Io {
    pub const fn as_str(self) -> &'static str {
        match self {
            Io::Tx => "tx",
            Io::Rx => "rx",
        }
    }
}

/// What a hook reveals about a packet: where it crossed an interface, what a netfilter chain
/// decided, or where it was dropped.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(serde::Serialize), serde(rename_all = "lowercase"))]
pub enum Kind {
    Interface = 1,
    Netfilter = 2,
    Drop = 3,
}

impl Kind {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Kind::Interface),
            2 => Some(Kind::Netfilter),
            3 => Some(Kind::Drop),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Interface => "interface",
            Kind::Netfilter => "netfilter",
            Kind::Drop => "drop",
        }
    }
}

/// The kernel hooks tracepkt follows packets through. The value is carried in every event;
/// `Hook::spec` finds the hook's row in [`HOOKS`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    NetDevQueue = 1,
    NetifReceiveSkb = 2,
    NetifRx = 3,
    NapiGroReceiveEntry = 4,
    KfreeSkb = 5,
    IptDoTable = 6,
    Ip6tDoTable = 7,
    NftDoChain = 8,
}

impl Hook {
    pub const ALL: [Hook; 8] = [
        Hook::NetDevQueue,
        Hook::NetifReceiveSkb,
        Hook::NetifRx,
        Hook::NapiGroReceiveEntry,
        Hook::KfreeSkb,
        Hook::IptDoTable,
        Hook::Ip6tDoTable,
        Hook::NftDoChain,
    ];

    pub const fn from_u8(v: u8) -> Option<Self> {
        if v >= 1 && v as usize <= Self::ALL.len() {
            Some(Self::ALL[v as usize - 1])
        } else {
            None
        }
    }

    /// This hook's row of the hook table.
    pub const fn spec(self) -> &'static HookSpec {
        &HOOKS[self as usize - 1]
    }

    /// The kernel's name for it: the tracepoint or the function.
    pub const fn name(self) -> &'static str {
        self.spec().point.name()
    }
}

/// How a program is attached to its hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// BTF-typed tracepoint (`tp_btf`): the skb is a typed pointer, fields are direct loads.
    TpBtf,
    /// Classic tracepoint: the record layout comes from tracefs.
    Tracepoint,
    /// `kprobe` at entry and `kretprobe` at return.
    Kprobe,
}

impl Mechanism {
    pub const ALL: [Mechanism; 3] = [Mechanism::TpBtf, Mechanism::Tracepoint, Mechanism::Kprobe];

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Mechanism::TpBtf => "tp_btf",
            Mechanism::Tracepoint => "tracepoint",
            Mechanism::Kprobe => "kprobe",
        }
    }
}

/// Indexes into the `STATS` array: the kernel side's own health counters.
pub mod stat {
    /// Events that did not fit in the ring buffer.
    pub const EVENTS_LOST: u32 = 0;
    /// Counter increments lost because a counter map was full.
    pub const COUNTERS_FULL: u32 = 1;
    /// A netfilter return found a stash in its frame too old to be its own (its own return
    /// never came): dropped, not used.
    pub const NF_STASH_STALE: u32 = 2;
    /// A netfilter return found a stash of another context in its frame: dropped, not used.
    pub const NF_STASH_MISMATCH: u32 = 3;
    /// A netfilter entry could not stash: its verdict row is missing.
    pub const NF_STASH_FULL: u32 = 4;
    /// Another node's probe seen past the foreign-probe budget: not reported.
    pub const FOREIGN_OVER_BUDGET: u32 = 5;
    pub const COUNT: u32 = 6;

    /// Every anomaly with its `kind` label, in `STATS` order.
    pub const ANOMALIES: [(u32, &str); 4] = [
        (COUNTERS_FULL, "counter_full"),
        (NF_STASH_STALE, "netfilter_stash_stale"),
        (NF_STASH_MISMATCH, "netfilter_stash_mismatch"),
        (NF_STASH_FULL, "netfilter_stash_full"),
    ];
}

/// One record in the `EVENTS` ring buffer. Fixed size for every kind.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Event {
    pub ts_ns: u64,
    pub skb: u64,
    /// Drop: kernel address of the code that freed the skb.
    pub location: u64,
    pub netns: u32,
    pub ifindex: u32,
    /// [`Kind`], [`Direction`] and [`Hook`] values.
    pub kind: u8,
    pub direction: u8,
    pub hook: u8,
    /// 4 or 6.
    pub ip_version: u8,
    /// What names the probe within its protocol: the ICMP echo id, or the port tracepkt's
    /// socket is bound to; with `seq` (0 for TCP and UDP) the key of its journey.
    pub id: u16,
    pub seq: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub ifname: [u8; IFNAMSIZ],
    /// Netfilter: `NFPROTO_*` family and `NF_INET_*` hook of the verdict.
    pub nf_pf: u8,
    pub nf_hook: u8,
    pub _pad0: [u8; 2],
    /// Netfilter verdict (`NF_DROP`=0, `NF_ACCEPT`=1, ...) or drop reason.
    pub verdict: u32,
    pub table: [u8; NAME_LEN],
    pub chain: [u8; NAME_LEN],
    /// Bytes 8..32 of the probe's payload ([`payload`]: the W3C trace id and parent span id)
    /// as the program copied them, in memory order. Words, not bytes, so the programs copy
    /// them with three loads and stores. Zero for TCP probes, which carry no payload.
    pub trace: [u64; 3],
    /// TCP and UDP probes: the ports as they are at this hop (NAT may rewrite them).
    pub sport: u16,
    pub dport: u16,
    /// [`Proto`] value.
    pub proto: u8,
    /// [`FLAG_FOREIGN`], and the [`Tunnel`] at [`FLAG_TUNNEL_SHIFT`].
    pub flags: u8,
    pub _pad1: [u8; 2],
}

impl Event {
    /// The trace id and parent span id of [`Event::trace`], as bytes.
    pub fn trace_ids(&self) -> ([u8; 16], [u8; 8]) {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.trace[0].to_ne_bytes());
        id[8..].copy_from_slice(&self.trace[1].to_ne_bytes());
        (id, self.trace[2].to_ne_bytes())
    }

    pub const fn zeroed() -> Self {
        Event {
            ts_ns: 0,
            skb: 0,
            location: 0,
            netns: 0,
            ifindex: 0,
            kind: 0,
            direction: 0,
            hook: 0,
            ip_version: 0,
            id: 0,
            seq: 0,
            saddr: [0; 16],
            daddr: [0; 16],
            ifname: [0; IFNAMSIZ],
            nf_pf: 0,
            nf_hook: 0,
            _pad0: [0; 2],
            verdict: 0,
            table: [0; NAME_LEN],
            chain: [0; NAME_LEN],
            trace: [0; 3],
            sport: 0,
            dport: 0,
            proto: 0,
            flags: 0,
            _pad1: [0; 2],
        }
    }
}

/// Value of the `PROBES` map: which target an echo id belongs to. Counters carry the tag so
/// user space can label them by target without mirroring them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProbeInfo {
    pub tag: u32,
}

/// `HOPS` counter key: one interface crossing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HopKey {
    pub tag: u32,
    pub netns: u32,
    pub ifindex: u32,
    /// [`Direction`] value.
    pub direction: u8,
    pub _pad: [u8; 3],
}

/// `VERDICTS` counter key: one netfilter chain traversal.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VerdictKey {
    pub tag: u32,
    pub netns: u32,
    pub verdict: u32,
    pub pf: u8,
    pub hook: u8,
    pub _pad: [u8; 2],
    pub table: [u8; NAME_LEN],
    pub chain: [u8; NAME_LEN],
}

/// `DROPS` counter key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DropKey {
    pub tag: u32,
    pub netns: u32,
    pub ifindex: u32,
    pub reason: u32,
}

/// Every counter key names the target it counts for.
pub trait Tagged {
    fn tag(&self) -> u32;
}

impl Tagged for HopKey {
    fn tag(&self) -> u32 {
        self.tag
    }
}

impl Tagged for VerdictKey {
    fn tag(&self) -> u32 {
        self.tag
    }
}

impl Tagged for DropKey {
    fn tag(&self) -> u32 {
        self.tag
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are repr(C), made of integers and byte arrays, with explicit padding.
    unsafe impl aya::Pod for Settings {}
    unsafe impl aya::Pod for Event {}
    unsafe impl aya::Pod for ProbeInfo {}
    unsafe impl aya::Pod for HopKey {}
    unsafe impl aya::Pod for VerdictKey {}
    unsafe impl aya::Pod for DropKey {}
    unsafe impl aya::Pod for ProbeLengths {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    // Sizes equal to the sum of the fields: no implicit padding anywhere.
    #[test]
    fn no_implicit_padding() {
        assert_eq!(
            size_of::<Event>(),
            8 * 3 + 4 * 2 + 4 + 2 * 2 + 16 * 3 + 4 + 4 + NAME_LEN * 2 + 8 * 3 + 2 * 2 + 1 + 1 + 2
        );
        assert_eq!(size_of::<Event>() % 8, 0);
        assert_eq!(size_of::<HopKey>(), 16);
        assert_eq!(size_of::<VerdictKey>(), 16 + 2 * NAME_LEN);
        assert_eq!(size_of::<DropKey>(), 16);
        assert_eq!(size_of::<Offsets>(), 2 * Off::COUNT);
        assert_eq!(size_of::<Reasons>(), 4 * 5);
        assert_eq!(
            size_of::<Settings>(),
            size_of::<Offsets>() + size_of::<Reasons>() + 4 + 4
        );
        // Every setting within an 8-bit displacement of the map's start.
        assert!(size_of::<Settings>() <= 128);
    }

    #[test]
    fn probe_lengths_bitmap() {
        let mut l = ProbeLengths::fixed();
        for n in 0..=MAX_PROBE_LEN {
            assert_eq!(l.allows(n), FIXED_PROBE_LENGTHS.contains(&n), "{n}");
        }
        l.allow(1500);
        l.allow(u16::MAX);
        assert!(l.allows(1500) && l.allows(MAX_PROBE_LEN) && !l.allows(1501) && !l.allows(MAX_PROBE_LEN + 1));
        assert_eq!(size_of::<ProbeLengths>(), (MAX_PROBE_LEN + 1) / 8);

        // Inside a tunnel: each fixed length plus the outer headers, and nothing else.
        let t = ProbeLengths::fixed_and_tunnelled();
        let want = |n: usize| {
            FIXED_PROBE_LENGTHS.contains(&n) || FIXED_PROBE_LENGTHS.iter().any(|f| n == f + 50 || n == f + 20)
        };
        for n in 0..=MAX_PROBE_LEN {
            assert_eq!(t.allows(n), want(n), "{n}");
        }
        assert!(t.allows(PROBE_L3_LEN_V4 + 50) && t.allows(PROBE_L3_LEN_V4 + 20));
    }

    #[test]
    fn tunnels_round_trip_through_the_event_flags() {
        for t in Tunnel::ALL {
            assert_eq!(
                Tunnel::from_flags(FLAG_FOREIGN | (t as u8) << FLAG_TUNNEL_SHIFT),
                Some(t)
            );
        }
        assert_eq!(Tunnel::from_flags(FLAG_FOREIGN), None);
        assert_eq!(Tunnel::from_flags(0), None);
    }

    #[test]
    fn enums_round_trip_through_their_values() {
        for h in Hook::ALL {
            assert_eq!(Hook::from_u8(h as u8), Some(h));
        }
        assert_eq!(Hook::from_u8(0), None);
        assert_eq!(Hook::from_u8(9), None);
        for d in [Direction::Request, Direction::Reply] {
            assert_eq!(Direction::from_u8(d as u8), Some(d));
        }
        for k in [Kind::Interface, Kind::Netfilter, Kind::Drop] {
            assert_eq!(Kind::from_u8(k as u8), Some(k));
        }
    }
}
