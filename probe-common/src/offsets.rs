//! Every kernel struct offset, record offset and argument position the programs read, and
//! where user space finds each one on the running kernel.
//!
//! Rust eBPF cannot emit CO-RE relocations, so none of these is compiled in: the loader
//! resolves each from its [`Source`] at start-up and hands the lot to the programs in their
//! frozen settings ([`crate::Settings`]). An entry left at [`Offsets::ABSENT`] was not found;
//! a program whose hook needs it is not attached (the hook table says which need which).

/// One offset the programs may read. The value indexes [`Offsets::v`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Off {
    SkbLen,
    SkbHead,
    SkbData,
    SkbNetworkHeader,
    SkbMacHeader,
    SkbProtocol,
    SkbDev,
    DevName,
    DevIfindex,
    DevNdNet,
    NetNsInum,
    TpNetDevQueueSkb,
    TpNetifReceiveSkbSkb,
    TpNetifRxSkb,
    TpNapiGroReceiveEntrySkb,
    TpKfreeSkbSkb,
    TpKfreeSkbLocation,
    /// Absent before 5.17: drops then carry no reason.
    TpKfreeSkbReason,
    NfStateHook,
    NfStatePf,
    NfStateNet,
    XtTableName,
    NftPktinfoSkb,
    NftPktinfoState,
    NftChainName,
    NftChainTable,
    NftTableName,
    IptArgSkb,
    IptArgState,
    IptArgTable,
    NftArgPkt,
    NftArgChain,
}

/// Where the loader finds an offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Byte offset of a (dot-separated, anonymous members descended into) field in BTF.
    Field { ty: &'static str, path: &'static str },
    /// Byte offset of a field in a classic tracepoint's record (tracefs `format`).
    Record {
        category: &'static str,
        event: &'static str,
        field: &'static str,
    },
    /// Position of the first parameter with one of these names in a function's BTF
    /// prototype: argument orders changed between kernel versions.
    Param {
        func: &'static str,
        names: &'static [&'static str],
    },
}

impl Off {
    pub const COUNT: usize = Off::NftArgChain as usize + 1;

    pub const ALL: [Off; Off::COUNT] = [
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
        Off::TpNetDevQueueSkb,
        Off::TpNetifReceiveSkbSkb,
        Off::TpNetifRxSkb,
        Off::TpNapiGroReceiveEntrySkb,
        Off::TpKfreeSkbSkb,
        Off::TpKfreeSkbLocation,
        Off::TpKfreeSkbReason,
        Off::NfStateHook,
        Off::NfStatePf,
        Off::NfStateNet,
        Off::XtTableName,
        Off::NftPktinfoSkb,
        Off::NftPktinfoState,
        Off::NftChainName,
        Off::NftChainTable,
        Off::NftTableName,
        Off::IptArgSkb,
        Off::IptArgState,
        Off::IptArgTable,
        Off::NftArgPkt,
        Off::NftArgChain,
    ];

    pub const fn source(self) -> Source {
        const fn field(ty: &'static str, path: &'static str) -> Source {
            Source::Field { ty, path }
        }
        const fn record(category: &'static str, event: &'static str, field: &'static str) -> Source {
            Source::Record { category, event, field }
        }
        const fn param(func: &'static str, names: &'static [&'static str]) -> Source {
            Source::Param { func, names }
        }
        match self {
            Off::SkbLen => field("sk_buff", "len"),
            Off::SkbHead => field("sk_buff", "head"),
            Off::SkbData => field("sk_buff", "data"),
            Off::SkbNetworkHeader => field("sk_buff", "network_header"),
            Off::SkbMacHeader => field("sk_buff", "mac_header"),
            Off::SkbProtocol => field("sk_buff", "protocol"),
            Off::SkbDev => field("sk_buff", "dev"),
            Off::DevName => field("net_device", "name"),
            Off::DevIfindex => field("net_device", "ifindex"),
            Off::DevNdNet => field("net_device", "nd_net.net"),
            Off::NetNsInum => field("net", "ns.inum"),
            Off::TpNetDevQueueSkb => record("net", "net_dev_queue", "skbaddr"),
            Off::TpNetifReceiveSkbSkb => record("net", "netif_receive_skb", "skbaddr"),
            Off::TpNetifRxSkb => record("net", "netif_rx", "skbaddr"),
            Off::TpNapiGroReceiveEntrySkb => record("net", "napi_gro_receive_entry", "skbaddr"),
            Off::TpKfreeSkbSkb => record("skb", "kfree_skb", "skbaddr"),
            Off::TpKfreeSkbLocation => record("skb", "kfree_skb", "location"),
            Off::TpKfreeSkbReason => record("skb", "kfree_skb", "reason"),
            Off::NfStateHook => field("nf_hook_state", "hook"),
            Off::NfStatePf => field("nf_hook_state", "pf"),
            Off::NfStateNet => field("nf_hook_state", "net"),
            Off::XtTableName => field("xt_table", "name"),
            Off::NftPktinfoSkb => field("nft_pktinfo", "skb"),
            Off::NftPktinfoState => field("nft_pktinfo", "state"),
            Off::NftChainName => field("nft_chain", "name"),
            Off::NftChainTable => field("nft_chain", "table"),
            Off::NftTableName => field("nft_table", "name"),
            // (skb, state, table) before 5.16, (priv, skb, state) after; priv is the table.
            Off::IptArgSkb => param("ipt_do_table", &["skb"]),
            Off::IptArgState => param("ipt_do_table", &["state"]),
            Off::IptArgTable => param("ipt_do_table", &["priv", "table"]),
            Off::NftArgPkt => param("nft_do_chain", &["pkt"]),
            Off::NftArgChain => param("nft_do_chain", &["priv"]),
        }
    }
}

/// The resolved offsets, as the programs read them ([`crate::Settings::offsets`]).
///
/// 16 bits each: every field the programs read lies well within 64 KiB of its struct's start,
/// and half-words keep all the settings within the first 128 bytes of their map, where every
/// load of one is an x86 instruction with an 8-bit displacement.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offsets {
    pub v: [u16; Off::COUNT],
}

impl Offsets {
    /// Not resolved on this kernel.
    pub const ABSENT: u16 = u16::MAX;

    pub const fn unresolved() -> Self {
        Offsets {
            v: [Self::ABSENT; Off::COUNT],
        }
    }

    pub const fn get(&self, off: Off) -> Option<u16> {
        match self.v[off as usize] {
            Self::ABSENT => None,
            v => Some(v),
        }
    }

    /// Sets `off` to `v`; false, leaving it absent, when `v` does not fit.
    pub fn set(&mut self, off: Off, v: u32) -> bool {
        match u16::try_from(v) {
            Ok(v) if v != Self::ABSENT => {
                self.v[off as usize] = v;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_offset_in_index_order() {
        for (i, off) in Off::ALL.iter().enumerate() {
            assert_eq!(*off as usize, i);
        }
    }

    #[test]
    fn an_offset_that_does_not_fit_stays_absent() {
        let mut o = Offsets::unresolved();
        assert!(o.set(Off::SkbLen, 112) && o.set(Off::DevName, 65534));
        assert!(!o.set(Off::SkbDev, 65535) && !o.set(Off::NetNsInum, 1 << 20));
        assert_eq!(
            (
                o.get(Off::SkbLen),
                o.get(Off::DevName),
                o.get(Off::SkbDev),
                o.get(Off::NetNsInum)
            ),
            (Some(112), Some(65534), None, None)
        );
    }
}
