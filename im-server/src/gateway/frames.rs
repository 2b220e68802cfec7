//! What each client frame does: a thin mapping onto [`Logic`](crate::logic::Logic).

use im_core::{ClientFrame, ServerFrame};

use crate::error::Error;
use crate::hub::ConnHandle;
use crate::state::AppState;

/// Handles one decoded frame and returns the reply to send.
pub(super) async fn handle(app: &AppState, conn: &ConnHandle, frame: ClientFrame) -> ServerFrame {
    let logic = app.logic();
    let user = conn.user;
    let rid = frame.rid();
    let result = match frame {
        ClientFrame::Send { rid, conv, cmid, body } => {
            logic.send(user, Some(conn.id), conv, cmid, body).await.map(|a| ServerFrame::Ack {
                rid,
                conv,
                id: a.message.id,
                cmid: a.message.cmid,
                ts: a.message.ts,
                duplicate: a.duplicate,
            })
        }
        ClientFrame::Sync { rid, cursors, limit } => logic
            .sync(user, &cursors, limit)
            .await
            .map(|p| ServerFrame::SyncPage { rid, messages: p.messages, has_more: p.has_more }),
        ClientFrame::History { rid, conv, before, limit } => logic
            .history(user, conv, before, limit)
            .await
            .map(|p| ServerFrame::HistoryPage { rid, conv, messages: p.messages, has_more: p.has_more }),
        ClientFrame::Join { rid, room } => {
            logic.join_room(user, room).await.map(|()| ServerFrame::Ok { rid })
        }
        ClientFrame::Leave { rid, room } => {
            logic.leave_room(user, room).await.map(|()| ServerFrame::Ok { rid })
        }
        ClientFrame::QueryPresence { rid, users } => {
            logic.query_presence(&users).await.map(|users| ServerFrame::PresenceList { rid, users })
        }
        ClientFrame::Ping { rid } => Ok(ServerFrame::Pong { rid }),
        // A frame type added to im-core but not yet handled here.
        #[allow(unreachable_patterns)]
        other => Err(Error::new(
            im_core::ErrorCode::UnknownType,
            format!("{} is not supported by this server", other.type_name()),
        )),
    };
    result.unwrap_or_else(|e: Error| {
        tracing::debug!(conn = conn.id, code = %e.code, detail = %e.message, "request failed");
        ServerFrame::error(rid, e.code, e.message)
    })
}
