//! `NFT_MSG_TRACE`: what the kernel says about each rule a traced packet meets, read from the
//! attributes of `enum nft_trace_attributes` (include/uapi/linux/netfilter/nf_tables.h), and the
//! packet it says it about.
//!
//! The kernel copies the packet's headers (interfaces, network header, the first 20 bytes
//! from the transport header) only into the first message of each base chain it evaluates;
//! the messages after it carry the same trace id and no headers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::attrs::{attrs, be16, be32, be64, string};
use super::table::MAGIC;
use super::{Anomalies, Anomaly, Family};

const NFTA_TRACE_TABLE: u16 = 1;
const NFTA_TRACE_CHAIN: u16 = 2;
const NFTA_TRACE_RULE_HANDLE: u16 = 3;
const NFTA_TRACE_TYPE: u16 = 4;
const NFTA_TRACE_VERDICT: u16 = 5;
const NFTA_TRACE_ID: u16 = 6;
const NFTA_TRACE_LL_HEADER: u16 = 7;
const NFTA_TRACE_NETWORK_HEADER: u16 = 8;
const NFTA_TRACE_TRANSPORT_HEADER: u16 = 9;
const NFTA_TRACE_IIF: u16 = 10;
const NFTA_TRACE_IIFTYPE: u16 = 11;
const NFTA_TRACE_OIF: u16 = 12;
const NFTA_TRACE_OIFTYPE: u16 = 13;
const NFTA_TRACE_MARK: u16 = 14;
const NFTA_TRACE_NFPROTO: u16 = 15;
const NFTA_TRACE_POLICY: u16 = 16;
const NFTA_TRACE_PAD: u16 = 17;
// Since 6.15: the packet's conntrack entry.
const NFTA_TRACE_CT_ID: u16 = 18;
const NFTA_TRACE_CT_DIRECTION: u16 = 19;
const NFTA_TRACE_CT_STATUS: u16 = 20;
const NFTA_TRACE_CT_STATE: u16 = 21;

const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

/// `(NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_TRACE`.
pub(super) const MSG_TRACE: u16 = (10 << 8) | 17;

/// What a message is about (`enum nft_trace_types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TraceKind {
    /// A rule matched (its verdict may be `continue`).
    Rule,
    /// The end of a chain was reached without a verdict: back to the calling chain, or for
    /// a base chain on to its policy. (The kernel's RETURN type; 6.x kernels send a rule
    /// message without a handle and with verdict `continue` instead, read as this too.)
    Return,
    /// The end of a base chain was reached: its policy decides.
    Policy,
    Other(u32),
}

/// A verdict, as the kernel encodes it (`NF_*` and `NFT_*` codes).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Verdict {
    Accept,
    Drop,
    Stolen,
    Queue,
    Repeat,
    Stop,
    Continue,
    Break,
    Jump(String),
    Goto(String),
    Return,
    Other(u32),
}

impl Verdict {
    pub(super) fn from_code(code: u32, chain: Option<String>) -> Verdict {
        match code as i32 {
            -1 => Verdict::Continue,
            -2 => Verdict::Break,
            -3 => Verdict::Jump(chain.unwrap_or_default()),
            -4 => Verdict::Goto(chain.unwrap_or_default()),
            -5 => Verdict::Return,
            // The low byte is the verdict; above it, a queue number or an errno.
            c if c >= 0 => match code & 0xff {
                0 => Verdict::Drop,
                1 => Verdict::Accept,
                2 => Verdict::Stolen,
                3 => Verdict::Queue,
                4 => Verdict::Repeat,
                5 => Verdict::Stop,
                _ => Verdict::Other(code),
            },
            _ => Verdict::Other(code),
        }
    }

    /// Whether this verdict ends the packet's walk through the hook (as opposed to moving
    /// within the ruleset).
    pub(crate) fn is_final(&self) -> bool {
        matches!(
            self,
            Verdict::Accept | Verdict::Drop | Verdict::Stolen | Verdict::Queue | Verdict::Repeat | Verdict::Stop
        )
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Accept => f.write_str("accept"),
            Verdict::Drop => f.write_str("drop"),
            Verdict::Stolen => f.write_str("stolen"),
            Verdict::Queue => f.write_str("queue"),
            Verdict::Repeat => f.write_str("repeat"),
            Verdict::Stop => f.write_str("stop"),
            Verdict::Continue => f.write_str("continue"),
            Verdict::Break => f.write_str("break"),
            Verdict::Jump(c) => write!(f, "jump {c}"),
            Verdict::Goto(c) => write!(f, "goto {c}"),
            Verdict::Return => f.write_str("return"),
            Verdict::Other(c) => write!(f, "verdict {c:#x}"),
        }
    }
}

/// One `NFT_MSG_TRACE` message, with what it held. Every field is optional: a message cut
/// short keeps what came before the cut.
#[derive(Debug, Clone, Default)]
pub(crate) struct TraceMessage {
    /// The family of the table the base chain belongs to (`nfgen_family`).
    pub family: Option<Family>,
    pub id: Option<u32>,
    pub kind: Option<TraceKind>,
    pub table: Option<String>,
    pub chain: Option<String>,
    pub handle: Option<u64>,
    pub verdict: Option<Verdict>,
    /// The base chain's policy, on a `Policy` message.
    pub policy: Option<Verdict>,
    /// The packet's family as the hook saw it (`NFPROTO_IPV4`, `NFPROTO_IPV6`...).
    pub nfproto: Option<u32>,
    pub mark: Option<u32>,
    pub iif: Option<u32>,
    pub oif: Option<u32>,
    pub network: Option<Vec<u8>>,
    pub transport: Option<Vec<u8>>,
    /// The packet's conntrack entry, on kernels that say (6.15 and later).
    pub ct: Option<Ct>,
}

/// What the kernel says of a traced packet's conntrack entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Ct {
    pub id: Option<u32>,
    /// The packet goes the way of the connection's reply.
    pub reply: Option<bool>,
    /// `IPS_*` bits (`enum ip_conntrack_status`).
    pub status: Option<u32>,
    /// `NF_CT_STATE_*` bits, as `ct state` matches them.
    pub state: Option<u32>,
}

impl Ct {
    /// The state as `ct state` names it.
    pub(crate) fn state_name(&self) -> Option<String> {
        let bits = self.state?;
        let names: Vec<&str> = [
            (1, "invalid"),
            (2, "established"),
            (4, "related"),
            (8, "new"),
            (64, "untracked"),
        ]
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| *n)
        .collect();
        Some(if names.is_empty() {
            format!("{bits:#x}")
        } else {
            names.join(",")
        })
    }

    /// Whether the entry's destination was rewritten (DNAT done).
    pub(crate) fn dnat(&self) -> Option<bool> {
        self.status.map(|s| s & 0x100 != 0)
    }
}

/// Decodes the `NFT_MSG_TRACE` messages of one datagram from the trace group. Anything that
/// is not a trace message, or not all of one, is counted in `anomalies`.
pub(crate) fn decode(buf: &[u8], anomalies: &Anomalies) -> Vec<TraceMessage> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let rest = &buf[at..];
        let Some(len) = rest
            .get(..4)
            .map(|b| u32::from_ne_bytes(b.try_into().unwrap()) as usize)
        else {
            anomalies.count(Anomaly::Truncated);
            break;
        };
        if len < 16 || len > rest.len() {
            anomalies.count(Anomaly::Truncated);
            break;
        }
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        if kind == MSG_TRACE {
            out.push(decode_one(&rest[16..len], anomalies));
        } else {
            anomalies.count(Anomaly::NotTrace);
        }
        at += (len + 3) & !3;
    }
    out
}

/// Decodes one trace message's payload: `nfgenmsg` then attributes.
pub(crate) fn decode_one(payload: &[u8], anomalies: &Anomalies) -> TraceMessage {
    let mut m = TraceMessage::default();
    let Some(gen_msg) = payload.get(..4) else {
        anomalies.count(Anomaly::Truncated);
        return m;
    };
    m.family = Some(Family::from(gen_msg[0]));
    let (list, cut) = attrs(&payload[4..]);
    if cut {
        anomalies.count(Anomaly::Truncated);
    }
    let name = |v: &[u8]| {
        let (s, utf8) = string(v);
        if !utf8 {
            anomalies.count(Anomaly::NotUtf8);
        }
        s
    };
    for a in list {
        let short = || anomalies.count(Anomaly::Truncated);
        match a.kind {
            NFTA_TRACE_TABLE => m.table = Some(name(a.value)),
            NFTA_TRACE_CHAIN => m.chain = Some(name(a.value)),
            NFTA_TRACE_RULE_HANDLE => m.handle = be64(a.value).or_else(|| none(short)),
            NFTA_TRACE_TYPE => {
                m.kind = be32(a.value)
                    .map(|t| match t {
                        1 => TraceKind::Policy,
                        2 => TraceKind::Return,
                        3 => TraceKind::Rule,
                        t => TraceKind::Other(t),
                    })
                    .or_else(|| none(short))
            }
            NFTA_TRACE_VERDICT => m.verdict = verdict(a.value, anomalies, &name),
            NFTA_TRACE_ID => m.id = be32(a.value).or_else(|| none(short)),
            NFTA_TRACE_NETWORK_HEADER => m.network = Some(a.value.to_vec()),
            NFTA_TRACE_TRANSPORT_HEADER => m.transport = Some(a.value.to_vec()),
            NFTA_TRACE_IIF => m.iif = be32(a.value).or_else(|| none(short)),
            NFTA_TRACE_OIF => m.oif = be32(a.value).or_else(|| none(short)),
            NFTA_TRACE_MARK => m.mark = be32(a.value).or_else(|| none(short)),
            NFTA_TRACE_NFPROTO => m.nfproto = be32(a.value).or_else(|| none(short)),
            NFTA_TRACE_POLICY => {
                m.policy = be32(a.value)
                    .map(|c| Verdict::from_code(c, None))
                    .or_else(|| none(short))
            }
            NFTA_TRACE_CT_ID => m.ct.get_or_insert_default().id = be32(a.value).or_else(|| none(short)),
            NFTA_TRACE_CT_DIRECTION => {
                m.ct.get_or_insert_default().reply = a.value.first().map(|d| *d != 0).or_else(|| none(short))
            }
            NFTA_TRACE_CT_STATUS => m.ct.get_or_insert_default().status = be32(a.value).or_else(|| none(short)),
            NFTA_TRACE_CT_STATE => m.ct.get_or_insert_default().state = be32(a.value).or_else(|| none(short)),
            // Known and not needed: the link-layer header and the interfaces' ARPHRD types.
            NFTA_TRACE_LL_HEADER | NFTA_TRACE_IIFTYPE | NFTA_TRACE_OIFTYPE | NFTA_TRACE_PAD => {}
            _ => anomalies.count(Anomaly::UnknownAttribute),
        }
    }
    if m.kind == Some(TraceKind::Rule) && m.handle.is_none() && m.verdict == Some(Verdict::Continue) {
        m.kind = Some(TraceKind::Return);
    }
    m
}

fn none<T>(count: impl FnOnce()) -> Option<T> {
    count();
    None
}

fn verdict(v: &[u8], anomalies: &Anomalies, name: &dyn Fn(&[u8]) -> String) -> Option<Verdict> {
    let (list, cut) = attrs(v);
    if cut {
        anomalies.count(Anomaly::Truncated);
    }
    let mut code = None;
    let mut chain = None;
    for a in list {
        match a.kind {
            NFTA_VERDICT_CODE => code = be32(a.value),
            NFTA_VERDICT_CHAIN => chain = Some(name(a.value)),
            _ => {}
        }
    }
    match code {
        Some(c) => Some(Verdict::from_code(c, chain)),
        None => {
            anomalies.count(Anomaly::Truncated);
            None
        }
    }
}

/// What the headers of a traced packet say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub l4: L4,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum L4 {
    /// An ICMP or ICMPv6 echo request or reply; `magic` when tracepkt's payload follows the
    /// header, with the first four bytes of its trace id.
    Echo {
        reply: bool,
        id: u16,
        seq: u16,
        magic: Option<[u8; 4]>,
    },
    Udp {
        sport: u16,
        dport: u16,
        magic: Option<[u8; 4]>,
    },
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    /// Any other protocol, or a transport header the kernel did not copy.
    Other {
        proto: u8,
    },
}

const NFPROTO_IPV4: u32 = 2;
const NFPROTO_IPV6: u32 = 10;

impl Packet {
    /// Reads the packet from a message's headers; `None` without a network header.
    pub(crate) fn parse(m: &TraceMessage) -> Option<Packet> {
        let net = m.network.as_deref()?;
        let (src, dst, proto) = match m.nfproto {
            Some(NFPROTO_IPV6) => {
                let src: [u8; 16] = net.get(8..24)?.try_into().ok()?;
                let dst: [u8; 16] = net.get(24..40)?.try_into().ok()?;
                (IpAddr::V6(Ipv6Addr::from(src)), IpAddr::V6(Ipv6Addr::from(dst)), net[6])
            }
            Some(NFPROTO_IPV4) | None if net.first().map(|b| b >> 4) == Some(4) => {
                let src: [u8; 4] = net.get(12..16)?.try_into().ok()?;
                let dst: [u8; 4] = net.get(16..20)?.try_into().ok()?;
                (IpAddr::V4(Ipv4Addr::from(src)), IpAddr::V4(Ipv4Addr::from(dst)), net[9])
            }
            _ => return None,
        };
        let th = m.transport.as_deref().unwrap_or_default();
        let magic = || {
            (th.get(8..12) == Some(&MAGIC[..]))
                .then(|| th.get(16..20).and_then(|b| b.try_into().ok()))
                .flatten()
        };
        let l4 = match (proto, th.len()) {
            (1 | 58, 8..) if matches!((proto, th[0]), (1, 0 | 8) | (58, 128 | 129)) => L4::Echo {
                reply: matches!(th[0], 0 | 129),
                id: be16(&th[4..])?,
                seq: be16(&th[6..])?,
                magic: magic(),
            },
            (17, 8..) => L4::Udp {
                sport: be16(th)?,
                dport: be16(&th[2..])?,
                magic: magic(),
            },
            (6, 14..) => L4::Tcp {
                sport: be16(th)?,
                dport: be16(&th[2..])?,
                flags: th[13],
            },
            _ => L4::Other { proto },
        };
        Some(Packet { src, dst, l4 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from 6.18 by `tests::capture_fixtures`: a UDP probe from 198.18.70.2 to
    // 198.18.71.2:9999 through kube-proxy-style rules and a native user chain that drops it,
    // and an ICMP probe that a base chain's policy drops.
    const JUMP: &[u8] = include_bytes!("fixtures/trace-jump.bin");
    const DROP: &[u8] = include_bytes!("fixtures/trace-drop.bin");
    const POLICY: &[u8] = include_bytes!("fixtures/trace-policy.bin");

    fn one(buf: &[u8]) -> (TraceMessage, Anomalies) {
        let a = Anomalies::default();
        let mut m = decode(buf, &a);
        assert_eq!(m.len(), 1);
        (m.remove(0), a)
    }

    fn clean(a: &Anomalies) {
        assert_eq!(
            a.snapshot().iter().map(|(_, n)| n).sum::<u64>(),
            0,
            "{:?}",
            a.snapshot()
        );
    }

    #[test]
    fn a_jump_with_the_packets_headers() {
        let (m, a) = one(JUMP);
        clean(&a);
        assert_eq!(m.family, Some(Family::Ip));
        assert_eq!(
            (m.table.as_deref(), m.chain.as_deref()),
            (Some("nat"), Some("PREROUTING"))
        );
        assert_eq!(m.handle, Some(9));
        assert_eq!(m.kind, Some(TraceKind::Rule));
        assert_eq!(m.verdict, Some(Verdict::Jump("KUBE-SERVICES".into())));
        assert_eq!(m.nfproto, Some(NFPROTO_IPV4));
        assert_eq!(m.iif, Some(2));
        assert_eq!(m.oif, None, "prerouting has no output interface yet");
        assert_eq!(m.mark, None);
        let p = Packet::parse(&m).unwrap();
        assert_eq!(p.src, "198.18.70.2".parse::<IpAddr>().unwrap());
        assert_eq!(p.dst, "198.18.71.2".parse::<IpAddr>().unwrap());
        assert!(
            matches!(
                p.l4,
                L4::Udp {
                    dport: 9999,
                    magic: Some([7, 7, 7, 7]),
                    ..
                }
            ),
            "{:?}",
            p.l4
        );
        let ct = m.ct.unwrap();
        assert_eq!(ct.state_name().as_deref(), Some("new"));
        assert_eq!(ct.reply, Some(false));
    }

    #[test]
    fn a_drop_in_a_user_chain_carries_no_headers() {
        let (m, a) = one(DROP);
        clean(&a);
        assert_eq!(m.family, Some(Family::Inet));
        assert_eq!(
            (m.table.as_deref(), m.chain.as_deref()),
            (Some("shop"), Some("quarantine"))
        );
        assert_eq!(m.verdict, Some(Verdict::Drop));
        assert!(m.handle.is_some());
        assert_eq!((m.network.as_ref(), m.transport.as_ref()), (None, None));
        assert_eq!(Packet::parse(&m), None);
    }

    #[test]
    fn a_base_chain_policy() {
        let (m, a) = one(POLICY);
        clean(&a);
        assert_eq!(
            (m.table.as_deref(), m.chain.as_deref()),
            (Some("strict"), Some("forward"))
        );
        assert_eq!(m.kind, Some(TraceKind::Policy));
        assert_eq!(m.policy, Some(Verdict::Drop));
        assert_eq!(m.handle, None);
        assert_eq!(m.verdict, None);
    }

    /// The message with its netlink length set to `len` and cut there.
    fn cut(buf: &[u8], len: usize) -> Vec<u8> {
        let mut b = buf[..len].to_vec();
        b[..4].copy_from_slice(&(len as u32).to_ne_bytes());
        b
    }

    #[test]
    fn every_truncation_keeps_what_came_before_it_and_is_counted() {
        for buf in [JUMP, DROP, POLICY] {
            let (full, _) = one(buf);
            for len in 0..buf.len() {
                let a = Anomalies::default();
                let msgs = if len >= 16 {
                    decode(&cut(buf, len), &a)
                } else {
                    decode(&buf[..len], &a)
                };
                let Some(m) = msgs.first() else {
                    assert!(a.get(Anomaly::Truncated) > 0 || len == 0, "a cut at {len} is counted");
                    continue;
                };
                // Whatever was decoded is what the full message says.
                for (got, want) in [(&m.table, &full.table), (&m.chain, &full.chain)] {
                    assert!(
                        got.is_none()
                            || got == want
                            || want.as_ref().is_some_and(|w| w.starts_with(got.as_deref().unwrap()))
                    );
                }
                assert!(m.handle.is_none() || m.handle == full.handle);
                assert!(m.id.is_none() || m.id == full.id);
                let _ = Packet::parse(m);
            }
        }
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        // A fixed pseudo-random walk over single-byte changes and lengths.
        let mut x: u32 = 0x2545_f491;
        for buf in [JUMP, DROP, POLICY] {
            for _ in 0..4000 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let mut b = buf.to_vec();
                let at = (x as usize) % b.len();
                b[at] = (x >> 8) as u8;
                let a = Anomalies::default();
                for m in decode(&b, &a) {
                    let _ = Packet::parse(&m);
                }
            }
        }
    }

    #[test]
    fn an_unknown_attribute_is_counted_and_the_rest_kept() {
        let mut b = POLICY.to_vec();
        b.extend_from_slice(&[8, 0, 99, 0, 1, 2, 3, 4]);
        let len = b.len() as u32;
        b[..4].copy_from_slice(&len.to_ne_bytes());
        let (m, a) = one(&b);
        assert_eq!(a.get(Anomaly::UnknownAttribute), 1);
        assert_eq!(m.policy, Some(Verdict::Drop));
    }

    #[test]
    fn verdict_codes() {
        assert_eq!(Verdict::from_code(1, None), Verdict::Accept);
        assert_eq!(Verdict::from_code(0, None), Verdict::Drop);
        // NF_DROP_ERR(-EPERM): the errno rides above the verdict byte.
        assert_eq!(Verdict::from_code(1 << 16, None), Verdict::Drop);
        assert_eq!(
            Verdict::from_code(-3i32 as u32, Some("x".into())),
            Verdict::Jump("x".into())
        );
        assert_eq!(
            Verdict::from_code(-4i32 as u32, Some("y".into())),
            Verdict::Goto("y".into())
        );
        assert_eq!(Verdict::from_code(-5i32 as u32, None), Verdict::Return);
        assert_eq!(Verdict::from_code(-9i32 as u32, None), Verdict::Other(-9i32 as u32));
    }
}
