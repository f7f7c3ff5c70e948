//! Start-up: the engine and the probes' kit, the span exporter, the metrics, and the HTTP
//! server, in that order, each failure a clear message before anything probes.

use std::net::TcpListener;
use std::sync::Arc;

use anyhow::Context as _;
use probe_common::Mechanism;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::{AttachMode, Config};
use crate::engine::{self, Engine};
use crate::export::otlp::{self, SpanCounts, Tracer};
use crate::export::prometheus::Metrics;
use crate::export::web::Web;
use crate::kernel::loader::{Foreign, Mechanisms, Sizing};
use crate::probes::Kit;
use crate::remote::RemoteJourney;

/// What `serve` runs on once started.
pub(super) struct Node {
    pub kit: Kit,
    pub metrics: Arc<Metrics>,
    pub tracer: Option<Arc<Tracer>>,
}

impl Node {
    pub fn engine(&self) -> &Engine {
        self.kit.engine()
    }
}

/// Loads the programs, starts the span exporter and builds the metrics. `mechanisms` from the
/// command line, when given, override the config's.
pub(super) async fn build(config: &Config, mechanisms: Vec<Mechanism>) -> anyhow::Result<Node> {
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
    let kit = Kit::new(engine)?;
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
    let node = Node { kit, metrics, tracer };
    if let (Some(c), Some(remote)) = (config.cross_node, remote) {
        info!(
            budget = c.budget,
            tunnels = c.tunnels,
            "following other nodes' probes across this node{}",
            if node.tracer.is_some() {
                ", as spans in their senders' traces"
            } else {
                " (no OTLP endpoint: counted only)"
            }
        );
        follow_remote(&node, remote);
    }
    Ok(node)
}

/// Counts other nodes' probes, and adds their hops to their senders' traces. Ends when the
/// engine stops handing journeys over.
fn follow_remote(node: &Node, mut remote: mpsc::Receiver<RemoteJourney>) {
    let (metrics, tracer) = (node.metrics.clone(), node.tracer.clone());
    tokio::spawn(async move {
        while let Some(j) = remote.recv().await {
            metrics.remote_journey(&j);
            if let Some(t) = &tracer {
                t.record_remote(&j);
            }
        }
    });
}

/// Takes the listening address, before any target is probed: a second instance on the same
/// port stops here.
pub(super) fn listen(config: &Config, web: Option<&Web>) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(config.listen)
        .with_context(|| format!("cannot listen on {} (set `listen:` in the config)", config.listen))?;
    info!(
        listen = %config.listen,
        targets = config.targets.len(),
        tls = web.is_some_and(|w| w.tls_on()),
        basic_auth = web.is_some_and(|w| w.basic_auth_on()),
        "serving /metrics"
    );
    Ok(listener)
}
