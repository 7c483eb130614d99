//! The edges of the HTTP surface, over real sockets against the real binary: unknown routes,
//! wrong methods and oversized bodies answer with the spec's `Failure` (404 / 405 + `Allow` /
//! 413); repeated `GET /pins` parameters combine (lists) or are refused (single values); and
//! `GET /admin/dead-letters` pages with its `after` cursor. No IPFS node is reachable: pins stay
//! `queued`.

use std::time::Duration;

use pinhive_integration_tests::{
    append_offline, create_token, eventually, free_port, raw_record, Pinhive,
};
use reqwest::Method;
use serde_json::{json, Value};

const CIDS: [&str; 2] = [
    "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",
    "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy",
];

/// The service's default largest request body (`ApiConfig::max_body_bytes`).
const MAX_BODY_BYTES: usize = 64 * 1024;

/// One HTTP answer: status, `Allow` header, JSON body (Null if none).
struct Answer {
    status: u16,
    allow: Option<String>,
    body: Value,
}

/// A raw client (no spec checks: these tests look at answers outside the spec's routes too).
struct Raw {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Raw {
    fn new(base: &str, token: &str) -> Self {
        Raw {
            base: base.to_string(),
            token: token.to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
        }
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let (client, request) = request.build_split();
        let request = request.expect("request built");
        let method = request.method().clone();
        let response = client.execute(request).await.expect("request sent");
        let status = response.status().as_u16();
        let allow = response
            .headers()
            .get(reqwest::header::ALLOW)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // Spec routes are checked against the spec's schemas like every other test's (these
        // services have no reachable IPFS node: `delegates` may be empty, docs/api.md).
        let (_, body) = pinhive_integration_tests::read_checked_with(&method, response, true).await;
        Answer {
            status,
            allow,
            body,
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(self.request(Method::GET, path)).await
    }

    async fn pin(&self, cid: &str, name: &str) -> String {
        let answer = self
            .send(
                self.request(Method::POST, "/pins")
                    .json(&json!({"cid": cid, "name": name})),
            )
            .await;
        assert_eq!(answer.status, 202, "{}", answer.body);
        answer.body["requestid"]
            .as_str()
            .expect("requestid")
            .to_string()
    }
}

/// POSTs `body` with `Transfer-Encoding: chunked` (no declared length) over a plain socket:
/// this workspace's reqwest has no streaming bodies.
async fn post_chunked(client: &Raw, path: &str, body: &[u8]) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = client.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .expect("connect");
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n",
        client.token
    )
    .into_bytes();
    for chunk in body.chunks(4096) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and close before it read everything: a failed write or a reset
    // after the answer is expected, so only what was read counts.
    let _ = stream.write_all(&request).await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    let (head, payload) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    Answer {
        status,
        allow: None,
        body: serde_json::from_str(payload).unwrap_or(Value::Null),
    }
}

fn assert_failure(answer: &Answer, status: u16, reason: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.body["error"]["reason"], reason, "{}", answer.body);
    assert!(
        answer.body["error"]["details"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{}",
        answer.body
    );
}

/// A service with no reachable IPFS node; returns it, a user client and an admin client.
async fn service() -> (Pinhive, Raw, Raw, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let alice = create_token(&data, "alice", false).unwrap();
    let ops = create_token(&data, "ops", true).unwrap();
    let closed = format!("http://127.0.0.1:{}", free_port());
    let pinhive = Pinhive::start(&data, &["--ipfs-node", &closed])
        .await
        .unwrap();
    let user = Raw::new(&pinhive.url, &alice);
    let admin = Raw::new(&pinhive.url, &ops);
    (pinhive, user, admin, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_wrong_methods_and_oversized_bodies_answer_with_a_failure() {
    let (_pinhive, user, admin, _dir) = service().await;

    for path in ["/nope", "/pins/x/y", "/admin/nope", "/pins/"] {
        let answer = user.get(path).await;
        assert_failure(&answer, 404, "NOT_FOUND");
    }
    // Routing comes before authentication: no token is needed to learn a path is unknown.
    let anonymous = reqwest::Client::new()
        .get(format!("{}/nope", user.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 404);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["error"]["reason"], "NOT_FOUND", "{body}");

    for (method, path, allow) in [
        (Method::PUT, "/pins", "GET, POST"),
        (Method::DELETE, "/pins", "GET, POST"),
        (Method::PATCH, "/pins/some-request", "GET, POST, DELETE"),
        (Method::PUT, "/pins/some-request", "GET, POST, DELETE"),
        (Method::DELETE, "/admin/nodes", "GET, POST"),
        (Method::POST, "/admin/dead-letters", "GET"),
    ] {
        let answer = admin.send(admin.request(method.clone(), path)).await;
        assert_failure(&answer, 405, "METHOD_NOT_ALLOWED");
        assert_eq!(answer.allow.as_deref(), Some(allow), "{method} {path}");
    }

    // A valid pin request padded past the limit: 413, whether the body declares its length
    // (rejected before reading it) or streams in chunks (rejected once past the limit).
    let padded = json!({"cid": CIDS[0], "meta": {"pad": "p".repeat(MAX_BODY_BYTES)}});
    let answer = user
        .send(user.request(Method::POST, "/pins").json(&padded))
        .await;
    assert_failure(&answer, 413, "PAYLOAD_TOO_LARGE");
    let padded_bytes = serde_json::to_vec(&padded).unwrap();
    let answer = post_chunked(&user, "/pins", &padded_bytes).await;
    assert_failure(&answer, 413, "PAYLOAD_TOO_LARGE");
    let answer = user
        .send(
            user.request(Method::POST, "/pins/some-request")
                .json(&padded),
        )
        .await;
    assert_failure(&answer, 413, "PAYLOAD_TOO_LARGE");
    // A raw (non-JSON) body over the limit: actix's own 413, given a `Failure` body too.
    let answer = admin
        .send(
            admin
                .request(Method::POST, "/admin/s3/events")
                .body(vec![b' '; MAX_BODY_BYTES + 1]),
        )
        .await;
    assert_failure(&answer, 413, "PAYLOAD_TOO_LARGE");
    // Just under the limit the size is no error (whatever validation then says of the pad).
    let fits = json!({"cid": CIDS[0], "meta": {"pad": "p".repeat(MAX_BODY_BYTES - 200)}});
    let answer = user
        .send(user.request(Method::POST, "/pins").json(&fits))
        .await;
    assert_ne!(answer.status, 413, "{}", answer.body);
    // Malformed JSON stays a 400.
    let answer = user
        .send(
            user.request(Method::POST, "/pins")
                .header("Content-Type", "application/json")
                .body("{\"cid\":"),
        )
        .await;
    assert_failure(&answer, 400, "BAD_REQUEST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_list_parameters_combine_and_repeated_single_values_are_refused() {
    let (_pinhive, user, _admin, _dir) = service().await;
    let first = user.pin(CIDS[0], "first").await;
    let second = user.pin(CIDS[1], "second").await;
    let listed = |answer: &Answer| -> Vec<String> {
        assert_eq!(answer.status, 200, "{}", answer.body);
        let mut ids: Vec<String> = answer.body["results"]
            .as_array()
            .expect("results")
            .iter()
            .filter_map(|p| p["requestid"].as_str().map(str::to_string))
            .collect();
        ids.sort();
        ids
    };
    let mut both = vec![first.clone(), second.clone()];
    both.sort();
    // Both pins are queued (no IPFS node). If the last status won, this would list nothing.
    let answer = eventually(Duration::from_secs(30), "both pins listed", || async {
        let answer = user.get("/pins?status=queued&status=pinned").await;
        (listed(&answer).len() == 2).then_some(answer)
    })
    .await;
    assert_eq!(listed(&answer), both);
    assert_eq!(answer.body["count"], 2, "{}", answer.body);
    let answer = user.get("/pins?status=pinned&status=failed,pinning").await;
    assert!(listed(&answer).is_empty(), "{}", answer.body);
    // Repeated cid parameters are a union too.
    let path = format!("/pins?status=queued&cid={}&cid={}", CIDS[0], CIDS[1]);
    assert_eq!(listed(&user.get(&path).await), both);
    let path = format!("/pins?status=queued&cid={}&cid={}", CIDS[0], CIDS[0]);
    assert_eq!(listed(&user.get(&path).await), vec![first.clone()]);

    for query in [
        "limit=1&limit=5",
        "limit=5&limit=5",
        "name=first&name=second",
        "match=exact&match=partial",
        "before=2030-01-01T00:00:00Z&before=2031-01-01T00:00:00Z",
        "after=2020-01-01T00:00:00Z&after=2021-01-01T00:00:00Z",
        "meta=%7B%7D&meta=%7B%7D",
    ] {
        let answer = user.get(&format!("/pins?status=queued&{query}")).await;
        assert_failure(&answer, 400, "BAD_REQUEST");
        let parameter = query.split('=').next().unwrap_or_default();
        let details = answer.body["error"]["details"].as_str().unwrap_or_default();
        assert!(
            details.contains(parameter) && details.contains("more than once"),
            "{query}: {details}"
        );
    }
    // Unknown parameters stay ignored, repeated or not.
    let answer = user.get("/pins?status=queued&page=1&page=2").await;
    assert_eq!(listed(&answer), both);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_page_with_the_after_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ops = create_token(&data, "ops", true).unwrap();
    let closed = format!("http://127.0.0.1:{}", free_port());
    let mut pinhive = Pinhive::start(&data, &["--ipfs-node", &closed])
        .await
        .unwrap();
    assert!(pinhive.stop(), "clean exit:\n{}", pinhive.log_tail());

    // While it is down, append records no decoder accepts, under keys that spread over
    // several partitions (so the cursor has to move across partitions, not only offsets).
    const GARBAGE: usize = 7;
    let garbage = (0..GARBAGE)
        .map(|i| raw_record(1, &format!("garbage-{i}"), b"\xff\xfe\xfd not an event"))
        .collect();
    append_offline(&data, garbage).await;
    pinhive.restart().await.unwrap();
    let admin = Raw::new(&pinhive.url, &ops);

    let everything: Vec<Value> = eventually(
        Duration::from_secs(30),
        "every garbage record dead-lettered",
        || async {
            let answer = admin.get("/admin/dead-letters?limit=1000").await;
            assert_eq!(answer.status, 200, "{}", answer.body);
            let letters = answer.body["dead_letters"].as_array()?.clone();
            (letters.len() == GARBAGE).then_some(letters)
        },
    )
    .await;
    let position = |letter: &Value| {
        (
            letter["partition"].as_u64().unwrap_or_default(),
            letter["offset"].as_u64().unwrap_or_default(),
        )
    };
    let positions: Vec<(u64, u64)> = everything.iter().map(position).collect();
    let mut sorted = positions.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        positions, sorted,
        "ordered by (partition, offset), no repeats"
    );
    let partitions: std::collections::BTreeSet<u64> = positions.iter().map(|p| p.0).collect();
    assert!(
        partitions.len() > 1,
        "spread over partitions: {positions:?}"
    );

    // Pages of 3: 3 + 3 + 1, each full page with a `next` cursor, the last without.
    let mut walked = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &after {
            Some(cursor) => format!("/admin/dead-letters?limit=3&after={cursor}"),
            None => "/admin/dead-letters?limit=3".to_string(),
        };
        let answer = admin.get(&path).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let page = answer.body["dead_letters"].as_array().unwrap().clone();
        pages += 1;
        walked.extend(page.iter().map(position));
        match answer.body["next"].as_str() {
            Some(next) => {
                assert_eq!(page.len(), 3, "a cursor only after a full page");
                let last = position(page.last().unwrap());
                assert_eq!(next, format!("{}:{}", last.0, last.1));
                after = Some(next.to_string());
            }
            None => {
                assert!(answer.body["next"].is_null(), "{}", answer.body);
                assert!(page.len() < 3, "{}", answer.body);
                break;
            }
        }
        assert!(pages <= GARBAGE, "paging does not end: {walked:?}");
    }
    assert_eq!(walked, positions);
    assert_eq!(pages, 3);

    // The cursor of the last letter: nothing after it.
    let (partition, offset) = *positions.last().unwrap();
    let answer = admin
        .get(&format!("/admin/dead-letters?after={partition}:{offset}"))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["dead_letters"], json!([]));
    assert!(answer.body["next"].is_null());

    for malformed in ["3", "3:", ":4", "a:b", "-1:0", "1:2:3", "4294967296:0"] {
        let answer = admin
            .get(&format!("/admin/dead-letters?after={malformed}"))
            .await;
        assert_failure(&answer, 400, "BAD_REQUEST");
        let details = answer.body["error"]["details"].as_str().unwrap_or_default();
        assert!(details.contains("<partition>:<offset>"), "{details}");
    }
    let answer = admin.get("/admin/dead-letters?after=0:1&after=0:2").await;
    assert_failure(&answer, 400, "BAD_REQUEST");
}
