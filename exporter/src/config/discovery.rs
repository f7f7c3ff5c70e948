//! The `discovery:` section: where targets come from besides `targets:`, and the template each
//! address found becomes.
//!
//! ```yaml
//! discovery:
//!   - name: peers                # names the source in target names, logs and metrics
//!     dns: tracepkt.monitoring.svc.cluster.local   # A and AAAA records, or
//!     # srv: _probe._tcp.example.internal          # SRV records (the port comes with them), or
//!     # file: /etc/tracepkt/targets/*.yaml         # Prometheus file_sd files (JSON or YAML)
//!     server: 10.96.0.10         # dns and srv: the server to ask (default: resolv.conf)
//!     refresh: 30s               # default: the answer's TTL, at least 5s; files: 5s
//!     peers: true                # the addresses are other tracepkts (see `targets::mesh`)
//!     max_peers: 10              # with peers: probe at most this many; default 10
//!     target: {protocol: icmp}   # any target key but address and name
//! ```
//!
//! A template is checked when the file loads as a listed target would be, with a stand-in
//! address; each address found later becomes a target through [`Template::instantiate`], which
//! runs the same checks again with the real one: a discovered target is never one the file could
//! not have listed.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;
use serde::de::Deserializer;

use super::build::{self, Timing};
use super::fields::{self, check_host_name, check_label_name, parse_address, parse_duration, parse_str};
use super::locate::{Problem, Seg, TargetPath};
use super::model::{IpVersion, Target};
use super::raw::{RawProtocol, RawTarget};

/// Most sources in one file.
pub const MAX_SOURCES: usize = 64;
/// The shortest `refresh:` accepted.
pub const MIN_REFRESH: Duration = Duration::from_secs(1);
/// A DNS source without `refresh:` looks up again when the answer's TTL runs out, but not
/// sooner than this (a TTL of 0 would be a lookup loop) nor later than [`MAX_TTL_REFRESH`].
pub const MIN_TTL_REFRESH: Duration = Duration::from_secs(5);
/// See [`MIN_TTL_REFRESH`].
pub const MAX_TTL_REFRESH: Duration = Duration::from_secs(3600);
/// How often a file source looks for changed files without `refresh:`.
pub const DEFAULT_FILE_REFRESH: Duration = Duration::from_secs(5);
/// Peers probed with `peers: true` and no `max_peers:`.
pub const DEFAULT_MAX_PEERS: usize = 10;
/// The largest `max_peers:` accepted.
pub const MAX_MAX_PEERS: usize = 1000;
/// The label that names a probed peer: its node name, or its address.
pub const PEER_LABEL: &str = "peer";

/// A discovery source as written.
#[derive(Deserialize)]
#[serde(
    expecting = "a discovery source: a mapping with name: and one of dns:, srv: or file:",
    deny_unknown_fields
)]
pub(super) struct RawDiscovery {
    #[serde(deserialize_with = "source_name")]
    pub name: String,
    #[serde(default, deserialize_with = "dns_name")]
    pub dns: Option<String>,
    #[serde(default, deserialize_with = "srv_name")]
    pub srv: Option<String>,
    #[serde(default, deserialize_with = "file_pattern")]
    pub file: Option<String>,
    #[serde(default, deserialize_with = "fields::dns_server")]
    pub server: Option<SocketAddr>,
    #[serde(default, deserialize_with = "refresh")]
    pub refresh: Option<Duration>,
    #[serde(default)]
    pub peers: bool,
    #[serde(default)]
    pub max_peers: Option<u64>,
    #[serde(default)]
    pub target: Option<RawTarget>,
}

/// A checked discovery source.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovery {
    /// Unique among sources; letters, digits, `_`, `.` and `-`.
    pub name: String,
    pub source: Source,
    /// `None`: DNS, the answer's TTL within [`MIN_TTL_REFRESH`]..[`MAX_TTL_REFRESH`]; files,
    /// [`DEFAULT_FILE_REFRESH`].
    pub refresh: Option<Duration>,
    /// With `peers: true`, how many of the others this node probes.
    pub max_peers: Option<usize>,
    pub template: Template,
}

/// Where a source's addresses come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A and AAAA records of a name (those the template's `ip_version` allows), asked of
    /// `server` or of the resolvers of tracepkt's own `resolv.conf`.
    Dns { name: String, server: Option<SocketAddr> },
    /// SRV records, and the addresses of their targets.
    Srv { name: String, server: Option<SocketAddr> },
    /// Prometheus file_sd files: an absolute path or glob.
    Files { pattern: String },
}

impl Source {
    /// `dns`, `srv` or `file`, as the key is spelled.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Dns { .. } => "dns",
            Source::Srv { .. } => "srv",
            Source::Files { .. } => "file",
        }
    }

    /// Whether the addresses it finds may come with a port (`port:` of TCP and UDP targets).
    fn gives_ports(&self) -> bool {
        !matches!(self, Source::Dns { .. })
    }
}

/// What each address of a source becomes: a target as the file writes one, less its address
/// and name.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    raw: RawTarget,
    /// Which source's template, for the paths of messages.
    index: usize,
    /// The top-level interval and timeout as the file gives them: what the targets inherit.
    top: (Option<Duration>, Option<Duration>),
}

impl Template {
    /// Which address families the source's addresses may be.
    pub fn ip_version(&self) -> IpVersion {
        self.raw.ip_version.unwrap_or_default()
    }

    /// Whether a port that comes with an address is the probe's (TCP, UDP and DNS probes);
    /// an ICMP probe has none.
    pub fn uses_port(&self) -> bool {
        self.raw.protocol.is_some_and(|p| p != RawProtocol::Icmp)
    }

    /// The target named `name` for `host` (an IP address or a host name) and the port it came
    /// with, if any, with `labels` added to the template's (on the same name, `labels` win).
    /// Runs every check a listed target passes; the error says what is wrong with this address.
    pub fn instantiate(
        &self,
        name: String,
        host: &str,
        port: Option<u16>,
        labels: &BTreeMap<String, String>,
    ) -> Result<Target, String> {
        let host = parse_address(host)?;
        let host = host.parse::<IpAddr>().map_or(host, |ip| ip.to_string());
        let mut raw = self.raw.clone();
        raw.name = Some(name);
        for (k, v) in labels {
            check_label_name(k).map_err(|why| format!("invalid label name {k:?}: {why}"))?;
            if v.is_empty() {
                return Err(format!("label {k:?} has an empty value"));
            }
            raw.labels.insert(k.clone(), v.clone());
        }
        match raw.protocol.unwrap_or(RawProtocol::Icmp) {
            RawProtocol::Dns => {
                let ip: IpAddr = host
                    .parse()
                    .map_err(|_| format!("{host:?} is not an IP address, as a DNS probe's server is"))?;
                raw.server = Some(SocketAddr::new(ip, port.unwrap_or(53)));
            }
            RawProtocol::Tcp | RawProtocol::Udp => {
                raw.address = Some(host);
                raw.port = port.or(raw.port);
            }
            RawProtocol::Icmp => raw.address = Some(host),
        }
        let (interval, timeout) = self.top;
        let top = Timing { interval, timeout };
        build::target(TargetPath::Template(self.index), raw, top).map_err(|p| p.message)
    }
}

/// Checks the sources and builds them; `top` is what their targets inherit.
pub(super) fn section(raw: Vec<RawDiscovery>, top: Timing) -> Result<Vec<Discovery>, Problem> {
    let mut names = HashSet::new();
    let mut sources = Vec::with_capacity(raw.len());
    for (i, d) in raw.into_iter().enumerate() {
        let at = |key: &'static str| vec![Seg::Key("discovery"), Seg::Index(i), Seg::Key(key)];
        if !names.insert(d.name.clone()) {
            return Err(Problem::new(
                at("name"),
                format!("duplicate discovery source name {:?}", d.name),
            ));
        }
        let source = source(&d, i)?;
        if d.max_peers.is_some() && !d.peers {
            return Err(Problem::new(at("max_peers"), "max_peers: needs peers: true"));
        }
        let max_peers = match d.max_peers {
            Some(n) if !(1..=MAX_MAX_PEERS as u64).contains(&n) => {
                return Err(Problem::new(
                    at("max_peers"),
                    format!("max_peers {n} is out of range: expected 1 to {MAX_MAX_PEERS}"),
                ));
            }
            Some(n) => Some(n as usize),
            None => d.peers.then_some(DEFAULT_MAX_PEERS),
        };
        let template = template(i, d.target.unwrap_or_default(), &source, d.peers, top)?;
        sources.push(Discovery {
            name: d.name,
            source,
            refresh: d.refresh,
            max_peers,
            template,
        });
    }
    Ok(sources)
}

fn source(d: &RawDiscovery, i: usize) -> Result<Source, Problem> {
    let at = |key: &'static str| vec![Seg::Key("discovery"), Seg::Index(i), Seg::Key(key)];
    let given: Vec<&'static str> = [
        ("dns", d.dns.is_some()),
        ("srv", d.srv.is_some()),
        ("file", d.file.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, set)| set.then_some(k))
    .collect();
    if let [_, second, ..] = given[..] {
        return Err(Problem::new(
            at(second),
            format!("a source takes one of dns:, srv: or file:, not {}", given.join(" and ")),
        ));
    }
    let server = d.server;
    match (&d.dns, &d.srv, &d.file) {
        (Some(name), _, _) => Ok(Source::Dns {
            name: name.clone(),
            server,
        }),
        (_, Some(name), _) => Ok(Source::Srv {
            name: name.clone(),
            server,
        }),
        (_, _, Some(_)) if server.is_some() => Err(Problem::new(
            at("server"),
            "server: is the DNS server that dns: and srv: ask; a file: source has none",
        )),
        (_, _, Some(pattern)) => Ok(Source::Files {
            pattern: pattern.clone(),
        }),
        (None, None, None) => Err(Problem::new(
            vec![Seg::Key("discovery"), Seg::Index(i)],
            "a source needs one of dns: (A and AAAA records), srv: (SRV records) or file: (file_sd files)",
        )),
    }
}

/// Checks a template as a listed target, with a stand-in for what the source gives: an address
/// of the family it allows and, from a source whose addresses come with ports, a port.
fn template(i: usize, raw: RawTarget, source: &Source, peers: bool, top: Timing) -> Result<Template, Problem> {
    let at = TargetPath::Template(i);
    let refused = [
        ("address", raw.address.is_some()),
        ("name", raw.name.is_some()),
        ("server", raw.server.is_some()),
    ];
    if let Some((key, _)) = refused.iter().find(|(_, set)| *set) {
        return Err(Problem::new(
            at.key(key),
            format!(
                "a discovered target's {key} comes from its source (its address, and a name made of the source's and the address)"
            ),
        ));
    }
    if peers && raw.labels.contains_key(PEER_LABEL) {
        return Err(Problem::new(
            at.keys(&["labels"]),
            format!("with peers: true, tracepkt sets the label {PEER_LABEL:?} itself: it names each peer"),
        ));
    }
    let mut stand_in = raw.clone();
    let ip = match stand_in.ip_version {
        Some(IpVersion::V6) => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        _ => IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
    };
    match stand_in.protocol {
        Some(RawProtocol::Dns) => stand_in.server = Some(SocketAddr::new(ip, 53)),
        Some(RawProtocol::Tcp | RawProtocol::Udp) if source.gives_ports() => {
            stand_in.address = Some(ip.to_string());
            stand_in.port = stand_in.port.or(Some(1));
        }
        _ => stand_in.address = Some(ip.to_string()),
    }
    stand_in.name = Some("template".to_owned());
    build::target(at, stand_in, top)?;
    Ok(Template {
        raw,
        index: i,
        top: (top.interval, top.timeout),
    })
}

/// The list of sources, at most [`MAX_SOURCES`].
pub(super) fn sources<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<RawDiscovery>, D::Error> {
    fields::bounded_seq(d, "a list of discovery sources", MAX_SOURCES, || {
        format!("more than {MAX_SOURCES} discovery sources")
    })
}

/// A source's name: it starts the names of its targets (`NAME/ADDRESS`) and is a label value.
fn source_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    parse_str(d, "a source name", |s| {
        let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
        if s.is_empty() || s.len() > 64 || !s.chars().all(ok) {
            return Err(format!(
                "invalid source name {s:?}: 1 to 64 letters, digits, '_', '.' and '-' (it starts its targets' names, NAME/ADDRESS)"
            ));
        }
        Ok(s.to_owned())
    })
}

fn dns_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    parse_str(d, "a DNS name", |s| {
        check_host_name(s).map_err(|why| format!("invalid DNS name {s:?}: {why}"))?;
        Ok(Some(s.to_owned()))
    })
}

/// `_service._proto.domain` (RFC 2782).
fn srv_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    parse_str(d, "an SRV name, _service._proto.domain", |s| {
        let bad = |why: &str| format!("invalid SRV name {s:?}: {why}");
        let mut labels = s.splitn(3, '.');
        let (service, proto, domain) = (labels.next(), labels.next(), labels.next());
        let (Some(service), Some(proto), Some(domain)) = (service, proto, domain) else {
            return Err(bad("expected _service._proto.domain"));
        };
        for label in [service, proto] {
            let rest = label
                .strip_prefix('_')
                .ok_or_else(|| bad("the service and protocol start with '_'"))?;
            check_host_name(rest).map_err(|why| bad(&why))?;
        }
        check_host_name(domain).map_err(|why| bad(&why))?;
        Ok(Some(s.to_owned()))
    })
}

fn file_pattern<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    parse_str(d, "an absolute path or glob", |s| {
        if !s.starts_with('/') {
            return Err(format!(
                "file {s:?} is not an absolute path: write the full path (globs such as /etc/tracepkt/targets/*.yaml are fine)"
            ));
        }
        glob::Pattern::new(s).map_err(|e| format!("file {s:?} is not a valid glob: {e}"))?;
        Ok(Some(s.to_owned()))
    })
}

fn refresh<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    parse_str(d, "a duration such as 30s", |s| {
        let refresh = parse_duration(s)?;
        if refresh < MIN_REFRESH {
            return Err(format!(
                "refresh {s:?} is too short: the minimum is {}",
                humantime::format_duration(MIN_REFRESH)
            ));
        }
        Ok(Some(refresh))
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, IpVersion, Probe, Source};

    fn parse(lines: &[&str]) -> Result<Config, String> {
        Config::parse(&(lines.join("\n") + "\n"), "t.yaml").map_err(|e| e.to_string())
    }

    #[test]
    fn sources_and_their_defaults() {
        let c = parse(&[
            "targets: []",
            "interval: 20s",
            "discovery:",
            "  - name: peers",
            "    dns: tracepkt.monitoring.svc.cluster.local",
            "    peers: true",
            "  - {name: api, srv: _https._tcp.example.internal, server: 198.18.0.53, refresh: 30s, target: {protocol: tcp}}",
            "  - {name: extra, file: /etc/tracepkt/targets/*.yaml, target: {ip_version: 6, count: 2}}",
        ])
        .unwrap();
        let [peers, api, extra] = &c.discovery[..] else {
            panic!("{:?}", c.discovery)
        };
        assert_eq!(
            peers.source,
            Source::Dns {
                name: "tracepkt.monitoring.svc.cluster.local".into(),
                server: None
            }
        );
        assert_eq!((peers.max_peers, peers.refresh), (Some(super::DEFAULT_MAX_PEERS), None));
        assert_eq!(api.source.kind(), "srv");
        assert_eq!(api.refresh, Some(std::time::Duration::from_secs(30)));
        assert_eq!(extra.template.ip_version(), IpVersion::V6);
        // A template's targets inherit the top level, as listed ones do.
        let t = peers
            .template
            .instantiate("peers/198.18.0.7".into(), "198.18.0.7", None, &Default::default())
            .unwrap();
        assert_eq!(
            (t.interval, t.probe.clone()),
            (std::time::Duration::from_secs(20), Probe::Icmp)
        );
        let t = api
            .template
            .instantiate("api/x".into(), "198.18.0.7", Some(8443), &Default::default())
            .unwrap();
        assert_eq!(t.probe, Probe::Tcp { port: 8443 });
        // What a listed target may not be, a discovered one may not be either.
        let e = extra
            .template
            .instantiate("extra/x".into(), "198.18.0.7", None, &Default::default())
            .unwrap_err();
        assert!(e.contains("ip_version 6 does not match"), "{e}");
    }

    #[test]
    fn without_discovery_nothing_changes() {
        assert!(
            parse(&["targets: [{address: 198.18.0.1}]"])
                .unwrap()
                .discovery
                .is_empty()
        );
        let e = parse(&["targets: []"]).unwrap_err();
        assert!(e.contains("the list of targets is empty"), "{e}");
    }

    #[test]
    fn bad_sources() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["  - {dns: a.example}"],
                "t.yaml:3:5: discovery[0]: missing field `name`",
            ),
            (
                &["  - {name: a}"],
                "t.yaml:3:5: discovery[0]: a source needs one of dns:",
            ),
            (
                &["  - {name: a, dns: a.example, file: /x}"],
                "t.yaml:3:37: discovery[0].file: a source takes one of dns:, srv: or file:, not dns and file",
            ),
            (&["  - {name: a/b, dns: a.example}"], "invalid source name \"a/b\""),
            (&["  - {name: a, dns: -a.example}"], "invalid DNS name"),
            (&["  - {name: a, srv: a.example}"], "invalid SRV name"),
            (&["  - {name: a, file: targets/*.yaml}"], "is not an absolute path"),
            (&["  - {name: a, file: \"/x/[\"}"], "is not a valid glob"),
            (
                &["  - {name: a, file: /x, server: 198.18.0.53}"],
                "discovery[0].server: server: is the DNS server",
            ),
            (
                &["  - {name: a, dns: a.example, refresh: 100ms}"],
                "refresh \"100ms\" is too short",
            ),
            (
                &["  - {name: a, dns: a.example, max_peers: 3}"],
                "discovery[0].max_peers: max_peers: needs peers: true",
            ),
            (
                &["  - {name: a, dns: a.example, peers: true, max_peers: 0}"],
                "max_peers 0 is out of range",
            ),
            (
                &["  - {name: a, dns: a.example}", "  - {name: a, dns: b.example}"],
                "t.yaml:4:12: discovery[1].name: duplicate discovery source name \"a\"",
            ),
            (
                &["  - {name: a, dns: a.example, target: {address: 198.18.0.1}}"],
                "discovery[0].target.address: a discovered target's address comes from its source",
            ),
            (
                &["  - {name: a, dns: a.example, target: {name: x}}"],
                "discovery[0].target.name: a discovered target's name comes from its source",
            ),
            (
                &["  - {name: a, dns: a.example, target: {protocol: tcp}}"],
                "discovery[0].target.protocol: ",
            ),
            (
                &["  - {name: a, dns: a.example, target: {interval: 1s, timeout: 5s}}"],
                "discovery[0].target.timeout: timeout 5s is longer than the interval 1s",
            ),
            (
                &["  - {name: a, dns: a.example, peers: true, target: {labels: {peer: x}}}"],
                "discovery[0].target.labels: with peers: true, tracepkt sets the label \"peer\" itself",
            ),
            (
                &["  - {name: a, dns: a.example, target: {bogus: 1}}"],
                "unknown field `bogus`",
            ),
        ];
        for (lines, want) in cases {
            let mut text = vec!["targets: []", "discovery:"];
            text.extend_from_slice(lines);
            let e = parse(&text).unwrap_err();
            assert!(e.contains(want), "{lines:?}: {e:?} does not contain {want:?}");
        }
    }
}
