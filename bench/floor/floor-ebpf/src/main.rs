//! The floor: one empty BTF tracepoint program per hook tracepkt uses, so that the bench measures
//! what being attached at all costs, and tracepkt's programs are compared with it. How often each
//! ran comes from the kernel's own accounting (`kernel.bpf_stats_enabled`), not from the programs.
//! Program names are `floor_<hook>`; scripts/bench.sh tells them apart from tracepkt's by that
//! prefix.
#![no_std]
#![no_main]

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

#[btf_tracepoint(function = "net_dev_queue")]
pub fn floor_net_dev_queue(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "netif_receive_skb")]
pub fn floor_netif_receive_skb(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "netif_rx")]
pub fn floor_netif_rx(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "napi_gro_receive_entry")]
pub fn floor_napi_gro_receive_entry(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "kfree_skb")]
pub fn floor_kfree_skb(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
