//! A target's probe section: the keys that depend on the kind of probe (`protocol:`, `port:`,
//! `payload:`, `size:`, `dont_fragment:`, `query:`, `server:`, `expect: {answer:}`), which
//! kinds take which, and where the probe goes. One function a kind; [`section`] is the only
//! place that lists the kinds.

use std::net::IpAddr;

use super::locate::{Problem, TargetPath};
use super::model::{IpVersion, Probe};
use super::raw::{RawProtocol, RawTarget};

/// The checked probe part of a target.
pub(super) struct ProbeSection {
    pub probe: Probe,
    /// Where the probe goes, as the target shows it: the address, or a DNS probe's server.
    pub address: String,
    pub sizes: Vec<u16>,
    pub dont_fragment: bool,
}

impl ProbeSection {
    /// A probe of a kind that has one size and leaves don't-fragment alone.
    fn fixed_size(probe: Probe, address: String) -> ProbeSection {
        ProbeSection {
            probe,
            address,
            sizes: Vec::new(),
            dont_fragment: false,
        }
    }
}

/// Checks the keys of target `at` that depend on its kind of probe, in the order the file's
/// reader meets the mistakes: the first one found is the one reported.
pub(super) fn section(at: TargetPath, t: &RawTarget) -> Result<ProbeSection, Problem> {
    match t.protocol.unwrap_or(RawProtocol::Icmp) {
        RawProtocol::Icmp => icmp(at, t),
        RawProtocol::Tcp => tcp(at, t),
        RawProtocol::Udp => udp(at, t),
        RawProtocol::Dns => dns(at, t),
    }
}

fn icmp(at: TargetPath, t: &RawTarget) -> Result<ProbeSection, Problem> {
    let address = destination(at, t)?;
    if t.port.is_some() {
        return Err(Problem::new(
            at.key("port"),
            "an ICMP target has no port: set protocol: tcp or udp",
        ));
    }
    if t.payload.is_some() {
        return Err(Problem::new(at.key("payload"), "only UDP targets send a payload"));
    }
    let sizes = t.size.clone().unwrap_or_default();
    let v6 = t.ip_version == Some(IpVersion::V6) || address.parse::<IpAddr>().is_ok_and(|a| a.is_ipv6());
    if v6 && let Some(small) = sizes.iter().find(|&&s| usize::from(s) < probe_common::PROBE_L3_LEN_V6) {
        return Err(Problem::new(
            at.key("size"),
            format!(
                "size {small} is below the smallest IPv6 probe, {}",
                probe_common::PROBE_L3_LEN_V6
            ),
        ));
    }
    Ok(ProbeSection {
        probe: Probe::Icmp,
        address,
        sizes,
        dont_fragment: t.dont_fragment.unwrap_or(false),
    })
}

fn tcp(at: TargetPath, t: &RawTarget) -> Result<ProbeSection, Problem> {
    let address = destination(at, t)?;
    if t.payload.is_some() {
        return Err(Problem::new(at.key("payload"), "only UDP targets send a payload"));
    }
    let port = port(at, t)?;
    icmp_only(at, t)?;
    Ok(ProbeSection::fixed_size(Probe::Tcp { port }, address))
}

fn udp(at: TargetPath, t: &RawTarget) -> Result<ProbeSection, Problem> {
    let address = destination(at, t)?;
    let port = port(at, t)?;
    icmp_only(at, t)?;
    let payload = t.payload.as_ref().map(|p| p.0.as_bytes().to_vec());
    Ok(ProbeSection::fixed_size(Probe::Udp { port, payload }, address))
}

fn dns(at: TargetPath, t: &RawTarget) -> Result<ProbeSection, Problem> {
    if t.address.is_some() {
        return Err(Problem::new(
            at.key("address"),
            "a DNS target has no address: it asks query:, of server: (default: the resolver of the namespace it starts in)",
        ));
    }
    let Some(query) = t.query.clone() else {
        return Err(Problem::new(
            at.key("protocol"),
            "a DNS target needs query: NAME[/TYPE]",
        ));
    };
    if t.port.is_some() || t.payload.is_some() {
        return Err(Problem::new(
            at.key(if t.port.is_some() { "port" } else { "payload" }),
            "a DNS target takes no port: or payload: (give the port with server: IP:PORT)",
        ));
    }
    icmp_only(at, t)?;
    let address = t.server.map_or_else(|| "resolver".to_owned(), |s| s.to_string());
    Ok(ProbeSection::fixed_size(
        Probe::Dns {
            query,
            server: t.server,
        },
        address,
    ))
}

/// The address of a probe of any kind but DNS, which alone asks `query:` of `server:` and
/// checks an answer.
fn destination(at: TargetPath, t: &RawTarget) -> Result<String, Problem> {
    if t.query.is_some() || t.server.is_some() {
        return Err(Problem::new(
            at.key(if t.query.is_some() { "query" } else { "server" }),
            "only DNS targets (protocol: dns) take query: and server:",
        ));
    }
    let Some(address) = t.address.clone() else {
        return Err(Problem::new(
            at.target(),
            "a target needs address: (an IP address or a host name)",
        ));
    };
    if t.expect.as_ref().is_some_and(|e| e.answer.is_some()) {
        return Err(Problem::new(
            at.keys(&["expect", "answer"]),
            "only DNS targets have an answer to check",
        ));
    }
    Ok(address)
}

/// The port of a TCP or UDP probe.
fn port(at: TargetPath, t: &RawTarget) -> Result<u16, Problem> {
    match t.port {
        Some(port) if port != 0 => Ok(port),
        given => Err(Problem::new(
            at.key(if given.is_some() { "port" } else { "protocol" }),
            "a TCP or UDP target needs a port (1-65535)",
        )),
    }
}

/// Refuses the keys that only ICMP probes take.
fn icmp_only(at: TargetPath, t: &RawTarget) -> Result<(), Problem> {
    for (key, given) in [("size", t.size.is_some()), ("dont_fragment", t.dont_fragment.is_some())] {
        if given {
            return Err(Problem::new(at.key(key), format!("{key} is for ICMP targets only")));
        }
    }
    Ok(())
}
