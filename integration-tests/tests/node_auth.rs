//! Kubo RPC credentials, against the real binary and a real js-ipfs daemon behind a real HTTP
//! proxy that demands an `Authorization` header (as Kubo's `API.Authorizations` does): the
//! header configured per node on the instance reaches the node, and the credential never
//! shows in the logs, `/ready`, `/metrics`, the admin API or anything written to the data
//! directory (the control log included).

use std::time::Duration;

use pinhive_integration_tests::proxy::AuthProxy;
use pinhive_integration_tests::{
    create_token, eventually, files_containing, Client, IpfsDaemon, Pinhive,
};
use serde_json::json;

const CONVERGE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_credentials_reach_the_node_and_nowhere_else() {
    let ipfs = IpfsDaemon::start().await.expect("js-ipfs daemon");
    // Node a: a bearer token from the instance's auth file. Node b: Basic credentials written
    // in its URL (an earlier release's only way), taken out of the URL at start.
    let bearer = "s3cr3t-bearer-7f3a";
    let (user, password) = ("pinhive", "s3cr3t-pass-91c2");
    let proxy_a = AuthProxy::start(&ipfs.api_url, &format!("Bearer {bearer}"), None).unwrap();
    let basic = "Basic cGluaGl2ZTpzM2NyM3QtcGFzcy05MWMy"; // base64("pinhive:s3cr3t-pass-91c2")
    let proxy_b = AuthProxy::start(&ipfs.api_url, basic, None).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "alice", false).unwrap();
    let admin_token = create_token(&data, "ops", true).unwrap();
    let auth_file = dir.path().join("ipfs-auth.toml");
    std::fs::write(&auth_file, format!("ipfs-a = \"bearer:{bearer}\"\n")).unwrap();
    let node_a = format!("ipfs-a={}", proxy_a.url);
    let url_b = proxy_b
        .url
        .replace("http://", &format!("http://{user}:{password}@"));
    let node_b = format!("ipfs-b={url_b}");
    let auth_path = auth_file.display().to_string();
    let pinhive = Pinhive::start(
        &data,
        &[
            "--ipfs-node",
            &node_a,
            "--ipfs-node",
            &node_b,
            "--ipfs-auth-file",
            &auth_path,
            "--replicas-min",
            "2",
            "--replicas-max",
            "2",
        ],
    )
    .await
    .unwrap();
    let client = Client::new(&pinhive.url, &token);
    let admin = Client::new(&pinhive.url, &admin_token);

    // Both nodes answer their health checks through the proxies: ready.
    let ready = eventually(CONVERGE, "/ready with both nodes reachable", || async {
        let response = reqwest::get(format!("{}/ready", pinhive.url)).await.ok()?;
        let body: serde_json::Value = response.json().await.ok()?;
        (body["ipfs"]["reachable"] == 2).then_some(body)
    })
    .await;
    // `/ready` (no token): node ids and reachability only.
    for node in ready["ipfs"]["nodes"].as_array().unwrap() {
        let mut keys: Vec<&String> = node.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["id", "reachable"], "{ready}");
    }

    // A pin goes through both proxies, each with its credential.
    let content = ipfs.add(b"pinhive node auth", 1).await.unwrap();
    let pinned = client.pin_and_wait_pinned(json!({"cid": content})).await;
    assert_eq!(pinned["info"]["replicas_pinned"], "2", "{pinned}");
    assert!(ipfs.is_pinned(&content).await.unwrap());
    assert!(proxy_a.authorized() > 0 && proxy_b.authorized() > 0);
    assert_eq!(
        (proxy_a.refused(), proxy_b.refused()),
        (0, 0),
        "every call carried its node's credential"
    );

    // Nodes in the admin API: URLs without credentials.
    let (status, nodes) = admin.get("/admin/nodes").await;
    assert_eq!(status, 200, "{nodes}");
    let urls: Vec<&str> = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["rpc_url"].as_str().unwrap())
        .collect();
    assert_eq!(urls, [proxy_a.url.as_str(), proxy_b.url.as_str()]);
    // A node registered with credentials in its URL is refused (they would travel in the
    // control log); the answer does not repeat them.
    let (status, refused) = admin
        .send(
            admin
                .request(reqwest::Method::POST, "/admin/nodes")
                .json(&json!({
                    "id": "ipfs-c", "rpc_url": format!("http://u:{password}-c@127.0.0.1:1"),
                    "region": "", "weight": 1
                })),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert!(refused.to_string().contains("[ipfs_auth]"), "{refused}");

    // Nothing pinhive answers, logs or writes holds a credential.
    let metrics = reqwest::get(format!("{}/metrics", pinhive.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let ready_text = reqwest::get(format!("{}/ready", pinhive.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let log = std::fs::read_to_string(&pinhive.log_path).unwrap();
    assert!(
        log.contains("ipfs node"),
        "the startup log names the nodes:\n{log}"
    );
    for secret in [bearer, password, "cGluaGl2ZTpzM2NyM3Q"] {
        for (what, text) in [
            ("/metrics", &metrics),
            ("/ready", &ready_text),
            ("/admin/nodes", &nodes.to_string()),
            ("POST /admin/nodes", &refused.to_string()),
            ("the log", &log),
        ] {
            assert!(!text.contains(secret), "{what} shows a credential:\n{text}");
        }
        let written = files_containing(&data, secret.as_bytes());
        assert!(written.is_empty(), "{secret} written to {written:?}");
    }
    for url in [&proxy_a.url, &proxy_b.url] {
        assert!(
            !ready_text.contains(url.as_str()),
            "/ready shows a node URL: {ready_text}"
        );
        assert!(!metrics.contains(url.as_str()), "/metrics shows a node URL");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_its_credential_is_refused_and_unreachable() {
    let ipfs = IpfsDaemon::start().await.expect("js-ipfs daemon");
    let proxy = AuthProxy::start(&ipfs.api_url, "Bearer right", None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let auth_file = dir.path().join("ipfs-auth.toml");
    // A credential for every node ("*"), but the wrong one.
    std::fs::write(&auth_file, "\"*\" = \"bearer:wrong\"\n").unwrap();
    let node = format!("ipfs-a={}", proxy.url);
    let auth_path = auth_file.display().to_string();
    let pinhive = Pinhive::start(
        &data,
        &["--ipfs-node", &node, "--ipfs-auth-file", &auth_path],
    )
    .await
    .unwrap();
    eventually(CONVERGE, "the refused node to show unreachable", || async {
        let response = reqwest::get(format!("{}/ready", pinhive.url)).await.ok()?;
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.ok()?;
        (status == 503 && body["ipfs"]["nodes"][0]["reachable"] == false && proxy.refused() > 0)
            .then_some(())
    })
    .await;
    assert_eq!(proxy.authorized(), 0);
}
