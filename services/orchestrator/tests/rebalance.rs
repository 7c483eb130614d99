//! A node that joins takes about k/N of the CIDs (k replicas, N nodes), at the bounded rate:
//! each moved CID gets a replica on it and gives up the one its keep order drops, only once
//! the new one is pinned; nothing else moves.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use pinhive_domain::PinStatus;
use pinhive_events::{codec, Event};
use pinhive_ipfs::NodeRegistry;
use pinhive_log::Log;
use pinhive_orchestrator::{Orchestrator, OrchestratorConfig};
use pinhive_store::{total_count, EmbeddedStore, Store};

mod support;

use support::{cid, pin_request, simulated_fleet, start_simulated_node, until};

const PARTITIONS: u32 = 4;
const PINS: usize = 240;
const REPLICAS: u8 = 2;
/// `rereplication_rate_per_node`: the joined node takes at most this many replicas a second.
const RATE: u32 = 40;

/// Every `ReplicasAllocated` naming `node` in the pin log: (timestamp, CID).
async fn allocations_to(log: &Arc<dyn Log>, node: &str) -> Vec<(i64, String)> {
    let mut found = Vec::new();
    for partition in 0..PARTITIONS {
        let (mut next, end) = (0, log.end_offset(partition));
        while next < end {
            let records = log.read(partition, next, 1 << 20).await.unwrap();
            let Some(last) = records.last() else { break };
            next = last.next_offset;
            for stored in records {
                let record = stored.record.unwrap();
                let envelope =
                    codec::decode(record.content_type, &record.key, &record.value).unwrap();
                if let Event::ReplicasAllocated { nodes, .. } = &envelope.event {
                    if nodes.iter().any(|n| n == node) {
                        found.push((envelope.timestamp_ns, envelope.key.clone()));
                    }
                }
            }
        }
    }
    found.sort();
    found
}

#[actix_rt::test]
async fn a_joined_node_takes_about_k_over_n_of_the_cids_at_the_bounded_rate() {
    let dir = tempfile::tempdir().unwrap();
    let log = support::open_log(dir.path(), PARTITIONS);
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("store")).unwrap());
    let registry = NodeRegistry::default();
    let mut fleet = simulated_fleet(4, &log, &registry).await;
    let orchestrator = Orchestrator::start(
        log.clone(),
        store.clone(),
        registry.clone(),
        OrchestratorConfig {
            repair_interval: Duration::from_millis(100),
            rereplication_rate: 0,
            rereplication_rate_per_node: RATE,
            ..OrchestratorConfig::default()
        },
    )
    .unwrap();
    log.append((0..PINS).map(|i| pin_request(i, REPLICAS)).collect())
        .await
        .unwrap();
    until("every pin pinned", || {
        total_count(store.as_ref(), "alice", PinStatus::Pinned, PARTITIONS).unwrap() == PINS as u64
    })
    .await;
    let holders = |fleet: &[Arc<pinhive_ipfs::SimulatedIpfs>], i: usize| -> BTreeSet<String> {
        fleet
            .iter()
            .enumerate()
            .filter(|(_, node)| node.holds(&cid(i)))
            .map(|(n, _)| format!("n{n}"))
            .collect()
    };
    until("every CID on its two nodes", || {
        (0..PINS).all(|i| holders(&fleet, i).len() == usize::from(REPLICAS))
    })
    .await;
    let before: BTreeMap<usize, BTreeSet<String>> =
        (0..PINS).map(|i| (i, holders(&fleet, i))).collect();

    // The CIDs whose keep order puts the joined node before one of their replicas move.
    let joined = "n4".to_string();
    let expected: BTreeMap<usize, String> = before
        .iter()
        .filter_map(|(&i, held)| {
            let mut order: Vec<String> = held.iter().cloned().collect();
            order.push(joined.clone());
            pinhive_domain::allocator::rank(&cid(i), &mut order);
            let dropped = order.last().unwrap().clone();
            (dropped != joined).then_some((i, dropped))
        })
        .collect();
    let share = expected.len() as f64 / PINS as f64;
    // k/N = 2/5 of the CIDs, within sampling noise.
    assert!((0.28..0.52).contains(&share), "{share}");

    fleet.push(start_simulated_node(4, &log, &registry));
    until("the moves are done", || {
        // Never fewer than two copies of any CID on the way: the old replica goes only once
        // the new one holds the data.
        for i in 0..PINS {
            let held = holders(&fleet, i);
            assert!(held.len() >= 2, "{} held by {held:?} only", cid(i));
        }
        (0..PINS).all(|i| {
            let held = holders(&fleet, i);
            let mut want = before[&i].clone();
            if let Some(dropped) = expected.get(&i) {
                want.remove(dropped);
                want.insert(joined.clone());
            }
            held == want
        })
    })
    .await;

    // Paced: the allocations to the joined node span at least (moves - 1) / RATE seconds.
    let allocations = allocations_to(&log, &joined).await;
    assert_eq!(allocations.len(), expected.len(), "one allocation per move");
    let moved: BTreeSet<String> = allocations.iter().map(|(_, c)| c.clone()).collect();
    let want: BTreeSet<String> = expected.keys().map(|&i| cid(i)).collect();
    assert_eq!(moved, want);
    let span_ns = allocations.last().unwrap().0 - allocations.first().unwrap().0;
    let floor_ns = (allocations.len() as i64 - 1) * 1_000_000_000 / i64::from(RATE);
    // The limiter is no-burst; allow 10% for timestamp jitter between partitions.
    assert!(
        span_ns * 10 >= floor_ns * 9,
        "{} moves in {span_ns} ns, faster than {RATE}/s",
        allocations.len()
    );
    orchestrator.shutdown(Duration::from_secs(5)).await;
}
