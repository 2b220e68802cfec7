//! A webhook receiver on loopback: checks every call's signature, records
//! the calls, answers as the test says, and can be switched down (503) or
//! made to hang, to stand in for an application's backend.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use im_server::webhooks::signature;
use serde_json::Value;

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Records the call and answers 200 with the test's answer.
    Up,
    /// Answers 503 (the call is not recorded).
    Down,
    /// Answers nothing for 30 s, then 503.
    Hang,
}

type Answer = Box<dyn Fn(&Value) -> Value + Send + Sync>;

struct Inner {
    secret: Vec<u8>,
    calls: Mutex<Vec<Value>>,
    refused: AtomicUsize,
    bad_signatures: AtomicUsize,
    mode: Mutex<Mode>,
    answer: Answer,
}

/// The receiver; stops when dropped.
pub struct WebhookReceiver {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    /// Starts on 127.0.0.1, checking signatures with `secret` and
    /// answering recorded calls with `answer(call)`.
    pub async fn start(secret: &[u8], answer: impl Fn(&Value) -> Value + Send + Sync + 'static) -> Self {
        let inner = Arc::new(Inner {
            secret: secret.to_vec(),
            calls: Mutex::default(),
            refused: AtomicUsize::new(0),
            bad_signatures: AtomicUsize::new(0),
            mode: Mutex::new(Mode::Up),
            answer: Box::new(answer),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new().route("/hook", post(receive)).with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        WebhookReceiver { addr, inner, task }
    }

    /// The URL to configure.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Switches how it answers.
    pub fn set_mode(&self, mode: Mode) {
        *self.inner.mode.lock().unwrap() = mode;
    }

    /// Every call recorded while up, in arrival order.
    pub fn calls(&self) -> Vec<Value> {
        self.inner.calls.lock().unwrap().clone()
    }

    /// The recorded calls of `type`.
    pub fn calls_of(&self, kind: &str) -> Vec<Value> {
        self.calls().into_iter().filter(|c| c["type"] == kind).collect()
    }

    /// Calls answered 503 while down or hanging.
    pub fn refused(&self) -> usize {
        self.inner.refused.load(Ordering::SeqCst)
    }

    /// Calls whose signature did not verify (answered 401).
    pub fn bad_signatures(&self) -> usize {
        self.inner.bad_signatures.load(Ordering::SeqCst)
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let header = headers.get(signature::HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
    if signature::verify(&inner.secret, header, &body, now, signature::DEFAULT_WINDOW_SECS).is_err() {
        inner.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::UNAUTHORIZED, String::new());
    }
    let mode = *inner.mode.lock().unwrap();
    match mode {
        Mode::Up => {}
        Mode::Down => {
            inner.refused.fetch_add(1, Ordering::SeqCst);
            return (StatusCode::SERVICE_UNAVAILABLE, String::new());
        }
        Mode::Hang => {
            inner.refused.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(30)).await;
            return (StatusCode::SERVICE_UNAVAILABLE, String::new());
        }
    }
    let Ok(call) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, String::new());
    };
    let answer = (inner.answer)(&call);
    inner.calls.lock().unwrap().push(call);
    (StatusCode::OK, answer.to_string())
}
