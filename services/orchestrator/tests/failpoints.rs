//! The failpoint matrix: the pipeline (embedded log and store, three simulated nodes) under a
//! fault at each step a pin goes through — the log write (`log::write`) and its fsync
//! (`log::fsync`), the shard's batch and checkpoint (`store::persist`; for a store that
//! writes them separately, `store::rows` and `store::commit`), the append of node outcomes
//! (`log::outcome_append`) and the node RPC (`ipfs::rpc`).
//!
//! Each check pins a burst while the step fails, waits until the fault has shown, then
//! "crashes" (the orchestrator stops with the fault still on: nothing after the failing step
//! ran), clears the fault and starts a new orchestrator on the same log and store. Then every
//! acknowledged pin is pinned on exactly two nodes, nothing unacknowledged appears, and nothing
//! was applied twice: each CID's history holds one request, and the pinned counter equals the
//! acknowledged pins.

#[macro_use]
mod support;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use fail::FailScenario;
use pinhive_domain::{CidState, Cursor, PinRecord, PinRow, PinStatus};
use pinhive_events::{Event, NodeDescriptor};
use pinhive_ipfs::{NodeRegistry, SimulatedIpfs};
use pinhive_orchestrator::metrics::METRICS;
use pinhive_orchestrator::{Orchestrator, OrchestratorConfig};
use pinhive_store::{
    total_count, AnalyticsCheckpoint, Commit, CommitState, DeadLetter, EmbeddedStore, JournalEntry,
    PinPage, PinQuery, S3Object, ShardBatch, Store, StoreError, TokenRecord,
};

use support::{cid, pin_request, simulated_fleet, until};

const PARTITIONS: u32 = 4;
const PINS: usize = 24;

/// The embedded store, but writing a batch's attempt, rows and commit separately (the
/// `Store::persist_batch` default, as ScyllaDB does), so `store::rows` and `store::commit`
/// are on the path.
struct Stepwise {
    inner: EmbeddedStore,
}

impl Stepwise {
    fn on_call(&self, _method: &str) {}
}

impl Store for Stepwise {
    delegate_store_reads!();

    fn write_shard_batch(&self, batch: &ShardBatch) -> Result<(), StoreError> {
        self.inner.write_shard_batch(batch)
    }

    fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        self.inner.commit(commit)
    }
}

/// How a check knows its fault happened before it crashes.
#[derive(Clone, Copy)]
enum Shows {
    /// A partition's batch failed (the consumer counts failures in a row).
    BatchFailure,
    /// A node pinned while no outcome reached the log.
    PinnedWithoutOutcome,
    /// Appends of the burst were refused.
    RefusedAppends,
    /// A node RPC was retried.
    Retries,
}

async fn converges_through(failpoint: &str, actions: &str, shows: Shows, stepwise: bool) {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let log = support::open_log(dir.path(), PARTITIONS);
    let embedded = EmbeddedStore::open(&dir.path().join("store")).unwrap();
    let store: Arc<dyn Store> = if stepwise {
        Arc::new(Stepwise { inner: embedded })
    } else {
        Arc::new(embedded)
    };
    let registry = NodeRegistry::default();
    let fleet = simulated_fleet(3, &log, &registry).await;
    let config = OrchestratorConfig {
        repair_interval: Duration::from_millis(100),
        ..OrchestratorConfig::default()
    };
    let retries_before = retries();
    // The failure gauges are process-wide: start from zero (tests run one at a time under the
    // scenario's lock), so a gauge an earlier check left set does not pass for this fault.
    for partition in 0..PARTITIONS {
        METRICS
            .batch_failures
            .with_label_values(&[&partition.to_string()])
            .set(0);
    }

    fail::cfg(failpoint, actions).unwrap();
    let orchestrator =
        Orchestrator::start(log.clone(), store.clone(), registry.clone(), config.clone()).unwrap();
    let mut acknowledged = BTreeSet::new();
    let mut refused = BTreeSet::new();
    for i in 0..PINS {
        match log.append(vec![pin_request(i, 2)]).await {
            Ok(_) => acknowledged.insert(i),
            Err(_) => refused.insert(i),
        };
    }
    match shows {
        Shows::BatchFailure => {
            until("a batch failed", || {
                (0..PARTITIONS).any(|p| {
                    METRICS
                        .batch_failures
                        .with_label_values(&[&p.to_string()])
                        .get()
                        > 0
                })
            })
            .await
        }
        Shows::PinnedWithoutOutcome => {
            until("a node pinned", || pin_calls(&fleet) > 0).await;
            assert_eq!(pinned(&store), 0, "no outcome reached the log");
        }
        Shows::RefusedAppends => {
            assert!(!refused.is_empty(), "some appends were refused");
            assert!(!acknowledged.is_empty(), "some appends were acknowledged");
        }
        Shows::Retries => until("a node RPC retried", || retries() > retries_before).await,
    }

    // Crash with the fault on, clear it, restart on the same log and store.
    orchestrator.shutdown(Duration::from_secs(5)).await;
    fail::remove(failpoint);
    let restarted = Orchestrator::start(log.clone(), store.clone(), registry, config).unwrap();
    until("every acknowledged pin pinned", || {
        pinned(&store) == acknowledged.len() as u64
    })
    .await;
    until("two replicas of every acknowledged CID", || {
        acknowledged
            .iter()
            .all(|i| fleet.iter().filter(|n| n.holds(&cid(*i))).count() == 2)
    })
    .await;
    for i in &acknowledged {
        let pin = store
            .get_pin(&format!("req-{i}"))
            .unwrap()
            .expect("pin row");
        assert_eq!(pin.status, PinStatus::Pinned, "{pin:?}");
        let requests = store
            .journal(&cid(*i), None, 1000)
            .unwrap()
            .iter()
            .filter(|e| matches!(e.event, Event::PinRequested(_)))
            .count();
        assert_eq!(requests, 1, "{} applied once", cid(*i));
    }
    for i in &refused {
        assert!(store.get_pin(&format!("req-{i}")).unwrap().is_none());
        assert!(fleet.iter().all(|n| !n.holds(&cid(*i))));
    }
    restarted.shutdown(Duration::from_secs(5)).await;
    scenario.teardown();
}

fn pinned(store: &Arc<dyn Store>) -> u64 {
    total_count(store.as_ref(), "alice", PinStatus::Pinned, PARTITIONS).unwrap()
}

fn pin_calls(fleet: &[Arc<SimulatedIpfs>]) -> u64 {
    fleet
        .iter()
        .map(|n| n.pin_calls.load(Ordering::SeqCst))
        .sum()
}

fn retries() -> u64 {
    (0..3)
        .map(|i| {
            pinhive_ipfs::metrics::METRICS
                .retries
                .with_label_values(&[&format!("n{i}")])
                .get()
        })
        .sum()
}

#[actix_rt::test]
async fn log_write() {
    // Group commits 3 to 8 fail: part of the burst is refused.
    converges_through(
        "log::write",
        "2*off->6*return->off",
        Shows::RefusedAppends,
        false,
    )
    .await;
}

#[actix_rt::test]
async fn log_fsync() {
    converges_through(
        "log::fsync",
        "2*off->6*return->off",
        Shows::RefusedAppends,
        false,
    )
    .await;
}

#[actix_rt::test]
async fn store_persist() {
    converges_through("store::persist", "return", Shows::BatchFailure, false).await;
}

#[actix_rt::test]
async fn store_rows() {
    converges_through("store::rows", "return", Shows::BatchFailure, true).await;
}

#[actix_rt::test]
async fn store_commit() {
    converges_through("store::commit", "return", Shows::BatchFailure, true).await;
}

#[actix_rt::test]
async fn outcome_append() {
    converges_through(
        "log::outcome_append",
        "return",
        Shows::PinnedWithoutOutcome,
        false,
    )
    .await;
}

#[actix_rt::test]
async fn node_rpc() {
    // Transient: the first RPC attempts fail and the driver retries them (a pin fails only
    // once its attempts are spent, and 3 is fewer than the attempts of one pin).
    converges_through("ipfs::rpc", "3*return->off", Shows::Retries, false).await;
}
