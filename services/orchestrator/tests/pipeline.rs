//! The orchestrator with an in-process simulated fleet: pins flow to the right number of
//! nodes, injected node failures are retried, unpins clean up, and replaying the whole log
//! over persisted state (a crash after the state write but before the checkpoint) changes
//! nothing and redoes no IPFS work.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use pinhive_domain::PinStatus;
use pinhive_events::{Envelope, Event, NodeDescriptor, PinRequested};
use pinhive_ipfs::{IpfsApi, NodeDriver, NodeDriverConfig, NodeRegistry, SimulatedIpfs};
use pinhive_log::{EmbeddedLog, EmbeddedLogConfig, Log, Record};
use pinhive_orchestrator::consumer::LogSink;
use pinhive_orchestrator::{Orchestrator, OrchestratorConfig};
use pinhive_store::{total_count, EmbeddedStore, Store};

mod support;

use support::{cid, pin_request, simulated_fleet, until};

const PARTITIONS: u32 = 4;

fn open_log_and_store(dir: &std::path::Path) -> (Arc<dyn Log>, Arc<dyn Store>) {
    let log = EmbeddedLog::open(
        &dir.join("log"),
        EmbeddedLogConfig {
            partitions: PARTITIONS,
            ..EmbeddedLogConfig::default()
        },
    )
    .unwrap();
    let store = EmbeddedStore::open(&dir.join("store")).unwrap();
    (Arc::new(log), Arc::new(store))
}

#[actix_rt::test]
async fn pins_reach_simulated_nodes_and_replay_redoes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (log, store) = open_log_and_store(dir.path());
    let registry = NodeRegistry::default();
    let fleet = simulated_fleet(3, &log, &registry).await;
    // Fault injection: node 0 fails its next calls; the driver retries with backoff.
    fleet[0].fail_next(3);

    let orchestrator_config = OrchestratorConfig {
        repair_interval: Duration::from_millis(100),
        ..OrchestratorConfig::default()
    };
    let orchestrator = Orchestrator::start(
        log.clone(),
        store.clone(),
        registry.clone(),
        orchestrator_config.clone(),
    )
    .unwrap();
    let pins = 200;
    log.append((0..pins).map(|i| pin_request(i, 2)).collect())
        .await
        .unwrap();
    let pinned = |store: &Arc<dyn Store>| {
        total_count(store.as_ref(), "alice", PinStatus::Pinned, PARTITIONS).unwrap()
    };
    until("every pin pinned", || pinned(&store) == pins as u64).await;
    for i in 0..pins {
        let holders = fleet.iter().filter(|n| n.holds(&cid(i))).count();
        assert_eq!(holders, 2, "{} has two replicas", cid(i));
        let pin = store.get_pin(&format!("req-{i}")).unwrap().unwrap();
        assert_eq!(pin.delegates.len(), 2, "{pin:?}");
    }

    // Unpin half: replicas leave the nodes, rows and counters follow.
    let unpins: Vec<Record> = (0..pins / 2)
        .map(|i| {
            Record::from_envelope(&Envelope::new(
                cid(i),
                Event::UnpinRequested {
                    requestid: format!("req-{i}"),
                    owner: "alice".into(),
                },
            ))
        })
        .collect();
    log.append(unpins).await.unwrap();
    until("unpinned on every node", || {
        (0..pins / 2).all(|i| fleet.iter().all(|n| !n.holds(&cid(i))))
    })
    .await;
    until("counters follow", || pinned(&store) == (pins / 2) as u64).await;
    until("cid rows of unpinned content deleted", || {
        (0..pins / 2).all(|i| store.load_cid(&cid(i)).unwrap().is_none())
    })
    .await;

    // Crash after state, before checkpoint: rewind every checkpoint and replay the whole log.
    orchestrator.shutdown(Duration::from_secs(5)).await;
    let calls_before: u64 = fleet
        .iter()
        .map(|n| n.pin_calls.load(Ordering::SeqCst))
        .sum();
    for partition in 0..PARTITIONS {
        let mut state = store.committed(partition).unwrap();
        state.next_offset = Some(0);
        store
            .commit(&pinhive_store::Commit {
                partition,
                state,
                counters: Vec::new(),
                owner_epoch: 0,
            })
            .unwrap();
    }
    let replayed = Orchestrator::start(
        log.clone(),
        store.clone(),
        registry.clone(),
        orchestrator_config,
    )
    .unwrap();
    until("replay reached the log end", || {
        (0..PARTITIONS).all(|p| replayed.applied_offset(p) == log.end_offset(p))
    })
    .await;
    // Let the repair loop of every partition complete two more passes: it must find nothing
    // to do.
    let passes: Vec<u64> = (0..PARTITIONS).map(|p| replayed.repair_passes(p)).collect();
    until("two repair passes on every partition", || {
        (0..PARTITIONS).all(|p| replayed.repair_passes(p) >= passes[p as usize] + 2)
    })
    .await;
    assert_eq!(
        pinned(&store),
        (pins / 2) as u64,
        "counters unchanged by replay"
    );
    let calls_after: u64 = fleet
        .iter()
        .map(|n| n.pin_calls.load(Ordering::SeqCst))
        .sum();
    assert_eq!(calls_after, calls_before, "no IPFS work redone");
    let skipped: u64 = replayed
        .snapshots()
        .await
        .iter()
        .map(|s| s.events_skipped)
        .sum();
    assert!(skipped > 0, "replayed events were recognised and skipped");
    replayed.shutdown(Duration::from_secs(5)).await;
}

/// Fault injection at "IPFS pinned, outcome event not yet appended": the first outcomes are
/// lost; the repair loop re-sends the commands (pin is idempotent) and every pin converges.
#[actix_rt::test]
async fn lost_outcomes_are_recovered_by_the_repair_loop() {
    use async_trait::async_trait;
    use pinhive_ipfs::OutcomeSink;
    use std::sync::atomic::AtomicU32;

    struct LosingSink {
        inner: LogSink,
        to_lose: AtomicU32,
    }

    #[async_trait]
    impl OutcomeSink for LosingSink {
        async fn publish(&self, envelope: Envelope) -> Result<(), String> {
            let lose = self
                .to_lose
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if lose {
                return Err("injected: outcome lost before the append".into());
            }
            self.inner.publish(envelope).await
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let (log, store) = open_log_and_store(dir.path());
    let registry = NodeRegistry::default();
    let node = Arc::new(SimulatedIpfs::new("peer-0", Duration::ZERO));
    let sink = Arc::new(LosingSink {
        inner: LogSink::new(log.clone()),
        to_lose: AtomicU32::new(10),
    });
    let api: Arc<dyn IpfsApi> = node.clone();
    NodeDriver::new(
        NodeDescriptor {
            id: "n0".into(),
            rpc_url: "sim://0".into(),
            region: String::new(),
            weight: 1,
        },
        api,
        sink.clone(),
        registry.clone(),
        NodeDriverConfig {
            health_interval: Duration::from_millis(50),
            ..NodeDriverConfig::default()
        },
    )
    .spawn();
    until("node reachable", || registry.reachable_count() == 1).await;
    let orchestrator = Orchestrator::start(
        log.clone(),
        store.clone(),
        registry.clone(),
        OrchestratorConfig {
            repair_interval: Duration::from_millis(100),
            ..OrchestratorConfig::default()
        },
    )
    .unwrap();
    let pins = 20;
    let records: Vec<Record> = (0..pins)
        .map(|i| {
            let mut record = pin_request(i, 2);
            // One replica each: the single node.
            let mut envelope =
                pinhive_events::codec::decode(record.content_type, &record.key, &record.value)
                    .unwrap();
            if let Event::PinRequested(request) = &mut envelope.event {
                request.replicas_min = 1;
                request.replicas_max = 1;
            }
            record = Record::from_envelope(&envelope);
            record
        })
        .collect();
    log.append(records).await.unwrap();
    until("every pin pinned despite lost outcomes", || {
        total_count(store.as_ref(), "alice", PinStatus::Pinned, PARTITIONS).unwrap() == pins as u64
    })
    .await;
    assert_eq!(sink.to_lose.load(Ordering::SeqCst), 0, "outcomes were lost");
    assert!(
        node.pin_calls.load(Ordering::SeqCst) > pins as u64,
        "lost outcomes were redone by pinning again"
    );
    orchestrator.shutdown(Duration::from_secs(5)).await;
}

/// A CIDv0 and the pin request an earlier release logged for it, keyed by that spelling.
const V0: &str = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";

fn v0_request(requestid: &str) -> PinRequested {
    PinRequested {
        requestid: requestid.into(),
        owner: "alice".into(),
        cid: V0.into(),
        name: None,
        origins: vec![],
        meta: Default::default(),
        created_ns: 7,
        replicas_min: 1,
        replicas_max: 1,
        replaces: None,
    }
}

/// An orchestrator without IPFS nodes (the legacy tests look at state only).
fn start_without_nodes(log: &Arc<dyn Log>, store: &Arc<dyn Store>) -> Arc<Orchestrator> {
    Orchestrator::start(
        log.clone(),
        store.clone(),
        NodeRegistry::default(),
        OrchestratorConfig::default(),
    )
    .unwrap()
}

/// Records an earlier release wrote under a non-canonical CID spelling (still in the log at
/// the upgrade) are forwarded to the canonical key and applied there: the pin and a later
/// unpin of it both land on the one canonical state.
#[actix_rt::test]
async fn legacy_keyed_records_are_forwarded_to_the_canonical_key() {
    let canonical = pinhive_domain::canonical_cid(V0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (log, store) = open_log_and_store(dir.path());
    let legacy = |event: Event| Record::from_envelope(&Envelope::new(V0, event));
    let pin = |requestid: &str| legacy(Event::PinRequested(v0_request(requestid)));
    log.append(vec![
        pin("legacy-1"),
        pin("legacy-2"),
        legacy(Event::UnpinRequested {
            requestid: "legacy-2".into(),
            owner: "alice".into(),
        }),
    ])
    .await
    .unwrap();
    let orchestrator = start_without_nodes(&log, &store);
    until("forwarded records applied", || {
        store
            .load_cid(&canonical)
            .unwrap()
            .is_some_and(|s| s.pins() == 1)
            && store.get_pin("legacy-1").unwrap().is_some()
            && store.get_pin("legacy-2").unwrap().is_none()
    })
    .await;
    assert!(
        store.load_cid(V0).unwrap().is_none(),
        "no state under the old spelling"
    );
    let row = store.get_pin("legacy-1").unwrap().unwrap();
    assert_eq!(row.cid, V0, "the row keeps the client's spelling");
    assert!(store.dead_letters(None, 10).unwrap().is_empty());
    assert_eq!(
        total_count(store.as_ref(), "alice", PinStatus::Queued, PARTITIONS).unwrap(),
        1
    );
    orchestrator.shutdown(Duration::from_secs(5)).await;
}
