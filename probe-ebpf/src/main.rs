//! tracepkt kernel programs: entry points and maps only. Each entry point is a thin shell around
//! a `try_*`/`handle` body in the module named after its kind of hook.
#![no_std]
#![no_main]
// The bpf target has no compare-and-swap, so core's atomics offer no `fetch_add`; the
// intrinsic lowers to the BPF atomic add every supported kernel has.
#![feature(core_intrinsics)]
#![allow(internal_features)]

/// Reads one entry of `OFFSETS`. Volatile, so the compiler cannot fold the placeholder: the
/// verifier folds the real value instead, from the frozen map.
macro_rules! off {
    ($name:ident) => {{
        #[allow(unused_unsafe)]
        let v = unsafe { core::ptr::read_volatile(&raw const crate::OFFSETS.v[probe_common::Off::$name as usize]) };
        v as usize
    }};
}

mod drops;
mod interfaces;
mod netfilter;
mod packet;

use packet::Access;

use aya_ebpf::{
    macros::{btf_tracepoint, kprobe, kretprobe, map, tracepoint},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, ProbeContext, RetProbeContext, TracePointContext},
};
use probe_common::{BPF_F_NO_PREALLOC, DropKey, EVENTS_RING_BYTES, Hook, HopKey, Offsets, ProbeInfo, VerdictKey, stat};

/// Kernel offsets, filled in by the loader from BTF and tracefs before load. Frozen read-only,
/// so the verifier sees the values as constants.
#[unsafe(no_mangle)]
static OFFSETS: Offsets = Offsets::unresolved();

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

// Map sizes here are placeholders: the loader sizes PROBES and the counter maps from the
// configuration. None is preallocated: memory follows the keys in use, beyond a bucket array
// of 16 bytes per allowed key.

/// Echo ids of the probes in flight. Written by user space before each probe is sent.
#[map]
static PROBES: HashMap<u16, ProbeInfo> = HashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);

/// How many ids `PROBES` holds, kept by user space through the `.bss` map (this is its only
/// variable). While it is zero there is nothing to look for, and every program returns after
/// one load from a fixed address: what `attach: always` costs between probes, and what the
/// netfilter kprobes, attached for the whole run, cost.
#[unsafe(no_mangle)]
static mut IN_FLIGHT: u32 = 0;

/// No probe is in flight. Volatile: the value is user space's, not the zero it starts at.
#[inline(always)]
fn idle() -> bool {
    unsafe { core::ptr::read_volatile(&raw const IN_FLIGHT) == 0 }
}

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

// Counters: one shared map each, bumped atomically. Probe packets are a few per second, so
// sharing costs nothing measurable, and the memory does not multiply by the CPU count as a
// per-CPU map's would.
#[map]
static HOPS: HashMap<HopKey, u64> = HashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);

#[map]
static VERDICTS: HashMap<VerdictKey, u64> = HashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);

#[map]
static DROPS: HashMap<DropKey, u64> = HashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);

#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

/// The last skb this CPU saw freed with `NETFILTER_DROP`: since 6.0 `nft_do_chain` frees a
/// dropped packet itself and returns `NF_STOLEN`; this tells that apart from a real steal.
#[map]
static NF_DROPPED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Netfilter entry arguments stashed for the return probe, keyed by the invocation's stack
/// frame. Holds only our packets' chain walks in progress: a few per CPU at most.
#[map]
static NF_ARGS: HashMap<u64, netfilter::Stash> = HashMap::with_max_entries(1024, 0);

// ---- interfaces: BTF-typed tracepoints (preferred) ----

#[btf_tracepoint(function = "net_dev_queue")]
pub fn net_dev_queue_btf(ctx: BtfTracePointContext) -> i32 {
    interfaces::handle(ctx.arg(0), Hook::NetDevQueue, Access::Btf)
}

#[btf_tracepoint(function = "netif_receive_skb")]
pub fn netif_receive_skb_btf(ctx: BtfTracePointContext) -> i32 {
    interfaces::handle(ctx.arg(0), Hook::NetifReceiveSkb, Access::Btf)
}

#[btf_tracepoint(function = "netif_rx")]
pub fn netif_rx_btf(ctx: BtfTracePointContext) -> i32 {
    interfaces::handle(ctx.arg(0), Hook::NetifRx, Access::Btf)
}

#[btf_tracepoint(function = "napi_gro_receive_entry")]
pub fn napi_gro_receive_entry_btf(ctx: BtfTracePointContext) -> i32 {
    interfaces::handle(ctx.arg(0), Hook::NapiGroReceiveEntry, Access::Btf)
}

// ---- interfaces: classic tracepoints (fallback); skbaddr offset from tracefs ----

#[tracepoint(category = "net", name = "net_dev_queue")]
pub fn net_dev_queue_tp(ctx: TracePointContext) -> i32 {
    interfaces::handle_tp(&ctx, off!(TpNetDevQueueSkb), Hook::NetDevQueue)
}

#[tracepoint(category = "net", name = "netif_receive_skb")]
pub fn netif_receive_skb_tp(ctx: TracePointContext) -> i32 {
    interfaces::handle_tp(&ctx, off!(TpNetifReceiveSkbSkb), Hook::NetifReceiveSkb)
}

#[tracepoint(category = "net", name = "netif_rx")]
pub fn netif_rx_tp(ctx: TracePointContext) -> i32 {
    interfaces::handle_tp(&ctx, off!(TpNetifRxSkb), Hook::NetifRx)
}

#[tracepoint(category = "net", name = "napi_gro_receive_entry")]
pub fn napi_gro_receive_entry_tp(ctx: TracePointContext) -> i32 {
    interfaces::handle_tp(&ctx, off!(TpNapiGroReceiveEntrySkb), Hook::NapiGroReceiveEntry)
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

// ---- netfilter: kprobe + kretprobe with an argument stash ----

#[kprobe]
pub fn ipt_do_table_entry(ctx: ProbeContext) -> u32 {
    netfilter::ipt_entry(&ctx)
}

#[kretprobe]
pub fn ipt_do_table_return(ctx: RetProbeContext) -> u32 {
    netfilter::on_return(&ctx, Hook::IptDoTable)
}

#[kprobe]
pub fn ip6t_do_table_entry(ctx: ProbeContext) -> u32 {
    netfilter::ipt_entry(&ctx)
}

#[kretprobe]
pub fn ip6t_do_table_return(ctx: RetProbeContext) -> u32 {
    netfilter::on_return(&ctx, Hook::Ip6tDoTable)
}

#[kprobe]
pub fn nft_do_chain_entry(ctx: ProbeContext) -> u32 {
    netfilter::nft_entry(&ctx)
}

#[kretprobe]
pub fn nft_do_chain_return(ctx: RetProbeContext) -> u32 {
    netfilter::on_return(&ctx, Hook::NftDoChain)
}

const BPF_NOEXIST: u64 = 1;
const EEXIST: i32 = 17;

/// Adds one to a shared counter, creating it on first use. Never loses an increment: when
/// two CPUs create the same key at once, the one whose insert fails adds to the other's.
/// An increment that finds the map full is counted as such.
#[inline(always)]
fn bump<K>(map: &HashMap<K, u64>, key: &K) {
    if let Some(v) = map.get_ptr_mut(key) {
        add(v);
        return;
    }
    match map.insert(key, 1, BPF_NOEXIST) {
        Ok(()) => {}
        Err(e) if e == -EEXIST => match map.get_ptr_mut(key) {
            Some(v) => add(v),
            None => stat_inc(stat::COUNTERS_FULL),
        },
        Err(_) => stat_inc(stat::COUNTERS_FULL),
    }
}

#[inline(always)]
fn add(v: *mut u64) {
    use core::intrinsics::{AtomicOrdering, atomic_xadd};
    // SAFETY: `v` points at a live, aligned map value.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(v, 1) };
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
