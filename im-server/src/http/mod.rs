//! The business HTTP API, the dispatcher and the operations endpoints, on one
//! [`axum::Router`] next to the WebSocket gateway.
//!
//! | method | path | auth | answer |
//! |---|---|---|---|
//! | `GET` | `/ws` | token | WebSocket upgrade ([`crate::gateway`]) |
//! | `GET` | `/`, `/app.js`, `/app.css`, `/ui/*.js`, `/js/*.js` | — | the web chat and the JavaScript client ([`web`]) |
//! | `GET` | `/dispatch` | — | `{url, node}`: where to open the WebSocket |
//! | `GET` | `/healthz` | — | `ok`, or 503 while draining |
//! | `GET` | `/metrics` | — | OpenMetrics text |
//! | `GET` | `/openapi.json` | — | the OpenAPI 3 description of these routes (`docs/openapi.json`) |
//! | `POST` | `/api/v1/register` | — | 201 user |
//! | `POST` | `/api/v1/login` | — | `{token, user_id, expires_at}` |
//! | `POST` | `/api/v1/logout` | token | 204 |
//! | `GET` | `/api/v1/me` | token | user |
//! | `GET` | `/api/v1/me/rooms` | token | joined room ids |
//! | `GET` | `/api/v1/users/{id}` | token | user |
//! | `GET` | `/api/v1/users/by-name/{username}` | token | user |
//! | `POST` | `/api/v1/groups` | token | 201 group with members |
//! | `GET` | `/api/v1/groups` | token | my groups |
//! | `GET` | `/api/v1/groups/{id}` | token | group with members |
//! | `POST` | `/api/v1/groups/{id}/members` | token | 204 |
//! | `DELETE` | `/api/v1/groups/{id}/members/{user_id}` | token | 204 |
//! | `POST` | `/api/v1/rooms` | token | 201 room |
//! | `GET` | `/api/v1/rooms?after=&limit=` | token | rooms |
//! | `POST` | `/api/v1/rooms/{id}/join` | token | 204 |
//! | `POST` | `/api/v1/rooms/{id}/leave` | token | 204 |
//! | `GET` | `/api/v1/conversations?after=&limit=` | token | `{conversations, has_more}`: the inbox |
//! | `GET` | `/api/v1/conversations/{conv}/messages?before=&limit=` | token | `{messages, has_more}` |
//! | `POST` | `/api/v1/conversations/{conv}/read` | token | `{read, devices}` after marking read |
//! | `GET` | `/api/v1/conversations/{conv}/read` | token | `{read, devices}` |
//! | `GET` | `/api/v1/conversations/{conv}/receipts` | token | `{receipts}`: members' read and delivered ids |
//! | `GET`, `PUT` | `/api/v1/me/receipts` | token | `{shared}`: whether the user shares receipts |
//! | `PUT`, `DELETE` | `/api/v1/conversations/{conv}/mute` | token | 204: mute pushes (`{until?}`) or unmute |
//! | `POST`, `GET` | `/api/v1/conversations/{conv}/sanctions` | token | a moderator mutes, kicks, bans, unmutes or unbans (`{user_id, action, duration_ms?}` → the user's sanction), or lists sanctions |
//! | `GET` | `/api/v1/rooms/{id}/moderators` | token | `{moderators}` |
//! | `PUT`, `DELETE` | `/api/v1/rooms/{id}/moderators/{user_id}` | token | 204: the room's creator names or removes a moderator |
//! | `GET` | `/api/v1/presence?users=1,2` | token | presence of the users related to the caller |
//! | `GET` | `/api/v1/contacts` | token | `{contacts}`: requests and contacts, accepted ones with presence |
//! | `POST`, `DELETE` | `/api/v1/contacts/{user_id}` | token | ask (or accept) → `{user_id, state}`; decline, cancel or remove → 204 |
//! | `GET` | `/api/v1/blocks` | token | `{blocks}` |
//! | `PUT`, `DELETE` | `/api/v1/blocks/{user_id}` | token | 204: block or unblock |
//! | `POST` | `/api/v1/attachments?name=&width=&height=&duration_ms=` | token | 201 attachment (the body is the file, `Content-Type` its type) |
//! | `GET` | `/api/v1/attachments/config` | token | `{upload, max_bytes, types}`: `direct` (the POST above) or `presigned` |
//! | `POST` | `/api/v1/attachments/uploads` | token | 201 `{id, url, method, headers, expires_at_ms}`: a presigned upload |
//! | `POST` | `/api/v1/attachments/{id}/complete` | token | 201 attachment, once the bytes are at the presigned URL |
//! | `GET` | `/api/v1/attachments/{id}` | token | the bytes (`Range` → 206), or 302 to a presigned URL, if a conversation of the caller references it |
//! | `GET` | `/api/v1/attachments/{id}/info` | token | the attachment's metadata |
//!
//! | `POST`, `GET`, `DELETE` | `/api/v1/server/…` | server API key | the server API for the application's backend ([`ServerKey`]; off without keys) |
//!
//! `docs/http-api.md` in the repository documents each endpoint with
//! examples. Every failure answers `{"code": "…", "message": "…"}` with the
//! code's HTTP status ([`ApiError`]); handlers call [`crate::logic::Logic`]
//! and hold no rules of their own. The extractors ([`Authed`], [`ApiJson`],
//! [`ApiPath`], [`ApiQuery`]) are public so an application can add its own
//! endpoints with the same authentication and error format.

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use axum::Router;
use im_protocol::ErrorCode;

use crate::state::AppState;

mod accounts;
mod attachments;
mod contacts;
mod dispatch;
mod error;
mod extract;
mod groups;
mod messages;
mod moderation;
mod ops;
mod presence;
mod reads;
mod rooms;
mod server_api;
mod server_relations;
use server_relations as rel;
pub mod web;

pub use error::{ApiError, ApiResult};
pub use extract::{ApiJson, ApiPath, ApiQuery, Authed};
pub use server_api::ServerKey;

/// Largest request body the API reads (64 KiB); larger bodies answer 413
/// `body_too_large`.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The routes of the business API, relative to `/api/v1`.
fn api() -> Router<AppState> {
    Router::new()
        .route("/register", post(accounts::register))
        .route("/login", post(accounts::login))
        .route("/logout", post(accounts::logout))
        .route("/me", get(accounts::me))
        .route("/me/rooms", get(rooms::mine))
        .route("/users/{id}", get(accounts::user))
        .route("/users/by-name/{username}", get(accounts::user_by_name))
        .route("/groups", post(groups::create).get(groups::mine))
        .route("/groups/{id}", get(groups::info))
        .route("/groups/{id}/members", post(groups::add_member))
        .route("/groups/{id}/members/{user_id}", delete(groups::remove_member))
        .route("/groups/{id}/owner", post(groups::transfer))
        .route("/rooms", post(rooms::create).get(rooms::list))
        .route("/rooms/{id}/join", post(rooms::join))
        .route("/rooms/{id}/leave", post(rooms::leave))
        .route("/conversations", get(reads::inbox))
        .route("/conversations/{conv}/messages", get(messages::history))
        .route("/conversations/{conv}/read", post(reads::mark).get(reads::get))
        .route("/conversations/{conv}/receipts", get(reads::receipts))
        .route("/conversations/{conv}/mute", put(reads::mute).delete(reads::unmute))
        .route("/conversations/{conv}/sanctions", post(moderation::act).get(moderation::list))
        .route("/rooms/{id}/moderators", get(moderation::moderators))
        .route("/rooms/{id}/moderators/{user_id}", put(moderation::appoint).delete(moderation::dismiss))
        .route("/me/receipts", get(reads::receipts_setting).put(reads::set_receipts_setting))
        .route("/presence", get(presence::query))
        .route("/contacts", get(contacts::list))
        .route("/contacts/{user_id}", post(contacts::request).delete(contacts::remove))
        .route("/blocks", get(contacts::blocks))
        .route("/blocks/{user_id}", put(contacts::block).delete(contacts::unblock))
        .route("/server/users", post(server_api::create_user))
        .route("/server/users/{id}", get(server_api::user).delete(server_api::erase_user))
        .route("/server/users/{id}/disconnect", post(server_api::disconnect))
        .route("/server/users/{id}/revoke-tokens", post(server_api::revoke_user_tokens))
        .route("/server/groups", post(server_api::create_group))
        .route("/server/groups/{id}/members", post(server_api::add_member))
        .route("/server/groups/{id}/members/{user_id}", delete(server_api::remove_member))
        .route("/server/groups/{id}/owner", post(server_api::transfer_group))
        .route("/server/rooms", post(server_api::create_room))
        .route("/server/messages", post(server_api::post_message))
        .route("/server/conversations/{conv}/messages", get(server_api::history))
        .route("/server/tokens/revoke", post(server_api::revoke))
        .route("/server/sessions/disconnect", post(server_api::disconnect_session))
        .route("/server/users/{id}/contacts", get(rel::contacts))
        .route("/server/users/{id}/contacts/{other}", put(rel::befriend).delete(rel::unfriend))
        .route("/server/users/{id}/blocks", get(rel::blocks))
        .route("/server/users/{id}/blocks/{other}", put(rel::block).delete(rel::unblock))
        .route("/server/conversations/{conv}/sanctions", post(rel::sanction).get(rel::sanctions))
        .route("/server/rooms/{id}/moderators", get(rel::moderators))
        .route("/server/rooms/{id}/moderators/{user_id}", put(rel::appoint).delete(rel::dismiss))
        .route("/attachments", post(attachments::upload))
        .route("/attachments/config", get(attachments::config))
        .route("/attachments/uploads", post(attachments::begin))
        .route("/attachments/{id}", get(attachments::download))
        .route("/attachments/{id}/info", get(attachments::info))
        .route("/attachments/{id}/complete", post(attachments::complete))
}

/// Everything this node serves over HTTP: the business API under `/api/v1`,
/// `GET /dispatch`, `GET /healthz`, `GET /metrics` and the WebSocket
/// endpoint `GET /ws`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .nest("/api/v1", api())
        .route("/dispatch", get(dispatch::dispatch))
        // Counts and logs the routes above (not health probes, scrapes or sockets).
        .layer(from_fn_with_state(state.clone(), track))
        .route("/healthz", get(ops::healthz))
        .route("/openapi.json", get(ops::openapi))
        .route("/admin/drain", post(ops::drain))
        .route("/metrics", get(ops::metrics))
        .route("/ws", get(crate::gateway::ws_handler))
        .route("/", get(web::index))
        .route("/js/{file}", get(web::client_module))
        .route("/ui/{file}", get(web::ui_module))
        .route("/{file}", get(web::file))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Counts every API response by status and every error by code, and logs
/// each failure once: client errors at debug, server errors at warn. Logs
/// the path only — never the query, which may carry a token.
async fn track(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let resp = next.run(req).await;
    let status = resp.status();
    app.metrics().http_request(status.as_u16());
    if let Some(&code) = resp.extensions().get::<ErrorCode>() {
        app.metrics().error(code);
        if status.is_server_error() {
            tracing::warn!(%method, %path, status = status.as_u16(), %code, "api request failed");
        } else {
            tracing::debug!(%method, %path, status = status.as_u16(), %code, "api request refused");
        }
    }
    resp
}
