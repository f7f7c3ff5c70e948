//! The running targets, and the reload that brings them in line with the config.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use super::target::{Probing, labels_of, probe_loop, round_period};
use crate::config::{self, Config, Target};
use crate::export::board::{Board, TargetView};
use crate::export::health::Health;
use crate::export::otlp::Tracer;
use crate::export::prometheus::Metrics;
use crate::probes::{Kit, Probe, SizedIcmp, TargetMetrics};

/// A running target.
struct Running {
    target: Target,
    tag: u32,
    task: JoinHandle<()>,
}

/// The set of running targets, and what starting and stopping them takes.
pub(super) struct Fleet {
    pub kit: Kit,
    pub metrics: Arc<Metrics>,
    pub board: Arc<Board>,
    pub tracer: Option<Arc<Tracer>>,
    pub health: Arc<Health>,
    running: HashMap<String, Running>,
    next_tag: u32,
}

/// A target's probe as its kind.
fn probe_of(t: &Target) -> Probe {
    match &t.probe {
        config::Probe::Icmp if t.sizes.is_empty() && !t.dont_fragment => crate::probes::Icmp.into(),
        config::Probe::Icmp => SizedIcmp {
            sizes: t.sizes.clone(),
            dont_fragment: t.dont_fragment,
        }
        .into(),
        config::Probe::Tcp { port } => crate::probes::Tcp { port: *port }.into(),
        config::Probe::Udp { port, payload } => crate::probes::Udp {
            port: *port,
            payload: payload.clone(),
        }
        .into(),
        config::Probe::Dns { query, server } => crate::probes::dns::Dns {
            query: query.clone(),
            server: *server,
            answer: t.expect.as_ref().and_then(|e| e.answer.clone()),
        }
        .into(),
    }
}

impl Fleet {
    pub fn new(
        kit: Kit,
        metrics: Arc<Metrics>,
        board: Arc<Board>,
        tracer: Option<Arc<Tracer>>,
        health: Arc<Health>,
    ) -> Fleet {
        Fleet {
            kit,
            metrics,
            board,
            tracer,
            health,
            running: HashMap::new(),
            next_tag: 0,
        }
    }

    fn start(&mut self, t: Target, tag: u32, start_after: Duration) -> anyhow::Result<()> {
        let lease = self.kit.engine().lease(tag).context("no free ICMP echo id")?;
        let labels = labels_of(&t);
        self.metrics.add_target(tag, labels.clone());
        let probe = probe_of(&t);
        probe.added(&TargetMetrics {
            metrics: &self.metrics,
            tag,
            labels: &labels,
        });
        self.board.set_target(TargetView {
            name: t.name.clone(),
            address: t.address.clone(),
            protocol: probe.protocol(),
            labels: t.labels.clone(),
            interval_seconds: t.interval.as_secs_f64(),
        });
        let heartbeat = self.health.register(&t.name, round_period(&t, &probe), start_after);
        let probing = Probing {
            kit: self.kit.clone(),
            metrics: self.metrics.clone(),
            board: self.board.clone(),
            tracer: self.tracer.clone(),
            target: t.clone(),
            probe,
            tag,
            lease,
            heartbeat,
        };
        let task = tokio::spawn(probe_loop(probing, start_after));
        self.running.insert(t.name.clone(), Running { target: t, tag, task });
        Ok(())
    }

    /// Brings the running set in line with `targets`, spreading new targets over their interval
    /// so they are not sent in a burst.
    pub fn apply(&mut self, targets: &[Target]) -> anyhow::Result<()> {
        let wanted: HashMap<&str, &Target> = targets.iter().map(|t| (t.name.as_str(), t)).collect();
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|n| !wanted.contains_key(n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            let r = self.running.remove(&name).expect("present");
            // Aborting drops the task's lease and any probe in flight with it.
            r.task.abort();
            self.metrics.remove_target(r.tag, true);
            self.board.remove_target(&name);
            info!(target = %name, "target removed");
        }
        let n = targets.len().max(1) as u32;
        for (i, t) in targets.iter().enumerate() {
            let start_after = t.interval * i as u32 / n;
            match self.running.get(&t.name) {
                Some(r) if r.target == *t => {}
                Some(_) => {
                    // Changed settings: same tag, so the kernel counters continue.
                    let r = self.running.remove(&t.name).expect("present");
                    r.task.abort();
                    self.metrics.remove_target(r.tag, false);
                    self.start(t.clone(), r.tag, start_after)?;
                    info!(target = %t.name, "target updated");
                }
                None => {
                    self.next_tag += 1;
                    self.start(t.clone(), self.next_tag, start_after)?;
                    info!(target = %t.name, address = %t.address, interval = ?t.interval, "target added");
                }
            }
        }
        Ok(())
    }

    /// Reads the config file again (SIGHUP) and applies its targets. A config that does not
    /// load leaves the running one in force; settings read only at start are said to wait
    /// for a restart. `listen_ip`, from the command line, overrides the config's address.
    pub fn reload(&mut self, path: &Path, running: &Config, listen_ip: Option<IpAddr>) {
        let new = match Config::load(path) {
            Ok(new) => new,
            Err(e) => {
                self.metrics.reload(false);
                error!("configuration reload failed, the running configuration stays in force: {e:#}");
                return;
            }
        };
        let mut new_listen = new.listen;
        if let Some(ip) = listen_ip {
            new_listen.set_ip(ip);
        }
        if new_listen != running.listen {
            warn!(old = %running.listen, new = %new_listen, "a new listen address takes effect at restart");
        }
        if new.rtt_buckets != running.rtt_buckets
            || new.mechanisms != running.mechanisms
            || new.otlp != running.otlp
            || new.cross_node != running.cross_node
            || new.attach != running.attach
        {
            warn!("new RTT buckets, attach mechanisms or mode, OTLP or cross_node settings take effect at restart");
        }
        match self.apply(&new.targets) {
            Ok(()) => {
                self.metrics.reload(true);
                info!(targets = new.targets.len(), "configuration reloaded");
            }
            Err(e) => {
                self.metrics.reload(false);
                error!("configuration reload incomplete: {e:#}");
            }
        }
    }

    pub fn stop_all(&mut self) {
        for (_, r) in self.running.drain() {
            r.task.abort();
        }
    }
}
