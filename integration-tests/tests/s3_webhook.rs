//! S3 notifications through the admin webhook (embedded mode, no Kafka): the same ingest as
//! the Kafka topic, with HTTP errors for bad input.

use std::time::Duration;

use pinhive_integration_tests::{create_token, eventually, free_port, Client, Pinhive};
use serde_json::json;

const CID: &str = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_notifications_become_pins() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let owner = create_token(&data, "s3", false).unwrap();
    let admin = create_token(&data, "ops", true).unwrap();
    let closed = format!("http://127.0.0.1:{}", free_port());
    let pinhive = Pinhive::start(&data, &["--ipfs-node", &closed])
        .await
        .unwrap();
    let (owner, admin) = (
        // No reachable IPFS node by design: `delegates` may be empty (docs/api.md).
        Client::new(&pinhive.url, &owner).without_reachable_node(),
        Client::new(&pinhive.url, &admin),
    );
    let event = json!({"Records": [{
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": "docs"},
               "object": {"key": "reports/q1+2024.pdf", "sequencer": "0A",
                          "userMetadata": {"x-amz-meta-cid": CID}}}
    }]});
    let (status, body) = admin.post("/admin/s3/events", &event).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["applied"][0]["action"], "pinned");
    let requestid = body["applied"][0]["requestid"]
        .as_str()
        .unwrap()
        .to_string();
    // Re-delivery is recognised.
    let (_, again) = admin.post("/admin/s3/events", &event).await;
    assert_eq!(again["applied"][0]["action"], "duplicate");

    // The mapping is written before the webhook answers; the pin is not: the ingester appends
    // the request to the log and its shard applies it asynchronously (docs/kafka.md).
    let (_, objects) = admin
        .get("/admin/s3/objects?bucket=docs&prefix=reports%2F")
        .await;
    assert_eq!(
        objects["objects"][0]["key"], "reports/q1 2024.pdf",
        "{objects}"
    );
    let pin = eventually(Duration::from_secs(30), "the object's pin", || async {
        let (status, pin) = owner.get(&format!("/pins/{requestid}")).await;
        (status == 200).then_some(pin)
    })
    .await;
    assert_eq!(pin["pin"]["name"], "reports/q1 2024.pdf");
    assert_eq!(pin["pin"]["meta"]["s3_bucket"], "docs");

    let (status, body) = admin
        .post(
            "/admin/s3/events",
            &json!({"Records": [{"eventName": "s3:ObjectCreated:Put",
        "s3": {"bucket": {"name": "docs"}, "object": {"key": "x"}}}]}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["reason"].as_str()),
        (400, Some("BAD_REQUEST")),
        "{body}"
    );
    assert_eq!(
        owner
            .post("/admin/s3/events", &json!({"Records": []}))
            .await
            .0,
        403,
        "admin only"
    );
}
