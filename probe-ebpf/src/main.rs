//! tracepkt kernel programs: entry points and maps only. Each entry point is a thin shell around
//! a `try_*`/`handle` body in the module named after its kind of hook.
#![no_std]
#![no_main]
// The bpf target has no compare-and-swap, so core's atomics offer no `fetch_add`; the
// intrinsic lowers to the BPF atomic add every supported kernel has.
#![feature(core_intrinsics)]
#![allow(internal_features)]

/// Reads one field of `SETTINGS` (a path into `probe_common::Settings`): every read of a
/// setting goes through here. Volatile, so the compiler cannot fold the placeholder: the
/// verifier folds the real value instead, from the frozen map.
macro_rules! setting {
    ($($path:tt)+) => {{
        #[allow(unused_unsafe)]
        let v = unsafe { core::ptr::read_volatile(&raw const crate::SETTINGS.$($path)+) };
        v
    }};
}

/// One kernel offset of the settings, as an address offset.
macro_rules! off {
    ($name:ident) => {
        setting!(offsets.v[probe_common::Off::$name as usize]) as usize
    };
}

mod drops;
mod interfaces;
mod netfilter;
mod packet;

use packet::Access;

use aya_ebpf::{
    macros::{btf_tracepoint, kprobe, kretprobe, map, tracepoint},
    maps::{Array, HashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, ProbeContext, RetProbeContext, TracePointContext},
};
use probe_common::{
    BPF_F_NO_PREALLOC, DropKey, EVENTS_RING_BYTES, Hook, HopKey, MAX_PROBE_LEN, ProbeInfo, ProbeLengths, Settings,
    VerdictKey, stat,
};

/// Every read-only setting, written by the loader before load (`Settings::GLOBAL`) and frozen
/// read-only, so the verifier sees each value as a constant.
#[unsafe(no_mangle)]
static SETTINGS: Settings = Settings::unresolved();

// Map sizes here are placeholders: the loader sizes PROBES and the counter maps from the
// configuration. None is preallocated: memory follows the keys in use, beyond a bucket array
// of 16 bytes per allowed key.

/// The probes in flight, by `probe_key` (protocol, and echo id or bound port). Written by user
/// space before each probe is sent.
#[map]
static PROBES: HashMap<u32, ProbeInfo> = HashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);

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

/// The IP lengths a probe-related packet may have: the first test every packet meets. The
/// fixed lengths are compiled in; user space adds a sized probe's length (`size:`) while it is
/// in flight, through the `.data` map (this is its only variable). A bitmap rather than a list,
/// so the test costs the same few instructions however many sizes are configured.
#[unsafe(no_mangle)]
static mut PROBE_LENGTHS: ProbeLengths = ProbeLengths::fixed();

/// Whether an IP length is one a probe may have. Volatile: the bits are user space's, not the
/// ones compiled in.
#[inline(always)]
fn probe_length(len: usize) -> bool {
    if len > MAX_PROBE_LEN {
        return false;
    }
    let word = unsafe { core::ptr::read_volatile(&raw const PROBE_LENGTHS.0[len / 64]) };
    (word >> (len % 64)) & 1 == 1
}

/// Another node's probes: how many events a second the programs may report, over all CPUs;
/// 0 turns recognising them off. While on, user space keeps `IN_FLIGHT` above zero, as such a
/// probe may arrive at any time.
#[inline(always)]
fn foreign_budget() -> u32 {
    setting!(foreign_budget)
}

/// Whether to look one level into VXLAN, Geneve and IPIP packets for a probe. User space then
/// also lets the tunnelled probe lengths past the first test.
#[inline(always)]
fn tunnels() -> bool {
    setting!(tunnels) != 0
}

/// The foreign-probe budget's window: its start (CLOCK_MONOTONIC ns) and the events reported
/// in it. Shared by every CPU, without a lock: CPUs racing at the limit may each take one
/// event more, and a CPU that opens a new window just after another may reset the count the
/// other had begun, so a window can admit a few events more than the budget. The overshoot
/// comes only from such races, never from time passing.
#[map]
static FOREIGN_WINDOW: Array<u64> = Array::with_max_entries(2, 0);

/// Whether one more foreign-probe event fits in this second's budget; counts it if not.
#[inline(always)]
fn foreign_admit() -> bool {
    let budget = foreign_budget() as u64;
    let (Some(start), Some(count)) = (FOREIGN_WINDOW.get_ptr_mut(0), FOREIGN_WINDOW.get_ptr_mut(1)) else {
        return false;
    };
    let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    unsafe {
        if now.wrapping_sub(*start) >= 1_000_000_000 {
            *start = now;
            *count = 0;
        }
    }
    // Compared before the add: the generic BPF target has no fetching atomic add, so CPUs
    // racing at the limit may each take one event more than the budget.
    if unsafe { core::ptr::read_volatile(count) } >= budget {
        stat_inc(stat::FOREIGN_OVER_BUDGET);
        return false;
    }
    add(count);
    true
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

/// One event's room per CPU, for the netfilter return path (see `netfilter::record`).
#[map]
static SCRATCH: PerCpuArray<probe_common::Event> = PerCpuArray::with_max_entries(1, 0);

/// One stash's room per CPU, where a netfilter entry builds it (see `netfilter::stash`).
#[map]
static STASH_SCRATCH: PerCpuArray<netfilter::Stash> = PerCpuArray::with_max_entries(1, 0);

/// Netfilter entry arguments stashed for the return probe, keyed by the invocation's stack
/// frame. Holds only our packets' chain walks in progress: a few per CPU at most.
#[map]
static NF_ARGS: HashMap<u64, netfilter::Stash> = HashMap::with_max_entries(1024, 0);

// Every entry point returns at once while no probe is in flight, and otherwise calls its body,
// kept a separate BPF function (`#[inline(never)]`). The split keeps the entry itself frameless:
// the body's stack frame and callee-saved registers (and, from 6.13, its per-CPU private stack)
// are set up only when a probe is in flight, so a foreign packet costs an empty program plus
// one load from a fixed address and a branch.
macro_rules! gated {
    ($(#[$attr:meta])* fn $name:ident / $body:ident ($ctx:ident : $ty:ty) -> $ret:ty $block:block) => {
        $(#[$attr])*
        pub fn $name($ctx: $ty) -> $ret {
            if idle() {
                return 0;
            }
            $body($ctx)
        }

        #[inline(never)]
        fn $body($ctx: $ty) -> $ret $block
    };
}

// ---- interfaces: BTF-typed tracepoints (preferred) ----

gated! {
    #[btf_tracepoint(function = "net_dev_queue")]
    fn net_dev_queue_btf / net_dev_queue_btf_body(ctx: BtfTracePointContext) -> i32 {
        interfaces::handle(ctx.arg(0), Hook::NetDevQueue, Access::Btf)
    }
}

gated! {
    #[btf_tracepoint(function = "netif_receive_skb")]
    fn netif_receive_skb_btf / netif_receive_skb_btf_body(ctx: BtfTracePointContext) -> i32 {
        interfaces::handle(ctx.arg(0), Hook::NetifReceiveSkb, Access::Btf)
    }
}

gated! {
    #[btf_tracepoint(function = "netif_rx")]
    fn netif_rx_btf / netif_rx_btf_body(ctx: BtfTracePointContext) -> i32 {
        interfaces::handle(ctx.arg(0), Hook::NetifRx, Access::Btf)
    }
}

gated! {
    #[btf_tracepoint(function = "napi_gro_receive_entry")]
    fn napi_gro_receive_entry_btf / napi_gro_receive_entry_btf_body(ctx: BtfTracePointContext) -> i32 {
        interfaces::handle(ctx.arg(0), Hook::NapiGroReceiveEntry, Access::Btf)
    }
}

// ---- interfaces: classic tracepoints (fallback); skbaddr offset from tracefs ----

gated! {
    #[tracepoint(category = "net", name = "net_dev_queue")]
    fn net_dev_queue_tp / net_dev_queue_tp_body(ctx: TracePointContext) -> i32 {
        interfaces::handle_tp(&ctx, off!(TpNetDevQueueSkb), Hook::NetDevQueue)
    }
}

gated! {
    #[tracepoint(category = "net", name = "netif_receive_skb")]
    fn netif_receive_skb_tp / netif_receive_skb_tp_body(ctx: TracePointContext) -> i32 {
        interfaces::handle_tp(&ctx, off!(TpNetifReceiveSkbSkb), Hook::NetifReceiveSkb)
    }
}

gated! {
    #[tracepoint(category = "net", name = "netif_rx")]
    fn netif_rx_tp / netif_rx_tp_body(ctx: TracePointContext) -> i32 {
        interfaces::handle_tp(&ctx, off!(TpNetifRxSkb), Hook::NetifRx)
    }
}

gated! {
    #[tracepoint(category = "net", name = "napi_gro_receive_entry")]
    fn napi_gro_receive_entry_tp / napi_gro_receive_entry_tp_body(ctx: TracePointContext) -> i32 {
        interfaces::handle_tp(&ctx, off!(TpNapiGroReceiveEntrySkb), Hook::NapiGroReceiveEntry)
    }
}

// ---- drops ----

gated! {
    #[btf_tracepoint(function = "kfree_skb")]
    fn kfree_skb_btf / kfree_skb_btf_body(ctx: BtfTracePointContext) -> i32 {
        drops::handle(ctx.arg(0), ctx.arg(1), ctx.arg(2), Access::Btf)
    }
}

gated! {
    #[tracepoint(category = "skb", name = "kfree_skb")]
    fn kfree_skb_tp / kfree_skb_tp_body(ctx: TracePointContext) -> i32 {
        drops::handle_tp(&ctx)
    }
}

// ---- netfilter: kprobe + kretprobe with an argument stash ----
// With no probe in flight no row is wanted; a stash left behind is replaced at its frame's
// next entry, or refused as stale at its next return.

gated! {
    #[kprobe]
    fn ipt_do_table_entry / ipt_do_table_entry_body(ctx: ProbeContext) -> u32 {
        netfilter::ipt_entry(&ctx)
    }
}

gated! {
    #[kretprobe]
    fn ipt_do_table_return / ipt_do_table_return_body(ctx: RetProbeContext) -> u32 {
        netfilter::on_return(&ctx, Hook::IptDoTable)
    }
}

gated! {
    #[kprobe]
    fn ip6t_do_table_entry / ip6t_do_table_entry_body(ctx: ProbeContext) -> u32 {
        netfilter::ipt_entry(&ctx)
    }
}

gated! {
    #[kretprobe]
    fn ip6t_do_table_return / ip6t_do_table_return_body(ctx: RetProbeContext) -> u32 {
        netfilter::on_return(&ctx, Hook::Ip6tDoTable)
    }
}

gated! {
    #[kprobe]
    fn nft_do_chain_entry / nft_do_chain_entry_body(ctx: ProbeContext) -> u32 {
        netfilter::nft_entry(&ctx)
    }
}

gated! {
    #[kretprobe]
    fn nft_do_chain_return / nft_do_chain_return_body(ctx: RetProbeContext) -> u32 {
        netfilter::on_return(&ctx, Hook::NftDoChain)
    }
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
