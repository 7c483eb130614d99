//! Pin expiry on real js-ipfs daemons: pins with a short expiry — set in `meta.expires_at` at
//! creation, or later through `PUT /admin/pins/{requestid}/expiry` (or `pinhive pins expire`) — are unpinned on the
//! daemons (their own `pin/ls`) once due, through `PinExpired` events; a pin without expiry
//! (also one whose expiry was cleared, and one sharing its CID with an expired pin) stays.
//! Bad expiries are 400 with a `Failure` body.

use std::time::Duration;

use pinhive_integration_tests::{create_token, eventually, Client, IpfsDaemon, Pinhive};
use serde_json::{json, Value};

const CONVERGE: Duration = Duration::from_secs(120);

/// `pinhive pins expire ARGS` against `service` with `token`.
fn expire_cli(service: &Pinhive, token: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(pinhive_integration_tests::binary())
        .args(["pins", "expire"])
        .args(args)
        .args(["--url", &service.url, "--token", token])
        .output()
        .expect("running pinhive pins expire")
}

/// RFC 3339 of now + `seconds`.
fn in_seconds(seconds: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(seconds))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The daemons (by index) whose `pin/ls` shows `cid`.
async fn holders(daemons: &[IpfsDaemon], cid: &str) -> Vec<usize> {
    let mut on = Vec::new();
    for (i, daemon) in daemons.iter().enumerate() {
        if daemon.is_pinned(cid).await.unwrap_or(false) {
            on.push(i);
        }
    }
    on
}

async fn wait_held_by(daemons: &[IpfsDaemon], cid: &str, count: usize) {
    eventually(
        CONVERGE,
        &format!("{cid} pinned on {count} daemons"),
        || async { (holders(daemons, cid).await.len() == count).then_some(()) },
    )
    .await;
}

async fn pin(client: &Client, cid: &str, meta: Value) -> String {
    let (status, body) = client.pin(json!({"cid": cid, "meta": meta})).await;
    assert_eq!(status, 202, "{body}");
    body["requestid"].as_str().unwrap().to_string()
}

async fn set_expiry(client: &Client, requestid: &str, body: Value) -> (u16, Value) {
    let path = format!("/admin/pins/{requestid}/expiry");
    client
        .send(client.request(reqwest::Method::PUT, &path).json(&body))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_with_a_short_expiry_are_unpinned_on_the_daemons() {
    let daemons: Vec<IpfsDaemon> = futures::future::join_all((0..3).map(|_| IpfsDaemon::start()))
        .await
        .into_iter()
        .enumerate()
        .map(|(i, daemon)| daemon.unwrap_or_else(|e| panic!("js-ipfs daemon {i}: {e}")))
        .collect();
    // Four objects, on every daemon (js-ipfs nodes do not exchange blocks): any daemon can
    // pin any of them at once.
    let mut cids = Vec::new();
    for i in 0..4 {
        let content = format!("expiry object {i}").repeat(32);
        let mut cid = String::new();
        for daemon in &daemons {
            cid = daemon.add(content.as_bytes(), 1).await.unwrap();
        }
        cids.push(cid);
    }
    let (by_meta, by_admin, shared, kept) = (&cids[0], &cids[1], &cids[2], &cids[3]);

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "alice", false).unwrap();
    let admin_token = create_token(&data, "root", true).unwrap();
    let stranger = create_token(&data, "mallory", false).unwrap();
    let mut args: Vec<String> = [
        "--replicas-min",
        "2",
        "--replicas-max",
        "2",
        "--repair-interval-secs",
        "1",
        "--expiry-interval-secs",
        "1",
    ]
    .map(String::from)
    .to_vec();
    for (i, daemon) in daemons.iter().enumerate() {
        args.extend([
            "--ipfs-node".to_string(),
            format!("n{i}={}", daemon.api_url),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let service = Pinhive::start(&data, &args).await.unwrap();
    let client = Client::new(&service.url, &token);
    let admin = Client::new(&service.url, &admin_token);

    // Bad expiries: 400 with a Failure body (the client checks it against the spec).
    for bad in [
        json!("tomorrow"),
        json!("2026-12-01"),
        json!(in_seconds(-60)),
    ] {
        let (status, body) = client
            .pin(json!({"cid": kept, "meta": {"expires_at": bad}}))
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["reason"], "BAD_REQUEST", "{body}");
        assert!(
            body["error"]["details"].as_str().unwrap().contains("expir"),
            "{body}"
        );
    }

    // Expiring in a few seconds, asked for in `meta` (long enough to be pinned first, with a
    // wide margin for a slow machine).
    let expires_at = in_seconds(20);
    let meta_pin = pin(&client, by_meta, json!({"expires_at": expires_at})).await;
    // Two pins of one CID, both expiring then; the second's expiry is cleared by its owner.
    let shared_expiring = pin(&client, shared, json!({"expires_at": expires_at})).await;
    let shared_kept = pin(&client, shared, json!({"expires_at": expires_at})).await;
    // Without an expiry; the second gets one through the admin API once pinned.
    let kept_pin = pin(&client, kept, json!({})).await;
    let admin_pin = pin(&client, by_admin, json!({"app": "x"})).await;
    for cid in &cids {
        wait_held_by(&daemons, cid, 2).await;
    }
    let (status, body) = client.get(&format!("/pins/{meta_pin}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pin"]["meta"]["expires_at"], expires_at, "{body}");

    // The owner clears an expiry (`pinhive pins expire --clear`: DELETE); an admin sets one;
    // bad bodies and foreign pins are refused.
    let cleared = expire_cli(&service, &token, &[&shared_kept, "--clear"]);
    assert!(cleared.status.success(), "{cleared:?}");
    assert_eq!(
        String::from_utf8_lossy(&cleared.stdout).trim(),
        format!("pin {shared_kept}: no expiry")
    );
    let (status, body) = client.get(&format!("/pins/{shared_kept}")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["pin"]["meta"].get("expires_at").is_none(), "{body}");
    // The CLI's errors: a bad time (400 from the API) and a foreign pin (404) exit non-zero
    // with the API's reason.
    let bad = expire_cli(&service, &token, &[&shared_kept, "--at", "soon"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("RFC 3339"),
        "{bad:?}"
    );
    let foreign = expire_cli(&service, &stranger, &[&shared_kept, "--clear"]);
    assert!(!foreign.status.success());
    assert!(
        String::from_utf8_lossy(&foreign.stderr).contains("404"),
        "{foreign:?}"
    );
    for bad in [
        json!({"expires_at": "soon"}),
        json!({"expires_at": in_seconds(-1)}),
        json!({"expires_at": 5}),
        json!({}),
        json!({"expires": in_seconds(5)}),
    ] {
        let (status, body) = set_expiry(&admin, &admin_pin, bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["reason"], "BAD_REQUEST", "{body}");
    }
    let (status, body) = set_expiry(&admin, "no-such-pin", json!({"expires_at": null})).await;
    assert_eq!(status, 404, "{body}");
    let admin_expiry = in_seconds(2);
    let (status, body) = set_expiry(&admin, &admin_pin, json!({"expires_at": admin_expiry})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["pin"]["meta"]["expires_at"], admin_expiry, "{body}");
    assert_eq!(
        body["pin"]["meta"]["app"], "x",
        "the rest of meta stays: {body}"
    );

    // Due: unpinned on every daemon, and gone from the API.
    for cid in [by_meta, by_admin] {
        wait_held_by(&daemons, cid, 0).await;
    }
    for requestid in [&meta_pin, &admin_pin, &shared_expiring] {
        eventually(CONVERGE, &format!("{requestid} gone"), || async {
            (client.get(&format!("/pins/{requestid}")).await.0 == 404).then_some(())
        })
        .await;
    }
    // The cleared expiry is in its pin's history.
    let (status, body) = admin
        .get(&format!("/admin/pins/{shared_kept}/history"))
        .await;
    assert_eq!(status, 200, "{body}");
    let cleared = body["events"].as_array().unwrap().iter().any(|event| {
        event["kind"] == "pin_expiry_set"
            && event["event"]["pin_expiry_set"]["expires_ns"].is_null()
    });
    assert!(cleared, "{body}");

    // What has no expiry stays: the pin without one, the pin whose expiry was cleared (its
    // CID was due in the same window as its sibling, which went), and their CIDs on the daemons.
    for requestid in [&kept_pin, &shared_kept] {
        let (status, body) = client.get(&format!("/pins/{requestid}")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "pinned", "{body}");
    }
    assert_eq!(holders(&daemons, kept).await.len(), 2);
    assert_eq!(holders(&daemons, shared).await.len(), 2);
    let (status, body) = client.get("/pins?status=pinned").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 2, "{body}");
    drop(service);
}
