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
}

impl KuboClient {
    /// `base` is the RPC root, e.g. `http://127.0.0.1:5001`. `request_timeout` bounds every
    /// call except `pin/add`, whose bound is its own timeout plus a margin.
    pub fn new(base: &str, request_timeout: Duration) -> Result<Self, IpfsError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .timeout(request_timeout)
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| IpfsError::BadResponse(e.to_string()))?;
        Ok(KuboClient {
            base: base.trim_end_matches('/').to_string(),
            http,
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
        // Some calls stream newline-delimited JSON; the last object is the result.
        let text = String::from_utf8_lossy(&body);
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("{}");
        let json: Value = serde_json::from_str(last).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(json);
        }
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
        if status.is_server_error() && message.to_lowercase().contains("timed out")
            || message.to_lowercase().contains("timeout")
            || message.contains("context deadline exceeded")
        {
            return Err(IpfsError::TimedOut(message));
        }
        if status == reqwest::StatusCode::NOT_FOUND
            || status == reqwest::StatusCode::METHOD_NOT_ALLOWED
        {
            return Err(IpfsError::BadResponse(format!("{path}: {message}")));
        }
        if status.is_server_error() && json.get("Type").and_then(Value::as_str) != Some("error") {
            return Err(IpfsError::Unreachable(message));
        }
        Err(IpfsError::Rejected(message))
    }
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
