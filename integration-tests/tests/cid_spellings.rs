//! One CID, many spellings; origins as hints; delegates — against a real js-ipfs daemon through
//! the real binary. A CIDv1 can be written in base32, base36, base58btc or upper case; all are
//! one content, so all must be one state: deleting one spelling's pin must never unpin the
//! content on the daemon while a pin in another spelling remains.

use std::str::FromStr;
use std::time::{Duration, Instant};

use cid::multibase::Base;
use pinhive_integration_tests::{
    create_token, eventually, metric_sum, Client, IpfsDaemon, Pinhive, APPLY_WAIT,
};
use serde_json::json;

const CONVERGE: Duration = Duration::from_secs(60);

fn spellings(canonical: &str) -> [String; 4] {
    let cid = cid::Cid::from_str(canonical).unwrap();
    [
        cid.to_string_of_base(Base::Base32Lower).unwrap(),
        cid.to_string_of_base(Base::Base58Btc).unwrap(),
        cid.to_string_of_base(Base::Base36Lower).unwrap(),
        cid.to_string_of_base(Base::Base32Upper).unwrap(),
    ]
}

/// Deletes a pin and waits until its shard applied the delete (at once if the 202 came within
/// the API's wait bound, else by polling), so the metrics read next include its batch.
async fn delete_applied(client: &Client, requestid: &str) {
    let started = Instant::now();
    assert_eq!(client.delete(&format!("/pins/{requestid}")).await.0, 202);
    if started.elapsed() >= APPLY_WAIT {
        eventually(CONVERGE, "delete applied", || async {
            (client.get(&format!("/pins/{requestid}")).await.0 == 404).then_some(())
        })
        .await;
    }
    assert_eq!(client.get(&format!("/pins/{requestid}")).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_a_cid_is_one_state_and_one_daemon_pin() {
    let ipfs = IpfsDaemon::start().await.expect("js-ipfs daemon");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let alice = create_token(&data, "alice", false).unwrap();
    let bob = create_token(&data, "bob", false).unwrap();
    let node = format!("ipfs-a={}", ipfs.api_url);
    // No repair passes during the test: every pin/add and pin/rm counted below is one the
    // events asked for.
    let pinhive = Pinhive::start(
        &data,
        &["--ipfs-node", &node, "--repair-interval-secs", "3600"],
    )
    .await
    .unwrap();
    let (alice, bob) = (
        Client::new(&pinhive.url, &alice),
        Client::new(&pinhive.url, &bob),
    );
    let content = format!("spellings {}", rand::random::<u64>());
    let base32 = ipfs.add(content.as_bytes(), 1).await.unwrap();
    let [b32, b58, b36, upper] = spellings(&base32);
    assert!(b58.starts_with('z') && b36.starts_with('k') && upper.starts_with('B'));

    // Two owners, four spellings.
    let mut pins = Vec::new();
    for (client, spelling) in [(&alice, &b32), (&alice, &b58), (&bob, &b36), (&bob, &upper)] {
        let pinned = client.pin_and_wait_pinned(json!({"cid": spelling})).await;
        assert_eq!(
            pinned["pin"]["cid"],
            spelling.as_str(),
            "responses echo the spelling"
        );
        pins.push((client, pinned["requestid"].as_str().unwrap().to_string()));
    }
    assert!(ipfs.is_pinned(&base32).await.unwrap());
    let calls = |call: &'static str| {
        let url = pinhive.url.clone();
        async move {
            metric_sum(
                &url,
                "pinhive_ipfs_rpc_seconds_count",
                &format!("call=\"{call}\""),
            )
            .await
        }
    };
    assert_eq!(calls("pin/add").await, 1.0, "one state, one pin/add");

    // The cid filter finds every pin of the owner whatever spelling either side used.
    for (client, filter, expected) in [(&alice, &b36, 2), (&bob, &b58, 2), (&alice, &upper, 2)] {
        let (status, page) = client
            .get(&format!("/pins?cid={filter}&status=pinned"))
            .await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["count"], expected, "{filter}: {page}");
        assert_eq!(page["results"].as_array().unwrap().len(), expected);
    }
    let (_, both) = alice.get(&format!("/pins?cid={b32},{b58}")).await;
    assert_eq!(
        both["count"], 2,
        "two spellings of one CID are one filter value: {both}"
    );

    // Delete in an order that crosses owners and spellings: the content stays pinned on the
    // daemon (no pin/rm at all) until the last pin goes.
    let (last, rest) = pins.split_last().unwrap();
    for (client, requestid) in rest {
        delete_applied(client, requestid).await;
        assert_eq!(
            metric_sum(
                &pinhive.url,
                "pinhive_shard_actions_total",
                "kind=\"unpin\""
            )
            .await,
            0.0,
            "an unpin was planned while pins remain"
        );
        assert!(ipfs.is_pinned(&base32).await.unwrap());
        let (_, remaining) = last.0.get(&format!("/pins/{}", last.1)).await;
        assert_eq!(remaining["status"], "pinned", "{remaining}");
    }
    delete_applied(last.0, &last.1).await;
    eventually(CONVERGE, "content unpinned after the last pin", || async {
        (!ipfs.is_pinned(&base32).await.ok()?).then_some(())
    })
    .await;
    assert_eq!(calls("pin/rm").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_are_hints_and_delegates_name_the_allocated_node() {
    let ipfs = IpfsDaemon::start().await.expect("js-ipfs daemon");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "alice", false).unwrap();
    let node = format!("ipfs-a={}", ipfs.api_url);
    let pinhive = Pinhive::start(&data, &["--ipfs-node", &node])
        .await
        .unwrap();
    let client = Client::new(&pinhive.url, &token);
    eventually(Duration::from_secs(30), "node reachable", || async {
        let r = reqwest::get(format!("{}/ready", pinhive.url)).await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    let cid = ipfs.add(b"origins are hints", 0).await.unwrap();

    // What a dual-stack Kubo node sends: many addresses, duplicates, some this build's
    // multiaddr parser does not know, some without a peer id.
    let peer = &ipfs.peer_id;
    let mut origins = vec![
        "/ip4/198.51.100.1/tcp/4001".to_string(),
        "/garbage/1".to_string(),
        format!("/ip4/192.0.2.9/udp/4001/quic-v9/p2p/{peer}"),
    ];
    for port in 0..20 {
        origins.push(format!("/ip4/8.8.{port}.8/tcp/4001/p2p/{peer}"));
        origins.push(format!("/ip6/2001:db8::{port:x}/tcp/4001/p2p/{peer}"));
    }
    origins.push(origins[3].clone());
    assert!(origins.len() > 40);
    let (status, body) = client
        .pin(json!({"cid": cid, "origins": origins, "name": "hints"}))
        .await;
    assert_eq!(status, 202, "{body}");
    let kept = body["pin"]["origins"].as_array().unwrap();
    assert_eq!(
        kept.len(),
        20,
        "the first 20 valid origins are kept: {body}"
    );
    assert_eq!(kept[0], origins[3].as_str());
    let own = format!("/p2p/{peer}");
    let first = body["delegates"][0].as_str().unwrap_or_default();
    assert!(
        first.ends_with(&own),
        "the allocated node comes first: {body}"
    );
    let requestid = body["requestid"].as_str().unwrap().to_string();
    let pinned = client.wait_status(&requestid, "pinned", CONVERGE).await;
    let delegates = pinned["delegates"].as_array().unwrap();
    assert!((1..=20).contains(&delegates.len()), "{pinned}");
    assert!(delegates[0].as_str().unwrap().ends_with(&own), "{pinned}");
    assert!(ipfs.is_pinned(&cid).await.unwrap());
}
