//! Fencing of a log partition's old owner: two orchestrators on one store and one log both run
//! partition 0 (as two instances do for a moment during a rebalance). The second claims the
//! partition after the first; the first's next batch is refused as `Fenced`, it stops the
//! partition, and the second applies the records — the store ends as one owner alone would
//! have left it.

use std::sync::Arc;
use std::time::Duration;

use pinhive_domain::PinStatus;
use pinhive_events::{Envelope, Event};
use pinhive_ipfs::NodeRegistry;
use pinhive_log::{EmbeddedLog, EmbeddedLogConfig, Log, Record};
use pinhive_orchestrator::{Orchestrator, OrchestratorConfig};
use pinhive_store::{total_count, EmbeddedStore, Store, SCOPE_ALL_PINS};

mod support;

use support::{cid, pin_request, until_async as until};

const PINS: usize = 40;

fn unpin(i: usize) -> Record {
    Record::from_envelope(&Envelope::new(
        cid(i),
        Event::UnpinRequested {
            requestid: format!("req-{i}"),
            owner: "alice".into(),
        },
    ))
}

/// An orchestrator without IPFS nodes: the pins stay queued, the test looks at state only.
fn start(log: &Arc<dyn Log>, store: &Arc<dyn Store>) -> Arc<Orchestrator> {
    Orchestrator::start(
        log.clone(),
        store.clone(),
        NodeRegistry::default(),
        OrchestratorConfig {
            repair_interval: Duration::from_millis(50),
            ..OrchestratorConfig::default()
        },
    )
    .unwrap()
}

async fn owner_epoch(orchestrator: &Orchestrator) -> u64 {
    orchestrator
        .snapshots()
        .await
        .first()
        .map_or(0, |snapshot| snapshot.owner_epoch)
}

/// What a test compares between the fenced run and a run by one owner alone.
fn state_of(store: &dyn Store) -> (Vec<String>, i64, u64, u64, Option<u64>) {
    let pins = (0..PINS)
        .map(|i| {
            format!(
                "{:?} {:?}",
                store.get_pin(&format!("req-{i}")).unwrap(),
                store.load_cid(&cid(i)).unwrap()
            )
        })
        .collect();
    (
        pins,
        store
            .counter(SCOPE_ALL_PINS, PinStatus::Queued, 0)
            .unwrap()
            .unwrap_or(0),
        total_count(store, "alice", PinStatus::Queued, 1).unwrap(),
        store.pending_cids(0, None, 10 * PINS).unwrap().len() as u64,
        store.committed(0).unwrap().next_offset,
    )
}

#[actix_rt::test]
async fn an_old_owner_is_fenced_and_the_new_one_applies() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn Log> = Arc::new(
        EmbeddedLog::open(
            &dir.path().join("log"),
            EmbeddedLogConfig {
                partitions: 1,
                ..EmbeddedLogConfig::default()
            },
        )
        .unwrap(),
    );
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("store")).unwrap());

    // The first owner applies the first half.
    let first = start(&log, &store);
    until("the first owner claimed partition 0", || async {
        owner_epoch(&first).await > 0
    })
    .await;
    log.append((0..PINS / 2).map(|i| pin_request(i, 1)).collect())
        .await
        .unwrap();
    until("the first owner applied the first half", || async {
        first.applied_offset(0) == log.end_offset(0)
    })
    .await;

    // A second instance takes the partition over (the first has not noticed: it still runs).
    let second = start(&log, &store);
    let old_epoch = owner_epoch(&first).await;
    until("the second owner claimed partition 0", || async {
        owner_epoch(&second).await > old_epoch
    })
    .await;

    // The next records: the first owner's next batch (or repair pass that writes) is
    // refused, and it stops the partition.
    let mut rest: Vec<Record> = (PINS / 2..PINS).map(|i| pin_request(i, 1)).collect();
    rest.extend((0..PINS / 4).map(unpin));
    log.append(rest).await.unwrap();
    until("the fenced owner stopped partition 0", || async {
        !first.owns(0)
    })
    .await;
    until("the new owner applied everything", || async {
        second.applied_offset(0) == log.end_offset(0)
    })
    .await;
    assert!(second.owns(0));
    assert!(
        first.applied_offset(0) < log.end_offset(0),
        "the fenced owner committed nothing of the second half"
    );

    // One owner alone, from the same log into a fresh store, leaves the same state.
    let alone_store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(&dir.path().join("alone")).unwrap());
    let alone = start(&log, &alone_store);
    until("the lone owner applied everything", || async {
        alone.applied_offset(0) == log.end_offset(0)
    })
    .await;
    let fenced_run = state_of(store.as_ref());
    assert_eq!(fenced_run, state_of(alone_store.as_ref()));
    let expected = (PINS - PINS / 4) as u64;
    assert_eq!(fenced_run.2, expected, "queued pins counted once each");
    assert_eq!(fenced_run.1 as u64, expected);
    assert_eq!(fenced_run.4, Some(log.end_offset(0)));

    for orchestrator in [first, second, alone] {
        orchestrator.shutdown(Duration::from_secs(5)).await;
    }
}
