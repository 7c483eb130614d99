//! Admin API (admin token required) plus the unauthenticated `/health` and `/ready`.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;

use pinhive_domain::tokens::Scope;

use crate::auth::{AdminCaller, PinReader, S3Ingester};
use crate::error::ApiError;
use crate::model::format_created;
use crate::owned::{owned_pin, sees_redacted, Access};
use crate::AppState;
use pinhive_store::{JournalEntry, StoreError};

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
/// reachable; the body says which dependency fails and what to configure (IPFS nodes by id
/// and reachability only: no URL, no raw error). The log's part is
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
            // Node ids and health only: no token guards this route, and a node's URL or its
            // last error (which may quote the URL) is for admins (`GET /admin/nodes`).
            json!({
                "id": e.descriptor.id,
                "reachable": e.health.reachable,
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
    // Partitions waiting at what a later release wrote: this instance cannot apply them
    // (rolling upgrade half done: upgrade it).
    let held: Vec<_> = state
        .orchestrator
        .held_partitions()
        .into_iter()
        .map(|(partition, reason)| json!({"partition": partition, "reason": reason}))
        .collect();
    let ready = store_ok && log_ok && reachable > 0 && held.is_empty();
    let held_hint = (!held.is_empty()).then_some(
        "these partitions wait at records or rows a later pinhive release wrote: upgrade this \
         instance (nothing was dead-lettered; docs/deploy.md, rolling upgrade)",
    );
    let body = json!({
        "ready": ready,
        "held": {"partitions": held, "hint": held_hint},
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
struct HistoryEntry<E> {
    offset: u64,
    partition: u32,
    time: String,
    event_id: String,
    kind: &'static str,
    event: E,
}

/// Journal entries one history read fetches, and the most reads one request makes: a page
/// costs at most `HISTORY_READS` bounded range reads of the CID's journal however many other
/// pins share the CID; a page that ran out of reads ends with a `next` cursor (possibly after
/// fewer than `limit` events, even none).
const HISTORY_CHUNK: usize = 256;
const HISTORY_READS: usize = 8;

/// A page of a pin's history: its events, and the cursor to go on from (`None`: the journal
/// was read to its end).
struct HistoryPage {
    entries: Vec<JournalEntry>,
    next: Option<u64>,
}

/// Reads the CID's journal after `after` in chunks, keeping the entries `keep` selects, until
/// `limit` are kept, the journal ends, or `HISTORY_READS` reads were made. The filter runs
/// before the limit: other pins' events never take a place on the page.
/// One bounded read of a CID's journal: `(cid, after, limit)`, as [`pinhive_store::Store::journal`].
type JournalRead<'a> =
    dyn Fn(&str, Option<u64>, usize) -> Result<Vec<JournalEntry>, StoreError> + 'a;

fn read_history(
    journal: &JournalRead<'_>,
    cid: &str,
    legacy: Option<&str>,
    after: Option<u64>,
    limit: usize,
    keep: &dyn Fn(&JournalEntry) -> bool,
) -> Result<HistoryPage, StoreError> {
    let mut entries = Vec::new();
    // A pin made before CID keys were canonical has its early events under the spelling it
    // was made with (that journal stays where it was; docs/api.md): one bounded read of it,
    // shown first, on page one, and not counted against `limit` — the cursor pages the
    // canonical journal only, so a legacy entry left off page one could never be reached.
    if let Some(legacy) = legacy {
        entries.extend(
            journal(legacy, None, HISTORY_CHUNK)?
                .into_iter()
                .filter(|entry| keep(entry)),
        );
    }
    let limit = limit + entries.len();
    let mut cursor = after;
    for _ in 0..HISTORY_READS {
        if entries.len() >= limit {
            return Ok(HistoryPage {
                entries,
                next: cursor,
            });
        }
        let chunk = journal(cid, cursor, HISTORY_CHUNK)?;
        let last_chunk = chunk.len() < HISTORY_CHUNK;
        let mut consumed_all = true;
        for entry in chunk {
            if entries.len() >= limit {
                consumed_all = false;
                break;
            }
            cursor = Some(entry.offset);
            if keep(&entry) {
                entries.push(entry);
            }
        }
        if last_chunk && consumed_all {
            return Ok(HistoryPage {
                entries,
                next: None,
            });
        }
    }
    Ok(HistoryPage {
        entries,
        next: cursor,
    })
}

/// The events that shaped one pin: its own (request, expiry, recovery, replace, unpin) and
/// the replica outcomes and target changes of its CID since the pin was created, oldest first.
/// The pin's owner sees them redacted ([`pinhive_domain::disclosure`]: no node ids, other
/// pins' request ids or raw node errors); an admin sees the raw events.
async fn pin_history(
    state: web::Data<AppState>,
    PinReader(caller): PinReader,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    use pinhive_domain::disclosure::{in_history, tenant_event};
    let requestid = path.into_inner();
    let owned = owned_pin(
        &state,
        &caller,
        &requestid,
        Access::OwnerOrAdmin {
            scope: Scope::PinsRead,
            what: "history",
        },
    )
    .await?;
    let row = owned.row.clone();
    let pin = row.record.clone();
    let limit = query.limit.unwrap_or(1000).clamp(1, 1000);
    // The journal is kept per CID state, which is keyed by the canonical CID.
    let cid = pinhive_domain::canonical_cid(&pin.cid).unwrap_or_else(|_| pin.cid.clone());
    let after = query.after;
    let legacy = (after.is_none() && cid != pin.cid).then(|| pin.cid.clone());
    let store = state.store.clone();
    let own = row.clone();
    let page = web::block(move || {
        let keep = |entry: &JournalEntry| in_history(&entry.event, &own, entry.timestamp_ns);
        let journal =
            |cid: &str, after: Option<u64>, limit: usize| store.journal(cid, after, limit);
        read_history(&journal, &cid, legacy.as_deref(), after, limit, &keep)
    })
    .await??;
    let redacted = sees_redacted(&caller);
    let mut events = Vec::with_capacity(page.entries.len());
    for entry in page.entries {
        let kind = entry.event.kind();
        let event = if redacted {
            let Some(shown) = tenant_event(&entry.event, &row, entry.timestamp_ns) else {
                continue;
            };
            serde_json::to_value(shown).map_err(ApiError::internal)?
        } else {
            serde_json::to_value(&entry.event).map_err(ApiError::internal)?
        };
        events.push(HistoryEntry {
            offset: entry.offset,
            partition: entry.partition,
            time: format_created(entry.timestamp_ns),
            event_id: entry.event_id,
            kind,
            event,
        });
    }
    // History is kept for the journal retention only: say from when it is complete.
    let retention = state.orchestrator.journal_retention();
    let retained_since = pinhive_events::now_ns()
        .saturating_sub(i64::try_from(retention.as_nanos()).unwrap_or(i64::MAX));
    owned.audit(&caller);
    Ok(HttpResponse::Ok().json(json!({
        "requestid": pin.requestid,
        "cid": pin.cid,
        "events": events,
        "next": page.next,
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
    AdminCaller(caller): AdminCaller,
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
    // Dead letters are records of any owner.
    crate::audit::admin_read(
        &caller,
        None,
        "dead-letters",
        &format!(
            "{} dead letter(s) after {}",
            letters.len(),
            query.after.as_deref().unwrap_or("the start")
        ),
    );
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
    AdminCaller(caller): AdminCaller,
    query: web::Query<S3ObjectsQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let bucket = query.bucket.clone();
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let store = state.store.clone();
    let objects = web::block(move || {
        store.list_s3_objects(&query.bucket, &query.prefix, query.after.as_deref(), limit)
    })
    .await??;
    crate::audit::admin_read(
        &caller,
        Some(&state.config.s3_owner),
        &bucket,
        &format!("{} S3 object(s) of the bucket", objects.len()),
    );
    Ok(HttpResponse::Ok().json(json!({"objects": objects})))
}

/// S3 objects whose content is this CID.
async fn s3_by_cid(
    state: web::Data<AppState>,
    AdminCaller(caller): AdminCaller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    // Any spelling of the CID finds the objects: the mapping is kept by the canonical form, and
    // objects an earlier release mapped by the spelling in their metadata by that spelling.
    let given = path.into_inner();
    let cid = pinhive_domain::canonical_cid(&given)?;
    let store = state.store.clone();
    let subject = cid.clone();
    let objects = web::block(move || {
        let mut objects = store.s3_objects_by_cid(&cid, 1000)?;
        if given.trim() != cid {
            let room = 1000usize.saturating_sub(objects.len());
            objects.extend(store.s3_objects_by_cid(given.trim(), room)?);
        }
        Ok::<_, pinhive_store::StoreError>(objects)
    })
    .await??;
    crate::audit::admin_read(
        &caller,
        Some(&state.config.s3_owner),
        &subject,
        &format!("{} S3 object(s) of the CID", objects.len()),
    );
    Ok(HttpResponse::Ok().json(json!({"objects": objects})))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Reads = std::rc::Rc<std::cell::Cell<usize>>;

    /// A journal of `n` entries at offsets 0..n, where every `stride`-th one is "ours", and
    /// the number of reads the history made.
    fn journal_of(n: u64) -> (Box<JournalRead<'static>>, Reads) {
        let reads = std::rc::Rc::new(std::cell::Cell::new(0));
        let counter = reads.clone();
        let read = move |cid: &str, after: Option<u64>, limit: usize| {
            counter.set(counter.get() + 1);
            let start = after.map_or(0, |a| a + 1);
            Ok((start..n)
                .take(limit)
                .map(|offset| JournalEntry {
                    cid: cid.to_string(),
                    partition: 0,
                    offset,
                    timestamp_ns: offset as i64,
                    event_id: offset.to_string(),
                    event: pinhive_events::Event::ReplicaUnpinned { node: "n".into() },
                })
                .collect())
        };
        (Box::new(read), reads)
    }

    #[test]
    fn history_filters_before_the_limit_in_bounded_reads() {
        // Ours: every 100th entry of 5,000 (the others are other pins' events).
        let (journal, reads) = journal_of(5_000);
        let ours = |e: &JournalEntry| e.offset.is_multiple_of(100);
        let mut offsets = Vec::new();
        let mut after = None;
        let mut pages = 0;
        loop {
            reads.set(0);
            let page = read_history(&*journal, "c", None, after, 10, &ours).unwrap();
            assert!(reads.get() <= HISTORY_READS, "{} reads", reads.get());
            assert!(page.entries.len() <= 10);
            offsets.extend(page.entries.iter().map(|e| e.offset));
            pages += 1;
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
            assert!(pages < 100, "the walk ends");
        }
        // Every one of ours once, in order, none of the others: the filter ran before the limit.
        assert_eq!(offsets, (0..50).map(|i| i * 100).collect::<Vec<u64>>());
    }

    #[test]
    fn history_pages_that_run_out_of_reads_hand_back_a_cursor() {
        let (journal, reads) = journal_of(10_000);
        let none_ours = |_: &JournalEntry| false;
        let page = read_history(&*journal, "c", None, None, 10, &none_ours).unwrap();
        assert!(page.entries.is_empty());
        assert_eq!(reads.get(), HISTORY_READS);
        assert_eq!(page.next, Some((HISTORY_READS * HISTORY_CHUNK) as u64 - 1));
        // A journal read to its end has no cursor.
        let (short, _) = journal_of(30);
        let all = |_: &JournalEntry| true;
        let page = read_history(&*short, "c", None, None, 1000, &all).unwrap();
        assert_eq!(page.entries.len(), 30);
        assert_eq!(page.next, None);
        // A full page stops at its last entry: the next page starts right after it.
        let page = read_history(&*short, "c", None, None, 10, &all).unwrap();
        assert_eq!(page.next, Some(9));
    }

    /// A pin's events journaled under an earlier spelling of its CID all come on page one,
    /// whatever the limit; the cursor then pages the canonical journal from its start.
    #[test]
    fn legacy_history_is_never_cut_off_by_a_small_limit() {
        let read = |cid: &str, after: Option<u64>, limit: usize| {
            let range = if cid == "old" { 0..5 } else { 100..130 };
            let start = after.map_or(range.start, |a| a + 1).max(range.start);
            Ok((start..range.end)
                .take(limit)
                .map(|offset| JournalEntry {
                    cid: cid.to_string(),
                    partition: 0,
                    offset,
                    event_id: offset.to_string(),
                    timestamp_ns: 0,
                    event: pinhive_events::Event::NodeRemoved {
                        node: "n".into(),
                        reason: String::new(),
                    },
                })
                .collect())
        };
        let all = |_: &JournalEntry| true;
        let page = read_history(&read, "c", Some("old"), None, 2, &all).unwrap();
        let offsets: Vec<u64> = page.entries.iter().map(|e| e.offset).collect();
        assert_eq!(offsets, [0, 1, 2, 3, 4, 100, 101]);
        assert_eq!(page.next, Some(101));
        let page = read_history(&read, "c", None, page.next, 2, &all).unwrap();
        let offsets: Vec<u64> = page.entries.iter().map(|e| e.offset).collect();
        assert_eq!(offsets, [102, 103]);
    }

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
