//! A real S3-protocol server for the attachment tests: moto's server
//! (`pip install "moto[server]"`, which `.ci/run` installs into
//! `target/moto-venv`), started on a free loopback port and killed when
//! the test ends. The program is `IM_MOTO_SERVER`, else `moto_server` on
//! the `PATH`. Without it a test fails under `IM_REQUIRE_SERVICES=1` (CI)
//! and is skipped loudly otherwise.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use im_server::attachments::{S3Attachments, S3Config};

/// A running moto server.
pub struct MotoServer {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl MotoServer {
    /// Starts one, or `None` (skip) when moto is not installed and
    /// `IM_REQUIRE_SERVICES` is not `1`.
    pub async fn start() -> Option<MotoServer> {
        let program = std::env::var("IM_MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let spawned = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let what = format!(
                    "cannot run {program:?} ({e}); pip install \"moto[server]\" or set IM_MOTO_SERVER"
                );
                if std::env::var("IM_REQUIRE_SERVICES").as_deref() == Ok("1") {
                    panic!("IM_REQUIRE_SERVICES=1 but no S3-protocol server: {what}");
                }
                eprintln!("SKIPPED: S3 test needs moto: {what}");
                return None;
            }
        };
        let server = MotoServer { child, endpoint: format!("http://127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "moto did not start listening within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(server)
    }

    /// A configuration for a fresh bucket on this server (created here).
    pub async fn bucket(&self, name: &str) -> S3Config {
        let cfg = S3Config {
            endpoint: self.endpoint.clone(),
            public_endpoint: None,
            bucket: name.into(),
            region: "us-east-1".into(),
            access_key: "test-access-key".into(),
            secret_key: "test-secret-key".into(),
            prefix: "im/".into(),
        };
        S3Attachments::create_bucket(&cfg).await.expect("bucket created");
        cfg
    }

    /// Every key in `bucket` (moto answers unsigned listings).
    pub async fn keys(&self, bucket: &str) -> Vec<String> {
        let xml = reqwest::get(format!("{}/{bucket}?list-type=2", self.endpoint))
            .await
            .expect("list bucket")
            .text()
            .await
            .expect("listing");
        xml.split("<Key>").skip(1).filter_map(|s| s.split("</Key>").next()).map(str::to_owned).collect()
    }
}
