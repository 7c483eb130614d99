//! The real binary on the ScyllaDB store (`--store scylla://…`), served by the CQL test server
//! (pinhive-cql-server: the CQL subset with ScyllaDB's rules, in memory — not ScyllaDB, and
//! nothing here measures ScyllaDB's speed): `pinhive migrate`, a token created in the shared
//! store, a pin on a real js-ipfs daemon through to `pinned`, listing, and the state surviving a
//! restart because it lives in the CQL server, not in the data directory.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pinhive_cql_server::CqlServer;
use pinhive_integration_tests::{binary, eventually, Client, IpfsDaemon, Pinhive};
use serde_json::json;

const CONVERGE: Duration = Duration::from_secs(90);

/// `pinhive <args>` to completion; panics with its stderr on failure.
fn run(args: &[&str]) -> String {
    let output = Command::new(binary())
        .args(args)
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
    assert!(migrated.contains("applied migrations [1]"), "{migrated}");
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
