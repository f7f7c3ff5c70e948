//! The floor: one BTF tracepoint program per hook tracepkt uses, each doing the least a program
//! can do (bump a per-CPU counter), so that the bench measures what being attached costs.
//! Program names are `floor_<hook>`; scripts/bench.sh tells them apart from tracepkt's by that
//! prefix.
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::{btf_tracepoint, map},
    maps::PerCpuArray,
    programs::BtfTracePointContext,
};

/// Slots of `FLOOR`, in the order the loader prints them.
const NET_DEV_QUEUE: u32 = 0;
const NETIF_RECEIVE_SKB: u32 = 1;
const NETIF_RX: u32 = 2;
const NAPI_GRO_RECEIVE_ENTRY: u32 = 3;
const KFREE_SKB: u32 = 4;

/// Runs per hook. A constant index per program keeps every program the same size and cost.
#[map]
static FLOOR: PerCpuArray<u64> = PerCpuArray::with_max_entries(5, 0);

#[inline(always)]
fn count(slot: u32) -> i32 {
    if let Some(v) = FLOOR.get_ptr_mut(slot) {
        unsafe { *v += 1 }
    }
    0
}

#[btf_tracepoint(function = "net_dev_queue")]
pub fn floor_net_dev_queue(_ctx: BtfTracePointContext) -> i32 {
    count(NET_DEV_QUEUE)
}

#[btf_tracepoint(function = "netif_receive_skb")]
pub fn floor_netif_receive_skb(_ctx: BtfTracePointContext) -> i32 {
    count(NETIF_RECEIVE_SKB)
}

#[btf_tracepoint(function = "netif_rx")]
pub fn floor_netif_rx(_ctx: BtfTracePointContext) -> i32 {
    count(NETIF_RX)
}

#[btf_tracepoint(function = "napi_gro_receive_entry")]
pub fn floor_napi_gro_receive_entry(_ctx: BtfTracePointContext) -> i32 {
    count(NAPI_GRO_RECEIVE_ENTRY)
}

#[btf_tracepoint(function = "kfree_skb")]
pub fn floor_kfree_skb(_ctx: BtfTracePointContext) -> i32 {
    count(KFREE_SKB)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
