//! The operator console in a real headless Chromium (chromedriver, W3C WebDriver) against the
//! real binary and two js-ipfs daemons: sign in, see the nodes, watch a pin posted through the
//! API turn `pinned` without a reload, watch a killed daemon's node turn `down`, drain a node
//! from the page (confirm dialog; audited), and reconnect after a restart.
//!
//! Screenshots go to `target/test-artifacts/dashboard/`; with `PINHIVE_SCREENSHOTS_TO_DOCS=1`
//! also to `docs/img/` (the ones the docs show).

use std::path::PathBuf;
use std::time::Duration;

use pinhive_integration_tests::dashboard::Browser;
use pinhive_integration_tests::{
    create_token, eventually, metric_sum, workspace_root, Client, IpfsDaemon, Pinhive,
};
use serde_json::json;

const STEP: Duration = Duration::from_secs(30);

async fn screenshot(browser: &Browser, name: &str) {
    let mut targets = vec![workspace_root().join("target/test-artifacts/dashboard")];
    if std::env::var("PINHIVE_SCREENSHOTS_TO_DOCS").is_ok_and(|v| v == "1") {
        targets.push(workspace_root().join("docs/img"));
    }
    for dir in targets {
        let path: PathBuf = dir.join(format!("{name}.png"));
        browser.screenshot(&path).await.expect("screenshot");
        eprintln!("screenshot: {}", path.display());
    }
}

/// Waits until the text of `css` satisfies `accept`.
async fn text_becomes(browser: &Browser, css: &str, what: &str, accept: impl Fn(&str) -> bool) {
    eventually(STEP, what, || async {
        let text = browser.text(css).await?;
        accept(&text).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_signs_in_shows_live_pins_and_nodes_and_drains_a_node() {
    let (a, b) = tokio::join!(IpfsDaemon::start(), IpfsDaemon::start());
    let (mut ipfs_a, ipfs_b) = (a.expect("js-ipfs daemon a"), b.expect("js-ipfs daemon b"));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let admin = create_token(&data, "ops", true).unwrap();
    let node_a = format!("ipfs-a={}#eu", ipfs_a.api_url);
    let node_b = format!("ipfs-b={}#us", ipfs_b.api_url);
    let mut pinhive = Pinhive::start(
        &data,
        &[
            "--ipfs-node",
            &node_a,
            "--ipfs-node",
            &node_b,
            "--health-interval-secs",
            "1",
            "--node-grace-secs",
            "2",
        ],
    )
    .await
    .unwrap();
    let client = Client::new(&pinhive.url, &admin);
    let browser = Browser::start().await.expect("headless chromium");

    // Sign in.
    browser
        .goto(&format!("{}/dashboard", pinhive.url))
        .await
        .unwrap();
    browser.type_into("#token", &admin).await.unwrap();
    browser.click("#signin-button").await.unwrap();
    text_becomes(&browser, "#conn", "the console live", |t| t == "live").await;
    // The token is in the tab's session storage, never in the URL.
    let url = browser.execute("return location.href").await.unwrap();
    assert!(!url.as_str().unwrap().contains(&admin), "{url}");
    let stored = browser
        .execute("return sessionStorage.getItem('pinhive.admin-token')")
        .await
        .unwrap();
    assert_eq!(stored.as_str(), Some(admin.as_str()));

    // The analytics section, read from GET /admin/analytics with the session's token: this
    // instance's access partitions and the regions of its nodes.
    text_becomes(&browser, "#analytics-note", "the analytics section", |t| {
        t.contains("access partition(s) on this instance")
    })
    .await;
    text_becomes(&browser, "#analytics-regions", "demand by region", |t| {
        t.contains("eu") && t.contains("us")
    })
    .await;

    // Both nodes, up.
    for id in ["ipfs-a", "ipfs-b"] {
        text_becomes(
            &browser,
            &format!("tr[data-node=\"{id}\"] td.state"),
            "the node up",
            |t| t == "up",
        )
        .await;
        text_becomes(
            &browser,
            &format!("tr[data-node=\"{id}\"] td.reachable"),
            "the node reachable",
            |t| t == "yes",
        )
        .await;
    }

    // A pin posted through the API turns `pinned` on the page, without a reload (the marker
    // set on the window survives).
    browser
        .execute("window.__sameDocument = true; return true")
        .await
        .unwrap();
    // Both daemons hold the content (they are not connected to each other).
    let cid = ipfs_b.add(b"pinhive console pin", 1).await.unwrap();
    assert_eq!(ipfs_a.add(b"pinhive console pin", 1).await.unwrap(), cid);
    let (status, created) = client.pin(json!({"cid": cid, "name": "console"})).await;
    assert_eq!(status, 202, "{created}");
    let requestid = created["requestid"].as_str().unwrap().to_string();
    let row = format!("tr[data-requestid=\"{requestid}\"]");
    text_becomes(
        &browser,
        &format!("{row} td.status"),
        "the pin row pinned",
        |t| t == "pinned",
    )
    .await;
    assert_eq!(
        browser.text(&format!("{row} td.cid")).await.as_deref(),
        Some(cid.as_str())
    );
    text_becomes(&browser, "#pins-pinned", "the pinned count", |t| t == "1").await;
    let same = browser
        .execute("return window.__sameDocument === true")
        .await
        .unwrap();
    assert_eq!(same, true, "the page was not reloaded");
    screenshot(&browser, "dashboard-overview").await;

    // A daemon killed: its node turns `down` on the page.
    ipfs_a.kill_hard();
    text_becomes(
        &browser,
        "tr[data-node=\"ipfs-a\"] td.state",
        "node ipfs-a down",
        |t| t == "down",
    )
    .await;

    // Its warnings show in the log stream, filterable by node.
    text_becomes(
        &browser,
        "#logs tr[data-node=\"ipfs-a\"] td.message",
        "a warning about ipfs-a",
        |t| t.contains("ipfs node"),
    )
    .await;

    // Drain node b from the page: a confirm dialog, then the node shows `draining`, and the
    // action is in the audit trail.
    browser
        .click("tr[data-node=\"ipfs-b\"] button[data-action=\"drain\"]")
        .await
        .unwrap();
    let question = eventually(STEP, "the confirm dialog", || browser.alert_text()).await;
    assert!(question.contains("Drain node ipfs-b"), "{question}");
    browser.accept_alert().await.unwrap();
    text_becomes(
        &browser,
        "tr[data-node=\"ipfs-b\"] td.state",
        "node ipfs-b draining",
        |t| t == "draining",
    )
    .await;
    eventually(STEP, "the drain audited", || async {
        (metric_sum(&pinhive.url, "pinhive_audit_events_total", "node_drain").await >= 1.0)
            .then_some(())
    })
    .await;
    text_becomes(&browser, "#action-result", "the drain result", |t| {
        t.contains("Drain: done")
    })
    .await;
    screenshot(&browser, "dashboard-nodes").await;

    // A restart: the page loses the socket, reconnects with backoff, and shows the new
    // snapshot (node states as the control log kept them).
    assert!(pinhive.stop(), "clean stop");
    text_becomes(&browser, "#conn", "the console reconnecting", |t| {
        t.starts_with("reconnecting") || t == "connecting"
    })
    .await;
    pinhive.restart().await.unwrap();
    text_becomes(&browser, "#conn", "the console live again", |t| t == "live").await;
    text_becomes(
        &browser,
        "tr[data-node=\"ipfs-b\"] td.state",
        "node ipfs-b still draining after the restart",
        |t| t == "draining",
    )
    .await;
}
