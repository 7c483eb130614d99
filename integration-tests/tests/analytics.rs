//! Analytics end to end: access events (HTTP and an external Kafka producer) raise a CID's
//! replicas in the reading region on real js-ipfs daemons and silence lowers them back to
//! `min`; demand survives a restart; bad input is refused (400) or dead-lettered.
//! Time is compressed through the `[analytics]` config (epochs of 0.3 s, half-lives of 1 s).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use pinhive_integration_tests::{
    create_token, eventually, external_producer, metric_sum, Client, IpfsDaemon, Pinhive, Tansu,
};
use rdkafka::producer::FutureRecord;
use serde_json::{json, Value};

const CONVERGE: Duration = Duration::from_secs(90);
/// Consumer-group rebalances on tansu take seconds each, longer while other tests load the
/// machine.
const GROUP_CONVERGE: Duration = Duration::from_secs(180);

/// Analytics knobs for tests: short epochs and half-lives, a low geo threshold, load never
/// decisive (one replica serves far more than the tests read).
fn write_config(dir: &Path, partitions: u32) -> String {
    write_config_with(dir, partitions, 1.0)
}

/// Like [`write_config`], with both half-lives `half_life_secs`.
fn write_config_with(dir: &Path, partitions: u32, half_life_secs: f64) -> String {
    let path = dir.join("pinhive.toml");
    std::fs::write(
        &path,
        format!(
            "[analytics]\n\
             access_partitions = {partitions}\n\
             epoch_secs = 0.3\n\
             fast_half_life_secs = {half_life_secs:?}\n\
             slow_half_life_secs = {half_life_secs:?}\n\
             geo_views_per_day = 1000.0\n\
             replica_bytes_per_sec = 1e12\n\
             cool_down_epochs = 3\n\
             min_hold_epochs = 2\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// A node no daemon answers at (analytics counts demand without IPFS), in `region` if any.
fn closed_node(region: Option<&str>) -> String {
    let port = pinhive_integration_tests::free_port();
    let region = region.map(|r| format!("#{r}")).unwrap_or_default();
    format!("closed=http://127.0.0.1:{port}{region}")
}

fn access(cid: &str, region: &str) -> Value {
    json!({"events": [{"cid": cid, "region": region, "bytes": 4096, "size": 4096}]})
}

async fn post_access(admin: &Client, body: Value) -> (u16, Value) {
    admin
        .send(admin.request(reqwest::Method::POST, "/access").json(&body))
        .await
}

/// Which of the daemons pin `cid`, as their own `pin/ls` says.
async fn holders(daemons: &[(&str, &IpfsDaemon)], cid: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (region, daemon) in daemons {
        if daemon.is_pinned(cid).await.unwrap_or(false) {
            out.push(region.to_string());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_from_a_region_raise_replicas_there_and_silence_lowers_them_to_min() {
    let eu = IpfsDaemon::start().await.expect("js-ipfs daemon eu");
    let us = IpfsDaemon::start().await.expect("js-ipfs daemon us");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), 2);
    let token = create_token(&data, "alice", false).unwrap();
    let admin_token = create_token(&data, "ops", true).unwrap();
    let (eu_node, us_node) = (
        format!("eu-1={}#eu", eu.api_url),
        format!("us-1={}#us", us.api_url),
    );
    let pinhive = Pinhive::start(
        &data,
        &[
            "--config",
            &config,
            "--ipfs-node",
            &eu_node,
            "--ipfs-node",
            &us_node,
            "--repair-interval-secs",
            "1",
        ],
    )
    .await
    .unwrap();
    let client = Client::new(&pinhive.url, &token);
    let admin = Client::new(&pinhive.url, &admin_token);

    // The content exists on both daemons, so either can pin it at once.
    let content = b"analytics end to end: a popular object".repeat(64);
    let cid = eu.add(&content, 1).await.unwrap();
    assert_eq!(us.add(&content, 1).await.unwrap(), cid);
    let pin = client
        .pin_and_wait_pinned(json!({"cid": cid, "name": "popular"}))
        .await;
    let requestid = pin["requestid"].as_str().unwrap().to_string();
    let daemons = [("eu", &eu), ("us", &us)];
    let first = eventually(CONVERGE, "one daemon pins the CID", || async {
        let held = holders(&daemons, &cid).await;
        (held.len() == 1).then_some(held)
    })
    .await;
    let other = if first[0] == "eu" { "us" } else { "eu" };

    // Sustained reads from the other region: a replica appears there, on the daemon itself.
    let reads = eventually(CONVERGE, "a replica in the reading region", || async {
        let (status, body) = post_access(&admin, access(&cid, other)).await;
        assert_eq!(status, 202, "{body}");
        let held = holders(&daemons, &cid).await;
        held.contains(&other.to_string()).then_some(held)
    })
    .await;
    assert_eq!(reads.len(), 2, "both regions hold it while {other} reads");
    let (_, shown) = client.get(&format!("/pins/{requestid}")).await;
    assert_eq!(shown["info"]["replicas_desired"], "2", "{shown}");
    assert_eq!(shown["info"]["replicas_regions"], other, "{shown}");
    // The admin view explains it: demand by region, optimal replicas, the reason.
    let (status, explained) = admin
        .get(&format!("/admin/pins/{requestid}/analytics"))
        .await;
    assert_eq!(status, 200, "{explained}");
    assert_eq!(explained["replicas"]["optimal"], 2, "{explained}");
    assert_eq!(
        explained["recommended_regions"],
        json!([other]),
        "{explained}"
    );
    assert_eq!(explained["tracked"], true, "{explained}");
    assert!(
        explained["reason"].as_str().unwrap().contains(other),
        "{explained}"
    );
    // The pin's owner may look too.
    let (status, _) = client
        .get(&format!("/admin/pins/{requestid}/analytics"))
        .await;
    assert_eq!(status, 200);
    // The cluster view (what the operator console's analytics section shows): demand by
    // region names the reading region, and the CID is the partition's most-read one.
    let (_, summary) = admin.get("/admin/analytics").await;
    let partition = summary["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["top_cids"][0]["cid"] == cid.as_str())
        .unwrap_or_else(|| panic!("{cid} not the top CID of a partition: {summary}"));
    assert!(
        partition["top_cids"][0]["bytes_per_sec"].as_f64() > Some(0.0),
        "{partition}"
    );
    let region_demand = |name: &str| {
        partition["demand_by_region"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r[0] == name)
            .and_then(|r| r[1].as_f64())
    };
    assert!(region_demand(other) > Some(0.0), "{partition}");
    assert_eq!(region_demand("other"), Some(0.0), "{partition}");

    // Silence: after the cool-down the target is back at min and one daemon lets go.
    eventually(CONVERGE, "back to one replica", || async {
        let held = holders(&daemons, &cid).await;
        let (_, shown) = client.get(&format!("/pins/{requestid}")).await;
        (held.len() == 1 && shown["info"]["replicas_desired"] == "1" && shown["status"] == "pinned")
            .then_some(())
    })
    .await;
    let changes = metric_sum(&pinhive.url, "pinhive_analytics_target_changes_total", "").await;
    assert!(
        changes >= 2.0,
        "one raise and one lowering at least, saw {changes}"
    );
    let (_, summary) = admin.get("/admin/analytics").await;
    assert_eq!(summary["regions"], json!(["eu", "us"]), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demand_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), 1);
    let admin_token = create_token(&data, "ops", true).unwrap();
    // No IPFS node answers: analytics needs none to count demand.
    let closed = closed_node(Some("eu"));
    let mut pinhive = Pinhive::start(&data, &["--config", &config, "--ipfs-node", &closed])
        .await
        .unwrap();
    let admin = Client::new(&pinhive.url, &admin_token).without_reachable_node();
    let cid = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";
    let (status, body) = post_access(
        &admin,
        json!({"events": (0..50).map(|_| json!({"cid": cid, "region": "eu", "bytes": 1_000_000}))
            .collect::<Vec<_>>()}),
    )
    .await;
    assert_eq!((status, body["accepted"].clone()), (202, json!(50)));
    // Wait for an epoch that counted them (its checkpoint covers them).
    eventually(CONVERGE, "an epoch counted the reads", || async {
        let (_, summary) = admin.get("/admin/analytics").await;
        let partition = &summary["partitions"][0];
        (partition["tracked_cids"] == 1 && partition["epoch"].as_u64() >= Some(1)).then_some(())
    })
    .await;
    let (_, before) = admin.get(&format!("/admin/analytics/cids/{cid}")).await;
    assert_eq!(before["tracked"], true, "{before}");
    assert!(pinhive.stop(), "pinhive stops on SIGTERM");
    pinhive.restart().await.unwrap();
    let (status, after) = admin.get(&format!("/admin/analytics/cids/{cid}")).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["tracked"], true, "demand was forgotten: {after}");
    let rate = |v: &Value| {
        v["analytics"]["demand"]["demand"]
            .as_array()
            .and_then(|regions| regions.iter().find(|r| r[0] == "eu"))
            .and_then(|r| r[1].as_f64())
            .unwrap_or(0.0)
    };
    assert!(rate(&after) > 0.0, "eu demand after restart: {after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_access_batches_are_refused_whole_with_a_failure_body() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), 1);
    let user_token = create_token(&data, "alice", false).unwrap();
    let admin_token = create_token(&data, "ops", true).unwrap();
    let closed = closed_node(None);
    let pinhive = Pinhive::start(&data, &["--config", &config, "--ipfs-node", &closed])
        .await
        .unwrap();
    let admin = Client::new(&pinhive.url, &admin_token).unchecked();
    let user = Client::new(&pinhive.url, &user_token).unchecked();
    let good = json!({"cid": "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy", "region": "eu", "bytes": 1});
    let cases = [
        (
            json!({"events": [good.clone(), {"cid": "not-a-cid", "region": "eu", "bytes": 1}]}),
            "event 1",
        ),
        (
            json!({"events": [good.clone(), {"cid": good["cid"], "region": "", "bytes": 1}]}),
            "region",
        ),
        (
            json!({"events": [{"cid": good["cid"], "region": "eu", "bytes": -1}]}),
            "access batch",
        ),
        (
            json!({"events": [{"cid": good["cid"], "region": "eu", "bytes": 1, "extra": 1}]}),
            "unknown field",
        ),
        (json!({"events": []}), "1 to 10000"),
        (json!({"event": []}), "access batch"),
    ];
    for (body, expected) in cases {
        let (status, failure) = post_access(&admin, body.clone()).await;
        assert_eq!(status, 400, "{body} -> {failure}");
        assert_eq!(failure["error"]["reason"], "BAD_REQUEST", "{failure}");
        let details = failure["error"]["details"].as_str().unwrap_or_default();
        assert!(details.contains(expected), "{body}: {details}");
    }
    // A tenant token may not feed demand: it steers every tenant's replicas and the budget.
    let (status, failure) = post_access(&user, json!({"events": [good.clone()]})).await;
    assert_eq!(status, 403, "{failure}");
    // Nothing of the refused batches counted; a good one does.
    assert_eq!(
        metric_sum(
            &pinhive.url,
            "pinhive_analytics_access_events_total",
            "accepted"
        )
        .await,
        0.0
    );
    let (status, _) = post_access(&admin, json!({"events": [good]})).await;
    assert_eq!(status, 202);
    assert_eq!(
        metric_sum(
            &pinhive.url,
            "pinhive_analytics_access_events_total",
            "accepted"
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_producer_feeds_the_access_topic_and_bad_records_are_dead_lettered() {
    let tansu = Tansu::start().await.expect("tansu broker");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), 2);
    let admin_token = create_token(&data, "ops", true).unwrap();
    let closed = closed_node(Some("eu"));
    let log = format!("kafka://{}", tansu.bootstrap);
    let pinhive = Pinhive::start(
        &data,
        &["--config", &config, "--log", &log, "--ipfs-node", &closed],
    )
    .await
    .unwrap();
    let admin = Client::new(&pinhive.url, &admin_token).without_reachable_node();
    let cid = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";
    // Wait until the topic exists (pinhive creates it) before producing.
    eventually(CONVERGE, "analytics partitions running", || async {
        let (_, summary) = admin.get("/admin/analytics").await;
        (summary["partitions"].as_array().map(Vec::len) == Some(2)).then_some(())
    })
    .await;
    let producer = external_producer(&tansu.bootstrap);
    let good = json!({"cid": cid, "region": "eu", "bytes": 2048}).to_string();
    for payload in [
        good.as_str(),
        "{not json",
        r#"{"cid":"nope","region":"eu","bytes":1}"#,
    ] {
        producer
            .send(
                FutureRecord::to("pinhive-access").key(cid).payload(payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produce to the access topic");
    }
    eventually(CONVERGE, "the good record counted", || async {
        let (_, explained) = admin.get(&format!("/admin/analytics/cids/{cid}")).await;
        (explained["tracked"] == true).then_some(())
    })
    .await;
    let reasons = eventually(CONVERGE, "two access dead letters", || async {
        let reasons: Vec<String> = admin
            .dead_letter_reasons()
            .await
            .into_iter()
            .filter(|r| r.starts_with("access record"))
            .collect();
        (reasons.len() == 2).then_some(reasons)
    })
    .await;
    assert!(
        reasons.iter().any(|r| r.contains("not an access event")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("cid")), "{reasons:?}");
}

/// A valid CIDv1 (raw, sha2-256) for item `i`.
fn cid_of(i: usize) -> String {
    let digest: Vec<u8> = (0..32).map(|j| ((i * 31 + j * 7) % 251) as u8).collect();
    let hash = cid::multihash::Multihash::<64>::wrap(0x12, &digest).unwrap();
    cid::Cid::new_v1(0x55, hash).to_string()
}

/// Access partitions an instance runs (`GET /admin/analytics`).
async fn analytics_partitions(admin: &Client) -> BTreeSet<u64> {
    let (_, summary) = admin.get("/admin/analytics").await;
    summary["partitions"]
        .as_array()
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p["partition"].as_u64())
                .collect()
        })
        .unwrap_or_default()
}

async fn tracked(admin: &Client, cid: &str) -> bool {
    let (_, explained) = admin.get(&format!("/admin/analytics/cids/{cid}")).await;
    explained["tracked"] == true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_partitions_follow_the_consumer_group_and_a_survivor_rebuilds_demand() {
    let tansu = Tansu::start().await.expect("tansu broker");
    let dir = tempfile::tempdir().unwrap();
    // Demand must outlive the handover: reads an hour old still count.
    let config = write_config_with(dir.path(), 4, 3600.0);
    let log = format!("kafka://{}", tansu.bootstrap);
    let closed = closed_node(Some("eu"));
    let flags = [
        "--config",
        config.as_str(),
        "--log",
        log.as_str(),
        "--kafka-group",
        "analytics-test",
        "--kafka-session-timeout-ms",
        "6000",
        "--ipfs-node",
        closed.as_str(),
    ];
    let (data_a, data_b) = (dir.path().join("a"), dir.path().join("b"));
    let (token_a, token_b) = (
        create_token(&data_a, "ops", true).unwrap(),
        create_token(&data_b, "ops", true).unwrap(),
    );
    let mut a = Pinhive::start(&data_a, &flags).await.unwrap();
    let b = Pinhive::start(&data_b, &flags).await.unwrap();
    let admin_a = Client::new(&a.url, &token_a).without_reachable_node();
    let admin_b = Client::new(&b.url, &token_b).without_reachable_node();
    eventually(
        GROUP_CONVERGE,
        "the group to split the access partitions",
        || async {
            let (pa, pb) = (
                analytics_partitions(&admin_a).await,
                analytics_partitions(&admin_b).await,
            );
            let all: BTreeSet<u64> = pa.union(&pb).copied().collect();
            (!pa.is_empty() && !pb.is_empty() && pa.is_disjoint(&pb) && all.len() == 4)
                .then_some(())
        },
    )
    .await;

    // Reads of 12 CIDs, posted at A; each is counted by the instance owning its partition.
    let cids: Vec<String> = (0..12).map(cid_of).collect();
    let events: Vec<Value> = cids
        .iter()
        .map(|cid| json!({"cid": cid, "region": "eu", "bytes": 1_000_000}))
        .collect();
    let (status, body) = post_access(&admin_a, json!({ "events": events })).await;
    assert_eq!(status, 202, "{body}");
    eventually(
        GROUP_CONVERGE,
        "every CID tracked by exactly one instance",
        || async {
            for cid in &cids {
                if tracked(&admin_a, cid).await == tracked(&admin_b, cid).await {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;

    // A leaves: B runs every access partition and rebuilds A's demand from the topic (B's own
    // store has no checkpoint of them).
    assert!(a.stop(), "A exits cleanly:\n{}", a.log_tail());
    eventually(GROUP_CONVERGE, "B tracks every CID", || async {
        if analytics_partitions(&admin_b).await.len() != 4 {
            return None;
        }
        for cid in &cids {
            if !tracked(&admin_b, cid).await {
                return None;
            }
        }
        Some(())
    })
    .await;
}
