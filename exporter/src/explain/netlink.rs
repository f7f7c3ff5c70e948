//! One nfnetlink socket in one network namespace: batches that change nftables and requests
//! that read it. The socket is made by a short-lived thread that entered the namespace, and
//! keeps that namespace for its whole life.

use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NetlinkBuffer, NetlinkMessage,
};
use netlink_packet_netfilter::nftables::NfTablesMessage;
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

/// How long the kernel may take to answer one request. It answers at once; this only bounds
/// a wait that would otherwise hang on a kernel that lost the request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// `NFNL_SUBSYS_NFTABLES`, the subsystem a batch addresses in its `res_id`.
const SUBSYS_NFTABLES: u16 = 10;

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("cannot enter network namespace {ns}: {why}")]
    Namespace { ns: String, why: String },
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
    #[error("{what}: {}", kernel_says(.errno))]
    Kernel { what: String, errno: i32 },
    #[error("{what}: no answer from nf_tables within {ANSWER_TIMEOUT:?}")]
    Timeout { what: String },
}

impl Error {
    pub(crate) fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

fn kernel_says(errno: &i32) -> String {
    let e = io::Error::from_raw_os_error(*errno);
    match *errno {
        libc::EPERM => format!("{e} (changing nftables needs CAP_NET_ADMIN in the namespace)"),
        libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT => {
            format!("{e} (this kernel has no nf_tables: load the nf_tables module)")
        }
        _ => e.to_string(),
    }
}

/// An nfnetlink socket bound in the namespace it was made in.
pub(super) struct Nfnl {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

/// One message read back from the kernel: its type, flags, and what follows the `nfgenmsg`
/// header (with that header's family).
#[derive(Debug)]
pub(super) struct Reply {
    pub kind: u16,
    pub family: u8,
    pub body: Vec<u8>,
}

impl Nfnl {
    /// A socket in this thread's network namespace.
    pub(super) fn here() -> io::Result<Nfnl> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        let tv = libc::timeval {
            tv_sec: ANSWER_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        // SAFETY: setsockopt on a socket this function owns, with a timeval that outlives the call.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Nfnl {
            socket,
            seq: 1,
            buf: Vec::with_capacity(1 << 16),
        })
    }

    /// A socket in `ns` (a file such as `/run/netns/NAME`), or here.
    pub(super) async fn open(ns: Option<&PathBuf>) -> Result<Nfnl, Error> {
        open_in(ns, Nfnl::here).await
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `msgs` as one transaction: the kernel applies all of them or none. Each message
    /// is `(family, message, extra NLM_F_* flags)`.
    pub(super) fn batch(
        &mut self,
        what: &str,
        msgs: Vec<(NetfilterProtoFamily, NfTablesMessage, u16)>,
    ) -> Result<(), Error> {
        let mut out = Vec::new();
        let begin = self.next_seq();
        emit(
            &mut out,
            NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, SUBSYS_NFTABLES),
                ControlMessage::BatchBegin,
            ),
            NLM_F_REQUEST,
            begin,
        );
        let first = begin.wrapping_add(1);
        let count = msgs.len() as u32;
        for (family, msg, flags) in msgs {
            let seq = self.next_seq();
            emit(
                &mut out,
                NetfilterMessage::new(NetfilterHeader::new(family, 0, 0), msg),
                NLM_F_REQUEST | NLM_F_ACK | flags,
                seq,
            );
        }
        let end = self.next_seq();
        emit(
            &mut out,
            NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, SUBSYS_NFTABLES),
                ControlMessage::BatchEnd,
            ),
            NLM_F_REQUEST,
            end,
        );
        self.socket.send(&out, 0)?;
        // One acknowledgement or error per message, in order; the first error is the one
        // that aborted the transaction.
        let mut acked = 0;
        let mut failed = None;
        while acked < count {
            for m in self.recv(what)? {
                if m.kind != NLMSG_ERROR || m.seq.wrapping_sub(first) >= count {
                    continue;
                }
                acked += 1;
                if m.errno != 0 && failed.is_none() {
                    failed = Some(m.errno);
                }
            }
        }
        match failed {
            Some(errno) => Err(Error::Kernel {
                what: what.to_string(),
                errno,
            }),
            None => Ok(()),
        }
    }

    /// Sends one request and returns the messages of its answer: one for a get, all of them
    /// for a dump. An error from the kernel is returned as such.
    pub(super) fn request(
        &mut self,
        what: &str,
        family: NetfilterProtoFamily,
        msg: NfTablesMessage,
        dump: bool,
    ) -> Result<Vec<Reply>, Error> {
        let seq = self.next_seq();
        let mut out = Vec::new();
        let flags = NLM_F_REQUEST | NLM_F_ACK | if dump { NLM_F_DUMP } else { 0 };
        emit(
            &mut out,
            NetfilterMessage::new(NetfilterHeader::new(family, 0, 0), msg),
            flags,
            seq,
        );
        self.socket.send(&out, 0)?;
        let mut replies = Vec::new();
        loop {
            for m in self.recv(what)? {
                if m.seq != seq {
                    continue;
                }
                match m.kind {
                    NLMSG_DONE => return Ok(replies),
                    NLMSG_ERROR if m.errno != 0 => {
                        return Err(Error::Kernel {
                            what: what.to_string(),
                            errno: m.errno,
                        });
                    }
                    // The acknowledgement that ends a get (a dump ends with DONE instead).
                    NLMSG_ERROR => {
                        if !dump {
                            return Ok(replies);
                        }
                    }
                    // A get is answered by one message and then its acknowledgement; a dump by
                    // NLM_F_MULTIPART messages and then DONE.
                    kind => replies.extend(m.reply(kind)),
                }
            }
        }
    }

    fn recv(&mut self, what: &str) -> Result<Vec<Raw>, Error> {
        self.buf.clear();
        self.buf.reserve(1 << 16);
        match self.socket.recv(&mut self.buf, 0) {
            Ok(_) => Ok(split(&self.buf)),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                Err(Error::Timeout { what: what.to_string() })
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Runs `make` on a short-lived thread in `ns`, or here.
pub(super) async fn open_in<T: Send + 'static>(
    ns: Option<&PathBuf>,
    make: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, Error> {
    crate::netns::in_netns(ns.map(PathBuf::as_path), make)
        .await
        .map_err(|e| Error::Namespace {
            ns: ns.map(|p| p.display().to_string()).unwrap_or_default(),
            why: format!("{e:#}"),
        })
}

fn emit(out: &mut Vec<u8>, msg: NetfilterMessage, flags: u16, seq: u32) {
    let mut m = NetlinkMessage::from(msg);
    m.header.flags = flags;
    m.header.sequence_number = seq;
    m.finalize();
    let at = out.len();
    out.resize(at + m.buffer_len(), 0);
    m.serialize(&mut out[at..]);
}

/// One netlink message as it came, before its payload is read.
struct Raw {
    kind: u16,
    seq: u32,
    errno: i32,
    payload: Vec<u8>,
}

impl Raw {
    fn reply(&self, kind: u16) -> Option<Reply> {
        let family = *self.payload.first()?;
        Some(Reply {
            kind,
            family,
            body: self.payload.get(4..)?.to_vec(),
        })
    }
}

/// Splits a datagram into its netlink messages, stopping at the first that does not fit.
fn split(buf: &[u8]) -> Vec<Raw> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let Ok(m) = NetlinkBuffer::new_checked(&buf[at..]) else {
            break;
        };
        let len = m.length() as usize;
        let payload = m.payload().to_vec();
        let errno = if m.message_type() == NLMSG_ERROR {
            payload
                .get(..4)
                .map(|b| -i32::from_ne_bytes(b.try_into().unwrap_or_default()))
                .unwrap_or(libc::EIO)
        } else {
            0
        };
        out.push(Raw {
            kind: m.message_type(),
            seq: m.sequence_number(),
            errno,
            payload,
        });
        at += (len + 3) & !3;
        if len == 0 {
            break;
        }
    }
    out
}
