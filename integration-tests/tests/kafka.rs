//! Kafka mode against a real Kafka-protocol broker (tansu): the log adapter round-trips and
//! partitions like the Java client; pinhive pins through Kafka end to end on a real js-ipfs
//! daemon; an external JSON producer (a separate rdkafka client, not pinhive's code) pins; a
//! malformed record is dead-lettered and the consumer keeps going.

use std::time::{Duration, Instant};

use pinhive_events::{codec, Envelope, Event, PinRequested};
use pinhive_integration_tests::{
    create_token, external_producer, Client, IpfsDaemon, Pinhive, Tansu,
};
use pinhive_log::{KafkaLog, KafkaLogConfig, Log, Record};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::ClientConfig;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_log_round_trips_and_partitions_like_the_java_client() {
    let tansu = Tansu::start().await.expect("tansu broker");
    let log = KafkaLog::open(KafkaLogConfig {
        brokers: tansu.bootstrap.clone(),
        topic: "contract".into(),
        partitions: 4,
        replication: 1,
        retention_ms: Some(-1),
    })
    .await
    .unwrap();
    assert_eq!(log.partition_count(), 4);
    let mut expected: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 4];
    let mut records = Vec::new();
    for i in 0..200 {
        let envelope = Envelope::new(
            format!("key-{}", i % 23),
            Event::ReplicaUnpinned {
                node: format!("n{i}"),
            },
        );
        records.push(Record::from_envelope(&envelope));
    }
    let positions = log.append(records.clone()).await.unwrap();
    for (record, position) in records.iter().zip(&positions) {
        assert_eq!(position.partition, log.partition_for(&record.key));
        expected[position.partition as usize].push(record.value.clone());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for partition in 0..4 {
        let mut got = Vec::new();
        let mut from = 0;
        while got.len() < expected[partition as usize].len() {
            assert!(
                Instant::now() < deadline,
                "partition {partition}: read {} of {} records",
                got.len(),
                expected[partition as usize].len()
            );
            let batch = log.read(partition, from, 1 << 20).await.unwrap();
            if let Some(last) = batch.last() {
                from = last.next_offset;
            }
            got.extend(batch.into_iter().map(|r| r.record.unwrap().value));
        }
        assert_eq!(
            got, expected[partition as usize],
            "partition {partition} in order"
        );
    }

    // librdkafka's murmur2_random (the Java client's default) puts keys where pinhive does.
    let producer = external_producer(&tansu.bootstrap);
    for i in 0..50 {
        let key = format!("bafy-external-{i}");
        let delivered = producer
            .send(
                FutureRecord::to("contract").key(&key).payload("x"),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        assert_eq!(
            delivered.partition as u32,
            log.partition_for(key.as_bytes()),
            "{key}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_flow_through_kafka_including_external_json_producers() {
    let tansu = Tansu::start().await.expect("tansu broker");
    let ipfs = IpfsDaemon::start().await.expect("js-ipfs daemon");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "alice", false).unwrap();
    let admin = create_token(&data, "ops", true).unwrap();
    let node = format!("ipfs-a={}", ipfs.api_url);
    let log = format!("kafka://{}", tansu.bootstrap);
    let pinhive = Pinhive::start(
        &data,
        &["--log", &log, "--partitions", "8", "--ipfs-node", &node],
    )
    .await
    .unwrap();
    let client = Client::new(&pinhive.url, &token);

    // `pinhive check` reaches the broker, sees the topic, the (running) store and the node.
    let check = std::process::Command::new(pinhive_integration_tests::binary())
        .args(["check", "--log", &log, "--ipfs-node", &node, "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(
        check.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        report.contains("topic pinhive-events has 8 partitions"),
        "{report}"
    );
    assert!(report.contains("held by a running pinhive"), "{report}");

    // Through the HTTP API, with Kafka as the log.
    let cid = ipfs.add(b"through kafka", 1).await.unwrap();
    client
        .pin_and_wait_pinned(json!({"cid": cid, "name": "via-http"}))
        .await;
    assert!(ipfs.is_pinned(&cid).await.unwrap());

    // An external producer: a malformed JSON record, then a valid pin request, same key.
    let external_cid = ipfs.add(b"external producer", 1).await.unwrap();
    let producer = external_producer(&tansu.bootstrap);
    let json_headers = || {
        OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some("application/json"),
        })
    };
    producer
        .send(
            FutureRecord::to("pinhive-events")
                .key(&external_cid)
                .payload("{\"schema_version\": 1, \"event\": ")
                .headers(json_headers()),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let envelope = Envelope::new(
        external_cid.clone(),
        Event::PinRequested(PinRequested {
            requestid: "external-1".into(),
            owner: "alice".into(),
            cid: external_cid.clone(),
            name: Some("via-kafka".into()),
            origins: vec![],
            meta: Default::default(),
            created_ns: pinhive_events::now_ns(),
            replicas_min: 1,
            replicas_max: 1,
            replaces: None,
        }),
    );
    producer
        .send(
            FutureRecord::to("pinhive-events")
                .key(&external_cid)
                .payload(&codec::encode_json(&envelope))
                .headers(json_headers()),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let pinned = client
        .wait_status("external-1", "pinned", Duration::from_secs(60))
        .await;
    assert_eq!(pinned["pin"]["name"], "via-kafka");
    assert!(ipfs.is_pinned(&external_cid).await.unwrap());

    // No wait needed: the malformed record precedes the pin request on the same partition (same
    // key, sent after the first delivery was acknowledged), and the shard writes a record's dead
    // letter while applying its batch, before that batch's state: once `external-1` is visible,
    // the dead letter is recorded.
    let admin = Client::new(&pinhive.url, &admin);
    let reasons = admin.dead_letter_reasons().await;
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].contains("json"), "{reasons:?}");

    // The dead-letter topic carries the record and the reason in a header.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &tansu.bootstrap)
        .set("group.id", "test-reader")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset("pinhive-events.dead-letters", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let letter = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
                let reason = message
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == "reason"))
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned());
                return Some((message.key().map(<[u8]>::to_vec), reason));
            }
        }
        None
    })
    .await
    .unwrap()
    .expect("a record on the dead-letter topic");
    assert_eq!(letter.0.as_deref(), Some(external_cid.as_bytes()));
    assert!(letter.1.unwrap_or_default().contains("json"));
}

fn s3_event(name: &str, key: &str, sequencer: &str, cid: Option<&str>) -> String {
    let metadata = cid
        .map(|c| json!({"X-Amz-Meta-Cid": c, "content-type": "image/jpeg"}))
        .unwrap_or(json!({}));
    json!({
        "EventName": name,
        "Key": format!("photos/{key}"),
        "Records": [{
            "eventVersion": "2.0",
            "eventSource": "minio:s3",
            "eventName": name,
            "s3": {
                "bucket": {"name": "photos"},
                "object": {"key": key, "size": 12, "sequencer": sequencer, "userMetadata": metadata}
            }
        }]
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_notifications_pin_replace_and_unpin_objects() {
    let tansu = Tansu::start().await.expect("tansu broker");
    let ipfs = IpfsDaemon::start().await.expect("js-ipfs daemon");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let owner = create_token(&data, "s3", false).unwrap();
    let admin = create_token(&data, "ops", true).unwrap();
    let node = format!("ipfs-a={}", ipfs.api_url);
    let log = format!("kafka://{}", tansu.bootstrap);
    let pinhive = Pinhive::start(
        &data,
        &[
            "--log",
            &log,
            "--s3-topic",
            "pinhive-s3",
            "--ipfs-node",
            &node,
        ],
    )
    .await
    .unwrap();
    let (client, admin) = (
        Client::new(&pinhive.url, &owner),
        Client::new(&pinhive.url, &admin),
    );
    let v1 = ipfs.add(b"cat picture, first version", 1).await.unwrap();
    let v2 = ipfs.add(b"cat picture, second version", 1).await.unwrap();
    let producer = external_producer(&tansu.bootstrap);
    let send = |payload: String| {
        let producer = producer.clone();
        async move {
            producer
                .send(
                    FutureRecord::to("pinhive-s3")
                        .key("photos/2024/cat.jpg")
                        .payload(&payload),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    };
    let object = |admin: Client| async move {
        let (_, body) = admin
            .get("/admin/s3/objects?bucket=photos&prefix=2024%2F")
            .await;
        body["objects"].as_array().cloned().unwrap_or_default()
    };

    // Created: pinned under the object key as its name.
    send(s3_event(
        "s3:ObjectCreated:Put",
        "2024/cat.jpg",
        "0001",
        Some(&v1),
    ))
    .await;
    let first =
        pinhive_integration_tests::eventually(Duration::from_secs(60), "object mapped", || async {
            let objects = object(admin.clone()).await;
            objects.first().filter(|o| o["cid"] == v1.as_str()).cloned()
        })
        .await;
    let r1 = first["requestid"].as_str().unwrap().to_string();
    let pinned = client
        .wait_status(&r1, "pinned", Duration::from_secs(60))
        .await;
    assert_eq!(pinned["pin"]["name"], "2024/cat.jpg");
    assert!(ipfs.is_pinned(&v1).await.unwrap());

    // Overwritten with new content: the pin moves; the old content is released.
    send(s3_event(
        "s3:ObjectCreated:Put",
        "2024/cat.jpg",
        "0002",
        Some(&v2),
    ))
    .await;
    let second =
        pinhive_integration_tests::eventually(Duration::from_secs(60), "mapping moved", || async {
            let objects = object(admin.clone()).await;
            objects.first().filter(|o| o["cid"] == v2.as_str()).cloned()
        })
        .await;
    let r2 = second["requestid"].as_str().unwrap().to_string();
    client
        .wait_status(&r2, "pinned", Duration::from_secs(60))
        .await;
    // The mapping and the pins converge independently (docs/kafka.md): the replaced pin leaves
    // the API when its own partition applies `PinReplaced`, not when the mapping moves.
    pinhive_integration_tests::eventually(Duration::from_secs(60), "r1 replaced", || async {
        (client.get(&format!("/pins/{r1}")).await.0 == 404).then_some(())
    })
    .await;
    pinhive_integration_tests::eventually(
        Duration::from_secs(60),
        "old version unpinned",
        || async { (!ipfs.is_pinned(&v1).await.ok()?).then_some(()) },
    )
    .await;
    // The mapping by CID is written in the same store batch as the object row waited for above.
    let (_, by_cid) = admin.get(&format!("/admin/s3/cids/{v2}")).await;
    assert_eq!(by_cid["objects"][0]["key"], "2024/cat.jpg", "{by_cid}");
    let (_, by_old) = admin.get(&format!("/admin/s3/cids/{v1}")).await;
    assert!(by_old["objects"].as_array().unwrap().is_empty());

    // A stale event (older sequencer) changes nothing; a notification without a CID is
    // dead-lettered; removal unpins.
    send(s3_event(
        "s3:ObjectCreated:Put",
        "2024/cat.jpg",
        "0000",
        Some(&v1),
    ))
    .await;
    send(s3_event(
        "s3:ObjectCreated:Put",
        "2024/dog.jpg",
        "0001",
        None,
    ))
    .await;
    send(s3_event(
        "s3:ObjectRemoved:Delete",
        "2024/cat.jpg",
        "0003",
        None,
    ))
    .await;
    pinhive_integration_tests::eventually(Duration::from_secs(60), "object removed", || async {
        object(admin.clone()).await.is_empty().then_some(())
    })
    .await;
    pinhive_integration_tests::eventually(Duration::from_secs(60), "r2 unpinned", || async {
        (client.get(&format!("/pins/{r2}")).await.0 == 404).then_some(())
    })
    .await;
    pinhive_integration_tests::eventually(
        Duration::from_secs(60),
        "removed object unpinned",
        || async { (!ipfs.is_pinned(&v2).await.ok()?).then_some(()) },
    )
    .await;
    // No wait needed: the ingester handles the notifications of one S3 topic partition in order
    // (all share one key) and stores a dead letter before taking the next one, so the removal
    // waited for above implies the earlier dead letter.
    let reasons = admin.dead_letter_reasons().await;
    assert!(reasons.iter().any(|r| r.contains("no CID")), "{reasons:?}");
    assert!(
        !ipfs.is_pinned(&v1).await.unwrap(),
        "the stale event did not re-pin v1"
    );
}
