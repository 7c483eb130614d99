//! No cross-tenant leak, against the real binary and a real js-ipfs daemon: two tenants pin
//! the same CIDs (one available, one nobody provides, so it fails), tenant A acts on its pins
//! (recover, expiry, delete), and every route tenant B can call is checked — B never sees A's
//! request ids, the node's id or raw error in pin data, or A's pins themselves; the admin still
//! sees the raw detail (docs/security.md).

use std::time::Duration;

use pinhive_integration_tests::{create_token, eventually, Client, IpfsDaemon, Pinhive};
use reqwest::Method;
use serde_json::{json, Value};

const CONVERGE: Duration = Duration::from_secs(60);
const NOT_FOUND_REASON: &str = "content not found on the network (timeout)";

/// A CID nobody provides (a random digest).
fn unprovided_cid() -> String {
    let digest: [u8; 32] = rand::random();
    let hash = cid::multihash::Multihash::<64>::wrap(0x12, &digest).unwrap();
    cid::Cid::new_v1(0x55, hash).to_string()
}

/// What tenant B received, route by route.
struct Seen(Vec<(String, u16, String)>);

impl Seen {
    async fn call(
        &mut self,
        client: &Client,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = client.request(method.clone(), path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        self.0
            .push((format!("{method} {path}"), status, text.clone()));
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_never_sees_another_tenants_pins_errors_or_nodes() {
    let ipfs = IpfsDaemon::start().await.expect("js-ipfs daemon");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let alice_token = create_token(&data, "alice", false).unwrap();
    let bob_token = create_token(&data, "bob", false).unwrap();
    let admin_token = create_token(&data, "ops", true).unwrap();
    let node = format!("ipfs-a={}", ipfs.api_url);
    let pinhive = Pinhive::start(
        &data,
        &[
            "--ipfs-node",
            &node,
            "--pin-timeout-secs",
            "2",
            "--pin-attempts",
            "1",
            "--pin-retry-limit",
            "0",
        ],
    )
    .await
    .unwrap();
    let alice = Client::new(&pinhive.url, &alice_token);
    let bob = Client::new(&pinhive.url, &bob_token);
    let admin = Client::new(&pinhive.url, &admin_token);

    // Both pin the same available content and the same content nobody provides.
    let shared = ipfs
        .add(b"pinhive isolation: shared content", 1)
        .await
        .unwrap();
    let missing = unprovided_cid();
    let alice_shared = alice.pin_and_wait_pinned(json!({"cid": shared})).await;
    let (status, alice_missing) = alice
        .pin(json!({"cid": missing, "name": "alice-secret"}))
        .await;
    assert_eq!(status, 202, "{alice_missing}");
    let alice_missing = alice_missing["requestid"].as_str().unwrap().to_string();
    let failed = alice.wait_status(&alice_missing, "failed", CONVERGE).await;
    assert_eq!(failed["info"]["failure"], NOT_FOUND_REASON, "{failed}");
    let alice_shared = alice_shared["requestid"].as_str().unwrap().to_string();

    let bob_shared = bob.pin_and_wait_pinned(json!({"cid": shared})).await;
    let bob_shared = bob_shared["requestid"].as_str().unwrap().to_string();
    let (status, created) = bob.pin(json!({"cid": missing})).await;
    assert_eq!(status, 202, "{created}");
    let bob_missing = created["requestid"].as_str().unwrap().to_string();
    bob.wait_status(&bob_missing, "failed", CONVERGE).await;

    // After B's pins exist, A acts on the shared CIDs: recovery (a new failure round), an
    // expiry, a delete. Each is an event on the CID's journal naming A's request id.
    let (status, body) = alice
        .send(alice.request(
            Method::POST,
            &format!("/admin/pins/{alice_missing}/recover"),
        ))
        .await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = alice
        .send(
            alice
                .request(Method::PUT, &format!("/admin/pins/{alice_missing}/expiry"))
                .json(&json!({"expires_at": "2099-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (status, _) = alice.delete(&format!("/pins/{alice_shared}")).await;
    assert_eq!(status, 202);
    // The recovery's round has failed again, and the admin sees the raw detail of it.
    let raw = eventually(CONVERGE, "the recovered round failed again", || async {
        let (status, body) = admin
            .get(&format!("/admin/pins/{bob_missing}/history"))
            .await;
        assert_eq!(status, 200, "{body}");
        let text = body.to_string();
        let failures = body["events"]
            .as_array()?
            .iter()
            .filter(|e| e["kind"] == "replica_failed")
            .count();
        (failures >= 1
            && !text.contains(&alice_missing)
            && text.contains("ipfs-a")
            && text.contains("timed out"))
        .then_some(body)
    })
    .await;
    assert!(
        raw.to_string().contains("ipfs-a"),
        "admin sees node ids: {raw}"
    );

    let mut seen = Seen(Vec::new());
    let checked = bob.unchecked();
    // B's listing: exactly B's pins, whatever the filters.
    let (status, list) = seen
        .call(
            &checked,
            Method::GET,
            "/pins?status=queued,pinning,pinned,failed&limit=1000",
            None,
        )
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["count"], 2, "{list}");
    let (status, list) = seen
        .call(
            &checked,
            Method::GET,
            &format!("/pins?cid={shared},{missing}&status=queued,pinning,pinned,failed"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["count"], 2, "{list}");
    // B's own pins: the failure in the fixed vocabulary.
    for requestid in [&bob_shared, &bob_missing] {
        let (status, pin) = seen
            .call(&checked, Method::GET, &format!("/pins/{requestid}"), None)
            .await;
        assert_eq!(status, 200, "{pin}");
    }
    let (_, pin) = seen
        .call(&checked, Method::GET, &format!("/pins/{bob_missing}"), None)
        .await;
    assert_eq!(pin["status"], "failed", "{pin}");
    assert_eq!(pin["info"]["failure"], NOT_FOUND_REASON, "{pin}");
    // B's history: its own events and the CID's replica events, redacted.
    for requestid in [&bob_shared, &bob_missing] {
        let (status, history) = seen
            .call(
                &checked,
                Method::GET,
                &format!("/admin/pins/{requestid}/history"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{history}");
        let events = history["events"].as_array().unwrap();
        assert!(
            events.iter().any(|e| e["kind"] == "pin_requested"),
            "{history}"
        );
        for event in events {
            assert!(event["event"].get("node").is_none(), "{event}");
        }
    }
    let (_, history) = seen
        .call(
            &checked,
            Method::GET,
            &format!("/admin/pins/{bob_missing}/history"),
            None,
        )
        .await;
    let failures: Vec<&Value> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "replica_failed")
        .collect();
    assert!(!failures.is_empty(), "{history}");
    for failure in failures {
        assert_eq!(
            failure["event"]["replica_failed"]["reason"], NOT_FOUND_REASON,
            "{failure}"
        );
    }
    // Analytics of B's own pin: statuses, no node ids (or 503 when analytics is off).
    let (status, analytics) = seen
        .call(
            &checked,
            Method::GET,
            &format!("/admin/pins/{bob_missing}/analytics"),
            None,
        )
        .await;
    assert!(status == 200 || status == 503, "{status} {analytics}");
    if status == 200 {
        assert!(
            analytics["recommended_nodes"]
                .as_array()
                .unwrap()
                .is_empty(),
            "{analytics}"
        );
    }
    // Routes B can call that need no token.
    for path in ["/health", "/ready", "/metrics"] {
        let (status, _) = seen.call(&checked, Method::GET, path, None).await;
        assert!(status == 200 || status == 503, "{path}: {status}");
    }
    // Admin routes: refused.
    for path in [
        "/admin/dead-letters",
        "/admin/shards",
        "/admin/nodes",
        "/admin/quarantine",
    ] {
        let (status, _) = seen.call(&checked, Method::GET, path, None).await;
        assert_eq!(status, 403, "{path}");
    }

    // Everything B received so far: no request id of A, no node id or raw error in pin data,
    // no node URL anywhere.
    for (route, status, body) in &seen.0 {
        for secret in [
            alice_missing.as_str(),
            alice_shared.as_str(),
            "alice-secret",
        ] {
            assert!(
                !body.contains(secret),
                "{route} ({status}) shows {secret}: {body}"
            );
        }
        assert!(
            !body.contains(&ipfs.api_url),
            "{route} ({status}) shows the node URL: {body}"
        );
        let operator_view = route.ends_with("/ready") || route.ends_with("/metrics");
        if !operator_view {
            for raw in [
                "ipfs-a",
                "timed out:",
                "request timed out",
                "node timed out",
            ] {
                assert!(
                    !body.contains(raw),
                    "{route} ({status}) shows {raw:?}: {body}"
                );
            }
        }
    }

    // A's pins through every route that names a pin: the same 404 as a pin that never existed.
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/pins/{}".into(), None),
        (
            Method::POST,
            "/pins/{}".into(),
            Some(json!({"cid": shared})),
        ),
        (Method::DELETE, "/pins/{}".into(), None),
        (Method::GET, "/admin/pins/{}/history".into(), None),
        (Method::POST, "/admin/pins/{}/recover".into(), None),
        (
            Method::PUT,
            "/admin/pins/{}/expiry".into(),
            Some(json!({"expires_at": null})),
        ),
        (Method::DELETE, "/admin/pins/{}/expiry".into(), None),
        (Method::GET, "/admin/pins/{}/analytics".into(), None),
    ];
    let mut unknown = Seen(Vec::new());
    for (method, route, body) in routes {
        let (foreign_status, foreign) = seen
            .call(
                &checked,
                method.clone(),
                &route.replace("{}", &alice_missing),
                body.clone(),
            )
            .await;
        let (absent_status, absent) = unknown
            .call(
                &checked,
                method.clone(),
                &route.replace("{}", "no-such-pin"),
                body,
            )
            .await;
        assert_eq!(foreign_status, absent_status, "{method} {route}");
        assert!(
            foreign_status == 404 || foreign_status == 503,
            "{method} {route}: {foreign_status} {foreign}"
        );
        assert_eq!(
            foreign.to_string().replace(&alice_missing, "no-such-pin"),
            absent.to_string(),
            "{method} {route}"
        );
    }
    // A's pin is untouched by B's attempts.
    let (status, still) = alice.get(&format!("/pins/{alice_missing}")).await;
    assert_eq!(status, 200, "{still}");
}
