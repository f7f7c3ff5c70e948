//! TCP and UDP probes, and sockets made inside another network namespace.
//!
//! A probe that starts in another namespace gets its socket there: a short-lived thread
//! enters the namespace, creates the socket, and ends. A socket keeps the namespace it was
//! created in, so everything after (binding, connecting, sending) happens there, while no
//! thread of tracepkt's own ever runs in a namespace other than tracepkt's.
//!
//! Each TCP or UDP probe binds its own socket to a port the kernel picks: that port names the
//! probe in the kernel's `PROBES` map, as the echo id does for ICMP.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use socket2::{Domain, Protocol, Socket, Type};

use crate::prober::{self, Outcome};

/// Runs `make` in the network namespace `ns` (a file such as `/run/netns/NAME`), or here.
pub(crate) async fn in_netns<T: Send + 'static>(
    ns: Option<&PathBuf>,
    make: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let Some(ns) = ns else {
        return Ok(make()?);
    };
    let path = ns.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("tracepkt-netns".into())
        .spawn(move || {
            // This thread enters the namespace and ends there: it never comes back to run
            // anything else of tracepkt's.
            let r = enter(&path).and_then(|()| make());
            let _ = tx.send(r);
        })
        .context("starting a thread to enter the namespace")?;
    let made = rx.await.context("the namespace thread ended without an answer")?;
    made.with_context(|| format!("in network namespace {}", ns.display()))
}

fn enter(ns: &Path) -> io::Result<()> {
    let f = std::fs::File::open(ns)?;
    // SAFETY: setns on a file descriptor this thread owns; CLONE_NEWNET only changes this
    // thread's network namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn unspecified(addr: IpAddr) -> SocketAddr {
    match addr {
        IpAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        IpAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
}

fn bound(addr: IpAddr, ty: Type, proto: Protocol) -> io::Result<(Socket, u16)> {
    let s = Socket::new(Domain::for_address(SocketAddr::new(addr, 0)), ty, Some(proto))?;
    s.set_nonblocking(true)?;
    s.bind(&unspecified(addr).into())?;
    let port = s
        .local_addr()?
        .as_socket()
        .map(|a| a.port())
        .ok_or_else(|| io::Error::other("bound socket has no port"))?;
    Ok((s, port))
}

/// An ICMP client whose raw socket lives in `ns`.
pub async fn icmp_client(ns: &PathBuf, addr: IpAddr) -> anyhow::Result<surge_ping::Client> {
    let handle = tokio::runtime::Handle::current();
    in_netns(Some(ns), move || {
        // The client registers its socket with the runtime's reactor.
        let _rt = handle.enter();
        prober::client(if addr.is_ipv4() {
            surge_ping::ICMP::V4
        } else {
            surge_ping::ICMP::V6
        })
    })
    .await
}

/// A TCP socket bound for one probe.
pub struct TcpProbe {
    pub port: u16,
    socket: Socket,
}

pub async fn tcp_socket(ns: Option<&PathBuf>, addr: IpAddr) -> anyhow::Result<TcpProbe> {
    let (socket, port) = in_netns(ns, move || {
        let (s, port) = bound(addr, Type::STREAM, Protocol::TCP)?;
        // Closing sends RST: no FIN exchange or TIME_WAIT left behind for each probe.
        s.set_linger(Some(Duration::ZERO))?;
        Ok((s, port))
    })
    .await?;
    Ok(TcpProbe { port, socket })
}

/// What a failed connect or exchange says about the path.
fn failure(e: &io::Error) -> Outcome {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => Outcome::Refused,
        Some(libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN | libc::ENETDOWN) => {
            Outcome::Unreachable(e.to_string())
        }
        _ => Outcome::SendError(e.to_string()),
    }
}

impl TcpProbe {
    /// Opens the connection: answered on SYN-ACK, refused on RST. Sends no data, and closes
    /// with RST right away.
    pub async fn connect(self, target: SocketAddr, timeout: Duration) -> Outcome {
        let stream: std::net::TcpStream = self.socket.into();
        let socket = tokio::net::TcpSocket::from_std_stream(stream);
        let start = Instant::now();
        match tokio::time::timeout(timeout, socket.connect(target)).await {
            Ok(Ok(stream)) => {
                let rtt = start.elapsed();
                drop(stream);
                Outcome::Reply { rtt }
            }
            Ok(Err(e)) => failure(&e),
            Err(_) => Outcome::Timeout,
        }
    }
}

/// A UDP socket bound for one probe.
pub struct UdpProbe {
    pub port: u16,
    socket: Socket,
}

pub async fn udp_socket(ns: Option<&PathBuf>, addr: IpAddr) -> anyhow::Result<UdpProbe> {
    let (socket, port) = in_netns(ns, move || bound(addr, Type::DGRAM, Protocol::UDP)).await?;
    Ok(UdpProbe { port, socket })
}

impl UdpProbe {
    /// Sends `data` and waits for any datagram back, which it returns with the outcome. The
    /// socket is connected, so an ICMP port unreachable comes back as a refusal.
    pub async fn exchange(self, target: SocketAddr, data: &[u8], timeout: Duration) -> (Outcome, Option<Vec<u8>>) {
        let std: std::net::UdpSocket = self.socket.into();
        let socket = match tokio::net::UdpSocket::from_std(std) {
            Ok(s) => s,
            Err(e) => return (Outcome::SendError(e.to_string()), None),
        };
        if let Err(e) = socket.connect(target).await {
            return (failure(&e), None);
        }
        let start = Instant::now();
        if let Err(e) = socket.send(data).await {
            return (failure(&e), None);
        }
        // A DNS answer over UDP without EDNS fits in 512 bytes; with it, in what the query
        // offered (1232).
        let mut buf = vec![0u8; 4096];
        match tokio::time::timeout(timeout, socket.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                buf.truncate(n);
                (Outcome::Reply { rtt: start.elapsed() }, Some(buf))
            }
            Ok(Err(e)) => (failure(&e), None),
            Err(_) => (Outcome::Timeout, None),
        }
    }
}

/// What a UDP probe to port 53 sends unless told otherwise: a DNS query, so that a DNS server
/// answers it. It asks for the A record of `tracepkt-probe.` without recursion, which any
/// server answers at once (with an error, most often) without asking another; any answer
/// counts. It is 32 bytes, as tracepkt's own payload, so the kernel programs see the query go
/// out; it carries no trace context.
pub fn dns_query() -> Vec<u8> {
    let mut q = Vec::with_capacity(32);
    // Header: id "tp", flags 0 (a standard query, no recursion), one question.
    q.extend_from_slice(&[0x74, 0x70, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]);
    q.push(14);
    q.extend_from_slice(b"tracepkt-probe");
    q.push(0);
    // QTYPE A, QCLASS IN.
    q.extend_from_slice(&[0x00, 0x01, 0x00, 0x01]);
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dns_query_is_probe_sized_and_well_formed() {
        let q = dns_query();
        assert_eq!(q.len(), probe_common::PROBE_PAYLOAD_LEN);
        assert_eq!(u16::from_be_bytes([q[4], q[5]]), 1, "one question");
        assert_eq!(&q[12..28], b"\x0etracepkt-probe\x00");
        assert_eq!(&q[28..], &[0, 1, 0, 1]);
    }
}
