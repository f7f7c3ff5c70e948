//! Prometheus metrics: one registry, built once.
//!
//! Probe outcomes and journeys are recorded into label families as they complete. The
//! kernel's own counters (hops, verdicts, drops) are not mirrored: the collectors in
//! `collectors/` read them at scrape time and label them by target through the tag each
//! probe id carries.
//!
//! Per-target series are kept few on purpose, so that `/metrics` stays small at thousands of
//! targets: the time a journey spent in each of its stages is a gauge of the last journey per
//! bounded stage (as probers conventionally export phase durations), not a histogram per hop
//! pair; the per-hop detail is in `tracepkt trace` and the spans.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use super::collectors::{self, Labelling};
use super::otlp::SpanCounts;
use crate::engine::Telemetry;
use crate::journey::{Journey, Stage};
use crate::prober::Outcome;
use crate::remote::RemoteJourney;
use opentelemetry::trace::TraceId;

/// What the metrics know of a target: its name and the extra labels of its config.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TargetLabels {
    pub target: String,
    #[prometheus(flatten)]
    pub extra: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ErrorLabels {
    #[prometheus(flatten)]
    target: TargetLabels,
    reason: &'static str,
}

/// A sized target's probes of one size.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SizeLabels {
    #[prometheus(flatten)]
    target: TargetLabels,
    size: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RcodeLabels {
    #[prometheus(flatten)]
    target: TargetLabels,
    rcode: &'static str,
}

/// DNS response codes as labelled: the common ones by name, the rest together, so that the
/// series of a target stay few and known.
const RCODES: [&str; 7] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "OTHER",
];

fn rcode_label(rcode: &str) -> &'static str {
    RCODES.iter().find(|r| **r == rcode).copied().unwrap_or("OTHER")
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StageLabels {
    #[prometheus(flatten)]
    target: TargetLabels,
    stage: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LastHopLabels {
    #[prometheus(flatten)]
    target: TargetLabels,
    netns: String,
    interface: String,
    kind: &'static str,
}

/// A hop of another node's probe on this node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RemoteHopLabels {
    /// Where the probe came from: its source address as this node first saw it.
    origin_node: String,
    netns: String,
    interface: String,
    kind: &'static str,
}

/// The exemplar of an RTT observation: the trace of its journey, when it was sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TraceExemplar {
    pub trace_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AttachedLabels {
    program: &'static str,
    mechanism: &'static str,
}

/// Why a probe produced no reply worth an RTT: the `reason` of `tracepkt_probe_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeError {
    /// The target's host name did not resolve.
    Resolve,
    /// The probe could not be sent.
    Send,
    /// Answered by an ICMP error (host unreachable, time exceeded).
    IcmpError,
    /// TCP: answered by RST; UDP: by ICMP port unreachable.
    Refused,
    /// TCP or UDP: the kernel said the destination is unreachable.
    Unreachable,
    /// No answer within the timeout.
    Timeout,
}

impl ProbeError {
    const ALL: [ProbeError; 6] = [
        ProbeError::Resolve,
        ProbeError::Send,
        ProbeError::IcmpError,
        ProbeError::Refused,
        ProbeError::Unreachable,
        ProbeError::Timeout,
    ];

    fn as_str(self) -> &'static str {
        match self {
            ProbeError::Resolve => "resolve",
            ProbeError::Send => "send",
            ProbeError::IcmpError => "icmp_error",
            ProbeError::Refused => "refused",
            ProbeError::Unreachable => "unreachable",
            ProbeError::Timeout => "timeout",
        }
    }
}

/// Series a target owns beyond its fixed ones, so a reload can remove them all.
#[derive(Default)]
struct TargetSeries {
    last_hop: Option<LastHopLabels>,
    /// The last path, per probe size (`None`: an unsized target's probe): a sweep's sizes
    /// take different paths when some die on the way, which is no path change.
    signatures: HashMap<Option<u16>, u64>,
    /// A sized target's sizes (`size:`); empty for the others.
    sizes: Vec<u16>,
}

pub struct Metrics {
    pub registry: Registry,
    probes_sent: Family<TargetLabels, Counter>,
    success: Family<TargetLabels, Gauge>,
    size_success: Family<SizeLabels, Gauge>,
    path_mtu: Family<TargetLabels, Gauge>,
    rtt: Family<TargetLabels, HistogramWithExemplars<TraceExemplar>, RttHistogram>,
    stages: Family<StageLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    path_changes: Family<TargetLabels, Counter>,
    incomplete: Family<TargetLabels, Counter>,
    dns_ok: Family<TargetLabels, Gauge>,
    dns_ttl: Family<TargetLabels, Gauge>,
    dns_rcodes: Family<RcodeLabels, Counter>,
    path_hops: Family<TargetLabels, Gauge>,
    last_hop: Family<LastHopLabels, Gauge>,
    path_expected: Family<TargetLabels, Gauge>,
    probe_errors: Family<ErrorLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    remote_hops: Family<RemoteHopLabels, Counter>,
    labelling: Arc<Labelling>,
    kernel: Arc<collectors::Kernel>,
    series: Mutex<HashMap<String, TargetSeries>>,
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

impl Metrics {
    /// `spans`: what became of the spans, when journeys are sent as traces.
    pub fn new(telemetry: Telemetry, rtt_buckets: &[f64], spans: Option<&SpanCounts>) -> Self {
        let mut registry = Registry::default();
        if let Some(spans) = spans {
            spans.register(&mut registry);
        }
        let probes_sent = Family::<TargetLabels, Counter>::default();
        let success = Family::<TargetLabels, Gauge>::default();
        let size_success = Family::<SizeLabels, Gauge>::default();
        let path_mtu = Family::<TargetLabels, Gauge>::default();
        let rtt = Family::new_with_constructor(RttHistogram(rtt_buckets.into()));
        let stages = Family::<StageLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let path_changes = Family::<TargetLabels, Counter>::default();
        let incomplete = Family::<TargetLabels, Counter>::default();
        let dns_ok = Family::<TargetLabels, Gauge>::default();
        let dns_ttl = Family::<TargetLabels, Gauge>::default();
        let dns_rcodes = Family::<RcodeLabels, Counter>::default();
        let path_hops = Family::<TargetLabels, Gauge>::default();
        let last_hop = Family::<LastHopLabels, Gauge>::default();
        let path_expected = Family::<TargetLabels, Gauge>::default();
        let probe_errors = Family::<ErrorLabels, Counter>::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        let attached = Family::<AttachedLabels, Gauge>::default();
        let remote_hops = Family::<RemoteHopLabels, Counter>::default();

        // Names are spelled in full (no registry prefix) so they read the same here and in
        // the collectors, which write their own.
        registry.register(
            "tracepkt_probes_sent",
            "Probes sent (ICMP echo, TCP connection, UDP datagram)",
            probes_sent.clone(),
        );
        registry.register(
            "tracepkt_probe_success",
            "Whether the last probe got its reply (1) or not (0); for a target with size:, whether any probe of the last round did",
            success.clone(),
        );
        registry.register(
            "tracepkt_probe_size_success",
            "Targets with size: whether the last round's probes of each size got their reply (1) or not (0)",
            size_success.clone(),
        );
        registry.register_with_unit(
            "tracepkt_path_mtu",
            "Targets with size: the largest size whose probe got its reply in the last round; 0 when none did",
            Unit::Bytes,
            path_mtu.clone(),
        );
        registry.register_with_unit(
            "tracepkt_probe_rtt",
            "Round-trip time of answered probes (its count is the number of replies); exemplars carry the journey's trace id",
            Unit::Seconds,
            rtt.clone(),
        );
        registry.register_with_unit(
            "tracepkt_journey_stage",
            "Time the last journey spent in each stage: request (first to last hop out), turnaround (at the target), reply (first to last hop back)",
            Unit::Seconds,
            stages.clone(),
        );
        registry.register(
            "tracepkt_path_changes",
            "Journeys whose path differed from the previous journey's",
            path_changes.clone(),
        );
        registry.register(
            "tracepkt_dns_answer_ok",
            "DNS targets: whether the last answer was NOERROR and held what expect: answer asks (1) or not (0)",
            dns_ok.clone(),
        );
        registry.register(
            "tracepkt_dns_answer_ttl_seconds",
            "DNS targets: the smallest TTL of the last answer's records of the type asked",
            dns_ttl.clone(),
        );
        registry.register(
            "tracepkt_dns_responses",
            "DNS targets: answers by response code",
            dns_rcodes.clone(),
        );
        registry.register(
            "tracepkt_journeys_incomplete",
            "Journeys during which the kernel lost events to a full ring buffer: hops may be missing",
            incomplete.clone(),
        );
        registry.register(
            "tracepkt_path_hops",
            "Hops in the last journey (interfaces, verdicts, drops)",
            path_hops.clone(),
        );
        registry.register(
            "tracepkt_last_hop_info",
            "Where the last unanswered probe was last seen (1); absent after a reply",
            last_hop.clone(),
        );
        registry.register(
            "tracepkt_probe_errors",
            "Probes that failed, by reason: not sent (resolve, send), answered by an ICMP error (icmp_error), refused, unreachable, or timeout",
            probe_errors.clone(),
        );
        registry.register(
            "tracepkt_path_expected",
            "Whether the last journey's path was as the target's expect: says (1) or not (0); only for targets with expect:",
            path_expected.clone(),
        );
        registry.register(
            "tracepkt_config_reloads",
            "Configuration reloads (SIGHUP), by result",
            reloads.clone(),
        );
        registry.register(
            "tracepkt_remote_hops",
            "Hops of other nodes' probes seen on this node (cross_node:), by where the probe came from, namespace, interface and kind",
            remote_hops.clone(),
        );
        registry.register(
            "tracepkt_program_attached",
            "Kernel hooks attached (1) or not (0), and by which mechanism",
            attached.clone(),
        );
        for a in &telemetry.report {
            let mechanism = a.mechanism.map(|m| m.as_str()).unwrap_or("none");
            attached
                .get_or_create(&AttachedLabels {
                    program: a.hook.name(),
                    mechanism,
                })
                .set(i64::from(a.mechanism.is_some()));
        }
        registry.register(
            "tracepkt_build",
            "tracepkt version and the kernel it runs on",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION").to_string()),
                ("kernel", telemetry.release.clone()),
            ]),
        );

        let labelling = Arc::new(Labelling::new(telemetry.names.clone(), telemetry.drop_reasons.clone()));
        let kernel = Arc::new(collectors::Kernel::new(telemetry, labelling.clone()));
        registry.register_collector(Box::new(kernel.clone()));
        Metrics {
            registry,
            probes_sent,
            success,
            size_success,
            path_mtu,
            rtt,
            stages,
            path_changes,
            incomplete,
            dns_ok,
            dns_ttl,
            dns_rcodes,
            path_hops,
            last_hop,
            path_expected,
            probe_errors,
            reloads,
            remote_hops,
            labelling,
            kernel,
            series: Mutex::new(HashMap::new()),
        }
    }

    /// Counts the hops of another node's probe seen here.
    pub fn remote_journey(&self, j: &RemoteJourney) {
        let origin_node = j.origin.to_string();
        for h in &j.hops {
            self.remote_hops
                .get_or_create(&RemoteHopLabels {
                    origin_node: origin_node.clone(),
                    netns: h.netns_label(),
                    interface: h.ifname.clone(),
                    kind: h.kind().as_str(),
                })
                .inc();
        }
    }

    /// Makes a target known under its probe tag; its counters start at zero.
    pub fn add_target(&self, tag: u32, t: TargetLabels) {
        let mut targets = self.labelling.targets.write().unwrap();
        let _ = self.probes_sent.get_or_create(&t);
        let _ = self.rtt.get_or_create(&t);
        let _ = self.path_changes.get_or_create(&t);
        let _ = self.incomplete.get_or_create(&t);
        targets.insert(tag, t);
    }

    /// Makes a target's sizes known (`size:`): its success is then set per round, by
    /// [`Metrics::record_round`], and it gets the per-size series.
    pub fn set_sizes(&self, tag: u32, t: &TargetLabels, sizes: &[u16]) {
        self.if_current(tag, t, || {
            self.series.lock().unwrap().entry(t.target.clone()).or_default().sizes = sizes.to_vec();
        });
    }

    fn sized(&self, t: &TargetLabels) -> bool {
        self.series
            .lock()
            .unwrap()
            .get(&t.target)
            .is_some_and(|s| !s.sizes.is_empty())
    }

    /// Runs `write` only while `t` is still the target known under `tag`, holding the targets
    /// lock: a task stopped by a reload may still be finishing a probe on another thread, and
    /// must not bring back the series `remove_target` just deleted.
    fn if_current(&self, tag: u32, t: &TargetLabels, write: impl FnOnce()) {
        let targets = self.labelling.targets.read().unwrap();
        if targets.get(&tag) == Some(t) {
            write();
        }
    }

    /// Removes every series of a target (after a reload dropped it or changed its labels).
    pub fn remove_target(&self, tag: u32, forget_kernel_counters: bool) {
        // Held to the end, so no recorder writes between the check and the removal.
        let mut targets = self.labelling.targets.write().unwrap();
        let Some(t) = targets.remove(&tag) else {
            return;
        };
        for fam in [&self.probes_sent, &self.path_changes, &self.incomplete] {
            fam.remove(&t);
        }
        self.success.remove(&t);
        self.path_mtu.remove(&t);
        self.rtt.remove(&t);
        self.path_expected.remove(&t);
        self.path_hops.remove(&t);
        self.dns_ok.remove(&t);
        self.dns_ttl.remove(&t);
        for rcode in RCODES {
            self.dns_rcodes.remove(&RcodeLabels {
                target: t.clone(),
                rcode,
            });
        }
        for reason in ProbeError::ALL {
            self.probe_errors.remove(&ErrorLabels {
                target: t.clone(),
                reason: reason.as_str(),
            });
        }
        for stage in Stage::ALL {
            self.stages.remove(&StageLabels {
                target: t.clone(),
                stage: stage.as_str(),
            });
        }
        if let Some(s) = self.series.lock().unwrap().remove(&t.target) {
            if let Some(l) = s.last_hop {
                self.last_hop.remove(&l);
            }
            for size in s.sizes {
                self.size_success.remove(&SizeLabels {
                    target: t.clone(),
                    size: size.to_string(),
                });
            }
        }
        if forget_kernel_counters {
            self.kernel.forget(tag);
        }
    }

    pub fn probe_sent(&self, tag: u32, t: &TargetLabels) {
        self.if_current(tag, t, || {
            self.probes_sent.get_or_create(t).inc();
        });
    }

    /// A DNS target's answer: its response code, whether it held what was expected, its TTL.
    pub fn dns_answer(&self, tag: u32, t: &TargetLabels, rcode: &str, ok: bool, ttl: Option<u32>) {
        self.if_current(tag, t, || {
            self.dns_rcodes
                .get_or_create(&RcodeLabels {
                    target: t.clone(),
                    rcode: rcode_label(rcode),
                })
                .inc();
            self.dns_ok.get_or_create(t).set(i64::from(ok));
            match ttl {
                Some(ttl) => {
                    self.dns_ttl.get_or_create(t).set(i64::from(ttl));
                }
                None => {
                    self.dns_ttl.remove(t);
                }
            }
        });
    }

    /// A DNS target whose question got no answer to check.
    pub fn dns_unanswered(&self, tag: u32, t: &TargetLabels) {
        self.if_current(tag, t, || {
            self.dns_ok.get_or_create(t).set(0);
        });
    }

    pub fn probe_error(&self, tag: u32, t: &TargetLabels, reason: ProbeError) {
        self.if_current(tag, t, || {
            self.probe_errors
                .get_or_create(&ErrorLabels {
                    target: t.clone(),
                    reason: reason.as_str(),
                })
                .inc();
            if !self.sized(t) {
                self.success.get_or_create(t).set(0);
            }
        });
    }

    /// Records whether the last journey's path was as expected.
    pub fn path_expected(&self, tag: u32, t: &TargetLabels, ok: bool) {
        self.if_current(tag, t, || {
            self.path_expected.get_or_create(t).set(i64::from(ok));
        });
    }

    pub fn reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    /// Records a finished journey; `trace` is its trace id when the journey was sent as a
    /// trace, and becomes the RTT observation's exemplar. `size`: a sized probe's IP length.
    pub fn record(&self, tag: u32, t: &TargetLabels, j: &Journey, trace: Option<TraceId>, size: Option<u16>) {
        self.if_current(tag, t, || self.record_current(t, j, trace, size));
    }

    /// Records a sized target's round: which sizes were answered (a size missing from
    /// `answered` was not). Its success is whether any was, and its path MTU the largest
    /// that was.
    pub fn record_round(&self, tag: u32, t: &TargetLabels, answered: &[(u16, bool)]) {
        self.if_current(tag, t, || {
            let mut all = self.series.lock().unwrap();
            let s = all.entry(t.target.clone()).or_default();
            let ok = |size: u16| answered.iter().any(|&(sz, ok)| sz == size && ok);
            for &size in &s.sizes {
                self.size_success
                    .get_or_create(&SizeLabels {
                        target: t.clone(),
                        size: size.to_string(),
                    })
                    .set(i64::from(ok(size)));
            }
            let largest = s.sizes.iter().copied().filter(|&sz| ok(sz)).max();
            self.success.get_or_create(t).set(i64::from(largest.is_some()));
            self.path_mtu.get_or_create(t).set(largest.map_or(0, i64::from));
            // Where the round's last failed probe was seen stays until a round fails none.
            if s.sizes.iter().all(|&sz| ok(sz))
                && let Some(old) = s.last_hop.take()
            {
                self.last_hop.remove(&old);
            }
        });
    }

    fn record_current(&self, t: &TargetLabels, j: &Journey, trace: Option<TraceId>, size: Option<u16>) {
        self.labelling.learn_interfaces(j);
        let replied = j.replied();
        if size.is_none() {
            self.success.get_or_create(t).set(i64::from(replied));
        }
        self.path_hops.get_or_create(t).set(j.hops.len() as i64);
        if j.events_lost > 0 {
            self.incomplete.get_or_create(t).inc();
        }
        if let Outcome::Reply { rtt } = j.outcome {
            let exemplar = trace.map(|id| TraceExemplar {
                trace_id: id.to_string(),
            });
            let when = exemplar.as_ref().map(|_| std::time::SystemTime::now());
            self.rtt.get_or_create(t).observe(rtt.as_secs_f64(), exemplar, when);
        }
        let seen = j.stages();
        for stage in Stage::ALL {
            let l = StageLabels {
                target: t.clone(),
                stage: stage.as_str(),
            };
            match seen.iter().find(|(s, _)| *s == stage) {
                Some((_, d)) => {
                    self.stages.get_or_create(&l).set(d.as_secs_f64());
                }
                // A stage the last journey never reached has no current value.
                None => {
                    self.stages.remove(&l);
                }
            }
        }
        let mut all = self.series.lock().unwrap();
        let s = all.entry(t.target.clone()).or_default();
        let sig = j.signature();
        if s.signatures.insert(size, sig).is_some_and(|old| old != sig) {
            self.path_changes.get_or_create(t).inc();
        }
        // A sized probe's reply says nothing of the round's other sizes: `record_round` clears.
        if (size.is_none() || !replied)
            && let Some(old) = s.last_hop.take()
        {
            self.last_hop.remove(&old);
        }
        if !replied && let Some(h) = j.last_hop() {
            let l = LastHopLabels {
                target: t.clone(),
                netns: h.netns_label(),
                interface: h.ifname.clone(),
                kind: h.kind().as_str(),
            };
            self.last_hop.get_or_create(&l).set(1);
            s.last_hop = Some(l);
        }
    }
}
