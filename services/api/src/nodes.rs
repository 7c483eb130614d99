//! `/admin/nodes`: the IPFS nodes, their agreed state and health, and the operator's changes
//! (register, drain, undrain, remove) — each a control-log event every instance applies.

use actix_web::{web, HttpResponse};
use pinhive_events::{NodeDescriptor, NodeState};
use pinhive_orchestrator::control::ControlError;
use pinhive_store::{node_scope, total_count};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::AdminCaller;
use crate::error::{ApiError, ErrorCode};
use crate::model::format_created;
use crate::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    use crate::routing::resource;
    use actix_web::http::Method;
    cfg.service(resource(
        "/admin/nodes",
        [
            (Method::GET, web::to(list_nodes)),
            (Method::POST, web::to(add_node)),
        ],
    ))
    .service(resource(
        "/admin/nodes/{id}",
        [
            (Method::GET, web::to(get_node)),
            (Method::DELETE, web::to(remove_node)),
        ],
    ))
    .service(resource(
        "/admin/nodes/{id}/drain",
        [(Method::POST, web::to(drain_node))],
    ))
    .service(resource(
        "/admin/nodes/{id}/undrain",
        [(Method::POST, web::to(undrain_node))],
    ));
}

/// One node as the API shows it. `replicas` (allocated or pinned replicas it holds, from the
/// per-partition node counters) costs one counter read per log partition.
async fn describe(state: &web::Data<AppState>, id: &str) -> Result<Value, ApiError> {
    let record = state
        .nodes
        .node(id)
        .ok_or_else(|| ApiError::not_found(format!("no node {id}")))?;
    let store = state.store.clone();
    let (scope, partitions) = (node_scope(id), state.log.partition_count());
    let replicas = web::block(move || {
        total_count(
            &*store,
            &scope,
            pinhive_domain::PinStatus::Pinned,
            partitions,
        )
    })
    .await??;
    let health = state.registry.get(id).map(|entry| entry.health);
    let time = |ns: i64| format_created(ns);
    Ok(json!({
        "id": record.descriptor.id,
        "rpc_url": pinhive_ipfs::auth::redact_url(&record.descriptor.rpc_url),
        "region": record.descriptor.region,
        "weight": record.descriptor.weight,
        "state": record.state.as_str(),
        "state_since": time(record.since_ns),
        "state_reason": record.reason,
        "replicas": replicas,
        "drained": record.state == NodeState::Draining && replicas == 0,
        "reachable": health.as_ref().map(|h| h.reachable),
        "peer_id": health.as_ref().and_then(|h| h.identity.as_ref()).map(|i| i.peer_id.clone()),
        "addresses": health.as_ref().and_then(|h| h.identity.as_ref()).map(|i| i.addresses.clone()).unwrap_or_default(),
        "free_bytes": health.as_ref().and_then(|h| h.free_bytes),
        "breaker": health.as_ref().map(|h| format!("{:?}", h.breaker).to_lowercase()),
        "queue": health.as_ref().map(|h| h.in_flight),
        "error_rate": health.as_ref().and_then(|h| h.error_rate),
        "last_heartbeat": health.as_ref().and_then(|h| h.last_heartbeat_ns).map(time),
        "error": health.and_then(|h| h.last_error),
        // The last anti-entropy pass over the node on this instance (its partitions).
        "anti_entropy": state.orchestrator.anti_entropy_report(id).map(|report| json!({
            "finished": time(report.finished_ns),
            "duration_ms": report.duration_ms,
            "partitions": report.partitions,
            "believed": report.believed,
            "listed": report.listed,
            "checked": report.checked,
            "missing": report.missing,
            "unknown": report.unknown,
            "unknown_removed": report.removed,
            "unknown_cids": report.unknown_cids,
            "sampled": report.sampled,
            "unreadable": report.unreadable,
            "unreadable_cids": report.unreadable_cids,
            "filter_bytes": report.filter_bytes,
            "saturated": report.saturated,
            "error": report.error,
        })),
    }))
}

async fn list_nodes(
    state: web::Data<AppState>,
    _admin: AdminCaller,
) -> Result<HttpResponse, ApiError> {
    let mut nodes = Vec::new();
    for record in state.nodes.nodes() {
        nodes.push(describe(&state, &record.descriptor.id).await?);
    }
    Ok(HttpResponse::Ok().json(json!({"nodes": nodes})))
}

async fn get_node(
    state: web::Data<AppState>,
    _admin: AdminCaller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(describe(&state, &path.into_inner()).await?))
}

async fn add_node(
    state: web::Data<AppState>,
    AdminCaller(caller): AdminCaller,
    body: web::Json<NodeDescriptor>,
) -> Result<HttpResponse, ApiError> {
    let node = body.into_inner();
    if node.id.is_empty() || node.id.len() > 128 || node.id.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "node id must be 1 to 128 characters without control characters",
        ));
    }
    let node = NodeDescriptor {
        rpc_url: check_url(&node.rpc_url)?,
        ..node
    };
    state
        .nodes
        .register(node.clone())
        .await
        .map_err(control_error)?;
    // The RPC URL is left out: it may carry credentials.
    let detail = format!("region {:?}, weight {}", node.region, node.weight);
    crate::audit::record(crate::audit::Action::NodeAdd, &caller, &node.id, &detail);
    Ok(HttpResponse::Created().json(describe(&state, &node.id).await?))
}

fn check_url(url: &str) -> Result<String, ApiError> {
    let trimmed = url.trim().trim_end_matches('/');
    let shown = pinhive_ipfs::auth::redact_url(trimmed);
    if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) || trimmed.len() < 10 {
        return Err(ApiError::bad_request(format!(
            "rpc_url must be an http(s) URL such as http://127.0.0.1:5001, not {shown:?}"
        )));
    }
    // A node's descriptor travels in control-log events and shows in this API: a credential
    // goes into each instance's `[ipfs_auth]` instead (docs/security.md).
    if pinhive_ipfs::auth::has_credentials(trimmed) {
        return Err(ApiError::bad_request(format!(
            "rpc_url must not carry credentials ({shown}): configure the node's Kubo RPC \
             credential on every instance ([ipfs_auth] or --ipfs-auth-file, keyed by node id)"
        )));
    }
    Ok(trimmed.to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveQuery {
    #[serde(default)]
    force: bool,
}

/// Removes a node. A node still holding replicas is refused (409: drain it first) unless
/// `force=true`: its replicas are then lost to pinhive, and made again elsewhere.
async fn remove_node(
    state: web::Data<AppState>,
    AdminCaller(caller): AdminCaller,
    path: web::Path<String>,
    query: web::Query<RemoveQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let node = describe(&state, &id).await?;
    let replicas = node["replicas"].as_u64().unwrap_or(0);
    if replicas > 0 && !query.force {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("node {id} still holds {replicas} replicas: drain it first (POST /admin/nodes/{id}/drain, `pinhive nodes drain {id}`) and remove it once `drained` is true, or remove it with ?force=true"),
        ));
    }
    state
        .nodes
        .remove(&id, "removed by an operator")
        .await
        .map_err(control_error)?;
    let detail = format!("{replicas} replicas, force {}", query.force);
    crate::audit::record(crate::audit::Action::NodeRemove, &caller, &id, &detail);
    Ok(HttpResponse::NoContent().finish())
}

async fn drain_node(
    state: web::Data<AppState>,
    AdminCaller(caller): AdminCaller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_draining(state, &caller, path.into_inner(), true).await
}

async fn undrain_node(
    state: web::Data<AppState>,
    AdminCaller(caller): AdminCaller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_draining(state, &caller, path.into_inner(), false).await
}

/// Drain (202: the replicas move off over time) or take back (200) a node.
async fn set_draining(
    state: web::Data<AppState>,
    caller: &crate::auth::Caller,
    id: String,
    draining: bool,
) -> Result<HttpResponse, ApiError> {
    let reason = if draining {
        "drained by an operator"
    } else {
        "taken back by an operator"
    };
    state
        .nodes
        .set_draining(&id, draining, reason)
        .await
        .map_err(control_error)?;
    let action = if draining {
        crate::audit::Action::NodeDrain
    } else {
        crate::audit::Action::NodeUndrain
    };
    crate::audit::record(action, caller, &id, reason);
    let node = describe(&state, &id).await?;
    Ok(if draining {
        HttpResponse::Accepted().json(node)
    } else {
        HttpResponse::Ok().json(node)
    })
}

fn control_error(error: ControlError) -> ApiError {
    match error {
        ControlError::NoSuchNode(id) => ApiError::not_found(format!("no node {id}")),
        other => ApiError::new(ErrorCode::Unavailable, other.to_string()),
    }
}
