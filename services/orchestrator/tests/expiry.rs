//! Pin expiry with the real shards, embedded log and store, and a simulated fleet: due pins go
//! through `PinExpired` events and their replicas leave the nodes; pins without expiry stay; a
//! pin applied after the window covering its expiry was read still expires (it lands in the
//! next window); an expiry moved later holds the pin past its first time; the walk resumes
//! after the persisted mark.

use std::sync::Arc;
use std::time::Duration;

use pinhive_events::{Envelope, Event, PinRequested};
use pinhive_ipfs::{NodeRegistry, SimulatedIpfs};
use pinhive_log::{Log, Record};
use pinhive_orchestrator::expiry::EXPIRY_MARK;
use pinhive_orchestrator::{Orchestrator, OrchestratorConfig};
use pinhive_store::{EmbeddedStore, Store};

mod support;

use support::{cid, simulated_fleet, until};

const PARTITIONS: u32 = 4;
const MS: i64 = 1_000_000;

struct Service {
    log: Arc<dyn Log>,
    store: Arc<dyn Store>,
    fleet: Vec<Arc<SimulatedIpfs>>,
    orchestrator: Arc<Orchestrator>,
    _dir: tempfile::TempDir,
}

async fn start() -> Service {
    let dir = tempfile::tempdir().unwrap();
    let log = support::open_log(dir.path(), PARTITIONS);
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("store")).unwrap());
    let registry = NodeRegistry::default();
    let fleet = simulated_fleet(3, &log, &registry).await;
    let orchestrator = Orchestrator::start(
        log.clone(),
        store.clone(),
        registry,
        OrchestratorConfig {
            repair_interval: Duration::from_millis(100),
            expiry_interval: Duration::from_millis(50),
            ..OrchestratorConfig::default()
        },
    )
    .unwrap();
    Service {
        log,
        store,
        fleet,
        orchestrator,
        _dir: dir,
    }
}

fn rfc3339(ns: i64) -> String {
    pinhive_domain::values::Expiry::from_ns(ns)
        .unwrap()
        .to_rfc3339()
}

/// A pin of `cid(i)` by request `requestid`, expiring at `expires_ns` if any.
fn request(i: usize, requestid: &str, expires_ns: Option<i64>) -> Record {
    let meta = expires_ns
        .map(|ns| [("expires_at".to_string(), rfc3339(ns))].into())
        .unwrap_or_default();
    Record::from_envelope(&Envelope::new(
        cid(i),
        Event::PinRequested(PinRequested {
            requestid: requestid.into(),
            owner: "alice".into(),
            cid: cid(i),
            name: None,
            origins: vec![],
            meta,
            created_ns: pinhive_events::now_ns(),
            replicas_min: 2,
            replicas_max: 2,
            replaces: None,
        }),
    ))
}

fn expiry_set(i: usize, requestid: &str, expires_ns: Option<i64>) -> Record {
    Record::from_envelope(&Envelope::new(
        cid(i),
        Event::PinExpirySet {
            requestid: requestid.into(),
            expires_ns,
        },
    ))
}

impl Service {
    fn holders(&self, i: usize) -> usize {
        self.fleet.iter().filter(|node| node.holds(&cid(i))).count()
    }

    fn exists(&self, requestid: &str) -> bool {
        self.store.get_pin(requestid).unwrap().is_some()
    }

    /// The least expiry mark over the partitions (0 while one has none).
    fn through(&self) -> i64 {
        (0..PARTITIONS)
            .map(|p| {
                self.store
                    .checkpoint(EXPIRY_MARK, p)
                    .unwrap()
                    .map_or(0, |mark| mark as i64)
            })
            .min()
            .unwrap_or(0)
    }

    async fn wait_through(&self, ns: i64) {
        until("every partition's expiry mark passes the time", || {
            self.through() > ns
        })
        .await;
    }
}

#[actix_rt::test]
async fn due_pins_leave_the_nodes_through_events_and_others_stay() {
    let service = start().await;
    // Requested with an expiry an hour away, so every pin is placed first however slow the
    // machine; then the expiring ones are moved to a moment from now.
    let later = pinhive_events::now_ns() + 3_600_000 * MS;
    let mut records = Vec::new();
    for i in 0..12 {
        let due = (i % 2 == 0).then_some(later);
        records.push(request(i, &format!("r-{i}"), due));
    }
    // CID 12: one pin expiring, one not.
    records.push(request(12, "r-12-expiring", Some(later)));
    records.push(request(12, "r-12-kept", None));
    service.log.append(records).await.unwrap();
    until("every CID on two nodes", || {
        (0..13).all(|i| service.holders(i) == 2)
    })
    .await;
    let expires = pinhive_events::now_ns() + 300 * MS;
    let mut sooner: Vec<Record> = (0..12)
        .filter(|i| i % 2 == 0)
        .map(|i| expiry_set(i, &format!("r-{i}"), Some(expires)))
        .collect();
    sooner.push(expiry_set(12, "r-12-expiring", Some(expires)));
    service.log.append(sooner).await.unwrap();

    until("due pins gone and unpinned", || {
        (0..12)
            .filter(|i| i % 2 == 0)
            .all(|i| !service.exists(&format!("r-{i}")) && service.holders(i) == 0)
            && !service.exists("r-12-expiring")
    })
    .await;
    for i in (0..12).filter(|i| i % 2 == 1) {
        assert!(service.exists(&format!("r-{i}")));
        assert_eq!(service.holders(i), 2, "{}", cid(i));
    }
    assert!(service.exists("r-12-kept"));
    assert_eq!(service.holders(12), 2, "another pin still holds the CID");
    // The journal records each expiry, carrying the entry's time.
    let journal = service.store.journal(&cid(0), None, 100).unwrap();
    assert!(
        journal.iter().any(|entry| entry.event
            == Event::PinExpired {
                requestid: "r-0".into(),
                expires_ns: expires,
            }),
        "{journal:?}"
    );
    // The index holds nothing due any more: a walk of the whole past is empty.
    for partition in 0..PARTITIONS {
        let (entries, _) = service
            .store
            .expiry_due(
                partition,
                0,
                pinhive_events::now_ns(),
                &Default::default(),
                100,
            )
            .unwrap();
        assert!(entries.is_empty(), "partition {partition}: {entries:?}");
    }
    service.orchestrator.shutdown(Duration::from_secs(5)).await;
}

#[actix_rt::test]
async fn a_pin_applied_after_its_window_was_read_still_expires() {
    let service = start().await;
    // Let every partition's walk pass a time, then apply a pin that expires at that time (a
    // lagging shard, or an expiry set moments before its time): its entry cannot go into a
    // window already read, so it lands in the next one.
    let past = pinhive_events::now_ns();
    service.wait_through(past).await;
    service
        .log
        .append(vec![
            request(1, "late", Some(past)),
            request(1, "kept", None),
        ])
        .await
        .unwrap();
    // One CID, one partition, in log order: once "kept" is there, "late" was applied.
    until("both applied", || service.exists("kept")).await;
    until("the late pin expired", || !service.exists("late")).await;
    let journal = service.store.journal(&cid(1), None, 100).unwrap();
    let expired = journal
        .iter()
        .find_map(|entry| match &entry.event {
            Event::PinExpired {
                requestid,
                expires_ns,
            } if requestid == "late" => Some(*expires_ns),
            _ => None,
        })
        .expect("a PinExpired for the late pin");
    assert!(expired > past, "its entry was moved after the windows read");
    assert!(service.exists("kept"));
    assert_eq!(service.holders(1), 2, "the other pin still holds the CID");
    service.orchestrator.shutdown(Duration::from_secs(5)).await;
}

#[actix_rt::test]
async fn a_moved_expiry_decides_and_the_walk_resumes_after_a_restart() {
    let service = start().await;
    let first = pinhive_events::now_ns() + 800 * MS;
    // Each pin and its change in one append (one CID: applied in order, normally in one
    // batch), so a slow machine cannot let `first` pass between them.
    service
        .log
        .append(vec![
            request(1, "moved-later", Some(first)),
            expiry_set(1, "moved-later", Some(first + 3_600_000 * MS)),
            request(2, "moved-sooner", Some(first + 3_600_000 * MS)),
            expiry_set(2, "moved-sooner", Some(first)),
            request(3, "cleared", Some(first)),
            expiry_set(3, "cleared", None),
        ])
        .await
        .unwrap();
    until("the kept ones pinned", || {
        [1, 3].iter().all(|i| service.holders(*i) == 2)
    })
    .await;
    until("the sooner one expired", || !service.exists("moved-sooner")).await;
    // Every partition's walk passed the first time: the others would have gone with it.
    service.wait_through(first).await;
    assert!(service.exists("moved-later"));
    assert!(service.exists("cleared"));
    let row = service.store.load_pin("moved-later").unwrap().unwrap();
    assert_eq!(
        row.expiry().map(|expiry| expiry.ns()),
        Some(first + 3_600_000 * MS)
    );
    assert_eq!(service.holders(1), 2);

    // A restart resumes after the persisted mark, and due pins still go.
    service.orchestrator.shutdown(Duration::from_secs(5)).await;
    let mark = service.through();
    assert!(mark > first);
    let Service {
        log,
        store,
        fleet: _fleet,
        ..
    } = service;
    let registry = NodeRegistry::default();
    let orchestrator = Orchestrator::start(
        log.clone(),
        store.clone(),
        registry,
        OrchestratorConfig {
            expiry_interval: Duration::from_millis(50),
            ..OrchestratorConfig::default()
        },
    )
    .unwrap();
    let soon = pinhive_events::now_ns() + 300 * MS;
    log.append(vec![expiry_set(3, "cleared", Some(soon))])
        .await
        .unwrap();
    until("the pin given an expiry after the restart expired", || {
        store.get_pin("cleared").unwrap().is_none()
    })
    .await;
    assert!(store.get_pin("moved-later").unwrap().is_some());
    orchestrator.shutdown(Duration::from_secs(5)).await;
}
