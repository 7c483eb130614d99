//! The operator console's WebSocket `/ws/dashboard` against the real binary and a real js-ipfs
//! daemon (docs/dashboard.md has the protocol): auth at the handshake, the initial snapshot,
//! pin and node deltas within 1 s of being applied, pings, a slow client dropped while others
//! go on, the session cap, and a prompt close at shutdown.

use std::time::{Duration, Instant};

use futures::SinkExt;
use pinhive_integration_tests::dashboard::{ask_snapshot, connect, next_json, request, wait_for};
use pinhive_integration_tests::{
    create_token, eventually, metric_sum, Client, IpfsDaemon, Pinhive,
};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const STEP: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_refuses_missing_invalid_and_non_admin_tokens_and_caps_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let user = create_token(&data, "alice", false).unwrap();
    let admin = create_token(&data, "ops", true).unwrap();
    // No node is needed for the handshake rules (the default local one stays unreachable).
    let pinhive = Pinhive::start(
        &data,
        &[
            "--dashboard-max-sessions",
            "2",
            "--dashboard-ping-secs",
            "1",
        ],
    )
    .await
    .unwrap();

    assert_eq!(
        connect(&pinhive.url, None).await.err(),
        Some(401),
        "no token"
    );
    assert_eq!(
        connect(&pinhive.url, Some("ph_0000")).await.err(),
        Some(401),
        "unknown token"
    );
    assert_eq!(
        connect(&pinhive.url, Some(&user)).await.err(),
        Some(403),
        "a token without the admin scope"
    );
    // The token is never taken from the URL.
    let url = format!(
        "{}/ws/dashboard?token={admin}",
        pinhive.url.replacen("http", "ws", 1)
    );
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 401)
        }
        other => panic!("a token in the URL must not authenticate: {other:?}"),
    }
    // A plain GET (no upgrade) with a valid token is refused, with a Failure body.
    let plain = reqwest::Client::new()
        .get(format!("{}/ws/dashboard", pinhive.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 400);
    let body: Value = plain.json().await.unwrap();
    assert!(body["error"]["reason"].is_string(), "{body}");

    // Authorization: Bearer works too (non-browser clients).
    let mut by_header = request(&pinhive.url, None);
    by_header
        .headers_mut()
        .insert("Authorization", format!("Bearer {admin}").parse().unwrap());
    let (mut first, _) = tokio_tungstenite::connect_async(by_header).await.unwrap();
    let snapshot = next_json(&mut first, STEP).await.unwrap();
    assert_eq!(snapshot["type"], "snapshot");

    // The cap: two sessions, the third is refused (503) until one closes.
    let mut second = connect(&pinhive.url, Some(&admin)).await.unwrap();
    assert_eq!(
        next_json(&mut second, STEP).await.unwrap()["type"],
        "snapshot"
    );
    assert_eq!(connect(&pinhive.url, Some(&admin)).await.err(), Some(503));
    first.close(None).await.unwrap();
    drop(first);
    let mut third = eventually(STEP, "a session slot freed by a close", || async {
        connect(&pinhive.url, Some(&admin)).await.ok()
    })
    .await;
    assert_eq!(
        next_json(&mut third, STEP).await.unwrap()["type"],
        "snapshot"
    );
    assert!(
        metric_sum(
            &pinhive.url,
            "pinhive_dashboard_disconnects_total",
            "refused_full"
        )
        .await
            >= 1.0
    );
    // Unknown requests get an error message, the session goes on.
    third
        .send(Message::text(r#"{"type":"bogus"}"#))
        .await
        .unwrap();
    let error = wait_for(&mut third, STEP, "an error reply", |m| m["type"] == "error").await;
    assert!(error["error"].as_str().unwrap().contains("snapshot"));
    ask_snapshot(&mut third).await;
    wait_for(&mut third, STEP, "a snapshot on request", |m| {
        m["type"] == "snapshot"
    })
    .await;

    // The history ring buffer over HTTP: admin only.
    let admin_client = Client::new(&pinhive.url, &admin);
    let (status, history) = admin_client.get("/admin/dashboard/history").await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["sample_secs"], 10);
    assert!(history["samples"].is_array());
    let (status, _) = Client::new(&pinhive.url, &user)
        .get("/admin/dashboard/history")
        .await;
    assert_eq!(status, 403);

    // A session whose token is revoked is closed at its next ping (1008), and the token
    // opens no new one.
    drop(second);
    drop(third);
    let (status, minted) = admin_client
        .send(
            admin_client
                .request(reqwest::Method::POST, "/admin/tokens")
                .json(&json!({"owner": "ops", "name": "console", "scopes": ["admin"]})),
        )
        .await;
    assert_eq!(status, 201, "{minted}");
    let console_token = minted["token"].as_str().unwrap().to_string();
    let mut console = eventually(STEP, "a free session slot", || async {
        connect(&pinhive.url, Some(&console_token)).await.ok()
    })
    .await;
    assert_eq!(
        next_json(&mut console, STEP).await.unwrap()["type"],
        "snapshot"
    );
    let (status, _) = admin_client
        .delete(&format!("/admin/tokens/{}", minted["id"].as_str().unwrap()))
        .await;
    assert!(status == 200 || status == 204, "revoke: {status}");
    let frame = loop {
        use futures::StreamExt;
        match tokio::time::timeout(STEP, console.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Message::Close(frame))) => break frame.expect("a close code"),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(u16::from(frame.code), 1008, "{frame:?}");
    assert!(frame.reason.contains("token"), "{frame:?}");
    assert_eq!(
        connect(&pinhive.url, Some(&console_token)).await.err(),
        Some(401)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_then_pin_and_node_deltas_within_a_second_with_pings() {
    let mut ipfs = IpfsDaemon::start().await.expect("js-ipfs daemon");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let admin = create_token(&data, "ops", true).unwrap();
    let node = format!("ipfs-a={}#eu", ipfs.api_url);
    let mut pinhive = Pinhive::start(
        &data,
        &[
            "--ipfs-node",
            &node,
            "--dashboard-ping-secs",
            "1",
            "--health-interval-secs",
            "1",
            "--node-grace-secs",
            "2",
        ],
    )
    .await
    .unwrap();
    let client = Client::new(&pinhive.url, &admin);
    let mut socket = connect(&pinhive.url, Some(&admin)).await.unwrap();

    // The snapshot: stats, every node with its state and health, history, limits.
    let snapshot = next_json(&mut socket, STEP).await.unwrap();
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    assert_eq!(snapshot["protocol"], "pinhive.dashboard.v1");
    assert!(snapshot["history"].is_array() && snapshot["recent"].is_array());
    assert_eq!(snapshot["limits"]["history_samples"], 360);
    // The hub's first node poll and stats may come just after a very early snapshot.
    let node_seen = if snapshot["nodes"].as_array().unwrap().is_empty() {
        wait_for(&mut socket, STEP, "the node", |m| m["type"] == "node").await["node"].clone()
    } else {
        snapshot["nodes"][0].clone()
    };
    assert_eq!(node_seen["id"], "ipfs-a");
    assert_eq!(node_seen["region"], "eu");
    for key in ["state", "free_bytes", "queue", "error_rate", "reachable"] {
        assert!(node_seen.get(key).is_some(), "{key} in {node_seen}");
    }
    let stats = wait_for(&mut socket, STEP, "stats", |m| m["type"] == "stats").await;
    for key in ["queued", "pinning", "pinned", "failed"] {
        assert!(stats["stats"]["pins"][key].is_i64(), "{stats}");
    }
    assert!(stats["stats"]["lag"]["by_partition"].is_array());
    assert!(stats["stats"]["dead_letters"].is_i64());
    assert!(stats["stats"]["ingest_per_sec"].is_number());
    assert!(stats["stats"]["apply_per_sec"].is_number());
    // The node reported reachable (its first health check may land after the snapshot).
    if !(node_seen["state"] == "up" && node_seen["reachable"] == true) {
        wait_for(&mut socket, STEP, "node ipfs-a up and reachable", |m| {
            m["type"] == "node" && m["node"]["state"] == "up" && m["node"]["reachable"] == true
        })
        .await;
    }

    // A pin: its changes arrive as `pin` deltas, each within 1 s of the shard's commit.
    let cid = ipfs.add(b"pinhive dashboard delta", 1).await.unwrap();
    let (status, created) = client.pin(json!({"cid": cid})).await;
    assert_eq!(status, 202, "{created}");
    let requestid = created["requestid"].as_str().unwrap().to_string();
    let mut worst = Duration::ZERO;
    let mut statuses = Vec::new();
    let pinned = loop {
        let message = wait_for(&mut socket, STEP, "the pin's deltas", |m| {
            m["type"] == "pin" && m["requestid"] == requestid.as_str()
        })
        .await;
        let received_ns = pinhive_events::now_ns();
        let latency = Duration::from_nanos(
            u64::try_from(received_ns - message["applied_ns"].as_i64().unwrap()).unwrap_or(0),
        );
        worst = worst.max(latency);
        statuses.push(message["status"].as_str().unwrap().to_string());
        assert_eq!(message["cid"], cid.as_str());
        if message["status"] == "pinned" {
            break message;
        }
    };
    assert!(
        worst < Duration::from_secs(1),
        "a pin delta took {worst:?} from commit to client"
    );
    eprintln!("dashboard pin deltas {statuses:?}: worst commit-to-client latency {worst:?}");
    assert_eq!(pinned["owner"], "ops");
    assert!(ipfs.is_pinned(&cid).await.unwrap());
    // The new status shows in the stats and in a fresh snapshot's recent pins.
    wait_for(&mut socket, STEP, "stats counting the pin", |m| {
        m["type"] == "stats" && m["stats"]["pins"]["pinned"].as_i64() >= Some(1)
    })
    .await;
    ask_snapshot(&mut socket).await;
    let again = wait_for(&mut socket, STEP, "a fresh snapshot", |m| {
        m["type"] == "snapshot"
    })
    .await;
    assert!(again["recent"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["requestid"] == requestid.as_str() && p["status"] == "pinned"));

    // Server pings come at the configured interval (tungstenite answers them).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pinged = false;
    while !pinged && Instant::now() < deadline {
        use futures::StreamExt;
        if let Ok(Some(Ok(Message::Ping(_)))) =
            tokio::time::timeout(Duration::from_secs(5), socket.next()).await
        {
            pinged = true;
        }
    }
    assert!(pinged, "a server ping within 10 s (ping interval 1 s)");
    // A client ping gets its pong.
    socket
        .send(Message::Ping(b"hi".to_vec().into()))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ponged = false;
    while !ponged && Instant::now() < deadline {
        use futures::StreamExt;
        if let Ok(Some(Ok(Message::Pong(data)))) =
            tokio::time::timeout(Duration::from_secs(5), socket.next()).await
        {
            ponged = data.as_ref() == b"hi";
        }
    }
    assert!(ponged, "the pong of a client ping");

    // A node going down: `node` deltas (degraded, then down after the grace period).
    ipfs.kill_hard();
    let killed = Instant::now();
    // On the way, the warnings it causes come as `log` messages naming the node.
    let (mut down, mut warning) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while down.is_none() || warning.is_none() {
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("node ipfs-a down and a warning about it within 60 s");
        let message = next_json(&mut socket, left).await.expect("socket open");
        if message["type"] == "node" && message["node"]["state"] == "down" {
            down = Some(message);
        } else if message["type"] == "log" && message["node"] == "ipfs-a" {
            warning = Some(message);
        }
    }
    let (down, warning) = (down.unwrap(), warning.unwrap());
    assert_eq!(down["node"]["reachable"], false);
    assert_eq!(warning["level"], "warn", "{warning}");
    assert!(
        warning["message"].as_str().unwrap().contains("ipfs node"),
        "{warning}"
    );
    // The snapshot keeps the recent warnings too.
    ask_snapshot(&mut socket).await;
    let snapshot = wait_for(&mut socket, STEP, "a snapshot", |m| m["type"] == "snapshot").await;
    assert!(snapshot["logs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|line| line["node"] == "ipfs-a" && line["level"] == "warn"));
    eprintln!(
        "node down seen {:?} after the daemon was killed",
        killed.elapsed()
    );

    // At shutdown the session is closed at once (1001), and the server stops promptly.
    let stopping = Instant::now();
    let stopper = std::thread::spawn(move || {
        let stopped = pinhive.stop();
        (stopped, pinhive)
    });
    let closed = loop {
        use futures::StreamExt;
        match tokio::time::timeout(STEP, socket.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let frame = closed.expect("a close frame with a code");
    assert_eq!(u16::from(frame.code), 1001, "{frame:?}");
    let (stopped, _pinhive) = stopper.join().unwrap();
    assert!(stopped, "pinhive exits cleanly");
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "an open console does not hold the shutdown ({:?})",
        stopping.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_disconnected_while_others_keep_receiving() {
    let ipfs = IpfsDaemon::start().await.expect("js-ipfs daemon");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let admin = create_token(&data, "ops", true).unwrap();
    let node = format!("ipfs-a={}", ipfs.api_url);
    let pinhive = Pinhive::start(
        &data,
        &[
            "--ipfs-node",
            &node,
            "--dashboard-max-sessions",
            "2",
            "--dashboard-send-timeout-secs",
            "1",
            "--dashboard-queue",
            "64",
        ],
    )
    .await
    .unwrap();
    let client = Client::new(&pinhive.url, &admin);
    let mut healthy = connect(&pinhive.url, Some(&admin)).await.unwrap();
    assert_eq!(
        next_json(&mut healthy, STEP).await.unwrap()["type"],
        "snapshot"
    );

    // The slow client: a tiny receive buffer, and it never reads. It asks for snapshot after
    // snapshot, which fills its socket; the server must drop it, not buffer for it.
    let address = pinhive.url.trim_start_matches("http://").to_string();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(address.parse().unwrap()).await.unwrap();
    let (mut slow, _) =
        tokio_tungstenite::client_async(request(&pinhive.url, Some(&admin)), stream)
            .await
            .unwrap();
    let flood = tokio::spawn(async move {
        let request = json!({"type": "snapshot"}).to_string();
        for _ in 0..5_000 {
            // Once the server stops reading (it is stuck on the full socket, or dropped the
            // session), sends stall: stop there.
            let sent = tokio::time::timeout(
                Duration::from_secs(3),
                slow.send(Message::text(request.clone())),
            )
            .await;
            if !matches!(sent, Ok(Ok(()))) {
                break;
            }
        }
        slow
    });
    eventually(STEP, "the slow session dropped", || async {
        let slow = metric_sum(
            &pinhive.url,
            "pinhive_dashboard_disconnects_total",
            "reason=\"slow\"",
        )
        .await
            + metric_sum(
                &pinhive.url,
                "pinhive_dashboard_disconnects_total",
                "reason=\"lagged\"",
            )
            .await;
        (slow >= 1.0).then_some(())
    })
    .await;
    // Its slot is free again (cap 2): a new session opens.
    let mut another = eventually(STEP, "a session in the freed slot", || async {
        connect(&pinhive.url, Some(&admin)).await.ok()
    })
    .await;
    assert_eq!(
        next_json(&mut another, STEP).await.unwrap()["type"],
        "snapshot"
    );

    // The healthy session still gets its deltas.
    let cid = ipfs.add(b"pinhive dashboard slow client", 1).await.unwrap();
    let (status, created) = client.pin(json!({"cid": cid})).await;
    assert_eq!(status, 202, "{created}");
    let requestid = created["requestid"].as_str().unwrap().to_string();
    for socket in [&mut healthy, &mut another] {
        wait_for(socket, STEP, "the pin pinned", |m| {
            m["type"] == "pin" && m["requestid"] == requestid.as_str() && m["status"] == "pinned"
        })
        .await;
    }
    // And the slow client, once it reads at last, finds its stream ended.
    let mut slow = tokio::time::timeout(STEP, flood).await.unwrap().unwrap();
    let deadline = Instant::now() + STEP;
    loop {
        use futures::StreamExt;
        assert!(
            Instant::now() < deadline,
            "the slow client's stream did not end"
        );
        match tokio::time::timeout(STEP, slow.next()).await.unwrap() {
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => continue,
        }
    }
}
