//! TLS, against the real binary: the API serves HTTPS only with `--tls-cert/--tls-key` (curl
//! with the CA file pins over https; plain http gets no HTTP answer), reloads its certificate
//! on SIGHUP, and reaches an `https://` Kubo node (a real js-ipfs daemon behind a rustls
//! proxy whose CA pinhive trusts through `--ipfs-ca-file`). Every certificate and key is made
//! at test time (rcgen).

use std::process::Command;
use std::time::Duration;

use pinhive_integration_tests::proxy::AuthProxy;
use pinhive_integration_tests::{
    client_trusting, create_token, eventually, IpfsDaemon, Pinhive, TestCa,
};
use serde_json::{json, Value};

const CONVERGE: Duration = Duration::from_secs(60);

fn curl(args: &[&str]) -> (bool, String) {
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20"])
        .args(args)
        .output()
        .expect("running curl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_api_and_https_kubo_node_with_certificate_reload() {
    let ipfs = IpfsDaemon::start().await.expect("js-ipfs daemon");
    // The Kubo node behind TLS (its own CA) and a node credential on top.
    let node_ca = TestCa::new("pinhive test node CA").unwrap();
    let proxy = AuthProxy::start(
        &ipfs.api_url,
        "Bearer node-token",
        Some(node_ca.server_config().unwrap()),
    )
    .unwrap();
    assert!(proxy.url.starts_with("https://"));

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "alice", false).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let node_ca_file = write("node-ca.pem", &node_ca.ca_pem);
    let auth_file = write("ipfs-auth.toml", "ipfs-a = \"bearer:node-token\"\n");
    let api_ca = TestCa::new("pinhive test API CA").unwrap();
    let (cert, key) = api_ca.leaf().unwrap();
    let cert_file = write("api.crt", &cert);
    let key_file = write("api.key", &key);
    let api_ca_file = write("api-ca.pem", &api_ca.ca_pem);
    let node = format!("ipfs-a={}", proxy.url);
    let pinhive = Pinhive::start_tls(
        &data,
        &[
            "--ipfs-node",
            &node,
            "--ipfs-ca-file",
            &node_ca_file,
            "--ipfs-auth-file",
            &auth_file,
            "--tls-cert",
            &cert_file,
            "--tls-key",
            &key_file,
        ],
        &api_ca.ca_pem,
    )
    .await
    .unwrap();
    assert!(pinhive.url.starts_with("https://localhost:"));

    // The https:// node is reachable (health checks through the TLS proxy).
    let https = client_trusting(&api_ca.ca_pem).unwrap();
    eventually(CONVERGE, "the https node reachable", || async {
        let body: Value = https
            .get(format!("{}/ready", pinhive.url))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (body["ipfs"]["reachable"] == 1).then_some(())
    })
    .await;

    // curl with the CA file pins over https.
    let content = ipfs.add(b"pinhive over tls", 1).await.unwrap();
    let body = json!({"cid": content}).to_string();
    let auth = format!("Authorization: Bearer {token}");
    let (ok, answer) = curl(&[
        "--cacert",
        &api_ca_file,
        "-H",
        &auth,
        "-H",
        "Content-Type: application/json",
        "-d",
        &body,
        &format!("{}/pins", pinhive.url),
    ]);
    assert!(ok, "curl over https: {answer}");
    let created: Value = serde_json::from_str(&answer).unwrap_or_else(|_| panic!("{answer}"));
    let requestid = created["requestid"].as_str().unwrap().to_string();
    eventually(CONVERGE, "pinned through the https node", || async {
        let pin: Value = https
            .get(format!("{}/pins/{requestid}", pinhive.url))
            .bearer_auth(&token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (pin["status"] == "pinned").then_some(())
    })
    .await;
    assert!(ipfs.is_pinned(&content).await.unwrap());
    assert!(proxy.authorized() > 0);
    assert_eq!(proxy.refused(), 0);

    // Plain http on the same port gets no HTTP answer; curl without the CA refuses the
    // certificate.
    let plain = pinhive.url.replace("https://", "http://");
    let (ok, answer) = curl(&[&format!("{plain}/health")]);
    assert!(!ok, "plain http answered: {answer}");
    assert!(reqwest::get(format!("{plain}/health")).await.is_err());
    let (ok, answer) = curl(&[&format!("{}/health", pinhive.url)]);
    assert!(!ok, "an unknown CA was trusted: {answer}");

    // SIGHUP reloads the certificate: a new CA's leaf in the same files.
    let new_ca = TestCa::new("pinhive test API CA 2").unwrap();
    let (cert, key) = new_ca.leaf().unwrap();
    write("api.crt", &cert);
    write("api.key", &key);
    let pid = pinhive.pid().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let renewed = client_trusting(&new_ca.ca_pem).unwrap();
    eventually(
        Duration::from_secs(20),
        "the new certificate served",
        || async {
            let response = renewed
                .get(format!("{}/health", pinhive.url))
                .send()
                .await
                .ok()?;
            response.status().is_success().then_some(())
        },
    )
    .await;
    // New connections no longer get the old certificate; the process lives on.
    let fresh_old = client_trusting(&api_ca.ca_pem).unwrap();
    assert!(fresh_old
        .get(format!("{}/health", pinhive.url))
        .send()
        .await
        .is_err());
    let new_ca_file = write("api-ca-2.pem", &new_ca.ca_pem);
    let (ok, answer) = curl(&["--cacert", &new_ca_file, &format!("{}/health", pinhive.url)]);
    assert!(ok, "{answer}");
    let log = std::fs::read_to_string(&pinhive.log_path).unwrap();
    assert!(log.contains("tls certificate reloaded"), "{log}");
}
