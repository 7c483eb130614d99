//! The partitioned log: the ground truth of pinhive.
//!
//! [`Log`] is the adapter trait; [`embedded::EmbeddedLog`] keeps partitions as segment files on
//! local disk with fsync group commit. Every implementation partitions by the Java Kafka
//! client's murmur2 ([`partition_for`]), so a key lands on the same partition number in every
//! deployment.
//!
//! Invariant: `append` returns only after the records are durable (fsync / `acks=all`), and
//! readers never see records that are not yet durable.

pub mod embedded;
mod frame;
pub mod health;
pub mod kafka;
mod kafka_context;
pub mod kafka_group;
mod kafka_producer;
pub mod metrics;
pub mod murmur2;

use std::time::Duration;

use async_trait::async_trait;

pub use embedded::{EmbeddedLog, EmbeddedLogConfig};
pub use health::{AppendHealth, LogHealth};
pub use kafka::{KafkaLog, KafkaLogConfig};

/// One record to append. `key` chooses the partition (the CID for pin events).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// [`pinhive_events::codec::ContentType`] byte.
    pub content_type: u8,
    pub timestamp_ns: i64,
    /// W3C trace context, carried as a record header where the log has headers (Kafka).
    /// The envelope holds it too; this copy spares the log a decode.
    pub traceparent: Option<String>,
}

impl Record {
    /// A record holding a bincode-encoded envelope, keyed by the envelope's key.
    pub fn from_envelope(envelope: &pinhive_events::Envelope) -> Self {
        Record {
            key: envelope.key.as_bytes().to_vec(),
            value: pinhive_events::codec::encode(envelope),
            content_type: pinhive_events::codec::ContentType::Bincode as u8,
            timestamp_ns: envelope.timestamp_ns,
            traceparent: envelope.traceparent.clone(),
        }
    }
}

/// A record that could not be applied, and why (published by [`Log::dead_letter`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterRecord {
    pub partition: u32,
    pub offset: u64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub content_type: u8,
    pub reason: String,
}

/// Where an appended record landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    pub partition: u32,
    pub offset: u64,
}

/// A record read back, with its position. `next_offset` is where the following record starts
/// (what a consumer checkpoints after processing this one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    pub partition: u32,
    pub offset: u64,
    pub next_offset: u64,
    /// `Err` with a reason when the frame is damaged (checksum): the consumer dead-letters it.
    pub record: Result<Record, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("partition {0} does not exist")]
    NoSuchPartition(u32),
    #[error("offset {offset} of partition {partition} is below the retained start {start}")]
    OffsetOutOfRange {
        partition: u32,
        offset: u64,
        start: u64,
    },
    #[error("log is closed")]
    Closed,
    #[error("log is overloaded, retry later")]
    Overloaded,
    /// The log cannot take appends now (Kafka: brokers unreachable, delivery timed out, too
    /// few in-sync replicas). The append was not acknowledged; retrying later may succeed. A
    /// delivery that timed out in flight may still have been written (at-least-once).
    #[error("log unavailable: {0}")]
    Unavailable(String),
    #[error("record too large: {0} bytes")]
    RecordTooLarge(usize),
}

impl LogError {
    /// The metric label of the error (`pinhive_log_append_errors_total{kind}`).
    pub fn kind(&self) -> &'static str {
        match self {
            LogError::Io(_) => "io",
            LogError::NoSuchPartition(_) => "no_such_partition",
            LogError::OffsetOutOfRange { .. } => "offset_out_of_range",
            LogError::Closed => "closed",
            LogError::Overloaded => "overloaded",
            LogError::Unavailable(_) => "unavailable",
            LogError::RecordTooLarge(_) => "record_too_large",
        }
    }

    /// The log refused for now, not for good: the caller may retry later (HTTP 503 +
    /// `Retry-After`).
    pub fn is_transient(&self) -> bool {
        matches!(self, LogError::Overloaded | LogError::Unavailable(_))
    }
}

/// The partitioned-log adapter.
#[async_trait]
pub trait Log: Send + Sync + 'static {
    fn partition_count(&self) -> u32;

    /// Partition of `key`: murmur2 as the Java Kafka client computes it.
    fn partition_for(&self, key: &[u8]) -> u32 {
        partition_for(key, self.partition_count())
    }

    /// Appends records (each to its key's partition) and returns once all are durable.
    async fn append(&self, records: Vec<Record>) -> Result<Vec<Position>, LogError>;

    /// Reads durable records of `partition` starting at `from`, up to about `max_bytes`.
    /// Returns an empty vector when `from` is the end.
    async fn read(
        &self,
        partition: u32,
        from: u64,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, LogError>;

    /// Waits until `partition` has durable data beyond `offset`, or `timeout` passes.
    async fn wait_beyond(&self, partition: u32, offset: u64, timeout: Duration);

    /// First retained offset of `partition`.
    fn start_offset(&self, partition: u32) -> u64;

    /// Durable end (the offset the next record will get) of `partition`.
    fn end_offset(&self, partition: u32) -> u64;

    /// Whether the log takes appends, as its last appends found it: what `/ready` reports,
    /// without a broker round trip per call. The default tracks nothing (the embedded log).
    fn health(&self) -> LogHealth {
        LogHealth::untracked()
    }

    /// Publishes a dead letter where operators and other tools look for them. The store keeps
    /// every dead letter too (`/admin/dead-letters`); the embedded log has nothing to add.
    async fn dead_letter(&self, _letter: &DeadLetterRecord) -> Result<(), LogError> {
        Ok(())
    }

    /// Retention: drops whole segments that lie entirely below `offset` (every consumer's
    /// checkpoint) and are older than `min_age`. Returns the bytes freed.
    async fn release_before(
        &self,
        partition: u32,
        offset: u64,
        min_age: Duration,
    ) -> Result<u64, LogError>;
}

/// Kafka-compatible partitioner: `toPositive(murmur2(key)) % partitions`.
pub fn partition_for(key: &[u8], partitions: u32) -> u32 {
    (murmur2::murmur2(key) as u32 & 0x7fff_ffff) % partitions.max(1)
}
