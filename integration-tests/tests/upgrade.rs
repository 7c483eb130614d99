//! Upgrade: this release serves a data directory (embedded store and log) the previous release
//! wrote — a fixture made once by that release's binary and committed
//! (`integration-tests/fixtures/upgrade/<release>/`; `python3 scripts/make-upgrade-fixture.py
//! --rev <release>` makes it again) — and new requests land in the same log after the earlier
//! release's events: every pin converges, on a real js-ipfs daemon.
//!
//! The fixture's release pinned 40 CIDs through an IPFS node that never answered, deleted 6
//! of the pins and replaced 4, and stopped with SIGTERM. Here that node is gone (it goes down
//! after its grace period) and a js-ipfs daemon holding the content takes its place.

use std::time::Duration;

use pinhive_integration_tests::{workspace_root, Client, IpfsDaemon, Pinhive};
use serde_json::{json, Value};

/// The release the fixture comes from (stop 20 of the project's history).
const PREVIOUS_RELEASE: &str = "d29c069";

const CONVERGE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_of_the_previous_release_serves_and_every_pin_converges() {
    let fixture = workspace_root()
        .join("integration-tests/fixtures/upgrade")
        .join(PREVIOUS_RELEASE);
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("manifest.json")).unwrap())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let untar = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(fixture.join("data.tar.gz"))
        .arg("-C")
        .arg(dir.path())
        .status()
        .expect("tar");
    assert!(untar.success());
    let data = dir.path().join("data");
    let pins = manifest["pins"].as_array().unwrap();
    let with_after =
        |after: &str| -> Vec<&Value> { pins.iter().filter(|p| p["after"] == after).collect() };
    let (pinned, gone) = (with_after("pinned"), {
        let mut gone = with_after("deleted");
        gone.extend(with_after("replaced"));
        gone
    });
    assert_eq!(
        (pinned.len(), gone.len()),
        (34, 10),
        "the fixture's requests"
    );

    // The content of every pin that must end pinned, on a real daemon (the fixture's CIDs are
    // what `ipfs add --cid-version 1` gives their content).
    let ipfs = IpfsDaemon::start().await.expect("js-ipfs daemon");
    for pin in &pinned {
        let cid = ipfs
            .add(pin["content"].as_str().unwrap().as_bytes(), 1)
            .await
            .unwrap();
        assert_eq!(cid, pin["cid"].as_str().unwrap());
    }
    let node = format!("js={}", ipfs.api_url);
    let pinhive = Pinhive::start(&data, &["--ipfs-node", &node, "--node-grace-secs", "1"])
        .await
        .expect("this release opens the previous release's data dir");
    let alice = Client::new(&pinhive.url, manifest["tokens"]["alice"].as_str().unwrap());

    // The earlier release's pins: each reaches pinned, as it was asked for.
    for pin in &pinned {
        let requestid = pin["requestid"].as_str().unwrap();
        let status = alice.wait_status(requestid, "pinned", CONVERGE).await;
        assert_eq!(status["pin"]["cid"], pin["cid"], "{status}");
        assert_eq!(status["pin"]["name"], pin["name"], "{status}");
        assert!(ipfs.is_pinned(pin["cid"].as_str().unwrap()).await.unwrap());
    }
    for pin in &gone {
        let (status, body) = alice
            .get(&format!("/pins/{}", pin["requestid"].as_str().unwrap()))
            .await;
        assert_eq!(status, 404, "{body}");
    }
    // Its history, read from the earlier release's journal.
    let first = pinned[0]["requestid"].as_str().unwrap();
    let (status, history) = alice.get(&format!("/admin/pins/{first}/history")).await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["events"][0]["kind"], "pin_requested", "{history}");

    // A mixed stream: this release's requests after the earlier release's events in the same
    // log — new pins, and a delete of an earlier pin.
    let mut new = Vec::new();
    for i in 0..5 {
        let cid = ipfs
            .add(format!("after the upgrade {i}").as_bytes(), 1)
            .await
            .unwrap();
        let (status, body) = alice
            .pin(json!({"cid": cid, "name": format!("new-{i}")}))
            .await;
        assert_eq!(status, 202, "{body}");
        new.push(body["requestid"].as_str().unwrap().to_string());
    }
    for requestid in &new {
        alice.wait_status(requestid, "pinned", CONVERGE).await;
    }
    let (status, _) = alice.delete(&format!("/pins/{first}")).await;
    assert_eq!(status, 202);
    let (_, listing) = alice.get("/pins?limit=1000").await;
    assert_eq!(
        listing["count"].as_u64(),
        Some((pinned.len() + new.len() - 1) as u64),
        "{listing}"
    );
    // The admin token the earlier release made offline works too.
    let ops = Client::new(&pinhive.url, manifest["tokens"]["ops"].as_str().unwrap());
    let (status, _) = ops.get("/admin/nodes").await;
    assert_eq!(status, 200);
}
