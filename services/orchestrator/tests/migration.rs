//! The one-time CID-key migration on a real embedded store: states a previous release kept
//! under `Qm…` / `zb2…` spellings fold into the canonical state, counters move with them, the
//! CID filter finds the old pins, and a crash between the two writes of one key (or a second
//! run) changes nothing more.

use std::str::FromStr;

use cid::multibase::Base;
use pinhive_domain::{CidState, PinRecord, PinStatus, ReplicaState, ReplicaStatus};
use pinhive_events::{Event, PinRequested};
use pinhive_orchestrator::migrate::{canonical_cid_keys, migrate_key, Step, MARKER};
use pinhive_store::{
    total_count, CidWrite, CounterRow, EmbeddedStore, NameMatch, PinQuery, PinWrite, ShardBatch,
    Store, SCOPE_ALL_PINS, SCOPE_REPLICAS_DESIRED, SCOPE_REPLICAS_PINNED,
};

const PARTITIONS: u32 = 16;
const V0: &str = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";

fn canonical() -> String {
    pinhive_domain::canonical_cid(V0).unwrap()
}

/// What the previous release persisted for one pin of `key` (its state, row and counters), as
/// its shard wrote them: the state keyed by the client's spelling.
fn legacy_pin(store: &dyn Store, key: &str, requestid: &str, owner: &str, node: &str) {
    let mut state = store
        .load_cid(key)
        .unwrap()
        .unwrap_or_else(|| CidState::new(key));
    let request = PinRequested {
        requestid: requestid.into(),
        owner: owner.into(),
        cid: key.into(),
        name: Some(format!("{requestid}-name")),
        origins: vec![],
        meta: Default::default(),
        created_ns: 1_000 + state.pins.len() as i64,
        replicas_min: 1,
        replicas_max: 3,
        replaces: None,
    };
    let offset = state.applied_offset.map_or(0, |o| o + 1);
    state.apply(offset, &Event::PinRequested(request.clone()));
    state.replicas.insert(
        node.into(),
        ReplicaState {
            status: ReplicaStatus::Pinned,
            attempts: 1,
            last_error: None,
            delegates: vec![],
        },
    );
    let mut row = PinRecord::queued(&request);
    row.status = state.pin_status();
    row.info = state.pin_info();
    let partition = pinhive_log::partition_for(key.as_bytes(), PARTITIONS);
    let mut counters = Vec::new();
    for (scope, status, delta) in [
        (owner, PinStatus::Pinned, 1),
        (SCOPE_ALL_PINS, PinStatus::Pinned, 1),
        (SCOPE_REPLICAS_DESIRED, PinStatus::Pinned, 1),
        (SCOPE_REPLICAS_PINNED, PinStatus::Pinned, 1),
    ] {
        // One replica per state: the desired/pinned contributions are written once.
        let first_pin = state.pins.len() == 1;
        if scope.starts_with("#replicas") && !first_pin {
            continue;
        }
        let value = store
            .counter(scope, status, partition)
            .unwrap()
            .map_or(0, |r| r.value);
        counters.push(CounterRow {
            owner: scope.into(),
            status,
            partition,
            value: value + delta,
            offset,
        });
    }
    store
        .write_shard_batch(&ShardBatch {
            partition,
            counters,
            pins: vec![PinWrite::Put {
                old: None,
                new: row,
            }],
            cids: vec![CidWrite::Put(state)],
            ..ShardBatch::default()
        })
        .unwrap();
}

fn by_cid(owner: &str, cid: &str) -> PinQuery {
    PinQuery {
        owner: owner.into(),
        cids: vec![cid.into()],
        name: None::<(String, NameMatch)>,
        statuses: PinStatus::ALL.to_vec(),
        before_ns: None,
        after_ns: None,
        meta: Default::default(),
        limit: 100,
    }
}

/// Every counter scope summed over partitions and statuses.
fn totals(store: &dyn Store) -> Vec<(String, u64)> {
    [
        "alice",
        "bob",
        SCOPE_ALL_PINS,
        SCOPE_REPLICAS_DESIRED,
        SCOPE_REPLICAS_PINNED,
    ]
    .into_iter()
    .map(|scope| {
        let sum = PinStatus::ALL
            .into_iter()
            .map(|s| total_count(store, scope, s, PARTITIONS).unwrap())
            .sum();
        (scope.to_string(), sum)
    })
    .collect()
}

/// A store as the previous release left it: alice pinned the content as `Qm…` (CIDv0) and as
/// `zb2…`-style base58btc of its CIDv1, bob as the canonical base32.
fn legacy_store(dir: &std::path::Path) -> EmbeddedStore {
    let store = EmbeddedStore::open(dir).unwrap();
    let base58 = cid::Cid::from_str(&canonical())
        .unwrap()
        .to_string_of_base(Base::Base58Btc)
        .unwrap();
    legacy_pin(&store, V0, "r-v0", "alice", "n1");
    legacy_pin(&store, &base58, "r-b58", "alice", "n2");
    legacy_pin(&store, &canonical(), "r-b32", "bob", "n1");
    store
}

fn check_migrated(store: &dyn Store) {
    let canonical = canonical();
    let state = store
        .load_cid(&canonical)
        .unwrap()
        .expect("canonical state");
    let pins: Vec<&String> = state.pins.keys().collect();
    assert_eq!(pins, ["r-b32", "r-b58", "r-v0"]);
    assert_eq!(
        store.cid_keys(None, 10).unwrap(),
        vec![canonical.clone()],
        "no legacy keys remain"
    );
    assert_eq!(
        state.replicas["n1"].status,
        ReplicaStatus::Pinned,
        "bob's stays"
    );
    assert_eq!(
        state.replicas["n2"].status,
        ReplicaStatus::Allocated,
        "re-pinned as canonical"
    );
    // Counters: three pins, all in the merged state's status (pinning while n2 re-pins).
    let status = state.pin_status();
    let owner_total = |owner| total_count(store, owner, status, PARTITIONS).unwrap();
    assert_eq!(owner_total("alice"), 2);
    assert_eq!(owner_total("bob"), 1);
    assert_eq!(owner_total(SCOPE_ALL_PINS), 3);
    let expected = vec![
        ("alice".to_string(), 2),
        ("bob".to_string(), 1),
        (SCOPE_ALL_PINS.to_string(), 3),
        (SCOPE_REPLICAS_DESIRED.to_string(), 1),
        (SCOPE_REPLICAS_PINNED.to_string(), 1),
    ];
    assert_eq!(totals(store), expected);
    // The CID filter (canonical) finds alice's old pins; rows keep their spelling.
    let page = store
        .list_pins(&by_cid("alice", &canonical), PARTITIONS)
        .unwrap();
    let mut spellings: Vec<String> = page.results.iter().map(|p| p.cid.clone()).collect();
    spellings.sort();
    assert_eq!(page.results.len(), 2, "{page:?}");
    assert!(spellings.contains(&V0.to_string()));
    assert!(page.results.iter().all(|p| p.status == status));
    let pending = store
        .pending_cids(
            pinhive_log::partition_for(canonical.as_bytes(), PARTITIONS),
            None,
            10,
        )
        .unwrap();
    assert!(pending.contains(&canonical), "the repair loop re-plans it");
}

#[test]
fn legacy_spellings_fold_into_the_canonical_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = legacy_store(dir.path());
    assert_eq!(store.cid_keys(None, 10).unwrap().len(), 3);
    let report = canonical_cid_keys(&store, PARTITIONS).unwrap();
    assert_eq!((report.examined, report.migrated), (3, 2));
    check_migrated(&store);
    // A second run is skipped by its marker; running the key step again changes nothing.
    assert!(canonical_cid_keys(&store, PARTITIONS).unwrap().already_done);
    assert!(!migrate_key(&store, PARTITIONS, V0, Step::Both).unwrap());
    check_migrated(&store);
}

#[test]
fn a_crash_between_the_two_writes_of_a_key_is_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let store = legacy_store(dir.path());
    // The canonical side of the v0 key is written, then the process dies.
    assert!(migrate_key(&store, PARTITIONS, V0, Step::CanonicalSideOnly).unwrap());
    assert!(store.checkpoint(MARKER, 0).unwrap().is_none());
    // The restart runs the whole pass.
    let report = canonical_cid_keys(&store, PARTITIONS).unwrap();
    assert_eq!(report.migrated, 2);
    check_migrated(&store);
}

#[test]
fn a_store_without_legacy_keys_only_gets_its_marker() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    legacy_pin(&store, &canonical(), "r-b32", "bob", "n1");
    let before = totals(&store);
    let report = canonical_cid_keys(&store, PARTITIONS).unwrap();
    assert_eq!((report.examined, report.migrated), (1, 0));
    assert_eq!(totals(&store), before);
    assert_eq!(store.checkpoint(MARKER, 0).unwrap(), Some(1));
}
