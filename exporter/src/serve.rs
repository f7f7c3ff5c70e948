//! `tracepkt serve`: probes every configured target on its schedule through the engine and
//! serves what the journeys showed on `/metrics`.
//!
//! Each target runs in its own task with an echo id of its own. SIGHUP reloads the config:
//! targets that stay keep their tag, so their kernel counters continue.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use probe_common::Mechanism;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::cli::ServeArgs;
use crate::config::{AttachMode, Config, Origin, Probe, Target};
use crate::engine::{self, Engine, Lease, ProbeKind, Spec};
use crate::export::board::{Board, JourneyView, TargetView};
use crate::export::health::{Health, Heartbeat};
use crate::export::labels::TargetLabels;
use crate::export::metrics::ErrorReason;
use crate::export::otlp::{self, SpanCounts, TargetInfo, Tracer};
use crate::export::prometheus::Metrics;
use crate::export::web::Web;
use crate::export::{http, server};
use crate::kernel::loader::{Foreign, Mechanisms, Sizing};
use crate::pods::{self, Locator};
use crate::prober::{self, Outcome};
use crate::{dns, expect};

/// A running target.
struct Running {
    target: Target,
    tag: u32,
    task: JoinHandle<()>,
}

fn labels_of(t: &Target) -> TargetLabels {
    TargetLabels {
        target: t.name.clone(),
        extra: t.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

/// What a target's task needs.
struct Probing {
    engine: Engine,
    metrics: Arc<Metrics>,
    board: Arc<Board>,
    tracer: Option<Arc<Tracer>>,
    target: Target,
    tag: u32,
    lease: Lease,
    heartbeat: Heartbeat,
}

/// The longest a healthy round of `t` takes, start to start: its interval, or all its probes
/// timing out one after the other.
fn round_period(t: &Target) -> Duration {
    let probes = t.count * t.sizes.len().max(1) as u32;
    t.interval.max(t.timeout * probes)
}

async fn probe_loop(p: Probing, start_after: Duration) {
    let Probing {
        engine,
        metrics,
        board,
        tracer,
        target: t,
        tag,
        lease,
        heartbeat,
    } = p;
    let labels = labels_of(&t);
    let extra: Vec<(String, String)> = t.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let info = TargetInfo {
        name: &t.name,
        address: &t.address,
        port: t.probe.port(),
        labels: &extra,
    };
    let kind = match &t.probe {
        Probe::Icmp => ProbeKind::Icmp,
        Probe::Tcp { port } => ProbeKind::Tcp { port: *port },
        Probe::Udp { port, payload } => ProbeKind::Udp {
            port: *port,
            payload: payload.clone(),
        },
        // Made for each probe: each query has an id of its own.
        Probe::Dns { server, .. } => ProbeKind::Udp {
            port: server.map_or(53, |s| s.port()),
            payload: None,
        },
    };
    // A pod is looked up again at each probe: it may be replaced, or moved to another node.
    let mut pod = match &t.from {
        Some(Origin::Pod(name)) => Some(Locator::new(pods::Roots::from_env(), name.clone())),
        _ => None,
    };
    tokio::time::sleep(start_after).await;
    let mut ticker = tokio::time::interval(t.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq: u16 = 0;
    // One probe of each size per round and per `count`; an unsized target's one probe is
    // `None`.
    let sizes: Vec<Option<u16>> = if t.sizes.is_empty() {
        vec![None]
    } else {
        t.sizes.iter().copied().map(Some).collect()
    };
    let mut dns_ids = dns::QueryIds::new();
    // The last DNS answer's shortcoming, if any: part of what `expect:` checks.
    let mut dns_violation: Option<String> = None;
    // Logged when they change, not once per probe.
    let mut last_problem: Option<String> = None;
    let mut last_violation: Option<String> = None;
    let mut report = |problem: Option<String>| {
        if problem != last_problem {
            match &problem {
                Some(p) => warn!(target = %t.name, "{p}"),
                None if last_problem.is_some() => info!(target = %t.name, "probing works again"),
                None => {}
            }
            last_problem = problem;
        }
    };
    loop {
        ticker.tick().await;
        let mut answered: Vec<(u16, bool)> = Vec::new();
        for size in (0..t.count).flat_map(|_| sizes.iter().copied()) {
            let from = match (&t.from, &mut pod) {
                (Some(Origin::Pod(_)), Some(locator)) => match locator.netns() {
                    Ok(path) => Some(path),
                    Err(e) => {
                        report(Some(format!("probe not sent: {e}")));
                        metrics.probe_error(tag, &labels, ErrorReason::send);
                        board.record(&t.name, JourneyView::not_sent("send_error", e));
                        continue;
                    }
                },
                (Some(Origin::Netns(path)), _) => Some(path.clone()),
                _ => None,
            };
            let mut kind = kind.clone();
            let (addr, dns_id) = match &t.probe {
                Probe::Dns { query, server } => {
                    let server = match server {
                        Some(s) => Ok(*s),
                        None => dns::resolver_of(from.as_deref()),
                    };
                    let server = match server {
                        Ok(s) if t.ip_version.accepts(s.ip()) => s,
                        Ok(s) => {
                            let e = format!("the resolver {s} is not of ip_version {}", t.ip_version);
                            report(Some(e.clone()));
                            metrics.probe_error(tag, &labels, ErrorReason::resolve);
                            board.record(&t.name, JourneyView::unresolved(e));
                            continue;
                        }
                        Err(e) => {
                            report(Some(format!("no DNS server to ask: {e}")));
                            metrics.probe_error(tag, &labels, ErrorReason::resolve);
                            board.record(&t.name, JourneyView::unresolved(e));
                            continue;
                        }
                    };
                    let id = dns_ids.next();
                    kind = ProbeKind::Udp {
                        port: server.port(),
                        payload: Some(query.encode(id).expect("checked when the config was read")),
                    };
                    (server.ip(), Some(id))
                }
                _ => match prober::resolve(&t.address, t.ip_version).await {
                    Ok(a) => (a, None),
                    Err(e) => {
                        report(Some(e.to_string()));
                        metrics.probe_error(tag, &labels, ErrorReason::resolve);
                        board.record(&t.name, JourneyView::unresolved(e.to_string()));
                        continue;
                    }
                },
            };
            metrics.probe_sent(tag, &labels);
            let spec = Spec {
                addr,
                kind,
                size,
                dont_fragment: t.dont_fragment,
                from,
                timeout: t.timeout,
            };
            let mut journey = engine.probe(&lease, seq, &spec).await;
            if let (Probe::Dns { query, .. }, Some(id)) = (&t.probe, dns_id) {
                let expect = t.expect.as_ref().and_then(|e| e.answer.as_ref());
                match journey.answer.as_deref().map(|a| dns::DnsAnswer::decode(a, id, query)) {
                    Some(Ok(answer)) => {
                        let wrong = answer.violation(expect);
                        metrics.dns_answer(tag, &labels, &answer.rcode, wrong.is_none(), answer.ttl);
                        dns_violation = wrong.map(|w| format!("DNS {query}: {w}"));
                    }
                    Some(Err(e)) => {
                        metrics.dns_answer(tag, &labels, "OTHER", false, None);
                        dns_violation = Some(format!("DNS {query}: {e}"));
                    }
                    None => {
                        metrics.dns_unanswered(tag, &labels);
                        dns_violation = None;
                    }
                }
            }
            let error = match &journey.outcome {
                Outcome::SendError(e) => {
                    report(Some(format!("probe to {addr} not sent: {e}")));
                    Some(ErrorReason::send)
                }
                Outcome::IcmpError(e) => {
                    tracing::debug!(target = %t.name, %addr, "{e}");
                    Some(ErrorReason::icmp_error)
                }
                Outcome::Refused => Some(ErrorReason::refused),
                Outcome::Unreachable(_) => Some(ErrorReason::unreachable),
                Outcome::Timeout => Some(ErrorReason::timeout),
                Outcome::Reply { .. } => None,
            };
            if !matches!(journey.outcome, Outcome::SendError(_)) {
                report(None);
            }
            if let Some(e) = error {
                metrics.probe_error(tag, &labels, e);
            }
            if let Some(expect) = &t.expect {
                let path = expect::violation(expect, &journey);
                if expect.has_path() {
                    metrics.path_expected(tag, &labels, path.is_none());
                }
                let on_path = path.is_some();
                journey.violation = path.or_else(|| dns_violation.take());
                if journey.violation != last_violation {
                    match &journey.violation {
                        Some(v) if on_path => warn!(target = %t.name, "path not as expected: {v}"),
                        Some(v) => warn!(target = %t.name, "not as expected: {v}"),
                        None => info!(target = %t.name, "as expected again"),
                    }
                    last_violation = journey.violation.clone();
                }
            } else if let Some(v) = dns_violation.take() {
                // Without expect:, a DNS error answer still says what went wrong on the page.
                journey.violation = Some(v);
            }
            let trace = tracer.as_ref().and_then(|tr| tr.record(&info, Some(addr), &journey));
            metrics.record(tag, &labels, &journey, trace, size);
            if let Some(size) = size {
                answered.push((size, journey.replied()));
            }
            board.record(&t.name, JourneyView::of(&journey, trace));
            seq = seq.wrapping_add(1);
        }
        if !t.sizes.is_empty() {
            metrics.record_round(tag, &labels, &answered);
        }
        heartbeat.beat();
    }
}

/// The set of running targets, and what starting and stopping them takes.
struct Fleet {
    engine: Engine,
    metrics: Arc<Metrics>,
    board: Arc<Board>,
    tracer: Option<Arc<Tracer>>,
    health: Arc<Health>,
    running: HashMap<String, Running>,
    next_tag: u32,
}

impl Fleet {
    fn start(&mut self, t: Target, tag: u32, start_after: Duration) -> anyhow::Result<()> {
        let lease = self.engine.lease(tag).context("no free ICMP echo id")?;
        self.metrics.add_target(tag, labels_of(&t));
        if !t.sizes.is_empty() {
            self.metrics.set_sizes(tag, &labels_of(&t), &t.sizes);
        }
        self.board.set_target(TargetView::of(&t));
        let probing = Probing {
            engine: self.engine.clone(),
            metrics: self.metrics.clone(),
            board: self.board.clone(),
            tracer: self.tracer.clone(),
            target: t.clone(),
            tag,
            lease,
            heartbeat: self.health.register(&t.name, round_period(&t), start_after),
        };
        let task = tokio::spawn(probe_loop(probing, start_after));
        self.running.insert(t.name.clone(), Running { target: t, tag, task });
        Ok(())
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

    fn stop_all(&mut self) {
        for (_, r) in self.running.drain() {
            r.task.abort();
        }
    }
}

/// Runs the exporter. `mechanisms` from the command line, when given, override the config's.
pub async fn run(args: ServeArgs, mechanisms: Vec<Mechanism>) -> anyhow::Result<()> {
    let mut config = Config::load(&args.config)?;
    if !config.discovery.is_empty() {
        warn!("discovery: is checked, but this build does not run its sources: only targets: are probed");
    }
    if let Some(ip) = args.listen_address {
        config.listen.set_ip(ip);
    }
    let web = args.web_config.as_deref().map(Web::load).transpose()?;
    let health = Health::new();
    health.watch_panics();
    let mechanisms = if mechanisms.is_empty() {
        config.mechanisms.clone()
    } else {
        mechanisms
    };
    let (engine, telemetry, remote) = Engine::start(engine::Options {
        attach: config.attach,
        sizing: Sizing {
            events: config.ring_buffer_bytes.unwrap_or(Sizing::for_targets(0).events),
            ..Sizing::for_targets(config.targets.len())
        },
        mechanisms: Mechanisms::only(mechanisms),
        foreign: config.cross_node.map(|c| Foreign {
            budget: c.budget,
            tunnels: c.tunnels,
        }),
    })?;
    for line in telemetry.blind_spots() {
        warn!("not visible on this kernel: {line}");
    }
    let otlp =
        otlp::Settings::resolve(config.otlp.as_ref(), |k| std::env::var(k).ok()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let span_counts = SpanCounts::default();
    let tracer = otlp::start(otlp, &span_counts).await?;
    let metrics = Arc::new(Metrics::new(
        telemetry,
        &config.rtt_buckets,
        tracer.as_ref().map(|_| &span_counts),
    ));
    info!(attach = %config.attach, "programs attach {}", match config.attach {
        AttachMode::InFlight => "only while a probe is in flight",
        AttachMode::Always => "for the whole run",
    });
    if let (Some(c), Some(mut remote)) = (config.cross_node, remote) {
        info!(
            budget = c.budget,
            tunnels = c.tunnels,
            "following other nodes' probes across this node{}",
            if tracer.is_some() {
                ", as spans in their senders' traces"
            } else {
                " (no OTLP endpoint: counted only)"
            }
        );
        let (metrics, tracer) = (metrics.clone(), tracer.clone());
        // Ends when the engine stops handing journeys over.
        tokio::spawn(async move {
            while let Some(j) = remote.recv().await {
                metrics.remote_journey(&j);
                if let Some(t) = &tracer {
                    t.record_remote(&j);
                }
            }
        });
    }

    let listener = std::net::TcpListener::bind(config.listen)
        .with_context(|| format!("cannot listen on {} (set `listen:` in the config)", config.listen))?;
    info!(
        listen = %config.listen,
        targets = config.targets.len(),
        tls = web.as_ref().is_some_and(|w| w.tls_on()),
        basic_auth = web.as_ref().is_some_and(|w| w.basic_auth_on()),
        "serving /metrics"
    );

    let board = Arc::new(Board::new(config.otlp.as_ref().and_then(|o| o.trace_url.clone())));
    let mut fleet = Fleet {
        engine: engine.clone(),
        metrics: metrics.clone(),
        board: board.clone(),
        tracer: tracer.clone(),
        health: health.clone(),
        running: HashMap::new(),
        next_tag: 0,
    };
    fleet.apply(&config.targets)?;

    let server::Server {
        task: mut server,
        handle,
    } = server::serve(listener, http::router(metrics.clone(), board.clone()), health, web)?;

    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let listen = config.listen;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                match Config::load(&args.config) {
                    Ok(new) => {
                        let mut new_listen = new.listen;
                        if let Some(ip) = args.listen_address {
                            new_listen.set_ip(ip);
                        }
                        if new_listen != listen {
                            warn!(old = %listen, new = %new_listen, "a new listen address takes effect at restart");
                        }
                        if new.rtt_buckets != config.rtt_buckets
                            || new.mechanisms != config.mechanisms
                            || new.otlp != config.otlp
                            || new.cross_node != config.cross_node
                            || new.attach != config.attach
                        {
                            warn!("new RTT buckets, attach mechanisms or mode, OTLP or cross_node settings take effect at restart");
                        }
                        match fleet.apply(&new.targets) {
                            Ok(()) => {
                                metrics.reload(true);
                                info!(targets = new.targets.len(), "configuration reloaded");
                            }
                            Err(e) => {
                                metrics.reload(false);
                                error!("configuration reload incomplete: {e:#}");
                            }
                        }
                    }
                    Err(e) => {
                        metrics.reload(false);
                        error!("configuration reload failed, the running configuration stays in force: {e:#}");
                    }
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            ended = &mut server => {
                // Probing on while nothing can be scraped would look healthy from the node and
                // be blind from outside: stop, and say why.
                let why = match ended {
                    Ok(Ok(())) => "it ended".to_owned(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                error!("the HTTP server on {listen} stopped ({why}); exiting");
                stop(fleet, &engine, tracer.as_deref(), &handle).await;
                anyhow::bail!("the HTTP server on {listen} stopped: {why}");
            }
        }
    }
    info!("shutting down");
    stop(fleet, &engine, tracer.as_deref(), &handle).await;
    if tokio::time::timeout(SHUTDOWN_GRACE, server).await.is_err() {
        warn!("the HTTP server did not stop in {SHUTDOWN_GRACE:?}");
    }
    Ok(())
}

/// How long each part of shutting down may take: open scrapes and span exports get this long
/// to finish, then they are cut, so that SIGTERM always ends tracepkt promptly.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

async fn stop(
    mut fleet: Fleet,
    engine: &Engine,
    tracer: Option<&Tracer>,
    http: &axum_server::Handle<std::net::SocketAddr>,
) {
    http.graceful_shutdown(Some(SHUTDOWN_GRACE));
    fleet.stop_all();
    engine.shutdown();
    // Bounded by the tracer itself.
    if let Some(t) = tracer {
        t.shutdown().await;
    }
}
