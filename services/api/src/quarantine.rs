//! Quarantined CIDs (admin token required): CIDs whose records their shard dead-letters
//! because a stored row they need cannot be decoded (docs/operations.md, "Quarantined CIDs").
//!
//! * `GET /admin/quarantine`: every quarantined CID, with the partition, the reason (the
//!   corrupt row) and when.
//! * `DELETE /admin/quarantine/{cid}`: ends the quarantine; the shard applies the CID's
//!   records again from the next one it reads (204; 404 if it was not quarantined). Records
//!   dead-lettered meanwhile stay dead letters.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::auth::AdminCaller;
use crate::error::ApiError;
use crate::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    use crate::routing::resource;
    use actix_web::http::Method;
    cfg.service(resource(
        "/admin/quarantine",
        [(Method::GET, web::to(list))],
    ))
    .service(resource(
        "/admin/quarantine/{cid}",
        [(Method::DELETE, web::to(clear))],
    ));
}

/// One bounded read per log partition (at most `QUARANTINE_LIMIT` entries each).
async fn list(
    state: web::Data<AppState>,
    AdminCaller(caller): AdminCaller,
) -> Result<HttpResponse, ApiError> {
    let partitions = state.log.partition_count();
    let store = state.store.clone();
    let entries = web::block(move || {
        let mut entries = Vec::new();
        for partition in 0..partitions {
            entries.extend(store.quarantined(partition)?);
        }
        Ok::<_, pinhive_store::StoreError>(entries)
    })
    .await??;
    // Quarantined records are any owner's.
    crate::audit::admin_read(
        &caller,
        None,
        "quarantine",
        &format!("{} quarantined CID(s)", entries.len()),
    );
    Ok(HttpResponse::Ok().json(json!({ "quarantined": entries })))
}

async fn clear(
    state: web::Data<AppState>,
    _admin: AdminCaller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    // The shard keys records (and so the quarantine) by the canonical CID.
    let cid = pinhive_domain::canonical_cid(&path.into_inner())?;
    let partition = pinhive_log::partition_for(cid.as_bytes(), state.log.partition_count());
    let store = state.store.clone();
    let cleared = {
        let cid = cid.clone();
        web::block(move || store.clear_quarantine(partition, &cid)).await??
    };
    if !cleared {
        return Err(ApiError::not_found(format!("CID {cid} is not quarantined")));
    }
    tracing::info!(cid = %cid, partition, "quarantine cleared");
    Ok(HttpResponse::NoContent().finish())
}
