//! The engine's two background tasks: the pump that files ring-buffer events under the
//! journeys in flight, and the hand-over of other nodes' probes.

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::error;

use super::Shared;
use crate::kernel::maps::EventReader;
use crate::remote::{self, Filed, RemoteJourney};

/// Other nodes' journeys queued for the front-end at most.
pub(super) const REMOTE_QUEUE: usize = 1024;

/// Moves ring-buffer events into the journeys in flight. Holds the engine weakly, so it ends
/// when the engine does.
pub(super) async fn pump(shared: Weak<Shared>, mut reader: EventReader) {
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

/// Hands other nodes' probes over once each has been quiet for a moment. Holds the engine
/// weakly, so it ends when the engine does, or when nobody reads the journeys any more.
pub(super) async fn hand_over(shared: Weak<Shared>, tx: mpsc::Sender<RemoteJourney>) {
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
