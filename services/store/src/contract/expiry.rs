//! Contract checks of the expiry index (`ShardBatch::expiry`, `Store::expiry_due`).

use crate::{CidWrite, ExpiryCursor, ExpiryEntry, ExpiryWrite, ShardBatch, Store};

const HOUR: i64 = 3_600_000_000_000;
/// A realistic base time (2026-11-26T00:00:00Z): stores that bucket by time see real buckets.
const T0: i64 = 1_796_083_200_000_000_000 - 5 * 24 * HOUR;

fn entry(due_ns: i64, cid: &str, requestid: &str) -> ExpiryEntry {
    ExpiryEntry {
        due_ns,
        cid: cid.into(),
        requestid: requestid.into(),
    }
}

/// Writes expiry-index entries of `partition`: (due, cid, requestid, present).
fn expiry(store: &dyn Store, partition: u32, writes: &[(i64, &str, &str, bool)]) {
    let batch = ShardBatch {
        partition,
        expiry: writes
            .iter()
            .map(|(due_ns, cid, requestid, present)| ExpiryWrite {
                due_ns: *due_ns,
                cid: cid.to_string(),
                requestid: requestid.to_string(),
                present: *present,
            })
            .collect(),
        ..ShardBatch::default()
    };
    store.write_shard_batch(&batch).unwrap();
}

/// One page of a walk of the due entries, checked: at most `limit`, each in the window.
fn due_page(
    store: &dyn Store,
    partition: u32,
    window: (i64, i64),
    from: &ExpiryCursor,
    limit: usize,
) -> (Vec<ExpiryEntry>, Option<ExpiryCursor>) {
    let (entries, next) = store
        .expiry_due(partition, window.0, window.1, from, limit)
        .unwrap();
    assert!(
        entries.len() <= limit,
        "partition {partition}: a page of {} entries for limit {limit}",
        entries.len()
    );
    for entry in &entries {
        assert!(
            window.0 < entry.due_ns && entry.due_ns <= window.1,
            "{entry:?} is outside the window {window:?}"
        );
    }
    (entries, next)
}

/// A whole walk of the entries of `partition` due in `window`, `limit` at a time: no entry
/// comes twice and the walk ends; the entries, sorted.
fn walk_due(
    store: &dyn Store,
    partition: u32,
    window: (i64, i64),
    limit: usize,
) -> Vec<ExpiryEntry> {
    let mut seen = Vec::new();
    let mut cursor = ExpiryCursor::default();
    for _ in 0..100_000 {
        let (entries, next) = due_page(store, partition, window, &cursor, limit);
        seen.extend(entries);
        match next {
            Some(next) => cursor = next,
            None => {
                let mut sorted = seen.clone();
                sorted.sort();
                sorted.dedup();
                assert_eq!(sorted.len(), seen.len(), "an entry came twice: {seen:?}");
                return sorted;
            }
        }
    }
    panic!("the walk of partition {partition} over {window:?} with limit {limit} did not end");
}

/// Expiry-index membership: present and absent writes, each idempotent; the last write of an
/// entry in one batch wins; partitions are separate indexes; two pins of one CID due at the
/// same time are two entries.
pub fn expiry_index_membership(store: &dyn Store) {
    let window = (T0, T0 + HOUR);
    assert!(walk_due(store, 0, window, 10).is_empty());
    let a = T0 + 10;
    expiry(
        store,
        0,
        &[(a, "cidA", "r1", true), (a, "cidA", "r2", true)],
    );
    let both = vec![entry(a, "cidA", "r1"), entry(a, "cidA", "r2")];
    assert_eq!(walk_due(store, 0, window, 10), both);
    // Idempotent: present again, absent for an entry never written.
    expiry(
        store,
        0,
        &[(a, "cidA", "r1", true), (a + 1, "cidA", "r1", false)],
    );
    assert_eq!(walk_due(store, 0, window, 10), both);
    expiry(store, 0, &[(a, "cidA", "r1", false)]);
    assert_eq!(walk_due(store, 0, window, 10), [entry(a, "cidA", "r2")]);
    expiry(store, 0, &[(a, "cidA", "r1", false)]);
    assert_eq!(walk_due(store, 0, window, 10), [entry(a, "cidA", "r2")]);
    // Within one batch the later write of an entry wins.
    expiry(
        store,
        0,
        &[
            (a, "cidA", "r2", false),
            (a, "cidA", "r2", true),
            (a, "cidB", "r3", true),
            (a, "cidB", "r3", false),
        ],
    );
    assert_eq!(walk_due(store, 0, window, 10), [entry(a, "cidA", "r2")]);
    // Other partitions: separate.
    expiry(store, 1, &[(a, "cidP1", "r9", true)]);
    assert_eq!(walk_due(store, 0, window, 10), [entry(a, "cidA", "r2")]);
    assert_eq!(walk_due(store, 1, window, 10), [entry(a, "cidP1", "r9")]);
    assert!(walk_due(store, 2, window, 10).is_empty());
}

/// The window is `(after, up_to]`: an entry at `after` is not due in it, one at `up_to` is;
/// entries hours and days apart are all found (stores that bucket by time walk the buckets
/// in between), whatever the page size; an empty or reversed window is empty.
pub fn expiry_due_window_bounds(store: &dyn Store) {
    let times = [
        T0,
        T0 + 1,
        T0 + HOUR - 1,
        T0 + HOUR,
        T0 + HOUR + 1,
        T0 + 5 * HOUR + 7,
        T0 + 26 * HOUR,
        T0 + 26 * HOUR + 1,
    ];
    let writes: Vec<(i64, String, String)> = times
        .iter()
        .enumerate()
        .map(|(i, due)| (*due, format!("cid{i}"), format!("r{i}")))
        .collect();
    let refs: Vec<(i64, &str, &str, bool)> = writes
        .iter()
        .map(|(due, cid, requestid)| (*due, cid.as_str(), requestid.as_str(), true))
        .collect();
    expiry(store, 7, &refs);
    let due_in = |window: (i64, i64)| -> Vec<ExpiryEntry> {
        let mut expected: Vec<ExpiryEntry> = writes
            .iter()
            .filter(|(due, _, _)| window.0 < *due && *due <= window.1)
            .map(|(due, cid, requestid)| entry(*due, cid, requestid))
            .collect();
        expected.sort();
        expected
    };
    for window in [
        (T0 - 1, T0 + 26 * HOUR + 1),
        (T0, T0 + HOUR),
        (T0 + 1, T0 + HOUR - 1),
        (T0 + HOUR - 1, T0 + HOUR),
        (T0 + HOUR, T0 + 26 * HOUR),
        (T0 + 2 * HOUR, T0 + 3 * HOUR),
    ] {
        for limit in [1, 2, 3, 50] {
            assert_eq!(
                walk_due(store, 7, window, limit),
                due_in(window),
                "window {window:?}, limit {limit}"
            );
        }
    }
    assert!(walk_due(store, 7, (T0 + HOUR, T0 + HOUR), 10).is_empty());
    assert!(walk_due(store, 7, (T0 + HOUR, T0), 10).is_empty());
    assert_eq!(
        store
            .expiry_due(7, T0 + HOUR, T0, &ExpiryCursor::default(), 10)
            .unwrap(),
        (Vec::new(), None),
        "a reversed window ends at once"
    );
}

/// A walk visits every entry present in its window for its whole duration exactly once,
/// whatever the page size and however many pins share a CID and a time, also while entries are
/// added and removed under it (the shard deletes entries of expired pins while the expiry task
/// walks); entries of other partitions or outside the window never come.
pub fn expiry_due_walk_visits_each_once(store: &dyn Store) {
    let window = (T0, T0 + 2 * HOUR);
    let expected: Vec<ExpiryEntry> = (0..24)
        .map(|i| {
            // Spread over the window, with runs of one time and one CID.
            let due = T0 + 1 + (i / 3) * (HOUR / 5);
            entry(due, &format!("cid{:02}", i % 5), &format!("r{i:02}"))
        })
        .collect();
    let writes: Vec<(i64, &str, &str, bool)> = expected
        .iter()
        .map(|e| (e.due_ns, e.cid.as_str(), e.requestid.as_str(), true))
        .collect();
    expiry(store, 3, &writes);
    expiry(store, 4, &[(T0 + 5, "cid-of-partition-4", "r-p4", true)]);
    expiry(store, 3, &[(T0 + 3 * HOUR, "cid-later", "r-later", true)]);
    let mut sorted = expected.clone();
    sorted.sort();
    for limit in [1, 2, 5, 24, 100] {
        assert_eq!(walk_due(store, 3, window, limit), sorted, "limit {limit}");
    }

    let removed: Vec<ExpiryEntry> = (0..4)
        .map(|i| entry(T0 + 2 + i * HOUR / 3, "gone", &format!("g{i}")))
        .collect();
    let added: Vec<ExpiryEntry> = (0..4)
        .map(|i| entry(T0 + 3 + i * HOUR / 3, "late", &format!("l{i}")))
        .collect();
    let put = |entries: &[ExpiryEntry], present: bool| {
        let writes: Vec<(i64, &str, &str, bool)> = entries
            .iter()
            .map(|e| (e.due_ns, e.cid.as_str(), e.requestid.as_str(), present))
            .collect();
        expiry(store, 3, &writes);
    };
    put(&removed, true);
    for limit in [1, 3] {
        let (first, mut cursor) = due_page(store, 3, window, &ExpiryCursor::default(), limit);
        let mut seen = first.clone();
        put(&removed, false);
        put(&added, true);
        // What the shard does as the expiry task goes: the entries just read are deleted.
        put(&first, false);
        let mut pages = 0;
        while let Some(from) = cursor {
            let (entries, next) = due_page(store, 3, window, &from, limit);
            seen.extend(entries);
            cursor = next;
            pages += 1;
            assert!(pages < 10_000, "the walk with limit {limit} did not end");
        }
        for wanted in &expected {
            if first.contains(wanted) {
                continue;
            }
            assert_eq!(
                seen.iter().filter(|e| *e == wanted).count(),
                1,
                "limit {limit}: {wanted:?} in {seen:?}"
            );
        }
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), seen.len(), "limit {limit}: {seen:?}");
        assert!(
            seen.iter()
                .all(|e| expected.contains(e) || removed.contains(e) || added.contains(e)),
            "limit {limit}: {seen:?}"
        );
        // Put the index back as it was before the walk.
        put(&first, true);
        put(&added, false);
        put(&removed, true);
    }
}

/// The expiry index is written after the node index and before the CID states: a prefix of a
/// batch holds expiry writes only once it holds every node-index write, and CID states only
/// once it holds every expiry write.
pub fn expiry_in_prefix_order(store: &dyn Store) {
    let batch = ShardBatch {
        partition: 2,
        pending: vec![("cidA".into(), true)],
        node_cids: vec![crate::NodeCidWrite {
            node: "n1".into(),
            cid: "cidA".into(),
            present: true,
        }],
        expiry: vec![
            ExpiryWrite {
                due_ns: T0 + 1,
                cid: "cidA".into(),
                requestid: "r1".into(),
                present: true,
            },
            ExpiryWrite {
                due_ns: T0 + 2,
                cid: "cidA".into(),
                requestid: "r2".into(),
                present: true,
            },
        ],
        cids: vec![CidWrite {
            cid: "cidA".into(),
            state: Some(pinhive_domain::CidState::new("cidA")),
        }],
        ..ShardBatch::default()
    };
    assert_eq!(batch.len(), 5);
    let sizes = |n: usize| {
        let prefix = batch.prefix(n);
        (
            prefix.pending.len(),
            prefix.node_cids.len(),
            prefix.expiry.len(),
            prefix.cids.len(),
        )
    };
    assert_eq!(sizes(2), (1, 1, 0, 0));
    assert_eq!(sizes(3), (1, 1, 1, 0));
    assert_eq!(sizes(4), (1, 1, 2, 0));
    assert_eq!(sizes(5), (1, 1, 2, 1));
    assert_eq!(batch.prefix(5), batch);
    // What a crash after three writes leaves: the first entry, no CID state.
    store.write_shard_batch(&batch.prefix(3)).unwrap();
    let window = (T0, T0 + HOUR);
    assert_eq!(
        walk_due(store, 2, window, 10),
        [entry(T0 + 1, "cidA", "r1")]
    );
    assert_eq!(store.load_cid("cidA").unwrap(), None);
    store.write_shard_batch(&batch).unwrap();
    assert_eq!(walk_due(store, 2, window, 10).len(), 2);
    assert!(store.load_cid("cidA").unwrap().is_some());
}
