//! Two pinhive instances in one Kafka consumer group (tansu broker, real js-ipfs daemon): the
//! group splits the partitions; one instance is stopped (SIGTERM) mid-burst; the survivor takes
//! its partitions over, replays them into its own store, and every request that got 202
//! converges, none applied twice.
//!
//! Why SIGTERM and not `kill -9`: tansu 0.6 does not expire the session of a member that died
//! without leaving — after a SIGKILL the group rebalanced but kept assigning the dead member's
//! partitions to it (observed here). Crash handover needs a broker that enforces
//! `session.timeout.ms` (Apache Kafka, Redpanda); the code path after the rebalance is the same.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use pinhive_integration_tests::{create_token, eventually, Client, IpfsDaemon, Pinhive, Tansu};
use serde_json::{json, Value};

async fn owned(admin: &Client) -> BTreeSet<u64> {
    let (_, body) = admin.get("/admin/shards").await;
    body["owned_partitions"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_instance_hands_its_partitions_over_without_loss() {
    let tansu = Tansu::start().await.expect("tansu broker");
    let ipfs = IpfsDaemon::start().await.expect("js-ipfs daemon");
    let mut cids = Vec::new();
    for i in 0..16 {
        cids.push(
            ipfs.add(format!("group content {i}").as_bytes(), 1)
                .await
                .unwrap(),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let log = format!("kafka://{}", tansu.bootstrap);
    let node = format!("ipfs-a={}", ipfs.api_url);
    let flags = [
        "--log",
        log.as_str(),
        "--partitions",
        "8",
        "--kafka-group",
        "pinhive-test",
        "--kafka-session-timeout-ms",
        "6000",
        "--ipfs-node",
        node.as_str(),
    ];
    let (data_a, data_b) = (dir.path().join("a"), dir.path().join("b"));
    let (token_a, admin_a) = (
        create_token(&data_a, "alice", false).unwrap(),
        create_token(&data_a, "ops", true).unwrap(),
    );
    let (token_b, admin_b) = (
        create_token(&data_b, "alice", false).unwrap(),
        create_token(&data_b, "ops", true).unwrap(),
    );
    let mut a = Pinhive::start(&data_a, &flags).await.unwrap();
    let b = Pinhive::start(&data_b, &flags).await.unwrap();
    let (admin_a, admin_b) = (Client::new(&a.url, &admin_a), Client::new(&b.url, &admin_b));
    eventually(
        Duration::from_secs(60),
        "the group to split the partitions",
        || async {
            let (pa, pb) = (owned(&admin_a).await, owned(&admin_b).await);
            let all: BTreeSet<u64> = pa.union(&pb).copied().collect();
            (!pa.is_empty() && !pb.is_empty() && pa.is_disjoint(&pb) && all.len() == 8)
                .then_some(())
        },
    )
    .await;

    // Burst at instance A; stop it early in the burst.
    let client_a = Client::new(&a.url, &token_a);
    let total = 1_500;
    let acked = Arc::new(AtomicUsize::new(0));
    let burst = {
        let (client, acked, cids) = (client_a.clone(), acked.clone(), cids.clone());
        tokio::spawn(async move {
            stream::iter(0..total)
                .map(|i| {
                    let (client, acked, cid) =
                        (client.clone(), acked.clone(), cids[i % cids.len()].clone());
                    async move {
                        let response = client
                            .request(reqwest::Method::POST, "/pins")
                            .json(&json!({"cid": cid, "name": format!("group-{i}")}))
                            .send()
                            .await
                            .ok()?;
                        if response.status() != 202 {
                            return None;
                        }
                        let body: Value = response.json().await.ok()?;
                        acked.fetch_add(1, Ordering::SeqCst);
                        Some(body["requestid"].as_str()?.to_string())
                    }
                })
                .buffer_unordered(32)
                .filter_map(|r| async move { r })
                .collect::<Vec<String>>()
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.load(Ordering::SeqCst) < 300 {
        assert!(Instant::now() < deadline, "300 acknowledged requests");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(a.stop(), "A exits cleanly:\n{}", a.log_tail());
    let acknowledged: BTreeSet<String> = burst.await.unwrap().into_iter().collect();
    assert!(
        acknowledged.len() >= 300 && acknowledged.len() < total,
        "{}",
        acknowledged.len()
    );

    // B takes over every partition once A's session expires.
    let deadline = Instant::now() + Duration::from_secs(90);
    while owned(&admin_b).await.len() != 8 {
        assert!(
            Instant::now() < deadline,
            "B never took over all partitions (owns {:?}):\n{}",
            owned(&admin_b).await,
            b.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let client_b = Client::new(&b.url, &token_b);
    for requestid in &acknowledged {
        client_b
            .wait_status(requestid, "pinned", Duration::from_secs(120))
            .await;
    }

    // Nothing applied twice: rows are unique, counters match rows, one PinRequested each.
    let mut listed = Vec::new();
    let mut before: Option<String> = None;
    let mut count = None;
    loop {
        let mut path = "/pins?status=queued,pinning,pinned,failed&limit=1000".to_string();
        if let Some(b) = &before {
            path.push_str(&format!("&before={}", b.replace(':', "%3A")));
        }
        let (status, body) = client_b.get(&path).await;
        assert_eq!(status, 200, "{body}");
        count.get_or_insert(body["count"].as_u64().unwrap());
        let page = body["results"].as_array().unwrap().clone();
        let Some(last) = page.last() else { break };
        before = Some(last["created"].as_str().unwrap().to_string());
        listed.extend(
            page.iter()
                .map(|p| p["requestid"].as_str().unwrap().to_string()),
        );
    }
    let distinct: BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(distinct.len(), listed.len(), "a request listed twice");
    assert_eq!(count, Some(listed.len() as u64), "counters match the rows");
    assert!(acknowledged.is_subset(&distinct));
    let mut per_request: BTreeMap<String, usize> = BTreeMap::new();
    for requestid in acknowledged.iter().take(150) {
        let (_, history) = admin_b
            .get(&format!("/admin/pins/{requestid}/history"))
            .await;
        let requested = history["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "pin_requested")
            .count();
        per_request.insert(requestid.clone(), requested);
    }
    assert!(per_request.values().all(|n| *n == 1), "{per_request:?}");
    for cid in &cids {
        assert!(ipfs.is_pinned(cid).await.unwrap());
    }

    // `pinhive topics describe` shows the 8 partitions and, once B committed, no lag.
    let describe = || {
        std::process::Command::new(pinhive_integration_tests::binary())
            .args([
                "topics",
                "describe",
                "--log",
                &log,
                "--kafka-group",
                "pinhive-test",
            ])
            .output()
            .unwrap()
    };
    let output = eventually(
        Duration::from_secs(30),
        "the group to commit every offset",
        || async {
            let output = describe();
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            (output.status.success() && stdout.contains("total lag: 0")).then_some(stdout)
        },
    )
    .await;
    assert!(output.contains("8 partitions"), "{output}");
}
