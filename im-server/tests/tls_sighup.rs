//! The binary terminates TLS (`--tls-cert`/`--tls-key`) and reads both
//! files again on SIGHUP: new handshakes get the new certificate, a
//! connection opened before keeps working, and a broken renewal keeps the
//! pair in use. A real `im-server` process on loopback; every wait bounded.
#![cfg(all(unix, feature = "tls"))]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

const WAIT: Duration = Duration::from_secs(20);

struct Ca(CertifiedIssuer<'static, KeyPair>);

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Ca(CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap())
    }

    /// Writes a fresh server certificate and key; returns the certificate.
    fn issue_into(&self, cert: &Path, key: &Path) -> CertificateDer<'static> {
        let params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        let pair = KeyPair::generate().unwrap();
        let issued = params.signed_by(&pair, &self.0).unwrap();
        std::fs::write(cert, issued.pem()).unwrap();
        std::fs::write(key, pair.serialize_pem()).unwrap();
        issued.der().clone()
    }
}

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn connector(cas: &[&Ca]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots.add(ca.0.der().clone()).unwrap();
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn open(addr: SocketAddr, tls: &TlsConnector) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::IpAddress(addr.ip().into());
    tls.connect(name, tcp).await
}

fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().expect("server certificate")[0].clone().into_owned()
}

/// One `GET /healthz` on a kept-alive connection; returns the status line.
async fn healthz(stream: &mut TlsStream<TcpStream>) -> String {
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + WAIT;
    loop {
        let n = tokio::time::timeout(deadline - Instant::now(), stream.read(&mut buf))
            .await
            .expect("answer in time")
            .expect("read");
        assert!(n > 0, "connection closed; got {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return text.lines().next().unwrap_or_default().to_string();
            }
        }
    }
}

/// Polls new handshakes until the server presents `want`.
async fn wait_for_certificate(addr: SocketAddr, tls: &TlsConnector, want: &CertificateDer<'static>) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(s) = open(addr, tls).await {
            if presented(&s) == *want {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the server never presented the expected certificate");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sighup_reloads_the_certificate_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (old_ca, new_ca) = (Ca::new("old CA"), Ca::new("new CA"));
    let first = old_ca.issue_into(&cert, &key);
    let addr = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_im-server"))
        .args(["--memory", "--listen", &addr.to_string()])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("im-server starts");
    let server = Server(child);
    let both = connector(&[&old_ca, &new_ca]);
    wait_for_certificate(addr, &both, &first).await;

    let mut before = open(addr, &both).await.unwrap();
    assert_eq!(healthz(&mut before).await, "HTTP/1.1 200 OK");

    // Renew, then SIGHUP: new handshakes get the new pair.
    let second = new_ca.issue_into(&cert, &key);
    let hup = |s: &Server| {
        let ok = Command::new("kill").args(["-HUP", &s.0.id().to_string()]).status().unwrap().success();
        assert!(ok, "kill -HUP");
    };
    hup(&server);
    wait_for_certificate(addr, &both, &second).await;
    assert!(open(addr, &connector(&[&old_ca])).await.is_err(), "the old CA no longer verifies the server");

    // The connection opened before the reload is still served.
    assert_eq!(healthz(&mut before).await, "HTTP/1.1 200 OK");

    // A broken renewal is refused; the server keeps the pair in use.
    std::fs::write(&key, "not a key").unwrap();
    hup(&server);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut after = open(addr, &both).await.expect("still serving TLS");
    assert_eq!(presented(&after), second);
    assert_eq!(healthz(&mut after).await, "HTTP/1.1 200 OK");
    assert_eq!(healthz(&mut before).await, "HTTP/1.1 200 OK");
}
