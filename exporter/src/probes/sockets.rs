//! What the kinds' sockets have in common: made inside another network namespace when the
//! probe starts there (`crate::netns`), bound to a port the kernel picks, set with a socket
//! option, and what a failed send or connect says about the path.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;

use socket2::{Domain, Protocol, Socket, Type};

pub(super) use crate::netns::in_netns;
use crate::outcome::Outcome;

/// Sets a socket option whose value is a plain `T` (an int, a filter's bit array).
pub(super) fn setsockopt<T: Copy>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live T of the size given, and setsockopt only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
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

/// A non-blocking socket of `ty` towards `addr`'s family, bound to a port the kernel picks:
/// that port names the probe in the kernel's `PROBES` map, as the echo id does for ICMP.
pub(super) fn bound(addr: IpAddr, ty: Type, proto: Protocol) -> io::Result<(Socket, u16)> {
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

/// What a failed connect or exchange says about the path.
pub(super) fn failure(e: &io::Error) -> Outcome {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => Outcome::Refused,
        Some(libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN | libc::ENETDOWN) => {
            Outcome::Unreachable(e.to_string())
        }
        _ => Outcome::SendError(e.to_string()),
    }
}
