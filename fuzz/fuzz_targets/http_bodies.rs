//! JSON request bodies of the business API and the server API, against an
//! in-process server (memory store), without sockets: each input is one
//! request driven through `im_server::http::router` with `oneshot`.
//!
//! Input: the first byte picks a route (index into [`ROUTES`], modulo its
//! length); the rest is the body, sent as `Content-Type: application/json`
//! with the route's credentials (a user's bearer token, or the server API
//! key).
//!
//! Properties (docs/http-api.md §2):
//! * the status is never 5xx, and is 2xx or 4xx;
//! * every 4xx answers `Content-Type: application/json` and a JSON object
//!   `{"code": …, "message": …}` whose code is one of `ErrorCode::ALL` and
//!   whose status is the one that code is documented with;
//! * a 2xx body is JSON (or empty for 204).
//!
//! The fixture, made once per process and again every [`RESET_EVERY`]
//! inputs (so state the fuzzer builds up — users, messages, a revoked
//! token, a transferred group, login lock-outs — neither grows without
//! bound nor hides routes for the rest of a run): users 1 `fuzz_owner`
//! (whose token the user routes send) and 2 `fuzz_peer`, group 1 owned by
//! user 1 with user 2 as member, room 1 created by user 1 and joined by
//! user 2, and message 1 (from user 1) in `g:1`, `r:1` and `d:1:2`. The
//! seeds name these ids. Passwords hash with Argon2's cheapest parameters, so
//! register and login cost microseconds.
#![no_main]

#[path = "http_bodies/check.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
