//! Every class of bad record an external Kafka producer can send is dead-lettered with its
//! reason by the shard that reads it, and the shard goes on: later valid records apply, counters
//! and listings stay exact. The producer is a separate rdkafka client writing JSON, the way any
//! external system would; the broker is tansu, the daemon js-ipfs, pinhive the real binary.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use cid::multibase::Base;
use pinhive_events::{codec, Envelope, Event, PinRequested, Replaces};
use pinhive_integration_tests::{
    create_token, eventually, external_producer, Client, IpfsDaemon, Pinhive, Tansu,
};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

const CONVERGE: Duration = Duration::from_secs(60);

fn request(requestid: &str, owner: &str, cid: &str) -> PinRequested {
    PinRequested {
        requestid: requestid.into(),
        owner: owner.into(),
        cid: cid.into(),
        name: Some(requestid.into()),
        origins: vec![],
        meta: BTreeMap::new(),
        created_ns: pinhive_events::now_ns(),
        replicas_min: 1,
        replicas_max: 1,
        replaces: None,
    }
}

async fn produce(producer: &FutureProducer, key: &str, event: Event) {
    let envelope = Envelope::new(key.to_string(), event);
    let headers = OwnedHeaders::new().insert(Header {
        key: "content-type",
        value: Some("application/json"),
    });
    producer
        .send(
            FutureRecord::to("pinhive-events")
                .key(key)
                .payload(&codec::encode_json(&envelope))
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_external_records_are_dead_lettered_and_the_shard_goes_on() {
    let tansu = Tansu::start().await.expect("tansu broker");
    let ipfs = IpfsDaemon::start().await.expect("js-ipfs daemon");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let alice = create_token(&data, "alice", false).unwrap();
    let admin = create_token(&data, "ops", true).unwrap();
    let node = format!("ipfs-a={}", ipfs.api_url);
    let log = format!("kafka://{}", tansu.bootstrap);
    let pinhive = Pinhive::start(
        &data,
        &["--log", &log, "--partitions", "4", "--ipfs-node", &node],
    )
    .await
    .unwrap();
    let (alice, admin) = (
        Client::new(&pinhive.url, &alice),
        Client::new(&pinhive.url, &admin),
    );
    let producer = external_producer(&tansu.bootstrap);

    // Alice's pin through the API, which a forger will try to unpin.
    let cid = ipfs.add(b"admission", 1).await.unwrap();
    let pinned = alice
        .pin_and_wait_pinned(serde_json::json!({"cid": cid, "name": "kept"}))
        .await;
    let kept = pinned["requestid"].as_str().unwrap().to_string();
    // Another CID, on which a forger tries to reuse alice's request id (taking over her row).
    let other = ipfs.add(b"admission, other content", 1).await.unwrap();
    let base58 = cid::Cid::from_str(&cid)
        .unwrap()
        .to_string_of_base(Base::Base58Btc)
        .unwrap();

    // One record per class of bad input, each with the reason it must be refused for.
    let mut bad: Vec<(String, Event, &str)> = vec![
        (
            cid.clone(),
            Event::PinRequested(PinRequested {
                owner: "#all".into(),
                ..request("bad-owner", "alice", &cid)
            }),
            "invalid owner",
        ),
        (
            cid.clone(),
            Event::PinRequested(PinRequested {
                name: Some("nul\0name".into()),
                ..request("bad-name", "alice", &cid)
            }),
            "invalid name",
        ),
        (
            "not-a-cid".into(),
            Event::PinRequested(request("bad-cid", "alice", "not-a-cid")),
            "invalid cid",
        ),
        (
            base58.clone(),
            Event::PinRequested(request("bad-key", "alice", &base58)),
            "is not the canonical form",
        ),
        (
            cid.clone(),
            Event::PinRequested(PinRequested {
                replaces: Some(Replaces {
                    requestid: kept.clone(),
                    cid: cid.clone(),
                }),
                ..request("bad-replace", "mallory", &cid)
            }),
            "cannot replace",
        ),
        (
            cid.clone(),
            Event::ReplicaPinned {
                node: "ipfs-a".into(),
                delegates: vec![],
                attempts: u32::MAX,
                duration_ms: 1,
            },
            "replica_pinned events are produced by pinhive only",
        ),
        (
            cid.clone(),
            Event::ReplicaFailed {
                node: "ipfs-a".into(),
                reason: "forged".into(),
                attempts: u32::MAX,
            },
            "replica_failed events are produced by pinhive only",
        ),
        (
            cid.clone(),
            Event::UnpinRequested {
                requestid: kept.clone(),
                owner: "mallory".into(),
            },
            "belongs to another owner",
        ),
        (
            other.clone(),
            Event::PinRequested(request(&kept, "mallory", &other)),
            "is already in use",
        ),
    ];
    for (key, event, _) in &bad {
        produce(&producer, key, event.clone()).await;
    }
    // Then valid records on the same key: the shard went on past the bad ones.
    produce(
        &producer,
        &cid,
        Event::PinRequested(request("good-1", "alice", &cid)),
    )
    .await;

    let expected: Vec<&str> = bad.iter().map(|(_, _, reason)| *reason).collect();
    let reasons = eventually(CONVERGE, "every bad record dead-lettered", || async {
        let reasons = admin.dead_letter_reasons().await;
        (reasons.len() >= expected.len()).then_some(reasons)
    })
    .await;
    assert_eq!(reasons.len(), expected.len(), "{reasons:?}");
    for reason in &expected {
        assert!(
            reasons.iter().any(|r| r.contains(reason)),
            "no dead letter says {reason:?}: {reasons:?}"
        );
    }
    alice.wait_status("good-1", "pinned", CONVERGE).await;

    // Nothing the bad records asked for happened: alice's pin is there and pinned, no pin of
    // the refused request ids exists, and the counters (the listing's count) are exact.
    let (_, kept_now) = alice.get(&format!("/pins/{kept}")).await;
    assert_eq!(kept_now["status"], "pinned", "{kept_now}");
    assert_eq!(
        kept_now["pin"]["cid"],
        cid.as_str(),
        "the row was not taken over"
    );
    for (_, event, _) in bad.drain(..) {
        match event {
            Event::PinRequested(r) if r.requestid != kept => {
                assert_eq!(alice.get(&format!("/pins/{}", r.requestid)).await.0, 404);
            }
            _ => {}
        }
    }
    let (_, page) = alice.get("/pins?status=queued,pinning,pinned,failed").await;
    assert_eq!(page["count"], 2, "{page}");
    assert_eq!(page["results"].as_array().unwrap().len(), 2, "{page}");
    assert!(ipfs.is_pinned(&cid).await.unwrap());
    let metrics = reqwest::get(format!("{}/metrics", pinhive.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let pinned_total: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("pinhive_pins{") && l.contains("status=\"pinned\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(
        pinned_total, 2.0,
        "the all-owners gauge counts alice's two pins"
    );
}
