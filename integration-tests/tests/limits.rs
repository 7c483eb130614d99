//! Limits between tenants, on the real binary over real HTTP: request rate limits per token
//! (429 + `Retry-After`), per-owner quotas on HTTP and on the Kafka path (tansu, an external
//! rdkafka producer), and fair sharing of a real js-ipfs node's slots while one tenant floods
//! it with content nobody has.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use pinhive_events::{codec, Envelope, Event, PinRequested};
use pinhive_integration_tests::{
    create_token, eventually, external_producer, free_port, metric_sum, Client, IpfsDaemon,
    Pinhive, Tansu,
};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use serde_json::json;

/// A CIDv1 (raw, sha2-256) of random bytes: content no node has, so a pin of it searches until
/// its timeout.
fn unfetchable_cid() -> String {
    let digest: [u8; 32] = rand::random();
    let mut bytes = vec![0x01, 0x55, 0x12, 0x20];
    bytes.extend_from_slice(&digest);
    cid::Cid::try_from(bytes).expect("a valid CID").to_string()
}

/// An IPFS node URL nothing listens on (tests that need no IPFS).
fn no_node() -> String {
    format!("ipfs-a=http://127.0.0.1:{}", free_port())
}

/// The Failure body's reason.
fn reason(body: &serde_json::Value) -> &str {
    body["error"]["reason"].as_str().unwrap_or_default()
}

/// A 429: its `Retry-After` says at least 1 s; its `Failure` body.
async fn refused(response: reqwest::Response) -> serde_json::Value {
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["Retry-After"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    response.json().await.unwrap()
}

/// `POST path` with `client`'s token: the response as it came (headers included).
async fn post_raw(client: &Client, path: &str, body: &serde_json::Value) -> reqwest::Response {
    client
        .http
        .post(format!("{}{path}", client.base))
        .bearer_auth(&client.token)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_the_rate_limit_gets_429_with_retry_after_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let alice = create_token(&data, "alice", false).unwrap();
    let bob = create_token(&data, "bob", false).unwrap();
    let node = no_node();
    let pinhive = Pinhive::start(
        &data,
        &[
            "--ipfs-node",
            &node,
            "--rate-limit-per-sec",
            "2",
            "--rate-limit-burst",
            "5",
        ],
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let list = |token: &str| {
        http.get(format!("{}/pins", pinhive.url))
            .bearer_auth(token)
            .send()
    };

    // The burst passes; the token is then over its limit (at 2/s, 20 quick requests cannot all
    // be refilled: at least 20 − 5 − 2·elapsed are refused).
    let started = Instant::now();
    let mut statuses = Vec::new();
    let mut refused = None;
    // Twenty requests, and more (at most 100) until one is refused: a machine slow enough to
    // refill the bucket between requests still gets there.
    for i in 0..100 {
        if i >= 20 && refused.is_some() {
            break;
        }
        let response = list(&alice).await.unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 && refused.is_none() {
            let retry_after = response
                .headers()
                .get("Retry-After")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .expect("a 429 carries Retry-After in seconds");
            let body: serde_json::Value = response.json().await.unwrap();
            refused = Some((retry_after, body));
        }
    }
    let elapsed = started.elapsed();
    assert!(
        statuses[..5].iter().all(|s| *s == 200),
        "the burst passes: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    if elapsed < Duration::from_secs(5) {
        assert!(
            statuses.iter().filter(|s| **s == 429).count() >= 5,
            "over the limit within {elapsed:?}: {statuses:?}"
        );
    }
    let (retry_after, body) = refused.expect("some requests were refused");
    assert_eq!(
        retry_after, 1,
        "2/s: the next request is allowed within 1 s"
    );
    assert_eq!(reason(&body), "TOO_MANY_REQUESTS", "{body}");
    assert!(
        body["error"]["details"]
            .as_str()
            .unwrap()
            .contains("rate limit"),
        "{body}"
    );

    // Per token: bob is not limited by alice's burst.
    assert_eq!(list(&bob).await.unwrap().status(), 200);

    // Alice recovers once the Retry-After delay has passed.
    let retry_at = Instant::now() + Duration::from_secs(retry_after);
    eventually(Duration::from_secs(5), "alice allowed again", || async {
        if Instant::now() < retry_at {
            return None;
        }
        (list(&alice).await.ok()?.status() == 200).then_some(())
    })
    .await;

    // A limited request costs no store read and leaves no trace: the rate-limit counter counts it.
    let metrics = http
        .get(format!("{}/metrics", pinhive.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("pinhive_http_limited_total{limit=\"rate\"}")),
        "{metrics}"
    );
}

/// Someone trying secrets from one address: each unknown token is a store read, allowed at
/// `--token-lookups-per-sec` (twice that at once); beyond it 429 with `Retry-After` before any
/// read, while a token already verified (cached) goes on working from the same address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tokens_from_one_address_are_limited_before_the_store_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let alice = create_token(&data, "alice", false).unwrap();
    let node = no_node();
    let pinhive = Pinhive::start(
        &data,
        &["--ipfs-node", &node, "--token-lookups-per-sec", "5"],
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let list = |token: String| {
        http.get(format!("{}/pins", pinhive.url))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(list(alice.clone()).await.unwrap().status(), 200);
    let mut unknown = 0;
    let over = loop {
        let response = list(format!("guess-{unknown}")).await.unwrap();
        match response.status().as_u16() {
            401 => unknown += 1,
            429 => break response,
            other => panic!("unexpected {other}"),
        }
        assert!(unknown < 100, "100 unknown tokens and none refused");
    };
    // The burst (10, Alice's first lookup one of them) passed, then lookups were refused.
    assert!(
        unknown >= 9,
        "only {unknown} unknown tokens before the limit"
    );
    let body = refused(over).await;
    assert_eq!(reason(&body), "TOO_MANY_REQUESTS", "{body}");
    // Alice's token was verified a moment ago: cached, it needs no lookup.
    assert_eq!(list(alice.clone()).await.unwrap().status(), 200);
    let limited = metric_sum(
        &pinhive.url,
        "pinhive_http_limited_total",
        "limit=\"token_lookup\"",
    )
    .await;
    assert!(limited >= 1.0, "{limited}");
}

async fn produce_pin(producer: &rdkafka::producer::FutureProducer, requestid: &str, owner: &str) {
    let cid = unfetchable_cid();
    let event = Event::PinRequested(PinRequested {
        requestid: requestid.into(),
        owner: owner.into(),
        cid: cid.clone(),
        name: Some(requestid.into()),
        origins: vec![],
        meta: BTreeMap::new(),
        created_ns: pinhive_events::now_ns(),
        replicas_min: 1,
        replicas_max: 1,
        replaces: None,
    });
    let envelope = Envelope::new(cid.clone(), event);
    let headers = OwnedHeaders::new().insert(Header {
        key: "content-type",
        value: Some("application/json"),
    });
    producer
        .send(
            FutureRecord::to("pinhive-events")
                .key(&cid)
                .payload(&codec::encode_json(&envelope))
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// Max pins: 403 `PIN_QUOTA_EXCEEDED` on HTTP, a dead letter naming the quota on Kafka, and
/// room again once a pin is deleted. Max in flight: 429 `IN_FLIGHT_QUOTA_EXCEEDED` with
/// `Retry-After` on HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_refuse_over_limit_requests_on_http_and_on_kafka() {
    let tansu = Tansu::start().await.expect("tansu broker");
    let ipfs = IpfsDaemon::start().await.expect("js-ipfs daemon");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let alice = create_token(&data, "alice", false).unwrap();
    let bob = create_token(&data, "bob", false).unwrap();
    let admin = create_token(&data, "ops", true).unwrap();
    let node = format!("ipfs-a={}", ipfs.api_url);
    let log = format!("kafka://{}", tansu.bootstrap);
    let pinhive = Pinhive::start(
        &data,
        &[
            "--log",
            &log,
            "--partitions",
            "4",
            "--ipfs-node",
            &node,
            "--quota-max-pins",
            "3",
            "--quota-max-in-flight",
            "2",
        ],
    )
    .await
    .unwrap();
    let (alice, bob, admin) = (
        Client::new(&pinhive.url, &alice),
        Client::new(&pinhive.url, &bob),
        Client::new(&pinhive.url, &admin),
    );

    // Alice: two pins of content the node has (they settle: not in flight), one of content
    // nobody has (in flight) — 3 pins, her most.
    let mut kept = Vec::new();
    for i in 0..2 {
        let cid = ipfs
            .add(format!("quota content {i}").as_bytes(), 1)
            .await
            .unwrap();
        let pinned = alice.pin_and_wait_pinned(json!({"cid": cid})).await;
        kept.push(pinned["requestid"].as_str().unwrap().to_string());
    }
    // (The two pins just made count as in flight until the usage is read again from the
    // counters, at most 1 s later: a 429 until then, as a client retrying after
    // `Retry-After` would see.)
    eventually(Duration::from_secs(10), "a third pin admitted", || async {
        let (status, body) = alice.pin(json!({"cid": unfetchable_cid()})).await;
        match status {
            202 => Some(()),
            429 => None,
            other => panic!("unexpected {other}: {body}"),
        }
    })
    .await;
    let (status, body) = alice.pin(json!({"cid": unfetchable_cid()})).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(reason(&body), "PIN_QUOTA_EXCEEDED", "{body}");
    let details = body["error"]["details"].as_str().unwrap();
    assert!(
        details.contains("holds 3 pins") && details.contains("is 3"),
        "{details}"
    );

    // The same owner over its quota through an external Kafka producer: a dead letter that
    // says so, and no pin.
    let producer = external_producer(&tansu.bootstrap);
    produce_pin(&producer, "kafka-over-quota", "alice").await;
    let letter = eventually(
        Duration::from_secs(30),
        "a dead letter for the over-quota record",
        || async {
            admin
                .dead_letter_reasons()
                .await
                .into_iter()
                .find(|r| r.contains("quota exceeded") && r.contains("alice"))
        },
    )
    .await;
    assert!(letter.contains("holds 3 pins"), "{letter}");
    let (status, _) = alice.get("/pins/kafka-over-quota").await;
    assert_eq!(status, 404);
    // Under its quota, the same path pins (bob has none).
    produce_pin(&producer, "kafka-within-quota", "bob").await;
    eventually(Duration::from_secs(30), "bob's Kafka pin", || async {
        (bob.get("/pins/kafka-within-quota").await.0 == 200).then_some(())
    })
    .await;

    // Deleting a pin makes room (once the counters show it: within the usage refresh, 1 s).
    let (status, _) = alice.delete(&format!("/pins/{}", kept[0])).await;
    assert_eq!(status, 202);
    let started = Instant::now();
    eventually(Duration::from_secs(10), "room after a delete", || async {
        let (status, body) = alice.pin(json!({"cid": unfetchable_cid()})).await;
        match status {
            202 => Some(()),
            403 => None,
            other => panic!("unexpected {other}: {body}"),
        }
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));

    // Bob: one pin in flight already (Kafka); one more is his most; the next is 429 with
    // Retry-After.
    let (status, body) = bob.pin(json!({"cid": unfetchable_cid()})).await;
    assert_eq!(status, 202, "{body}");
    let body = refused(post_raw(&bob, "/pins", &json!({"cid": unfetchable_cid()})).await).await;
    assert_eq!(reason(&body), "IN_FLIGHT_QUOTA_EXCEEDED", "{body}");
    assert!(
        body["error"]["details"]
            .as_str()
            .unwrap()
            .contains("2 pins queued or pinning"),
        "{body}"
    );
}

/// Tenant A floods the node with 500 pins of content nobody has (each holding a slot for its
/// whole pin timeout, far longer than this test); tenant B's pins of content the node has
/// still reach `pinned` within `BOUND` of their request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_flooding_unfetchable_cids_does_not_starve_another() {
    const FLOOD: usize = 500;
    const BOUND: Duration = Duration::from_secs(10);
    let ipfs = IpfsDaemon::start().await.expect("js-ipfs daemon");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let flooder = create_token(&data, "flooder", false).unwrap();
    let tenant = create_token(&data, "tenant", false).unwrap();
    let node = format!("ipfs-a={}", ipfs.api_url);
    // Pins search for 120 s: without fair sharing the flood holds every slot for the whole
    // test, and B's pins would wait at least that long.
    let pinhive = Pinhive::start(
        &data,
        &[
            "--ipfs-node",
            &node,
            "--pin-timeout-secs",
            "120",
            "--replicas-max",
            "1",
            "--health-interval-secs",
            "1",
        ],
    )
    .await
    .unwrap();
    let (flooder, tenant) = (
        Client::new(&pinhive.url, &flooder),
        Client::new(&pinhive.url, &tenant),
    );
    eventually(Duration::from_secs(30), "/ready", || async {
        let r = reqwest::get(format!("{}/ready", pinhive.url)).await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;

    let flood: Vec<u16> = futures::stream::iter(0..FLOOD)
        .map(|_| {
            let flooder = flooder.clone();
            async move { flooder.pin(json!({"cid": unfetchable_cid()})).await.0 }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(flood.iter().all(|s| *s == 202), "{flood:?}");
    // The flood holds every slot an owner alone may take (32 − the reserve of 8).
    eventually(
        Duration::from_secs(30),
        "the flood to hold the node's slots",
        || async {
            let running = metric_sum(&pinhive.url, "pinhive_ipfs_commands_running", "").await;
            (running >= 24.0).then_some(())
        },
    )
    .await;

    for i in 0..5 {
        let cid = ipfs
            .add(format!("tenant content {i}").as_bytes(), 1)
            .await
            .unwrap();
        let asked = Instant::now();
        let (status, created) = tenant.pin(json!({"cid": cid})).await;
        assert_eq!(status, 202, "{created}");
        let requestid = created["requestid"].as_str().unwrap();
        tenant.wait_status(requestid, "pinned", BOUND).await;
        assert!(
            asked.elapsed() < BOUND,
            "tenant pin {i} took {:?}",
            asked.elapsed()
        );
        assert!(ipfs.is_pinned(&cid).await.unwrap());
    }
    // The flood is still there, unpinned (its searches run on).
    let (_, queued) = flooder.get("/pins?status=queued,pinning&limit=1").await;
    assert!(
        queued["count"].as_u64().unwrap_or(0) > (FLOOD as u64) / 2,
        "{queued}"
    );
}

/// A webhook notification of one object in bucket `docs` (content: an unfetchable CID).
fn s3_notification(key: &str) -> serde_json::Value {
    json!({"Records": [{
        "eventName": "s3:ObjectCreated:Put",
        "s3": {"bucket": {"name": "docs"},
               "object": {"key": key, "sequencer": "0A",
                          "userMetadata": {"x-amz-meta-cid": unfetchable_cid()}}}
    }]})
}

/// Keys of the objects pinhive maps in bucket `docs`.
async fn s3_keys(admin: &Client) -> Vec<String> {
    let (_, body) = admin.get("/admin/s3/objects?bucket=docs").await;
    body["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["key"].as_str().map(str::to_string))
        .collect()
}

/// The S3 owner's quotas on both S3 paths. Max pins: the webhook answers 403
/// `PIN_QUOTA_EXCEEDED`, and a notification from the S3 topic is a dead letter naming the quota;
/// neither maps the object. Max in flight: the webhook answers 429 `IN_FLIGHT_QUOTA_EXCEEDED`
/// with `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_owner_over_its_quota_is_refused_on_the_webhook_and_dead_lettered_from_the_topic() {
    let tansu = Tansu::start().await.expect("tansu broker");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let admin = create_token(&data, "ops", true).unwrap();
    let log = format!("kafka://{}", tansu.bootstrap);
    let node = no_node();
    let pinhive = Pinhive::start(
        &data,
        &[
            "--log",
            &log,
            "--partitions",
            "4",
            "--s3-topic",
            "pinhive-s3",
            "--ipfs-node",
            &node,
            "--quota-max-pins",
            "1",
        ],
    )
    .await
    .unwrap();
    let admin = Client::new(&pinhive.url, &admin);
    let (status, body) = admin
        .post("/admin/s3/events", &s3_notification("first.pdf"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["applied"][0]["action"], "pinned", "{body}");
    let (status, body) = admin
        .post("/admin/s3/events", &s3_notification("second.pdf"))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(reason(&body), "PIN_QUOTA_EXCEEDED", "{body}");
    assert!(
        body["error"]["details"]
            .as_str()
            .unwrap_or_default()
            .contains("holds 1 pins"),
        "{body}"
    );

    // The same over the S3 topic (an external producer, as an S3 gateway publishes).
    let producer = external_producer(&tansu.bootstrap);
    producer
        .send(
            FutureRecord::to("pinhive-s3")
                .key("docs/third.pdf")
                .payload(&s3_notification("third.pdf").to_string()),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let letter =
        eventually(
            Duration::from_secs(30),
            "a dead letter for the over-quota notification",
            || async {
                admin.dead_letter_reasons().await.into_iter().find(|r| {
                    r.starts_with("s3 notification (pinhive-s3/") && r.contains("third.pdf")
                })
            },
        )
        .await;
    assert!(letter.contains("quota exceeded"), "{letter}");
    assert_eq!(
        s3_keys(&admin).await,
        ["first.pdf"],
        "refused objects are not mapped"
    );

    // Max in flight (no node: the first pin stays queued, in flight).
    let data = dir.path().join("in-flight");
    let token = create_token(&data, "ops", true).unwrap();
    let node = no_node();
    let pinhive = Pinhive::start(&data, &["--ipfs-node", &node, "--quota-max-in-flight", "1"])
        .await
        .unwrap();
    let admin = Client::new(&pinhive.url, &token);
    let (status, body) = admin
        .post("/admin/s3/events", &s3_notification("first.pdf"))
        .await;
    assert_eq!(status, 200, "{body}");
    let body =
        refused(post_raw(&admin, "/admin/s3/events", &s3_notification("second.pdf")).await).await;
    assert_eq!(reason(&body), "IN_FLIGHT_QUOTA_EXCEEDED", "{body}");
    assert_eq!(s3_keys(&admin).await, ["first.pdf"]);
}
