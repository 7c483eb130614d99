//! Harness for pinhive's end-to-end tests: starts real js-ipfs daemons (Kubo RPC) and the real
//! `pinhive` binary on free loopback ports in private temp dirs, waits for readiness (never
//! sleeps for it), and kills what it started when dropped.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A free TCP port on 127.0.0.1 (bound and released; the OS will not hand it out again soon).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Polls `probe` until it returns `Some`, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(20);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

/// A js-ipfs daemon serving the Kubo RPC API on a free port.
pub struct IpfsDaemon {
    child: Child,
    pub api_url: String,
    pub peer_id: String,
    _dir: tempfile::TempDir,
}

impl IpfsDaemon {
    pub async fn start() -> anyhow::Result<Self> {
        let ipfs_dir = workspace_root().join("integration-tests/ipfs");
        let jsipfs = ipfs_dir.join("node_modules/.bin/jsipfs");
        if !jsipfs.exists() {
            bail!("{} is missing: run scripts/setup.sh", jsipfs.display());
        }
        let dir = tempfile::tempdir()?;
        let repo = dir.path().join("ipfs");
        let node_options = format!("--require {}", ipfs_dir.join("withresolvers.cjs").display());
        let command = |args: &[&str]| {
            let mut c = Command::new(&jsipfs);
            c.args(args)
                .env("IPFS_PATH", &repo)
                .env("NODE_OPTIONS", &node_options)
                .stdin(Stdio::null());
            c
        };
        let init = command(&["init", "--empty-repo"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .context("running jsipfs init")?;
        if !init.status.success() {
            bail!(
                "jsipfs init failed: {}",
                String::from_utf8_lossy(&init.stderr)
            );
        }
        let (swarm, api, gateway, rpc) = (free_port(), free_port(), free_port(), free_port());
        let config_path = repo.join("config");
        let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&config_path)?)?;
        config["Bootstrap"] = serde_json::json!([]);
        config["Addresses"]["Delegates"] = serde_json::json!([]);
        config["Addresses"]["Swarm"] = serde_json::json!([format!("/ip4/127.0.0.1/tcp/{swarm}")]);
        config["Addresses"]["API"] = format!("/ip4/127.0.0.1/tcp/{api}").into();
        config["Addresses"]["Gateway"] = format!("/ip4/127.0.0.1/tcp/{gateway}").into();
        config["Addresses"]["RPC"] = format!("/ip4/127.0.0.1/tcp/{rpc}").into();
        config["Discovery"]["MDNS"]["Enabled"] = false.into();
        config["Discovery"]["webRTCStar"]["Enabled"] = false.into();
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;

        let mut child = command(&["daemon"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting jsipfs daemon")?;
        let stdout = child.stdout.take().context("daemon stdout")?;
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent && line.contains("Daemon is ready") {
                    let _ = ready_tx.send(());
                    sent = true;
                }
            }
        });
        let ready = tokio::task::spawn_blocking(move || {
            ready_rx.recv_timeout(Duration::from_secs(120)).is_ok()
        })
        .await?;
        if !ready {
            let _ = child.kill();
            let output = child.wait_with_output()?;
            bail!(
                "js-ipfs daemon did not become ready: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let api_url = format!("http://127.0.0.1:{api}");
        let mut daemon = IpfsDaemon {
            child,
            api_url,
            peer_id: String::new(),
            _dir: dir,
        };
        daemon.peer_id = daemon.rpc("id", &[]).await?["ID"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Ok(daemon)
    }

    /// Calls the daemon's RPC directly (as a test oracle, independent of pinhive's client).
    pub async fn rpc(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Value> {
        let url = format!("{}/api/v0/{path}", self.api_url);
        let response = reqwest::Client::new()
            .post(&url)
            .query(query)
            .send()
            .await?;
        Ok(response.json::<Value>().await?)
    }

    /// Adds `data` to the daemon's blockstore (not pinned) and returns its CID.
    pub async fn add(&self, data: &[u8], cid_version: u8) -> anyhow::Result<String> {
        let part = reqwest::multipart::Part::bytes(data.to_vec())
            .file_name("data")
            .mime_str("application/octet-stream")?;
        let form = reqwest::multipart::Form::new().part("file", part);
        let version = cid_version.to_string();
        let response: Value = reqwest::Client::new()
            .post(format!("{}/api/v0/add", self.api_url))
            .query(&[("pin", "false"), ("cid-version", version.as_str())])
            .multipart(form)
            .send()
            .await?
            .json()
            .await?;
        // js-ipfs reports v1 CIDs in base58btc; print them canonically (base32, `baf…`).
        let hash = response["Hash"].as_str().context("add: no Hash")?;
        let cid: cid::Cid = hash.parse().context("add: Hash is not a CID")?;
        Ok(cid.to_string())
    }

    /// True if the daemon holds a recursive pin of `cid` (its own `pin/ls`).
    pub async fn is_pinned(&self, cid: &str) -> anyhow::Result<bool> {
        let response = reqwest::Client::new()
            .post(format!("{}/api/v0/pin/ls", self.api_url))
            .query(&[("arg", cid), ("type", "recursive")])
            .send()
            .await?;
        let ok = response.status().is_success();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        Ok(ok && body["Keys"].as_object().is_some_and(|k| !k.is_empty()))
    }
}

impl Drop for IpfsDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real pinhive binary, serving on a free port with its own data dir.
pub struct Pinhive {
    child: Option<Child>,
    pub url: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

pub fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("PINHIVE_BIN") {
        return PathBuf::from(path);
    }
    let path = workspace_root().join("target/debug/pinhive");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p pinhive` (scripts/test.sh does)",
        path.display()
    );
    path
}

impl Pinhive {
    /// Starts `pinhive serve` on `data_dir` with extra flags; waits for `/health`.
    pub async fn start(data_dir: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_with_env(data_dir, extra, &[]).await
    }

    /// Like [`Pinhive::start`], with extra environment variables.
    pub async fn start_with_env(
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let port = free_port();
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut pinhive = Pinhive {
            child: None,
            url: format!("http://127.0.0.1:{port}"),
            data_dir: data_dir.to_path_buf(),
            log_path: data_dir.with_extension(format!("{port}.log")),
            args,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        pinhive.spawn().await?;
        Ok(pinhive)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let child = Command::new(binary())
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting pinhive")?;
        self.child = Some(child);
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("pinhive exited early ({status}):\n{}", self.log_tail());
                }
            }
            let health = client.get(format!("{}/health", self.url)).send().await;
            if health.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("pinhive did not answer /health:\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns whether it exited successfully.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the same instance again (same data dir, flags and port).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.spawn().await
    }
}

impl Drop for Pinhive {
    fn drop(&mut self) {
        self.kill_hard();
    }
}

/// `pinhive token create`; must run while no pinhive holds `data_dir`.
pub fn create_token(data_dir: &Path, name: &str, admin: bool) -> anyhow::Result<String> {
    let mut command = Command::new(binary());
    command.args(["token", "create", "--name", name, "--data-dir"]);
    command.arg(data_dir);
    if admin {
        command.arg("--admin");
    }
    let output = command.output()?;
    if !output.status.success() {
        bail!(
            "token create failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?.trim().to_string())
}

/// A Pinning Service API client bound to one token.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str, token: &str) -> Self {
        Client {
            base: base.to_string(),
            token: token.to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
        }
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Sends and returns (status, JSON body or Null).
    pub async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    pub async fn pin(&self, body: Value) -> (u16, Value) {
        self.send(self.request(reqwest::Method::POST, "/pins").json(&body))
            .await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }

    /// POSTs a pin, expects 202, and waits until it is pinned; returns the final PinStatus.
    pub async fn pin_and_wait_pinned(&self, body: Value) -> Value {
        let (status, created) = self.pin(body).await;
        assert_eq!(status, 202, "{created}");
        let requestid = created["requestid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.wait_status(&requestid, "pinned", Duration::from_secs(60))
            .await
    }

    /// Reasons of the dead letters (`GET /admin/dead-letters`, admin token), oldest first.
    pub async fn dead_letter_reasons(&self) -> Vec<String> {
        let (status, body) = self.get("/admin/dead-letters").await;
        assert_eq!(status, 200, "{body}");
        body["dead_letters"]
            .as_array()
            .map(|letters| {
                letters
                    .iter()
                    .filter_map(|d| d["reason"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until pin `requestid` reaches `status`; returns the PinStatus.
    pub async fn wait_status(&self, requestid: &str, status: &str, timeout: Duration) -> Value {
        let path = format!("/pins/{requestid}");
        eventually(timeout, &format!("{requestid} to be {status}"), || async {
            let (code, body) = self.get(&path).await;
            (code == 200 && body["status"] == status).then_some(body)
        })
        .await
    }
}

/// A tansu broker (Kafka wire protocol, in-memory storage) on a free port.
pub struct Tansu {
    child: Child,
    pub bootstrap: String,
}

impl Tansu {
    pub fn binary() -> Option<PathBuf> {
        if let Ok(path) = std::env::var("TANSU_BIN") {
            return Some(PathBuf::from(path));
        }
        for dir in std::env::var("PATH").unwrap_or_default().split(':') {
            let candidate = Path::new(dir).join("tansu");
            if candidate.exists() {
                return Some(candidate);
            }
        }
        let installed = PathBuf::from("/opt/tansu/bin/tansu");
        installed.exists().then_some(installed)
    }

    pub async fn start() -> anyhow::Result<Self> {
        let binary = Self::binary().context("tansu is not installed: run scripts/setup.sh")?;
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(binary)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting tansu")?;
        let tansu = Tansu {
            child,
            bootstrap: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(&tansu.bootstrap)
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                bail!("tansu did not listen on {}", tansu.bootstrap);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(tansu)
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A burst of concurrent `POST /pins` (cycling through `cids`) running in the background.
pub struct Burst {
    pub acked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<Vec<String>>,
    pub total: usize,
}

impl Burst {
    pub fn start(client: &Client, cids: &[String], total: usize, concurrency: usize) -> Burst {
        use futures::stream::{self, StreamExt};
        let acked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (client, counter, cids) = (client.clone(), acked.clone(), cids.to_vec());
        let task = tokio::spawn(async move {
            stream::iter(0..total)
                .map(|i| {
                    let (client, acked, cid) = (
                        client.clone(),
                        counter.clone(),
                        cids[i % cids.len()].clone(),
                    );
                    async move {
                        let response = client
                            .request(reqwest::Method::POST, "/pins")
                            .json(&serde_json::json!({"cid": cid, "name": format!("burst-{i}")}))
                            .send()
                            .await
                            .ok()?;
                        if response.status() != 202 {
                            return None;
                        }
                        let body: Value = response.json().await.ok()?;
                        acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        Some(body["requestid"].as_str()?.to_string())
                    }
                })
                .buffer_unordered(concurrency)
                .filter_map(|r| async move { r })
                .collect::<Vec<String>>()
                .await
        });
        Burst { acked, task, total }
    }

    /// Waits (polling tightly, so what follows lands early in the burst) for `count` 202s.
    pub async fn wait_acked(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.acked.load(std::sync::atomic::Ordering::SeqCst) < count {
            assert!(Instant::now() < deadline, "{count} acknowledged requests");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The request ids that got 202 (after the server went away, the rest fail).
    pub async fn acknowledged(self) -> std::collections::BTreeSet<String> {
        self.task.await.unwrap_or_default().into_iter().collect()
    }
}

/// Every pin of the client's owner (all statuses), paging with `before`; and the `count` the
/// first page reported.
pub async fn list_every_pin(client: &Client) -> (Vec<String>, u64) {
    let mut listed = Vec::new();
    let mut before: Option<String> = None;
    let mut count = None;
    loop {
        let mut path = "/pins?status=queued,pinning,pinned,failed&limit=1000".to_string();
        if let Some(b) = &before {
            path.push_str(&format!("&before={}", b.replace(':', "%3A")));
        }
        let (status, body) = client.get(&path).await;
        assert_eq!(status, 200, "{body}");
        count.get_or_insert(body["count"].as_u64().unwrap_or_default());
        let page = body["results"].as_array().cloned().unwrap_or_default();
        let Some(last) = page.last() else { break };
        before = last["created"].as_str().map(str::to_string);
        listed.extend(
            page.iter()
                .filter_map(|p| p["requestid"].as_str().map(str::to_string)),
        );
    }
    (listed, count.unwrap_or_default())
}

/// How many `pin_requested` events each request's history holds (exactly-once check).
pub async fn pin_requested_counts(
    admin: &Client,
    requestids: impl IntoIterator<Item = &String>,
) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for requestid in requestids {
        let (status, history) = admin.get(&format!("/admin/pins/{requestid}/history")).await;
        assert_eq!(status, 200, "{history}");
        let requested = history["events"]
            .as_array()
            .map(|events| {
                events
                    .iter()
                    .filter(|e| e["kind"] == "pin_requested")
                    .count()
            })
            .unwrap_or_default();
        counts.insert(requestid.clone(), requested);
    }
    counts
}
