//! The HTTP server around the routes: TLS and the web configuration's checks when one is
//! given, and the bounds that keep one client from taking the server from the others.
//!
//! - Each client address (an IPv6 one by its /64) holds at most [`CONNECTIONS_PER_CLIENT`]
//!   connections, and all clients together at most [`max_connections`], well below the file
//!   descriptor limit: a connection past either is closed as soon as it is accepted, so a
//!   flood never leaves tracepkt without a descriptor for the next scraper.
//! - A request's headers must arrive within [`HEADER_TIMEOUT`] of the connection opening (or
//!   of the previous response, on a kept-alive connection), and a TLS handshake must end
//!   within axum-server's 10 s: a client that trickles bytes is closed.
//! - At most [`REQUESTS`] requests are handled at once; one that waits more than
//!   [`REQUEST_WAIT`] for its turn gets 503.
//! - `/healthz` stays outside the rate limit and basic auth, so that the kubelet's probe,
//!   which cannot carry a password from a Secret, reaches it; it tells only whether tracepkt
//!   is probing.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum_server::accept::Accept;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tracing::{debug, warn};

use super::health::{self, Health};
use super::web::{self, Web};

/// Connections one client address may hold: a scraper needs one or two, a browser six.
pub const CONNECTIONS_PER_CLIENT: usize = 32;
/// How long a client has to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests handled at once.
pub const REQUESTS: usize = 16;
/// How long a request waits for one of those.
pub const REQUEST_WAIT: Duration = Duration::from_secs(10);

/// Connections all clients together may hold: a quarter of the file descriptor limit (the
/// rest is for the programs, maps and probe sockets), and at most 512.
pub fn max_connections() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        1024
    };
    (soft as usize / 4).clamp(16, 512)
}

/// The HTTP server, running: its task, and the handle that stops it.
pub struct Server {
    pub task: JoinHandle<io::Result<()>>,
    pub handle: axum_server::Handle<SocketAddr>,
}

/// Serves `routes` and `/healthz` on `listener`, with what `web` asks for.
pub fn serve(
    listener: std::net::TcpListener,
    routes: Router,
    health: Arc<Health>,
    web: Option<Arc<Web>>,
) -> io::Result<Server> {
    let mut routes = routes.layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                (StatusCode::SERVICE_UNAVAILABLE, "too many requests at once\n").into_response()
            }))
            .timeout(REQUEST_WAIT)
            .layer(GlobalConcurrencyLimitLayer::new(REQUESTS)),
    );
    if let Some(web) = &web {
        routes = routes.layer(axum::middleware::from_fn_with_state(web.clone(), web::guard));
    }
    let mut app = Router::new()
        .route("/healthz", get(health::healthz))
        .with_state(health)
        .merge(routes);
    if let Some(web) = &web {
        app = app.layer(axum::middleware::from_fn_with_state(web.clone(), web::add_headers));
    }
    let service = app.into_make_service_with_connect_info::<SocketAddr>();

    let handle = axum_server::Handle::new();
    let gate = Gate {
        conns: Arc::new(Conns::new(max_connections(), CONNECTIONS_PER_CLIENT)),
        tls: None,
    };
    let tls = web.as_ref().and_then(|w| w.current().tls().map(|c| (w.clone(), c)));
    let server = axum_server::from_tcp(listener)?
        .http1_only()
        .first_request_timeout(HEADER_TIMEOUT)
        .handle(handle.clone())
        .accept_error_handler(|peer, e| match peer {
            Some(peer) => debug!(%peer, "connection closed before its first request: {e}"),
            None => warn!("accepting a connection failed: {e}"),
        });
    let task = match tls {
        Some((web, config)) => {
            let config = RustlsConfig::from_config(config);
            let gate = Gate {
                tls: Some((web, config.clone())),
                ..gate
            };
            let mut server = server.acceptor(RustlsAcceptor::new(config).acceptor(gate));
            server.http_builder().http1().header_read_timeout(HEADER_TIMEOUT);
            tokio::spawn(server.serve(service))
        }
        None => {
            let mut server = server.acceptor(gate);
            server.http_builder().http1().header_read_timeout(HEADER_TIMEOUT);
            tokio::spawn(server.serve(service))
        }
    };
    Ok(Server { task, handle })
}

/// Open connections, in all and by client.
struct Conns {
    max_total: usize,
    max_per_client: usize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
    refused: u64,
    last_said: Option<Instant>,
}

impl Conns {
    fn new(max_total: usize, max_per_client: usize) -> Conns {
        Conns {
            max_total,
            max_per_client,
            open: Mutex::new(Open::default()),
        }
    }

    fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Slot> {
        let client = web::client_key(peer);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let of_client = open.by_client.get(&client).copied().unwrap_or(0);
        if open.total >= self.max_total || of_client >= self.max_per_client {
            open.refused += 1;
            // Said at most every 10 s: a flood must not flood the log too.
            if open.last_said.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                open.last_said = Some(Instant::now());
                warn!(
                    client = %peer,
                    open = open.total,
                    of_client,
                    refused = open.refused,
                    "closing new connections past {} in all or {} per client",
                    self.max_total,
                    self.max_per_client
                );
            }
            return None;
        }
        open.total += 1;
        *open.by_client.entry(client).or_default() += 1;
        Some(Slot {
            conns: self.clone(),
            client,
        })
    }
}

/// A connection's place among the open ones, given back when it closes.
struct Slot {
    conns: Arc<Conns>,
    client: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.conns.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.total -= 1;
        if let Some(n) = open.by_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.by_client.remove(&self.client);
            }
        }
    }
}

/// Admits a connection, or closes it; with TLS, brings the configuration up to date first
/// so that this connection's handshake uses the certificate on disk now.
#[derive(Clone)]
struct Gate {
    conns: Arc<Conns>,
    tls: Option<(Arc<Web>, RustlsConfig)>,
}

impl<S> Accept<TcpStream, S> for Gate {
    type Stream = Counted;
    type Service = S;
    type Future = std::future::Ready<io::Result<(Counted, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let admitted = stream
            .peer_addr()
            .and_then(|peer| {
                self.conns
                    .admit(peer.ip())
                    .ok_or_else(|| io::Error::other("over the connection limit"))
            })
            .map(|slot| {
                if let Some((web, config)) = &self.tls
                    && let Some(now) = web.current().tls()
                {
                    config.reload_from_config(now);
                }
                (Counted { stream, _slot: slot }, service)
            });
        std::future::ready(admitted)
    }
}

/// A connection that gives its slot back when it closes.
pub struct Counted {
    stream: TcpStream,
    _slot: Slot,
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_bounded_in_all_and_per_client() {
        let conns = Arc::new(Conns::new(3, 2));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let b2: IpAddr = "2001:db8::2".parse().unwrap();
        let a1 = conns.admit(a).unwrap();
        let _a2 = conns.admit(a).unwrap();
        assert!(conns.admit(a).is_none(), "per client");
        let _b1 = conns.admit(b).unwrap();
        assert!(conns.admit(b2).is_none(), "in all");
        drop(a1);
        let _b2 = conns.admit(b2).unwrap();
        assert!(conns.admit(b).is_none(), "b's /64 holds two");
        assert!(max_connections() >= 16);
    }
}
