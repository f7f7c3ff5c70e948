//! ICMP echo probes: the plain kind, and the echo request every ICMP kind sends.
//!
//! Raw ICMP sockets (root) let tracepkt choose the echo id, so it can register the id in the
//! kernel's `PROBES` map before the packet leaves. One socket per address family serves
//! every target; replies are matched by (address, id, seq).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::Mutex;

use probe_common::{Proto, payload};
use surge_ping::{Client, Config, ICMP, IcmpPacket, PingIdentifier, PingSequence, SurgeError};

use super::sockets::{in_netns, setsockopt};
use super::{Asked, BoxFuture, Kind, Kit, Shot, Words};
use crate::outcome::Outcome;

/// An ICMP echo (ICMPv6 for an IPv6 address) of the smallest size, answered by its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Icmp;

impl Kind for Icmp {
    fn protocol(&self) -> &'static str {
        "icmp"
    }

    fn ask<'a>(&'a self, kit: &'a Kit, shot: Shot<'a>) -> BoxFuture<'a, Asked> {
        Box::pin(async move {
            let key = (Proto::Icmp, shot.lease.id(), shot.seq);
            let (journey, ()) = kit
                .fly(key, |trace| async move {
                    // The socket first: a namespace that is gone fails here, before anything
                    // is registered.
                    let echo = Echo::open(kit, shot.from, shot.addr, Fragmentation::Default).await?;
                    let flight = kit.engine().begin(shot.lease, key, Some(trace.trace_id), None)?;
                    let outcome = echo.ping(&shot, &trace.encode()).await;
                    Ok((flight.land(outcome).await, ()))
                })
                .await;
            Asked::new(shot.addr, journey)
        })
    }

    fn words(&self, asked: &Asked) -> Words {
        Words {
            to: echo_to(asked, ""),
            answered: "reply",
            note: None,
        }
    }
}

/// Where an echo went and what names it, for `trace`: `198.18.0.1 (id 7 seq 0{extra})`.
pub(super) fn echo_to(asked: &Asked, extra: &str) -> String {
    let j = &asked.journey;
    format!("{} (id {} seq {}{extra})", asked.addr, j.probe, j.seq)
}

/// What a probe's socket does about fragmentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Fragmentation {
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
    fn apply(self, client: &Client, addr: IpAddr) -> std::io::Result<()> {
        let value: libc::c_int = match self {
            Fragmentation::Default => return Ok(()),
            Fragmentation::Never => 3,   // IP_PMTUDISC_PROBE, IPV6_PMTUDISC_PROBE
            Fragmentation::Allowed => 0, // IP_PMTUDISC_DONT, IPV6_PMTUDISC_DONT
        };
        let (level, name) = match addr {
            IpAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER),
            IpAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER),
        };
        setsockopt(client.get_socket().get_native_sock(), level, name, &value)
    }
}

/// A client with a raw ICMP socket in the calling thread's network namespace.
fn client(addr: IpAddr) -> std::io::Result<Client> {
    let kind = if addr.is_ipv4() { ICMP::V4 } else { ICMP::V6 };
    Client::new(&Config::builder().kind(kind).sock_type_hint(socket2::Type::RAW).build())
}

/// The raw sockets of every ICMP probe that starts in tracepkt's own namespace.
pub(super) struct Sockets {
    v4: Client,
    v6: Option<Client>,
    /// Sockets for sized and don't-fragment probes, by IPv6-ness and what they do about
    /// fragmentation: opened on first use, as few nodes probe the MTU. A socket option is a
    /// socket's, so probes that want another one cannot share the plain socket.
    shaped: Mutex<HashMap<(bool, Fragmentation), Client>>,
}

impl Sockets {
    /// Opens the sockets. IPv6 is optional: a node without it still probes IPv4.
    pub(super) fn open() -> anyhow::Result<Self> {
        let v4 = client(Ipv4Addr::UNSPECIFIED.into())
            .map_err(|e| anyhow::anyhow!("cannot open a raw ICMP socket: {e} (tracepkt must run as root)"))?;
        let v6 = client(Ipv6Addr::UNSPECIFIED.into()).ok();
        Ok(Sockets {
            v4,
            v6,
            shaped: Mutex::new(HashMap::new()),
        })
    }

    /// The socket for `fragmentation` over `addr`'s family; shaped ones opened on first use.
    fn get(&self, addr: IpAddr, fragmentation: Fragmentation) -> Result<Client, String> {
        match (addr, fragmentation) {
            (IpAddr::V4(_), Fragmentation::Default) => return Ok(self.v4.clone()),
            (IpAddr::V6(_), Fragmentation::Default) => {
                return self
                    .v6
                    .clone()
                    .ok_or_else(|| "IPv6 is not available on this host".to_owned());
            }
            _ if addr.is_ipv6() && self.v6.is_none() => return Err("IPv6 is not available on this host".to_owned()),
            _ => {}
        }
        let key = (addr.is_ipv6(), fragmentation);
        let mut all = self.shaped.lock().unwrap();
        if let Some(c) = all.get(&key) {
            return Ok(c.clone());
        }
        let c = client(addr)
            .and_then(|c| fragmentation.apply(&c, addr).map(|()| c))
            .map_err(|e| format!("cannot open a probe socket: {e}"))?;
        all.insert(key, c.clone());
        Ok(c)
    }
}

/// An echo request's socket, chosen before its probe is registered.
pub(super) struct Echo {
    /// A socket of tracepkt's own that could not be had fails the probe when it is sent.
    client: Result<Client, String>,
}

impl Echo {
    /// The socket of an echo to `addr`: one made in `from` when the probe starts in another
    /// namespace (a namespace that is gone fails here), else the shared one of its kind.
    pub(super) async fn open(
        kit: &Kit,
        from: Option<&Path>,
        addr: IpAddr,
        fragmentation: Fragmentation,
    ) -> anyhow::Result<Echo> {
        let Some(ns) = from else {
            return Ok(Echo {
                client: kit.icmp.get(addr, fragmentation),
            });
        };
        let handle = tokio::runtime::Handle::current();
        let c = in_netns(Some(ns), move || {
            // The client registers its socket with the runtime's reactor.
            let _rt = handle.enter();
            client(addr)
        })
        .await?;
        fragmentation.apply(&c, addr)?;
        Ok(Echo { client: Ok(c) })
    }

    /// Sends one echo request of `shot` carrying `data` (the probe's payload, padded to a
    /// sized probe's length: its length is part of the contract with the kernel programs,
    /// which filter on the probe's IP length) and waits for its reply.
    pub(super) async fn ping(&self, shot: &Shot<'_>, data: &[u8]) -> Outcome {
        debug_assert!(data.len() >= payload::LEN);
        let client = match &self.client {
            Ok(c) => c,
            Err(e) => return Outcome::SendError(e.clone()),
        };
        let mut pinger = client.pinger(shot.addr, PingIdentifier(shot.lease.id())).await;
        pinger.timeout(shot.timeout);
        // Timed here: on loopback the reply can land before the library takes its own send
        // timestamp, which then reads as a few nanoseconds.
        let start = std::time::Instant::now();
        match pinger.ping(PingSequence(shot.seq), data).await {
            // The library also hands over ICMP errors quoting our request (host unreachable
            // after a failed ARP, time exceeded): those are answers, not replies.
            Ok((packet, _)) => match icmp_error(&packet) {
                None => Outcome::Reply { rtt: start.elapsed() },
                Some(e) => Outcome::IcmpError(e),
            },
            Err(SurgeError::Timeout { .. }) => Outcome::Timeout,
            Err(e) => Outcome::SendError(e.to_string()),
        }
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
