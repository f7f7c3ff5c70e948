//! The probe engine: the one owner of the kernel programs, the probe registry, the ring-buffer
//! reader, the attach gate, the echo ids and the names. It knows no kind of probe: it offers
//! what every kind sends with, for any number of probes at once; `probes` are built on it.
//!
//! A probe's life: its user takes an echo id ([`Engine::lease`]); for each probe, a trace
//! context ([`Engine::trace_context`]), then [`Engine::begin`] registers it in the kernel, opens
//! its journey ([`Flight`]) and attaches the programs if none were; the kind sends and waits;
//! [`Flight::land`] gives the ring buffer a moment for the last events and closes the journey,
//! and [`Engine::journey`] assembles it. Shared state sits behind short-lived locks, never held
//! across an await.

mod flight;
mod gate;
mod ids;
mod pump;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use opentelemetry_sdk::trace::RandomIdGenerator;
use probe_common::map;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::warn;

pub use self::flight::{JourneyKey, Landed, Lease};
use self::gate::Gate;
use self::ids::IdPool;
use crate::config::AttachMode;
use crate::kernel::events::KernelEvent;
use crate::kernel::loader::{self, Foreign, Mechanisms, Sizing};
use crate::kernel::maps::{Counters, EventReader, KernelStats, ProbeRegistry};
use crate::names::Names;
use crate::remote::{Gatherer, RemoteJourney};
use crate::telemetry::{AttachClock, EngineCounts, Telemetry};

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

impl Engine {
    /// Loads and attaches the kernel programs and starts reading the ring buffer.
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
        let pump = tokio::spawn(pump::pump(Arc::downgrade(&shared), reader));
        shared.tasks.lock().unwrap().push(pump.abort_handle());
        let remote = opts.foreign.map(|_| {
            let (tx, rx) = mpsc::channel(pump::REMOTE_QUEUE);
            let task = tokio::spawn(pump::hand_over(Arc::downgrade(&shared), tx));
            shared.tasks.lock().unwrap().push(task.abort_handle());
            rx
        });
        Ok((Engine { shared }, telemetry, remote))
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
