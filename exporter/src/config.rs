//! The configuration file of `tracepkt serve` (YAML).
//!
//! ```yaml
//! listen: 127.0.0.1:19977      # optional, default 127.0.0.1:DEFAULT_PORT
//! interval: 10s                # optional, default 10s, at least 100ms
//! timeout: 2s                  # optional, default 2s, > 0 and <= each target's interval
//! targets:                     # at least one, unless cross_node is on
//!   - address: 192.0.2.10      # IP address or host name (resolved at each probe)
//!     name: gateway            # optional, default: the address; unique
//!     ip_version: 4            # optional: 4, 6 or any (default)
//!     interval: 30s            # optional overrides of the top-level values
//!     timeout: 5s
//!     count: 3                 # optional, probes per round, 1..=100, default 1
//!     labels: {site: paris}    # optional extra Prometheus labels
//!     protocol: tcp            # optional: icmp (default), tcp, udp or dns
//!     port: 443                # tcp and udp: the destination port (required)
//!     payload: "hello"         # udp only: what to send (default: tracepkt's 32-byte payload, or
//!                              #   to port 53 a DNS query)
//!     size: [1400, 1500]       # optional, icmp only: the probe's IP length, or a sweep of them
//!     dont_fragment: true      # optional, icmp only: set don't-fragment (default false)
//!     from: {netns: client}    # optional: start the probe in this network namespace (a name
//!                              #   under /run/netns or a path), or {pod: namespace/name}
//!   - protocol: dns            # a DNS probe has no address: it asks
//!     query: web.shop.svc.cluster.local/A   #   NAME[/TYPE] (type A unless given)
//!     server: 10.96.0.10       #   optional, IP[:PORT]; default: the first nameserver of the
//!                              #   resolv.conf of the namespace the probe starts in
//!     expect: {answer: [10.0.0.7]}  # optional: addresses or names the answer must hold, or
//!                              #   `answer: any` for any non-empty answer
//!     expect:                  # optional: what every journey's path must look like
//!       through: [backend]     #   namespaces or interfaces it must cross
//!       not_through: [eth9]    #   ones it must not
//!       no_drop: true          #   no drop and no netfilter DROP
//! otlp:                        # optional; tracing is on when an endpoint is set here or in
//!   endpoint: http://127.0.0.1:4317  #   OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT (this file wins)
//!   protocol: grpc             # or http/protobuf; default: OTEL_EXPORTER_OTLP_PROTOCOL, else grpc
//!   timeout: 10s               # per export request; default OTEL_EXPORTER_OTLP_TIMEOUT, else 10s
//!   sample_ratio: 1.0          # fraction of answered probes traced, 0..=1; failures always are
//!   service_name: tracepkt     # default OTEL_SERVICE_NAME, else tracepkt
//!   trace_url: http://tempo.example/trace/{trace_id}  # optional: where the page links traces
//! attach: in-flight            # optional: in-flight (default) or always; always when
//!                              #   cross_node is on
//! cross_node:                  # optional: follow other nodes' probes across this node
//!   enabled: true              #   default false
//!   budget: 1000               #   events a second at most, 1..=1000000; default 1000
//!   tunnels: true              #   also look inside VXLAN, Geneve and IPIP; default true
//! rtt_buckets: [0.001, 0.01]   # optional RTT histogram buckets (seconds); default none
//! mechanisms: [tracepoint]     # optional: attach only by these (tp_btf, tracepoint, kprobe)
//! ring_buffer_bytes: 1048576   # optional: the kernel's event ring buffer, a power of two from
//!                              #   4096 (one page) to 256 MiB; default 1 MiB
//! ```
//!
//! # Where errors point
//!
//! Every error reads `file:line:column: path: what is wrong`.
//!
//! * Syntax and type errors, unknown keys (every level denies them), and everything checked while
//!   one value is deserialized (durations, addresses, label names, counts, endpoints...) are
//!   serde_norway errors: the checks run inside the visitors, so serde_norway attaches the position
//!   of the offending node itself.
//! * Checks that need several values at once (duplicate names, timeout against interval,
//!   `ip_version` against an IP literal) run after deserializing. serde_norway has no `Spanned`
//!   type and its `Value` keeps no positions, so the position of the node to blame is found by
//!   walking the same text again with serde_norway along the node's path (`targets[3].name`) and
//!   failing on purpose when the walk reaches it: serde_norway then reports that node's line and
//!   column, exactly as for a type error. This uses the same parser as the real load, so anchors,
//!   aliases, flow style and multi-line scalars need no special handling; if the walk ever fails to
//!   reach the node, the error points at the nearest enclosing node that it does reach.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use probe_common::Mechanism;

use crate::dns::{AnswerExpect, DnsQuery};
use crate::pods::PodName;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

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

pub use crate::prober::IpVersion;

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

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {error}", .path.display())]
    Io { path: PathBuf, error: std::io::Error },
    /// The file was read but is not a valid configuration. Displays as
    /// `file:line:column: path: what is wrong` (`file: ...` when no position is known).
    #[error("{file}:{}{message}", location_prefix(*.line, *.column))]
    Invalid {
        /// The file name as given to [`Config::load`] or [`Config::parse`].
        file: String,
        /// 1-based.
        line: Option<usize>,
        /// 1-based.
        column: Option<usize>,
        /// `path: what is wrong`, e.g. `targets[1].timeout: invalid duration "10 parsecs": ...`.
        message: String,
    },
}

#[cfg(test)]
impl ConfigError {
    /// 1-based line of the offending node, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Invalid { line, .. } => *line,
            ConfigError::Io { .. } => None,
        }
    }

    /// 1-based column of the offending node, when known.
    pub fn column(&self) -> Option<usize> {
        match self {
            ConfigError::Invalid { column, .. } => *column,
            ConfigError::Io { .. } => None,
        }
    }
}

fn location_prefix(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!("{line}:{column}: "),
        (Some(line), None) => format!("{line}: "),
        _ => " ".to_owned(),
    }
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = std::fs::read(path).map_err(|error| ConfigError::Io {
            path: path.to_owned(),
            error,
        })?;
        let file_label = path.display().to_string();
        let text = match std::str::from_utf8(&bytes) {
            Ok(text) => text,
            Err(e) => return Err(not_utf8(&file_label, &bytes, e)),
        };
        Config::parse(text, &file_label)
    }

    /// Parses and checks a configuration; `file_label` names it in errors.
    pub fn parse(text: &str, file_label: &str) -> Result<Config, ConfigError> {
        let raw: Result<RawConfig, _> = {
            let _budget = TextBudget::start(text.len());
            serde_norway::from_str(text)
        };
        let raw = raw.map_err(|e| yaml_error(file_label, e))?;
        build(raw).map_err(|problem| {
            let (line, column) = locate_nearest(text, &problem.path).unzip();
            ConfigError::Invalid {
                file: file_label.to_owned(),
                line,
                column,
                message: format!("{}: {}", path_string(&problem.path), problem.message),
            }
        })
    }
}

/// How much text a configuration's values may add up to once its aliases are expanded, as a
/// multiple of the file's size (plus a floor). An alias repeats a node without repeating its
/// text in the file: without a bound, a 1 MB file naming a 1 MB value 2,000 times takes 2 GB
/// and seconds to load, and a slightly larger one all the memory there is. A file without
/// aliases never comes near the bound.
const TEXT_BUDGET_FACTOR: usize = 4;
const TEXT_BUDGET_FLOOR: usize = 1 << 20;
/// What each value costs beyond its text: its `String` and its slot in a list or map.
const TEXT_OVERHEAD: usize = 16;
/// Most targets in one file.
pub const MAX_TARGETS: usize = 10_000;

thread_local! {
    /// (bytes left, budget) while a configuration is deserialized on this thread.
    static TEXT_LEFT: std::cell::Cell<Option<(usize, usize)>> = const { std::cell::Cell::new(None) };
}

/// The text budget of one deserialization, on this thread, until dropped.
struct TextBudget;

impl TextBudget {
    fn start(file_len: usize) -> TextBudget {
        let budget = file_len
            .saturating_mul(TEXT_BUDGET_FACTOR)
            .saturating_add(TEXT_BUDGET_FLOOR);
        TEXT_LEFT.with(|left| left.set(Some((budget, budget))));
        TextBudget
    }

    /// Takes a value of `len` bytes from the budget, if one is running.
    fn charge(len: usize) -> Result<(), String> {
        TEXT_LEFT.with(|left| match left.get() {
            None => Ok(()),
            Some((rest, budget)) => match rest.checked_sub(len.saturating_add(TEXT_OVERHEAD)) {
                Some(rest) => {
                    left.set(Some((rest, budget)));
                    Ok(())
                }
                None => Err(format!(
                    "the configuration's values add up to more than {} MiB of text once its aliases are expanded ({}x the file's size): are aliases repeating a long value?",
                    budget >> 20,
                    TEXT_BUDGET_FACTOR
                )),
            },
        })
    }
}

impl Drop for TextBudget {
    fn drop(&mut self) {
        TEXT_LEFT.with(|left| left.set(None));
    }
}

/// Where a file stops being UTF-8, as line and column of the first bad byte: a binary file or
/// another encoding is named as such instead of as a read error.
fn not_utf8(file_label: &str, bytes: &[u8], e: std::str::Utf8Error) -> ConfigError {
    let good = &bytes[..e.valid_up_to()];
    let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = good.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    // Characters, not bytes, as serde_norway counts columns.
    let column = String::from_utf8_lossy(&good[line_start..]).chars().count() + 1;
    ConfigError::Invalid {
        file: file_label.to_owned(),
        line: Some(line),
        column: Some(column),
        message: format!(
            "the file is not UTF-8 text (byte {:#04x}): a configuration is YAML in UTF-8",
            bytes[e.valid_up_to()]
        ),
    }
}

/// serde_norway's message without its " at line L column C" (the position goes in front instead).
fn yaml_error(file_label: &str, error: serde_norway::Error) -> ConfigError {
    let location = error.location();
    let mut message = error.to_string();
    if let Some(location) = &location {
        let suffix = format!(" at line {} column {}", location.line(), location.column());
        message = message.replacen(&suffix, "", 1);
    }
    ConfigError::Invalid {
        file: file_label.to_owned(),
        line: location.as_ref().map(|l| l.line()),
        column: location.as_ref().map(|l| l.column()),
        message,
    }
}

// ---------------------------------------------------------------------------------------------
// The file as written.

#[derive(Deserialize)]
#[serde(expecting = "a mapping of tracepkt settings", deny_unknown_fields)]
struct RawConfig {
    #[serde(default, deserialize_with = "listen_address")]
    listen: Option<SocketAddr>,
    #[serde(default, deserialize_with = "interval")]
    interval: Option<Duration>,
    #[serde(default, deserialize_with = "timeout")]
    timeout: Option<Duration>,
    #[serde(deserialize_with = "targets")]
    targets: Vec<RawTarget>,
    #[serde(default)]
    otlp: Option<RawOtlp>,
    #[serde(default)]
    attach: Option<AttachMode>,
    #[serde(default, deserialize_with = "rtt_buckets")]
    rtt_buckets: Option<Vec<f64>>,
    #[serde(default)]
    mechanisms: Vec<MechanismName>,
    #[serde(default, deserialize_with = "ring_buffer_bytes")]
    ring_buffer_bytes: Option<u32>,
    #[serde(default)]
    cross_node: Option<RawCrossNode>,
}

#[derive(Deserialize)]
#[serde(
    expecting = "a mapping with enabled:, and optionally budget: and tunnels:",
    deny_unknown_fields
)]
struct RawCrossNode {
    #[serde(default)]
    enabled: bool,
    #[serde(default, deserialize_with = "foreign_budget")]
    budget: Option<u32>,
    #[serde(default)]
    tunnels: Option<bool>,
}

fn foreign_budget<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    struct BudgetVisitor;

    impl<'de> Visitor<'de> for BudgetVisitor {
        type Value = Option<u32>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "events a second, from 1 to {MAX_FOREIGN_BUDGET}")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            self.visit_i128(i128::from(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            self.visit_i128(i128::from(v))
        }

        fn visit_i128<E: de::Error>(self, v: i128) -> Result<Self::Value, E> {
            match u32::try_from(v) {
                Ok(v) if (1..=MAX_FOREIGN_BUDGET).contains(&v) => Ok(Some(v)),
                _ => Err(E::custom(format!(
                    "budget {v} is out of range: events a second, from 1 to {MAX_FOREIGN_BUDGET} (leave cross_node off to recognise none)"
                ))),
            }
        }
    }

    d.deserialize_any(BudgetVisitor)
}

/// An attach mechanism as the config names it.
struct MechanismName(Mechanism);

impl<'de> Deserialize<'de> for MechanismName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "tp_btf, tracepoint or kprobe", |s| {
            Mechanism::from_name(s)
                .map(MechanismName)
                .ok_or_else(|| format!("unknown attach mechanism {s:?}: expected tp_btf, tracepoint or kprobe"))
        })
    }
}

#[derive(Deserialize)]
#[serde(expecting = "a target: a mapping with at least an address", deny_unknown_fields)]
struct RawTarget {
    #[serde(default, deserialize_with = "address")]
    address: Option<String>,
    #[serde(default, deserialize_with = "dns_query")]
    query: Option<DnsQuery>,
    #[serde(default, deserialize_with = "dns_server")]
    server: Option<SocketAddr>,
    #[serde(default, deserialize_with = "target_name")]
    name: Option<String>,
    #[serde(default)]
    ip_version: Option<IpVersion>,
    #[serde(default, deserialize_with = "interval")]
    interval: Option<Duration>,
    #[serde(default, deserialize_with = "timeout")]
    timeout: Option<Duration>,
    #[serde(default, deserialize_with = "count")]
    count: Option<u32>,
    #[serde(default, deserialize_with = "labels")]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    protocol: Option<RawProtocol>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    payload: Option<Text>,
    #[serde(default, deserialize_with = "sizes")]
    size: Option<Vec<u16>>,
    #[serde(default)]
    dont_fragment: Option<bool>,
    #[serde(default)]
    from: Option<RawFrom>,
    #[serde(default)]
    expect: Option<RawExpect>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum RawProtocol {
    Icmp,
    Tcp,
    Udp,
    Dns,
}

#[derive(Deserialize)]
#[serde(
    expecting = "a mapping with netns: (a namespace name or path) or pod: (namespace/name)",
    deny_unknown_fields
)]
struct RawFrom {
    #[serde(default, deserialize_with = "netns_ref")]
    netns: Option<PathBuf>,
    #[serde(default, deserialize_with = "pod_ref")]
    pod: Option<PodName>,
}

#[derive(Deserialize)]
#[serde(expecting = "a mapping with through, not_through or no_drop", deny_unknown_fields)]
struct RawExpect {
    #[serde(default)]
    through: Vec<Text>,
    #[serde(default)]
    not_through: Vec<Text>,
    #[serde(default)]
    no_drop: bool,
    #[serde(default, deserialize_with = "answer_expect")]
    answer: Option<AnswerExpect>,
}

/// `answer: any`, or a list of the addresses or names the answer must hold.
fn answer_expect<'de, D: Deserializer<'de>>(d: D) -> Result<Option<AnswerExpect>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "`any`, or a list of addresses or names the answer must hold")]
    enum Raw {
        Word(String),
        List(Vec<String>),
    }
    match Raw::deserialize(d)? {
        Raw::Word(w) if w == "any" => Ok(Some(AnswerExpect::NonEmpty)),
        Raw::Word(w) => Err(de::Error::custom(format!(
            "answer: {w:?} is neither `any` nor a list (write [{w}] for one value)"
        ))),
        Raw::List(l) if l.is_empty() => Err(de::Error::custom(
            "answer: the list is empty (write `any` for any answer)",
        )),
        Raw::List(l) => Ok(Some(AnswerExpect::Holds(l))),
    }
}

fn dns_query<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DnsQuery>, D::Error> {
    parse_str(d, "a DNS query, NAME[/TYPE]", |s| s.parse().map(Some))
}

/// A DNS server: an IP address, with a port when it is not 53.
fn dns_server<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    parse_str(d, "a DNS server, IP or IP:PORT", |s| {
        s.parse::<SocketAddr>()
            .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
            .map(Some)
            .map_err(|_| format!("{s:?} is not an IP address or IP:PORT (a DNS server is given by address)"))
    })
}

/// A pod: `namespace/name`.
fn pod_ref<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PodName>, D::Error> {
    parse_str(d, "a pod as namespace/name", |s| s.parse().map(Some))
}

/// A network namespace: a name under `/run/netns`, or an absolute path (`/proc/PID/ns/net`).
fn netns_ref<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    parse_str(d, "a namespace name or an absolute path", |s| netns_path(s).map(Some))
}

/// The file of a network namespace given as a name under `/run/netns` or an absolute path
/// (`/proc/PID/ns/net`); the config's `from: {netns:}` and `trace --from` take the same.
/// A relative path is neither: `../x` must not reach outside `/run/netns`.
pub fn netns_path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("the namespace must not be empty".to_owned());
    }
    if s.starts_with('/') {
        return Ok(PathBuf::from(s));
    }
    if s.contains('/') || s == "." || s == ".." {
        return Err(format!(
            "{s:?} is neither a namespace name (no '/') nor an absolute path"
        ));
    }
    if s.contains('\0') {
        return Err(format!("{s:?} contains a NUL byte"));
    }
    Ok(Path::new("/run/netns").join(s))
}

#[derive(Deserialize)]
#[serde(
    expecting = "a mapping with endpoint, protocol, timeout, sample_ratio, service_name or trace_url",
    deny_unknown_fields
)]
struct RawOtlp {
    #[serde(default, deserialize_with = "otlp_endpoint")]
    endpoint: Option<String>,
    #[serde(default)]
    protocol: Option<OtlpProtocol>,
    #[serde(default, deserialize_with = "timeout")]
    timeout: Option<Duration>,
    #[serde(default, deserialize_with = "sample_ratio")]
    sample_ratio: Option<f64>,
    #[serde(default)]
    service_name: Option<Text>,
    #[serde(default, deserialize_with = "trace_url")]
    trace_url: Option<String>,
}

// Field deserializers. Each check runs inside a visitor, never after `deserialize_*` returns: an
// error raised inside gets the position of the value itself, one raised after would get the
// position of the enclosing mapping.

/// Visits a scalar as text and converts it with `parse`.
struct StrVisitor<T, F> {
    expecting: &'static str,
    parse: F,
    value: PhantomData<T>,
}

impl<'de, T, F: FnOnce(&str) -> Result<T, String>> Visitor<'de> for StrVisitor<T, F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        // Before `parse` copies anything.
        TextBudget::charge(v.len()).map_err(E::custom)?;
        (self.parse)(v).map_err(E::custom)
    }
}

fn parse_str<'de, D, T, F>(d: D, expecting: &'static str, parse: F) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    F: FnOnce(&str) -> Result<T, String>,
{
    d.deserialize_str(StrVisitor {
        expecting,
        parse,
        value: PhantomData,
    })
}

/// A string value, counted against the text budget like every other.
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "a string", |s| Ok(Text(s.to_owned())))
    }
}

fn texts(v: Vec<Text>) -> Vec<String> {
    v.into_iter().map(|t| t.0).collect()
}

fn listen_address<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    parse_str(d, "an address such as 127.0.0.1:9977", |s| {
        s.parse().map(Some).map_err(|_| {
            format!(
                "invalid listen address {s:?}: expected IP:PORT, such as 127.0.0.1:{DEFAULT_PORT} or [::1]:{DEFAULT_PORT}"
            )
        })
    })
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

fn interval<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    parse_str(d, "a duration such as 10s", |s| {
        let interval = parse_duration(s)?;
        if interval < MIN_INTERVAL {
            return Err(format!(
                "interval {s:?} is too short: the minimum is {}",
                humantime::format_duration(MIN_INTERVAL)
            ));
        }
        Ok(Some(interval))
    })
}

fn timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    parse_str(d, "a duration such as 2s", |s| {
        let timeout = parse_duration(s)?;
        if timeout.is_zero() {
            return Err(format!("timeout {s:?} must be greater than zero"));
        }
        Ok(Some(timeout))
    })
}

fn address<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    parse_str(d, "an IP address or a host name", |s| parse_address(s).map(Some))
}

fn target_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    parse_str(d, "a target name", |s| {
        if s.trim().is_empty() {
            return Err("a target name must not be empty".to_owned());
        }
        Ok(Some(s.to_owned()))
    })
}

/// The largest ring buffer accepted: far more than any probe rate needs.
const MAX_RING_BYTES: u64 = 256 << 20;

fn ring_buffer_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    struct RingVisitor;

    impl<'de> Visitor<'de> for RingVisitor {
        type Value = Option<u32>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a power of two from 4096 to {MAX_RING_BYTES}")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            if !v.is_power_of_two() || !(4096..=MAX_RING_BYTES).contains(&v) {
                return Err(E::custom(format!(
                    "ring_buffer_bytes {v} is not a power of two from 4096 (one page) to {MAX_RING_BYTES} (256 MiB)"
                )));
            }
            Ok(Some(v as u32))
        }
    }

    d.deserialize_u64(RingVisitor)
}

fn rtt_buckets<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<f64>>, D::Error> {
    struct BucketsVisitor;

    impl<'de> Visitor<'de> for BucketsVisitor {
        type Value = Option<Vec<f64>>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of increasing bucket bounds in seconds, such as [0.001, 0.01, 0.1]")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out: Vec<f64> = Vec::new();
            while let Some(v) = seq.next_element::<f64>()? {
                if !v.is_finite() || v <= 0.0 {
                    return Err(de::Error::custom(format!(
                        "RTT bucket {v} is not a positive number of seconds"
                    )));
                }
                if let Some(&last) = out.last()
                    && v <= last
                {
                    return Err(de::Error::custom(format!(
                        "RTT bucket bounds must increase: {v} comes after {last}"
                    )));
                }
                if out.len() == MAX_RTT_BUCKETS {
                    return Err(de::Error::custom(format!(
                        "more than {MAX_RTT_BUCKETS} RTT buckets: each is one more series per target"
                    )));
                }
                out.push(v);
            }
            Ok(Some(out))
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }

    d.deserialize_seq(BucketsVisitor)
}

fn count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    struct CountVisitor;

    impl CountVisitor {
        fn check<E: de::Error>(v: i128) -> Result<Option<u32>, E> {
            match u32::try_from(v) {
                Ok(count) if (1..=MAX_COUNT).contains(&count) => Ok(Some(count)),
                _ => Err(E::custom(format!(
                    "count {v} is out of range: expected 1 to {MAX_COUNT}"
                ))),
            }
        }
    }

    impl<'de> Visitor<'de> for CountVisitor {
        type Value = Option<u32>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a whole number from 1 to {MAX_COUNT}")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Self::check(v.into())
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Self::check(v.into())
        }
    }

    d.deserialize_u64(CountVisitor)
}

/// `size:` one IP length or a list of them.
fn sizes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u16>>, D::Error> {
    struct SizesVisitor;

    fn check<E: de::Error>(v: i128) -> Result<u16, E> {
        let min = probe_common::PROBE_L3_LEN_V4;
        match u16::try_from(v) {
            Ok(size) if usize::from(size) >= min => Ok(size),
            _ => Err(E::custom(format!(
                "size {v} is out of range: expected an IP packet length from {min} (the smallest probe; {} over IPv6) to {}",
                probe_common::PROBE_L3_LEN_V6,
                probe_common::MAX_PROBE_LEN
            ))),
        }
    }

    impl<'de> Visitor<'de> for SizesVisitor {
        type Value = Option<Vec<u16>>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an IP packet length in bytes, or a list of them")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(vec![check(v.into())?]))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(vec![check(v.into())?]))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut sizes: Vec<u16> = Vec::new();
            while let Some(v) = seq.next_element::<i64>()? {
                let size = check(v.into())?;
                if sizes.contains(&size) {
                    return Err(de::Error::custom(format!("size {size} is listed twice")));
                }
                sizes.push(size);
            }
            if sizes.is_empty() {
                return Err(de::Error::custom("the list of sizes is empty"));
            }
            if sizes.len() > MAX_SIZES {
                return Err(de::Error::custom(format!(
                    "{} sizes: at most {MAX_SIZES} per target",
                    sizes.len()
                )));
            }
            Ok(Some(sizes))
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }

    d.deserialize_any(SizesVisitor)
}

fn targets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<RawTarget>, D::Error> {
    struct TargetsVisitor;

    impl<'de> Visitor<'de> for TargetsVisitor {
        type Value = Vec<RawTarget>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of targets")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut targets = Vec::new();
            while let Some(target) = seq.next_element()? {
                if targets.len() == MAX_TARGETS {
                    return Err(de::Error::custom(format!(
                        "more than {MAX_TARGETS} targets: split them over several tracepkt instances"
                    )));
                }
                targets.push(target);
            }
            // Empty is refused after reading, unless cross_node is on: see `build`.
            Ok(targets)
        }
    }

    d.deserialize_seq(TargetsVisitor)
}

fn labels<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    /// A label name, checked against the rules and against the names already seen.
    struct NameSeed<'a>(&'a BTreeMap<String, String>);

    impl<'de> DeserializeSeed<'de> for NameSeed<'_> {
        type Value = String;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
            parse_str(d, "a label name", |s| {
                check_label_name(s).map_err(|why| format!("invalid label name {s:?}: {why}"))?;
                if self.0.contains_key(s) {
                    return Err(format!("label {s:?} is given twice"));
                }
                Ok(s.to_owned())
            })
        }
    }

    struct ValueSeed<'a>(&'a str);

    impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
        type Value = String;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
            parse_str(d, "a label value", |s| {
                if s.is_empty() {
                    // Prometheus treats an empty value as an absent label.
                    return Err(format!("label {:?} has an empty value", self.0));
                }
                Ok(s.to_owned())
            })
        }
    }

    struct LabelsVisitor;

    impl<'de> Visitor<'de> for LabelsVisitor {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of label names to values")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut labels = BTreeMap::new();
            while let Some(name) = map.next_key_seed(NameSeed(&labels))? {
                let value = map.next_value_seed(ValueSeed(&name))?;
                labels.insert(name, value);
            }
            Ok(labels)
        }
    }

    d.deserialize_map(LabelsVisitor)
}

fn sample_ratio<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    struct RatioVisitor;

    impl<'de> Visitor<'de> for RatioVisitor {
        type Value = Option<f64>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a fraction between 0 and 1")
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            if !(0.0..=1.0).contains(&v) {
                return Err(E::custom(format!(
                    "sample_ratio {v} is not between 0 and 1 (the fraction of answered probes traced)"
                )));
            }
            Ok(Some(v))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            self.visit_f64(v as f64)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            self.visit_f64(v as f64)
        }
    }

    d.deserialize_f64(RatioVisitor)
}

fn trace_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    parse_str(d, "a URL containing {trace_id}", |s| {
        let lower = s.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Err(format!("trace_url {s:?} must start with http:// or https://"));
        }
        if !s.contains("{trace_id}") {
            return Err(format!("trace_url {s:?} has no {{trace_id}} to replace"));
        }
        Ok(Some(s.to_owned()))
    })
}

fn otlp_endpoint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    parse_str(d, "an http:// URL", |s| check_otlp_endpoint(s).map(Some))
}

/// An OTLP collector URL tracepkt can send to: plain `http://` with a host.
pub fn check_otlp_endpoint(s: &str) -> Result<String, String> {
    let lower = s.to_ascii_lowercase();
    if lower.starts_with("https://") {
        return Err(format!(
            "OTLP endpoint {s:?}: tracepkt sends plain-text OTLP only; point it at a collector on http://"
        ));
    }
    let Some(rest) = lower.strip_prefix("http://") else {
        return Err(format!("invalid OTLP endpoint {s:?}: it must start with http://"));
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("invalid OTLP endpoint {s:?}: no host after the scheme"));
    }
    if s.chars().any(char::is_whitespace) {
        return Err(format!("invalid OTLP endpoint {s:?}: it contains white space"));
    }
    Ok(s.to_owned())
}

// ---------------------------------------------------------------------------------------------
// Value checks.

/// An IP address, or a host name made of RFC 1123 labels.
fn parse_address(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("the address must not be empty".to_owned());
    }
    if s.parse::<IpAddr>().is_ok() {
        return Ok(s.to_owned());
    }
    if s.starts_with('[') {
        return Err(format!("invalid address {s:?}: write IPv6 addresses without brackets"));
    }
    if s.contains(':') {
        return Err(format!("invalid address {s:?}: not a valid IPv6 address"));
    }
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!("invalid address {s:?}: not a valid IPv4 address"));
    }
    check_host_name(s)
        .map_err(|why| format!("invalid address {s:?}: not an IP address nor a valid host name: {why}"))?;
    Ok(s.to_owned())
}

/// Host name syntax (RFC 1123 section 2.1, RFC 1035 section 2.3.4): dot-separated labels of 1 to
/// 63 letters, digits and hyphens, not starting or ending with a hyphen; at most 253 characters
/// without the optional final dot; the last label not all digits (so that nothing that looks
/// like a dotted IPv4 address passes as a name).
fn check_host_name(s: &str) -> Result<(), String> {
    let name = s.strip_suffix('.').unwrap_or(s);
    if name.len() > 253 {
        return Err(format!("it is {} characters long, the maximum is 253", name.len()));
    }
    let mut last = "";
    for label in name.split('.') {
        if label.is_empty() {
            return Err("it has an empty label (a leading dot or two dots in a row)".to_owned());
        }
        if let Some(c) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-')) {
            return Err(format!("{c:?} is not allowed (only letters, digits, '-' and '.')"));
        }
        if label.len() > 63 {
            return Err(format!(
                "label {label:?} is {} characters long, the maximum is 63",
                label.len()
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with '-'"));
        }
        last = label;
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("its last label {last:?} is all digits"));
    }
    Ok(())
}

/// Prometheus label name rules, plus the names tracepkt keeps for itself.
fn check_label_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = match chars.next() {
        Some(first) => {
            (first.is_ascii_alphabetic() || first == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        None => false,
    };
    if !valid {
        return Err("label names must match [a-zA-Z_][a-zA-Z0-9_]*".to_owned());
    }
    if name.starts_with("__") {
        return Err("names starting with \"__\" are reserved for Prometheus' internal use".to_owned());
    }
    if RESERVED_LABELS.contains(&name) {
        return Err("tracepkt uses this label itself".to_owned());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Checks across values, and the path of the node each one blames.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seg {
    Key(&'static str),
    Index(usize),
}

/// What is wrong, and the node to blame.
struct Problem {
    path: Vec<Seg>,
    message: String,
}

fn path_string(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(key) if out.is_empty() => out.push_str(key),
            Seg::Key(key) => {
                out.push('.');
                out.push_str(key);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

fn build(raw: RawConfig) -> Result<Config, Problem> {
    let interval = raw.interval.unwrap_or(DEFAULT_INTERVAL);
    let timeout = raw.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let cross_node = raw.cross_node.as_ref().filter(|c| c.enabled).map(|c| CrossNode {
        budget: c.budget.unwrap_or(DEFAULT_FOREIGN_BUDGET),
        tunnels: c.tunnels.unwrap_or(true),
    });
    if raw.targets.is_empty() && cross_node.is_none() {
        return Err(Problem {
            path: vec![Seg::Key("targets")],
            message: "the list of targets is empty: at least one target is needed (or cross_node: {enabled: true}, to only follow other nodes' probes)".into(),
        });
    }
    // Another node's probe may cross at any moment: the programs stay attached.
    let attach = match (raw.attach, cross_node) {
        (Some(AttachMode::InFlight), Some(_)) => {
            return Err(Problem {
                path: vec![Seg::Key("attach")],
                message:
                    "cross_node needs the kernel programs attached all the time: attach: always, or leave attach: out"
                        .into(),
            });
        }
        (Some(mode), _) => mode,
        (None, Some(_)) => AttachMode::Always,
        (None, None) => AttachMode::default(),
    };
    let mut targets: Vec<Target> = Vec::with_capacity(raw.targets.len());
    let mut index_of: HashMap<String, usize> = HashMap::new();
    for (i, t) in raw.targets.into_iter().enumerate() {
        let at = |key| vec![Seg::Key("targets"), Seg::Index(i), Seg::Key(key)];
        let protocol = t.protocol.unwrap_or(RawProtocol::Icmp);
        if protocol == RawProtocol::Dns {
            if t.address.is_some() {
                return Err(Problem {
                    path: at("address"),
                    message: "a DNS target has no address: it asks query:, of server: (default: the resolver of the namespace it starts in)".into(),
                });
            }
            if t.query.is_none() {
                return Err(Problem {
                    path: at("protocol"),
                    message: "a DNS target needs query: NAME[/TYPE]".into(),
                });
            }
            if t.port.is_some() || t.payload.is_some() {
                return Err(Problem {
                    path: if t.port.is_some() { at("port") } else { at("payload") },
                    message: "a DNS target takes no port: or payload: (give the port with server: IP:PORT)".into(),
                });
            }
        } else {
            if t.query.is_some() || t.server.is_some() {
                return Err(Problem {
                    path: if t.query.is_some() { at("query") } else { at("server") },
                    message: "only DNS targets (protocol: dns) take query: and server:".into(),
                });
            }
            if t.address.is_none() {
                return Err(Problem {
                    path: vec![Seg::Key("targets"), Seg::Index(i)],
                    message: "a target needs address: (an IP address or a host name)".into(),
                });
            }
        }
        if t.expect.as_ref().is_some_and(|e| e.answer.is_some()) && protocol != RawProtocol::Dns {
            return Err(Problem {
                path: vec![
                    Seg::Key("targets"),
                    Seg::Index(i),
                    Seg::Key("expect"),
                    Seg::Key("answer"),
                ],
                message: "only DNS targets have an answer to check".into(),
            });
        }
        let probe = match (protocol, t.port, &t.payload) {
            (RawProtocol::Dns, _, _) => Probe::Dns {
                query: t.query.clone().expect("checked above"),
                server: t.server,
            },
            (RawProtocol::Icmp, Some(_), _) => {
                return Err(Problem {
                    path: at("port"),
                    message: "an ICMP target has no port: set protocol: tcp or udp".into(),
                });
            }
            (RawProtocol::Icmp | RawProtocol::Tcp, _, Some(_)) => {
                return Err(Problem {
                    path: at("payload"),
                    message: "only UDP targets send a payload".into(),
                });
            }
            (RawProtocol::Tcp | RawProtocol::Udp, None | Some(0), _) => {
                return Err(Problem {
                    path: if t.port.is_some() { at("port") } else { at("protocol") },
                    message: "a TCP or UDP target needs a port (1-65535)".into(),
                });
            }
            (RawProtocol::Icmp, None, None) => Probe::Icmp,
            (RawProtocol::Tcp, Some(port), None) => Probe::Tcp { port },
            (RawProtocol::Udp, Some(port), payload) => Probe::Udp {
                port,
                payload: payload.as_ref().map(|p| p.0.as_bytes().to_vec()),
            },
        };
        if probe != Probe::Icmp {
            for (key, given) in [("size", t.size.is_some()), ("dont_fragment", t.dont_fragment.is_some())] {
                if given {
                    return Err(Problem {
                        path: at(key),
                        message: format!("{key} is for ICMP targets only"),
                    });
                }
            }
        }
        let sizes = t.size.unwrap_or_default();
        let v6 = t.ip_version == Some(IpVersion::V6)
            || t.address
                .as_deref()
                .is_some_and(|s| s.parse::<IpAddr>().is_ok_and(|a| a.is_ipv6()));
        if v6 && let Some(small) = sizes.iter().find(|&&s| usize::from(s) < probe_common::PROBE_L3_LEN_V6) {
            return Err(Problem {
                path: at("size"),
                message: format!(
                    "size {small} is below the smallest IPv6 probe, {}",
                    probe_common::PROBE_L3_LEN_V6
                ),
            });
        }
        let from = match t.from {
            None => None,
            Some(RawFrom {
                netns: Some(ns),
                pod: None,
            }) => Some(Origin::Netns(ns)),
            Some(RawFrom {
                netns: None,
                pod: Some(pod),
            }) => Some(Origin::Pod(pod)),
            Some(RawFrom {
                netns: Some(_),
                pod: Some(_),
            }) => {
                return Err(Problem {
                    path: at("from"),
                    message: "from: takes netns: or pod:, not both".into(),
                });
            }
            Some(RawFrom { netns: None, pod: None }) => {
                return Err(Problem {
                    path: at("from"),
                    message: "from: needs netns: (a namespace name or path) or pod: (namespace/name)".into(),
                });
            }
        };
        // Unnamed TCP and UDP targets are named after their address, port and protocol, so
        // that two ports of one host are two targets; DNS targets after their query.
        let address = match &probe {
            Probe::Dns { server, .. } => server.map_or_else(|| "resolver".to_owned(), |s| s.to_string()),
            _ => t.address.clone().expect("checked above"),
        };
        let name = t.name.clone().unwrap_or_else(|| match &probe {
            Probe::Dns { query, server: None } => format!("dns:{query}"),
            Probe::Dns { query, server: Some(s) } => format!("dns:{query}@{s}"),
            _ => match probe.port() {
                Some(port) => format!("{address}:{port}/{}", probe.protocol()),
                None => address.clone(),
            },
        });
        let ip_version = t.ip_version.unwrap_or_default();

        if let Ok(ip) = address.parse::<IpAddr>()
            && !ip_version.accepts(ip)
        {
            let family = if ip.is_ipv4() { "an IPv4" } else { "an IPv6" };
            return Err(Problem {
                path: at("ip_version"),
                message: format!(
                    "ip_version {ip_version} does not match the address {:?}, which is {family} address",
                    address
                ),
            });
        }

        let target_interval = t.interval.unwrap_or(interval);
        let target_timeout = t.timeout.unwrap_or(timeout);
        if target_timeout > target_interval {
            let (iv, to) = (
                humantime::format_duration(target_interval),
                humantime::format_duration(target_timeout),
            );
            let why = "a probe's journey must end before the next probe of the same target";
            let inherited = |given: bool, what: &str| {
                if given {
                    format!("the top-level {what}")
                } else {
                    format!("the default {what}")
                }
            };
            let (path, message) = if t.timeout.is_some() {
                let source = match t.interval {
                    Some(_) => "the target's own interval".to_owned(),
                    None => inherited(raw.interval.is_some(), "interval"),
                };
                (
                    at("timeout"),
                    format!("timeout {to} is longer than the interval {iv} ({source}): {why}"),
                )
            } else if t.interval.is_some() {
                let source = inherited(raw.timeout.is_some(), "timeout");
                (
                    at("interval"),
                    format!("interval {iv} is shorter than the timeout {to} ({source}): {why}"),
                )
            } else if raw.timeout.is_some() {
                let source = inherited(raw.interval.is_some(), "interval");
                (
                    vec![Seg::Key("timeout")],
                    format!(
                        "timeout {to} is longer than the interval {iv} ({source}), which targets[{i}] ({name:?}) uses: {why}"
                    ),
                )
            } else {
                // The default timeout is shorter than the minimum interval, so the top-level
                // interval was given.
                (
                    vec![Seg::Key("interval")],
                    format!(
                        "interval {iv} is shorter than the timeout {to} (the default timeout), which targets[{i}] ({name:?}) uses: {why}"
                    ),
                )
            };
            return Err(Problem { path, message });
        }

        if let Some(&first) = index_of.get(&name) {
            let (key, hint) = if t.name.is_some() {
                ("name", "")
            } else {
                (
                    "address",
                    " (a target without a name is named after its address: give it a name)",
                )
            };
            return Err(Problem {
                path: at(key),
                message: format!("duplicate target name {name:?}, already used by targets[{first}]{hint}"),
            });
        }
        index_of.insert(name.clone(), i);

        targets.push(Target {
            name,
            address,
            ip_version,
            interval: target_interval,
            timeout: target_timeout,
            count: t.count.unwrap_or(DEFAULT_COUNT),
            labels: t.labels,
            probe,
            sizes,
            dont_fragment: t.dont_fragment.unwrap_or(false),
            from,
            expect: t.expect.map(|e| Expect {
                through: texts(e.through),
                not_through: texts(e.not_through),
                no_drop: e.no_drop,
                answer: e.answer,
            }),
        });
    }
    Ok(Config {
        listen: raw.listen.unwrap_or_else(default_listen),
        interval,
        timeout,
        targets,
        otlp: raw.otlp.map(|o| Otlp {
            endpoint: o.endpoint,
            protocol: o.protocol,
            timeout: o.timeout,
            service_name: o.service_name.map(|t| t.0),
            sample_ratio: o.sample_ratio.unwrap_or(1.0),
            trace_url: o.trace_url,
        }),
        attach,
        rtt_buckets: raw.rtt_buckets.unwrap_or_default(),
        mechanisms: raw.mechanisms.into_iter().map(|m| m.0).collect(),
        ring_buffer_bytes: raw.ring_buffer_bytes,
        cross_node,
    })
}

// ---------------------------------------------------------------------------------------------
// Positions of nodes after the fact: walk the document along a path and fail on purpose at the
// node, so that serde_norway reports the node's position in the error.

/// The message of the deliberate error; no YAML text can produce it.
const FOUND: &str = "\u{0}tracepkt: node found\u{0}";

/// 1-based (line, column) of the node at `path`, or of its nearest ancestor that can be found.
fn locate_nearest(text: &str, path: &[Seg]) -> Option<(usize, usize)> {
    (0..=path.len()).rev().find_map(|len| locate(text, &path[..len]))
}

/// 1-based (line, column) of the node at `path`.
fn locate(text: &str, path: &[Seg]) -> Option<(usize, usize)> {
    match Locate(path).deserialize(serde_norway::Deserializer::from_str(text)) {
        Err(error) if error.to_string().contains(FOUND) => error.location().map(|l| (l.line(), l.column())),
        _ => None,
    }
}

/// Follows the rest of the path through the node it is given.
struct Locate<'a>(&'a [Seg]);

impl Locate<'_> {
    fn leaf<E: de::Error>(&self) -> Result<(), E> {
        match self.0 {
            [] => Err(E::custom(FOUND)),
            _ => Ok(()),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Locate<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Locate<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Seg::Key(want), rest)) = self.0.split_first() else {
            // Found (empty path), or the path wants a list here: give up, leaving the map unread
            // (serde_norway then complains, which is as good as "not found").
            return self.leaf();
        };
        while let Some(key) = map.next_key::<serde_norway::Value>()? {
            if key.as_str() == Some(*want) {
                return map.next_value_seed(Locate(rest));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Seg::Index(want), rest)) = self.0.split_first() else {
            return self.leaf();
        };
        let mut i = 0;
        while i < *want {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
            i += 1;
        }
        seq.next_element_seed(Locate(rest)).map(|_| ())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.leaf()
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.leaf()
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.leaf()
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        self.leaf()
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        self.leaf()
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.leaf()
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.leaf()
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.leaf()
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.leaf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "conf/tracepkt.yaml";

    /// The lines joined: line N of the document is `lines[N - 1]`.
    fn yaml(lines: &[&str]) -> String {
        let mut text = lines.join("\n");
        text.push('\n');
        text
    }

    fn parse(lines: &[&str]) -> Config {
        let text = yaml(lines);
        match Config::parse(&text, FILE) {
            Ok(config) => config,
            Err(e) => panic!("unexpected error: {e}\n{text}"),
        }
    }

    /// The error's text, checked to start with `FILE:line:column: path: `.
    fn error(lines: &[&str], line: usize, column: usize, path: &str) -> String {
        let text = yaml(lines);
        let e = match Config::parse(&text, FILE) {
            Ok(config) => panic!("expected an error, got {config:?}\n{text}"),
            Err(e) => e,
        };
        let message = e.to_string();
        let start = if path.is_empty() {
            format!("{FILE}:{line}:{column}: ")
        } else {
            format!("{FILE}:{line}:{column}: {path}: ")
        };
        assert!(message.starts_with(&start), "expected {start:?}..., got {message:?}");
        assert_eq!(e.line(), Some(line));
        assert_eq!(e.column(), Some(column));
        assert!(!message.contains(" at line "), "position given twice: {message:?}");
        message
    }

    fn assert_contains(message: &str, part: &str) {
        assert!(message.contains(part), "{message:?} does not contain {part:?}");
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn full_config_with_overrides_applied() {
        let config = parse(&[
            "listen: '[::1]:9000'",
            "interval: 30s",
            "timeout: 3s",
            "targets:",
            "  - address: 192.0.2.1",
            "  - address: gw.example.net",
            "    name: gateway",
            "    ip_version: 6",
            "    interval: 1m",
            "    timeout: 500ms",
            "    count: 5",
            "    labels:",
            "      site: paris",
            "      _rack: \"12\"",
            "      tier: 1",
            "  - address: 2001:db8::1",
            "    ip_version: any",
            "    interval: 5s",
            "otlp:",
            "  endpoint: http://collector.example.net:4318",
            "  protocol: http/protobuf",
            "  timeout: 3s",
            "  sample_ratio: 0.25",
            "  service_name: probes",
        ]);
        let expected = Config {
            listen: "[::1]:9000".parse().unwrap(),
            interval: secs(30),
            timeout: secs(3),
            targets: vec![
                Target {
                    name: "192.0.2.1".into(),
                    address: "192.0.2.1".into(),
                    ip_version: IpVersion::Any,
                    interval: secs(30),
                    timeout: secs(3),
                    count: 1,
                    labels: BTreeMap::new(),
                    probe: Probe::Icmp,
                    sizes: vec![],
                    dont_fragment: false,
                    from: None,
                    expect: None,
                },
                Target {
                    name: "gateway".into(),
                    address: "gw.example.net".into(),
                    ip_version: IpVersion::V6,
                    interval: secs(60),
                    timeout: ms(500),
                    count: 5,
                    labels: [("site", "paris"), ("_rack", "12"), ("tier", "1")]
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                    probe: Probe::Icmp,
                    sizes: vec![],
                    dont_fragment: false,
                    from: None,
                    expect: None,
                },
                Target {
                    name: "2001:db8::1".into(),
                    address: "2001:db8::1".into(),
                    ip_version: IpVersion::Any,
                    interval: secs(5),
                    timeout: secs(3),
                    count: 1,
                    labels: BTreeMap::new(),
                    probe: Probe::Icmp,
                    sizes: vec![],
                    dont_fragment: false,
                    from: None,
                    expect: None,
                },
            ],
            otlp: Some(Otlp {
                endpoint: Some("http://collector.example.net:4318".into()),
                protocol: Some(OtlpProtocol::HttpProtobuf),
                timeout: Some(secs(3)),
                service_name: Some("probes".into()),
                sample_ratio: 0.25,
                trace_url: None,
            }),
            attach: AttachMode::InFlight,
            rtt_buckets: vec![],
            mechanisms: vec![],
            ring_buffer_bytes: None,
            cross_node: None,
        };
        assert_eq!(config, expected);
    }

    #[test]
    fn tcp_and_udp_targets() {
        let config = parse(&[
            "targets:",
            "  - {address: 198.18.0.1, protocol: tcp, port: 443, from: {netns: client}}",
            "  - {address: 198.18.0.1, protocol: udp, port: 53, payload: hi, from: {netns: /proc/1/ns/net}}",
            "  - address: 198.18.0.1",
            "    protocol: tcp",
            "    port: 80",
            "    expect: {through: [backend, eth0], not_through: [other], no_drop: true}",
            "  - {address: 198.18.0.2, from: {pod: kube-system/coredns-5d78c9869d-abcde}}",
        ]);
        let t = &config.targets;
        assert_eq!(t[0].name, "198.18.0.1:443/tcp");
        assert_eq!(t[0].probe, Probe::Tcp { port: 443 });
        assert_eq!(t[0].from, Some(Origin::Netns("/run/netns/client".into())));
        assert_eq!(t[1].name, "198.18.0.1:53/udp");
        assert_eq!(
            t[1].probe,
            Probe::Udp {
                port: 53,
                payload: Some(b"hi".to_vec())
            }
        );
        assert_eq!(t[1].from, Some(Origin::Netns("/proc/1/ns/net".into())));
        assert_eq!(
            t[2].expect,
            Some(Expect {
                through: vec!["backend".into(), "eth0".into()],
                not_through: vec!["other".into()],
                no_drop: true,
                answer: None,
            })
        );
        let lines = ["targets:", "  - {address: 198.18.0.1, protocol: tcp}"];
        assert_contains(&error(&lines, 2, 37, "targets[0].protocol"), "needs a port");
        let lines = ["targets:", "  - {address: 198.18.0.1, port: 80}"];
        assert_contains(&error(&lines, 2, 33, "targets[0].port"), "an ICMP target has no port");
        let lines = [
            "targets:",
            "  - {address: 198.18.0.1, protocol: tcp, port: 1, payload: x}",
        ];
        assert_contains(&error(&lines, 2, 60, "targets[0].payload"), "only UDP targets");
        assert_eq!(
            t[3].from,
            Some(Origin::Pod("kube-system/coredns-5d78c9869d-abcde".parse().unwrap()))
        );
        let lines = ["targets:", "  - {address: 198.18.0.1, from: {netns: a/b}}"];
        assert_contains(
            &error(&lines, 2, 41, "targets[0].from.netns"),
            "neither a namespace name",
        );
        let lines = ["targets:", "  - {address: 198.18.0.1, from: {pod: web}}"];
        assert_contains(
            &error(&lines, 2, 39, "targets[0].from.pod"),
            "\"web\" is not namespace/name",
        );
        let lines = ["targets:", "  - {address: 198.18.0.1, from: {pod: a/b, netns: c}}"];
        assert_contains(&error(&lines, 2, 33, "targets[0].from"), "netns: or pod:, not both");
    }

    #[test]
    fn sizes_and_dont_fragment() {
        let config = parse(&[
            "targets:",
            "  - {address: 198.18.0.1, size: 1500, dont_fragment: true}",
            "  - {address: 198.18.0.2, size: [1300, 1400, 1500]}",
            "  - {address: fd00::1, size: 80}",
        ]);
        let t = &config.targets;
        assert_eq!((t[0].sizes.as_slice(), t[0].dont_fragment), (&[1500][..], true));
        assert_eq!(
            (t[1].sizes.as_slice(), t[1].dont_fragment),
            (&[1300, 1400, 1500][..], false)
        );
        assert_eq!(t[2].sizes, vec![80]);
        let lines = ["targets:", "  - {address: 198.18.0.1, size: 59}"];
        assert_contains(&error(&lines, 2, 33, "targets[0].size"), "size 59 is out of range");
        let lines = ["targets:", "  - {address: 198.18.0.1, size: 65536}"];
        assert_contains(&error(&lines, 2, 33, "targets[0].size"), "to 65535");
        let lines = ["targets:", "  - {address: 198.18.0.1, size: [1400, 1400]}"];
        assert_contains(&error(&lines, 2, 33, "targets[0].size"), "size 1400 is listed twice");
        let lines = ["targets:", "  - {address: fd00::1, size: 60}"];
        assert_contains(
            &error(&lines, 2, 30, "targets[0].size"),
            "below the smallest IPv6 probe, 80",
        );
        let lines = [
            "targets:",
            "  - {address: 198.18.0.1, protocol: tcp, port: 1, size: 1500}",
        ];
        assert_contains(&error(&lines, 2, 57, "targets[0].size"), "for ICMP targets only");
        let lines = [
            "targets:",
            "  - {address: 198.18.0.1, protocol: udp, port: 1, dont_fragment: true}",
        ];
        assert_contains(
            &error(&lines, 2, 66, "targets[0].dont_fragment"),
            "for ICMP targets only",
        );
    }

    #[test]
    fn defaults() {
        let config = parse(&["targets:", "  - address: 127.0.0.1"]);
        assert_eq!(
            config,
            Config {
                listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
                interval: secs(10),
                timeout: secs(2),
                targets: vec![Target {
                    name: "127.0.0.1".into(),
                    address: "127.0.0.1".into(),
                    ip_version: IpVersion::Any,
                    interval: secs(10),
                    timeout: secs(2),
                    count: 1,
                    labels: BTreeMap::new(),
                    probe: Probe::Icmp,
                    sizes: vec![],
                    dont_fragment: false,
                    from: None,
                    expect: None,
                }],
                otlp: None,
                attach: AttachMode::InFlight,
                rtt_buckets: vec![],
                mechanisms: vec![],
                ring_buffer_bytes: None,
                cross_node: None,
            }
        );
        assert_eq!(default_listen().to_string(), format!("127.0.0.1:{DEFAULT_PORT}"));
        // 9100-9999 is the Prometheus exporter range, where no port is free any more.
        assert!(!(9100..=9999).contains(&DEFAULT_PORT));
    }

    #[test]
    fn attach_mode() {
        let config = parse(&["attach: always", "targets: [{address: 127.0.0.1}]"]);
        assert_eq!(config.attach, AttachMode::Always);
        let config = parse(&["attach: in-flight", "targets: [{address: 127.0.0.1}]"]);
        assert_eq!(config.attach, AttachMode::InFlight);
        let message = error(
            &["targets: [{address: 127.0.0.1}]", "attach: sometimes"],
            2,
            9,
            "attach",
        );
        assert!(
            message.contains("unknown variant `sometimes`, expected `in-flight` or `always`"),
            "{message}"
        );
    }

    #[test]
    fn mechanisms() {
        let config = parse(&["mechanisms: [tracepoint, kprobe]", "targets: [{address: 127.0.0.1}]"]);
        assert_eq!(config.mechanisms, vec![Mechanism::Tracepoint, Mechanism::Kprobe]);
        let message = error(
            &["targets: [{address: 127.0.0.1}]", "mechanisms: [tracepoint, fentry]"],
            2,
            26,
            "mechanisms[1]",
        );
        assert_contains(&message, "unknown attach mechanism \"fentry\"");
    }

    #[test]
    fn rtt_buckets() {
        let config = parse(&["rtt_buckets: [0.0005, 0.001, 2]", "targets: [{address: 127.0.0.1}]"]);
        assert_eq!(config.rtt_buckets, vec![0.0005, 0.001, 2.0]);
        let config = parse(&["targets: [{address: 127.0.0.1}]"]);
        assert!(config.rtt_buckets.is_empty());
        let message = error(
            &["targets: [{address: 127.0.0.1}]", "rtt_buckets: [0.01, 0.001]"],
            2,
            14,
            "rtt_buckets",
        );
        assert_contains(&message, "RTT bucket bounds must increase: 0.001 comes after 0.01");
        let message = error(
            &["targets: [{address: 127.0.0.1}]", "rtt_buckets: [-1]"],
            2,
            14,
            "rtt_buckets",
        );
        assert_contains(&message, "RTT bucket -1 is not a positive number of seconds");
    }

    #[test]
    fn dns_targets() {
        let config = parse(&[
            "targets:",
            "  - {protocol: dns, query: web.shop.example/AAAA, server: 198.18.0.53, expect: {answer: ['fd00::1']}}",
            "  - {protocol: dns, query: web.shop.example, expect: {answer: any}}",
            "  - {protocol: dns, query: x.example, server: '198.18.0.53:5353'}",
        ]);
        let t = &config.targets;
        assert_eq!(t[0].name, "dns:web.shop.example/AAAA@198.18.0.53:53");
        assert_eq!(t[0].address, "198.18.0.53:53");
        assert_eq!(
            t[0].probe,
            Probe::Dns {
                query: "web.shop.example/AAAA".parse().unwrap(),
                server: Some("198.18.0.53:53".parse().unwrap())
            }
        );
        assert_eq!(
            t[0].expect.as_ref().unwrap().answer,
            Some(AnswerExpect::Holds(vec!["fd00::1".into()]))
        );
        assert!(!t[0].expect.as_ref().unwrap().has_path());
        assert_eq!(t[1].name, "dns:web.shop.example/A");
        assert_eq!(t[1].address, "resolver");
        assert_eq!(t[1].expect.as_ref().unwrap().answer, Some(AnswerExpect::NonEmpty));
        assert_eq!(t[2].probe.port(), Some(5353));
        for (line, col, path, message) in [
            (
                "  - {protocol: dns, query: a.example, address: 1.2.3.4}",
                48,
                "targets[0].address",
                "a DNS target has no address",
            ),
            (
                "  - {protocol: dns}",
                16,
                "targets[0].protocol",
                "needs query: NAME[/TYPE]",
            ),
            (
                "  - {protocol: dns, query: a.example/BOGUS}",
                28,
                "targets[0].query",
                "not a DNS record type",
            ),
            (
                "  - {protocol: dns, query: a.example, server: dns.example}",
                47,
                "targets[0].server",
                "is not an IP address or IP:PORT",
            ),
            (
                "  - {address: 1.2.3.4, query: a.example}",
                31,
                "targets[0].query",
                "only DNS targets",
            ),
            (
                "  - {address: 1.2.3.4, expect: {answer: any}}",
                41,
                "targets[0].expect.answer",
                "only DNS targets have an answer",
            ),
            (
                "  - {protocol: dns, query: a.example, expect: {answer: yes}}",
                47,
                "targets[0].expect",
                "neither `any` nor a list",
            ),
            ("  - {name: nothing}", 5, "targets[0]", "a target needs address:"),
        ] {
            assert_contains(&error(&["targets:", line], 2, col, path), message);
        }
    }

    #[test]
    fn ring_buffer_bytes() {
        let config = parse(&["ring_buffer_bytes: 4096", "targets: [{address: 127.0.0.1}]"]);
        assert_eq!(config.ring_buffer_bytes, Some(4096));
        for bad in ["1000", "2048", "536870912"] {
            let message = error(
                &["targets: [{address: 127.0.0.1}]", &format!("ring_buffer_bytes: {bad}")],
                2,
                20,
                "ring_buffer_bytes",
            );
            assert_contains(&message, &format!("ring_buffer_bytes {bad} is not a power of two"));
        }
    }

    #[test]
    fn cross_node() {
        let t = "targets: [{address: 127.0.0.1}]";
        let config = parse(&[t]);
        assert_eq!((config.cross_node, config.attach), (None, AttachMode::InFlight));
        let config = parse(&[t, "cross_node: {enabled: false, budget: 5}"]);
        assert_eq!(config.cross_node, None);
        let config = parse(&[t, "cross_node: {enabled: true}"]);
        assert_eq!(config.cross_node, Some(CrossNode::default()));
        assert_eq!(
            config.attach,
            AttachMode::Always,
            "another node's probe may come at any time"
        );
        let config = parse(&[
            t,
            "attach: always",
            "cross_node: {enabled: true, budget: 50, tunnels: false}",
        ]);
        assert_eq!(
            config.cross_node,
            Some(CrossNode {
                budget: 50,
                tunnels: false
            })
        );
        let message = error(&[t, "attach: in-flight", "cross_node: {enabled: true}"], 2, 9, "attach");
        assert_contains(&message, "cross_node needs the kernel programs attached all the time");
        for bad in ["0", "1000001", "-3"] {
            let message = error(
                &[t, &format!("cross_node: {{enabled: true, budget: {bad}}}")],
                2,
                37,
                "cross_node.budget",
            );
            assert_contains(&message, &format!("budget {bad} is out of range"));
        }
        let message = error(&[t, "cross_node: {enabeld: true}"], 2, 14, "cross_node");
        assert_contains(&message, "unknown field `enabeld`");
    }

    #[test]
    fn empty_optional_values_mean_defaults() {
        let config = parse(&[
            "targets:",
            "  - address: localhost",
            "    ip_version:",
            "    labels:",
            "otlp:",
        ]);
        assert_eq!(config.targets[0].ip_version, IpVersion::Any);
        assert!(config.targets[0].labels.is_empty());
        assert_eq!(config.otlp, None);
        let config = parse(&[
            "targets: [{address: 127.0.0.1}]",
            "otlp: {endpoint: 'http://[::1]:4317'}",
        ]);
        let otlp = config.otlp.unwrap();
        assert_eq!(otlp.protocol, None);
        assert_eq!(otlp.sample_ratio, 1.0);
    }

    #[test]
    fn unknown_top_level_key() {
        let lines = ["interval: 10s", "targets:", "  - address: 127.0.0.1", "intervall: 5s"];
        let message = error(&lines, 4, 1, "");
        assert_contains(
            &message,
            "unknown field `intervall`, expected one of `listen`, `interval`",
        );
    }

    #[test]
    fn unknown_target_key() {
        let lines = [
            "targets:",
            "  - address: 127.0.0.1",
            "  - address: ::1",
            "    name: six",
            "    lables: {a: b}",
        ];
        let message = error(&lines, 5, 5, "targets[1]");
        assert_contains(&message, "unknown field `lables`");
    }

    #[test]
    fn unknown_otlp_key() {
        let lines = [
            "targets: [{address: 127.0.0.1}]",
            "otlp:",
            "  endpoint: http://localhost:4317",
            "  headers: {}",
        ];
        let message = error(&lines, 4, 3, "otlp");
        assert_contains(
            &message,
            "unknown field `headers`, expected one of `endpoint`, `protocol`, `timeout`, `sample_ratio`, `service_name`, `trace_url`",
        );
    }

    #[test]
    fn bad_duration() {
        let lines = [
            "timeout: 1s",
            "targets:",
            "  - address: 127.0.0.1",
            "  - address: 127.0.0.2",
            "    timeout: 10 parsecs",
        ];
        let message = error(&lines, 5, 14, "targets[1].timeout");
        assert_contains(
            &message,
            "invalid duration \"10 parsecs\": unknown time unit \"parsecs\"",
        );
    }

    #[test]
    fn duration_without_unit() {
        let message = error(&["interval: 10", "targets: [{address: 127.0.0.1}]"], 1, 11, "interval");
        assert_contains(
            &message,
            "invalid duration \"10\": time unit needed, for example 10sec or 10ms",
        );
    }

    #[test]
    fn duration_of_wrong_type() {
        let message = error(&["targets: [{address: 127.0.0.1}]", "timeout: [2s]"], 2, 10, "timeout");
        assert_contains(&message, "invalid type: sequence, expected a duration such as 2s");
    }

    #[test]
    fn interval_too_short() {
        let lines = [
            "targets:",
            "  - address: ::1",
            "    interval: 50ms",
            "    timeout: 10ms",
        ];
        let message = error(&lines, 3, 15, "targets[0].interval");
        assert_contains(&message, "interval \"50ms\" is too short: the minimum is 100ms");
        // The minimum itself is fine.
        let config = parse(&["interval: 100ms", "timeout: 100ms", "targets: [{address: 127.0.0.1}]"]);
        assert_eq!(config.targets[0].interval, MIN_INTERVAL);
    }

    #[test]
    fn zero_timeout() {
        let message = error(&["timeout: 0s", "targets: [{address: 127.0.0.1}]"], 1, 10, "timeout");
        assert_contains(&message, "timeout \"0s\" must be greater than zero");
    }

    #[test]
    fn bad_ipv4_address() {
        let lines = ["targets:", "  - address: 10.0.0.1", "  - address: 10.0.0.300"];
        let message = error(&lines, 3, 14, "targets[1].address");
        assert_contains(&message, "invalid address \"10.0.0.300\": not a valid IPv4 address");
    }

    #[test]
    fn bad_host_name() {
        let lines = ["targets:", "  - name: x", "    address: bad host!"];
        let message = error(&lines, 3, 14, "targets[0].address");
        assert_contains(
            &message,
            "invalid address \"bad host!\": not an IP address nor a valid host name: ' ' is not allowed",
        );
    }

    #[test]
    fn bad_ipv6_address() {
        let message = error(&["targets:", "  - address: 2001:db8::g"], 2, 14, "targets[0].address");
        assert_contains(&message, "not a valid IPv6 address");
        let message = error(&["targets:", "  - address: '[::1]'"], 2, 14, "targets[0].address");
        assert_contains(&message, "write IPv6 addresses without brackets");
    }

    #[test]
    fn address_rules() {
        for good in [
            "127.0.0.1",
            "::1",
            "fe80::1",
            "localhost",
            "example.com.",
            "a-b.c0",
            "1.2.3.example",
            "xn--bcher-kva.example",
            &format!("{}.com", "a".repeat(63)),
        ] {
            assert_eq!(parse_address(good).as_deref(), Ok(good), "{good}");
        }
        for (bad, why) in [
            ("", "must not be empty"),
            ("1.2.3", "not a valid IPv4 address"),
            ("1.2.3.4.5", "not a valid IPv4 address"),
            ("010.0.0.1", "not a valid IPv4 address"),
            ("example..com", "empty label"),
            (".example.com", "empty label"),
            ("-example.com", "starts or ends with '-'"),
            ("example-.com", "starts or ends with '-'"),
            ("under_score.example", "'_' is not allowed"),
            ("host.123", "last label \"123\" is all digits"),
            ("0x7f.1", "last label \"1\" is all digits"),
            ("héllo.example", "'é' is not allowed"),
            (
                &format!("{}.com", "a".repeat(64)),
                "is 64 characters long, the maximum is 63",
            ),
            (
                &format!("{}.com", vec!["a".repeat(60); 5].join(".")),
                "characters long, the maximum is 253",
            ),
        ] {
            match parse_address(bad) {
                Ok(_) => panic!("{bad:?} accepted"),
                Err(message) => assert!(message.contains(why), "{bad:?}: {message:?} lacks {why:?}"),
            }
        }
    }

    #[test]
    fn duplicate_names_point_at_the_second() {
        let lines = [
            "targets:",
            "  - address: 127.0.0.1",
            "    name: lo",
            "  - address: 127.0.0.2",
            "  - address: ::1",
            "    count: 2",
            "    name: lo",
        ];
        let message = error(&lines, 7, 11, "targets[2].name");
        assert_contains(&message, "duplicate target name \"lo\", already used by targets[0]");
    }

    #[test]
    fn duplicate_default_names_point_at_the_address() {
        let lines = [
            "targets:",
            "  - address: localhost",
            "  - address: localhost",
            "    ip_version: 6",
        ];
        let message = error(&lines, 3, 14, "targets[1].address");
        assert_contains(
            &message,
            "duplicate target name \"localhost\", already used by targets[0]",
        );
        assert_contains(&message, "named after its address");
    }

    #[test]
    fn duplicate_names_in_flow_style() {
        let lines = ["targets: [{address: '::1', name: a}, {name: a, address: 127.0.0.1}]"];
        let message = error(&lines, 1, 45, "targets[1].name");
        assert_contains(&message, "already used by targets[0]");
    }

    #[test]
    fn empty_targets() {
        let message = error(&["interval: 10s", "targets: []"], 2, 10, "targets");
        assert_contains(&message, "the list of targets is empty");
        let message = error(&["targets:", "interval: 10s"], 1, 9, "targets");
        assert_contains(&message, "the list of targets is empty");
        let message = error(&["listen: 127.0.0.1:9000"], 1, 1, "");
        assert_contains(&message, "missing field `targets`");
        let config = parse(&["targets: []", "cross_node: {enabled: true}"]);
        assert!(config.targets.is_empty(), "a node may only follow other nodes' probes");
    }

    #[test]
    fn empty_file() {
        // Points at the end of the (empty) document.
        for (text, line) in [("", 1), ("# nothing\n", 2), ("\n\n\n", 4)] {
            let e = Config::parse(text, FILE).unwrap_err().to_string();
            assert_eq!(e, format!("{FILE}:{line}:1: missing field `targets`"), "{text:?}");
        }
    }

    #[test]
    fn not_a_mapping() {
        let message = error(&["- address: ::1"], 1, 1, "");
        assert_contains(
            &message,
            "invalid type: sequence, expected a mapping of tracepkt settings",
        );
    }

    #[test]
    fn missing_address() {
        let lines = [
            "targets:",
            "  - address: 127.0.0.1",
            "  - name: nowhere",
            "    count: 2",
        ];
        let message = error(&lines, 3, 5, "targets[1]");
        assert_contains(&message, "a target needs address:");
    }

    #[test]
    fn timeout_longer_than_own_interval() {
        let lines = [
            "targets:",
            "  - address: 127.0.0.1",
            "  - address: ::1",
            "    interval: 1s",
            "    timeout: 3s",
        ];
        let message = error(&lines, 5, 14, "targets[1].timeout");
        assert_contains(
            &message,
            "timeout 3s is longer than the interval 1s (the target's own interval)",
        );
        assert_contains(&message, "before the next probe of the same target");
    }

    #[test]
    fn timeout_longer_than_inherited_interval() {
        let lines = ["interval: 1s", "targets:", "  - address: ::1", "    timeout: 1500ms"];
        let message = error(&lines, 4, 14, "targets[0].timeout");
        assert_contains(
            &message,
            "timeout 1s 500ms is longer than the interval 1s (the top-level interval)",
        );
        let lines = ["targets:", "  - address: ::1", "    timeout: 11s"];
        let message = error(&lines, 3, 14, "targets[0].timeout");
        assert_contains(&message, "(the default interval)");
    }

    #[test]
    fn interval_shorter_than_inherited_timeout() {
        let lines = ["targets:", "  - address: ::1", "    interval: 1s"];
        let message = error(&lines, 3, 15, "targets[0].interval");
        assert_contains(
            &message,
            "interval 1s is shorter than the timeout 2s (the default timeout)",
        );
    }

    #[test]
    fn top_level_timeout_longer_than_interval() {
        let lines = [
            "interval: 5s",
            "timeout: 6s",
            "targets:",
            "  - address: ::1",
            "    interval: 10s",
            "  - address: 127.0.0.1",
        ];
        let message = error(&lines, 2, 10, "timeout");
        assert_contains(
            &message,
            "timeout 6s is longer than the interval 5s (the top-level interval), which targets[1] (\"127.0.0.1\") uses",
        );
        let lines = ["interval: 1s", "targets:", "  - address: ::1"];
        let message = error(&lines, 1, 11, "interval");
        assert_contains(
            &message,
            "interval 1s is shorter than the timeout 2s (the default timeout)",
        );
        // Fine when every target that inherits both values gets a consistent pair.
        let config = parse(&[
            "interval: 5s",
            "timeout: 6s",
            "targets:",
            "  - address: ::1",
            "    timeout: 1s",
        ]);
        assert_eq!(
            (config.targets[0].interval, config.targets[0].timeout),
            (secs(5), secs(1))
        );
    }

    #[test]
    fn invalid_label_name() {
        let lines = [
            "targets:",
            "  - address: ::1",
            "    labels:",
            "      site: paris",
            "      data-center: x",
        ];
        let message = error(&lines, 5, 7, "targets[0].labels");
        assert_contains(
            &message,
            "invalid label name \"data-center\": label names must match [a-zA-Z_][a-zA-Z0-9_]*",
        );
        let lines = ["targets:", "  - address: ::1", "    labels: {9lives: x}"];
        let message = error(&lines, 3, 14, "targets[0].labels");
        assert_contains(&message, "invalid label name \"9lives\"");
    }

    #[test]
    fn reserved_label_names() {
        let lines = ["targets:", "  - address: ::1", "    labels:", "      interface: eth0"];
        let message = error(&lines, 4, 7, "targets[0].labels");
        assert_contains(
            &message,
            "invalid label name \"interface\": tracepkt uses this label itself",
        );
        let lines = ["targets:", "  - address: ::1", "    labels:", "      __meta: x"];
        let message = error(&lines, 4, 7, "targets[0].labels");
        assert_contains(
            &message,
            "invalid label name \"__meta\": names starting with \"__\" are reserved",
        );
        for name in RESERVED_LABELS {
            assert!(check_label_name(name).is_err(), "{name}");
        }
        for name in ["site", "_x", "Zone_9", "a"] {
            assert_eq!(check_label_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn duplicate_or_empty_label() {
        let lines = [
            "targets:",
            "  - address: ::1",
            "    labels:",
            "      a: x",
            "      a: y",
        ];
        let message = error(&lines, 5, 7, "targets[0].labels");
        assert_contains(&message, "label \"a\" is given twice");
        let lines = ["targets:", "  - address: ::1", "    labels:", "      a: ''"];
        let message = error(&lines, 4, 10, "targets[0].labels.a");
        assert_contains(&message, "label \"a\" has an empty value");
    }

    #[test]
    fn bad_otlp_endpoint() {
        let lines = ["targets: [{address: 127.0.0.1}]", "otlp:", "  endpoint: localhost:4317"];
        let message = error(&lines, 3, 13, "otlp.endpoint");
        assert_contains(
            &message,
            "invalid OTLP endpoint \"localhost:4317\": it must start with http://",
        );
        let lines = ["targets: [{address: 127.0.0.1}]", "otlp:", "  endpoint: http://"];
        let message = error(&lines, 3, 13, "otlp.endpoint");
        assert_contains(&message, "no host after the scheme");
        let lines = ["targets: [{address: 127.0.0.1}]", "otlp:", "  endpoint: https://c:4317"];
        let message = error(&lines, 3, 13, "otlp.endpoint");
        assert_contains(&message, "plain-text OTLP only");
        let lines = ["targets: [{address: 127.0.0.1}]", "otlp:", "  sample_ratio: 1.5"];
        let message = error(&lines, 3, 17, "otlp.sample_ratio");
        assert_contains(&message, "sample_ratio 1.5 is not between 0 and 1");
    }

    #[test]
    fn bad_otlp_protocol() {
        let lines = [
            "targets: [{address: 127.0.0.1}]",
            "otlp:",
            "  endpoint: http://localhost:4318",
            "  protocol: http/json",
        ];
        let message = error(&lines, 4, 13, "otlp.protocol");
        assert_contains(
            &message,
            "unknown variant `http/json`, expected `grpc` or `http/protobuf`",
        );
    }

    #[test]
    fn ip_version_must_match_a_literal() {
        let lines = [
            "targets:",
            "  - address: localhost",
            "    ip_version: 6",
            "  - ip_version: 6",
            "    address: 127.0.0.1",
        ];
        let message = error(&lines, 4, 17, "targets[1].ip_version");
        assert_contains(
            &message,
            "ip_version 6 does not match the address \"127.0.0.1\", which is an IPv4 address",
        );
        let lines = ["targets:", "  - address: ::1", "    ip_version: 4"];
        let message = error(&lines, 3, 17, "targets[0].ip_version");
        assert_contains(&message, "which is an IPv6 address");
    }

    #[test]
    fn bad_ip_version() {
        let lines = ["targets:", "  - address: ::1", "    ip_version: ipv6"];
        let message = error(&lines, 3, 17, "targets[0].ip_version");
        assert_contains(&message, "unknown variant `ipv6`, expected one of `any`, `4`, `6`");
    }

    #[test]
    fn count_out_of_range() {
        for count in ["0", "101", "4294967297"] {
            let count_line = format!("    count: {count}");
            let lines = ["targets:", "  - address: ::1", &count_line];
            let message = error(&lines, 3, 12, "targets[0].count");
            assert_contains(&message, &format!("count {count} is out of range: expected 1 to 100"));
        }
        for (count, found) in [
            ("-1", "integer `-1`"),
            ("many", "string \"many\""),
            ("1.5", "floating point `1.5`"),
        ] {
            let count_line = format!("    count: {count}");
            let lines = ["targets:", "  - address: ::1", &count_line];
            let message = error(&lines, 3, 12, "targets[0].count");
            assert_contains(
                &message,
                &format!("invalid type: {found}, expected a whole number from 1 to 100"),
            );
        }
        assert_eq!(
            parse(&["targets:", "  - address: ::1", "    count: 100"]).targets[0].count,
            100
        );
    }

    #[test]
    fn bad_listen_address() {
        let message = error(
            &["listen: localhost:9977", "targets: [{address: 127.0.0.1}]"],
            1,
            9,
            "listen",
        );
        assert_contains(&message, "invalid listen address \"localhost:9977\": expected IP:PORT");
        let message = error(&["listen: ::1", "targets: [{address: 127.0.0.1}]"], 1, 9, "listen");
        assert_contains(&message, "invalid listen address \"::1\"");
    }

    #[test]
    fn yaml_syntax_error_has_a_position() {
        let lines = [
            "targets:",
            "  - address: ::1",
            "    name: 'unterminated",
            "interval: 1s",
        ];
        let e = Config::parse(&yaml(&lines), FILE).unwrap_err();
        let message = e.to_string();
        assert!(
            message.starts_with(&format!("{FILE}:{}:", e.line().unwrap())),
            "{message}"
        );
        assert!(e.line().unwrap() >= 3, "{message}");
        assert_contains(&message, "found unexpected end of stream");
    }

    #[test]
    fn locate_finds_nodes() {
        let text = yaml(&[
            "# comment",
            "targets:",
            "  - &first",
            "    address: ::1",
            "    name: \"one\"",
            "  - {address: b, name: two}",
            "interval: >-",
            "  10s",
        ]);
        let path = [Seg::Key("targets"), Seg::Index(0), Seg::Key("name")];
        assert_eq!(locate(&text, &path), Some((5, 11)));
        let path = [Seg::Key("targets"), Seg::Index(1), Seg::Key("name")];
        assert_eq!(locate(&text, &path), Some((6, 24)));
        assert_eq!(locate(&text, &[Seg::Key("interval")]), Some((7, 11)));
        assert_eq!(locate(&text, &[]), Some((2, 1)));
        // Missing nodes: not found, then the nearest ancestor.
        let path = [Seg::Key("targets"), Seg::Index(1), Seg::Key("count")];
        assert_eq!(locate(&text, &path), None);
        assert_eq!(locate_nearest(&text, &path), Some((6, 5)));
        let path = [Seg::Key("targets"), Seg::Index(7), Seg::Key("name")];
        // The value of `targets` is the block sequence, which starts at its first "-".
        assert_eq!(locate_nearest(&text, &path), Some((3, 3)));
        assert_eq!(path_string(&path), "targets[7].name");
        assert_eq!(path_string(&[]), ".");
    }

    #[test]
    fn aliases_cannot_expand_a_small_file_into_gigabytes() {
        // 1 MB of file, 2 GB of names once expanded; it loaded (in 20 s) before text was budgeted.
        let text = format!(
            "targets:\n  - address: ::1\n    name: &long '{}'\n    expect: {{through: [{}]}}\n",
            "x".repeat(1 << 20),
            vec!["*long"; 2_000].join(", ")
        );
        let started = std::time::Instant::now();
        let message = Config::parse(&text, FILE).unwrap_err().to_string();
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
        assert!(
            message.starts_with(&format!("{FILE}:3:11: targets[0].expect.through[")),
            "{message}"
        );
        assert_contains(
            &message,
            "add up to more than 5 MiB of text once its aliases are expanded",
        );
        // Aliases within the budget are fine.
        let config = parse(&[
            "targets:",
            "  - {address: '::1', labels: &l {site: paris}, expect: {through: &n [a, b]}}",
            "  - {address: 127.0.0.1, labels: *l, expect: {through: *n, not_through: *n}}",
        ]);
        assert_eq!(config.targets[1].expect.as_ref().unwrap().not_through, ["a", "b"]);
        assert_eq!(config.targets[1].labels, config.targets[0].labels);
    }

    #[test]
    fn odd_names_are_taken_as_written() {
        // Interface and namespace names are compared with what the kernel reports, never run
        // through a shell: anything the kernel allows is taken verbatim.
        let config = parse(&[
            "targets:",
            "  - address: ::1",
            "    from: {netns: \"ns with spaces;$(id)`x`\"}",
            "    expect:",
            "      through: ['eth 0', 'vethü✓', '$(rm -rf /)', 'exactly15chars_', '4026531840']",
            "      not_through: ['']",
        ]);
        let t = &config.targets[0];
        assert_eq!(
            t.from,
            Some(Origin::Netns(PathBuf::from("/run/netns/ns with spaces;$(id)`x`")))
        );
        let expect = t.expect.as_ref().unwrap();
        assert_eq!(expect.through[1], "vethü✓");
        assert_eq!(expect.through[3].len(), 15);
        for (netns, why) in [
            (
                "../etc",
                "\"../etc\" is neither a namespace name (no '/') nor an absolute path",
            ),
            ("a/b", "\"a/b\" is neither a namespace name"),
            ("..", "\"..\" is neither a namespace name"),
            ("''", "the namespace must not be empty"),
            ("\"a\\0b\"", "\"a\\0b\" contains a NUL byte"),
        ] {
            let line = format!("    from: {{netns: {netns}}}");
            let message = error(&["targets:", "  - address: ::1", &line], 3, 19, "targets[0].from.netns");
            assert_contains(&message, why);
        }
    }

    #[test]
    fn not_utf8_points_at_the_first_bad_byte() {
        let dir = std::env::temp_dir().join(format!("tracepkt-config-utf8-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("latin1.yaml");
        std::fs::write(&path, b"targets:\n  - address: ::1\n    name: \xc3\xa9t\xe9\n").unwrap();
        let e = Config::load(&path).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!((e.line(), e.column()), (Some(3), Some(13)));
        assert_eq!(
            e.to_string(),
            format!(
                "{}:3:13: the file is not UTF-8 text (byte 0xe9): a configuration is YAML in UTF-8",
                path.display()
            )
        );
    }

    #[test]
    fn io_error_for_a_missing_file() {
        let path = Path::new("/nonexistent/tracepkt/config.yaml");
        let e = Config::load(path).unwrap_err();
        assert!(matches!(&e, ConfigError::Io { error, .. } if error.kind() == std::io::ErrorKind::NotFound));
        let message = e.to_string();
        assert!(
            message.starts_with("cannot read /nonexistent/tracepkt/config.yaml: "),
            "{message}"
        );
        assert_contains(&message, "No such file or directory");
    }

    #[test]
    fn load_names_the_file_in_errors() {
        let dir = std::env::temp_dir().join(format!("tracepkt-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.yaml");
        let bad = dir.join("bad.yaml");
        std::fs::write(&good, yaml(&["targets:", "  - address: ::1"])).unwrap();
        std::fs::write(&bad, yaml(&["targets:", "  - address: ::1", "    count: 0"])).unwrap();
        let loaded = Config::load(&good);
        let failed = Config::load(&bad);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(loaded.unwrap().targets[0].address, "::1");
        let message = failed.unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("{}:3:12: targets[0].count: count 0", bad.display())),
            "{message}"
        );
    }

    #[test]
    fn example_config_parses() {
        let config = Config::parse(include_str!("../../config.example.yaml"), "config.example.yaml")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.listen, default_listen());
        assert_eq!((config.interval, config.timeout), (secs(10), secs(2)));
        let targets: Vec<_> = config
            .targets
            .iter()
            .map(|t| (t.name.as_str(), t.address.as_str(), t.ip_version))
            .collect();
        assert_eq!(
            targets,
            [
                ("loopback", "127.0.0.1", IpVersion::Any),
                ("loopback6", "::1", IpVersion::V6),
                ("localhost", "localhost", IpVersion::V4),
            ]
        );
        assert!(config.targets.iter().all(|t| t.count == 1 && t.labels.is_empty()));
        assert_eq!(config.otlp, None);
    }

    #[test]
    fn example_config_commented_examples_are_valid() {
        // In the shipped file, "## " starts prose and "# " a commented-out example: uncommenting
        // every example must give a valid configuration.
        let text = include_str!("../../config.example.yaml");
        let uncommented: String = text
            .lines()
            .map(|line| {
                let indent = &line[..line.len() - line.trim_start().len()];
                match line.trim_start().strip_prefix("# ") {
                    Some(rest) => format!("{indent}{rest}\n"),
                    None => format!("{line}\n"),
                }
            })
            .collect();
        assert_ne!(uncommented, text, "no uncommentable example found");
        let config = Config::parse(&uncommented, "uncommented").unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
        assert!(config.targets.len() > 3);
        assert!(config.targets.iter().any(|t| !t.labels.is_empty()));
        assert!(config.otlp.is_some());
    }
}
