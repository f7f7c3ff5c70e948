//! Why a packet was decided: the kernel's own nftables tracing, read over netlink.
//!
//! In each network namespace that needs it, tracepkt adds its own table ([`table`]) whose
//! rules set `meta nftrace set 1` on probe packets only; the kernel then sends an
//! `NFT_MSG_TRACE` message ([`trace`]) for every rule those packets meet, in every table and
//! chain, user chains included, to whoever listens on the namespace's trace group
//! ([`listen`]). Each message is tied to its probe and becomes a row ([`journey`]) with the
//! rule's comment and text ([`rules`], [`text`]) and the Kubernetes facts kube-proxy wrote
//! into them ([`kube`]). `iptables-nft` rules are nft rules, so this covers kube-proxy's
//! iptables and nftables modes alike; iptables-legacy is not seen here.
//!
//! Everything read from the kernel is treated as untrusted: a message cut short or holding
//! unknown attributes gives what it holds, and each oddity is counted in [`Anomalies`].

// Its callers are its tests until trace, serve, the spans and the metrics use it.
#![allow(dead_code)]

mod attrs;
pub(crate) mod journey;
pub(crate) mod kube;
pub(crate) mod listen;
mod netlink;
pub(crate) mod rules;
pub(crate) mod table;
mod text;
pub(crate) mod trace;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};

use netlink_packet_netfilter::NetfilterProtoFamily;

pub(crate) use netlink::Error;

/// An nftables family (`NFPROTO_*` as nftables uses it in `nfgen_family`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Family {
    Inet,
    Ip,
    Arp,
    Netdev,
    Bridge,
    Ip6,
    Other(u8),
}

impl From<u8> for Family {
    fn from(v: u8) -> Family {
        match v {
            1 => Family::Inet,
            2 => Family::Ip,
            3 => Family::Arp,
            5 => Family::Netdev,
            7 => Family::Bridge,
            10 => Family::Ip6,
            v => Family::Other(v),
        }
    }
}

impl From<Family> for NetfilterProtoFamily {
    fn from(f: Family) -> NetfilterProtoFamily {
        match f {
            Family::Inet => NetfilterProtoFamily::Inet,
            Family::Ip => NetfilterProtoFamily::IPv4,
            Family::Arp => NetfilterProtoFamily::ARP,
            Family::Netdev => NetfilterProtoFamily::NetDev,
            Family::Bridge => NetfilterProtoFamily::Bridge,
            Family::Ip6 => NetfilterProtoFamily::IPv6,
            Family::Other(v) => NetfilterProtoFamily::Other(v),
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Family::Inet => f.write_str("inet"),
            Family::Ip => f.write_str("ip"),
            Family::Arp => f.write_str("arp"),
            Family::Netdev => f.write_str("netdev"),
            Family::Bridge => f.write_str("bridge"),
            Family::Ip6 => f.write_str("ip6"),
            Family::Other(v) => write!(f, "family{v}"),
        }
    }
}

/// What can be odd about what the kernel sent, each counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Anomaly {
    /// A message or attribute shorter than it says, or missing what every message has.
    Truncated,
    /// An attribute this tracepkt does not know (a newer kernel's).
    UnknownAttribute,
    /// A name or comment that is not UTF-8 (shown with replacement characters).
    NotUtf8,
    /// A message on the trace group that is not a trace message.
    NotTrace,
    /// Trace messages the kernel dropped because the receive buffer was full.
    Overrun,
    /// A traced packet that is no watched probe's (a probe already given up on, or another
    /// packet on a probe's port).
    Unmatched,
    /// A rule deleted between the packet meeting it and its lookup.
    RuleGone,
    /// A rule that could not be read (the lookup failed).
    RuleUnreadable,
}

impl Anomaly {
    pub(crate) const ALL: [Anomaly; 8] = [
        Anomaly::Truncated,
        Anomaly::UnknownAttribute,
        Anomaly::NotUtf8,
        Anomaly::NotTrace,
        Anomaly::Overrun,
        Anomaly::Unmatched,
        Anomaly::RuleGone,
        Anomaly::RuleUnreadable,
    ];

    /// The label value a metric gives it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Anomaly::Truncated => "truncated",
            Anomaly::UnknownAttribute => "unknown_attribute",
            Anomaly::NotUtf8 => "not_utf8",
            Anomaly::NotTrace => "not_trace",
            Anomaly::Overrun => "overrun",
            Anomaly::Unmatched => "unmatched",
            Anomaly::RuleGone => "rule_gone",
            Anomaly::RuleUnreadable => "rule_unreadable",
        }
    }
}

/// Counters of [`Anomaly`], shared by everything that reads from the kernel, for a metric to
/// read at scrape time.
#[derive(Debug, Default)]
pub(crate) struct Anomalies([AtomicU64; Anomaly::ALL.len()]);

impl Anomalies {
    pub(crate) fn count(&self, a: Anomaly) {
        self.0[a as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self, a: Anomaly) -> u64 {
        self.0[a as usize].load(Ordering::Relaxed)
    }

    pub(crate) fn snapshot(&self) -> Vec<(Anomaly, u64)> {
        Anomaly::ALL.iter().map(|a| (*a, self.get(*a))).collect()
    }
}

/// `s` with control characters replaced: names and comments come from whoever wrote the
/// ruleset, and end up on terminals and pages.
pub(crate) fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '\u{fffd}' } else { c }).collect()
}
