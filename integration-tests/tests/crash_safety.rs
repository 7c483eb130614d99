//! Crash safety: `kill -9` during a burst of concurrent POSTs; after a restart every request
//! that got 202 exists, converges to `pinned` on a real daemon, and none was applied twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use pinhive_integration_tests::{create_token, Client, IpfsDaemon, Pinhive};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_burst_loses_no_acknowledged_request() {
    let ipfs = IpfsDaemon::start().await.expect("js-ipfs daemon");
    let mut cids = Vec::new();
    for i in 0..20 {
        cids.push(
            ipfs.add(format!("crash test content {i}").as_bytes(), 1)
                .await
                .unwrap(),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "alice", false).unwrap();
    let admin = create_token(&data, "ops", true).unwrap();
    let node = format!("ipfs-a={}", ipfs.api_url);
    let mut pinhive = Pinhive::start(&data, &["--ipfs-node", &node])
        .await
        .unwrap();
    let client = Client::new(&pinhive.url, &token);

    let total = 1_500;
    let acked = Arc::new(AtomicUsize::new(0));
    let burst = {
        let (client, acked, cids) = (client.clone(), acked.clone(), cids.clone());
        tokio::spawn(async move {
            stream::iter(0..total)
                .map(|i| {
                    let (client, acked, cid) =
                        (client.clone(), acked.clone(), cids[i % cids.len()].clone());
                    async move {
                        let response = client
                            .request(reqwest::Method::POST, "/pins")
                            .json(&json!({"cid": cid, "name": format!("burst-{i}")}))
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
                .buffer_unordered(64)
                .filter_map(|r| async move { r })
                .collect::<Vec<String>>()
                .await
        })
    };
    // Poll tightly (no backoff) so the kill lands early in the burst.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while acked.load(Ordering::SeqCst) < 300 {
        assert!(
            std::time::Instant::now() < deadline,
            "300 acknowledged requests"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    pinhive.kill_hard();
    let acknowledged: BTreeSet<String> = burst.await.unwrap().into_iter().collect();
    assert!(acknowledged.len() >= 300, "{}", acknowledged.len());
    assert!(acknowledged.len() < total, "the kill landed mid-burst");

    pinhive.restart().await.unwrap();
    // Every acknowledged request exists and converges to pinned.
    for requestid in &acknowledged {
        client
            .wait_status(requestid, "pinned", Duration::from_secs(120))
            .await;
    }
    for cid in &cids {
        assert!(
            ipfs.is_pinned(cid).await.unwrap(),
            "{cid} pinned on the daemon"
        );
    }

    // Nothing applied twice: the listing holds each request once and `count` (from the
    // per-partition counters the shards maintain) equals the distinct requests listed.
    let mut listed = Vec::new();
    let mut before: Option<String> = None;
    let mut count = None;
    loop {
        let mut path = "/pins?status=queued,pinning,pinned,failed&limit=1000".to_string();
        if let Some(b) = &before {
            path.push_str(&format!("&before={}", b.replace(':', "%3A")));
        }
        let (status, body) = client.get(&path).await;
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
    let (_, pinned) = client.get("/pins?limit=1").await;
    assert_eq!(
        pinned["count"].as_u64(),
        Some(listed.len() as u64),
        "all converged to pinned"
    );

    // The journal holds exactly one PinRequested per request.
    let admin = Client::new(&pinhive.url, &admin);
    let mut per_request: BTreeMap<String, usize> = BTreeMap::new();
    for requestid in acknowledged.iter().take(200) {
        let (status, history) = admin.get(&format!("/admin/pins/{requestid}/history")).await;
        assert_eq!(status, 200);
        let requested = history["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "pin_requested")
            .count();
        per_request.insert(requestid.clone(), requested);
    }
    assert!(per_request.values().all(|n| *n == 1), "{per_request:?}");
}
