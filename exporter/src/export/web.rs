//! Who may read tracepkt's HTTP endpoints: TLS, client certificates and basic auth, configured
//! with a web configuration file in the format of the Prometheus exporters (exporter-toolkit's
//! `--web.config.file`), so that one file serves tracepkt and node_exporter alike:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt            # PEM; relative paths are read from this file's directory
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert  # or VerifyClientCertIfGiven, NoClientCert
//!   client_ca_file: clients-ca.crt   # needed by the two above
//!   min_version: TLS12               # or TLS13
//! basic_auth_users:
//!   prometheus: $2y$10$...           # bcrypt hashes (htpasswd -nBC 10 "" | tr -d ':\n')
//! ```
//!
//! The file is read once, at start. Every endpoint is covered, `/healthz` included.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

/// What the web configuration asks for, checked and loaded.
pub struct WebConfig {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub auth: Option<BasicAuth>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    tls_server_config: Option<RawTls>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(default)]
    client_auth_type: ClientAuth,
    client_ca_file: Option<PathBuf>,
    min_version: Option<TlsVersion>,
}

/// exporter-toolkit's names; `RequestClientCert` and `RequireAnyClientCert` accept
/// certificates nobody vouches for, and are refused rather than quietly treated as another.
#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
enum ClientAuth {
    #[default]
    NoClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

#[derive(Deserialize, Clone, Copy)]
enum TlsVersion {
    TLS12,
    TLS13,
}

impl WebConfig {
    pub fn load(path: &Path) -> anyhow::Result<WebConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read the web configuration {}: {e}", path.display()))?;
        Self::parse(&text, path.parent().unwrap_or(Path::new(".")))
            .map_err(|e| anyhow::anyhow!("web configuration {}: {e}", path.display()))
    }

    /// `dir` anchors relative file names, as exporter-toolkit does.
    fn parse(text: &str, dir: &Path) -> Result<WebConfig, String> {
        let raw: RawWebConfig = serde_norway::from_str(text).map_err(|e| e.to_string())?;
        let tls = raw.tls_server_config.map(|t| tls(t, dir)).transpose()?;
        let auth = match raw.basic_auth_users {
            None => None,
            Some(users) if users.is_empty() => None,
            Some(users) => Some(BasicAuth::new(users)?),
        };
        Ok(WebConfig { tls, auth })
    }
}

fn tls(raw: RawTls, dir: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let file = |p: Option<PathBuf>, key: &str| {
        p.map(|p| dir.join(p))
            .ok_or_else(|| format!("tls_server_config needs {key}"))
    };
    let cert_file = file(raw.cert_file, "cert_file")?;
    let key_file = file(raw.key_file, "key_file")?;
    let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(&cert_file)
        .and_then(|i| i.collect())
        .map_err(|e| format!("cert_file {}: {e}", cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!("cert_file {}: no certificate in it", cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&key_file).map_err(|e| format!("key_file {}: {e}", key_file.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match raw.min_version {
        Some(TlsVersion::TLS13) => &[&rustls::version::TLS13],
        Some(TlsVersion::TLS12) | None => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?;
    let builder = match raw.client_auth_type {
        ClientAuth::NoClientCert => builder.with_no_client_auth(),
        auth => {
            let ca_file = raw
                .client_ca_file
                .map(|p| dir.join(p))
                .ok_or("client_auth_type other than NoClientCert needs client_ca_file")?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(&ca_file)
                .map_err(|e| format!("client_ca_file {}: {e}", ca_file.display()))?
            {
                let cert = cert.map_err(|e| format!("client_ca_file {}: {e}", ca_file.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("client_ca_file {}: {e}", ca_file.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if auth == ClientAuth::VerifyClientCertIfGiven {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("client_ca_file {}: {e}", ca_file.display()))?,
            )
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("cert_file and key_file: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Basic auth against bcrypt hashes. A bcrypt check costs tens of milliseconds by design, so
/// credentials that passed are remembered (a few, by user and password) and a scraper every
/// few seconds does not pay it each time.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    passed: Mutex<HashSet<(String, String)>>,
}

/// Remembered credentials; beyond this the memory is emptied and refilled.
const REMEMBERED: usize = 64;
/// Checked for unknown users too, so that the response time does not tell which users exist.
static UNKNOWN_USER_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| bcrypt::hash("no such user", bcrypt::DEFAULT_COST).unwrap_or_default());

impl BasicAuth {
    fn new(users: BTreeMap<String, String>) -> Result<BasicAuth, String> {
        for (user, hash) in &users {
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(format!(
                    "basic_auth_users: {user:?} has no bcrypt hash (expected $2y$…, 60 characters)"
                ));
            }
        }
        Ok(BasicAuth {
            users,
            passed: Mutex::new(HashSet::new()),
        })
    }

    fn check(&self, user: &str, password: &str) -> bool {
        let key = (user.to_owned(), password.to_owned());
        if self.passed.lock().unwrap().contains(&key) {
            return true;
        }
        let known = self.users.get(user);
        let hash = known.map_or(UNKNOWN_USER_HASH.as_str(), String::as_str);
        let ok = bcrypt::verify(password, hash).unwrap_or(false) && known.is_some();
        if ok {
            let mut passed = self.passed.lock().unwrap();
            if passed.len() >= REMEMBERED {
                passed.clear();
            }
            passed.insert(key);
        }
        ok
    }
}

/// The middleware: a request without the right credentials gets 401 and a challenge.
pub async fn require_auth(State(auth): State<Arc<BasicAuth>>, req: Request, next: Next) -> Response {
    let credentials = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let allowed = match credentials.as_deref().and_then(|c| c.split_once(':')) {
        Some((user, password)) => {
            let (auth, user, password) = (auth.clone(), user.to_owned(), password.to_owned());
            tokio::task::spawn_blocking(move || auth.check(&user, &password))
                .await
                .unwrap_or(false)
        }
        None => false,
    };
    if allowed {
        next.run(req).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"tracepkt\"")],
            "Unauthorized\n",
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_refused_with_what_is_wrong() {
        let dir = Path::new("/nonexistent");
        let err = |text: &str| WebConfig::parse(text, dir).err().unwrap_or_default();
        assert!(err("tls_server_config: {key_file: k}").contains("needs cert_file"));
        assert!(err("tls_server_config: {cert_file: c, key_file: k}").contains("cert_file /nonexistent/c"));
        assert!(err("tls_server_config: {cipher_suites: []}").contains("unknown field `cipher_suites`"));
        assert!(
            err("tls_server_config: {cert_file: c, key_file: k, client_auth_type: RequireAnyClientCert}")
                .contains("unknown variant `RequireAnyClientCert`")
        );
        assert!(err("basic_auth_users: {prometheus: secret}").contains("\"prometheus\" has no bcrypt hash"));
        assert!(err("http_server_config: {http2: true}").contains("unknown field `http_server_config`"));
        let c = WebConfig::parse("basic_auth_users: {}", dir).unwrap();
        assert!(c.tls.is_none() && c.auth.is_none());
    }

    #[test]
    fn basic_auth_checks_the_password_and_the_user() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let auth = BasicAuth::new(BTreeMap::from([("prom".to_owned(), hash)])).unwrap();
        assert!(auth.check("prom", "s3cret"));
        assert!(auth.check("prom", "s3cret"), "remembered");
        assert!(!auth.check("prom", "wrong"));
        assert!(!auth.check("other", "s3cret"));
    }
}
