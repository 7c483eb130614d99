//! The Kafka log's producer and what its failures mean.
//!
//! librdkafka's idempotent producer does not always come back from an outage by itself: once
//! deliveries timed out it bumps its epoch, and a broker may answer every later produce with
//! `ProducerFenced` (tansu does) or librdkafka may raise a fatal error. Either way the producer
//! fails every append until it is created anew (librdkafka's rule for fatal errors), so
//! [`LogProducer`] replaces it then, and the append is reported as unavailable: its retry goes to
//! the new producer.

use std::time::Duration;

use parking_lot::RwLock;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, Producer as _};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use crate::kafka_context::QuietContext;
use crate::LogError;

type Producer = FutureProducer<QuietContext>;

/// librdkafka's own bound on one delivery (retries included): an append during an outage
/// fails after this long.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct LogProducer {
    current: RwLock<Producer>,
    config: ClientConfig,
    topic: String,
}

impl LogProducer {
    /// The idempotent, `acks=all` producer of `topic` on `brokers`.
    pub fn create(mut config: ClientConfig, topic: &str) -> Result<Self, KafkaError> {
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("batch.num.messages", "10000")
            .set(
                "message.timeout.ms",
                DELIVERY_TIMEOUT.as_millis().to_string(),
            );
        Ok(LogProducer {
            current: RwLock::new(config.create_with_context(QuietContext::default())?),
            config,
            topic: topic.to_string(),
        })
    }

    /// The producer to use now (cheap: a reference count).
    pub fn current(&self) -> Producer {
        self.current.read().clone()
    }

    /// What `error`, which an append through `used` failed with, means; replaces `used` by a
    /// new producer when it can no longer append.
    pub fn failed(&self, used: Producer, error: KafkaError) -> LogError {
        let fatal = used.client().fatal_error();
        let fenced = error.rdkafka_error_code().is_some_and(needs_new_producer);
        if fatal.is_none() && !fenced {
            return log_error(error);
        }
        let reason = fatal.map_or_else(|| error.to_string(), |(_, reason)| reason);
        if let Err(create) = self.replace(used) {
            tracing::error!(topic = %self.topic, reason = %reason, error = %create, "kafka producer can no longer append and cannot be created anew");
            return log_error(error);
        }
        LogError::Unavailable(format!(
            "{error} (the producer could no longer append and was created anew: retry)"
        ))
    }

    /// Replaces `used` unless another append did already.
    fn replace(&self, used: Producer) -> Result<(), KafkaError> {
        let old = {
            let mut current = self.current.write();
            if current.client().native_ptr() != used.client().native_ptr() {
                return Ok(());
            }
            let fresh = self.config.create_with_context(QuietContext::default())?;
            std::mem::replace(&mut *current, fresh)
        };
        tracing::warn!(topic = %self.topic, "kafka producer could no longer append; created anew");
        // The last reference dropped purges and flushes the old producer (up to 500 ms, its
        // queued deliveries failing with a purge error): not on the async runtime.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || drop((old, used)))),
            Err(_) => drop((old, used)),
        }
        Ok(())
    }
}

/// Produce errors after which the idempotent producer must be created anew.
fn needs_new_producer(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as Code;
    matches!(
        code,
        Code::Fatal
            | Code::ProducerFenced
            | Code::InvalidProducerEpoch
            | Code::InvalidProducerIdMapping
            | Code::UnknownProducerId
            | Code::OutOfOrderSequenceNumber
    )
}

/// What a failed Kafka call (a produce, a fetch) means. What passes once the brokers are back
/// (unreachable, delivery timed out, leaders moving, too few in-sync replicas, the topic's
/// metadata not known yet, a delivery purged with a replaced producer) is
/// [`LogError::Unavailable`]; a full local queue is [`LogError::Overloaded`]: both answer HTTP
/// 503 + `Retry-After`. The rest (authorization, a record the broker rejects) are faults an
/// operator must look at.
pub(crate) fn log_error(error: KafkaError) -> LogError {
    use RDKafkaErrorCode as Code;
    if matches!(error, KafkaError::Canceled) {
        return LogError::Closed;
    }
    match error.rdkafka_error_code() {
        Some(Code::QueueFull) => LogError::Overloaded,
        Some(
            Code::MessageTimedOut
            | Code::AllBrokersDown
            | Code::BrokerTransportFailure
            | Code::Resolve
            | Code::OperationTimedOut
            | Code::TimedOutQueue
            | Code::RequestTimedOut
            | Code::NetworkException
            | Code::BrokerNotAvailable
            | Code::LeaderNotAvailable
            | Code::NotLeaderForPartition
            | Code::ReplicaNotAvailable
            | Code::NotEnoughReplicas
            | Code::NotEnoughReplicasAfterAppend
            | Code::KafkaStorageError
            | Code::UnknownTopic
            | Code::UnknownPartition
            | Code::UnknownTopicOrPartition
            | Code::PurgeQueue
            | Code::PurgeInflight,
        ) => LogError::Unavailable(error.to_string()),
        _ => LogError::Io(std::io::Error::other(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_are_unavailable_a_full_queue_overloaded_the_rest_faults() {
        use RDKafkaErrorCode as Code;
        let table = [
            (Code::MessageTimedOut, "unavailable"),
            (Code::AllBrokersDown, "unavailable"),
            (Code::BrokerTransportFailure, "unavailable"),
            (Code::RequestTimedOut, "unavailable"),
            (Code::NotLeaderForPartition, "unavailable"),
            (Code::LeaderNotAvailable, "unavailable"),
            (Code::NotEnoughReplicas, "unavailable"),
            (Code::NotEnoughReplicasAfterAppend, "unavailable"),
            (Code::UnknownTopicOrPartition, "unavailable"),
            (Code::PurgeQueue, "unavailable"),
            (Code::QueueFull, "overloaded"),
            (Code::MessageSizeTooLarge, "io"),
            (Code::TopicAuthorizationFailed, "io"),
            (Code::InvalidRecord, "io"),
        ];
        for (code, kind) in table {
            let error = log_error(KafkaError::MessageProduction(code));
            assert_eq!(error.kind(), kind, "{code:?} became {error}");
            assert_eq!(error.is_transient(), kind != "io", "{code:?}");
        }
        assert_eq!(log_error(KafkaError::Canceled).kind(), "closed");
        let timed_out = log_error(KafkaError::MessageProduction(Code::MessageTimedOut));
        assert!(
            timed_out.to_string().starts_with("log unavailable: "),
            "{timed_out}"
        );
    }

    #[test]
    fn a_fenced_producer_is_created_anew_and_the_append_is_unavailable() {
        // No broker needed: creating a producer does not connect.
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", "127.0.0.1:1");
        let producer = LogProducer::create(config, "t").unwrap();
        let used = producer.current();
        let error = producer.failed(
            used.clone(),
            KafkaError::MessageProduction(RDKafkaErrorCode::ProducerFenced),
        );
        assert_eq!(error.kind(), "unavailable", "{error}");
        let fresh = producer.current();
        assert_ne!(fresh.client().native_ptr(), used.client().native_ptr());

        // A second append that failed on the old producer does not replace the new one.
        let again = producer.failed(
            used,
            KafkaError::MessageProduction(RDKafkaErrorCode::ProducerFenced),
        );
        assert_eq!(again.kind(), "unavailable");
        assert_eq!(
            producer.current().client().native_ptr(),
            fresh.client().native_ptr()
        );

        // Other failures keep the producer.
        let timed_out = producer.failed(
            fresh.clone(),
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
        );
        assert_eq!(timed_out.kind(), "unavailable");
        assert_eq!(
            producer.current().client().native_ptr(),
            fresh.client().native_ptr()
        );
    }
}
