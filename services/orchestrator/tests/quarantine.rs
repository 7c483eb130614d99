//! Issue 12: a batch that fails on a stored row that cannot be decoded does not stall its
//! partition. The CID whose record needs the row is quarantined (persisted), its records are
//! dead-lettered with the reason, the rest of the batch applies and the checkpoint advances;
//! once an operator clears the quarantine, the CID's records apply again. On the embedded
//! store and on the ScyllaDB store (migration 0004), the latter against the CQL test server.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pinhive_ipfs::NodeRegistry;
use pinhive_log::{EmbeddedLog, EmbeddedLogConfig, Log, Record};
use pinhive_orchestrator::{Orchestrator, OrchestratorConfig};
use pinhive_store::{EmbeddedStore, Store, StoreError};
use pinhive_store_scylla::{migrate, Replication, ScyllaStore};

mod support;

use support::{cid, on_store, request_as, until_async, FailingLoadStore};

/// A store, but `load_cid` of one CID fails as a row that cannot be decoded.
type CorruptingStore = FailingLoadStore;

fn corrupt(cid: &str) -> StoreError {
    StoreError::CorruptRow {
        what: "cid state",
        key: cid.to_string(),
        reason: "row version 9, but this release reads versions 0 to 1".into(),
    }
}

fn request(requestid: &str, i: usize) -> Record {
    request_as(requestid, i, 1)
}

/// Waits until the partition's committed checkpoint is the end of the log.
async fn until_caught_up(what: &str, store: &Arc<CorruptingStore>, log: &Arc<dyn Log>) {
    let end = Some(log.end_offset(0));
    until_async(what, || {
        on_store(store, move |store| {
            store.committed(0).unwrap().next_offset == end
        })
    })
    .await;
}

/// Log offsets of the records appended (the embedded log's offsets are positions, not counts).
async fn offsets(log: &Arc<dyn Log>) -> Vec<u64> {
    support::read_all(log, log_records(log).await)
        .await
        .iter()
        .map(|r| r.offset)
        .collect()
}

async fn log_records(log: &Arc<dyn Log>) -> usize {
    let mut count = 0;
    let mut from = 0;
    loop {
        let read = log.read(0, from, 4 << 20).await.unwrap();
        let Some(last) = read.last() else {
            return count;
        };
        from = last.next_offset;
        count += read.len();
    }
}

#[actix_rt::test]
async fn a_corrupt_row_quarantines_its_cid_and_the_partition_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("store")).unwrap();
    corrupt_row_scenario(dir.path(), Box::new(store)).await;
}

/// The same on the ScyllaDB store: before migration 0004 it could not quarantine, and a
/// corrupt row stalled its partition for good.
#[test]
fn on_the_scylla_store_a_corrupt_row_quarantines_its_cid_and_the_partition_goes_on() {
    // The server and the store are set up outside the actix runtime: the server runs on a
    // runtime of its own, and migrating blocks.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("test server runtime");
    let server = runtime
        .block_on(pinhive_cql_server::CqlServer::start())
        .expect("start the CQL test server");
    let uri = format!("scylla://{}/quarantine_test", server.addr());
    migrate(&uri, &Replication::single()).expect("migrate");
    let store = ScyllaStore::open(&uri).expect("open the store");
    let dir = tempfile::tempdir().unwrap();
    actix_rt::System::new().block_on(corrupt_row_scenario(dir.path(), Box::new(store)));
}

async fn corrupt_row_scenario(dir: &std::path::Path, inner: Box<dyn Store>) {
    let log: Arc<dyn Log> = Arc::new(
        EmbeddedLog::open(
            &dir.join("log"),
            EmbeddedLogConfig {
                partitions: 1,
                ..EmbeddedLogConfig::default()
            },
        )
        .unwrap(),
    );
    let store = Arc::new(CorruptingStore {
        inner,
        failing: Mutex::new(Some(cid(2))),
        error: corrupt,
    });
    log.append(vec![request("r1", 1), request("r2", 2), request("r3", 3)])
        .await
        .unwrap();
    let orchestrator = Orchestrator::start(
        log.clone(),
        store.clone() as Arc<dyn Store>,
        NodeRegistry::default(),
        OrchestratorConfig::default(),
    )
    .unwrap();

    // One batch: the other CIDs apply, the checkpoint moves past all three records.
    until_caught_up("the batch applied without the corrupt CID", &store, &log).await;
    let offsets = offsets(&log).await;
    let (pins, letters, quarantined) = on_store(&store, |store| {
        (
            ["r1", "r2", "r3"].map(|id| store.get_pin(id).unwrap().is_some()),
            store.dead_letters(None, 10).unwrap(),
            store.quarantined(0).unwrap(),
        )
    })
    .await;
    assert_eq!(pins, [true, false, true]);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].offset, offsets[1]);
    assert!(
        letters[0].reason.contains("quarantined")
            && letters[0].reason.contains(&format!("cid state {}", cid(2)))
            && letters[0].reason.contains("row version 9"),
        "the reason names the corrupt row: {}",
        letters[0].reason
    );
    assert_eq!(quarantined.len(), 1);
    assert_eq!(quarantined[0].cid, cid(2));

    // Later records of the quarantined CID are dead-lettered too (even once the row would
    // read again: only an operator ends a quarantine); the others still apply.
    *store.failing.lock() = None;
    log.append(vec![request("r2b", 2), request("r4", 4)])
        .await
        .unwrap();
    until_caught_up("the next batch applied", &store, &log).await;
    let (pins, letters) = on_store(&store, |store| {
        (
            ["r2b", "r4"].map(|id| store.get_pin(id).unwrap().is_some()),
            store.dead_letters(None, 10).unwrap(),
        )
    })
    .await;
    assert_eq!(pins, [false, true]);
    assert_eq!(
        letters.iter().map(|l| l.offset).collect::<Vec<_>>(),
        vec![offsets[1], support::read_all(&log, 5).await[3].offset]
    );
    assert!(
        letters[1].reason.contains("quarantined"),
        "{}",
        letters[1].reason
    );

    // The operator clears it: the CID's next records apply.
    let cleared = on_store(&store, |store| {
        [
            store.clear_quarantine(0, &cid(2)).unwrap(),
            store.clear_quarantine(0, &cid(2)).unwrap(),
        ]
    })
    .await;
    assert_eq!(cleared, [true, false]);
    log.append(vec![request("r2c", 2)]).await.unwrap();
    until_caught_up("the cleared CID's record applied", &store, &log).await;
    let (applied, letters, pins) = on_store(&store, |store| {
        (
            store.get_pin("r2c").unwrap().is_some(),
            store.dead_letters(None, 10).unwrap().len(),
            store.load_cid(&cid(2)).unwrap().map(|state| state.pins()),
        )
    })
    .await;
    assert!(applied);
    assert_eq!(letters, 2);
    assert_eq!(pins, Some(1));
    orchestrator.shutdown(Duration::from_secs(5)).await;
}
