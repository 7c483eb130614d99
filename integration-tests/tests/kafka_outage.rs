//! A Kafka outage, end to end: the real binary on a tansu broker that the test cuts off (every
//! connection closed, new ones refused) and back on. While cut, writes answer 503 with
//! `Retry-After` and a spec `Failure` body once librdkafka gives up on their delivery
//! (`message.timeout.ms`, 30 s), the outage is logged once rather than per request, and
//! `/ready` says the log is unavailable; once the link is back, `/ready` recovers without a
//! write, and a client honouring `Retry-After` gets its write acknowledged.

use std::time::Duration;

use pinhive_integration_tests::{
    check_response, content_type, create_token, eventually, Client, IpfsDaemon, Pinhive, Tansu,
};
use serde_json::{json, Value};

/// Longest a write may take to fail during the outage: librdkafka's delivery timeout (30 s)
/// plus a margin.
const OUTAGE_ANSWER: Duration = Duration::from_secs(50);

async fn ready(pinhive: &Pinhive) -> Option<(u16, Value)> {
    let response = reqwest::get(format!("{}/ready", pinhive.url)).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}

/// POST /pins; returns the status, the `Retry-After` header and the body, checked against the
/// Pinning Service API spec.
async fn post_pin(client: &Client, cid: &str) -> (u16, Option<String>, Value) {
    let response = client
        .request(reqwest::Method::POST, "/pins")
        .timeout(OUTAGE_ANSWER)
        .json(&json!({ "cid": cid }))
        .send()
        .await
        .expect("an answer before the client's timeout");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("Retry-After")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let url = response.url().clone();
    let content_type = content_type(&response);
    let bytes = response.bytes().await.unwrap();
    check_response(
        &reqwest::Method::POST,
        &url,
        status,
        content_type.as_deref(),
        &bytes,
    );
    (status, retry_after, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_answers_503_with_retry_after_and_ready_follows_the_log() {
    let (tansu, link) = Tansu::start_behind_link().await.expect("tansu broker");
    let bootstrap = tansu.bootstrap.clone();
    let ipfs = IpfsDaemon::start().await.expect("js-ipfs daemon");
    let cids: Vec<String> = {
        let mut cids = Vec::new();
        for i in 0..8 {
            let data = format!("kafka outage {i}");
            cids.push(ipfs.add(data.as_bytes(), 1).await.unwrap());
        }
        cids
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "alice", false).unwrap();
    let node = format!("ipfs-a={}", ipfs.api_url);
    let log = format!("kafka://{bootstrap}");
    let pinhive = Pinhive::start(
        &data,
        &["--log", &log, "--partitions", "4", "--ipfs-node", &node],
    )
    .await
    .unwrap();
    let client = Client::new(&pinhive.url, &token);

    eventually(Duration::from_secs(60), "/ready", || async {
        ready(&pinhive).await.filter(|(status, _)| *status == 200)
    })
    .await;
    let (status, _, body) = post_pin(&client, &cids[0]).await;
    assert_eq!(status, 202, "{body}");

    link.cut();
    let failing = futures::future::join_all(cids[1..6].iter().map(|cid| post_pin(&client, cid)));
    for (status, retry_after, body) in failing.await {
        assert_eq!(status, 503, "{body}");
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert_eq!(body["error"]["reason"], "SERVICE_UNAVAILABLE", "{body}");
        let details = body["error"]["details"].as_str().unwrap_or_default();
        assert!(details.contains("log is unavailable"), "{details}");
    }
    let (status, body) = ready(&pinhive).await.expect("/ready answers");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false, "{body}");
    assert_eq!(body["log"]["ok"], false, "{body}");
    assert_eq!(body["log"]["available"], false, "{body}");
    assert!(body["log"]["unavailable_since"].is_string(), "{body}");
    assert!(body["log"]["failed_appends"].as_u64() >= Some(5), "{body}");
    assert_eq!(body["store"]["ok"], true, "{body}");
    assert_eq!(body["ipfs"]["ok"], true, "{body}");

    // Five failed requests, no error line per request: the outage is logged once per log.
    let lines = std::fs::read_to_string(&pinhive.log_path).unwrap();
    let per_request = lines
        .lines()
        .filter(|line| line.contains("internal error answering a request"))
        .count();
    assert_eq!(per_request, 0, "{}", pinhive.log_tail());
    let outage_lines = lines
        .lines()
        .filter(|line| line.contains("log unavailable: appends fail"))
        .filter(|line| line.contains("pinhive-events"))
        .count();
    assert_eq!(outage_lines, 1, "{}", pinhive.log_tail());
    // librdkafka's "all brokers down", from every client at every reconnect: a rate-limited
    // WARN, not an ERROR stream.
    let client_errors = lines
        .lines()
        .filter(|line| line.contains("ERROR") && line.contains("librdkafka"))
        .count();
    assert_eq!(client_errors, 0, "{}", pinhive.log_tail());

    // Back on: /ready recovers without a write (its probe finds the broker), then writes do.
    link.restore();
    eventually(
        Duration::from_secs(60),
        "/ready after the outage",
        || async { ready(&pinhive).await.filter(|(status, _)| *status == 200) },
    )
    .await;
    // A client that honours Retry-After gets its write acknowledged; meanwhile every answer
    // is a 503 with Retry-After (never a 500): a delivery that timed out in the outage can
    // leave librdkafka's idempotent producer fenced, and the log replaces it.
    let body = eventually(
        Duration::from_secs(120),
        "a write after the outage",
        || async {
            let (status, retry_after, body) = post_pin(&client, &cids[6]).await;
            if status == 202 {
                return Some(body);
            }
            assert_eq!((status, retry_after.as_deref()), (503, Some("1")), "{body}");
            None
        },
    )
    .await;
    let requestid = body["requestid"].as_str().unwrap().to_string();
    client
        .wait_status(&requestid, "pinned", Duration::from_secs(60))
        .await;
    let (_, body) = ready(&pinhive).await.expect("/ready answers");
    assert_eq!(body["log"]["available"], true, "{body}");
    assert!(body["log"]["last_append_ok"].is_string(), "{body}");
}
