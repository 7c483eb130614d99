//! Keeping replicas true on real js-ipfs daemons: a node killed with SIGKILL is `down` after
//! the grace period and its CIDs are made again on the others at the capped rate (checked on
//! the allocation events' timestamps); a node back within the grace period moves nothing; a
//! drained node gives every replica up, then can be removed.

use std::collections::BTreeMap;
use std::time::Duration;

use pinhive_integration_tests::{create_token, eventually, Client, IpfsDaemon, Pinhive};
use serde_json::{json, Value};

const CONVERGE: Duration = Duration::from_secs(120);

/// Three daemons, every one holding the same `count` objects (unpinned), so any of them can
/// pin any CID at once.
async fn fleet(count: usize) -> (Vec<IpfsDaemon>, Vec<String>) {
    let mut daemons = Vec::new();
    for i in 0..3 {
        daemons.push(
            IpfsDaemon::start()
                .await
                .unwrap_or_else(|e| panic!("js-ipfs daemon {i}: {e}")),
        );
    }
    let mut cids = Vec::new();
    for i in 0..count {
        let content = format!("node health object {i}").repeat(32);
        let mut cid = String::new();
        for daemon in &daemons {
            cid = daemon.add(content.as_bytes(), 1).await.unwrap();
        }
        cids.push(cid);
    }
    (daemons, cids)
}

/// Starts pinhive over the three daemons (`n0`, `n1`, `n2`), two replicas per CID.
async fn start(data: &std::path::Path, daemons: &[IpfsDaemon], extra: &[&str]) -> Pinhive {
    let nodes: Vec<String> = daemons
        .iter()
        .enumerate()
        .map(|(i, d)| format!("n{i}={}", d.api_url))
        .collect();
    let mut args: Vec<&str> = vec![
        "--replicas-min",
        "2",
        "--replicas-max",
        "2",
        "--repair-interval-secs",
        "1",
        "--health-interval-secs",
        "1",
    ];
    for node in &nodes {
        args.extend(["--ipfs-node", node.as_str()]);
    }
    args.extend(extra);
    Pinhive::start(data, &args).await.unwrap()
}

/// Pins every CID and waits until two daemons hold each (their own `pin/ls`). Returns the
/// request ids and where each CID is pinned.
async fn pin_all(
    client: &Client,
    daemons: &[IpfsDaemon],
    cids: &[String],
) -> (Vec<String>, BTreeMap<String, Vec<usize>>) {
    let mut requestids = Vec::new();
    for cid in cids {
        let (status, body) = client.pin(json!({"cid": cid})).await;
        assert_eq!(status, 202, "{body}");
        requestids.push(body["requestid"].as_str().unwrap().to_string());
    }
    let placement = eventually(CONVERGE, "every CID pinned on two daemons", || async {
        let placement = holders(daemons, cids).await;
        placement.values().all(|on| on.len() == 2).then_some(placement)
    })
    .await;
    (requestids, placement)
}

/// Which daemons (by index) pin each CID; a dead daemon holds nothing.
async fn holders(daemons: &[IpfsDaemon], cids: &[String]) -> BTreeMap<String, Vec<usize>> {
    let mut placement = BTreeMap::new();
    for cid in cids {
        let mut on = Vec::new();
        for (i, daemon) in daemons.iter().enumerate() {
            if daemon.is_pinned(cid).await.unwrap_or(false) {
                on.push(i);
            }
        }
        placement.insert(cid.clone(), on);
    }
    placement
}

async fn node(admin: &Client, id: &str) -> Value {
    let (status, body) = admin.get(&format!("/admin/nodes/{id}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn wait_state(admin: &Client, id: &str, state: &str) -> Value {
    eventually(CONVERGE, &format!("node {id} to be {state}"), || async {
        let body = node(admin, id).await;
        (body["state"] == state).then_some(body)
    })
    .await
}

/// Timestamps (ns) of the `replicas_allocated` events of these pins after `since_ns`.
async fn allocations_since(admin: &Client, requestids: &[String], since_ns: i64) -> Vec<i64> {
    let mut times = Vec::new();
    for requestid in requestids {
        let (status, body) = admin
            .get(&format!("/admin/pins/{requestid}/history"))
            .await;
        assert_eq!(status, 200, "{body}");
        for event in body["events"].as_array().unwrap() {
            if event["kind"] != "replicas_allocated" {
                continue;
            }
            let time = event["time"].as_str().unwrap();
            let ns = chrono::DateTime::parse_from_rfc3339(time)
                .unwrap()
                .timestamp_nanos_opt()
                .unwrap();
            if ns > since_ns {
                times.push(ns);
            }
        }
    }
    times.sort_unstable();
    times
}

async fn metric(base: &str, name: &str) -> f64 {
    pinhive_integration_tests::metric_sum(base, name, "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_node_is_made_again_on_the_others_at_the_capped_rate() {
    let (mut daemons, cids) = fleet(12).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "alice", false).unwrap();
    let admin_token = create_token(&data, "ops", true).unwrap();
    // Re-replication capped at 2 replicas per second, 1 per destination node.
    let pinhive = start(
        &data,
        &daemons,
        &[
            "--node-grace-secs",
            "2",
            "--rereplication-rate",
            "2",
            "--rereplication-rate-per-node",
            "1",
        ],
    )
    .await;
    let client = Client::new(&pinhive.url, &token);
    let admin = Client::new(&pinhive.url, &admin_token);
    let (requestids, placement) = pin_all(&client, &daemons, &cids).await;
    let lost: Vec<String> = placement
        .iter()
        .filter(|(_, on)| on.contains(&0))
        .map(|(cid, _)| cid.clone())
        .collect();
    assert!(!lost.is_empty(), "n0 holds no CID: {placement:?}");

    let killed_at = pinhive_events::now_ns();
    daemons[0].kill_hard();
    let down = wait_state(&admin, "n0", "down").await;
    assert!(
        down["state_reason"]
            .as_str()
            .unwrap()
            .contains("grace period"),
        "{down}"
    );
    // Every CID is back on two live daemons: with n0 gone, that is n1 and n2.
    eventually(CONVERGE, "every CID pinned on n1 and n2", || async {
        let placement = holders(&daemons[1..], &cids).await;
        placement.values().all(|on| on.len() == 2).then_some(())
    })
    .await;
    // One allocation per CID n0 held, spaced by the caps: in any second at most 2 (the
    // global cap), and at most 1 + 1 per destination, since no burst is allowed.
    let times = allocations_since(&admin, &requestids, killed_at).await;
    assert_eq!(times.len(), lost.len(), "allocations: {times:?}");
    for (i, start) in times.iter().enumerate() {
        let within = times[i..]
            .iter()
            .take_while(|t| **t < start + 1_000_000_000)
            .count();
        assert!(
            within <= 3,
            "{within} allocations within one second from {start}: {times:?}"
        );
    }
    let span = times.last().unwrap() - times.first().unwrap();
    let floor = (times.len() as i64 - 1) * 1_000_000_000 / 2;
    assert!(
        span >= floor - 50_000_000,
        "{} allocations over {span} ns: faster than 2/s",
        times.len()
    );
    assert_eq!(
        metric(&pinhive.url, "pinhive_rereplication_replicas_total").await,
        lost.len() as f64
    );
    let nodes = admin.get("/admin/nodes").await.1;
    let listed: Vec<&str> = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["state"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["down", "up", "up"], "{nodes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_within_the_grace_period_moves_nothing() {
    let (mut daemons, cids) = fleet(6).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "alice", false).unwrap();
    let admin_token = create_token(&data, "ops", true).unwrap();
    let pinhive = start(&data, &daemons, &["--node-grace-secs", "600"]).await;
    let client = Client::new(&pinhive.url, &token);
    let admin = Client::new(&pinhive.url, &admin_token);
    let (requestids, placement) = pin_all(&client, &daemons, &cids).await;

    let killed_at = pinhive_events::now_ns();
    daemons[0].kill_hard();
    let degraded = wait_state(&admin, "n0", "degraded").await;
    assert_eq!(degraded["reachable"], false, "{degraded}");
    daemons[0].restart().await.unwrap();
    wait_state(&admin, "n0", "up").await;
    // Nothing was allocated while n0 was away, and every replica is where it was.
    assert_eq!(
        allocations_since(&admin, &requestids, killed_at).await,
        Vec::<i64>::new()
    );
    assert_eq!(holders(&daemons, &cids).await, placement);
    assert_eq!(
        metric(&pinhive.url, "pinhive_rereplication_replicas_total").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_gives_up_every_replica_then_is_removed() {
    let (daemons, cids) = fleet(6).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "alice", false).unwrap();
    let admin_token = create_token(&data, "ops", true).unwrap();
    let pinhive = start(&data, &daemons, &[]).await;
    let client = Client::new(&pinhive.url, &token);
    let admin = Client::new(&pinhive.url, &admin_token);
    let (_, placement) = pin_all(&client, &daemons, &cids).await;
    let held = placement.values().filter(|on| on.contains(&0)).count();
    assert!(held > 0, "n0 holds no CID: {placement:?}");
    assert_eq!(node(&admin, "n0").await["replicas"], held, "replica counter");

    // A node holding replicas is not removed without a drain.
    let (status, body) = admin.delete("/admin/nodes/n0").await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"]["details"]
        .as_str()
        .unwrap()
        .contains("drain it first"));

    let (status, body) = admin
        .send(admin.request(reqwest::Method::POST, "/admin/nodes/n0/drain"))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["state"], "draining");
    let drained = eventually(CONVERGE, "n0 drained", || async {
        let body = node(&admin, "n0").await;
        (body["drained"] == true).then_some(body)
    })
    .await;
    assert_eq!(drained["replicas"], 0, "{drained}");
    // Every CID left n0 (unpinned there) and is on n1 and n2.
    let placement = holders(&daemons, &cids).await;
    assert!(
        placement.values().all(|on| on == &[1, 2]),
        "{placement:?}"
    );
    let (status, body) = admin.delete("/admin/nodes/n0").await;
    assert_eq!(status, 204, "{body}");
    let nodes = admin.get("/admin/nodes").await.1;
    let ids: Vec<&str> = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["n1", "n2"]);
}
