//! Node driver actor: one per IPFS node.
//!
//! Receives [`NodeCommand`]s from shards, runs at most `concurrency` RPCs at once — shared
//! fairly between the owners the commands are for ([`crate::fair`]: per-owner queues,
//! max-min fair shares, a reserve for owners below their share) —, retries
//! retryable errors with exponential backoff and jitter, stops calling a failing node while its
//! circuit breaker is open, and publishes every final outcome as an event into the log. A
//! command it cannot take (queue full, breaker open, duplicate of one in flight) is dropped:
//! the shard's repair loop plans it again from state, so nothing is lost.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use backon::{ExponentialBuilder, Retryable};
use parking_lot::Mutex;
use pinhive_events::{Envelope, Event, NodeDescriptor};
use tracing::Instrument;

use crate::breaker::{Breaker, BreakerState};
use crate::metrics::{observe, METRICS};
use crate::registry::NodeRegistry;
use crate::{IpfsApi, IpfsError, OutcomeSink};

#[derive(Clone, Debug)]
pub struct NodeDriverConfig {
    /// RPCs in flight per node.
    pub concurrency: usize,
    /// Commands accepted (running or queued) before new ones are dropped.
    pub max_queued: usize,
    /// Slots only owners below their fair share may take (`None`: a quarter of
    /// `concurrency`); see [`crate::fair`].
    pub reserved_slots: Option<usize>,
    /// Commands one owner may have accepted (`None`: a quarter of `max_queued`).
    pub max_queued_per_owner: Option<usize>,
    /// How long a node searches for content in one `pin/add`.
    pub pin_timeout: Duration,
    /// Attempts per command (first try included).
    pub attempts: usize,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    pub breaker_threshold: u32,
    pub breaker_cooldown: Duration,
    pub health_interval: Duration,
}

impl Default for NodeDriverConfig {
    fn default() -> Self {
        NodeDriverConfig {
            concurrency: 32,
            max_queued: 4096,
            reserved_slots: None,
            max_queued_per_owner: None,
            pin_timeout: Duration::from_secs(60),
            attempts: 4,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(15),
            health_interval: Duration::from_secs(5),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NodeOp {
    Pin { origins: Vec<String> },
    Unpin,
}

/// Sent by a shard (with `try_send`, so a full mailbox pushes back instead of growing) when its
/// plan says this node must pin or unpin `cid`.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct NodeCommand {
    pub cid: String,
    pub op: NodeOp,
    pub traceparent: Option<String>,
    /// Whose pin this serves, for the fair share of the node's slots (the owner of the CID's
    /// oldest pin); `None` (unpins, or no pin left) shares one queue.
    pub owner: Option<String>,
}

/// The fair-share queue of commands without an owner.
const NO_OWNER: &str = "#none";

impl NodeDriverConfig {
    /// The fair queue's shape.
    pub fn fair_limits(&self) -> crate::fair::FairLimits {
        let defaults = crate::fair::FairLimits::new(self.concurrency, self.max_queued);
        crate::fair::FairLimits {
            reserved: self.reserved_slots.unwrap_or(defaults.reserved),
            max_per_owner: self
                .max_queued_per_owner
                .unwrap_or(defaults.max_per_owner)
                .max(1),
            ..defaults
        }
    }
}

/// Asks the driver to check the node now (sent by its own timer).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CheckHealth;

pub struct NodeDriver {
    descriptor: NodeDescriptor,
    /// Shared with every command in flight (one `Arc` clone per command).
    work: Arc<Work>,
    /// Commands accepted (running or queued), for refusing duplicates and bounding the queue.
    in_flight: Arc<Mutex<HashSet<(String, bool)>>>,
    /// Accepted commands, per owner, waiting for one of the `concurrency` running slots (and
    /// the count of those running). A waiting command is its data only (a few hundred bytes),
    /// not a suspended future.
    queue: crate::fair::FairQueue<NodeCommand>,
    /// RPC attempts and failures counted at the previous health check (for its error rate).
    counted: (u64, u64),
}

impl NodeDriver {
    pub fn new(
        descriptor: NodeDescriptor,
        api: Arc<dyn IpfsApi>,
        sink: Arc<dyn OutcomeSink>,
        registry: NodeRegistry,
        config: NodeDriverConfig,
    ) -> Self {
        let queue = crate::fair::FairQueue::new(config.fair_limits());
        NodeDriver {
            work: Arc::new(Work {
                node: descriptor.id.clone(),
                breaker: Arc::new(Mutex::new(Breaker::new(
                    config.breaker_threshold,
                    config.breaker_cooldown,
                ))),
                api,
                sink,
                registry,
                config,
                rpc_attempts: AtomicU64::new(0),
                rpc_failures: AtomicU64::new(0),
            }),
            in_flight: Arc::default(),
            queue,
            counted: (0, 0),
            descriptor,
        }
    }

    /// Starts queued commands while a slot is free for one (see [`crate::fair`]).
    fn pump(&mut self, ctx: &mut Context<Self>) {
        while let Some((owner, command)) = self.queue.start_next() {
            let key = command_key(&command);
            let work = self.work.clone();
            let in_flight = self.in_flight.clone();
            ctx.spawn(
                async move {
                    work.run(command).await;
                    in_flight.lock().remove(&key);
                }
                .into_actor(self)
                .map(move |_, driver, ctx| {
                    driver.queue.done(&owner);
                    driver.pump(ctx);
                }),
            );
        }
    }

    /// Starts the driver and registers it.
    pub fn spawn(self) -> Addr<NodeDriver> {
        let descriptor = self.descriptor.clone();
        let registry = self.work.registry.clone();
        let api = self.work.api.clone();
        let addr = self.start();
        registry.insert(descriptor, addr.clone(), api);
        addr
    }
}

impl Actor for NodeDriver {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.work.config.max_queued);
        // Export this node's series from the start (zero), not only after a first event.
        let node = self.descriptor.id.as_str();
        METRICS.retries.with_label_values(&[node]);
        METRICS
            .dropped_commands
            .with_label_values(&[node, "queue_full"]);
        METRICS
            .rpc_errors
            .with_label_values(&[node, "pin/add", "timed_out"]);
        METRICS
            .outcomes
            .with_label_values(&[node, "replica_pinned"]);
        ctx.notify(CheckHealth);
        ctx.run_interval(self.work.config.health_interval, |_, ctx| {
            ctx.notify(CheckHealth)
        });
    }
}

impl Handler<CheckHealth> for NodeDriver {
    type Result = ();

    fn handle(&mut self, _: CheckHealth, ctx: &mut Self::Context) {
        // Health checks are traces of their own.
        let span = tracing::info_span!("ipfs.health_check", node = %self.descriptor.id);
        let api = self.work.api.clone();
        let registry = self.work.registry.clone();
        let id = self.descriptor.id.clone();
        let breaker = self.work.breaker.clone();
        let in_flight = self.in_flight.clone();
        let counts = (
            self.work.rpc_attempts.load(Ordering::Relaxed),
            self.work.rpc_failures.load(Ordering::Relaxed),
        );
        let (attempts, failures) = (
            counts.0.saturating_sub(self.counted.0),
            counts.1.saturating_sub(self.counted.1),
        );
        self.counted = counts;
        let node = self.descriptor.id.as_str();
        METRICS
            .running
            .with_label_values(&[node])
            .set(i64::try_from(self.queue.running()).unwrap_or(i64::MAX));
        METRICS
            .queue_owners
            .with_label_values(&[node])
            .set(i64::try_from(self.queue.owners()).unwrap_or(i64::MAX));
        let error_rate = (attempts > 0).then(|| failures as f64 / attempts as f64);
        ctx.spawn(
            async move {
                let identity = observe(&id, "id", api.id()).await;
                let stat = match &identity {
                    Ok(_) => observe(&id, "repo/stat", api.repo_stat()).await.ok(),
                    Err(_) => None,
                };
                let now = Instant::now();
                let breaker_state = {
                    let mut breaker = breaker.lock();
                    // A successful health check is evidence the node is back.
                    if identity.is_ok() {
                        breaker.on_success();
                    }
                    breaker.state(now)
                };
                let in_flight = in_flight.lock().len();
                registry.update_health(&id, |health| {
                    let was_reachable = health.reachable;
                    match identity {
                        Ok(identity) => {
                            health.reachable = true;
                            health.identity = Some(identity);
                            health.last_error = None;
                            health.last_heartbeat_ns = Some(pinhive_events::now_ns());
                            if !was_reachable {
                                tracing::info!(node = %id, "ipfs node reachable");
                            }
                        }
                        Err(error) => {
                            health.reachable = false;
                            if was_reachable
                                || health.last_error.as_deref()
                                    == Some(crate::registry::NOT_CHECKED_YET)
                            {
                                tracing::warn!(node = %id, error = %error, "ipfs node unreachable");
                            }
                            health.last_error = Some(error.to_string());
                        }
                    }
                    if let Some(stat) = stat {
                        // js-ipfs reports StorageMax 0 when unlimited: treat as unknown.
                        health.free_bytes = (stat.storage_max > 0).then(|| stat.free_bytes());
                    }
                    health.breaker = breaker_state;
                    health.in_flight = in_flight;
                    health.error_rate = error_rate;
                    let metrics = &METRICS;
                    metrics
                        .node_up
                        .with_label_values(&[&id])
                        .set(i64::from(health.reachable));
                    metrics
                        .breaker_state
                        .with_label_values(&[&id])
                        .set(match breaker_state {
                            BreakerState::Closed => 0,
                            BreakerState::HalfOpen => 1,
                            BreakerState::Open => 2,
                        });
                    metrics
                        .in_flight
                        .with_label_values(&[&id])
                        .set(in_flight as i64);
                    if let Some(free) = health.free_bytes {
                        metrics
                            .free_bytes
                            .with_label_values(&[&id])
                            .set(i64::try_from(free).unwrap_or(i64::MAX));
                    }
                });
            }
            .instrument(span)
            .into_actor(self),
        );
    }
}

impl Handler<NodeCommand> for NodeDriver {
    type Result = ();

    fn handle(&mut self, command: NodeCommand, ctx: &mut Self::Context) {
        let key = command_key(&command);
        {
            let mut in_flight = self.in_flight.lock();
            let refused = if in_flight.contains(&key) {
                Some("duplicate")
            } else if in_flight.len() >= self.work.config.max_queued {
                Some("queue_full")
            } else if !self.work.breaker.lock().allow(Instant::now()) {
                Some("breaker_open")
            } else {
                None
            };
            if let Some(reason) = refused {
                METRICS
                    .dropped_commands
                    .with_label_values(&[&self.descriptor.id, reason])
                    .inc();
                return;
            }
            let owner = command.owner.clone();
            if let Err(refused) = self
                .queue
                .push(owner.as_deref().unwrap_or(NO_OWNER), command)
            {
                METRICS
                    .dropped_commands
                    .with_label_values(&[&self.descriptor.id, refused.as_str()])
                    .inc();
                return;
            }
            in_flight.insert(key);
        }
        self.pump(ctx);
    }
}

/// Identity of a command for duplicate detection: the CID and whether it pins.
fn command_key(command: &NodeCommand) -> (String, bool) {
    (
        command.cid.clone(),
        matches!(command.op, NodeOp::Pin { .. }),
    )
}

/// Everything one command needs, detached from the actor so it runs as a plain future.
struct Work {
    node: String,
    api: Arc<dyn IpfsApi>,
    sink: Arc<dyn OutcomeSink>,
    registry: NodeRegistry,
    config: NodeDriverConfig,
    breaker: Arc<Mutex<Breaker>>,
    /// Every RPC attempt of a command, and those that failed (the node's error rate).
    rpc_attempts: AtomicU64,
    rpc_failures: AtomicU64,
}

impl Work {
    async fn run(self: Arc<Self>, command: NodeCommand) {
        let op = match command.op {
            NodeOp::Pin { .. } => "pin",
            NodeOp::Unpin => "unpin",
        };
        let sampled = command
            .traceparent
            .as_deref()
            .is_some_and(pinhive_telemetry::is_sampled);
        if !sampled {
            // Unsampled (or untraced) commands carry the context on, but create no spans.
            return self.run_traced(command).await;
        }
        let span = tracing::info_span!(
            "ipfs.command",
            otel.name = %format!("ipfs {op}"),
            node = %self.node,
            cid = %command.cid,
            attempts = tracing::field::Empty,
            outcome = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        pinhive_telemetry::continue_trace(&span, command.traceparent.as_deref());
        pinhive_telemetry::record_trace_id(&span);
        self.run_traced(command).instrument(span).await;
    }

    async fn run_traced(&self, command: NodeCommand) {
        let started = Instant::now();
        let attempts = AtomicU32::new(0);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.config.min_backoff)
            .with_max_delay(self.config.max_backoff)
            .with_max_times(self.config.attempts.saturating_sub(1))
            .with_jitter();
        let result = (|| async {
            attempts.fetch_add(1, Ordering::Relaxed);
            self.rpc_attempts.fetch_add(1, Ordering::Relaxed);
            let outcome = self.attempt(&command).await;
            if outcome.is_err() {
                self.rpc_failures.fetch_add(1, Ordering::Relaxed);
            }
            let mut breaker = self.breaker.lock();
            match &outcome {
                Err(error) if error.is_node_failure() => breaker.on_failure(Instant::now()),
                _ => breaker.on_success(),
            }
            outcome
        })
        .retry(backoff)
        .when(IpfsError::is_retryable)
        .notify(|error, delay| {
            METRICS.retries.with_label_values(&[&self.node]).inc();
            tracing::warn!(node = %self.node, cid = %command.cid, error = %error, retry_in_ms = delay.as_millis() as u64, "ipfs call failed, retrying");
        })
        .await;
        let attempts = attempts.load(Ordering::Relaxed);
        tracing::Span::current().record("attempts", attempts);
        let event = match (&command.op, result) {
            (NodeOp::Pin { .. }, Ok(())) => Event::ReplicaPinned {
                node: self.node.clone(),
                delegates: self
                    .registry
                    .get(&self.node)
                    .and_then(|e| e.health.identity)
                    .map(|i| i.addresses)
                    .unwrap_or_default(),
                attempts,
                duration_ms: started.elapsed().as_millis() as u64,
            },
            (NodeOp::Pin { .. }, Err(error)) => {
                if !self.breaker_open() || !error.is_node_failure() {
                    Event::ReplicaFailed {
                        node: self.node.clone(),
                        reason: error.to_string(),
                        attempts,
                    }
                } else {
                    // The node itself is down: no verdict on the content; repair retries.
                    return;
                }
            }
            (NodeOp::Unpin, Ok(())) => Event::ReplicaUnpinned {
                node: self.node.clone(),
            },
            (NodeOp::Unpin, Err(error)) => {
                tracing::warn!(node = %self.node, cid = %command.cid, error = %error, "unpin failed; repair will retry");
                return;
            }
        };
        METRICS
            .outcomes
            .with_label_values(&[&self.node, event.kind()])
            .inc();
        tracing::Span::current().record("outcome", event.kind());
        let mut envelope = Envelope::new(command.cid.clone(), event);
        // The outcome continues this command's trace.
        envelope.traceparent = pinhive_telemetry::current_traceparent().or(command.traceparent);
        if let Err(error) = self.sink.publish(envelope).await {
            tracing::warn!(node = %self.node, cid = %command.cid, error = %error, "could not publish outcome; repair will redo the call");
        }
    }

    fn breaker_open(&self) -> bool {
        self.breaker.lock().state(Instant::now()) != crate::breaker::BreakerState::Closed
    }

    async fn attempt(&self, command: &NodeCommand) -> Result<(), IpfsError> {
        // Failpoint (tests only): the node is unreachable for this attempt.
        fail::fail_point!("ipfs::rpc", |_| Err(IpfsError::Unreachable(
            "injected fault at ipfs::rpc".into()
        )));
        match &command.op {
            NodeOp::Pin { origins } => {
                // Best effort, all at once (at most 20, each bounded by the RPC's own timeout):
                // a provider that cannot be dialled is not an error.
                let connects = origins.iter().map(|origin| async move {
                    let connect = self.api.swarm_connect(origin);
                    if let Err(error) = observe(&self.node, "swarm/connect", connect).await {
                        tracing::debug!(node = %self.node, origin = %origin, error = %error, "swarm connect to origin failed");
                    }
                });
                futures::future::join_all(connects).await;
                let pin = self.api.pin_add(&command.cid, self.config.pin_timeout);
                observe(&self.node, "pin/add", pin).await
            }
            NodeOp::Unpin => observe(&self.node, "pin/rm", self.api.pin_rm(&command.cid)).await,
        }
    }
}

/// Stops the driver (node removed); commands in flight are abandoned and re-planned elsewhere.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopDriver;

impl Handler<StopDriver> for NodeDriver {
    type Result = ();

    fn handle(&mut self, _: StopDriver, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
