//! Issue 12: a batch that fails on a stored row that cannot be decoded does not stall its
//! partition. The CID whose record needs the row is quarantined (persisted), its records are
//! dead-lettered with the reason, the rest of the batch applies and the checkpoint advances;
//! once an operator clears the quarantine, the CID's records apply again.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pinhive_domain::{CidState, Cursor, PinRecord, PinRow, PinStatus};
use pinhive_events::{Envelope, Event, NodeDescriptor, PinRequested};
use pinhive_ipfs::NodeRegistry;
use pinhive_log::{EmbeddedLog, EmbeddedLogConfig, Log, Record};
use pinhive_orchestrator::{Orchestrator, OrchestratorConfig};
use pinhive_store::{
    AnalyticsCheckpoint, Commit, CommitState, DeadLetter, EmbeddedStore, JournalEntry, PinPage,
    PinQuery, S3Object, ShardBatch, Store, StoreError, TokenRecord,
};

mod support;

use support::{cid, until};

/// The embedded store, but `load_cid` of one CID fails as a row that cannot be decoded.
struct CorruptingStore {
    inner: EmbeddedStore,
    corrupt: Mutex<Option<String>>,
}

impl CorruptingStore {
    fn on_call(&self, _method: &'static str) {}
}

impl Store for CorruptingStore {
    fn load_cid(&self, cid: &str) -> Result<Option<CidState>, StoreError> {
        if self.corrupt.lock().as_deref() == Some(cid) {
            return Err(StoreError::CorruptRow {
                what: "cid state",
                key: cid.to_string(),
                reason: "row version 9, but this release reads versions 0 to 1".into(),
            });
        }
        self.inner.load_cid(cid)
    }
    fn write_shard_batch(&self, batch: &ShardBatch) -> Result<(), StoreError> {
        self.inner.write_shard_batch(batch)
    }
    fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        self.inner.commit(commit)
    }
    delegate_store_reads!(except_load_cid);
}

fn request(requestid: &str, i: usize) -> Record {
    Record::from_envelope(&Envelope::new(
        cid(i),
        Event::PinRequested(PinRequested {
            requestid: requestid.into(),
            owner: "alice".into(),
            cid: cid(i),
            name: None,
            origins: vec![],
            meta: Default::default(),
            created_ns: 1,
            replicas_min: 1,
            replicas_max: 1,
            replaces: None,
        }),
    ))
}

/// True once the partition's committed checkpoint is the end of the log.
fn caught_up(store: &CorruptingStore, log: &Arc<dyn Log>) -> bool {
    store.committed(0).unwrap().next_offset == Some(log.end_offset(0))
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
    let log: Arc<dyn Log> = Arc::new(
        EmbeddedLog::open(
            &dir.path().join("log"),
            EmbeddedLogConfig {
                partitions: 1,
                ..EmbeddedLogConfig::default()
            },
        )
        .unwrap(),
    );
    let store = Arc::new(CorruptingStore {
        inner: EmbeddedStore::open(&dir.path().join("store")).unwrap(),
        corrupt: Mutex::new(Some(cid(2))),
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
    until("the batch applied without the corrupt CID", || {
        caught_up(&store, &log)
    })
    .await;
    assert!(store.get_pin("r1").unwrap().is_some());
    assert!(store.get_pin("r3").unwrap().is_some());
    assert!(store.get_pin("r2").unwrap().is_none());
    let letters = store.dead_letters(None, 10).unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let offsets = offsets(&log).await;
    assert_eq!(letters[0].offset, offsets[1]);
    assert!(
        letters[0].reason.contains("quarantined")
            && letters[0].reason.contains(&format!("cid state {}", cid(2)))
            && letters[0].reason.contains("row version 9"),
        "the reason names the corrupt row: {}",
        letters[0].reason
    );
    let quarantined = store.quarantined(0).unwrap();
    assert_eq!(quarantined.len(), 1);
    assert_eq!(quarantined[0].cid, cid(2));

    // Later records of the quarantined CID are dead-lettered too (even once the row would
    // read again: only an operator ends a quarantine); the others still apply.
    *store.corrupt.lock() = None;
    log.append(vec![request("r2b", 2), request("r4", 4)])
        .await
        .unwrap();
    until("the next batch applied", || caught_up(&store, &log)).await;
    assert!(store.get_pin("r2b").unwrap().is_none());
    assert!(store.get_pin("r4").unwrap().is_some());
    let letters = store.dead_letters(None, 10).unwrap();
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
    assert!(store.clear_quarantine(0, &cid(2)).unwrap());
    assert!(!store.clear_quarantine(0, &cid(2)).unwrap());
    log.append(vec![request("r2c", 2)]).await.unwrap();
    until("the cleared CID's record applied", || {
        caught_up(&store, &log)
    })
    .await;
    assert!(store.get_pin("r2c").unwrap().is_some());
    assert_eq!(store.dead_letters(None, 10).unwrap().len(), 2);
    assert_eq!(
        store.load_cid(&cid(2)).unwrap().map(|state| state.pins()),
        Some(1)
    );
    orchestrator.shutdown(Duration::from_secs(5)).await;
}
