//! Shutting down: on SIGTERM or SIGINT, or when the HTTP server stops, probing stops, the
//! programs are removed, and open scrapes and span exports get a moment to finish.

use std::future::Future;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tracing::warn;

use super::fleet::Fleet;
use super::start::Node;
use crate::export::server::Server;

/// How long each part of shutting down may take: open scrapes and span exports get this long
/// to finish, then they are cut, so that SIGTERM always ends tracepkt promptly.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Completes at the first SIGTERM or SIGINT; the handlers are in place once this returns.
pub(super) fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Stops probing and the HTTP server, detaches the programs and lets the span exporter
/// drain.
pub(super) async fn stop(mut fleet: Fleet, node: &Node, server: &Server) {
    server.handle.graceful_shutdown(Some(SHUTDOWN_GRACE));
    fleet.stop_all();
    node.engine().shutdown();
    // Bounded by the tracer itself.
    if let Some(t) = &node.tracer {
        t.shutdown().await;
    }
}

/// Waits for the HTTP server's open requests to end, at most [`SHUTDOWN_GRACE`].
pub(super) async fn drain(server: Server) {
    if tokio::time::timeout(SHUTDOWN_GRACE, server.task).await.is_err() {
        warn!("the HTTP server did not stop in {SHUTDOWN_GRACE:?}");
    }
}
