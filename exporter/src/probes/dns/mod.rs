//! DNS probes: a query over UDP to a server, or to the resolver of the namespace the probe
//! starts in, followed by the kernel programs as any probe is, and an answer that is read
//! and checked, not only waited for.
//!
//! The query is padded (EDNS(0) padding, RFC 7830) to a fixed length, so that every DNS probe
//! has one IP length the kernel programs accept before anything else; answers vary in length
//! and are not followed on their way back.

mod codec;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use probe_common::Proto;

pub use self::codec::{AnswerExpect, DnsQuery};
use self::codec::{DnsAnswer, next_query_id, resolver_of};
use super::{Asked, BoxFuture, IpVersion, Kind, Kit, Reading, Shot, TargetMetrics, Unresolved, Words, ported_to, udp};

/// The port a DNS server answers on unless told otherwise.
const PORT: u16 = 53;

/// A DNS query, and what its answer must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dns {
    pub query: DnsQuery,
    /// `None`: the first nameserver of the resolv.conf of the namespace the probe starts in.
    pub server: Option<SocketAddr>,
    /// What the answer must hold (`expect: answer:`); without it, any NOERROR answer is
    /// right.
    pub answer: Option<AnswerExpect>,
}

impl Kind for Dns {
    fn protocol(&self) -> &'static str {
        "dns"
    }

    fn port(&self) -> Option<u16> {
        Some(self.server.map_or(PORT, |s| s.port()))
    }

    /// The server, looked up again at each probe when it is the namespace's resolver.
    fn resolve<'a>(
        &'a self,
        _address: &'a str,
        family: IpVersion,
        from: Option<&'a Path>,
    ) -> BoxFuture<'a, Result<IpAddr, Unresolved>> {
        Box::pin(async move {
            let server = match self.server {
                Some(s) => s,
                None => resolver_of(from).map_err(Unresolved::NoResolver)?,
            };
            if !family.accepts(server.ip()) {
                return Err(Unresolved::Family { server, family });
            }
            Ok(server.ip())
        })
    }

    fn ask<'a>(&'a self, kit: &'a Kit, shot: Shot<'a>) -> BoxFuture<'a, Asked> {
        Box::pin(async move {
            // Each query has an id of its own.
            let id = next_query_id();
            let query = self.query.encode(id).expect("checked when the query was read");
            let port = self.port().unwrap_or(PORT);
            let unsent = (Proto::Udp, shot.lease.id(), shot.seq);
            // The query carries no trace context.
            let (journey, answer) = kit
                .fly(
                    unsent,
                    |_| async move { udp::datagram(kit, shot, port, None, &query).await },
                )
                .await;
            let reading = Box::new(DnsReading::of(self, id, answer.as_deref()));
            Asked {
                reading: Some(reading),
                ..Asked::new(shot.addr, journey)
            }
        })
    }

    fn words(&self, asked: &Asked) -> Words {
        Words {
            to: ported_to(asked, self.port().unwrap_or(PORT)),
            answered: "answered",
            note: None,
        }
    }
}

/// What a DNS probe's answer said.
enum DnsReading {
    Read {
        query: DnsQuery,
        answer: DnsAnswer,
        /// What is wrong with it, when it is not NOERROR or lacks what was expected.
        wrong: Option<String>,
    },
    /// Something came back that is not an answer to the query.
    Unreadable { query: DnsQuery, error: String },
    /// Nothing came back.
    Silent,
}

impl DnsReading {
    fn of(dns: &Dns, id: u16, answer: Option<&[u8]>) -> Self {
        let query = dns.query.clone();
        match answer.map(|a| DnsAnswer::decode(a, id, &query)) {
            Some(Ok(answer)) => DnsReading::Read {
                wrong: answer.violation(dns.answer.as_ref()),
                query,
                answer,
            },
            Some(Err(error)) => DnsReading::Unreadable { query, error },
            None => DnsReading::Silent,
        }
    }
}

impl Reading for DnsReading {
    fn violation(&self) -> Option<String> {
        match self {
            DnsReading::Read { query, wrong, .. } => wrong.as_ref().map(|w| format!("DNS {query}: {w}")),
            DnsReading::Unreadable { query, error } => Some(format!("DNS {query}: {error}")),
            DnsReading::Silent => None,
        }
    }

    /// `web.shop.test/A: NOERROR [198.18.134.10], ttl 30s`, and what is wrong with it.
    fn summary(&self) -> (Option<String>, bool) {
        match self {
            DnsReading::Read { query, answer, wrong } => {
                let ttl = answer.ttl.map(|t| format!(", ttl {t}s")).unwrap_or_default();
                let text = format!("{query}: {} [{}]{ttl}", answer.rcode, answer.values.join(", "));
                match wrong {
                    None => (Some(text), true),
                    Some(w) => (Some(format!("{text} ({w})")), false),
                }
            }
            DnsReading::Unreadable { query, error } => (Some(format!("{query}: {error}")), false),
            DnsReading::Silent => (None, false),
        }
    }

    fn record(&self, m: &TargetMetrics<'_>) {
        match self {
            DnsReading::Read { answer, wrong, .. } => {
                m.metrics
                    .dns_answer(m.tag, m.labels, answer.rcode.label(), wrong.is_none(), answer.ttl)
            }
            DnsReading::Unreadable { .. } => m.metrics.dns_answer(m.tag, m.labels, "OTHER", false, None),
            DnsReading::Silent => m.metrics.dns_unanswered(m.tag, m.labels),
        }
    }
}
