//! The checks that need several values at once, and the checked [`Config`] they build from the
//! file as written: one function a concern, in the order a target's mistakes are reported.
//! What depends on the kind of probe is `probe`'s.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use super::fields::texts;
use super::locate::{Problem, Seg, TargetPath, path_string};
use super::model::{
    AttachMode, Config, CrossNode, DEFAULT_COUNT, DEFAULT_FOREIGN_BUDGET, DEFAULT_INTERVAL, DEFAULT_TIMEOUT, Expect,
    IpVersion, Origin, Otlp, Probe, Target, default_listen,
};
use super::raw::{RawConfig, RawCrossNode, RawExpect, RawFrom, RawOtlp, RawTarget};
use super::{discovery, probe};

pub(super) fn build(raw: RawConfig) -> Result<Config, Problem> {
    let cross_node = cross_node(raw.cross_node.as_ref());
    if raw.targets.is_empty() && cross_node.is_none() && raw.discovery.is_empty() {
        return Err(Problem::new(
            vec![Seg::Key("targets")],
            "the list of targets is empty: at least one target is needed (or discovery:, to find them, or cross_node: {enabled: true}, to only follow other nodes' probes)",
        ));
    }
    let attach = attach(raw.attach, cross_node)?;
    let top = Timing {
        interval: raw.interval,
        timeout: raw.timeout,
    };
    let discovery = discovery::section(raw.discovery, top)?;
    Ok(Config {
        listen: raw.listen.unwrap_or_else(default_listen),
        interval: top.interval(),
        timeout: top.timeout(),
        targets: targets(raw.targets, top)?,
        otlp: raw.otlp.map(otlp),
        attach,
        rtt_buckets: raw.rtt_buckets.unwrap_or_default(),
        mechanisms: raw.mechanisms.into_iter().map(|m| m.0).collect(),
        ring_buffer_bytes: raw.ring_buffer_bytes,
        cross_node,
        discovery,
    })
}

fn cross_node(raw: Option<&RawCrossNode>) -> Option<CrossNode> {
    raw.filter(|c| c.enabled).map(|c| CrossNode {
        budget: c.budget.unwrap_or(DEFAULT_FOREIGN_BUDGET),
        tunnels: c.tunnels.unwrap_or(true),
    })
}

/// Another node's probe may cross at any moment: with `cross_node` on, the programs stay
/// attached.
fn attach(given: Option<AttachMode>, cross_node: Option<CrossNode>) -> Result<AttachMode, Problem> {
    match (given, cross_node) {
        (Some(AttachMode::InFlight), Some(_)) => Err(Problem::new(
            vec![Seg::Key("attach")],
            "cross_node needs the kernel programs attached all the time: attach: always, or leave attach: out",
        )),
        (Some(mode), _) => Ok(mode),
        (None, Some(_)) => Ok(AttachMode::Always),
        (None, None) => Ok(AttachMode::default()),
    }
}

fn otlp(o: RawOtlp) -> Otlp {
    Otlp {
        endpoint: o.endpoint,
        protocol: o.protocol,
        timeout: o.timeout,
        service_name: o.service_name.map(|t| t.0),
        sample_ratio: o.sample_ratio.unwrap_or(1.0),
        trace_url: o.trace_url,
    }
}

/// An interval and a timeout as the file gives them, at the top level (what targets inherit)
/// or a target's own: errors say which of them a value comes from.
#[derive(Clone, Copy)]
pub(super) struct Timing {
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
}

impl Timing {
    pub fn interval(self) -> Duration {
        self.interval.unwrap_or(DEFAULT_INTERVAL)
    }

    pub fn timeout(self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_TIMEOUT)
    }
}

fn targets(raw: Vec<RawTarget>, top: Timing) -> Result<Vec<Target>, Problem> {
    let mut targets: Vec<Target> = Vec::with_capacity(raw.len());
    let mut index_of: HashMap<String, usize> = HashMap::new();
    for (i, t) in raw.into_iter().enumerate() {
        let at = TargetPath::Listed(i);
        let named = t.name.is_some();
        let target = target(at, t, top)?;
        if let Some(&first) = index_of.get(&target.name) {
            return Err(duplicate(at, &target.name, named, first));
        }
        index_of.insert(target.name.clone(), i);
        targets.push(target);
    }
    Ok(targets)
}

pub(super) fn target(at: TargetPath, t: RawTarget, top: Timing) -> Result<Target, Problem> {
    let probe = probe::section(at, &t)?;
    let from = origin(at, t.from)?;
    let name = t.name.unwrap_or_else(|| default_name(&probe.probe, &probe.address));
    let ip_version = t.ip_version.unwrap_or_default();
    check_ip_version(at, ip_version, &probe.address)?;
    let own = Timing {
        interval: t.interval,
        timeout: t.timeout,
    };
    let interval = own.interval.unwrap_or(top.interval());
    let timeout = own.timeout.unwrap_or(top.timeout());
    if timeout > interval {
        return Err(timeout_over_interval(at, &name, own, top));
    }
    Ok(Target {
        name,
        address: probe.address,
        ip_version,
        interval,
        timeout,
        count: t.count.unwrap_or(DEFAULT_COUNT),
        labels: t.labels,
        probe: probe.probe,
        sizes: probe.sizes,
        dont_fragment: probe.dont_fragment,
        from,
        expect: t.expect.map(expect),
    })
}

fn origin(at: TargetPath, from: Option<RawFrom>) -> Result<Option<Origin>, Problem> {
    match from {
        None => Ok(None),
        Some(RawFrom {
            netns: Some(ns),
            pod: None,
        }) => Ok(Some(Origin::Netns(ns))),
        Some(RawFrom {
            netns: None,
            pod: Some(pod),
        }) => Ok(Some(Origin::Pod(pod))),
        Some(RawFrom {
            netns: Some(_),
            pod: Some(_),
        }) => Err(Problem::new(at.key("from"), "from: takes netns: or pod:, not both")),
        Some(RawFrom { netns: None, pod: None }) => Err(Problem::new(
            at.key("from"),
            "from: needs netns: (a namespace name or path) or pod: (namespace/name)",
        )),
    }
}

/// The name of a target the file does not name. TCP and UDP targets are named after their
/// address, port and protocol, so that two ports of one host are two targets; DNS targets after
/// their query.
fn default_name(probe: &Probe, address: &str) -> String {
    match probe {
        Probe::Dns { query, server: None } => format!("dns:{query}"),
        Probe::Dns { query, server: Some(s) } => format!("dns:{query}@{s}"),
        _ => match probe.port() {
            Some(port) => format!("{address}:{port}/{}", probe.protocol()),
            None => address.to_owned(),
        },
    }
}

/// An IP literal must be of the version asked for (a host name resolves to one that is).
fn check_ip_version(at: TargetPath, ip_version: IpVersion, address: &str) -> Result<(), Problem> {
    match address.parse::<IpAddr>() {
        Ok(ip) if !ip_version.accepts(ip) => {
            let family = if ip.is_ipv4() { "an IPv4" } else { "an IPv6" };
            Err(Problem::new(
                at.key("ip_version"),
                format!("ip_version {ip_version} does not match the address {address:?}, which is {family} address"),
            ))
        }
        _ => Ok(()),
    }
}

/// A target's timeout is longer than its interval: blames the value the target gives itself,
/// else the top-level one it inherits, and says where the other came from.
fn timeout_over_interval(at: TargetPath, name: &str, t: Timing, top: Timing) -> Problem {
    let (iv, to) = (
        humantime::format_duration(t.interval.unwrap_or(top.interval())),
        humantime::format_duration(t.timeout.unwrap_or(top.timeout())),
    );
    let why = "a probe's journey must end before the next probe of the same target";
    let inherited = |given: bool, what: &str| {
        if given {
            format!("the top-level {what}")
        } else {
            format!("the default {what}")
        }
    };
    let of = path_string(&at.target());
    if t.timeout.is_some() {
        let source = match t.interval {
            Some(_) => "the target's own interval".to_owned(),
            None => inherited(top.interval.is_some(), "interval"),
        };
        Problem::new(
            at.key("timeout"),
            format!("timeout {to} is longer than the interval {iv} ({source}): {why}"),
        )
    } else if t.interval.is_some() {
        let source = inherited(top.timeout.is_some(), "timeout");
        Problem::new(
            at.key("interval"),
            format!("interval {iv} is shorter than the timeout {to} ({source}): {why}"),
        )
    } else if top.timeout.is_some() {
        let source = inherited(top.interval.is_some(), "interval");
        Problem::new(
            vec![Seg::Key("timeout")],
            format!("timeout {to} is longer than the interval {iv} ({source}), which {of} ({name:?}) uses: {why}"),
        )
    } else {
        // The default timeout is shorter than the minimum interval, so the top-level interval
        // was given.
        Problem::new(
            vec![Seg::Key("interval")],
            format!(
                "interval {iv} is shorter than the timeout {to} (the default timeout), which {of} ({name:?}) uses: {why}"
            ),
        )
    }
}

/// A target whose name `first` already has: blames its name, or its address when the name
/// comes from the address.
fn duplicate(at: TargetPath, name: &str, named: bool, first: usize) -> Problem {
    let (key, hint) = if named {
        ("name", "")
    } else {
        (
            "address",
            " (a target without a name is named after its address: give it a name)",
        )
    };
    Problem::new(
        at.key(key),
        format!("duplicate target name {name:?}, already used by targets[{first}]{hint}"),
    )
}

fn expect(e: RawExpect) -> Expect {
    Expect {
        through: texts(e.through),
        not_through: texts(e.not_through),
        no_drop: e.no_drop,
        answer: e.answer,
    }
}
