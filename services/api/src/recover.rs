//! `POST /admin/pins/{requestid}/recover` (the pin's owner or an admin): retry the failed
//! replicas of the pin's CID now, with their failure rounds started over
//! (`PinRecoverRequested`, keyed by the CID; `pinhive pins recover`).
//!
//! 202 once the event is durable (and, as for every write, applied within the wait bound),
//! with the pin's status as it was (`failed`, or `queued` while an automatic retry waits);
//! a CID without failed replicas is left as it is. 404 (spec `Failure`) for a pin that does
//! not exist or belongs to someone else (callers without an admin token).

use actix_web::{web, HttpResponse};
use pinhive_domain::{canonical_cid, Decided};
use pinhive_events::Event;
use serde_json::json;

use pinhive_domain::tokens::Scope;

use crate::auth::PinWriter;
use crate::error::ApiError;
use crate::owned::{owned_pin, Access};
use crate::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    use crate::routing::resource;
    use actix_web::http::Method;
    cfg.service(resource(
        "/admin/pins/{requestid}/recover",
        [(Method::POST, web::to(recover))],
    ));
}

async fn recover(
    state: web::Data<AppState>,
    PinWriter(caller): PinWriter,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let requestid = path.into_inner();
    let owned = owned_pin(
        &state,
        &caller,
        &requestid,
        Access::OwnerOrAdmin {
            scope: Scope::PinsWrite,
            what: "recovery",
        },
    )
    .await?;
    let pin = owned.row.record.clone();
    // The shard keys the CID's events by its canonical form.
    let cid = canonical_cid(&pin.cid)?;
    crate::pins::append_audited_and_wait(
        &state,
        vec![Decided {
            key: cid.clone(),
            event: Event::PinRecoverRequested {
                requestid: requestid.clone(),
            },
        }],
        move || owned.audit(&caller),
    )
    .await?;
    tracing::info!(requestid = %requestid, cid = %cid, status = pin.status.as_str(), "pin recovery requested");
    Ok(HttpResponse::Accepted().json(json!({
        "requestid": requestid,
        "cid": pin.cid,
        "status": pin.status.as_str(),
    })))
}
