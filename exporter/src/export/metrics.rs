//! Prometheus metrics: one registry, built once.
//!
//! Probe outcomes and journeys are recorded into label families as they complete. The kernel's
//! own per-CPU counters (hops, verdicts, drops) are not mirrored: a collector reads and sums
//! them at scrape time and labels them by target through the tag each probe id carries.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::journey::{HopKind, Journey, Outcome};
use crate::kernel::loader::{Kernel, Mechanism};
use crate::kernel::maps::{KernelCounters, KernelStats};
use crate::names::{self, Names};

/// Cumulative time the kernel programs have been attached: with `attach: in-flight`, the
/// duty cycle is its rate.
#[derive(Default)]
pub struct AttachClock {
    inner: Mutex<(std::time::Duration, Option<Instant>)>,
}

impl AttachClock {
    pub fn start(&self) {
        let mut g = self.inner.lock().unwrap();
        g.1.get_or_insert_with(Instant::now);
    }

    pub fn stop(&self) {
        let mut g = self.inner.lock().unwrap();
        if let Some(since) = g.1.take() {
            g.0 += since.elapsed();
        }
    }

    pub fn total(&self) -> std::time::Duration {
        let g = self.inner.lock().unwrap();
        g.0 + g.1.map(|s| s.elapsed()).unwrap_or_default()
    }
}

/// A label set. Owned strings: targets carry user-defined extra labels.
pub type Labels = Vec<(String, String)>;

/// What the metrics know of a target: its name and its extra labels.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetLabels {
    pub name: String,
    pub extra: Vec<(String, String)>,
}

impl TargetLabels {
    fn with(&self, more: &[(&str, String)]) -> Labels {
        let mut l: Labels = Vec::with_capacity(1 + self.extra.len() + more.len());
        l.push(("target".into(), self.name.clone()));
        l.extend(self.extra.iter().cloned());
        l.extend(more.iter().map(|(k, v)| (k.to_string(), v.clone())));
        l
    }
    fn base(&self) -> Labels {
        self.with(&[])
    }
}

/// Series a target owns beyond its base labels, so a reload can remove them all.
#[derive(Default)]
struct TargetSeries {
    latency: HashSet<Labels>,
    last_hop: Option<Labels>,
    signature: Option<u64>,
}

/// State shared by the recorders and the scrape-time collector.
struct Shared {
    /// Probe tag → target, for the kernel counters.
    targets: RwLock<HashMap<u32, TargetLabels>>,
    /// (netns inode, ifindex) → interface name, learned from events (ifindex is per netns).
    ifnames: Mutex<HashMap<(u32, u32), String>>,
    names: Arc<Mutex<Names>>,
    counters: Mutex<KernelCounters>,
    stats: KernelStats,
    clock: Arc<AttachClock>,
}

impl Shared {
    fn netns_label(&self, inode: u32) -> String {
        self.names
            .lock()
            .unwrap()
            .netns
            .name(inode)
            .unwrap_or_else(|| inode.to_string())
    }
    fn ifname(&self, netns: u32, ifindex: u32) -> String {
        match self.ifnames.lock().unwrap().get(&(netns, ifindex)) {
            Some(n) => n.clone(),
            None if ifindex == 0 => String::new(),
            None => format!("ifindex{ifindex}"),
        }
    }
}

pub struct Metrics {
    pub registry: Registry,
    probes_sent: Family<Labels, Counter>,
    replies: Family<Labels, Counter>,
    success: Family<Labels, Gauge>,
    rtt: Family<Labels, Histogram>,
    hop_latency: Family<Labels, Histogram>,
    path_changes: Family<Labels, Counter>,
    path_hops: Family<Labels, Gauge>,
    last_hop: Family<Labels, Gauge>,
    probe_errors: Family<Labels, Counter>,
    reloads: Family<Labels, Counter>,
    unmatched: Counter,
    shared: Arc<Shared>,
    series: Mutex<HashMap<String, TargetSeries>>,
}

fn rtt_buckets() -> Histogram {
    Histogram::new([
        50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ])
}

fn hop_buckets() -> Histogram {
    Histogram::new([
        1e-6, 2.5e-6, 5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 10e-3, 0.1, 1.0,
    ])
}

impl Metrics {
    pub fn new(
        kernel: &Kernel,
        counters: KernelCounters,
        stats: KernelStats,
        names: Arc<Mutex<Names>>,
        clock: Arc<AttachClock>,
    ) -> Self {
        // Names are spelled in full (no registry prefix) so they read the same here and in
        // the collector, which writes its own.
        let mut registry = Registry::default();
        let probes_sent = Family::<Labels, Counter>::default();
        let replies = Family::<Labels, Counter>::default();
        let success = Family::<Labels, Gauge>::default();
        let rtt = Family::<Labels, Histogram>::new_with_constructor(rtt_buckets as fn() -> Histogram);
        let hop_latency = Family::<Labels, Histogram>::new_with_constructor(hop_buckets as fn() -> Histogram);
        let path_changes = Family::<Labels, Counter>::default();
        let path_hops = Family::<Labels, Gauge>::default();
        let last_hop = Family::<Labels, Gauge>::default();
        let probe_errors = Family::<Labels, Counter>::default();
        let reloads = Family::<Labels, Counter>::default();
        let unmatched = Counter::default();
        let attached = Family::<Labels, Gauge>::default();

        registry.register("tracepkt_probes_sent", "ICMP echo probes sent", probes_sent.clone());
        registry.register("tracepkt_probe_replies", "ICMP echo replies received", replies.clone());
        registry.register(
            "tracepkt_probe_success",
            "Whether the last probe got its reply (1) or not (0)",
            success.clone(),
        );
        registry.register_with_unit(
            "tracepkt_probe_rtt",
            "Round-trip time of answered probes",
            Unit::Seconds,
            rtt.clone(),
        );
        registry.register_with_unit(
            "tracepkt_hop_latency",
            "Time between two consecutive hops of a probe's journey",
            Unit::Seconds,
            hop_latency.clone(),
        );
        registry.register(
            "tracepkt_path_changes",
            "Journeys whose path differed from the previous journey's",
            path_changes.clone(),
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
            "Probes not sent (resolve, send) or answered by an ICMP error (icmp_error)",
            probe_errors.clone(),
        );
        registry.register(
            "tracepkt_config_reloads",
            "Configuration reloads (SIGHUP), by result",
            reloads.clone(),
        );
        registry.register(
            "tracepkt_events_unmatched",
            "Kernel events that arrived after their probe's journey was closed",
            unmatched.clone(),
        );
        registry.register(
            "tracepkt_program_attached",
            "Kernel hooks attached (1) or not (0), and by which mechanism",
            attached.clone(),
        );
        for a in &kernel.report {
            let mechanism = a.mechanism.map(Mechanism::as_str).unwrap_or("none");
            attached
                .get_or_create(&vec![
                    ("program".into(), a.hook.to_string()),
                    ("mechanism".into(), mechanism.to_string()),
                ])
                .set(i64::from(a.mechanism.is_some()));
        }
        registry.register(
            "tracepkt_build",
            "tracepkt version and the kernel it runs on",
            Info::new(vec![
                ("version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
                ("kernel".to_string(), kernel.release.clone()),
            ]),
        );

        let shared = Arc::new(Shared {
            targets: RwLock::new(HashMap::new()),
            ifnames: Mutex::new(HashMap::new()),
            names,
            counters: Mutex::new(counters),
            stats,
            clock,
        });
        registry.register_collector(Box::new(KernelCollector {
            shared: shared.clone(),
            drop_reasons: kernel.drop_reasons.clone(),
        }));
        Metrics {
            registry,
            probes_sent,
            replies,
            success,
            rtt,
            hop_latency,
            path_changes,
            path_hops,
            last_hop,
            probe_errors,
            reloads,
            unmatched,
            shared,
            series: Mutex::new(HashMap::new()),
        }
    }

    /// Makes a target known under its probe tag; its series start at zero.
    pub fn add_target(&self, tag: u32, t: TargetLabels) {
        let mut targets = self.shared.targets.write().unwrap();
        let base = t.base();
        let _ = self.probes_sent.get_or_create(&base);
        let _ = self.replies.get_or_create(&base);
        let _ = self.path_changes.get_or_create(&base);
        targets.insert(tag, t);
    }

    /// Runs `write` only while `t` is still the target known under `tag`, holding the targets
    /// lock: a task stopped by a reload may still be finishing a probe on another thread, and
    /// must not bring back the series `remove_target` just deleted.
    fn if_current(&self, tag: u32, t: &TargetLabels, write: impl FnOnce()) {
        let targets = self.shared.targets.read().unwrap();
        if targets.get(&tag) == Some(t) {
            write();
        }
    }

    /// Removes every series of a target (after a reload dropped it or changed its labels).
    pub fn remove_target(&self, tag: u32, forget_kernel_counters: bool) {
        // Held to the end, so no recorder writes between the check and the removal.
        let mut targets = self.shared.targets.write().unwrap();
        let Some(t) = targets.remove(&tag) else {
            return;
        };
        let base = t.base();
        for fam in [&self.probes_sent, &self.replies, &self.path_changes] {
            fam.remove(&base);
        }
        self.success.remove(&base);
        self.rtt.remove(&base);
        self.path_hops.remove(&base);
        for reason in ["resolve", "send", "icmp_error"] {
            self.probe_errors.remove(&t.with(&[("reason", reason.to_string())]));
        }
        if let Some(s) = self.series.lock().unwrap().remove(&t.name) {
            for l in s.latency {
                self.hop_latency.remove(&l);
            }
            if let Some(l) = s.last_hop {
                self.last_hop.remove(&l);
            }
        }
        if forget_kernel_counters {
            self.shared.counters.lock().unwrap().forget(tag);
        }
    }

    pub fn probe_sent(&self, tag: u32, t: &TargetLabels) {
        self.if_current(tag, t, || {
            self.probes_sent.get_or_create(&t.base()).inc();
        });
    }

    pub fn probe_error(&self, tag: u32, t: &TargetLabels, reason: &str) {
        self.if_current(tag, t, || {
            self.probe_errors
                .get_or_create(&t.with(&[("reason", reason.to_string())]))
                .inc();
            self.success.get_or_create(&t.base()).set(0);
        });
    }

    pub fn reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads
            .get_or_create(&vec![("result".into(), result.into())])
            .inc();
    }

    pub fn unmatched_events(&self, n: u64) {
        self.unmatched.inc_by(n);
    }

    /// Records a finished journey.
    pub fn record(&self, tag: u32, t: &TargetLabels, j: &Journey) {
        self.if_current(tag, t, || self.record_current(t, j));
    }

    fn record_current(&self, t: &TargetLabels, j: &Journey) {
        let base = t.base();
        {
            let mut ifnames = self.shared.ifnames.lock().unwrap();
            for h in j.hops.iter().filter(|h| h.kind == HopKind::Interface) {
                ifnames.entry((h.netns, h.ifindex)).or_insert_with(|| h.ifname.clone());
            }
        }
        let replied = matches!(j.outcome, Outcome::Reply { .. });
        self.success.get_or_create(&base).set(i64::from(replied));
        self.path_hops.get_or_create(&base).set(j.hops.len() as i64);
        if let Outcome::Reply { rtt } = j.outcome {
            self.replies.get_or_create(&base).inc();
            self.rtt.get_or_create(&base).observe(rtt.as_secs_f64());
        }
        let mut all = self.series.lock().unwrap();
        let s = all.entry(t.name.clone()).or_default();
        for (from, to, dt) in j.latencies() {
            let l = t.with(&[("from", from), ("to", to)]);
            self.hop_latency.get_or_create(&l).observe(dt.as_secs_f64());
            s.latency.insert(l);
        }
        let sig = j.signature();
        if s.signature.is_some_and(|old| old != sig) {
            self.path_changes.get_or_create(&base).inc();
        }
        s.signature = Some(sig);
        if let Some(old) = s.last_hop.take() {
            self.last_hop.remove(&old);
        }
        if !replied && let Some(h) = j.last_hop() {
            let l = t.with(&[
                ("netns", h.netns_label()),
                ("interface", h.ifname.clone()),
                ("kind", h.kind.as_str().to_string()),
            ]);
            self.last_hop.get_or_create(&l).set(1);
            s.last_hop = Some(l);
        }
    }
}

/// A kernel counter before its target's labels are known: (tag, its own labels, value).
type KernelRow = (u32, Vec<(&'static str, String)>, u64);

/// Reads the kernel's per-CPU maps at scrape time.
struct KernelCollector {
    shared: Arc<Shared>,
    drop_reasons: HashMap<u32, String>,
}

impl std::fmt::Debug for KernelCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KernelCollector")
    }
}

fn direction_name(d: u8) -> &'static str {
    match d {
        probe_common::direction::REQUEST => "request",
        probe_common::direction::REPLY => "reply",
        _ => "unknown",
    }
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn encode_counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: Vec<(Labels, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
    // Two kernel keys can map to the same labels (an unnamed interface in two namespaces
    // with the same name): sum them, a label set must appear once.
    let mut merged: Vec<(Labels, u64)> = Vec::with_capacity(rows.len());
    for (l, v) in rows {
        match merged.iter_mut().find(|(m, _)| *m == l) {
            Some((_, total)) => *total += v,
            None => merged.push((l, v)),
        }
    }
    for (labels, v) in merged {
        ConstCounter::new(v).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for KernelCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let start = Instant::now();
        let (hops, verdicts, drops) = {
            let c = self.shared.counters.lock().unwrap();
            (c.hops(), c.verdicts(), c.drops())
        };
        let targets = self.shared.targets.read().unwrap().clone();
        // Counters of tags that no longer name a target (removed by a reload) are not shown.
        let rows = |keys: Vec<KernelRow>| -> Vec<(Labels, u64)> {
            keys.into_iter()
                .filter_map(|(tag, more, v)| Some((targets.get(&tag)?.with(&more), v)))
                .collect()
        };
        let sh = &self.shared;
        let hop_rows = hops
            .into_iter()
            .map(|(k, v)| {
                let labels = vec![
                    ("netns", sh.netns_label(k.netns)),
                    ("interface", sh.ifname(k.netns, k.ifindex)),
                    ("direction", direction_name(k.direction).to_string()),
                ];
                (k.tag, labels, v)
            })
            .collect();
        encode_counters(
            &mut encoder,
            "tracepkt_hops",
            "Interface crossings of probe packets, counted in the kernel (transmit and receive)",
            rows(hop_rows),
        )?;
        let verdict_rows = verdicts
            .into_iter()
            .map(|(k, v)| {
                let labels = vec![
                    ("netns", sh.netns_label(k.netns)),
                    ("family", names::nf_family(k.pf).to_string()),
                    ("hook", names::nf_hook(k.hook).to_string()),
                    ("table", cstr(&k.table)),
                    ("chain", cstr(&k.chain)),
                    ("verdict", names::nf_verdict(k.verdict).to_string()),
                ];
                (k.tag, labels, v)
            })
            .collect();
        encode_counters(
            &mut encoder,
            "tracepkt_netfilter_verdicts",
            "Netfilter chain traversals of probe packets, by verdict, counted in the kernel",
            rows(verdict_rows),
        )?;
        let drop_rows = drops
            .into_iter()
            .map(|(k, v)| {
                let reason = self
                    .drop_reasons
                    .get(&k.reason)
                    .cloned()
                    .unwrap_or_else(|| format!("reason_{}", k.reason));
                let labels = vec![
                    ("netns", sh.netns_label(k.netns)),
                    ("interface", sh.ifname(k.netns, k.ifindex)),
                    ("reason", reason),
                ];
                (k.tag, labels, v)
            })
            .collect();
        encode_counters(
            &mut encoder,
            "tracepkt_drops",
            "Probe packets dropped by the kernel, by drop reason",
            rows(drop_rows),
        )?;

        let lost = ConstCounter::new(self.shared.stats.events_lost());
        lost.encode(encoder.encode_descriptor(
            "tracepkt_events_lost",
            "Kernel events that did not fit in the ring buffer (hops missing from journeys)",
            None,
            lost.metric_type(),
        )?)?;
        let attached = ConstCounter::new(self.shared.clock.total().as_secs_f64());
        attached.encode(encoder.encode_descriptor(
            "tracepkt_attached_seconds",
            "Time the kernel programs have been attached (with attach: in-flight, its rate is the duty cycle)",
            None,
            attached.metric_type(),
        )?)?;
        let took = ConstGauge::new(start.elapsed().as_secs_f64());
        let mut m = encoder.encode_descriptor(
            "tracepkt_scrape_collector_duration_seconds",
            "Time this scrape spent reading the kernel's counters",
            None,
            took.metric_type(),
        )?;
        took.encode(m.encode_family(&vec![("collector".to_string(), "kernel".to_string())])?)?;
        Ok(())
    }
}
