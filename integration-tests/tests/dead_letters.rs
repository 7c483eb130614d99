//! Bad events: malformed records in the log are dead-lettered with their reason and the shard
//! goes on with the records after them. Also: SIGTERM shuts down cleanly.

use pinhive_events::{codec, Envelope, Event, PinRequested};
use pinhive_integration_tests::{
    append_offline, create_token, free_port, raw_record, Client, Pinhive,
};
use pinhive_log::Record;

const CID: &str = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_records_are_dead_lettered_and_the_shard_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "alice", false).unwrap();
    let admin = create_token(&data, "ops", true).unwrap();
    let closed = format!("http://127.0.0.1:{}", free_port());
    let mut pinhive = Pinhive::start(&data, &["--ipfs-node", &closed])
        .await
        .unwrap();
    assert!(
        pinhive.stop(),
        "clean exit on SIGTERM:\n{}",
        pinhive.log_tail()
    );

    // While it is down, write what a buggy or hostile producer could: garbage bincode, broken
    // JSON, an unknown content type, a record whose key disagrees with its envelope; then a
    // valid pin request on the same partition.
    let requestid = "dead-letter-survivor";
    {
        let valid = Envelope::new(
            CID,
            Event::PinRequested(PinRequested {
                requestid: requestid.into(),
                owner: "alice".into(),
                cid: CID.into(),
                name: Some("after the garbage".into()),
                origins: vec![],
                meta: Default::default(),
                created_ns: pinhive_events::now_ns(),
                replicas_min: 1,
                replicas_max: 1,
                replaces: None,
            }),
        );
        let mut mismatched = valid.clone();
        mismatched.key = "another-key".into();
        let records = vec![
            raw_record(1, CID, b"\xff\xfe\xfd not bincode"),
            raw_record(2, CID, b"{\"schema_version\": 1, \"event\": "),
            raw_record(9, CID, b"whatever"),
            raw_record(1, CID, &codec::encode(&mismatched)),
            Record::from_envelope(&valid),
        ];
        append_offline(&data, records).await;
    }

    pinhive.restart().await.unwrap();
    // No reachable IPFS node by design: `delegates` may be empty (docs/api.md).
    let client = Client::new(&pinhive.url, &token).without_reachable_node();
    let (status, pin) = client.get(&format!("/pins/{requestid}")).await;
    // Applied asynchronously after restart: wait for it.
    let pin = if status == 200 {
        pin
    } else {
        client
            .wait_status(requestid, "queued", std::time::Duration::from_secs(30))
            .await
    };
    assert_eq!(pin["pin"]["name"], "after the garbage");

    // No wait needed for what follows: the bad records precede the pin request on its
    // partition, and the shard writes a record's dead letter (and counts it) while applying the
    // batch, before that batch's state; so once the pin is visible, all four are recorded. The
    // node is unreachable, so nothing appends after the pin request (it stays queued).
    let admin = Client::new(&pinhive.url, &admin);
    let reasons = admin.dead_letter_reasons().await;
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(reasons[0].contains("bincode"), "{reasons:?}");
    assert!(reasons[1].contains("json"), "{reasons:?}");
    assert!(reasons[2].contains("content type"), "{reasons:?}");
    assert!(reasons[3].contains("does not match"), "{reasons:?}");
    assert_eq!(client.get("/admin/dead-letters").await.0, 403, "admin only");

    // Shard snapshots: every partition caught up with its log end.
    let (status, shards) = admin.get("/admin/shards").await;
    assert_eq!(status, 200, "{shards}");
    let shards = shards["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 16);
    assert!(shards.iter().all(|s| s["lag_bytes"] == 0), "{shards:?}");
    let dead: u64 = shards
        .iter()
        .map(|s| s["snapshot"]["dead_lettered"].as_u64().unwrap())
        .sum();
    assert_eq!(dead, 4);
}
