//! One source's life: look up on its schedule, keep the last good answer through failures (and
//! say so once when they start and once when they end), and turn each answer into targets:
//! duplicates out, the cap, the peer mesh, the template.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::{info, warn};

use super::identity::Names;
use super::status::{Rejected, Rejections, SourceStatus};
use super::{MAX_RING, MAX_SOURCE_TARGETS, dns, file_sd, mesh};
use crate::config::{
    DEFAULT_FILE_REFRESH, Discovery, IpVersion, MAX_TTL_REFRESH, MIN_TTL_REFRESH, PEER_LABEL, Source, Target,
};

/// An address a source found, with what came with it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Found {
    /// An IP address, or (from a file) a host name.
    pub host: String,
    pub port: Option<u16>,
    /// A file's labels for it.
    pub labels: BTreeMap<String, String>,
}

impl Found {
    pub fn address(host: String) -> Found {
        Found {
            host,
            port: None,
            labels: BTreeMap::new(),
        }
    }
}

/// Addresses left out of an answer: why, how many, and what to log.
#[derive(Debug, Clone)]
pub(super) struct Left {
    pub why: Rejected,
    pub count: u64,
    pub what: String,
}

impl Left {
    /// One address left out.
    pub fn one(why: Rejected, what: String) -> Left {
        Left { why, count: 1, what }
    }
}

/// What one lookup gave.
#[derive(Debug, Default)]
pub(super) struct Answer {
    pub found: Vec<Found>,
    /// The smallest TTL of the records (DNS).
    pub ttl: Option<Duration>,
    /// What the lookup itself left out, and why.
    pub rejected: Vec<Left>,
    /// Part of the source failed while the rest was read (a broken file among good ones): what
    /// it gave before is still in `found`. The message, and how many new failures this lookup
    /// met (a broken file counts once, when it is read).
    pub broken: Option<(String, u64)>,
}

/// Where a source looks.
pub(super) enum Finder {
    Dns(dns::Dns),
    Files(file_sd::Files),
}

impl Finder {
    pub fn new(source: &Source) -> Finder {
        match source {
            Source::Dns { name, server } => Finder::Dns(dns::Dns::addresses(name, *server)),
            Source::Srv { name, server } => Finder::Dns(dns::Dns::srv(name, *server)),
            Source::Files { pattern } => Finder::Files(file_sd::Files::new(pattern)),
        }
    }

    async fn lookup(&mut self, ip_version: IpVersion, cap: usize) -> Result<Answer, String> {
        match self {
            Finder::Dns(d) => d.lookup(ip_version, cap).await,
            Finder::Files(f) => f.lookup(),
        }
    }
}

/// A running source and what it shares with the rest of tracepkt.
pub(super) struct Task {
    pub config: Discovery,
    pub finder: Finder,
    pub names: Names,
    /// This node's addresses: `mesh::own_addresses`, but for the tests.
    pub own_addresses: fn() -> Vec<IpAddr>,
    pub status: Arc<Mutex<SourceStatus>>,
    /// The targets it gives now.
    pub published: Arc<Mutex<Arc<Vec<Target>>>>,
    pub changed: Arc<Notify>,
    /// The messages of what was left out last time, so that each is logged once.
    pub said: BTreeSet<String>,
}

impl Task {
    pub async fn run(mut self) {
        loop {
            let next = self.refresh().await;
            tokio::time::sleep(next).await;
        }
    }

    /// One lookup; returns when to look again.
    pub async fn refresh(&mut self) -> Duration {
        self.status.lock().expect("status").lookups += 1;
        let cap = if self.config.max_peers.is_some() {
            MAX_RING
        } else {
            MAX_SOURCE_TARGETS
        };
        match self.finder.lookup(self.config.template.ip_version(), cap).await {
            Err(e) => {
                self.failed(&e, 1);
                self.next(None)
            }
            Ok(answer) => {
                match &answer.broken {
                    Some((e, new)) => self.failed(e, *new),
                    None => self.recovered(),
                }
                let ttl = answer.ttl;
                let targets = self.shape(answer).await;
                self.publish(targets);
                self.next(ttl)
            }
        }
    }

    fn next(&self, ttl: Option<Duration>) -> Duration {
        self.config.refresh.unwrap_or(match self.config.source {
            Source::Files { .. } => DEFAULT_FILE_REFRESH,
            _ => ttl.unwrap_or(MIN_TTL_REFRESH).clamp(MIN_TTL_REFRESH, MAX_TTL_REFRESH),
        })
    }

    fn failed(&self, e: &str, new: u64) {
        let mut status = self.status.lock().expect("status");
        status.failures += new;
        if !status.failing {
            status.failing = true;
            warn!(source = %self.config.name, kept = status.targets, "discovery failing, keeping the last targets found: {e}");
        }
    }

    fn recovered(&self) {
        let mut status = self.status.lock().expect("status");
        if status.failing {
            status.failing = false;
            info!(source = %self.config.name, "discovery works again");
        }
    }

    fn publish(&self, targets: Vec<Target>) {
        let mut published = self.published.lock().expect("published");
        if **published != targets {
            *published = Arc::new(targets);
            self.changed.notify_one();
        }
    }

    /// The targets of an answer.
    async fn shape(&mut self, answer: Answer) -> Vec<Target> {
        let uses_port = self.config.template.uses_port();
        let mut rejected = answer.rejected;
        let found = unique(answer.found, uses_port, &mut rejected);
        let (found, peers) = match self.config.max_peers {
            Some(k) => {
                let (found, peers) = self.peers(found, k, &mut rejected).await;
                (found, Some(peers))
            }
            None => (cap(found, MAX_SOURCE_TARGETS, &mut rejected), None),
        };
        let mut targets = Vec::with_capacity(found.len());
        for f in found {
            let name = target_name(&self.config.name, &f, uses_port);
            match self.config.template.instantiate(name, &f.host, f.port, &f.labels) {
                Ok(t) => targets.push(t),
                Err(e) => rejected.push(Left::one(Rejected::Invalid, format!("{}: {e}", f.host))),
            }
        }
        self.report(&rejected);
        let mut status = self.status.lock().expect("status");
        status.rejected = count(&rejected);
        status.peers = peers;
        targets
    }

    /// This node's share of the mesh: its peers among the addresses found, named by their node
    /// names where they say them. Returns them and (peers discovered, peers probed).
    async fn peers(&mut self, found: Vec<Found>, k: usize, rejected: &mut Vec<Left>) -> (Vec<Found>, (usize, usize)) {
        let mut by_ip: BTreeMap<IpAddr, Found> = BTreeMap::new();
        for f in found {
            match f.host.parse::<IpAddr>() {
                Ok(ip) => {
                    by_ip.entry(ip).or_insert(f);
                }
                Err(_) => rejected.push(Left::one(
                    Rejected::Invalid,
                    format!("{}: a peer is given by its IP address", f.host),
                )),
            }
        }
        let ips: Vec<IpAddr> = cap(by_ip.keys().copied().collect(), MAX_RING, rejected);
        let (discovered, chosen) = mesh::select(&ips, &(self.own_addresses)(), k);
        let names = self.names.of(&chosen).await;
        let peers = chosen
            .iter()
            .zip(names)
            .map(|(ip, name)| {
                let mut f = by_ip.remove(ip).expect("chosen among the found");
                f.labels.insert(PEER_LABEL.to_owned(), name);
                f
            })
            .collect::<Vec<_>>();
        let probed = peers.len();
        (peers, (discovered, probed))
    }

    /// Logs what is left out that was not left out last time.
    fn report(&mut self, rejected: &[Left]) {
        let now: BTreeSet<String> = rejected.iter().map(|l| l.what.clone()).collect();
        let new: Vec<&String> = now.difference(&self.said).collect();
        if let Some(first) = new.first() {
            warn!(source = %self.config.name, left_out = now.len(), new = new.len(), "left out: {first}{}",
                if new.len() > 1 { " (and more: see tracepkt_discovery_rejected)" } else { "" });
        }
        self.said = now;
    }
}

/// The name of a discovered target: the source's, then the address (with its port when the
/// probe uses it): `peers/198.18.0.7`, `api/198.18.0.7:443`, `api/[fd00::7]:443`.
pub(super) fn target_name(source: &str, f: &Found, uses_port: bool) -> String {
    match f.port.filter(|_| uses_port) {
        Some(port) if f.host.contains(':') => format!("{source}/[{}]:{port}", f.host),
        Some(port) => format!("{source}/{}:{port}", f.host),
        None => format!("{source}/{}", f.host),
    }
}

/// The answer in a fixed order, each probe once.
fn unique(mut found: Vec<Found>, uses_port: bool, rejected: &mut Vec<Left>) -> Vec<Found> {
    for f in &mut found {
        if let Ok(ip) = f.host.parse::<IpAddr>() {
            f.host = ip.to_string();
        }
        if !uses_port {
            f.port = None;
        }
    }
    found.sort();
    let mut seen = HashSet::new();
    found.retain(|f| {
        let first = seen.insert((f.host.clone(), f.port));
        if !first {
            rejected.push(Left::one(Rejected::Duplicate, format!("{}: found twice", f.host)));
        }
        first
    });
    found
}

/// The first `max` of a list in its (fixed) order: every node that sees the same answer keeps
/// the same part of it.
fn cap<T>(mut list: Vec<T>, max: usize, rejected: &mut Vec<Left>) -> Vec<T> {
    if list.len() > max {
        let over = list.len() - max;
        rejected.push(Left {
            why: Rejected::Capped,
            count: over as u64,
            what: format!("{over} addresses past the first {max} that one source may give"),
        });
        list.truncate(max);
    }
    list
}

/// Counts by why.
fn count(rejected: &[Left]) -> Rejections {
    let mut counts = Rejections::default();
    for l in rejected {
        counts.add(l.why, l.count);
    }
    counts
}
