//! Sized ICMP probes: echoes of chosen IP lengths, swept in a round, with or without
//! don't-fragment, for a path's MTU and its black holes (README, *MTU black holes*).
//!
//! The reply matcher only says that an ICMP "fragmentation needed" (IPv4 type 3 code 4) or
//! "packet too big" (ICMPv6 type 2) answered a don't-fragment probe; the MTU it names is in
//! the ICMP header, which it does not keep. So such a probe also opens a raw socket of its
//! own, in the probe's namespace, that lets only those messages in (an ICMP filter, so
//! nothing else queues on it) and reads them, without waiting, once the probe has ended.

use std::io;
use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::Context as _;
use probe_common::{PROBE_L3_LEN_V4, PROBE_L3_LEN_V6, Proto, payload};
use socket2::{Domain, Protocol, Socket, Type};

use super::icmp::{Echo, Fragmentation, echo_to};
use super::sockets::{in_netns, setsockopt};
use super::{Asked, BoxFuture, Kind, Kit, Round, Shot, TargetMetrics, Words};
use crate::outcome::Outcome;

/// ICMP echoes of chosen IP lengths, or with don't-fragment, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizedIcmp {
    /// The IP lengths of the probes, one probe of each per round and per `count`, in this
    /// order; empty: the smallest probe only. Unique, each at least the smallest probe.
    pub sizes: Vec<u16>,
    /// Don't-fragment on every probe.
    pub dont_fragment: bool,
}

impl SizedIcmp {
    /// The IP length of a round's probe `index`; `None`: the smallest probe.
    fn size(&self, index: usize) -> Option<u16> {
        self.sizes.get(index).copied()
    }

    /// What the probe's socket does about fragmentation: either never fragmented or
    /// fragmented anywhere, as the target says; the kernel's default for an unsized probe.
    fn fragmentation(&self, size: Option<u16>) -> Fragmentation {
        match (self.dont_fragment, size) {
            (true, _) => Fragmentation::Never,
            (false, Some(_)) => Fragmentation::Allowed,
            (false, None) => Fragmentation::Default,
        }
    }

    async fn send(&self, kit: &Kit, shot: Shot<'_>, trace: payload::TraceContext) -> anyhow::Result<super::Landed> {
        let key = (Proto::Icmp, shot.lease.id(), shot.seq);
        let size = self.size(shot.index);
        let data = padded(&trace.encode(), shot.addr, size)?;
        let fragmentation = self.fragmentation(size);
        // The sockets first: a namespace that is gone fails here, before anything is
        // registered.
        let echo = Echo::open(kit, shot.from, shot.addr, fragmentation).await?;
        let too_big = match fragmentation {
            Fragmentation::Never => Some(TooBig::listen(shot.from, shot.addr).await?),
            _ => None,
        };
        let flight = kit.engine().begin(shot.lease, key, Some(trace.trace_id), size)?;
        let mut outcome = echo.ping(&shot, &data).await;
        if let (Outcome::IcmpError(e), Some(l)) = (&mut outcome, &too_big)
            && let Some(mtu) = l.mtu_named(shot.addr, shot.lease.id(), shot.seq)
        {
            e.push_str(&format!(": next-hop MTU {mtu}"));
        }
        Ok(flight.land(outcome).await)
    }
}

impl Kind for SizedIcmp {
    fn protocol(&self) -> &'static str {
        "icmp"
    }

    fn sweep(&self) -> usize {
        self.sizes.len().max(1)
    }

    fn ask<'a>(&'a self, kit: &'a Kit, shot: Shot<'a>) -> BoxFuture<'a, Asked> {
        Box::pin(async move {
            let key = (Proto::Icmp, shot.lease.id(), shot.seq);
            let (journey, ()) = kit
                .fly(key, |trace| async move { Ok((self.send(kit, shot, trace).await?, ())) })
                .await;
            let mut asked = Asked::new(shot.addr, journey);
            asked.size = self.size(shot.index);
            asked
        })
    }

    fn words(&self, asked: &Asked) -> Words {
        let mut extra = asked.size.map(|s| format!(", {s} bytes")).unwrap_or_default();
        if self.dont_fragment {
            extra.push_str(", don't fragment");
        }
        Words {
            to: echo_to(asked, &extra),
            answered: "reply",
            // Fragments carry no probe header the kernel programs could know them by.
            note: (asked.size.is_some() && asked.journey.hops.is_empty()).then(|| {
                "no hop seen: a probe sent in fragments (without --df, beyond a path MTU) is not followed".to_owned()
            }),
        }
    }

    fn added(&self, m: &TargetMetrics<'_>) {
        if !self.sizes.is_empty() {
            m.metrics.set_sizes(m.tag, m.labels, &self.sizes);
        }
    }

    fn round_done(&self, m: &TargetMetrics<'_>, round: &Round) {
        if !self.sizes.is_empty() {
            m.metrics.record_round(m.tag, m.labels, &round.answered);
        }
    }
}

const IPV4_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
const ECHO_HEADER: usize = 8;

/// The smallest probe, its IP length, for `addr`'s family.
fn min_len(addr: IpAddr) -> usize {
    if addr.is_ipv4() {
        PROBE_L3_LEN_V4
    } else {
        PROBE_L3_LEN_V6
    }
}

/// What an echo request to `addr` of IP length `size` carries: the probe's payload, then zeros.
fn padded(payload: &[u8; payload::LEN], addr: IpAddr, size: Option<u16>) -> anyhow::Result<Vec<u8>> {
    let mut data = payload.to_vec();
    if let Some(size) = size {
        let size = usize::from(size);
        anyhow::ensure!(
            size >= min_len(addr),
            "size {size} is below the smallest probe to {addr}, {}",
            min_len(addr)
        );
        let headers = if addr.is_ipv4() { IPV4_HEADER } else { IPV6_HEADER } + ECHO_HEADER;
        data.resize(size - headers, 0);
    }
    Ok(data)
}

/// A raw socket that queues only the "too big" errors of its namespace.
struct TooBig {
    socket: Socket,
}

impl TooBig {
    /// Opens the socket in `ns` (`None`: tracepkt's own namespace), before the probe leaves.
    async fn listen(ns: Option<&Path>, addr: IpAddr) -> anyhow::Result<Self> {
        let socket = in_netns(ns, move || open(addr))
            .await
            .context("opening a socket for ICMP \"fragmentation needed\"")?;
        Ok(TooBig { socket })
    }

    /// The MTU named by a "too big" error quoting the echo request (`id`, `seq`) to `addr`,
    /// among those queued so far.
    fn mtu_named(&self, addr: IpAddr, id: u16, seq: u16) -> Option<u32> {
        let mut buf = vec![MaybeUninit::<u8>::uninit(); 2048];
        let mut found = None;
        // Drains the queue: messages about other probes are read and let go.
        while let Ok(n) = self.socket.recv(&mut buf) {
            // SAFETY: recv initialised the first `n` bytes.
            let msg: &[u8] = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast(), n) };
            let hit = match addr {
                IpAddr::V4(_) => mtu_v4(msg, addr, id, seq),
                IpAddr::V6(_) => mtu_v6(msg, addr, id, seq),
            };
            found = found.or(hit);
        }
        found
    }
}

fn open(addr: IpAddr) -> io::Result<Socket> {
    let socket = if addr.is_ipv4() {
        let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
        // ICMP_FILTER (SOL_RAW): a bit set blocks that type; only 3 (destination unreachable)
        // passes.
        let blocked: u32 = !(1 << 3);
        setsockopt(s.as_raw_fd(), 255, 1, &blocked)?;
        s
    } else {
        let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
        // ICMP6_FILTER: 256 bits, a bit set blocks that type; only 2 (packet too big) passes.
        let mut blocked = [u32::MAX; 8];
        blocked[0] &= !(1 << 2);
        setsockopt(s.as_raw_fd(), libc::IPPROTO_ICMPV6, 1, &blocked)?;
        s
    };
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// An IPv4 raw socket reads the IP header first, then the ICMP message: type 3 code 4, the
/// next-hop MTU in bytes 6..8, then the quoted request's IP header and echo header.
fn mtu_v4(msg: &[u8], addr: IpAddr, id: u16, seq: u16) -> Option<u32> {
    let ihl = usize::from(*msg.first()? & 0x0f) * 4;
    let icmp = msg.get(ihl..)?;
    if icmp.len() < 8 || icmp[0] != 3 || icmp[1] != 4 {
        return None;
    }
    let mtu = u16::from_be_bytes([icmp[6], icmp[7]]);
    let quoted = &icmp[8..];
    let qihl = usize::from(*quoted.first()? & 0x0f) * 4;
    let dst: [u8; 4] = quoted.get(16..20)?.try_into().ok()?;
    let echo = quoted.get(qihl..qihl + ECHO_HEADER)?;
    (IpAddr::from(dst) == addr && quoted_echo(echo, 8, id, seq)).then_some(u32::from(mtu))
}

/// An ICMPv6 raw socket reads the message alone: type 2, the MTU in bytes 4..8, then the
/// quoted request's IPv6 header (no extension headers: tracepkt sends none) and echo header.
fn mtu_v6(msg: &[u8], addr: IpAddr, id: u16, seq: u16) -> Option<u32> {
    if msg.len() < 8 || msg[0] != 2 {
        return None;
    }
    let mtu = u32::from_be_bytes(msg[4..8].try_into().ok()?);
    let quoted = &msg[8..];
    let dst: [u8; 16] = quoted.get(24..40)?.try_into().ok()?;
    let echo = quoted.get(IPV6_HEADER..IPV6_HEADER + ECHO_HEADER)?;
    (IpAddr::from(dst) == addr && quoted_echo(echo, 128, id, seq)).then_some(mtu)
}

fn quoted_echo(echo: &[u8], request_type: u8, id: u16, seq: u16) -> bool {
    echo[0] == request_type
        && u16::from_be_bytes([echo[4], echo[5]]) == id
        && u16::from_be_bytes([echo[6], echo[7]]) == seq
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_to_the_ip_length() {
        let p = [7u8; payload::LEN];
        let v4: IpAddr = "198.18.150.1".parse().unwrap();
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(padded(&p, v4, None).unwrap(), p.to_vec());
        let d = padded(&p, v4, Some(1500)).unwrap();
        assert_eq!(d.len(), 1500 - 28);
        assert_eq!(&d[..payload::LEN], &p);
        assert!(d[payload::LEN..].iter().all(|&b| b == 0));
        assert_eq!(padded(&p, v6, Some(1500)).unwrap().len(), 1500 - 48);
        assert_eq!(padded(&p, v4, Some(60)).unwrap().len(), payload::LEN);
        assert!(padded(&p, v6, Some(60)).is_err());
    }

    #[test]
    fn reads_the_mtu_of_its_own_probe_only() {
        let addr: IpAddr = "198.18.152.2".parse().unwrap();
        let mut msg = vec![0x45u8; 1];
        msg.resize(20, 0);
        // ICMP type 3 code 4, MTU 1400.
        msg.extend_from_slice(&[3, 4, 0, 0, 0, 0, 0x05, 0x78]);
        let mut quoted = vec![0x45u8];
        quoted.resize(20, 0);
        quoted[16..20].copy_from_slice(&[198, 18, 152, 2]);
        quoted.extend_from_slice(&[8, 0, 0, 0, 0x12, 0x34, 0, 7]);
        msg.extend_from_slice(&quoted);
        assert_eq!(mtu_v4(&msg, addr, 0x1234, 7), Some(1400));
        assert_eq!(mtu_v4(&msg, addr, 0x1234, 8), None);
        assert_eq!(mtu_v4(&msg, "198.18.152.3".parse().unwrap(), 0x1234, 7), None);
        let mut other = msg.clone();
        other[21] = 1;
        assert_eq!(mtu_v4(&other, addr, 0x1234, 7), None, "host unreachable names no MTU");

        let addr6: IpAddr = "fd00:7470::2".parse().unwrap();
        let mut m6 = vec![2u8, 0, 0, 0, 0, 0, 0x05, 0x00];
        let mut q6 = vec![0x60u8];
        q6.resize(40, 0);
        q6[24..40].copy_from_slice(&match addr6 {
            IpAddr::V6(a) => a.octets(),
            _ => unreachable!(),
        });
        q6.extend_from_slice(&[128, 0, 0, 0, 0x12, 0x34, 0, 7]);
        m6.extend_from_slice(&q6);
        assert_eq!(mtu_v6(&m6, addr6, 0x1234, 7), Some(1280));
        assert_eq!(mtu_v6(&m6, addr6, 0x1235, 7), None);
    }
}
