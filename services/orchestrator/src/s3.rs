//! S3 bucket notifications → pins. An S3 gateway (VersityGW, MinIO, …) publishes standard
//! event-notification JSON; `s3:ObjectCreated:*` pins the CID carried in the object's user
//! metadata (`x-amz-meta-cid`) under the object key as the pin name, replacing the pin of the
//! previous version of that key; `s3:ObjectRemoved:*` unpins it.
//!
//! The ingester is the single writer of the key ↔ CID mapping (`Store::put_s3_object`). It
//! appends the pin events first (durable), then records the mapping; request ids are derived
//! from the event (bucket, key, sequencer), so re-delivering a notification after a crash
//! appends events the shards recognise and skip.

use std::collections::BTreeMap;
use std::sync::Arc;

use pinhive_domain::command::ReplicaBounds;
use pinhive_domain::values::{Owner, MAX_NAME_CHARS};
use pinhive_domain::{decide, Cid, Command, Decided, PinCommand, RawPin, Rejection};
use pinhive_events::Envelope;
use pinhive_log::{Log, Record};
use pinhive_store::{S3Object, Store};
use serde::Deserialize;
use sha2::Digest;

#[derive(Deserialize)]
struct Notification {
    #[serde(rename = "Records")]
    records: Vec<NotificationRecord>,
}

#[derive(Deserialize)]
struct NotificationRecord {
    #[serde(rename = "eventName")]
    event_name: String,
    s3: S3Entity,
}

#[derive(Deserialize)]
struct S3Entity {
    bucket: BucketEntity,
    object: ObjectEntity,
}

#[derive(Deserialize)]
struct BucketEntity {
    name: String,
}

#[derive(Deserialize)]
struct ObjectEntity {
    key: String,
    #[serde(default)]
    sequencer: Option<String>,
    #[serde(rename = "versionId", default)]
    version_id: Option<String>,
    #[serde(rename = "eTag", default)]
    e_tag: Option<String>,
    #[serde(rename = "userMetadata", default)]
    user_metadata: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// The notification cannot be used: dead-letter it.
    #[error("{0}")]
    Malformed(String),
    /// Log or store unavailable: retry the same notification.
    #[error("s3 ingest failed, retrying: {0}")]
    Transient(String),
    /// The S3 owner is over a quota: the webhook answers 403/429, the Kafka consumer
    /// dead-letters the notification (records before it in the same notification applied).
    #[error("{key}: {exceeded}")]
    OverQuota {
        key: String,
        exceeded: pinhive_domain::quota::QuotaExceeded,
    },
}

/// What one notification record did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct S3Outcome {
    pub bucket: String,
    pub key: String,
    pub action: &'static str,
    pub requestid: Option<String>,
}

enum Change {
    Created { cid: Cid },
    Removed,
}

struct Parsed {
    bucket: String,
    key: String,
    sequencer: String,
    change: Change,
}

pub struct S3Ingest {
    log: Arc<dyn Log>,
    store: Arc<dyn Store>,
    owner: String,
    replicas: ReplicaBounds,
    /// The owner's quota, checked before a pin is appended (`None`: unlimited).
    quota: Option<Arc<crate::quota::QuotaGate>>,
}

fn decode_key(raw: &str) -> String {
    // S3 notifications URL-encode object keys, with '+' for spaces.
    let plus = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

fn parse(payload: &[u8]) -> Result<Vec<Parsed>, S3Error> {
    let notification: Notification = serde_json::from_slice(payload)
        .map_err(|e| S3Error::Malformed(format!("not an S3 event notification: {e}")))?;
    let mut parsed = Vec::new();
    for record in notification.records {
        let name = record.event_name.trim_start_matches("s3:");
        let object = record.s3.object;
        let key = decode_key(&object.key);
        let sequencer = object
            .sequencer
            .or(object.version_id)
            .or(object.e_tag)
            .unwrap_or_default();
        let change = if name.starts_with("ObjectCreated:") {
            let cid = object
                .user_metadata
                .iter()
                .find(|(k, _)| {
                    let k = k.to_ascii_lowercase();
                    k == "x-amz-meta-cid" || k == "cid"
                })
                .map(|(_, v)| v.trim().to_string())
                .ok_or_else(|| {
                    S3Error::Malformed(format!(
                        "{name} for {key}: no CID in the object metadata (x-amz-meta-cid)"
                    ))
                })?;
            let cid = Cid::parse(&cid).map_err(|e| S3Error::Malformed(format!("{key}: {e}")))?;
            Change::Created { cid }
        } else if name.starts_with("ObjectRemoved:") {
            Change::Removed
        } else {
            continue;
        };
        parsed.push(Parsed {
            bucket: record.s3.bucket.name,
            key,
            sequencer,
            change,
        });
    }
    Ok(parsed)
}

/// How many records of notification `payload` [`S3Ingest::ingest`] would apply (objects
/// created with a valid CID in their metadata, objects removed), or why it would dead-letter
/// the notification. Reads nothing else; public so the parser can be fuzzed from outside.
pub fn parse_notification(payload: &[u8]) -> Result<usize, S3Error> {
    parse(payload).map(|parsed| parsed.len())
}

/// True if `candidate` is older than `current` (S3 sequencers are hex strings that compare
/// lexicographically at equal length).
fn is_stale(candidate: &str, current: &str) -> bool {
    !candidate.is_empty() && candidate.len() == current.len() && candidate < current
}

impl S3Ingest {
    pub fn new(
        log: Arc<dyn Log>,
        store: Arc<dyn Store>,
        owner: String,
        replicas: ReplicaBounds,
    ) -> Self {
        S3Ingest {
            log,
            store,
            owner,
            replicas,
            quota: None,
        }
    }

    /// Checks every pin against the owner's quota first (a refusal: [`S3Error::OverQuota`]).
    pub fn with_quota(mut self, quota: Arc<crate::quota::QuotaGate>) -> Self {
        self.quota = Some(quota);
        self
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&dyn Store) -> Result<T, pinhive_store::StoreError> + Send + 'static,
    ) -> Result<T, S3Error> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || work(store.as_ref()))
            .await
            .map_err(|e| S3Error::Transient(e.to_string()))?
            .map_err(|e| S3Error::Transient(e.to_string()))
    }

    /// Applies one notification (one Kafka record or webhook body).
    pub async fn ingest(&self, payload: &[u8]) -> Result<Vec<S3Outcome>, S3Error> {
        let mut outcomes = Vec::new();
        for parsed in parse(payload)? {
            outcomes.push(self.apply(parsed).await?);
        }
        Ok(outcomes)
    }

    async fn apply(&self, parsed: Parsed) -> Result<S3Outcome, S3Error> {
        let (bucket, key) = (parsed.bucket.clone(), parsed.key.clone());
        let existing = self
            .blocking(move |store| store.get_s3_object(&bucket, &key))
            .await?;
        let outcome = |action, requestid| S3Outcome {
            bucket: parsed.bucket.clone(),
            key: parsed.key.clone(),
            action,
            requestid,
        };
        if existing
            .as_ref()
            .is_some_and(|e| is_stale(&parsed.sequencer, &e.sequencer))
        {
            return Ok(outcome("ignored_stale", None));
        }
        match &parsed.change {
            Change::Created { cid } => {
                let digest = sha2::Sha256::digest(
                    format!(
                        "{}\0{}\0{}\0{}",
                        parsed.bucket,
                        parsed.key,
                        parsed.sequencer,
                        cid.spelling()
                    )
                    .as_bytes(),
                );
                let requestid = format!("s3-{}", hex::encode(&digest[..16]));
                if existing.as_ref().is_some_and(|e| e.requestid == requestid) {
                    return Ok(outcome("duplicate", Some(requestid)));
                }
                // The same checks as every other entry path (name, meta, owner).
                let raw = RawPin {
                    cid: cid.spelling().to_string(),
                    name: Some(parsed.key.chars().take(MAX_NAME_CHARS).collect()),
                    origins: Vec::new(),
                    meta: [
                        ("s3_bucket".to_string(), parsed.bucket.clone()),
                        ("s3_key".to_string(), parsed.key.clone()),
                    ]
                    .into(),
                };
                let malformed = |e: Rejection| S3Error::Malformed(format!("{}: {e}", parsed.key));
                let pin = PinCommand::new(raw, &self.owner, self.replicas).map_err(malformed)?;
                let created_ns = pinhive_events::now_ns();
                if let Some(gate) = &self.quota {
                    let admission = match existing {
                        None => pinhive_domain::quota::Admission::NewPin,
                        Some(_) => pinhive_domain::quota::Admission::Replacement,
                    };
                    let (gate, owner) = (gate.clone(), self.owner.clone());
                    let admitted = tokio::task::spawn_blocking(move || {
                        gate.admit(&owner, admission, crate::quota::Entry::S3)
                    })
                    .await
                    .map_err(|e| S3Error::Transient(e.to_string()))?;
                    match admitted {
                        Ok(()) => {}
                        Err(crate::quota::QuotaError::Exceeded(exceeded)) => {
                            return Err(S3Error::OverQuota {
                                key: parsed.key.clone(),
                                exceeded,
                            })
                        }
                        Err(crate::quota::QuotaError::Store(e)) => {
                            return Err(S3Error::Transient(e.to_string()))
                        }
                    }
                }
                let command = match &existing {
                    None => Command::Pin {
                        pin,
                        requestid: requestid.clone(),
                        created_ns,
                    },
                    Some(previous) => Command::Replace {
                        pin,
                        requestid: requestid.clone(),
                        created_ns,
                        old_requestid: previous.requestid.clone(),
                        old_cid: Cid::parse(&previous.cid).map_err(malformed)?,
                    },
                };
                self.append(decide(command).map_err(malformed)?).await?;
                let object = S3Object {
                    bucket: parsed.bucket.clone(),
                    key: parsed.key.clone(),
                    cid: cid.canonical().to_string(),
                    requestid: requestid.clone(),
                    sequencer: parsed.sequencer.clone(),
                };
                self.blocking(move |store| {
                    store.put_s3_object(&object.bucket, &object.key, Some(&object))
                })
                .await?;
                let action = if existing.is_some() {
                    "replaced"
                } else {
                    "pinned"
                };
                Ok(outcome(action, Some(requestid)))
            }
            Change::Removed => {
                let Some(previous) = existing else {
                    return Ok(outcome("unknown_key", None));
                };
                let malformed = |e: Rejection| S3Error::Malformed(format!("{}: {e}", parsed.key));
                let unpin = Command::Unpin {
                    requestid: previous.requestid.clone(),
                    owner: Owner::parse(&self.owner).map_err(malformed)?,
                    cid: Cid::parse(&previous.cid).map_err(malformed)?,
                };
                self.append(decide(unpin).map_err(malformed)?).await?;
                let (bucket, key) = (parsed.bucket.clone(), parsed.key.clone());
                self.blocking(move |store| store.put_s3_object(&bucket, &key, None))
                    .await?;
                Ok(outcome("unpinned", Some(previous.requestid)))
            }
        }
    }

    async fn append(&self, decided: Vec<Decided>) -> Result<(), S3Error> {
        let records: Vec<Record> = decided
            .into_iter()
            .map(|Decided { key, event }| Record::from_envelope(&Envelope::new(key, event)))
            .collect();
        self.log
            .append(records)
            .await
            .map(|_| ())
            .map_err(|e| S3Error::Transient(e.to_string()))
    }
}

impl S3Ingest {
    /// Consumes a Kafka topic of notifications until the task is aborted: each record is
    /// ingested (retried while the log or store is unavailable) or dead-lettered, then committed.
    pub async fn consume_kafka(
        self: Arc<Self>,
        subscription: pinhive_log::kafka::TopicSubscription,
        topic: String,
    ) {
        loop {
            let record = match subscription.next().await {
                Ok(record) => record,
                Err(error) => {
                    tracing::warn!(topic = %topic, error = %error, "s3 notification consumer error");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut delay = std::time::Duration::from_millis(100);
            loop {
                match self.ingest(&record.payload).await {
                    Ok(outcomes) => {
                        for outcome in outcomes {
                            tracing::info!(bucket = %outcome.bucket, key = %outcome.key, action = outcome.action, "s3 notification applied");
                        }
                        break;
                    }
                    Err(S3Error::Malformed(reason)) => {
                        self.dead_letter(&topic, &record, reason).await;
                        break;
                    }
                    Err(over @ S3Error::OverQuota { .. }) => {
                        self.dead_letter(&topic, &record, over.to_string()).await;
                        break;
                    }
                    Err(S3Error::Transient(error)) => {
                        tracing::warn!(error = %error, "s3 notification not applied yet; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(std::time::Duration::from_secs(10));
                    }
                }
            }
            subscription.commit(&topic, &record);
        }
    }

    async fn dead_letter(
        &self,
        topic: &str,
        record: &pinhive_log::kafka::TopicRecord,
        reason: String,
    ) {
        tracing::warn!(topic, partition = record.partition, offset = record.offset, reason = %reason, "dead-lettering s3 notification");
        let reason = format!(
            "s3 notification ({topic}/{}/{}): {reason}",
            record.partition, record.offset
        );
        // S3 topic partitions are listed from u32::MAX downwards, apart from the event log's.
        let partition = u32::MAX - record.partition.max(0) as u32;
        let letter = pinhive_store::DeadLetter {
            partition,
            offset: record.offset.max(0) as u64,
            reason: reason.clone(),
            key: String::from_utf8_lossy(&record.key).into_owned(),
            value_prefix_hex: hex::encode(
                record.payload.iter().take(64).copied().collect::<Vec<u8>>(),
            ),
            dead_lettered_ns: pinhive_events::now_ns(),
        };
        let _ = self
            .blocking(move |store| store.put_dead_letter(&letter))
            .await;
        let published = self
            .log
            .dead_letter(&pinhive_log::DeadLetterRecord {
                partition,
                offset: record.offset.max(0) as u64,
                key: record.key.clone(),
                value: record.payload.clone(),
                content_type: pinhive_events::codec::ContentType::Json as u8,
                reason,
            })
            .await;
        if let Err(error) = published {
            tracing::warn!(error = %error, "could not publish the dead letter (kept in the store)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_minio_and_aws_style_notifications() {
        let minio = br#"{"EventName":"s3:ObjectCreated:Put","Key":"photos/a b.jpg","Records":[{"eventVersion":"2.0","eventSource":"minio:s3","eventName":"s3:ObjectCreated:Put","s3":{"bucket":{"name":"photos"},"object":{"key":"a+b%2Bc.jpg","size":5,"eTag":"e1","sequencer":"17A","userMetadata":{"X-Amz-Meta-Cid":"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy","content-type":"image/jpeg"}}}}]}"#;
        let parsed = parse(minio).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].key, "a b+c.jpg");
        assert_eq!(parsed[0].sequencer, "17A");
        assert!(matches!(parsed[0].change, Change::Created { .. }));
        let aws = br#"{"Records":[{"eventName":"ObjectRemoved:Delete","s3":{"bucket":{"name":"b"},"object":{"key":"k","sequencer":"0A"}}},{"eventName":"s3:TestEvent","s3":{"bucket":{"name":"b"},"object":{"key":"k"}}}]}"#;
        let parsed = parse(aws).unwrap();
        assert_eq!(parsed.len(), 1, "unrelated events are skipped");
        assert!(matches!(parsed[0].change, Change::Removed));
    }

    #[test]
    fn rejects_what_cannot_be_pinned() {
        for bad in [
            &b"not json"[..],
            br#"{"Records":[{"eventName":"s3:ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"k"}}}]}"#,
            br#"{"Records":[{"eventName":"s3:ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"k","userMetadata":{"x-amz-meta-cid":"nope"}}}}]}"#,
        ] {
            assert!(matches!(parse(bad), Err(S3Error::Malformed(_))));
        }
    }

    #[test]
    fn sequencers_order_events_per_key() {
        assert!(is_stale("0A", "0B"));
        assert!(!is_stale("0C", "0B"));
        assert!(!is_stale("", "0B"));
        assert!(!is_stale("100", "0B"), "different lengths are not compared");
    }
}
