//! Netfilter verdicts: iptables-legacy `ipt_do_table` / `ip6t_do_table` and nftables
//! `nft_do_chain`, by kprobe at entry and kretprobe at return.
//!
//! The entry reads everything the verdict row needs while the skb is certainly alive (a
//! dropping chain may free it before returning) and stashes it under the invocation's stack
//! frame; the return takes the stash of its own frame. A frame names one invocation exactly:
//! two live invocations never share a stack slot, whatever CPU, task or softirq runs them,
//! and an invocation keeps its frame if its task migrates. Keying by task instead mixes up
//! receive paths, where softirqs run on whatever task the CPU was running (the idle task,
//! pid 0, on every idle CPU). Every stash that does not pair up is counted, never used.
//!
//! Argument positions come from the loader (read from each function's BTF prototype): the
//! `ipt_do_table` order changed in 5.16.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_buf,
        bpf_probe_read_kernel_str_bytes,
    },
    programs::{ProbeContext, RetProbeContext},
};
use probe_common::{Event, Hook, VerdictKey, stat};

use crate::packet::{self, Access, Dev, L3, Probe};
use crate::{EVENTS, NF_ARGS, NF_DROPPED, SCRATCH, STASH_SCRATCH, VERDICTS, bump, stat_inc};

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
    /// The context that entered: its return runs in the same one.
    pid_tgid: u64,
}

/// Chains take microseconds; a stash this old outlived a return the kernel never reported
/// (a kretprobe that ran out of instances) and must not pair with a later one.
const STASH_MAX_AGE_NS: u64 = 1_000_000_000;

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
    // Built in per-CPU map memory: on the stack, the event, the stash and the counter key
    // would pass the 512 bytes the verifier allows a whole call chain.
    let Some(ev) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot, used only here, from start to output, with no sleep between.
    let ev = unsafe { &mut *ev };
    *ev = Event::zeroed();
    packet::fill(ev, &seen.probe, seen.skb, hook);
    ev.ts_ns = seen.ts_ns;
    packet::set_dev(ev, &seen.dev);
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
    if hook.spec().counted {
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
    }
    if EVENTS.output::<Event>(ev, 0).is_err() {
        stat_inc(stat::EVENTS_LOST);
    }
}

/// The first three arguments of the probed function, and the stack pointer at entry (it
/// points at the return address: the invocation's frame).
///
/// Each is read at a constant offset, volatile so they stay separate loads: picking the
/// register by a runtime index lets LLVM compute `ctx + index * 8`, a modified context pointer
/// that the 6.1 verifier rejects ("dereference of modified ctx ptr"). The index then picks a
/// value.
#[inline(always)]
fn entry_regs(ctx: &ProbeContext) -> ([usize; 3], u64) {
    let r = ctx.regs;
    #[cfg(bpf_target_arch = "x86_64")]
    unsafe {
        (
            [
                core::ptr::read_volatile(&raw const (*r).rdi) as usize,
                core::ptr::read_volatile(&raw const (*r).rsi) as usize,
                core::ptr::read_volatile(&raw const (*r).rdx) as usize,
            ],
            core::ptr::read_volatile(&raw const (*r).rsp),
        )
    }
    // Frames are defined for x86_64's kretprobe trampoline only: elsewhere nothing is stashed,
    // so no verdict row can be misattributed.
    #[cfg(not(bpf_target_arch = "x86_64"))]
    {
        let _ = r;
        ([0; 3], NO_FRAME)
    }
}

const NO_FRAME: u64 = 0;

/// The frame of the invocation returning now: on x86_64 the kretprobe trampoline reports the
/// stack pointer as it is after `ret`, one slot above the entry's.
#[inline(always)]
fn return_frame(ctx: &RetProbeContext) -> u64 {
    let r = ctx.regs;
    #[cfg(bpf_target_arch = "x86_64")]
    unsafe {
        core::ptr::read_volatile(&raw const (*r).rsp).wrapping_sub(8)
    }
    #[cfg(not(bpf_target_arch = "x86_64"))]
    {
        let _ = r;
        NO_FRAME
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
fn stash(frame: u64, skb: usize, state: usize, table: usize) -> u32 {
    if frame == NO_FRAME {
        return 0;
    }
    // Only our packets are stashed: foreign ones stop at the cheap checks in `ours`.
    let Some(seen) = observe(skb) else {
        return 0;
    };
    // Built in per-CPU map memory: on the stack, next to the probe being recognised, it
    // would pass the 512 bytes the verifier allows a whole call chain. Kprobe programs never
    // nest on a CPU, so the slot is this invocation's until it is copied into `NF_ARGS`.
    let Some(slot) = STASH_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's slot, see above.
    let s = unsafe { &mut *slot };
    *s = Stash {
        seen,
        state,
        table,
        pid_tgid: bpf_get_current_pid_tgid(),
    };
    // A stash already in this frame is one whose return was never taken (its probe ended
    // first, or the kernel missed the return): nothing can pair with it any more.
    if NF_ARGS.insert(frame, s, 0).is_err() {
        stat_inc(stat::NF_STASH_FULL);
    }
    0
}

/// The stash of the invocation returning in `frame`, if it is one of ours and pairs up.
#[inline(always)]
fn unstash(frame: u64) -> Option<Stash> {
    let s = unsafe { *NF_ARGS.get(frame)? };
    let _ = NF_ARGS.remove(frame);
    if s.pid_tgid != bpf_get_current_pid_tgid() {
        stat_inc(stat::NF_STASH_MISMATCH);
        return None;
    }
    if unsafe { bpf_ktime_get_ns() }.wrapping_sub(s.seen.ts_ns) > STASH_MAX_AGE_NS {
        stat_inc(stat::NF_STASH_STALE);
        return None;
    }
    Some(s)
}

#[inline(always)]
pub fn ipt_entry(ctx: &ProbeContext) -> u32 {
    let (a, frame) = entry_regs(ctx);
    stash(
        frame,
        pick(&a, off!(IptArgSkb)),
        pick(&a, off!(IptArgState)),
        pick(&a, off!(IptArgTable)),
    )
}

#[inline(always)]
pub fn nft_entry(ctx: &ProbeContext) -> u32 {
    let (a, frame) = entry_regs(ctx);
    let pkt = pick(&a, off!(NftArgPkt));
    let chain = pick(&a, off!(NftArgChain));
    unsafe {
        let skb = bpf_probe_read_kernel((pkt + off!(NftPktinfoSkb)) as *const usize).unwrap_or(0);
        let state = bpf_probe_read_kernel((pkt + off!(NftPktinfoState)) as *const usize).unwrap_or(0);
        stash(frame, skb, state, chain)
    }
}

#[inline(always)]
pub fn on_return(ctx: &RetProbeContext, hook: Hook) -> u32 {
    if let Some(s) = unstash(return_frame(ctx)) {
        record(&s.seen, s.state, s.table, ctx.ret::<u64>() as u32, hook);
    }
    0
}
