//! The file as written: the serde layer, one `Raw*` type per mapping of the file. Every level
//! denies unknown keys; each field's own checks run in its deserializer (`fields`), where
//! serde_norway attaches the value's position to the error. What needs several values at once
//! is `build`'s.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::discovery::RawDiscovery;
use super::fields::{self, MechanismName, Text};
use super::model::{AttachMode, IpVersion, OtlpProtocol};
use crate::pods::PodName;
use crate::probes::dns::{AnswerExpect, DnsQuery};

#[derive(Deserialize)]
#[serde(expecting = "a mapping of tracepkt settings", deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default, deserialize_with = "fields::listen_address")]
    pub listen: Option<SocketAddr>,
    #[serde(default, deserialize_with = "fields::interval")]
    pub interval: Option<Duration>,
    #[serde(default, deserialize_with = "fields::timeout")]
    pub timeout: Option<Duration>,
    #[serde(deserialize_with = "fields::targets")]
    pub targets: Vec<RawTarget>,
    #[serde(default)]
    pub otlp: Option<RawOtlp>,
    #[serde(default)]
    pub attach: Option<AttachMode>,
    #[serde(default, deserialize_with = "fields::rtt_buckets")]
    pub rtt_buckets: Option<Vec<f64>>,
    #[serde(default)]
    pub mechanisms: Vec<MechanismName>,
    #[serde(default, deserialize_with = "fields::ring_buffer_bytes")]
    pub ring_buffer_bytes: Option<u32>,
    #[serde(default)]
    pub cross_node: Option<RawCrossNode>,
    #[serde(default, deserialize_with = "super::discovery::sources")]
    pub discovery: Vec<RawDiscovery>,
}

#[derive(Deserialize)]
#[serde(
    expecting = "a mapping with enabled:, and optionally budget: and tunnels:",
    deny_unknown_fields
)]
pub(super) struct RawCrossNode {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, deserialize_with = "fields::foreign_budget")]
    pub budget: Option<u32>,
    #[serde(default)]
    pub tunnels: Option<bool>,
}

// Clone and Default: a discovery source's `target:` is a template, copied for each address.
#[derive(Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(expecting = "a target: a mapping with at least an address", deny_unknown_fields)]
pub(super) struct RawTarget {
    #[serde(default, deserialize_with = "fields::address")]
    pub address: Option<String>,
    #[serde(default, deserialize_with = "fields::dns_query")]
    pub query: Option<DnsQuery>,
    #[serde(default, deserialize_with = "fields::dns_server")]
    pub server: Option<SocketAddr>,
    #[serde(default, deserialize_with = "fields::target_name")]
    pub name: Option<String>,
    #[serde(default)]
    pub ip_version: Option<IpVersion>,
    #[serde(default, deserialize_with = "fields::interval")]
    pub interval: Option<Duration>,
    #[serde(default, deserialize_with = "fields::timeout")]
    pub timeout: Option<Duration>,
    #[serde(default, deserialize_with = "fields::count")]
    pub count: Option<u32>,
    #[serde(default, deserialize_with = "fields::labels")]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub protocol: Option<RawProtocol>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub payload: Option<Text>,
    #[serde(default, deserialize_with = "fields::sizes")]
    pub size: Option<Vec<u16>>,
    #[serde(default)]
    pub dont_fragment: Option<bool>,
    #[serde(default)]
    pub from: Option<RawFrom>,
    #[serde(default)]
    pub expect: Option<RawExpect>,
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawProtocol {
    Icmp,
    Tcp,
    Udp,
    Dns,
}

#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(
    expecting = "a mapping with netns: (a namespace name or path) or pod: (namespace/name)",
    deny_unknown_fields
)]
pub(super) struct RawFrom {
    #[serde(default, deserialize_with = "fields::netns_ref")]
    pub netns: Option<PathBuf>,
    #[serde(default, deserialize_with = "fields::pod_ref")]
    pub pod: Option<PodName>,
}

#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(expecting = "a mapping with through, not_through or no_drop", deny_unknown_fields)]
pub(super) struct RawExpect {
    #[serde(default)]
    pub through: Vec<Text>,
    #[serde(default)]
    pub not_through: Vec<Text>,
    #[serde(default)]
    pub no_drop: bool,
    #[serde(default, deserialize_with = "fields::answer_expect")]
    pub answer: Option<AnswerExpect>,
}

#[derive(Deserialize)]
#[serde(
    expecting = "a mapping with endpoint, protocol, timeout, sample_ratio, service_name or trace_url",
    deny_unknown_fields
)]
pub(super) struct RawOtlp {
    #[serde(default, deserialize_with = "fields::otlp_endpoint")]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub protocol: Option<OtlpProtocol>,
    #[serde(default, deserialize_with = "fields::timeout")]
    pub timeout: Option<Duration>,
    #[serde(default, deserialize_with = "fields::sample_ratio")]
    pub sample_ratio: Option<f64>,
    #[serde(default)]
    pub service_name: Option<Text>,
    #[serde(default, deserialize_with = "fields::trace_url")]
    pub trace_url: Option<String>,
}
