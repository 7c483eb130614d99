//! The control log on the embedded log: configured nodes are registered once and start their
//! drivers, operator changes are applied before they return, a restart folds the same table,
//! and no node gets a verdict before its first health check.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use pinhive_events::{NodeDescriptor, NodeState};
use pinhive_ipfs::NodeRegistry;
use pinhive_log::{EmbeddedLog, EmbeddedLogConfig, Log};
use pinhive_orchestrator::control::{ControlConfig, ControlError, ControlPlane, DriverControl};

/// Records which drivers run.
#[derive(Default)]
struct Drivers {
    running: Mutex<BTreeSet<String>>,
    starts: Mutex<usize>,
}

impl DriverControl for Drivers {
    fn start(&self, node: NodeDescriptor) -> Result<(), String> {
        self.running.lock().insert(node.id);
        *self.starts.lock() += 1;
        Ok(())
    }
    fn stop(&self, id: &str) {
        self.running.lock().remove(id);
    }
}

fn node(id: &str) -> NodeDescriptor {
    NodeDescriptor {
        id: id.into(),
        rpc_url: format!("http://{id}.invalid:5001"),
        region: "eu".into(),
        weight: 1,
    }
}

fn control_log(dir: &std::path::Path) -> Arc<dyn Log> {
    Arc::new(
        EmbeddedLog::open(
            &dir.join("control"),
            EmbeddedLogConfig {
                partitions: 1,
                ..EmbeddedLogConfig::default()
            },
        )
        .unwrap(),
    )
}

async fn start(
    log: Arc<dyn Log>,
    drivers: Arc<Drivers>,
    configured: Vec<NodeDescriptor>,
) -> Arc<ControlPlane> {
    ControlPlane::start(
        log,
        NodeRegistry::default(),
        drivers,
        configured,
        Arc::new(|| false),
        ControlConfig::default(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn membership_and_operator_changes_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let drivers = Arc::new(Drivers::default());
    let log = control_log(dir.path());
    let plane = start(log.clone(), drivers.clone(), vec![node("a"), node("b")]).await;
    assert_eq!(
        *drivers.running.lock(),
        BTreeSet::from(["a".to_string(), "b".to_string()])
    );
    plane.set_draining("a", true, "test").await.unwrap();
    assert_eq!(plane.node("a").unwrap().state, NodeState::Draining);
    plane.remove("b", "test").await.unwrap();
    assert!(plane.node("b").is_none());
    assert!(!drivers.running.lock().contains("b"));
    assert!(matches!(
        plane.set_draining("zz", true, "test").await,
        Err(ControlError::NoSuchNode(_))
    ));
    plane.stop().await;
    drop(plane);
    drop(log);

    // A restart folds the same table; a configured node the log knows is not registered
    // again (its state stays), one it does not know is.
    let drivers = Arc::new(Drivers::default());
    let log = control_log(dir.path());
    let end = log.end_offset(0);
    let plane = start(log.clone(), drivers.clone(), vec![node("a"), node("c")]).await;
    assert_eq!(plane.node("a").unwrap().state, NodeState::Draining);
    assert!(plane.node("b").is_none());
    assert_eq!(
        *drivers.running.lock(),
        BTreeSet::from(["a".to_string(), "c".to_string()])
    );
    assert_eq!(*drivers.starts.lock(), 2);
    // Exactly one record appended: c's registration.
    let appended = log.read(0, end, 1 << 20).await.unwrap();
    assert_eq!(appended.len(), 1);
    plane.stop().await;
}

#[tokio::test]
async fn a_node_never_health_checked_gets_no_verdict() {
    // The leader publishes state changes from health checks; a node whose driver has not
    // checked it yet (here: no driver at all) stays `up` however long the grace period is
    // exceeded. (The transitions themselves are the domain's table test and the node-health
    // integration test on js-ipfs.)
    let dir = tempfile::tempdir().unwrap();
    let log = control_log(dir.path());
    let leader = ControlPlane::start(
        log.clone(),
        NodeRegistry::default(),
        Arc::new(Drivers::default()),
        vec![node("a")],
        Arc::new(|| true),
        ControlConfig {
            grace: Duration::from_millis(1),
            check_interval: Duration::from_millis(20),
        },
    )
    .await
    .unwrap();
    let end = log.end_offset(0);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    let mut ticks = tokio::time::interval(Duration::from_millis(20));
    while tokio::time::Instant::now() < deadline {
        ticks.tick().await;
        assert_eq!(leader.node("a").unwrap().state, NodeState::Up);
    }
    assert_eq!(log.end_offset(0), end, "nothing published");
    leader.stop().await;
}
