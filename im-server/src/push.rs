//! Push notifications for recipients with no live connection.
//!
//! After a message is stored and fanned out, the recipients that have no
//! connection on any node are handed to a [`PushNotifier`] (mobile push,
//! e-mail, …) through a [`PushDispatcher`], which runs notifiers off the hot
//! path with bounded concurrency and drops work it cannot take rather than
//! queueing without bound. Push is a hint: the message is already stored and
//! reaches every device by sync.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use im_core::{Message, UserId};
use tokio::sync::Semaphore;

use crate::metrics::Metrics;

/// Why a push notification failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The notification could not be delivered (connect, timeout, I/O).
    #[error("push transport: {0}")]
    Transport(String),
    /// The push endpoint answered with a non-success HTTP status.
    #[error("push endpoint answered HTTP {0}")]
    Status(u16),
}

/// Tells users about a message they could not receive live.
#[async_trait]
pub trait PushNotifier: Send + Sync + 'static {
    /// Notifies `users` about `message`.
    ///
    /// Called for recipients that have no live connection anywhere. Must not
    /// block for long: callers run it off the hot path with bounded
    /// concurrency (see [`PushDispatcher`]), and a slow notifier makes later
    /// notifications be dropped. The body is private; send it on only to a
    /// trusted endpoint.
    async fn notify(&self, users: &[UserId], message: &Message) -> Result<(), PushError>;
}

/// The default notifier: logs each notification at `info` (user ids,
/// conversation and message id; never the body).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogPush;

#[async_trait]
impl PushNotifier for LogPush {
    async fn notify(&self, users: &[UserId], message: &Message) -> Result<(), PushError> {
        tracing::info!(?users, conv = %message.conv, id = message.id, from = %message.from, "push notification");
        Ok(())
    }
}

/// Posts each notification as JSON to a URL:
/// `{"users":[7,9],"message":{"conv":"g:1","id":5,"from":3,"cmid":"…","body":"…","ts":…}}`.
/// Any 2xx answer is success.
#[cfg(feature = "webhook")]
#[derive(Debug, Clone)]
pub struct WebhookPush {
    url: String,
    client: reqwest::Client,
}

#[cfg(feature = "webhook")]
impl WebhookPush {
    /// A notifier posting to `url`, giving up on each request after `timeout`.
    ///
    /// # Panics
    ///
    /// If the HTTP client cannot be initialised (as `reqwest::Client::new`).
    pub fn new(url: String, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_else(|e| panic!("cannot initialise the webhook HTTP client: {e}"));
        WebhookPush { url, client }
    }
}

#[cfg(feature = "webhook")]
#[derive(serde::Serialize)]
struct WebhookBody<'a> {
    users: &'a [UserId],
    message: &'a Message,
}

#[cfg(feature = "webhook")]
#[async_trait]
impl PushNotifier for WebhookPush {
    async fn notify(&self, users: &[UserId], message: &Message) -> Result<(), PushError> {
        let response = self
            .client
            .post(&self.url)
            .json(&WebhookBody { users, message })
            .send()
            .await
            // The URL may carry a secret; keep it out of errors and logs.
            .map_err(|e| PushError::Transport(e.without_url().to_string()))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(PushError::Status(status.as_u16()))
        }
    }
}

/// Runs a [`PushNotifier`] in background tasks, at most `max_in_flight` at a
/// time, recording each outcome in [`Metrics::push`].
///
/// Dispatching never waits: when all permits are taken the notification is
/// dropped (and counted as `"dropped"`), so memory stays bounded when the
/// push endpoint is slow or down.
#[derive(Clone)]
pub struct PushDispatcher {
    notifier: Arc<dyn PushNotifier>,
    permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl fmt::Debug for PushDispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushDispatcher")
            .field("available_permits", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl PushDispatcher {
    /// A dispatcher running at most `max_in_flight` notifications at once
    /// (at least one).
    pub fn new(notifier: Arc<dyn PushNotifier>, max_in_flight: usize, metrics: Arc<Metrics>) -> Self {
        PushDispatcher { notifier, permits: Arc::new(Semaphore::new(max_in_flight.max(1))), metrics }
    }

    /// Notifies `users` about `message` in a background task, or drops the
    /// notification if `max_in_flight` are already running. Never blocks;
    /// must be called within a Tokio runtime. Does nothing for no users.
    pub fn dispatch(&self, users: Vec<UserId>, message: Message) {
        self.dispatch_filtered(users, message, None)
    }

    /// Like [`dispatch`](Self::dispatch), for those of `recipients` that
    /// have no live connection according to `presence`. The presence lookup
    /// runs inside the same bounded slot, so a slow presence store cannot
    /// pile up work either.
    pub fn dispatch_to_offline(
        &self,
        recipients: Vec<UserId>,
        message: Message,
        presence: Arc<dyn crate::presence::PresenceStore>,
    ) {
        self.dispatch_filtered(recipients, message, Some(presence))
    }

    fn dispatch_filtered(
        &self,
        users: Vec<UserId>,
        message: Message,
        presence: Option<Arc<dyn crate::presence::PresenceStore>>,
    ) {
        if users.is_empty() {
            return;
        }
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            self.metrics.push("dropped");
            tracing::warn!(
                users = users.len(),
                conv = %message.conv,
                id = message.id,
                "push notifier saturated; notification dropped"
            );
            return;
        };
        let notifier = Arc::clone(&self.notifier);
        let metrics = Arc::clone(&self.metrics);
        tokio::spawn(async move {
            let users = match presence {
                None => users,
                Some(presence) => match presence.query(&users).await {
                    Ok(records) => {
                        records.iter().filter(|r| r.connections == 0).map(|r| r.presence.user).collect()
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "push: presence lookup failed");
                        return;
                    }
                },
            };
            if users.is_empty() {
                return;
            }
            // A notifier that hangs must not hold its permit forever.
            let result = tokio::time::timeout(NOTIFY_TIMEOUT, notifier.notify(&users, &message)).await;
            drop(permit);
            match result {
                Ok(Ok(())) => metrics.push("sent"),
                Err(_) => {
                    metrics.push("failed");
                    tracing::warn!(conv = %message.conv, id = message.id, "push notification timed out");
                }
                Ok(Err(e)) => {
                    metrics.push("failed");
                    tracing::warn!(error = %e, conv = %message.conv, id = message.id, "push notification failed");
                }
            }
        });
    }
}

/// Longest a single [`PushNotifier::notify`] call may take before it counts as failed.
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use im_core::{ClientMsgId, ConversationId, GroupId};
    use tokio::sync::Notify;

    use super::*;

    fn message() -> Message {
        Message {
            conv: ConversationId::Group(GroupId(1)),
            id: 5,
            from: UserId(3),
            cmid: ClientMsgId::new("c-1").unwrap(),
            body: "hello".into(),
            ts: 1_700_000_000_000,
        }
    }

    #[tokio::test]
    async fn log_push_is_ok() {
        LogPush.notify(&[UserId(7)], &message()).await.unwrap();
    }

    #[cfg(feature = "webhook")]
    #[tokio::test]
    async fn webhook_posts_json_and_reports_status() {
        use axum::http::StatusCode;
        use axum::routing::post;
        use axum::{Json, Router};
        use tokio::sync::mpsc;

        let (tx, mut rx) = mpsc::unbounded_channel::<serde_json::Value>();
        let app = Router::new()
            .route(
                "/ok",
                post(move |Json(body): Json<serde_json::Value>| async move {
                    let _ = tx.send(body);
                    StatusCode::NO_CONTENT
                }),
            )
            .route("/fail", post(|| async { StatusCode::INTERNAL_SERVER_ERROR }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let ok = WebhookPush::new(format!("http://{addr}/ok"), Duration::from_secs(5));
        ok.notify(&[UserId(7), UserId(9)], &message()).await.unwrap();
        let body = rx.recv().await.unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "users": [7, 9],
                "message": {
                    "conv": "g:1", "id": 5, "from": 3, "cmid": "c-1",
                    "body": "hello", "ts": 1_700_000_000_000u64
                }
            })
        );

        let fail = WebhookPush::new(format!("http://{addr}/fail"), Duration::from_secs(5));
        let err = fail.notify(&[UserId(7)], &message()).await.unwrap_err();
        assert!(matches!(err, PushError::Status(500)), "{err:?}");
    }

    /// Blocks every call until released.
    struct Blocking {
        release: Notify,
    }

    #[async_trait]
    impl PushNotifier for Blocking {
        async fn notify(&self, _: &[UserId], _: &Message) -> Result<(), PushError> {
            self.release.notified().await;
            Ok(())
        }
    }

    async fn wait_for(metrics: &Metrics, line: &str) {
        for _ in 0..200 {
            if metrics.render().contains(line) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("never saw {line:?} in:\n{}", metrics.render());
    }

    #[tokio::test]
    async fn saturated_dispatcher_drops_and_counts() {
        let metrics = Arc::new(Metrics::new());
        let notifier = Arc::new(Blocking { release: Notify::new() });
        let dispatcher = PushDispatcher::new(notifier.clone(), 1, metrics.clone());

        dispatcher.dispatch(vec![UserId(7)], message());
        dispatcher.dispatch(vec![UserId(8)], message());
        assert!(metrics.render().contains("im_push_notifications_total{result=\"dropped\"} 1\n"));

        // `notify_one` stores a permit if the task has not reached `notified` yet.
        notifier.release.notify_one();
        wait_for(&metrics, "im_push_notifications_total{result=\"sent\"} 1\n").await;

        // The permit is back: the next dispatch runs.
        dispatcher.dispatch(vec![UserId(9)], message());
        notifier.release.notify_one();
        wait_for(&metrics, "im_push_notifications_total{result=\"sent\"} 2\n").await;
        assert!(metrics.render().contains("im_push_notifications_total{result=\"dropped\"} 1\n"));
    }
}
