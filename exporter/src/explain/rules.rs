//! The rules behind trace messages: a rule's comment and short text, fetched by
//! (family, table, chain, handle) with `NFT_MSG_GETRULE` and cached per chain for as long as
//! the ruleset's generation does not change. Rulesets change while probes are in flight: a
//! chain is fetched again when the generation moved, and a handle that is still not there
//! was deleted after the packet met it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use netlink_packet_netfilter::NetfilterProtoFamily;
use netlink_packet_netfilter::nftables::{GenMessage, NfTablesMessage, RuleAttribute, RuleMessage};

use super::attrs::{attrs, be32, be64, string};
use super::netlink::{Error, Nfnl};
use super::text::{Expr, render};
use super::{Anomalies, Anomaly, Family, printable};

const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
/// `NFTNL_UDATA_RULE_COMMENT`, the TLV of a rule's userdata that nft keeps its comment in.
const UDATA_RULE_COMMENT: u8 = 0;
/// `(NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE`, how a dumped rule comes back.
const MSG_NEWRULE: u16 = (10 << 8) | 6;
const MSG_NEWGEN: u16 = (10 << 8) | 15;

/// Where a comment was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CommentSource {
    /// nft's `comment "..."`, in the rule's userdata.
    Native,
    /// iptables' `-m comment --comment "..."`: an xt `comment` match, 256 bytes NUL-padded.
    Xt,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Comment {
    /// The comment as text: invalid UTF-8 replaced, control characters replaced, nothing
    /// else changed (quotes and markup are the presenter's to escape).
    pub text: String,
    /// The bytes as the rule holds them, up to the first NUL.
    pub raw: Vec<u8>,
    pub source: CommentSource,
}

/// What is known of one rule.
#[derive(Debug, Clone)]
pub(crate) struct RuleInfo {
    pub handle: u64,
    pub comment: Option<Comment>,
    /// A short text of the rule (see `text`), empty when it had no expressions.
    pub text: String,
}

#[derive(Debug, Clone)]
pub(crate) enum Lookup {
    Found(Arc<RuleInfo>),
    /// The chain has no rule with that handle (any more).
    Gone,
}

struct Chain {
    generation: u32,
    rules: HashMap<u64, Arc<RuleInfo>>,
}

/// The rules of one namespace.
pub(crate) struct RuleBook {
    nl: Nfnl,
    chains: HashMap<(Family, String, String), Chain>,
    anomalies: Arc<Anomalies>,
}

impl RuleBook {
    pub(crate) async fn open(ns: Option<&PathBuf>, anomalies: Arc<Anomalies>) -> Result<RuleBook, Error> {
        Ok(RuleBook {
            nl: Nfnl::open(ns).await?,
            chains: HashMap::new(),
            anomalies,
        })
    }

    /// The rule `handle` of `family table chain`.
    pub(crate) fn rule(&mut self, family: Family, table: &str, chain: &str, handle: u64) -> Result<Lookup, Error> {
        let generation = self.generation()?;
        let key = (family, table.to_string(), chain.to_string());
        let fresh = self.chains.get(&key).is_some_and(|c| c.generation == generation);
        // In the same generation the ruleset is the one fetched: a handle missing from it was
        // deleted before that fetch, and fetching again would give the same answer.
        if !fresh {
            let rules = self.fetch(family, table, chain)?;
            self.chains.insert(key.clone(), Chain { generation, rules });
        }
        match self.chains[&key].rules.get(&handle) {
            Some(r) => Ok(Lookup::Found(r.clone())),
            None => {
                self.anomalies.count(Anomaly::RuleGone);
                Ok(Lookup::Gone)
            }
        }
    }

    /// The ruleset's generation: it changes with every committed transaction.
    fn generation(&mut self) -> Result<u32, Error> {
        let replies = self.nl.request(
            "reading the nftables generation",
            NetfilterProtoFamily::Unspec,
            NfTablesMessage::GetGen(GenMessage { attributes: vec![] }),
            false,
        )?;
        let id = replies.iter().filter(|r| r.kind == MSG_NEWGEN).find_map(|r| {
            attrs(&r.body)
                .0
                .iter()
                .find(|a| a.kind == 1)
                .and_then(|a| be32(a.value))
        });
        Ok(id.unwrap_or(0))
    }

    fn fetch(&mut self, family: Family, table: &str, chain: &str) -> Result<HashMap<u64, Arc<RuleInfo>>, Error> {
        let replies = match self.nl.request(
            "reading the rules of a chain",
            family.into(),
            NfTablesMessage::GetRule(RuleMessage {
                attributes: vec![
                    RuleAttribute::Table(table.to_string()),
                    RuleAttribute::Chain(chain.to_string()),
                ],
            }),
            true,
        ) {
            Ok(r) => r,
            // The table or chain was deleted since: no rule of it can be found.
            Err(e) if e.errno() == Some(libc::ENOENT) => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut rules = HashMap::new();
        for r in replies.iter().filter(|r| r.kind == MSG_NEWRULE) {
            let rule = decode_rule(Family::from(r.family), &r.body, &self.anomalies);
            if let Some(info) = rule {
                rules.insert(info.handle, Arc::new(info));
            }
        }
        Ok(rules)
    }
}

/// Decodes one dumped rule (what follows its `nfgenmsg`); `None` without a handle.
pub(crate) fn decode_rule(family: Family, body: &[u8], anomalies: &Anomalies) -> Option<RuleInfo> {
    let (list, cut) = attrs(body);
    if cut {
        anomalies.count(Anomaly::Truncated);
    }
    let mut handle = None;
    let mut exprs = Vec::new();
    let mut comment = None;
    for a in list {
        match a.kind {
            NFTA_RULE_HANDLE => handle = be64(a.value),
            NFTA_RULE_EXPRESSIONS => exprs = expressions(a.value, anomalies),
            NFTA_RULE_USERDATA => comment = udata_comment(a.value, anomalies),
            // The table and chain are the ones asked for; compat and positions say nothing
            // a row shows.
            _ => {}
        }
    }
    let handle = handle?;
    if comment.is_none() {
        comment = exprs.iter().find_map(xt_comment);
    }
    Some(RuleInfo {
        handle,
        comment,
        text: render(family, &exprs),
    })
}

fn expressions(v: &[u8], anomalies: &Anomalies) -> Vec<Expr> {
    let (elems, cut) = attrs(v);
    if cut {
        anomalies.count(Anomaly::Truncated);
    }
    let mut out = Vec::new();
    for elem in elems.iter().filter(|e| e.kind == 1) {
        let (fields, cut) = attrs(elem.value);
        if cut {
            anomalies.count(Anomaly::Truncated);
        }
        let name = fields.iter().find(|f| f.kind == 1).map(|f| string(f.value).0);
        let data = fields
            .iter()
            .find(|f| f.kind == 2)
            .map(|f| {
                let (inner, cut) = attrs(f.value);
                if cut {
                    anomalies.count(Anomaly::Truncated);
                }
                inner.iter().map(|a| (a.kind, a.value.to_vec())).collect()
            })
            .unwrap_or_default();
        match name {
            Some(name) => out.push(Expr { name, data }),
            None => anomalies.count(Anomaly::Truncated),
        }
    }
    out
}

/// The comment TLV of a rule's userdata: type, length, value (NUL-terminated).
fn udata_comment(v: &[u8], anomalies: &Anomalies) -> Option<Comment> {
    let mut at = 0;
    while at + 2 <= v.len() {
        let (kind, len) = (v[at], usize::from(v[at + 1]));
        let Some(value) = v.get(at + 2..at + 2 + len) else {
            anomalies.count(Anomaly::Truncated);
            return None;
        };
        if kind == UDATA_RULE_COMMENT {
            return Some(comment(value, CommentSource::Native));
        }
        at += 2 + len;
    }
    None
}

/// An iptables-nft `-m comment`: a `match` expression named `comment` whose info is
/// `struct xt_comment_info { char comment[256]; }`.
fn xt_comment(e: &Expr) -> Option<Comment> {
    if e.name != "match" {
        return None;
    }
    let name = e.data.iter().find(|(k, _)| *k == 1).map(|(_, v)| string(v).0)?;
    if name != "comment" {
        return None;
    }
    let info = e.data.iter().find(|(k, _)| *k == 3).map(|(_, v)| v.as_slice())?;
    Some(comment(info, CommentSource::Xt))
}

fn comment(v: &[u8], source: CommentSource) -> Comment {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    let raw = v[..end].to_vec();
    Comment {
        text: printable(&String::from_utf8_lossy(&raw)),
        raw,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from 6.18 by `tests::capture_fixtures`: each rule body prefixed with its length.
    const XT: &[u8] = include_bytes!("fixtures/rules-xt.bin");
    const XT_DNAT: &[u8] = include_bytes!("fixtures/rules-xt-dnat.bin");
    const NATIVE: &[u8] = include_bytes!("fixtures/rules-native.bin");

    fn bodies(buf: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + 4 <= buf.len() {
            let len = u32::from_le_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
            out.push(&buf[at + 4..at + 4 + len]);
            at += 4 + len;
        }
        out
    }

    fn rules(family: Family, buf: &[u8]) -> Vec<RuleInfo> {
        let a = Anomalies::default();
        let r = bodies(buf)
            .iter()
            .map(|b| decode_rule(family, b, &a).unwrap())
            .collect();
        assert_eq!(a.snapshot().iter().map(|(_, n)| n).sum::<u64>(), 0);
        r
    }

    #[test]
    fn iptables_nft_comments_and_texts() {
        let r = rules(Family::Ip, XT);
        assert_eq!(r.len(), 2);
        let c = r[0].comment.as_ref().unwrap();
        assert_eq!(
            (c.text.as_str(), c.source),
            ("shop/cart:http cluster IP", CommentSource::Xt)
        );
        assert_eq!(
            r[0].text,
            "meta l4proto tcp ip saddr != 10.244.0.0/16 ip daddr 198.18.72.10 tcp dport 80 counter jump KUBE-MARK-MASQ"
        );
        assert_eq!(
            r[1].comment.as_ref().unwrap().text,
            "shop/cart:http -> 198.18.71.2:8080"
        );
        assert_eq!(r[1].text, "counter jump KUBE-SEP-CARTHTTPBBBBBBBB");
        let r = rules(Family::Ip, XT_DNAT);
        assert_eq!(r[0].text, "ip saddr 198.18.71.2 counter jump KUBE-MARK-MASQ");
        assert_eq!(r[1].text, "meta l4proto tcp xt tcp counter DNAT to 198.18.71.2:8080");
        assert_eq!(r[1].comment.as_ref().unwrap().text, "shop/cart:http");
    }

    #[test]
    fn native_comments_and_texts() {
        let r = rules(Family::Inet, NATIVE);
        assert_eq!(r.len(), 1);
        let c = r[0].comment.as_ref().unwrap();
        assert_eq!(
            (c.text.as_str(), c.source),
            ("send 9999 to quarantine", CommentSource::Native)
        );
        assert_eq!(r[0].text, "meta l4proto udp udp dport 9999 counter jump quarantine");
    }

    #[test]
    fn every_truncation_and_corruption_is_survived() {
        let mut x: u32 = 0x9e37_79b9;
        for (family, buf) in [(Family::Ip, XT), (Family::Ip, XT_DNAT), (Family::Inet, NATIVE)] {
            for body in bodies(buf) {
                for len in 0..body.len() {
                    let a = Anomalies::default();
                    if let Some(r) = decode_rule(family, &body[..len], &a) {
                        // A handle read is the rule's handle; a comment read is a prefix of it.
                        let full = decode_rule(family, body, &a).unwrap();
                        assert_eq!(r.handle, full.handle);
                    }
                }
                for _ in 0..2000 {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    let mut b = body.to_vec();
                    let at = (x as usize) % b.len();
                    b[at] = (x >> 8) as u8;
                    let _ = decode_rule(family, &b, &Anomalies::default());
                }
            }
        }
    }

    #[test]
    fn comments_of_every_odd_kind() {
        let long = "y".repeat(255);
        for (raw, text) in [
            (long.as_bytes().to_vec(), long.clone()),
            (b"bad \xff\xfe utf8".to_vec(), "bad \u{fffd}\u{fffd} utf8".to_string()),
            (
                b"<script>\"q\"</script> & 'a'".to_vec(),
                "<script>\"q\"</script> & 'a'".to_string(),
            ),
            (
                b"line\nbreak\x1b[31m".to_vec(),
                "line\u{fffd}break\u{fffd}[31m".to_string(),
            ),
        ] {
            let mut info = raw.clone();
            info.resize(256, 0);
            let c = comment(&info, CommentSource::Xt);
            assert_eq!((c.raw, c.text), (raw, text));
        }
        // A userdata TLV that claims more than there is.
        let a = Anomalies::default();
        assert_eq!(udata_comment(&[0, 40, b'a', b'b'], &a), None);
        assert_eq!(a.get(Anomaly::Truncated), 1);
    }
}
