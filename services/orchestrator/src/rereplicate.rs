//! Node walks: when a node goes `down`, starts draining or comes back, each partition walks
//! the node's index (the CIDs it holds a replica of, `Store::node_cids`) and re-plans them —
//! most endangered first, at a bounded rate.
//!
//! * Passes by urgency: a walk of a down node first plans the CIDs left with no counting
//!   replica, then those below their pins' minimum, then the rest below their target; a
//!   draining node's walk adds a last pass over every CID (those already at their target only
//!   need the draining replica unpinned). A node that came back after being down or draining
//!   gets one pass over every CID (its replicas may now be surplus). Each pass is one walk of
//!   the index; memory is one page of CIDs, whatever the node holds.
//! * Rate: every replica a walk allocates waits for a permit of the instance's limiter and of
//!   the destination node's (`rereplication_rate`, `rereplication_rate_per_node`, replicas per
//!   second, no burst), and is appended on its own: the allocation events are spaced by the
//!   caps. Pins and unpins a walk plans are not limited (unpins free space; pins follow the
//!   allocations already paced).
//! * A walk restarts from the beginning when the node's state changes under it, and after a
//!   restart of the process (it is not persisted: CIDs already repaired cost one read each).
//!
//! The ordering is per partition: partitions walk in parallel, sharing the limiters.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use pinhive_domain::Urgency;
use pinhive_events::NodeState;
use pinhive_store::{NodeCidCursor, StoreError};
use tokio::sync::watch;

use crate::consumer::Orchestrator;
use crate::metrics::METRICS;
use crate::shard::{PlannedAction, WalkNode};
use pinhive_domain::Action;

/// The limiters every node walk of the instance shares.
pub struct Rates {
    global: Option<DefaultDirectRateLimiter>,
    per_node: Option<DefaultKeyedRateLimiter<String>>,
}

impl Rates {
    /// `global` and `per_node` replicas per second; 0 lifts the cap.
    pub fn new(global: u32, per_node: u32) -> Self {
        let quota = |rate: u32| {
            NonZeroU32::new(rate).map(|r| Quota::per_second(r).allow_burst(NonZeroU32::MIN))
        };
        Rates {
            global: quota(global).map(RateLimiter::direct),
            per_node: quota(per_node).map(RateLimiter::keyed),
        }
    }

    /// Waits for a permit to allocate one replica on `node`.
    async fn acquire(&self, node: &str) {
        if let Some(per_node) = &self.per_node {
            per_node.until_key_ready(&node.to_string()).await;
        }
        if let Some(global) = &self.global {
            global.until_ready().await;
        }
    }
}

/// What a walk is for: the node's agreed state when it started, and since when.
#[derive(Clone, Debug, PartialEq, Eq)]
struct WalkKey {
    state: NodeState,
    since_ns: i64,
}

/// The passes of a walk for a node in `state`; `returned`: it was down or draining when last
/// walked.
fn passes(state: NodeState, returned: bool) -> &'static [Urgency] {
    match state {
        NodeState::Down => &[Urgency::NoReplica, Urgency::BelowMin, Urgency::BelowTarget],
        NodeState::Draining => &[
            Urgency::NoReplica,
            Urgency::BelowMin,
            Urgency::BelowTarget,
            Urgency::Met,
        ],
        NodeState::Up if returned => &[Urgency::Met],
        _ => &[],
    }
}

enum Walked {
    Done,
    /// The node's state changed, or it left: look again.
    Changed,
    Stopped,
    /// An error ended it (logged): it runs again next round.
    Failed,
}

impl Orchestrator {
    /// The node-walk loop of one partition (runs beside its consumer and repair loop).
    pub(crate) async fn walk_nodes(self: Arc<Self>, partition: u32, stop: watch::Receiver<bool>) {
        let mut changes = self.registry.changes();
        let mut shutdown = self.shutdown.subscribe();
        // The last completed walk per node.
        let mut walked: HashMap<String, WalkKey> = HashMap::new();
        // Nodes whose join this partition has rebalanced to (or that were there when it
        // started: a restart moves nothing).
        let mut joined: HashSet<String> = self
            .registry
            .entries()
            .into_iter()
            .map(|e| e.descriptor.id)
            .collect();
        loop {
            let due: Vec<(String, WalkKey, bool)> = self
                .registry
                .entries()
                .into_iter()
                .filter_map(|entry| {
                    let key = WalkKey {
                        state: entry.state.state,
                        since_ns: entry.state.since_ns,
                    };
                    let last = walked.get(&entry.descriptor.id);
                    if last == Some(&key) {
                        return None;
                    }
                    let returned = last.is_some_and(|last| {
                        matches!(last.state, NodeState::Down | NodeState::Draining)
                    });
                    (!passes(key.state, returned).is_empty())
                        .then(|| (entry.descriptor.id.clone(), key, returned))
                })
                .collect();
            for (node, key, returned) in due {
                let outcome = self.walk(partition, &node, &key, returned, &stop);
                match self
                    .settled(partition, &node, "node walk", outcome, &stop)
                    .await
                {
                    None => return,
                    Some(Walked::Done) => {
                        tracing::info!(
                            partition,
                            node,
                            state = key.state.as_str(),
                            "node walk complete"
                        );
                        walked.insert(node, key);
                    }
                    Some(_) => {}
                }
            }
            // A node that joined is rebalanced to once it takes replicas (agreed `up`, and
            // this instance reaches it); one that is not up yet waits for the next round.
            let joiners: Vec<String> = self
                .registry
                .views()
                .into_iter()
                .filter(|view| view.healthy && !joined.contains(&view.id))
                .map(|view| view.id)
                .collect();
            for node in joiners {
                let outcome = self.rebalance(partition, &node, &stop);
                match self
                    .settled(partition, &node, "rebalance walk", outcome, &stop)
                    .await
                {
                    None => return,
                    // Done, or not up any more (no destination; if it comes back up later, it
                    // is a node that returned, not one that joined).
                    Some(walked @ (Walked::Done | Walked::Changed)) => {
                        if matches!(walked, Walked::Done) {
                            tracing::info!(
                                partition,
                                node,
                                "rebalance to the joined node complete"
                            );
                        }
                        joined.insert(node);
                    }
                    Some(Walked::Failed | Walked::Stopped) => {}
                }
            }
            // Nodes that left are forgotten (a node registered again under the same id is new).
            walked.retain(|node, _| self.registry.get(node).is_some());
            joined.retain(|node| self.registry.get(node).is_some());
            tokio::select! {
                _ = tokio::time::sleep(self.config.repair_interval) => {}
                changed = changes.changed() => {
                    if changed.is_err() { return; }
                }
                _ = shutdown.changed() => return,
                _ = stop_changed(&stop) => return,
            }
            if self.stopping() || *stop.borrow() {
                return;
            }
        }
    }

    /// Runs one walk, counted in `pinhive_node_walks_active`: `None` when the partition's walks
    /// must end (stopped, or fenced), else the walk's outcome (`Failed`: logged here).
    async fn settled(
        &self,
        partition: u32,
        node: &str,
        what: &str,
        walk: impl std::future::Future<Output = Result<Walked, StoreError>>,
        stop: &watch::Receiver<bool>,
    ) -> Option<Walked> {
        let active = METRICS.node_walks_active.with_label_values::<&str>(&[]);
        active.inc();
        let outcome = walk.await;
        active.dec();
        match outcome {
            Ok(Walked::Stopped) => None,
            Ok(walked) => Some(walked),
            Err(error @ StoreError::Fenced { .. }) => {
                self.give_up_fenced(partition, stop, &error);
                None
            }
            Err(error) => {
                tracing::warn!(partition, node, error = %error, "{what} failed; retrying later");
                Some(Walked::Failed)
            }
        }
    }

    /// Walks `node`'s index on `partition`, pass by pass.
    async fn walk(
        &self,
        partition: u32,
        node: &str,
        key: &WalkKey,
        returned: bool,
        stop: &watch::Receiver<bool>,
    ) -> Result<Walked, StoreError> {
        let unchanged = || {
            self.registry.get(node).map(|e| WalkKey {
                state: e.state.state,
                since_ns: e.state.since_ns,
            }) == Some(key.clone())
        };
        for &urgency in passes(key.state, returned) {
            let walked = self
                .walk_index(partition, node, urgency, None, &unchanged, stop)
                .await?;
            if !matches!(walked, Walked::Done) {
                return Ok(walked);
            }
        }
        Ok(Walked::Done)
    }

    /// Moves replicas to `joined` (a node that joined while this partition ran): walks the
    /// index of every other node whose replicas count, once, planning the allocations
    /// [`pinhive_domain::rebalance::source`] asks for (each at the paced rate). Stops when
    /// `joined` is no longer `up` (its walk is then over: a node that goes down is not a
    /// destination).
    async fn rebalance(
        &self,
        partition: u32,
        joined: &str,
        stop: &watch::Receiver<bool>,
    ) -> Result<Walked, StoreError> {
        let still_up = || {
            self.registry
                .get(joined)
                .is_some_and(|e| e.state.state == NodeState::Up)
        };
        let sources: Vec<String> = self
            .registry
            .entries()
            .into_iter()
            .filter(|e| e.descriptor.id != joined && e.state.state.holds_replicas())
            .map(|e| e.descriptor.id)
            .collect();
        for source in sources {
            let joined = Some(joined.to_string());
            let walked = self
                .walk_index(partition, &source, Urgency::Met, joined, &still_up, stop)
                .await?;
            if !matches!(walked, Walked::Done) {
                return Ok(walked);
            }
        }
        Ok(Walked::Done)
    }

    /// One pass over `node`'s index on `partition`, page by page, while `valid` holds.
    async fn walk_index(
        &self,
        partition: u32,
        node: &str,
        urgency: Urgency,
        rebalance_to: Option<String>,
        valid: &dyn Fn() -> bool,
        stop: &watch::Receiver<bool>,
    ) -> Result<Walked, StoreError> {
        let shard = self.shards[partition as usize].clone();
        let mut cursor = NodeCidCursor::default();
        loop {
            if self.stopping() || *stop.borrow() {
                return Ok(Walked::Stopped);
            }
            if !valid() {
                return Ok(Walked::Changed);
            }
            let (cids, next) = self.node_cids_page(node, partition, &cursor).await?;
            if !cids.is_empty() {
                METRICS
                    .mailbox_depth
                    .with_label_values(&[&partition.to_string()])
                    .inc();
                let step = shard
                    .send(WalkNode {
                        node: node.to_string(),
                        cids,
                        urgency,
                        rebalance_to: rebalance_to.clone(),
                    })
                    .await
                    .map_err(|e| StoreError::Backend(e.to_string()))??;
                for (result, count) in [
                    ("planned", step.planned),
                    ("skipped", step.skipped),
                    ("stray", step.stray),
                ] {
                    METRICS
                        .node_walk_cids
                        .with_label_values(&[result])
                        .inc_by(count as u64);
                }
                let label = if rebalance_to.is_some() {
                    "rebalance"
                } else {
                    urgency.as_str()
                };
                if !self.execute_paced(step.actions, label).await {
                    // The walk owns the allocations it planned (the CIDs are not pending
                    // for them): walk again rather than leave one behind.
                    return Err(StoreError::Backend(
                        "an allocation could not be appended to the log".into(),
                    ));
                }
            }
            match next {
                Some(next) => cursor = next,
                None => return Ok(Walked::Done),
            }
        }
    }

    /// One page (`repair_page` CIDs) of `node`'s index on `partition`, and where to go on.
    pub(crate) async fn node_cids_page(
        &self,
        node: &str,
        partition: u32,
        from: &NodeCidCursor,
    ) -> Result<(Vec<String>, Option<NodeCidCursor>), StoreError> {
        let store = self.store.clone();
        let (id, from, page) = (node.to_string(), from.clone(), self.config.repair_page);
        tokio::task::spawn_blocking(move || store.node_cids(&id, partition, &from, page))
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?
    }

    /// Carries out a walk's actions, each allocation after its permits (see the module docs).
    /// False if an append failed.
    async fn execute_paced(&self, actions: Vec<PlannedAction>, label: &str) -> bool {
        let mut rest = Vec::new();
        let mut appended = true;
        for planned in actions {
            let Action::Allocate { nodes, .. } = &planned.action else {
                rest.push(planned);
                continue;
            };
            for node in nodes {
                self.rates.acquire(node).await;
            }
            METRICS
                .rereplicated
                .with_label_values(&[label])
                .inc_by(nodes.len() as u64);
            appended &= self.execute(vec![planned]).await;
        }
        self.execute(rest).await && appended
    }
}

/// Resolves when the partition is told to stop.
async fn stop_changed(stop: &watch::Receiver<bool>) {
    let mut stop = stop.clone();
    let _ = stop.changed().await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn walks_are_most_endangered_first() {
        assert_eq!(
            passes(NodeState::Down, false),
            &[Urgency::NoReplica, Urgency::BelowMin, Urgency::BelowTarget]
        );
        assert_eq!(
            passes(NodeState::Draining, false).last(),
            Some(&Urgency::Met)
        );
        assert!(passes(NodeState::Up, false).is_empty());
        assert!(passes(NodeState::Degraded, true).is_empty());
        assert_eq!(passes(NodeState::Up, true), &[Urgency::Met]);
    }

    #[tokio::test]
    async fn the_limiters_space_allocations() {
        let rates = Rates::new(20, 0);
        let started = tokio::time::Instant::now();
        for _ in 0..5 {
            rates.acquire("n1").await;
        }
        // Five permits at 20/s without burst: at least four gaps of 50 ms.
        assert!(started.elapsed() >= Duration::from_millis(190));
        let unlimited = Rates::new(0, 0);
        let started = tokio::time::Instant::now();
        for _ in 0..1000 {
            unlimited.acquire("n1").await;
        }
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
