//! UDP probes: one datagram, answered by any datagram back, refused by an ICMP port
//! unreachable. The datagram is tracepkt's own payload (with the probe's trace context), a
//! DNS query when it goes to port 53, or the user's.

use std::net::SocketAddr;
use std::time::Instant;

use probe_common::Proto;
use probe_common::payload::TraceContext;
use socket2::{Protocol, Type};

use super::sockets::{bound, failure, in_netns};
use super::{Asked, BoxFuture, Kind, Kit, Landed, Shot, Words, ported_to};
use crate::outcome::Outcome;

/// The port DNS servers answer on.
const DNS_PORT: u16 = 53;

/// A UDP datagram to `port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Udp {
    pub port: u16,
    /// What to send instead of tracepkt's payload; it carries no trace context.
    pub payload: Option<Vec<u8>>,
}

impl Kind for Udp {
    fn protocol(&self) -> &'static str {
        "udp"
    }

    fn port(&self) -> Option<u16> {
        Some(self.port)
    }

    fn ask<'a>(&'a self, kit: &'a Kit, shot: Shot<'a>) -> BoxFuture<'a, Asked> {
        Box::pin(async move {
            let unsent = (Proto::Udp, shot.lease.id(), shot.seq);
            let (journey, _) = kit
                .fly(unsent, |trace| async move {
                    // A DNS server answers a DNS query, where it would drop anything else.
                    let (data, carried) = match &self.payload {
                        Some(own) => (own.clone(), false),
                        None if self.port == DNS_PORT => (dns_query(), false),
                        None => (trace.encode().to_vec(), true),
                    };
                    datagram(kit, shot, self.port, (carried).then_some(&trace), &data).await
                })
                .await;
            Asked::new(shot.addr, journey)
        })
    }

    fn words(&self, asked: &Asked) -> Words {
        Words {
            to: ported_to(asked, self.port),
            answered: "answered",
            note: None,
        }
    }
}

/// Sends `data` in one datagram of `shot` to `port`, and waits for any datagram back, which
/// it returns with the landed probe. `carried`: the trace context the datagram carries, whose
/// events alone are the probe's. The socket is connected, so an ICMP port unreachable comes
/// back as a refusal.
pub(super) async fn datagram(
    kit: &Kit,
    shot: Shot<'_>,
    port: u16,
    carried: Option<&TraceContext>,
    data: &[u8],
) -> anyhow::Result<(Landed, Option<Vec<u8>>)> {
    let addr = shot.addr;
    let (socket, bound_port) = in_netns(shot.from, move || bound(addr, Type::DGRAM, Protocol::UDP)).await?;
    let flight = kit.engine().begin(
        shot.lease,
        (Proto::Udp, bound_port, 0),
        carried.map(|t| t.trace_id),
        None,
    )?;
    let (outcome, answer) = exchange(socket, SocketAddr::new(addr, port), data, shot).await;
    Ok((flight.land(outcome).await, answer))
}

async fn exchange(
    socket: socket2::Socket,
    target: SocketAddr,
    data: &[u8],
    shot: Shot<'_>,
) -> (Outcome, Option<Vec<u8>>) {
    let std: std::net::UdpSocket = socket.into();
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
    match tokio::time::timeout(shot.timeout, socket.recv(&mut buf)).await {
        Ok(Ok(n)) => {
            buf.truncate(n);
            (Outcome::Reply { rtt: start.elapsed() }, Some(buf))
        }
        Ok(Err(e)) => (failure(&e), None),
        Err(_) => (Outcome::Timeout, None),
    }
}

/// What a UDP probe to port 53 sends unless told otherwise: a DNS query, so that a DNS server
/// answers it. It asks for the A record of `tracepkt-probe.` without recursion, which any
/// server answers at once (with an error, most often) without asking another; any answer
/// counts. It is 32 bytes, as tracepkt's own payload, so the kernel programs see the query go
/// out; it carries no trace context.
fn dns_query() -> Vec<u8> {
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
