//! TCP probes: a connection, answered on SYN-ACK, refused on RST, timed out when nothing
//! answers. No data is sent, and the connection is closed at once with an RST, so that no
//! TIME_WAIT or half-open connection is left behind.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use probe_common::Proto;
use socket2::{Protocol, Type};

use super::sockets::{bound, failure, in_netns};
use super::{Asked, BoxFuture, Kind, Kit, Shot, Words, ported_to};
use crate::outcome::Outcome;

/// A TCP connection to `port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tcp {
    pub port: u16,
}

impl Kind for Tcp {
    fn protocol(&self) -> &'static str {
        "tcp"
    }

    fn port(&self) -> Option<u16> {
        Some(self.port)
    }

    fn ask<'a>(&'a self, kit: &'a Kit, shot: Shot<'a>) -> BoxFuture<'a, Asked> {
        Box::pin(async move {
            let unsent = (Proto::Tcp, shot.lease.id(), shot.seq);
            // A TCP segment carries no payload, so no trace context either.
            let (journey, ()) = kit
                .fly(unsent, |_| async move {
                    let (socket, port) = in_netns(shot.from, move || {
                        let (s, port) = bound(shot.addr, Type::STREAM, Protocol::TCP)?;
                        // Closing sends RST: no FIN exchange or TIME_WAIT left behind for each
                        // probe.
                        s.set_linger(Some(Duration::ZERO))?;
                        Ok((s, port))
                    })
                    .await?;
                    let flight = kit.engine().begin(shot.lease, (Proto::Tcp, port, 0), None, None)?;
                    let outcome = connect(socket, SocketAddr::new(shot.addr, self.port), shot.timeout).await;
                    Ok((flight.land(outcome).await, ()))
                })
                .await;
            Asked::new(shot.addr, journey)
        })
    }

    fn words(&self, asked: &Asked) -> Words {
        Words {
            to: ported_to(asked, self.port),
            answered: "connected",
            note: None,
        }
    }
}

/// Opens the connection, and closes it with RST as soon as it is made.
async fn connect(socket: socket2::Socket, target: SocketAddr, timeout: Duration) -> Outcome {
    let stream: std::net::TcpStream = socket.into();
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
