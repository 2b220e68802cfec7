//! [`WebhookHooks`]: [`Hooks`] answered by the application's backend over HTTP.

use std::time::Duration;

use async_trait::async_trait;
use im_protocol::{ConversationId, MessageId, PresenceStatus, UserId};
use serde::{Deserialize, Serialize};

use super::{HookCall, Poster, WebhookConfig, WhenDown};
use crate::hooks::{Hooks, Verdict};
use crate::logic::messages::Draft;

/// Tries per notification (join, leave, presence) before it is dropped.
const NOTIFY_TRIES: u32 = 3;

/// [`Hooks`] that call a URL:
///
/// - asked, answered within [`WebhookConfig::timeout`]:
///   `{"type":"connect","user":7,"device":"phone"}` and
///   `{"type":"before_send","from":7,"conv":"g:12","draft":{"body":"…","kind":…,"content":…,"mentions":[…],"reply_to":…,"target":…}}`;
///   the answer is `{"allow": true}` (or an empty 2xx), `{"allow": false,
///   "reason": "…"}`, or for `before_send` `{"allow": true, "draft":
///   {"body": …, "kind": …, "content": …, "mentions": […]}}` to rewrite
///   the message (`reply_to` and `target` cannot change). A backend that
///   is down gets [`WebhookConfig::when_down`].
/// - told, each tried 3 times within the timeout and then dropped (logged):
///   `{"type":"join","user":7,"conv":"r:3"}`, `{"type":"leave",…}`,
///   `{"type":"presence","user":7,"status":"online"}`.
///
/// Stored messages go through [`WebhookFeed`](super::WebhookFeed) instead,
/// which delivers every one.
#[derive(Debug, Clone)]
pub struct WebhookHooks {
    cfg: WebhookConfig,
    poster: Poster,
}

impl WebhookHooks {
    /// Hooks calling as `cfg` says.
    ///
    /// # Panics
    ///
    /// If the HTTP client cannot be initialised (as `reqwest::Client::new`).
    pub fn new(cfg: WebhookConfig) -> Self {
        let poster = Poster::new(cfg.url.clone(), cfg.secret.clone(), cfg.timeout);
        WebhookHooks { cfg, poster }
    }

    /// Asks the backend; its verdict and any rewritten draft.
    async fn ask(&self, call: HookCall, body: &impl Serialize) -> (Verdict, Option<WireDraft>) {
        let answer = match self.poster.post(body).await {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(Answer::allow()),
            Ok(bytes) => {
                serde_json::from_slice::<Answer>(&bytes).map_err(|e| format!("unreadable answer: {e}"))
            }
            Err(e) => Err(e),
        };
        match answer {
            Ok(Answer { allow: true, draft, .. }) => (Verdict::Allow, draft),
            Ok(Answer { allow: false, reason, .. }) => {
                (Verdict::Deny(reason.unwrap_or_else(|| "refused by the application".into())), None)
            }
            Err(e) => {
                tracing::warn!(hook = call.as_str(), error = %e, policy = ?self.cfg.when_down, "webhook is down");
                match self.cfg.when_down {
                    WhenDown::Allow => (Verdict::Allow, None),
                    WhenDown::Refuse => (
                        Verdict::Unavailable("the application cannot be asked now; retry later".into()),
                        None,
                    ),
                }
            }
        }
    }

    /// Tells the backend, trying a few times.
    async fn tell(&self, call: HookCall, body: &impl Serialize) {
        if !self.cfg.calls.contains(&call) {
            return;
        }
        let mut wait = Duration::from_millis(200);
        for attempt in 1..=NOTIFY_TRIES {
            match self.poster.post(body).await {
                Ok(_) => return,
                Err(e) if attempt == NOTIFY_TRIES => {
                    tracing::warn!(hook = call.as_str(), error = %e, "webhook notification dropped");
                }
                Err(_) => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
        }
    }
}

/// The answer of an asking hook.
#[derive(Debug, Deserialize)]
struct Answer {
    allow: bool,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    draft: Option<WireDraft>,
}

impl Answer {
    fn allow() -> Self {
        Answer { allow: true, reason: None, draft: None }
    }
}

/// A draft as the backend sees it.
#[derive(Debug, Serialize, Deserialize)]
struct WireDraft {
    body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content: Option<serde_json::Value>,
    #[serde(default)]
    mentions: Vec<UserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reply_to: Option<MessageId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<MessageId>,
}

#[derive(Serialize)]
struct ConnectCall<'a> {
    r#type: &'static str,
    user: UserId,
    device: &'a str,
}

#[derive(Serialize)]
struct SendCall {
    r#type: &'static str,
    from: UserId,
    conv: ConversationId,
    draft: WireDraft,
}

#[derive(Serialize)]
struct MemberCall {
    r#type: &'static str,
    user: UserId,
    conv: ConversationId,
}

#[derive(Serialize)]
struct PresenceCall {
    r#type: &'static str,
    user: UserId,
    status: PresenceStatus,
}

#[async_trait]
impl Hooks for WebhookHooks {
    async fn on_connect(&self, user: UserId, device: &str) -> Verdict {
        if !self.cfg.calls.contains(&HookCall::Connect) {
            return Verdict::Allow;
        }
        self.ask(HookCall::Connect, &ConnectCall { r#type: "connect", user, device }).await.0
    }

    async fn before_send(&self, from: UserId, conv: ConversationId, draft: &mut Draft) -> Verdict {
        if !self.cfg.calls.contains(&HookCall::BeforeSend) {
            return Verdict::Allow;
        }
        let wire = WireDraft {
            body: draft.body.clone(),
            kind: draft.kind.clone(),
            content: draft.content.clone(),
            mentions: draft.mentions.clone(),
            reply_to: draft.reply_to,
            target: draft.target,
        };
        let call = SendCall { r#type: "before_send", from, conv, draft: wire };
        let (verdict, rewritten) = self.ask(HookCall::BeforeSend, &call).await;
        if let (Verdict::Allow, Some(new)) = (&verdict, rewritten) {
            (draft.body, draft.kind, draft.content, draft.mentions) =
                (new.body, new.kind, new.content, new.mentions);
        }
        verdict
    }

    async fn on_join(&self, user: UserId, conv: ConversationId) {
        self.tell(HookCall::Join, &MemberCall { r#type: "join", user, conv }).await;
    }

    async fn on_leave(&self, user: UserId, conv: ConversationId) {
        self.tell(HookCall::Leave, &MemberCall { r#type: "leave", user, conv }).await;
    }

    async fn on_presence(&self, user: UserId, status: PresenceStatus) {
        self.tell(HookCall::Presence, &PresenceCall { r#type: "presence", user, status }).await;
    }
}
