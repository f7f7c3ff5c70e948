//! tracepkt kernel programs: entry points and maps only. Each entry point is a thin shell around
//! a `try_*`/`handle` body in the module named after its kind of hook.
#![no_std]
#![no_main]

/// Reads one field of `OFFSETS`. Volatile, so the compiler cannot fold the zero placeholder:
/// the verifier folds the real value instead, from the frozen map.
macro_rules! off {
    ($field:ident) => {{
        #[allow(unused_unsafe)]
        let v = unsafe { core::ptr::read_volatile(&raw const crate::OFFSETS.$field) };
        v as usize
    }};
}

mod drops;
mod interfaces;
mod netfilter;
mod packet;

use packet::Access;

use aya_ebpf::{
    macros::{btf_tracepoint, fexit, kprobe, kretprobe, map, tracepoint},
    maps::{HashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{BtfTracePointContext, FExitContext, ProbeContext, RetProbeContext, TracePointContext},
};
use probe_common::{DropKey, EVENTS_RING_BYTES, HopKey, MAX_PROBES, Offsets, ProbeInfo, VerdictKey, hook, stat};

/// Kernel offsets, filled in by the loader from BTF and tracefs before load. Frozen read-only,
/// so the verifier sees the values as constants.
#[unsafe(no_mangle)]
static OFFSETS: Offsets = unsafe { core::mem::zeroed() };

/// `skb_drop_reason` values that are not drops (`SKB_CONSUMED`, `SKB_NOT_DROPPED_YET`), and
/// `NOT_SPECIFIED`, which user space judges per journey. Resolved from BTF.
#[unsafe(no_mangle)]
static REASON_NOT_SPECIFIED: u32 = u32::MAX;
#[unsafe(no_mangle)]
static REASON_CONSUMED: u32 = u32::MAX;
#[unsafe(no_mangle)]
static REASON_NOT_DROPPED_YET: u32 = u32::MAX;
/// A reply freed with `NO_SOCKET` after our raw socket took its copy: the normal end of
/// every answered probe, not a drop.
#[unsafe(no_mangle)]
static REASON_NO_SOCKET: u32 = u32::MAX;
#[unsafe(no_mangle)]
static REASON_NETFILTER_DROP: u32 = u32::MAX;

/// Echo ids tracepkt owns right now. Written by user space before each probe is sent.
#[map]
static PROBES: HashMap<u16, ProbeInfo> = HashMap::with_max_entries(MAX_PROBES, 0);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

#[map]
static HOPS: PerCpuHashMap<HopKey, u64> = PerCpuHashMap::with_max_entries(16384, 0);

#[map]
static VERDICTS: PerCpuHashMap<VerdictKey, u64> = PerCpuHashMap::with_max_entries(16384, 0);

#[map]
static DROPS: PerCpuHashMap<DropKey, u64> = PerCpuHashMap::with_max_entries(16384, 0);

#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

/// The last skb this CPU saw freed with `NETFILTER_DROP`: since 6.0 `nft_do_chain` frees a
/// dropped packet itself and returns `NF_STOLEN`; this tells that apart from a real steal.
#[map]
static NF_DROPPED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Netfilter entry arguments stashed for the return probe, keyed by task.
#[map]
static NF_ARGS: HashMap<u64, netfilter::Stash> = HashMap::with_max_entries(4096, 0);

// ---- interfaces: BTF-typed tracepoints (preferred) ----

#[btf_tracepoint(function = "net_dev_queue")]
pub fn net_dev_queue_btf(ctx: BtfTracePointContext) -> i32 {
    interfaces::handle(ctx.arg(0), hook::NET_DEV_QUEUE, Access::Btf)
}

#[btf_tracepoint(function = "netif_receive_skb")]
pub fn netif_receive_skb_btf(ctx: BtfTracePointContext) -> i32 {
    interfaces::handle(ctx.arg(0), hook::NETIF_RECEIVE_SKB, Access::Btf)
}

#[btf_tracepoint(function = "netif_rx")]
pub fn netif_rx_btf(ctx: BtfTracePointContext) -> i32 {
    interfaces::handle(ctx.arg(0), hook::NETIF_RX, Access::Btf)
}

#[btf_tracepoint(function = "napi_gro_receive_entry")]
pub fn napi_gro_receive_entry_btf(ctx: BtfTracePointContext) -> i32 {
    interfaces::handle(ctx.arg(0), hook::NAPI_GRO_RECEIVE_ENTRY, Access::Btf)
}

// ---- interfaces: classic tracepoints (fallback); skbaddr offset from tracefs ----

#[tracepoint(category = "net", name = "net_dev_queue")]
pub fn net_dev_queue_tp(ctx: TracePointContext) -> i32 {
    interfaces::handle_tp(&ctx, off!(tp_net_dev_queue_skb), hook::NET_DEV_QUEUE)
}

#[tracepoint(category = "net", name = "netif_receive_skb")]
pub fn netif_receive_skb_tp(ctx: TracePointContext) -> i32 {
    interfaces::handle_tp(&ctx, off!(tp_netif_receive_skb_skb), hook::NETIF_RECEIVE_SKB)
}

#[tracepoint(category = "net", name = "netif_rx")]
pub fn netif_rx_tp(ctx: TracePointContext) -> i32 {
    interfaces::handle_tp(&ctx, off!(tp_netif_rx_skb), hook::NETIF_RX)
}

#[tracepoint(category = "net", name = "napi_gro_receive_entry")]
pub fn napi_gro_receive_entry_tp(ctx: TracePointContext) -> i32 {
    interfaces::handle_tp(&ctx, off!(tp_napi_gro_receive_entry_skb), hook::NAPI_GRO_RECEIVE_ENTRY)
}

// ---- drops ----

#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb_btf(ctx: BtfTracePointContext) -> i32 {
    drops::handle(ctx.arg(0), ctx.arg(1), ctx.arg(2), Access::Btf)
}

#[tracepoint(category = "skb", name = "kfree_skb")]
pub fn kfree_skb_tp(ctx: TracePointContext) -> i32 {
    drops::handle_tp(&ctx)
}

// ---- netfilter: fexit (preferred) ----

#[fexit(function = "ipt_do_table")]
pub fn ipt_do_table_fexit(ctx: FExitContext) -> i32 {
    netfilter::ipt_fexit(&ctx, hook::IPT_DO_TABLE)
}

#[fexit(function = "ip6t_do_table")]
pub fn ip6t_do_table_fexit(ctx: FExitContext) -> i32 {
    netfilter::ipt_fexit(&ctx, hook::IP6T_DO_TABLE)
}

#[fexit(function = "nft_do_chain")]
pub fn nft_do_chain_fexit(ctx: FExitContext) -> i32 {
    netfilter::nft_fexit(&ctx)
}

// ---- netfilter: kprobe + kretprobe with an argument stash (fallback) ----

#[kprobe]
pub fn ipt_do_table_entry(ctx: ProbeContext) -> u32 {
    netfilter::ipt_entry(&ctx)
}

#[kretprobe]
pub fn ipt_do_table_return(ctx: RetProbeContext) -> u32 {
    netfilter::ipt_return(&ctx, hook::IPT_DO_TABLE)
}

#[kprobe]
pub fn ip6t_do_table_entry(ctx: ProbeContext) -> u32 {
    netfilter::ipt_entry(&ctx)
}

#[kretprobe]
pub fn ip6t_do_table_return(ctx: RetProbeContext) -> u32 {
    netfilter::ipt_return(&ctx, hook::IP6T_DO_TABLE)
}

#[kprobe]
pub fn nft_do_chain_entry(ctx: ProbeContext) -> u32 {
    netfilter::nft_entry(&ctx)
}

#[kretprobe]
pub fn nft_do_chain_return(ctx: RetProbeContext) -> u32 {
    netfilter::nft_return(&ctx)
}

// ---- the floor: what being attached at all costs (benchmarks only, `tracepkt bench-floor`) ----

#[map]
static FLOOR: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn floor() -> i32 {
    if let Some(v) = FLOOR.get_ptr_mut(0) {
        unsafe { *v += 1 }
    }
    0
}

#[btf_tracepoint(function = "net_dev_queue")]
pub fn floor_net_dev_queue(_ctx: BtfTracePointContext) -> i32 {
    floor()
}

#[btf_tracepoint(function = "netif_receive_skb")]
pub fn floor_netif_receive_skb(_ctx: BtfTracePointContext) -> i32 {
    floor()
}

#[btf_tracepoint(function = "netif_rx")]
pub fn floor_netif_rx(_ctx: BtfTracePointContext) -> i32 {
    floor()
}

#[btf_tracepoint(function = "napi_gro_receive_entry")]
pub fn floor_napi_gro_receive_entry(_ctx: BtfTracePointContext) -> i32 {
    floor()
}

/// Adds one to a per-CPU counter, creating it on first use.
#[inline(always)]
fn bump<K>(map: &PerCpuHashMap<K, u64>, key: &K) {
    match map.get_ptr_mut(key) {
        Some(v) => unsafe { *v += 1 },
        None => {
            // BPF_NOEXIST: another CPU's first insert does not clobber this one's.
            let _ = map.insert(key, 1, 1);
        }
    }
}

#[inline(always)]
fn stat_inc(index: u32) {
    if let Some(v) = STATS.get_ptr_mut(index) {
        unsafe { *v += 1 }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
