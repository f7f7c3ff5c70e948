//! Interface crossings: `net_dev_queue` (transmit), `netif_receive_skb` (receive), and the
//! receive entry points `netif_rx` / `napi_gro_receive_entry`.

use aya_ebpf::programs::TracePointContext;
use probe_common::{Event, Hook, HopKey, Io, stat};

use crate::packet::{self, Access, L3};
use crate::{EVENTS, HOPS, bump, stat_inc};

#[inline(always)]
pub fn handle(skb: usize, hook: Hook, access: Access) -> i32 {
    let spec = hook.spec();
    let l3 = match spec.io {
        Some(Io::Tx) => L3::Transmit,
        _ => L3::Data,
    };
    let Some(p) = packet::ours(skb, l3, access) else {
        return 0;
    };
    let mut ev = Event::zeroed();
    packet::fill(&mut ev, &p, skb, hook);
    packet::device(skb, &mut ev);
    // Once per crossing: the hook table says which of the hooks that see it counts it.
    if spec.counted {
        let key = HopKey {
            tag: p.info.tag,
            netns: ev.netns,
            ifindex: ev.ifindex,
            direction: p.direction as u8,
            _pad: [0; 3],
        };
        bump(&HOPS, &key);
    }
    if EVENTS.output::<Event>(&ev, 0).is_err() {
        stat_inc(stat::EVENTS_LOST);
    }
    0
}

#[inline(always)]
pub fn handle_tp(ctx: &TracePointContext, skb_off: usize, hook: Hook) -> i32 {
    match unsafe { ctx.read_at::<usize>(skb_off) } {
        Ok(skb) => handle(skb, hook, Access::Probe),
        Err(_) => 0,
    }
}
