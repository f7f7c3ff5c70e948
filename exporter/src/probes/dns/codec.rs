//! What a DNS probe says and reads: a query that the kernel programs can follow, the answer
//! that comes back and its check, and where a namespace's resolver is.
//!
//! The query is padded (EDNS(0) padding, RFC 7830) to a fixed [`QUERY_LEN`] bytes, so that
//! every DNS probe has one IP length the kernel programs accept before anything else; answers
//! vary in length and are not followed on their way back.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RData, RecordType};

/// Every DNS probe's query is this long (the DNS message, without UDP and IP headers).
pub const QUERY_LEN: usize = probe_common::DNS_QUERY_LEN;

/// What to ask: a name and a record type, written `NAME[/TYPE]` (type A unless given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsQuery {
    pub name: String,
    pub rtype: RecordType,
}

impl std::fmt::Display for DnsQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.name, self.rtype)
    }
}

impl FromStr for DnsQuery {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, rtype) = match s.rsplit_once('/') {
            Some((n, t)) => (n, t),
            None => (s, "A"),
        };
        let rtype = RecordType::from_str(&rtype.to_ascii_uppercase())
            .ok()
            .filter(|t| !matches!(t, RecordType::Unknown(_) | RecordType::OPT | RecordType::ANY))
            .ok_or_else(|| {
                format!("{rtype:?} is not a DNS record type (A, AAAA, CNAME, TXT, SRV, PTR, MX, NS, ...)")
            })?;
        let parsed = Name::from_ascii(name).map_err(|e| format!("{name:?} is not a DNS name: {e}"))?;
        if name.is_empty() || parsed.is_root() {
            return Err("the DNS name is empty".into());
        }
        let q = DnsQuery {
            name: name.trim_end_matches('.').to_owned(),
            rtype,
        };
        // The name must fit in the fixed-size query.
        q.encode(0).map_err(|e| format!("{name:?}: {e}"))?;
        Ok(q)
    }
}

impl DnsQuery {
    /// The query as sent: recursion desired, EDNS(0), padded to exactly [`QUERY_LEN`] bytes.
    pub fn encode(&self, id: u16) -> Result<Vec<u8>, String> {
        let name = Name::from_ascii(format!("{}.", self.name)).map_err(|e| e.to_string())?;
        let mut m = Message::new(
            id,
            hickory_proto::op::MessageType::Query,
            hickory_proto::op::OpCode::Query,
        );
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(name, self.rtype));
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        m.set_edns(edns.clone());
        let bare = m.to_vec().map_err(|e| e.to_string())?.len();
        // An option is 4 bytes of code and length, then its data.
        let pad = QUERY_LEN.checked_sub(bare + 4).ok_or_else(|| {
            format!("the name is too long for a DNS probe ({bare} of {QUERY_LEN} bytes before padding)")
        })?;
        edns.options_mut()
            .insert(EdnsOption::Unknown(u16::from(EdnsCode::Padding), vec![0; pad]));
        m.set_edns(edns);
        let bytes = m.to_vec().map_err(|e| e.to_string())?;
        debug_assert_eq!(bytes.len(), QUERY_LEN);
        Ok(bytes)
    }
}

/// The id of the next DNS query of this process: a random start, then one apart, so that an
/// answer to an earlier query is never taken for a later one's.
pub fn next_query_id() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::LazyLock;
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: LazyLock<AtomicU16> =
        LazyLock::new(|| AtomicU16::new(RandomState::new().hash_one(std::time::SystemTime::now()) as u16));
    NEXT.fetch_add(1, Ordering::Relaxed).wrapping_add(1)
}

/// What must be in an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerExpect {
    /// Any answer with at least one record of the type asked.
    NonEmpty,
    /// Each of these addresses or names must be in the answer.
    Holds(Vec<String>),
}

/// A DNS response code: the common ones by name, the others by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    NoError,
    FormErr,
    ServFail,
    NxDomain,
    NotImp,
    Refused,
    Other(u16),
}

impl Rcode {
    /// As `tracepkt_dns_responses_total` labels it: the common codes by name, the others
    /// together, so that the series of a target stay few and known.
    pub fn label(self) -> &'static str {
        match self {
            Rcode::NoError => "NOERROR",
            Rcode::FormErr => "FORMERR",
            Rcode::ServFail => "SERVFAIL",
            Rcode::NxDomain => "NXDOMAIN",
            Rcode::NotImp => "NOTIMP",
            Rcode::Refused => "REFUSED",
            Rcode::Other(_) => "OTHER",
        }
    }
}

impl From<ResponseCode> for Rcode {
    fn from(c: ResponseCode) -> Self {
        match c {
            ResponseCode::NoError => Rcode::NoError,
            ResponseCode::FormErr => Rcode::FormErr,
            ResponseCode::ServFail => Rcode::ServFail,
            ResponseCode::NXDomain => Rcode::NxDomain,
            ResponseCode::NotImp => Rcode::NotImp,
            ResponseCode::Refused => Rcode::Refused,
            other => Rcode::Other(u16::from(other)),
        }
    }
}

impl std::fmt::Display for Rcode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rcode::Other(n) => write!(f, "RCODE{n}"),
            named => f.write_str(named.label()),
        }
    }
}

/// An answer, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsAnswer {
    pub rcode: Rcode,
    /// The answer's records of the type asked, as text (addresses, names, strings).
    pub values: Vec<String>,
    /// The smallest TTL of those records.
    pub ttl: Option<u32>,
}

impl DnsAnswer {
    /// Reads a reply to the query `id` for `q`.
    pub fn decode(reply: &[u8], id: u16, q: &DnsQuery) -> Result<DnsAnswer, String> {
        let m = Message::from_vec(reply).map_err(|e| format!("the answer is not a DNS message: {e}"))?;
        if m.metadata.id != id {
            return Err(format!("the answer's id {} is not the query's {id}", m.metadata.id));
        }
        let mut values = Vec::new();
        let mut ttl: Option<u32> = None;
        for r in m.answers.iter().filter(|r| r.record_type() == q.rtype) {
            ttl = Some(ttl.map_or(r.ttl, |t| t.min(r.ttl)));
            values.push(match &r.data {
                RData::A(a) => a.0.to_string(),
                RData::AAAA(a) => a.0.to_string(),
                RData::CNAME(n) => n.0.to_string().trim_end_matches('.').to_owned(),
                RData::PTR(n) => n.0.to_string().trim_end_matches('.').to_owned(),
                RData::NS(n) => n.0.to_string().trim_end_matches('.').to_owned(),
                other => other.to_string(),
            });
        }
        Ok(DnsAnswer {
            rcode: m.metadata.response_code.into(),
            values,
            ttl,
        })
    }

    /// Why the answer does not hold what `expect` asks, or `None` when it does. Without an
    /// expectation, an answer is right when it is NOERROR.
    pub fn violation(&self, expect: Option<&AnswerExpect>) -> Option<String> {
        if self.rcode != Rcode::NoError {
            return Some(format!("the server answered {}", self.rcode));
        }
        match expect {
            None => None,
            Some(AnswerExpect::NonEmpty) if self.values.is_empty() => Some("the answer is empty".into()),
            Some(AnswerExpect::NonEmpty) => None,
            Some(AnswerExpect::Holds(want)) => {
                let missing: Vec<&str> = want
                    .iter()
                    .filter(|w| !self.values.iter().any(|v| same_value(v, w)))
                    .map(String::as_str)
                    .collect();
                (!missing.is_empty())
                    .then(|| format!("the answer [{}] lacks {}", self.values.join(", "), missing.join(", ")))
            }
        }
    }
}

/// Addresses compare as addresses (`::1` is `0:0::1`), names without case or final dot.
fn same_value(got: &str, want: &str) -> bool {
    match (got.parse::<IpAddr>(), want.parse::<IpAddr>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => got
            .trim_end_matches('.')
            .eq_ignore_ascii_case(want.trim_end_matches('.')),
    }
}

/// The resolver a probe from `origin` would use: the first `nameserver` of that namespace's
/// resolv.conf. For `/proc/PID/ns/net` that is the process's own file system's
/// `/etc/resolv.conf` (a pod's); for `/run/netns/NAME`, `/etc/netns/NAME/resolv.conf` when it
/// exists (as `ip netns exec` arranges); otherwise this host's.
pub fn resolver_of(origin: Option<&Path>) -> Result<SocketAddr, String> {
    let file = resolv_conf_of(origin);
    let text = std::fs::read_to_string(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .next()
        .ok_or_else(|| format!("{} names no nameserver", file.display()))
}

fn resolv_conf_of(origin: Option<&Path>) -> PathBuf {
    let host = PathBuf::from("/etc/resolv.conf");
    let Some(ns) = origin else { return host };
    if let Ok(rest) = ns.strip_prefix("/proc")
        && rest.ends_with("ns/net")
        && let Some(pid) = rest.iter().next()
    {
        return Path::new("/proc").join(pid).join("root/etc/resolv.conf");
    }
    if let (Ok(_), Some(name)) = (ns.strip_prefix("/run/netns"), ns.file_name()) {
        let own = Path::new("/etc/netns").join(name).join("resolv.conf");
        if own.exists() {
            return own;
        }
    }
    host
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Record;
    use hickory_proto::rr::rdata::{A, CNAME};

    #[test]
    fn queries_parse_and_are_always_the_same_length() {
        let q: DnsQuery = "kubernetes.default.svc.cluster.local/AAAA".parse().unwrap();
        assert_eq!(q.rtype, RecordType::AAAA);
        assert_eq!(q.to_string(), "kubernetes.default.svc.cluster.local/AAAA");
        let a: DnsQuery = "example.org".parse().unwrap();
        assert_eq!(a.rtype, RecordType::A);
        for q in [&q, &a] {
            let bytes = q.encode(0x1234).unwrap();
            assert_eq!(bytes.len(), QUERY_LEN);
            let m = Message::from_vec(&bytes).unwrap();
            assert_eq!(m.metadata.id, 0x1234);
            assert!(m.metadata.recursion_desired);
            assert_eq!(m.queries[0].query_type(), q.rtype);
        }
        assert!(
            "x/NOPE"
                .parse::<DnsQuery>()
                .unwrap_err()
                .contains("not a DNS record type")
        );
        assert!("".parse::<DnsQuery>().is_err());
        let long = format!("{}.example", ["abcdefghij"; 10].join("."));
        assert!(long.parse::<DnsQuery>().unwrap_err().contains("too long"));
    }

    fn reply(id: u16, rcode: ResponseCode, records: Vec<Record>) -> Vec<u8> {
        let mut m = Message::response(id, hickory_proto::op::OpCode::Query);
        m.metadata.response_code = rcode;
        m.insert_answers(records);
        m.to_vec().unwrap()
    }

    #[test]
    fn answers_are_read_and_checked() {
        let q: DnsQuery = "web.example".parse().unwrap();
        let name = Name::from_ascii("web.example.").unwrap();
        let records = vec![
            Record::from_rdata(
                name.clone(),
                300,
                RData::CNAME(CNAME(Name::from_ascii("x.example.").unwrap())),
            ),
            Record::from_rdata(name.clone(), 30, RData::A(A::new(198, 18, 1, 10))),
            Record::from_rdata(name, 60, RData::A(A::new(198, 18, 1, 11))),
        ];
        let a = DnsAnswer::decode(&reply(7, ResponseCode::NoError, records), 7, &q).unwrap();
        assert_eq!(a.values, ["198.18.1.10", "198.18.1.11"]);
        assert_eq!(a.ttl, Some(30));
        assert_eq!(a.violation(None), None);
        assert_eq!(a.violation(Some(&AnswerExpect::NonEmpty)), None);
        assert_eq!(
            a.violation(Some(&AnswerExpect::Holds(vec!["198.18.1.11".into()]))),
            None
        );
        assert_eq!(
            a.violation(Some(&AnswerExpect::Holds(vec!["198.18.1.99".into()])))
                .as_deref(),
            Some("the answer [198.18.1.10, 198.18.1.11] lacks 198.18.1.99")
        );
        let nx = DnsAnswer::decode(&reply(8, ResponseCode::NXDomain, vec![]), 8, &q).unwrap();
        assert_eq!(nx.rcode, Rcode::NxDomain);
        assert_eq!(Rcode::from(ResponseCode::Unknown(23)).to_string(), "RCODE23");
        assert_eq!(Rcode::from(ResponseCode::Unknown(23)).label(), "OTHER");
        assert_eq!(nx.violation(None).as_deref(), Some("the server answered NXDOMAIN"));
        let empty = DnsAnswer::decode(&reply(9, ResponseCode::NoError, vec![]), 9, &q).unwrap();
        assert_eq!(
            empty.violation(Some(&AnswerExpect::NonEmpty)).as_deref(),
            Some("the answer is empty")
        );
        assert!(DnsAnswer::decode(&reply(9, ResponseCode::NoError, vec![]), 10, &q).is_err());
        assert!(DnsAnswer::decode(b"garbage", 1, &q).is_err());
    }

    #[test]
    fn the_resolver_file_follows_the_origin() {
        assert_eq!(resolv_conf_of(None), Path::new("/etc/resolv.conf"));
        assert_eq!(
            resolv_conf_of(Some(Path::new("/proc/4242/ns/net"))),
            Path::new("/proc/4242/root/etc/resolv.conf")
        );
        assert_eq!(
            resolv_conf_of(Some(Path::new("/run/netns/tracepkt-no-such-ns"))),
            Path::new("/etc/resolv.conf")
        );
    }
}
