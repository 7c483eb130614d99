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
        placement
            .values()
            .all(|on| on.len() == 2)
            .then_some(placement)
    })
    .await;
    (requestids, placement)
}

/// A test's world: three daemons holding `count` objects, pinhive over them (`extra` flags),
/// a user's and an admin's client, and every CID pinned (where, by daemon index).
struct World {
    daemons: Vec<IpfsDaemon>,
    cids: Vec<String>,
    pinhive: Pinhive,
    client: Client,
    admin: Client,
    requestids: Vec<String>,
    placement: BTreeMap<String, Vec<usize>>,
    _dir: tempfile::TempDir,
}

async fn world(count: usize, extra: &[&str]) -> World {
    let (daemons, cids) = fleet(count).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "alice", false).unwrap();
    let admin_token = create_token(&data, "ops", true).unwrap();
    let pinhive = start(&data, &daemons, extra).await;
    let client = Client::new(&pinhive.url, &token);
    let admin = Client::new(&pinhive.url, &admin_token);
    let (requestids, placement) = pin_all(&client, &daemons, &cids).await;
    World {
        daemons,
        cids,
        pinhive,
        client,
        admin,
        requestids,
        placement,
        _dir: dir,
    }
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
        let (status, body) = admin.get(&format!("/admin/pins/{requestid}/history")).await;
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
    // Re-replication capped at 2 replicas per second, 1 per destination node.
    let World {
        mut daemons,
        cids,
        pinhive,
        client: _client,
        admin,
        requestids,
        placement,
        _dir,
    } = world(
        12,
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
    let World {
        mut daemons,
        cids,
        pinhive,
        client: _client,
        admin,
        requestids,
        placement,
        _dir,
    } = world(6, &["--node-grace-secs", "600"]).await;

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
    let World {
        daemons,
        cids,
        pinhive: _pinhive,
        client: _client,
        admin,
        requestids: _requestids,
        placement,
        _dir,
    } = world(6, &[]).await;
    let held = placement.values().filter(|on| on.contains(&0)).count();
    assert!(held > 0, "n0 holds no CID: {placement:?}");
    assert_eq!(
        node(&admin, "n0").await["replicas"],
        held,
        "replica counter"
    );

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
    assert!(placement.values().all(|on| on == &[1, 2]), "{placement:?}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_on_one_instance_is_used_by_the_other() {
    let tansu = pinhive_integration_tests::Tansu::start()
        .await
        .expect("tansu broker");
    let first = IpfsDaemon::start().await.expect("js-ipfs daemon 0");
    let second = IpfsDaemon::start().await.expect("js-ipfs daemon 1");
    let mut cids = Vec::new();
    for i in 0..16 {
        let content = format!("shared membership {i}").repeat(16);
        let cid = first.add(content.as_bytes(), 1).await.unwrap();
        assert_eq!(second.add(content.as_bytes(), 1).await.unwrap(), cid);
        cids.push(cid);
    }
    let dir = tempfile::tempdir().unwrap();
    let log = format!("kafka://{}", tansu.bootstrap);
    let node = format!("n0={}", first.api_url);
    let flags = [
        "--log",
        log.as_str(),
        "--partitions",
        "4",
        "--kafka-group",
        "pinhive-nodes",
        "--kafka-session-timeout-ms",
        "6000",
        "--ipfs-node",
        node.as_str(),
        "--replicas-min",
        "2",
        "--replicas-max",
        "2",
        "--repair-interval-secs",
        "1",
        "--health-interval-secs",
        "1",
    ];
    let (data_a, data_b) = (dir.path().join("a"), dir.path().join("b"));
    let admin_a = create_token(&data_a, "ops", true).unwrap();
    let (token_b, admin_b) = (
        create_token(&data_b, "alice", false).unwrap(),
        create_token(&data_b, "ops", true).unwrap(),
    );
    let a = Pinhive::start(&data_a, &flags).await.unwrap();
    let b = Pinhive::start(&data_b, &flags).await.unwrap();
    let (admin_a, admin_b) = (Client::new(&a.url, &admin_a), Client::new(&b.url, &admin_b));
    let owned_by_b = eventually(CONVERGE, "the group to split the partitions", || async {
        let (pa, pb) = (
            pinhive_integration_tests::owned_partitions(&admin_a).await,
            pinhive_integration_tests::owned_partitions(&admin_b).await,
        );
        (!pa.is_empty() && !pb.is_empty() && pa.is_disjoint(&pb) && pa.len() + pb.len() == 4)
            .then_some(pb)
    })
    .await;

    // Registered through A only; B starts a driver for it from the control topic.
    let (status, body) = admin_a
        .send(
            admin_a
                .request(reqwest::Method::POST, "/admin/nodes")
                .json(&json!({"id": "n1", "rpc_url": second.api_url, "region": ""})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let seen = eventually(CONVERGE, "instance B to check n1", || async {
        let (status, body) = admin_b.get("/admin/nodes/n1").await;
        (status == 200 && body["reachable"] == true).then_some(body)
    })
    .await;
    assert_eq!(seen["peer_id"], second.peer_id.as_str(), "{seen}");

    // Pins whose partitions B runs reach two replicas: on n0 and on the node A added.
    let ours: Vec<&String> = cids
        .iter()
        .filter(|cid| {
            let partition = pinhive_log::partition_for(cid.as_bytes(), 4);
            owned_by_b.contains(&u64::from(partition))
        })
        .collect();
    assert!(!ours.is_empty(), "no CID in B's partitions {owned_by_b:?}");
    let client_b = Client::new(&b.url, &token_b);
    for cid in &ours {
        let (status, body) = client_b.pin(json!({"cid": cid})).await;
        assert_eq!(status, 202, "{body}");
    }
    eventually(CONVERGE, "B's pins on the node A added", || async {
        let mut all = true;
        for cid in &ours {
            all &= second.is_pinned(cid).await.unwrap_or(false);
        }
        all.then_some(())
    })
    .await;
}

/// The last anti-entropy report of `id`, once a pass finished after `since_ns` and `done` says
/// what was wanted happened.
async fn report_after(
    admin: &Client,
    id: &str,
    since_ns: i64,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    eventually(CONVERGE, what, || async {
        let report = node(admin, id).await["anti_entropy"].clone();
        let finished = report["finished"].as_str()?;
        let ns = chrono::DateTime::parse_from_rfc3339(finished)
            .ok()?
            .timestamp_nanos_opt()?;
        (ns > since_ns && done(&report)).then_some(report)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_entropy_repins_what_a_node_lost_and_reports_what_it_pins_unknown() {
    let World {
        daemons,
        cids,
        pinhive,
        client,
        admin,
        requestids,
        placement,
        _dir,
    } = world(4, &["--anti-entropy-interval-secs", "1"]).await;

    // A clean pass first: nothing drifted, nothing is corrected.
    let started = pinhive_events::now_ns();
    let clean = report_after(&admin, "n0", started, "a pass over n0", |r| {
        r["error"].is_null()
    })
    .await;
    assert_eq!(
        (clean["missing"].as_u64(), clean["unknown"].as_u64()),
        (Some(0), Some(0)),
        "{clean}"
    );
    let held_by_n0 = placement.values().filter(|on| on.contains(&0)).count() as u64;
    assert_eq!(clean["believed"].as_u64(), Some(held_by_n0), "{clean}");
    assert_eq!(clean["listed"].as_u64(), Some(held_by_n0), "{clean}");
    // Integrity sampling read the roots it sampled (all of them: fewer pins than samples).
    assert_eq!(clean["sampled"].as_u64(), Some(held_by_n0), "{clean}");
    assert_eq!(clean["unreadable"], 0, "{clean}");
    assert_eq!(clean["saturated"], false, "{clean}");

    // Unpin a CID on n0 behind pinhive's back, and pin one pinhive never heard of.
    let (lost, _) = placement
        .iter()
        .find(|(_, on)| on.contains(&0))
        .expect("n0 holds a CID");
    let lost = lost.clone();
    let lost_request = &requestids[cids.iter().position(|c| c == &lost).unwrap()];
    daemons[0].rpc("pin/rm", &[("arg", &lost)]).await.unwrap();
    assert!(!daemons[0].is_pinned(&lost).await.unwrap());
    let stranger = daemons[0]
        .add(b"pinned behind pinhive's back", 1)
        .await
        .unwrap();
    daemons[0]
        .rpc("pin/add", &[("arg", &stranger)])
        .await
        .unwrap();
    let tampered = pinhive_events::now_ns();

    eventually(CONVERGE, "n0 pins the lost CID again", || async {
        daemons[0]
            .is_pinned(&lost)
            .await
            .unwrap_or(false)
            .then_some(())
    })
    .await;
    let report = report_after(
        &admin,
        "n0",
        tampered,
        "a pass reporting the unknown pin",
        |r| {
            r["unknown_cids"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c == &stranger))
        },
    )
    .await;
    assert_eq!(report["unknown_removed"], 0, "{report}");
    // Reported, not removed: removing unknown pins is the operator's choice.
    assert!(daemons[0].is_pinned(&stranger).await.unwrap());
    // The correction is an event in the pin's history, and the pin shows pinned again.
    let (status, history) = admin
        .get(&format!("/admin/pins/{lost_request}/history"))
        .await;
    assert_eq!(status, 200, "{history}");
    let kinds: Vec<&str> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    let missing_at = kinds.iter().position(|k| *k == "replica_missing");
    assert!(missing_at.is_some(), "{kinds:?}");
    assert!(
        kinds[missing_at.unwrap()..].contains(&"replica_pinned"),
        "pinned again after the correction: {kinds:?}"
    );
    client.wait_status(lost_request, "pinned", CONVERGE).await;
    assert!(
        pinhive_integration_tests::metric_sum(
            &pinhive.url,
            "pinhive_anti_entropy_checks_total",
            "verdict=\"missing\""
        )
        .await
            >= 1.0
    );
    // Nothing else moved: every other CID is where it was.
    let now = holders(&daemons, &cids).await;
    assert_eq!(now, placement);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_entropy_removes_unknown_pins_when_told_to() {
    let World {
        daemons,
        cids,
        pinhive: _pinhive,
        client: _client,
        admin,
        requestids: _requestids,
        placement,
        _dir,
    } = world(
        2,
        &[
            "--anti-entropy-interval-secs",
            "1",
            "--anti-entropy-remove-unknown",
            "true",
        ],
    )
    .await;
    let stranger = daemons[1]
        .add(b"an unknown pin to remove", 1)
        .await
        .unwrap();
    daemons[1]
        .rpc("pin/add", &[("arg", &stranger)])
        .await
        .unwrap();
    eventually(CONVERGE, "the unknown pin removed from n1", || async {
        (!daemons[1].is_pinned(&stranger).await.unwrap_or(true)).then_some(())
    })
    .await;
    let report = report_after(&admin, "n1", 0, "a pass that removed it", |r| {
        r["unknown_removed"].as_u64() >= Some(1)
    })
    .await;
    assert!(
        report["unknown_cids"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == &stranger),
        "{report}"
    );
    // pinhive's own pins stay.
    assert_eq!(holders(&daemons, &cids).await, placement);
}
