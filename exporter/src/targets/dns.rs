//! DNS sources: the A and AAAA records of a name, or its SRV records and their targets'
//! addresses, asked through hickory-resolver.
//!
//! The resolver is built again for each lookup, from `/etc/resolv.conf` (so the namespace
//! tracepkt runs in decides, and a changed file is followed) or for the `server:` given, and
//! asks afresh: it caches nothing between lookups, whose schedule is the answer's TTL anyway.
//!
//! A name that does not exist (NXDOMAIN) or a server that does not answer is a failed lookup:
//! the source keeps what it had. A name with no records of a type (NODATA) is an empty answer:
//! a service with no ready endpoint has none.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};

use super::source::{Answer, Found, Left};
use super::status::Rejected;
use crate::config::IpVersion;

/// How long one query may take, and how often it is tried.
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);
const ATTEMPTS: usize = 2;

pub(super) struct Dns {
    name: String,
    server: Option<SocketAddr>,
    srv: bool,
}

/// The addresses of one name, and the smallest TTL among them.
struct Addresses {
    ips: Vec<IpAddr>,
    ttl: Option<u32>,
}

impl Dns {
    pub fn addresses(name: &str, server: Option<SocketAddr>) -> Dns {
        Dns {
            name: name.to_owned(),
            server,
            srv: false,
        }
    }

    pub fn srv(name: &str, server: Option<SocketAddr>) -> Dns {
        Dns {
            name: name.to_owned(),
            server,
            srv: true,
        }
    }

    /// At most `cap` SRV records are followed to their targets' addresses.
    pub async fn lookup(&self, ip_version: IpVersion, cap: usize) -> Result<Answer, String> {
        let resolver = resolver(self.server)?;
        if !self.srv {
            let a = addresses(&resolver, &self.name, ip_version).await?;
            return Ok(Answer {
                found: a.ips.into_iter().map(|ip| Found::address(ip.to_string())).collect(),
                ttl: a.ttl.map(|t| Duration::from_secs(t.into())),
                ..Answer::default()
            });
        }
        srv(&resolver, &self.name, ip_version, cap).await
    }
}

fn resolver(server: Option<SocketAddr>) -> Result<TokioResolver, String> {
    let mut builder = match server {
        Some(s) => {
            let mut ns = NameServerConfig::udp_and_tcp(s.ip());
            for c in &mut ns.connections {
                c.port = s.port();
            }
            let mut b = TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                TokioRuntimeProvider::default(),
            );
            b.options_mut().use_hosts_file = ResolveHosts::Never;
            b
        }
        None => TokioResolver::builder_tokio().map_err(|e| format!("cannot read /etc/resolv.conf: {e}"))?,
    };
    let options = builder.options_mut();
    options.timeout = QUERY_TIMEOUT;
    options.attempts = ATTEMPTS;
    options.cache_size = 0;
    builder.build().map_err(|e| format!("cannot make a resolver: {e}"))
}

/// The record types `ip_version` asks for.
fn address_types(ip_version: IpVersion) -> &'static [RecordType] {
    match ip_version {
        IpVersion::V4 => &[RecordType::A],
        IpVersion::V6 => &[RecordType::AAAA],
        IpVersion::Any => &[RecordType::A, RecordType::AAAA],
    }
}

async fn addresses(resolver: &TokioResolver, name: &str, ip_version: IpVersion) -> Result<Addresses, String> {
    let mut out = Addresses {
        ips: Vec::new(),
        ttl: None,
    };
    let types = address_types(ip_version);
    let mut missing = 0;
    for &rtype in types {
        match resolver.lookup(name, rtype).await {
            Ok(lookup) => {
                for r in lookup.answers() {
                    let ip = match &r.data {
                        RData::A(a) => IpAddr::V4(a.0),
                        RData::AAAA(a) => IpAddr::V6(a.0),
                        _ => continue,
                    };
                    out.ips.push(ip);
                    out.ttl = Some(out.ttl.map_or(r.ttl, |t| t.min(r.ttl)));
                }
            }
            Err(e) if e.is_nx_domain() => missing += 1,
            Err(e) if e.is_no_records_found() => {}
            Err(e) => return Err(failure(name, rtype, &e)),
        }
    }
    if missing == types.len() {
        return Err(format!("{name} does not exist (NXDOMAIN)"));
    }
    Ok(out)
}

fn failure(name: &str, rtype: RecordType, e: &NetError) -> String {
    format!("{rtype} lookup of {name} failed: {e}")
}

/// The SRV records of `name`, each target's addresses with the record's port. A target with
/// no address is left out and counted; the target `.` says there is no such service (RFC 2782)
/// and gives nothing.
async fn srv(resolver: &TokioResolver, name: &str, ip_version: IpVersion, cap: usize) -> Result<Answer, String> {
    let lookup = match resolver.lookup(name, RecordType::SRV).await {
        Ok(l) => Some(l),
        Err(e) if e.is_nx_domain() => return Err(format!("{name} does not exist (NXDOMAIN)")),
        Err(e) if e.is_no_records_found() => None,
        Err(e) => return Err(failure(name, RecordType::SRV, &e)),
    };
    let mut records: Vec<(String, u16, u32)> = lookup
        .iter()
        .flat_map(|l| l.answers())
        .filter_map(|r| match &r.data {
            RData::SRV(s) if !s.target.is_root() => Some((s.target.to_ascii(), s.port, r.ttl)),
            _ => None,
        })
        .collect();
    records.sort();
    records.dedup_by(|a, b| (&a.0, a.1) == (&b.0, b.1));
    let mut answer = Answer::default();
    if records.len() > cap {
        let over = records.len() - cap;
        answer.rejected.push(Left {
            why: Rejected::Capped,
            count: over as u64,
            what: format!("{over} SRV records past the first {cap} that one source may give"),
        });
        records.truncate(cap);
    }
    for (target, port, ttl) in records {
        let ttl = Duration::from_secs(ttl.into());
        answer.ttl = Some(answer.ttl.map_or(ttl, |t| t.min(ttl)));
        match addresses(resolver, &target, ip_version).await {
            Ok(a) if !a.ips.is_empty() => answer.found.extend(a.ips.into_iter().map(|ip| Found {
                port: Some(port),
                ..Found::address(ip.to_string())
            })),
            Ok(_) => answer.rejected.push(Left::one(
                Rejected::Unresolved,
                format!("SRV target {target} (port {port}) has no address"),
            )),
            Err(e) => answer.rejected.push(Left::one(
                Rejected::Unresolved,
                format!("SRV target {target} (port {port}): {e}"),
            )),
        }
    }
    Ok(answer)
}
