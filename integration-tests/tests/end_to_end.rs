//! End to end against a real js-ipfs daemon through its Kubo RPC: pin, replace, delete,
//! failure, history, as a Pinning Service API client sees them and as the daemon's own
//! `pin/ls` confirms.

use std::time::{Duration, Instant};

use pinhive_integration_tests::{
    create_token, eventually, sees_own_writes, Client, IpfsDaemon, Pinhive,
};
use serde_json::json;

const CONVERGE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_replace_delete_and_fail_against_a_real_daemon() {
    let ipfs = IpfsDaemon::start().await.expect("js-ipfs daemon");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "alice", false).unwrap();
    let admin = create_token(&data, "ops", true).unwrap();
    let node = format!("ipfs-a={}", ipfs.api_url);
    let mut pinhive = Pinhive::start(
        &data,
        &[
            "--ipfs-node",
            &node,
            "--pin-timeout-secs",
            "2",
            "--pin-attempts",
            "2",
            // A failed pin shows `failed` at once (retries: tests/pin_retry.rs).
            "--pin-retry-limit",
            "0",
        ],
    )
    .await
    .unwrap();
    let client = Client::new(&pinhive.url, &token);

    // Readiness reports the reachable node.
    eventually(Duration::from_secs(30), "/ready", || async {
        let r = reqwest::get(format!("{}/ready", pinhive.url)).await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;

    // Pin content the daemon holds (CID v0 and v1).
    let cid_a = ipfs
        .add(b"pinhive end-to-end: first version", 0)
        .await
        .unwrap();
    let cid_b = ipfs
        .add(b"pinhive end-to-end: second version", 1)
        .await
        .unwrap();
    assert!(
        cid_a.starts_with("Qm") && cid_b.starts_with("baf"),
        "{cid_a} {cid_b}"
    );
    let (status, created) = client
        .pin(json!({"cid": cid_a, "name": "report.pdf", "meta": {"app": "e2e"}}))
        .await;
    assert_eq!(status, 202, "{created}");
    let requestid = created["requestid"].as_str().unwrap().to_string();
    assert!(["queued", "pinning", "pinned"].contains(&created["status"].as_str().unwrap()));
    let pinned = client.wait_status(&requestid, "pinned", CONVERGE).await;
    assert!(
        ipfs.is_pinned(&cid_a).await.unwrap(),
        "daemon's pin/ls confirms"
    );
    let delegates = pinned["delegates"].as_array().unwrap();
    assert!(
        delegates.iter().any(|d| d
            .as_str()
            .unwrap()
            .ends_with(&format!("/p2p/{}", ipfs.peer_id))),
        "delegates name the node: {delegates:?}"
    );
    assert_eq!(pinned["info"]["replicas_pinned"], "1");

    // Replace: a new requestid for the new CID; the old pin disappears and is unpinned.
    let (status, replaced) = client
        .send(
            client
                .request(reqwest::Method::POST, &format!("/pins/{requestid}"))
                .json(&json!({"cid": cid_b, "name": "report-v2.pdf"})),
        )
        .await;
    assert_eq!(status, 202, "{replaced}");
    let new_id = replaced["requestid"].as_str().unwrap().to_string();
    assert_ne!(new_id, requestid);
    // The old pin leaves with `PinReplaced`, an event on the old CID's partition that is
    // applied asynchronously (the 202 only tells that the new pin was taken).
    eventually(CONVERGE, "the replaced pin to leave the API", || async {
        (client.get(&format!("/pins/{requestid}")).await.0 == 404).then_some(())
    })
    .await;
    client.wait_status(&new_id, "pinned", CONVERGE).await;
    assert!(ipfs.is_pinned(&cid_b).await.unwrap());
    eventually(CONVERGE, "old CID unpinned on the daemon", || async {
        (!ipfs.is_pinned(&cid_a).await.ok()?).then_some(())
    })
    .await;

    // History: the events that shaped the new pin, oldest first, ending with the release of
    // the replaced pin's hold (recorded on both CIDs; applied here asynchronously).
    let expected = [
        "pin_requested",
        "replicas_allocated",
        "replica_pinned",
        "replace_settled",
    ];
    eventually(CONVERGE, "the new pin's history", || async {
        let (status, history) = client.get(&format!("/admin/pins/{new_id}/history")).await;
        assert_eq!(status, 200, "{history}");
        let kinds: Vec<&str> = history["events"]
            .as_array()?
            .iter()
            .filter_map(|e| e["kind"].as_str())
            .collect();
        assert!(
            expected.starts_with(&kinds[..kinds.len().min(4)]),
            "{history}"
        );
        (kinds == expected).then_some(())
    })
    .await;

    // Delete: gone from the API at once (read-your-writes), unpinned on the daemon soon after.
    let started = Instant::now();
    let (status, _) = client.delete(&format!("/pins/{new_id}")).await;
    assert_eq!(status, 202);
    sees_own_writes(started.elapsed(), "the deleted pin gone", || async {
        (client.get(&format!("/pins/{new_id}")).await.0 == 404).then_some(())
    })
    .await;
    eventually(CONVERGE, "deleted CID unpinned on the daemon", || async {
        (!ipfs.is_pinned(&cid_b).await.ok()?).then_some(())
    })
    .await;

    // A CID nobody holds: the node times out, retries, and the pin fails with a reason.
    let missing = "bafkreiaxnnnb7qz2focittuqq3ya25q7rcv3bqynnczfzako47346wosmu";
    let (status, body) = client.pin(json!({"cid": missing})).await;
    assert_eq!(status, 202, "{body}");
    let failed = client
        .wait_status(body["requestid"].as_str().unwrap(), "failed", CONVERGE)
        .await;
    // The tenant sees the reason's category (docs/security.md); the admin sees the node and
    // its raw error in the history.
    assert_eq!(
        failed["info"]["failure"], "content not found on the network (timeout)",
        "{failed}"
    );
    let admin_client = Client::new(&pinhive.url, &admin);
    let (status, history) = admin_client
        .get(&format!(
            "/admin/pins/{}/history",
            failed["requestid"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200, "{history}");
    let raw = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "replica_failed")
        .unwrap_or_else(|| panic!("a replica_failed event: {history}"));
    assert_eq!(raw["event"]["replica_failed"]["node"], "ipfs-a", "{raw}");

    // Two requests for one CID are two pins; deleting one keeps the content pinned.
    let cid_c = ipfs.add(b"shared content", 0).await.unwrap();
    let first = client.pin(json!({"cid": cid_c})).await.1["requestid"]
        .as_str()
        .unwrap()
        .to_string();
    let second = client.pin(json!({"cid": cid_c})).await.1["requestid"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(first, second);
    client.wait_status(&first, "pinned", CONVERGE).await;
    client.wait_status(&second, "pinned", CONVERGE).await;
    assert_eq!(client.delete(&format!("/pins/{first}")).await.0, 202);
    assert!(
        ipfs.is_pinned(&cid_c).await.unwrap(),
        "still referenced by the second pin"
    );

    // Admin API: nodes listed with their health; a user token cannot use it. Health is the
    // last periodic check's (every 5 s): one that timed out under load reports the node
    // unreachable until the next, so wait for it rather than read it once.
    let admin_client = Client::new(&pinhive.url, &admin);
    let nodes = eventually(CONVERGE, "ipfs-a listed as reachable", || async {
        let (status, nodes) = admin_client.get("/admin/nodes").await;
        assert_eq!(status, 200, "{nodes}");
        (nodes["nodes"][0]["reachable"] == true).then_some(nodes)
    })
    .await;
    assert_eq!(nodes["nodes"][0]["id"], "ipfs-a");
    assert_eq!(client.get("/admin/nodes").await.0, 403);

    // Graceful shutdown exits cleanly; a restart serves the same state.
    assert!(
        pinhive.stop(),
        "clean exit on SIGTERM:\n{}",
        pinhive.log_tail()
    );
    pinhive.restart().await.unwrap();
    // Read at once: the row was persisted before the clean exit and reads come from the store;
    // nothing left to apply changes this CID's status (nor does node health, not checked yet).
    let (status, body) = client.get(&format!("/pins/{second}")).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("pinned")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_until_a_node_is_added_through_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "alice", false).unwrap();
    let admin = create_token(&data, "ops", true).unwrap();
    let closed = format!(
        "http://127.0.0.1:{}",
        pinhive_integration_tests::free_port()
    );
    let pinhive = Pinhive::start(&data, &["--ipfs-node", &closed])
        .await
        .unwrap();
    let client = Client::new(&pinhive.url, &token);
    // Until a node is added, pinhive has no node to name in `delegates` (docs/api.md).
    let no_node = client.without_reachable_node();
    let started = Instant::now();
    let (status, body) = no_node
        .pin(json!({"cid": "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"}))
        .await;
    let answered_in = started.elapsed();
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("queued")),
        "{body}"
    );
    let ready = reqwest::get(format!("{}/ready", pinhive.url))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(ready["ipfs"]["ok"], false);
    assert!(
        ready["ipfs"]["hint"]
            .as_str()
            .unwrap()
            .contains("reachable"),
        "{ready}"
    );
    let requestid = body["requestid"].as_str().unwrap().to_string();
    let again = sees_own_writes(answered_in, "the new pin readable", || async {
        let (status, again) = no_node.get(&format!("/pins/{requestid}")).await;
        (status == 200).then_some(again)
    })
    .await;
    assert_eq!(again["status"], "queued");

    // Bring up a daemon holding the content and register it at run time: the repair loop
    // notices the new reachable node and the queued pin converges.
    let ipfs = IpfsDaemon::start().await.expect("js-ipfs daemon");
    let cid = ipfs.add(b"queued until a node exists", 0).await.unwrap();
    let (status, second) = no_node.pin(json!({"cid": cid})).await;
    assert_eq!((status, second["status"].as_str()), (202, Some("queued")));
    let admin = Client::new(&pinhive.url, &admin);
    let (status, body) = admin
        .send(
            admin
                .request(reqwest::Method::POST, "/admin/nodes")
                .json(&json!({"id": "late", "rpc_url": ipfs.api_url})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let second_id = second["requestid"].as_str().unwrap();
    // Polled while the new node's first health check may still be running; once pinned, the
    // pin names its holder and the strict client checks it.
    no_node.wait_status(second_id, "pinned", CONVERGE).await;
    let (_, pinned) = client.get(&format!("/pins/{second_id}")).await;
    assert_eq!(pinned["status"], "pinned", "{pinned}");
    assert!(ipfs.is_pinned(&cid).await.unwrap());
    // The unreachable node stays known; removing it is an admin call too.
    let unreachable = closed.trim_start_matches("http://");
    assert_eq!(
        admin.delete(&format!("/admin/nodes/{unreachable}")).await.0,
        204
    );
    let (_, nodes) = admin.get("/admin/nodes").await;
    assert_eq!(nodes["nodes"].as_array().unwrap().len(), 1, "{nodes}");
}
