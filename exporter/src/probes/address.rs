//! Where a probe goes: a target's address or host name, resolved at each probe to an address
//! of the family asked for, and why that failed.

use std::fmt;
use std::net::IpAddr;

/// Which address family a target is probed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Deserialize)]
pub enum IpVersion {
    /// Whatever the host name resolves to first.
    #[default]
    #[serde(rename = "any")]
    Any,
    #[serde(rename = "4")]
    V4,
    #[serde(rename = "6")]
    V6,
}

impl IpVersion {
    /// Whether an address of this family is acceptable.
    pub fn accepts(self, ip: IpAddr) -> bool {
        match self {
            IpVersion::Any => true,
            IpVersion::V4 => ip.is_ipv4(),
            IpVersion::V6 => ip.is_ipv6(),
        }
    }
}

impl fmt::Display for IpVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpVersion::Any => "any",
            IpVersion::V4 => "4",
            IpVersion::V6 => "6",
        })
    }
}

/// Why a probe had nowhere to go, so was not sent: counted as `reason="resolve"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unresolved {
    #[error("cannot resolve {host}: {reason}")]
    Host { host: String, reason: String },
    /// A DNS probe without a server found no resolver in its namespace.
    #[error("no DNS server to ask: {0}")]
    NoResolver(String),
    /// The DNS server is not of the family asked for.
    #[error("the resolver {server} is not of ip_version {family}")]
    Family {
        server: std::net::SocketAddr,
        family: IpVersion,
    },
}

impl Unresolved {
    /// What the page and the API say of it: the cause alone, as the heading it has in the
    /// log is the page's outcome already.
    pub fn detail(&self) -> String {
        match self {
            Unresolved::NoResolver(why) => why.clone(),
            other => other.to_string(),
        }
    }
}

/// Resolves a target: an IP literal as is, a host name through the system resolver, keeping
/// the first address of the wanted family.
pub async fn resolve(host: &str, family: IpVersion) -> Result<IpAddr, Unresolved> {
    let err = |reason: String| Unresolved::Host {
        host: host.to_string(),
        reason,
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return match (family, ip) {
            (IpVersion::V4, IpAddr::V6(_)) => Err(err("is an IPv6 address but IPv4 was asked for".into())),
            (IpVersion::V6, IpAddr::V4(_)) => Err(err("is an IPv4 address but IPv6 was asked for".into())),
            _ => Ok(ip),
        };
    }
    let addrs = tokio::net::lookup_host((host, 0))
        .await
        .map_err(|e| err(e.to_string()))?;
    addrs.map(|a| a.ip()).find(|ip| family.accepts(*ip)).ok_or_else(|| {
        err(format!(
            "no {} address",
            match family {
                IpVersion::V6 => "IPv6",
                IpVersion::V4 => "IPv4",
                IpVersion::Any => "IP",
            }
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_literals_and_checks_family() {
        assert_eq!(
            resolve("127.0.0.1", IpVersion::Any).await.unwrap(),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert!(resolve("127.0.0.1", IpVersion::V6).await.is_err());
        assert_eq!(
            resolve("localhost", IpVersion::V4).await.unwrap(),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert!(resolve("no-such-host.invalid", IpVersion::Any).await.is_err());
    }
}
