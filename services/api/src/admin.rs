//! Admin API (admin token required) plus the unauthenticated `/health` and `/ready`.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;

use pinhive_domain::tokens::Scope;

use crate::auth::{AdminCaller, PinReader, S3Ingester};
use crate::error::ApiError;
use crate::model::format_created;
use crate::AppState;

/// One resource per path: another method answers 405 with a `Failure` body and `Allow`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    use crate::routing::resource;
    use actix_web::http::Method;
    let get = |route| [(Method::GET, route)];
    cfg.service(resource("/health", get(web::to(health))))
        .service(resource("/ready", get(web::to(ready))))
        .service(resource("/metrics", get(web::to(crate::metrics::metrics))))
        .service(resource(
            "/admin/pins/{requestid}/history",
            get(web::to(pin_history)),
        ))
        .service(resource("/admin/dead-letters", get(web::to(dead_letters))))
        .service(resource("/admin/shards", get(web::to(shards))))
        .service(resource(
            "/admin/s3/events",
            [(Method::POST, web::to(s3_events))],
        ))
        .service(resource("/admin/s3/objects", get(web::to(s3_objects))))
        .service(resource("/admin/s3/cids/{cid}", get(web::to(s3_by_cid))));
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready when the log takes appends, the store answers and at least one IPFS node is
/// reachable; the body says which dependency fails and what to configure. The log's part is
/// what its last appends found (no broker round trip per call).
async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let store = state.store.clone();
    let store_ok = web::block(move || store.get_token("readiness-probe"))
        .await
        .map(|r| r.is_ok())
        .unwrap_or(false);
    let partitions = state.log.partition_count();
    let log_health = state.log.health();
    let log_ok = partitions > 0 && log_health.available;
    let log_hint = (!log_health.available).then_some(
        "appends to the log fail (Kafka brokers unreachable or too few in-sync replicas): \
         writes answer 503 until the log takes them again",
    );
    let millis = |ms: Option<i64>| ms.map(|ms| format_created(ms.saturating_mul(1_000_000)));
    let nodes: Vec<_> = state
        .registry
        .entries()
        .into_iter()
        .map(|e| {
            json!({
                "id": e.descriptor.id,
                "rpc_url": e.descriptor.rpc_url,
                "reachable": e.health.reachable,
                "error": e.health.last_error,
            })
        })
        .collect();
    let reachable = state.registry.reachable_count();
    let ipfs_hint = if nodes.is_empty() {
        Some(
            "no IPFS node configured: start with --ipfs-node http://HOST:5001 or POST /admin/nodes",
        )
    } else if reachable == 0 {
        Some("no configured IPFS node is reachable: check that the daemon runs and its RPC address")
    } else {
        None
    };
    let ready = store_ok && log_ok && reachable > 0;
    let body = json!({
        "ready": ready,
        "log": {
            "ok": log_ok,
            "partitions": partitions,
            "available": log_health.available,
            "last_append_ok": millis(log_health.last_success_ms),
            "unavailable_since": millis(log_health.unavailable_since_ms),
            "failed_appends": log_health.failed_appends,
            "error": log_health.last_error,
            "hint": log_hint,
        },
        "store": {"ok": store_ok},
        "ipfs": {"ok": reachable > 0, "reachable": reachable, "nodes": nodes, "hint": ipfs_hint},
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

#[derive(Serialize)]
struct HistoryEntry {
    offset: u64,
    partition: u32,
    time: String,
    event_id: String,
    kind: &'static str,
    event: pinhive_events::Event,
}

/// The events that shaped one pin: its request, the allocations, every replica outcome and
/// target change of its CID since the pin was created, oldest first.
async fn pin_history(
    state: web::Data<AppState>,
    PinReader(caller): PinReader,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let requestid = path.into_inner();
    let store = state.store.clone();
    let lookup = requestid.clone();
    let pin = web::block(move || store.get_pin(&lookup)).await??;
    let pin = match pin {
        Some(pin) => {
            caller.check_pin(&pin.owner, &requestid, Scope::PinsRead, "history")?;
            pin
        }
        None => {
            return Err(ApiError::not_found(format!(
                "no pin with requestid {requestid}"
            )))
        }
    };
    let store = state.store.clone();
    let limit = query.limit.unwrap_or(1000).clamp(1, 1000);
    // The journal is kept per CID state, which is keyed by the canonical CID.
    let cid = pinhive_domain::canonical_cid(&pin.cid).unwrap_or_else(|_| pin.cid.clone());
    let after = query.after;
    // A pin made before CID keys were canonical has its early events under the spelling it
    // was made with (that journal stays where it was; docs/api.md): shown first, on page one.
    let legacy = (after.is_none() && cid != pin.cid).then(|| pin.cid.clone());
    let entries = web::block(move || {
        let mut entries = match legacy {
            Some(legacy) => store.journal(&legacy, None, limit)?,
            None => Vec::new(),
        };
        let room = limit.saturating_sub(entries.len());
        entries.extend(store.journal(&cid, after, room.max(1))?);
        entries.truncate(limit);
        Ok::<_, pinhive_store::StoreError>(entries)
    })
    .await??;
    use pinhive_events::Event;
    let relevant = entries.into_iter().filter(|entry| match &entry.event {
        Event::PinRequested(r) => r.requestid == requestid,
        Event::UnpinRequested { requestid: r, .. }
        | Event::PinReplaced { requestid: r, .. }
        | Event::PinExpired { requestid: r, .. }
        | Event::PinExpirySet { requestid: r, .. } => *r == requestid,
        _ => entry.timestamp_ns >= pin.created_ns,
    });
    let events: Vec<HistoryEntry> = relevant
        .map(|entry| HistoryEntry {
            offset: entry.offset,
            partition: entry.partition,
            time: format_created(entry.timestamp_ns),
            event_id: entry.event_id,
            kind: entry.event.kind(),
            event: entry.event,
        })
        .collect();
    // History is kept for the journal retention only: say from when it is complete.
    let retention = state.orchestrator.journal_retention();
    let retained_since = pinhive_events::now_ns()
        .saturating_sub(i64::try_from(retention.as_nanos()).unwrap_or(i64::MAX));
    Ok(HttpResponse::Ok().json(json!({
        "requestid": pin.requestid,
        "cid": pin.cid,
        "events": events,
        "retained_since": format_created(retained_since.max(0)),
    })))
}

#[derive(Deserialize)]
struct PageQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

#[derive(Deserialize)]
struct DeadLetterQuery {
    /// `<partition>:<offset>` of the last letter already seen (the previous page's `next`).
    after: Option<String>,
    limit: Option<usize>,
}

/// Parses a dead-letter cursor `<partition>:<offset>`.
fn parse_dead_letter_cursor(text: &str) -> Result<(u32, u64), ApiError> {
    let malformed = || {
        ApiError::bad_request(format!(
            "after must be a dead-letter cursor <partition>:<offset> (a previous page's next), \
             not {text:?}"
        ))
    };
    let (partition, offset) = text.split_once(':').ok_or_else(malformed)?;
    let partition = partition.parse::<u32>().map_err(|_| malformed())?;
    let offset = offset.parse::<u64>().map_err(|_| malformed())?;
    Ok((partition, offset))
}

/// Dead letters in (partition, offset) order, `limit` per page (default 100, at most 1000).
/// `next` is the cursor of the page's last letter when the page is full (pass it as `after`
/// for the following page, which may be empty), and null otherwise.
async fn dead_letters(
    state: web::Data<AppState>,
    _admin: AdminCaller,
    query: web::Query<DeadLetterQuery>,
) -> Result<HttpResponse, ApiError> {
    let after = query
        .after
        .as_deref()
        .map(parse_dead_letter_cursor)
        .transpose()?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let store = state.store.clone();
    let letters = web::block(move || store.dead_letters(after, limit)).await??;
    let next = match letters.last() {
        Some(last) if letters.len() == limit => Some(format!("{}:{}", last.partition, last.offset)),
        _ => None,
    };
    Ok(HttpResponse::Ok().json(json!({"dead_letters": letters, "next": next})))
}

async fn shards(state: web::Data<AppState>, _admin: AdminCaller) -> HttpResponse {
    let snapshots = state.orchestrator.snapshots().await;
    let with_lag: Vec<_> = snapshots
        .into_iter()
        .map(|s| {
            let end = state.log.end_offset(s.partition);
            json!({"snapshot": s, "log_end": end, "lag_bytes": end.saturating_sub(s.next_offset)})
        })
        .collect();
    HttpResponse::Ok().json(json!({
        "owned_partitions": state.orchestrator.owned_partitions(),
        "shards": with_lag,
    }))
}

/// S3 event-notification webhook (the same JSON an S3 gateway publishes to Kafka).
async fn s3_events(
    state: web::Data<AppState>,
    S3Ingester(caller): S3Ingester,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    use pinhive_orchestrator::s3::S3Error;
    match state.s3.ingest(&body).await {
        Ok(outcomes) => {
            crate::audit::record(
                crate::audit::Action::S3Webhook,
                &caller,
                &state.config.s3_owner,
                &format!("{} notification record(s) applied", outcomes.len()),
            );
            Ok(HttpResponse::Ok().json(json!({"applied": outcomes})))
        }
        Err(S3Error::Malformed(reason)) => Err(ApiError::bad_request(reason)),
        Err(S3Error::Transient(reason)) => {
            Err(ApiError::new(crate::error::ErrorCode::Unavailable, reason))
        }
        Err(S3Error::OverQuota { exceeded, .. }) => Err(ApiError::from(
            pinhive_orchestrator::quota::QuotaError::Exceeded(exceeded),
        )),
    }
}

#[derive(Deserialize)]
struct S3ObjectsQuery {
    bucket: String,
    #[serde(default)]
    prefix: String,
    after: Option<String>,
    limit: Option<usize>,
}

/// Objects of a bucket by key prefix (keyset pagination with `after`), with their CIDs.
async fn s3_objects(
    state: web::Data<AppState>,
    _admin: AdminCaller,
    query: web::Query<S3ObjectsQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let store = state.store.clone();
    let objects = web::block(move || {
        store.list_s3_objects(&query.bucket, &query.prefix, query.after.as_deref(), limit)
    })
    .await??;
    Ok(HttpResponse::Ok().json(json!({"objects": objects})))
}

/// S3 objects whose content is this CID.
async fn s3_by_cid(
    state: web::Data<AppState>,
    _admin: AdminCaller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    // Any spelling of the CID finds the objects: the mapping is kept by the canonical form, and
    // objects an earlier release mapped by the spelling in their metadata by that spelling.
    let given = path.into_inner();
    let cid = pinhive_domain::canonical_cid(&given)?;
    let store = state.store.clone();
    let objects = web::block(move || {
        let mut objects = store.s3_objects_by_cid(&cid, 1000)?;
        if given.trim() != cid {
            let room = 1000usize.saturating_sub(objects.len());
            objects.extend(store.s3_objects_by_cid(given.trim(), room)?);
        }
        Ok::<_, pinhive_store::StoreError>(objects)
    })
    .await??;
    Ok(HttpResponse::Ok().json(json!({"objects": objects})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_cursors_are_partition_colon_offset() {
        assert_eq!(parse_dead_letter_cursor("3:17").unwrap(), (3, 17));
        assert_eq!(
            parse_dead_letter_cursor(&format!("{}:{}", u32::MAX, u64::MAX)).unwrap(),
            (u32::MAX, u64::MAX)
        );
        for bad in [
            "",
            "3",
            "3:",
            ":17",
            "3:17:1",
            "-1:2",
            "a:b",
            "3;17",
            "4294967296:0",
        ] {
            assert!(parse_dead_letter_cursor(bad).is_err(), "{bad:?}");
        }
    }
}
