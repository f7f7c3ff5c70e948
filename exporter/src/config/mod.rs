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
//!     expect:                  # optional, on any target: what every journey's path must look like
//!       through: [backend]     #   namespaces or interfaces it must cross
//!       not_through: [eth9]    #   ones it must not
//!       no_drop: true          #   no drop and no netfilter DROP
//!       answer: [10.0.0.7]     #   dns only: addresses or names the answer must hold, or
//!                              #   `answer: any` for any non-empty answer
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
//! discovery:                   # optional: more targets, found by DNS or in file_sd files
//!   - name: peers              #   (see `discovery`)
//!     dns: tracepkt.monitoring.svc.cluster.local
//!     peers: true
//! ```
//!
//! # Where errors point
//!
//! Every error reads `file:line:column: path: what is wrong`.
//!
//! * Syntax and type errors, unknown keys (every level denies them), and everything checked while
//!   one value is deserialized (durations, addresses, label names, counts, endpoints...) are
//!   serde_norway errors: the checks run inside the visitors (`fields`), so serde_norway attaches
//!   the position of the offending node itself.
//! * Checks that need several values at once (duplicate names, timeout against interval,
//!   `ip_version` against an IP literal, the keys a kind of probe takes) run after deserializing
//!   (`build`, `probe`) and blame a node by its path; `locate` finds that node's position by
//!   walking the same text again with serde_norway.
//!
//! # Files
//!
//! * `model`: the checked configuration the rest of tracepkt reads, its defaults and limits.
//! * `raw`: the file as written, the serde types.
//! * `fields`: what one value may be: the field deserializers and value checks, and the parsers
//!   the command line shares.
//! * `build`: the checks across values, building the model from the raw types.
//! * `probe`: the keys that depend on a target's kind of probe.
//! * `discovery`: the `discovery:` section, and the templates its sources' addresses become.
//! * `locate`: paths of nodes, and their line and column in the text.

mod build;
mod discovery;
mod fields;
mod locate;
mod model;
mod probe;
mod raw;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use discovery::{DEFAULT_FILE_REFRESH, MAX_TTL_REFRESH, MIN_TTL_REFRESH, PEER_LABEL};
pub use fields::{check_otlp_endpoint, netns_path, parse_dns_server, parse_mechanism, parse_probe_size};
pub use model::*;

use fields::TextBudget;
use locate::{locate_nearest, path_string};
use raw::RawConfig;

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
        build::build(raw).map_err(|problem| {
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
