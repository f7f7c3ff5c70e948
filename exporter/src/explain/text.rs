//! A short text for a rule, from its expressions, in nft's words where tracepkt knows the
//! expression (addresses, ports, protocols, interfaces, marks, conntrack state, sets, NAT,
//! verdicts, and the iptables-nft matches and targets kube-proxy uses). An expression it does
//! not know is named, never guessed at.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::attrs::{attrs, be16, be32, string};
use super::trace::Verdict;
use super::{Family, printable};

/// One expression of a rule as the kernel dumped it: its name and its attributes.
#[derive(Debug, Clone)]
pub(crate) struct Expr {
    pub name: String,
    pub data: Vec<(u16, Vec<u8>)>,
}

impl Expr {
    fn get(&self, kind: u16) -> Option<&[u8]> {
        self.data.iter().find(|(k, _)| *k == kind).map(|(_, v)| v.as_slice())
    }

    fn u32(&self, kind: u16) -> Option<u32> {
        self.get(kind).and_then(be32)
    }

    fn reg(&self, kind: u16) -> Option<u32> {
        self.u32(kind).map(reg)
    }

    /// The bytes of a nested `NFTA_DATA_VALUE`.
    fn value(&self, kind: u16) -> Option<Vec<u8>> {
        let (inner, _) = attrs(self.get(kind)?);
        inner.iter().find(|a| a.kind == 1).map(|a| a.value.to_vec())
    }

    /// The verdict of a nested `NFTA_DATA_VERDICT`.
    fn verdict(&self, kind: u16) -> Option<Verdict> {
        let (inner, _) = attrs(self.get(kind)?);
        let v = inner.iter().find(|a| a.kind == 2)?;
        let (fields, _) = attrs(v.value);
        let code = fields.iter().find(|a| a.kind == 1).and_then(|a| be32(a.value))?;
        let chain = fields
            .iter()
            .find(|a| a.kind == 2)
            .map(|a| printable(&string(a.value).0));
        Some(Verdict::from_code(code, chain))
    }
}

/// `NFT_REG_1..4` are the 16-byte views of the 4-byte registers from 8 on.
fn reg(r: u32) -> u32 {
    match r {
        1..=4 => 8 + (r - 1) * 4,
        r => r,
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Addr,
    /// The first bytes of an address of this many bytes.
    Prefix(usize),
    Port,
    Proto,
    Nfproto,
    IfName,
    /// A number in host byte order (marks, conntrack state bits read as such).
    Host,
    CtState,
    Bytes,
}

#[derive(Debug, Clone)]
struct Field {
    name: String,
    kind: Kind,
    len: usize,
    mask: Option<Vec<u8>>,
    /// What a bitwise expression xored in after the mask: `mark or 0x4000` is mask
    /// `!0x4000`, xor `0x4000`.
    xor: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
enum Loaded {
    Field(Field),
    Value(Vec<u8>),
}

#[derive(Default)]
struct Render {
    regs: HashMap<u32, Loaded>,
    /// Registers loaded since a comparison last used them: the parts of a concatenation.
    pending: Vec<u32>,
    l4: Option<u8>,
    parts: Vec<String>,
}

/// The rule's text.
pub(crate) fn render(family: Family, exprs: &[Expr]) -> String {
    let mut r = Render::default();
    for e in exprs {
        r.expr(family, e);
    }
    r.parts.join(" ")
}

impl Render {
    fn load(&mut self, dreg: u32, f: Field) {
        self.regs.insert(dreg, Loaded::Field(f));
        self.pending.push(dreg);
    }

    fn field(&self, r: u32) -> Option<&Field> {
        match self.regs.get(&r) {
            Some(Loaded::Field(f)) => Some(f),
            _ => None,
        }
    }

    fn expr(&mut self, family: Family, e: &Expr) {
        match e.name.as_str() {
            "payload" => self.payload(family, e),
            "meta" => self.meta(e),
            "ct" => self.ct(e),
            "bitwise" => {
                // SREG 1, DREG 2, MASK 4; a mask on a field narrows it (a prefix, some bits).
                if let (Some(s), Some(d)) = (e.reg(1), e.reg(2))
                    && let Some(mut f) = self.field(s).cloned()
                {
                    f.mask = e.value(4);
                    f.xor = e.value(5);
                    self.regs.insert(d, Loaded::Field(f));
                }
            }
            "cmp" => self.cmp(e),
            "lookup" => self.lookup(e),
            "immediate" => match (e.reg(1), e.verdict(2)) {
                (Some(0), Some(v)) => self.parts.push(v.to_string()),
                (Some(d), _) => {
                    if let Some(v) = e.value(2) {
                        self.regs.insert(d, Loaded::Value(v));
                    }
                }
                _ => self.parts.push("immediate".into()),
            },
            "counter" => self.parts.push("counter".into()),
            "nat" => self.nat(e),
            "masq" => self.parts.push("masquerade".into()),
            "redir" => self.parts.push("redirect".into()),
            "reject" => self.parts.push("reject".into()),
            "match" => self.xt_match(e),
            "target" => self.xt_target(e),
            other => self.parts.push(printable(other)),
        }
    }

    fn payload(&mut self, family: Family, e: &Expr) {
        let (Some(base), Some(off), Some(len)) = (e.u32(2), e.u32(3), e.u32(4)) else {
            self.parts.push("payload".into());
            return;
        };
        let Some(dreg) = e.reg(1) else {
            // A payload write (mangling): name what is written.
            self.parts.push(format!("{} set", raw_field(base, off, len)));
            return;
        };
        let v4 = family != Family::Ip6;
        let v6 = family != Family::Ip;
        let l4 = match self.l4 {
            Some(6) => "tcp",
            Some(17) => "udp",
            Some(132) => "sctp",
            _ => "th",
        };
        let (name, kind) = match (base, off, len) {
            (1, 12, 4) if v4 => ("ip saddr".to_string(), Kind::Addr),
            (1, 16, 4) if v4 => ("ip daddr".to_string(), Kind::Addr),
            // Fewer bytes of an address: a prefix on a byte boundary, as nft and iptables-nft
            // compile `10.244.0.0/16`.
            (1, 12, 1..=3) if v4 => ("ip saddr".to_string(), Kind::Prefix(4)),
            (1, 16, 1..=3) if v4 => ("ip daddr".to_string(), Kind::Prefix(4)),
            (1, 8, 1..=15) if v6 => ("ip6 saddr".to_string(), Kind::Prefix(16)),
            (1, 24, 1..=15) if v6 => ("ip6 daddr".to_string(), Kind::Prefix(16)),
            (1, 9, 1) if v4 => ("ip protocol".to_string(), Kind::Proto),
            (1, 8, 16) if v6 => ("ip6 saddr".to_string(), Kind::Addr),
            (1, 24, 16) if v6 => ("ip6 daddr".to_string(), Kind::Addr),
            (1, 6, 1) if v6 => ("ip6 nexthdr".to_string(), Kind::Proto),
            (2, 0, 1) if matches!(self.l4, Some(1)) => ("icmp type".to_string(), Kind::Bytes),
            (2, 0, 1) if matches!(self.l4, Some(58)) => ("icmpv6 type".to_string(), Kind::Bytes),
            (2, 0, 2) => (format!("{l4} sport"), Kind::Port),
            (2, 2, 2) => (format!("{l4} dport"), Kind::Port),
            _ => (raw_field(base, off, len), Kind::Bytes),
        };
        self.load(
            dreg,
            Field {
                name,
                kind,
                len: len as usize,
                mask: None,
                xor: None,
            },
        );
    }

    fn meta(&mut self, e: &Expr) {
        let Some(key) = e.u32(2) else {
            self.parts.push("meta".into());
            return;
        };
        let (name, kind) = match key {
            0 => ("meta length", Kind::Host),
            1 => ("meta protocol", Kind::Bytes),
            3 => ("meta mark", Kind::Host),
            4 => ("meta iif", Kind::Host),
            5 => ("meta oif", Kind::Host),
            6 => ("meta iifname", Kind::IfName),
            7 => ("meta oifname", Kind::IfName),
            12 => ("meta nftrace", Kind::Host),
            15 => ("meta nfproto", Kind::Nfproto),
            16 => ("meta l4proto", Kind::Proto),
            19 => ("meta pkttype", Kind::Bytes),
            _ => ("meta", Kind::Bytes),
        };
        let name = if name == "meta" {
            format!("meta key {key}")
        } else {
            name.to_string()
        };
        if let Some(dreg) = e.reg(1) {
            self.load(
                dreg,
                Field {
                    name,
                    kind,
                    len: 4,
                    mask: None,
                    xor: None,
                },
            );
        } else if let Some(sreg) = e.reg(3) {
            let value = match self.regs.get(&sreg) {
                Some(Loaded::Value(v)) => show(kind, v, None),
                Some(Loaded::Field(f)) => with_bits(f),
                None => "?".into(),
            };
            self.parts.push(format!("{name} set {value}"));
        }
    }

    fn ct(&mut self, e: &Expr) {
        let Some(key) = e.u32(2) else {
            self.parts.push("ct".into());
            return;
        };
        let (name, kind) = match key {
            0 => ("ct state", Kind::CtState),
            1 => ("ct direction", Kind::Bytes),
            2 => ("ct status", Kind::Host),
            3 => ("ct mark", Kind::Host),
            _ => ("ct", Kind::Bytes),
        };
        let name = if name == "ct" {
            format!("ct key {key}")
        } else {
            name.to_string()
        };
        if let Some(dreg) = e.reg(1) {
            self.load(
                dreg,
                Field {
                    name,
                    kind,
                    len: 4,
                    mask: None,
                    xor: None,
                },
            );
        } else {
            self.parts.push(format!("{name} set"));
        }
    }

    fn cmp(&mut self, e: &Expr) {
        let (Some(sreg), Some(data)) = (e.reg(1), e.value(3)) else {
            self.parts.push("cmp".into());
            return;
        };
        self.pending.clear();
        let op = match e.u32(2) {
            Some(0) => "",
            Some(1) => "!= ",
            Some(2) => "< ",
            Some(3) => "<= ",
            Some(4) => "> ",
            Some(5) => ">= ",
            _ => "? ",
        };
        let Some(f) = self.field(sreg).cloned() else {
            // What it compares is an expression tracepkt did not read: it was named already.
            return;
        };
        if f.kind == Kind::Proto && op.is_empty() {
            self.l4 = data.first().copied();
        }
        match (&f.mask, f.kind) {
            // `ct state established,related` is a test of the bits the mask names.
            (Some(mask), Kind::CtState) => {
                let neg = if data.iter().all(|b| *b == 0) && op.is_empty() {
                    "!= "
                } else {
                    ""
                };
                self.parts.push(format!("{} {neg}{}", f.name, show(f.kind, mask, None)));
                return;
            }
            (Some(mask), Kind::Host) => {
                let op = if op.is_empty() { "== " } else { op };
                self.parts.push(format!(
                    "{} & {} {op}{}",
                    f.name,
                    show(f.kind, mask, None),
                    show(f.kind, &data, None)
                ));
                return;
            }
            _ => {}
        }
        self.parts
            .push(format!("{} {op}{}", f.name, show(f.kind, &data, f.mask.as_deref())));
    }

    fn lookup(&mut self, e: &Expr) {
        let set = e.get(1).map(|v| printable(&string(v).0)).unwrap_or_else(|| "?".into());
        let key = self.concatenation(e.reg(2));
        let inverted = e.u32(5).is_some_and(|f| f & 1 != 0);
        // A key from an expression not read here (numgen, hash...) was named already.
        let key = if key.is_empty() { key } else { format!("{key} ") };
        match e.reg(3) {
            Some(0) => self.parts.push(format!("{key}vmap @{set}")),
            Some(d) => {
                let name = format!("{key}map @{set}");
                self.regs.insert(
                    d,
                    Loaded::Field(Field {
                        name,
                        kind: Kind::Bytes,
                        len: 16,
                        mask: None,
                        xor: None,
                    }),
                );
            }
            None => self
                .parts
                .push(format!("{key} {}@{set}", if inverted { "!= " } else { "" })),
        }
        self.pending.clear();
    }

    /// The fields loaded into consecutive registers from `sreg` on, joined as nft joins a
    /// concatenation.
    fn concatenation(&self, sreg: Option<u32>) -> String {
        let Some(mut r) = sreg else {
            return String::new();
        };
        let mut names = Vec::new();
        while self.pending.contains(&r) {
            let Some(f) = self.field(r) else { break };
            names.push(f.name.clone());
            r = r.saturating_add(f.len.div_ceil(4).max(1) as u32);
        }
        names.join(" . ")
    }

    fn nat(&mut self, e: &Expr) {
        let kind = match e.u32(1) {
            Some(0) => "snat",
            Some(1) => "dnat",
            _ => "nat",
        };
        let value = |attr| match e.reg(attr).and_then(|r| self.regs.get(&r)) {
            Some(Loaded::Value(v)) => Some(v.clone()),
            _ => None,
        };
        let addr = value(3).map(|v| show(Kind::Addr, &v, None));
        let port = value(5).and_then(|v| be16(&v));
        let to = match (addr, port) {
            (Some(a), Some(p)) if a.contains(':') => format!(" to [{a}]:{p}"),
            (Some(a), Some(p)) => format!(" to {a}:{p}"),
            (Some(a), None) => format!(" to {a}"),
            (None, Some(p)) => format!(" to :{p}"),
            (None, None) => String::new(),
        };
        self.parts.push(format!("{kind}{to}"));
    }

    fn xt_match(&mut self, e: &Expr) {
        let name = e.get(1).map(|v| string(v).0).unwrap_or_default();
        let info = e.get(3).unwrap_or_default();
        let host = |at: usize| info.get(at..at + 4).map(|b| u32::from_ne_bytes(b.try_into().unwrap()));
        match name.as_str() {
            // The comment is the row's own field.
            "comment" => {}
            // struct xt_mark_mtinfo1 { __u32 mark, mask; __u8 invert; }
            "mark" => match (host(0), host(4)) {
                (Some(mark), Some(mask)) => {
                    let not = if info.get(8).is_some_and(|b| *b != 0) { "! " } else { "" };
                    self.parts.push(format!("mark {not}{mark:#x}/{mask:#x}"));
                }
                _ => self.parts.push("mark".into()),
            },
            other => self.parts.push(format!("xt {}", printable(other))),
        }
    }

    fn xt_target(&mut self, e: &Expr) {
        let name = e.get(1).map(|v| string(v).0).unwrap_or_default();
        let rev = e.u32(2).unwrap_or(0);
        let info = e.get(3).unwrap_or_default();
        let host = |at: usize| info.get(at..at + 4).map(|b| u32::from_ne_bytes(b.try_into().unwrap()));
        match name.as_str() {
            "DNAT" | "SNAT" => {
                let to = nat_range(rev, info).map(|t| format!(" to {t}")).unwrap_or_default();
                self.parts.push(format!("{name}{to}"));
            }
            // struct xt_mark_tginfo2 { __u32 mark, mask; }: new = (old & ~mask) ^ mark
            "MARK" => match (host(0), host(4)) {
                (Some(mark), Some(mask)) if mask == mark => self.parts.push(format!("MARK or {mark:#x}")),
                (Some(mark), Some(0)) => self.parts.push(format!("MARK xor {mark:#x}")),
                (Some(mark), Some(u32::MAX)) => self.parts.push(format!("MARK set {mark:#x}")),
                (Some(mark), Some(mask)) => self.parts.push(format!("MARK set-xmark {mark:#x}/{mask:#x}")),
                _ => self.parts.push("MARK".into()),
            },
            other => self.parts.push(printable(other)),
        }
    }
}

/// An xt NAT target's address and port range: `nf_nat_ipv4_multi_range_compat` (revision 0),
/// `nf_nat_range` (1) or `nf_nat_range2` (2).
fn nat_range(rev: u32, info: &[u8]) -> Option<String> {
    const MAP_IPS: u32 = 1;
    const PROTO_SPECIFIED: u32 = 2;
    let host = |at: usize| info.get(at..at + 4).map(|b| u32::from_ne_bytes(b.try_into().unwrap()));
    let (flags, addr, port) = match rev {
        0 => (host(4)?, info.get(8..12)?.to_vec(), info.get(16..18)?.to_vec()),
        _ => (host(0)?, info.get(4..20)?.to_vec(), info.get(36..38)?.to_vec()),
    };
    let mut out = String::new();
    if flags & MAP_IPS != 0 {
        // The union holds an IPv4 address in its first four bytes, zeros after.
        let v4 = rev == 0 || addr[4..].iter().all(|b| *b == 0);
        out = if v4 {
            show(Kind::Addr, &addr[..4], None)
        } else {
            format!("[{}]", show(Kind::Addr, &addr, None))
        };
    }
    if flags & PROTO_SPECIFIED != 0 {
        out = format!("{out}:{}", be16(&port)?);
    }
    (!out.is_empty()).then_some(out)
}

/// A field with the bit operations applied to it, as nft writes them in a `set` statement.
fn with_bits(f: &Field) -> String {
    let word = |v: &Option<Vec<u8>>| {
        v.as_deref()
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_ne_bytes)
    };
    match (f.kind, word(&f.mask), word(&f.xor)) {
        (Kind::Host, Some(m), Some(x)) if m == !x => format!("{} | {x:#x}", f.name),
        (Kind::Host, Some(u32::MAX), Some(x)) => format!("{} ^ {x:#x}", f.name),
        (Kind::Host, Some(m), Some(0)) => format!("{} & {m:#x}", f.name),
        (Kind::Host, Some(m), Some(x)) => format!("{} & {m:#x} ^ {x:#x}", f.name),
        _ => f.name.clone(),
    }
}

fn raw_field(base: u32, off: u32, len: u32) -> String {
    let b = match base {
        0 => "ll",
        1 => "nh",
        2 => "th",
        3 => "ih",
        _ => "?",
    };
    format!("@{b},{},{}", u64::from(off) * 8, u64::from(len) * 8)
}

fn show(kind: Kind, v: &[u8], mask: Option<&[u8]>) -> String {
    match kind {
        Kind::Addr => {
            let prefix = mask.and_then(prefix_len).map(|p| format!("/{p}")).unwrap_or_default();
            match v.len() {
                4 => format!("{}{prefix}", Ipv4Addr::from(<[u8; 4]>::try_from(v).unwrap())),
                16 => format!("{}{prefix}", Ipv6Addr::from(<[u8; 16]>::try_from(v).unwrap())),
                _ => hex(v),
            }
        }
        Kind::Prefix(full) => {
            let mut addr = v.to_vec();
            addr.resize(full, 0);
            format!("{}/{}", show(Kind::Addr, &addr, None), v.len() * 8)
        }
        Kind::Port => be16(v).map(|p| p.to_string()).unwrap_or_else(|| hex(v)),
        Kind::Proto => match v.first() {
            Some(1) => "icmp".into(),
            Some(6) => "tcp".into(),
            Some(17) => "udp".into(),
            Some(58) => "ipv6-icmp".into(),
            Some(132) => "sctp".into(),
            Some(p) => p.to_string(),
            None => hex(v),
        },
        Kind::Nfproto => match v.first() {
            Some(2) => "ipv4".into(),
            Some(10) => "ipv6".into(),
            _ => hex(v),
        },
        Kind::IfName => format!("\"{}\"", printable(&string(v).0)),
        Kind::Host => match v.len() {
            4 => format!("{:#x}", u32::from_ne_bytes(v.try_into().unwrap())),
            1 => v[0].to_string(),
            _ => hex(v),
        },
        Kind::CtState => {
            let Ok(bits) = <[u8; 4]>::try_from(v).map(u32::from_ne_bytes) else {
                return hex(v);
            };
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
            if names.is_empty() {
                format!("{bits:#x}")
            } else {
                names.join(",")
            }
        }
        Kind::Bytes => match v.len() {
            1 => v[0].to_string(),
            _ => hex(v),
        },
    }
}

fn prefix_len(mask: &[u8]) -> Option<u32> {
    let ones: u32 = mask.iter().map(|b| b.count_ones()).sum();
    let contiguous = mask
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| b >> i & 1))
        .skip_while(|b| *b == 1)
        .all(|b| b == 0);
    (contiguous && (ones as usize) < mask.len() * 8).then_some(ones)
}

fn hex(v: &[u8]) -> String {
    let mut s = String::from("0x");
    for b in v {
        s.push_str(&format!("{b:02x}"));
    }
    s
}
