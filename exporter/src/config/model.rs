//! The checked configuration: what the rest of tracepkt reads once a file has loaded, its
//! defaults and its limits. Nothing here parses; every value in it has passed the checks of
//! `fields` and `build`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use probe_common::Mechanism;
use serde::Deserialize;

pub use super::discovery::{Discovery, Source};
use crate::pods::PodName;
use crate::probes::dns::{AnswerExpect, DnsQuery};

/// Default port of the HTTP server (`/metrics`): outside the exporter range 9100-9999, which
/// Prometheus' list of default port allocations has fully taken, and below the ephemeral range.
pub const DEFAULT_PORT: u16 = 19977;
/// Default time between two probe rounds of a target.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Default time a probe's journey may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Shortest interval accepted.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Default number of probes per round.
pub const DEFAULT_COUNT: u32 = 1;
/// Largest number of probes per round.
pub const MAX_COUNT: u32 = 100;
/// Most sizes in one target's sweep: each is a probe per round and a series.
pub const MAX_SIZES: usize = 16;
/// Most RTT histogram buckets: each is one more series per target.
pub const MAX_RTT_BUCKETS: usize = 20;
/// Most targets in one file.
pub const MAX_TARGETS: usize = 10_000;
/// Label names that tracepkt sets itself (or that Prometheus sets on scrape, or that histograms
/// and summaries use): a target's `labels` may not use them.
pub const RESERVED_LABELS: &[&str] = &[
    "target",
    "netns",
    "interface",
    "direction",
    "family",
    "hook",
    "table",
    "chain",
    "verdict",
    "reason",
    "stage",
    "kind",
    "program",
    "mechanism",
    "version",
    "kernel",
    "le",
    "quantile",
    "instance",
    "job",
];

/// The default listen address: 127.0.0.1 on [`DEFAULT_PORT`].
pub fn default_listen() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_PORT)
}

/// A loaded and checked configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    /// Top-level interval (targets may override it: see [`Target::interval`]).
    pub interval: Duration,
    /// Top-level timeout (targets may override it: see [`Target::timeout`]).
    pub timeout: Duration,
    /// In file order; names unique; empty only when `cross_node` is on.
    pub targets: Vec<Target>,
    pub otlp: Option<Otlp>,
    /// When the kernel programs are attached.
    pub attach: AttachMode,
    /// Upper bounds (seconds, increasing) of the RTT histogram's buckets; empty keeps only
    /// its sum and count.
    pub rtt_buckets: Vec<f64>,
    /// Attach mechanisms allowed; empty allows all.
    pub mechanisms: Vec<Mechanism>,
    /// The size of the kernel's event ring buffer, when the file sets it.
    pub ring_buffer_bytes: Option<u32>,
    /// Following other nodes' probes, when on.
    pub cross_node: Option<CrossNode>,
    /// Sources of more targets, in file order; names unique.
    pub discovery: Vec<Discovery>,
}

/// Following other tracepkts' probes as they cross this node (`cross_node:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrossNode {
    /// Events a second the kernel programs may report for other nodes' probes; more are
    /// counted, not reported.
    pub budget: u32,
    /// Look one level into VXLAN, Geneve and IPIP packets.
    pub tunnels: bool,
}

impl Default for CrossNode {
    fn default() -> Self {
        CrossNode {
            budget: DEFAULT_FOREIGN_BUDGET,
            tunnels: true,
        }
    }
}

/// Events a second from other nodes' probes, unless `cross_node.budget` says otherwise: a
/// probe crossing a node makes about ten.
pub const DEFAULT_FOREIGN_BUDGET: u32 = 1000;
/// The largest `cross_node.budget` accepted.
pub const MAX_FOREIGN_BUDGET: u32 = 1_000_000;

/// When the kernel programs are attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttachMode {
    /// Only while a probe is in flight: the node's own traffic pays nothing in between.
    #[default]
    InFlight,
    /// All the time (for measuring, or when probe windows overlap anyway).
    Always,
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachMode::InFlight => "in-flight",
            AttachMode::Always => "always",
        })
    }
}

/// One target, with the top-level defaults already applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Unique among targets; the address when the file gives none.
    pub name: String,
    /// An IP address or a syntactically valid host name, as written in the file.
    pub address: String,
    pub ip_version: IpVersion,
    /// Effective interval (the target's own, else the top-level one). At least [`MIN_INTERVAL`].
    pub interval: Duration,
    /// Effective timeout: > 0 and <= `interval`.
    pub timeout: Duration,
    /// Probes per round, 1..=[`MAX_COUNT`].
    pub count: u32,
    /// Extra Prometheus labels; names valid and not reserved.
    pub labels: BTreeMap<String, String>,
    pub probe: Probe,
    /// ICMP: the IP lengths of the probes, one probe of each per round and per `count`, in
    /// this order; empty: the smallest probe only. Unique, each at least the smallest probe.
    pub sizes: Vec<u16>,
    /// ICMP: don't-fragment on every probe.
    pub dont_fragment: bool,
    /// Where the probe starts; `None`: tracepkt's own network namespace.
    pub from: Option<Origin>,
    pub expect: Option<Expect>,
}

/// The network namespace a probe starts in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A file such as `/run/netns/NAME` or `/proc/PID/ns/net`.
    Netns(PathBuf),
    /// A pod on this node, found again at each probe (pods are replaced under the same name).
    Pod(PodName),
}

/// What a target's probe is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Icmp,
    Tcp {
        port: u16,
    },
    Udp {
        port: u16,
        payload: Option<Vec<u8>>,
    },
    /// A DNS query over UDP to `server`, or to the resolver of the namespace the probe starts in.
    Dns {
        query: DnsQuery,
        server: Option<SocketAddr>,
    },
}

impl Probe {
    pub fn protocol(&self) -> &'static str {
        match self {
            Probe::Icmp => "icmp",
            Probe::Tcp { .. } => "tcp",
            Probe::Udp { .. } => "udp",
            Probe::Dns { .. } => "dns",
        }
    }

    pub fn port(&self) -> Option<u16> {
        match self {
            Probe::Icmp => None,
            Probe::Tcp { port } | Probe::Udp { port, .. } => Some(*port),
            Probe::Dns { server, .. } => Some(server.map_or(53, |s| s.port())),
        }
    }
}

/// What every journey of a target must look like. A name is a namespace (its name under
/// `/run/netns`, its pod label, or its inode) or an interface name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expect {
    pub through: Vec<String>,
    pub not_through: Vec<String>,
    pub no_drop: bool,
    /// DNS targets: what the answer must hold.
    pub answer: Option<AnswerExpect>,
}

impl Expect {
    /// Whether it says anything about the path (not only about a DNS answer).
    pub fn has_path(&self) -> bool {
        !self.through.is_empty() || !self.not_through.is_empty() || self.no_drop
    }
}

pub use crate::probes::IpVersion;

/// Where to send OpenTelemetry traces, as the file says; unset values fall back to the
/// standard `OTEL_*` variables (`export::otlp::Settings`).
#[derive(Debug, Clone, PartialEq)]
pub struct Otlp {
    /// Starts with `http://`.
    pub endpoint: Option<String>,
    pub protocol: Option<OtlpProtocol>,
    pub timeout: Option<Duration>,
    pub service_name: Option<String>,
    /// Fraction of answered probes whose journey is sent as a trace, 0..=1.
    pub sample_ratio: f64,
    /// Where the built-in page links a trace: `{trace_id}` is replaced by its id.
    pub trace_url: Option<String>,
}

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
pub enum OtlpProtocol {
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

impl fmt::Display for OtlpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        })
    }
}
