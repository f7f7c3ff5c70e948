//! Drops: the `skb:kfree_skb` tracepoint, for probe packets only.

use aya_ebpf::programs::TracePointContext;
use probe_common::{DropKey, Event, Hook, Offsets, stat};

use crate::packet::{self, Access, L3};
use crate::{DROPS, EVENTS, NF_DROPPED, bump, stat_inc};

#[inline(always)]
pub fn handle(skb: usize, location: usize, reason: u32, access: Access) -> i32 {
    // Frees that are not a probe's end, told from the reason alone before touching the skb:
    // not drops at all, or NO_SOCKET, which only ends echo replies once tracepkt's raw socket
    // has its copy (echo requests are answered by the stack, never looked up in sockets).
    if reason == setting!(reasons.consumed)
        || reason == setting!(reasons.not_dropped_yet)
        || reason == setting!(reasons.no_socket)
    {
        return 0;
    }
    let Some(p) = packet::ours(skb, L3::NetworkHeader, access) else {
        return 0;
    };
    if reason == setting!(reasons.netfilter_drop)
        && let Some(slot) = NF_DROPPED.get_ptr_mut(0)
    {
        unsafe { *slot = skb as u64 };
    }
    let mut ev = Event::zeroed();
    packet::fill(&mut ev, &p, skb, Hook::KfreeSkb);
    packet::device(skb, &mut ev);
    ev.location = location as u64;
    ev.verdict = reason;
    // NOT_SPECIFIED also frees clones on normal paths: user space decides per journey whether
    // it was the packet's end, so only reasoned drops are counted here.
    if Hook::KfreeSkb.spec().counted && reason != setting!(reasons.not_specified) {
        let key = DropKey {
            tag: p.info.tag,
            netns: ev.netns,
            ifindex: ev.ifindex,
            reason,
        };
        bump(&DROPS, &key);
    }
    if EVENTS.output::<Event>(&ev, 0).is_err() {
        stat_inc(stat::EVENTS_LOST);
    }
    0
}

#[inline(always)]
pub fn handle_tp(ctx: &TracePointContext) -> i32 {
    unsafe {
        let Ok(skb) = ctx.read_at::<usize>(off!(TpKfreeSkbSkb)) else {
            return 0;
        };
        let location = ctx.read_at::<usize>(off!(TpKfreeSkbLocation)).unwrap_or(0);
        // Kernels before 5.17 have no reason field.
        let reason_off = off!(TpKfreeSkbReason);
        let reason = if reason_off == Offsets::ABSENT as usize {
            0
        } else {
            ctx.read_at::<u32>(reason_off).unwrap_or(0)
        };
        handle(skb, location, reason, Access::Probe)
    }
}
