//! What each client frame does: a thin mapping onto [`Logic`](crate::logic::Logic).

use std::future::Future;
use std::pin::Pin;

use im_protocol::{ClientFrame, ServerFrame};

use crate::error::Error;
use crate::hub::ConnHandle;
use crate::logic::messages::Draft;
use crate::state::AppState;
use crate::store::Appended;

/// The rest of a started request: resolves to its reply, or to `None` when
/// the reply was already queued (a send's `ack`).
pub(super) type Pending<'a> = Pin<Box<dyn Future<Output = Option<ServerFrame>> + Send + 'a>>;

/// Starts one decoded frame. A `send` returns as soon as its place in the
/// conversation is fixed, with the rest (commit, publish, `ack`) pending, so
/// a connection's next requests start while earlier sends commit; any other
/// request runs to completion here.
///
/// A send's `ack` is queued as soon as the message is stored and published,
/// while its conversation's next message still waits: the sender never sees
/// a later message of the conversation before the ack of its own (which
/// would look like a gap). Other replies keep request order.
pub(super) async fn start<'a>(app: &'a AppState, conn: &'a ConnHandle, frame: ClientFrame) -> Pending<'a> {
    if let ClientFrame::Send { rid, conv, cmid, body, mentions, kind, content, reply_to, target } = frame {
        let (user, conn_id) = (conn.user, conn.id);
        let draft = Draft { body, mentions, kind, content, reply_to, target };
        return match app.logic().submit_send(user, Some(conn_id), conv, cmid, draft).await {
            Ok(pending) => Box::pin(async move {
                match pending.await {
                    Ok(sent) => {
                        conn.send(&ack(rid, sent.appended.clone()));
                        drop(sent); // now the conversation's next message may go
                        None
                    }
                    Err(e) => Some(failed(conn_id, Some(rid), e)),
                }
            }),
            Err(e) => Box::pin(std::future::ready(Some(failed(conn_id, Some(rid), e)))),
        };
    }
    let reply = respond(app, conn, frame).await;
    Box::pin(std::future::ready(Some(reply)))
}

fn ack(rid: u64, a: Appended) -> ServerFrame {
    let m = a.message;
    ServerFrame::Ack { rid, conv: m.conv, id: m.id, cmid: m.cmid, ts: m.ts, duplicate: a.duplicate }
}

fn failed(conn: u64, rid: Option<u64>, e: Error) -> ServerFrame {
    tracing::debug!(conn, code = %e.code, detail = %e.message, "request failed");
    ServerFrame::error(rid, e.code, e.message)
}

/// Runs any request but a `send` (which [`start`] pipelines) to its reply.
async fn respond(app: &AppState, conn: &ConnHandle, frame: ClientFrame) -> ServerFrame {
    let logic = app.logic();
    let user = conn.user;
    let rid = frame.rid();
    if frame.since_version() > conn.protocol() {
        let detail = format!("{} needs protocol version {}", frame.type_name(), frame.since_version());
        return failed(conn.id, rid, Error::new(im_protocol::ErrorCode::UnknownType, detail));
    }
    let result = match frame {
        // Never reaches here: `start` takes sends before calling this.
        ClientFrame::Send { .. } => {
            Err(Error::new(im_protocol::ErrorCode::Internal, "send is pipelined by start"))
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
            logic.query_presence(user, &users).await.map(|users| ServerFrame::PresenceList { rid, users })
        }
        ClientFrame::Typing { rid, conv, typing } => {
            let forward = conn.typing_allowed(crate::time::now_ms());
            logic.typing(user, conn.conn_ref(), conv, typing, forward).await.map(|()| ServerFrame::Ok { rid })
        }
        ClientFrame::Read { rid, conv, id } => logic
            .mark_read(user, Some(conn.device.as_str()), Some(conn.conn_ref()), conv, id)
            .await
            .map(|_| ServerFrame::Ok { rid }),
        ClientFrame::Inbox { rid, after, limit } => logic
            .inbox(user, after, limit)
            .await
            .map(|p| ServerFrame::InboxPage { rid, entries: p.entries, has_more: p.has_more }),
        ClientFrame::Received { rid, cursors } => {
            logic.received(user, &cursors).await.map(|()| ServerFrame::Ok { rid })
        }
        ClientFrame::Receipts { rid, conv } => logic
            .receipt_list(user, conv)
            .await
            .map(|receipts| ServerFrame::ReceiptList { rid, conv, receipts }),
        ClientFrame::Ping { rid } => Ok(ServerFrame::Pong { rid }),
        // A frame type added to im-protocol but not yet handled here.
        #[allow(unreachable_patterns)]
        other => Err(Error::new(
            im_protocol::ErrorCode::UnknownType,
            format!("{} is not supported by this server", other.type_name()),
        )),
    };
    result.unwrap_or_else(|e: Error| failed(conn.id, rid, e))
}
