//! The five operations of the Pinning Service API.

use actix_web::{web, HttpRequest, HttpResponse};
use pinhive_events::{Envelope, Event, PinRequested};
use pinhive_log::{Position, Record};
use tracing::Instrument;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::model::{parse_list_query, pin_status_json, PinBody, PinResultsJson, ValidatedPin};
use crate::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/pins")
            .route(web::get().to(list_pins))
            .route(web::post().to(add_pin)),
    )
    .service(
        web::resource("/pins/{requestid}")
            .route(web::get().to(get_pin))
            .route(web::post().to(replace_pin))
            .route(web::delete().to(delete_pin)),
    );
}

/// Multiaddrs of reachable nodes: the delegates shown while a pin has no replica yet.
pub fn fallback_delegates(state: &AppState) -> Vec<String> {
    state
        .registry
        .entries()
        .into_iter()
        .filter(|e| e.health.reachable)
        .filter_map(|e| e.health.identity)
        .flat_map(|i| i.addresses)
        .take(20)
        .collect()
}

async fn load_owned_pin(
    state: &AppState,
    caller: &Caller,
    requestid: String,
) -> Result<pinhive_domain::PinRecord, ApiError> {
    let store = state.store.clone();
    let lookup = requestid.clone();
    let pin = web::block(move || store.get_pin(&lookup)).await??;
    match pin {
        // A foreign pin is indistinguishable from a missing one.
        Some(pin) if pin.owner == caller.owner => Ok(pin),
        _ => Err(ApiError::not_found(format!(
            "no pin with requestid {requestid}"
        ))),
    }
}

/// Appends envelopes durably, then waits (bounded) until their shards applied them. Each
/// envelope carries the request's trace context, so the shard continues the same trace.
async fn append_and_wait(state: &AppState, envelopes: &[Envelope]) -> Result<(), ApiError> {
    let traceparent = pinhive_telemetry::current_traceparent();
    let records: Vec<Record> = envelopes
        .iter()
        .map(|envelope| {
            let mut envelope = envelope.clone();
            if envelope.traceparent.is_none() {
                envelope.traceparent = traceparent.clone();
            }
            Record::from_envelope(&envelope)
        })
        .collect();
    let append = tracing::info_span!("log.append", records = records.len());
    let positions: Vec<Position> = state.log.append(records).instrument(append).await?;
    let wait = tracing::info_span!("shard.wait_applied");
    for position in positions {
        // A partition another instance owns is applied there; nothing to wait for here.
        if !state.orchestrator.owns(position.partition) {
            continue;
        }
        if !state
            .orchestrator
            .wait_applied(position, state.config.apply_wait)
            .instrument(wait.clone())
            .await
        {
            tracing::warn!(
                partition = position.partition,
                offset = position.offset,
                "event durable but not applied within the wait bound"
            );
        }
    }
    Ok(())
}

fn pin_requested(
    state: &AppState,
    caller: &Caller,
    pin: ValidatedPin,
    replaces: Option<pinhive_events::Replaces>,
) -> Envelope {
    let requestid = pinhive_events::new_event_id();
    Envelope::new(
        pin.cid.clone(),
        Event::PinRequested(PinRequested {
            requestid,
            owner: caller.owner.clone(),
            cid: pin.cid,
            name: pin.name,
            origins: pin.origins,
            meta: pin.meta,
            created_ns: state.next_created_ns(),
            replicas_min: state.config.replicas_min,
            replicas_max: state.config.replicas_max,
            replaces,
        }),
    )
}

/// Answers 202 with the pin as the shard materialized it; if the shard has not applied the
/// (already durable) request within the wait bound, with the request itself as `queued`.
async fn respond_with_pin(
    state: &AppState,
    request: &PinRequested,
) -> Result<HttpResponse, ApiError> {
    let store = state.store.clone();
    let lookup = request.requestid.clone();
    let pin = web::block(move || store.get_pin(&lookup)).await??;
    let pin = pin.unwrap_or_else(|| pinhive_domain::PinRecord::queued(request));
    Ok(HttpResponse::Accepted().json(pin_status_json(pin, &fallback_delegates(state))))
}

async fn add_pin(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<PinBody>,
) -> Result<HttpResponse, ApiError> {
    let pin = body.into_inner().validate()?;
    let envelope = pin_requested(&state, &caller, pin, None);
    let Event::PinRequested(request) = &envelope.event else {
        return Err(ApiError::internal(
            "pin request envelope without a pin request",
        ));
    };
    let request = request.clone();
    append_and_wait(&state, std::slice::from_ref(&envelope)).await?;
    tracing::debug!(requestid = %request.requestid, cid = %request.cid, "pin request accepted");
    respond_with_pin(&state, &request).await
}

async fn list_pins(
    state: web::Data<AppState>,
    caller: Caller,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let params: Vec<(String, String)> = serde_urlencoded::from_str(request.query_string())
        .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))?;
    let query = parse_list_query(&caller.owner, &params)?;
    let store = state.store.clone();
    let partitions = state.log.partition_count();
    let page = web::block(move || store.list_pins(&query, partitions)).await??;
    let delegates = fallback_delegates(&state);
    Ok(HttpResponse::Ok().json(PinResultsJson {
        count: page.count,
        results: page
            .results
            .into_iter()
            .map(|pin| pin_status_json(pin, &delegates))
            .collect(),
    }))
}

async fn get_pin(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let pin = load_owned_pin(&state, &caller, path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(pin_status_json(pin, &fallback_delegates(&state))))
}

async fn replace_pin(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<PinBody>,
) -> Result<HttpResponse, ApiError> {
    let old = load_owned_pin(&state, &caller, path.into_inner()).await?;
    let pin = body.into_inner().validate()?;
    let replaces = pinhive_events::Replaces {
        requestid: old.requestid.clone(),
        cid: old.cid.clone(),
    };
    let new = pin_requested(&state, &caller, pin, Some(replaces));
    let Event::PinRequested(request) = &new.event else {
        return Err(ApiError::internal(
            "pin request envelope without a pin request",
        ));
    };
    let request = request.clone();
    let requestid = request.requestid.clone();
    // The old pin leaves the API at once but keeps holding its content on the nodes until
    // the new pin settles (ReplaceSettled), so blocks shared by both are never collected.
    let retire = Envelope::new(
        old.cid.clone(),
        Event::PinReplaced {
            requestid: old.requestid.clone(),
            replaced_by: requestid.clone(),
        },
    );
    append_and_wait(&state, &[new, retire]).await?;
    respond_with_pin(&state, &request).await
}

async fn delete_pin(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let pin = load_owned_pin(&state, &caller, path.into_inner()).await?;
    let envelope = Envelope::new(
        pin.cid.clone(),
        Event::UnpinRequested {
            requestid: pin.requestid,
            owner: caller.owner,
        },
    );
    append_and_wait(&state, std::slice::from_ref(&envelope)).await?;
    Ok(HttpResponse::Accepted().finish())
}
