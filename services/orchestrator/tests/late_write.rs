//! A pin row write of a batch times out on ScyllaDB and is applied late — after the shard has
//! rolled the batch back, and after (or between) the replay of its records — with a value
//! other than the one the replay writes. The shard runs on the ScyllaDB store against the CQL
//! test server, whose `Fault::LateWrite` answers a write with a timeout at once and applies it
//! later with the timestamp it was sent with, as a replica that applied a timed-out write late.
//! Once each late write has landed, every pin row, CID row, pin list, listing (by status, CID
//! and name), counter, the pending set, the journals and the commit row equal those of a clean
//! apply of the same committed batches, and every listed record is its pin row (no stale
//! listing entry). Three cases, each of which the earlier rollback (it skipped a row that read
//! back as its committed value) got wrong or only got right through the replay:
//!
//! * **A**: the late write lands after the rollback, before the replay reads the row (the
//!   replay would take it for the committed value);
//! * **B**: it lands after the rollback and a replay that writes the row with another value;
//! * **C**: it (a deletion) lands after the rollback and a replay that does not write the row
//!   again (a shorter batch), so only the rollback's rewrite stands between it and the store.

mod support;
use support::{cid, until};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::{Addr, SyncArbiter};
use pinhive_cql_server::{CqlServer, Fault, StatementMatcher};
use pinhive_domain::{CidState, Cursor, PinRecord, PinRow, PinStatus};
use pinhive_events::{Envelope, Event, PinRequested};
use pinhive_ipfs::NodeRegistry;
use pinhive_log::{EmbeddedLog, EmbeddedLogConfig, Log, Record, StoredRecord};
use pinhive_orchestrator::shard::{ApplyBatch, BatchOutcome, Claimed, Replan, ShardParts};
use pinhive_orchestrator::{ShardActor, StateCache};
use pinhive_store::{
    CommitState, JournalEntry, NameMatch, PinPage, PinQuery, Store, StoreError, SCOPE_ALL_PINS,
    SCOPE_REPLICAS_DESIRED, SCOPE_REPLICAS_PINNED,
};
use pinhive_store_scylla::{migrate, Replication, ScyllaStore};

/// How late a timed-out write lands: far longer than a rollback and a replay take (each is a
/// few round trips to an in-memory server); the test checks that they did finish before it.
const LATE: Duration = Duration::from_secs(3);
/// Longest a shard may take to answer one message.
const DEADLINE: Duration = Duration::from_secs(60);
const OWNER: &str = "alice";

/// The CQL test server, on a runtime of its own: the store's calls block the caller's thread.
struct TestServer {
    server: CqlServer,
    _runtime: tokio::runtime::Runtime,
}

fn start_server() -> TestServer {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("test server runtime");
    let server = runtime
        .block_on(CqlServer::start())
        .expect("start the CQL test server");
    TestServer {
        server,
        _runtime: runtime,
    }
}

/// A migrated keyspace of its own on `server`, opened.
fn scylla_store(server: &TestServer, keyspace: &str) -> Arc<ScyllaStore> {
    let uri = format!("scylla://{}/{keyspace}", server.server.addr());
    migrate(&uri, &Replication::single()).expect("migrate");
    Arc::new(ScyllaStore::open(&uri).expect("open the store"))
}

/// A shard of partition 0 on `store`, which it claimed as `epoch` (its commits are fenced, as
/// in production).
async fn start_shard(store: Arc<ScyllaStore>, epoch: u64, log: &Arc<dyn Log>) -> Addr<ShardActor> {
    let parts = ShardParts {
        partitions: 1,
        store: store.clone(),
        log: log.clone(),
        registry: NodeRegistry::default(),
        cache: StateCache::new(64 << 20),
        min_free_bytes: 0,
        dial_private_origins: false,
        retry: pinhive_domain::RetryPolicy::default(),
        timers: std::sync::Arc::new(pinhive_orchestrator::retry::RetryTimers::new(1)),
        feed: Default::default(),
        quota: std::sync::Arc::new(pinhive_orchestrator::quota::QuotaGate::new(
            Default::default(),
            store.clone(),
            1,
        )),
    };
    let shard = SyncArbiter::start(1, move || ShardActor::new(0, parts.clone()));
    shard.send(Claimed { epoch }).await.expect("the shard runs");
    shard
}

async fn apply(
    shard: &Addr<ShardActor>,
    records: &[StoredRecord],
) -> Result<BatchOutcome, StoreError> {
    let message = ApplyBatch {
        records: records.to_vec(),
    };
    tokio::time::timeout(DEADLINE, shard.send(message))
        .await
        .expect("the shard answers within the deadline")
        .expect("the shard's mailbox is open")
}

/// A repair round over no CID: only what every message starts with — reading the commit row
/// and rolling back an attempt that did not commit.
async fn roll_back(shard: &Addr<ShardActor>) {
    let message = Replan { cids: Vec::new() };
    tokio::time::timeout(DEADLINE, shard.send(message))
        .await
        .expect("the shard answers within the deadline")
        .expect("the shard's mailbox is open")
        .expect("the rollback");
}

fn record(on: &str, event: Event) -> Record {
    Record::from_envelope(&Envelope::new(on, event))
}

fn request(requestid: &str, on: &str, created_ns: i64) -> Record {
    record(
        on,
        Event::PinRequested(PinRequested {
            requestid: requestid.into(),
            owner: OWNER.into(),
            cid: on.into(),
            name: Some(format!("name-{requestid}")),
            origins: vec![],
            meta: Default::default(),
            created_ns,
            replicas_min: 1,
            replicas_max: 1,
            replaces: None,
        }),
    )
}

fn allocate(on: &str) -> Record {
    record(
        on,
        Event::ReplicasAllocated {
            nodes: vec!["n1".into()],
            target: 1,
        },
    )
}

fn pinned(on: &str) -> Record {
    record(
        on,
        Event::ReplicaPinned {
            node: "n1".into(),
            delegates: vec!["/ip4/203.0.113.1/tcp/4001".into()],
            attempts: 1,
            duration_ms: 5,
        },
    )
}

fn unpin(requestid: &str, on: &str) -> Record {
    record(
        on,
        Event::UnpinRequested {
            requestid: requestid.into(),
            owner: OWNER.into(),
        },
    )
}

fn listing_query(statuses: Vec<PinStatus>) -> PinQuery {
    PinQuery {
        owner: OWNER.into(),
        cids: vec![],
        name: None,
        statuses,
        before_ns: None,
        after_ns: None,
        meta: Default::default(),
        limit: 1000,
    }
}

/// Everything the batches write, read back through the store's reads.
#[derive(Debug, PartialEq)]
struct Snapshot {
    pin_rows: BTreeMap<String, Option<PinRow>>,
    cid_rows: BTreeMap<String, Option<CidState>>,
    pin_lists: BTreeMap<String, Vec<(u64, String)>>,
    journals: BTreeMap<String, Vec<JournalEntry>>,
    /// By status, by CID and by name.
    listings: BTreeMap<String, PinPage>,
    counters: BTreeMap<(String, PinStatus), Option<i64>>,
    pending: Vec<String>,
    commit: CommitState,
}

fn snapshot(store: &dyn Store, requestids: &[&str], cids: &[String]) -> Snapshot {
    let mut snapshot = Snapshot {
        pin_rows: BTreeMap::new(),
        cid_rows: BTreeMap::new(),
        pin_lists: BTreeMap::new(),
        journals: BTreeMap::new(),
        listings: BTreeMap::new(),
        counters: BTreeMap::new(),
        pending: store.pending_cids(0, None, 1000).expect("pending"),
        commit: store.committed(0).expect("commit row"),
    };
    for requestid in requestids {
        let row = store.load_pin(requestid).expect("load_pin");
        snapshot.pin_rows.insert(requestid.to_string(), row);
        let mut by_name = listing_query(PinStatus::ALL.to_vec());
        by_name.name = Some((format!("name-{requestid}"), NameMatch::Exact));
        let page = store.list_pins(&by_name, 1).expect("list by name");
        snapshot.listings.insert(format!("name {requestid}"), page);
    }
    for cid in cids {
        let state = store.load_cid(cid).expect("load_cid");
        snapshot.cid_rows.insert(cid.clone(), state);
        let list = store
            .cid_pins(cid, &Cursor::default(), 1000)
            .expect("cid_pins");
        snapshot.pin_lists.insert(cid.clone(), list);
        let journal = store.journal(cid, None, 1000).expect("journal");
        snapshot.journals.insert(cid.clone(), journal);
        let mut by_cid = listing_query(PinStatus::ALL.to_vec());
        by_cid.cids = vec![cid.clone()];
        let page = store.list_pins(&by_cid, 1).expect("list by CID");
        snapshot.listings.insert(format!("cid {cid}"), page);
    }
    for status in PinStatus::ALL {
        let page = store
            .list_pins(&listing_query(vec![status]), 1)
            .expect("list by status");
        snapshot.listings.insert(format!("status {status:?}"), page);
    }
    for scope in [
        OWNER,
        SCOPE_ALL_PINS,
        SCOPE_REPLICAS_DESIRED,
        SCOPE_REPLICAS_PINNED,
    ] {
        for status in PinStatus::ALL {
            let value = store.counter(scope, status, 0).expect("counter");
            snapshot.counters.insert((scope.to_string(), status), value);
        }
    }
    snapshot
}

/// Every record a listing holds is the pin row itself: no entry outlived its value.
fn no_stale_listing_entry(snapshot: &Snapshot) -> Result<(), String> {
    for (listing, page) in &snapshot.listings {
        for listed in &page.results {
            let row = snapshot
                .pin_rows
                .get(&listed.requestid)
                .cloned()
                .flatten()
                .map(|row| row.record);
            if row.as_ref() != Some(listed) {
                return Err(format!(
                    "listing {listing} holds {listed:?}, but the pin row is {row:?}"
                ));
            }
        }
    }
    Ok(())
}

/// The pins and CIDs of the scenario.
const REQUESTIDS: [&str; 3] = ["req-p", "req-q", "req-r"];

fn cids() -> [String; 3] {
    [cid(1), cid(2), cid(3)]
}

/// Fails the test if the faulted store holds a stale listing entry or differs from the clean
/// one. The stores are read on a blocking thread, as every `Store` is: a blocking call inside
/// the actix runtime's own task can wait forever on a wake-up deferred to that runtime.
async fn compare(case: &'static str, faulted: Arc<ScyllaStore>, clean: Arc<ScyllaStore>) {
    let checked = tokio::task::spawn_blocking(move || {
        let faulted = snapshot(faulted.as_ref(), &REQUESTIDS, &cids());
        no_stale_listing_entry(&faulted)?;
        let clean = snapshot(clean.as_ref(), &REQUESTIDS, &cids());
        match difference(&clean, &faulted) {
            Some(difference) => Err(format!(
                "the faulted run is not a clean apply: {difference}"
            )),
            None => Ok(faulted),
        }
    })
    .await
    .expect("the store reads");
    if let Err(failure) = checked {
        panic!("case {case}: {failure}");
    }
}

/// The first field where two snapshots differ.
fn difference(clean: &Snapshot, faulted: &Snapshot) -> Option<String> {
    macro_rules! compare {
        ($($field:ident),*) => {$(
            if clean.$field != faulted.$field {
                return Some(format!(
                    "{} differ:\n  clean:   {:?}\n  faulted: {:?}",
                    stringify!($field),
                    clean.$field,
                    faulted.$field
                ));
            }
        )*};
    }
    compare!(pin_rows, cid_rows, pin_lists, listings, counters, pending, journals, commit);
    None
}

/// The keyspace of the faulted run (the clean run has another).
const KEYSPACE: &str = "late_write_faulted";

#[test]
fn a_pin_row_write_landing_after_the_rollback_leaves_nothing_behind() {
    // The server and the stores are set up (and, at the end, dropped) outside the actix
    // runtime: the server runs on a runtime of its own, and migrating blocks.
    let server = start_server();
    let faulted_store = scylla_store(&server, KEYSPACE);
    let clean_store = scylla_store(&server, "late_write_clean");
    let epochs = [&faulted_store, &clean_store]
        .map(|store| store.claim_partition(0).expect("claim partition 0"));
    actix_rt::System::new().block_on(late_writes(&server, [faulted_store, clean_store], epochs));
}

async fn late_writes(server: &TestServer, stores: [Arc<ScyllaStore>; 2], epochs: [u64; 2]) {
    let [faulted_store, clean_store] = stores;
    let keyspace = KEYSPACE;
    let dir = tempfile::tempdir().expect("temp dir");
    let log: Arc<dyn Log> = Arc::new(
        EmbeddedLog::open(
            dir.path(),
            EmbeddedLogConfig {
                partitions: 1,
                ..EmbeddedLogConfig::default()
            },
        )
        .expect("open the log"),
    );
    let faulted = start_shard(faulted_store.clone(), epochs[0], &log).await;
    let clean = start_shard(clean_store.clone(), epochs[1], &log).await;

    let [c, d, e] = cids();
    let records = vec![
        request("req-p", &c, 1), // 0
        request("req-q", &d, 2), // 1
        allocate(&c),            // 2: case A
        pinned(&c),              // 3
        allocate(&d),            // 4: case B
        pinned(&d),              // 5
        request("req-r", &e, 3), // 6: case C
        unpin("req-p", &c),      // 7
    ];
    let count = records.len();
    log.append(records).await.expect("append");
    let stored = support::read_all(&log, count).await;

    // Both shards commit the same batches; only the faulted one sees the faults first.
    let commit_both = |range: std::ops::Range<usize>| {
        let batch = &stored[range];
        let (faulted, clean) = (&faulted, &clean);
        async move {
            apply(faulted, batch)
                .await
                .expect("the faulted run's batch");
            apply(clean, batch).await.expect("the clean run's batch");
        }
    };
    let pin_insert = StatementMatcher::contains(format!("INSERT INTO {keyspace}.pins "));
    let pin_delete = StatementMatcher::contains(format!("DELETE FROM {keyspace}.pins "));
    let late = Fault::LateWrite { delay: LATE };
    let cql = &server.server;
    let check = |case| compare(case, faulted_store.clone(), clean_store.clone());

    commit_both(0..2).await;
    check("setup").await;

    // A: [allocate c, pinned c] writes req-p as pinned; that write times out and lands after
    // the rollback, before the replay of the shorter batch [allocate c] reads the row.
    cql.inject(late.clone(), pin_insert.clone(), 1);
    apply(&faulted, &stored[2..4])
        .await
        .expect_err("the timed-out pin row write fails the batch");
    assert_eq!(cql.pending_faults(), 0, "the fault fired");
    roll_back(&faulted).await;
    assert_eq!(
        cql.late_writes_in_flight(),
        1,
        "the late write must land after the rollback (LATE too short for this machine?)"
    );
    until("case A's late write landed", || {
        cql.late_writes_in_flight() == 0
    })
    .await;
    commit_both(2..3).await;
    check("A").await;
    commit_both(3..4).await;

    // B: [allocate d, pinned d] writes req-q as pinned; the write lands after the rollback and
    // the replay of [allocate d] (pinning), which run in one message, as the consumer's retry.
    cql.inject(late.clone(), pin_insert.clone(), 1);
    apply(&faulted, &stored[4..6])
        .await
        .expect_err("the timed-out pin row write fails the batch");
    assert_eq!(cql.pending_faults(), 0, "the fault fired");
    commit_both(4..5).await;
    assert_eq!(
        cql.late_writes_in_flight(),
        1,
        "the late write must land after the rollback and the replay"
    );
    until("case B's late write landed", || {
        cql.late_writes_in_flight() == 0
    })
    .await;
    check("B").await;
    commit_both(5..6).await;

    // C: [request r, unpin p] deletes req-p's row; the deletion lands after the rollback and
    // the replay of [request r], which does not write req-p again.
    cql.inject(late, pin_delete, 1);
    apply(&faulted, &stored[6..8])
        .await
        .expect_err("the timed-out pin row deletion fails the batch");
    assert_eq!(cql.pending_faults(), 0, "the fault fired");
    commit_both(6..7).await;
    assert_eq!(
        cql.late_writes_in_flight(),
        1,
        "the late deletion must land after the rollback and the replay"
    );
    until("case C's late write landed", || {
        cql.late_writes_in_flight() == 0
    })
    .await;
    check("C").await;
    commit_both(7..8).await;
    check("end").await;
    let statuses = tokio::task::spawn_blocking(move || {
        REQUESTIDS.map(|requestid| {
            let pin = faulted_store.get_pin(requestid).expect("get_pin");
            pin.map(|pin: PinRecord| pin.status)
        })
    })
    .await
    .expect("the store reads");
    assert_eq!(
        statuses,
        [None, Some(PinStatus::Pinned), Some(PinStatus::Queued)],
        "req-p unpinned, req-q pinned, req-r queued at the end"
    );
}
