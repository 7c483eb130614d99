//! Two pinhive instances in one Kafka consumer group (tansu broker, real js-ipfs daemon): the
//! group splits the partitions; one instance is stopped (SIGTERM) mid-burst; the survivor takes
//! its partitions over, replays them into its own store, and every request that got 202
//! converges, none applied twice.
//!
//! Why SIGTERM and not `kill -9`: tansu 0.6 does not expire the session of a member that died
//! without leaving — after a SIGKILL the group rebalanced but kept assigning the dead member's
//! partitions to it (observed here). Crash handover needs a broker that enforces
//! `session.timeout.ms` (Apache Kafka, Redpanda); the code path after the rebalance is the same.

use std::collections::BTreeSet;
use std::time::Duration;

use pinhive_integration_tests::{
    create_token, eventually, owned_partitions, pin_requested_counts, settled_listing, Burst,
    Client, IpfsDaemon, Pinhive, Tansu,
};

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
            let (pa, pb) = (
                owned_partitions(&admin_a).await,
                owned_partitions(&admin_b).await,
            );
            let all: BTreeSet<u64> = pa.union(&pb).copied().collect();
            (!pa.is_empty() && !pb.is_empty() && pa.is_disjoint(&pb) && all.len() == 8)
                .then_some(())
        },
    )
    .await;

    // Burst at instance A; stop it early in the burst.
    let client_a = Client::new(&a.url, &token_a);
    let burst = Burst::start(&client_a, &cids, 1_500, 32);
    burst.wait_acked(300).await;
    assert!(a.stop(), "A exits cleanly:\n{}", a.log_tail());
    let total = burst.total;
    let acknowledged = burst.acknowledged().await;
    assert!(
        acknowledged.len() >= 300 && acknowledged.len() < total,
        "{}",
        acknowledged.len()
    );

    // B takes over every partition once A's session expires.
    eventually(
        Duration::from_secs(90),
        "B to take over all 8 partitions",
        || async { (owned_partitions(&admin_b).await.len() == 8).then_some(()) },
    )
    .await;
    let client_b = Client::new(&b.url, &token_b);
    for requestid in &acknowledged {
        client_b
            .wait_status(requestid, "pinned", Duration::from_secs(120))
            .await;
    }

    // Nothing applied twice: rows are unique, counters match rows, one PinRequested each.
    // `settled_listing` waits for the counters to match the rows (and all to be pinned).
    let (listed, count) = settled_listing(&client_b).await;
    let distinct: BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(distinct.len(), listed.len(), "a request listed twice");
    assert_eq!(count, listed.len() as u64, "counters match the rows");
    assert!(acknowledged.is_subset(&distinct));
    let counts = pin_requested_counts(&admin_b, acknowledged.iter().take(150)).await;
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
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
