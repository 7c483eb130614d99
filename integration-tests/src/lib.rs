//! Harness for pinhive's end-to-end tests: starts real js-ipfs daemons (Kubo RPC) and the real
//! `pinhive` binary on free loopback ports in private temp dirs, waits for readiness (never
//! sleeps for it), and kills what it started when dropped.

pub mod dashboard;
pub mod proxy;

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

/// How long a write through the API waits for its shard: the 202 comes once the shard applied
/// the event, or once this bound expired (read-your-writes is best effort under load). Keep in
/// step with `ApiConfig::apply_wait`.
pub const APPLY_WAIT: Duration = Duration::from_secs(2);

/// Read-your-writes on this instance: writes all answered within [`APPLY_WAIT`] (`slowest` is
/// the longest any took) had been applied, so `probe` must succeed at once; otherwise some may
/// not be applied yet, so wait for it.
pub async fn sees_own_writes<T, F, Fut>(slowest: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    if slowest < APPLY_WAIT {
        let seen = probe().await;
        seen.unwrap_or_else(|| {
            panic!("{what} at once (the writes were answered within {slowest:?})")
        })
    } else {
        eventually(Duration::from_secs(60), what, probe).await
    }
}

/// Every pin of the client's owner and `count`, once the listing has settled: `count` (the
/// shards' counters) equals the rows listed and every one of them is pinned.
///
/// Waited for, not read once: requests the log made durable but whose 202 a kill or stop cut
/// off are not among those a test waited for, and the shards apply them afterwards,
/// asynchronously (a listing, its `count` and the pinned count are separate reads). A
/// consistent observation is a snapshot of the final state; one that never comes fails.
pub async fn settled_listing(client: &Client) -> (Vec<String>, u64) {
    eventually(
        Duration::from_secs(120),
        "the listing to settle: count equal to the rows listed, all of them pinned",
        || async {
            let (listed, count) = list_every_pin(client).await;
            let (status, pinned) = client.get("/pins?limit=1").await;
            assert_eq!(status, 200, "{pinned}");
            let pinned = pinned["count"].as_u64();
            if count == listed.len() as u64 && pinned == Some(count) {
                return Some((listed, count));
            }
            // Shown only if the test fails.
            eprintln!(
                "not settled: {} listed, count {count}, pinned {pinned:?}",
                listed.len()
            );
            None
        },
    )
    .await
}

/// The partitions an instance's orchestrator runs (`/admin/shards`, admin client).
pub async fn owned_partitions(admin: &Client) -> std::collections::BTreeSet<u64> {
    let (_, body) = admin.get("/admin/shards").await;
    body["owned_partitions"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

/// Sum of the samples of the Prometheus metric `name` on `base`/metrics whose label set
/// contains `label` (e.g. `call="pin/add"`; empty for every sample).
pub async fn metric_sum(base: &str, name: &str, label: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|line| line.starts_with(name) && line.contains(label))
        .filter(|line| line[name.len()..].starts_with(['{', ' ']))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A Kafka producer configured the way docs/kafka.md tells external producers to be: the Java
/// client's partitioner (murmur2), `acks=all`. A separate rdkafka client, not pinhive's code.
pub fn external_producer(bootstrap: &str) -> rdkafka::producer::FutureProducer {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("partitioner", "murmur2_random")
        .set("acks", "all")
        .create()
        .expect("producer")
}

/// Appends `records` to the embedded log of a stopped service's `data_dir` (the default 16
/// partitions), the way a buggy or hostile producer with access to it could.
pub async fn append_offline(data_dir: &Path, records: Vec<pinhive_log::Record>) {
    use pinhive_log::Log;
    let log = pinhive_log::EmbeddedLog::open(
        &data_dir.join("log"),
        pinhive_log::EmbeddedLogConfig {
            partitions: 16,
            ..pinhive_log::EmbeddedLogConfig::default()
        },
    )
    .expect("open the stopped service's log");
    log.append(records).await.expect("append offline");
}

/// A log record with an arbitrary value and content type (no envelope behind it).
pub fn raw_record(content_type: u8, key: &str, value: &[u8]) -> pinhive_log::Record {
    pinhive_log::Record {
        key: key.as_bytes().to_vec(),
        value: value.to_vec(),
        content_type,
        timestamp_ns: 0,
        traceparent: None,
    }
}

/// A js-ipfs daemon serving the Kubo RPC API on a free port.
pub struct IpfsDaemon {
    child: Child,
    pub api_url: String,
    pub peer_id: String,
    dir: tempfile::TempDir,
}

/// `jsipfs ARGS` on the repository under `dir`.
fn jsipfs(dir: &Path, args: &[&str]) -> anyhow::Result<Command> {
    let ipfs_dir = workspace_root().join("integration-tests/ipfs");
    let jsipfs = ipfs_dir.join("node_modules/.bin/jsipfs");
    if !jsipfs.exists() {
        bail!("{} is missing: run scripts/setup.sh", jsipfs.display());
    }
    let node_options = format!("--require {}", ipfs_dir.join("withresolvers.cjs").display());
    let mut c = Command::new(&jsipfs);
    c.args(args)
        .env("IPFS_PATH", dir.join("ipfs"))
        .env("NODE_OPTIONS", &node_options)
        .stdin(Stdio::null());
    Ok(c)
}

/// Starts the daemon of the repository under `dir` and waits until it says it is ready.
async fn spawn_daemon(dir: &Path) -> anyhow::Result<Child> {
    let mut child = jsipfs(dir, &["daemon"])?
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
    Ok(child)
}

impl IpfsDaemon {
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let repo = dir.path().join("ipfs");
        let command = |args: &[&str]| jsipfs(dir.path(), args);
        let init = command(&["init", "--empty-repo"])?
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
        let config_path = repo.join("config");
        // A port found free may be taken by another test before the daemon binds it: such a
        // start is tried again on other ports (at most three attempts).
        let mut attempts = 0;
        let (child, api) = loop {
            attempts += 1;
            let (swarm, api, gateway, rpc) = (free_port(), free_port(), free_port(), free_port());
            let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&config_path)?)?;
            config["Bootstrap"] = serde_json::json!([]);
            config["Addresses"]["Delegates"] = serde_json::json!([]);
            config["Addresses"]["Swarm"] =
                serde_json::json!([format!("/ip4/127.0.0.1/tcp/{swarm}")]);
            config["Addresses"]["API"] = format!("/ip4/127.0.0.1/tcp/{api}").into();
            config["Addresses"]["Gateway"] = format!("/ip4/127.0.0.1/tcp/{gateway}").into();
            config["Addresses"]["RPC"] = format!("/ip4/127.0.0.1/tcp/{rpc}").into();
            config["Discovery"]["MDNS"]["Enabled"] = false.into();
            config["Discovery"]["webRTCStar"]["Enabled"] = false.into();
            std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
            match spawn_daemon(dir.path()).await {
                Ok(child) => break (child, api),
                Err(error) if attempts < 3 && format!("{error:#}").contains("EADDRINUSE") => {
                    continue
                }
                Err(error) => return Err(error),
            }
        };
        let api_url = format!("http://127.0.0.1:{api}");
        let mut daemon = IpfsDaemon {
            child,
            api_url,
            peer_id: String::new(),
            dir,
        };
        daemon.peer_id = daemon.rpc("id", &[]).await?["ID"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Ok(daemon)
    }

    /// SIGKILL: the daemon dies at once, as a crashed node does (its repository stays).
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the daemon again on its repository, ports and identity; waits until ready.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill_hard();
        // js-ipfs leaves its repository lock behind when killed.
        let _ = std::fs::remove_file(self.dir.path().join("ipfs/repo.lock"));
        let _ = std::fs::remove_dir_all(self.dir.path().join("ipfs/repo.lock"));
        self.child = spawn_daemon(self.dir.path()).await?;
        Ok(())
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
    /// The client the harness checks `/health` with (trusting the test CA over HTTPS).
    http: reqwest::Client,
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
        Self::start_full(data_dir, extra, env, None).await
    }

    /// Like [`Pinhive::start`] over HTTPS: `extra` holds `--tls-cert`/`--tls-key` of a
    /// certificate for `localhost` that `ca_pem` signed; `url` is `https://localhost:PORT`.
    pub async fn start_tls(data_dir: &Path, extra: &[&str], ca_pem: &str) -> anyhow::Result<Self> {
        Self::start_full(data_dir, extra, &[], Some(ca_pem)).await
    }

    async fn start_full(
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        ca_pem: Option<&str>,
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
        let (url, http) = match ca_pem {
            Some(ca_pem) => (
                format!("https://localhost:{port}"),
                client_trusting(ca_pem)?,
            ),
            None => (format!("http://127.0.0.1:{port}"), reqwest::Client::new()),
        };
        let mut pinhive = Pinhive {
            child: None,
            url,
            http,
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
        let client = self.http.clone();
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

/// An HTTP client that trusts only the CA certificate(s) in `ca_pem` (not the system's).
pub fn client_trusting(ca_pem: &str) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(60));
    for root in reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes())? {
        builder = builder.add_root_certificate(root);
    }
    Ok(builder.build()?)
}

/// A certificate authority made at test time (rcgen): no private key is ever committed.
pub struct TestCa {
    pub ca_pem: String,
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(TestCa {
            ca_pem: cert.pem(),
            cert,
            key,
        })
    }

    /// A server certificate for `localhost` (and 127.0.0.1) signed by this CA: (cert PEM,
    /// key PEM).
    pub fn leaf(&self) -> anyhow::Result<(String, String)> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])?;
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress(std::net::IpAddr::from([
                127, 0, 0, 1,
            ])));
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A rustls server configuration serving a fresh leaf of this CA.
    pub fn server_config(&self) -> anyhow::Result<rustls::ServerConfig> {
        use rustls_pki_types::pem::PemObject;
        let (cert, key) = self.leaf()?;
        let certs = rustls_pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()?;
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes())?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        Ok(rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?)
    }
}

/// Every file under `dir` whose bytes contain `needle` (to prove a secret was never written).
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.filter_map(Result::ok).map(|e| e.path()));
            }
        } else if meta.is_file() {
            let bytes = std::fs::read(&path).unwrap_or_default();
            if bytes.windows(needle.len()).any(|w| w == needle) {
                found.push(path);
            }
        }
    }
    found
}

/// `pinhive token create`; must run while no pinhive holds `data_dir`.
pub fn create_token(data_dir: &Path, name: &str, admin: bool) -> anyhow::Result<String> {
    let mut command = Command::new(binary());
    command.args(["token", "create", "--name", name, "--data-dir"]);
    // Without a token the command writes the store directly (the bootstrap path).
    command.env_remove("PINHIVE_TOKEN");
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
///
/// Every response it receives on a route of the Pinning Service API (`/pins`, `/pins/{id}`) is
/// validated against the spec (`schemas/openapi/pinning-service.yaml`, see [`spec`]): status
/// documented for the operation, `content-type`, and body against the operation's schema
/// (`PinResults`, `PinStatus`, no body, `Failure`). A violation panics with the route, status,
/// body and schema errors. Routes the spec does not define (`/admin/*`, `/health`, ...) are not
/// checked. [`Client::unchecked`] turns the check off for a test that wants a non-spec answer.
/// `schemas/openapi/README.md` describes the check.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
    check_spec: bool,
    /// The service under test has no reachable IPFS node by design (see
    /// [`Client::without_reachable_node`]).
    no_node: bool,
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
            check_spec: true,
            no_node: false,
        }
    }

    /// For a test whose service has no reachable IPFS node by design: pinhive then has no node
    /// to name in `delegates` (docs/api.md, "Delegates"), the one place it answers `[]` where
    /// the spec asks for at least one. Exactly that is tolerated; every other rule is checked.
    pub fn without_reachable_node(&self) -> Self {
        Client {
            no_node: true,
            ..self.clone()
        }
    }

    /// The same client without the spec check of its responses: only for a test that
    /// deliberately expects an answer the Pinning Service API spec does not allow.
    pub fn unchecked(&self) -> Self {
        Client {
            check_spec: false,
            ..self.clone()
        }
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Sends and returns (status, JSON body or Null); panics if the response violates the
    /// Pinning Service API spec (unless [`Client::unchecked`]).
    pub async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let (http, request) = request.build_split();
        let request = request.expect("request built");
        let method = request.method().clone();
        let response = http.execute(request).await.expect("request sent");
        if self.check_spec {
            return read_checked_with(&method, response, self.no_node).await;
        }
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// [`check_response`], unless this client is [`Client::unchecked`].
    pub fn check_response(
        &self,
        method: &reqwest::Method,
        url: &reqwest::Url,
        status: u16,
        content_type: Option<&str>,
        body: &[u8],
    ) {
        if !self.check_spec {
            return;
        }
        if self.no_node {
            let patched = with_placeholder_delegates(body);
            check_response(method, url, status, content_type, &patched);
        } else {
            check_response(method, url, status, content_type, body);
        }
    }

    pub async fn pin(&self, body: Value) -> (u16, Value) {
        self.send(self.request(reqwest::Method::POST, "/pins").json(&body))
            .await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(self.request(reqwest::Method::POST, path).json(body))
            .await
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
        let port = free_port();
        Self::start_advertising(port, port).await
    }

    /// A broker that clients reach only through a [`BrokerLink`] (it advertises the link's
    /// address), so that a test can cut it off and back on while it keeps its in-memory topics.
    pub async fn start_behind_link() -> anyhow::Result<(Self, BrokerLink)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let link_port = listener.local_addr()?.port();
        let port = free_port();
        let mut tansu = Self::start_advertising(port, link_port).await?;
        let link = BrokerLink::serve(listener, format!("127.0.0.1:{port}"));
        tansu.bootstrap = format!("127.0.0.1:{link_port}");
        Ok((tansu, link))
    }

    /// Listens on `port`, tells clients the broker is at `advertised_port`.
    async fn start_advertising(port: u16, advertised_port: u16) -> anyhow::Result<Self> {
        let binary = Self::binary().context("tansu is not installed: run scripts/setup.sh")?;
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised = format!("tcp://127.0.0.1:{advertised_port}");
        let child = Command::new(binary)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting tansu")?;
        let listening = format!("127.0.0.1:{port}");
        let tansu = Tansu {
            child,
            bootstrap: format!("127.0.0.1:{advertised_port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(&listening).await.is_err() {
            if Instant::now() > deadline {
                bail!("tansu did not listen on {listening}");
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

/// A TCP link between a broker and its clients that a test cuts and restores: while cut, open
/// connections are closed and new ones are closed as soon as accepted, as when the broker is
/// down, but the broker keeps running (and its in-memory topics). Runs on the test's runtime.
pub struct BrokerLink {
    state: std::sync::Arc<std::sync::Mutex<LinkState>>,
    accept: tokio::task::JoinHandle<()>,
}

struct LinkState {
    up: bool,
    open: Vec<tokio::task::AbortHandle>,
}

impl BrokerLink {
    fn serve(listener: tokio::net::TcpListener, broker: String) -> Self {
        let state = std::sync::Arc::new(std::sync::Mutex::new(LinkState {
            up: true,
            open: Vec::new(),
        }));
        let accept_state = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                // Checked and registered under the lock `cut` takes: no connection slips by.
                let mut link = accept_state.lock().unwrap_or_else(|e| e.into_inner());
                if !link.up {
                    continue; // `client` dropped: closed at once
                }
                let broker = broker.clone();
                let forward = tokio::spawn(async move {
                    if let Ok(mut upstream) = tokio::net::TcpStream::connect(&broker).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
                link.open.retain(|connection| !connection.is_finished());
                link.open.push(forward.abort_handle());
            }
        });
        BrokerLink { state, accept }
    }

    /// Closes every connection through the link and refuses new ones until [`Self::restore`].
    pub fn cut(&self) {
        let mut link = self.state.lock().unwrap_or_else(|e| e.into_inner());
        link.up = false;
        for connection in link.open.drain(..) {
            connection.abort();
        }
    }

    pub fn restore(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).up = true;
    }
}

impl Drop for BrokerLink {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
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
                        let status = response.status().as_u16();
                        let url = response.url().clone();
                        let content_type = content_type(&response);
                        // A response cut short (the server went away) is not checked.
                        let bytes = response.bytes().await.ok()?;
                        client.check_response(
                            &reqwest::Method::POST,
                            &url,
                            status,
                            content_type.as_deref(),
                            &bytes,
                        );
                        if status != 202 {
                            return None;
                        }
                        let body: Value = serde_json::from_slice(&bytes).ok()?;
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
            // Checked after `is_finished`: every increment happened before the task ended.
            assert!(
                !(self.task.is_finished()
                    && self.acked.load(std::sync::atomic::Ordering::SeqCst) < count),
                "the burst ended (a panic shows in `acknowledged`) before {count} 202s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The request ids that got 202 (after the server went away, the rest fail).
    pub async fn acknowledged(self) -> std::collections::BTreeSet<String> {
        match self.task.await {
            Ok(acknowledged) => acknowledged.into_iter().collect(),
            // A spec violation inside the burst fails the test with its own message.
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => Default::default(),
        }
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

/// Reads a response to a `method` request sent by any `reqwest` client (for a test that does
/// not use [`Client`], e.g. without a token) and returns (status, JSON body or Null); panics
/// if it violates the Pinning Service API spec, like [`Client::send`].
/// `body` with every empty `delegates` (of a `PinStatus` or of each listing result) given one
/// placeholder address, so that only that one tolerated deviation escapes the check.
fn with_placeholder_delegates(body: &[u8]) -> Vec<u8> {
    let Ok(mut value) = serde_json::from_slice::<Value>(body) else {
        return body.to_vec();
    };
    let patch = |pin: &mut Value| {
        if pin
            .get("delegates")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
        {
            pin["delegates"] = serde_json::json!(["/ip4/192.0.2.1/tcp/4001"]);
        }
    };
    patch(&mut value);
    if let Some(results) = value.get_mut("results").and_then(Value::as_array_mut) {
        results.iter_mut().for_each(patch);
    }
    serde_json::to_vec(&value).unwrap_or_else(|_| body.to_vec())
}

pub async fn read_checked(method: &reqwest::Method, response: reqwest::Response) -> (u16, Value) {
    read_checked_with(method, response, false).await
}

/// [`read_checked`]; with `no_node`, the one deviation of a service without a reachable IPFS
/// node (empty `delegates`, see [`Client::without_reachable_node`]) is tolerated.
pub async fn read_checked_with(
    method: &reqwest::Method,
    response: reqwest::Response,
    no_node: bool,
) -> (u16, Value) {
    let status = response.status().as_u16();
    let url = response.url().clone();
    let content_type = content_type(&response);
    // A body cut short (the server went away) cannot be checked.
    let Ok(bytes) = response.bytes().await else {
        return (status, Value::Null);
    };
    let checked = if no_node {
        with_placeholder_delegates(&bytes)
    } else {
        bytes.to_vec()
    };
    check_response(method, &url, status, content_type.as_deref(), &checked);
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Panics if this response to `method url` violates the Pinning Service API spec; routes the
/// spec does not define (`/admin/*`, `/health`, ...) pass unchecked. See [`spec`].
pub fn check_response(
    method: &reqwest::Method,
    url: &reqwest::Url,
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) {
    let route = match url.query() {
        Some(query) => format!("{method} {}?{query}", url.path()),
        None => format!("{method} {}", url.path()),
    };
    spec::assert_conforms(
        method.as_str(),
        url.path(),
        &route,
        status,
        content_type,
        body,
    );
}

/// The `content-type` header of a response, if any.
pub fn content_type(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Responses checked against the IPFS Pinning Service API spec
/// (`schemas/openapi/pinning-service.yaml`, compiled into this crate).
///
/// The spec is parsed once. Its `paths` give, per operation and status (exact code, then `4XX`
/// / `5XX`, then `default`), what the response must be: no body, or an `application/json` body
/// of a schema. Its `components.schemas` (OpenAPI 3.0 schema objects) are turned into JSON
/// Schema draft 4, the draft OpenAPI 3.0 follows (boolean `exclusiveMinimum`, `$ref` siblings
/// ignored):
/// - `$ref: '#/components/schemas/X'` is kept as is: every compiled schema is a root document
///   `{"components": {"schemas": {...}}, "allOf": [<schema>]}`, so the pointer resolves in it;
///   any other `$ref` (another file, a URL) is refused when the spec loads;
/// - `nullable: true` becomes `anyOf: [{"type": "null"}, <schema>]`;
/// - `format: int32`/`int64` become `minimum`/`maximum` bounds (other formats, `date-time`
///   included, are validated by `jsonschema`);
/// - annotations (`example`, `readOnly`, `writeOnly`, `deprecated`, `externalDocs`, `xml`,
///   `discriminator`, `x-*`) are dropped;
/// - any other keyword panics at load, so a spec update that needs more is noticed.
pub mod spec {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::{Arc, OnceLock};

    use serde_json::{json, Map, Value};

    /// The spec as committed (CC0, unchanged from the specification).
    pub const SPEC_YAML: &str = include_str!("../../schemas/openapi/pinning-service.yaml");

    /// What a response must be.
    #[derive(Clone)]
    enum Expected {
        /// No body at all (`DELETE /pins/{requestid}` 202).
        NoBody,
        /// An `application/json` body valid against `schema` (named for messages).
        Json {
            name: String,
            schema: Arc<jsonschema::Validator>,
        },
    }

    struct Operation {
        method: String,
        /// Path template split on `/`; `None` stands for a `{parameter}` segment.
        template: Vec<Option<String>>,
        template_text: String,
        /// Keyed by the spec's status keys: `"202"`, `"4XX"`, `"default"`.
        responses: BTreeMap<String, Expected>,
    }

    /// The loaded spec: its operations and its component schemas, compiled.
    pub struct Spec {
        operations: Vec<Operation>,
        components: BTreeMap<String, Arc<jsonschema::Validator>>,
    }

    /// The committed spec, parsed and compiled once per test binary.
    pub fn get() -> &'static Spec {
        static SPEC: OnceLock<Spec> = OnceLock::new();
        SPEC.get_or_init(|| Spec::parse(SPEC_YAML))
    }

    /// Converts one OpenAPI 3.0 schema object into JSON Schema draft 4 (see the module doc).
    pub fn to_json_schema(schema: &Value, at: &str) -> Value {
        let Value::Object(object) = schema else {
            panic!("{at}: a schema must be an object, got {schema}");
        };
        if let Some(reference) = object.get("$ref") {
            let target = reference.as_str().unwrap_or_default();
            assert!(
                target.starts_with("#/components/schemas/"),
                "{at}: only `#/components/schemas/...` references are supported, got {reference}"
            );
            // OpenAPI 3.0: the siblings of a `$ref` are ignored.
            return json!({ "$ref": target });
        }
        let mut out = Map::new();
        for (keyword, value) in object {
            let here = format!("{at}/{keyword}");
            match keyword.as_str() {
                "type" | "enum" | "required" | "default" | "title" | "description" | "minimum"
                | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" | "multipleOf"
                | "minLength" | "maxLength" | "pattern" | "minItems" | "maxItems"
                | "uniqueItems" | "minProperties" | "maxProperties" => {
                    out.insert(keyword.clone(), value.clone());
                }
                "format" => match value.as_str() {
                    Some("int32") => bound(&mut out, object, i32::MIN.into(), i32::MAX.into()),
                    Some("int64") => bound(&mut out, object, i64::MIN, i64::MAX),
                    // OpenAPI-only formats with nothing to check on a JSON value.
                    Some("float" | "double" | "byte" | "binary" | "password") => {}
                    _ => {
                        out.insert(keyword.clone(), value.clone());
                    }
                },
                "properties" => {
                    let properties = value.as_object().unwrap_or_else(|| {
                        panic!("{here}: an object expected, got {value}");
                    });
                    let converted = properties
                        .iter()
                        .map(|(name, s)| {
                            (name.clone(), to_json_schema(s, &format!("{here}/{name}")))
                        })
                        .collect();
                    out.insert(keyword.clone(), Value::Object(converted));
                }
                "additionalProperties" => {
                    let converted = match value {
                        Value::Bool(_) => value.clone(),
                        _ => to_json_schema(value, &here),
                    };
                    out.insert(keyword.clone(), converted);
                }
                "items" | "not" => {
                    out.insert(keyword.clone(), to_json_schema(value, &here));
                }
                "allOf" | "anyOf" | "oneOf" => {
                    let schemas = value.as_array().unwrap_or_else(|| {
                        panic!("{here}: an array expected, got {value}");
                    });
                    let converted = schemas
                        .iter()
                        .enumerate()
                        .map(|(i, s)| to_json_schema(s, &format!("{here}/{i}")))
                        .collect();
                    out.insert(keyword.clone(), Value::Array(converted));
                }
                // Handled below, or annotations with nothing to validate in a response.
                "nullable" | "example" | "readOnly" | "writeOnly" | "deprecated"
                | "externalDocs" | "xml" | "discriminator" => {}
                extension if extension.starts_with("x-") => {}
                other => panic!(
                    "{here}: the OpenAPI keyword `{other}` is not handled by the spec check \
                     (integration-tests/src/lib.rs, spec::to_json_schema)"
                ),
            }
        }
        if object.get("nullable") == Some(&Value::Bool(true)) {
            return json!({ "anyOf": [{ "type": "null" }, Value::Object(out)] });
        }
        Value::Object(out)
    }

    /// `format: int32`/`int64`: the integer's range, where the schema does not narrow it.
    fn bound(out: &mut Map<String, Value>, schema: &Map<String, Value>, min: i64, max: i64) {
        if !schema.contains_key("minimum") {
            out.insert("minimum".into(), min.into());
        }
        if !schema.contains_key("maximum") {
            out.insert("maximum".into(), max.into());
        }
    }

    impl Spec {
        /// Parses an OpenAPI 3.0 document (YAML); panics on anything it cannot check.
        pub fn parse(yaml: &str) -> Spec {
            let document: Value =
                serde_yaml_ng::from_str(yaml).expect("the OpenAPI spec parses as YAML");
            let schemas = document
                .pointer("/components/schemas")
                .and_then(Value::as_object)
                .expect("the spec has components.schemas");
            let converted: Map<String, Value> = schemas
                .iter()
                .map(|(name, schema)| {
                    let at = format!("#/components/schemas/{name}");
                    (name.clone(), to_json_schema(schema, &at))
                })
                .collect();
            let mut cache: HashMap<String, Arc<jsonschema::Validator>> = HashMap::new();
            let mut compile = |schema: Value, at: &str| -> Arc<jsonschema::Validator> {
                let key = schema.to_string();
                if let Some(validator) = cache.get(&key) {
                    return validator.clone();
                }
                let root = json!({
                    "$schema": "http://json-schema.org/draft-04/schema#",
                    "components": { "schemas": converted },
                    "allOf": [schema],
                });
                let validator = jsonschema::draft4::options()
                    .should_validate_formats(true)
                    .build(&root)
                    .unwrap_or_else(|e| panic!("{at}: the schema does not compile: {e}"));
                let validator = Arc::new(validator);
                cache.insert(key, validator.clone());
                validator
            };
            let components = converted
                .keys()
                .map(|name| {
                    let at = format!("#/components/schemas/{name}");
                    (name.clone(), compile(json!({ "$ref": at }), &at))
                })
                .collect();

            let paths = document
                .get("paths")
                .and_then(Value::as_object)
                .expect("the spec has paths");
            let mut operations = Vec::new();
            for (template_text, item) in paths {
                let item = item.as_object().expect("a path item is an object");
                for (method, operation) in item {
                    if !matches!(
                        method.as_str(),
                        "get" | "put" | "post" | "delete" | "options" | "head" | "patch" | "trace"
                    ) {
                        continue; // `parameters`, `summary`, ...
                    }
                    let at = format!("paths/{template_text}/{method}");
                    let declared = operation
                        .get("responses")
                        .and_then(Value::as_object)
                        .unwrap_or_else(|| panic!("{at}: no responses"));
                    let mut responses = BTreeMap::new();
                    for (code, response) in declared {
                        let at = format!("{at}/responses/{code}");
                        let response = resolve(&document, response, &at);
                        let expected = match response.get("content").and_then(Value::as_object) {
                            None => Expected::NoBody,
                            Some(content) => {
                                let schema = content
                                    .get("application/json")
                                    .and_then(|media| media.get("schema"))
                                    .unwrap_or_else(|| {
                                        panic!("{at}: only application/json content is supported")
                                    });
                                let name = schema
                                    .get("$ref")
                                    .and_then(Value::as_str)
                                    .and_then(|r| r.rsplit('/').next())
                                    .unwrap_or("inline schema")
                                    .to_string();
                                let schema = compile(to_json_schema(schema, &at), &at);
                                Expected::Json { name, schema }
                            }
                        };
                        responses.insert(code.to_uppercase(), expected);
                    }
                    operations.push(Operation {
                        method: method.to_uppercase(),
                        template: split(template_text)
                            .map(|segment| {
                                let parameter = segment.starts_with('{') && segment.ends_with('}');
                                (!parameter).then(|| segment.to_string())
                            })
                            .collect(),
                        template_text: template_text.clone(),
                        responses,
                    });
                }
            }
            Spec {
                operations,
                components,
            }
        }

        /// Errors of `instance` against the component schema `name` (e.g. `PinStatus`); empty
        /// when valid.
        pub fn schema_errors(&self, name: &str, instance: &Value) -> Vec<String> {
            let validator = self
                .components
                .get(name)
                .unwrap_or_else(|| panic!("the spec has no schema {name}"));
            errors(validator, instance)
        }

        /// Checks a response to `method path` (path without query, relative to the service
        /// root). `Ok` also for a route the spec does not define (it is not checked); `Err`
        /// lists every violation.
        pub fn check(
            &self,
            method: &str,
            path: &str,
            status: u16,
            content_type: Option<&str>,
            body: &[u8],
        ) -> Result<(), Vec<String>> {
            let segments: Vec<&str> = split(path).collect();
            let Some(operation) = self.operations.iter().find(|op| {
                op.method.eq_ignore_ascii_case(method)
                    && op.template.len() == segments.len()
                    && op.template.iter().zip(&segments).all(|(t, s)| match t {
                        Some(literal) => literal == s,
                        None => !s.is_empty(),
                    })
            }) else {
                return Ok(());
            };
            let range = format!("{}XX", status / 100);
            let Some(expected) = [status.to_string(), range, "DEFAULT".to_string()]
                .iter()
                .find_map(|key| operation.responses.get(key))
            else {
                let documented: Vec<&String> = operation.responses.keys().collect();
                return Err(vec![format!(
                    "status {status} is not documented for {} {} (documented: {documented:?})",
                    operation.method, operation.template_text
                )]);
            };
            match expected {
                Expected::NoBody if body.is_empty() => Ok(()),
                Expected::NoBody => Err(vec![format!(
                    "the spec defines no body for {status} on {} {}, got {} bytes",
                    operation.method,
                    operation.template_text,
                    body.len()
                )]),
                Expected::Json { name, schema } => {
                    let mut problems = Vec::new();
                    let essence = content_type
                        .and_then(|c| c.split(';').next())
                        .map(|c| c.trim().to_ascii_lowercase());
                    if essence.as_deref() != Some("application/json") {
                        problems.push(format!(
                            "content-type {content_type:?}, the spec says application/json"
                        ));
                    }
                    match serde_json::from_slice::<Value>(body) {
                        Err(e) => problems.push(format!("the body is not JSON ({e}), want {name}")),
                        Ok(instance) => problems.extend(
                            errors(schema, &instance)
                                .into_iter()
                                .map(|e| format!("{name}: {e}")),
                        ),
                    }
                    if problems.is_empty() {
                        Ok(())
                    } else {
                        Err(problems)
                    }
                }
            }
        }
    }

    /// Panics, naming `route` (method, path and query, for the message), the status, the body
    /// and every violation, if the response breaks the spec.
    pub fn assert_conforms(
        method: &str,
        path: &str,
        route: &str,
        status: u16,
        content_type: Option<&str>,
        body: &[u8],
    ) {
        if let Err(problems) = get().check(method, path, status, content_type, body) {
            const SHOWN: usize = 20;
            let mut listed = problems[..problems.len().min(SHOWN)].join("\n    - ");
            if problems.len() > SHOWN {
                listed.push_str(&format!("\n    ... and {} more", problems.len() - SHOWN));
            }
            let text = String::from_utf8_lossy(body);
            let shown: String = text.chars().take(4000).collect();
            let cut = if shown.len() < text.len() {
                format!("... ({} bytes in all)", body.len())
            } else {
                String::new()
            };
            panic!(
                "response violates the Pinning Service API spec \
                 (schemas/openapi/pinning-service.yaml)\n  route: {route}\n  status: {status}\n  \
                 content-type: {content_type:?}\n  body: {shown}{cut}\n  violations:\n    - {listed}"
            );
        }
    }

    fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
        validator
            .iter_errors(instance)
            .map(|e| {
                let path = e.instance_path.to_string();
                let path = if path.is_empty() { "/" } else { path.as_str() };
                format!("at {path}: {e} (schema {})", e.schema_path)
            })
            .collect()
    }

    /// `response` itself, or the `#/components/responses/...` it references.
    fn resolve<'a>(document: &'a Value, response: &'a Value, at: &str) -> &'a Value {
        match response.get("$ref").and_then(Value::as_str) {
            None => response,
            Some(reference) => reference
                .strip_prefix('#')
                .and_then(|pointer| document.pointer(pointer))
                .unwrap_or_else(|| panic!("{at}: cannot resolve {reference}")),
        }
    }

    fn split(path: &str) -> impl Iterator<Item = &str> {
        path.strip_prefix('/').unwrap_or(path).split('/')
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn pin_status() -> Value {
            json!({
                "requestid": "UniqueIdOfPinRequest",
                "status": "queued",
                "created": "2020-07-27T17:32:28.276Z",
                "pin": {
                    "cid": "QmCIDToBePinned",
                    "name": "PreciousData.pdf",
                    "origins": ["/ip4/203.0.113.142/tcp/4001/p2p/QmSourcePeerId"],
                    "meta": {"app_id": "99986338-1113-4706-8302-4420da6158aa"}
                },
                "delegates": ["/ip4/203.0.113.1/tcp/4001/p2p/QmServicePeerId"],
                "info": {"status_details": "Queue position: 7 of 9"}
            })
        }

        fn with(mut value: Value, pointer: &str, replacement: Value) -> Value {
            *value.pointer_mut(pointer).expect("pointer exists") = replacement;
            value
        }

        fn assert_rejected(name: &str, instance: &Value, expected: &str) {
            let errors = get().schema_errors(name, instance);
            assert!(
                errors.iter().any(|e| e.contains(expected)),
                "{name} should be rejected with {expected:?}: {errors:?}\n{instance}"
            );
        }

        #[test]
        fn accepts_the_spec_examples() {
            let spec = get();
            assert_eq!(
                spec.schema_errors("PinStatus", &pin_status()),
                Vec::<String>::new()
            );
            let minimal = json!({
                "requestid": "r", "status": "pinned", "created": "2020-07-27T17:32:28Z",
                "pin": {"cid": "QmCIDToBePinned"}, "delegates": ["/ip4/127.0.0.1/tcp/4001"]
            });
            assert_eq!(
                spec.schema_errors("PinStatus", &minimal),
                Vec::<String>::new()
            );
            let results = json!({"count": 2, "results": [pin_status(), minimal]});
            assert_eq!(
                spec.schema_errors("PinResults", &results),
                Vec::<String>::new()
            );
            let empty = json!({"count": 0, "results": []});
            assert_eq!(
                spec.schema_errors("PinResults", &empty),
                Vec::<String>::new()
            );
            let failure = json!({"error": {"reason": "NOT_FOUND", "details": "no such pin"}});
            assert_eq!(
                spec.schema_errors("Failure", &failure),
                Vec::<String>::new()
            );
            let reason_only = json!({"error": {"reason": "BAD_REQUEST"}});
            assert_eq!(
                spec.schema_errors("Failure", &reason_only),
                Vec::<String>::new()
            );
        }

        #[test]
        fn rejects_pin_status_violations() {
            let many: Vec<String> = (0..21).map(|i| format!("/ip4/10.0.0.{i}/tcp/1")).collect();
            let twice = json!(["/ip4/1.2.3.4/tcp/1", "/ip4/1.2.3.4/tcp/1"]);
            // (field, bad value, the schema keyword that rejects it)
            let cases = [
                ("/delegates", json!([]), "/delegates/$ref/minItems"),
                ("/delegates", json!(many), "/delegates/$ref/maxItems"),
                (
                    "/delegates",
                    json!(["/a", "/a"]),
                    "/delegates/$ref/uniqueItems",
                ),
                ("/status", json!("done"), "/status/$ref/enum"),
                ("/created", json!("yesterday"), "/created/format"),
                ("/created", json!("2020-07-27 17:32:28"), "/created/format"),
                ("/requestid", json!(7), "/requestid/type"),
                ("/pin/name", json!("n".repeat(256)), "/name/maxLength"),
                ("/pin/origins", twice, "/origins/$ref/uniqueItems"),
                (
                    "/pin/meta",
                    json!({"k": 1}),
                    "/meta/$ref/additionalProperties/type",
                ),
                (
                    "/info",
                    json!({"k": null}),
                    "/info/$ref/additionalProperties/type",
                ),
                ("/pin", json!({"name": "no cid"}), "/pin/$ref/required"),
            ];
            for (pointer, value, keyword) in cases {
                assert_rejected("PinStatus", &with(pin_status(), pointer, value), keyword);
            }
            let mut no_delegates = pin_status();
            no_delegates.as_object_mut().unwrap().remove("delegates");
            assert_rejected("PinStatus", &no_delegates, "\"delegates\" is a required");

            // Through PinResults' `$ref` too; `count` is an int32 >= 0.
            let bad = with(pin_status(), "/status", json!("done"));
            let results = json!({"count": 1, "results": [bad]});
            assert_rejected(
                "PinResults",
                &results,
                "/items/$ref/properties/status/$ref/enum",
            );
            let results = json!({"count": -1, "results": []});
            assert_rejected("PinResults", &results, "/count/minimum");
            let results = json!({"count": 1u64 << 31, "results": []});
            assert_rejected("PinResults", &results, "/count/maximum");
            let results = json!({"count": 0});
            assert_rejected("PinResults", &results, "\"results\" is a required");
        }

        #[test]
        fn rejects_a_failure_without_reason() {
            let failure = json!({"error": {"details": "no reason"}});
            assert_rejected("Failure", &failure, "\"reason\" is a required property");
            assert_rejected(
                "Failure",
                &json!({"reason": "FLAT"}),
                "\"error\" is a required property",
            );
            assert_rejected("Failure", &json!({"error": {"reason": 404}}), "string");
        }

        #[test]
        fn routes_responses_by_operation_and_status() {
            let spec = get();
            let json = Some("application/json");
            let status = serde_json::to_vec(&pin_status()).unwrap();
            let empty_delegates =
                serde_json::to_vec(&with(pin_status(), "/delegates", json!([]))).unwrap();
            let failure = br#"{"error":{"reason":"NOT_FOUND"}}"#;
            assert!(spec.check("POST", "/pins", 202, json, &status).is_ok());
            assert!(spec.check("POST", "/pins/abc", 202, json, &status).is_ok());
            assert!(spec.check("GET", "/pins/abc", 200, json, &status).is_ok());
            assert!(spec
                .check("GET", "/pins/abc", 200, json, &empty_delegates)
                .is_err());
            assert!(
                spec.check("GET", "/pins", 200, json, &status).is_err(),
                "not PinResults"
            );
            assert!(spec.check("DELETE", "/pins/abc", 202, None, b"").is_ok());
            assert!(spec
                .check("DELETE", "/pins/abc", 202, json, &status)
                .is_err());
            assert!(spec.check("GET", "/pins/abc", 404, json, failure).is_ok());
            assert!(
                spec.check("GET", "/pins/abc", 422, json, failure).is_ok(),
                "4XX"
            );
            assert!(
                spec.check("POST", "/pins", 503, json, failure).is_ok(),
                "5XX"
            );
            assert!(spec
                .check("GET", "/pins/abc", 404, json, b"not found")
                .is_err());
            assert!(spec
                .check("GET", "/pins/abc", 404, json, br#"{"error":{}}"#)
                .is_err());
            assert!(spec
                .check("GET", "/pins/abc", 404, Some("text/plain"), failure)
                .is_err());
            assert!(
                spec.check("GET", "/pins", 201, json, &status).is_err(),
                "undocumented"
            );
            // Not in the spec: not checked.
            assert!(spec
                .check("GET", "/admin/dead-letters", 200, json, b"[]")
                .is_ok());
            assert!(spec.check("GET", "/health", 200, None, b"ok").is_ok());
            assert!(spec.check("GET", "/pins/a/history", 200, None, b"").is_ok());
            assert!(spec.check("PUT", "/pins", 405, None, b"").is_ok());
        }

        #[test]
        fn converts_openapi_keywords() {
            let nullable = to_json_schema(&json!({"type": "string", "nullable": true}), "t");
            let validator = jsonschema::draft4::new(&nullable).unwrap();
            assert!(validator.is_valid(&json!(null)) && validator.is_valid(&json!("x")));
            assert!(!validator.is_valid(&json!(1)));
            let plain = to_json_schema(&json!({"type": "string", "example": "x"}), "t");
            assert!(!jsonschema::draft4::new(&plain)
                .unwrap()
                .is_valid(&json!(null)));
            let reference = json!({"$ref": "#/components/schemas/Pin", "description": "ignored"});
            assert_eq!(
                to_json_schema(&reference, "t"),
                json!({"$ref": "#/components/schemas/Pin"})
            );
            let unknown = std::panic::catch_unwind(|| to_json_schema(&json!({"const": 1}), "t"));
            assert!(unknown.is_err(), "an unhandled keyword is refused");
            let external =
                std::panic::catch_unwind(|| to_json_schema(&json!({"$ref": "x.yaml#/A"}), "t"));
            assert!(external.is_err(), "a non-local $ref is refused");
        }
    }
}
