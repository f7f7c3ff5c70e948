//! Who may read tracepkt's HTTP endpoints: TLS, client certificates, basic auth, response
//! headers and a request rate limit, from a web configuration file in the format of the
//! Prometheus exporters (exporter-toolkit's `--web.config.file`), so that one file serves
//! tracepkt and node_exporter alike. README's "TLS and basic auth" lists what is served,
//! what is refused, and why.
//!
//! The file and the certificates, keys and CAs it names are looked at again before each new
//! connection's TLS handshake and each request: a change on disk takes effect then, without a
//! restart. A changed file that does not load is logged and the running one stays in force.

mod auth;
mod file;
mod tls;

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tracing::{error, info, warn};

pub(crate) use self::auth::client_key;
use self::auth::{Checker, Users, Verdict};
use self::file::Settings;

/// The web configuration in force, and what reloads it.
pub struct Web {
    path: PathBuf,
    current: RwLock<Arc<Loaded>>,
    watch: Mutex<Watch>,
    checker: Checker,
}

/// One load of the file.
pub struct Loaded {
    settings: Settings,
    tls: Option<Arc<rustls::ServerConfig>>,
    users: Option<Arc<Users>>,
    rate_limit: Option<Arc<DefaultDirectRateLimiter>>,
    files: Vec<PathBuf>,
}

/// What a file on disk looked like when it was last read: a change of any of these is a
/// change of the file (a Kubernetes Secret is updated by swapping a symlink: a new inode).
#[derive(Clone, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    mtime: (i64, i64),
    size: u64,
}

struct Watch {
    stamps: Vec<Option<Stamp>>,
    /// The files as they were when a reload was refused: not tried again until they change.
    refused: Option<Vec<Option<Stamp>>>,
}

fn stamps(files: &[PathBuf]) -> Vec<Option<Stamp>> {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f).ok().map(|m| Stamp {
                dev: m.dev(),
                ino: m.ino(),
                mtime: (m.mtime(), m.mtime_nsec()),
                size: m.size(),
            })
        })
        .collect()
}

impl Loaded {
    /// Reads and checks the file and all it names. What stays the same as in `old` (the user
    /// list, the rate limit) is kept, with its remembered logins and spent budget.
    fn read(path: &Path, old: Option<&Loaded>) -> Result<Loaded, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the web configuration {}: {e}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let in_file = |e: String| format!("web configuration {}: {e}", path.display());
        let mut settings = Settings::parse(&text, dir).map_err(in_file)?;
        let tls = match &settings.tls {
            Some(t) => {
                let built = tls::build(t).map_err(in_file)?;
                settings.notes.extend(built.notes);
                Some(built.config)
            }
            None => None,
        };
        let mut files = vec![path.to_owned()];
        files.extend(settings.tls.iter().flat_map(tls::files).map(Path::to_owned));
        let users = match old {
            Some(o) if o.settings.users == settings.users => o.users.clone(),
            _ if settings.users.is_empty() => None,
            _ => Some(Arc::new(Users::new(settings.users.clone()))),
        };
        let rate_limit = match (old, settings.rate_limit) {
            (Some(o), Some(_)) if o.settings.rate_limit == settings.rate_limit => o.rate_limit.clone(),
            (_, Some(r)) => {
                let quota = Quota::with_period(r.interval)
                    .ok_or_else(|| in_file("rate_limit.interval must not be 0".to_owned()))?
                    .allow_burst(r.burst);
                Some(Arc::new(RateLimiter::direct(quota)))
            }
            (_, None) => None,
        };
        Ok(Loaded {
            settings,
            tls,
            users,
            rate_limit,
            files,
        })
    }

    fn log_notes(&self) {
        for note in &self.settings.notes {
            warn!(web_config = %self.files[0].display(), "{note}");
        }
    }
}

impl Web {
    /// Loads the file; a bad one stops tracepkt before anything is attached.
    pub fn load(path: &Path) -> anyhow::Result<Arc<Web>> {
        let loaded = Loaded::read(path, None).map_err(|e| anyhow::anyhow!("{e}"))?;
        loaded.log_notes();
        let checker = Checker::start().map_err(|e| anyhow::anyhow!("cannot start the bcrypt thread: {e}"))?;
        Ok(Arc::new(Web {
            path: path.to_owned(),
            watch: Mutex::new(Watch {
                stamps: stamps(&loaded.files),
                refused: None,
            }),
            current: RwLock::new(Arc::new(loaded)),
            checker,
        }))
    }

    pub fn tls_on(&self) -> bool {
        self.now().tls.is_some()
    }

    pub fn basic_auth_on(&self) -> bool {
        self.now().users.is_some()
    }

    fn now(&self) -> Arc<Loaded> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The configuration in force, read again first if any of its files changed.
    pub fn current(&self) -> Arc<Loaded> {
        let mut watch = self.watch.lock().unwrap_or_else(PoisonError::into_inner);
        let old = self.now();
        let seen = stamps(&old.files);
        if seen == watch.stamps || watch.refused.as_ref() == Some(&seen) {
            return old;
        }
        match Loaded::read(&self.path, Some(&old)) {
            Ok(new) if new.tls.is_some() != old.tls.is_some() => {
                error!(
                    web_config = %self.path.display(),
                    "the changed web configuration turns TLS {}; that takes effect at the next start, \
                     the running configuration stays in force",
                    if new.tls.is_some() { "on" } else { "off" }
                );
                watch.refused = Some(seen);
                old
            }
            Ok(new) => {
                new.log_notes();
                info!(web_config = %self.path.display(), "web configuration reloaded");
                watch.stamps = stamps(&new.files);
                watch.refused = None;
                let new = Arc::new(new);
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = new.clone();
                new
            }
            Err(e) => {
                error!("{e}; the running web configuration stays in force");
                watch.refused = Some(seen);
                old
            }
        }
    }
}

impl Loaded {
    pub fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.clone()
    }

    fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.settings.headers
    }
}

fn refuse(status: StatusCode, retry: bool) -> Response {
    let mut r = (status, format!("{}\n", status.canonical_reason().unwrap_or(""))).into_response();
    if retry {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

/// The rate limit and basic auth, in that order, as exporter-toolkit applies them.
pub async fn guard(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let loaded = web.current();
    if let Some(limit) = &loaded.rate_limit
        && limit.check().is_err()
    {
        return refuse(StatusCode::TOO_MANY_REQUESTS, true);
    }
    let Some(users) = &loaded.users else {
        return next.run(req).await;
    };
    let credentials = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(auth::credentials);
    let verdict = match &credentials {
        Some((user, password)) => web.checker.check(users, peer.ip(), user, password).await,
        None => Verdict::Denied,
    };
    match verdict {
        Verdict::Allowed => next.run(req).await,
        Verdict::Denied => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"tracepkt\"")],
            "Unauthorized\n",
        )
            .into_response(),
        Verdict::ClientTooFast => refuse(StatusCode::TOO_MANY_REQUESTS, true),
        Verdict::Busy => refuse(StatusCode::SERVICE_UNAVAILABLE, true),
    }
}

/// The response headers the file sets, on every response.
pub async fn add_headers(State(web): State<Arc<Web>>, req: Request, next: Next) -> Response {
    let loaded = web.current();
    let mut response = next.run(req).await;
    for (name, value) in loaded.headers() {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}
