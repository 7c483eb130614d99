//! Analytics routes: `POST /access` (access events from gateways and log shippers) and the
//! admin views of the optimizer (`/admin/analytics`, `/admin/pins/{requestid}/analytics`).

use actix_web::{web, HttpResponse};
use pinhive_analytics::IngestError;
use pinhive_events::access::AccessBatch;
use serde_json::json;

use pinhive_domain::tokens::Scope;

use crate::auth::{AccessIngester, AdminCaller, PinReader};
use crate::error::{ApiError, ErrorCode};
use crate::owned::{owned_pin, sees_redacted, Access};
use crate::AppState;

/// Largest `POST /access` body: a full batch of long CIDs fits.
const MAX_ACCESS_BODY: usize = 4 << 20;

pub fn routes(cfg: &mut web::ServiceConfig) {
    use crate::routing::resource;
    use actix_web::http::Method;
    cfg.service(
        resource("/access", [(Method::POST, web::to(post_access))])
            .app_data(web::PayloadConfig::default().limit(MAX_ACCESS_BODY)),
    )
    .service(resource(
        "/admin/analytics",
        [(Method::GET, web::to(summary))],
    ))
    .service(resource(
        "/admin/analytics/cids/{cid}",
        [(Method::GET, web::to(cid_analytics))],
    ))
    .service(resource(
        "/admin/pins/{requestid}/analytics",
        [(Method::GET, web::to(pin_analytics))],
    ));
}

fn analytics(state: &AppState) -> Result<&pinhive_analytics::Analytics, ApiError> {
    state.analytics.as_deref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unavailable,
            "analytics is disabled on this instance ([analytics] enabled = false)",
        )
    })
}

/// A batch of access events (JSON Schema: schemas/access/access-batch.schema.json). Admin
/// tokens only: demand steers where every tenant's replicas go and what the budget buys.
async fn post_access(
    state: web::Data<AppState>,
    _ingester: AccessIngester,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let analytics = analytics(&state)?;
    let batch: AccessBatch = serde_json::from_slice(&body).map_err(|error| {
        pinhive_analytics::metrics::METRICS
            .access_events
            .with_label_values(&["rejected"])
            .inc();
        ApiError::bad_request(format!("not an access batch: {error}"))
    })?;
    match analytics.ingest(&batch.events).await {
        Ok(accepted) => Ok(HttpResponse::Accepted().json(json!({"accepted": accepted}))),
        Err(error @ (IngestError::Invalid { .. } | IngestError::BatchSize(_))) => {
            Err(ApiError::bad_request(error.to_string()))
        }
        Err(error @ (IngestError::Disabled | IngestError::Overloaded)) => {
            Err(ApiError::new(ErrorCode::Unavailable, error.to_string()))
        }
        Err(IngestError::Log(error)) => Err(ApiError::new(
            ErrorCode::Unavailable,
            format!("access log: {error}"),
        )),
    }
}

/// Cluster view: per local access partition, the last epoch's budget, water level and
/// replica-target distribution.
async fn summary(
    state: web::Data<AppState>,
    _admin: AdminCaller,
) -> Result<HttpResponse, ApiError> {
    let analytics = analytics(&state)?;
    let partitions = analytics.summary().await;
    let budget: u64 = partitions.iter().map(|p| p.budget_bytes).sum();
    let used: u64 = partitions.iter().map(|p| p.budget_used_bytes).sum();
    Ok(HttpResponse::Ok().json(json!({
        "regions": analytics.regions(),
        "budget_bytes": budget,
        "budget_used_bytes": used,
        "partitions": partitions,
    })))
}

/// Demand and last decision of any CID (tracked or not), by CID: what an operator looks up
/// from a gateway log line.
async fn cid_analytics(
    state: web::Data<AppState>,
    _admin: AdminCaller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let analytics = analytics(&state)?;
    let cid = pinhive_domain::canonical_cid(&path.into_inner())
        .map_err(|rejection| ApiError::bad_request(rejection.to_string()))?;
    let tracked = analytics.explain(&cid).await.map_err(|_| busy())?;
    Ok(HttpResponse::Ok().json(json!({
        "cid": cid,
        "tracked": tracked.is_some(),
        "analytics": tracked,
    })))
}

/// Why a pin has the replicas it has: demand by region, current and optimal replicas, the
/// recommended regions and nodes, and the optimizer's reason. The pin's owner or an admin.
async fn pin_analytics(
    state: web::Data<AppState>,
    PinReader(caller): PinReader,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let analytics = analytics(&state)?;
    let requestid = path.into_inner();
    let owned = owned_pin(
        &state,
        &caller,
        &requestid,
        Access::OwnerOrAdmin {
            scope: Scope::PinsRead,
            what: "analytics",
        },
    )
    .await?;
    let row = &owned.row;
    let pin = &row.record;
    let cid = pinhive_domain::canonical_cid(&pin.cid).unwrap_or_else(|_| pin.cid.clone());
    let store = state.store.clone();
    let key = cid.clone();
    let cid_state = web::block(move || store.load_cid(&key)).await??;
    let tracked = analytics.explain(&cid).await.map_err(|_| busy())?;
    // A tenant sees its own pin's bounds and how many replicas are in which status; node ids,
    // raw errors and the bounds other pins of the CID asked for are for admins
    // (docs/security.md).
    let redacted = sees_redacted(&caller);
    let (desired, preferred) = match &cid_state {
        Some(s) => (s.desired_replicas(), s.preferred_regions.clone()),
        None => (0, Vec::new()),
    };
    let bounds = if redacted {
        Some((row.replicas_min, row.replicas_max))
    } else {
        cid_state.as_ref().and_then(|s| s.replica_bounds())
    };
    let nodes: Vec<serde_json::Value> = cid_state
        .iter()
        .flat_map(|s| s.replicas.iter())
        .map(|(node, r)| {
            let status = format!("{:?}", r.status).to_lowercase();
            if redacted {
                json!({"status": status})
            } else {
                json!({"node": node, "status": status, "error": r.last_error})
            }
        })
        .collect();
    // Reachable nodes in the preferred regions: where the allocator places new replicas.
    let recommended_nodes: Vec<String> = if redacted {
        Vec::new()
    } else {
        state
            .registry
            .entries()
            .into_iter()
            .filter(|e| preferred.contains(&e.descriptor.region) && e.health.reachable)
            .map(|e| e.descriptor.id)
            .collect()
    };
    let current = nodes.len();
    owned.audit(&caller);
    Ok(HttpResponse::Ok().json(json!({
        "requestid": requestid,
        "cid": cid,
        "replicas": {
            "current": current,
            "optimal": desired,
            "min": bounds.map(|b| b.0),
            "max": bounds.map(|b| b.1),
            "nodes": nodes,
        },
        "recommended_regions": preferred,
        "recommended_nodes": recommended_nodes,
        "tracked": tracked.is_some(),
        "analytics": tracked,
        "reason": tracked
            .as_ref()
            .and_then(|t| t.decision.as_ref().map(|d| d.reason.clone()))
            .unwrap_or_else(|| "not among the tracked heavy hitters: demand too low to earn replicas above min".into()),
    })))
}

/// 503 + `Retry-After`: the CID's access partition did not answer in time (it may be
/// rebuilding demand after a handover).
fn busy() -> ApiError {
    ApiError::new(
        ErrorCode::Unavailable,
        "the CID's analytics partition is busy (rebuilding demand?); try again",
    )
    .retry_after(1)
}
