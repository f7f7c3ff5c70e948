//! Where targets come from: the listed ones (`targets:`), and those the sources of
//! `discovery:` find (DNS A/AAAA and SRV records, Prometheus file_sd files), each source on its
//! own schedule in a task of its own.
//!
//! * `source`: one source's life: lookups, failures (the last good answer stays), and turning
//!   an answer into targets through the source's template.
//! * `dns`, `file_sd`: where a source looks.
//! * `mesh`: which of the peers this node probes (`peers: true`).
//! * `identity`: which node a peer is.
//! * `status`: what each source did, for the metrics.
//!
//! [`Discovery::targets`] joins the listed targets and every source's into the one list the
//! probing runs, with the same limits for all: duplicates (the same probe twice) are left out,
//! the first one kept (listed targets first, then the sources in file order), and past
//! [`MAX_TARGETS`] in all the sources' last targets are left out. Both are counted per source.

mod dns;
mod file_sd;
pub mod identity;
pub mod mesh;
mod source;
pub mod status;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use self::identity::Names;
use self::source::{Finder, Task};
use self::status::{Rejected, Rejections, SourceStatus};
use crate::config::{self, MAX_TARGETS, Target};

/// The most targets one source gives (a source with `peers: true` gives at most `max_peers`).
pub const MAX_SOURCE_TARGETS: usize = 1000;
/// The most addresses a mesh places on its ring: the largest cluster Kubernetes supports.
pub const MAX_RING: usize = 5000;

/// The running sources.
pub struct Discovery {
    running: Vec<Running>,
    /// The port this node serves on, where peers are asked who they are.
    identity_port: u16,
    changed: Arc<Notify>,
}

struct Running {
    config: config::Discovery,
    published: Arc<Mutex<Arc<Vec<Target>>>>,
    status: Arc<Mutex<SourceStatus>>,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One source's state, as the metrics show it.
#[derive(Debug, Clone)]
pub struct SourceReport {
    pub name: String,
    /// `dns`, `srv` or `file`.
    pub kind: &'static str,
    pub status: SourceStatus,
}

impl Discovery {
    /// Starts every source; `identity_port` is where this node, and so every peer, serves.
    pub fn start(sources: &[config::Discovery], identity_port: u16) -> Discovery {
        let mut d = Discovery {
            running: Vec::new(),
            identity_port,
            changed: Arc::new(Notify::new()),
        };
        d.reload(sources);
        d
    }

    /// Keeps the sources whose settings did not change, with what they found; starts the new
    /// and changed ones and stops the others.
    pub fn reload(&mut self, sources: &[config::Discovery]) {
        let mut old: Vec<Running> = std::mem::take(&mut self.running);
        for s in sources {
            match old.iter().position(|r| r.config == *s) {
                Some(i) => self.running.push(old.swap_remove(i)),
                None => self.running.push(self.spawn(s)),
            }
        }
        if !old.is_empty() {
            // Their targets go with them.
            self.changed.notify_one();
        }
    }

    fn spawn(&self, config: &config::Discovery) -> Running {
        let published = Arc::new(Mutex::new(Arc::new(Vec::new())));
        let status = Arc::new(Mutex::new(SourceStatus::default()));
        let task = Task {
            config: config.clone(),
            finder: Finder::new(&config.source),
            names: Names::new(self.identity_port),
            own_addresses: mesh::own_addresses,
            status: status.clone(),
            published: published.clone(),
            changed: self.changed.clone(),
            said: Default::default(),
        };
        Running {
            config: config.clone(),
            published,
            status,
            task: tokio::spawn(task.run()),
        }
    }

    /// Returns when a source's targets changed since the last call (at once if they did in
    /// between).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// The listed targets and every source's, joined (see the module's doc).
    pub fn targets(&self, listed: &[Target]) -> Vec<Target> {
        let found: Vec<Arc<Vec<Target>>> = self
            .running
            .iter()
            .map(|r| r.published.lock().expect("published").clone())
            .collect();
        let (targets, outs) = merge(listed, &found);
        for (r, (count, out)) in self.running.iter().zip(outs) {
            let mut status = r.status.lock().expect("status");
            status.targets = count;
            status.merged_out = out;
        }
        targets
    }

    /// Each source's state, in file order.
    pub fn report(&self) -> Vec<SourceReport> {
        self.running
            .iter()
            .map(|r| SourceReport {
                name: r.config.name.clone(),
                kind: r.config.source.kind(),
                status: r.status.lock().expect("status").clone(),
            })
            .collect()
    }
}

/// What makes two targets the same probe, whatever their names and labels.
fn probe_key(t: &Target) -> String {
    format!("{}|{:?}|{:?}|{:?}", t.address, t.probe, t.from, t.sizes)
}

/// The listed targets, then each source's that is neither a duplicate (same name or same probe
/// as one before it) nor past [`MAX_TARGETS`]; and for each source, how many of its targets
/// are in and what was left out.
fn merge(listed: &[Target], found: &[Arc<Vec<Target>>]) -> (Vec<Target>, Vec<(usize, Rejections)>) {
    let mut names: HashSet<&str> = listed.iter().map(|t| t.name.as_str()).collect();
    let mut probes: HashSet<String> = listed.iter().map(probe_key).collect();
    let mut all: Vec<Target> = listed.to_vec();
    let mut outs = Vec::with_capacity(found.len());
    for targets in found {
        let mut out = Rejections::default();
        let mut count = 0;
        for t in targets.iter() {
            if names.contains(t.name.as_str()) || !probes.insert(probe_key(t)) {
                out.add(Rejected::Duplicate, 1);
            } else if all.len() >= MAX_TARGETS {
                out.add(Rejected::OverLimit, 1);
            } else {
                names.insert(t.name.as_str());
                all.push(t.clone());
                count += 1;
            }
        }
        outs.push((count, out));
    }
    (all, outs)
}

#[cfg(test)]
mod tests;
