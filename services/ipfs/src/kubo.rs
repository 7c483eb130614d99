//! Kubo RPC API client (`POST /api/v0/...`). Works with Kubo and with js-ipfs, whose RPC
//! differs in details handled here: numbers in `repo/stat` may be strings, and errors are
//! HTTP 500 with `{"Message","Code","Type":"error"}`.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::{IpfsApi, IpfsError, NodeIdentity, RepoStat};

#[derive(Clone)]
pub struct KuboClient {
    base: String,
    http: reqwest::Client,
    /// How long a streamed answer may stay silent before it counts as broken off.
    idle_timeout: Duration,
}

/// Bound of a whole streamed listing (`pin/ls` of millions of pins takes long; silence is
/// bounded separately by the request timeout).
const LISTING_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Longest line a streamed listing may send (a CID and its pin type are far shorter).
const MAX_LINE_BYTES: usize = 64 * 1024;

impl KuboClient {
    /// `base` is the RPC root, e.g. `http://127.0.0.1:5001`. `request_timeout` bounds every
    /// call except `pin/add`, whose bound is its own timeout plus a margin.
    pub fn new(base: &str, request_timeout: Duration) -> Result<Self, IpfsError> {
        Self::with_authorization(base, request_timeout, None)
    }

    /// A client that sends `authorization` (Kubo's `API.Authorizations`: `Bearer …` or
    /// `Basic …`, [`crate::auth`]) with every call. User info in `base` (an earlier release's
    /// only way) is taken out of the URL and sent as Basic auth unless `authorization` is given.
    pub fn with_authorization(
        base: &str,
        request_timeout: Duration,
        authorization: Option<reqwest::header::HeaderValue>,
    ) -> Result<Self, IpfsError> {
        Self::with_options(base, request_timeout, authorization, &[])
    }

    /// [`KuboClient::with_authorization`] that also trusts `roots` (CA certificates) for an
    /// `https://` node, besides the system's roots (TLS by rustls).
    pub fn with_options(
        base: &str,
        request_timeout: Duration,
        authorization: Option<reqwest::header::HeaderValue>,
        roots: &[reqwest::Certificate],
    ) -> Result<Self, IpfsError> {
        let (base, from_url) = crate::auth::split_credentials(base.trim_end_matches('/'));
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(mut value) = authorization.or(from_url) {
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(request_timeout)
            .pool_max_idle_per_host(64)
            .default_headers(headers);
        for root in roots {
            builder = builder.add_root_certificate(root.clone());
        }
        let http = builder
            .build()
            .map_err(|e| IpfsError::BadResponse(e.to_string()))?;
        Ok(KuboClient {
            base,
            http,
            idle_timeout: request_timeout,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call(
        &self,
        path: &str,
        query: &[(&str, &str)],
        timeout: Option<Duration>,
    ) -> Result<Value, IpfsError> {
        let url = format!("{}/api/v0/{path}", self.base);
        let mut request = self.http.post(&url).query(query);
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                IpfsError::TimedOut(format!("{path}: {e}"))
            } else {
                IpfsError::Unreachable(format!("{path}: {e}"))
            }
        })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| IpfsError::Unreachable(format!("{path}: {e}")))?;
        let text = String::from_utf8_lossy(&body);
        if !status.is_success() {
            return Err(classify_failure(path, status, &text));
        }
        Ok(last_json(&text))
    }
}

/// A streamed `pin/ls` answer being read: the response, the bytes of an unfinished line and
/// the CIDs parsed but not yet handed out.
struct Listing {
    response: Option<reqwest::Response>,
    partial: Vec<u8>,
    ready: std::collections::VecDeque<String>,
    idle_timeout: Duration,
}

impl Listing {
    async fn next(mut self) -> Result<Option<(String, Listing)>, IpfsError> {
        loop {
            if let Some(cid) = self.ready.pop_front() {
                return Ok(Some((cid, self)));
            }
            let Some(response) = self.response.as_mut() else {
                return Ok(None);
            };
            let chunk = tokio::time::timeout(self.idle_timeout, response.chunk())
                .await
                .map_err(|_| IpfsError::TimedOut("pin/ls: the listing went silent".into()))?
                .map_err(|e| IpfsError::Unreachable(format!("pin/ls: {e}")))?;
            match chunk {
                Some(bytes) => self.partial.extend_from_slice(&bytes),
                None => {
                    self.response = None;
                    // A last line without its newline.
                    self.partial.push(b'\n');
                }
            }
            while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.partial.drain(..=end).collect();
                if let Some(cid) = parse_pin_line(&line)? {
                    self.ready.push_back(cid);
                }
            }
            if self.partial.len() > MAX_LINE_BYTES {
                return Err(IpfsError::BadResponse(format!(
                    "pin/ls: a line longer than {MAX_LINE_BYTES} bytes"
                )));
            }
        }
    }
}

/// One line of a streamed `pin/ls` (`{"Cid":"…","Type":"recursive"}`): the CID of a recursive
/// pin, `None` for a blank line or another pin type, an error for an error object or
/// anything unreadable.
fn parse_pin_line(line: &[u8]) -> Result<Option<String>, IpfsError> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let json: Value = serde_json::from_str(text).map_err(|e| {
        IpfsError::BadResponse(format!(
            "pin/ls: unreadable line ({e}): {}",
            text.chars().take(200).collect::<String>()
        ))
    })?;
    if json.get("Type").and_then(Value::as_str) == Some("error") {
        let message = json.get("Message").and_then(Value::as_str).unwrap_or("");
        return Err(IpfsError::Unreachable(format!(
            "pin/ls broke off: {message}"
        )));
    }
    let cid = json
        .get("Cid")
        .and_then(Value::as_str)
        .ok_or_else(|| IpfsError::BadResponse(format!("pin/ls: no Cid in {text}")))?;
    match json.get("Type").and_then(Value::as_str) {
        Some("recursive") | None => Ok(Some(cid.to_string())),
        Some(_) => Ok(None),
    }
}

/// The result object of an answer: some calls stream newline-delimited JSON, and the last
/// object is the result. `Null` when there is none.
fn last_json(text: &str) -> Value {
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("{}");
    serde_json::from_str(last).unwrap_or(Value::Null)
}

/// What a failed RPC answer means, which decides whether the driver retries it
/// ([`IpfsError::is_retryable`]: unreachable and timed out only):
///
/// * 408 or 504, or a server error (5xx) whose message says the node gave up waiting
///   ("timed out", "timeout", "context deadline exceeded"): timed out, retryable.
/// * 404 or 405: the endpoint is missing (not an RPC server, or an incompatible one).
/// * another server error without Kubo's error body (`"Type":"error"`): a proxy or HTTP-level
///   failure in front of the node, retryable.
/// * anything else, notably every other 4xx even when its message mentions a timeout (a bad
///   `timeout` argument, say): rejected, never retried.
fn classify_failure(path: &str, status: reqwest::StatusCode, text: &str) -> IpfsError {
    let json = last_json(text);
    let message = json
        .get("Message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| {
            format!(
                "HTTP {status}: {}",
                text.chars().take(200).collect::<String>()
            )
        });
    let says_timed_out = {
        let lower = message.to_lowercase();
        lower.contains("timed out")
            || lower.contains("timeout")
            || lower.contains("context deadline exceeded")
    };
    let timed_out = status == reqwest::StatusCode::REQUEST_TIMEOUT
        || status == reqwest::StatusCode::GATEWAY_TIMEOUT
        || (status.is_server_error() && says_timed_out);
    if timed_out {
        return IpfsError::TimedOut(message);
    }
    if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::METHOD_NOT_ALLOWED
    {
        return IpfsError::BadResponse(format!("{path}: {message}"));
    }
    if status.is_server_error() && json.get("Type").and_then(Value::as_str) != Some("error") {
        return IpfsError::Unreachable(message);
    }
    IpfsError::Rejected(message)
}

/// The string items of array `key` in `json` (empty when absent).
fn strings(json: &Value, key: &str) -> Vec<String> {
    json.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn number(value: Option<&Value>) -> u64 {
    match value {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

#[async_trait]
impl IpfsApi for KuboClient {
    async fn id(&self) -> Result<NodeIdentity, IpfsError> {
        let json = self.call("id", &[], None).await?;
        let peer_id = json
            .get("ID")
            .and_then(Value::as_str)
            .ok_or_else(|| IpfsError::BadResponse("id: no ID".into()))?
            .to_string();
        let suffix = format!("/p2p/{peer_id}");
        let mut addresses = strings(&json, "Addresses");
        if addresses.is_empty() {
            // js-ipfs leaves `id.Addresses` empty; its listen addresses are here.
            if let Ok(local) = self
                .call("swarm/addrs/local", &[("id", "true")], None)
                .await
            {
                addresses = strings(&local, "Strings");
            }
        }
        for address in &mut addresses {
            if !address.contains("/p2p/") && !address.contains("/ipfs/") {
                address.push_str(&suffix);
            }
        }
        addresses.sort();
        addresses.dedup();
        Ok(NodeIdentity { peer_id, addresses })
    }

    async fn repo_stat(&self) -> Result<RepoStat, IpfsError> {
        let json = self
            .call("repo/stat", &[("size-only", "true")], None)
            .await?;
        Ok(RepoStat {
            repo_size: number(json.get("RepoSize")),
            storage_max: number(json.get("StorageMax")),
        })
    }

    async fn pin_add(&self, cid: &str, timeout: Duration) -> Result<(), IpfsError> {
        let node_timeout = format!("{}ms", timeout.as_millis().max(1));
        let json = self
            .call(
                "pin/add",
                &[
                    ("arg", cid),
                    ("recursive", "true"),
                    ("timeout", &node_timeout),
                ],
                Some(timeout + Duration::from_secs(5)),
            )
            .await?;
        let pinned = json
            .get("Pins")
            .and_then(Value::as_array)
            .is_some_and(|pins| !pins.is_empty());
        if pinned {
            Ok(())
        } else {
            Err(IpfsError::BadResponse(format!("pin/add: {json}")))
        }
    }

    async fn pin_rm(&self, cid: &str) -> Result<(), IpfsError> {
        match self
            .call("pin/rm", &[("arg", cid), ("recursive", "true")], None)
            .await
        {
            Ok(_) => Ok(()),
            Err(IpfsError::Rejected(message)) if message.to_lowercase().contains("not pinned") => {
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    async fn pin_ls(&self, cid: &str) -> Result<bool, IpfsError> {
        match self
            .call("pin/ls", &[("arg", cid), ("type", "recursive")], None)
            .await
        {
            Ok(json) => Ok(json
                .get("Keys")
                .and_then(Value::as_object)
                .is_some_and(|keys| !keys.is_empty())),
            Err(IpfsError::Rejected(message)) if message.to_lowercase().contains("not pinned") => {
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }

    async fn pin_ls_all(&self) -> Result<crate::PinStream, IpfsError> {
        let url = format!("{}/api/v0/pin/ls", self.base);
        let response = self
            .http
            .post(&url)
            .query(&[("type", "recursive"), ("stream", "true")])
            .timeout(LISTING_TIMEOUT)
            .send()
            .await
            .map_err(|e| IpfsError::Unreachable(format!("pin/ls: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(classify_failure("pin/ls", status, &text));
        }
        let listing = Listing {
            response: Some(response),
            partial: Vec::new(),
            ready: std::collections::VecDeque::new(),
            idle_timeout: self.idle_timeout,
        };
        Ok(Box::pin(futures::stream::try_unfold(
            listing,
            Listing::next,
        )))
    }

    async fn block_stat(&self, cid: &str) -> Result<u64, IpfsError> {
        // The node's own timeout bounds a search of the network for a block it lacks.
        let json = self
            .call(
                "block/stat",
                &[("arg", cid), ("timeout", "5s")],
                Some(Duration::from_secs(10)),
            )
            .await?;
        match json.get("Size") {
            Some(size) => Ok(number(Some(size))),
            None => Err(IpfsError::BadResponse(format!("block/stat: {json}"))),
        }
    }

    async fn swarm_connect(&self, multiaddr: &str) -> Result<(), IpfsError> {
        // Origins are hints: a dial that does not succeed quickly is abandoned, so a client's
        // unreachable addresses never hold up the pin.
        self.call(
            "swarm/connect",
            &[("arg", multiaddr), ("timeout", "5s")],
            Some(Duration::from_secs(6)),
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;

    use super::*;
    use crate::metrics::error_kind;

    fn kubo_error(message: &str) -> String {
        serde_json::json!({ "Message": message, "Code": 0, "Type": "error" }).to_string()
    }

    #[test]
    fn failed_answers_are_classified_and_only_real_timeouts_are_retryable() {
        // (status, body, kind, retryable)
        let table: Vec<(u16, String, &str, bool)> = vec![
            // The node gave up waiting: retryable.
            (
                500,
                kubo_error("context deadline exceeded"),
                "timed_out",
                true,
            ),
            (
                500,
                kubo_error("pin: Timeout waiting for block"),
                "timed_out",
                true,
            ),
            (500, kubo_error("request timed out"), "timed_out", true),
            (408, String::new(), "timed_out", true),
            (504, "upstream timed out".into(), "timed_out", true),
            (504, kubo_error("gateway"), "timed_out", true),
            // A client error that mentions a timeout is still a client error: not retried.
            (
                400,
                kubo_error("invalid timeout value: 5 parsecs"),
                "rejected",
                false,
            ),
            (
                400,
                kubo_error("timeout must be positive"),
                "rejected",
                false,
            ),
            (
                403,
                "request timeout exceeded the allowed maximum".into(),
                "rejected",
                false,
            ),
            (
                422,
                kubo_error("context deadline exceeded"),
                "rejected",
                false,
            ),
            (
                429,
                "too many requests, timeout 5s".into(),
                "rejected",
                false,
            ),
            // Other Kubo errors: rejected.
            (
                500,
                kubo_error("invalid path \"bafy\": invalid cid"),
                "rejected",
                false,
            ),
            (
                500,
                kubo_error("not pinned or pinned indirectly"),
                "rejected",
                false,
            ),
            (
                400,
                kubo_error("argument \"arg\" is required"),
                "rejected",
                false,
            ),
            // Not a Kubo error body behind a 5xx: a proxy or HTTP failure, retryable.
            (502, "<html>Bad Gateway</html>".into(), "unreachable", true),
            (503, String::new(), "unreachable", true),
            // The endpoint is missing.
            (404, "404 page not found".into(), "bad_response", false),
            (405, kubo_error("method not allowed"), "bad_response", false),
            // Streaming answers: the last object decides.
            (
                500,
                format!(
                    "{{\"Progress\":1}}\n{}\n",
                    kubo_error("context deadline exceeded")
                ),
                "timed_out",
                true,
            ),
        ];
        for (status, body, kind, retryable) in table {
            let status = StatusCode::from_u16(status).unwrap();
            let error = classify_failure("pin/add", status, &body);
            assert_eq!(
                (error_kind(&error), error.is_retryable()),
                (kind, retryable),
                "{status} {body:?} became {error:?}"
            );
        }
    }

    #[test]
    fn the_message_is_kubos_or_the_status_and_body() {
        let error = classify_failure(
            "pin/add",
            StatusCode::INTERNAL_SERVER_ERROR,
            &kubo_error("not pinned"),
        );
        assert_eq!(error.to_string(), "node rejected the request: not pinned");
        let error = classify_failure("pin/add", StatusCode::BAD_GATEWAY, "no upstream");
        assert_eq!(
            error.to_string(),
            "node unreachable: HTTP 502 Bad Gateway: no upstream"
        );
        let error = classify_failure("pin/ls", StatusCode::NOT_FOUND, "");
        assert_eq!(
            error.to_string(),
            "unexpected answer: pin/ls: HTTP 404 Not Found: "
        );
    }

    #[test]
    fn the_result_is_the_last_object_of_a_stream() {
        assert_eq!(
            last_json("{\"Progress\":1}\n{\"Pins\":[\"bafy\"]}\n\n"),
            serde_json::json!({ "Pins": ["bafy"] })
        );
        assert_eq!(last_json(""), serde_json::json!({}));
        assert_eq!(last_json("not json"), Value::Null);
    }

    #[test]
    fn streamed_listing_lines() {
        let line = |text: &str| parse_pin_line(text.as_bytes());
        assert_eq!(
            line(r#"{"Cid":"bafyone","Type":"recursive","Name":""}"#),
            Ok(Some("bafyone".into()))
        );
        // js-ipfs names no type when asked for recursive pins only on some versions.
        assert_eq!(line(r#"{"Cid":"bafyone"}"#), Ok(Some("bafyone".into())));
        assert_eq!(line(r#"{"Cid":"bafytwo","Type":"direct"}"#), Ok(None));
        assert_eq!(line("  \r"), Ok(None));
        assert!(matches!(
            line(&kubo_error("context canceled")),
            Err(IpfsError::Unreachable(m)) if m.contains("context canceled")
        ));
        assert!(matches!(
            line("{\"Cid\": 3}"),
            Err(IpfsError::BadResponse(_))
        ));
        assert!(matches!(line("not json"), Err(IpfsError::BadResponse(_))));
    }
}
