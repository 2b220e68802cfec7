//! [`WebhookPush`]: notifications (and, if asked, read marks) posted as
//! JSON to a URL.

use std::time::Duration;

use async_trait::async_trait;
use im_protocol::{ConversationId, Message, MessageId, UserId};

use super::{PushError, PushNotifier, PushRecipient};

/// Posts each notification as JSON to a URL:
/// `{"users":[7,9],"recipients":[{"user":7,"unread":2},{"user":9,"unread":1}],"message":{"conv":"g:1","id":5,"from":3,"cmid":"…","body":"…","ts":…}}`
/// (`users` lists the same users as `recipients`, for receivers written
/// before unread counts existed). Any 2xx answer is success. With
/// [`read_notices`](Self::read_notices), read marks are posted too, as
/// `{"read":{"user":7,"conv":"g:1","id":5}}`.
#[derive(Debug, Clone)]
pub struct WebhookPush {
    url: String,
    client: reqwest::Client,
    read_notices: bool,
}

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
        WebhookPush { url, client, read_notices: false }
    }

    /// Also posts every read mark (`{"read": {...}}`), so the receiver can
    /// withdraw notifications the user has read elsewhere. Off by default:
    /// a receiver written for notifications only would refuse them.
    pub fn read_notices(mut self, on: bool) -> Self {
        self.read_notices = on;
        self
    }

    async fn post(&self, body: &impl serde::Serialize) -> Result<(), PushError> {
        let response = self
            .client
            .post(&self.url)
            .json(body)
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

#[derive(serde::Serialize)]
struct NotifyBody<'a> {
    users: Vec<UserId>,
    recipients: &'a [PushRecipient],
    message: &'a Message,
}

#[derive(serde::Serialize)]
struct ReadBody {
    read: ReadNotice,
}

#[derive(serde::Serialize)]
struct ReadNotice {
    user: UserId,
    conv: ConversationId,
    id: MessageId,
}

#[async_trait]
impl PushNotifier for WebhookPush {
    async fn notify(&self, users: &[UserId], message: &Message) -> Result<(), PushError> {
        let recipients: Vec<PushRecipient> = users.iter().map(|&u| PushRecipient::new(u, 1)).collect();
        self.notify_recipients(&recipients, message).await
    }

    async fn notify_recipients(
        &self,
        recipients: &[PushRecipient],
        message: &Message,
    ) -> Result<(), PushError> {
        let users = recipients.iter().map(|r| r.user).collect();
        self.post(&NotifyBody { users, recipients, message }).await
    }

    fn wants_read_notices(&self) -> bool {
        self.read_notices
    }

    async fn read(&self, user: UserId, conv: ConversationId, id: MessageId) -> Result<(), PushError> {
        if !self.read_notices {
            return Ok(());
        }
        self.post(&ReadBody { read: ReadNotice { user, conv, id } }).await
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use axum::routing::post;
    use axum::{Json, Router};
    use tokio::sync::mpsc;

    use super::*;
    use crate::push::tests::message;

    #[tokio::test]
    async fn webhook_posts_json_and_reports_status() {
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
        let recipients = [PushRecipient::new(UserId(7), 2), PushRecipient::new(UserId(9), 1)];
        ok.notify_recipients(&recipients, &message()).await.unwrap();
        let body = rx.recv().await.unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "users": [7, 9],
                "recipients": [{"user": 7, "unread": 2}, {"user": 9, "unread": 1}],
                "message": {
                    "conv": "g:1", "id": 5, "from": 3, "cmid": "c-1",
                    "body": "hello", "ts": 1_700_000_000_000u64
                }
            })
        );
        // Read marks are posted only when asked for.
        ok.read(UserId(7), message().conv, 5).await.unwrap();
        let with_reads = ok.clone().read_notices(true);
        with_reads.read(UserId(7), message().conv, 5).await.unwrap();
        let body = rx.recv().await.unwrap();
        assert_eq!(body, serde_json::json!({"read": {"user": 7, "conv": "g:1", "id": 5}}));
        assert!(rx.try_recv().is_err(), "the first read mark was not posted");

        let fail = WebhookPush::new(format!("http://{addr}/fail"), Duration::from_secs(5));
        let err = fail.notify(&[UserId(7)], &message()).await.unwrap_err();
        assert!(matches!(err, PushError::Status(500)), "{err:?}");
    }
}
