//! Contract checks of the quarantine (`Store::put_quarantine`, `quarantined`,
//! `clear_quarantine`), as the shard relies on it: when a record needs a stored row that
//! cannot be decoded, the shard quarantines the record's CID (once: it re-reads its cached
//! list, keyed by CID, before it writes), dead-letters the CID's records while the entry is
//! there, and reads the partition's list again after an operator clears an entry.

use crate::{Quarantine, Store, StoreError, QUARANTINE_LIMIT};

fn entry(partition: u32, cid: &str, reason: &str, offset: u64) -> Quarantine {
    Quarantine {
        partition,
        cid: cid.into(),
        reason: reason.into(),
        offset,
        quarantined_ns: 1_796_083_200_000_000_000 + offset as i64,
    }
}

fn cids(entries: &[Quarantine]) -> Vec<&str> {
    entries.iter().map(|entry| entry.cid.as_str()).collect()
}

/// A put of a CID that is quarantined already keeps the entry it finds (reason, offset and
/// time of the first quarantine), whatever the second put says.
pub fn quarantine_put_keeps_the_first_entry(store: &dyn Store) {
    let first = entry(
        3,
        "bafkreiaaaa",
        "quarantined CID: stored cid state is corrupt",
        40,
    );
    store.put_quarantine(&first).unwrap();
    let second = entry(3, "bafkreiaaaa", "a later reason", 90);
    store.put_quarantine(&second).unwrap();
    store.put_quarantine(&first).unwrap();
    assert_eq!(store.quarantined(3).unwrap(), vec![first]);
}

/// `quarantined(p)` is every entry of partition `p`, whole, in CID order (byte order: a CID
/// that is a prefix of another sorts first), and nothing of other partitions.
pub fn quarantined_lists_one_partition_in_cid_order(store: &dyn Store) {
    let in_three = ["bafy2", "bafkreib", "bafy10", "Qmfoo", "bafy1", "bafkreia"];
    for (i, cid) in in_three.iter().enumerate() {
        store
            .put_quarantine(&entry(3, cid, &format!("reason {i}"), i as u64))
            .unwrap();
    }
    // Neighbours of partition 3, and one whose number shares its low byte.
    for (partition, cid) in [(2, "bafy0"), (4, "bafy15"), (259, "bafy3"), (4, "Qmbar")] {
        store
            .put_quarantine(&entry(partition, cid, "elsewhere", 7))
            .unwrap();
    }
    let listed = store.quarantined(3).unwrap();
    assert_eq!(
        cids(&listed),
        ["Qmfoo", "bafkreia", "bafkreib", "bafy1", "bafy10", "bafy2"]
    );
    for listed in &listed {
        let i = in_three.iter().position(|cid| *cid == listed.cid).unwrap();
        assert_eq!(
            *listed,
            entry(3, &listed.cid, &format!("reason {i}"), i as u64)
        );
    }
    assert_eq!(cids(&store.quarantined(4).unwrap()), ["Qmbar", "bafy15"]);
    assert_eq!(cids(&store.quarantined(259).unwrap()), ["bafy3"]);
    assert!(store.quarantined(5).unwrap().is_empty());
}

/// A partition holds at most [`QUARANTINE_LIMIT`] entries: a new CID past it is refused with
/// `Backend` (the shard then retries its batch, logged at ERROR) and nothing is written; a
/// CID quarantined already is still accepted (kept); other partitions are unaffected, and a
/// cleared entry makes room again.
pub fn quarantine_limit_is_per_partition(store: &dyn Store) {
    let cid = |i: usize| format!("bafkrei{i:052}");
    for i in 0..QUARANTINE_LIMIT {
        store
            .put_quarantine(&entry(1, &cid(i), "corrupt row", i as u64))
            .unwrap();
    }
    let over = entry(1, &cid(QUARANTINE_LIMIT), "corrupt row", 5_000);
    let error = store.put_quarantine(&over).unwrap_err();
    assert!(matches!(error, StoreError::Backend(_)), "{error}");
    let listed = store.quarantined(1).unwrap();
    assert_eq!(listed.len(), QUARANTINE_LIMIT);
    assert!(!listed.iter().any(|entry| entry.cid == over.cid));
    assert_eq!(listed[0], entry(1, &cid(0), "corrupt row", 0));

    store
        .put_quarantine(&entry(1, &cid(7), "again", 6_000))
        .unwrap();
    assert_eq!(
        store.quarantined(1).unwrap()[7],
        entry(1, &cid(7), "corrupt row", 7)
    );

    let other = entry(2, &cid(QUARANTINE_LIMIT), "corrupt row", 1);
    store.put_quarantine(&other).unwrap();
    assert_eq!(store.quarantined(2).unwrap(), vec![other]);

    assert!(store.clear_quarantine(1, &cid(3)).unwrap());
    store.put_quarantine(&over).unwrap();
    let listed = store.quarantined(1).unwrap();
    assert_eq!(listed.len(), QUARANTINE_LIMIT);
    assert_eq!(listed.last(), Some(&over));
    assert!(!listed.iter().any(|entry| entry.cid == cid(3)));
}

/// `clear_quarantine` says whether it removed an entry: true once, then false; false for a
/// CID never quarantined and for the right CID in another partition (which keeps its entry).
/// A CID quarantined again after a clear gets the new entry.
pub fn clear_quarantine_is_true_once(store: &dyn Store) {
    let first = entry(6, "bafkreiaaaa", "first", 10);
    let neighbour = entry(6, "bafkreibbbb", "neighbour", 11);
    store.put_quarantine(&first).unwrap();
    store.put_quarantine(&neighbour).unwrap();
    assert!(!store.clear_quarantine(7, "bafkreiaaaa").unwrap());
    assert!(!store.clear_quarantine(6, "bafkreicccc").unwrap());
    assert!(store.clear_quarantine(6, "bafkreiaaaa").unwrap());
    assert!(!store.clear_quarantine(6, "bafkreiaaaa").unwrap());
    assert_eq!(store.quarantined(6).unwrap(), vec![neighbour.clone()]);

    let again = entry(6, "bafkreiaaaa", "second", 20);
    store.put_quarantine(&again).unwrap();
    assert_eq!(store.quarantined(6).unwrap(), vec![again, neighbour]);
}

/// Entries (and clears) outlive the store: reopened, it lists what it listed before.
/// `reopen` opens the same data again; the check drops `store` (after a flush, as a shutdown
/// does) before it calls `reopen`.
pub fn quarantine_survives_reopen(store: Box<dyn Store>, reopen: &dyn Fn() -> Box<dyn Store>) {
    let kept = [
        entry(0, "bafkreiaaaa", "corrupt cid state", 3),
        entry(0, "bafkreicccc", "corrupt pin row", 4),
    ];
    for entry in &kept {
        store.put_quarantine(entry).unwrap();
    }
    store
        .put_quarantine(&entry(0, "bafkreibbbb", "cleared", 5))
        .unwrap();
    assert!(store.clear_quarantine(0, "bafkreibbbb").unwrap());
    let elsewhere = entry(9, "bafkreidddd", "other partition", 6);
    store.put_quarantine(&elsewhere).unwrap();
    store.flush().unwrap();
    drop(store);

    let store = reopen();
    assert_eq!(store.quarantined(0).unwrap(), kept);
    assert_eq!(store.quarantined(9).unwrap(), vec![elsewhere]);
    assert!(!store.clear_quarantine(0, "bafkreibbbb").unwrap());
    assert!(store.clear_quarantine(0, "bafkreiaaaa").unwrap());
}
