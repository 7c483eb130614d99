//! Crash safety: `kill -9` during a burst of concurrent POSTs; after a restart every request
//! that got 202 exists, converges to `pinned` on a real daemon, and none was applied twice.

use std::collections::BTreeSet;
use std::time::Duration;

use pinhive_integration_tests::{
    create_token, pin_requested_counts, settled_listing, Burst, Client, IpfsDaemon, Pinhive,
};

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
