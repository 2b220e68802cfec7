//! Typing notices: forwarded live to the other members, never stored.

use im_protocol::{ConversationId, ErrorCode, ServerFrame, UserId};

use super::Logic;
use crate::broker::{Audience, ConnRef, Event};
use crate::error::{Error, Result};

impl Logic {
    /// `user` started (`typing`) or stopped typing in `conv`, a direct chat
    /// or group they belong to: the other members' connections of protocol
    /// version 2 or later get a `user_typing` frame, on every node. Nothing
    /// is stored or synced. `forward: false` (the connection's typing rate
    /// limit is spent) checks the request but forwards nothing.
    pub async fn typing(
        &self,
        user: UserId,
        from: ConnRef,
        conv: ConversationId,
        typing: bool,
        forward: bool,
    ) -> Result<()> {
        if matches!(conv, ConversationId::Room(_)) {
            return Err(Error::new(ErrorCode::Forbidden, "typing is not shared in rooms"));
        }
        self.check_access(user, conv).await?;
        if !forward {
            return Ok(());
        }
        let others: Vec<UserId> = match conv {
            ConversationId::Direct(..) => conv.peer_of(user).into_iter().filter(|&p| p != user).collect(),
            ConversationId::Group(g) => self
                .svc
                .directory
                .members(g)
                .await?
                .into_iter()
                .map(|m| m.user)
                .filter(|&u| u != user)
                .collect(),
            ConversationId::Room(_) => Vec::new(),
        };
        if others.is_empty() {
            return Ok(());
        }
        let frame = ServerFrame::UserTyping { conv, user, typing };
        self.publish(Event::Deliver { to: Audience::Users(others), frame, skip: Some(from) }).await;
        Ok(())
    }
}
