//! The contract every [`Store`] implementation must pass (embedded here; ScyllaDB when
//! `PINHIVE_SCYLLA_URI` points at a cluster). Each check takes a fresh, empty store.

use std::collections::BTreeMap;

use pinhive_domain::{CidState, Cursor, PinRecord, PinRow, PinStatus};
use pinhive_events::{Event, NodeDescriptor};

mod expiry;
pub use expiry::*;
mod quarantine;
pub use quarantine::*;

use crate::{
    total_count, Attempt, CidWrite, Commit, CommitState, CounterRow, DeadLetter, JournalEntry,
    NameMatch, NodeCidCursor, NodeCidWrite, PinQuery, PinWrite, ShardBatch, Store, TokenRecord,
    Undo,
};

pub fn s3_objects(store: &dyn Store) {
    let object = |key: &str, cid: &str| crate::S3Object {
        bucket: "photos".into(),
        key: key.into(),
        cid: cid.into(),
        requestid: format!("r-{key}"),
        sequencer: "1".into(),
    };
    for (key, cid) in [
        ("2024/a.jpg", "c1"),
        ("2024/b.jpg", "c2"),
        ("2025/c.jpg", "c1"),
    ] {
        store
            .put_s3_object("photos", key, Some(&object(key, cid)))
            .unwrap();
    }
    store
        .put_s3_object("other", "2024/a.jpg", Some(&object("2024/a.jpg", "c9")))
        .unwrap();
    let keys = |list: Vec<crate::S3Object>| list.into_iter().map(|o| o.key).collect::<Vec<_>>();
    assert_eq!(
        keys(store.list_s3_objects("photos", "2024/", None, 10).unwrap()),
        ["2024/a.jpg", "2024/b.jpg"]
    );
    assert_eq!(
        keys(
            store
                .list_s3_objects("photos", "2024/", Some("2024/a.jpg"), 10)
                .unwrap()
        ),
        ["2024/b.jpg"]
    );
    assert_eq!(
        keys(store.list_s3_objects("photos", "", None, 2).unwrap()).len(),
        2
    );
    assert_eq!(
        keys(store.s3_objects_by_cid("c1", 10).unwrap()),
        ["2024/a.jpg", "2025/c.jpg"]
    );
    // Overwrite with new content moves the by-CID entry; delete clears both.
    store
        .put_s3_object("photos", "2024/a.jpg", Some(&object("2024/a.jpg", "c3")))
        .unwrap();
    assert_eq!(
        keys(store.s3_objects_by_cid("c1", 10).unwrap()),
        ["2025/c.jpg"]
    );
    assert_eq!(
        keys(store.s3_objects_by_cid("c3", 10).unwrap()),
        ["2024/a.jpg"]
    );
    store.put_s3_object("photos", "2024/a.jpg", None).unwrap();
    assert!(store
        .get_s3_object("photos", "2024/a.jpg")
        .unwrap()
        .is_none());
    assert!(store.s3_objects_by_cid("c3", 10).unwrap().is_empty());
}

/// Declares one `#[test]` per contract check, each on a fresh store from `$fresh` (a function
/// returning the store and whatever must outlive it, e.g. its temp dir), so one failing check
/// does not hide the others. Every `Store` implementation invokes it in its tests.
///
/// `store_contract_tests!(optional $fresh)`: `$fresh` returns `Result<(store, keep), reason>`;
/// on `Err` the check prints `skipped: <reason>` on stderr (never a silent pass) and returns —
/// for a store that needs an external service (a real ScyllaDB cluster).
///
/// `store_contract_tests!([optional] $fresh, reopen $reopen)` adds the checks that reopen the
/// store: `$reopen(&keep)` opens the data of the store `$fresh` returned with `keep` again
/// (each such check drops its first store before it reopens).
#[macro_export]
macro_rules! store_contract_tests {
    (optional $fresh:path, reopen $reopen:path) => {
        $crate::store_contract_tests!(@checks @optional $fresh);
        $crate::store_contract_tests!(@reopen optional $fresh, $reopen; quarantine_survives_reopen);
    };
    (optional $fresh:path) => {
        $crate::store_contract_tests!(@checks @optional $fresh);
    };
    ($fresh:path, reopen $reopen:path) => {
        $crate::store_contract_tests!(@checks @required $fresh);
        $crate::store_contract_tests!(@reopen required $fresh, $reopen; quarantine_survives_reopen);
    };
    ($fresh:path) => {
        $crate::store_contract_tests!(@checks @required $fresh);
    };
    (@checks @$mode:ident $fresh:path) => {
        $crate::store_contract_tests!(@each $mode $fresh;
            s3_objects,
            rows_round_trip,
            status_change_moves_index,
            listing_pages_newest_first,
            filters,
            batch_is_repeatable,
            checkpoints_and_pending,
            journal_in_order,
            tokens_nodes_dead_letters,
            tokens_by_id_and_owner,
            dead_letters_page_after,
            cid_pin_list_walks_by_cursor,
            stale_entries_of_an_interrupted_batch_are_removed,
            any_prefix_then_the_batch_equals_the_batch,
            commit_row_and_counters,
            persist_batch_writes_rows_and_commit,
            journal_and_dead_letters_are_pruned_by_age,
            analytics_checkpoints_round_trip,
            claim_partition_epochs_increase,
            a_stale_owner_cannot_commit,
            unfenced_commits_still_work,
            node_cids_membership,
            node_cids_walk_visits_each_once,
            node_cids_in_prefix_order,
            expiry_index_membership,
            expiry_due_window_bounds,
            expiry_due_walk_visits_each_once,
            expiry_in_prefix_order,
            quarantine_put_keeps_the_first_entry,
            quarantined_lists_one_partition_in_cid_order,
            quarantine_limit_is_per_partition,
            clear_quarantine_is_true_once
        );
    };
    (@each optional $fresh:path; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                let (store, _keep) = match $fresh() {
                    Ok(fresh) => fresh,
                    Err(reason) => {
                        use std::io::Write as _;
                        // Straight to stderr: the harness captures `eprintln!` of passing tests.
                        let line = format!("{}: skipped: {reason}\n", stringify!($check));
                        let _ = std::io::stderr().write_all(line.as_bytes());
                        return;
                    }
                };
                $crate::contract::$check(store.as_ref());
            }
        )*
    };
    (@each required $fresh:path; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                let (store, _keep) = $fresh();
                $crate::contract::$check(store.as_ref());
            }
        )*
    };
    (@reopen optional $fresh:path, $reopen:path; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                let (store, keep) = match $fresh() {
                    Ok(fresh) => fresh,
                    Err(reason) => {
                        use std::io::Write as _;
                        let line = format!("{}: skipped: {reason}\n", stringify!($check));
                        let _ = std::io::stderr().write_all(line.as_bytes());
                        return;
                    }
                };
                $crate::contract::$check(store, &|| $reopen(&keep));
            }
        )*
    };
    (@reopen required $fresh:path, $reopen:path; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                let (store, keep) = $fresh();
                $crate::contract::$check(store, &|| $reopen(&keep));
            }
        )*
    };
}

/// A CID's pin list is walked in (bucket, request id) order from a cursor, in bounded steps.
pub fn cid_pin_list_walks_by_cursor(store: &dyn Store) {
    let rows: Vec<PinRow> = (0..25)
        .map(|i| {
            row(
                pin(&format!("r{i:02}"), "alice", "cidA", i, PinStatus::Queued),
                i as u64 / 10,
            )
        })
        .chain([row(pin("other", "alice", "cidB", 1, PinStatus::Queued), 0)])
        .collect();
    put_rows(store, rows);
    let mut seen = Vec::new();
    let mut cursor = Cursor::default();
    loop {
        let step = store.cid_pins("cidA", &cursor, 7).unwrap();
        assert!(step.len() <= 7);
        let Some((bucket, last)) = step.last().cloned() else {
            break;
        };
        seen.extend(step);
        cursor = Cursor {
            bucket,
            after: Some(last),
        };
    }
    let expected: Vec<(u64, String)> = (0..25).map(|i| (i / 10, format!("r{i:02}"))).collect();
    assert_eq!(seen, expected);
}

fn pin(requestid: &str, owner: &str, cid: &str, created_ns: i64, status: PinStatus) -> PinRecord {
    PinRecord {
        requestid: requestid.into(),
        owner: owner.into(),
        cid: cid.into(),
        name: Some(format!("Name-{requestid}")),
        origins: vec![],
        meta: [("app".to_string(), format!("m{}", created_ns % 3))].into(),
        created_ns,
        status,
        info: BTreeMap::new(),
        delegates: vec![],
    }
}

fn row(record: PinRecord, bucket: u64) -> PinRow {
    PinRow {
        record,
        replicas_min: 1,
        replicas_max: 1,
        replaces: None,
        bucket,
    }
}

fn write(requestid: &str, new: Option<PinRow>, old: Option<PinRow>) -> PinWrite {
    PinWrite {
        requestid: requestid.into(),
        old,
        stale: Vec::new(),
        new,
    }
}

fn put_rows(store: &dyn Store, rows: Vec<PinRow>) {
    let batch = ShardBatch {
        partition: 0,
        pins: rows
            .into_iter()
            .map(|row| write(&row.record.requestid.clone(), Some(row), None))
            .collect(),
        ..ShardBatch::default()
    };
    store.write_shard_batch(&batch).unwrap();
}

/// Commits `owner`'s counters of partition 0 (a status listing reads the statuses the counters
/// say exist, as many entries as they count when no time bound is given).
fn counts(store: &dyn Store, owner: &str, counts: &[(PinStatus, i64)]) {
    let counters = counts
        .iter()
        .map(|(status, value)| CounterRow {
            owner: owner.into(),
            status: *status,
            partition: 0,
            value: *value,
        })
        .collect();
    store
        .commit(&Commit {
            partition: 0,
            state: store.committed(0).unwrap(),
            counters,
            owner_epoch: 0,
        })
        .unwrap();
}

fn put(store: &dyn Store, pins: Vec<PinRecord>) {
    put_rows(store, pins.into_iter().map(|p| row(p, 0)).collect());
}

fn query(owner: &str, statuses: &[PinStatus]) -> PinQuery {
    PinQuery {
        owner: owner.into(),
        cids: vec![],
        name: None,
        statuses: statuses.to_vec(),
        before_ns: None,
        after_ns: None,
        meta: BTreeMap::new(),
        limit: 10,
    }
}

fn ids(store: &dyn Store, q: &PinQuery) -> Vec<String> {
    store
        .list_pins(q, 1)
        .unwrap()
        .results
        .into_iter()
        .map(|p| p.requestid)
        .collect()
}

pub fn rows_round_trip(store: &dyn Store) {
    let record = row(pin("r1", "alice", "cidA", 10, PinStatus::Queued), 0);
    let mut state = CidState::new("cidA");
    state.applied_offset = Some(42);
    let cid_row = |state: Option<CidState>| CidWrite {
        cid: "cidA".into(),
        state,
    };
    store
        .write_shard_batch(&ShardBatch {
            partition: 0,
            pins: vec![write("r1", Some(record.clone()), None)],
            cids: vec![cid_row(Some(state.clone()))],
            ..ShardBatch::default()
        })
        .unwrap();
    assert_eq!(store.get_pin("r1").unwrap(), Some(record.record.clone()));
    assert_eq!(store.load_pin("r1").unwrap(), Some(record.clone()));
    assert_eq!(store.load_cid("cidA").unwrap(), Some(state));
    assert_eq!(store.get_pin("nope").unwrap(), None);
    assert_eq!(
        store.cid_pins("cidA", &Cursor::default(), 10).unwrap(),
        vec![(0, "r1".to_string())]
    );
    store
        .write_shard_batch(&ShardBatch {
            partition: 0,
            pins: vec![write("r1", None, Some(record))],
            cids: vec![cid_row(None)],
            ..ShardBatch::default()
        })
        .unwrap();
    assert_eq!(store.get_pin("r1").unwrap(), None);
    assert_eq!(store.load_pin("r1").unwrap(), None);
    assert_eq!(store.load_cid("cidA").unwrap(), None);
    assert!(ids(store, &query("alice", &PinStatus::ALL)).is_empty());
    assert!(store
        .cid_pins("cidA", &Cursor::default(), 10)
        .unwrap()
        .is_empty());
}

pub fn status_change_moves_index(store: &dyn Store) {
    let queued = pin("r1", "alice", "cidA", 10, PinStatus::Queued);
    put(store, vec![queued.clone()]);
    counts(store, "alice", &[(PinStatus::Queued, 1)]);
    assert_eq!(
        ids(store, &query("alice", &[PinStatus::Queued])),
        vec!["r1"]
    );
    let mut pinned = queued.clone();
    pinned.status = PinStatus::Pinned;
    store
        .write_shard_batch(&ShardBatch {
            partition: 0,
            pins: vec![write("r1", Some(row(pinned, 0)), Some(row(queued, 0)))],
            ..ShardBatch::default()
        })
        .unwrap();
    counts(
        store,
        "alice",
        &[(PinStatus::Queued, 0), (PinStatus::Pinned, 1)],
    );
    assert!(ids(store, &query("alice", &[PinStatus::Queued])).is_empty());
    assert_eq!(
        ids(store, &query("alice", &[PinStatus::Pinned])),
        vec!["r1"]
    );
    // Other owners see nothing.
    assert!(ids(store, &query("bob", &PinStatus::ALL)).is_empty());
}

pub fn listing_pages_newest_first(store: &dyn Store) {
    let pins: Vec<PinRecord> = (0..250)
        .map(|i| {
            pin(
                &format!("r{i:03}"),
                "alice",
                &format!("cid{i}"),
                1_000 + i,
                PinStatus::Pinned,
            )
        })
        .collect();
    put(store, pins);
    counts(store, "alice", &[(PinStatus::Pinned, 250)]);
    let mut q = query("alice", &[PinStatus::Pinned]);
    q.limit = 100;
    let mut seen = Vec::new();
    loop {
        let page = store.list_pins(&q, 1).unwrap();
        if page.results.is_empty() {
            break;
        }
        q.before_ns = Some(page.results.last().unwrap().created_ns);
        seen.extend(page.results.into_iter().map(|p| p.created_ns));
    }
    let expected: Vec<i64> = (0..250).rev().map(|i| 1_000 + i).collect();
    assert_eq!(seen, expected);
    let mut q = query("alice", &[PinStatus::Pinned]);
    q.after_ns = Some(1_247);
    assert_eq!(ids(store, &q), vec!["r249", "r248"]);
}

pub fn filters(store: &dyn Store) {
    put(
        store,
        vec![
            pin("a", "alice", "cidA", 1, PinStatus::Pinned),
            pin("b", "alice", "cidB", 2, PinStatus::Queued),
            pin("c", "alice", "cidA", 3, PinStatus::Failed),
            pin("d", "alice", "cidC", 4, PinStatus::Pinned),
        ],
    );
    counts(
        store,
        "alice",
        &[
            (PinStatus::Pinned, 2),
            (PinStatus::Queued, 1),
            (PinStatus::Failed, 1),
        ],
    );
    let all = PinStatus::ALL;
    let mut q = query("alice", &all);
    q.cids = vec!["cidA".into(), "cidC".into()];
    assert_eq!(ids(store, &q), vec!["d", "c", "a"]);
    q.statuses = vec![PinStatus::Pinned];
    assert_eq!(ids(store, &q), vec!["d", "a"]);
    assert_eq!(store.list_pins(&q, 1).unwrap().count, 2);

    let mut q = query("alice", &all);
    q.name = Some(("Name-b".into(), NameMatch::Exact));
    assert_eq!(ids(store, &q), vec!["b"]);
    q.name = Some(("name-b".into(), NameMatch::Exact));
    assert!(ids(store, &q).is_empty());
    q.name = Some(("name-B".into(), NameMatch::IExact));
    assert_eq!(ids(store, &q), vec!["b"]);
    q.name = Some(("ame-".into(), NameMatch::Partial));
    assert_eq!(ids(store, &q), vec!["d", "c", "b", "a"]);
    q.name = Some(("AME-C".into(), NameMatch::Partial));
    assert!(ids(store, &q).is_empty());
    q.name = Some(("AME-C".into(), NameMatch::IPartial));
    assert_eq!(ids(store, &q), vec!["c"]);

    let mut q = query("alice", &all);
    q.meta = [("app".to_string(), "m1".to_string())].into();
    assert_eq!(ids(store, &q), vec!["d", "a"]);
    q.meta.insert("other".into(), "x".into());
    assert!(ids(store, &q).is_empty());

    let mut q = query("alice", &[PinStatus::Pinned, PinStatus::Queued]);
    q.limit = 2;
    let page = store.list_pins(&q, 1).unwrap();
    assert_eq!(
        page.results
            .iter()
            .map(|p| p.requestid.as_str())
            .collect::<Vec<_>>(),
        vec!["d", "b"]
    );
}

pub fn batch_is_repeatable(store: &dyn Store) {
    let old = pin("r1", "alice", "cidA", 10, PinStatus::Queued);
    let mut new = old.clone();
    new.status = PinStatus::Pinning;
    put(store, vec![old.clone()]);
    let batch = ShardBatch {
        partition: 3,
        pins: vec![write("r1", Some(row(new.clone(), 0)), Some(row(old, 0)))],
        ..ShardBatch::default()
    };
    store.write_shard_batch(&batch).unwrap();
    store.write_shard_batch(&batch).unwrap();
    counts(store, "alice", &[(PinStatus::Pinning, 1)]);
    assert_eq!(ids(store, &query("alice", &PinStatus::ALL)), vec!["r1"]);
    assert_eq!(store.get_pin("r1").unwrap(), Some(new));
}

/// A batch interrupted after any prefix of its writes, then written whole, leaves exactly what
/// writing it whole once does.
pub fn any_prefix_then_the_batch_equals_the_batch(store: &dyn Store) {
    let queued = pin("r1", "alice", "cidA", 10, PinStatus::Queued);
    let mut pinned = queued.clone();
    pinned.status = PinStatus::Pinned;
    put(store, vec![queued.clone()]);
    let state = |offset| {
        let mut state = CidState::new("cidA");
        state.applied_offset = Some(offset);
        state
    };
    let batch = ShardBatch {
        partition: 0,
        pins: vec![
            write("r1", Some(row(pinned.clone(), 0)), Some(row(queued, 0))),
            write(
                "r2",
                Some(row(pin("r2", "alice", "cidA", 11, PinStatus::Pinned), 0)),
                None,
            ),
        ],
        journal: vec![JournalEntry {
            cid: "cidA".into(),
            partition: 0,
            offset: 5,
            timestamp_ns: 5,
            event_id: "e5".into(),
            event: Event::ReplicaUnpinned { node: "n".into() },
        }],
        pending: vec![("cidA".into(), true)],
        node_cids: vec![node_cid("n1", "cidA", true)],
        expiry: vec![],
        cids: vec![CidWrite {
            cid: "cidA".into(),
            state: Some(state(5)),
        }],
    };
    counts(store, "alice", &[(PinStatus::Pinned, 2)]);
    for n in 0..=batch.len() {
        store.write_shard_batch(&batch.prefix(n)).unwrap();
        store.write_shard_batch(&batch).unwrap();
        assert_eq!(
            ids(store, &query("alice", &[PinStatus::Pinned])),
            vec!["r2", "r1"],
            "prefix {n}"
        );
        assert!(
            ids(store, &query("alice", &[PinStatus::Queued])).is_empty(),
            "prefix {n}"
        );
        assert_eq!(
            store.get_pin("r1").unwrap(),
            Some(pinned.clone()),
            "prefix {n}"
        );
        assert_eq!(
            store.journal("cidA", None, 10).unwrap().len(),
            1,
            "prefix {n}"
        );
        assert_eq!(
            store.pending_cids(0, None, 10).unwrap(),
            vec!["cidA"],
            "prefix {n}"
        );
        assert_eq!(walk_node(store, "n1", 0, 10), ["cidA"], "prefix {n}");
        assert_eq!(
            store.load_cid("cidA").unwrap(),
            Some(state(5)),
            "prefix {n}"
        );
    }
}

/// A rollback (or a retry that decides differently from the interrupted batch) names the
/// values the interrupted batch may have left (`stale`): the row as read back and the value
/// the batch attempted, which differ when entries outlived their row. None of their listing
/// or pin-list entries stays behind.
pub fn stale_entries_of_an_interrupted_batch_are_removed(store: &dyn Store) {
    let queued = pin("r1", "alice", "cidA", 10, PinStatus::Queued);
    put(store, vec![queued.clone()]);
    let mut pinned = queued.clone();
    pinned.status = PinStatus::Pinned;
    pinned.name = Some("renamed".into());
    let mut failed = queued.clone();
    failed.status = PinStatus::Failed;
    failed.name = Some("attempted".into());
    // Interrupted batch: wrote `failed` over `queued`, entries and all (the attempted value)…
    store
        .write_shard_batch(&ShardBatch {
            partition: 0,
            pins: vec![write(
                "r1",
                Some(row(failed.clone(), 1)),
                Some(row(queued.clone(), 0)),
            )],
            ..ShardBatch::default()
        })
        .unwrap();
    // …and the row reads back as another value, whose entries are there too, while
    // `failed`'s are left.
    store
        .write_shard_batch(&ShardBatch {
            partition: 0,
            pins: vec![write("r1", Some(row(pinned.clone(), 0)), None)],
            ..ShardBatch::default()
        })
        .unwrap();
    // Rolled back to `queued`, naming both values.
    let read_back = store.load_pin("r1").unwrap().expect("the row");
    assert_eq!(read_back.record, pinned);
    store
        .write_shard_batch(&ShardBatch {
            partition: 0,
            pins: vec![PinWrite {
                requestid: "r1".into(),
                old: None,
                stale: vec![read_back, row(failed.clone(), 1)],
                new: Some(row(queued.clone(), 0)),
            }],
            ..ShardBatch::default()
        })
        .unwrap();
    counts(store, "alice", &[(PinStatus::Queued, 1)]);
    for status in [PinStatus::Pinned, PinStatus::Failed] {
        assert!(
            ids(store, &query("alice", &[status])).is_empty(),
            "{status:?}"
        );
    }
    assert_eq!(
        ids(store, &query("alice", &[PinStatus::Queued])),
        vec!["r1"]
    );
    let mut by_name = query("alice", &PinStatus::ALL);
    for name in ["renamed", "attempted"] {
        by_name.name = Some((name.into(), NameMatch::Exact));
        assert!(ids(store, &by_name).is_empty(), "{name}");
    }
    by_name.name = Some(("Name-r1".into(), NameMatch::Exact));
    assert_eq!(ids(store, &by_name), vec!["r1"]);
    assert_eq!(
        store.cid_pins("cidA", &Cursor::default(), 10).unwrap(),
        vec![(0, "r1".to_string())],
        "the pin-list entry of the attempted value (bucket 1) is gone"
    );
    assert_eq!(store.get_pin("r1").unwrap(), Some(queued));
}

/// The commit row and the counters written with it are read back as written; counters of
/// other partitions and owners are separate.
pub fn commit_row_and_counters(store: &dyn Store) {
    assert_eq!(store.committed(3).unwrap(), CommitState::default());
    let counter = |owner: &str, status, value| CounterRow {
        owner: owner.into(),
        status,
        partition: 3,
        value,
    };
    let state = CommitState {
        batch: 7,
        next_offset: Some(120),
        attempt: Some(Attempt {
            batch: 8,
            undo: vec![
                Undo::Pin {
                    requestid: "r1".into(),
                    row: Some(row(pin("r1", "alice", "cidA", 1, PinStatus::Queued), 0)),
                    attempted: Some(row(pin("r1", "alice", "cidA", 1, PinStatus::Pinned), 0)),
                },
                Undo::Cid {
                    cid: "cidA".into(),
                    state: None,
                },
            ],
        }),
    };
    store
        .commit(&Commit {
            partition: 3,
            state: state.clone(),
            counters: vec![
                counter("alice", PinStatus::Pinned, 5),
                counter("bob", PinStatus::Queued, 2),
            ],
            owner_epoch: 0,
        })
        .unwrap();
    assert_eq!(store.committed(3).unwrap(), state);
    assert_eq!(store.committed(4).unwrap(), CommitState::default());
    assert_eq!(
        store.counter("alice", PinStatus::Pinned, 3).unwrap(),
        Some(5)
    );
    assert_eq!(store.counter("alice", PinStatus::Pinned, 4).unwrap(), None);
    assert_eq!(store.counter("bob", PinStatus::Pinned, 3).unwrap(), None);
    assert_eq!(total_count(store, "bob", PinStatus::Queued, 8).unwrap(), 2);
    // A later commit overwrites only the counters it names.
    store
        .commit(&Commit {
            partition: 3,
            state: CommitState { batch: 8, ..state },
            counters: vec![counter("alice", PinStatus::Pinned, 4)],
            owner_epoch: 0,
        })
        .unwrap();
    assert_eq!(
        store.counter("alice", PinStatus::Pinned, 3).unwrap(),
        Some(4)
    );
    assert_eq!(store.counter("bob", PinStatus::Queued, 3).unwrap(), Some(2));
    assert_eq!(store.committed(3).unwrap().batch, 8);
}

pub fn checkpoints_and_pending(store: &dyn Store) {
    assert_eq!(store.checkpoint("shard", 2).unwrap(), None);
    store.set_checkpoint("shard", 2, 77).unwrap();
    store.set_checkpoint("shard", 3, 5).unwrap();
    assert_eq!(store.checkpoint("shard", 2).unwrap(), Some(77));
    let pending = |p: u32, cids: &[(&str, bool)]| ShardBatch {
        partition: p,
        pending: cids.iter().map(|(c, b)| (c.to_string(), *b)).collect(),
        ..ShardBatch::default()
    };
    store
        .write_shard_batch(&pending(1, &[("c1", true), ("c2", true), ("c3", true)]))
        .unwrap();
    store
        .write_shard_batch(&pending(2, &[("x", true)]))
        .unwrap();
    store
        .write_shard_batch(&pending(1, &[("c2", false)]))
        .unwrap();
    assert_eq!(store.pending_cids(1, None, 10).unwrap(), vec!["c1", "c3"]);
    assert_eq!(store.pending_cids(1, Some("c1"), 10).unwrap(), vec!["c3"]);
    assert_eq!(store.pending_cids(1, None, 1).unwrap(), vec!["c1"]);
    assert_eq!(store.pending_cids(2, None, 10).unwrap(), vec!["x"]);
}

pub fn journal_in_order(store: &dyn Store) {
    let entry = |offset: u64| JournalEntry {
        cid: "cidA".into(),
        partition: 0,
        offset,
        timestamp_ns: offset as i64,
        event_id: format!("e{offset}"),
        event: Event::ReplicaUnpinned { node: "n".into() },
    };
    store
        .write_shard_batch(&ShardBatch {
            journal: vec![entry(300), entry(2), entry(1000)],
            ..ShardBatch::default()
        })
        .unwrap();
    let offsets: Vec<u64> = store
        .journal("cidA", None, 10)
        .unwrap()
        .iter()
        .map(|e| e.offset)
        .collect();
    assert_eq!(offsets, vec![2, 300, 1000]);
    assert_eq!(store.journal("cidA", Some(2), 1).unwrap()[0].offset, 300);
    assert!(store.journal("cidAB", None, 10).unwrap().is_empty());
}

fn token_record(owner: &str, name: &str) -> TokenRecord {
    TokenRecord {
        owner: owner.into(),
        created_ns: 1,
        name: name.into(),
        scopes: pinhive_domain::tokens::Scopes::default_tenant(),
        expires_ns: Some(1_000),
        revoked_ns: None,
    }
}

/// Tokens are found by public id and listed per owner in id order, a page after a cursor; a
/// revoked token is still found by id (and reads revoked) but no longer listed.
pub fn tokens_by_id_and_owner(store: &dyn Store) {
    let hash = |n: u32| format!("{n:016x}{}", "ab".repeat(24));
    for (n, owner) in [(3, "alice"), (1, "alice"), (2, "bob"), (4, "alice")] {
        store
            .put_token(&hash(n), &token_record(owner, &format!("device-{n}")))
            .unwrap();
    }
    let ids = |page: Vec<(String, TokenRecord)>| -> Vec<String> {
        page.into_iter().map(|(id, _)| id).collect()
    };
    let id = |n: u32| crate::token_id(&hash(n));
    assert_eq!(
        ids(store.list_tokens("alice", None, 10).unwrap()),
        [id(1), id(3), id(4)]
    );
    assert_eq!(
        ids(store.list_tokens("alice", None, 2).unwrap()),
        [id(1), id(3)]
    );
    assert_eq!(
        ids(store.list_tokens("alice", Some(&id(3)), 10).unwrap()),
        [id(4)]
    );
    assert_eq!(ids(store.list_tokens("bob", None, 10).unwrap()), [id(2)]);
    assert!(store.list_tokens("carol", None, 10).unwrap().is_empty());
    assert!(store.list_tokens("alic", None, 10).unwrap().is_empty());
    let listed = store.list_tokens("bob", None, 10).unwrap();
    assert_eq!(listed[0].1, token_record("bob", "device-2"));

    let (found_hash, found) = store.token_by_id(&id(3)).unwrap().unwrap();
    assert_eq!(found_hash, hash(3));
    assert_eq!(found.name, "device-3");
    assert!(store.token_by_id("0000000000000009").unwrap().is_none());

    let mut revoked = found;
    revoked.revoked_ns = Some(5);
    store.put_token(&hash(3), &revoked).unwrap();
    assert_eq!(
        ids(store.list_tokens("alice", None, 10).unwrap()),
        [id(1), id(4)]
    );
    assert_eq!(
        store.get_token(&hash(3)).unwrap().unwrap().revoked_ns,
        Some(5)
    );
    assert_eq!(
        store.token_by_id(&id(3)).unwrap().unwrap().1.revoked_ns,
        Some(5)
    );
}

pub fn tokens_nodes_dead_letters(store: &dyn Store) {
    let token = token_record("alice", "laptop");
    store.put_token("h1", &token).unwrap();
    assert_eq!(store.get_token("h1").unwrap(), Some(token));
    assert_eq!(store.get_token("h2").unwrap(), None);
    let node = NodeDescriptor {
        id: "n1".into(),
        rpc_url: "http://127.0.0.1:5001".into(),
        region: "eu".into(),
        weight: 2,
    };
    store.put_node(&node).unwrap();
    assert_eq!(store.list_nodes().unwrap(), vec![node]);
    store.remove_node("n1").unwrap();
    assert!(store.list_nodes().unwrap().is_empty());
    for offset in [5, 1] {
        store
            .put_dead_letter(&DeadLetter {
                partition: 0,
                offset,
                reason: "bad".into(),
                key: "k".into(),
                value_prefix_hex: "ff".into(),
                dead_lettered_ns: 0,
            })
            .unwrap();
    }
    let letters = store.dead_letters(None, 10).unwrap();
    assert_eq!(
        letters.iter().map(|d| d.offset).collect::<Vec<_>>(),
        vec![1, 5]
    );
    assert_eq!(store.dead_letters(Some((0, 1)), 10).unwrap().len(), 1);
}

pub fn dead_letters_page_after(store: &dyn Store) {
    let positions = [
        (0, 7),
        (2, 0),
        (0, u64::MAX),
        (1, 3),
        (0, 0),
        (2, 9),
        (1, u64::MAX),
    ];
    for (partition, offset) in positions {
        store
            .put_dead_letter(&DeadLetter {
                partition,
                offset,
                reason: format!("bad {partition}:{offset}"),
                key: "k".into(),
                value_prefix_hex: "ff".into(),
                dead_lettered_ns: 0,
            })
            .unwrap();
    }
    let mut expected = positions.to_vec();
    expected.sort();
    let at = |letters: Vec<DeadLetter>| -> Vec<(u32, u64)> {
        letters.iter().map(|d| (d.partition, d.offset)).collect()
    };
    // Walking pages of 3 with the last position as cursor visits each letter exactly once.
    let mut walked = Vec::new();
    let mut after = None;
    loop {
        let page = at(store.dead_letters(after, 3).unwrap());
        assert!(page.len() <= 3, "{page:?}");
        let Some(last) = page.last().copied() else {
            break;
        };
        walked.extend(page);
        after = Some(last);
    }
    assert_eq!(walked, expected);
    // Exclusive: the cursor's own letter is not repeated, also at the largest offset (the next
    // page continues with the next partition) and for a cursor between letters.
    assert_eq!(
        at(store.dead_letters(Some((0, 0)), 1).unwrap()),
        vec![(0, 7)]
    );
    assert_eq!(
        at(store.dead_letters(Some((0, u64::MAX)), 1).unwrap()),
        vec![(1, 3)]
    );
    assert_eq!(
        at(store.dead_letters(Some((1, 4)), 10).unwrap()),
        vec![(1, u64::MAX), (2, 0), (2, 9)]
    );
    assert!(store.dead_letters(Some((2, 9)), 10).unwrap().is_empty());
    assert!(store
        .dead_letters(Some((u32::MAX, u64::MAX)), 10)
        .unwrap()
        .is_empty());
}

/// `persist_batch` leaves the rows, the commit row and its counters, and no attempt.
pub fn persist_batch_writes_rows_and_commit(store: &dyn Store) {
    let record = pin("r1", "alice", "cidA", 10, PinStatus::Pinned);
    let rows = ShardBatch {
        partition: 0,
        pins: vec![write("r1", Some(row(record.clone(), 0)), None)],
        node_cids: vec![node_cid("n1", "cidA", true)],
        ..ShardBatch::default()
    };
    let attempt = Commit {
        partition: 0,
        state: CommitState {
            attempt: Some(Attempt {
                batch: 1,
                undo: vec![Undo::Pin {
                    requestid: "r1".into(),
                    row: None,
                    attempted: Some(row(record.clone(), 0)),
                }],
            }),
            ..CommitState::default()
        },
        counters: Vec::new(),
        owner_epoch: 0,
    };
    let commit = Commit {
        partition: 0,
        state: CommitState {
            batch: 1,
            next_offset: Some(7),
            attempt: None,
        },
        counters: vec![CounterRow {
            owner: "alice".into(),
            status: PinStatus::Pinned,
            partition: 0,
            value: 1,
        }],
        owner_epoch: 0,
    };
    store.persist_batch(Some(&attempt), &rows, &commit).unwrap();
    assert_eq!(store.committed(0).unwrap(), commit.state);
    assert_eq!(store.get_pin("r1").unwrap(), Some(record));
    assert_eq!(walk_node(store, "n1", 0, 10), ["cidA"]);
    assert_eq!(
        ids(store, &query("alice", &[PinStatus::Pinned])),
        vec!["r1"]
    );
}

/// Retention: journal entries and dead letters older than the cutoff go, oldest first, within
/// the per-call limit; newer ones stay.
pub fn journal_and_dead_letters_are_pruned_by_age(store: &dyn Store) {
    let entry = |cid: &str, partition: u32, offset: u64, timestamp_ns: i64| JournalEntry {
        cid: cid.into(),
        partition,
        offset,
        timestamp_ns,
        event_id: format!("e{offset}"),
        event: Event::ReplicaUnpinned { node: "n".into() },
    };
    store
        .write_shard_batch(&ShardBatch {
            journal: vec![
                entry("cidA", 0, 1, 100),
                entry("cidB", 0, 2, 200),
                entry("cidA", 0, 3, 300),
                entry("cidC", 1, 1, 100),
            ],
            ..ShardBatch::default()
        })
        .unwrap();
    assert_eq!(store.prune_journal(0, 250, 1).unwrap(), 1);
    assert_eq!(store.prune_journal(0, 250, 10).unwrap(), 1);
    assert_eq!(store.prune_journal(0, 250, 10).unwrap(), 0);
    let offsets = |cid: &str| -> Vec<u64> {
        store
            .journal(cid, None, 10)
            .unwrap()
            .iter()
            .map(|e| e.offset)
            .collect()
    };
    assert_eq!(offsets("cidA"), vec![3]);
    assert!(offsets("cidB").is_empty());
    assert_eq!(offsets("cidC"), vec![1], "other partitions are left alone");

    let letter = |partition: u32, offset: u64, at: i64| DeadLetter {
        partition,
        offset,
        reason: "bad".into(),
        key: "k".into(),
        value_prefix_hex: String::new(),
        dead_lettered_ns: at,
    };
    for l in [
        letter(0, 1, 10),
        letter(0, 2, 500),
        letter(2, 7, 20),
        letter(2, 8, 30),
    ] {
        store.put_dead_letter(&l).unwrap();
    }
    assert_eq!(store.prune_dead_letters(100, 2).unwrap(), 2);
    assert_eq!(store.prune_dead_letters(100, 10).unwrap(), 1);
    let left: Vec<(u32, u64)> = store
        .dead_letters(None, 10)
        .unwrap()
        .iter()
        .map(|l| (l.partition, l.offset))
        .collect();
    assert_eq!(left, vec![(0, 2)]);
}

/// An analytics checkpoint comes back as written, per partition; a newer one replaces it.
pub fn analytics_checkpoints_round_trip(store: &dyn Store) {
    assert_eq!(store.analytics_checkpoint(3).unwrap(), None);
    let first = crate::AnalyticsCheckpoint {
        next_offset: 10,
        state: vec![1, 2, 3],
    };
    store.put_analytics_checkpoint(3, &first).unwrap();
    store
        .put_analytics_checkpoint(
            4,
            &crate::AnalyticsCheckpoint {
                next_offset: 1,
                state: vec![9; 100_000],
            },
        )
        .unwrap();
    assert_eq!(store.analytics_checkpoint(3).unwrap(), Some(first));
    let second = crate::AnalyticsCheckpoint {
        next_offset: 25,
        state: Vec::new(),
    };
    store.put_analytics_checkpoint(3, &second).unwrap();
    assert_eq!(store.analytics_checkpoint(3).unwrap(), Some(second));
    assert_eq!(
        store
            .analytics_checkpoint(4)
            .unwrap()
            .map(|c| c.state.len()),
        Some(100_000)
    );
}

fn fenced_commit(partition: u32, batch: u64, next_offset: u64, owner_epoch: u64) -> Commit {
    Commit {
        partition,
        state: CommitState {
            batch,
            next_offset: Some(next_offset),
            attempt: None,
        },
        counters: vec![CounterRow {
            owner: "alice".into(),
            status: PinStatus::Pinned,
            partition,
            value: batch as i64,
        }],
        owner_epoch,
    }
}

/// Each claim of a partition hands out a greater epoch than the last; partitions count
/// separately.
pub fn claim_partition_epochs_increase(store: &dyn Store) {
    let first = store.claim_partition(5).unwrap();
    assert!(first > 0, "a claimed epoch is never 0 (0 means unfenced)");
    let second = store.claim_partition(5).unwrap();
    let third = store.claim_partition(5).unwrap();
    assert!(
        first < second && second < third,
        "{first} < {second} < {third}"
    );
    let other = store.claim_partition(6).unwrap();
    assert!(other > 0);
    assert!(store.claim_partition(5).unwrap() > third);
    // A claim writes no commit state: the partition reads as never committed.
    assert_eq!(store.committed(5).unwrap(), CommitState::default());
    assert_eq!(store.counter("alice", PinStatus::Pinned, 5).unwrap(), None);
}

/// After a second claim, the first owner's attempt and commit are refused with `Fenced` and
/// leave nothing (commit row, counters, rows); the second owner's go through. Only the current
/// epoch commits.
pub fn a_stale_owner_cannot_commit(store: &dyn Store) {
    let old = store.claim_partition(2).unwrap();
    store.commit(&fenced_commit(2, 1, 10, old)).unwrap();
    let new = store.claim_partition(2).unwrap();
    let before = store.committed(2).unwrap();
    assert_eq!(before.next_offset, Some(10));

    let fenced = |result: Result<(), crate::StoreError>| match result {
        Err(crate::StoreError::Fenced {
            partition,
            epoch,
            current,
        }) => {
            assert_eq!((partition, epoch, current), (2, old, new));
        }
        other => panic!("expected Fenced, got {other:?}"),
    };
    fenced(store.commit(&fenced_commit(2, 2, 20, old)));
    let record = pin("r-stale", "alice", "cidS", 10, PinStatus::Pinned);
    let rows = ShardBatch {
        partition: 2,
        pins: vec![write("r-stale", Some(row(record.clone(), 0)), None)],
        ..ShardBatch::default()
    };
    let attempt = Commit {
        partition: 2,
        state: CommitState {
            attempt: Some(Attempt {
                batch: 2,
                undo: vec![Undo::Pin {
                    requestid: "r-stale".into(),
                    row: None,
                    attempted: Some(row(record.clone(), 0)),
                }],
            }),
            ..before.clone()
        },
        counters: Vec::new(),
        owner_epoch: old,
    };
    fenced(store.persist_batch(Some(&attempt), &rows, &fenced_commit(2, 2, 20, old)));
    assert_eq!(
        store.committed(2).unwrap(),
        before,
        "nothing of a fenced commit"
    );
    assert_eq!(
        store.counter("alice", PinStatus::Pinned, 2).unwrap(),
        Some(1)
    );
    assert_eq!(
        store.get_pin("r-stale").unwrap(),
        None,
        "the attempt failed first"
    );

    // The new owner commits; the old one stays fenced.
    store
        .persist_batch(
            Some(&Commit {
                owner_epoch: new,
                ..attempt
            }),
            &rows,
            &fenced_commit(2, 2, 20, new),
        )
        .unwrap();
    assert_eq!(store.committed(2).unwrap().next_offset, Some(20));
    assert_eq!(
        store.counter("alice", PinStatus::Pinned, 2).unwrap(),
        Some(2)
    );
    assert_eq!(store.get_pin("r-stale").unwrap(), Some(record));
    store.commit(&fenced_commit(2, 3, 30, new)).unwrap();
    fenced(store.commit(&fenced_commit(2, 4, 40, old)));
    assert_eq!(store.committed(2).unwrap().next_offset, Some(30));
    // Another partition's epochs are its own; an epoch never handed out is refused.
    let other = store.claim_partition(3).unwrap();
    store.commit(&fenced_commit(3, 1, 5, other)).unwrap();
    assert!(matches!(
        store.commit(&fenced_commit(3, 2, 6, other + 1)),
        Err(crate::StoreError::Fenced { partition: 3, .. })
    ));
    assert_eq!(store.committed(3).unwrap().next_offset, Some(5));
}

/// Commits without an owner epoch (0) are written whether or not the partition was claimed.
pub fn unfenced_commits_still_work(store: &dyn Store) {
    store.commit(&fenced_commit(4, 1, 10, 0)).unwrap();
    assert_eq!(store.committed(4).unwrap().next_offset, Some(10));
    store.claim_partition(4).unwrap();
    store.claim_partition(4).unwrap();
    store.commit(&fenced_commit(4, 2, 20, 0)).unwrap();
    assert_eq!(store.committed(4).unwrap().next_offset, Some(20));
    assert_eq!(
        store.counter("alice", PinStatus::Pinned, 4).unwrap(),
        Some(2)
    );
    let record = pin("r-free", "alice", "cidF", 10, PinStatus::Pinned);
    let rows = ShardBatch {
        partition: 4,
        pins: vec![write("r-free", Some(row(record.clone(), 0)), None)],
        ..ShardBatch::default()
    };
    store
        .persist_batch(None, &rows, &fenced_commit(4, 3, 30, 0))
        .unwrap();
    assert_eq!(store.committed(4).unwrap().next_offset, Some(30));
    assert_eq!(store.get_pin("r-free").unwrap(), Some(record));
}

fn node_cid(node: &str, cid: &str, present: bool) -> NodeCidWrite {
    NodeCidWrite {
        node: node.into(),
        cid: cid.into(),
        present,
    }
}

/// Writes node-index membership of `partition`: (node, cid, present).
fn index(store: &dyn Store, partition: u32, writes: &[(&str, &str, bool)]) {
    let batch = ShardBatch {
        partition,
        node_cids: writes
            .iter()
            .map(|(node, cid, present)| node_cid(node, cid, *present))
            .collect(),
        ..ShardBatch::default()
    };
    store.write_shard_batch(&batch).unwrap();
}

/// One page of a node-index walk, checked: at most `limit` CIDs.
fn node_page(
    store: &dyn Store,
    node: &str,
    partition: u32,
    from: &NodeCidCursor,
    limit: usize,
) -> (Vec<String>, Option<NodeCidCursor>) {
    let (cids, next) = store.node_cids(node, partition, from, limit).unwrap();
    assert!(
        cids.len() <= limit,
        "{node}/{partition}: a page of {} CIDs for limit {limit}",
        cids.len()
    );
    (cids, next)
}

/// A whole walk of `node`'s index in `partition`, `limit` at a time: no CID comes twice and
/// the walk ends (bounded number of pages); the CIDs, sorted.
fn walk_node(store: &dyn Store, node: &str, partition: u32, limit: usize) -> Vec<String> {
    let mut seen = Vec::new();
    let mut cursor = NodeCidCursor::default();
    for _ in 0..10_000 {
        let (cids, next) = node_page(store, node, partition, &cursor, limit);
        seen.extend(cids);
        match next {
            Some(next) => cursor = next,
            None => {
                let mut sorted = seen.clone();
                sorted.sort();
                sorted.dedup();
                assert_eq!(sorted.len(), seen.len(), "a CID came twice: {seen:?}");
                return sorted;
            }
        }
    }
    panic!("the walk of {node}/{partition} with limit {limit} did not end");
}

/// Node-index membership: present and absent writes, each idempotent; the last write of a
/// pair in one batch wins; nodes (also those whose ids share a prefix) and partitions are
/// separate indexes.
pub fn node_cids_membership(store: &dyn Store) {
    assert!(walk_node(store, "n1", 0, 10).is_empty());
    index(store, 0, &[("n1", "cidA", true), ("n1", "cidB", true)]);
    assert_eq!(walk_node(store, "n1", 0, 10), ["cidA", "cidB"]);
    // Idempotent: present again, absent for a pair never indexed.
    index(store, 0, &[("n1", "cidA", true), ("n1", "cidZ", false)]);
    assert_eq!(walk_node(store, "n1", 0, 10), ["cidA", "cidB"]);
    index(store, 0, &[("n1", "cidA", false)]);
    assert_eq!(walk_node(store, "n1", 0, 10), ["cidB"]);
    index(store, 0, &[("n1", "cidA", false)]);
    assert_eq!(walk_node(store, "n1", 0, 10), ["cidB"]);
    // Within one batch the later write of a pair wins.
    index(
        store,
        0,
        &[
            ("n1", "cidB", false),
            ("n1", "cidB", true),
            ("n1", "cidC", true),
            ("n1", "cidC", false),
        ],
    );
    assert_eq!(walk_node(store, "n1", 0, 10), ["cidB"]);
    // Other nodes, a node id extending this one, other partitions: separate.
    index(store, 0, &[("n10", "cidX", true), ("n2", "cidY", true)]);
    index(store, 1, &[("n1", "cidP1", true)]);
    assert_eq!(walk_node(store, "n1", 0, 10), ["cidB"]);
    assert_eq!(walk_node(store, "n10", 0, 10), ["cidX"]);
    assert_eq!(walk_node(store, "n2", 0, 10), ["cidY"]);
    assert_eq!(walk_node(store, "n1", 1, 10), ["cidP1"]);
    assert!(walk_node(store, "n2", 1, 10).is_empty());
    assert!(walk_node(store, "n", 0, 10).is_empty());
}

/// A walk visits every entry present for its whole duration exactly once, whatever the page
/// size (entries spread over the store's slots, if it has any), and nothing of other nodes or
/// partitions; a walk of an empty index ends at once.
pub fn node_cids_walk_visits_each_once(store: &dyn Store) {
    assert_eq!(
        store
            .node_cids("n1", 3, &NodeCidCursor::default(), 10)
            .unwrap(),
        (Vec::new(), None)
    );
    let expected: Vec<String> = (0..20).map(|i| format!("cid{i:02}")).collect();
    let mut writes: Vec<(&str, &str, bool)> =
        expected.iter().map(|c| ("n1", c.as_str(), true)).collect();
    writes.push(("n2", "cid-of-n2", true));
    writes.push(("n1", "cid-of-partition-4", true));
    index(store, 3, &writes[..21]);
    index(store, 4, &writes[21..]);
    for limit in [1, 2, 3, 7, 20, 50] {
        assert_eq!(walk_node(store, "n1", 3, limit), expected, "limit {limit}");
    }
    assert_eq!(walk_node(store, "n1", 4, 2), ["cid-of-partition-4"]);
    assert_eq!(walk_node(store, "n2", 3, 2), ["cid-of-n2"]);

    // Entries removed and added while a walk is under way: each entry present throughout is
    // still visited exactly once, and nothing else but those changed ones.
    let removed: Vec<String> = (0..5).map(|i| format!("gone{i}")).collect();
    let added: Vec<String> = (0..5).map(|i| format!("late{i}")).collect();
    let gone: Vec<(&str, &str, bool)> = removed.iter().map(|c| ("n1", c.as_str(), true)).collect();
    index(store, 3, &gone);
    for limit in [1, 3] {
        let (first, mut cursor) = node_page(store, "n1", 3, &NodeCidCursor::default(), limit);
        let mut seen = first;
        let changes: Vec<(&str, &str, bool)> = removed
            .iter()
            .map(|c| ("n1", c.as_str(), false))
            .chain(added.iter().map(|c| ("n1", c.as_str(), true)))
            .collect();
        index(store, 3, &changes);
        let mut pages = 0;
        while let Some(from) = cursor {
            let (cids, next) = node_page(store, "n1", 3, &from, limit);
            seen.extend(cids);
            cursor = next;
            pages += 1;
            assert!(pages < 1_000, "the walk with limit {limit} did not end");
        }
        for cid in &expected {
            assert_eq!(
                seen.iter().filter(|s| *s == cid).count(),
                1,
                "limit {limit}: {cid} in {seen:?}"
            );
        }
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), seen.len(), "limit {limit}: {seen:?}");
        assert!(
            seen.iter()
                .all(|c| expected.contains(c) || removed.contains(c) || added.contains(c)),
            "limit {limit}: {seen:?}"
        );
        // Put the index back as it was before the walk.
        let undo: Vec<(&str, &str, bool)> = removed
            .iter()
            .map(|c| ("n1", c.as_str(), true))
            .chain(added.iter().map(|c| ("n1", c.as_str(), false)))
            .collect();
        index(store, 3, &undo);
    }
}

/// The node index is written after the pending set and before the CID states: a prefix of a
/// batch holds node-index writes only once it holds every pending write, and CID states only
/// once it holds every node-index write.
pub fn node_cids_in_prefix_order(store: &dyn Store) {
    let batch = ShardBatch {
        partition: 2,
        pins: vec![write(
            "r1",
            Some(row(pin("r1", "alice", "cidA", 10, PinStatus::Queued), 0)),
            None,
        )],
        journal: vec![JournalEntry {
            cid: "cidA".into(),
            partition: 2,
            offset: 1,
            timestamp_ns: 1,
            event_id: "e1".into(),
            event: Event::ReplicaUnpinned { node: "n".into() },
        }],
        pending: vec![("cidA".into(), true)],
        node_cids: vec![node_cid("n1", "cidA", true), node_cid("n2", "cidA", true)],
        expiry: vec![],
        cids: vec![CidWrite {
            cid: "cidA".into(),
            state: Some(CidState::new("cidA")),
        }],
    };
    assert_eq!(batch.len(), 6);
    let sizes = |n: usize| {
        let prefix = batch.prefix(n);
        (
            prefix.pins.len(),
            prefix.journal.len(),
            prefix.pending.len(),
            prefix.node_cids.len(),
            prefix.cids.len(),
        )
    };
    assert_eq!(sizes(3), (1, 1, 1, 0, 0));
    assert_eq!(sizes(4), (1, 1, 1, 1, 0));
    assert_eq!(sizes(5), (1, 1, 1, 2, 0));
    assert_eq!(sizes(6), (1, 1, 1, 2, 1));
    assert_eq!(batch.prefix(6), batch);
    assert_eq!(batch.prefix(4).node_cids, batch.node_cids[..1]);
    // What a crash after four writes leaves: the first node entry, no CID state.
    store.write_shard_batch(&batch.prefix(4)).unwrap();
    assert_eq!(walk_node(store, "n1", 2, 10), ["cidA"]);
    assert!(walk_node(store, "n2", 2, 10).is_empty());
    assert_eq!(store.load_cid("cidA").unwrap(), None);
    store.write_shard_batch(&batch).unwrap();
    assert_eq!(walk_node(store, "n2", 2, 10), ["cidA"]);
    assert!(store.load_cid("cidA").unwrap().is_some());
}
