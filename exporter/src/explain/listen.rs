//! A socket on the nftables trace group (`NFNLGRP_NFTRACE`) of one network namespace. The
//! kernel sends trace messages only to the namespace the packet is in, and only while someone
//! listens there.

use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;

use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};
use tokio::io::unix::AsyncFd;

use super::netlink::{Error, open_in};
use super::trace::{TraceMessage, decode};
use super::{Anomalies, Anomaly};

const NFNLGRP_NFTRACE: u32 = 9;
/// The kernel sends one message per rule a traced packet meets; a burst of probes through a
/// large ruleset is thousands of small messages. 4 MiB holds seconds of them.
const RECEIVE_BUFFER: usize = 4 << 20;

pub(crate) struct Listener {
    fd: AsyncFd<Socket>,
    buf: Vec<u8>,
    anomalies: Arc<Anomalies>,
}

impl Listener {
    /// Subscribes to the trace group of `ns` (or of this namespace).
    pub(crate) async fn open(ns: Option<&PathBuf>, anomalies: Arc<Anomalies>) -> Result<Listener, Error> {
        let socket = open_in(ns, subscribed).await?;
        // SAFETY: the socket owns its descriptor, and nothing but this AsyncFd ever holds the
        // socket, so the descriptor stays open and the same until the AsyncFd is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Listener {
            fd,
            buf: Vec::with_capacity(1 << 16),
            anomalies,
        })
    }

    /// The trace messages of the next datagram. Messages the kernel could not queue (the
    /// receive buffer was full) are lost: that is counted, and reading goes on.
    pub(crate) async fn next(&mut self) -> Result<Vec<TraceMessage>, Error> {
        self.next_raw().await?;
        Ok(decode(&self.buf, &self.anomalies))
    }

    /// The next datagram as it came.
    pub(crate) async fn next_raw(&mut self) -> Result<&[u8], Error> {
        loop {
            let mut guard = self.fd.readable().await?;
            self.buf.clear();
            self.buf.reserve(1 << 16);
            let buf = &mut self.buf;
            match guard.try_io(|s| s.get_ref().recv(buf, 0)) {
                Ok(Ok(_)) => return Ok(&self.buf),
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.anomalies.count(Anomaly::Overrun);
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_would_block) => {}
            }
        }
    }
}

fn subscribed() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.add_membership(NFNLGRP_NFTRACE)?;
    socket.set_non_blocking(true)?;
    // SO_RCVBUFFORCE goes past net.core.rmem_max with CAP_NET_ADMIN, which tracepkt keeps;
    // without it, the ordinary option gives what rmem_max allows.
    let size = RECEIVE_BUFFER as libc::c_int;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: setsockopt on a socket this function owns, with an int that outlives the call.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            break;
        }
    }
    Ok(socket)
}
