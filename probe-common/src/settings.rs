//! Every read-only setting the kernel programs run with, in one struct: what the running
//! kernel's layouts and enums are, and what the configuration turns on.
//!
//! The loader fills it once, before load, into the programs' one read-only global
//! ([`Settings::GLOBAL`]), which the kernel then freezes. The verifier reads a frozen map's
//! values as constants, so every test of a setting is decided at load time and the branch not
//! taken is pruned: a setting costs a packet nothing at run time.

use crate::Offsets;

/// `skb_drop_reason` values the drop program tells apart, resolved by name from the kernel's
/// BTF enum. A reason the kernel lacks is [`Reasons::ABSENT`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reasons {
    /// Also frees clones and consumed copies on normal paths: user space judges it per
    /// journey, so it is reported but not counted.
    pub not_specified: u32,
    /// Not drops at all.
    pub consumed: u32,
    pub not_dropped_yet: u32,
    /// A reply freed after tracepkt's raw socket took its copy: the normal end of every
    /// answered probe, not a drop.
    pub no_socket: u32,
    /// Tells a chain that freed the packet itself apart from one that stole it.
    pub netfilter_drop: u32,
}

impl Reasons {
    /// No such reason on this kernel. Never a real value: the enum is small.
    pub const ABSENT: u32 = u32::MAX;

    pub const fn absent() -> Self {
        Reasons {
            not_specified: Self::ABSENT,
            consumed: Self::ABSENT,
            not_dropped_yet: Self::ABSENT,
            no_socket: Self::ABSENT,
            netfilter_drop: Self::ABSENT,
        }
    }
}

/// The programs' settings (the `SETTINGS` global).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Struct offsets, record offsets and argument positions of the running kernel.
    pub offsets: Offsets,
    pub reasons: Reasons,
    /// Another node's probes: how many events a second the programs may report, over all
    /// CPUs; 0 turns recognising them off.
    pub foreign_budget: u32,
    /// 1: look one level into VXLAN, Geneve and IPIP packets for a probe; 0: do not. A word
    /// of its own rather than a bit of one: testing it is then a load and a branch, with no
    /// mask between them.
    pub tunnels: u32,
}

impl Settings {
    /// The symbol of the global the loader writes.
    pub const GLOBAL: &'static str = "SETTINGS";

    /// What the programs would run with if nothing were resolved: no offsets (no hook
    /// attaches), no reasons, nothing of other nodes'.
    pub const fn unresolved() -> Self {
        Settings {
            offsets: Offsets::unresolved(),
            reasons: Reasons::absent(),
            foreign_budget: 0,
            tunnels: 0,
        }
    }
}
