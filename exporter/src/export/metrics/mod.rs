//! Recorded metrics: probe outcomes and journeys, written into label families as they complete,
//! in groups of one file each (`probe`, `path`, `sizes`, `dns`, `remote`, `process`), as the
//! kernel counters' collectors are in `collectors/`. A group owns its families, their labels,
//! how it records into them and what it keeps of a target besides.
//!
//! A family of per-target series is a `TargetFamily`: registering one (`Registrar::per_target`)
//! is all it takes for a target's series in it to go when the target goes (a reload dropped it
//! or changed its labels). So a new metric is written in its group's file alone: its field, its
//! registration and its recorder. `Groups` is the one list of groups: registering and removing
//! loop over it.
//!
//! Per-target series are kept few on purpose, so that `/metrics` stays small at thousands of
//! targets: see `path` for the stages.

mod dns;
mod path;
mod probe;
mod process;
mod remote;
mod sizes;

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::registry::{Metric, Registry, Unit};

use super::labels::TargetLabels;
use crate::kernel::loader::Attach;

pub use dns::Rcode;
pub use probe::ErrorReason;

/// One group of recorded families.
trait Group {
    /// Registers the group's families, in the order `/metrics` shows them.
    fn register(&self, r: &mut Registrar);
    /// Creates the series a target has from its start (counters at zero).
    fn add_target(&self, _t: &TargetLabels) {}
    /// Forgets what the group keeps of a target besides its series.
    fn forget_target(&self, _t: &TargetLabels) {}
}

/// Every group of recorded metrics. A new group is a field here, made in `new` and listed in
/// `each`.
pub struct Groups {
    pub probe: probe::Probe,
    pub sizes: sizes::Sizes,
    pub path: path::Path,
    pub dns: dns::Dns,
    pub remote: remote::Remote,
    pub process: process::Process,
    /// The families of per-target series, by name, as registered.
    per_target: Vec<(&'static str, Box<dyn RemoveTarget>)>,
    /// Every family, by name, as registered.
    families: Vec<&'static str>,
}

impl Groups {
    /// `attached`: the attach report; `kernel`: the release tracepkt runs on.
    pub fn new(rtt_buckets: &[f64], attached: &[Attach], kernel: &str, registry: &mut Registry) -> Self {
        let mut groups = Groups {
            probe: probe::Probe::new(rtt_buckets),
            sizes: sizes::Sizes::default(),
            path: path::Path::default(),
            dns: dns::Dns::default(),
            remote: remote::Remote::default(),
            process: process::Process::new(attached, kernel),
            per_target: Vec::new(),
            families: Vec::new(),
        };
        let mut r = Registrar {
            registry,
            per_target: Vec::new(),
            families: Vec::new(),
        };
        for g in groups.each() {
            g.register(&mut r);
        }
        groups.per_target = r.per_target;
        groups.families = r.families;
        groups
    }

    fn each(&self) -> [&dyn Group; 6] {
        [
            &self.probe,
            &self.sizes,
            &self.path,
            &self.dns,
            &self.remote,
            &self.process,
        ]
    }

    pub fn add_target(&self, t: &TargetLabels) {
        for g in self.each() {
            g.add_target(t);
        }
    }

    /// Removes every series of a target, and what the groups keep of it.
    pub fn remove_target(&self, t: &TargetLabels) {
        for (_, f) in &self.per_target {
            f.remove_target(t);
        }
        for g in self.each() {
            g.forget_target(t);
        }
    }
}

/// What groups register their families with.
struct Registrar<'a> {
    registry: &'a mut Registry,
    per_target: Vec<(&'static str, Box<dyn RemoveTarget>)>,
    families: Vec<&'static str>,
}

impl Registrar<'_> {
    /// A family whose series belong to no target.
    fn register(&mut self, name: &'static str, help: &str, unit: Option<Unit>, metric: impl Metric) {
        self.families.push(name);
        // Names are spelled in full (no registry prefix) so they read the same here and in the
        // collectors, which write their own.
        match unit {
            Some(unit) => self.registry.register_with_unit(name, help, unit, metric),
            None => self.registry.register(name, help, metric),
        }
    }

    /// A family of per-target series: they are removed with their target.
    fn per_target<S, M, C>(
        &mut self,
        name: &'static str,
        help: &str,
        unit: Option<Unit>,
        family: &TargetFamily<S, M, C>,
    ) where
        TargetFamily<S, M, C>: RemoveTarget + Clone,
        Family<S, M, C>: Metric,
    {
        self.register(name, help, unit, family.clone().family);
        self.per_target.push((name, Box::new(family.clone())));
    }
}

/// A label set that names its target first.
trait Targeted {
    fn target(&self) -> &TargetLabels;
}

impl Targeted for TargetLabels {
    fn target(&self) -> &TargetLabels {
        self
    }
}

/// The target's labels, then the family's own.
impl<L> Targeted for (TargetLabels, L) {
    fn target(&self) -> &TargetLabels {
        &self.0
    }
}

trait RemoveTarget: Send + Sync {
    fn remove_target(&self, t: &TargetLabels);
}

/// A family of per-target series that knows each target's label sets, so that a target's
/// series can all be removed, whatever values its labels took.
struct TargetFamily<S, M, C = fn() -> M> {
    family: Family<S, M, C>,
    /// Target → the label sets it has in `family`.
    sets: Arc<Mutex<HashMap<TargetLabels, HashSet<S>>>>,
}

impl<S, M, C: Clone> Clone for TargetFamily<S, M, C> {
    fn clone(&self) -> Self {
        TargetFamily {
            family: self.family.clone(),
            sets: self.sets.clone(),
        }
    }
}

impl<S: Clone + Hash + Eq, M: Default> Default for TargetFamily<S, M> {
    fn default() -> Self {
        TargetFamily {
            family: Family::default(),
            sets: Arc::default(),
        }
    }
}

impl<S, M, C> TargetFamily<S, M, C>
where
    S: Targeted + Clone + Hash + Eq,
    M: Clone,
    C: MetricConstructor<M>,
{
    fn with_constructor(constructor: C) -> Self {
        TargetFamily {
            family: Family::new_with_constructor(constructor),
            sets: Arc::default(),
        }
    }

    /// The series of `s`, created when new. Metrics share their value with their clones.
    fn get_or_create(&self, s: &S) -> M {
        // Held across the family's change, so `sets` never misses a series.
        let mut sets = self.sets.lock().unwrap();
        match sets.get_mut(s.target()) {
            Some(of_target) if of_target.contains(s) => {}
            Some(of_target) => {
                of_target.insert(s.clone());
            }
            None => {
                sets.insert(s.target().clone(), HashSet::from([s.clone()]));
            }
        }
        self.family.get_or_create_owned(s)
    }

    fn remove(&self, s: &S) {
        let mut sets = self.sets.lock().unwrap();
        if let Some(of_target) = sets.get_mut(s.target()) {
            of_target.remove(s);
        }
        self.family.remove(s);
    }
}

impl<S, M, C> RemoveTarget for TargetFamily<S, M, C>
where
    S: Targeted + Clone + Hash + Eq + Send + Sync,
    M: Send + Sync,
    C: MetricConstructor<M> + Send + Sync,
{
    fn remove_target(&self, t: &TargetLabels) {
        let mut sets = self.sets.lock().unwrap();
        for s in sets.remove(t).into_iter().flatten() {
            self.family.remove(&s);
        }
    }
}

/// A label value from a closed set that the code it comes from spells (a hop's kind, a
/// stage, a hook, a mechanism): typed in the label set, spelled once, where it is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Named<T>(T);

trait Name: Copy {
    fn name(self) -> &'static str;
}

impl<T: Name> EncodeLabelValue for Named<T> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.0.name())
    }
}

impl Name for probe_common::Kind {
    fn name(self) -> &'static str {
        self.as_str()
    }
}

#[cfg(test)]
mod tests;
