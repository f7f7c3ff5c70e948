//! DNS targets' answers: `tracepkt_dns_answer_ok`, `tracepkt_dns_answer_ttl_seconds`,
//! `tracepkt_dns_responses_total`.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use super::{Group, Registrar, TargetFamily};
use crate::export::labels::TargetLabels;

/// DNS response codes as labelled: the common ones by name, the rest together, so that the
/// series of a target stay few and known. The variants are spelled as the label values.
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum Rcode {
    NOERROR,
    FORMERR,
    SERVFAIL,
    NXDOMAIN,
    NOTIMP,
    REFUSED,
    OTHER,
}

impl Rcode {
    /// The label of a response code by its mnemonic (RFC 1035, 2136...).
    pub fn of(mnemonic: &str) -> Rcode {
        match mnemonic {
            "NOERROR" => Rcode::NOERROR,
            "FORMERR" => Rcode::FORMERR,
            "SERVFAIL" => Rcode::SERVFAIL,
            "NXDOMAIN" => Rcode::NXDOMAIN,
            "NOTIMP" => Rcode::NOTIMP,
            "REFUSED" => Rcode::REFUSED,
            _ => Rcode::OTHER,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ByRcode {
    rcode: Rcode,
}

#[derive(Default)]
pub struct Dns {
    ok: TargetFamily<TargetLabels, Gauge>,
    ttl: TargetFamily<TargetLabels, Gauge>,
    responses: TargetFamily<(TargetLabels, ByRcode), Counter>,
}

impl Dns {
    /// An answer: its response code, whether it held what was expected, its TTL.
    pub fn answer(&self, t: &TargetLabels, rcode: Rcode, ok: bool, ttl: Option<u32>) {
        self.responses.get_or_create(&(t.clone(), ByRcode { rcode })).inc();
        self.ok.get_or_create(t).set(i64::from(ok));
        match ttl {
            Some(ttl) => {
                self.ttl.get_or_create(t).set(i64::from(ttl));
            }
            None => self.ttl.remove(t),
        }
    }

    /// A question that got no answer to check.
    pub fn unanswered(&self, t: &TargetLabels) {
        self.ok.get_or_create(t).set(0);
    }
}

impl Group for Dns {
    fn register(&self, r: &mut Registrar) {
        r.per_target(
            "tracepkt_dns_answer_ok",
            "DNS targets: whether the last answer was NOERROR and held what expect: answer asks (1) or not (0)",
            None,
            &self.ok,
        );
        r.per_target(
            "tracepkt_dns_answer_ttl_seconds",
            "DNS targets: the smallest TTL of the last answer's records of the type asked",
            None,
            &self.ttl,
        );
        r.per_target(
            "tracepkt_dns_responses",
            "DNS targets: answers by response code",
            None,
            &self.responses,
        );
    }
}
