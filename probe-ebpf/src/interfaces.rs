//! Interface crossings: `net_dev_queue` (transmit), `netif_receive_skb` (receive), and the
//! receive entry points `netif_rx` / `napi_gro_receive_entry`.

use aya_ebpf::programs::TracePointContext;
use probe_common::{Event, HopKey, hook, kind, stat};

use crate::packet::{self, Access, L3};
use crate::{EVENTS, HOPS, bump, stat_inc};

#[inline(always)]
pub fn handle(skb: usize, hook_id: u8, access: Access) -> i32 {
    let l3 = if hook_id == hook::NET_DEV_QUEUE {
        L3::NetworkHeader
    } else {
        L3::Data
    };
    let Some(p) = packet::ours(skb, l3, access) else {
        return 0;
    };
    let mut ev = Event::zeroed();
    packet::fill(&mut ev, &p, skb, kind::INTERFACE, hook_id);
    packet::device(skb, &mut ev);
    // One count per crossing: transmit at net_dev_queue, receive at netif_receive_skb, which
    // every received packet reaches after netif_rx or GRO.
    if hook_id == hook::NET_DEV_QUEUE || hook_id == hook::NETIF_RECEIVE_SKB {
        let key = HopKey {
            tag: p.info.tag,
            netns: ev.netns,
            ifindex: ev.ifindex,
            direction: p.direction,
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
pub fn handle_tp(ctx: &TracePointContext, skb_off: usize, hook_id: u8) -> i32 {
    match unsafe { ctx.read_at::<usize>(skb_off) } {
        Ok(skb) => handle(skb, hook_id, Access::Probe),
        Err(_) => 0,
    }
}
