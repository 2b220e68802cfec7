//! TLS termination for single-node deployments (the `tls` feature): a
//! certificate and key in PEM files, reloadable without dropping
//! connections, and a listener that runs every handshake in its own task.
//!
//! Clusters usually terminate TLS in a proxy instead (`docs/deploy.md`).
//!
//! ```no_run
//! use im_server::{tls::TlsConfig, Server};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tls = TlsConfig::from_pem_files("cert.pem", "key.pem")?;
//! let server = Server::builder().memory().tls(tls.clone()).bind("127.0.0.1:8443").await?;
//! assert!(server.ws_url().starts_with("wss://"));
//! // Later, after the files were renewed (the binary does this on SIGHUP):
//! tls.reload()?;
//! # Ok(())
//! # }
//! ```

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::serve::Listener as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::accept::{Counted, TcpAcceptor};

/// Longest time a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most TLS handshakes in progress at once; a connection arriving while
/// that many are in progress is closed at once (shed), so clients that
/// never finish a handshake cannot stop the listener from accepting.
pub const MAX_CONCURRENT_HANDSHAKES: usize = 512;
/// Handshaken connections waiting for the HTTP server to take them.
const READY_QUEUE: usize = 64;

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The certificate PEM holds no usable `CERTIFICATE` block.
    #[error("no certificate in {0} (expected PEM `-----BEGIN CERTIFICATE-----` blocks)")]
    NoCertificate(String),
    /// The key PEM holds no usable private key.
    #[error("no private key in {0} (expected a PEM PKCS#8, RSA or EC private key)")]
    NoKey(String),
    /// rustls refused the pair, e.g. the key does not match the certificate.
    #[error("certificate and key not usable: {0}")]
    Refused(String),
    /// [`TlsConfig::reload`] on a configuration that was not read from files.
    #[error("this TLS configuration was not read from files; use replace_pem")]
    NotFromFiles,
}

/// The server's certificate and key, shared by every handshake and
/// replaceable while serving: handshakes after a reload use the new pair,
/// connections already open keep theirs. Cheap to clone (one shared
/// configuration).
#[derive(Clone)]
pub struct TlsConfig {
    current: Arc<RwLock<Arc<rustls::ServerConfig>>>,
    files: Option<Arc<(PathBuf, PathBuf)>>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig").field("files", &self.files).finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Reads a certificate chain (leaf first) and its private key from PEM
    /// files. [`reload`](Self::reload) reads the same files again.
    pub fn from_pem_files(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self, TlsError> {
        let (cert, key) = (cert.as_ref().to_path_buf(), key.as_ref().to_path_buf());
        let config = read_pair(&cert, &key)?;
        Ok(Self { current: Arc::new(RwLock::new(config)), files: Some(Arc::new((cert, key))) })
    }

    /// A certificate chain and key given as PEM bytes.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let config = build(cert_pem, key_pem, "the certificate PEM", "the key PEM")?;
        Ok(Self { current: Arc::new(RwLock::new(config)), files: None })
    }

    /// Reads the files again and uses them for every later handshake. On
    /// an error the pair in use stays, so a bad renewal never takes the
    /// server down.
    pub fn reload(&self) -> Result<(), TlsError> {
        let files = self.files.as_ref().ok_or(TlsError::NotFromFiles)?;
        let config = read_pair(&files.0, &files.1)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
        Ok(())
    }

    /// Replaces the pair with PEM bytes, as [`reload`](Self::reload) does.
    pub fn replace_pem(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), TlsError> {
        let config = build(cert_pem, key_pem, "the certificate PEM", "the key PEM")?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
        Ok(())
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

fn read_pair(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let read = |p: &Path| std::fs::read(p).map_err(|source| TlsError::Read { path: p.into(), source });
    let (cert_pem, key_pem) = (read(cert)?, read(key)?);
    build(&cert_pem, &key_pem, &cert.display().to_string(), &key.display().to_string())
}

fn build(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_name: &str,
    key_name: &str,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::NoCertificate(cert_name.into()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert_name.into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| TlsError::NoKey(key_name.into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Refused(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Refused(e.to_string()))?;
    // The HTTP server speaks HTTP/1.1 only (WebSocket upgrades need it).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts TCP connections and hands out the ones whose TLS handshake
/// finished. Handshakes run in their own tasks, bounded in number and
/// time, so a slow or silent client never holds up the others.
pub(crate) struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<Counted<TcpStream>>, SocketAddr)>,
    local: SocketAddr,
    acceptor_task: JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `tcp` with `config`.
    pub(crate) fn new(tcp: TcpAcceptor, config: TlsConfig) -> Self {
        let local = tcp.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let acceptor_task = tokio::spawn(accept_loop(tcp, config, tx));
        Self { ready, local, acceptor_task }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // Stops accepting and closes the listening socket.
        self.acceptor_task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<Counted<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    mut tcp: TcpAcceptor,
    config: TlsConfig,
    ready: mpsc::Sender<(TlsStream<Counted<TcpStream>>, SocketAddr)>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_HANDSHAKES));
    loop {
        // Within the per-address cap, with TCP_NODELAY set.
        let (stream, peer) = tcp.accept().await;
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Full of handshakes in progress: shed this one, keep accepting.
            tracing::debug!(%peer, "TLS handshakes at their limit: connection closed");
            drop(stream);
            continue;
        };
        let (acceptor, ready) = (config.acceptor(), ready.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_pem_is_refused_with_a_specific_error() {
        assert!(matches!(TlsConfig::from_pem(b"", b""), Err(TlsError::NoCertificate(_))));
        let junk = b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
        assert!(matches!(TlsConfig::from_pem(junk, b""), Err(TlsError::NoCertificate(_))));
        let missing = TlsConfig::from_pem_files("/nonexistent/cert.pem", "/nonexistent/key.pem");
        assert!(matches!(missing, Err(TlsError::Read { .. })));
    }
}
