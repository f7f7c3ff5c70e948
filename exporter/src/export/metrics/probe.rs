//! Whether probes were sent and answered: `tracepkt_probes_sent_total`,
//! `tracepkt_probe_success`, `tracepkt_probe_rtt_seconds`, `tracepkt_probe_errors_total`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::TraceId;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::MetricConstructor;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Unit;

use super::{Group, Registrar, TargetFamily};
use crate::export::labels::TargetLabels;

/// Why a probe produced no reply worth an RTT: the `reason` of `tracepkt_probe_errors_total`.
/// The variants are spelled as the label values.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum ErrorReason {
    /// The target's host name did not resolve.
    resolve,
    /// The probe could not be sent.
    send,
    /// Answered by an ICMP error (host unreachable, time exceeded).
    icmp_error,
    /// TCP: answered by RST; UDP: by ICMP port unreachable.
    refused,
    /// TCP or UDP: the kernel said the destination is unreachable.
    unreachable,
    /// No answer within the timeout.
    timeout,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ByReason {
    reason: ErrorReason,
}

/// The exemplar of an RTT observation: the trace of its journey, when it was sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TraceExemplar {
    trace_id: String,
}

/// RTT histograms with the configured buckets. With none, a histogram is its sum and count:
/// the number of replies and the mean RTT over any window, in three series per target.
#[derive(Clone)]
struct RttHistogram(Arc<[f64]>);

impl MetricConstructor<HistogramWithExemplars<TraceExemplar>> for RttHistogram {
    fn new_metric(&self) -> HistogramWithExemplars<TraceExemplar> {
        HistogramWithExemplars::new(self.0.iter().copied())
    }
}

pub struct Probe {
    sent: TargetFamily<TargetLabels, Counter>,
    success: TargetFamily<TargetLabels, Gauge>,
    rtt: TargetFamily<TargetLabels, HistogramWithExemplars<TraceExemplar>, RttHistogram>,
    errors: TargetFamily<(TargetLabels, ByReason), Counter>,
}

impl Probe {
    pub fn new(rtt_buckets: &[f64]) -> Self {
        Probe {
            sent: TargetFamily::default(),
            success: TargetFamily::default(),
            rtt: TargetFamily::with_constructor(RttHistogram(rtt_buckets.into())),
            errors: TargetFamily::default(),
        }
    }

    pub fn sent(&self, t: &TargetLabels) {
        self.sent.get_or_create(t).inc();
    }

    pub fn success(&self, t: &TargetLabels, ok: bool) {
        self.success.get_or_create(t).set(i64::from(ok));
    }

    pub fn error(&self, t: &TargetLabels, reason: ErrorReason) {
        self.errors.get_or_create(&(t.clone(), ByReason { reason })).inc();
    }

    /// An answered probe; `trace` is its journey's trace id when the journey was sent as a
    /// trace, and becomes the observation's exemplar.
    pub fn reply(&self, t: &TargetLabels, rtt: Duration, trace: Option<TraceId>) {
        let exemplar = trace.map(|id| TraceExemplar {
            trace_id: id.to_string(),
        });
        let when = exemplar.as_ref().map(|_| SystemTime::now());
        self.rtt.get_or_create(t).observe(rtt.as_secs_f64(), exemplar, when);
    }
}

impl Group for Probe {
    fn register(&self, r: &mut Registrar) {
        r.per_target(
            "tracepkt_probes_sent",
            "Probes sent (ICMP echo, TCP connection, UDP datagram)",
            None,
            &self.sent,
        );
        r.per_target(
            "tracepkt_probe_success",
            "Whether the last probe got its reply (1) or not (0); for a target with size:, whether any probe of the last round did",
            None,
            &self.success,
        );
        r.per_target(
            "tracepkt_probe_rtt",
            "Round-trip time of answered probes (its count is the number of replies); exemplars carry the journey's trace id",
            Some(Unit::Seconds),
            &self.rtt,
        );
        r.per_target(
            "tracepkt_probe_errors",
            "Probes that failed, by reason: not sent (resolve, send), answered by an ICMP error (icmp_error), refused, unreachable, or timeout",
            None,
            &self.errors,
        );
    }

    fn add_target(&self, t: &TargetLabels) {
        self.sent.get_or_create(t);
        self.rtt.get_or_create(t);
    }
}
