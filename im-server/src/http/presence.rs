//! Presence queries.

use axum::extract::State;
use axum::Json;
use im_protocol::limits::MAX_PRESENCE_QUERY;
use im_protocol::{ErrorCode, Presence, UserId};
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::extract::{ApiQuery, Authed};
use crate::state::AppState;

/// `GET /presence` query: `users=1,2,3`.
#[derive(Deserialize)]
pub(crate) struct PresenceQuery {
    users: String,
}

/// `GET /presence?users=1,2,3` → presence of the users among them related to the caller.
pub(crate) async fn query(
    State(app): State<AppState>,
    Authed(s): Authed,
    ApiQuery(q): ApiQuery<PresenceQuery>,
) -> ApiResult<Json<Vec<Presence>>> {
    let users = parse_users(&q.users)?;
    Ok(Json(app.logic().query_presence(s.user, &users).await?))
}

/// Comma-separated user ids, duplicates dropped (first occurrence kept).
fn parse_users(list: &str) -> ApiResult<Vec<UserId>> {
    let mut users: Vec<UserId> = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let id = part
            .parse::<u64>()
            .map_err(|_| ApiError::new(ErrorCode::InvalidField, "users: comma-separated user ids"))?;
        if !users.contains(&UserId(id)) {
            if users.len() == MAX_PRESENCE_QUERY {
                return Err(ApiError::new(
                    ErrorCode::InvalidField,
                    format!("users: at most {MAX_PRESENCE_QUERY} per query"),
                ));
            }
            users.push(UserId(id));
        }
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists() {
        assert_eq!(parse_users("").unwrap(), vec![]);
        assert_eq!(parse_users("1, 2,,1,3").unwrap(), vec![UserId(1), UserId(2), UserId(3)]);
        assert_eq!(parse_users("1,x").unwrap_err().code(), ErrorCode::InvalidField);
        assert_eq!(parse_users("-1").unwrap_err().code(), ErrorCode::InvalidField);
        let many = (1..=MAX_PRESENCE_QUERY as u64 + 1).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        assert_eq!(parse_users(&many).unwrap_err().code(), ErrorCode::InvalidField);
    }
}
