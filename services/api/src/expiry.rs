//! `/admin/pins/{requestid}/expiry`: set or clear a pin's expiry (its owner or an admin). The
//! Pinning Service API's own way is `meta.expires_at` at creation (docs/api.md, "Expiry").

use actix_web::{web, HttpResponse};
use pinhive_domain::values::{Expiry, META_EXPIRES_AT};
use pinhive_domain::{decide, Cid, Command};
use serde_json::Value;

use pinhive_domain::tokens::Scope;

use crate::auth::{Caller, PinWriter};
use crate::error::ApiError;
use crate::owned::{owned_pin, Access};
use crate::pins::{append_audited_and_wait, render};
use crate::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    use crate::routing::resource;
    use actix_web::http::Method;
    cfg.service(resource(
        "/admin/pins/{requestid}/expiry",
        [
            (Method::PUT, web::to(set_expiry)),
            (Method::DELETE, web::to(clear_expiry)),
        ],
    ));
}

/// `PUT` body: `{"expires_at": "<RFC 3339>"}` sets the expiry (after now), `{"expires_at":
/// null}` clears it. Answers 202 with the pin as its shard applied the change.
async fn set_expiry(
    state: web::Data<AppState>,
    PinWriter(caller): PinWriter,
    path: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let expiry = match body.into_inner() {
        Value::Object(fields) => {
            if let Some(unknown) = fields.keys().find(|key| *key != META_EXPIRES_AT) {
                return Err(ApiError::bad_request(format!(
                    "unknown field {unknown:?}: the body is {{\"{META_EXPIRES_AT}\": \"<RFC 3339>\" | null}}"
                )));
            }
            match fields.get(META_EXPIRES_AT) {
                Some(Value::String(text)) => Some(Expiry::parse(text)?),
                Some(Value::Null) => None,
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "{META_EXPIRES_AT} must be an RFC 3339 string or null, not {other}"
                    )))
                }
                None => {
                    return Err(ApiError::bad_request(format!(
                        "missing field {META_EXPIRES_AT:?} (null clears the expiry)"
                    )))
                }
            }
        }
        _ => {
            return Err(ApiError::bad_request(format!(
                "the body is {{\"{META_EXPIRES_AT}\": \"<RFC 3339>\" | null}}"
            )))
        }
    };
    change(&state, caller, path.into_inner(), expiry).await
}

/// `DELETE`: clears the expiry (the pin stays).
async fn clear_expiry(
    state: web::Data<AppState>,
    PinWriter(caller): PinWriter,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    change(&state, caller, path.into_inner(), None).await
}

async fn change(
    state: &web::Data<AppState>,
    caller: Caller,
    requestid: String,
    expiry: Option<Expiry>,
) -> Result<HttpResponse, ApiError> {
    let access = Access::OwnerOrAdmin {
        scope: Scope::PinsWrite,
        what: "expiry change",
    };
    let owned = owned_pin(state, &caller, &requestid, access).await?;
    let pin = owned.row.record.clone();
    let decided = decide(Command::SetExpiry {
        requestid: pin.requestid.clone(),
        cid: Cid::parse(&pin.cid).map_err(ApiError::internal)?,
        expiry,
        now_ns: pinhive_events::now_ns(),
    })?;
    let auditor = caller.clone();
    append_audited_and_wait(state, decided, move || owned.audit(&auditor)).await?;
    // The pin as its shard applied the change (the same access: it cannot have changed owner).
    let pin = owned_pin(state, &caller, &requestid, access)
        .await?
        .row
        .record;
    Ok(HttpResponse::Accepted().json(render(state, pin)))
}
