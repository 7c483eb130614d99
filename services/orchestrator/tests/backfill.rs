//! A data directory written before the node and expiry indexes existed: the backfill at
//! start writes both from the CID states and pin rows, once.

use std::collections::BTreeMap;

use pinhive_domain::{CidState, PinRow, ReplicaState, ReplicaStatus};
use pinhive_events::PinRequested;
use pinhive_orchestrator::backfill::{backfill_indexes, Backfilled};
use pinhive_orchestrator::expiry::EXPIRY_MARK;
use pinhive_store::{
    CidWrite, EmbeddedStore, ExpiryCursor, NodeCidCursor, PinWrite, ShardBatch, Store,
};

mod support;

use support::cid;

const PARTITIONS: u32 = 4;

/// What an earlier release left: CID states and pin rows, and neither index.
fn earlier_release(store: &EmbeddedStore, cids: usize) {
    for i in 0..cids {
        let cid = cid(i);
        let partition = pinhive_log::partition_for(cid.as_bytes(), PARTITIONS);
        let mut state = CidState::new(&cid);
        state.replicas = BTreeMap::from([
            ("n0".to_string(), ReplicaState::new(ReplicaStatus::Pinned)),
            (
                format!("n{}", 1 + i % 3),
                ReplicaState::new(ReplicaStatus::Allocated),
            ),
            ("gone".to_string(), ReplicaState::new(ReplicaStatus::Failed)),
        ]);
        let mut meta = BTreeMap::new();
        if i.is_multiple_of(2) {
            // Already past for half of them: due just after the window read last.
            let at = if i.is_multiple_of(4) {
                "2020-01-01T00:00:00Z"
            } else {
                "2200-01-01T00:00:00Z"
            };
            meta.insert("expires_at".to_string(), at.to_string());
        }
        let row = PinRow::new(
            &PinRequested {
                requestid: format!("req-{i}"),
                owner: "alice".into(),
                cid: cid.clone(),
                name: None,
                origins: vec![],
                meta,
                created_ns: 1,
                replicas_min: 2,
                replicas_max: 2,
                replaces: None,
            },
            0,
        );
        store
            .write_shard_batch(&ShardBatch {
                partition,
                pins: vec![PinWrite {
                    requestid: format!("req-{i}"),
                    old: None,
                    stale: vec![],
                    new: Some(row),
                }],
                cids: vec![CidWrite {
                    cid,
                    state: Some(state),
                }],
                ..ShardBatch::default()
            })
            .unwrap();
    }
}

fn node_index(store: &EmbeddedStore, node: &str) -> Vec<String> {
    let mut all = Vec::new();
    for partition in 0..PARTITIONS {
        let mut cursor = NodeCidCursor::default();
        loop {
            let (cids, next) = store.node_cids(node, partition, &cursor, 7).unwrap();
            all.extend(cids);
            match next {
                Some(next) => cursor = next,
                None => break,
            }
        }
    }
    all.sort();
    all
}

#[test]
fn an_earlier_releases_data_gets_both_indexes_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let cids = 10_000;
    earlier_release(&store, cids);
    assert!(node_index(&store, "n0").is_empty());

    let done = backfill_indexes(&store, PARTITIONS).unwrap();
    assert_eq!(
        done,
        Some(Backfilled {
            cid_states: cids as u64,
            node_entries: 2 * cids as u64,
            pins: cids as u64,
            expiry_entries: cids as u64 / 2,
        })
    );
    // Every allocated or pinned replica is indexed under its node, failed ones are not.
    let mut all: Vec<String> = (0..cids).map(cid).collect();
    all.sort();
    assert_eq!(node_index(&store, "n0"), all);
    for node in 1..=3 {
        let mut held: Vec<String> = (0..cids).filter(|i| 1 + i % 3 == node).map(cid).collect();
        held.sort();
        assert_eq!(node_index(&store, &format!("n{node}")), held);
    }
    assert!(node_index(&store, "gone").is_empty());

    // Expiries: each in its CID's partition; a past one lands just after the partition's
    // last window (so the expiry task reads it next), a future one at its time.
    let far = pinhive_domain::values::Expiry::of_meta(&BTreeMap::from([(
        "expires_at".to_string(),
        "2200-01-01T00:00:00Z".to_string(),
    )]))
    .unwrap()
    .unwrap()
    .ns();
    let mut found = BTreeMap::new();
    for partition in 0..PARTITIONS {
        let through = store.checkpoint(EXPIRY_MARK, partition).unwrap().unwrap() as i64;
        let (entries, next) = store
            .expiry_due(
                partition,
                i64::MIN,
                i64::MAX,
                &ExpiryCursor::default(),
                100_000,
            )
            .unwrap();
        assert!(next.is_none());
        for entry in entries {
            assert_eq!(
                pinhive_log::partition_for(entry.cid.as_bytes(), PARTITIONS),
                partition
            );
            let i: usize = entry.requestid["req-".len()..].parse().unwrap();
            let want = if i.is_multiple_of(4) {
                through + 1
            } else {
                far
            };
            assert_eq!(entry.due_ns, want, "{entry:?}");
            found.insert(i, entry.cid);
        }
    }
    assert_eq!(found.len(), cids / 2);
    assert!(found
        .iter()
        .all(|(i, c)| i.is_multiple_of(2) && *c == cid(*i)));

    // Marked: a second start does nothing; a reopened store keeps the mark.
    assert_eq!(backfill_indexes(&store, PARTITIONS).unwrap(), None);
    drop(store);
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(backfill_indexes(&store, PARTITIONS).unwrap(), None);
}

#[test]
fn a_new_data_directory_is_marked_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(
        backfill_indexes(&store, PARTITIONS).unwrap(),
        Some(Backfilled::default())
    );
    assert_eq!(backfill_indexes(&store, PARTITIONS).unwrap(), None);
}
