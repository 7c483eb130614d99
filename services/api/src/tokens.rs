//! Token management (`admin` scope): mint (`POST /admin/tokens`), list an owner's tokens
//! (`GET /admin/tokens?owner=`), show one (`GET /admin/tokens/{id}`) and revoke one
//! (`DELETE /admin/tokens/{id}`). A secret is shown once, in the mint's answer, and never
//! again: listings show the public id, owner, name, scopes, creation and expiry.

use actix_web::{web, HttpResponse};
use pinhive_domain::tokens::{valid_token_name, Scopes, TokenStatus};
use pinhive_store::TokenRecord;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::audit::{self, Action};
use crate::auth::AdminCaller;
use crate::error::ApiError;
use crate::model::format_created;
use crate::AppState;

/// Most tokens per listing page (default 100).
const MAX_PAGE: usize = 1000;

pub fn routes(cfg: &mut web::ServiceConfig) {
    use crate::routing::resource;
    use actix_web::http::Method;
    cfg.service(resource(
        "/admin/tokens",
        [
            (Method::POST, web::to(create_token)),
            (Method::GET, web::to(list_tokens)),
        ],
    ))
    .service(resource(
        "/admin/tokens/{id}",
        [
            (Method::GET, web::to(get_token)),
            (Method::DELETE, web::to(revoke_token)),
        ],
    ));
}

/// Scope names as a JSON array or one comma-separated string.
#[derive(Deserialize)]
#[serde(untagged)]
enum ScopeNames {
    List(Vec<String>),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    /// Owner of the pins made with the token; defaults to `name` (the form before names and
    /// owners were apart: `{"name": "alice"}` makes a token of owner `alice`).
    owner: Option<String>,
    /// What the token is for (a device, a service).
    name: String,
    scopes: Option<ScopeNames>,
    /// Every scope (the form before scopes); not together with `scopes`.
    #[serde(default)]
    admin: bool,
    /// RFC 3339; the token is refused from then on. None: it does not expire.
    expires_at: Option<String>,
}

/// How a token is shown: never its secret.
pub fn token_json(id: &str, token: &TokenRecord) -> Value {
    json!({
        "id": id,
        "owner": token.owner,
        "name": token.name,
        "scopes": token.scopes.names(),
        "created": format_created(token.created_ns),
        "expires_at": token.expires_ns.map(format_created),
        "revoked_at": token.revoked_ns.map(format_created),
        "status": match token.status(pinhive_events::now_ns()) {
            TokenStatus::Active => "active",
            TokenStatus::Expired => "expired",
            TokenStatus::Revoked => "revoked",
        },
    })
}

/// The record a mint request asks for, checked: owner and name valid, known scopes, an
/// expiry after `now_ns`.
fn new_record(request: NewToken, now_ns: i64) -> Result<TokenRecord, ApiError> {
    let owner = request.owner.unwrap_or_else(|| request.name.clone());
    if !pinhive_store::valid_owner(&owner) {
        return Err(ApiError::bad_request(
            "owner must be 1..128 bytes, not start with '#', without control characters",
        ));
    }
    if !valid_token_name(&request.name) {
        return Err(ApiError::bad_request(
            "name must be 1..128 bytes without control characters",
        ));
    }
    let scopes = match (request.scopes, request.admin) {
        (Some(_), true) => {
            return Err(ApiError::bad_request(
                "give either scopes or admin (every scope), not both",
            ))
        }
        (Some(ScopeNames::List(names)), false) => {
            Scopes::from_names(names.iter().map(String::as_str))
        }
        (Some(ScopeNames::Text(text)), false) => Scopes::parse(&text),
        (None, true) => Ok(Scopes::all()),
        (None, false) => Ok(Scopes::default_tenant()),
    }
    .map_err(|error| ApiError::bad_request(error.to_string()))?;
    let expires_ns = match request.expires_at {
        None => None,
        Some(text) => {
            let time = chrono::DateTime::parse_from_rfc3339(text.trim()).map_err(|error| {
                ApiError::bad_request(format!(
                    "expires_at {text:?} is not an RFC 3339 time with a zone \
                     (e.g. 2026-12-01T00:00:00Z): {error}"
                ))
            })?;
            match time.timestamp_nanos_opt() {
                Some(ns) if ns > now_ns => Some(ns),
                Some(_) => {
                    return Err(ApiError::bad_request(format!(
                        "expires_at {text:?} is not in the future"
                    )))
                }
                None => {
                    return Err(ApiError::bad_request(format!(
                        "expires_at {text:?} is out of range (1970 to 2262)"
                    )))
                }
            }
        }
    };
    Ok(TokenRecord {
        owner,
        created_ns: now_ns,
        name: request.name,
        scopes,
        expires_ns,
        revoked_ns: None,
    })
}

async fn create_token(
    state: web::Data<AppState>,
    AdminCaller(caller): AdminCaller,
    body: web::Json<NewToken>,
) -> Result<HttpResponse, ApiError> {
    let record = new_record(body.into_inner(), pinhive_events::now_ns())?;
    let secret = pinhive_store::new_secret();
    let hash = pinhive_store::hash_secret(&secret);
    let id = pinhive_store::token_id(&hash);
    let store = state.store.clone();
    let stored = record.clone();
    let minted = id.clone();
    // Audited on the blocking thread right after the write: a client that goes away meanwhile
    // cannot leave a token without its line.
    web::block(move || {
        store.put_token(&hash, &stored)?;
        audit::record(
            Action::TokenMint,
            &caller,
            &minted,
            &format!(
                "owner {:?}, name {:?}, scopes {}",
                stored.owner, stored.name, stored.scopes
            ),
        );
        Ok::<_, pinhive_store::StoreError>(())
    })
    .await??;
    let mut body = token_json(&id, &record);
    body["token"] = Value::String(secret);
    Ok(HttpResponse::Created().json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    owner: Option<String>,
    /// The id of the last token already seen (the previous page's `next`).
    after: Option<String>,
    limit: Option<usize>,
}

/// One owner's live tokens (expired ones included, revoked ones not), by id. The owner is
/// required: tokens are indexed per owner, and a listing of every owner would be a scan.
async fn list_tokens(
    state: web::Data<AppState>,
    AdminCaller(caller): AdminCaller,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let ListQuery {
        owner,
        after,
        limit,
    } = query.into_inner();
    let owner = owner.ok_or_else(|| {
        ApiError::bad_request("owner is required: GET /admin/tokens?owner=<owner>")
    })?;
    let limit = limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let store = state.store.clone();
    let listed = owner.clone();
    let tokens = web::block(move || store.list_tokens(&listed, after.as_deref(), limit)).await??;
    let next = match tokens.last() {
        Some((id, _)) if tokens.len() == limit => Some(id.clone()),
        _ => None,
    };
    let tokens: Vec<Value> = tokens
        .iter()
        .map(|(id, token)| token_json(id, token))
        .collect();
    audit::admin_read(
        &caller,
        Some(&owner),
        &owner,
        &format!("token listing ({} tokens)", tokens.len()),
    );
    Ok(HttpResponse::Ok().json(json!({"owner": owner, "tokens": tokens, "next": next})))
}

async fn find(state: &AppState, id: String) -> Result<(String, TokenRecord), ApiError> {
    let store = state.store.clone();
    let lookup = id.clone();
    web::block(move || store.token_by_id(&lookup))
        .await??
        .ok_or_else(|| ApiError::not_found(format!("no token with id {id}")))
}

async fn get_token(
    state: web::Data<AppState>,
    AdminCaller(caller): AdminCaller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let (_, token) = find(&state, id.clone()).await?;
    audit::admin_read(
        &caller,
        Some(&token.owner),
        &id,
        &format!("token of {:?}", token.owner),
    );
    Ok(HttpResponse::Ok().json(token_json(&id, &token)))
}

/// Revokes a token: refused at once by this instance, by every instance sharing the store
/// within [`crate::TOKEN_CACHE_TTL`]. Revoking a revoked token answers the same (200).
async fn revoke_token(
    state: web::Data<AppState>,
    AdminCaller(caller): AdminCaller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let (hash, mut token) = find(&state, id.clone()).await?;
    if token.revoked_ns.is_none() {
        token.revoked_ns = Some(pinhive_events::now_ns());
        let store = state.store.clone();
        let stored = token.clone();
        let revoked = id.clone();
        web::block(move || {
            store.put_token(&hash, &stored)?;
            audit::record(
                Action::TokenRevoke,
                &caller,
                &revoked,
                &format!("owner {:?}, name {:?}", stored.owner, stored.name),
            );
            Ok::<_, pinhive_store::StoreError>(())
        })
        .await??;
    }
    state.evict_token(&id);
    Ok(HttpResponse::Ok().json(token_json(&id, &token)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: Value) -> NewToken {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_mint_request_defaults_to_a_tenant_token_of_owner_name() {
        let token = new_record(request(json!({"name": "alice"})), 10).unwrap();
        assert_eq!(token.owner, "alice");
        assert_eq!(token.name, "alice");
        assert_eq!(token.scopes, Scopes::default_tenant());
        assert_eq!(token.expires_ns, None);
        let admin = new_record(request(json!({"name": "ops", "admin": true})), 10).unwrap();
        assert_eq!(admin.scopes, Scopes::all());
    }

    #[test]
    fn scopes_come_as_a_list_or_a_string_and_bad_ones_are_named() {
        let list = json!({"owner": "s3", "name": "gw", "scopes": ["s3:ingest"]});
        assert_eq!(
            new_record(request(list), 0).unwrap().scopes.names(),
            ["s3:ingest"]
        );
        let text = json!({"owner": "a", "name": "cli", "scopes": "pins:read, admin"});
        assert_eq!(
            new_record(request(text), 0).unwrap().scopes.names(),
            ["pins:read", "admin"]
        );
        for (body, expected) in [
            (
                json!({"name": "a", "scopes": ["pins:delete"]}),
                "unknown scope \"pins:delete\"",
            ),
            (json!({"name": "a", "scopes": []}), "at least one scope"),
            (
                json!({"name": "a", "scopes": ["admin"], "admin": true}),
                "not both",
            ),
            (json!({"name": "#all"}), "owner must be"),
            (json!({"owner": "a", "name": ""}), "name must be"),
            (json!({"name": "a", "expires_at": "tomorrow"}), "RFC 3339"),
            (
                json!({"name": "a", "expires_at": "2001-01-01T00:00:00Z"}),
                "not in the future",
            ),
        ] {
            let error = new_record(request(body.clone()), 1_000_000_000_000_000_000)
                .err()
                .unwrap_or_else(|| panic!("{body} was accepted"));
            assert!(error.to_string().contains(expected), "{body}: {error}");
        }
    }

    #[test]
    fn an_expiry_in_the_future_is_kept_in_ns() {
        let body = json!({"name": "a", "expires_at": "2030-01-01T00:00:00Z"});
        let token = new_record(request(body), 0).unwrap();
        assert_eq!(token.expires_ns, Some(1_893_456_000_000_000_000));
    }
}
