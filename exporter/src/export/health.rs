//! Whether tracepkt is doing its job, as `/healthz` tells the kubelet: every target's probe
//! loop has completed a round lately, and nothing has panicked.
//!
//! A probe loop wedged in a system call, or a panic (which leaves every mutex it held
//! poisoned, and its task gone), leaves the process up and its HTTP server answering. The
//! kubelet can only restart what says it is unwell.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Rounds a target may miss before its loop counts as stalled.
pub const MISSED_ROUNDS: u32 = 3;

/// The heartbeats of the probe loops, and the first panic.
#[derive(Default)]
pub struct Health {
    beats: Mutex<HashMap<u64, Beat>>,
    next_id: AtomicU64,
    panicked: OnceLock<String>,
}

struct Beat {
    target: String,
    /// The longest a healthy round takes, start to start.
    period: Duration,
    /// When the loop last completed a round (or, before its first, when that was due).
    last: Instant,
}

/// A probe loop's heartbeat; dropping it (the target is removed) removes it.
pub struct Heartbeat {
    health: Arc<Health>,
    id: u64,
}

impl Heartbeat {
    /// A round is complete.
    pub fn beat(&self) {
        if let Some(b) = self.health.beats().get_mut(&self.id) {
            b.last = Instant::now();
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.health.beats().remove(&self.id);
    }
}

impl Health {
    pub fn new() -> Arc<Health> {
        Arc::new(Health::default())
    }

    /// Health's own lock is taken only for a moment and never around a call that may panic:
    /// it outlives a panic anywhere else.
    fn beats(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Beat>> {
        self.beats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Follows `target`'s loop, whose rounds start at most `period` apart, the first one
    /// `first_after` from now.
    pub fn register(self: &Arc<Self>, target: &str, period: Duration, first_after: Duration) -> Heartbeat {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.beats().insert(
            id,
            Beat {
                target: target.to_owned(),
                period,
                last: Instant::now() + first_after,
            },
        );
        Heartbeat {
            health: self.clone(),
            id,
        }
    }

    /// Makes every panic of the process count against its health, after the hook in place
    /// (which prints it) has run.
    pub fn watch_panics(self: &Arc<Self>) {
        let previous = std::panic::take_hook();
        let health = self.clone();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            health.panicked(match info.location() {
                Some(l) => format!("{}:{}", l.file(), l.line()),
                None => "an unknown place".to_owned(),
            });
        }));
    }

    fn panicked(&self, at: String) {
        let _ = self.panicked.set(at);
    }

    /// What is wrong, if anything.
    pub fn problems(&self) -> Vec<String> {
        let now = Instant::now();
        let mut problems: Vec<String> = self
            .beats()
            .values()
            .filter_map(|b| {
                let late = now.checked_duration_since(b.last)?;
                (late > b.period * MISSED_ROUNDS).then(|| {
                    format!(
                        "target {:?}: no probing round completed in {} (rounds start at most {} apart)",
                        b.target,
                        humantime::format_duration(Duration::from_secs(late.as_secs())),
                        humantime::format_duration(b.period)
                    )
                })
            })
            .collect();
        problems.sort();
        if let Some(at) = self.panicked.get() {
            problems.push(format!(
                "a thread panicked at {at} (see the log); tracepkt must be restarted"
            ));
        }
        problems
    }
}

/// `/healthz`: 200 `ok`, or 503 and what is wrong.
pub async fn healthz(State(health): State<Arc<Health>>) -> Response {
    let problems = health.problems();
    if problems.is_empty() {
        "ok\n".into_response()
    } else {
        let mut body = String::from("unhealthy:\n");
        for p in problems {
            body.push_str(&format!("- {p}\n"));
        }
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_that_misses_three_rounds_is_stalled() {
        let h = Health::new();
        let period = Duration::from_millis(20);
        let beating = h.register("beating", period, Duration::ZERO);
        let stalled = h.register("stalled", period, Duration::ZERO);
        let later = h.register("later", period, Duration::from_secs(60));
        for _ in 0..6 {
            std::thread::sleep(period);
            beating.beat();
        }
        let problems = h.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("target \"stalled\""), "{problems:?}");
        // A removed target no longer counts.
        drop(stalled);
        assert!(h.problems().is_empty());
        drop((beating, later));
        assert!(h.beats().is_empty());
    }

    #[test]
    fn a_panic_is_unhealthy_for_good() {
        let h = Health::new();
        assert!(h.problems().is_empty());
        h.panicked("src/x.rs:1".into());
        h.panicked("src/y.rs:2".into());
        assert_eq!(
            h.problems(),
            ["a thread panicked at src/x.rs:1 (see the log); tracepkt must be restarted"]
        );
    }

    #[test]
    fn health_outlives_a_poisoned_lock() {
        let h = Health::new();
        let beat = h.register("t", Duration::from_secs(1), Duration::ZERO);
        let h2 = h.clone();
        let _ = std::thread::spawn(move || {
            let _guard = h2.beats.lock().unwrap();
            panic!("poisoning the lock on purpose");
        })
        .join();
        assert!(h.beats.is_poisoned());
        beat.beat();
        assert!(h.problems().is_empty());
    }
}
