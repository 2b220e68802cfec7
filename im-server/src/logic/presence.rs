//! Presence queries and fan-out of changes to the people who care.

use std::collections::BTreeSet;

use im_protocol::{ErrorCode, Presence, ServerFrame, UserId};
use tokio::sync::mpsc;

use super::Logic;
use crate::broker::{Audience, Event};
use crate::error::{Error, Result};

impl Logic {
    /// Presence of the users among `users` related to `caller` — the
    /// caller, accepted contacts, fellow group members and direct peers,
    /// none blocked either way; the others (and unknown ids) are left out.
    pub async fn query_presence(&self, caller: UserId, users: &[UserId]) -> Result<Vec<Presence>> {
        if users.len() > im_protocol::limits::MAX_PRESENCE_QUERY {
            return Err(Error::new(ErrorCode::InvalidField, "too many users in one presence query"));
        }
        let dir = &self.svc.directory;
        let (contacts, blocked) = self.contact_circle(caller).await?;
        let directs = dir.directs_of(caller).await?;
        let my_groups: BTreeSet<_> = dir.groups_of(caller).await?.into_iter().collect();
        let mut related = Vec::with_capacity(users.len());
        for &u in users {
            if related.contains(&u) || blocked.contains(&u) {
                continue;
            }
            let known = u == caller
                || contacts.contains(&u)
                || directs.contains(&u)
                || dir.groups_of(u).await?.iter().any(|g| my_groups.contains(g));
            if known {
                related.push(u);
            }
        }
        let records = self.svc.presence.store().query(&related).await?;
        Ok(records.into_iter().map(|r| r.presence).collect())
    }

    /// Who hears about `user`'s presence: fellow group members, direct
    /// peers and accepted contacts, except users blocked either way.
    async fn presence_audience(&self, user: UserId) -> Result<Vec<UserId>> {
        let dir = &self.svc.directory;
        let mut out = BTreeSet::new();
        for g in dir.groups_of(user).await? {
            out.extend(dir.members(g).await?.into_iter().map(|m| m.user));
        }
        out.extend(dir.directs_of(user).await?);
        let (contacts, blocked) = self.contact_circle(user).await?;
        out.extend(contacts);
        for b in blocked {
            out.remove(&b);
        }
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
