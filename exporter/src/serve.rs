//! `tracepkt serve`: probes every configured target on its schedule, rebuilds each probe's
//! journey from the ring buffer, and serves what it learned on `/metrics`.
//!
//! Each target runs in its own task with an echo id of its own; the id is registered in the
//! kernel's `PROBES` map only while one of its probes is in flight. One pump task moves ring
//! buffer events to the journeys in flight. SIGHUP reloads the config: targets that stay keep
//! their id, tag and counters.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::cli::ServeArgs;
use crate::config::{AttachMode, Config, IpVersion, Target};
use crate::export::http;
use crate::export::metrics::{AttachClock, Metrics, TargetLabels};
use crate::journey::{Journey, Outcome};
use crate::kernel::events::KernelEvent;
use crate::kernel::loader::{self, Kernel};
use crate::kernel::maps::{EventReader, KernelCounters, KernelStats, ProbeRegistry};
use crate::names::Names;
use crate::prober::{self, Family, IdPool, Prober};

/// How long a journey stays open after its probe ended, for events still in the ring buffer.
const GRACE: Duration = Duration::from_millis(25);

/// Journeys in flight: events gathered per (echo id, seq) while their probe is out.
#[derive(Default)]
struct InFlight {
    open: HashMap<(u16, u16), Vec<KernelEvent>>,
}

/// Keeps the kernel programs attached while any probe is in flight (`attach: in-flight`), or
/// all the time (`attach: always`). Between probes the node's own packets run no tracepkt
/// code at all; attaching a BTF tracepoint is a link creation, cheap enough per probe window.
struct Gate {
    kernel: Kernel,
    mode: AttachMode,
    in_flight: HashSet<u16>,
    clock: Arc<AttachClock>,
}

impl Gate {
    fn new(mut kernel: Kernel, mode: AttachMode, clock: Arc<AttachClock>) -> anyhow::Result<Self> {
        match mode {
            AttachMode::InFlight => kernel
                .detach_all()
                .context("detaching the programs until the first probe")?,
            AttachMode::Always => clock.start(),
        }
        Ok(Gate {
            kernel,
            mode,
            in_flight: HashSet::new(),
            clock,
        })
    }

    fn arm(&mut self, id: u16) -> anyhow::Result<()> {
        if self.mode == AttachMode::InFlight && self.in_flight.is_empty() {
            self.kernel.attach_all().context("attaching the programs for a probe")?;
            self.clock.start();
        }
        self.in_flight.insert(id);
        Ok(())
    }

    fn disarm(&mut self, id: u16) {
        if self.in_flight.remove(&id) && self.in_flight.is_empty() && self.mode == AttachMode::InFlight {
            if let Err(e) = self.kernel.detach_all() {
                warn!("detaching the programs between probes failed: {e}");
            }
            self.clock.stop();
        }
    }
}

/// What the target tasks share.
struct Ctx {
    prober: Prober,
    gate: Mutex<Gate>,
    registry: Mutex<ProbeRegistry>,
    inflight: Mutex<InFlight>,
    names: Arc<Mutex<Names>>,
    metrics: Arc<Metrics>,
    not_specified: Option<u32>,
}

impl Ctx {
    /// Opens a journey and lets the kernel follow the id.
    fn begin(&self, id: u16, seq: u16, tag: u32) -> anyhow::Result<()> {
        self.inflight.lock().unwrap().open.insert((id, seq), Vec::new());
        let mut registry = self.registry.lock().unwrap();
        registry
            .register(id, tag)
            .context("registering the probe id in the kernel")?;
        self.gate.lock().unwrap().arm(id)
    }

    /// Closes a journey: the kernel stops following the id, its events are handed back.
    fn end(&self, id: u16, seq: u16) -> Vec<KernelEvent> {
        self.forget(id);
        let mut inflight = self.inflight.lock().unwrap();
        inflight.open.remove(&(id, seq)).unwrap_or_default()
    }

    /// The id is no longer in flight (journey closed, or its target stopped mid-probe).
    fn forget(&self, id: u16) {
        self.registry.lock().unwrap().unregister(id);
        self.gate.lock().unwrap().disarm(id);
    }

    fn deliver(&self, events: &mut Vec<KernelEvent>) {
        let mut unmatched = 0;
        {
            let mut f = self.inflight.lock().unwrap();
            for ev in events.drain(..) {
                match f.open.get_mut(&(ev.id, ev.seq)) {
                    Some(v) => v.push(ev),
                    None => unmatched += 1,
                }
            }
        }
        if unmatched > 0 {
            self.metrics.unmatched_events(unmatched);
        }
    }
}

/// A running target.
struct Running {
    target: Target,
    tag: u32,
    id: u16,
    task: JoinHandle<()>,
}

fn labels_of(t: &Target) -> TargetLabels {
    TargetLabels {
        name: t.name.clone(),
        extra: t.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

fn family_of(v: IpVersion) -> Family {
    match v {
        IpVersion::Any => Family::Any,
        IpVersion::V4 => Family::V4,
        IpVersion::V6 => Family::V6,
    }
}

async fn probe_loop(ctx: Arc<Ctx>, t: Target, tag: u32, id: u16, start_after: Duration) {
    let labels = labels_of(&t);
    tokio::time::sleep(start_after).await;
    let mut ticker = tokio::time::interval(t.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq: u16 = 0;
    loop {
        ticker.tick().await;
        for _ in 0..t.count {
            let addr = match prober::resolve(&t.address, family_of(t.ip_version)).await {
                Ok(a) => a,
                Err(e) => {
                    warn!(target = %t.name, "{e}");
                    ctx.metrics.probe_error(tag, &labels, "resolve");
                    continue;
                }
            };
            if let Err(e) = ctx.begin(id, seq, tag) {
                warn!(target = %t.name, "{e:#}");
                ctx.end(id, seq);
                ctx.metrics.probe_error(tag, &labels, "send");
                continue;
            }
            ctx.metrics.probe_sent(tag, &labels);
            let outcome = ctx.prober.probe(addr, id, seq, t.timeout).await;
            tokio::time::sleep(GRACE).await;
            let events = ctx.end(id, seq);
            match &outcome {
                Outcome::SendError(e) => {
                    warn!(target = %t.name, %addr, "probe not sent: {e}");
                    ctx.metrics.probe_error(tag, &labels, "send");
                }
                Outcome::IcmpError(e) => {
                    tracing::debug!(target = %t.name, %addr, "{e}");
                    ctx.metrics.probe_error(tag, &labels, "icmp_error");
                }
                _ => {}
            }
            let journey = {
                let mut names = ctx.names.lock().unwrap();
                Journey::assemble(id, seq, events, outcome, &mut names, ctx.not_specified)
            };
            ctx.metrics.record(tag, &labels, &journey);
            seq = seq.wrapping_add(1);
        }
    }
}

/// The set of running targets, and what starting and stopping them takes.
struct Fleet {
    ctx: Arc<Ctx>,
    running: HashMap<String, Running>,
    ids: IdPool,
    next_tag: u32,
}

impl Fleet {
    fn start(&mut self, t: Target, tag: u32, id: u16, start_after: Duration) {
        self.ctx.metrics.add_target(tag, labels_of(&t));
        let task = tokio::spawn(probe_loop(self.ctx.clone(), t.clone(), tag, id, start_after));
        self.running.insert(
            t.name.clone(),
            Running {
                target: t,
                tag,
                id,
                task,
            },
        );
    }

    /// Brings the running set in line with `targets`, spreading new targets over their interval
    /// so they are not sent in a burst.
    fn apply(&mut self, targets: &[Target]) -> anyhow::Result<()> {
        let wanted: HashMap<&str, &Target> = targets.iter().map(|t| (t.name.as_str(), t)).collect();
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|n| !wanted.contains_key(n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            let r = self.running.remove(&name).expect("present");
            r.task.abort();
            self.ctx.forget(r.id);
            self.ids.give_back(r.id);
            self.ctx.metrics.remove_target(r.tag, true);
            info!(target = %name, "target removed");
        }
        let n = targets.len().max(1) as u32;
        for (i, t) in targets.iter().enumerate() {
            let start_after = t.interval * i as u32 / n;
            match self.running.get(&t.name) {
                Some(r) if r.target == *t => {}
                Some(_) => {
                    // Changed settings: same id and tag, so the kernel counters continue.
                    let r = self.running.remove(&t.name).expect("present");
                    r.task.abort();
                    self.ctx.forget(r.id);
                    self.ctx.metrics.remove_target(r.tag, false);
                    self.start(t.clone(), r.tag, r.id, start_after);
                    info!(target = %t.name, "target updated");
                }
                None => {
                    let id = self.ids.take().context("no free ICMP echo id")?;
                    self.next_tag += 1;
                    self.start(t.clone(), self.next_tag, id, start_after);
                    info!(target = %t.name, address = %t.address, interval = ?t.interval, "target added");
                }
            }
        }
        Ok(())
    }

    fn stop_all(&mut self) {
        for (_, r) in self.running.drain() {
            r.task.abort();
            self.ctx.forget(r.id);
        }
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let mut kernel = loader::load()?;
    for line in kernel.blind_spots() {
        warn!("not visible on this kernel: {line}");
    }
    let registry = ProbeRegistry::take(&mut kernel)?;
    let mut reader = EventReader::take(&mut kernel)?;
    let stats = KernelStats::take(&mut kernel)?;
    let counters = KernelCounters::take(&mut kernel)?;
    let names = Arc::new(Mutex::new(Names::new(kernel.drop_reasons.clone())));
    let clock = Arc::new(AttachClock::default());
    let metrics = Arc::new(Metrics::new(&kernel, counters, stats, names.clone(), clock.clone()));
    info!(attach = %config.attach, "programs attach {}", match config.attach {
        AttachMode::InFlight => "only while a probe is in flight",
        AttachMode::Always => "for the whole run",
    });
    let ctx = Arc::new(Ctx {
        prober: Prober::new()?,
        not_specified: kernel.not_specified_reason,
        gate: Mutex::new(Gate::new(kernel, config.attach, clock)?),
        registry: Mutex::new(registry),
        inflight: Mutex::new(InFlight::default()),
        names,
        metrics: metrics.clone(),
    });

    let pump_ctx = ctx.clone();
    let pump = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(256);
        loop {
            match reader.wait_and_drain(&mut batch).await {
                Ok(_) => pump_ctx.deliver(&mut batch),
                Err(e) => {
                    error!("reading the ring buffer failed: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (set `listen:` in the config)", config.listen))?;
    info!(listen = %config.listen, targets = config.targets.len(), "serving /metrics");

    let mut fleet = Fleet {
        ctx: ctx.clone(),
        running: HashMap::new(),
        ids: IdPool::new(),
        next_tag: 0,
    };
    fleet.apply(&config.targets)?;

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, http::router(metrics))
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });

    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let listen = config.listen;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                match Config::load(&args.config) {
                    Ok(new) => {
                        if new.listen != listen {
                            warn!(old = %listen, new = %new.listen, "a new listen address takes effect at restart");
                        }
                        match fleet.apply(&new.targets) {
                            Ok(()) => {
                                ctx.metrics.reload(true);
                                info!(targets = new.targets.len(), "configuration reloaded");
                            }
                            Err(e) => {
                                ctx.metrics.reload(false);
                                error!("configuration reload incomplete: {e:#}");
                            }
                        }
                    }
                    Err(e) => {
                        ctx.metrics.reload(false);
                        error!("configuration reload failed, the running configuration stays in force: {e:#}");
                    }
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    info!("shutting down");
    fleet.stop_all();
    pump.abort();
    let _ = stop_tx.send(());
    let _ = server.await;
    Ok(())
}
