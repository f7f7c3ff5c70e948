//! The hook table: every kernel hook tracepkt follows packets through, what it reveals, and
//! how to attach it, in order of preference, with the offsets each way needs.
//!
//! The loader attaches from this table, the attach report and `tracepkt_program_attached`
//! are made from it, the programs named here are the entry points in `probe-ebpf`'s
//! `main.rs`, and what a hook's events mean (which way a crossing goes, whether the kernel
//! counts it) is read from its row, by the programs and by journey assembly alike. Adding a
//! hook means a row here, its [`Hook`] value and its kernel handler.
//!
//! Netfilter functions are followed by kprobes only. fentry/fexit would be cheaper, but the
//! functions live in modules (`nf_tables`, `ip_tables`) on the kernels tracepkt is tested on,
//! and aya loads fentry/fexit programs against vmlinux BTF only; kernels that lock ftrace
//! down refuse fentry altogether.

use crate::{Hook, Io, Kind, Mechanism, Off};

/// Where in the kernel a hook sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// A tracepoint: `category:name` in tracefs, `name` for `tp_btf`.
    Tracepoint { category: &'static str, name: &'static str },
    /// A kernel function, and the module that usually holds it.
    Function { name: &'static str, module: &'static str },
}

impl Point {
    pub const fn name(&self) -> &'static str {
        match self {
            Point::Tracepoint { name, .. } | Point::Function { name, .. } => name,
        }
    }
}

/// One way of attaching a hook: the mechanism, its programs (attached in this order; all or
/// none), and the offsets it needs beyond the hook's own.
#[derive(Clone, Copy, Debug)]
pub struct Via {
    pub mechanism: Mechanism,
    pub programs: &'static [&'static str],
    pub needs: &'static [Off],
}

/// One row of the table.
#[derive(Clone, Copy, Debug)]
pub struct HookSpec {
    pub hook: Hook,
    pub kind: Kind,
    pub point: Point,
    /// Interface hooks: which way the packet crosses the interface there; none for the others.
    pub io: Option<Io>,
    /// Whether the programs count this hook's events in the kernel's counters (`HOPS`,
    /// `VERDICTS`, `DROPS`). Several interface hooks see one crossing; only one of them
    /// counts it.
    pub counted: bool,
    /// Offsets every way of attaching this hook needs.
    pub needs: &'static [Off],
    /// Ways of attaching it, preferred first.
    pub via: &'static [Via],
}

/// What recognising a probe and naming its device takes.
const SKB: &[Off] = &[
    Off::SkbLen,
    Off::SkbHead,
    Off::SkbData,
    Off::SkbNetworkHeader,
    Off::SkbMacHeader,
    Off::SkbProtocol,
    Off::SkbDev,
    Off::DevName,
    Off::DevIfindex,
    Off::DevNdNet,
    Off::NetNsInum,
];

const IPT: &[Off] = &[
    Off::NfStateHook,
    Off::NfStatePf,
    Off::NfStateNet,
    Off::XtTableName,
    Off::IptArgSkb,
    Off::IptArgState,
    Off::IptArgTable,
];

const NFT: &[Off] = &[
    Off::NfStateHook,
    Off::NfStatePf,
    Off::NfStateNet,
    Off::NftPktinfoSkb,
    Off::NftPktinfoState,
    Off::NftChainName,
    Off::NftChainTable,
    Off::NftTableName,
    Off::NftArgPkt,
    Off::NftArgChain,
];

const fn tp_btf(program: &'static [&'static str]) -> Via {
    Via {
        mechanism: Mechanism::TpBtf,
        programs: program,
        needs: &[],
    }
}

const fn tracepoint(program: &'static [&'static str], needs: &'static [Off]) -> Via {
    Via {
        mechanism: Mechanism::Tracepoint,
        programs: program,
        needs,
    }
}

/// The return probe first: an entry that fires without its return would stash for nothing.
const fn kprobe(programs: &'static [&'static str], needs: &'static [Off]) -> Via {
    Via {
        mechanism: Mechanism::Kprobe,
        programs,
        needs,
    }
}

/// The `counted` column of interface hooks.
const COUNTED_HERE: bool = true;
/// A receive entry point: `netif_receive_skb`, later on the same crossing, counts it.
const COUNTED_LATER: bool = false;

const fn interface(hook: Hook, name: &'static str, io: Io, counted: bool, via: &'static [Via]) -> HookSpec {
    HookSpec {
        hook,
        kind: Kind::Interface,
        point: Point::Tracepoint { category: "net", name },
        io: Some(io),
        counted,
        needs: SKB,
        via,
    }
}

const fn netfilter(hook: Hook, name: &'static str, module: &'static str, via: &'static [Via]) -> HookSpec {
    HookSpec {
        hook,
        kind: Kind::Netfilter,
        point: Point::Function { name, module },
        io: None,
        counted: true,
        needs: SKB,
        via,
    }
}

/// In [`Hook`] value order: `Hook::spec` indexes it.
///
/// A crossing is counted where every packet of its way passes once: at `net_dev_queue` on
/// transmit, at `netif_receive_skb` on receive, which every received packet reaches after
/// `netif_rx` or GRO.
pub const HOOKS: &[HookSpec] = &[
    interface(
        Hook::NetDevQueue,
        "net_dev_queue",
        Io::Tx,
        COUNTED_HERE,
        &[
            tp_btf(&["net_dev_queue_btf"]),
            tracepoint(&["net_dev_queue_tp"], &[Off::TpNetDevQueueSkb]),
        ],
    ),
    interface(
        Hook::NetifReceiveSkb,
        "netif_receive_skb",
        Io::Rx,
        COUNTED_HERE,
        &[
            tp_btf(&["netif_receive_skb_btf"]),
            tracepoint(&["netif_receive_skb_tp"], &[Off::TpNetifReceiveSkbSkb]),
        ],
    ),
    interface(
        Hook::NetifRx,
        "netif_rx",
        Io::Rx,
        COUNTED_LATER,
        &[
            tp_btf(&["netif_rx_btf"]),
            tracepoint(&["netif_rx_tp"], &[Off::TpNetifRxSkb]),
        ],
    ),
    interface(
        Hook::NapiGroReceiveEntry,
        "napi_gro_receive_entry",
        Io::Rx,
        COUNTED_LATER,
        &[
            tp_btf(&["napi_gro_receive_entry_btf"]),
            tracepoint(&["napi_gro_receive_entry_tp"], &[Off::TpNapiGroReceiveEntrySkb]),
        ],
    ),
    HookSpec {
        hook: Hook::KfreeSkb,
        kind: Kind::Drop,
        point: Point::Tracepoint {
            category: "skb",
            name: "kfree_skb",
        },
        io: None,
        // Reasoned drops only: NOT_SPECIFIED is judged per journey in user space.
        counted: true,
        needs: SKB,
        via: &[
            tp_btf(&["kfree_skb_btf"]),
            tracepoint(&["kfree_skb_tp"], &[Off::TpKfreeSkbSkb, Off::TpKfreeSkbLocation]),
        ],
    },
    netfilter(
        Hook::IptDoTable,
        "ipt_do_table",
        "ip_tables",
        &[kprobe(&["ipt_do_table_return", "ipt_do_table_entry"], IPT)],
    ),
    netfilter(
        Hook::Ip6tDoTable,
        "ip6t_do_table",
        "ip6_tables",
        // ip6t_do_table has had the same argument order as ipt_do_table in every kernel.
        &[kprobe(&["ip6t_do_table_return", "ip6t_do_table_entry"], IPT)],
    ),
    netfilter(
        Hook::NftDoChain,
        "nft_do_chain",
        "nf_tables",
        &[kprobe(&["nft_do_chain_return", "nft_do_chain_entry"], NFT)],
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_in_hook_order_and_complete() {
        assert_eq!(HOOKS.len(), Hook::ALL.len());
        for h in Hook::ALL {
            assert_eq!(h.spec().hook, h);
            assert!(!h.spec().via.is_empty());
            for v in h.spec().via {
                assert!(!v.programs.is_empty());
            }
        }
        assert_eq!(Hook::NftDoChain.name(), "nft_do_chain");
        assert_eq!(Hook::KfreeSkb.name(), "kfree_skb");
    }

    #[test]
    fn interface_hooks_say_which_way_and_count_each_way_once() {
        for h in Hook::ALL {
            assert_eq!(h.spec().io.is_some(), h.spec().kind == Kind::Interface, "{h:?}");
        }
        for io in [Io::Tx, Io::Rx] {
            let counting = Hook::ALL
                .into_iter()
                .filter(|h| h.spec().io == Some(io) && h.spec().counted)
                .count();
            assert_eq!(counting, 1, "{io:?}");
        }
        assert_eq!(Hook::NetDevQueue.spec().io, Some(Io::Tx));
        assert!(Hook::NetifReceiveSkb.spec().counted && !Hook::NetifRx.spec().counted);
    }
}
