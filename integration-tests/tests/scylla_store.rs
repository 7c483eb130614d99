//! The real binary on the ScyllaDB store (`--store scylla://…`), served by the CQL test server
//! (pinhive-cql-server: the CQL subset with ScyllaDB's rules, in memory — not ScyllaDB, and
//! nothing here measures ScyllaDB's speed): `pinhive migrate`, a token created in the shared
//! store, a pin on a real js-ipfs daemon through to `pinned`, listing, and the state surviving a
//! restart because it lives in the CQL server, not in the data directory. Then three instances
//! in one Kafka group on one shared store: read-your-writes across instances, and a burst with
//! injected write timeouts and one instance stopped mid-way loses nothing.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pinhive_cql_server::{CqlServer, Fault, StatementMatcher};
use pinhive_integration_tests::{
    binary, eventually, owned_partitions, pin_requested_counts, settled_listing, Burst, Client,
    IpfsDaemon, Pinhive, Tansu,
};
use serde_json::json;

const CONVERGE: Duration = Duration::from_secs(90);
/// Consumer-group rebalances on tansu take seconds each, longer on a loaded machine.
const GROUP_CONVERGE: Duration = Duration::from_secs(180);

/// `pinhive <args>` to completion; panics with its stderr on failure.
fn run(args: &[&str]) -> String {
    let output = Command::new(binary())
        .args(args)
        // Without a token, `token create` writes the store directly (bootstrap).
        .env_remove("PINHIVE_TOKEN")
        .output()
        .expect("pinhive runs");
    assert!(
        output.status.success(),
        "pinhive {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn write_config(dir: &Path) -> String {
    let path = dir.join("pinhive.toml");
    // One test node: SimpleStrategy RF 1 (production: network:3).
    std::fs::write(&path, "store_replication = \"simple:1\"\n").unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_runs_on_the_scylla_store_and_keeps_its_state_there() {
    let cql = CqlServer::start().await.expect("CQL test server");
    let ipfs = IpfsDaemon::start().await.expect("js-ipfs daemon");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path());
    let store = format!("scylla://{}/pinhive", cql.addr());

    let migrated = run(&["migrate", "--config", &config, "--store", &store]);
    assert!(
        migrated.contains("applied migrations [1, 2, 3, 4, 5, 6]"),
        "{migrated}"
    );
    let again = run(&["migrate", "--config", &config, "--store", &store]);
    assert!(again.contains("up to date"), "{again}");
    let token = run(&["token", "create", "--name", "alice", "--store", &store]);

    let node = format!("ipfs-a={}", ipfs.api_url);
    let mut pinhive = Pinhive::start(
        &data,
        &["--config", &config, "--store", &store, "--ipfs-node", &node],
    )
    .await
    .unwrap();
    let client = Client::new(&pinhive.url, &token);
    let cid = ipfs.add(b"stored in the cql server", 1).await.unwrap();
    let pinned = client
        .pin_and_wait_pinned(json!({"cid": cid, "name": "shared"}))
        .await;
    let requestid = pinned["requestid"].as_str().unwrap().to_string();
    assert!(ipfs.is_pinned(&cid).await.unwrap(), "the daemon pins it");
    let (status, listing) = client.get("/pins?name=shared").await;
    assert_eq!(
        (status, listing["count"].clone()),
        (200, json!(1)),
        "{listing}"
    );

    // The data directory holds no store: a restart finds the pin in the CQL server.
    assert!(!data.join("store").exists(), "no embedded store was opened");
    assert!(pinhive.stop(), "pinhive stops on SIGTERM");
    pinhive.restart().await.unwrap();
    let (status, again) = client.get(&format!("/pins/{requestid}")).await;
    assert_eq!(
        (status, again["status"].clone()),
        (200, json!("pinned")),
        "{again}"
    );
    // And it keeps working: a second pin after the restart.
    let other = ipfs.add(b"second, after the restart", 1).await.unwrap();
    client.pin_and_wait_pinned(json!({"cid": other})).await;
    eventually(CONVERGE, "both pins listed", || async {
        let (_, listing) = client.get("/pins").await;
        (listing["count"] == 2).then_some(())
    })
    .await;
    let stats = cql.stats();
    assert!(
        stats.statements_containing("INSERT INTO") > 0,
        "the service wrote through the CQL server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_the_store_and_a_stopped_one_loses_nothing() {
    let cql = CqlServer::start().await.expect("CQL test server");
    let tansu = Tansu::start().await.expect("tansu broker");
    let ipfs = IpfsDaemon::start().await.expect("js-ipfs daemon");
    let mut cids = Vec::new();
    for i in 0..16 {
        cids.push(
            ipfs.add(format!("shared store content {i}").as_bytes(), 1)
                .await
                .unwrap(),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let store = format!("scylla://{}/pinhive", cql.addr());
    run(&["migrate", "--config", &config, "--store", &store]);
    // Tokens live in the shared store: one secret works on every instance.
    let token = run(&["token", "create", "--name", "alice", "--store", &store]);
    let admin = run(&[
        "token", "create", "--name", "ops", "--admin", "--store", &store,
    ]);
    let log = format!("kafka://{}", tansu.bootstrap);
    let node = format!("ipfs-a={}", ipfs.api_url);
    let flags = [
        "--config",
        config.as_str(),
        "--store",
        store.as_str(),
        "--log",
        log.as_str(),
        "--partitions",
        "8",
        "--kafka-group",
        "shared-store",
        "--kafka-session-timeout-ms",
        "6000",
        "--ipfs-node",
        node.as_str(),
    ];
    let a = Pinhive::start(&dir.path().join("a"), &flags).await.unwrap();
    let mut b = Pinhive::start(&dir.path().join("b"), &flags).await.unwrap();
    let c = Pinhive::start(&dir.path().join("c"), &flags).await.unwrap();
    let admins: Vec<Client> = [&a, &b, &c]
        .iter()
        .map(|p| Client::new(&p.url, &admin))
        .collect();
    eventually(
        GROUP_CONVERGE,
        "the group to split the 8 partitions in 3",
        || async {
            let mut all = BTreeSet::new();
            for admin in &admins {
                let owned = owned_partitions(admin).await;
                if owned.is_empty() || !owned.is_disjoint(&all) {
                    return None;
                }
                all.extend(owned);
            }
            (all.len() == 8).then_some(())
        },
    )
    .await;

    // Read-your-writes across instances: a pin POSTed to A is there at once on B and C, whoever
    // owns its partition (the 202 waited for the owner's commit row in the shared store).
    let (client_a, client_b, client_c) = (
        Client::new(&a.url, &token),
        Client::new(&b.url, &token),
        Client::new(&c.url, &token),
    );
    for cid in cids.iter().take(4) {
        let (status, created) = client_a.pin(json!({"cid": cid})).await;
        assert_eq!(status, 202, "{created}");
        let requestid = created["requestid"].as_str().unwrap();
        for other in [&client_b, &client_c] {
            let (status, shown) = other.get(&format!("/pins/{requestid}")).await;
            assert_eq!(
                status, 200,
                "{} not readable at once elsewhere: {shown}",
                requestid
            );
        }
    }

    // A burst at A; store writes time out now and then (not applied); B stops mid-burst.
    cql.inject(
        Fault::WriteTimeout { applied: false },
        StatementMatcher::contains("INSERT INTO"),
        20,
    );
    let burst = Burst::start(&client_a, &cids, 1_500, 32);
    burst.wait_acked(300).await;
    assert!(b.stop(), "B exits cleanly:\n{}", b.log_tail());
    let acknowledged = burst.acknowledged().await;
    assert!(acknowledged.len() >= 300, "{}", acknowledged.len());
    eventually(
        GROUP_CONVERGE,
        "A and C to take over B's partitions",
        || async {
            let owned =
                owned_partitions(&admins[0]).await.len() + owned_partitions(&admins[2]).await.len();
            (owned == 8).then_some(())
        },
    )
    .await;
    assert_eq!(cql.pending_faults(), 0, "every injected timeout fired");
    for requestid in &acknowledged {
        client_c
            .wait_status(requestid, "pinned", Duration::from_secs(120))
            .await;
    }
    // Nothing lost, nothing applied twice; the counters (shared rows) equal the rows.
    let (listed, count) = settled_listing(&client_c).await;
    let distinct: BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(distinct.len(), listed.len(), "a request listed twice");
    assert_eq!(count, listed.len() as u64, "counters match the rows");
    assert!(acknowledged.is_subset(&distinct));
    let counts = pin_requested_counts(&admins[2], acknowledged.iter().take(100)).await;
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
}

/// Two instances on one shared store (Kafka mode, the production layout): a token minted
/// through A works on B; revoked through A, B refuses it within 1 s (its token cache holds a
/// verified token 500 ms). The token is used on B first, so B has it cached when it is revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_on_one_instance_is_refused_by_another_within_a_second() {
    let cql = CqlServer::start().await.expect("CQL test server");
    let tansu = Tansu::start().await.expect("tansu broker");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let store = format!("scylla://{}/pinhive", cql.addr());
    run(&["migrate", "--config", &config, "--store", &store]);
    let root = run(&[
        "token", "create", "--name", "root", "--admin", "--store", &store,
    ]);
    let log = format!("kafka://{}", tansu.bootstrap);
    let flags = [
        "--config",
        config.as_str(),
        "--store",
        store.as_str(),
        "--log",
        log.as_str(),
        "--partitions",
        "2",
        "--kafka-group",
        "revocation",
    ];
    let a = Pinhive::start(&dir.path().join("a"), &flags).await.unwrap();
    let b = Pinhive::start(&dir.path().join("b"), &flags).await.unwrap();
    let on_a = Client::new(&a.url, &root).unchecked();
    let (status, minted) = on_a
        .send(
            on_a.request(reqwest::Method::POST, "/admin/tokens")
                .json(&json!({"owner": "alice", "name": "phone"})),
        )
        .await;
    assert_eq!(status, 201, "{minted}");
    let secret = minted["token"].as_str().unwrap().to_string();
    let id = minted["id"].as_str().unwrap().to_string();
    let on_b = Client::new(&b.url, &secret).unchecked();
    assert_eq!(on_b.get("/pins").await.0, 200, "the new token works on B");
    let (status, revoked) = on_a.delete(&format!("/admin/tokens/{id}")).await;
    assert_eq!(status, 200, "{revoked}");
    let revoked_at = std::time::Instant::now();
    loop {
        // A request counts from when it was sent: one sent within the second may be answered
        // later on a slow machine, and its 200 is then still within the promise.
        let sent = revoked_at.elapsed();
        let (status, body) = on_b.get("/pins").await;
        if status == 401 {
            assert!(body.to_string().contains("revoked"), "{body}");
            break;
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            sent < Duration::from_secs(1),
            "B still accepted the token in a request sent {sent:?} after A revoked it"
        );
    }
    eprintln!("revocation seen on B after {:?}", revoked_at.elapsed());
}
