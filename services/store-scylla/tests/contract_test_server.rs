//! The store contract (the same suite the embedded store passes) against the CQL test server
//! (integration-tests/cql-server): one server per check, a fresh keyspace migrated on it.
//! Then what the contract does not reach: listings across many buckets, faults, and calls
//! from inside an async runtime.

mod common;

use pinhive_cql_server::{CqlServer, Fault, StatementMatcher};
use pinhive_domain::{PinRecord, PinRow, PinStatus};
use pinhive_store::{CommitState, CounterRow, PinQuery, PinWrite, ShardBatch, Store, StoreError};
use pinhive_store_scylla::{ScyllaOptions, ScyllaStore};

/// What must outlive the store: the server and the runtime its tasks run on (the server is
/// dropped first, stopping it).
pub struct TestServer {
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

/// A migrated keyspace on its own test server, and the options its store opens with.
pub struct Keyspace {
    uri: String,
    options: ScyllaOptions,
    _server: TestServer,
}

fn fresh_keyspace_with(options: ScyllaOptions) -> (Box<dyn Store>, Keyspace) {
    let server = start_server();
    let uri = common::migrated_keyspace(&server.server.addr().to_string());
    let store = ScyllaStore::open_with(&uri, options.clone()).expect("open");
    let keyspace = Keyspace {
        uri,
        options,
        _server: server,
    };
    (Box::new(store), keyspace)
}

pub fn fresh_scylla_on_test_server() -> (Box<dyn Store>, Keyspace) {
    fresh_keyspace_with(ScyllaOptions::default())
}

/// A new store (new session, statements prepared again) on the same keyspace and server.
pub fn reopen(keyspace: &Keyspace) -> Box<dyn Store> {
    Box::new(ScyllaStore::open_with(&keyspace.uri, keyspace.options.clone()).expect("reopen"))
}

pinhive_store::store_contract_tests!(fresh_scylla_on_test_server, reopen reopen);

/// The contract again with 10 ns listing buckets: every listing check then walks many
/// buckets (markers, bucket pages, one range per bucket) instead of one.
mod small_buckets {
    use super::*;

    pub fn fresh() -> (Box<dyn Store>, Keyspace) {
        fresh_keyspace_with(ScyllaOptions {
            listing_bucket_ns: 10,
            ..ScyllaOptions::default()
        })
    }

    pinhive_store::store_contract_tests!(fresh, reopen super::reopen);
}

fn fresh_store(server: &TestServer) -> ScyllaStore {
    common::migrated_store_with(&server.server.addr().to_string(), ScyllaOptions::default())
}

fn pin(requestid: &str, created_ns: i64, status: PinStatus) -> PinRow {
    PinRow {
        record: PinRecord {
            requestid: requestid.into(),
            owner: "alice".into(),
            cid: "cidA".into(),
            name: None,
            origins: vec![],
            meta: Default::default(),
            created_ns,
            status,
            info: Default::default(),
            delegates: vec![],
        },
        replicas_min: 1,
        replicas_max: 1,
        replaces: None,
        bucket: 0,
    }
}

fn batch_of(rows: Vec<PinRow>) -> ShardBatch {
    ShardBatch {
        partition: 0,
        pins: rows
            .into_iter()
            .map(|row| PinWrite {
                requestid: row.record.requestid.clone(),
                old: None,
                stale: Vec::new(),
                new: Some(row),
            })
            .collect(),
        ..ShardBatch::default()
    }
}

/// A write timing out is an error the caller sees (the shard then retries its batch: the
/// driver does not retry a plain write on a timeout); the retry leaves the batch's rows.
#[test]
fn a_write_timeout_surfaces_and_the_retry_completes_the_batch() {
    let server = start_server();
    let store = fresh_store(&server);
    let batch = batch_of(
        (0..5)
            .map(|i| pin(&format!("r{i}"), i, PinStatus::Queued))
            .collect(),
    );
    server.server.inject(
        Fault::WriteTimeout { applied: false },
        StatementMatcher::contains("INSERT INTO ph_test"),
        1,
    );
    let error = store.write_shard_batch(&batch).unwrap_err();
    assert!(matches!(error, StoreError::Backend(_)), "{error}");
    assert_eq!(server.server.pending_faults(), 0);
    store.write_shard_batch(&batch).unwrap();
    for i in 0..5 {
        assert!(store.load_pin(&format!("r{i}")).unwrap().is_some());
    }
}

/// A commit whose connection drops is an error; the driver reconnects and the commit, being
/// absolute values, is simply written again.
#[test]
fn a_dropped_connection_during_a_commit_surfaces_and_the_retry_commits() {
    let server = start_server();
    let store = fresh_store(&server);
    let commit = pinhive_store::Commit {
        partition: 2,
        state: CommitState {
            batch: 1,
            next_offset: Some(10),
            attempt: None,
        },
        counters: vec![CounterRow {
            owner: "alice".into(),
            status: PinStatus::Queued,
            partition: 2,
            value: 3,
        }],
        owner_epoch: 0,
    };
    server.server.inject(
        Fault::DropConnection,
        StatementMatcher::contains("commits"),
        1,
    );
    assert!(store.commit(&commit).is_err());
    // Retried (every 100 ms, for at most 5 s) until the driver has reconnected.
    use backon::BlockingRetryable;
    let reconnecting = backon::ConstantBuilder::default()
        .with_delay(std::time::Duration::from_millis(100))
        .with_max_times(50);
    (|| store.commit(&commit))
        .retry(reconnecting)
        .call()
        .expect("the commit succeeds once the driver has reconnected");
    assert_eq!(store.committed(2).unwrap(), commit.state);
    assert_eq!(
        store.counter("alice", PinStatus::Queued, 2).unwrap(),
        Some(3)
    );
}

/// The adapter runs its driver on its own runtime: a caller inside another tokio runtime
/// (an async worker, or spawn_blocking) gets answers, and dropping the store there is fine.
#[test]
fn callable_and_droppable_inside_another_runtime() {
    let server = start_server();
    let store = std::sync::Arc::new(fresh_store(&server));
    store
        .write_shard_batch(&batch_of(vec![pin("r1", 5, PinStatus::Pinned)]))
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // On the async thread itself (blocks it for the round trip, but answers).
        assert!(store.load_pin("r1").unwrap().is_some());
        let from_blocking = store.clone();
        let found = tokio::task::spawn_blocking(move || from_blocking.load_pin("r1").unwrap())
            .await
            .unwrap();
        assert!(found.is_some());
        drop(store);
    });
}

/// A listing page of a status with more entries than one CQL page: read page by page with
/// the paging state, newest first, across buckets.
#[test]
fn listing_reads_past_one_cql_page() {
    let server = start_server();
    let store = common::migrated_store_with(
        &server.server.addr().to_string(),
        ScyllaOptions {
            listing_bucket_ns: 1_000,
            ..ScyllaOptions::default()
        },
    );
    let rows: Vec<PinRow> = (0..2_500)
        .map(|i| pin(&format!("r{i:05}"), i * 3, PinStatus::Pinned))
        .collect();
    for chunk in rows.chunks(500) {
        store.write_shard_batch(&batch_of(chunk.to_vec())).unwrap();
    }
    store
        .commit(&pinhive_store::Commit {
            partition: 0,
            state: CommitState::default(),
            counters: vec![CounterRow {
                owner: "alice".into(),
                status: PinStatus::Pinned,
                partition: 0,
                value: 2_500,
            }],
            owner_epoch: 0,
        })
        .unwrap();
    let query = PinQuery {
        owner: "alice".into(),
        cids: vec!["cidA".into()],
        name: None,
        statuses: vec![PinStatus::Pinned],
        before_ns: None,
        after_ns: None,
        meta: Default::default(),
        limit: 1_000,
    };
    let page = store.list_pins(&query, 1).unwrap();
    assert_eq!(page.results.len(), 1_000);
    assert_eq!(
        page.count, 2_500,
        "counted past the page within COUNT_BUDGET"
    );
    let created: Vec<i64> = page.results.iter().map(|p| p.created_ns).collect();
    let expected: Vec<i64> = (1_500..2_500).rev().map(|i| i * 3).collect();
    assert_eq!(created, expected);
    let by_status = PinQuery {
        cids: vec![],
        ..query
    };
    let page = store.list_pins(&by_status, 1).unwrap();
    assert_eq!(page.count, 2_500);
    assert_eq!(page.results.len(), 1_000);
    assert_eq!(page.results[0].created_ns, 2_499 * 3);
}

/// Statements per pin on the hot path, counted (the figures the README gives): a new pin of a
/// known owner with a new CID and a name, then its status change, each in its own batch.
#[test]
fn statements_per_pin_on_the_hot_path() {
    use pinhive_domain::CidState;
    use pinhive_events::Event;
    use pinhive_store::{CidWrite, Commit, JournalEntry};

    let server = start_server();
    let store = fresh_store(&server);
    let named = |id: &str, cid: &str, status| {
        let mut row = pin(id, 1_000, status);
        row.record.cid = cid.into();
        row.record.name = Some(format!("name of {id}"));
        row
    };
    let rows_of = |id: &str, cid: &str, new: PinRow, old: Option<PinRow>, offset: u64| ShardBatch {
        partition: 0,
        pins: vec![PinWrite {
            requestid: id.into(),
            old,
            stale: Vec::new(),
            new: Some(new),
        }],
        journal: vec![JournalEntry {
            cid: cid.into(),
            partition: 0,
            offset,
            timestamp_ns: 1_000,
            event_id: format!("e{offset}"),
            event: Event::ReplicaUnpinned { node: "n".into() },
        }],
        // A CID gets pending work with its first pin; a status change of a pin does not
        // change it (the pending set is written on transitions only).
        pending: if offset.is_multiple_of(2) {
            vec![(cid.into(), true)]
        } else {
            vec![]
        },
        // No replica placed or removed here: a placement or removal is one more write each
        // (`a_node_index_change_is_one_write_and_a_walk_reads_slot_by_slot`).
        node_cids: vec![],
        // No pin with an expiry here: an entry is one more write
        // (`an_expiry_entry_is_one_write_and_a_walk_reads_a_bucket_per_call`).
        expiry: vec![],
        cids: vec![CidWrite {
            cid: cid.into(),
            state: Some(CidState::new(cid)),
        }],
    };
    let counters = |values: &[(PinStatus, i64)]| -> Vec<CounterRow> {
        values
            .iter()
            .flat_map(|(status, value)| {
                ["alice", pinhive_store::SCOPE_ALL_PINS].map(|owner| CounterRow {
                    owner: owner.into(),
                    status: *status,
                    partition: 0,
                    value: *value,
                })
            })
            .collect()
    };
    let commit = |batch: u64, counters| Commit {
        partition: 0,
        state: CommitState {
            batch,
            next_offset: Some(batch * 2),
            attempt: None,
        },
        counters,
        owner_epoch: 0,
    };
    let attempt = |batch: u64| Commit {
        partition: 0,
        state: CommitState {
            attempt: Some(pinhive_store::Attempt {
                batch,
                undo: vec![],
            }),
            ..CommitState::default()
        },
        counters: vec![],
        owner_epoch: 0,
    };
    // Warm up: the owner's first pin writes its status bucket marker.
    let first = named("r0", "cid0", PinStatus::Queued);
    store
        .persist_batch(
            Some(&attempt(1)),
            &rows_of("r0", "cid0", first, None, 0),
            &commit(1, counters(&[(PinStatus::Queued, 1)])),
        )
        .unwrap();

    let before = store.sent();
    let new_pin = named("r1", "cid1", PinStatus::Queued);
    let rows = rows_of("r1", "cid1", new_pin.clone(), None, 2);
    store.write_shard_batch(&rows).unwrap();
    let new_pin_rows = store.sent().statements - before.statements;
    let before = store.sent();
    store.commit(&attempt(2)).unwrap();
    store
        .commit(&commit(2, counters(&[(PinStatus::Queued, 2)])))
        .unwrap();
    let commits = store.sent();
    println!(
        "new pin: {new_pin_rows} row statements; attempt + commit with 2 counters: {} statements in {} requests",
        commits.statements - before.statements,
        commits.requests - before.requests
    );
    assert_eq!(new_pin_rows, 13, "pin 1 + listing 3 + CID and name bucket markers 2 + pin list 1 + its bucket marker 1 + journal 2 + journal day 1 + pending 1 + CID state 1");
    assert_eq!(commits.statements - before.statements, 1 + 3);
    assert_eq!(commits.requests - before.requests, 2);

    let before = store.sent();
    let pinned = named("r1", "cid1", PinStatus::Pinned);
    let mut pinned_marker = rows_of(
        "r0",
        "cid0",
        named("r0", "cid0", PinStatus::Pinned),
        None,
        4,
    );
    // The first pinned pin of the owner writes the pinned bucket marker: warm it up.
    pinned_marker.pins[0].old = Some(named("r0", "cid0", PinStatus::Queued));
    store.write_shard_batch(&pinned_marker).unwrap();
    let before_change = store.sent();
    store
        .write_shard_batch(&rows_of("r1", "cid1", pinned, Some(new_pin), 3))
        .unwrap();
    let change_rows = store.sent().statements - before_change.statements;
    println!("status change: {change_rows} row statements");
    assert_eq!(
        change_rows, 8,
        "pin 1 + listing 1 delete + 3 writes + journal 2 + CID state 1"
    );
    assert!(before.requests < store.sent().requests);
}

/// As the server saw it: every statement on the store's keyspace was sent at LOCAL_QUORUM,
/// none is conditional (no LWT) or filtering, and the store's own count of the statements it
/// sent agrees with the server's.
#[test]
fn every_statement_at_local_quorum_unconditional_and_counted() {
    let server = start_server();
    let store = fresh_store(&server);
    server.server.reset_stats();
    let before = store.sent();
    // Two checks that touch different tables (each expects a store of its own).
    pinhive_store::contract::tokens_nodes_dead_letters(&store);
    pinhive_store::contract::listing_pages_newest_first(&store);
    pinhive_store::contract::node_cids_walk_visits_each_once(&store);
    let sent = store.sent().statements - before.statements;
    let stats = server.server.stats();
    let ours: Vec<(&String, &u64)> = stats
        .by_statement
        .iter()
        .filter(|(text, _)| text.contains("ph_test_"))
        .collect();
    assert!(!ours.is_empty());
    assert_eq!(ours.iter().map(|(_, n)| **n).sum::<u64>(), sent);
    for (text, _) in &ours {
        let levels = &stats.consistency_by_statement[*text];
        assert_eq!(
            levels.iter().collect::<Vec<_>>(),
            vec!["LocalQuorum"],
            "{text}"
        );
        assert!(!text.contains(" IF "), "no LWT: {text}");
        assert!(!text.contains("ALLOW FILTERING"), "{text}");
    }
    assert_eq!(stats.prepares, 0, "prepared once, at open");
}

/// Fencing as the server sees it: a claim is a read of the epoch row and one LWT (`IF NOT
/// EXISTS` the first time, `IF value = ?` after); a fenced commit is one BATCH request whose
/// first statement is the epoch check, so the commit row and counters apply only with it; a
/// stale owner's commit changes nothing. The commit queries never see the epoch row.
#[test]
fn a_claim_is_one_lwt_and_a_fenced_commit_one_conditional_batch() {
    let server = start_server();
    let store = fresh_store(&server);
    server.server.reset_stats();
    assert_eq!(store.claim_partition(7).unwrap(), 1);
    let stats = server.server.stats();
    assert_eq!(stats.statements_containing("IF NOT EXISTS"), 1);
    assert_eq!(stats.statements_containing("AND kind = 2"), 1, "{stats:?}");
    assert_eq!(store.claim_partition(7).unwrap(), 2);
    assert_eq!(
        server.server.stats().statements_containing("IF value = ?"),
        1
    );

    let commit = |owner_epoch| pinhive_store::Commit {
        partition: 7,
        state: CommitState {
            batch: 1,
            next_offset: Some(10),
            attempt: None,
        },
        counters: vec![CounterRow {
            owner: "alice".into(),
            status: PinStatus::Queued,
            partition: 7,
            value: 3,
        }],
        owner_epoch,
    };
    server.server.reset_stats();
    store.commit(&commit(2)).unwrap();
    let stats = server.server.stats();
    assert_eq!(stats.batches, 1);
    assert_eq!(stats.statements_containing("IF value = ?"), 1);
    assert_eq!(
        stats.statements_containing("UPDATE ph_test"),
        3,
        "{stats:?}"
    );
    assert_eq!(store.committed(7).unwrap(), commit(2).state);
    assert_eq!(
        store.counter("alice", PinStatus::Queued, 7).unwrap(),
        Some(3)
    );

    let mut stale = commit(1);
    stale.state.next_offset = Some(20);
    stale.counters[0].value = 9;
    let error = store.commit(&stale).unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::Fenced {
                partition: 7,
                epoch: 1,
                current: 2
            }
        ),
        "{error}"
    );
    assert_eq!(store.committed(7).unwrap(), commit(2).state);
    assert_eq!(
        store.counter("alice", PinStatus::Queued, 7).unwrap(),
        Some(3)
    );
}

/// A fenced commit that times out is an error the caller sees, not retried by the driver (a
/// conditional batch is not idempotent); the shard's retry writes it again.
#[test]
fn a_timed_out_fenced_commit_is_not_retried_by_the_driver() {
    let server = start_server();
    let store = fresh_store(&server);
    let epoch = store.claim_partition(3).unwrap();
    let commit = pinhive_store::Commit {
        partition: 3,
        state: CommitState {
            batch: 1,
            next_offset: Some(5),
            attempt: None,
        },
        counters: Vec::new(),
        owner_epoch: epoch,
    };
    server.server.reset_stats();
    server.server.inject(
        Fault::WriteTimeout { applied: false },
        StatementMatcher::contains("IF value = ?"),
        1,
    );
    let error = store.commit(&commit).unwrap_err();
    assert!(matches!(error, StoreError::Backend(_)), "{error}");
    assert_eq!(server.server.stats().batches, 1, "sent once");
    assert_eq!(store.committed(3).unwrap(), CommitState::default());
    store.commit(&commit).unwrap();
    assert_eq!(store.committed(3).unwrap(), commit.state);
}

/// The node index as the server sees it: a placement or removal is one single-row write; a
/// walk reads one slot partition at a time with `LIMIT`, from the cursor's slot on, so an empty
/// index costs one read per slot and a page never more than that.
#[test]
fn a_node_index_change_is_one_write_and_a_walk_reads_slot_by_slot() {
    use pinhive_store::{NodeCidCursor, NodeCidWrite};
    use pinhive_store_scylla::NODE_CID_SLOTS;

    let server = start_server();
    let store = fresh_store(&server);
    let index = |cids: &[String], present: bool| ShardBatch {
        partition: 5,
        node_cids: cids
            .iter()
            .map(|cid| NodeCidWrite {
                node: "node-a".into(),
                cid: cid.clone(),
                present,
            })
            .collect(),
        ..ShardBatch::default()
    };
    let slots = NODE_CID_SLOTS as usize;

    server.server.reset_stats();
    let walk = store
        .node_cids("node-a", 5, &NodeCidCursor::default(), 100)
        .unwrap();
    assert_eq!(walk, (vec![], None));
    let stats = server.server.stats();
    assert_eq!(
        stats.statements_containing("FROM ph_test"),
        slots as u64,
        "an empty index: one read per slot, {stats:?}"
    );

    let cids: Vec<String> = (0..200).map(|i| format!("bafkrei{i:052}")).collect();
    let before = store.sent();
    store.write_shard_batch(&index(&cids[..1], true)).unwrap();
    assert_eq!(
        store.sent().statements - before.statements,
        1,
        "a placement"
    );
    store.write_shard_batch(&index(&cids[..1], false)).unwrap();
    assert_eq!(store.sent().statements - before.statements, 2, "a removal");

    store.write_shard_batch(&index(&cids, true)).unwrap();
    let mut cursor = NodeCidCursor::default();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let before = store.sent();
        let (page, next) = store.node_cids("node-a", 5, &cursor, 16).unwrap();
        let reads = store.sent().statements - before.statements;
        assert!(page.len() <= 16);
        assert!(
            reads as usize <= slots - cursor.slot as usize,
            "{reads} reads from slot {}",
            cursor.slot
        );
        seen.extend(page);
        pages += 1;
        match next {
            Some(next) => {
                assert!(
                    (next.slot, next.after.as_deref()) > (cursor.slot, cursor.after.as_deref()),
                    "the cursor moves on"
                );
                cursor = next;
            }
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, cids);
    assert!(pages >= 200 / 16, "{pages} pages");
}

/// The expiry index as the server sees it: an entry set or removed is one single-row write; a
/// walk reads one bucket's slots at most per call (`LIMIT` each), so a window within one hour
/// costs one read per slot, and a window over many hours is walked over several bounded calls.
#[test]
fn an_expiry_entry_is_one_write_and_a_walk_reads_a_bucket_per_call() {
    use pinhive_store::{ExpiryCursor, ExpiryWrite};
    use pinhive_store_scylla::{EXPIRY_BUCKET_NS, EXPIRY_READS_PER_CALL, EXPIRY_SLOTS};

    let server = start_server();
    let store = fresh_store(&server);
    let hour = EXPIRY_BUCKET_NS;
    let t0 = 498_912 * hour;
    let entries = |dues: &[i64], present: bool| ShardBatch {
        partition: 5,
        expiry: dues
            .iter()
            .enumerate()
            .map(|(i, due_ns)| ExpiryWrite {
                due_ns: *due_ns,
                cid: format!("bafkrei{i:052}"),
                requestid: format!("r-{i}"),
                present,
            })
            .collect(),
        ..ShardBatch::default()
    };

    server.server.reset_stats();
    let walk = store
        .expiry_due(5, t0, t0 + hour - 1, &ExpiryCursor::default(), 100)
        .unwrap();
    assert_eq!(walk, (vec![], None));
    let stats = server.server.stats();
    assert_eq!(
        stats.statements_containing("expiry_index WHERE"),
        u64::from(EXPIRY_SLOTS),
        "a window within one bucket: one read per slot, {stats:?}"
    );

    let before = store.sent();
    store.write_shard_batch(&entries(&[t0 + 1], true)).unwrap();
    assert_eq!(store.sent().statements - before.statements, 1, "an entry");
    store.write_shard_batch(&entries(&[t0 + 1], false)).unwrap();
    assert_eq!(store.sent().statements - before.statements, 2, "a removal");

    // 200 entries over five hours; walked over a window of six hours.
    let dues: Vec<i64> = (0..200).map(|i| t0 + 1 + i * (5 * hour / 200)).collect();
    store.write_shard_batch(&entries(&dues, true)).unwrap();
    let mut cursor = ExpiryCursor::default();
    let mut seen = Vec::new();
    let mut calls = 0;
    loop {
        let before = store.sent();
        let (page, next) = store.expiry_due(5, t0, t0 + 6 * hour, &cursor, 16).unwrap();
        let reads = store.sent().statements - before.statements;
        assert!(page.len() <= 16);
        assert!(
            reads as usize <= EXPIRY_READS_PER_CALL,
            "{reads} reads in one call"
        );
        seen.extend(page.into_iter().map(|entry| entry.due_ns));
        calls += 1;
        match next {
            Some(next) => cursor = next,
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, dues);
    assert!(calls >= 200 / 16, "{calls} calls");
}

/// The quarantine as the server sees it: a new entry is a point read, one read of the
/// partition's CIDs with `LIMIT` (the limit check) and one insert; an entry already there is
/// the point read only; the list is one `LIMIT` read; a clear of a CID never quarantined is
/// the point read only (no tombstone), of a quarantined one the read and one delete. Every
/// statement at LOCAL_QUORUM, none conditional.
#[test]
fn a_quarantine_put_is_two_bounded_reads_and_one_insert() {
    use pinhive_store::Quarantine;

    let server = start_server();
    let store = fresh_store(&server);
    let entry = Quarantine {
        partition: 4,
        cid: "bafkreiaaaa".into(),
        reason: "quarantined CID: stored cid state bafkreiaaaa is corrupt".into(),
        offset: 17,
        quarantined_ns: 1_796_083_200_000_000_000,
    };
    server.server.reset_stats();
    let before = store.sent();
    store.put_quarantine(&entry).unwrap();
    assert_eq!(store.sent().statements - before.statements, 3);
    let stats = server.server.stats();
    let limit_reads: u64 = stats
        .by_statement
        .iter()
        .filter(|(text, _)| {
            text.starts_with("SELECT cid FROM") && text.ends_with("WHERE log_partition = ? LIMIT ?")
        })
        .map(|(_, count)| count)
        .sum();
    assert_eq!(limit_reads, 1, "{stats:?}");
    assert_eq!(stats.statements_containing("INSERT INTO ph_test"), 1);

    let before = store.sent();
    store.put_quarantine(&entry).unwrap();
    assert_eq!(store.sent().statements - before.statements, 1, "kept");
    let before = store.sent();
    assert_eq!(store.quarantined(4).unwrap(), vec![entry.clone()]);
    assert_eq!(store.sent().statements - before.statements, 1, "one read");

    let before = store.sent();
    assert!(!store.clear_quarantine(4, "bafkreibbbb").unwrap());
    assert_eq!(store.sent().statements - before.statements, 1);
    assert_eq!(server.server.stats().statements_containing("DELETE"), 0);
    assert!(store.clear_quarantine(4, "bafkreiaaaa").unwrap());
    assert_eq!(server.server.stats().statements_containing("DELETE"), 1);

    let stats = server.server.stats();
    let ours: Vec<_> = stats
        .consistency_by_statement
        .iter()
        .filter(|(text, _)| text.contains(".quarantine "))
        .collect();
    assert_eq!(ours.len(), 5, "five statements: {ours:?}");
    for (text, levels) in ours {
        assert_eq!(
            levels.iter().collect::<Vec<_>>(),
            vec!["LocalQuorum"],
            "{text}"
        );
        assert!(!text.contains(" IF "), "no LWT: {text}");
        assert!(!text.contains("ALLOW FILTERING"), "{text}");
    }
}

/// A keyspace at migration 5 holding tokens an earlier release wrote (row version 2: owner,
/// creation, admin bit; no index) — more than one CQL page of them. Applying migration 0006
/// indexes every one: found by id and listed under its owner before it is ever used. A
/// current token is left as it was.
#[test]
fn migration_0006_indexes_the_tokens_of_an_earlier_release() {
    #[derive(serde::Serialize)]
    struct TokenV2 {
        owner: String,
        created_ns: i64,
        admin: bool,
    }
    let server = start_server();
    let addr = server.server.addr().to_string();
    let uri = common::migrated_keyspace(&addr);
    let keyspace = pinhive_store_scylla::ScyllaUri::parse(&uri)
        .unwrap()
        .keyspace;
    let store = ScyllaStore::open_with(&uri, ScyllaOptions::default()).unwrap();
    let current = pinhive_store::hash_secret("ph_current");
    let token = pinhive_store::TokenRecord {
        owner: "carol".into(),
        name: "laptop".into(),
        created_ns: 1,
        scopes: pinhive_domain::tokens::Scopes::default_tenant(),
        expires_ns: None,
        revoked_ns: None,
    };
    store.put_token(&current, &token).unwrap();
    drop(store);
    const EARLIER: usize = 1_200;
    let hashes: Vec<String> = (0..EARLIER)
        .map(|i| pinhive_store::hash_secret(&format!("ph_old_{i}")))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let session = scylla::client::session_builder::SessionBuilder::new()
            .known_node(&addr)
            .build()
            .await
            .unwrap();
        let insert = session
            .prepare(format!(
                "INSERT INTO {keyspace}.tokens (secret_hash, token) VALUES (?, ?)"
            ))
            .await
            .unwrap();
        for (i, hash) in hashes.iter().enumerate() {
            let old = TokenV2 {
                owner: format!("owner{}", i % 3),
                created_ns: i as i64,
                admin: i % 2 == 0,
            };
            let mut row = vec![0xFF, 2];
            row.extend(bincode::serde::encode_to_vec(&old, bincode::config::standard()).unwrap());
            session
                .execute_unpaged(&insert, (hash, row))
                .await
                .unwrap();
        }
        // Back to version 5, as a keyspace the previous release migrated: 0006 not recorded.
        session
            .query_unpaged(
                format!(
                    "DELETE FROM {keyspace}.schema_migrations WHERE scope = 'pinhive' AND version = 6"
                ),
                (),
            )
            .await
            .unwrap();
    });
    let store = ScyllaStore::open_with(&uri, ScyllaOptions::default()).unwrap();
    assert!(
        store.list_tokens("owner0", None, 10).unwrap().is_empty(),
        "not indexed before the migration"
    );
    drop(store);
    let applied =
        pinhive_store_scylla::migrate(&uri, &pinhive_store_scylla::Replication::single()).unwrap();
    assert_eq!(applied, [6]);
    let store = ScyllaStore::open_with(&uri, ScyllaOptions::default()).unwrap();
    for (i, hash) in hashes.iter().enumerate().step_by(97) {
        let id = pinhive_store::token_id(hash);
        let (found, token) = store.token_by_id(&id).unwrap().expect("found by id");
        assert_eq!(&found, hash);
        assert_eq!(token.owner, format!("owner{}", i % 3));
    }
    let mut listed = 0;
    for owner in ["owner0", "owner1", "owner2"] {
        let mut after: Option<String> = None;
        loop {
            let page = store.list_tokens(owner, after.as_deref(), 500).unwrap();
            listed += page.len();
            match page.last() {
                Some((id, _)) if page.len() == 500 => after = Some(id.clone()),
                _ => break,
            }
        }
    }
    assert_eq!(listed, EARLIER);
    let carol = store.list_tokens("carol", None, 10).unwrap();
    assert_eq!(carol.len(), 1);
    assert_eq!(carol[0].1, token);
}
