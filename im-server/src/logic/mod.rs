//! Logic: what each request does, independent of how it arrived.
//!
//! The WebSocket gateway and the HTTP API both call [`Logic`]; it checks
//! rights, talks to the storage seams, and publishes what other connections
//! must learn through the broker. Split by concept:
//! [`messages`] (send, sync, history), [`groups`], [`rooms`], [`accounts`],
//! [`presence`], [`typing`], [`reads`] (read state and the inbox) and
//! [`receipts`].

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};

use im_protocol::{ConversationId, ErrorCode, UserId};

use crate::auth::{Authenticator, PasswordHasher, SessionTokens};
use crate::broker::{Broker, Event};
use crate::config::ServerConfig;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::presence::PresenceTracker;
use crate::push::PushDispatcher;
use crate::store::{Directory, MessageStore};

pub mod accounts;
pub mod attachments;
pub mod contacts;
pub mod erasure;
mod events;
pub mod groups;
pub mod messages;
pub mod moderation;
pub mod presence;
pub mod reads;
pub mod receipts;
pub mod rooms;
mod send_limit;
pub mod server_api;
pub mod throttle;
pub mod typing;

mod sequencer;

use sequencer::Sequencer;

/// Longest a broker publish may take before it is given up (recipients sync).
const PUBLISH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Most direct pairs remembered as "already recorded" before the cache is reset.
const KNOWN_DIRECTS_CAP: usize = 100_000;

/// The services the logic runs on.
pub struct Services {
    /// Message storage.
    pub messages: Arc<dyn MessageStore>,
    /// Users, groups, rooms.
    pub directory: Arc<dyn Directory>,
    /// Tokens and sessions.
    pub auth: SessionTokens,
    /// Every way a token is checked, asked in order (an embedder's own,
    /// JWT, then `auth`'s session tokens).
    pub authenticators: Vec<Arc<dyn Authenticator>>,
    /// Password hashing.
    pub hasher: PasswordHasher,
    /// Presence policy and store.
    pub presence: Arc<PresenceTracker>,
    /// Fan-out between nodes.
    pub broker: Arc<dyn Broker>,
    /// Push notifications for recipients with no live connection.
    pub push: PushDispatcher,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Uploaded files.
    pub attachments: Arc<dyn crate::attachments::AttachmentStore>,
    /// The application's hooks, if it set any (`None`: nothing is asked,
    /// nothing queued).
    pub hooks: Option<Hooks>,
    /// Where stored messages are hinted to the message feed, if it runs.
    pub feed: Option<crate::feed::FeedHints>,
}

/// Configured [`crate::hooks::Hooks`] and the task that tells them what happened.
#[derive(Clone)]
pub struct Hooks {
    pub(crate) hooks: Arc<dyn crate::hooks::Hooks>,
    pub(crate) notifier: crate::hooks::Notifier,
}

impl Hooks {
    /// Starts telling `hooks` (on a task of its own).
    pub fn new(hooks: Arc<dyn crate::hooks::Hooks>) -> Self {
        Hooks { notifier: crate::hooks::Notifier::start(hooks.clone()), hooks }
    }
}

impl Logic {
    /// Tells the hooks, if any, after the fact (never waits).
    pub(crate) fn tell_hooks(&self, notice: impl FnOnce() -> crate::hooks::Notice) {
        if let Some(h) = &self.svc.hooks {
            h.notifier.tell(notice());
        }
    }

    /// Asks the hooks, if any, whether `user` may connect from `device`.
    pub async fn hook_connect(&self, user: UserId, device: &str) -> crate::hooks::Verdict {
        match &self.svc.hooks {
            Some(h) => h.hooks.on_connect(user, device).await,
            None => crate::hooks::Verdict::Allow,
        }
    }
}

/// What requests do. Shared by the gateway and the HTTP API.
pub struct Logic {
    cfg: Arc<ServerConfig>,
    svc: Services,
    seq: Sequencer,
    known_directs: Mutex<HashSet<(UserId, UserId)>>,
    dummy_hash: OnceLock<String>,
    receipts: receipts::ReceiptQueue,
    /// Users of the application already mapped to users of ours.
    external_users: Mutex<std::collections::HashMap<String, UserId>>,
    /// Display names last written for app users (so a token's `name` is
    /// written only when it changes).
    display_names: Mutex<std::collections::HashMap<UserId, String>>,
    /// Failed logins per username and address.
    login_throttle: throttle::LoginThrottle,
    /// Blocks between pairs of users, as read recently.
    block_cache: contacts::BlockCache,
    /// Messages per user.
    user_sends: send_limit::UserSendLimit,
    /// Users being erased on this node.
    erasing: Mutex<std::collections::HashSet<UserId>>,
}

impl Logic {
    /// Logic over `svc`, configured by `cfg`.
    pub fn new(cfg: Arc<ServerConfig>, svc: Services) -> Self {
        let (user_rate, user_burst) = (cfg.user_rate_per_sec, cfg.user_rate_burst);
        Self {
            cfg,
            svc,
            seq: Sequencer::new(),
            known_directs: Mutex::default(),
            dummy_hash: OnceLock::new(),
            receipts: receipts::ReceiptQueue::default(),
            external_users: Mutex::default(),
            display_names: Mutex::default(),
            login_throttle: throttle::LoginThrottle::default(),
            block_cache: contacts::BlockCache::default(),
            erasing: Mutex::default(),
            user_sends: send_limit::UserSendLimit::new(user_rate, user_burst),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.cfg
    }

    /// The services.
    pub fn services(&self) -> &Services {
        &self.svc
    }

    /// Publishes an event. Bounded in time: a hung broker must not hold a
    /// sequencer stripe; recipients that miss an event catch up by sync
    /// (the store has the data).
    async fn publish(&self, event: Event) {
        match tokio::time::timeout(PUBLISH_TIMEOUT, self.svc.broker.publish(event)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "broker publish failed"),
            Err(_) => tracing::warn!("broker publish timed out"),
        }
    }

    /// Checks that `user` may read and write `conv`.
    pub async fn check_access(&self, user: UserId, conv: ConversationId) -> Result<()> {
        let dir = &self.svc.directory;
        match conv {
            ConversationId::Direct(..) => {
                let peer = conv
                    .peer_of(user)
                    .ok_or_else(|| Error::new(ErrorCode::NotMember, "not a party of this direct chat"))?;
                if self.direct_known(user, peer) {
                    return Ok(());
                }
                if dir.user(peer).await?.is_none() {
                    return Err(Error::new(ErrorCode::NoSuchConversation, "no such user to chat with"));
                }
                Ok(())
            }
            ConversationId::Group(g) => {
                if dir.member_role(g, user).await?.is_some() {
                    return Ok(());
                }
                Err(match dir.group(g).await? {
                    Some(_) => Error::new(ErrorCode::NotMember, "not a member of this group"),
                    None => Error::new(ErrorCode::NoSuchGroup, "no such group"),
                })
            }
            ConversationId::Room(r) => {
                if dir.in_room(r, user).await? {
                    return Ok(());
                }
                Err(match dir.room(r).await? {
                    Some(_) => Error::new(ErrorCode::NotMember, "join the room first"),
                    None => Error::new(ErrorCode::NoSuchRoom, "no such room"),
                })
            }
        }
    }

    fn direct_known(&self, a: UserId, b: UserId) -> bool {
        let key = (a.min(b), a.max(b));
        self.known_directs.lock().unwrap_or_else(|p| p.into_inner()).contains(&key)
    }

    /// Records the direct pair in the directory once (so sync finds it).
    async fn remember_direct(&self, a: UserId, b: UserId) -> Result<()> {
        if self.direct_known(a, b) {
            return Ok(());
        }
        self.svc.directory.add_direct(a, b).await?;
        let mut known = self.known_directs.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() >= KNOWN_DIRECTS_CAP {
            known.clear();
        }
        known.insert((a.min(b), a.max(b)));
        Ok(())
    }
}
