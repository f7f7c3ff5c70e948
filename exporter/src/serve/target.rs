//! One target's task: its probes on their schedule, through its kind, each reported to the
//! metrics, the page, the spans and the log.

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::config::{Origin, Target};
use crate::engine::Lease;
use crate::expect;
use crate::export::board::{Board, JourneyView};
use crate::export::health::Heartbeat;
use crate::export::labels::TargetLabels;
use crate::export::metrics::ErrorReason;
use crate::export::otlp::{TargetInfo, Tracer};
use crate::export::prometheus::Metrics;
use crate::outcome::{Ending, Outcome};
use crate::probes::{Asked, Kit, Probe, Round, Shot, Start, TargetMetrics};

/// What a target's task needs.
pub(super) struct Probing {
    pub kit: Kit,
    pub metrics: Arc<Metrics>,
    pub board: Arc<Board>,
    pub tracer: Option<Arc<Tracer>>,
    pub target: Target,
    pub probe: Probe,
    pub tag: u32,
    pub lease: Lease,
    pub heartbeat: Heartbeat,
}

/// The labels of a target's series: its name and the extra labels of its config.
pub(super) fn labels_of(t: &Target) -> TargetLabels {
    TargetLabels {
        target: t.name.clone(),
        extra: t.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

/// The longest a healthy round of `t` takes, start to start: its interval, or all its
/// probes timing out one after the other.
pub(super) fn round_period(t: &Target, probe: &Probe) -> Duration {
    let probes = t.count * probe.sweep() as u32;
    t.interval.max(t.timeout * probes)
}

/// Probes the target, one round per interval, the first after `start_after`; runs until the
/// task is aborted.
pub(super) async fn probe_loop(p: Probing, start_after: Duration) {
    let interval = p.target.interval;
    let mut task = Task::new(p);
    tokio::time::sleep(start_after).await;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        task.round().await;
        task.p.heartbeat.beat();
    }
}

/// A target's task, between its probes.
struct Task {
    p: Probing,
    labels: TargetLabels,
    extra: Vec<(String, String)>,
    start: Start,
    seq: u16,
    /// What stopped the last probe from being sent, and the last journey's broken
    /// expectation: logged when they change, not once per probe.
    last_problem: Option<String>,
    last_violation: Option<String>,
}

impl Task {
    fn new(p: Probing) -> Task {
        let start = match &p.target.from {
            None => Start::Here,
            Some(Origin::Netns(path)) => Start::netns(path.clone()),
            Some(Origin::Pod(name)) => Start::pod(name.clone()),
        };
        Task {
            labels: labels_of(&p.target),
            extra: p.target.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            start,
            seq: 0,
            last_problem: None,
            last_violation: None,
            p,
        }
    }

    fn series(&self) -> TargetMetrics<'_> {
        TargetMetrics {
            metrics: &self.p.metrics,
            tag: self.p.tag,
            labels: &self.labels,
        }
    }

    /// One round: `count` times, the probes of one sweep of the kind.
    async fn round(&mut self) {
        let mut round = Round::default();
        let (count, sweep) = (self.p.target.count, self.p.probe.sweep());
        for index in (0..count).flat_map(|_| 0..sweep) {
            if let Some(asked) = self.probe(index).await {
                round.add(&asked);
            }
        }
        self.p.probe.round_done(&self.series(), &round);
    }

    /// Sends probe `index` of the round and reports it; `None` when it could not be sent.
    async fn probe(&mut self, index: usize) -> Option<Asked> {
        let t = &self.p.target;
        let from = match self.start.locate() {
            Ok(from) => from,
            Err(e) => {
                self.problem(Some(format!("probe not sent: {e}")));
                self.not_sent(ErrorReason::send, JourneyView::not_sent(Ending::SendError, e));
                return None;
            }
        };
        let addr = match self.p.probe.resolve(&t.address, t.ip_version, from.as_deref()).await {
            Ok(addr) => addr,
            Err(e) => {
                self.problem(Some(e.to_string()));
                self.not_sent(ErrorReason::resolve, JourneyView::unresolved(e.detail()));
                return None;
            }
        };
        self.p.metrics.probe_sent(self.p.tag, &self.labels);
        let shot = Shot {
            lease: &self.p.lease,
            seq: self.seq,
            addr,
            from: from.as_deref(),
            timeout: t.timeout,
            index,
        };
        let mut asked = self.p.probe.ask(&self.p.kit, shot).await;
        self.report(&mut asked);
        self.seq = self.seq.wrapping_add(1);
        Some(asked)
    }

    fn not_sent(&self, why: ErrorReason, view: JourneyView) {
        self.p.metrics.probe_error(self.p.tag, &self.labels, why);
        self.p.board.record(&self.p.target.name, view);
    }

    /// Everything a journey tells: the log, the metrics, the expectations, the spans, the page.
    fn report(&mut self, asked: &mut Asked) {
        if let Some(r) = &asked.reading {
            r.record(&self.series());
        }
        let addr = asked.addr;
        match &asked.journey.outcome {
            Outcome::SendError(e) => self.problem(Some(format!("probe to {addr} not sent: {e}"))),
            outcome => {
                if let Outcome::IcmpError(e) = outcome {
                    debug!(target = %self.p.target.name, %addr, "{e}");
                }
                self.problem(None);
            }
        }
        if let Some(e) = asked.journey.outcome.error() {
            self.p.metrics.probe_error(self.p.tag, &self.labels, e);
        }
        self.judge(asked);
        let (t, j) = (&self.p.target, &asked.journey);
        let info = TargetInfo {
            name: &t.name,
            address: &t.address,
            port: self.p.probe.port(),
            labels: &self.extra,
        };
        let trace = self.p.tracer.as_ref().and_then(|tr| tr.record(&info, Some(addr), j));
        self.p.metrics.record(self.p.tag, &self.labels, j, trace, asked.size);
        self.p.board.record(&t.name, JourneyView::of(j, trace));
    }

    /// Sets the journey's violation: the first expectation of its path it broke, else what
    /// is wrong with its answer. Logged when it changes, for a target with expectations.
    fn judge(&mut self, asked: &mut Asked) {
        let wrong_answer = asked.violation();
        let Some(expect) = &self.p.target.expect else {
            // Without expect:, a wrong answer still says what went wrong on the page.
            asked.journey.violation = wrong_answer;
            return;
        };
        let path = expect::violation(expect, &asked.journey);
        if expect.has_path() {
            self.p.metrics.path_expected(self.p.tag, &self.labels, path.is_none());
        }
        let on_path = path.is_some();
        let violation = path.or(wrong_answer);
        if violation != self.last_violation {
            let name = &self.p.target.name;
            match &violation {
                Some(v) if on_path => warn!(target = %name, "path not as expected: {v}"),
                Some(v) => warn!(target = %name, "not as expected: {v}"),
                None => info!(target = %name, "as expected again"),
            }
            self.last_violation = violation.clone();
        }
        asked.journey.violation = violation;
    }

    /// Logs why probes are not sent when that changes, and when they are sent again.
    fn problem(&mut self, problem: Option<String>) {
        if problem == self.last_problem {
            return;
        }
        let name = &self.p.target.name;
        match &problem {
            Some(p) => warn!(target = %name, "{p}"),
            None if self.last_problem.is_some() => info!(target = %name, "probing works again"),
            None => {}
        }
        self.last_problem = problem;
    }
}
