//! The kinds of probe, one file each: what a kind's settings are, where its probes go, how it
//! sends one on the engine's flights, how it reads the answer, how `trace` speaks of it and
//! which of its own metrics it records. `serve` and `trace` go through [`Kind`] and never ask
//! which kind they hold.
//!
//! A new kind is a file with a type that implements [`Kind`], and one line in [`kinds!`] below:
//! the only list of them.

mod address;
pub mod dns;
mod icmp;
mod sized;
mod sockets;
mod tcp;
mod udp;

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use probe_common::payload::TraceContext;

pub use self::address::{IpVersion, Unresolved, resolve};
pub use self::icmp::Icmp;
pub use self::sized::SizedIcmp;
pub use self::tcp::Tcp;
pub use self::udp::Udp;
use crate::engine::{Engine, JourneyKey, Landed, Lease};
use crate::export::labels::TargetLabels;
use crate::export::prometheus::Metrics;
use crate::journey::Journey;
use crate::pods::{self, Locator, PodName};

/// A future of a kind's, boxed so that [`Kind`] stays a trait the front-ends can hold.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Declares the kinds: each a variant of [`Probe`] holding its own settings.
macro_rules! kinds {
    ($($kind:ident($ty:ty),)+) => {
        /// A target's probe: its kind, with that kind's checked settings.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Probe {
            $($kind($ty),)+
        }

        impl std::ops::Deref for Probe {
            type Target = dyn Kind;

            fn deref(&self) -> &(dyn Kind + 'static) {
                match self {
                    $(Probe::$kind(k) => k,)+
                }
            }
        }

        $(impl From<$ty> for Probe {
            fn from(k: $ty) -> Probe {
                Probe::$kind(k)
            }
        })+
    };
}

kinds! {
    Icmp(Icmp),
    Sized(SizedIcmp),
    Tcp(Tcp),
    Udp(Udp),
    Dns(dns::Dns),
}

/// What every kind of probe does. Sending is the kind's own; what comes after (the page,
/// the metrics common to all, the spans, the trace table) is the front-ends'.
pub trait Kind: fmt::Debug + Send + Sync {
    /// The protocol as the page and target names show it: icmp, tcp, udp, dns.
    fn protocol(&self) -> &'static str;

    /// The port its probes go to; `None` for ICMP.
    fn port(&self) -> Option<u16> {
        None
    }

    /// Where its probes go, looked up at each probe: the target's `address` as a host name
    /// resolves to an address of `family`. `from`: the namespace the probe starts in.
    fn resolve<'a>(
        &'a self,
        address: &'a str,
        family: IpVersion,
        from: Option<&'a Path>,
    ) -> BoxFuture<'a, Result<IpAddr, Unresolved>> {
        let _ = from;
        Box::pin(resolve(address, family))
    }

    /// How many probes a round sends for each of its `count`: a sweep, one of each size.
    fn sweep(&self) -> usize {
        1
    }

    /// Sends `shot` and waits for its answer, or its timeout: the journey, and what the kind
    /// read in the answer. A probe that cannot be sent has a journey that says why.
    fn ask<'a>(&'a self, kit: &'a Kit, shot: Shot<'a>) -> BoxFuture<'a, Asked>;

    /// How `trace` speaks of a probe of this kind.
    fn words(&self, asked: &Asked) -> Words;

    /// A target of this kind is added to the metrics: the series it has beyond every
    /// target's.
    fn added(&self, metrics: &TargetMetrics<'_>) {
        let _ = metrics;
    }

    /// A target's round of probes is over: what the kind makes of the round as a whole.
    fn round_done(&self, metrics: &TargetMetrics<'_>, round: &Round) {
        let _ = (metrics, round);
    }
}

/// What every kind sends with: the engine, and the raw ICMP sockets the echo kinds share.
/// Cheap to clone.
#[derive(Clone)]
pub struct Kit {
    engine: Engine,
    icmp: Arc<icmp::Sockets>,
}

impl Kit {
    /// Opens the shared ICMP sockets: without them tracepkt cannot probe at all.
    pub fn new(engine: Engine) -> anyhow::Result<Kit> {
        Ok(Kit {
            engine,
            icmp: Arc::new(icmp::Sockets::open()?),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// One probe: a new trace context, `send` with it, and the journey of what it brought
    /// back with what else `send` returns. When it could not be sent, the journey, filed under
    /// `unsent`, says why.
    async fn fly<T: Default, Fut>(&self, unsent: JourneyKey, send: impl FnOnce(TraceContext) -> Fut) -> (Journey, T)
    where
        Fut: Future<Output = anyhow::Result<(Landed, T)>>,
    {
        let trace = self.engine.trace_context();
        let (landed, more) = send(trace)
            .await
            .unwrap_or_else(|e| (Landed::unsent(unsent, &e), T::default()));
        (self.engine.journey(landed, trace), more)
    }
}

/// One probe to send.
#[derive(Clone, Copy)]
pub struct Shot<'a> {
    /// Its user's echo id and counters' tag.
    pub lease: &'a Lease,
    pub seq: u16,
    /// Where it goes, as [`Kind::resolve`] found it.
    pub addr: IpAddr,
    /// The network namespace it starts in (a file such as `/run/netns/NAME`); `None`:
    /// tracepkt's own.
    pub from: Option<&'a Path>,
    pub timeout: Duration,
    /// Which of a round's probes it is, below [`Kind::sweep`].
    pub index: usize,
}

/// A probe sent and its answer judged.
pub struct Asked {
    /// Where it went.
    pub addr: IpAddr,
    pub journey: Journey,
    /// A sized probe's IP length: a sweep's probes of each size are compared with the last
    /// of their size, and a round, not one of them, says whether the target answered.
    pub size: Option<u16>,
    /// What the kind read in the answer, for a kind that reads it (DNS).
    pub reading: Option<Box<dyn Reading>>,
}

impl Asked {
    fn new(addr: IpAddr, journey: Journey) -> Asked {
        Asked {
            addr,
            journey,
            size: None,
            reading: None,
        }
    }

    /// Why the answer is not right (a DNS error, a record missing), beyond the outcome.
    pub fn violation(&self) -> Option<String> {
        self.reading.as_ref().and_then(|r| r.violation())
    }
}

/// What a kind read in an answer, and how each front-end reports it.
pub trait Reading: Send + Sync {
    /// What is wrong with the answer: the journey's violation when its path is as expected.
    fn violation(&self) -> Option<String>;

    /// What `trace` adds to the probe's summary line, and whether the answer is right.
    fn summary(&self) -> (Option<String>, bool);

    /// Records the kind's own metrics of the answer.
    fn record(&self, metrics: &TargetMetrics<'_>);
}

/// How `trace` speaks of one probe.
pub struct Words {
    /// Where it went and what names it: `198.18.0.1 (id 7 seq 0)`,
    /// `198.18.0.1:80 over tcp (from port 40000)`.
    pub to: String,
    /// What its answer is called: reply, connected, answered.
    pub answered: &'static str,
    /// What to add after its outcome.
    pub note: Option<String>,
}

/// Where a TCP or UDP probe went and what names it, for `trace`.
fn ported_to(asked: &Asked, port: u16) -> String {
    let j = &asked.journey;
    format!(
        "{} over {} (from port {})",
        SocketAddr::new(asked.addr, port),
        j.proto.as_str(),
        j.probe
    )
}

/// What a round of a target's probes brought back.
#[derive(Debug, Default)]
pub struct Round {
    /// Sized probes: whether the probe of each size was answered.
    answered: Vec<(u16, bool)>,
}

impl Round {
    pub fn add(&mut self, asked: &Asked) {
        if let Some(size) = asked.size {
            self.answered.push((size, asked.journey.replied()));
        }
    }
}

/// One target's series, for a kind to record its own in.
pub struct TargetMetrics<'a> {
    pub metrics: &'a Metrics,
    pub tag: u32,
    pub labels: &'a TargetLabels,
}

/// Where a target's probes start: a namespace as given, or a pod's, looked up again at each
/// probe (a pod may be replaced under the same name, or moved to another node).
pub enum Start {
    Here,
    Netns(PathBuf),
    Pod(Box<Locator>),
}

impl Start {
    pub fn netns(path: PathBuf) -> Start {
        Start::Netns(path)
    }

    pub fn pod(name: PodName) -> Start {
        Start::Pod(Box::new(Locator::new(pods::Roots::from_env(), name)))
    }

    /// The namespace the next probe starts in; `None`: tracepkt's own.
    pub fn locate(&mut self) -> Result<Option<PathBuf>, String> {
        match self {
            Start::Here => Ok(None),
            Start::Netns(path) => Ok(Some(path.clone())),
            Start::Pod(locator) => locator.netns().map(Some),
        }
    }
}
