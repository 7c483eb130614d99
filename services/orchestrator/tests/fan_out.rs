//! What one replica event costs the store does not grow with the number of pins of its CID.
//!
//! A CID's state counts its pins instead of holding them, and a change of the view every pin
//! shows (status, info, delegates) is propagated to the pin rows by a walk of at most
//! `PROPAGATE_STEP` rows per batch, which the repair loop (`Replan`) carries on. Here one CID
//! is pinned by N requests (N = 100, and N = `PIN_BUCKET` + 50 = 10,050, so that the walk also
//! crosses from the first bucket of the CID's pin list into the second), then a batch with one
//! `ReplicasAllocated` and a batch with one `ReplicaPinned` are applied, and every store call
//! of each is counted (reads per method, rows written, commits):
//!
//! * each such batch, and each repair round of the walk, costs at most
//!   `4 * PROPAGATE_STEP + 20` store operations, and the cost for N = 10,050 is the cost for
//!   N = 100 (within a slack of 2 per kind of operation);
//! * the walk completes in at most `N / PROPAGATE_STEP + 3` repair rounds: then every pin row
//!   shows the new status — the status listing holds N rows, and the counters say N.

#[macro_use]
mod support;
use support::cid;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix::{Addr, SyncArbiter};
use parking_lot::Mutex;
use pinhive_domain::{CidState, Cursor, PinRecord, PinRow, PinStatus, PIN_BUCKET, PROPAGATE_STEP};
use pinhive_events::{Envelope, Event, NodeDescriptor, PinRequested};
use pinhive_ipfs::NodeRegistry;
use pinhive_log::{EmbeddedLog, EmbeddedLogConfig, Log, Record, StoredRecord};
use pinhive_orchestrator::shard::{ApplyBatch, Replan, ShardParts};
use pinhive_orchestrator::{ShardActor, StateCache};
use pinhive_store::{
    AnalyticsCheckpoint, Commit, CommitState, DeadLetter, EmbeddedStore, JournalEntry, PinPage,
    PinQuery, S3Object, ShardBatch, Store, StoreError, TokenRecord, SCOPE_ALL_PINS,
};

/// Longest a shard may take to answer one message.
const DEADLINE: Duration = Duration::from_secs(120);
const OWNERS: [&str; 2] = ["alice", "bob"];
/// Records per batch while the pins are built.
const BUILD_BATCH: usize = 1000;
/// Most store operations one replica event (or one repair round) may cost.
const BOUND: u64 = 4 * PROPAGATE_STEP as u64 + 20;
/// Slack per kind of operation between the large and the small CID.
const SLACK: u64 = 2;

// ---------------------------------------------------------------------------------------------
// A store that counts what it is asked.

/// Store calls by kind: reads and other calls by method name, `rows` written by row batches,
/// `commit` calls and the `commit counters` rows they write.
type Cost = BTreeMap<&'static str, u64>;

/// Store operations: every call, except that a row batch counts as the rows it writes.
fn total(cost: &Cost) -> u64 {
    cost.values().sum::<u64>() - cost.get("write_shard_batch").copied().unwrap_or(0)
}

/// An [`EmbeddedStore`] that counts every call (and every row a row batch writes).
struct CountingStore {
    inner: EmbeddedStore,
    cost: Mutex<Cost>,
}

impl CountingStore {
    fn open(dir: &Path) -> Self {
        CountingStore {
            inner: EmbeddedStore::open(dir).expect("open the store"),
            cost: Mutex::new(Cost::new()),
        }
    }

    fn count(&self, what: &'static str, n: u64) {
        *self.cost.lock().entry(what).or_default() += n;
    }

    fn on_call(&self, method: &'static str) {
        self.count(method, 1);
    }

    /// The calls since the last `take`.
    fn take(&self) -> Cost {
        std::mem::take(&mut self.cost.lock())
    }
}

impl Store for CountingStore {
    fn write_shard_batch(&self, batch: &ShardBatch) -> Result<(), StoreError> {
        self.count("write_shard_batch", 1);
        self.count("rows", batch.len() as u64);
        self.inner.write_shard_batch(batch)
    }
    fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        self.count("commit", 1);
        self.count("commit counters", commit.counters.len() as u64);
        self.inner.commit(commit)
    }
    delegate_store_reads!();
}

// ---------------------------------------------------------------------------------------------
// The CID, its pins, and the shard.

fn request(on: &str, i: usize) -> Record {
    Record::from_envelope(&Envelope::new(
        on,
        Event::PinRequested(PinRequested {
            requestid: format!("req-{i:05}"),
            owner: OWNERS[i % 2].into(),
            cid: on.into(),
            name: None,
            origins: vec![],
            meta: Default::default(),
            // Distinct: the listing pages by creation time.
            created_ns: i as i64 + 1,
            replicas_min: 1,
            replicas_max: 1,
            replaces: None,
        }),
    ))
}

async fn apply(shard: &Addr<ShardActor>, records: Vec<StoredRecord>) {
    tokio::time::timeout(DEADLINE, shard.send(ApplyBatch { records }))
        .await
        .expect("the shard answers within the deadline")
        .expect("the shard's mailbox is open")
        .expect("the batch applies");
}

async fn replan(shard: &Addr<ShardActor>, cid: &str) {
    let message = Replan {
        cids: vec![cid.to_string()],
    };
    tokio::time::timeout(DEADLINE, shard.send(message))
        .await
        .expect("the shard answers within the deadline")
        .expect("the shard's mailbox is open")
        .expect("the repair round applies");
}

/// Every pin of the owners in `status`, counted by paging the status listing (newest first,
/// by creation time).
fn listed(store: &dyn Store, status: PinStatus) -> usize {
    let mut count = 0;
    for owner in OWNERS {
        let mut before_ns = None;
        loop {
            let query = PinQuery {
                owner: owner.into(),
                cids: vec![],
                name: None,
                statuses: vec![status],
                before_ns,
                after_ns: None,
                meta: Default::default(),
                limit: 1000,
            };
            let page = store.list_pins(&query, 1).expect("list_pins");
            assert!(page
                .results
                .iter()
                .all(|pin| pin.status == status && pin.owner == owner));
            count += page.results.len();
            match page.results.last() {
                Some(last) if page.results.len() == query.limit => {
                    before_ns = Some(last.created_ns)
                }
                _ => break,
            }
        }
    }
    count
}

fn counted(store: &dyn Store, status: PinStatus) -> i64 {
    let owners: i64 = OWNERS
        .iter()
        .map(|owner| {
            store
                .counter(owner, status, 0)
                .expect("counter")
                .unwrap_or(0)
        })
        .sum();
    let all = store
        .counter(SCOPE_ALL_PINS, status, 0)
        .expect("counter")
        .unwrap_or(0);
    assert_eq!(
        owners, all,
        "{SCOPE_ALL_PINS}/{status:?} is the owners' sum"
    );
    owners
}

/// What one replica event and the repair rounds cost for a CID of `pins` pins.
struct FanOut {
    allocated: Cost,
    pinned: Cost,
    /// The most a repair round of the walk cost, per kind of operation.
    repair: Cost,
    rounds: usize,
}

fn assert_bounded(what: &str, pins: usize, cost: &Cost) {
    assert!(
        total(cost) <= BOUND,
        "{what} for {pins} pins costs {} store operations (bound {BOUND}): {cost:?}",
        total(cost)
    );
}

async fn fan_out(pins: usize) -> FanOut {
    let on = cid(7);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = EmbeddedLogConfig {
        partitions: 1,
        ..EmbeddedLogConfig::default()
    };
    let log: Arc<dyn Log> =
        Arc::new(EmbeddedLog::open(&dir.path().join("log"), config).expect("open the log"));
    let mut records: Vec<Record> = (0..pins).map(|i| request(&on, i)).collect();
    let allocated = Event::ReplicasAllocated {
        nodes: vec!["n1".into()],
        target: 1,
    };
    let pinned = Event::ReplicaPinned {
        node: "n1".into(),
        delegates: vec!["/ip4/203.0.113.7/tcp/4001".into()],
        attempts: 1,
        duration_ms: 5,
    };
    records.push(Record::from_envelope(&Envelope::new(on.clone(), allocated)));
    records.push(Record::from_envelope(&Envelope::new(on.clone(), pinned)));
    log.append(records).await.expect("append");
    let mut stored = support::read_all(&log, pins + 2).await;
    let pinned_record = stored.pop().expect("ReplicaPinned");
    let allocated_record = stored.pop().expect("ReplicasAllocated");

    let store = Arc::new(CountingStore::open(&dir.path().join("store")));
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
    for batch in stored.chunks(BUILD_BATCH) {
        apply(&shard, batch.to_vec()).await;
    }
    assert_eq!(
        counted(store.as_ref(), PinStatus::Queued),
        pins as i64,
        "every pin queued"
    );
    let state = |store: &CountingStore| {
        store
            .inner
            .load_cid(&on)
            .expect("load_cid")
            .expect("a state")
    };
    assert_eq!(state(&store).pins(), pins as u64);

    store.take();
    apply(&shard, vec![allocated_record]).await;
    let allocated = store.take();
    assert_bounded("ReplicasAllocated", pins, &allocated);
    assert_eq!(state(&store).pin_status(), PinStatus::Pinning);

    apply(&shard, vec![pinned_record]).await;
    let pinned = store.take();
    assert_bounded("ReplicaPinned", pins, &pinned);
    // No node is registered in this test: no addresses.
    let view = state(&store).view(&|_: &str| Vec::new());
    assert_eq!(view.status, PinStatus::Pinned);
    assert_eq!(state(&store).view, Some(view.digest()));

    // The repair loop carries the walk on, one bounded step per round. The view changed twice
    // (allocated, then pinned, one batch later): the walk goes on from where it was and the
    // pins it had passed get a second pass — at most two passes over the pins.
    let max_rounds = 2 * (pins / PROPAGATE_STEP) + 3;
    let mut repair = Cost::new();
    let mut rounds = 0;
    while state(&store).propagation.is_some() {
        assert!(
            rounds < max_rounds,
            "the walk over {pins} pins ends within {max_rounds} rounds"
        );
        replan(&shard, &on).await;
        let round = store.take();
        assert_bounded(&format!("repair round {rounds}"), pins, &round);
        for (what, n) in round {
            let max = repair.entry(what).or_default();
            *max = (*max).max(n);
        }
        rounds += 1;
    }

    // Every pin row shows the new view: the listing and the counters agree.
    assert_eq!(
        listed(store.as_ref(), PinStatus::Pinned),
        pins,
        "pinned rows listed"
    );
    assert_eq!(
        counted(store.as_ref(), PinStatus::Pinned),
        pins as i64,
        "pinned counter"
    );
    for status in [PinStatus::Queued, PinStatus::Pinning, PinStatus::Failed] {
        assert_eq!(listed(store.as_ref(), status), 0, "no pin left {status:?}");
        assert_eq!(counted(store.as_ref(), status), 0, "{status:?} counter");
    }
    let mut from = Cursor::default();
    let mut walked = 0;
    let mut buckets = std::collections::BTreeSet::new();
    loop {
        let step = store.inner.cid_pins(&on, &from, 1000).expect("cid_pins");
        for (bucket, requestid) in &step {
            buckets.insert(*bucket);
            let row = store
                .inner
                .get_pin(requestid)
                .expect("get_pin")
                .expect("a pin row");
            assert_eq!(
                (row.status, &row.info, &row.delegates),
                (view.status, &view.info, &view.delegates),
                "{requestid}"
            );
        }
        walked += step.len();
        match step.last() {
            Some((bucket, requestid)) if step.len() == 1000 => {
                from = Cursor {
                    bucket: *bucket,
                    after: Some(requestid.clone()),
                }
            }
            _ => break,
        }
    }
    assert_eq!(walked, pins, "the pin list holds every pin");
    let expected_buckets = (pins as u64).div_ceil(PIN_BUCKET);
    assert_eq!(
        buckets.len() as u64,
        expected_buckets,
        "pin list buckets: {buckets:?}"
    );
    FanOut {
        allocated,
        pinned,
        repair,
        rounds,
    }
}

#[actix_rt::test]
async fn a_replica_event_costs_the_same_for_a_hundred_pins_as_for_ten_thousand() {
    let large_pins = PIN_BUCKET as usize + 50;
    let small = fan_out(100).await;
    let large = fan_out(large_pins).await;
    // Every batch of the large CID is held to the small CID's `ReplicasAllocated` batch, the one
    // that walks a full step for it (its later batches find fewer than a full step of pins
    // left ahead of the walk's cursor).
    for (what, small, large) in [
        ("ReplicasAllocated", &small.allocated, &large.allocated),
        ("ReplicaPinned", &small.allocated, &large.pinned),
        ("a repair round", &small.allocated, &large.repair),
    ] {
        for (kind, n) in large {
            let base = small.get(kind).copied().unwrap_or(0);
            assert!(
                *n <= base + SLACK,
                "{what}: {kind} grows with the pins: {base} for 100, {n} for {large_pins}\n  100: {small:?}\n  {large_pins}: {large:?}"
            );
        }
    }
    assert!(small.rounds >= 1, "100 pins take more than one walk step");
    assert!(
        large.rounds > large_pins / PROPAGATE_STEP - 2,
        "{} rounds",
        large.rounds
    );
}
