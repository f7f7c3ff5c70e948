//! The probe engine: the one owner of the kernel programs, the probe registry, the ring-buffer
//! reader, the attach gate, the echo ids and the names. It answers "probe this address" with
//! a [`Journey`], for any number of probes at once; `trace` and `serve` are front-ends on it.
//!
//! A probe's life: take an echo id ([`Engine::lease`]); for each probe, register the id in the
//! kernel and open a journey ([`Flight`]), attach the programs if none were, send and wait,
//! give the ring buffer a moment for the last events, close the journey and assemble it.
//! Shared state sits behind short-lived locks, never held across an await.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use probe_common::payload::{self, TraceContext};
use probe_common::{DropKey, HopKey, Proto, VerdictKey, map, probe_key};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::{error, warn};

use crate::clock;
use crate::config::AttachMode;
use crate::journey::Journey;
use crate::kernel::events::KernelEvent;
use crate::kernel::loader::{self, Attach, DropReasons, Foreign, Kernel, Mechanisms, Sizing};
use crate::kernel::maps::{Counters, EventReader, KernelStats, ProbeRegistry};
use crate::names::Names;
use crate::pmtu;
use crate::prober::{self, Fragmentation, IdPool, Outcome, Prober};
use crate::remote::{self, Filed, Gatherer, RemoteJourney};
use crate::sockets;

/// How long a journey stays open after its probe ended, for events still in the ring buffer.
const GRACE: Duration = Duration::from_millis(25);

/// Cumulative time the kernel programs have been attached: with `attach: in-flight`, the
/// duty cycle is its rate.
#[derive(Default)]
pub struct AttachClock {
    inner: Mutex<(Duration, Option<Instant>)>,
}

impl AttachClock {
    fn start(&self) {
        self.inner.lock().unwrap().1.get_or_insert_with(Instant::now);
    }

    fn stop(&self) {
        let mut g = self.inner.lock().unwrap();
        if let Some(since) = g.1.take() {
            g.0 += since.elapsed();
        }
    }

    pub fn total(&self) -> Duration {
        let g = self.inner.lock().unwrap();
        g.0 + g.1.map(|s| s.elapsed()).unwrap_or_default()
    }
}

/// Keeps the tracepoint programs attached while any probe is in flight (`attach: in-flight`),
/// or all the time (`attach: always`): between probes the node's own packets cross no
/// tracepkt code at the interface and drop hooks. Creating a tracepoint link is cheap enough
/// per probe window. Kprobes (netfilter) stay attached for the whole run: see `Link::gated`.
struct Gate {
    kernel: Kernel,
    mode: AttachMode,
    in_flight: HashSet<JourneyKey>,
    clock: Arc<AttachClock>,
}

impl Gate {
    fn new(mut kernel: Kernel, mode: AttachMode, clock: Arc<AttachClock>) -> anyhow::Result<Self> {
        match mode {
            AttachMode::InFlight => kernel
                .detach_gated()
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

    fn arm(&mut self, probe: JourneyKey) -> anyhow::Result<()> {
        if self.mode == AttachMode::InFlight && self.in_flight.is_empty() {
            self.kernel
                .attach_gated()
                .context("attaching the programs for a probe")?;
            self.clock.start();
        }
        self.in_flight.insert(probe);
        Ok(())
    }

    fn disarm(&mut self, probe: JourneyKey) {
        if self.in_flight.remove(&probe) && self.in_flight.is_empty() && self.mode == AttachMode::InFlight {
            if let Err(e) = self.kernel.detach_gated() {
                warn!("detaching the programs between probes failed: {e}");
            }
            self.clock.stop();
        }
    }
}

/// What a journey's events are filed under: the protocol, what names the probe within it (the
/// echo id, or the bound port), and the echo sequence (0 for TCP and UDP).
type JourneyKey = (Proto, u16, u16);

/// A journey being gathered: the trace its probe carries, if its packets carry one (TCP
/// segments carry no payload), and its events so far.
struct Open {
    trace_id: Option<[u8; 16]>,
    events: Vec<KernelEvent>,
}

/// What changes while probes are in flight. One lock, taken briefly.
struct State {
    registry: ProbeRegistry,
    gate: Gate,
    /// Journeys being gathered, per (echo id, seq) while the probe is out.
    open: HashMap<JourneyKey, Open>,
    ids: IdPool,
}

struct Shared {
    prober: Prober,
    ids: RandomIdGenerator,
    state: Mutex<State>,
    names: Arc<Mutex<Names>>,
    counts: Arc<EngineCounts>,
    /// Read around each journey: events the kernel could not queue while it was out.
    stats: Arc<KernelStats>,
    /// The pump's task, and the one that hands other nodes' probes over.
    tasks: Mutex<Vec<AbortHandle>>,
    /// Other nodes' probes being gathered, while recognising them is on.
    remote: Option<Mutex<Gatherer>>,
}

/// The engine's own counts of what did not fit anywhere: never hidden.
#[derive(Default)]
pub struct EngineCounts {
    /// Events that arrived after their journey closed.
    pub unmatched: AtomicU64,
    /// Ring-buffer records that could not be decoded.
    pub undecodable: Arc<AtomicU64>,
    /// Events with the echo id and sequence of a probe in flight but another trace in their
    /// payload: another tracepkt's probe, or a forged one.
    pub foreign_trace: AtomicU64,
    /// Other nodes' probe events not kept (too many probes or events at once), and their
    /// journeys not handed over (nobody reading them fast enough).
    pub remote_dropped: AtomicU64,
}

/// What the engine hands to the metrics: the attach report and handles on the kernel's
/// counters and its own.
pub struct Telemetry {
    pub report: Vec<Attach>,
    pub release: String,
    pub drop_reasons: DropReasons,
    pub hops: Counters<HopKey>,
    pub verdicts: Counters<VerdictKey>,
    pub drops: Counters<DropKey>,
    pub stats: Arc<KernelStats>,
    pub clock: Arc<AttachClock>,
    pub names: Arc<Mutex<Names>>,
    pub counts: Arc<EngineCounts>,
}

impl Telemetry {
    /// Kinds of hop no hook of which attached: what cannot be seen on this kernel.
    pub fn blind_spots(&self) -> Vec<String> {
        loader::blind_spots(&self.report)
    }
}

/// What to send, where from and to, and how long to wait for its answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub addr: IpAddr,
    pub kind: ProbeKind,
    /// ICMP: the probe's IP length (`size:`), its payload padded with zeros; `None`: the
    /// smallest probe, with nothing after the payload.
    pub size: Option<u16>,
    /// ICMP: send with don't-fragment, past any path MTU the kernel has learned.
    pub dont_fragment: bool,
    /// The network namespace the probe starts in (a file such as `/run/netns/NAME`); `None`:
    /// tracepkt's own.
    pub from: Option<PathBuf>,
    pub timeout: Duration,
}

/// What a probe is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    /// An ICMP echo (ICMPv6 for an IPv6 address).
    Icmp,
    /// A TCP connection: answered by SYN-ACK, refused by RST.
    Tcp { port: u16 },
    /// A UDP datagram: answered by any datagram back, refused by ICMP port unreachable. The
    /// payload is the probe's own (32 bytes with its trace context), or for port 53 a DNS
    /// query, unless one is given.
    Udp { port: u16, payload: Option<Vec<u8>> },
}

impl Spec {
    pub fn proto(&self) -> Proto {
        match self.kind {
            ProbeKind::Icmp => Proto::Icmp,
            ProbeKind::Tcp { .. } => Proto::Tcp,
            ProbeKind::Udp { .. } => Proto::Udp,
        }
    }

    /// What the probe's socket does about fragmentation: the kernel's default for a plain
    /// probe; a sized one is either never fragmented or may be anywhere, as its target says.
    fn fragmentation(&self) -> Fragmentation {
        match (self.dont_fragment, self.size) {
            (true, _) => Fragmentation::Never,
            (false, Some(_)) => Fragmentation::Allowed,
            (false, None) => Fragmentation::Default,
        }
    }

    pub fn port(&self) -> u16 {
        match self.kind {
            ProbeKind::Icmp => 0,
            ProbeKind::Tcp { port } | ProbeKind::Udp { port, .. } => port,
        }
    }
}

/// How the engine runs.
pub struct Options {
    pub attach: AttachMode,
    pub sizing: Sizing,
    pub mechanisms: Mechanisms,
    /// Recognise other nodes' probes; needs `attach: always`.
    pub foreign: Option<Foreign>,
}

/// The engine. Cheap to clone: clones share everything.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

/// An echo id the engine owns for one user (a target, a trace) until dropped. `tag` names the
/// user in the kernel's counters, for every protocol it probes with.
pub struct Lease {
    id: u16,
    tag: u32,
    shared: Arc<Shared>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut st = self.shared.state.lock().unwrap();
        st.registry.unregister(probe_key(Proto::Icmp, self.id));
        st.ids.give_back(self.id);
    }
}

/// One probe in flight: registered in the kernel, programs armed, journey open. Dropping it,
/// normally or because its task was cancelled, undoes all three.
struct Flight<'a> {
    shared: &'a Shared,
    key: JourneyKey,
    /// A sized probe's IP length, let past the programs' first test while it is in flight.
    len: Option<u16>,
    /// The kernel's count of lost events when the probe went out.
    lost_before: u64,
}

/// What a probe brought back, for `Journey::assemble`.
struct Gathered {
    key: JourneyKey,
    outcome: Outcome,
    events: Vec<KernelEvent>,
    /// Events lost to a full ring buffer while the probe was out (its own or others').
    lost: u64,
    /// A UDP probe's answer, as it came.
    answer: Option<Vec<u8>>,
    sent_ns: u64,
    ended_ns: u64,
}

impl<'a> Flight<'a> {
    fn begin(
        shared: &'a Shared,
        key: JourneyKey,
        tag: u32,
        trace_id: Option<[u8; 16]>,
        len: Option<u16>,
    ) -> anyhow::Result<Self> {
        let (proto, id, _) = key;
        let mut st = shared.state.lock().unwrap();
        if let Some(len) = len {
            st.registry
                .allow_length(len)
                .context("letting the probe's size past the kernel's filter")?;
        }
        // Each step undone if a later one fails: the length, then the registration.
        let registered = st
            .registry
            .register(probe_key(proto, id), tag)
            .context("registering the probe in the kernel")
            .and_then(|()| {
                st.gate
                    .arm(key)
                    .inspect_err(|_| st.registry.unregister(probe_key(proto, id)))
            });
        if let Err(e) = registered {
            if let Some(len) = len {
                st.registry.release_length(len);
            }
            return Err(e);
        }
        st.open.insert(
            key,
            Open {
                trace_id,
                events: Vec::new(),
            },
        );
        drop(st);
        let lost_before = shared.stats.events_lost().unwrap_or(0);
        Ok(Flight {
            shared,
            key,
            len,
            lost_before,
        })
    }

    /// Closes the journey and hands back its events, and how many events the kernel lost
    /// meanwhile.
    fn finish(self) -> (Vec<KernelEvent>, u64) {
        let lost = self
            .shared
            .stats
            .events_lost()
            .map_or(0, |now| now.saturating_sub(self.lost_before));
        let mut st = self.shared.state.lock().unwrap();
        (st.open.remove(&self.key).map(|o| o.events).unwrap_or_default(), lost)
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        let (proto, id, _) = self.key;
        let mut st = self.shared.state.lock().unwrap();
        st.open.remove(&self.key);
        // An echo id stays leased; the kernel stops following it until its next probe.
        st.registry.unregister(probe_key(proto, id));
        if let Some(len) = self.len {
            st.registry.release_length(len);
        }
        st.gate.disarm(self.key);
    }
}

impl Engine {
    /// Loads and attaches the kernel programs, opens the probe sockets and starts reading the
    /// ring buffer.
    /// With `opts.foreign`, other nodes' probes come out of the returned channel.
    pub fn start(opts: Options) -> anyhow::Result<(Engine, Telemetry, Option<mpsc::Receiver<RemoteJourney>>)> {
        anyhow::ensure!(
            opts.foreign.is_none() || opts.attach == AttachMode::Always,
            "recognising other nodes' probes needs the programs attached all the time"
        );
        let mut kernel = loader::load(opts.sizing, &opts.mechanisms, opts.foreign)?;
        let mut registry = ProbeRegistry::take(&mut kernel)?;
        if let Some(f) = opts.foreign {
            registry
                .listen(f.tunnels)
                .context("letting the programs look for other nodes' probes")?;
        }
        let reader = EventReader::take(&mut kernel)?;
        let counts = Arc::new(EngineCounts {
            unmatched: AtomicU64::new(0),
            undecodable: reader.undecodable(),
            foreign_trace: AtomicU64::new(0),
            remote_dropped: AtomicU64::new(0),
        });
        let clock = Arc::new(AttachClock::default());
        let names = Arc::new(Mutex::new(Names::new(kernel.drop_reasons.clone())));
        let stats = Arc::new(KernelStats::take(&mut kernel)?);
        let telemetry = Telemetry {
            report: kernel.report.clone(),
            release: kernel.release.clone(),
            drop_reasons: kernel.drop_reasons.clone(),
            hops: Counters::take(&mut kernel, map::HOPS)?,
            verdicts: Counters::take(&mut kernel, map::VERDICTS)?,
            drops: Counters::take(&mut kernel, map::DROPS)?,
            stats: stats.clone(),
            clock: clock.clone(),
            names: names.clone(),
            counts: counts.clone(),
        };
        let shared = Arc::new(Shared {
            prober: Prober::new()?,
            ids: RandomIdGenerator::default(),
            state: Mutex::new(State {
                registry,
                gate: Gate::new(kernel, opts.attach, clock)?,
                open: HashMap::new(),
                ids: IdPool::new(),
            }),
            names,
            counts,
            stats,
            tasks: Mutex::new(Vec::new()),
            remote: opts.foreign.map(|_| Mutex::new(Gatherer::default())),
        });
        let pump = tokio::spawn(pump(Arc::downgrade(&shared), reader));
        shared.tasks.lock().unwrap().push(pump.abort_handle());
        let remote = opts.foreign.map(|_| {
            let (tx, rx) = mpsc::channel(REMOTE_QUEUE);
            let task = tokio::spawn(hand_over(Arc::downgrade(&shared), tx));
            shared.tasks.lock().unwrap().push(task.abort_handle());
            rx
        });
        Ok((Engine { shared }, telemetry, remote))
    }

    /// An echo id for `tag`'s probes, or `None` when all 65,535 are taken.
    pub fn lease(&self, tag: u32) -> Option<Lease> {
        let id = self.shared.state.lock().unwrap().ids.take()?;
        Some(Lease {
            id,
            tag,
            shared: self.shared.clone(),
        })
    }

    /// Sends probe `seq` of `lease` as `spec` says and follows it until its answer or its
    /// timeout. An ICMP probe carries the lease's echo id; a TCP or UDP probe, the port its
    /// socket was bound to. Every probe gets a new trace context (a random trace id, and the id
    /// its root span will have), carried in its payload where it has one, and handed back in
    /// the journey.
    pub async fn probe(&self, lease: &Lease, seq: u16, spec: &Spec) -> Journey {
        let shared = &*self.shared;
        let trace = TraceContext {
            trace_id: shared.ids.new_trace_id().to_bytes(),
            parent_span_id: shared.ids.new_span_id().to_bytes(),
            flags: payload::FLAG_SAMPLED,
        };
        if let Some(remote) = &shared.remote {
            remote.lock().unwrap().own(trace.trace_id);
        }
        let g = match self.send(lease, seq, spec, &trace).await {
            Ok(done) => done,
            Err(e) => Gathered {
                key: (spec.proto(), lease.id, seq),
                outcome: Outcome::SendError(format!("{e:#}")),
                events: Vec::new(),
                lost: 0,
                answer: None,
                sent_ns: 0,
                ended_ns: 0,
            },
        };
        let mut journey = {
            let mut names = shared.names.lock().unwrap();
            Journey::assemble(g.key, g.events, g.outcome, &mut names)
        };
        journey.trace = trace;
        journey.sent_ns = g.sent_ns;
        journey.ended_ns = g.ended_ns;
        journey.events_lost = g.lost;
        journey.answer = g.answer;
        journey
    }

    async fn send(&self, lease: &Lease, seq: u16, spec: &Spec, trace: &TraceContext) -> anyhow::Result<Gathered> {
        let shared = &*self.shared;
        let payload = trace.encode();
        let target = SocketAddr::new(spec.addr, spec.port());
        match &spec.kind {
            ProbeKind::Icmp => {
                let key = (Proto::Icmp, lease.id, seq);
                let data = pmtu::padded(&payload, spec.addr, spec.size)?;
                let fragmentation = spec.fragmentation();
                // The sockets first: a namespace that is gone fails here, before anything is
                // registered.
                let client = match &spec.from {
                    None => None,
                    Some(ns) => {
                        let c = sockets::icmp_client(ns, spec.addr).await?;
                        fragmentation.apply(&c, spec.addr)?;
                        Some(c)
                    }
                };
                let too_big = match fragmentation {
                    Fragmentation::Never => Some(pmtu::TooBig::listen(spec.from.as_ref(), spec.addr).await?),
                    _ => None,
                };
                let flight = Flight::begin(shared, key, lease.tag, Some(trace.trace_id), spec.size)?;
                let sent_ns = clock::monotonic_ns();
                let mut outcome = match &client {
                    None => {
                        shared
                            .prober
                            .probe(spec.addr, lease.id, seq, &data, spec.timeout, fragmentation)
                            .await
                    }
                    Some(c) => prober::ping(c, spec.addr, lease.id, seq, &data, spec.timeout).await,
                };
                if let (Outcome::IcmpError(e), Some(l)) = (&mut outcome, &too_big)
                    && let Some(mtu) = l.mtu_named(spec.addr, lease.id, seq)
                {
                    e.push_str(&format!(": next-hop MTU {mtu}"));
                }
                Ok(self.finish(flight, key, outcome, sent_ns).await)
            }
            ProbeKind::Tcp { .. } => {
                let socket = sockets::tcp_socket(spec.from.as_ref(), spec.addr).await?;
                let key = (Proto::Tcp, socket.port, 0);
                let flight = Flight::begin(shared, key, lease.tag, None, None)?;
                let sent_ns = clock::monotonic_ns();
                let outcome = socket.connect(target, spec.timeout).await;
                Ok(self.finish(flight, key, outcome, sent_ns).await)
            }
            ProbeKind::Udp { payload: own, .. } => {
                let socket = sockets::udp_socket(spec.from.as_ref(), spec.addr).await?;
                let key = (Proto::Udp, socket.port, 0);
                let carried = (own.is_none() && spec.port() != 53).then_some(trace.trace_id);
                let flight = Flight::begin(shared, key, lease.tag, carried, None)?;
                let sent_ns = clock::monotonic_ns();
                let dns;
                let data: &[u8] = match own {
                    Some(own) => own,
                    None if spec.port() == 53 => {
                        dns = sockets::dns_query();
                        &dns
                    }
                    None => &payload,
                };
                let (outcome, answer) = socket.exchange(target, data, spec.timeout).await;
                let mut gathered = self.finish(flight, key, outcome, sent_ns).await;
                gathered.answer = answer;
                Ok(gathered)
            }
        }
    }

    /// Waits a moment for the last events, then closes the journey.
    async fn finish(&self, flight: Flight<'_>, key: JourneyKey, outcome: Outcome, sent_ns: u64) -> Gathered {
        let ended_ns = clock::monotonic_ns();
        tokio::time::sleep(GRACE).await;
        let (events, lost) = flight.finish();
        Gathered {
            key,
            outcome,
            events,
            lost,
            answer: None,
            sent_ns,
            ended_ns,
        }
    }

    /// Stops reading events and detaches every program.
    pub fn shutdown(&self) {
        for task in self.shared.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
        if let Err(e) = self.shared.state.lock().unwrap().gate.kernel.detach_all() {
            warn!("detaching the programs at exit failed: {e}");
        }
    }
}

/// Moves ring-buffer events into the journeys in flight. Holds the engine weakly, so it ends
/// when the engine does.
async fn pump(shared: std::sync::Weak<Shared>, mut reader: EventReader) {
    let mut batch = Vec::with_capacity(256);
    loop {
        if let Err(e) = reader.wait_and_drain(&mut batch).await {
            error!("reading the ring buffer failed: {e}");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let (mut unmatched, mut foreign, mut remote_dropped) = (0, 0, 0);
        if let Some(remote) = &shared.remote
            && batch.iter().any(|e| e.foreign)
        {
            let now = Instant::now();
            let mut g = remote.lock().unwrap();
            for ev in batch.extract_if(.., |e| e.foreign) {
                match g.add(ev, now) {
                    Filed::Kept => {}
                    Filed::Full => remote_dropped += 1,
                    Filed::Own => unmatched += 1,
                }
            }
        }
        {
            let mut st = shared.state.lock().unwrap();
            for ev in batch.drain(..) {
                match st.open.get_mut(&(ev.proto, ev.id, ev.seq)) {
                    Some(open) if open.trace_id.is_none_or(|t| t == ev.trace_id) => open.events.push(ev),
                    Some(_) => foreign += 1,
                    None => unmatched += 1,
                }
            }
        }
        shared.counts.unmatched.fetch_add(unmatched, Ordering::Relaxed);
        shared.counts.foreign_trace.fetch_add(foreign, Ordering::Relaxed);
        shared
            .counts
            .remote_dropped
            .fetch_add(remote_dropped, Ordering::Relaxed);
    }
}

/// Other nodes' journeys queued for the front-end at most.
const REMOTE_QUEUE: usize = 1024;

/// Hands other nodes' probes over once each has been quiet for a moment. Holds the engine
/// weakly, so it ends when the engine does, or when nobody reads the journeys any more.
async fn hand_over(shared: std::sync::Weak<Shared>, tx: mpsc::Sender<RemoteJourney>) {
    let mut tick = tokio::time::interval(remote::QUIET / 4);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let Some(remote) = &shared.remote else {
            return;
        };
        let due = {
            let mut g = remote.lock().unwrap();
            let mut names = shared.names.lock().unwrap();
            g.due(Instant::now(), &mut names)
        };
        for j in due {
            match tx.try_send(j) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    shared.counts.remote_dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    }
}
