//! Presence queries and fan-out of changes to the people who care.

use std::collections::BTreeSet;

use im_core::{ErrorCode, Presence, ServerFrame, UserId};
use tokio::sync::mpsc;

use super::Logic;
use crate::broker::{Audience, Event};
use crate::error::{Error, Result};

impl Logic {
    /// Presence of existing users among `users` (unknown ones are left out).
    pub async fn query_presence(&self, users: &[UserId]) -> Result<Vec<Presence>> {
        if users.len() > im_core::limits::MAX_PRESENCE_QUERY {
            return Err(Error::new(ErrorCode::InvalidField, "too many users in one presence query"));
        }
        let mut known = Vec::with_capacity(users.len());
        for &u in users {
            if self.svc.directory.user(u).await?.is_some() {
                known.push(u);
            }
        }
        let records = self.svc.presence.store().query(&known).await?;
        Ok(records.into_iter().map(|r| r.presence).collect())
    }

    /// Who hears about `user`'s presence: fellow group members and direct peers.
    async fn presence_audience(&self, user: UserId) -> Result<Vec<UserId>> {
        let dir = &self.svc.directory;
        let mut out = BTreeSet::new();
        for g in dir.groups_of(user).await? {
            out.extend(dir.members(g).await?.into_iter().map(|m| m.user));
        }
        out.extend(dir.directs_of(user).await?);
        out.remove(&user);
        Ok(out.into_iter().collect())
    }

    /// Consumes presence transitions and publishes each to its audience.
    /// Runs until the channel closes.
    pub async fn run_presence_fanout(&self, mut changes: mpsc::Receiver<Presence>) {
        while let Some(p) = changes.recv().await {
            self.tell_hooks(|| crate::hooks::Notice::Presence(p.user, p.status));
            match self.presence_audience(p.user).await {
                Ok(to) if !to.is_empty() => {
                    let event = Event::Deliver {
                        to: Audience::Users(to),
                        frame: ServerFrame::Presence(p),
                        skip: None,
                    };
                    self.publish(event).await;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(user = %p.user, error = %e, "presence fan-out failed"),
            }
        }
    }
}
