//! `pinhive state export|import` against the real binary: a stopped embedded deployment backed
//! up and restored into a new data dir serves the same pins to the same tokens, its pins'
//! history included, and goes on taking writes; a running deployment is refused.

use std::process::Command;

use pinhive_integration_tests::{binary, create_token, free_port, Client, Pinhive};
use serde_json::json;

/// A CIDv1 (raw, sha2-256 code) of `i`.
fn cid_of(i: u64) -> String {
    let mut digest = [0u8; 32];
    digest[..8].copy_from_slice(&i.to_be_bytes());
    let hash = cid::multihash::Multihash::<64>::wrap(0x12, &digest).unwrap();
    cid::Cid::new_v1(0x55, hash).to_string()
}

fn state(args: &[&str]) -> std::process::Output {
    Command::new(binary())
        .arg("state")
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_restored_into_a_new_data_dir_serves_the_same_pins() {
    let dir = tempfile::tempdir().unwrap();
    let (data, restored) = (dir.path().join("data"), dir.path().join("restored"));
    let backup = dir.path().join("backup.tar");
    let alice = create_token(&data, "alice", false).unwrap();
    let admin = create_token(&data, "admin", true).unwrap();
    let node = format!("ipfs-a=http://127.0.0.1:{}", free_port());
    let mut pinhive = Pinhive::start(&data, &["--ipfs-node", &node])
        .await
        .unwrap();
    let client = Client::new(&pinhive.url, &alice).without_reachable_node();
    let mut requestids = Vec::new();
    for i in 0..40u32 {
        // Four CIDs, ten pins each.
        let cid = cid_of(u64::from(i % 4));
        let (status, body) = client
            .pin(json!({"cid": cid, "name": format!("pin {i}"), "meta": {"i": i.to_string()}}))
            .await;
        assert_eq!(status, 202, "{body}");
        requestids.push(body["requestid"].as_str().unwrap().to_string());
    }
    let (status, _) = client.delete(&format!("/pins/{}", requestids[0])).await;
    assert_eq!(status, 202);
    let before = pinhive_integration_tests::list_every_pin(&client).await;

    // Refused while the service holds the data dir.
    let output = state(&[
        "export",
        backup.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("running pinhive"),
        "{output:?}"
    );

    assert!(pinhive.stop(), "a clean stop:\n{}", pinhive.log_tail());
    let output = state(&[
        "export",
        backup.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--json",
    ]);
    assert!(output.status.success(), "{output:?}");
    let exported: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let output = state(&[
        "import",
        backup.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
        "--json",
    ]);
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("verified"));
    let imported: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(imported, exported);
    let pins = exported["keyspaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "pins")
        .unwrap();
    // 40 pins made, one deleted: at least one row each for the 39 left.
    assert!(pins["entries"].as_u64().unwrap() >= 39, "{pins}");
    assert!(
        exported["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"].as_str().unwrap().starts_with("log/")),
        "{exported}"
    );
    // Not over an existing deployment.
    let output = state(&[
        "import",
        backup.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(!output.status.success());

    let restarted = Pinhive::start(&restored, &["--ipfs-node", &node])
        .await
        .unwrap();
    let client = Client::new(&restarted.url, &alice).without_reachable_node();
    assert_eq!(
        pinhive_integration_tests::list_every_pin(&client).await,
        before
    );
    let (status, pin) = client.get(&format!("/pins/{}", requestids[5])).await;
    assert_eq!(status, 200, "{pin}");
    assert_eq!(pin["pin"]["meta"]["i"], "5");
    let (status, _) = client.get(&format!("/pins/{}", requestids[0])).await;
    assert_eq!(status, 404, "the deleted pin stays deleted");
    let admin_client = Client::new(&restarted.url, &admin);
    let (status, history) = admin_client
        .get(&format!("/admin/pins/{}/history", requestids[5]))
        .await;
    assert_eq!(status, 200, "{history}");
    assert!(history.to_string().contains("pin_requested"), "{history}");
    // It goes on: a new pin after the restored ones.
    let (status, body) = client
        .pin(json!({"cid": cid_of(99), "name": "after"}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        pinhive_integration_tests::list_every_pin(&client)
            .await
            .0
            .len(),
        before.0.len() + 1
    );
}
