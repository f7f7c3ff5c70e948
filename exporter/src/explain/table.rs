//! tracepkt's own nftables table, `inet tracepkt`: one chain on prerouting and one on output,
//! first on those hooks, whose rules match only probe packets and set `meta nftrace set 1` on
//! them, so that the kernel traces every rule they meet afterwards. The rules have no verdict
//! statement and the chains' policy is accept: the table changes no packet's fate.
//!
//! Probes are recognised as the kernel programs recognise them: ICMP, ICMPv6 and UDP by the
//! payload magic right after their 8-byte header; TCP (which carries no payload) and UDP
//! probes with a payload of the user's by their ports, in two sets the engine fills per probe.
//! Both directions match, in both hooks: a probe crossing a node is seen in that node's
//! prerouting with its own port as the source, and its answer with it as the destination.
//!
//! Where the kernel allows it (5.12 and later) the table is owned by the netlink socket that
//! made it: the kernel removes it when that socket closes, so that not even a killed tracepkt
//! leaves it behind. [`remove_leftover`] finds one left by a kernel without owned tables.

use std::path::PathBuf;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_netfilter::NetfilterProtoFamily;
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, Cmp, DataAttribute, ExpressionAttribute, Expressions, Hook, Immediate,
    InetHookNumber, ListAttribute, Lookup, Meta, MetaKey, NfTablesMessage, Operator, Payload, Register, RuleAttribute,
    RuleMessage, SetAttribute, SetElementAttribute, SetElementList, SetElementMessage, SetFlags, SetMessage,
    TableAttribute, TableFlags, TableMessage,
};

use super::netlink::{Error, Nfnl};

/// The table's name, in family `inet`.
pub(crate) const TABLE: &str = "tracepkt";
/// The lowest priority there is: before conntrack's defragmentation (-400), iptables' raw
/// table (-300, or -450 with `raw_before_defrag`) and anything else, so that every rule of
/// every other table sees the bit already set.
pub(crate) const PRIORITY: i32 = i32::MIN;
/// `TPKT`, the first four bytes of every probe's payload.
pub(crate) const MAGIC: [u8; 4] = *b"TPKT";

const CHAINS: [(&str, InetHookNumber); 2] = [
    ("prerouting", InetHookNumber::PreRouting),
    ("output", InetHookNumber::LocalOut),
];
const NF_ACCEPT: u32 = 1;
/// nft's `inet_service` type, for the port sets (informational to the kernel).
const TYPE_INET_SERVICE: u32 = 13;
/// `NFTNL_UDATA_TABLE_COMMENT`: what `nft list ruleset` shows as the table's comment.
const UDATA_TABLE_COMMENT: u8 = 0;
const COMMENT: &str = "tracepkt: sets nftrace on its own probe packets only; no verdicts";

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
/// `NFT_PAYLOAD_TRANSPORT_HEADER`.
const TRANSPORT: u32 = 2;

/// Which port set a probe's port goes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum PortProto {
    Tcp,
    Udp,
}

impl PortProto {
    fn set(self) -> &'static str {
        match self {
            PortProto::Tcp => "tcp_ports",
            PortProto::Udp => "udp_ports",
        }
    }
}

/// The trace table in one namespace, owned by this value: dropping it closes the socket,
/// which removes an owned table; [`TraceTable::remove`] removes it either way.
pub(crate) struct TraceTable {
    nl: Nfnl,
    /// Whether the kernel removes the table with the socket (5.12+).
    pub owned: bool,
    /// Whether a table of this name was there before and was removed first.
    pub leftover_removed: bool,
}

impl TraceTable {
    /// Removes a leftover table of the same name, then creates the table in `ns` (or here),
    /// each in one transaction.
    pub(crate) async fn create(ns: Option<&PathBuf>) -> Result<TraceTable, Error> {
        let mut nl = Nfnl::open(ns).await?;
        let leftover_removed = remove_if_there(&mut nl)?;
        let owned = match nl.batch("creating the trace table", build(true)) {
            Ok(()) => true,
            // Kernels before 5.12 know neither owned tables nor table comments.
            Err(e) if matches!(e.errno(), Some(libc::EOPNOTSUPP | libc::EINVAL)) => {
                nl.batch("creating the trace table", build(false))?;
                false
            }
            Err(e) => return Err(e),
        };
        Ok(TraceTable {
            nl,
            owned,
            leftover_removed,
        })
    }

    /// Traces the packets of a probe with this local port.
    pub(crate) fn add_port(&mut self, proto: PortProto, port: u16) -> Result<(), Error> {
        self.nl.batch(
            "adding a probe port to the trace table",
            vec![(
                NetfilterProtoFamily::Inet,
                NfTablesMessage::NewSetElement(element(proto, port)),
                NLM_F_CREATE,
            )],
        )
    }

    /// Stops tracing a port. A port that is not there is not an error.
    pub(crate) fn remove_port(&mut self, proto: PortProto, port: u16) -> Result<(), Error> {
        match self.nl.batch(
            "removing a probe port from the trace table",
            vec![(
                NetfilterProtoFamily::Inet,
                NfTablesMessage::DeleteSetElement(element(proto, port)),
                0,
            )],
        ) {
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(()),
            r => r,
        }
    }

    /// Removes the table (with its chains, rules and sets).
    pub(crate) fn remove(mut self) -> Result<(), Error> {
        self.nl.batch("removing the trace table", vec![delete_table()])
    }
}

/// Removes a table named `inet tracepkt` in `ns` if there is one (a killed run's, on a kernel
/// without owned tables), and says whether there was.
pub(crate) async fn remove_leftover(ns: Option<&PathBuf>) -> Result<bool, Error> {
    let mut nl = Nfnl::open(ns).await?;
    remove_if_there(&mut nl)
}

/// Whether `inet tracepkt` exists in `ns`.
pub(crate) async fn exists(ns: Option<&PathBuf>) -> Result<bool, Error> {
    let mut nl = Nfnl::open(ns).await?;
    there(&mut nl)
}

fn there(nl: &mut Nfnl) -> Result<bool, Error> {
    match nl.request(
        "looking for the trace table",
        NetfilterProtoFamily::Inet,
        NfTablesMessage::GetTable(TableMessage {
            attributes: vec![TableAttribute::Name(TABLE.to_string())],
        }),
        false,
    ) {
        Ok(_) => Ok(true),
        Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

fn remove_if_there(nl: &mut Nfnl) -> Result<bool, Error> {
    if !there(nl)? {
        return Ok(false);
    }
    match nl.batch("removing a leftover trace table", vec![delete_table()]) {
        Ok(()) => Ok(true),
        // Gone in between: what was asked for is done.
        Err(e) if e.errno() == Some(libc::ENOENT) => Ok(true),
        Err(e) => Err(e),
    }
}

fn delete_table() -> (NetfilterProtoFamily, NfTablesMessage, u16) {
    (
        NetfilterProtoFamily::Inet,
        NfTablesMessage::DeleteTable(TableMessage {
            attributes: vec![TableAttribute::Name(TABLE.to_string())],
        }),
        0,
    )
}

fn element(proto: PortProto, port: u16) -> SetElementMessage {
    SetElementMessage {
        attributes: vec![
            SetElementList::Table(TABLE.to_string()),
            SetElementList::Set(proto.set().to_string()),
            SetElementList::Elements(vec![ListAttribute::Element(vec![SetElementAttribute::Key(
                DataAttribute::Value(port.to_be_bytes().to_vec()),
            )])]),
        ],
    }
}

/// The whole table as one transaction: table, port sets, chains, rules.
fn build(owned: bool) -> Vec<(NetfilterProtoFamily, NfTablesMessage, u16)> {
    let inet = NetfilterProtoFamily::Inet;
    let mut table = vec![TableAttribute::Name(TABLE.to_string())];
    if owned {
        table.push(TableAttribute::Flags(TableFlags::Owner));
        let mut udata = vec![UDATA_TABLE_COMMENT, (COMMENT.len() + 1) as u8];
        udata.extend_from_slice(COMMENT.as_bytes());
        udata.push(0);
        table.push(TableAttribute::UserData(udata));
    }
    let mut msgs = vec![(
        inet,
        NfTablesMessage::NewTable(TableMessage { attributes: table }),
        NLM_F_CREATE | NLM_F_EXCL,
    )];
    for (id, proto) in [(1, PortProto::Tcp), (2, PortProto::Udp)] {
        msgs.push((
            inet,
            NfTablesMessage::NewSet(SetMessage {
                attributes: vec![
                    SetAttribute::Table(TABLE.to_string()),
                    SetAttribute::Name(proto.set().to_string()),
                    SetAttribute::Flags(SetFlags::empty()),
                    SetAttribute::KeyType(TYPE_INET_SERVICE),
                    SetAttribute::KeyLen(2),
                    SetAttribute::Id(id),
                ],
            }),
            NLM_F_CREATE | NLM_F_EXCL,
        ));
    }
    for (chain, hook) in CHAINS {
        msgs.push((
            inet,
            NfTablesMessage::NewChain(ChainMessage {
                attributes: vec![
                    ChainAttribute::Table(TABLE.to_string()),
                    ChainAttribute::Name(chain.to_string()),
                    ChainAttribute::Type("filter".to_string()),
                    ChainAttribute::Hook(vec![Hook::Number(hook.into()), Hook::Priority(PRIORITY as u32)]),
                    ChainAttribute::Policy(NF_ACCEPT),
                ],
            }),
            NLM_F_CREATE | NLM_F_EXCL,
        ));
        for rule in rules() {
            msgs.push((
                inet,
                NfTablesMessage::NewRule(RuleMessage {
                    attributes: vec![
                        RuleAttribute::Table(TABLE.to_string()),
                        RuleAttribute::Chain(chain.to_string()),
                        RuleAttribute::Expressions(rule),
                    ],
                }),
                NLM_F_CREATE | netlink_packet_core::NLM_F_APPEND,
            ));
        }
    }
    msgs
}

type Rule = Vec<ListAttribute<ExpressionAttribute>>;

/// The rules of each chain, in order.
fn rules() -> Vec<Rule> {
    let mut out = Vec::new();
    // `meta l4proto P @th,64,32 0x54504b54 meta nftrace set 1`
    for proto in [IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_UDP] {
        let mut r = l4proto(proto);
        r.push(payload(TRANSPORT, 8, 4));
        r.push(cmp_eq(MAGIC.to_vec()));
        r.extend(nftrace());
        out.push(r);
    }
    // `meta l4proto P th sport @set meta nftrace set 1`, and the same with dport
    for (proto, set_id, set) in [(IPPROTO_UDP, 2, PortProto::Udp), (IPPROTO_TCP, 1, PortProto::Tcp)] {
        for offset in [0, 2] {
            let mut r = l4proto(proto);
            r.push(payload(TRANSPORT, offset, 2));
            r.push(
                Expressions::Lookup(vec![
                    Lookup::SourceRegister(Register::Reg1),
                    Lookup::Set(set.set().to_string()),
                    Lookup::SetId(set_id),
                ])
                .into(),
            );
            r.extend(nftrace());
            out.push(r);
        }
    }
    out
}

fn l4proto(proto: u8) -> Rule {
    vec![
        Expressions::Meta(vec![
            Meta::Key(MetaKey::L4Proto),
            Meta::DestinationRegister(Register::Reg1),
        ])
        .into(),
        cmp_eq(vec![proto]),
    ]
}

fn payload(base: u32, offset: u32, len: u32) -> ListAttribute<ExpressionAttribute> {
    Expressions::Payload(vec![
        Payload::DestinationRegister(Register::Reg1),
        Payload::Base(base),
        Payload::Offset(offset),
        Payload::Len(len),
    ])
    .into()
}

fn cmp_eq(value: Vec<u8>) -> ListAttribute<ExpressionAttribute> {
    Expressions::Cmp(vec![
        Cmp::SourceRegister(Register::Reg1),
        Cmp::Op(Operator::Equal),
        Cmp::Data(DataAttribute::Value(value)),
    ])
    .into()
}

/// `meta nftrace set 1`: load 1 into a register, set the bit from it.
fn nftrace() -> Rule {
    vec![
        Expressions::Immediate(vec![
            Immediate::DestinationRegister(Register::Reg1),
            Immediate::Data(DataAttribute::Value(vec![1])),
        ])
        .into(),
        Expressions::Meta(vec![
            Meta::Key(MetaKey::NftraceBit),
            Meta::SourceRegister(Register::Reg1),
        ])
        .into(),
    ]
}
