//! The five operations of the Pinning Service API.

use actix_web::{web, HttpRequest, HttpResponse};
use pinhive_domain::command::ReplicaBounds;
use pinhive_domain::quota::Admission;
use pinhive_domain::values::Owner;
use pinhive_domain::{canonical_cid, decide, Cid, Command, Decided, PinRecord};
use pinhive_events::{Envelope, Event, PinRequested};
use pinhive_log::{Position, Record};
use pinhive_orchestrator::quota::Entry;
use tracing::Instrument;

use crate::auth::{Caller, PinsReader, PinsWriter};
use crate::error::ApiError;
use crate::model::{parse_list_query, pin_status_json, PinBody, PinResultsJson};
use crate::owned::{owned_pin, Access};
use crate::AppState;

/// Other methods on these paths answer 405 with a `Failure` body and `Allow`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    use crate::routing::resource;
    use actix_web::http::Method;
    cfg.service(resource(
        "/pins",
        [
            (Method::GET, web::to(list_pins)),
            (Method::POST, web::to(add_pin)),
        ],
    ))
    .service(resource(
        "/pins/{requestid}",
        [
            (Method::GET, web::to(get_pin)),
            (Method::POST, web::to(replace_pin)),
            (Method::DELETE, web::to(delete_pin)),
        ],
    ));
}

/// Delegates shown while nothing is allocated to a pin yet: the dialable addresses of the node
/// the allocator ranks first for the CID among those with known addresses (reachable ones
/// before unreachable), public addresses first.
pub fn fallback_delegates(state: &AppState, canonical_cid: &str) -> Vec<String> {
    // Read under the registry's lock, without copying its entries: this runs on every POST.
    let addresses = state.registry.with_entries(|entries| {
        let known: Vec<&pinhive_ipfs::registry::NodeEntry> =
            entries.filter(|e| e.health.identity.is_some()).collect();
        let mut candidates: Vec<String> = known.iter().map(|e| e.descriptor.id.clone()).collect();
        pinhive_domain::allocator::rank(canonical_cid, &mut candidates);
        let entry = |id: &String| known.iter().find(|e| &e.descriptor.id == id);
        let reachable = |id: &String| entry(id).is_some_and(|e| e.health.reachable);
        candidates.sort_by_key(|id| !reachable(id)); // stable: keeps the rank within each group
        candidates
            .first()
            .and_then(entry)
            .and_then(|e| e.health.identity.as_ref())
            .map(|identity| identity.addresses.clone())
    });
    pinhive_domain::values::dialable_first(
        addresses.unwrap_or_default(),
        pinhive_domain::values::MAX_ORIGINS,
    )
}

/// Renders a pin with its delegates (see [`fallback_delegates`]).
pub fn render(state: &AppState, pin: PinRecord) -> crate::model::PinStatusJson {
    if !pin.delegates.is_empty() {
        return pin_status_json(pin, &[]);
    }
    let canonical = canonical_cid(&pin.cid).unwrap_or_else(|_| pin.cid.clone());
    let fallback = fallback_delegates(state, &canonical);
    pin_status_json(pin, &fallback)
}

async fn load_owned_pin(
    state: &AppState,
    caller: &Caller,
    requestid: String,
) -> Result<PinRecord, ApiError> {
    Ok(owned_pin(state, caller, &requestid, Access::Owner)
        .await?
        .row
        .record)
}

/// Appends the events a command decided durably, then waits (bounded) until their shards
/// applied them. Each envelope carries the request's trace context, so the shard continues the
/// same trace.
pub(crate) async fn append_and_wait(
    state: &AppState,
    decided: Vec<Decided>,
) -> Result<(), ApiError> {
    let traceparent = pinhive_telemetry::current_traceparent();
    let positions = append_decided(state, decided, traceparent).await?;
    wait_applied(state, positions).await;
    Ok(())
}

/// [`append_and_wait`] for an audited change: `audit` writes its line as soon as the events
/// are durable, in a task of its own — a client that goes away while the shard applies them
/// (or before) cannot leave a durable change without its audit line.
pub(crate) async fn append_audited_and_wait(
    state: &web::Data<AppState>,
    decided: Vec<Decided>,
    audit: impl FnOnce() + 'static,
) -> Result<(), ApiError> {
    let traceparent = pinhive_telemetry::current_traceparent();
    let task_state = state.clone();
    let positions = actix_web::rt::spawn(
        async move {
            let positions = append_decided(&task_state, decided, traceparent).await?;
            audit();
            Ok::<_, ApiError>(positions)
        }
        .instrument(tracing::Span::current()),
    )
    .await
    .map_err(ApiError::internal)??;
    wait_applied(state, positions).await;
    Ok(())
}

async fn append_decided(
    state: &AppState,
    decided: Vec<Decided>,
    traceparent: Option<String>,
) -> Result<Vec<Position>, ApiError> {
    let records: Vec<Record> = decided
        .into_iter()
        .map(|Decided { key, event }| {
            let mut envelope = Envelope::new(key, event);
            envelope.traceparent = traceparent.clone();
            Record::from_envelope(&envelope)
        })
        .collect();
    let append = tracing::info_span!("log.append", records = records.len());
    Ok(state.log.append(records).instrument(append).await?)
}

/// Waits (bounded) until the shards applied what was appended at `positions`.
async fn wait_applied(state: &AppState, positions: Vec<Position>) {
    let wait = tracing::info_span!("shard.wait_applied");
    for position in positions {
        // A partition another instance owns is applied there: waited for through a shared
        // store's commit row, or not at all with a store of this instance's own.
        if !state.orchestrator.owns(position.partition) && !state.orchestrator.shared_store() {
            continue;
        }
        if !state
            .orchestrator
            .wait_applied_anywhere(position, state.config.apply_wait)
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
}

fn replica_bounds(state: &AppState) -> Result<ReplicaBounds, ApiError> {
    ReplicaBounds::new(state.config.replicas_min, state.config.replicas_max)
        .map_err(ApiError::internal)
}

/// The pin request a decided command starts with.
fn requested(decided: &[Decided]) -> Result<PinRequested, ApiError> {
    match decided.first().map(|d| &d.event) {
        Some(Event::PinRequested(request)) => Ok(request.clone()),
        _ => Err(ApiError::internal("a pin command decided no pin request")),
    }
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
    let pin = pin.unwrap_or_else(|| PinRecord::queued(request));
    Ok(HttpResponse::Accepted().json(render(state, pin)))
}

/// The owner's quota admits the request (403/429 otherwise, see `ApiError`'s conversion).
async fn admit_quota(
    state: &AppState,
    caller: &Caller,
    admission: Admission,
) -> Result<(), ApiError> {
    let gate = state.orchestrator.quota().clone();
    if gate.quota().is_unlimited() {
        return Ok(());
    }
    let owner = caller.owner.clone();
    web::block(move || gate.admit(&owner, admission, Entry::Http)).await??;
    Ok(())
}

async fn add_pin(
    state: web::Data<AppState>,
    PinsWriter(caller): PinsWriter,
    body: web::Json<PinBody>,
) -> Result<HttpResponse, ApiError> {
    let pin = body
        .into_inner()
        .into_command(&caller.owner, replica_bounds(&state)?)?;
    admit_quota(&state, &caller, Admission::NewPin).await?;
    let decided = decide(Command::Pin {
        pin,
        requestid: pinhive_events::new_event_id(),
        created_ns: state.next_created_ns(),
    })?;
    let request = requested(&decided)?;
    append_and_wait(&state, decided).await?;
    tracing::debug!(requestid = %request.requestid, cid = %request.cid, "pin request accepted");
    respond_with_pin(&state, &request).await
}

async fn list_pins(
    state: web::Data<AppState>,
    PinsReader(caller): PinsReader,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let params: Vec<(String, String)> = serde_urlencoded::from_str(request.query_string())
        .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))?;
    let query = parse_list_query(&caller.owner, &params)?;
    let store = state.store.clone();
    let partitions = state.log.partition_count();
    let page = web::block(move || store.list_pins(&query, partitions)).await??;
    Ok(HttpResponse::Ok().json(PinResultsJson {
        count: page.count,
        results: page
            .results
            .into_iter()
            .map(|pin| render(&state, pin))
            .collect(),
    }))
}

async fn get_pin(
    state: web::Data<AppState>,
    PinsReader(caller): PinsReader,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let pin = load_owned_pin(&state, &caller, path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(render(&state, pin)))
}

async fn replace_pin(
    state: web::Data<AppState>,
    PinsWriter(caller): PinsWriter,
    path: web::Path<String>,
    body: web::Json<PinBody>,
) -> Result<HttpResponse, ApiError> {
    let old = load_owned_pin(&state, &caller, path.into_inner()).await?;
    let pin = body
        .into_inner()
        .into_command(&caller.owner, replica_bounds(&state)?)?;
    let old_cid = Cid::parse(&old.cid).map_err(ApiError::internal)?;
    admit_quota(&state, &caller, Admission::Replacement).await?;
    let decided = decide(Command::Replace {
        pin,
        requestid: pinhive_events::new_event_id(),
        created_ns: state.next_created_ns(),
        old_requestid: old.requestid,
        old_cid,
    })?;
    let request = requested(&decided)?;
    append_and_wait(&state, decided).await?;
    respond_with_pin(&state, &request).await
}

async fn delete_pin(
    state: web::Data<AppState>,
    PinsWriter(caller): PinsWriter,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let pin = load_owned_pin(&state, &caller, path.into_inner()).await?;
    let requestid = pin.requestid.clone();
    let decided = decide(Command::Unpin {
        requestid: pin.requestid,
        owner: Owner::parse(&caller.owner)?,
        cid: Cid::parse(&pin.cid).map_err(ApiError::internal)?,
    })?;
    let cid = pin.cid.clone();
    append_audited_and_wait(&state, decided, move || {
        crate::audit::record(crate::audit::Action::PinDelete, &caller, &requestid, &cid)
    })
    .await?;
    Ok(HttpResponse::Accepted().finish())
}
