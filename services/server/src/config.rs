//! One typed configuration. Precedence: command-line flag > `PINHIVE_*` environment variable >
//! config file (`--config`, TOML) > built-in default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use pinhive_events::NodeDescriptor;
use serde::Deserialize;

#[derive(Args, Debug, Default, Clone)]
pub struct ServeArgs {
    /// TOML config file (keys as in `Config`, e.g. `listen = "0.0.0.0:8080"`).
    #[arg(long, env = "PINHIVE_CONFIG")]
    pub config: Option<PathBuf>,
    /// The log: `embedded` (default, under the data dir) or `kafka://host:9092[,host2:9092]`.
    #[arg(long, env = "PINHIVE_LOG_URL")]
    pub log: Option<String>,
    /// Kafka topic of pin events (created with `partitions` partitions if absent).
    #[arg(long, env = "PINHIVE_KAFKA_TOPIC")]
    pub kafka_topic: Option<String>,
    /// Kafka consumer group the instances share (empty: this instance runs every partition).
    #[arg(long, env = "PINHIVE_KAFKA_GROUP")]
    pub kafka_group: Option<String>,
    /// Kafka topic of S3 bucket notifications to ingest (empty: none).
    #[arg(long, env = "PINHIVE_S3_TOPIC")]
    pub s3_topic: Option<String>,
    /// Owner of pins created from S3 notifications.
    #[arg(long, env = "PINHIVE_S3_OWNER")]
    pub s3_owner: Option<String>,
    /// Kafka group session timeout: how soon a dead instance's partitions move.
    #[arg(long, env = "PINHIVE_KAFKA_SESSION_TIMEOUT_MS")]
    pub kafka_session_timeout_ms: Option<u64>,
    /// The store: `embedded` (default, under the data dir) or
    /// `scylla://host:9042[,host:9042]/keyspace` (shared by every instance).
    #[arg(long, env = "PINHIVE_STORE")]
    pub store: Option<String>,
    /// Apply pending CQL migrations at start (ScyllaDB store; `pinhive migrate` does it alone).
    #[arg(long, env = "PINHIVE_MIGRATE")]
    pub migrate: Option<bool>,
    /// Directory for the embedded log and store.
    #[arg(long, env = "PINHIVE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTP listen address.
    #[arg(long, env = "PINHIVE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Kubo RPC URL of an IPFS node, `[ID=]URL[#REGION]`; repeatable. Default:
    /// http://127.0.0.1:5001 when no node is configured anywhere.
    #[arg(long = "ipfs-node", env = "PINHIVE_IPFS_NODES", value_delimiter = ',')]
    pub ipfs_nodes: Vec<String>,
    /// PEM certificate chain of the HTTP API: with `--tls-key`, the API serves HTTPS only
    /// (plain HTTP is refused). Both files are read again on SIGHUP.
    #[arg(long, env = "PINHIVE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "PINHIVE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM file of CA certificates trusted for `https://` Kubo RPC URLs, besides the system's.
    #[arg(long, env = "PINHIVE_IPFS_CA_FILE")]
    pub ipfs_ca_file: Option<PathBuf>,
    /// TOML file of Kubo RPC credentials by node id (`node-id = "bearer:TOKEN"` or
    /// `"basic:USER:PASSWORD"`, `"*"` for every node without its own): Kubo's
    /// `API.Authorizations`. Read by this instance only; never logged or shown.
    #[arg(long, env = "PINHIVE_IPFS_AUTH_FILE")]
    pub ipfs_auth_file: Option<PathBuf>,
    /// Log partitions (fixed when the log is created).
    #[arg(long, env = "PINHIVE_PARTITIONS")]
    pub partitions: Option<u32>,
    #[arg(long, env = "PINHIVE_REPLICAS_MIN")]
    pub replicas_min: Option<u8>,
    #[arg(long, env = "PINHIVE_REPLICAS_MAX")]
    pub replicas_max: Option<u8>,
    /// Seconds a node searches for content in one pin attempt.
    #[arg(long, env = "PINHIVE_PIN_TIMEOUT_SECS")]
    pub pin_timeout_secs: Option<u64>,
    /// Attempts per pin/unpin before a replica is declared failed.
    #[arg(long, env = "PINHIVE_PIN_ATTEMPTS")]
    pub pin_attempts: Option<usize>,
    /// Seconds before a failed replica is retried the first time; doubled each further
    /// failure round.
    #[arg(long, env = "PINHIVE_PIN_RETRY_BASE_SECS")]
    pub pin_retry_base_secs: Option<u64>,
    /// The longest wait (seconds) between two retries of a failed replica.
    #[arg(long, env = "PINHIVE_PIN_RETRY_MAX_SECS")]
    pub pin_retry_max_secs: Option<u64>,
    /// Automatic retries of a failed replica before it stays `failed` (until `pins recover`;
    /// 0: never retried unasked).
    #[arg(long, env = "PINHIVE_PIN_RETRY_LIMIT")]
    pub pin_retry_limit: Option<u32>,
    /// Seconds between repair passes over CIDs with outstanding work.
    #[arg(long, env = "PINHIVE_REPAIR_INTERVAL_SECS")]
    pub repair_interval_secs: Option<u64>,
    /// Seconds between two expiry ticks of a partition: pins whose `meta.expires_at` is due
    /// are unpinned at most this late (0: expiry off).
    #[arg(long, env = "PINHIVE_EXPIRY_INTERVAL_SECS")]
    pub expiry_interval_secs: Option<u64>,
    /// Seconds a node may fail its health checks before it is `down` and its replicas are
    /// made again elsewhere (until then it is `degraded`: nothing moves).
    #[arg(long, env = "PINHIVE_NODE_GRACE_SECS")]
    pub node_grace_secs: Option<u64>,
    /// Seconds between two health checks of a node.
    #[arg(long, env = "PINHIVE_HEALTH_INTERVAL_SECS")]
    pub health_interval_secs: Option<u64>,
    /// Operator console: concurrent `/ws/dashboard` sessions (more are refused with 503).
    #[arg(long, env = "PINHIVE_DASHBOARD_MAX_SESSIONS")]
    pub dashboard_max_sessions: Option<usize>,
    /// Operator console: messages a session may fall behind before it is disconnected.
    #[arg(long, env = "PINHIVE_DASHBOARD_QUEUE")]
    pub dashboard_queue: Option<usize>,
    /// Operator console: seconds a session's socket may take to accept one message before
    /// the session is disconnected as too slow.
    #[arg(long, env = "PINHIVE_DASHBOARD_SEND_TIMEOUT_SECS")]
    pub dashboard_send_timeout_secs: Option<u64>,
    /// Operator console: seconds between two WebSocket pings of a session.
    #[arg(long, env = "PINHIVE_DASHBOARD_PING_SECS")]
    pub dashboard_ping_secs: Option<u64>,
    /// Replicas per second this instance may allocate to re-replicate a down node's CIDs or
    /// move a draining node's (0: no cap).
    #[arg(long, env = "PINHIVE_REREPLICATION_RATE")]
    pub rereplication_rate: Option<u32>,
    /// The same cap per destination node (0: no cap).
    #[arg(long, env = "PINHIVE_REREPLICATION_RATE_PER_NODE")]
    pub rereplication_rate_per_node: Option<u32>,
    /// RPCs in flight per IPFS node (its driver's slots, shared fairly between owners).
    #[arg(long, env = "PINHIVE_NODE_SLOTS")]
    pub node_slots: Option<usize>,
    /// Slots of a node kept for owners below their fair share, so a newcomer starts at once
    /// while another owner floods (default: a quarter of `node_slots`; 0: none — an owner
    /// alone may use every slot, a newcomer waits for the next slot that frees).
    #[arg(long, env = "PINHIVE_NODE_RESERVED_SLOTS")]
    pub node_reserved_slots: Option<usize>,
    /// Seconds between two anti-entropy rounds (each node's pins compared with pinhive's
    /// replicas; 0: off).
    #[arg(long, env = "PINHIVE_ANTI_ENTROPY_INTERVAL_SECS")]
    pub anti_entropy_interval_secs: Option<u64>,
    /// Point checks per second anti-entropy may make on this instance (0: no cap).
    #[arg(long, env = "PINHIVE_ANTI_ENTROPY_CHECKS_PER_SEC")]
    pub anti_entropy_checks_per_sec: Option<u32>,
    /// Unpin from a node the pins pinhive holds no replica of there (default: only report).
    #[arg(long, env = "PINHIVE_ANTI_ENTROPY_REMOVE_UNKNOWN")]
    pub anti_entropy_remove_unknown: Option<bool>,
    /// Pinned roots per node and anti-entropy pass read back with `block/stat` (0: none).
    #[arg(long, env = "PINHIVE_ANTI_ENTROPY_INTEGRITY_SAMPLES")]
    pub anti_entropy_integrity_samples: Option<usize>,
    /// Seconds consumed log segments are kept before deletion.
    #[arg(long, env = "PINHIVE_LOG_RETENTION_SECS")]
    pub log_retention_secs: Option<u64>,
    /// Seconds pin history (the journal) and dead letters are kept.
    #[arg(long, env = "PINHIVE_HISTORY_RETENTION_SECS")]
    pub history_retention_secs: Option<u64>,
    /// `text` or `json`.
    #[arg(long, env = "PINHIVE_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// OTLP collector for traces, e.g. http://jaeger:4317 (gRPC; set
    /// OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf for OTLP/HTTP). Default: the standard
    /// OTEL_EXPORTER_OTLP_ENDPOINT if set, else traces are not exported.
    #[arg(long, env = "PINHIVE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Fraction of new traces sampled (parent-based: a sampled parent is always followed).
    #[arg(long, env = "PINHIVE_TRACE_SAMPLE_RATIO")]
    pub trace_sample_ratio: Option<f64>,
    /// Let IPFS nodes dial loopback/private/link-local origins of pin requests (a private
    /// cluster whose content providers share its network). Default: public origins only.
    #[arg(long, env = "PINHIVE_DIAL_PRIVATE_ORIGINS")]
    pub dial_private_origins: Option<bool>,
    /// Bytes of CID states cached in memory, shared by every shard.
    #[arg(long, env = "PINHIVE_CACHE_BYTES")]
    pub cache_bytes: Option<u64>,
    /// Bytes of the embedded store's block cache.
    #[arg(long, env = "PINHIVE_STORE_CACHE_BYTES")]
    pub store_cache_bytes: Option<u64>,
    /// Bytes of each embedded store table's write buffer (memtable).
    #[arg(long, env = "PINHIVE_STORE_MEMTABLE_BYTES")]
    pub store_memtable_bytes: Option<u64>,
    /// Requests per second each API token may make (0: unlimited); over it, 429 with
    /// `Retry-After`.
    #[arg(long, env = "PINHIVE_RATE_LIMIT_PER_SEC")]
    pub rate_limit_per_sec: Option<u32>,
    /// Requests a token may make at once above its rate (the bucket size).
    #[arg(long, env = "PINHIVE_RATE_LIMIT_BURST")]
    pub rate_limit_burst: Option<u32>,
    /// Store reads of tokens not cached (an unknown token each time, or a known one every
    /// 500 ms) one client address may cause per second (0: unlimited); over it, 429 with
    /// `Retry-After` before any read.
    #[arg(long, env = "PINHIVE_TOKEN_LOOKUPS_PER_SEC")]
    pub token_lookups_per_sec: Option<u32>,
    /// Most pins one owner may hold (0: unlimited); over it, `POST /pins` is 403
    /// `PIN_QUOTA_EXCEEDED` and a Kafka/S3 request a dead letter.
    #[arg(long, env = "PINHIVE_QUOTA_MAX_PINS")]
    pub quota_max_pins: Option<u64>,
    /// Most pins one owner may have queued or pinning (0: unlimited); over it, `POST /pins`
    /// is 429 `IN_FLIGHT_QUOTA_EXCEEDED` with `Retry-After` and a Kafka/S3 request a dead
    /// letter.
    #[arg(long, env = "PINHIVE_QUOTA_MAX_IN_FLIGHT")]
    pub quota_max_in_flight: Option<u64>,
    /// Benchmarks only: replace every IPFS node by N in-process simulated nodes.
    #[arg(long, hide = true, default_value_t = 0)]
    pub ipfs_simulated: usize,
}

/// The effective configuration (also the config file format).
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub log: String,
    pub kafka_topic: String,
    pub kafka_group: String,
    pub kafka_session_timeout_ms: u64,
    pub s3_topic: String,
    pub s3_owner: String,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub ipfs_nodes: Vec<String>,
    /// `[ipfs_auth]`: Kubo RPC credentials by node id (see `ServeArgs::ipfs_auth_file`).
    pub ipfs_auth: Secrets,
    /// A file of more of them (entries override `[ipfs_auth]`'s).
    pub ipfs_auth_file: Option<PathBuf>,
    /// CA certificates (PEM) trusted for `https://` Kubo nodes besides the system's.
    pub ipfs_ca_file: Option<PathBuf>,
    /// TLS of the HTTP API: certificate chain and key (PEM); both or neither.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub partitions: u32,
    pub replicas_min: u8,
    pub replicas_max: u8,
    pub pin_timeout_secs: u64,
    pub pin_attempts: usize,
    pub pin_retry_base_secs: u64,
    pub pin_retry_max_secs: u64,
    pub pin_retry_limit: u32,
    pub repair_interval_secs: u64,
    pub expiry_interval_secs: u64,
    pub node_grace_secs: u64,
    pub health_interval_secs: u64,
    pub dashboard_max_sessions: usize,
    pub dashboard_queue: usize,
    pub dashboard_send_timeout_secs: u64,
    pub dashboard_ping_secs: u64,
    pub rereplication_rate: u32,
    pub rereplication_rate_per_node: u32,
    pub node_slots: usize,
    /// `None`: a quarter of `node_slots`.
    pub node_reserved_slots: Option<usize>,
    pub anti_entropy_interval_secs: u64,
    pub anti_entropy_checks_per_sec: u32,
    pub anti_entropy_remove_unknown: bool,
    pub anti_entropy_integrity_samples: usize,
    pub log_retention_secs: u64,
    pub history_retention_secs: u64,
    pub log_format: String,
    pub otlp_endpoint: Option<String>,
    pub trace_sample_ratio: f64,
    pub dial_private_origins: bool,
    pub cache_bytes: u64,
    pub store_cache_bytes: u64,
    pub store_memtable_bytes: u64,
    /// `embedded` or `scylla://host:9042[,host:9042]/keyspace`.
    pub store: String,
    /// Apply pending CQL migrations at start.
    pub migrate: bool,
    /// Keyspace replication the migrations create: `simple:N`, `network:N` (every
    /// datacenter) or `network:DC=N,DC=N`. Default `network:3` (production).
    pub store_replication: String,
    /// The `[analytics]` section (docs/analytics.md).
    pub analytics: pinhive_analytics::AnalyticsConfig,
    pub rate_limit_per_sec: u32,
    pub rate_limit_burst: u32,
    pub token_lookups_per_sec: u32,
    pub quota_max_pins: u64,
    pub quota_max_in_flight: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            log: "embedded".into(),
            kafka_topic: "pinhive-events".into(),
            kafka_group: "pinhive".into(),
            kafka_session_timeout_ms: 10_000,
            s3_topic: String::new(),
            s3_owner: "s3".into(),
            data_dir: PathBuf::from("pinhive-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            ipfs_nodes: Vec::new(),
            ipfs_auth: Secrets::default(),
            ipfs_auth_file: None,
            ipfs_ca_file: None,
            tls_cert: None,
            tls_key: None,
            partitions: 16,
            replicas_min: 1,
            replicas_max: 3,
            pin_timeout_secs: 60,
            pin_attempts: 4,
            pin_retry_base_secs: 30,
            pin_retry_max_secs: 3600,
            pin_retry_limit: 5,
            repair_interval_secs: 10,
            expiry_interval_secs: 5,
            node_grace_secs: 60,
            health_interval_secs: 5,
            dashboard_max_sessions: 16,
            dashboard_queue: 256,
            dashboard_send_timeout_secs: 10,
            dashboard_ping_secs: 15,
            rereplication_rate: 100,
            rereplication_rate_per_node: 20,
            node_slots: 32,
            node_reserved_slots: None,
            anti_entropy_interval_secs: 3600,
            anti_entropy_checks_per_sec: 100,
            anti_entropy_remove_unknown: false,
            anti_entropy_integrity_samples: 8,
            log_retention_secs: 24 * 3600,
            history_retention_secs: 7 * 24 * 3600,
            log_format: "text".into(),
            otlp_endpoint: None,
            trace_sample_ratio: 1.0,
            dial_private_origins: false,
            cache_bytes: 128 << 20,
            store_cache_bytes: 128 << 20,
            store_memtable_bytes: 4 << 20,
            store: "embedded".into(),
            migrate: false,
            store_replication: "network:3".into(),
            analytics: pinhive_analytics::AnalyticsConfig::default(),
            rate_limit_per_sec: 1000,
            rate_limit_burst: 2000,
            token_lookups_per_sec: 100,
            quota_max_pins: 0,
            quota_max_in_flight: 0,
        }
    }
}

impl Config {
    /// The operator console's limits.
    pub fn dashboard(&self) -> pinhive_api::dashboard::DashboardConfig {
        pinhive_api::dashboard::DashboardConfig {
            max_sessions: self.dashboard_max_sessions,
            queue: self.dashboard_queue,
            send_timeout: Duration::from_secs(self.dashboard_send_timeout_secs),
            ping_interval: Duration::from_secs(self.dashboard_ping_secs),
            instance: self.listen.to_string(),
        }
    }

    /// The embedded store's memory budget.
    pub fn store_memory(&self) -> pinhive_store::embedded::StoreMemory {
        pinhive_store::embedded::StoreMemory {
            cache_bytes: self.store_cache_bytes,
            memtable_bytes: self.store_memtable_bytes,
            ..Default::default()
        }
    }

    pub fn load(args: &ServeArgs) -> anyhow::Result<Self> {
        let mut config = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => Config::default(),
        };
        macro_rules! flag {
            ($field:ident) => {
                if let Some(value) = args.$field.clone() {
                    config.$field = value;
                }
            };
        }
        flag!(log);
        flag!(kafka_topic);
        flag!(kafka_group);
        flag!(kafka_session_timeout_ms);
        flag!(s3_topic);
        flag!(s3_owner);
        flag!(data_dir);
        flag!(listen);
        flag!(partitions);
        flag!(replicas_min);
        flag!(replicas_max);
        flag!(pin_timeout_secs);
        flag!(pin_attempts);
        flag!(pin_retry_base_secs);
        flag!(pin_retry_max_secs);
        flag!(pin_retry_limit);
        flag!(repair_interval_secs);
        flag!(expiry_interval_secs);
        flag!(node_grace_secs);
        flag!(health_interval_secs);
        flag!(dashboard_max_sessions);
        flag!(dashboard_queue);
        flag!(dashboard_send_timeout_secs);
        flag!(dashboard_ping_secs);
        flag!(rereplication_rate);
        flag!(rereplication_rate_per_node);
        flag!(node_slots);
        if let Some(reserved) = args.node_reserved_slots {
            config.node_reserved_slots = Some(reserved);
        }
        flag!(anti_entropy_interval_secs);
        flag!(anti_entropy_checks_per_sec);
        flag!(anti_entropy_remove_unknown);
        flag!(anti_entropy_integrity_samples);
        flag!(log_retention_secs);
        flag!(history_retention_secs);
        flag!(log_format);
        flag!(trace_sample_ratio);
        flag!(dial_private_origins);
        flag!(cache_bytes);
        flag!(store_cache_bytes);
        flag!(store_memtable_bytes);
        flag!(store);
        flag!(migrate);
        flag!(rate_limit_per_sec);
        flag!(rate_limit_burst);
        flag!(token_lookups_per_sec);
        flag!(quota_max_pins);
        flag!(quota_max_in_flight);
        for (flag, field) in [
            (&args.ipfs_auth_file, &mut config.ipfs_auth_file),
            (&args.ipfs_ca_file, &mut config.ipfs_ca_file),
            (&args.tls_cert, &mut config.tls_cert),
            (&args.tls_key, &mut config.tls_key),
        ] {
            if flag.is_some() {
                *field = flag.clone();
            }
        }
        if args.otlp_endpoint.is_some() {
            config.otlp_endpoint = args.otlp_endpoint.clone();
        }
        if !args.ipfs_nodes.is_empty() {
            config.ipfs_nodes = args.ipfs_nodes.clone();
        }
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if !(1..=4096).contains(&self.partitions) {
            bail!(
                "partitions must be between 1 and 4096, not {}",
                self.partitions
            );
        }
        if let Err(rejection) =
            pinhive_domain::command::ReplicaBounds::new(self.replicas_min, self.replicas_max)
        {
            bail!("{rejection}");
        }
        if self.pin_attempts == 0 {
            bail!("pin_attempts must be at least 1");
        }
        if self.node_slots == 0 {
            bail!("node_slots must be at least 1");
        }
        if let Some(reserved) = self.node_reserved_slots {
            if reserved >= self.node_slots {
                bail!(
                    "node_reserved_slots ({reserved}) must be below node_slots ({}): some slots \
                     must be open to every owner",
                    self.node_slots
                );
            }
        }
        if self.pin_retry_base_secs == 0 || self.pin_retry_max_secs < self.pin_retry_base_secs {
            bail!(
                "pin_retry_base_secs must be at least 1 and pin_retry_max_secs at least \
                 pin_retry_base_secs (not {} and {})",
                self.pin_retry_base_secs,
                self.pin_retry_max_secs
            );
        }
        if self.health_interval_secs == 0 {
            bail!("health_interval_secs must be at least 1");
        }
        if self.dashboard_queue == 0
            || self.dashboard_send_timeout_secs == 0
            || self.dashboard_ping_secs == 0
        {
            bail!(
                "dashboard_queue, dashboard_send_timeout_secs and dashboard_ping_secs must be \
                 at least 1 (dashboard_max_sessions = 0 turns the console's live feed off)"
            );
        }
        if self.cache_bytes < 1 << 20 || self.store_cache_bytes < 1 << 20 {
            bail!("cache_bytes and store_cache_bytes must be at least 1 MiB (1048576)");
        }
        if self.store_memtable_bytes < 1 << 20 {
            bail!("store_memtable_bytes must be at least 1 MiB (1048576)");
        }
        if !(0.0..=1.0).contains(&self.trace_sample_ratio) {
            bail!(
                "trace_sample_ratio must be between 0 and 1, not {}",
                self.trace_sample_ratio
            );
        }
        if self.log != "embedded" && pinhive_log::kafka::parse_kafka_url(&self.log).is_none() {
            bail!(
                "log must be `embedded` or kafka://HOST:PORT[,HOST:PORT], not {:?}",
                self.log
            );
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            bail!("log_format must be text or json, not {:?}", self.log_format);
        }
        for node in &self.ipfs_nodes {
            parse_node(node)?;
        }
        self.node_auth()?;
        self.ipfs_roots()?;
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            bail!(
                "tls_cert and tls_key go together: give both (--tls-cert and --tls-key) or neither"
            );
        }
        self.analytics.validate().map_err(anyhow::Error::msg)?;
        if self.store != "embedded" {
            pinhive_store_scylla::ScyllaUri::parse(&self.store).map_err(|e| {
                anyhow::anyhow!(
                    "store must be `embedded` or scylla://HOST:PORT[,HOST:PORT]/KEYSPACE: {e}"
                )
            })?;
        }
        parse_replication(&self.store_replication)?;
        if self.rate_limit_per_sec > 0 && self.rate_limit_burst == 0 {
            bail!("rate_limit_burst must be at least 1 while rate_limit_per_sec is set");
        }
        Ok(())
    }

    /// The per-owner quota (0 in the config: unlimited).
    pub fn quota(&self) -> pinhive_domain::quota::Quota {
        pinhive_domain::quota::Quota {
            max_pins: (self.quota_max_pins > 0).then_some(self.quota_max_pins),
            max_in_flight: (self.quota_max_in_flight > 0).then_some(self.quota_max_in_flight),
        }
    }

    /// Token lookups per client address: the rate, and twice it at once.
    pub fn token_lookup_limit(&self) -> Option<pinhive_api::ratelimit::RateLimit> {
        (self.token_lookups_per_sec > 0).then_some(pinhive_api::ratelimit::RateLimit {
            per_second: self.token_lookups_per_sec,
            burst: self.token_lookups_per_sec.saturating_mul(2),
        })
    }

    /// The request rate limit per token (`None`: unlimited).
    pub fn rate_limit(&self) -> Option<pinhive_api::ratelimit::RateLimit> {
        (self.rate_limit_per_sec > 0).then_some(pinhive_api::ratelimit::RateLimit {
            per_second: self.rate_limit_per_sec,
            burst: self.rate_limit_burst,
        })
    }

    /// The Kubo RPC credentials of this instance: `[ipfs_auth]`, then the auth file's entries,
    /// then user info found in a configured node URL (for a node without an entry). Never part
    /// of a node's descriptor: descriptors travel in control-log events.
    pub fn node_auth(&self) -> anyhow::Result<pinhive_ipfs::NodeAuth> {
        let mut secrets = self.ipfs_auth.0.clone();
        if let Some(path) = &self.ipfs_auth_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the IPFS auth file {}", path.display()))?;
            let file: BTreeMap<String, String> = toml::from_str(&text).map_err(|_| {
                anyhow::anyhow!(
                    "the IPFS auth file {} must be a TOML table of node-id = \"bearer:TOKEN\" \
                     or \"basic:USER:PASSWORD\"",
                    path.display()
                )
            })?;
            secrets.extend(file);
        }
        let mut auth = pinhive_ipfs::NodeAuth::parse(&secrets).map_err(anyhow::Error::msg)?;
        for text in &self.ipfs_nodes {
            let node = parse_node(text)?;
            let (_, from_url) = pinhive_ipfs::auth::split_credentials(node_url(text));
            if let Some(header) = from_url {
                auth.add_if_absent(&node.id, header);
            }
        }
        Ok(auth)
    }

    /// The extra CA certificates trusted for `https://` Kubo nodes (`ipfs_ca_file`).
    pub fn ipfs_roots(&self) -> anyhow::Result<Vec<reqwest::Certificate>> {
        let Some(path) = &self.ipfs_ca_file else {
            return Ok(Vec::new());
        };
        let pem = std::fs::read(path)
            .with_context(|| format!("reading the IPFS CA file {}", path.display()))?;
        let roots = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("parsing the IPFS CA file {}", path.display()))?;
        if roots.is_empty() {
            bail!(
                "the IPFS CA file {} holds no PEM certificate",
                path.display()
            );
        }
        Ok(roots)
    }

    /// When failed replicas are retried.
    pub fn retry_policy(&self) -> pinhive_domain::RetryPolicy {
        pinhive_domain::RetryPolicy {
            base: Duration::from_secs(self.pin_retry_base_secs),
            cap: Duration::from_secs(self.pin_retry_max_secs),
            retries: self.pin_retry_limit,
        }
    }

    pub fn pin_timeout(&self) -> Duration {
        Duration::from_secs(self.pin_timeout_secs.max(1))
    }

    pub fn log_dir(&self) -> PathBuf {
        self.data_dir.join("log")
    }

    pub fn access_log_dir(&self) -> PathBuf {
        self.data_dir.join("access")
    }

    /// The embedded control log (node membership and states).
    pub fn control_log_dir(&self) -> PathBuf {
        self.data_dir.join("control")
    }

    /// The Kafka topic of the control log.
    pub fn control_topic(&self) -> String {
        format!("{}-control", self.kafka_topic)
    }

    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }
}

/// Parses `simple:N`, `network:N` or `network:DC=N[,DC=N]` (the keyspace replication of the
/// ScyllaDB store's migrations).
pub fn parse_replication(text: &str) -> anyhow::Result<pinhive_store_scylla::Replication> {
    use pinhive_store_scylla::Replication;
    let bad = || {
        anyhow::anyhow!(
            "store_replication must be simple:N, network:N or network:DC=N[,DC=N], not {text:?}"
        )
    };
    let (class, rest) = text.split_once(':').ok_or_else(bad)?;
    let factor = |n: &str| {
        n.trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(bad)
    };
    match class {
        "simple" => Ok(Replication::Simple {
            factor: factor(rest)?,
        }),
        "network" if !rest.contains('=') => Ok(Replication::NetworkTopology {
            factor: factor(rest)?,
            datacenters: Vec::new(),
        }),
        "network" => {
            let datacenters = rest
                .split(',')
                .map(|pair| {
                    let (dc, n) = pair.split_once('=').ok_or_else(bad)?;
                    Ok((dc.trim().to_string(), factor(n)?))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok(Replication::NetworkTopology {
                factor: 0,
                datacenters,
            })
        }
        _ => Err(bad()),
    }
}

/// Secrets of the config (`[ipfs_auth]`): `Debug` names the keys only.
#[derive(Deserialize, Clone, Default)]
#[serde(transparent)]
pub struct Secrets(pub BTreeMap<String, String>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// The `ID=` and `#REGION` parts of a node spec taken off: its URL as written.
fn node_spec(text: &str) -> (Option<&str>, &str, &str) {
    let (id, rest) = match text.split_once('=') {
        Some((id, rest)) if !id.contains("://") => (Some(id), rest),
        _ => (None, text),
    };
    let (url, region) = rest.split_once('#').unwrap_or((rest, ""));
    (id, url.trim().trim_end_matches('/'), region)
}

fn node_url(text: &str) -> &str {
    node_spec(text).1
}

/// Parses `[ID=]URL[#REGION]` into a node descriptor; the id defaults to the URL's host:port.
/// User info in the URL (`http://user:pass@host:5001`) is not part of the descriptor (which
/// travels in control-log events): [`Config::node_auth`] sends it as this instance's Basic
/// credential of the node.
pub fn parse_node(text: &str) -> anyhow::Result<NodeDescriptor> {
    let (id, url, region) = node_spec(text);
    let (url, _) = pinhive_ipfs::auth::split_credentials(url);
    let shown = pinhive_ipfs::auth::redact_url(node_url(text));
    let Some(host) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .filter(|h| !h.is_empty())
    else {
        bail!("IPFS node {shown:?} must be an http(s) Kubo RPC URL such as http://127.0.0.1:5001");
    };
    Ok(NodeDescriptor {
        id: id.map(str::to_string).unwrap_or_else(|| host.to_string()),
        rpc_url: url.clone(),
        region: region.to_string(),
        weight: 1,
    })
}

/// Creates the data directory if needed and checks it is writable, with a clear error.
pub fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let probe = dir.join(".write-probe");
    std::fs::write(&probe, b"ok")
        .with_context(|| format!("data directory {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_syntax() {
        let n = parse_node("http://127.0.0.1:5001/").unwrap();
        assert_eq!(
            (n.id.as_str(), n.rpc_url.as_str()),
            ("127.0.0.1:5001", "http://127.0.0.1:5001")
        );
        let n = parse_node("a=http://h:1#eu").unwrap();
        assert_eq!((n.id.as_str(), n.region.as_str()), ("a", "eu"));
        assert!(parse_node("127.0.0.1:5001").is_err());
        // Credentials leave the descriptor (it travels in control-log events).
        let n = parse_node("a=http://user:s3cret@h:1#eu").unwrap();
        assert_eq!(
            (n.id.as_str(), n.rpc_url.as_str(), n.region.as_str()),
            ("a", "http://h:1", "eu")
        );
        let error = parse_node("user:s3cret@h:1").unwrap_err().to_string();
        assert!(!error.contains("s3cret"), "{error}");
    }

    #[test]
    fn node_credentials_come_from_the_instance_config() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ipfs-auth.toml");
        std::fs::write(&file, "b = \"bearer:from-file\"\n\"*\" = \"basic:u:p\"\n").unwrap();
        let config = Config {
            ipfs_nodes: vec![
                "a=http://user:pw@h:1".into(),
                "b=http://h:2".into(),
                "c=http://h:3".into(),
            ],
            ipfs_auth: Secrets([("a".to_string(), "bearer:from-config".to_string())].into()),
            ipfs_auth_file: Some(file),
            ..Config::default()
        };
        let auth = config.node_auth().unwrap();
        // Explicit configuration wins over the URL's user info.
        assert_eq!(auth.for_node("a").unwrap(), "Bearer from-config");
        assert_eq!(auth.for_node("b").unwrap(), "Bearer from-file");
        assert_eq!(auth.for_node("c").unwrap(), "Basic dTpw");
        assert!(!format!("{config:?}").contains("from-config"));
        let bad = Config {
            ipfs_auth: Secrets([("a".to_string(), "hunter2".to_string())].into()),
            ..Config::default()
        };
        let error = bad.validate().unwrap_err().to_string();
        assert!(
            error.contains("\"a\"") && !error.contains("hunter2"),
            "{error}"
        );
    }

    #[test]
    fn store_uri_and_replication_are_checked() {
        use pinhive_store_scylla::Replication;
        assert_eq!(
            parse_replication("simple:1").unwrap(),
            Replication::Simple { factor: 1 }
        );
        assert_eq!(
            parse_replication("network:3").unwrap(),
            Replication::NetworkTopology {
                factor: 3,
                datacenters: vec![]
            }
        );
        assert_eq!(
            parse_replication("network:eu=3,us=2").unwrap(),
            Replication::NetworkTopology {
                factor: 0,
                datacenters: vec![("eu".into(), 3), ("us".into(), 2)]
            }
        );
        for bad in ["simple", "simple:0", "network:eu", "mesh:3", "network:eu=x"] {
            assert!(parse_replication(bad).is_err(), "{bad}");
        }
        let config = Config {
            store: "scylla://10.0.0.1:9042,10.0.0.2:9042/pinhive".into(),
            ..Config::default()
        };
        config.validate().unwrap();
        let config = Config {
            store: "postgres://x".into(),
            ..Config::default()
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("scylla://"), "{error}");
    }

    #[test]
    fn analytics_section_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        let args = ServeArgs {
            config: Some(file.clone()),
            ..ServeArgs::default()
        };
        std::fs::write(
            &file,
            "[analytics]\nregions = [\"eu\", \"us\"]\nextra_budget_bytes = 1000\nepoch_secs = 5.0\n",
        )
        .unwrap();
        let config = Config::load(&args).unwrap();
        assert_eq!(config.analytics.regions, ["eu", "us"]);
        assert_eq!(config.analytics.extra_budget_bytes, 1000);
        assert_eq!(config.analytics.top_k, 10_000, "defaults fill the rest");
        for (bad, names) in [
            ("[analytics]\nrho_up = 0.4\n", "rho_down"),
            (
                "[analytics]\nfast_half_life_secs = 10.0\nslow_half_life_secs = 5.0\n",
                "fast_half_life_secs",
            ),
            ("[analytics]\nregions = [\"other\"]\n", "reserved"),
            ("[analytics]\nepoch_secs = -1.0\n", "epoch_secs"),
            ("[analytics]\nbudget = 1\n", "unknown field"),
        ] {
            std::fs::write(&file, bad).unwrap();
            let error = format!("{:#}", Config::load(&args).unwrap_err());
            assert!(error.contains(names), "{bad}: {error}");
        }
    }

    #[test]
    fn node_slots_and_their_reserve_shape_each_node_fair_queue() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        let args = ServeArgs {
            config: Some(file.clone()),
            ..ServeArgs::default()
        };
        std::fs::write(&file, "").unwrap();
        let limits = crate::serve::driver_config(&Config::load(&args).unwrap()).fair_limits();
        assert_eq!((limits.slots, limits.reserved), (32, 8), "defaults");
        // 0: work-conserving (an owner alone may use every slot).
        std::fs::write(&file, "node_slots = 16\nnode_reserved_slots = 0\n").unwrap();
        let limits = crate::serve::driver_config(&Config::load(&args).unwrap()).fair_limits();
        assert_eq!((limits.slots, limits.reserved), (16, 0));
        // Without a reserve setting, a quarter of the slots.
        std::fs::write(&file, "node_slots = 16\n").unwrap();
        let limits = crate::serve::driver_config(&Config::load(&args).unwrap()).fair_limits();
        assert_eq!((limits.slots, limits.reserved), (16, 4));
        let flagged = ServeArgs {
            node_reserved_slots: Some(16),
            ..args.clone()
        };
        let error = format!("{:#}", Config::load(&flagged).unwrap_err());
        assert!(
            error.contains("node_reserved_slots (16) must be below node_slots (16)"),
            "{error}"
        );
        std::fs::write(&file, "node_slots = 0\n").unwrap();
        let error = format!("{:#}", Config::load(&args).unwrap_err());
        assert!(error.contains("node_slots must be at least 1"), "{error}");
    }

    #[test]
    fn flags_override_file_and_unknown_keys_fail() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "partitions = 8\nreplicas_max = 5\n").unwrap();
        let args = ServeArgs {
            config: Some(file.clone()),
            partitions: Some(4),
            ..ServeArgs::default()
        };
        let config = Config::load(&args).unwrap();
        assert_eq!((config.partitions, config.replicas_max), (4, 5));
        std::fs::write(&file, "partitoins = 8\n").unwrap();
        assert!(Config::load(&args).is_err());
        let bad = ServeArgs {
            replicas_min: Some(4),
            replicas_max: Some(2),
            ..ServeArgs::default()
        };
        assert!(Config::load(&bad).is_err());
    }
}
