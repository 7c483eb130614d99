//! Consumer-group membership for the Kafka log: which partitions this instance owns.
//!
//! A group consumer subscribes to the topic only to take part in the group protocol; every
//! partition it is assigned is paused at once (records are read by the per-partition readers,
//! positioned at the shard's checkpoint). Assignments and revocations are handed to the
//! orchestrator, which starts and stops the shards' consumers; a revocation waits (bounded)
//! until those consumers have finished their batch, so two instances never write one
//! partition's state at the same time. Offsets are committed to the group after the state they
//! cover is persisted (for lag monitoring; the store checkpoint stays the resume point).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;

use crate::LogError;

/// A change of this instance's partitions, sent by the group's rebalance callbacks.
#[derive(Debug)]
pub enum AssignmentChange {
    Assigned(Vec<u32>),
    /// Stop these partitions' consumers, then answer on `done` (the rebalance waits for it).
    Revoked {
        partitions: Vec<u32>,
        done: std::sync::mpsc::Sender<()>,
    },
}

struct GroupContext {
    topic: String,
    changes: mpsc::UnboundedSender<AssignmentChange>,
    connectivity: crate::kafka_context::ConnectivityReports,
}

fn partitions_of(list: &TopicPartitionList, topic: &str) -> Vec<u32> {
    list.elements()
        .iter()
        .filter(|e| e.topic() == topic)
        .map(|e| e.partition().max(0) as u32)
        .collect()
}

impl ClientContext for GroupContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.connectivity.report(error, reason);
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let partitions = partitions_of(list, &self.topic);
            if partitions.is_empty() {
                return;
            }
            tracing::info!(?partitions, "kafka group revokes partitions");
            let (done, finished) = std::sync::mpsc::channel();
            if self
                .changes
                .send(AssignmentChange::Revoked { partitions, done })
                .is_ok()
                && finished.recv_timeout(Duration::from_secs(20)).is_err()
            {
                tracing::warn!("shards did not stop within 20 s of a revocation");
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                // Membership only: the group consumer must not fetch.
                if let Err(error) = consumer.pause(list) {
                    tracing::warn!(error = %error, "could not pause the group consumer");
                }
                let partitions = partitions_of(list, &self.topic);
                if !partitions.is_empty() {
                    tracing::info!(?partitions, "kafka group assigns partitions");
                    let _ = self.changes.send(AssignmentChange::Assigned(partitions));
                }
            }
            Rebalance::Error(error) => tracing::warn!(error = %error, "kafka rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// Membership of this instance in the consumer group. Leaves the group when dropped.
pub struct GroupMembership {
    consumer: Arc<BaseConsumer<GroupContext>>,
    topic: String,
    stop: Arc<AtomicBool>,
    poller: Option<JoinHandle<()>>,
}

impl GroupMembership {
    /// Joins `group` on `topic`; assignment changes arrive on the returned receiver.
    pub fn join(
        brokers: &str,
        topic: &str,
        group: &str,
        session_timeout: Duration,
    ) -> Result<(Self, mpsc::UnboundedReceiver<AssignmentChange>), LogError> {
        let (changes, receiver) = mpsc::unbounded_channel();
        let context = GroupContext {
            topic: topic.to_string(),
            changes,
            connectivity: Default::default(),
        };
        let session_ms = session_timeout.as_millis().max(6000).to_string();
        let heartbeat_ms = (session_timeout.as_millis().max(6000) / 3).to_string();
        let consumer: BaseConsumer<GroupContext> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("client.id", "pinhive-group")
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", &session_ms)
            .set("heartbeat.interval.ms", &heartbeat_ms)
            .set("partition.assignment.strategy", "range")
            .create_with_context(context)
            .map_err(|e| LogError::Io(std::io::Error::other(e.to_string())))?;
        consumer
            .subscribe(&[topic])
            .map_err(|e| LogError::Io(std::io::Error::other(e.to_string())))?;
        let consumer = Arc::new(consumer);
        let stop = Arc::new(AtomicBool::new(false));
        let poller = {
            let (consumer, stop) = (consumer.clone(), stop.clone());
            std::thread::Builder::new()
                .name("pinhive-kafka-group".into())
                .spawn(move || {
                    // Serves the group protocol (heartbeats, rebalance callbacks).
                    while !stop.load(Ordering::Acquire) {
                        if let Some(Err(error)) = consumer.poll(Duration::from_millis(100)) {
                            tracing::debug!(error = %error, "group consumer poll");
                        }
                    }
                    consumer.unsubscribe();
                    let _ = consumer.poll(Duration::from_millis(100));
                })
                .map_err(LogError::Io)?
        };
        Ok((
            GroupMembership {
                consumer,
                topic: topic.to_string(),
                stop,
                poller: Some(poller),
            },
            receiver,
        ))
    }

    /// Commits `offset` (the next offset to read) of `partition` to the group, asynchronously.
    pub fn commit(&self, partition: u32, offset: u64) {
        let mut list = TopicPartitionList::new();
        if list
            .add_partition_offset(&self.topic, partition as i32, Offset::Offset(offset as i64))
            .is_ok()
        {
            if let Err(error) = self.consumer.commit(&list, CommitMode::Async) {
                tracing::debug!(partition, error = %error, "offset commit failed");
            }
        }
    }
}

impl Drop for GroupMembership {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(poller) = self.poller.take() {
            let _ = poller.join();
        }
    }
}

/// One partition of `pinhive topics describe`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionLag {
    pub partition: u32,
    pub low: u64,
    pub high: u64,
    /// Offset the group committed (the next to read), if any.
    pub committed: Option<u64>,
}

impl PartitionLag {
    /// Records the group has not processed yet.
    pub fn lag(&self) -> u64 {
        self.high.saturating_sub(self.committed.unwrap_or(self.low))
    }
}

/// Watermarks and the group's committed offsets of every partition of `topic` (blocking).
pub fn describe(brokers: &str, topic: &str, group: &str) -> Result<Vec<PartitionLag>, LogError> {
    let error = |e: rdkafka::error::KafkaError| LogError::Io(std::io::Error::other(e.to_string()));
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(error)?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(error)?;
    let partitions: Vec<u32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id().max(0) as u32))
        .collect();
    let mut list = TopicPartitionList::new();
    for partition in &partitions {
        list.add_partition(topic, *partition as i32);
    }
    let committed = consumer.committed_offsets(list, timeout).map_err(error)?;
    let mut out = Vec::with_capacity(partitions.len());
    for partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition as i32, timeout)
            .map_err(error)?;
        let committed = committed
            .find_partition(topic, partition as i32)
            .and_then(|e| match e.offset() {
                Offset::Offset(offset) if offset >= 0 => Some(offset as u64),
                _ => None,
            });
        out.push(PartitionLag {
            partition,
            low: low.max(0) as u64,
            high: high.max(0) as u64,
            committed,
        });
    }
    out.sort_by_key(|p| p.partition);
    Ok(out)
}
