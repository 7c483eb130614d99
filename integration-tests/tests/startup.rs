//! Clear startup errors: a data dir that cannot be used, a port in use, a second instance on
//! the same data dir, a bad config file.

use std::process::Command;

use pinhive_integration_tests::{binary, free_port, Pinhive};

fn serve(args: &[&str]) -> (bool, String) {
    let output = Command::new(binary())
        .arg("serve")
        .args(args)
        .output()
        .expect("run pinhive");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_errors_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let closed = format!("http://127.0.0.1:{}", free_port());

    // Data dir is a file.
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let (ok, stderr) = serve(&["--data-dir", file.to_str().unwrap(), "--ipfs-node", &closed]);
    assert!(!ok);
    assert!(stderr.contains("data directory"), "{stderr}");

    // Port in use (by a running pinhive), and the same data dir twice.
    let data = dir.path().join("data");
    let running = Pinhive::start(&data, &["--ipfs-node", &closed])
        .await
        .unwrap();
    let listen = running.url.trim_start_matches("http://").to_string();
    let other = dir.path().join("other");
    let (ok, stderr) = serve(&[
        "--data-dir",
        other.to_str().unwrap(),
        "--listen",
        &listen,
        "--ipfs-node",
        &closed,
    ]);
    assert!(!ok);
    assert!(stderr.contains("already in use"), "{stderr}");
    let port = format!("127.0.0.1:{}", free_port());
    let (ok, stderr) = serve(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        &port,
        "--ipfs-node",
        &closed,
    ]);
    assert!(!ok);
    assert!(stderr.contains("in use by another pinhive"), "{stderr}");

    // Config: unknown keys and invalid values are rejected with the key named.
    let config = dir.path().join("pinhive.toml");
    std::fs::write(&config, "partitons = 8\n").unwrap();
    let (ok, stderr) = serve(&["--config", config.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("partitons"), "{stderr}");
    // `pinhive check` names the unreachable node and fails.
    let output = Command::new(binary())
        .args([
            "check",
            "--data-dir",
            other.to_str().unwrap(),
            "--ipfs-node",
            &closed,
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("FAILED"), "{stdout}");
    let (ok, stderr) = serve(&[
        "--ipfs-node",
        "127.0.0.1:5001",
        "--data-dir",
        other.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(stderr.contains("Kubo RPC URL"), "{stderr}");
}
