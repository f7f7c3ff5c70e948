//! The TLS server configuration a web configuration asks for: its certificate and key (files
//! or inline PEM), protocol versions, cipher suites and key exchange groups by Go's names, and
//! the check of client certificates.
//!
//! Client certificates are verified by webpki against `client_ca_file`. One case webpki
//! refuses and Go accepts is served too: a self-signed client certificate that is its own CA
//! (`CA:TRUE`, as `openssl req -x509` makes by default), listed in `client_ca_file` itself.
//! It is taken when it is byte for byte one of those CA certificates, valid now, and allowed
//! for client authentication; the handshake still proves the client holds its key.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme, SupportedCipherSuite};

use super::file::{ClientAuth, Pem, TlsSettings, TlsVersion};

/// Go's names of the cipher suites its `tls.CipherSuites()` lists that the TLS library here
/// does not implement: accepted in a list (with a note), never negotiated.
const UNIMPLEMENTED_SUITES: &[&str] = &[
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
];

/// A cipher suite by Go's name: `Some` the suite, `None` a suite Go knows and the TLS library
/// here does not implement, an error for a name Go does not know either.
pub(super) fn suite_by_go_name(name: &str) -> Result<Option<SupportedCipherSuite>, String> {
    // Go names TLS 1.3 suites without rustls's `TLS13_`.
    let rustls_name = match name.strip_prefix("TLS_") {
        Some(rest) if rest.starts_with("AES_") || rest.starts_with("CHACHA20_") => format!("TLS13_{rest}"),
        _ => name.to_owned(),
    };
    if let Some(s) = rustls::crypto::ring::ALL_CIPHER_SUITES
        .iter()
        .find(|s| s.suite().as_str() == Some(rustls_name.as_str()))
    {
        return Ok(Some(*s));
    }
    if UNIMPLEMENTED_SUITES.contains(&name) {
        return Ok(None);
    }
    Err(format!("tls_server_config.cipher_suites: unknown cipher: {name}"))
}

/// A key exchange group by Go's curve name; `None` for CurveP521, which Go knows and the TLS
/// library here does not implement.
pub(super) fn curve_by_go_name(name: &str) -> Result<Option<&'static dyn SupportedKxGroup>, String> {
    use rustls::crypto::ring::kx_group;
    match name {
        "CurveP256" => Ok(Some(kx_group::SECP256R1)),
        "CurveP384" => Ok(Some(kx_group::SECP384R1)),
        "X25519" => Ok(Some(kx_group::X25519)),
        "CurveP521" => Ok(None),
        _ => Err(format!(
            "tls_server_config.curve_preferences: unknown curve: {name} (CurveP256, CurveP384, CurveP521 or X25519)"
        )),
    }
}

/// Reads a PEM file, or takes inline PEM text.
fn read(pem: &Pem, key: &str) -> Result<Vec<u8>, String> {
    match pem {
        Pem::File(path) => std::fs::read(path).map_err(|e| format!("{key}_file {}: {e}", path.display())),
        Pem::Inline(text) => Ok(text.clone().into_bytes()),
    }
}

fn certificates(pem: &Pem, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(pem, key)?;
    let what = match pem {
        Pem::File(p) => format!("{key}_file {}", p.display()),
        Pem::Inline(_) => key.to_owned(),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what}: no PEM certificate in it"));
    }
    Ok(certs)
}

/// The built configuration, and what of the file it could not do as written.
pub(super) struct Built {
    pub config: Arc<rustls::ServerConfig>,
    pub notes: Vec<String>,
}

pub(super) fn build(t: &TlsSettings) -> Result<Built, String> {
    let mut notes = Vec::new();
    let certs = certificates(&t.cert, "cert")?;
    let key_bytes = read(&t.key, "key")?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| match &t.key {
        Pem::File(p) => format!("key_file {}: {e}", p.display()),
        Pem::Inline(_) => format!("key: {e}"),
    })?;

    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(names) = &t.cipher_suites {
        let mut chosen = Vec::new();
        let mut missing = Vec::new();
        for name in names {
            match suite_by_go_name(name)? {
                Some(s) => chosen.push(s),
                None => missing.push(name.as_str()),
            }
        }
        if !missing.is_empty() {
            notes.push(format!(
                "tls_server_config.cipher_suites: {} not implemented here, so not offered",
                missing.join(", ")
            ));
        }
        let listed_tls12 = names
            .iter()
            .any(|n| !n.starts_with("TLS_AES_") && !n.starts_with("TLS_CHACHA20_"));
        let tls12: Vec<SupportedCipherSuite> = chosen
            .iter()
            .copied()
            .filter(|s| s.version() == &rustls::version::TLS12)
            .collect();
        if listed_tls12 && tls12.is_empty() && t.min_version < TlsVersion::Tls13 && t.max_version >= TlsVersion::Tls12 {
            return Err(format!(
                "tls_server_config.cipher_suites: none of the TLS 1.2 suites listed is implemented here ({}); \
                 list at least one ECDHE AES-GCM or ChaCha20 suite",
                missing.join(", ")
            ));
        }
        let mut tls13: Vec<SupportedCipherSuite> = chosen
            .iter()
            .copied()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .collect();
        // As Go: a list of TLS 1.2 suites only leaves TLS 1.3 its own.
        if tls13.is_empty() {
            tls13 = provider
                .cipher_suites
                .iter()
                .copied()
                .filter(|s| s.version() == &rustls::version::TLS13)
                .collect();
        }
        provider.cipher_suites = tls13.into_iter().chain(tls12).collect();
    }
    if let Some(names) = &t.curves {
        let mut groups = Vec::new();
        let mut missing = Vec::new();
        for name in names {
            match curve_by_go_name(name)? {
                Some(g) => groups.push(g),
                None => missing.push(name.as_str()),
            }
        }
        if groups.is_empty() {
            return Err(format!(
                "tls_server_config.curve_preferences: {} not implemented here (CurveP256, CurveP384 and X25519 are)",
                missing.join(", ")
            ));
        }
        if !missing.is_empty() {
            notes.push(format!(
                "tls_server_config.curve_preferences: {} not implemented here, so not offered",
                missing.join(", ")
            ));
        }
        provider.kx_groups = groups;
    }
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    if t.min_version <= TlsVersion::Tls13 && t.max_version >= TlsVersion::Tls13 {
        versions.push(&rustls::version::TLS13);
    }
    if t.min_version <= TlsVersion::Tls12 && t.max_version >= TlsVersion::Tls12 {
        versions.push(&rustls::version::TLS12);
    }
    if versions.is_empty() {
        return Err(format!(
            "tls_server_config: min_version {:?} and max_version {:?} leave no version served here (TLS12 and TLS13 are)",
            t.min_version, t.max_version
        ));
    }
    if t.min_version < TlsVersion::Tls12 {
        notes.push("tls_server_config.min_version: TLS 1.0 and 1.1 are not served; TLS 1.2 is the lowest".to_owned());
    }
    let provider = Arc::new(provider);
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;

    let cas = match &t.client_ca {
        Some(pem) => {
            let bytes = read(pem, "client_ca")?;
            Some((pem, bytes))
        }
        None => None,
    };
    let builder = match (t.client_auth, cas) {
        (ClientAuth::NoClientCert, Some(_)) => {
            return Err(
                "tls_server_config: client_ca_file is set without a client_auth_type (client CA set without a policy); \
                 set client_auth_type: RequireAndVerifyClientCert or VerifyClientCertIfGiven"
                    .to_owned(),
            );
        }
        (ClientAuth::NoClientCert, None) => builder.with_no_client_auth(),
        (ClientAuth::RequireAndVerifyClientCert, None) => {
            return Err(
                "tls_server_config: client_auth_type RequireAndVerifyClientCert needs client_ca_file or client_ca \
                 (client certificates are checked against those CAs only, never the system's)"
                    .to_owned(),
            );
        }
        (ClientAuth::VerifyClientCertIfGiven, None) => {
            notes.push(
                "tls_server_config: VerifyClientCertIfGiven without client_ca_file: no client certificate is asked for, \
                 since none could be verified"
                    .to_owned(),
            );
            builder.with_no_client_auth()
        }
        (auth, Some((pem, _))) => {
            let cas = certificates(pem, "client_ca")?;
            let verifier = ClientVerifier::new(cas, auth, t.client_allowed_sans.clone(), provider)?;
            builder.with_client_cert_verifier(Arc::new(verifier))
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls_server_config: the certificate and key do not make a pair: {e}"))?;
    config.ignore_client_order = t.prefer_server_cipher_suites;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Built {
        config: Arc::new(config),
        notes,
    })
}

/// webpki's client verifier, and the two things it does not do: take a client certificate
/// that is itself one of the configured CAs, and check the client's names
/// (`client_allowed_sans`).
#[derive(Debug)]
struct ClientVerifier {
    webpki: Arc<dyn ClientCertVerifier>,
    cas: Vec<CertificateDer<'static>>,
    allowed_sans: Option<Vec<String>>,
}

impl ClientVerifier {
    fn new(
        cas: Vec<CertificateDer<'static>>,
        auth: ClientAuth,
        allowed_sans: Option<Vec<String>>,
        provider: Arc<CryptoProvider>,
    ) -> Result<ClientVerifier, String> {
        let mut roots = rustls::RootCertStore::empty();
        for (i, ca) in cas.iter().enumerate() {
            roots
                .add(ca.clone())
                .map_err(|e| format!("client_ca_file: certificate {}: {e}", i + 1))?;
        }
        let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let builder = if auth == ClientAuth::VerifyClientCertIfGiven {
            builder.allow_unauthenticated()
        } else {
            builder
        };
        let webpki = builder.build().map_err(|e| format!("client_ca_file: {e}"))?;
        Ok(ClientVerifier {
            webpki,
            cas,
            allowed_sans,
        })
    }

    /// A CA certificate presented as the client's own: valid now and for client auth.
    fn trusted_directly(&self, cert: &CertificateDer<'_>, now: UnixTime) -> Result<(), rustls::Error> {
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let at = x509_parser::time::ASN1Time::from_timestamp(now.as_secs() as i64)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if at < parsed.validity().not_before {
            return Err(rustls::Error::InvalidCertificate(CertificateError::NotValidYet));
        }
        if at > parsed.validity().not_after {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Expired));
        }
        match parsed.extended_key_usage() {
            Ok(None) => Ok(()),
            Ok(Some(eku)) if eku.value.client_auth || eku.value.any => Ok(()),
            Ok(Some(_)) => Err(rustls::Error::InvalidCertificate(CertificateError::InvalidPurpose)),
            Err(_) => Err(rustls::Error::InvalidCertificate(CertificateError::BadEncoding)),
        }
    }

    /// The client's certificate names one of `client_allowed_sans` (DNS, email, IP or URI).
    fn names_allowed(&self, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let Some(allowed) = &self.allowed_sans else {
            return Ok(());
        };
        use x509_parser::extensions::GeneralName;
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let names: Vec<String> = match parsed.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => Some(s.to_string()),
                    GeneralName::IPAddress(b) => ip_of(b).map(|ip| ip.to_string()),
                    _ => None,
                })
                .collect(),
            Ok(None) => Vec::new(),
            Err(_) => return Err(rustls::Error::InvalidCertificate(CertificateError::BadEncoding)),
        };
        if names.iter().any(|n| allowed.contains(n)) {
            Ok(())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }
}

fn ip_of(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.webpki.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.webpki.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self.webpki.verify_client_cert(end_entity, intermediates, now) {
            Ok(verified) => {
                self.names_allowed(end_entity)?;
                Ok(verified)
            }
            Err(e) if intermediates.is_empty() && self.cas.iter().any(|ca| ca.as_ref() == end_entity.as_ref()) => {
                self.trusted_directly(end_entity, now).map_err(|_| e)?;
                self.names_allowed(end_entity)?;
                Ok(ClientCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// The files a TLS configuration reads, to notice when they change.
pub(super) fn files(t: &TlsSettings) -> Vec<&Path> {
    [&t.cert, &t.key]
        .into_iter()
        .chain(t.client_ca.as_ref())
        .filter_map(|p| match p {
            Pem::File(path) => Some(path.as_path()),
            Pem::Inline(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_names_map_to_suites_and_groups() {
        let s = suite_by_go_name("TLS_AES_128_GCM_SHA256").unwrap().unwrap();
        assert_eq!(s.suite(), rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        let s = suite_by_go_name("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256")
            .unwrap()
            .unwrap();
        assert_eq!(
            s.suite(),
            rustls::CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        );
        assert!(
            suite_by_go_name("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA")
                .unwrap()
                .is_none()
        );
        assert!(suite_by_go_name("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA2048").is_err());
        assert!(curve_by_go_name("X25519").unwrap().is_some());
        assert!(curve_by_go_name("CurveP521").unwrap().is_none());
        assert!(curve_by_go_name("CurveP257").is_err());
    }
}
