//! The shard's commit protocol (attempt, rows, commit; an uncommitted attempt is rolled back
//! before the next batch) survives a crash at every point of a batch.
//!
//! * **Every prefix, then a retry, ends as a clean apply.** A history is applied cleanly, then
//!   a batch B holding every event type (requests, a replace pair and its settling, an unpin, a
//!   pin created and removed in B, a rejected unpin, every replica outcome, a target change,
//!   anti-entropy's corrections, a recovery, expiries set, due and moot, and view changes that
//!   start, restart and continue the bounded walk over a CID's pins). B is
//!   made to fail after each prefix of its row batch (`ShardBatch::prefix(n)` for every `n`),
//!   and at the commit that names its rows and at the commit that commits it; then B is applied
//!   again, by the same shard (which forgets its caches on the error) and by a new shard on the
//!   same store (a restart). Every pin row, CID row, pin list, listing, counter (per owner and
//!   aggregate), the pending set, every journal, the dead letters and the commit row then equal
//!   those of a run without the fault — right after B, and again after repair-loop rounds
//!   (`Replan`) have finished the walks B left under way.
//! * **Counters always equal the rows they count** (proptest): random event sequences over a
//!   few CIDs, requests and nodes (now and then a crowd of more pins than one walk step), in
//!   random batches; a batch may fail up to twice at random points first (the second failure
//!   hits the recovery from the first: the roll-back or its commit), a repair round may run
//!   before the retry, and a restarted shard may retry it. After every successful batch or
//!   repair round, each (owner, status) counter equals the pin rows of that owner in that
//!   status that the listing holds, every listed row is the pin row itself (no stale listing
//!   entry), the per-status sums equal the live pins the CID states count, each CID's pin list
//!   holds exactly its live pins, and the aggregate replica counters equal the sums over the
//!   CID states. A request id unpinned and requested again within one batch is checked on its
//!   own (the property requests each id once).

#[macro_use]
mod support;
use support::cid;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix::{Addr, SyncArbiter};
use parking_lot::Mutex;
use pinhive_domain::{
    CidState, Cursor, PinRecord, PinRow, PinStatus, ReplicaStatus, PROPAGATE_STEP,
};
use pinhive_events::{Envelope, Event, NodeDescriptor, PinRequested, Replaces};
use pinhive_ipfs::NodeRegistry;
use pinhive_log::{EmbeddedLog, EmbeddedLogConfig, Log, Record, StoredRecord};
use pinhive_orchestrator::shard::{ApplyBatch, BatchOutcome, Replan, ShardParts};
use pinhive_orchestrator::{ShardActor, StateCache};
use pinhive_store::{
    AnalyticsCheckpoint, Commit, CommitState, DeadLetter, EmbeddedStore, JournalEntry, PinPage,
    PinQuery, S3Object, ShardBatch, Store, StoreError, TokenRecord, SCOPE_ALL_PINS,
    SCOPE_REPLICAS_DESIRED, SCOPE_REPLICAS_PINNED,
};
use proptest::prelude::*;

/// Longest a shard may take to answer one message.
const DEADLINE: Duration = Duration::from_secs(120);
const OWNERS: [&str; 2] = ["alice", "bob"];
/// Repair rounds run after B (enough to finish every walk B leaves under way, including the
/// second pass over Z that its view change in the middle of a walk asks for).
const REPLAN_ROUNDS: usize = 6;

// ---------------------------------------------------------------------------------------------
// A store that fails where it is told to.

/// Where the next batch fails. Each fault fires once, then the store behaves again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// The next row batch persists its first `n` writes (all of them if it has fewer), then
    /// fails: what a crash after `n` writes leaves behind.
    RowWrite(usize),
    /// The commit naming the batch's rows (`attempt: Some`) fails before it is written.
    AttemptCommit,
    /// The next commit without an attempt (the one committing the batch) fails before it is
    /// written: every row is in the store, the batch is not committed.
    FinalCommit,
}

/// An [`EmbeddedStore`] with fault injection at the writes of the commit protocol.
struct FaultyStore {
    inner: EmbeddedStore,
    armed: Mutex<Option<Fault>>,
    fired: Mutex<Option<Fault>>,
    /// `ShardBatch::len` of every row batch written (or attempted) since the last `take`.
    row_batches: Mutex<Vec<usize>>,
}

fn injected(fault: Fault) -> StoreError {
    StoreError::Backend(format!("injected fault: {fault:?}"))
}

impl FaultyStore {
    fn open(dir: &Path) -> Self {
        FaultyStore {
            inner: EmbeddedStore::open(dir).expect("open the store"),
            armed: Mutex::new(None),
            fired: Mutex::new(None),
            row_batches: Mutex::new(Vec::new()),
        }
    }

    fn arm(&self, fault: Fault) {
        *self.fired.lock() = None;
        *self.armed.lock() = Some(fault);
    }

    /// Disarms; returns the fault that fired since `arm`, if one did.
    fn disarm(&self) -> Option<Fault> {
        *self.armed.lock() = None;
        self.fired.lock().take()
    }

    fn take_row_batches(&self) -> Vec<usize> {
        std::mem::take(&mut self.row_batches.lock())
    }

    /// Takes the armed fault if `fires` says it fires now.
    fn fire(&self, fires: impl FnOnce(Fault) -> bool) -> Option<Fault> {
        let mut armed = self.armed.lock();
        let fault = (*armed).filter(|fault| fires(*fault))?;
        *armed = None;
        *self.fired.lock() = Some(fault);
        Some(fault)
    }
}

impl FaultyStore {
    fn on_call(&self, _method: &'static str) {}
}

impl Store for FaultyStore {
    fn write_shard_batch(&self, batch: &ShardBatch) -> Result<(), StoreError> {
        self.row_batches.lock().push(batch.len());
        match self.fire(|fault| matches!(fault, Fault::RowWrite(_))) {
            Some(fault @ Fault::RowWrite(n)) => {
                self.inner.write_shard_batch(&batch.prefix(n))?;
                Err(injected(fault))
            }
            _ => self.inner.write_shard_batch(batch),
        }
    }
    fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        let attempt = commit.state.attempt.is_some();
        let fault = self.fire(|fault| match fault {
            Fault::AttemptCommit => attempt,
            Fault::FinalCommit => !attempt,
            Fault::RowWrite(_) => false,
        });
        match fault {
            Some(fault) => Err(injected(fault)),
            None => self.inner.commit(commit),
        }
    }
    delegate_store_reads!();
}

// ---------------------------------------------------------------------------------------------
// Events, the log and the shard.

/// A fresh directory, on tmpfs where there is one: opening a store syncs to disk, which costs
/// 0.1–0.7 s per store on a disk, and these tests open hundreds. Nothing here depends on
/// durability (faults are injected at the store's API, not by killing the process).
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("temp dir")
}

fn delegate(node: &str) -> String {
    let host = node.bytes().map(u32::from).sum::<u32>() % 250 + 1;
    format!("/ip4/203.0.113.{host}/tcp/4001")
}

/// Builds the events of a scenario, in log order, split into batches.
#[derive(Default)]
struct Events {
    batches: Vec<Vec<Record>>,
    created_ns: i64,
}

impl Events {
    fn batch(&mut self) -> &mut Self {
        self.batches.push(Vec::new());
        self
    }

    fn event(&mut self, key: &str, event: Event) -> &mut Self {
        let record = Record::from_envelope(&Envelope::new(key, event));
        if self.batches.is_empty() {
            self.batches.push(Vec::new());
        }
        self.batches.last_mut().expect("a batch").push(record);
        self
    }

    /// A pin request (keyed by its CID), with the replace it makes, if any.
    fn pin(
        &mut self,
        requestid: &str,
        owner: &str,
        on: &str,
        bounds: (u8, u8),
        replaces: Option<(&str, &str)>,
    ) -> &mut Self {
        self.created_ns += 1;
        let request = PinRequested {
            requestid: requestid.into(),
            owner: owner.into(),
            cid: on.into(),
            name: Some(format!("name-{requestid}")),
            origins: vec![],
            meta: Default::default(),
            created_ns: self.created_ns,
            replicas_min: bounds.0,
            replicas_max: bounds.1,
            replaces: replaces.map(|(requestid, cid)| Replaces {
                requestid: requestid.into(),
                cid: cid.into(),
            }),
        };
        self.event(on, Event::PinRequested(request))
    }

    fn unpin(&mut self, requestid: &str, owner: &str, on: &str) -> &mut Self {
        let event = Event::UnpinRequested {
            requestid: requestid.into(),
            owner: owner.into(),
        };
        self.event(on, event)
    }

    fn allocate(&mut self, on: &str, nodes: &[&str]) -> &mut Self {
        let event = Event::ReplicasAllocated {
            nodes: nodes.iter().map(|node| node.to_string()).collect(),
            target: nodes.len() as u8,
        };
        self.event(on, event)
    }

    fn pinned(&mut self, on: &str, node: &str) -> &mut Self {
        let event = Event::ReplicaPinned {
            node: node.into(),
            delegates: vec![delegate(node)],
            attempts: 1,
            duration_ms: 5,
        };
        self.event(on, event)
    }
}

/// One partition: every key lands on partition 0, the shard's own.
fn open_log(dir: &Path) -> Arc<dyn Log> {
    let config = EmbeddedLogConfig {
        partitions: 1,
        ..EmbeddedLogConfig::default()
    };
    Arc::new(EmbeddedLog::open(dir, config).expect("open the log"))
}

/// Appends the batches' records and reads them back, split the same way.
async fn append_batches(log: &Arc<dyn Log>, batches: Vec<Vec<Record>>) -> Vec<Vec<StoredRecord>> {
    let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
    let total: usize = sizes.iter().sum();
    log.append(batches.into_iter().flatten().collect())
        .await
        .expect("append");
    let stored = support::read_all(log, total).await;
    let mut rest = stored.into_iter();
    sizes
        .into_iter()
        .map(|size| rest.by_ref().take(size).collect())
        .collect()
}

fn start_shard(store: Arc<FaultyStore>, log: &Arc<dyn Log>) -> Addr<ShardActor> {
    let parts = ShardParts {
        partitions: 1,
        store: store.clone(),
        log: log.clone(),
        registry: NodeRegistry::default(),
        // A new shard gets a new cache: what a restarted process has.
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
    SyncArbiter::start(1, move || ShardActor::new(0, parts.clone()))
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

async fn replan(shard: &Addr<ShardActor>, cids: &[String]) -> Result<(), StoreError> {
    let message = Replan {
        cids: cids.to_vec(),
    };
    tokio::time::timeout(DEADLINE, shard.send(message))
        .await
        .expect("the shard answers within the deadline")
        .expect("the shard's mailbox is open")
        .map(drop)
}

// ---------------------------------------------------------------------------------------------
// What the store holds, and the counting invariant.

fn listing_query(owner: &str, statuses: Vec<PinStatus>, cids: Vec<String>) -> PinQuery {
    PinQuery {
        owner: owner.into(),
        cids,
        name: None,
        statuses,
        before_ns: None,
        after_ns: None,
        meta: Default::default(),
        limit: 1000,
    }
}

fn counter(store: &dyn Store, owner: &str, status: PinStatus) -> i64 {
    store
        .counter(owner, status, 0)
        .expect("counter")
        .unwrap_or(0)
}

fn committed_state(store: &dyn Store, cid: &str) -> Option<CidState> {
    store.load_cid(cid).expect("load_cid")
}

/// The counters equal the rows they count (see the module docs); `Err` names the first
/// mismatch.
fn check_counters(store: &dyn Store, cids: &[String]) -> Result<(), String> {
    let mut listed_total = 0usize;
    for status in PinStatus::ALL {
        let mut owners_total = 0;
        for owner in OWNERS {
            let page = store
                .list_pins(&listing_query(owner, vec![status], vec![]), 1)
                .map_err(|e| e.to_string())?;
            if page.results.len() >= 1000 {
                return Err(format!("{owner}/{status:?}: more pins than one page"));
            }
            for record in &page.results {
                let row = store
                    .get_pin(&record.requestid)
                    .map_err(|e| e.to_string())?;
                if row.as_ref() != Some(record) {
                    return Err(format!(
                        "{owner}/{status:?} lists {record:?}, but its pin row is {row:?}"
                    ));
                }
            }
            let counted = counter(store, owner, status);
            if counted != page.results.len() as i64 {
                return Err(format!(
                    "counter {owner}/{status:?} = {counted}, but the listing holds {} rows: {:?}",
                    page.results.len(),
                    page.results
                        .iter()
                        .map(|r| &r.requestid)
                        .collect::<Vec<_>>()
                ));
            }
            owners_total += counted;
            listed_total += page.results.len();
        }
        let all = counter(store, SCOPE_ALL_PINS, status);
        if all != owners_total {
            return Err(format!(
                "{SCOPE_ALL_PINS}/{status:?} = {all}, owners sum to {owners_total}"
            ));
        }
    }
    let (mut live, mut desired, mut pinned) = (0u64, 0i64, 0i64);
    for cid in cids {
        let listed = store
            .cid_pins(cid, &Cursor::default(), 100_000)
            .map_err(|e| e.to_string())?;
        for (_, requestid) in &listed {
            let row = store.get_pin(requestid).map_err(|e| e.to_string())?;
            if row.as_ref().map(PinRecord::canonical_cid).as_ref() != Some(cid) {
                return Err(format!(
                    "pin list of {cid} names {requestid}, whose row is {row:?}"
                ));
            }
        }
        let Some(state) = committed_state(store, cid) else {
            if !listed.is_empty() {
                return Err(format!("{cid} has no state but lists pins {listed:?}"));
            }
            continue;
        };
        if state.pins() != listed.len() as u64 {
            return Err(format!(
                "{cid} counts {} pins, its pin list holds {listed:?}",
                state.pins()
            ));
        }
        live += state.pins();
        desired += state.desired_replicas() as i64;
        pinned += state.count(ReplicaStatus::Pinned) as i64;
    }
    if live != listed_total as u64 {
        return Err(format!(
            "CID states count {live} live pins, the listing holds {listed_total}"
        ));
    }
    let desired_counter = counter(store, SCOPE_REPLICAS_DESIRED, PinStatus::Pinned);
    if desired_counter != desired {
        return Err(format!(
            "{SCOPE_REPLICAS_DESIRED} = {desired_counter}, CID states sum to {desired}"
        ));
    }
    let pinned_counter = counter(store, SCOPE_REPLICAS_PINNED, PinStatus::Pinned);
    if pinned_counter != pinned {
        return Err(format!(
            "{SCOPE_REPLICAS_PINNED} = {pinned_counter}, CID states sum to {pinned}"
        ));
    }
    Ok(())
}

/// Everything a batch writes, read back through the store's reads.
#[derive(Debug, PartialEq)]
struct Snapshot {
    pin_rows: BTreeMap<String, Option<PinRow>>,
    shown_pins: BTreeMap<String, Option<PinRecord>>,
    cid_rows: BTreeMap<String, Option<CidState>>,
    pin_lists: BTreeMap<String, Vec<(u64, String)>>,
    listings: BTreeMap<(String, PinStatus), PinPage>,
    listings_by_cid: BTreeMap<(String, String), PinPage>,
    counters: BTreeMap<(String, PinStatus), Option<i64>>,
    pending: Vec<String>,
    journals: BTreeMap<String, Vec<JournalEntry>>,
    /// (partition, offset, reason, key): the time a letter was written differs between runs.
    dead_letters: Vec<(u32, u64, String, String)>,
    commit: CommitState,
}

fn snapshot(store: &dyn Store, requestids: &[String], cids: &[String]) -> Snapshot {
    let ok = |what: &str, e: StoreError| -> ! { panic!("{what}: {e}") };
    let mut snapshot = Snapshot {
        pin_rows: BTreeMap::new(),
        shown_pins: BTreeMap::new(),
        cid_rows: BTreeMap::new(),
        pin_lists: BTreeMap::new(),
        listings: BTreeMap::new(),
        listings_by_cid: BTreeMap::new(),
        counters: BTreeMap::new(),
        pending: store
            .pending_cids(0, None, 1000)
            .unwrap_or_else(|e| ok("pending", e)),
        journals: BTreeMap::new(),
        dead_letters: store
            .dead_letters(None, 1000)
            .unwrap_or_else(|e| ok("dead letters", e))
            .into_iter()
            .map(|d| (d.partition, d.offset, d.reason, d.key))
            .collect(),
        commit: store.committed(0).unwrap_or_else(|e| ok("committed", e)),
    };
    for requestid in requestids {
        let row = store
            .load_pin(requestid)
            .unwrap_or_else(|e| ok("load_pin", e));
        snapshot.pin_rows.insert(requestid.clone(), row);
        let shown = store
            .get_pin(requestid)
            .unwrap_or_else(|e| ok("get_pin", e));
        snapshot.shown_pins.insert(requestid.clone(), shown);
    }
    for cid in cids {
        let row = store.load_cid(cid).unwrap_or_else(|e| ok("load_cid", e));
        snapshot.cid_rows.insert(cid.clone(), row);
        let list = store
            .cid_pins(cid, &Cursor::default(), 100_000)
            .unwrap_or_else(|e| ok("cid_pins", e));
        snapshot.pin_lists.insert(cid.clone(), list);
        let journal = store
            .journal(cid, None, 100_000)
            .unwrap_or_else(|e| ok("journal", e));
        snapshot.journals.insert(cid.clone(), journal);
        for owner in OWNERS {
            let query = listing_query(owner, PinStatus::ALL.to_vec(), vec![cid.clone()]);
            let page = store
                .list_pins(&query, 1)
                .unwrap_or_else(|e| ok("list_pins", e));
            snapshot
                .listings_by_cid
                .insert((owner.into(), cid.clone()), page);
        }
    }
    let scopes = [
        SCOPE_ALL_PINS,
        SCOPE_REPLICAS_DESIRED,
        SCOPE_REPLICAS_PINNED,
    ];
    for owner in OWNERS.into_iter().chain(scopes) {
        for status in PinStatus::ALL {
            let value = store
                .counter(owner, status, 0)
                .unwrap_or_else(|e| ok("counter", e));
            snapshot.counters.insert((owner.into(), status), value);
            if !owner.starts_with('#') {
                let query = listing_query(owner, vec![status], vec![]);
                let page = store
                    .list_pins(&query, 1)
                    .unwrap_or_else(|e| ok("list_pins", e));
                snapshot.listings.insert((owner.into(), status), page);
            }
        }
    }
    snapshot
}

/// The first entry where two maps differ.
fn map_difference<K: Ord + Debug, V: PartialEq + Debug>(
    what: &str,
    expected: &BTreeMap<K, V>,
    actual: &BTreeMap<K, V>,
) -> Option<String> {
    let keys: BTreeSet<&K> = expected.keys().chain(actual.keys()).collect();
    keys.into_iter()
        .find(|key| expected.get(key) != actual.get(key))
        .map(|key| {
            format!(
                "{what} {key:?} differs:\n  clean:   {:?}\n  retried: {:?}",
                expected.get(key),
                actual.get(key)
            )
        })
}

/// What differs between a clean run and a retried one (the first difference of each kind).
fn difference(expected: &Snapshot, actual: &Snapshot) -> Option<String> {
    let mut found = vec![
        map_difference("pin row", &expected.pin_rows, &actual.pin_rows),
        map_difference("pin (get_pin)", &expected.shown_pins, &actual.shown_pins),
        map_difference("CID row", &expected.cid_rows, &actual.cid_rows),
        map_difference("pin list", &expected.pin_lists, &actual.pin_lists),
        map_difference("listing", &expected.listings, &actual.listings),
        map_difference(
            "listing by CID",
            &expected.listings_by_cid,
            &actual.listings_by_cid,
        ),
        map_difference("counter", &expected.counters, &actual.counters),
        map_difference("journal", &expected.journals, &actual.journals),
    ];
    if expected.pending != actual.pending {
        found.push(Some(format!(
            "pending set: clean {:?}, retried {:?}",
            expected.pending, actual.pending
        )));
    }
    if expected.dead_letters != actual.dead_letters {
        found.push(Some(format!(
            "dead letters: clean {:?}, retried {:?}",
            expected.dead_letters, actual.dead_letters
        )));
    }
    if expected.commit != actual.commit {
        found.push(Some(format!(
            "commit row: clean {:?}, retried {:?}",
            expected.commit, actual.commit
        )));
    }
    let found: Vec<String> = found.into_iter().flatten().collect();
    (!found.is_empty()).then(|| found.join("\n"))
}

// ---------------------------------------------------------------------------------------------
// Test 1: every crash point of one batch.

/// The history, the batch B under test, and every request id and CID they name.
struct Scenario {
    log: Arc<dyn Log>,
    history: Vec<Vec<StoredRecord>>,
    batch: Vec<StoredRecord>,
    requestids: Vec<String>,
    cids: Vec<String>,
    _dir: tempfile::TempDir,
}

/// X: a few pins (one replaced in B, one unpinned in B, one unpinned in the history's last
/// batch); Z: 150 pins, a walk restarted by B; W: 100 pins, a
/// walk B continues; V: a pin replaced by one of X, its hold settled in B (V's row is deleted);
/// Y: the CID of the pin replacing one of X in B.
async fn scenario() -> Scenario {
    let (x, y, z, w, v) = (cid(1), cid(2), cid(3), cid(4), cid(5));
    let mut requestids: Vec<String> = [
        "x-1", "x-2", "x-3", "x-5", "x-6", "x-7", "x-8", "y-1", "v-1",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let mut events = Events::default();

    // History 1: the pins.
    events.batch();
    events
        .pin("x-1", "alice", &x, (1, 2), None)
        .pin("x-2", "bob", &x, (1, 2), None)
        .pin("x-3", "alice", &x, (2, 3), None)
        .pin("x-7", "alice", &x, (1, 2), None)
        .pin("v-1", "alice", &v, (1, 1), None);
    for i in 0..150 {
        events.pin(&format!("z-{i:03}"), OWNERS[i % 2], &z, (2, 2), None);
        requestids.push(format!("z-{i:03}"));
    }
    for i in 0..100 {
        events.pin(&format!("w-{i:03}"), OWNERS[i % 2], &w, (1, 1), None);
        requestids.push(format!("w-{i:03}"));
    }
    requestids.push("w-100".into());
    // History 2: replicas of X and Z (Z's view changes: a walk over its 150 pins starts), and
    // x-6 replaces v-1 (V keeps a hold, X owes its release).
    events.batch();
    events
        .allocate(&x, &["n1"])
        .pinned(&x, "n1")
        .allocate(&z, &["n1", "n2"])
        .pinned(&z, "n1")
        .pin("x-6", "alice", &x, (1, 2), Some(("v-1", &v)))
        .event(
            &v,
            Event::PinReplaced {
                requestid: "v-1".into(),
                replaced_by: "x-6".into(),
            },
        );
    // History 3: W's view changes (its walk stops after one step); x-7 goes.
    events.batch();
    events.allocate(&w, &["n2"]).unpin("x-7", "alice", &x);

    // B: every event type.
    events.batch();
    events
        .pin("y-1", "alice", &y, (1, 2), Some(("x-1", &x)))
        .event(
            &x,
            Event::PinReplaced {
                requestid: "x-1".into(),
                replaced_by: "y-1".into(),
            },
        )
        .unpin("x-2", "bob", &x)
        .pin("x-5", "bob", &x, (1, 2), None)
        .pin("x-8", "alice", &x, (1, 1), None)
        .unpin("x-8", "alice", &x)
        // Not bob's pin: rejected and dead-lettered.
        .unpin("x-3", "bob", &x)
        .allocate(&x, &["n2", "n3"])
        .event(
            &x,
            Event::TargetChanged {
                replicas: 3,
                preferred_regions: vec!["eu".into()],
                reason: "hot".into(),
            },
        )
        .pinned(&x, "n2")
        .event(
            &x,
            Event::ReplicaFailed {
                node: "n3".into(),
                reason: "timeout".into(),
                attempts: 3,
            },
        )
        .event(&x, Event::ReplicaUnpinned { node: "n1".into() })
        .event(
            &v,
            Event::ReplaceSettled {
                requestid: "v-1".into(),
            },
        )
        .event(
            &x,
            Event::ReplaceSettled {
                requestid: "v-1".into(),
            },
        )
        .pinned(&z, "n2")
        .pin("w-100", "alice", &w, (1, 1), None)
        .allocate(&y, &["n1"])
        .pinned(&y, "n1")
        // Anti-entropy's corrections, a recovery, and expiry: x-5 gets a far expiry, w-050 a
        // near one that then expires (its pin goes), w-051 expires without an expiry (moot).
        .event(
            &x,
            Event::ReplicaMissing {
                node: "n2".into(),
                reason: "not in the node's pin/ls".into(),
            },
        )
        .event(&x, Event::UnknownPinRemoved { node: "n4".into() })
        .event(
            &x,
            Event::PinRecoverRequested {
                requestid: "x-3".into(),
            },
        )
        .event(
            &x,
            Event::PinExpirySet {
                requestid: "x-5".into(),
                expires_ns: Some(4_000_000_000_000_000_000),
            },
        )
        .event(
            &w,
            Event::PinExpirySet {
                requestid: "w-050".into(),
                expires_ns: Some(1_000_000_000),
            },
        )
        .event(
            &w,
            Event::PinExpired {
                requestid: "w-050".into(),
                expires_ns: 2_000_000_000,
            },
        )
        .event(
            &w,
            Event::PinExpired {
                requestid: "w-051".into(),
                expires_ns: 2_000_000_000,
            },
        );

    let dir = scratch_dir();
    let log = open_log(&dir.path().join("log"));
    let mut batches = append_batches(&log, events.batches).await;
    let batch = batches.pop().expect("B");
    Scenario {
        log,
        history: batches,
        batch,
        requestids,
        cids: vec![x, y, z, w, v],
        _dir: dir,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retry {
    /// The shard that failed applies B again (it forgot its caches on the error).
    SameShard,
    /// A new shard, with a new cache, applies B on the same store (a restart).
    RestartedShard,
}

/// What one run leaves: right after B, and after the repair rounds.
struct Run {
    after_batch: Snapshot,
    after_repair: Snapshot,
    /// Lengths of the row batches B wrote (the clean run's: B's one batch).
    row_batches: Vec<usize>,
}

/// Applies the history cleanly on a fresh store, then B: first with `fault` (if any) — it
/// must fail — then again as `retry` says; then the repair rounds.
async fn run(scenario: &Scenario, fault: Option<Fault>, retry: Retry) -> Run {
    let dir = scratch_dir();
    let store = Arc::new(FaultyStore::open(dir.path()));
    let mut shard = start_shard(store.clone(), &scenario.log);
    for batch in &scenario.history {
        apply(&shard, batch)
            .await
            .expect("the history applies cleanly");
    }
    store.take_row_batches();
    if let Some(fault) = fault {
        store.arm(fault);
        let result = apply(&shard, &scenario.batch).await;
        assert_eq!(store.disarm(), Some(fault), "{fault:?} fired during B");
        assert!(result.is_err(), "B fails at {fault:?}: {result:?}");
        if retry == Retry::RestartedShard {
            shard = start_shard(store.clone(), &scenario.log);
        }
    }
    if let Err(error) = apply(&shard, &scenario.batch).await {
        panic!("B retried after {fault:?} ({retry:?}) fails: {error}");
    }
    let row_batches = store.take_row_batches();
    let after_batch = snapshot(store.as_ref(), &scenario.requestids, &scenario.cids);
    for round in 0..REPLAN_ROUNDS {
        if let Err(error) = replan(&shard, &scenario.cids).await {
            panic!("repair round {round} after {fault:?} ({retry:?}) fails: {error}");
        }
    }
    let after_repair = snapshot(store.as_ref(), &scenario.requestids, &scenario.cids);
    if let Err(mismatch) = check_counters(store.as_ref(), &scenario.cids) {
        panic!("after {fault:?} ({retry:?}) and the repair rounds: {mismatch}");
    }
    Run {
        after_batch,
        after_repair,
        row_batches,
    }
}

/// The clean run, checked for what the scenario is meant to exercise.
async fn clean_run(scenario: &Scenario) -> Run {
    let clean = run(scenario, None, Retry::SameShard).await;
    assert_eq!(
        clean.row_batches.len(),
        1,
        "B writes one row batch: {:?}",
        clean.row_batches
    );
    let (x, z, w, v) = (
        &scenario.cids[0],
        &scenario.cids[2],
        &scenario.cids[3],
        &scenario.cids[4],
    );
    let state = |snapshot: &Snapshot, cid: &String| snapshot.cid_rows[cid].clone();
    let after_batch = &clean.after_batch;
    assert!(state(after_batch, v).is_none(), "V is gone after B");
    assert!(
        state(after_batch, z).and_then(|s| s.propagation).is_some(),
        "B leaves Z's walk under way"
    );
    assert!(
        state(after_batch, w).and_then(|s| s.propagation).is_none(),
        "B ends W's walk"
    );
    assert_eq!(after_batch.pin_rows["x-7"], None, "x-7 is gone");
    assert_eq!(
        after_batch.dead_letters.len(),
        1,
        "the unpin by a non-owner is dead-lettered"
    );
    for cid in [x, z, w] {
        let state = state(&clean.after_repair, cid).expect("a state");
        assert!(
            state.propagation.is_none(),
            "the repair rounds end {cid}'s walk"
        );
        // No node is registered in these tests: no addresses.
        let view = state.view(&|_: &str| Vec::new());
        assert_eq!(
            state.view,
            Some(view.digest()),
            "{cid}'s pins show its view"
        );
        for (_, requestid) in &clean.after_repair.pin_lists[cid] {
            let shown = clean.after_repair.shown_pins[requestid]
                .as_ref()
                .expect("a pin");
            assert_eq!(shown.status, view.status, "{requestid} shows {cid}'s view");
            assert_eq!(
                shown.delegates, view.delegates,
                "{requestid} shows {cid}'s view"
            );
        }
    }
    clean
}

async fn assert_retry_ends_clean(scenario: &Scenario, clean: &Run, fault: Fault, retry: Retry) {
    let retried = run(scenario, Some(fault), retry).await;
    if let Some(difference) = difference(&clean.after_batch, &retried.after_batch) {
        panic!("B failed at {fault:?} and retried ({retry:?}); after B:\n{difference}");
    }
    if let Some(difference) = difference(&clean.after_repair, &retried.after_repair) {
        panic!(
            "B failed at {fault:?} and retried ({retry:?}); after the repair rounds:\n{difference}"
        );
    }
}

/// For every n: B persists its first n row writes and fails, then is retried.
async fn every_row_prefix(retry: Retry) {
    let scenario = scenario().await;
    let clean = clean_run(&scenario).await;
    let total = clean.row_batches[0];
    assert!(
        total > PROPAGATE_STEP,
        "B's row batch holds a full walk step: {total} writes"
    );
    for n in 0..=total {
        assert_retry_ends_clean(&scenario, &clean, Fault::RowWrite(n), retry).await;
    }
}

#[actix_rt::test]
async fn every_row_prefix_then_a_retry_by_the_same_shard_ends_as_a_clean_apply() {
    every_row_prefix(Retry::SameShard).await;
}

#[actix_rt::test]
async fn every_row_prefix_then_a_restarted_shard_ends_as_a_clean_apply() {
    every_row_prefix(Retry::RestartedShard).await;
}

#[actix_rt::test]
async fn a_failed_attempt_commit_then_a_retry_ends_as_a_clean_apply() {
    let scenario = scenario().await;
    let clean = clean_run(&scenario).await;
    for retry in [Retry::SameShard, Retry::RestartedShard] {
        assert_retry_ends_clean(&scenario, &clean, Fault::AttemptCommit, retry).await;
    }
}

#[actix_rt::test]
async fn a_failed_final_commit_then_a_retry_ends_as_a_clean_apply() {
    let scenario = scenario().await;
    let clean = clean_run(&scenario).await;
    for retry in [Retry::SameShard, Retry::RestartedShard] {
        assert_retry_ends_clean(&scenario, &clean, Fault::FinalCommit, retry).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Test 2: counters equal the rows they count, whatever the events and wherever a batch fails.

const CIDS: usize = 3;
const PINS: usize = 12;
/// Pins a `Crowd` adds at once: more than one walk step.
const CROWD: usize = PROPAGATE_STEP + 6;
const NODES: [&str; 3] = ["n1", "n2", "n3"];

/// Pin `i` is a pin of CID `i % CIDS`, owned by `OWNERS[i % 2]`.
fn pin_id(i: usize) -> String {
    format!("r-{i}")
}

#[derive(Clone, Debug)]
enum Op {
    Request {
        pin: usize,
    },
    /// Pin `new` (requested now) replaces pin `old`.
    Replace {
        old: usize,
        new: usize,
    },
    /// An unpin by the pin's owner, or by the other owner (rejected).
    Unpin {
        pin: usize,
        by_owner: bool,
    },
    /// `ReplaceSettled` for pin `pin`, keyed by its own CID or by the replacing pin's.
    Settle {
        pin: usize,
        on_replacer: bool,
    },
    Allocate {
        cid: usize,
        nodes: Vec<usize>,
    },
    Pinned {
        cid: usize,
        node: usize,
    },
    Failed {
        cid: usize,
        node: usize,
    },
    Unpinned {
        cid: usize,
        node: usize,
    },
    Target {
        cid: usize,
        replicas: u8,
    },
    /// `CROWD` more pins of `cid`, each requested once: the CID's next view change takes a
    /// walk of several steps.
    Crowd {
        cid: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let pin = 0..PINS;
    let cid = 0..CIDS;
    let node = 0..NODES.len();
    prop_oneof![
        3 => pin.clone().prop_map(|pin| Op::Request { pin }),
        1 => (pin.clone(), pin.clone()).prop_map(|(old, new)| Op::Replace { old, new }),
        2 => (pin.clone(), any::<bool>()).prop_map(|(pin, by_owner)| Op::Unpin { pin, by_owner }),
        1 => (pin, any::<bool>()).prop_map(|(pin, on_replacer)| Op::Settle { pin, on_replacer }),
        2 => (cid.clone(), prop::collection::vec(node.clone(), 1..3))
            .prop_map(|(cid, nodes)| Op::Allocate { cid, nodes }),
        2 => (cid.clone(), node.clone()).prop_map(|(cid, node)| Op::Pinned { cid, node }),
        1 => (cid.clone(), node.clone()).prop_map(|(cid, node)| Op::Failed { cid, node }),
        1 => (cid.clone(), node).prop_map(|(cid, node)| Op::Unpinned { cid, node }),
        1 => (cid.clone(), 1u8..4).prop_map(|(cid, replicas)| Op::Target { cid, replicas }),
        1 => cid.prop_map(|cid| Op::Crowd { cid }),
    ]
}

/// A batch: its events; the faults its first attempts meet (a second fault hits the recovery
/// from the first: the roll-back or its commit); whether a restarted shard retries it and a
/// repair round runs before the retry; whether a repair round follows it.
#[derive(Clone, Debug)]
struct BatchPlan {
    ops: Vec<Op>,
    faults: Vec<Fault>,
    restart: bool,
    repair_before_retry: bool,
    repair_after: bool,
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        3 => (0usize..100).prop_map(Fault::RowWrite),
        1 => Just(Fault::AttemptCommit),
        1 => Just(Fault::FinalCommit),
    ]
}

fn batch_plan() -> impl Strategy<Value = BatchPlan> {
    (
        prop::collection::vec(op(), 1..10),
        prop::collection::vec(fault(), 0..3),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(ops, faults, restart, repair_before_retry, repair_after)| BatchPlan {
                ops,
                faults,
                restart,
                repair_before_retry,
                repair_after,
            },
        )
}

/// The events of the plans. A request id is requested once (the API mints a fresh one per
/// request); later requests of it are left out (see the test of a request id requested again
/// below).
fn plan_events(plans: &[BatchPlan]) -> Events {
    let cids: Vec<String> = (0..CIDS).map(cid).collect();
    let cid_of = |pin: usize| &cids[pin % CIDS];
    let owner_of = |pin: usize| OWNERS[pin % 2];
    let bounds_of = |pin: usize| (1 + (pin % 2) as u8, 2 + (pin % 3) as u8);
    let mut requested: BTreeSet<usize> = BTreeSet::new();
    let mut replaced_by: BTreeMap<usize, usize> = BTreeMap::new();
    let mut crowded = 0;
    let mut events = Events::default();
    for plan in plans {
        events.batch();
        for op in &plan.ops {
            match *op {
                Op::Request { pin } => {
                    if requested.insert(pin) {
                        events.pin(
                            &pin_id(pin),
                            owner_of(pin),
                            cid_of(pin),
                            bounds_of(pin),
                            None,
                        );
                    }
                }
                Op::Replace { old, new } => {
                    if old == new || !requested.insert(new) {
                        continue;
                    }
                    let replaces = Some((pin_id(old), cid_of(old).clone()));
                    let replaces = replaces
                        .as_ref()
                        .map(|(id, cid)| (id.as_str(), cid.as_str()));
                    events.pin(
                        &pin_id(new),
                        owner_of(new),
                        cid_of(new),
                        bounds_of(new),
                        replaces,
                    );
                    let replaced = Event::PinReplaced {
                        requestid: pin_id(old),
                        replaced_by: pin_id(new),
                    };
                    events.event(cid_of(old), replaced);
                    replaced_by.insert(old, new);
                }
                Op::Unpin { pin, by_owner } => {
                    let owner = OWNERS[(pin + usize::from(!by_owner)) % 2];
                    events.unpin(&pin_id(pin), owner, cid_of(pin));
                }
                Op::Settle { pin, on_replacer } => {
                    let key = match replaced_by.get(&pin) {
                        Some(new) if on_replacer => cid_of(*new),
                        _ => cid_of(pin),
                    };
                    events.event(
                        key,
                        Event::ReplaceSettled {
                            requestid: pin_id(pin),
                        },
                    );
                }
                Op::Allocate { cid, ref nodes } => {
                    let nodes: Vec<&str> = nodes.iter().map(|n| NODES[*n]).collect();
                    events.allocate(&cids[cid], &nodes);
                }
                Op::Pinned { cid, node } => {
                    events.pinned(&cids[cid], NODES[node]);
                }
                Op::Failed { cid, node } => {
                    let failed = Event::ReplicaFailed {
                        node: NODES[node].into(),
                        reason: "unreachable".into(),
                        attempts: 2,
                    };
                    events.event(&cids[cid], failed);
                }
                Op::Unpinned { cid, node } => {
                    let unpinned = Event::ReplicaUnpinned {
                        node: NODES[node].into(),
                    };
                    events.event(&cids[cid], unpinned);
                }
                Op::Target { cid, replicas } => {
                    let target = Event::TargetChanged {
                        replicas,
                        preferred_regions: vec![],
                        reason: "test".into(),
                    };
                    events.event(&cids[cid], target);
                }
                Op::Crowd { cid } => {
                    for _ in 0..CROWD {
                        crowded += 1;
                        let requestid = format!("crowd-{crowded}");
                        events.pin(&requestid, OWNERS[crowded % 2], &cids[cid], (1, 2), None);
                    }
                }
            }
        }
    }
    events
}

async fn counters_follow_rows(plans: Vec<BatchPlan>) {
    let cids: Vec<String> = (0..CIDS).map(cid).collect();
    let dir = scratch_dir();
    let log = open_log(&dir.path().join("log"));
    let events = plan_events(&plans);
    let batches = append_batches(&log, events.batches).await;
    let store = Arc::new(FaultyStore::open(&dir.path().join("store")));
    let mut shard = start_shard(store.clone(), &log);
    for (i, (plan, batch)) in plans.iter().zip(&batches).enumerate() {
        if batch.is_empty() {
            continue;
        }
        let mut failed = false;
        for fault in &plan.faults {
            store.arm(*fault);
            let result = apply(&shard, batch).await;
            let fired = store.disarm();
            assert_eq!(
                fired.is_some(),
                result.is_err(),
                "batch {i}: {fault:?} fired: {result:?}"
            );
            failed |= fired.is_some();
        }
        if failed && plan.restart {
            shard = start_shard(store.clone(), &log);
        }
        if failed && plan.repair_before_retry {
            replan(&shard, &cids).await.expect("a repair round");
            if let Err(mismatch) = check_counters(store.as_ref(), &cids) {
                panic!("batch {i} failed ({plan:?}), then a repair round: {mismatch}");
            }
        }
        if let Err(error) = apply(&shard, batch).await {
            panic!("batch {i} ({plan:?}) fails on its retry: {error}");
        }
        if let Err(mismatch) = check_counters(store.as_ref(), &cids) {
            panic!("after batch {i} ({plan:?}): {mismatch}");
        }
        if plan.repair_after {
            replan(&shard, &cids).await.expect("a repair round");
            if let Err(mismatch) = check_counters(store.as_ref(), &cids) {
                panic!("after the repair round following batch {i}: {mismatch}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 40,
        // Shrunk cases are printed in the failure; no regression file next to the tests.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn counters_always_equal_the_rows_they_count(plans in prop::collection::vec(batch_plan(), 1..7)) {
        actix_rt::System::new().block_on(counters_follow_rows(plans));
    }
}

/// A request id is requested again after its pin was unpinned (an external producer may pick
/// its request ids). Across two batches this creates the pin anew; within one batch it must
/// too: the pin row, its listing entries and the counters have to agree.
#[actix_rt::test]
async fn a_request_id_unpinned_and_requested_again_in_one_batch_keeps_rows_and_counters_equal() {
    let x = cid(1);
    let mut events = Events::default();
    events.batch();
    events.pin("again", "alice", &x, (1, 1), None);
    events.batch();
    events
        .unpin("again", "alice", &x)
        .pin("again", "alice", &x, (1, 1), None);
    let dir = scratch_dir();
    let log = open_log(&dir.path().join("log"));
    let batches = append_batches(&log, events.batches).await;
    let store = Arc::new(FaultyStore::open(&dir.path().join("store")));
    let shard = start_shard(store.clone(), &log);
    for batch in &batches {
        apply(&shard, batch).await.expect("the batch applies");
    }
    if let Err(mismatch) = check_counters(store.as_ref(), std::slice::from_ref(&x)) {
        panic!("{mismatch}");
    }
    let state = committed_state(store.as_ref(), &x).expect("X is pinned");
    assert_eq!(state.pins(), 1, "X counts the pin requested again");
    let row = store.get_pin("again").expect("get_pin");
    assert!(row.is_some(), "the pin requested again has its row");
}
