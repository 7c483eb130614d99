//! Pinning Service API conformance over real HTTP against the real binary: every operation,
//! every filter, pagination across 2,500 pins, and every error path with the spec's `Failure`.
//! No IPFS node is reachable here on purpose: pins stay `queued`, which keeps listings stable.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use pinhive_integration_tests::{
    create_token, eventually, free_port, sees_own_writes, Client, Pinhive,
};
use reqwest::Method;
use serde_json::{json, Value};

/// A write, and how long it took to be answered.
async fn timed<T>(write: impl std::future::Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let answer = write.await;
    (answer, started.elapsed())
}

const CIDS: [&str; 3] = [
    "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
    "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",
    "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy",
];

async fn service() -> (Pinhive, Client, Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let alice = create_token(&data, "alice", false).unwrap();
    let bob = create_token(&data, "bob", false).unwrap();
    let closed = format!("http://127.0.0.1:{}", free_port());
    let pinhive = Pinhive::start(&data, &["--ipfs-node", &closed])
        .await
        .unwrap();
    // No reachable IPFS node (pins stay queued, so listings are stable): `delegates` may be
    // empty, every other rule of the spec is checked.
    let a = Client::new(&pinhive.url, &alice).without_reachable_node();
    let b = Client::new(&pinhive.url, &bob).without_reachable_node();
    (pinhive, a, b, dir)
}

fn assert_failure(status: u16, body: &Value, expected_status: u16, reason: &str) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["error"]["reason"], reason, "{body}");
    assert!(body["error"]["details"].is_string(), "{body}");
}

fn assert_pin_status_shape(body: &Value) {
    for field in ["requestid", "status", "created", "pin", "delegates"] {
        assert!(!body[field].is_null(), "PinStatus lacks {field}: {body}");
    }
    assert!(body["pin"]["cid"].is_string());
    assert!(body["delegates"].is_array());
    let created = body["created"].as_str().unwrap();
    assert!(
        created.ends_with('Z') && created.contains('T'),
        "RFC 3339: {created}"
    );
}

fn ids(body: &Value) -> Vec<String> {
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["requestid"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_path_answers_with_a_failure_body() {
    let (pinhive, alice, bob, _dir) = service().await;
    let anonymous = reqwest::Client::new();
    let routes = [
        (Method::GET, "/pins".to_string()),
        (Method::POST, "/pins".to_string()),
        (Method::GET, "/pins/x".to_string()),
        (Method::POST, "/pins/x".to_string()),
        (Method::DELETE, "/pins/x".to_string()),
    ];
    for (method, path) in &routes {
        let url = format!("{}{path}", pinhive.url);
        for auth in [
            None,
            Some("Bearer ph_not_a_token"),
            Some("Basic abc"),
            Some("Bearer "),
        ] {
            let mut request = anonymous
                .request(method.clone(), &url)
                .json(&json!({"cid": CIDS[0]}));
            if let Some(auth) = auth {
                request = request.header("Authorization", auth);
            }
            let response = request.send().await.unwrap();
            let (status, body) = pinhive_integration_tests::read_checked(method, response).await;
            assert_failure(status, &body, 401, "UNAUTHORIZED");
        }
    }

    // Unknown and foreign request ids are both 404. (Bob's 404 only means something, and the
    // replaces with bad bodies below only reach validation, once alice's pin exists.)
    let ((status, pin), took) = timed(alice.pin(json!({"cid": CIDS[0]}))).await;
    assert_eq!(status, 202, "{pin}");
    let rid = pin["requestid"].as_str().unwrap();
    sees_own_writes(took, "the owner to see the new pin", || async {
        (alice.get(&format!("/pins/{rid}")).await.0 == 200).then_some(())
    })
    .await;
    for client in [&alice, &bob] {
        let target = if std::ptr::eq(client, &bob) {
            rid
        } else {
            "no-such-request"
        };
        let (s, b) = client.get(&format!("/pins/{target}")).await;
        assert_failure(s, &b, 404, "NOT_FOUND");
        let (s, b) = client.delete(&format!("/pins/{target}")).await;
        assert_failure(s, &b, 404, "NOT_FOUND");
        let (s, b) = client
            .send(
                client
                    .request(Method::POST, &format!("/pins/{target}"))
                    .json(&json!({"cid": CIDS[1]})),
            )
            .await;
        assert_failure(s, &b, 404, "NOT_FOUND");
    }
    assert_eq!(
        alice.get(&format!("/pins/{rid}")).await.0,
        200,
        "the owner still sees it"
    );

    // Bad bodies.
    let long_name = "n".repeat(256);
    let bad_bodies = [
        json!({"cid": "not-a-cid"}),
        json!({"cid": "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbd"}),
        json!({"name": "no cid"}),
        json!({"cid": CIDS[0], "name": long_name}),
        json!({"cid": CIDS[0], "meta": {"k": 1}}),
        json!({"cid": CIDS[0], "meta": "flat"}),
        json!({"cid": CIDS[0], "name": "nul\u{0}inside"}),
        json!({"cid": CIDS[0], "meta": {"k": "nul\u{0}inside"}}),
        json!({"cid": 42}),
    ];
    for body in bad_bodies {
        let (s, b) = alice.pin(body.clone()).await;
        assert_failure(s, &b, 400, "BAD_REQUEST");
        let (s, b) = alice
            .send(
                alice
                    .request(Method::POST, &format!("/pins/{rid}"))
                    .json(&body),
            )
            .await;
        assert_failure(s, &b, 400, "BAD_REQUEST");
    }
    let not_json = alice
        .request(Method::POST, "/pins")
        .header("content-type", "application/json")
        .body("{\"cid\": ");
    let (s, b) = alice.send(not_json).await;
    assert_failure(s, &b, 400, "BAD_REQUEST");
    // A body over the 64 KiB limit is a 413; a meta value over 4 KiB inside the limit a 400.
    let huge = json!({"cid": CIDS[0], "meta": {"blob": "x".repeat(200_000)}});
    let (s, b) = alice.pin(huge).await;
    assert_failure(s, &b, 413, "PAYLOAD_TOO_LARGE");
    let long_value = json!({"cid": CIDS[0], "meta": {"blob": "x".repeat(5_000)}});
    let (s, b) = alice.pin(long_value).await;
    assert_failure(s, &b, 400, "BAD_REQUEST");

    // Bad query parameters.
    for query in [
        "limit=0",
        "limit=1001",
        "limit=ten",
        "status=done",
        "status=queued,bogus",
        "match=fuzzy",
        "cid=not-a-cid",
        "before=yesterday",
        "after=2020-13-45T00:00:00Z",
        "meta=%7Bbroken",
        "meta=%7B%22k%22%3A1%7D",
        &format!("name={long_name}"),
        &format!(
            "cid={}",
            (0..11)
                .map(|i| format!("{}{i}", &CIDS[0][..CIDS[0].len() - 1]))
                .collect::<Vec<_>>()
                .join(",")
        ),
    ] {
        let (s, b) = alice.get(&format!("/pins?{query}")).await;
        assert_failure(s, &b, 400, "BAD_REQUEST");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_and_filter() {
    let (_pinhive, alice, bob, _dir) = service().await;
    let mut created = Vec::new();
    let mut slowest = Duration::ZERO;
    let specs = [
        (CIDS[0], "Report.pdf", json!({"app": "a", "team": "x"})),
        (CIDS[1], "report-final.pdf", json!({"app": "a"})),
        (CIDS[2], "photo.jpg", json!({"app": "b"})),
        (CIDS[0], "REPORT.PDF", json!({})),
    ];
    for (cid, name, meta) in &specs {
        let pin = json!({"cid": cid, "name": name, "meta": meta,
                         "origins": ["/ip4/203.0.113.7/tcp/4001/p2p/QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"]});
        let ((status, body), took) = timed(alice.pin(pin)).await;
        slowest = slowest.max(took);
        assert_eq!(status, 202, "{body}");
        assert_pin_status_shape(&body);
        assert_eq!(body["pin"]["name"], *name);
        assert_eq!(body["pin"]["meta"], *meta);
        created.push(body["requestid"].as_str().unwrap().to_string());
    }
    let unique: BTreeSet<&String> = created.iter().collect();
    assert_eq!(
        unique.len(),
        4,
        "one requestid per request, even for the same CID"
    );
    // bob's pin must never show up in alice's listings.
    let ((status, bobs), took) =
        timed(bob.pin(json!({"cid": CIDS[0], "name": "Report.pdf"}))).await;
    assert_eq!(status, 202, "{bobs}");
    slowest = slowest.max(took);
    let bobs = bobs["requestid"].as_str().unwrap().to_string();

    let list = |q: &str| {
        let alice = alice.clone();
        let q = q.to_string();
        async move {
            let (status, body) = alice.get(&format!("/pins?{q}")).await;
            assert_eq!(status, 200, "{q}: {body}");
            body
        }
    };
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();
    // Every write above is visible (the listings below are only meaningful then).
    sees_own_writes(
        slowest,
        "alice's four pins and bob's to be visible",
        || async {
            let alice_all = list("status=queued").await["count"] == 4;
            let bob_sees_his = bob.get(&format!("/pins/{bobs}")).await.0 == 200;
            (alice_all && bob_sees_his).then_some(())
        },
    )
    .await;

    // Default status filter is `pinned`: nothing here is pinned.
    let body = list("").await;
    assert_eq!((body["count"].as_u64(), ids(&body).len()), (Some(0), 0));
    let body = list("status=queued").await;
    assert_eq!(ids(&body), newest_first);
    assert_eq!(body["count"], 4);
    for result in body["results"].as_array().unwrap() {
        assert_pin_status_shape(result);
    }
    let body = list("status=queued,pinning,pinned,failed&limit=2").await;
    assert_eq!(ids(&body), newest_first[..2]);
    assert_eq!(body["count"], 4);

    // cid (one and several).
    let body = list(&format!("status=queued&cid={}", CIDS[0])).await;
    assert_eq!(ids(&body), vec![created[3].clone(), created[0].clone()]);
    assert_eq!(body["count"], 2);
    let body = list(&format!("status=queued&cid={},{}", CIDS[1], CIDS[2])).await;
    assert_eq!(ids(&body), vec![created[2].clone(), created[1].clone()]);

    // name with each match strategy.
    let cases = [
        ("name=Report.pdf", vec![0]),
        ("name=Report.pdf&match=exact", vec![0]),
        ("name=report.pdf&match=iexact", vec![3, 0]),
        ("name=report&match=partial", vec![1]),
        ("name=REPORT&match=ipartial", vec![3, 1, 0]),
        ("name=nothing&match=ipartial", vec![]),
    ];
    for (query, expected) in cases {
        let body = list(&format!("status=queued&{query}")).await;
        let want: Vec<String> = expected
            .iter()
            .map(|i: &usize| created[*i].clone())
            .collect();
        assert_eq!(ids(&body), want, "{query}");
        assert_eq!(body["count"].as_u64(), Some(want.len() as u64), "{query}");
    }

    // meta: AND of all pairs.
    let body = list("status=queued&meta=%7B%22app%22%3A%22a%22%7D").await;
    assert_eq!(ids(&body), vec![created[1].clone(), created[0].clone()]);
    let body = list("status=queued&meta=%7B%22app%22%3A%22a%22%2C%22team%22%3A%22x%22%7D").await;
    assert_eq!(ids(&body), vec![created[0].clone()]);

    // before / after use the exact `created` of a result.
    let all = list("status=queued").await;
    let created_at = |i: usize| all["results"][i]["created"].as_str().unwrap().to_string();
    let encode = |t: String| t.replace(':', "%3A").replace('+', "%2B");
    let body = list(&format!("status=queued&before={}", encode(created_at(1)))).await;
    assert_eq!(ids(&body), newest_first[2..]);
    let body = list(&format!("status=queued&after={}", encode(created_at(2)))).await;
    assert_eq!(ids(&body), newest_first[..2]);

    // get, replace, delete.
    let (status, body) = alice.get(&format!("/pins/{}", created[2])).await;
    assert_eq!(status, 200);
    assert_pin_status_shape(&body);
    let ((status, replaced), took) = timed(
        alice.send(
            alice
                .request(Method::POST, &format!("/pins/{}", created[2]))
                .json(&json!({"cid": CIDS[1], "name": "photo-v2.jpg"})),
        ),
    )
    .await;
    assert_eq!(status, 202, "{replaced}");
    let new_id = replaced["requestid"].as_str().unwrap();
    assert_ne!(new_id, created[2]);
    // The new pin is the write the 202 answers for; the old one leaves with `PinReplaced`, an
    // event on the old CID's partition that is applied asynchronously.
    let new_pin = sees_own_writes(took, "the replacing pin to be visible", || async {
        let (status, body) = alice.get(&format!("/pins/{new_id}")).await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(new_pin["pin"]["name"], "photo-v2.jpg");
    eventually(
        Duration::from_secs(60),
        "the replaced pin to leave",
        || async { (alice.get(&format!("/pins/{}", created[2])).await.0 == 404).then_some(()) },
    )
    .await;
    let ((status, _), took) = timed(alice.delete(&format!("/pins/{new_id}"))).await;
    assert_eq!(status, 202);
    sees_own_writes(took, "the deleted pin gone", || async {
        (alice.get(&format!("/pins/{new_id}")).await.0 == 404).then_some(())
    })
    .await;
    // Both removals are applied now (waited for above); counters are written with the rows.
    assert_eq!(list("status=queued").await["count"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_with_before_across_2500_pins() {
    let (_pinhive, alice, _bob, _dir) = service().await;
    let total = 2_500;
    let results: Vec<((u16, Value), Duration)> = stream::iter(0..total)
        .map(|i| {
            let alice = alice.clone();
            async move {
                timed(alice.pin(json!({"cid": CIDS[i % 3], "name": format!("pin-{i}")}))).await
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let accepted: BTreeSet<String> = results
        .iter()
        .map(|((status, body), _)| {
            assert_eq!(*status, 202, "{body}");
            body["requestid"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(accepted.len(), total);
    // Under this load a write may be answered before its shard applied it (after the apply
    // wait bound): the listings below assume all of them are in.
    let slowest = results
        .iter()
        .map(|(_, took)| *took)
        .max()
        .unwrap_or_default();
    sees_own_writes(slowest, "all the pins to be listed", || async {
        let (status, body) = alice.get("/pins?status=queued&limit=1").await;
        (status == 200 && body["count"].as_u64() == Some(total as u64)).then_some(())
    })
    .await;

    for limit in [1000usize, 333] {
        let mut seen = Vec::new();
        let mut before: Option<String> = None;
        let mut last_created: Option<String> = None;
        loop {
            let mut path = format!("/pins?status=queued&limit={limit}");
            if let Some(b) = &before {
                path.push_str(&format!("&before={}", b.replace(':', "%3A")));
            }
            let (status, body) = alice.get(&path).await;
            assert_eq!(status, 200, "{body}");
            // `count` is the size of the filtered result set: what remains before `before`.
            assert_eq!(body["count"].as_u64(), Some((total - seen.len()) as u64));
            let page = body["results"].as_array().unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= limit);
            for pin in page {
                let created = pin["created"].as_str().unwrap().to_string();
                if let Some(previous) = &last_created {
                    assert!(created < *previous, "strictly newest first");
                }
                last_created = Some(created);
                seen.push(pin["requestid"].as_str().unwrap().to_string());
            }
            before = last_created.clone();
        }
        let unique: BTreeSet<String> = seen.iter().cloned().collect();
        assert_eq!(
            seen.len(),
            total,
            "limit {limit}: no duplicates, nothing skipped"
        );
        assert_eq!(unique, accepted);
    }
}
