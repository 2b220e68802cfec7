//! TLS for `wss://` and `https://` (the default-on `tls` feature), with
//! rustls: which certificate authorities to trust, and an optional client
//! certificate.
//!
//! By default the client trusts the Mozilla root store (webpki-roots), so a
//! server with a publicly issued certificate needs no configuration. For a
//! private CA (or a test certificate) add it:
//!
//! ```no_run
//! use im_client::{tls::TlsOptions, Client};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let ca = std::fs::read("ca.pem")?;
//! let (client, events) = Client::builder()
//!     .url("wss://chat.internal:8443/ws")
//!     .login("alice", "correct horse")
//!     .tls(TlsOptions::new().add_ca_pem(ca).only_added_cas())
//!     .connect()?;
//! # Ok(())
//! # }
//! ```
//!
//! The same configuration serves the WebSocket, the dispatcher and login.

use std::path::PathBuf;
use std::sync::Arc;

pub use rustls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

/// Which certificate authorities to trust, and whether to present a client
/// certificate. Built into a rustls configuration when the client starts;
/// an unusable PEM makes [`ClientBuilder::connect`](crate::ClientBuilder::connect)
/// fail with [`ConfigError::Tls`](crate::ConfigError::Tls).
#[derive(Clone, Default)]
pub struct TlsOptions {
    extra_cas: Vec<Pem>,
    only_added: bool,
    native_roots: bool,
    identity: Option<(Pem, Pem)>,
    config: Option<Arc<rustls::ClientConfig>>,
}

/// PEM bytes, or a file to read them from at start.
#[derive(Clone)]
enum Pem {
    Bytes(Vec<u8>),
    File(PathBuf),
}

impl Pem {
    fn load(&self) -> Result<(Vec<u8>, String), String> {
        match self {
            Pem::Bytes(b) => Ok((b.clone(), "PEM bytes".into())),
            Pem::File(p) => std::fs::read(p)
                .map(|b| (b, p.display().to_string()))
                .map_err(|e| format!("cannot read {}: {e}", p.display())),
        }
    }
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("extra_cas", &self.extra_cas.len())
            .field("only_added", &self.only_added)
            .field("native_roots", &self.native_roots)
            .field("client_certificate", &self.identity.is_some())
            .field("custom_config", &self.config.is_some())
            .finish()
    }
}

impl TlsOptions {
    /// Trust the Mozilla root store (webpki-roots) and nothing else; no
    /// client certificate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also trust the CA certificates in this PEM (one or more
    /// `CERTIFICATE` blocks).
    pub fn add_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.extra_cas.push(Pem::Bytes(pem.into()));
        self
    }

    /// Also trust the CA certificates in this PEM file (read at start).
    pub fn add_ca_pem_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.extra_cas.push(Pem::File(path.into()));
        self
    }

    /// Trust only the CAs added with [`add_ca_pem`](Self::add_ca_pem) and
    /// [`add_ca_pem_file`](Self::add_ca_pem_file), not the public roots
    /// (pinning to a private CA).
    pub fn only_added_cas(mut self) -> Self {
        self.only_added = true;
        self
    }

    /// Trust the operating system's certificate store instead of the
    /// Mozilla roots (read at start; needs the `tls-native-roots` feature).
    #[cfg(feature = "tls-native-roots")]
    pub fn native_roots(mut self) -> Self {
        self.native_roots = true;
        self
    }

    /// Present this client certificate chain (PEM, leaf first) and key
    /// (PEM: PKCS#8, RSA or EC) to servers that ask for one (mutual TLS).
    pub fn client_certificate_pem(mut self, chain: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.identity = Some((Pem::Bytes(chain.into()), Pem::Bytes(key.into())));
        self
    }

    /// [`client_certificate_pem`](Self::client_certificate_pem) from files
    /// (read at start).
    pub fn client_certificate_pem_files(
        mut self,
        chain: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        self.identity = Some((Pem::File(chain.into()), Pem::File(key.into())));
        self
    }

    /// Use this rustls configuration as it is, ignoring every other option
    /// (its ALPN protocols are replaced by none: the client speaks HTTP/1.1).
    pub fn rustls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.config = Some(config);
        self
    }

    /// Builds the rustls client configuration.
    pub(crate) fn build(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        if let Some(config) = &self.config {
            let mut config = (**config).clone();
            config.alpn_protocols.clear();
            return Ok(Arc::new(config));
        }
        let mut roots = RootCertStore::empty();
        if !self.only_added {
            if self.native_roots {
                add_native_roots(&mut roots)?;
            } else {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
        }
        for pem in &self.extra_cas {
            let (bytes, name) = pem.load()?;
            let certs = certificates(&bytes, &name)?;
            for cert in certs {
                roots.add(cert).map_err(|e| format!("CA certificate in {name} not usable: {e}"))?;
            }
        }
        if roots.is_empty() {
            return Err("no certificate authority to trust (only_added_cas without add_ca_pem)".into());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => {
                let (chain_bytes, chain_name) = chain.load()?;
                let (key_bytes, key_name) = key.load()?;
                let chain = certificates(&chain_bytes, &chain_name)?;
                let key = PrivateKeyDer::from_pem_slice(&key_bytes)
                    .map_err(|_| format!("no private key in {key_name}"))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("client certificate not usable: {e}"))?
            }
        };
        Ok(Arc::new(config))
    }
}

fn certificates(pem: &[u8], name: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad PEM in {name}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("no CERTIFICATE block in {name}"));
    }
    Ok(certs)
}

#[cfg(feature = "tls-native-roots")]
fn add_native_roots(roots: &mut RootCertStore) -> Result<(), String> {
    let found = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let errors: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
        return Err(format!("no usable certificate in the system store ({})", errors.join("; ")));
    }
    Ok(())
}

#[cfg(not(feature = "tls-native-roots"))]
fn add_native_roots(_: &mut RootCertStore) -> Result<(), String> {
    Err("native roots need the tls-native-roots feature".into())
}

/// Explains a failed TLS connection in words a user can act on, from the
/// error and its sources (reqwest and tungstenite wrap the rustls error).
pub(crate) fn explain(error: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut cur = Some(error);
    while let Some(mut e) = cur {
        // `io::Error::source` skips the error it wraps (and hyper wraps
        // one io::Error in another); look inside.
        while let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            e = inner;
        }
        if let Some(rustls::Error::InvalidCertificate(why)) = e.downcast_ref::<rustls::Error>() {
            return Some(match why {
                rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature => {
                    "the server's certificate is not signed by a trusted CA (add it with TlsOptions::add_ca_pem)"
                }
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. } => {
                    "the server's certificate does not name the host in the URL"
                }
                rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. } => {
                    "the server's certificate has expired"
                }
                _ => "the server's certificate was refused",
            });
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_trusts_the_public_roots_and_bad_pem_is_a_config_error() {
        assert!(TlsOptions::new().build().is_ok());
        let err = TlsOptions::new().add_ca_pem(b"not a pem".to_vec()).build().unwrap_err();
        assert!(err.contains("no CERTIFICATE block"), "{err}");
        let err = TlsOptions::new().only_added_cas().build().unwrap_err();
        assert!(err.contains("no certificate authority"), "{err}");
        let err = TlsOptions::new().add_ca_pem_file("/nonexistent/ca.pem").build().unwrap_err();
        assert!(err.contains("cannot read /nonexistent/ca.pem"), "{err}");
    }
}
