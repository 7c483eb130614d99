//! The control log: node membership and lifecycle, the same on every instance.
//!
//! Node events (`NodeRegistered`, `NodeStatusChanged`, `NodeRemoved`) go to a log of their own
//! with one partition (`{topic}-control` with Kafka, `control-log/` under the data directory
//! otherwise), never to the pin log. Every instance reads it from the start and folds it into
//! a [`NodeTable`] (`pinhive_domain::nodes`): it starts and stops node drivers for the nodes
//! registered and removed — on any instance — and hands each node's agreed state to the
//! [`NodeRegistry`], where shards plan with it. The log is the membership: it survives
//! restarts, and a node added through one instance is used by all.
//!
//! Every instance health-checks every node (its drivers do), but only the *leader* turns
//! what it observes into state changes (`transition`, with the grace period), so instances
//! never disagree on whether a node is down. The leader is the instance that runs log
//! partition 0 of the pin log (with the embedded log, the only instance).

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use pinhive_domain::nodes::{transition, HealthRule, NodeChange, NodeRecord, NodeTable};
use pinhive_events::{codec, Envelope, Event, NodeDescriptor, NodeState};
use pinhive_ipfs::registry::NOT_CHECKED_YET;
use pinhive_ipfs::{AgreedState, NodeRegistry};
use pinhive_log::{Log, LogError, Record};
use tokio::sync::watch;

/// The one partition of the control log.
const PARTITION: u32 = 0;
/// Bytes read from the control log per read.
const READ_BYTES: usize = 256 * 1024;
/// How long an operator's change waits for this instance to fold it in.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts and stops node drivers (the server's driver manager).
pub trait DriverControl: Send + Sync + 'static {
    /// Starts the node's driver, replacing a running one (a changed description).
    fn start(&self, node: NodeDescriptor) -> Result<(), String>;
    fn stop(&self, id: &str);
}

#[derive(Clone, Debug)]
pub struct ControlConfig {
    /// How long a node may fail its health checks before it is `down`.
    pub grace: Duration,
    /// How often the leader compares health with the agreed states.
    pub check_interval: Duration,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            grace: Duration::from_secs(60),
            check_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no node {0}")]
    NoSuchNode(String),
    #[error("the control log refused the change: {0}")]
    Log(#[from] LogError),
    #[error("the change was appended but not applied within {0:?}; it will apply once the control log is read")]
    NotApplied(Duration),
}

/// Decides whether this instance leads the control log (health transitions).
pub type Leader = Arc<dyn Fn() -> bool + Send + Sync>;

pub struct ControlPlane {
    log: Arc<dyn Log>,
    table: RwLock<NodeTable>,
    registry: NodeRegistry,
    drivers: Arc<dyn DriverControl>,
    /// The control-log offset folded up to (the next one to read).
    applied: watch::Sender<u64>,
    leader: Leader,
    config: ControlConfig,
    shutdown: watch::Sender<bool>,
    /// Set once the log was read to its end at start: drivers start and stop from then on
    /// (a node registered and removed in the log's past never gets a driver).
    caught_up: std::sync::atomic::AtomicBool,
    /// The follower and leader tasks (awaited by [`ControlPlane::stop`]).
    tasks: parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl ControlPlane {
    /// Folds the whole control log (starting the drivers of the nodes it registers), registers
    /// the `configured` nodes it does not know yet, then follows the log and, where `leader`
    /// says so, publishes health transitions. Must run inside a Tokio runtime.
    pub async fn start(
        log: Arc<dyn Log>,
        registry: NodeRegistry,
        drivers: Arc<dyn DriverControl>,
        configured: Vec<NodeDescriptor>,
        leader: Leader,
        config: ControlConfig,
    ) -> Result<Arc<Self>, ControlError> {
        let start = log.start_offset(PARTITION);
        let plane = Arc::new(ControlPlane {
            log,
            table: RwLock::default(),
            registry,
            drivers,
            applied: watch::channel(start).0,
            leader,
            config,
            shutdown: watch::channel(false).0,
            tasks: parking_lot::Mutex::default(),
            caught_up: std::sync::atomic::AtomicBool::new(false),
        });
        // Catch up: read until the log has nothing more; then follow it (registrations below
        // wait until the follower has applied them).
        while plane.read_once().await? {}
        for record in plane.nodes() {
            plane
                .registry
                .set_state(&record.descriptor.id, agreed(&record));
            plane.start_driver(record.descriptor);
        }
        plane
            .caught_up
            .store(true, std::sync::atomic::Ordering::Release);
        // Subscribed before the tasks first run, so a stop that comes first is not missed.
        let follower = tokio::spawn(plane.clone().follow(plane.shutdown.subscribe()));
        plane.tasks.lock().push(follower);
        for node in configured {
            let known = plane
                .table
                .read()
                .get(&node.id)
                .map(|r| r.descriptor.clone());
            if known.as_ref() != Some(&node) {
                if let Err(error) = plane.register(node).await {
                    plane.stop().await;
                    return Err(error);
                }
            }
        }
        let leader = tokio::spawn(plane.clone().lead(plane.shutdown.subscribe()));
        plane.tasks.lock().push(leader);
        Ok(plane)
    }

    /// Every node and its agreed state.
    pub fn nodes(&self) -> Vec<NodeRecord> {
        self.table.read().records().cloned().collect()
    }

    pub fn node(&self, id: &str) -> Option<NodeRecord> {
        self.table.read().get(id).cloned()
    }

    /// Registers a node (or changes its description); returns once this instance applied it.
    pub async fn register(&self, node: NodeDescriptor) -> Result<(), ControlError> {
        let key = node.id.clone();
        self.publish(key, Event::NodeRegistered(node)).await
    }

    /// Drains the node (`true`) or takes it back into placement (`false`, state `up`).
    pub async fn set_draining(
        &self,
        id: &str,
        draining: bool,
        reason: &str,
    ) -> Result<(), ControlError> {
        if self.node(id).is_none() {
            return Err(ControlError::NoSuchNode(id.to_string()));
        }
        let state = if draining {
            NodeState::Draining
        } else {
            NodeState::Up
        };
        let event = Event::NodeStatusChanged {
            node: id.to_string(),
            state,
            reason: reason.to_string(),
        };
        self.publish(id.to_string(), event).await
    }

    /// Removes the node from the cluster: its driver stops on every instance.
    pub async fn remove(&self, id: &str, reason: &str) -> Result<(), ControlError> {
        if self.node(id).is_none() {
            return Err(ControlError::NoSuchNode(id.to_string()));
        }
        let event = Event::NodeRemoved {
            node: id.to_string(),
            reason: reason.to_string(),
        };
        self.publish(id.to_string(), event).await
    }

    /// Tells the follower and leader tasks to stop (they finish their current step).
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Stops the tasks and waits until they ended (they hold the control log).
    pub async fn stop(&self) {
        self.shutdown();
        let tasks: Vec<_> = self.tasks.lock().drain(..).collect();
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Appends a control event and waits until this instance has folded it in.
    async fn publish(&self, key: String, event: Event) -> Result<(), ControlError> {
        let positions = self
            .log
            .append(vec![Record::from_envelope(&Envelope::new(key, event))])
            .await?;
        let Some(position) = positions.first() else {
            return Ok(());
        };
        let mut applied = self.applied.subscribe();
        let offset = position.offset;
        let waited = tokio::time::timeout(APPLY_TIMEOUT, async move {
            applied.wait_for(|next| *next > offset).await.is_ok()
        })
        .await;
        match waited {
            Ok(true) => Ok(()),
            _ => Err(ControlError::NotApplied(APPLY_TIMEOUT)),
        }
    }

    /// Reads and folds what the log holds past the applied offset; false at the end.
    async fn read_once(&self) -> Result<bool, LogError> {
        let from = *self.applied.borrow();
        let records = self.log.read(PARTITION, from, READ_BYTES).await?;
        let Some(last) = records.last() else {
            return Ok(false);
        };
        let next = last.next_offset;
        for stored in records {
            let decoded = stored
                .record
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|record| {
                    codec::decode(record.content_type, &record.key, &record.value)
                        .map_err(|e| e.to_string())
                });
            match decoded {
                Ok(envelope) => self.apply(&envelope),
                // Only pinhive writes the control log: a record it cannot read is a bug or
                // damage, worth an error line, never a stop.
                Err(reason) => tracing::error!(
                    offset = stored.offset,
                    reason,
                    "unreadable control-log record skipped"
                ),
            }
        }
        self.applied.send_replace(next);
        Ok(true)
    }

    fn apply(&self, envelope: &Envelope) {
        let change = self
            .table
            .write()
            .apply(&envelope.event, envelope.timestamp_ns);
        let Some(change) = change else {
            return;
        };
        match change {
            NodeChange::Registered(node) => {
                tracing::info!(node = %node.id, region = %node.region, "ipfs node registered");
                if let Some(record) = self.node(&node.id) {
                    self.registry.set_state(&node.id, agreed(&record));
                }
                if self.caught_up() {
                    self.start_driver(node);
                }
            }
            NodeChange::State { node, from, to } => {
                let record = self.node(&node);
                let reason = record
                    .as_ref()
                    .map(|r| r.reason.clone())
                    .unwrap_or_default();
                tracing::warn!(node = %node, from = from.as_str(), to = to.as_str(), reason, "ipfs node state changed");
                if let Some(record) = record {
                    self.registry.set_state(&node, agreed(&record));
                }
                crate::metrics::METRICS
                    .node_transitions
                    .with_label_values(&[to.as_str()])
                    .inc();
            }
            NodeChange::Removed(node) => {
                tracing::warn!(node = %node, "ipfs node removed");
                if self.caught_up() {
                    self.drivers.stop(&node);
                }
                self.registry.forget_state(&node);
            }
        }
        self.publish_states();
    }

    fn caught_up(&self) -> bool {
        self.caught_up.load(std::sync::atomic::Ordering::Acquire)
    }

    fn start_driver(&self, node: NodeDescriptor) {
        if let Err(error) = self.drivers.start(node.clone()) {
            tracing::error!(node = %node.id, error, "could not start the node's driver");
        }
    }

    /// Mirrors the number of nodes per state into the gauge.
    fn publish_states(&self) {
        let table = self.table.read();
        for state in [
            NodeState::Up,
            NodeState::Degraded,
            NodeState::Down,
            NodeState::Draining,
        ] {
            let count = table.records().filter(|r| r.state == state).count();
            crate::metrics::METRICS
                .nodes
                .with_label_values(&[state.as_str()])
                .set(count as i64);
        }
    }

    /// Follows the control log for as long as the process runs.
    async fn follow(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            match self.read_once().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(error = %error, "could not read the control log; retrying")
                }
            }
            let from = *self.applied.borrow();
            tokio::select! {
                _ = self.log.wait_beyond(PARTITION, from, Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// The leader's loop: publishes the state changes the health rule asks for.
    async fn lead(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let rule = HealthRule {
            grace_ns: i64::try_from(self.config.grace.as_nanos()).unwrap_or(i64::MAX),
        };
        while !*shutdown.borrow() {
            tokio::select! {
                _ = tokio::time::sleep(self.config.check_interval) => {}
                _ = shutdown.changed() => return,
            }
            if !(self.leader)() {
                continue;
            }
            let now = pinhive_events::now_ns();
            let proposals: Vec<(String, NodeState, String)> = self
                .nodes()
                .iter()
                .filter_map(|record| {
                    let entry = self.registry.get(&record.descriptor.id)?;
                    // No verdict before the first health check.
                    if !entry.health.reachable
                        && entry.health.last_error.as_deref() == Some(NOT_CHECKED_YET)
                    {
                        return None;
                    }
                    let (state, reason) = transition(record, entry.health.passes(), now, rule)?;
                    let reason = match (&entry.health.last_error, state) {
                        (Some(error), NodeState::Degraded | NodeState::Down) => {
                            format!("{reason}: {error}")
                        }
                        _ => reason,
                    };
                    Some((record.descriptor.id.clone(), state, reason))
                })
                .collect();
            for (node, state, reason) in proposals {
                let event = Event::NodeStatusChanged {
                    node: node.clone(),
                    state,
                    reason,
                };
                if let Err(error) = self.publish(node.clone(), event).await {
                    tracing::warn!(node, error = %error, "could not publish a node state change");
                }
            }
        }
    }
}

fn agreed(record: &NodeRecord) -> AgreedState {
    AgreedState {
        state: record.state,
        since_ns: record.since_ns,
        reason: record.reason.clone(),
    }
}
