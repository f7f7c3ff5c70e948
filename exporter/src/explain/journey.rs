//! From trace messages to rows: each message is tied to the probe whose packet it is about,
//! and becomes one row of that probe's ordered list of rules, with the rule's comment, text
//! and Kubernetes facts.
//!
//! Only the first message of each base chain carries the packet's headers; the others are
//! tied to it by the kernel's trace id, which stays the same for one packet in one namespace.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::kube::{Fact, facts};
use super::listen::Listener;
use super::rules::{Comment, Lookup, RuleBook};
use super::table::TABLE;
use super::trace::{Ct, L4, Packet, TraceKind, TraceMessage, Verdict};
use super::{Anomalies, Anomaly, Error, Family};

/// What tells a probe's packets apart: the echo id and sequence of an ICMP probe, the local
/// port of a TCP or UDP probe; with the first four bytes of the trace id where the packet
/// carries tracepkt's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProbeKey {
    Echo { id: u16, seq: u16, trace: Option<[u8; 4]> },
    Udp { port: u16, trace: Option<[u8; 4]> },
    Tcp { port: u16 },
}

impl ProbeKey {
    /// Whether `p` is this probe's packet, or the answer to it.
    pub(crate) fn matches(&self, p: &Packet) -> bool {
        let same_trace = |want: &Option<[u8; 4]>, got: &Option<[u8; 4]>| want.is_none() || got.is_none() || want == got;
        match (self, &p.l4) {
            (
                ProbeKey::Echo { id, seq, trace },
                L4::Echo {
                    id: i, seq: s, magic, ..
                },
            ) => id == i && seq == s && same_trace(trace, magic),
            (ProbeKey::Udp { port, trace }, L4::Udp { sport, dport, magic }) => {
                (port == sport || port == dport) && same_trace(trace, magic)
            }
            (ProbeKey::Tcp { port }, L4::Tcp { sport, dport, .. }) => port == sport || port == dport,
            _ => false,
        }
    }
}

/// Whether the rule behind a row could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RuleState {
    Read,
    /// Deleted (or its chain was) between the packet and the lookup.
    Gone,
    /// The message named no rule (a policy, the end of a chain), or reading failed.
    Unknown,
}

/// One rule (or chain end) a probe's packet met.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub family: Family,
    pub table: String,
    pub chain: String,
    pub handle: Option<u64>,
    pub kind: TraceKind,
    /// The rule's verdict, or at a chain's end with `Policy`, the policy's.
    pub verdict: Option<Verdict>,
    pub comment: Option<Comment>,
    pub text: Option<String>,
    pub rule: RuleState,
    /// The packet's mark after the rule, when it has one.
    pub mark: Option<u32>,
    /// The rule changed the mark.
    pub marked: bool,
    /// The packet as its headers were when it entered this base chain.
    pub packet: Option<Packet>,
    /// Its conntrack entry, where the kernel says.
    pub ct: Option<Ct>,
    pub facts: Vec<Fact>,
}

impl Row {
    /// Whether the row decided something: a jump or goto, a verdict that ends the hook, a
    /// policy, a NAT, a mark. The rest are rules that matched and let the packet go on.
    pub(crate) fn decided(&self) -> bool {
        let nat = self.text.as_deref().is_some_and(|t| {
            t.split(' ').any(|w| {
                matches!(
                    w,
                    "dnat" | "snat" | "masquerade" | "redirect" | "DNAT" | "SNAT" | "MASQUERADE"
                )
            })
        });
        self.kind == TraceKind::Policy
            || self.marked
            || nat
            || matches!(self.verdict, Some(ref v) if *v != Verdict::Continue)
    }
}

/// A probe being watched.
pub(crate) type Token = u64;

/// Trace ids remembered at most; past this the map starts over (ids are short-lived: one
/// packet's walk through one namespace).
const MAX_PACKETS: usize = 4096;

#[derive(Default)]
pub(crate) struct Collector {
    next: Token,
    watched: HashMap<Token, (ProbeKey, Vec<Row>)>,
    /// Per trace id: the probe its packet belongs to (if any), the packet, its last mark.
    current: HashMap<u32, (Option<Token>, Packet, Option<u32>)>,
}

impl Collector {
    pub(crate) fn watch(&mut self, key: ProbeKey) -> Token {
        self.next += 1;
        self.watched.insert(self.next, (key, Vec::new()));
        self.next
    }

    /// Stops watching; the rows seen so far, in order.
    pub(crate) fn take(&mut self, token: Token) -> Vec<Row> {
        self.watched.remove(&token).map(|(_, rows)| rows).unwrap_or_default()
    }

    pub(crate) fn feed(&mut self, m: TraceMessage, rules: Option<&mut RuleBook>, anomalies: &Anomalies) {
        let Some(id) = m.id else {
            anomalies.count(Anomaly::Truncated);
            return;
        };
        if let Some(p) = Packet::parse(&m) {
            let owner = self.watched.iter().find(|(_, (k, _))| k.matches(&p)).map(|(t, _)| *t);
            if owner.is_none() {
                anomalies.count(Anomaly::Unmatched);
            }
            if self.current.len() >= MAX_PACKETS {
                self.current.clear();
            }
            let mark = self.current.get(&id).and_then(|c| c.2);
            self.current.insert(id, (owner, p, mark));
        }
        let Some((Some(owner), packet, last_mark)) = self.current.get(&id).cloned() else {
            if !self.current.contains_key(&id) {
                // A packet whose first message was lost (an overrun) or cut short.
                anomalies.count(Anomaly::Unmatched);
            }
            return;
        };
        let (Some(table), Some(chain)) = (m.table.clone(), m.chain.clone()) else {
            anomalies.count(Anomaly::Truncated);
            return;
        };
        if let Some(c) = self.current.get_mut(&id) {
            c.2 = m.mark;
        }
        let family = m.family.unwrap_or(Family::Other(0));
        if table == TABLE && family == Family::Inet {
            // The rule that set the bit, and this table's own policy.
            return;
        }
        let kind = m.kind.unwrap_or(TraceKind::Other(0));
        let (rule, comment, text) = match (m.handle, rules) {
            (Some(h), Some(book)) => match book.rule(family, &table, &chain, h) {
                Ok(Lookup::Found(r)) => (RuleState::Read, r.comment.clone(), Some(r.text.clone())),
                Ok(Lookup::Gone) => (RuleState::Gone, None, None),
                Err(_) => {
                    anomalies.count(Anomaly::RuleUnreadable);
                    (RuleState::Unknown, None, None)
                }
            },
            _ => (RuleState::Unknown, None, None),
        };
        let facts = facts(&table, &chain, comment.as_ref().map(|c| c.text.as_str()));
        let verdict = if kind == TraceKind::Policy {
            m.policy.clone()
        } else {
            m.verdict.clone()
        };
        let row = Row {
            family,
            table,
            chain,
            handle: m.handle,
            kind,
            verdict,
            comment,
            text,
            rule,
            mark: m.mark,
            marked: m.mark != last_mark,
            packet: Some(packet),
            ct: m.ct.clone(),
            facts,
        };
        if let Some((_, rows)) = self.watched.get_mut(&owner) {
            rows.push(row);
        }
    }
}

/// Everything needed to explain probes in one namespace: the trace listener, the rules, and
/// the probes being watched.
pub(crate) struct Session {
    pub listener: Listener,
    pub rules: RuleBook,
    pub collector: Collector,
    anomalies: Arc<Anomalies>,
}

impl Session {
    pub(crate) async fn open(ns: Option<&std::path::PathBuf>, anomalies: Arc<Anomalies>) -> Result<Session, Error> {
        Ok(Session {
            listener: Listener::open(ns, anomalies.clone()).await?,
            rules: RuleBook::open(ns, anomalies.clone()).await?,
            collector: Collector::default(),
            anomalies,
        })
    }

    /// Reads trace messages until none came for `quiet`, feeding each to the collector.
    pub(crate) async fn pump_until_quiet(&mut self, quiet: Duration) -> Result<usize, Error> {
        let mut n = 0;
        while let Ok(msgs) = tokio::time::timeout(quiet, self.listener.next()).await {
            for m in msgs? {
                n += 1;
                self.collector.feed(m, Some(&mut self.rules), &self.anomalies);
            }
        }
        Ok(n)
    }
}
