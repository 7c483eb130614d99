//! Kafka log (rdkafka): one topic, N partitions, records keyed by CID.
//!
//! Producer: idempotent, `acks=all`, explicit partition chosen by pinhive's murmur2 (identical
//! to the Java client's default partitioner, so external producers agree), delivery reports
//! awaited before `append` returns. Content type travels in the `content-type` header, the
//! trace context in `traceparent`.
//!
//! Readers: one assign-mode consumer per partition, positioned where the shard asks. This slice
//! consumes every partition in one instance; consumer-group assignment (several instances,
//! rebalance callbacks starting and stopping shards) is the next step (see docs/kafka.md).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use pinhive_events::codec::ContentType;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::health::{AppendHealth, LogHealth};
use crate::kafka_context::QuietContext;
use crate::kafka_producer::{log_error, LogProducer};
use crate::{Log, LogError, Position, Record, StoredRecord};

/// Least time between two reachability probes of an unavailable log (see [`KafkaLog::health`]).
const PROBE_EVERY: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct KafkaLogConfig {
    /// Comma-separated bootstrap servers, `host:port`.
    pub brokers: String,
    pub topic: String,
    /// Partitions to create the topic with if it does not exist.
    pub partitions: u32,
    pub replication: i32,
    /// `retention.ms` of the topic if this creates it (`None`: the broker's default). The
    /// control log is kept forever (-1): it is the cluster's node membership.
    pub retention_ms: Option<i64>,
}

struct Reader {
    consumer: BaseConsumer<QuietContext>,
    position: Option<u64>,
}

/// The Kafka implementation of [`Log`]. Cheap to clone.
#[derive(Clone)]
pub struct KafkaLog {
    inner: Arc<Inner>,
}

struct Inner {
    producer: LogProducer,
    topic: String,
    partitions: u32,
    readers: Vec<Mutex<Reader>>,
    ends: Vec<AtomicU64>,
    brokers: String,
    health: AppendHealth,
    /// A probe is running, or ran less than [`PROBE_EVERY`] ago.
    probing: AtomicBool,
    last_probe: parking_lot::Mutex<Option<Instant>>,
}

fn kafka_error(error: impl std::fmt::Display) -> LogError {
    LogError::Io(std::io::Error::other(error.to_string()))
}

fn base_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("client.id", "pinhive");
    config
}

/// The dead-letter topic of `topic`: records that could not be applied, with a `reason` header.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dead-letters")
}

/// Parses `kafka://host:port[,host:port…]` into the bootstrap list.
pub fn parse_kafka_url(url: &str) -> Option<String> {
    let brokers = url.strip_prefix("kafka://")?.trim_end_matches('/');
    (!brokers.is_empty()).then(|| brokers.to_string())
}

fn mime_to_content_type(mime: &[u8]) -> u8 {
    match mime {
        b"application/json" => ContentType::Json as u8,
        b"application/x-pinhive-bincode" => ContentType::Bincode as u8,
        // Anything else is dead-lettered by the decoder with "unknown content type 0".
        _ => 0,
    }
}

impl KafkaLog {
    /// Connects, creates the topic if it is absent, and checks its partition count.
    pub async fn open(config: KafkaLogConfig) -> Result<Self, LogError> {
        let admin: AdminClient<DefaultClientContext> =
            base_config(&config.brokers).create().map_err(kafka_error)?;
        let retention = config.retention_ms.map(|ms| ms.to_string());
        let mut topic = NewTopic::new(
            &config.topic,
            config.partitions as i32,
            TopicReplication::Fixed(config.replication),
        );
        if let Some(retention) = &retention {
            topic = topic.set("retention.ms", retention);
        }
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let dead_letters = dead_letter_topic(&config.topic);
        let dlq = NewTopic::new(
            &dead_letters,
            1,
            TopicReplication::Fixed(config.replication),
        );
        match admin.create_topics([&topic, &dlq], &options).await {
            Ok(results) => {
                for result in results {
                    if let Err((name, code)) = result {
                        if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                            return Err(kafka_error(format!("creating topic {name}: {code}")));
                        }
                    }
                }
            }
            Err(error) => return Err(kafka_error(format!("creating topic: {error}"))),
        }
        let producer = LogProducer::create(base_config(&config.brokers), &config.topic)
            .map_err(kafka_error)?;
        let metadata = {
            let producer = producer.current();
            let topic = config.topic.clone();
            tokio::task::spawn_blocking(move || {
                producer
                    .client()
                    .fetch_metadata(Some(&topic), Duration::from_secs(10))
            })
            .await
            .map_err(kafka_error)?
            .map_err(kafka_error)?
        };
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == config.topic)
            .map(|t| t.partitions().len() as u32)
            .unwrap_or(0);
        if partitions == 0 {
            return Err(kafka_error(format!(
                "topic {} has no partitions",
                config.topic
            )));
        }
        let mut readers = Vec::with_capacity(partitions as usize);
        let mut ends = Vec::with_capacity(partitions as usize);
        for _ in 0..partitions {
            let consumer: BaseConsumer<QuietContext> = base_config(&config.brokers)
                .set("group.id", "pinhive-readers")
                .set("enable.auto.commit", "false")
                .set("enable.partition.eof", "false")
                .set("fetch.wait.max.ms", "20")
                .create_with_context(QuietContext::default())
                .map_err(kafka_error)?;
            readers.push(Mutex::new(Reader {
                consumer,
                position: None,
            }));
            ends.push(AtomicU64::new(0));
        }
        let health = AppendHealth::new(format!("kafka topic {}", config.topic));
        let log = KafkaLog {
            inner: Arc::new(Inner {
                producer,
                topic: config.topic,
                partitions,
                readers,
                ends,
                brokers: config.brokers,
                health,
                probing: AtomicBool::new(false),
                last_probe: parking_lot::Mutex::new(None),
            }),
        };
        for partition in 0..partitions {
            let high = log.watermarks(partition).await?.1;
            log.inner.ends[partition as usize].store(high, Ordering::Release);
        }
        Ok(log)
    }

    pub fn brokers(&self) -> &str {
        &self.inner.brokers
    }

    pub fn topic(&self) -> &str {
        &self.inner.topic
    }

    /// (low, high) watermarks of `partition`.
    pub async fn watermarks(&self, partition: u32) -> Result<(u64, u64), LogError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let reader = inner.readers[partition as usize].lock();
            reader
                .consumer
                .fetch_watermarks(&inner.topic, partition as i32, Duration::from_secs(10))
                .map(|(low, high)| (low.max(0) as u64, high.max(0) as u64))
        })
        .await
        .map_err(kafka_error)?
        .map_err(log_error)
    }

    /// Produces every record and awaits every delivery report.
    async fn produce(&self, records: Vec<Record>) -> Result<Vec<Position>, LogError> {
        let producer = self.inner.producer.current();
        match self.produce_with(&producer, records).await {
            Ok(positions) => Ok(positions),
            Err(error) => Err(self.inner.producer.failed(producer, error)),
        }
    }

    async fn produce_with(
        &self,
        producer: &FutureProducer<QuietContext>,
        records: Vec<Record>,
    ) -> Result<Vec<Position>, KafkaError> {
        let mut deliveries = Vec::with_capacity(records.len());
        for record in &records {
            let partition = self.partition_for(&record.key) as i32;
            let mime = ContentType::from_byte(record.content_type)
                .map(ContentType::mime)
                .unwrap_or("application/octet-stream");
            let mut headers = OwnedHeaders::new().insert(Header {
                key: "content-type",
                value: Some(mime),
            });
            if let Some(traceparent) = &record.traceparent {
                headers = headers.insert(Header {
                    key: "traceparent",
                    value: Some(traceparent.as_str()),
                });
            }
            let future_record = FutureRecord::to(&self.inner.topic)
                .partition(partition)
                .key(&record.key)
                .payload(&record.value)
                .timestamp(record.timestamp_ns / 1_000_000)
                .headers(headers);
            let delivery = producer
                .send_result(future_record)
                .map_err(|(error, _)| error)?;
            deliveries.push(delivery);
        }
        let mut positions = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let delivered = delivery
                .await
                .map_err(|_| KafkaError::Canceled)?
                .map_err(|(error, _)| error)?;
            let position = Position {
                partition: delivered.partition as u32,
                offset: delivered.offset.max(0) as u64,
            };
            self.inner.ends[position.partition as usize]
                .fetch_max(position.offset + 1, Ordering::AcqRel);
            positions.push(position);
        }
        Ok(positions)
    }

    fn probe_in_background(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        {
            let mut last_probe = self.inner.last_probe.lock();
            if last_probe.is_some_and(|at| at.elapsed() < PROBE_EVERY)
                || self.inner.probing.swap(true, Ordering::AcqRel)
            {
                return;
            }
            *last_probe = Some(Instant::now());
        }
        let inner = self.inner.clone();
        // A blocking call (librdkafka's metadata request): never on the async runtime.
        runtime.spawn_blocking(move || {
            let producer = inner.producer.current();
            let metadata = producer
                .client()
                .fetch_metadata(Some(&inner.topic), PROBE_EVERY);
            let every_partition_led = metadata.is_ok_and(|metadata| {
                metadata.topics().iter().any(|topic| {
                    topic.name() == inner.topic
                        && topic.error().is_none()
                        && topic.partitions().len() == inner.partitions as usize
                        && topic
                            .partitions()
                            .iter()
                            .all(|p| p.error().is_none() && p.leader() >= 0)
                })
            });
            if every_partition_led {
                inner.health.succeeded();
            }
            inner.probing.store(false, Ordering::Release);
        });
    }

    fn read_blocking(
        inner: &Inner,
        partition: u32,
        from: u64,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, LogError> {
        let mut reader = inner.readers[partition as usize].lock();
        if reader.position != Some(from) {
            let mut assignment = TopicPartitionList::new();
            assignment
                .add_partition_offset(&inner.topic, partition as i32, Offset::Offset(from as i64))
                .map_err(kafka_error)?;
            reader.consumer.assign(&assignment).map_err(kafka_error)?;
            reader.position = Some(from);
        }
        let mut records = Vec::new();
        let mut bytes = 0usize;
        let deadline = Instant::now() + Duration::from_millis(200);
        while bytes < max_bytes && records.len() < 10_000 {
            let wait = if records.is_empty() {
                deadline.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            let Some(message) = reader.consumer.poll(wait) else {
                break;
            };
            let message = message.map_err(log_error)?;
            let offset = message.offset().max(0) as u64;
            let content_type = message
                .headers()
                .and_then(|headers| {
                    headers
                        .iter()
                        .find(|h| h.key.eq_ignore_ascii_case("content-type"))
                        .and_then(|h| h.value.map(mime_to_content_type))
                })
                .unwrap_or(0);
            let key = message.key().unwrap_or_default().to_vec();
            let value = message.payload().unwrap_or_default().to_vec();
            bytes += key.len() + value.len();
            records.push(StoredRecord {
                partition,
                offset,
                next_offset: offset + 1,
                record: Ok(Record {
                    key,
                    value,
                    content_type,
                    timestamp_ns: message.timestamp().to_millis().unwrap_or(0) * 1_000_000,
                    traceparent: None,
                }),
            });
            reader.position = Some(offset + 1);
            if Instant::now() > deadline {
                break;
            }
        }
        if let Some(last) = records.last() {
            inner.ends[partition as usize].fetch_max(last.next_offset, Ordering::AcqRel);
        }
        Ok(records)
    }
}

#[async_trait]
impl Log for KafkaLog {
    fn partition_count(&self) -> u32 {
        self.inner.partitions
    }

    async fn append(&self, records: Vec<Record>) -> Result<Vec<Position>, LogError> {
        let result = self.produce(records).await;
        self.inner.health.record(&result);
        if let Err(error) = &result {
            crate::metrics::METRICS
                .append_errors
                .with_label_values(&[error.kind()])
                .inc();
        }
        result
    }

    /// Reports what the last appends found; while they found the log unavailable, a probe
    /// (one metadata request, at most every [`PROBE_EVERY`], in the background) looks for the
    /// brokers again, so the log is seen available once they are back even when no append
    /// comes (a load balancer that took this instance out of rotation sends none).
    fn health(&self) -> LogHealth {
        let health = self.inner.health.snapshot();
        if !health.available {
            self.probe_in_background();
        }
        health
    }

    async fn dead_letter(&self, letter: &crate::DeadLetterRecord) -> Result<(), LogError> {
        let topic = dead_letter_topic(&self.inner.topic);
        let (partition, offset) = (letter.partition.to_string(), letter.offset.to_string());
        let mime = ContentType::from_byte(letter.content_type)
            .map(ContentType::mime)
            .unwrap_or("application/octet-stream");
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "reason",
                value: Some(letter.reason.as_str()),
            })
            .insert(Header {
                key: "source-topic",
                value: Some(self.inner.topic.as_str()),
            })
            .insert(Header {
                key: "source-partition",
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: "source-offset",
                value: Some(offset.as_str()),
            })
            .insert(Header {
                key: "content-type",
                value: Some(mime),
            });
        let record = FutureRecord::to(&topic)
            .key(&letter.key)
            .payload(&letter.value)
            .headers(headers);
        self.inner
            .producer
            .current()
            .send(record, Duration::from_secs(10))
            .await
            .map(|_| ())
            .map_err(|(error, _)| kafka_error(error))
    }

    async fn read(
        &self,
        partition: u32,
        from: u64,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, LogError> {
        if partition >= self.inner.partitions {
            return Err(LogError::NoSuchPartition(partition));
        }
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || Self::read_blocking(&inner, partition, from, max_bytes))
            .await
            .map_err(kafka_error)?
    }

    async fn wait_beyond(&self, partition: u32, offset: u64, timeout: Duration) {
        // `read` already long-polls the fetched queue; here refresh the end offset once (one
        // broker request) and pause briefly, rather than polling the broker in a loop.
        if let Ok((_, high)) = self.watermarks(partition).await {
            self.inner.ends[partition as usize].fetch_max(high, Ordering::AcqRel);
            if high > offset {
                return;
            }
        }
        tokio::time::sleep(timeout.min(Duration::from_millis(200))).await;
    }

    fn start_offset(&self, _partition: u32) -> u64 {
        0
    }

    fn end_offset(&self, partition: u32) -> u64 {
        self.inner
            .ends
            .get(partition as usize)
            .map(|e| e.load(Ordering::Acquire))
            .unwrap_or(0)
    }

    async fn release_before(
        &self,
        _partition: u32,
        _offset: u64,
        _min_age: Duration,
    ) -> Result<u64, LogError> {
        // Retention is the broker's (topic `retention.ms`).
        Ok(0)
    }
}

/// A plain consumer-group subscription to another topic (e.g. S3 bucket notifications): each
/// record is handed out once per group; the caller commits after processing it.
pub struct TopicSubscription {
    consumer: rdkafka::consumer::StreamConsumer<QuietContext>,
}

/// One record of a [`TopicSubscription`].
pub struct TopicRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
}

impl TopicSubscription {
    /// Creates `topic` if absent, then joins `group` on it.
    pub async fn subscribe(
        brokers: &str,
        topic: &str,
        group: &str,
        partitions: i32,
    ) -> Result<Self, LogError> {
        let admin: AdminClient<DefaultClientContext> =
            base_config(brokers).create().map_err(kafka_error)?;
        let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        if let Ok(results) = admin.create_topics([&new_topic], &options).await {
            for result in results {
                if let Err((name, code)) = result {
                    if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                        return Err(kafka_error(format!("creating topic {name}: {code}")));
                    }
                }
            }
        }
        let consumer: rdkafka::consumer::StreamConsumer<QuietContext> = base_config(brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create_with_context(QuietContext::default())
            .map_err(kafka_error)?;
        consumer.subscribe(&[topic]).map_err(kafka_error)?;
        Ok(TopicSubscription { consumer })
    }

    pub async fn next(&self) -> Result<TopicRecord, LogError> {
        let message = self.consumer.recv().await.map_err(log_error)?;
        Ok(TopicRecord {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().unwrap_or_default().to_vec(),
            payload: message.payload().unwrap_or_default().to_vec(),
        })
    }

    /// Commits past `record` (asynchronously).
    pub fn commit(&self, topic: &str, record: &TopicRecord) {
        let mut list = TopicPartitionList::new();
        if list
            .add_partition_offset(topic, record.partition, Offset::Offset(record.offset + 1))
            .is_ok()
        {
            let _ = self
                .consumer
                .commit(&list, rdkafka::consumer::CommitMode::Async);
        }
    }
}
