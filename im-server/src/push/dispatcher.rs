//! [`PushDispatcher`]: runs the notifier off the hot path, bounded, and
//! decides who is notified: offline recipients who have not read the
//! message and have not muted the conversation.
//!
//! When presence cannot be read (its store, Redis in a cluster, is away or
//! slower than [`PRESENCE_DEADLINE`]), every recipient counts as offline:
//! an online user may get a notification their app then hides, which is
//! better than an offline user getting none. The read and mute filters
//! still apply. After a failed lookup, presence is not asked again for
//! [`PRESENCE_RETRY_AFTER`] (so a store that hangs does not hold every
//! notification slot for the deadline). Each notification sent without
//! presence is counted as
//! `im_push_notifications_total{result="presence_unknown"}`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use im_protocol::{ConversationId, Message, MessageId, UserId};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{PushNotifier, PushRecipient};
use crate::metrics::Metrics;
use crate::presence::PresenceStore;
use crate::store::ReadStore;

/// Longest the presence lookup before a notification may take; past it,
/// every recipient counts as offline.
pub const PRESENCE_DEADLINE: Duration = Duration::from_secs(1);

/// After a failed presence lookup, how long notifications go out without
/// asking presence.
pub const PRESENCE_RETRY_AFTER: Duration = Duration::from_secs(2);

/// Longest a single [`PushNotifier::notify`] call may take before it counts as failed.
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// Read notices have their own, smaller bound: a stream of read marks
    /// must never crowd out message notifications.
    read_permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    /// Until when (ms since the Unix epoch) presence is not asked, after a
    /// failed lookup.
    presence_skip_until: Arc<AtomicU64>,
}

impl fmt::Debug for PushDispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushDispatcher")
            .field("available_permits", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

/// Where the dispatcher learns who to leave out before notifying.
struct Filters {
    presence: Arc<dyn PresenceStore>,
    reads: Arc<dyn ReadStore>,
}

impl PushDispatcher {
    /// A dispatcher running at most `max_in_flight` notifications at once
    /// (at least one).
    pub fn new(notifier: Arc<dyn PushNotifier>, max_in_flight: usize, metrics: Arc<Metrics>) -> Self {
        let permits = Arc::new(Semaphore::new(max_in_flight.max(1)));
        let read_permits = Arc::new(Semaphore::new((max_in_flight / 4).max(1)));
        PushDispatcher { notifier, permits, read_permits, metrics, presence_skip_until: Arc::default() }
    }

    /// Notifies `users` about `message` in a background task (each with an
    /// unread count of 1), or drops the notification if `max_in_flight` are
    /// already running. Never blocks; must be called within a Tokio
    /// runtime. Does nothing for no users.
    pub fn dispatch(&self, users: Vec<UserId>, message: Message) {
        self.dispatch_filtered(users, message, None)
    }

    /// Like [`dispatch`](Self::dispatch), for those of `recipients` that
    /// have no live connection according to `presence`, have not read the
    /// message yet and have not muted its conversation according to
    /// `reads`, each with their unread count in the conversation. The
    /// lookups run inside the same bounded slot, so a slow store cannot
    /// pile up work either.
    pub fn dispatch_to_offline(
        &self,
        recipients: Vec<UserId>,
        message: Message,
        presence: Arc<dyn PresenceStore>,
        reads: Arc<dyn ReadStore>,
    ) {
        self.dispatch_filtered(recipients, message, Some(Filters { presence, reads }))
    }

    /// Tells the notifier that `user` read `conv` up to `read`
    /// ([`PushNotifier::read`]) in a background task, bounded apart from
    /// message notifications (a quarter of `max_in_flight`; dropped, and
    /// counted as `"read_dropped"`, when saturated). Nothing happens for
    /// rooms (never pushed) or a notifier that does not want read notices.
    pub fn dispatch_read(&self, user: UserId, conv: ConversationId, read: MessageId) {
        if matches!(conv, ConversationId::Room(_)) || !self.notifier.wants_read_notices() {
            return;
        }
        let Some(permit) = Arc::clone(&self.read_permits).try_acquire_owned().ok() else {
            self.metrics.push("read_dropped");
            return;
        };
        let (notifier, metrics) = (Arc::clone(&self.notifier), Arc::clone(&self.metrics));
        tokio::spawn(async move {
            let result = tokio::time::timeout(NOTIFY_TIMEOUT, notifier.read(user, conv, read)).await;
            drop(permit);
            if !matches!(result, Ok(Ok(()))) {
                metrics.push("read_failed");
                tracing::warn!(%user, %conv, read, "push read notice failed or timed out");
            }
        });
    }

    fn permit(&self, dropped: &'static str) -> Option<OwnedSemaphorePermit> {
        let permit = Arc::clone(&self.permits).try_acquire_owned().ok();
        if permit.is_none() {
            self.metrics.push(dropped);
        }
        permit
    }

    fn dispatch_filtered(&self, users: Vec<UserId>, message: Message, filters: Option<Filters>) {
        if users.is_empty() {
            return;
        }
        let Some(permit) = self.permit("dropped") else {
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
        let skip = Arc::clone(&self.presence_skip_until);
        tokio::spawn(async move {
            let recipients = match filters {
                None => users.into_iter().map(|u| PushRecipient::new(u, 1)).collect(),
                Some(filters) => match recipients_of(&filters, users, &message, &metrics, &skip).await {
                    Ok(r) => r,
                    Err(why) => {
                        tracing::warn!(error = %why, "push: recipient lookup failed");
                        return;
                    }
                },
            };
            if recipients.is_empty() {
                return;
            }
            // A notifier that hangs must not hold its permit forever.
            let result =
                tokio::time::timeout(NOTIFY_TIMEOUT, notifier.notify_recipients(&recipients, &message)).await;
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

/// Those of `users` to notify about `message`: no live connection, read id
/// below the message, not muted now (or mentioned); with their unread counts.
/// Everyone counts as offline when presence does not answer in time, or
/// failed to within the last [`PRESENCE_RETRY_AFTER`] (`skip_until`).
async fn recipients_of(
    filters: &Filters,
    users: Vec<UserId>,
    message: &Message,
    metrics: &Metrics,
    skip_until: &AtomicU64,
) -> Result<Vec<PushRecipient>, String> {
    let lookup = async {
        if crate::time::now_ms() < skip_until.load(Ordering::Relaxed) {
            return Err("failed recently".to_owned());
        }
        let result = match tokio::time::timeout(PRESENCE_DEADLINE, filters.presence.query(&users)).await {
            Ok(Ok(records)) => Ok(records),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {PRESENCE_DEADLINE:?}")),
        };
        if result.is_err() {
            let retry_at = crate::time::now_ms() + PRESENCE_RETRY_AFTER.as_millis() as u64;
            skip_until.fetch_max(retry_at, Ordering::Relaxed);
        }
        result
    };
    let offline: Vec<UserId> = match lookup.await {
        Ok(records) => records.iter().filter(|r| r.connections == 0).map(|r| r.presence.user).collect(),
        Err(why) => {
            metrics.push("presence_unknown");
            tracing::debug!(error = %why, conv = %message.conv, "push: presence unknown; every recipient counts as offline");
            users
        }
    };
    if offline.is_empty() {
        return Ok(Vec::new());
    }
    let states = filters.reads.reads_in(message.conv, &offline).await.map_err(|e| e.to_string())?;
    let now = crate::time::now_ms();
    let due: Vec<(UserId, MessageId)> = offline
        .into_iter()
        .zip(states)
        .filter(|(user, s)| s.read < message.id && (s.muted_until <= now || message.mentions.contains(user)))
        .map(|(user, s)| (user, s.read))
        .collect();
    if due.is_empty() {
        return Ok(Vec::new());
    }
    // Unread counts leave events out: countable(message) - countable(read).
    let mut at = vec![(message.conv, message.id)];
    at.extend(due.iter().map(|&(_, read)| (message.conv, read)));
    let counted = filters.reads.countable(&at).await.map_err(|e| e.to_string())?;
    Ok(due
        .into_iter()
        .zip(&counted[1..])
        .map(|((user, _), &read)| PushRecipient::new(user, counted[0].saturating_sub(read)))
        .collect())
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use tokio::sync::Notify;

    use super::*;
    use crate::push::tests::message;
    use crate::push::PushError;

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

    /// Records every recipient list.
    #[derive(Default)]
    struct Recorder {
        calls: std::sync::Mutex<Vec<Vec<PushRecipient>>>,
        reads: std::sync::Mutex<Vec<(UserId, ConversationId, MessageId)>>,
    }

    #[async_trait]
    impl PushNotifier for Recorder {
        async fn notify(&self, _: &[UserId], _: &Message) -> Result<(), PushError> {
            unreachable!("the dispatcher calls notify_recipients")
        }
        async fn notify_recipients(&self, r: &[PushRecipient], _: &Message) -> Result<(), PushError> {
            self.calls.lock().unwrap().push(r.to_vec());
            Ok(())
        }
        async fn read(&self, user: UserId, conv: ConversationId, read: MessageId) -> Result<(), PushError> {
            self.reads.lock().unwrap().push((user, conv, read));
            Ok(())
        }
        fn wants_read_notices(&self) -> bool {
            true
        }
    }

    #[tokio::test]
    async fn read_and_muted_recipients_are_left_out_and_the_rest_get_unread_counts() {
        use crate::presence::MemoryPresence;
        use crate::store::MemoryStore;

        let metrics = Arc::new(Metrics::new());
        let recorder = Arc::new(Recorder::default());
        let dispatcher = PushDispatcher::new(recorder.clone(), 4, metrics.clone());
        let store = Arc::new(MemoryStore::new());
        let m = message(); // g:1 #5
        for i in 1..=5 {
            let cmid = im_protocol::ClientMsgId::new(format!("c{i}")).unwrap();
            let new = crate::store::NewMessage {
                conv: m.conv,
                from: UserId(3),
                cmid,
                body: String::new(),
                ts: 0,
                mentions: Vec::new(),
                kind: None,
                content: None,
                reply_to: None,
                target: None,
            };
            crate::store::MessageStore::append(&*store, new).await.unwrap();
        }
        // 7 read up to 2 (3 unread), 8 read it already, 9 muted it, 10 muted until the past.
        store.mark_read(UserId(7), m.conv, None, 2).await.unwrap();
        store.mark_read(UserId(8), m.conv, None, 5).await.unwrap();
        store.mute(UserId(9), m.conv, u64::MAX).await.unwrap();
        store.mute(UserId(10), m.conv, 1).await.unwrap();
        let users = vec![UserId(7), UserId(8), UserId(9), UserId(10)];
        dispatcher.dispatch_to_offline(users, m.clone(), Arc::new(MemoryPresence::new()), store.clone());
        wait_for(&metrics, "im_push_notifications_total{result=\"sent\"} 1\n").await;
        let calls = recorder.calls.lock().unwrap().clone();
        assert_eq!(calls, vec![vec![PushRecipient::new(UserId(7), 3), PushRecipient::new(UserId(10), 5)]]);

        // Nobody left: no call at all.
        dispatcher.dispatch_to_offline(vec![UserId(8)], m.clone(), Arc::new(MemoryPresence::new()), store);
        dispatcher.dispatch_read(UserId(7), ConversationId::Room(im_protocol::RoomId(1)), 5); // never for rooms
        dispatcher.dispatch_read(UserId(7), m.conv, 5);
        for _ in 0..200 {
            if !recorder.reads.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(*recorder.reads.lock().unwrap(), vec![(UserId(7), m.conv, 5)]);
        assert_eq!(recorder.calls.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn when_presence_is_away_every_unread_recipient_is_notified() {
        use crate::presence::{MemoryPresence, PresenceStore as _};
        use crate::store::MemoryStore;

        let metrics = Arc::new(Metrics::new());
        let recorder = Arc::new(Recorder::default());
        let dispatcher = PushDispatcher::new(recorder.clone(), 4, metrics.clone());
        let store = Arc::new(MemoryStore::new());
        // g:1 #5. 7 is online and 8 read it already; presence cannot tell about 7.
        let m = message();
        let online = MemoryPresence::new();
        let conn = crate::broker::ConnRef { node: "n".into(), conn: 1 };
        online.connected(UserId(7), &conn, 0).await.unwrap();
        store.mark_read(UserId(8), m.conv, None, 5).await.unwrap();
        dispatcher.dispatch_to_offline(
            vec![UserId(7), UserId(8)],
            m.clone(),
            Arc::new(online),
            store.clone(),
        );
        let away = Arc::new(crate::presence::away::AwayPresence::default());
        dispatcher.dispatch_to_offline(vec![UserId(7), UserId(8)], m.clone(), away.clone(), store.clone());
        wait_for(&metrics, "im_push_notifications_total{result=\"sent\"} 1\n").await;
        wait_for(&metrics, "im_push_notifications_total{result=\"presence_unknown\"} 1\n").await;
        // Right after a failure presence is not asked again.
        dispatcher.dispatch_to_offline(vec![UserId(7)], m.clone(), away.clone(), store);
        wait_for(&metrics, "im_push_notifications_total{result=\"sent\"} 2\n").await;
        assert_eq!(away.queries.load(Ordering::SeqCst), 1, "presence asked once");
        // With presence: 7 is online, 8 read it: nobody. Without: 7 (the read filter still
        // applies; nothing is stored in g:1 here, so the unread count is 0).
        let calls = recorder.calls.lock().unwrap().clone();
        assert_eq!(calls, vec![vec![PushRecipient::new(UserId(7), 0)]; 2]);
    }
}
