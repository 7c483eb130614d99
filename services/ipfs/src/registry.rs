//! The node registry: every configured node, its driver and its last observed health. Shared
//! read-mostly state; the drivers' health checks write it, shards read a snapshot to plan.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::Addr;
use parking_lot::RwLock;
use pinhive_domain::NodeView;
use pinhive_events::{NodeDescriptor, NodeId, NodeState};
use tokio::sync::watch;

use crate::breaker::BreakerState;
use crate::driver::NodeDriver;
use crate::NodeIdentity;

/// `last_error` of a node whose health has not been checked yet.
pub const NOT_CHECKED_YET: &str = "not checked yet";

/// Last observed health of a node.
#[derive(Clone, Debug)]
pub struct NodeHealth {
    pub reachable: bool,
    pub identity: Option<NodeIdentity>,
    pub free_bytes: Option<u64>,
    pub last_error: Option<String>,
    pub breaker: BreakerState,
    /// Commands accepted by the driver: running or queued.
    pub in_flight: usize,
    /// When the node last answered a health check (ns since the epoch).
    pub last_heartbeat_ns: Option<i64>,
    /// Share of the driver's RPC attempts that failed since the previous health check
    /// (`None`: no attempt in that interval).
    pub error_rate: Option<f64>,
}

impl NodeHealth {
    /// Passes its health checks: reachable, and its circuit breaker not open.
    pub fn passes(&self) -> bool {
        self.reachable && self.breaker != BreakerState::Open
    }
}

impl Default for NodeHealth {
    fn default() -> Self {
        NodeHealth {
            reachable: false,
            identity: None,
            free_bytes: None,
            last_error: Some(NOT_CHECKED_YET.into()),
            breaker: BreakerState::Closed,
            in_flight: 0,
            last_heartbeat_ns: None,
            error_rate: None,
        }
    }
}

#[derive(Clone)]
pub struct NodeEntry {
    pub descriptor: NodeDescriptor,
    pub health: NodeHealth,
    pub driver: Addr<NodeDriver>,
    /// The node's RPC client, for reads outside the driver's command queue (anti-entropy's
    /// listings and point checks).
    pub api: Arc<dyn crate::IpfsApi>,
    /// The state every instance agrees on (the control log's).
    pub state: AgreedState,
}

/// A node's lifecycle state as folded from the control log.
#[derive(Clone, Debug, PartialEq)]
pub struct AgreedState {
    pub state: NodeState,
    /// When it entered `state` (ns since the epoch).
    pub since_ns: i64,
    pub reason: String,
}

impl Default for AgreedState {
    fn default() -> Self {
        AgreedState {
            state: NodeState::Up,
            since_ns: 0,
            reason: "registered".into(),
        }
    }
}

/// Cheap to clone. `changes()` ticks whenever a node joins, leaves or changes health or
/// state, so shards re-plan their pending CIDs (e.g. pins queued while no node was reachable)
/// and walk the replicas of nodes that went down or drain.
#[derive(Clone)]
pub struct NodeRegistry {
    nodes: Arc<RwLock<BTreeMap<NodeId, NodeEntry>>>,
    /// Agreed states, kept apart from the entries: the control log may name a node's state
    /// before its driver has registered (drivers start on their own thread).
    states: Arc<RwLock<BTreeMap<NodeId, AgreedState>>>,
    version: Arc<watch::Sender<u64>>,
}

impl Default for NodeRegistry {
    fn default() -> Self {
        NodeRegistry {
            nodes: Arc::default(),
            states: Arc::default(),
            version: Arc::new(watch::channel(0).0),
        }
    }
}

impl NodeRegistry {
    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    pub fn insert(
        &self,
        descriptor: NodeDescriptor,
        driver: Addr<NodeDriver>,
        api: Arc<dyn crate::IpfsApi>,
    ) {
        let state = self
            .states
            .read()
            .get(&descriptor.id)
            .cloned()
            .unwrap_or_default();
        self.nodes.write().insert(
            descriptor.id.clone(),
            NodeEntry {
                descriptor,
                health: NodeHealth::default(),
                driver,
                api,
                state,
            },
        );
        self.bump();
    }

    pub fn remove(&self, id: &str) -> Option<NodeEntry> {
        let removed = self.nodes.write().remove(id);
        self.bump();
        removed
    }

    /// Records a node's agreed state (from the control log); ticks `changes()` if it changed.
    pub fn set_state(&self, id: &str, state: AgreedState) {
        let changed = self.states.read().get(id).map(|s| s.state) != Some(state.state);
        self.states.write().insert(id.to_string(), state.clone());
        if let Some(entry) = self.nodes.write().get_mut(id) {
            entry.state = state;
        }
        if changed {
            self.bump();
        }
    }

    /// Forgets a removed node's agreed state.
    pub fn forget_state(&self, id: &str) {
        self.states.write().remove(id);
    }

    /// Updates a node's health; ticks `changes()` only when placement-relevant facts change.
    pub fn update_health(&self, id: &str, update: impl FnOnce(&mut NodeHealth)) {
        let mut nodes = self.nodes.write();
        let Some(entry) = nodes.get_mut(id) else {
            return;
        };
        let unchecked = |h: &NodeHealth| h.last_error.as_deref() == Some(NOT_CHECKED_YET);
        let before = (
            entry.health.reachable,
            entry.health.breaker,
            unchecked(&entry.health),
        );
        update(&mut entry.health);
        let after = (
            entry.health.reachable,
            entry.health.breaker,
            unchecked(&entry.health),
        );
        drop(nodes);
        if before != after {
            self.bump();
        }
    }

    pub fn get(&self, id: &str) -> Option<NodeEntry> {
        self.nodes.read().get(id).cloned()
    }

    pub fn entries(&self) -> Vec<NodeEntry> {
        self.nodes.read().values().cloned().collect()
    }

    /// Runs `read` over the entries without copying them (hot paths).
    pub fn with_entries<R>(
        &self,
        read: impl FnOnce(&mut dyn Iterator<Item = &NodeEntry>) -> R,
    ) -> R {
        let nodes = self.nodes.read();
        read(&mut nodes.values())
    }

    pub fn changes(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// The allocator's view: a node takes new replicas when its agreed state is `up`, this
    /// instance reaches it and its breaker is not open.
    pub fn views(&self) -> Vec<NodeView> {
        self.nodes
            .read()
            .values()
            .map(|entry| NodeView {
                id: entry.descriptor.id.clone(),
                region: entry.descriptor.region.clone(),
                weight: entry.descriptor.weight,
                healthy: entry.state.state == NodeState::Up && entry.health.passes(),
                free_bytes: entry.health.free_bytes,
                state: entry.state.state,
            })
            .collect()
    }

    /// Each node's last known multiaddrs (from its `id`), for the pins' `delegates`.
    pub fn addresses(&self) -> std::collections::HashMap<NodeId, Vec<String>> {
        self.nodes
            .read()
            .values()
            .filter_map(|entry| {
                let identity = entry.health.identity.as_ref()?;
                Some((entry.descriptor.id.clone(), identity.addresses.clone()))
            })
            .collect()
    }

    /// Waits (at most `timeout`) until every node has had its first health check, so the API
    /// knows the nodes' addresses (the pins' `delegates`) before it serves its first request.
    /// `ids` are the nodes to wait for (their drivers may not have registered yet).
    pub async fn wait_first_checks(&self, ids: &[NodeId], timeout: std::time::Duration) -> bool {
        let checked = |registry: &Self| {
            let nodes = registry.nodes.read();
            ids.iter().all(|id| {
                nodes.get(id).is_some_and(|entry| {
                    entry.health.reachable
                        || entry.health.last_error.as_deref() != Some(NOT_CHECKED_YET)
                })
            })
        };
        let mut changes = self.changes();
        let wait = async {
            while !checked(self) {
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok() && checked(self)
    }

    pub fn reachable_count(&self) -> usize {
        self.nodes
            .read()
            .values()
            .filter(|e| e.health.reachable)
            .count()
    }
}
