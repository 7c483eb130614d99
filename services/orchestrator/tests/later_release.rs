//! A rolling upgrade's other half: an instance of this release meets what a later release
//! wrote. A record of a later event schema, or a stored row of a later row version, is never
//! dead-lettered or quarantined here: the partition waits at it (held: `held_partitions`, the
//! `pinhive_consumer_held` gauge, `/ready`) until an upgraded instance runs it, and whatever
//! came before it applies.

use std::sync::Arc;

use parking_lot::Mutex;
use pinhive_events::codec::ContentType;
use pinhive_ipfs::NodeRegistry;
use pinhive_log::{Log, Record};
use pinhive_orchestrator::{Orchestrator, OrchestratorConfig};
use pinhive_store::{EmbeddedStore, Store, StoreError};

mod support;

use support::{cid, on_store, open_log, request_as, until, until_async, FailingLoadStore};

fn request(requestid: &str, i: usize) -> Record {
    request_as(requestid, i, 1)
}

/// A record a later release appended: its envelope starts with schema version 2, and what
/// follows is a layout this release does not know.
fn later_record(i: usize) -> Record {
    let mut value = request("r-later", i).value;
    assert_eq!(value[0], 1, "bincode starts with the schema version");
    value[0] = 2;
    value.extend_from_slice(b"a field of the later release");
    Record {
        key: cid(i).into_bytes(),
        value,
        content_type: ContentType::Bincode as u8,
        timestamp_ns: 1,
        traceparent: None,
    }
}

/// A store whose row of one CID (while `failing` names it) a later release wrote.
type LaterRowStore = FailingLoadStore;

fn later_row(_: &str) -> StoreError {
    StoreError::NewerRelease {
        what: "cid state",
        version: 4,
    }
}

fn start(log: &Arc<dyn Log>, store: &Arc<LaterRowStore>) -> Arc<Orchestrator> {
    Orchestrator::start(
        log.clone(),
        store.clone() as Arc<dyn Store>,
        NodeRegistry::default(),
        OrchestratorConfig::default(),
    )
    .unwrap()
}

fn store_in(dir: &std::path::Path) -> Arc<LaterRowStore> {
    Arc::new(LaterRowStore {
        inner: Box::new(EmbeddedStore::open(&dir.join("store")).unwrap()),
        failing: Mutex::new(None),
        error: later_row,
    })
}

#[actix_rt::test]
async fn a_record_of_a_later_schema_holds_its_partition_and_nothing_is_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), 1);
    let store = store_in(dir.path());
    log.append(vec![request("r1", 1), later_record(2), request("r3", 3)])
        .await
        .unwrap();
    let offsets: Vec<u64> = support::read_all(&log, 3)
        .await
        .iter()
        .map(|r| r.offset)
        .collect();
    for round in 0..2 {
        // Before the later record: applied. At it and after: waiting, never dead-lettered.
        let orchestrator = start(&log, &store);
        until("the partition held", || {
            !orchestrator.held_partitions().is_empty()
        })
        .await;
        let held = orchestrator.held_partitions();
        assert_eq!(held[0].0, 0);
        assert!(
            held[0].1.contains(&format!("offset {}", offsets[1]))
                && held[0].1.contains("event schema 2")
                && held[0].1.contains("later pinhive release"),
            "{held:?}"
        );
        let (pins, letters, quarantined, committed) = on_store(&store, |store| {
            (
                ["r1", "r3"].map(|id| store.get_pin(id).unwrap().is_some()),
                store.dead_letters(None, 10).unwrap(),
                store.quarantined(0).unwrap(),
                store.committed(0).unwrap().next_offset,
            )
        })
        .await;
        assert_eq!(pins, [true, false], "round {round}");
        assert!(letters.is_empty(), "{letters:?}");
        assert!(quarantined.is_empty());
        assert_eq!(
            committed,
            Some(offsets[1]),
            "the checkpoint stops at the later record"
        );
        // A restart (this release again) holds at the same record.
        orchestrator
            .shutdown(std::time::Duration::from_secs(10))
            .await;
    }
}

#[actix_rt::test]
async fn a_row_of_a_later_release_holds_the_partition_instead_of_quarantining() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), 1);
    let store = store_in(dir.path());
    *store.failing.lock() = Some(cid(2));
    log.append(vec![request("r1", 1), request("r2", 2), request("r3", 3)])
        .await
        .unwrap();
    let orchestrator = start(&log, &store);
    until("the partition held", || {
        !orchestrator.held_partitions().is_empty()
    })
    .await;
    let reason = orchestrator.held_partitions()[0].1.clone();
    assert!(
        reason.contains("row version 4") && reason.contains("later pinhive release"),
        "{reason}"
    );
    let (pins, letters, quarantined) = on_store(&store, |store| {
        (
            ["r1", "r2", "r3"].map(|id| store.get_pin(id).unwrap().is_some()),
            store.dead_letters(None, 10).unwrap(),
            store.quarantined(0).unwrap(),
        )
    })
    .await;
    assert_eq!(pins, [false, false, false], "the batch waits whole");
    assert!(letters.is_empty() && quarantined.is_empty());
    // The row becomes readable (what an upgraded instance sees): the batch applies whole and
    // the hold ends.
    *store.failing.lock() = None;
    until_async("every pin applied", || {
        on_store(&store, |store| {
            ["r1", "r2", "r3"]
                .iter()
                .all(|id| store.get_pin(id).unwrap().is_some())
        })
    })
    .await;
    until("the hold ended", || {
        orchestrator.held_partitions().is_empty()
    })
    .await;
    orchestrator
        .shutdown(std::time::Duration::from_secs(10))
        .await;
}
