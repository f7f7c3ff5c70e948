//! Scrape-time collectors of what the kernel counts: one per kernel map, each in the file
//! named like its kernel half in `probe-ebpf` (`interfaces`, `netfilter`, `drops`), plus
//! the kernel side's own health counters (`stats`).
//!
//! Each collector reads its map on its own: a read that fails loses that collector's
//! families for that scrape only, and every scrape says so per collector in
//! `tracepkt_scrape_collector_success` and `tracepkt_scrape_collector_duration_seconds`.

mod drops;
mod interfaces;
mod netfilter;
mod stats;

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use tracing::warn;

use probe_common::Tagged;

use super::labels::{TargetLabels, Targets};
use crate::journey::{HopDetail, Journey};
use crate::kernel::loader::DropReasons;
use crate::kernel::maps::{Counters, MapError};
use crate::names::Names;
use crate::telemetry::Telemetry;

/// What turns kernel keys into labels: namespaces and interfaces by number.
pub struct Labelling {
    /// (netns inode, ifindex) → interface name, learned from journeys (ifindex is per netns).
    ifnames: Mutex<HashMap<(u32, u32), String>>,
    names: Arc<Mutex<Names>>,
    drop_reasons: DropReasons,
}

impl Labelling {
    pub fn new(names: Arc<Mutex<Names>>, drop_reasons: DropReasons) -> Self {
        Labelling {
            ifnames: Mutex::new(HashMap::new()),
            names,
            drop_reasons,
        }
    }

    fn netns(&self, inode: u32) -> String {
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

    /// Remembers the interface names a journey crossed, for the counters keyed by ifindex.
    pub fn learn_interfaces(&self, j: &Journey) {
        let mut ifnames = self.ifnames.lock().unwrap();
        for h in j
            .hops
            .iter()
            .filter(|h| matches!(h.detail, HopDetail::Interface { .. }))
        {
            ifnames.entry((h.netns, h.ifindex)).or_insert_with(|| h.ifname.clone());
        }
    }
}

enum CollectError {
    Map(MapError),
    Encode(std::fmt::Error),
}

impl From<MapError> for CollectError {
    fn from(e: MapError) -> Self {
        CollectError::Map(e)
    }
}

impl From<std::fmt::Error> for CollectError {
    fn from(e: std::fmt::Error) -> Self {
        CollectError::Encode(e)
    }
}

/// One collector: reads everything first, then writes its families, so a failed read
/// writes nothing.
trait Collect: Send + Sync {
    fn name(&self) -> &'static str;
    fn collect(
        &self,
        labels: &Labelling,
        targets: &HashMap<u32, TargetLabels>,
        encoder: &mut DescriptorEncoder,
    ) -> Result<(), CollectError>;
    /// Drops the kernel counters of a target that is gone.
    fn forget(&self, _tag: u32) {}
}

/// Writes one counter family. Two kernel keys can map to the same labels (an unnamed
/// interface in two namespaces with the same name): they are summed, since a label set
/// must appear once.
fn counter_family<L: EncodeLabelSet + Eq + Hash + Clone>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut index: HashMap<L, usize> = HashMap::new();
    let mut merged: Vec<(L, u64)> = Vec::new();
    for (l, v) in rows {
        match index.get(&l) {
            Some(&i) => merged[i].1 += v,
            None => {
                index.insert(l.clone(), merged.len());
                merged.push((l, v));
            }
        }
    }
    let mut metric = encoder.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
    for (labels, v) in &merged {
        ConstCounter::new(*v).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

/// One kernel counter map: read at scrape time, each key labelled (its target's labels and its
/// own), written as one counter family.
struct CounterMap<K, L> {
    name: &'static str,
    metric: &'static str,
    help: &'static str,
    map: Mutex<Counters<K>>,
    /// A key's own labels, after its target's.
    labels: fn(&K, TargetLabels, &Labelling) -> L,
}

impl<K, L> Collect for CounterMap<K, L>
where
    K: aya::Pod + Tagged + Send,
    L: EncodeLabelSet + Eq + Hash + Clone,
{
    fn name(&self) -> &'static str {
        self.name
    }

    fn collect(
        &self,
        labels: &Labelling,
        targets: &HashMap<u32, TargetLabels>,
        encoder: &mut DescriptorEncoder,
    ) -> Result<(), CollectError> {
        let counts = self.map.lock().unwrap().read()?;
        // Counters of tags that no longer name a target (removed by a reload) are not shown.
        let rows = counts
            .into_iter()
            .filter_map(|(k, v)| Some(((self.labels)(&k, targets.get(&k.tag())?.clone(), labels), v)));
        counter_family(encoder, self.metric, self.help, rows)?;
        Ok(())
    }

    fn forget(&self, tag: u32) {
        self.map.lock().unwrap().forget(tag);
    }
}

/// Every kernel-side collector, registered once.
pub struct Kernel {
    collectors: Vec<Box<dyn Collect>>,
    labelling: Arc<Labelling>,
    targets: Arc<Targets>,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("kernel collectors")
    }
}

impl Kernel {
    pub fn new(t: Telemetry, labelling: Arc<Labelling>, targets: Arc<Targets>) -> Self {
        let collectors: Vec<Box<dyn Collect>> = vec![
            interfaces::collector(t.hops),
            netfilter::collector(t.verdicts),
            drops::collector(t.drops),
            Box::new(stats::Stats::new(t.stats, t.counts, t.clock)),
        ];
        Kernel {
            collectors,
            labelling,
            targets,
        }
    }

    pub fn forget(&self, tag: u32) {
        for c in &self.collectors {
            c.forget(tag);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CollectorLabels {
    collector: &'static str,
}

impl Collector for Kernel {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let targets = self.targets.snapshot();
        let mut outcomes: Vec<(&'static str, Duration, bool)> = Vec::with_capacity(self.collectors.len());
        for c in &self.collectors {
            let start = Instant::now();
            let ok = match c.collect(&self.labelling, &targets, &mut encoder) {
                Ok(()) => true,
                Err(CollectError::Map(e)) => {
                    warn!(collector = c.name(), "reading the kernel's counters failed: {e}");
                    false
                }
                Err(CollectError::Encode(e)) => return Err(e),
            };
            outcomes.push((c.name(), start.elapsed(), ok));
        }
        let gauge = ConstGauge::new(0.0f64).metric_type();
        let mut m = encoder.encode_descriptor(
            "tracepkt_scrape_collector_duration_seconds",
            "Time this scrape spent in each collector of kernel counters",
            None,
            gauge,
        )?;
        for (collector, took, _) in &outcomes {
            ConstGauge::new(took.as_secs_f64()).encode(m.encode_family(&CollectorLabels { collector })?)?;
        }
        let mut m = encoder.encode_descriptor(
            "tracepkt_scrape_collector_success",
            "Whether each collector of kernel counters read its map (1) or failed (0) in this scrape",
            None,
            ConstGauge::new(0i64).metric_type(),
        )?;
        for (collector, _, ok) in &outcomes {
            ConstGauge::new(i64::from(*ok)).encode(m.encode_family(&CollectorLabels { collector })?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    /// Writes one counter, or fails to read its map.
    struct Fake {
        name: &'static str,
        fails: bool,
    }

    impl Collect for Fake {
        fn name(&self) -> &'static str {
            self.name
        }

        fn collect(
            &self,
            _labels: &Labelling,
            _targets: &HashMap<u32, TargetLabels>,
            encoder: &mut DescriptorEncoder,
        ) -> Result<(), CollectError> {
            if self.fails {
                return Err(MapError::Missing("FAKE").into());
            }
            let family = format!("tracepkt_fake_{}", self.name);
            counter_family(
                encoder,
                &family,
                "fake",
                [(CollectorLabels { collector: self.name }, 7)],
            )?;
            Ok(())
        }
    }

    #[test]
    fn a_failing_collector_loses_only_its_own_families() {
        let names = Arc::new(Mutex::new(Names::new(DropReasons::default())));
        let kernel = Kernel {
            collectors: vec![
                Box::new(Fake {
                    name: "good",
                    fails: false,
                }),
                Box::new(Fake {
                    name: "bad",
                    fails: true,
                }),
                Box::new(Fake {
                    name: "after",
                    fails: false,
                }),
            ],
            labelling: Arc::new(Labelling::new(names, DropReasons::default())),
            targets: Arc::default(),
        };
        let mut registry = Registry::default();
        registry.register_collector(Box::new(kernel));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"tracepkt_fake_good_total{collector="good"} 7"#),
            "{text}"
        );
        assert!(
            text.contains(r#"tracepkt_fake_after_total{collector="after"} 7"#),
            "{text}"
        );
        assert!(!text.contains("tracepkt_fake_bad"), "{text}");
        assert!(
            text.contains(r#"tracepkt_scrape_collector_success{collector="good"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"tracepkt_scrape_collector_success{collector="bad"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"tracepkt_scrape_collector_duration_seconds{collector="bad"}"#),
            "{text}"
        );
    }
}
