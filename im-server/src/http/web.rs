//! The web chat served by the binary at `/`: a page (`web/` in the
//! repository) and the JavaScript client's modules (`im-client-js/`) under
//! `/js/`, embedded in the binary at build time, so `im-server` alone is a
//! chat a person can open in a browser.
//!
//! Every file is served with a strict Content-Security-Policy (same-origin
//! scripts and styles only, no inline code; WebSockets allowed, and the
//! object store's origin when attachments go there by presigned URLs),
//! `nosniff` and no referrer. The page keeps its token in `sessionStorage` and hands
//! it to the WebSocket as the `token` query parameter (protocol §3.3).

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// The policy every web file is served with (with a presigned attachment
/// store, its origin joins `connect-src`: see [`content_security_policy`]).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self' ws: wss:; \
     img-src 'self' data: https: http:; style-src 'self'; script-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// [`CONTENT_SECURITY_POLICY`] with `origins` also allowed in
/// `connect-src` (the page uploads to and downloads from them).
pub fn content_security_policy(origins: &[String]) -> String {
    let extra: String = origins
        .iter()
        .filter(|o| o.bytes().all(|b| b.is_ascii_graphic() && b != b';' && b != b','))
        .map(|o| format!(" {o}"))
        .collect();
    CONTENT_SECURITY_POLICY.replacen(
        "connect-src 'self' ws: wss:",
        &format!("connect-src 'self' ws: wss:{extra}"),
        1,
    )
}

/// One embedded file: its URL path, MIME type and bytes.
struct Asset {
    path: &'static str,
    mime: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($path:literal, $mime:expr, $file:literal) => {
        Asset {
            path: $path,
            mime: $mime,
            body: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/", $file)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the web chat, by URL path.
static ASSETS: &[Asset] = &[
    asset!("/", "text/html; charset=utf-8", "web/index.html"),
    asset!("/app.css", "text/css; charset=utf-8", "web/app.css"),
    asset!("/app.js", JS, "web/app.js"),
    asset!("/ui/api.js", JS, "web/ui/api.js"),
    asset!("/ui/store.js", JS, "web/ui/store.js"),
    asset!("/ui/dom.js", JS, "web/ui/dom.js"),
    asset!("/ui/message.js", JS, "web/ui/message.js"),
    asset!("/ui/message-events.js", JS, "web/ui/message-events.js"),
    asset!("/ui/sidebar.js", JS, "web/ui/sidebar.js"),
    asset!("/ui/pane.js", JS, "web/ui/pane.js"),
    asset!("/ui/dialogs.js", JS, "web/ui/dialogs.js"),
    asset!("/ui/auth.js", JS, "web/ui/auth.js"),
    asset!("/ui/contacts.js", JS, "web/ui/contacts.js"),
    asset!("/ui/blocks.js", JS, "web/ui/blocks.js"),
    asset!("/ui/moderation.js", JS, "web/ui/moderation.js"),
    asset!("/js/backoff.js", JS, "im-client-js/backoff.js"),
    asset!("/js/connect.js", JS, "im-client-js/connect.js"),
    asset!("/js/connection.js", JS, "im-client-js/connection.js"),
    asset!("/js/conv.js", JS, "im-client-js/conv.js"),
    asset!("/js/cursor-store.js", JS, "im-client-js/cursor-store.js"),
    asset!("/js/errors.js", JS, "im-client-js/errors.js"),
    asset!("/js/events.js", JS, "im-client-js/events.js"),
    asset!("/js/files.js", JS, "im-client-js/files.js"),
    asset!("/js/frames.js", JS, "im-client-js/frames.js"),
    asset!("/js/im-client.js", JS, "im-client-js/im-client.js"),
    asset!("/js/outbox.js", JS, "im-client-js/outbox.js"),
    asset!("/js/pacer.js", JS, "im-client-js/pacer.js"),
    asset!("/js/read-state.js", JS, "im-client-js/read-state.js"),
    asset!("/js/sync-state.js", JS, "im-client-js/sync-state.js"),
    asset!("/js/typing.js", JS, "im-client-js/typing.js"),
];

fn serve(app: &AppState, path: &str) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.path == path) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let mut resp = asset.body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.mime));
    let origins = app.logic().services().attachments.client_origins();
    let csp = HeaderValue::from_str(&content_security_policy(&origins))
        .unwrap_or_else(|_| HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::CONTENT_SECURITY_POLICY, csp);
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // Small files that change with the binary: revalidate every time.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// `GET /`: the chat page.
pub(crate) async fn index(State(app): State<AppState>) -> Response {
    serve(&app, "/")
}

/// `GET /{file}`: the page's own files (`app.js`, `app.css`, …).
pub(crate) async fn file(State(app): State<AppState>, Path(file): Path<String>) -> Response {
    serve(&app, &format!("/{file}"))
}

/// `GET /ui/{file}`: the page's modules.
pub(crate) async fn ui_module(State(app): State<AppState>, Path(file): Path<String>) -> Response {
    serve(&app, &format!("/ui/{file}"))
}

/// `GET /js/{file}`: the JavaScript client's modules.
pub(crate) async fn client_module(State(app): State<AppState>, Path(file): Path<String>) -> Response {
    serve(&app, &format!("/js/{file}"))
}

#[cfg(test)]
mod tests {
    use super::{content_security_policy, ASSETS, CONTENT_SECURITY_POLICY};

    #[test]
    fn an_object_store_origin_joins_connect_src_only() {
        assert_eq!(content_security_policy(&[]), CONTENT_SECURITY_POLICY);
        let csp = content_security_policy(&["https://s3.example".into(), "bad; script-src *".into()]);
        assert!(csp.contains("connect-src 'self' ws: wss: https://s3.example;"), "{csp}");
        assert!(!csp.contains("script-src *"), "{csp}");
    }

    #[test]
    fn every_module_the_client_imports_is_served() {
        for a in ASSETS.iter().filter(|a| a.path.starts_with("/js/") || a.path.ends_with(".js")) {
            for line in a.body.lines().filter(|l| {
                l.trim_start().starts_with("import ")
                    || l.starts_with("export {")
                    || l.starts_with("export *")
            }) {
                let Some(from) = line.split("from '").nth(1).and_then(|r| r.split('\'').next()) else {
                    continue;
                };
                let dir = &a.path[..=a.path.rfind('/').unwrap()];
                let target = match from.strip_prefix("./") {
                    Some(rel) => format!("{dir}{rel}"),
                    None if from.starts_with('/') => from.to_owned(),
                    None => panic!("{} imports {from}: only ./ and / paths are served", a.path),
                };
                assert!(
                    ASSETS.iter().any(|x| x.path == target),
                    "{} imports {from}, which is not served ({target})",
                    a.path
                );
            }
        }
    }
}
