//! ICMP echo probes with ids and sequence numbers tracepkt owns.
//!
//! Raw ICMP sockets (root) let tracepkt choose the echo id, so it can register the id in the
//! kernel's `PROBES` map before the packet leaves. One socket per address family serves
//! every target; replies are matched by (address, id, seq).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use probe_common::payload;
use surge_ping::{Client, Config, ICMP, IcmpPacket, PingIdentifier, PingSequence, SurgeError};

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

/// How a probe ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Reply {
        rtt: Duration,
    },
    Timeout,
    /// Answered by an ICMP error instead of a reply (host unreachable, time exceeded...).
    IcmpError(String),
    /// TCP: answered by RST; UDP: by ICMP port unreachable.
    Refused,
    /// TCP or UDP: the kernel reported the destination unreachable.
    Unreachable(String),
    /// The probe could not be sent (no route, permission...).
    SendError(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot open a raw ICMP socket: {0} (tracepkt must run as root)")]
    Socket(std::io::Error),
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
}

pub struct Prober {
    v4: Client,
    v6: Option<Client>,
    /// Sockets for sized and don't-fragment probes, by IPv6-ness and what they do about
    /// fragmentation: opened on first use, as few nodes probe the MTU. A socket option is a
    /// socket's, so probes that want another one cannot share the plain socket.
    shaped: Mutex<HashMap<(bool, Fragmentation), Client>>,
}

/// What a probe's socket does about fragmentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fragmentation {
    /// As the kernel does for any socket (path MTU discovery by default: don't-fragment
    /// while the probe fits the path MTU the kernel knows, fragmented at the sender beyond
    /// it).
    Default,
    /// Don't-fragment, always, at the size asked even when the kernel has learned a smaller
    /// path MTU (`IP_PMTUDISC_PROBE`): what finds a black hole again on every probe. A probe
    /// larger than the first interface's MTU is refused at the sender (EMSGSIZE). IPv6
    /// routers never fragment: the option only keeps the sender from doing it.
    Never,
    /// No don't-fragment bit: any router may fragment (`IP_PMTUDISC_DONT`); over IPv6 the
    /// sender fragments to the interface MTU.
    Allowed,
}

impl Fragmentation {
    /// Sets the socket option on an ICMP client's socket.
    pub fn apply(self, client: &Client, addr: IpAddr) -> std::io::Result<()> {
        let value = match self {
            Fragmentation::Default => return Ok(()),
            Fragmentation::Never => 3,   // IP_PMTUDISC_PROBE, IPV6_PMTUDISC_PROBE
            Fragmentation::Allowed => 0, // IP_PMTUDISC_DONT, IPV6_PMTUDISC_DONT
        };
        let (level, name) = match addr {
            IpAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER),
            IpAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER),
        };
        let fd = client.get_socket().get_native_sock();
        let v: libc::c_int = value;
        // SAFETY: setsockopt on a socket the client owns, with an int option of its size.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&raw const v).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// A client with a raw ICMP socket in the calling thread's network namespace.
pub fn client(kind: ICMP) -> std::io::Result<Client> {
    Client::new(&Config::builder().kind(kind).sock_type_hint(socket2::Type::RAW).build())
}

impl Prober {
    /// Opens the sockets. IPv6 is optional: a node without it still probes IPv4.
    pub fn new() -> Result<Self, ProbeError> {
        let v4 = client(ICMP::V4).map_err(ProbeError::Socket)?;
        let v6 = client(ICMP::V6).ok();
        Ok(Prober {
            v4,
            v6,
            shaped: Mutex::new(HashMap::new()),
        })
    }

    /// The client for `fragmentation` over `addr`'s family, opened on first use.
    fn shaped(&self, addr: IpAddr, fragmentation: Fragmentation) -> std::io::Result<Client> {
        let key = (addr.is_ipv6(), fragmentation);
        let mut all = self.shaped.lock().unwrap();
        if let Some(c) = all.get(&key) {
            return Ok(c.clone());
        }
        let c = client(if addr.is_ipv6() { ICMP::V6 } else { ICMP::V4 })?;
        fragmentation.apply(&c, addr)?;
        all.insert(key, c.clone());
        Ok(c)
    }

    /// Sends one echo request carrying `payload` ([`probe_common::payload`], padded to a
    /// sized probe's length: its length is part of the contract with the kernel programs,
    /// which filter on the probe's IP length) and waits for its reply.
    pub async fn probe(
        &self,
        addr: IpAddr,
        id: u16,
        seq: u16,
        payload: &[u8],
        timeout: Duration,
        fragmentation: Fragmentation,
    ) -> Outcome {
        if addr.is_ipv6() && self.v6.is_none() {
            return Outcome::SendError("IPv6 is not available on this host".into());
        }
        let shaped;
        let client = match (addr, fragmentation) {
            (IpAddr::V4(_), Fragmentation::Default) => &self.v4,
            (IpAddr::V6(_), Fragmentation::Default) => self.v6.as_ref().expect("checked above"),
            _ => match self.shaped(addr, fragmentation) {
                Ok(c) => {
                    shaped = c;
                    &shaped
                }
                Err(e) => return Outcome::SendError(format!("cannot open a probe socket: {e}")),
            },
        };
        ping(client, addr, id, seq, payload, timeout).await
    }
}

/// Sends one echo request carrying `payload` through `client` and waits for its reply.
pub async fn ping(client: &Client, addr: IpAddr, id: u16, seq: u16, payload: &[u8], timeout: Duration) -> Outcome {
    debug_assert!(payload.len() >= payload::LEN);
    let mut pinger = client.pinger(addr, PingIdentifier(id)).await;
    pinger.timeout(timeout);
    // Timed here: on loopback the reply can land before the library takes its own send
    // timestamp, which then reads as a few nanoseconds.
    let start = std::time::Instant::now();
    match pinger.ping(PingSequence(seq), payload).await {
        // The library also hands over ICMP errors quoting our request (host unreachable after
        // a failed ARP, time exceeded): those are answers, not replies.
        Ok((packet, _)) => match icmp_error(&packet) {
            None => Outcome::Reply { rtt: start.elapsed() },
            Some(e) => Outcome::IcmpError(e),
        },
        Err(SurgeError::Timeout { .. }) => Outcome::Timeout,
        Err(e) => Outcome::SendError(e.to_string()),
    }
}

/// `None` for an echo reply, else what the ICMP error says.
fn icmp_error(packet: &IcmpPacket) -> Option<String> {
    let (from, ty, code) = match packet {
        IcmpPacket::V4(p) => {
            let (t, c) = (p.get_icmp_type().0, p.get_icmp_code().0);
            if t == 0 {
                return None;
            }
            let what = match (t, c) {
                (3, 0) => "network unreachable",
                (3, 1) => "host unreachable",
                (3, 3) => "port unreachable",
                (3, 4) => "fragmentation needed",
                (3, 13) => "administratively prohibited",
                (3, _) => "destination unreachable",
                (11, _) => "time exceeded",
                _ => "ICMP error",
            };
            (p.get_source().to_string(), what, format!("type {t} code {c}"))
        }
        IcmpPacket::V6(p) => {
            let (t, c) = (p.get_icmpv6_type().0, p.get_icmpv6_code().0);
            if t == 129 {
                return None;
            }
            let what = match (t, c) {
                (1, 0) => "no route",
                (1, 1) => "administratively prohibited",
                (1, 3) => "address unreachable",
                (1, _) => "destination unreachable",
                (2, _) => "packet too big",
                (3, _) => "time exceeded",
                _ => "ICMPv6 error",
            };
            (p.get_source().to_string(), what, format!("type {t} code {c}"))
        }
    };
    Some(format!("{ty} from {from} ({code})"))
}

/// Resolves a target: an IP literal as is, a host name through the system resolver, keeping
/// the first address of the wanted family.
pub async fn resolve(host: &str, family: IpVersion) -> Result<IpAddr, ProbeError> {
    let err = |reason: String| ProbeError::Resolve {
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

/// Hands out echo ids no other target of this process uses.
#[derive(Debug)]
pub struct IdPool {
    next: u16,
    used: HashSet<u16>,
}

impl IdPool {
    /// Starts from a per-process offset so two tracepkt processes on one node rarely pick the
    /// same ids (a shared id only means both follow the packet).
    pub fn new() -> Self {
        IdPool {
            next: (std::process::id() as u16).wrapping_mul(31).max(1),
            used: HashSet::new(),
        }
    }

    pub fn take(&mut self) -> Option<u16> {
        if self.used.len() >= usize::from(u16::MAX) {
            return None;
        }
        loop {
            let id = self.next;
            self.next = self.next.wrapping_add(1).max(1);
            if self.used.insert(id) {
                return Some(id);
            }
        }
    }

    pub fn give_back(&mut self, id: u16) {
        self.used.remove(&id);
    }
}

impl Default for IdPool {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_never_collide_and_return() {
        let mut pool = IdPool::new();
        let ids: HashSet<u16> = (0..5000).map(|_| pool.take().unwrap()).collect();
        assert_eq!(ids.len(), 5000);
        assert!(!ids.contains(&0));
        let one = *ids.iter().next().unwrap();
        pool.give_back(one);
        let again: Vec<u16> = (0..70000).filter_map(|_| pool.take()).collect();
        assert!(again.contains(&one));
        assert_eq!(again.len(), usize::from(u16::MAX) - 5000 + 1);
    }

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
