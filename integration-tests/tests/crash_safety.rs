//! Crash safety: `kill -9` during a burst of concurrent POSTs; after a restart every request
//! that got 202 exists, converges to `pinned` on a real daemon, and none was applied twice.

use std::collections::BTreeSet;
use std::time::Duration;

use pinhive_integration_tests::{
    create_token, eventually, list_every_pin, pin_requested_counts, Burst, Client, IpfsDaemon,
    Pinhive,
};

/// Every pin of the client's owner and `count`, once the listing has settled: `count` (the
/// shards' counters) equals the rows listed and every one of them is pinned.
///
/// Waited for, not read once: requests the log made durable but whose 202 the kill cut off are
/// not among those the test waited for, and the shards apply them after the restart
/// asynchronously (a listing, its `count` and the pinned count are separate reads). A
/// consistent observation is a snapshot of the final state; one that never comes fails.
async fn settled_listing(client: &Client) -> (Vec<String>, u64) {
    eventually(
        Duration::from_secs(120),
        "the listing to settle: count equal to the rows listed, all of them pinned",
        || async {
            let (listed, count) = list_every_pin(client).await;
            let (status, pinned) = client.get("/pins?limit=1").await;
            assert_eq!(status, 200, "{pinned}");
            let pinned = pinned["count"].as_u64();
            if count == listed.len() as u64 && pinned == Some(count) {
                return Some((listed, count));
            }
            // Shown only if the test fails.
            eprintln!(
                "not settled: {} listed, count {count}, pinned {pinned:?}",
                listed.len()
            );
            None
        },
    )
    .await
}

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

    let burst = Burst::start(&client, &cids, 1_500, 64);
    burst.wait_acked(300).await;
    pinhive.kill_hard();
    let total = burst.total;
    let acknowledged = burst.acknowledged().await;
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
    // per-partition counters the shards maintain) equals the distinct requests listed; every
    // request (acknowledged or not) converged to pinned. `settled_listing` waits for the
    // counters to match the rows and for all of them to be pinned.
    let (listed, count) = settled_listing(&client).await;
    let distinct: BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(distinct.len(), listed.len(), "a request listed twice");
    assert_eq!(count, listed.len() as u64, "counters match the rows");
    assert!(acknowledged.is_subset(&distinct));

    // The journal holds exactly one PinRequested per request.
    let admin = Client::new(&pinhive.url, &admin);
    let counts = pin_requested_counts(&admin, acknowledged.iter().take(200)).await;
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
}
