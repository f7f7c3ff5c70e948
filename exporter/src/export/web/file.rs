//! The web configuration file as written, and the checks that turn it into [`Settings`]:
//! every key exporter-toolkit knows is read, every value it refuses is refused, and each key
//! or value tracepkt cannot honour is refused or noted by name. Reads no other file.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    tls_server_config: Option<RawTls>,
    http_server_config: Option<RawHttp>,
    rate_limit: Option<RawRate>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    client_ca_file: Option<String>,
    client_auth_type: Option<String>,
    cipher_suites: Option<Vec<String>>,
    curve_preferences: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    prefer_server_cipher_suites: Option<bool>,
    client_allowed_sans: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRate {
    burst: Option<u32>,
    interval: Option<GoDuration>,
}

/// Go's `time.Duration` in YAML: a string such as `1s`, or a number of nanoseconds.
#[derive(Deserialize)]
#[serde(untagged)]
enum GoDuration {
    Nanos(u64),
    Text(String),
}

/// A certificate, key or CA bundle: a PEM file, or PEM text in the configuration itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Pem {
    File(PathBuf),
    Inline(String),
}

/// exporter-toolkit's `client_auth_type` values that tracepkt serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ClientAuth {
    NoClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

/// TLS protocol versions by exporter-toolkit's names, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TlsVersion {
    Tls10,
    Tls11,
    Tls12,
    Tls13,
}

impl TlsVersion {
    fn parse(key: &str, s: &str) -> Result<TlsVersion, String> {
        match s {
            "TLS10" => Ok(TlsVersion::Tls10),
            "TLS11" => Ok(TlsVersion::Tls11),
            "TLS12" => Ok(TlsVersion::Tls12),
            "TLS13" => Ok(TlsVersion::Tls13),
            _ => Err(format!(
                "tls_server_config.{key}: unknown TLS version {s:?} (TLS10, TLS11, TLS12 or TLS13)"
            )),
        }
    }
}

/// What the TLS part asks for, checked; the files it names are read by `tls::build`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct TlsSettings {
    pub cert: Pem,
    pub key: Pem,
    pub client_ca: Option<Pem>,
    pub client_auth: ClientAuth,
    /// Go's cipher suite names, as listed; `None` keeps the TLS library's own choice.
    pub cipher_suites: Option<Vec<String>>,
    /// Go's curve names, as listed; `None` keeps the TLS library's own choice.
    pub curves: Option<Vec<String>>,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    pub prefer_server_cipher_suites: bool,
    pub client_allowed_sans: Option<Vec<String>>,
}

/// exporter-toolkit's global request rate limit: `burst` requests at once, then one every
/// `interval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RateLimit {
    pub interval: Duration,
    pub burst: NonZeroU32,
}

/// The whole file, checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Settings {
    pub tls: Option<TlsSettings>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub rate_limit: Option<RateLimit>,
    /// User name → bcrypt hash.
    pub users: BTreeMap<String, String>,
    /// What is accepted but not done as written, said once at each load.
    pub notes: Vec<String>,
}

/// The response headers a web configuration may set, and the values each may take (none
/// listed: any), as exporter-toolkit allows them.
const HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// The cipher suites HTTP/2 requires when TLS 1.2 is allowed (RFC 9113, 9.2.2), by the check
/// Go's HTTP/2 server makes: a file it refuses for their absence is refused here too, so that
/// one file still works for node_exporter and tracepkt alike.
const HTTP2_SUITES: [&str; 2] = [
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
];

/// Go's empty string is "not set".
fn given(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

impl Settings {
    /// `dir` anchors relative file names, as exporter-toolkit does.
    pub fn parse(text: &str, dir: &Path) -> Result<Settings, String> {
        // An empty file (or one of comments only) is an empty configuration.
        let raw: RawFile = serde_norway::from_str::<Option<RawFile>>(text)
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        let mut notes = Vec::new();
        let http = raw.http_server_config.unwrap_or_default();
        let http2 = http.http2.unwrap_or(true);
        if http.http2 == Some(true) {
            notes.push("http_server_config.http2: HTTP/2 is not served, HTTP/1.1 is".to_owned());
        }
        let tls = match raw.tls_server_config {
            Some(t) => tls(t, dir, http2, &mut notes)?,
            None => None,
        };
        let headers = headers(http.headers.unwrap_or_default())?;
        let rate_limit = match raw.rate_limit {
            Some(r) => rate_limit(r)?,
            None => None,
        };
        let users = raw.basic_auth_users.unwrap_or_default();
        for (user, hash) in &users {
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(format!(
                    "basic_auth_users: {user:?} has no bcrypt hash (expected $2y$…, 60 characters)"
                ));
            }
        }
        Ok(Settings {
            tls,
            headers,
            rate_limit,
            users,
            notes,
        })
    }
}

fn pem(dir: &Path, file: Option<String>, inline: Option<String>, key: &str) -> Result<Option<Pem>, String> {
    match (given(file), given(inline)) {
        (Some(_), Some(_)) => Err(format!("tls_server_config: set {key}_file or {key}, not both")),
        (Some(f), None) => Ok(Some(Pem::File(dir.join(f)))),
        (None, Some(text)) => Ok(Some(Pem::Inline(text))),
        (None, None) => Ok(None),
    }
}

fn tls(raw: RawTls, dir: &Path, http2: bool, notes: &mut Vec<String>) -> Result<Option<TlsSettings>, String> {
    let cert = pem(dir, raw.cert_file, raw.cert, "cert")?;
    let key = pem(dir, raw.key_file, raw.key, "key")?;
    let client_ca = pem(dir, raw.client_ca_file, raw.client_ca, "client_ca")?;
    let client_auth_type = given(raw.client_auth_type);
    let min_version = match given(raw.min_version) {
        Some(v) => TlsVersion::parse("min_version", &v)?,
        None => TlsVersion::Tls12,
    };
    let max_version = match given(raw.max_version) {
        Some(v) => TlsVersion::parse("max_version", &v)?,
        None => TlsVersion::Tls13,
    };
    // As exporter-toolkit: TLS is on once any of these is set, and then needs all it takes.
    if cert.is_none() && key.is_none() && client_ca.is_none() && client_auth_type.is_none() {
        if raw.cipher_suites.is_some() || raw.curve_preferences.is_some() || raw.client_allowed_sans.is_some() {
            notes.push(
                "tls_server_config: no certificate is set, so TLS is off and its other keys do nothing".to_owned(),
            );
        }
        return Ok(None);
    }
    let cert = cert.ok_or("tls_server_config: missing one of cert or cert_file")?;
    let key = key.ok_or("tls_server_config: missing one of key or key_file")?;
    let client_auth = match client_auth_type.as_deref() {
        None | Some("NoClientCert") => ClientAuth::NoClientCert,
        Some("VerifyClientCertIfGiven") => ClientAuth::VerifyClientCertIfGiven,
        Some("RequireAndVerifyClientCert") => ClientAuth::RequireAndVerifyClientCert,
        Some(other @ ("RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert")) => {
            return Err(format!(
                "tls_server_config.client_auth_type: {other} is not supported: it accepts client certificates \
                 that no CA vouches for; use RequireAndVerifyClientCert or VerifyClientCertIfGiven with client_ca_file"
            ));
        }
        Some(other) => {
            return Err(format!(
                "tls_server_config.client_auth_type: invalid ClientAuth {other:?} (NoClientCert, \
                 VerifyClientCertIfGiven or RequireAndVerifyClientCert)"
            ));
        }
    };
    let cipher_suites = raw.cipher_suites.filter(|s| !s.is_empty());
    if let Some(suites) = &cipher_suites {
        for s in suites {
            super::tls::suite_by_go_name(s)?;
        }
        let tls12_allowed = min_version < TlsVersion::Tls13;
        if http2 && tls12_allowed && !suites.iter().any(|s| HTTP2_SUITES.contains(&s.as_str())) {
            return Err(format!(
                "tls_server_config.cipher_suites lacks an HTTP/2-required AES_128_GCM_SHA256 cipher \
                 ({} or {}), which HTTP/2 needs while TLS 1.2 is allowed; add one, or set \
                 http_server_config.http2: false",
                HTTP2_SUITES[0], HTTP2_SUITES[1]
            ));
        }
    }
    let curves = raw.curve_preferences.filter(|c| !c.is_empty());
    if let Some(curves) = &curves {
        for c in curves {
            super::tls::curve_by_go_name(c)?;
        }
    }
    let client_allowed_sans = raw.client_allowed_sans;
    if client_allowed_sans.is_some() && client_ca.is_none() {
        return Err(
            "tls_server_config.client_allowed_sans needs client_ca_file (or client_ca) and a client_auth_type \
             that verifies client certificates"
                .to_owned(),
        );
    }
    Ok(Some(TlsSettings {
        cert,
        key,
        client_ca,
        client_auth,
        cipher_suites,
        curves,
        min_version,
        max_version,
        prefer_server_cipher_suites: raw.prefer_server_cipher_suites.unwrap_or(true),
        client_allowed_sans,
    }))
}

fn headers(raw: BTreeMap<String, String>) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    raw.into_iter()
        .map(|(name, value)| {
            let Some((_, allowed)) = HEADERS.iter().find(|(n, _)| *n == name) else {
                return Err(format!(
                    "http_server_config.headers: HTTP header {name:?} can not be configured (only {})",
                    HEADERS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                ));
            };
            if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
                return Err(format!(
                    "http_server_config.headers: invalid value for {name}: expected one of {allowed:?}, but got {value:?}"
                ));
            }
            let value = HeaderValue::from_str(&value)
                .map_err(|_| format!("http_server_config.headers: {name}: {value:?} is not a valid header value"))?;
            let name = HeaderName::from_bytes(name.as_bytes()).expect("the header table holds valid names");
            Ok((name, value))
        })
        .collect()
}

fn rate_limit(raw: RawRate) -> Result<Option<RateLimit>, String> {
    let interval = match raw.interval {
        None => Duration::ZERO,
        Some(GoDuration::Nanos(n)) => Duration::from_nanos(n),
        Some(GoDuration::Text(s)) => {
            humantime::parse_duration(&s).map_err(|e| format!("rate_limit.interval: invalid duration {s:?}: {e}"))?
        }
    };
    // As exporter-toolkit: no interval, no limit.
    if interval.is_zero() {
        return Ok(None);
    }
    let burst = NonZeroU32::new(raw.burst.unwrap_or(0))
        .ok_or("rate_limit.burst: 0 with an interval lets no request through at all; set burst to at least 1")?;
    Ok(Some(RateLimit { interval, burst }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Settings::parse(text, Path::new("/nonexistent"))
            .err()
            .unwrap_or_default()
    }

    #[test]
    fn bad_files_are_refused_with_what_is_wrong() {
        let cases = [
            ("tls_server_config: {key_file: k}", "missing one of cert or cert_file"),
            ("tls_server_config: {cert_file: c}", "missing one of key or key_file"),
            (
                "tls_server_config: {cert_file: '', key_file: k}",
                "missing one of cert or cert_file",
            ),
            (
                "tls_server_config: {cert_file: c, cert: x, key_file: k}",
                "set cert_file or cert, not both",
            ),
            ("tls_server_config: {cert_filse: c}", "unknown field `cert_filse`"),
            (
                "tls_server_config: {cert_file: c, key_file: k, client_auth_type: RequireAnyClientCert}",
                "RequireAnyClientCert is not supported",
            ),
            (
                "tls_server_config: {cert_file: c, key_file: k, client_auth_type: x}",
                "invalid ClientAuth \"x\"",
            ),
            (
                "tls_server_config: {cert_file: c, key_file: k, min_version: TLS111}",
                "unknown TLS version \"TLS111\"",
            ),
            (
                "tls_server_config: {cert_file: c, key_file: k, cipher_suites: [TLS_FOO]}",
                "unknown cipher: TLS_FOO",
            ),
            (
                "tls_server_config: {cert_file: c, key_file: k, curve_preferences: [CurveP257]}",
                "unknown curve: CurveP257",
            ),
            (
                "tls_server_config: {cert_file: c, key_file: k, cipher_suites: [TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]}",
                "HTTP/2-required",
            ),
            (
                "tls_server_config: {cert_file: c, key_file: k, client_allowed_sans: [a]}",
                "client_allowed_sans needs client_ca_file",
            ),
            (
                "basic_auth_users: {prometheus: secret}",
                "\"prometheus\" has no bcrypt hash",
            ),
            (
                "http_server_config: {headers: {Content-Type: foo}}",
                "\"Content-Type\" can not be configured",
            ),
            (
                "http_server_config: {headers: {X-Frame-Options: foo}}",
                "invalid value for X-Frame-Options",
            ),
            ("rate_limit: {interval: 1s, burst: 0}", "rate_limit.burst: 0"),
            ("rate_limit: {interval: soon}", "rate_limit.interval: invalid duration"),
            ("http_server_config: {http3: true}", "unknown field `http3`"),
        ];
        for (text, want) in cases {
            let got = err(text);
            assert!(got.contains(want), "{text}: {got:?} does not say {want:?}");
        }
    }

    #[test]
    fn good_files_give_their_settings() {
        let dir = Path::new("/etc/tracepkt");
        let s = Settings::parse("", dir).unwrap();
        assert_eq!(s, Settings::default());
        let s = Settings::parse("basic_auth_users: {}\nrate_limit: {interval: 0, burst: 0}\n", dir).unwrap();
        assert!(s.users.is_empty() && s.rate_limit.is_none() && s.tls.is_none());
        let s = Settings::parse(
            "tls_server_config:\n  cert_file: a.crt\n  key: |\n    PEM\n  client_auth_type: VerifyClientCertIfGiven\n  \
             cipher_suites: [TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]\n  max_version: TLS12\n  min_version: TLS10\n\
             http_server_config: {http2: false, headers: {X-Frame-Options: deny}}\n\
             rate_limit: {interval: 2s, burst: 3}\n",
            dir,
        )
        .unwrap();
        let tls = s.tls.unwrap();
        assert_eq!(tls.cert, Pem::File("/etc/tracepkt/a.crt".into()));
        assert_eq!(tls.key, Pem::Inline("PEM\n".into()));
        assert_eq!(tls.client_auth, ClientAuth::VerifyClientCertIfGiven);
        assert_eq!(
            (tls.min_version, tls.max_version),
            (TlsVersion::Tls10, TlsVersion::Tls12)
        );
        assert!(tls.prefer_server_cipher_suites);
        assert_eq!(s.headers.len(), 1);
        assert_eq!(
            s.rate_limit,
            Some(RateLimit {
                interval: Duration::from_secs(2),
                burst: NonZeroU32::new(3).unwrap()
            })
        );
        // TLS settings without a certificate: TLS stays off, and the file says so.
        let s = Settings::parse("tls_server_config: {cipher_suites: [TLS_AES_128_GCM_SHA256]}", dir).unwrap();
        assert!(
            s.tls.is_none() && s.notes.iter().any(|n| n.contains("TLS is off")),
            "{:?}",
            s.notes
        );
    }
}
