//! The two HTTP calls a client makes: asking the dispatcher for a node and
//! logging in through the business API.

use serde::Deserialize;
use url::Url;

use crate::options::Config;

/// The HTTP client for the dispatcher and login, with the TLS options.
pub(crate) fn client(config: &Config) -> reqwest::Client {
    let builder = reqwest::Client::builder().timeout(config.connect_timeout);
    #[cfg(feature = "tls")]
    let builder = builder.use_preconfigured_tls((*config.tls).clone());
    builder.build().unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot build the HTTP client; using one without options");
        reqwest::Client::new()
    })
}

/// The HTTP client for uploads and downloads: the same TLS options, a
/// connect timeout, and a read timeout (no byte for `request_timeout`)
/// instead of a total one, so a large file on a slow link is not cut off.
pub(crate) fn file_client(config: &Config) -> reqwest::Client {
    let builder = reqwest::Client::builder()
        .connect_timeout(config.connect_timeout)
        .read_timeout(config.request_timeout);
    #[cfg(feature = "tls")]
    let builder = builder.use_preconfigured_tls((*config.tls).clone());
    builder.build().unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot build the file HTTP client; using one without options");
        reqwest::Client::new()
    })
}

/// An error and its causes on one line, with a plain explanation of a
/// refused certificate: reqwest's own message ("error sending request")
/// hides what went wrong.
pub(crate) fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cur = error.source();
    while let Some(e) = cur {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cur = e.source();
    }
    #[cfg(feature = "tls")]
    if let Some(hint) = crate::tls::explain(error) {
        text.push_str(" — ");
        text.push_str(hint);
    }
    text
}

/// Why an HTTP call failed.
#[derive(Debug)]
pub(crate) enum HttpFailure {
    /// The server said no for good (wrong credentials): do not retry.
    Refused(String),
    /// Unreachable, overloaded, draining, or a garbled answer: back off and retry.
    Transient(String),
}

#[derive(Deserialize)]
struct DispatchReply {
    url: String,
}

#[derive(Deserialize)]
struct LoginReply {
    token: String,
}

/// Asks the dispatcher which WebSocket URL to connect to.
pub(crate) async fn dispatch(http: &reqwest::Client, dispatcher: &Url) -> Result<Url, HttpFailure> {
    let resp = http
        .get(dispatcher.clone())
        .send()
        .await
        .map_err(|e| HttpFailure::Transient(format!("dispatcher unreachable: {}", describe(&e))))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(HttpFailure::Transient(format!("dispatcher answered HTTP {}", status.as_u16())));
    }
    let reply: DispatchReply = resp
        .json()
        .await
        .map_err(|e| HttpFailure::Transient(format!("dispatcher answer unreadable: {e}")))?;
    let url = Url::parse(&reply.url)
        .map_err(|e| HttpFailure::Transient(format!("dispatcher gave a bad URL {:?}: {e}", reply.url)))?;
    match url.scheme() {
        "ws" | "wss" => Ok(url),
        other => Err(HttpFailure::Transient(format!("dispatcher gave a {other}:// URL"))),
    }
}

/// Logs in and returns the session token.
pub(crate) async fn login(
    http: &reqwest::Client,
    api_base: &Url,
    username: &str,
    password: &str,
) -> Result<String, HttpFailure> {
    let url = api_base
        .join("api/v1/login")
        .map_err(|e| HttpFailure::Refused(format!("bad API base URL {api_base}: {e}")))?;
    let body = serde_json::json!({ "username": username, "password": password });
    let resp = http
        .post(url)
        .json(&body)
        .send()
        .await
        .map_err(|e| HttpFailure::Transient(format!("login unreachable: {}", describe(&e))))?;
    let status = resp.status().as_u16();
    match status {
        200 => {
            let reply: LoginReply = resp
                .json()
                .await
                .map_err(|e| HttpFailure::Transient(format!("login answer unreadable: {e}")))?;
            Ok(reply.token)
        }
        400 | 401 | 403 | 404 => Err(HttpFailure::Refused(format!("login refused with HTTP {status}"))),
        _ => Err(HttpFailure::Transient(format!("login answered HTTP {status}"))),
    }
}
