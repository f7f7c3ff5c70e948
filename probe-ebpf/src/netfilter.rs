//! Netfilter verdicts: iptables-legacy `ipt_do_table` / `ip6t_do_table` and nftables
//! `nft_do_chain`. fexit sees arguments and verdict in one program; the kprobe fallback stashes
//! the arguments by task at entry and reads them back at return.
//!
//! Argument positions come from the loader (read from each function's BTF prototype): the
//! `ipt_do_table` order changed in 5.16.

use core::ptr::read_volatile;

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_buf,
        bpf_probe_read_kernel_str_bytes,
    },
    programs::{FExitContext, ProbeContext, RetProbeContext},
};
use probe_common::{Event, Hook, Kind, VerdictKey, stat};

use crate::packet::{self, Access, Dev, L3, Probe};
use crate::{EVENTS, NF_ARGS, NF_DROPPED, VERDICTS, bump, stat_inc};

/// `NF_VERDICT_MASK`: the upper bits carry a queue number or errno.
const VERDICT_MASK: u32 = 0xff;

/// One of our packets at a chain's entry: what the verdict row needs of the skb, read while
/// the skb is certainly alive (a dropping chain may free it before returning).
#[derive(Clone, Copy)]
pub struct Seen {
    probe: Probe,
    dev: Dev,
    skb: usize,
    /// When the chain was entered: the verdict row is placed there in time.
    ts_ns: u64,
}

/// Entry arguments kept for the return probe.
#[derive(Clone, Copy)]
pub struct Stash {
    seen: Seen,
    state: usize,
    /// `xt_table *` for iptables, `nft_chain *` for nftables.
    table: usize,
}

const NF_DROP: u32 = 0;
const NF_STOLEN: u32 = 2;

/// Recognises one of our packets and notes what its verdict row needs.
#[inline(always)]
fn observe(skb: usize) -> Option<Seen> {
    let probe = packet::ours(skb, L3::NetworkHeader, Access::Probe)?;
    Some(Seen {
        probe,
        dev: packet::dev_of(skb),
        skb,
        ts_ns: unsafe { bpf_ktime_get_ns() },
    })
}

/// Emits the verdict row. Reads only the hook state and the table/chain, never the skb.
#[inline(always)]
fn record(seen: &Seen, state: usize, table: usize, verdict: u32, hook: Hook) {
    let mut ev = Event::zeroed();
    packet::fill(&mut ev, &seen.probe, seen.skb, Kind::Netfilter, hook);
    ev.ts_ns = seen.ts_ns;
    packet::set_dev(&mut ev, &seen.dev);
    unsafe {
        ev.nf_hook = bpf_probe_read_kernel((state + off!(NfStateHook)) as *const u8).unwrap_or(0xff);
        ev.nf_pf = bpf_probe_read_kernel((state + off!(NfStatePf)) as *const u8).unwrap_or(0);
        if let Ok(net) = bpf_probe_read_kernel((state + off!(NfStateNet)) as *const usize) {
            ev.netns = packet::netns_of_net(net);
        }
        if hook == Hook::NftDoChain {
            if let Ok(name) = bpf_probe_read_kernel((table + off!(NftChainName)) as *const usize) {
                let _ = bpf_probe_read_kernel_str_bytes(name as *const u8, &mut ev.chain);
            }
            if let Ok(t) = bpf_probe_read_kernel((table + off!(NftChainTable)) as *const usize)
                && let Ok(name) = bpf_probe_read_kernel((t + off!(NftTableName)) as *const usize)
            {
                let _ = bpf_probe_read_kernel_str_bytes(name as *const u8, &mut ev.table);
            }
        } else {
            let _ = bpf_probe_read_kernel_buf((table + off!(XtTableName)) as *const u8, &mut ev.table);
        }
    }
    ev.verdict = verdict & VERDICT_MASK;
    if ev.verdict == NF_STOLEN
        && let Some(slot) = NF_DROPPED.get_ptr_mut(0)
        && unsafe { *slot } == seen.skb as u64
    {
        // Freed with NETFILTER_DROP inside the chain, then reported as stolen: a drop.
        ev.verdict = NF_DROP;
        unsafe { *slot = 0 };
    }
    let key = VerdictKey {
        tag: seen.probe.info.tag,
        netns: ev.netns,
        verdict: ev.verdict,
        pf: ev.nf_pf,
        hook: ev.nf_hook,
        _pad: [0; 2],
        table: ev.table,
        chain: ev.chain,
    };
    bump(&VERDICTS, &key);
    if EVENTS.output::<Event>(&ev, 0).is_err() {
        stat_inc(stat::EVENTS_LOST);
    }
}

/// The first three arguments of the probed function.
///
/// Each is read at a constant offset, volatile so they stay three loads: picking the register
/// by a runtime index lets LLVM compute `ctx + index * 8`, a modified context pointer that the
/// 6.1 verifier rejects ("dereference of modified ctx ptr"). The index then picks a value.
#[inline(always)]
fn kprobe_args(ctx: &ProbeContext) -> [usize; 3] {
    let r = ctx.regs;
    #[cfg(bpf_target_arch = "x86_64")]
    unsafe {
        [
            read_volatile(&raw const (*r).rdi) as usize,
            read_volatile(&raw const (*r).rsi) as usize,
            read_volatile(&raw const (*r).rdx) as usize,
        ]
    }
    #[cfg(not(bpf_target_arch = "x86_64"))]
    {
        let _ = r;
        [
            ctx.arg(0).unwrap_or(0),
            ctx.arg(1).unwrap_or(0),
            ctx.arg(2).unwrap_or(0),
        ]
    }
}

/// Same for fentry/fexit, whose context is the array of argument values.
#[inline(always)]
fn fexit_args(ctx: &FExitContext) -> [usize; 3] {
    let a = ctx.as_ptr() as *const u64;
    unsafe {
        [
            read_volatile(a) as usize,
            read_volatile(a.add(1)) as usize,
            read_volatile(a.add(2)) as usize,
        ]
    }
}

#[inline(always)]
fn pick(args: &[usize; 3], n: usize) -> usize {
    match n {
        0 => args[0],
        1 => args[1],
        _ => args[2],
    }
}

#[inline(always)]
fn stash(skb: usize, state: usize, table: usize) -> u32 {
    // Only our packets are stashed: foreign ones stop at the cheap checks in `ours`.
    if let Some(seen) = observe(skb) {
        let _ = NF_ARGS.insert(bpf_get_current_pid_tgid(), Stash { seen, state, table }, 0);
    }
    0
}

#[inline(always)]
fn unstash() -> Option<Stash> {
    let key = bpf_get_current_pid_tgid();
    let s = unsafe { *NF_ARGS.get(key)? };
    let _ = NF_ARGS.remove(key);
    Some(s)
}

#[inline(always)]
pub fn ipt_entry(ctx: &ProbeContext) -> u32 {
    let a = kprobe_args(ctx);
    stash(
        pick(&a, off!(IptArgSkb)),
        pick(&a, off!(IptArgState)),
        pick(&a, off!(IptArgTable)),
    )
}

#[inline(always)]
pub fn nft_entry(ctx: &ProbeContext) -> u32 {
    let a = kprobe_args(ctx);
    let pkt = pick(&a, off!(NftArgPkt));
    let chain = pick(&a, off!(NftArgChain));
    unsafe {
        let skb = bpf_probe_read_kernel((pkt + off!(NftPktinfoSkb)) as *const usize).unwrap_or(0);
        let state = bpf_probe_read_kernel((pkt + off!(NftPktinfoState)) as *const usize).unwrap_or(0);
        stash(skb, state, chain)
    }
}

#[inline(always)]
fn ret_of(ctx: &RetProbeContext) -> u32 {
    ctx.ret::<u64>() as u32
}

#[inline(always)]
pub fn ipt_return(ctx: &RetProbeContext, hook: Hook) -> u32 {
    if let Some(s) = unstash() {
        record(&s.seen, s.state, s.table, ret_of(ctx), hook);
    }
    0
}

#[inline(always)]
pub fn nft_return(ctx: &RetProbeContext) -> u32 {
    if let Some(s) = unstash() {
        record(&s.seen, s.state, s.table, ret_of(ctx), Hook::NftDoChain);
    }
    0
}

#[inline(always)]
pub fn ipt_fexit(ctx: &FExitContext, hook: Hook) -> i32 {
    let a = fexit_args(ctx);
    let (skb, state, table) = (
        pick(&a, off!(IptArgSkb)),
        pick(&a, off!(IptArgState)),
        pick(&a, off!(IptArgTable)),
    );
    let verdict: u32 = ctx.ret().unwrap_or(0);
    // After the function: a chain that dropped may already have freed the skb, and then the
    // row is missing. The kprobe path reads the skb at entry instead.
    if let Some(seen) = observe(skb) {
        record(&seen, state, table, verdict, hook);
    }
    0
}

#[inline(always)]
pub fn nft_fexit(ctx: &FExitContext) -> i32 {
    let a = fexit_args(ctx);
    let (pkt, chain) = (pick(&a, off!(NftArgPkt)), pick(&a, off!(NftArgChain)));
    let verdict: u32 = ctx.ret().unwrap_or(0);
    unsafe {
        let skb = bpf_probe_read_kernel((pkt + off!(NftPktinfoSkb)) as *const usize).unwrap_or(0);
        let state = bpf_probe_read_kernel((pkt + off!(NftPktinfoState)) as *const usize).unwrap_or(0);
        if let Some(seen) = observe(skb) {
            record(&seen, state, chain, verdict, Hook::NftDoChain);
        }
    }
    0
}
