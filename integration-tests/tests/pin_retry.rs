//! Failed pins on a real js-ipfs daemon: a CID nobody provides fails (short pin timeout), is
//! retried automatically with a growing backoff up to the limit, then shows `failed` with the
//! reason; once the content is there, `pinhive pins recover` (the real binary, by request id
//! and `--all-failed`) makes it retry and it ends `pinned`.

use std::process::Command;
use std::time::Duration;

use pinhive_integration_tests::{binary, create_token, Client, IpfsDaemon, Pinhive};
use serde_json::{json, Value};

const CONVERGE: Duration = Duration::from_secs(90);
const SECOND: i64 = 1_000_000_000;

/// The CID `data` would get on `daemon` (`add` with `only-hash`: nothing is stored).
async fn hash_only(daemon: &IpfsDaemon, data: &[u8]) -> String {
    let part = reqwest::multipart::Part::bytes(data.to_vec())
        .file_name("data")
        .mime_str("application/octet-stream")
        .unwrap();
    let response: Value = reqwest::Client::new()
        .post(format!("{}/api/v0/add", daemon.api_url))
        .query(&[
            ("pin", "false"),
            ("cid-version", "1"),
            ("only-hash", "true"),
        ])
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cid: cid::Cid = response["Hash"].as_str().unwrap().parse().unwrap();
    cid.to_string()
}

/// (kind, time in ns) of every event of the pin's history, oldest first.
async fn history(admin: &Client, requestid: &str) -> Vec<(String, i64)> {
    let (status, body) = admin.get(&format!("/admin/pins/{requestid}/history")).await;
    assert_eq!(status, 200, "{body}");
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| {
            let time = chrono::DateTime::parse_from_rfc3339(event["time"].as_str().unwrap())
                .unwrap()
                .timestamp_nanos_opt()
                .unwrap();
            (event["kind"].as_str().unwrap().to_string(), time)
        })
        .collect()
}

fn times_of(events: &[(String, i64)], kind: &str) -> Vec<i64> {
    events
        .iter()
        .filter(|(k, _)| k == kind)
        .map(|(_, t)| *t)
        .collect()
}

fn cli(pinhive: &Pinhive, token: &str, args: &[&str]) -> std::process::Output {
    Command::new(binary())
        .args(["pins", "recover"])
        .args(args)
        .args(["--url", &pinhive.url, "--token", token])
        .output()
        .expect("running pinhive pins recover")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_pin_is_retried_with_backoff_then_failed_then_recovered() {
    let daemon = IpfsDaemon::start().await.expect("js-ipfs daemon");
    let contents: Vec<Vec<u8>> = (0..2)
        .map(|i| format!("pin retry object {i} {}", rand::random::<u64>()).into_bytes())
        .collect();
    let mut cids = Vec::new();
    for content in &contents {
        cids.push(hash_only(&daemon, content).await);
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "alice", false).unwrap();
    let admin_token = create_token(&data, "ops", true).unwrap();
    let node = format!("n0={}", daemon.api_url);
    // Each try gives up after 1 s; retries after 1 s, then 2 s; 2 retries, then `failed`.
    let pinhive = Pinhive::start(
        &data,
        &[
            "--ipfs-node",
            &node,
            "--replicas-min",
            "1",
            "--replicas-max",
            "1",
            "--pin-timeout-secs",
            "1",
            "--pin-attempts",
            "1",
            "--pin-retry-base-secs",
            "1",
            "--pin-retry-max-secs",
            "2",
            "--pin-retry-limit",
            "2",
            "--repair-interval-secs",
            "60",
        ],
    )
    .await
    .unwrap();
    let client = Client::new(&pinhive.url, &token);
    let admin = Client::new(&pinhive.url, &admin_token);

    let mut requestids = Vec::new();
    for cid in &cids {
        let (status, body) = client.pin(json!({"cid": cid})).await;
        assert_eq!(status, 202, "{body}");
        requestids.push(body["requestid"].as_str().unwrap().to_string());
    }
    for requestid in &requestids {
        let failed = client.wait_status(requestid, "failed", CONVERGE).await;
        let failure = failed["info"]["failure"].as_str().unwrap_or_default();
        assert_eq!(
            failure, "content not found on the network (timeout)",
            "{failed}"
        );
        assert!(failed["info"].get("retry_at_ns").is_none(), "{failed}");
        // Three rounds on n0 (the first try and 2 retries), each allocated once, each
        // waiting at least its backoff (1 s, then 2 s) after the failure before it.
        let events = history(&admin, requestid).await;
        let allocated = times_of(&events, "replicas_allocated");
        let failures = times_of(&events, "replica_failed");
        assert_eq!(allocated.len(), 3, "{events:?}");
        assert_eq!(failures.len(), 3, "{events:?}");
        assert!(allocated[1] - failures[0] >= SECOND, "{events:?}");
        assert!(allocated[2] - failures[1] >= 2 * SECOND, "{events:?}");
    }
    // Two retries of each pin, counted.
    let retries = pinhive_integration_tests::metric_sum(
        &pinhive.url,
        "pinhive_shard_replica_retries_total",
        "",
    )
    .await;
    assert!(retries >= 4.0, "{retries} retries counted");

    // Unknown pins: 404 with the spec's Failure body.
    let (status, body) = admin
        .send(admin.request(reqwest::Method::POST, "/admin/pins/no-such-pin/recover"))
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["reason"], "NOT_FOUND", "{body}");
    let output = cli(&pinhive, &token, &["no-such-pin"]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("404"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The content becomes available on the node; recovery retries at once.
    for (content, cid) in contents.iter().zip(&cids) {
        assert_eq!(&daemon.add(content, 1).await.unwrap(), cid);
    }
    let output = cli(&pinhive, &token, &[&requestids[0]]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    client.wait_status(&requestids[0], "pinned", CONVERGE).await;
    assert!(daemon.is_pinned(&cids[0]).await.unwrap());
    let (_, body) = client.get(&format!("/pins/{}", requestids[1])).await;
    assert_eq!(
        body["status"], "failed",
        "recovering one pin left the other: {body}"
    );

    // Every failed pin of the owner, one listing page at a time.
    let output = cli(&pinhive, &token, &["--all-failed", "--page", "1"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("1 failed pins recovered"), "{stdout}");
    let pinned = client.wait_status(&requestids[1], "pinned", CONVERGE).await;
    assert!(pinned["info"].get("failure").is_none(), "{pinned}");
    assert!(daemon.is_pinned(&cids[1]).await.unwrap());
    // Nothing retried it while it was `failed` (until the CLI recovered it): still the three
    // failed rounds, then one allocation and the pin.
    let events = history(&admin, &requestids[1]).await;
    assert_eq!(times_of(&events, "replica_failed").len(), 3, "{events:?}");
    assert_eq!(
        times_of(&events, "replicas_allocated").len(),
        4,
        "{events:?}"
    );
    assert_eq!(
        times_of(&events, "pin_recover_requested").len(),
        1,
        "{events:?}"
    );
    assert_eq!(times_of(&events, "replica_pinned").len(), 1, "{events:?}");
}
