//! Types shared by the kernel programs (`probe-ebpf`) and user space (`exporter`).
//!
//! Everything here crosses the kernel/user boundary as raw bytes, so every struct is
//! `#[repr(C)]` with explicit padding fields: no implicit padding, no uninitialised bytes.
#![no_std]

pub const IFNAMSIZ: usize = 16;
/// Longest netfilter table or chain name we keep (`XT_TABLE_MAXNAMELEN`, `NFT_NAME_MAXLEN` is
/// longer but names that long are rare; they are cut, never overflowed).
pub const NAME_LEN: usize = 32;

/// Bytes of payload after the ICMP echo header in every probe (and so in every reply).
pub const PROBE_PAYLOAD_LEN: usize = 32;
/// Total IP length of a probe packet: the kernel programs reject every packet of another
/// length from the skb's own fields, before reading a byte of the packet.
pub const PROBE_L3_LEN_V4: usize = 20 + 8 + PROBE_PAYLOAD_LEN;
pub const PROBE_L3_LEN_V6: usize = 40 + 8 + PROBE_PAYLOAD_LEN;

/// Most probe ids registered at once. Each target in flight uses one id.
pub const MAX_PROBES: u32 = 4096;

/// Ring buffer size in bytes (power of two, multiple of the page size).
pub const EVENTS_RING_BYTES: u32 = 1 << 20;

/// What an event records.
pub mod kind {
    pub const INTERFACE: u8 = 1;
    pub const NETFILTER: u8 = 2;
    pub const DROP: u8 = 3;
}

/// ICMP echo direction.
pub mod direction {
    pub const REQUEST: u8 = 1;
    pub const REPLY: u8 = 2;
}

/// The kernel hook that produced an event.
pub mod hook {
    pub const NET_DEV_QUEUE: u8 = 1;
    pub const NETIF_RECEIVE_SKB: u8 = 2;
    pub const NETIF_RX: u8 = 3;
    pub const NAPI_GRO_RECEIVE_ENTRY: u8 = 4;
    pub const KFREE_SKB: u8 = 5;
    pub const IPT_DO_TABLE: u8 = 6;
    pub const IP6T_DO_TABLE: u8 = 7;
    pub const NFT_DO_CHAIN: u8 = 8;
}

/// Indexes into the `STATS` per-CPU array: the kernel side's own health counters.
pub mod stat {
    /// Events that did not fit in the ring buffer.
    pub const EVENTS_LOST: u32 = 0;
    /// Netfilter return probes that found no stashed arguments.
    pub const NF_STASH_MISS: u32 = 1;
    pub const COUNT: u32 = 4;
}

/// Kernel struct field offsets, resolved from BTF at start-up and handed to the programs as a
/// read-only global (`OFFSETS`). A zero offset for a field we need means "not resolved".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    pub skb_len: u32,
    pub skb_head: u32,
    pub skb_data: u32,
    pub skb_network_header: u32,
    pub skb_protocol: u32,
    pub skb_dev: u32,
    pub dev_name: u32,
    pub dev_ifindex: u32,
    /// `net_device.nd_net.net`
    pub dev_nd_net: u32,
    /// `net.ns.inum`
    pub net_ns_inum: u32,
    /// Classic tracepoint records: where `skbaddr` sits in each (from tracefs `format`).
    pub tp_net_dev_queue_skb: u32,
    pub tp_netif_receive_skb_skb: u32,
    pub tp_netif_rx_skb: u32,
    pub tp_napi_gro_receive_entry_skb: u32,
    pub tp_kfree_skb_skb: u32,
    pub tp_kfree_skb_location: u32,
    pub tp_kfree_skb_reason: u32,
    /// Netfilter: `nf_hook_state.hook`, `.pf`, `.net`; `xt_table.name`;
    /// `nft_pktinfo.skb`, `.state`; `nft_chain.name`, `.table`; `nft_table.name`.
    pub nf_state_hook: u32,
    pub nf_state_pf: u32,
    pub nf_state_net: u32,
    pub xt_table_name: u32,
    pub nft_pktinfo_skb: u32,
    pub nft_pktinfo_state: u32,
    pub nft_chain_name: u32,
    pub nft_chain_table: u32,
    pub nft_table_name: u32,
    /// Argument positions of `ipt_do_table`/`ip6t_do_table` (skb, state, table) and of
    /// `nft_do_chain` (pkt, priv): they moved between kernel versions.
    pub ipt_arg_skb: u32,
    pub ipt_arg_state: u32,
    pub ipt_arg_table: u32,
    pub nft_arg_pkt: u32,
    pub nft_arg_chain: u32,
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
    pub kind: u8,
    pub direction: u8,
    pub hook: u8,
    /// 4 or 6.
    pub ip_version: u8,
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
}

impl Event {
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

/// `HOPS` per-CPU counter key: one interface crossing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HopKey {
    pub tag: u32,
    pub netns: u32,
    pub ifindex: u32,
    pub direction: u8,
    pub _pad: [u8; 3],
}

/// `VERDICTS` per-CPU counter key: one netfilter chain traversal.
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

/// `DROPS` per-CPU counter key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DropKey {
    pub tag: u32,
    pub netns: u32,
    pub ifindex: u32,
    pub reason: u32,
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are repr(C), made of integers and byte arrays, with explicit padding.
    unsafe impl aya::Pod for Offsets {}
    unsafe impl aya::Pod for Event {}
    unsafe impl aya::Pod for ProbeInfo {}
    unsafe impl aya::Pod for HopKey {}
    unsafe impl aya::Pod for VerdictKey {}
    unsafe impl aya::Pod for DropKey {}
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
            8 * 3 + 4 * 2 + 4 + 2 * 2 + 16 * 3 + 4 + 4 + NAME_LEN * 2
        );
        assert_eq!(size_of::<Event>() % 8, 0);
        assert_eq!(size_of::<HopKey>(), 16);
        assert_eq!(size_of::<VerdictKey>(), 16 + 2 * NAME_LEN);
        assert_eq!(size_of::<DropKey>(), 16);
        assert_eq!(size_of::<Offsets>(), 4 * 31);
    }
}
