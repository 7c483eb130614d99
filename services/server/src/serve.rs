//! `pinhive serve` and `pinhive check`: wiring of log, store, orchestrator, node drivers and
//! the HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::{App, HttpServer};
use anyhow::Context;
use pinhive_api::{ApiConfig, AppState};
use pinhive_events::NodeDescriptor;
use pinhive_ipfs::{IpfsApi, KuboClient, NodeDriver, NodeDriverConfig, NodeRegistry, StopDriver};
use pinhive_log::kafka_group::GroupMembership;
use pinhive_log::{EmbeddedLog, EmbeddedLogConfig, KafkaLog, KafkaLogConfig, Log};
use pinhive_orchestrator::consumer::LogSink;
use pinhive_orchestrator::consumer::{Membership, OffsetCommitter};
use pinhive_orchestrator::control::{ControlConfig, ControlPlane, DriverControl};
use pinhive_orchestrator::{Orchestrator, OrchestratorConfig};
use pinhive_store::{EmbeddedStore, Store, StoreError};

use crate::config::{parse_node, prepare_data_dir, Config, ServeArgs};

/// Builds the IPFS client of a node (Kubo RPC in production, simulated in benchmarks).
pub type IpfsFactory =
    Arc<dyn Fn(&NodeDescriptor) -> anyhow::Result<Arc<dyn IpfsApi>> + Send + Sync>;

/// Kubo RPC clients, each sending this instance's credential of its node (`auth`), if any,
/// and trusting `roots` besides the system's CAs for `https://` nodes.
pub fn kubo_factory(
    request_timeout: Duration,
    auth: pinhive_ipfs::NodeAuth,
    roots: Vec<reqwest::Certificate>,
) -> IpfsFactory {
    Arc::new(move |node: &NodeDescriptor| {
        let client = KuboClient::with_options(
            &node.rpc_url,
            request_timeout,
            auth.for_node(&node.id),
            &roots,
        )?;
        Ok(Arc::new(client) as Arc<dyn IpfsApi>)
    })
}

/// Starts and stops node drivers on their own arbiter (thread).
struct DriverManager {
    arbiter: ArbiterHandle,
    registry: NodeRegistry,
    sink: Arc<LogSink>,
    config: NodeDriverConfig,
    factory: IpfsFactory,
}

impl DriverControl for DriverManager {
    fn start(&self, node: NodeDescriptor) -> Result<(), String> {
        if let Some(existing) = self.registry.remove(&node.id) {
            existing.driver.do_send(StopDriver);
        }
        let api = (self.factory)(&node).map_err(|e| e.to_string())?;
        let (registry, sink, config) = (
            self.registry.clone(),
            self.sink.clone(),
            self.config.clone(),
        );
        let spawned = self.arbiter.spawn_fn(move || {
            NodeDriver::new(node, api, sink, registry, config).spawn();
        });
        if spawned {
            Ok(())
        } else {
            Err("the node driver arbiter is stopped".into())
        }
    }

    fn stop(&self, id: &str) {
        if let Some(entry) = self.registry.remove(id) {
            entry.driver.do_send(StopDriver);
        }
    }
}

/// A running service (inside an actix System).
pub struct Service {
    pub addr: SocketAddr,
    /// `https` when the API serves TLS (`tls_cert`/`tls_key`), else `http`.
    pub scheme: &'static str,
    pub server: actix_web::dev::Server,
    pub orchestrator: Arc<Orchestrator>,
    pub log: Arc<dyn Log>,
    pub store: Arc<dyn Store>,
    pub registry: NodeRegistry,
    /// Consumer-group membership (Kafka log with a group): leave the group after shutdown.
    pub group: Option<Arc<GroupMembership>>,
    /// The analytics actors (None when `[analytics] enabled = false`).
    pub analytics: Option<Arc<pinhive_analytics::Analytics>>,
    /// The access topic's consumer-group membership (Kafka with a group).
    pub analytics_group: Option<Arc<GroupMembership>>,
    /// Node membership and states (the control log).
    pub control: Arc<ControlPlane>,
    /// The operator console's hub.
    pub dashboard: Arc<pinhive_api::dashboard::Dashboard>,
}

pub fn driver_config(config: &Config) -> NodeDriverConfig {
    NodeDriverConfig {
        pin_timeout: config.pin_timeout(),
        attempts: config.pin_attempts,
        health_interval: Duration::from_secs(config.health_interval_secs),
        concurrency: config.node_slots,
        reserved_slots: config.node_reserved_slots,
        ..NodeDriverConfig::default()
    }
}

/// The control topic is kept forever (it is the node membership); other topics take the
/// broker's retention.
fn retention_ms(topic: &str, config: &Config) -> Option<i64> {
    (topic == config.control_topic()).then_some(-1)
}

/// Opens a log of `partitions` partitions: the Kafka `topic` when the configured log is Kafka,
/// else an embedded log in `dir` (the pin log and the access log both).
async fn open_log(
    config: &Config,
    topic: &str,
    partitions: u32,
    dir: &std::path::Path,
) -> anyhow::Result<Arc<dyn Log>> {
    if let Some(brokers) = pinhive_log::kafka::parse_kafka_url(&config.log) {
        let log = KafkaLog::open(KafkaLogConfig {
            brokers: brokers.clone(),
            topic: topic.to_string(),
            partitions,
            replication: 1,
            retention_ms: retention_ms(topic, config),
        })
        .await
        .with_context(|| format!("opening topic {topic} on Kafka at {brokers}"))?;
        tracing::info!(brokers = %brokers, topic, partitions = log.partition_count(), "using a Kafka log");
        return Ok(Arc::new(log));
    }
    let log = EmbeddedLog::open(
        dir,
        EmbeddedLogConfig {
            partitions,
            ..EmbeddedLogConfig::default()
        },
    )
    .with_context(|| format!("opening the log in {}", dir.display()))?;
    Ok(Arc::new(log))
}

/// Opens the configured store: the embedded one under the data dir, or ScyllaDB (migrated
/// first with `--migrate`). The driver connects from a blocking thread.
async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    if config.store == "embedded" {
        let store = match EmbeddedStore::open_with(&config.store_dir(), config.store_memory()) {
            Err(StoreError::Locked { path }) => {
                anyhow::bail!("{path} is in use by another pinhive process")
            }
            other => Arc::new(other.context("opening the store")?),
        };
        // Once per data directory: the indexes an earlier release did not write.
        let partitions = config.partitions;
        let upgraded = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || {
                pinhive_orchestrator::backfill::backfill_indexes(&store, partitions)
            })
            .await?
            .context("backfilling the node and expiry indexes")?
        };
        if let Some(done) = upgraded.filter(|done| done.cid_states + done.pins > 0) {
            tracing::info!(
                cid_states = done.cid_states,
                node_entries = done.node_entries,
                pins = done.pins,
                expiry_entries = done.expiry_entries,
                "backfilled the node and expiry indexes of an earlier release's data"
            );
        }
        return Ok(store);
    }
    let (uri, migrate) = (config.store.clone(), config.migrate);
    let replication = crate::config::parse_replication(&config.store_replication)?;
    tokio::task::spawn_blocking(move || -> anyhow::Result<Arc<dyn Store>> {
        if migrate {
            let applied = pinhive_store_scylla::migrate(&uri, &replication)
                .with_context(|| format!("migrating the store at {uri}"))?;
            tracing::info!(?applied, "store migrations applied");
        }
        let store = pinhive_store_scylla::ScyllaStore::open(&uri)
            .with_context(|| format!("opening the store at {uri} (migrated? `pinhive migrate`)"))?;
        tracing::info!(store = %uri, "using the ScyllaDB store");
        Ok(Arc::new(store))
    })
    .await
    .context("opening the store")?
}

/// `pinhive migrate`: applies the pending CQL migrations of the configured ScyllaDB store.
pub fn migrate(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(&args)?;
    if config.store == "embedded" {
        anyhow::bail!("pinhive migrate needs --store scylla://HOST:PORT/KEYSPACE (the embedded store needs no migration)");
    }
    let replication = crate::config::parse_replication(&config.store_replication)?;
    let applied = pinhive_store_scylla::migrate(&config.store, &replication)
        .with_context(|| format!("migrating the store at {}", config.store))?;
    if applied.is_empty() {
        println!("store {}: up to date", config.store);
    } else {
        println!("store {}: applied migrations {applied:?}", config.store);
    }
    Ok(())
}

/// Opens the access log (embedded under the data dir, or the Kafka access topic) and starts the
/// analytics actors: every partition, or those the `{group}-analytics` consumer group assigns.
async fn start_analytics(
    config: &Config,
    pin_log: Arc<dyn Log>,
    store: Arc<dyn Store>,
    registry: &NodeRegistry,
    nodes: &[NodeDescriptor],
) -> anyhow::Result<(
    Option<Arc<pinhive_analytics::Analytics>>,
    Option<Arc<GroupMembership>>,
)> {
    let settings = &config.analytics;
    if !settings.enabled {
        return Ok((None, None));
    }
    let mut regions = settings.regions.clone();
    if regions.is_empty() {
        regions = nodes
            .iter()
            .map(|n| n.region.clone())
            .filter(|r| !r.is_empty())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
    }
    // Regions taken from the nodes must pass the tracker's checks too (e.g. "other" is
    // reserved): a clear error at start, not a failing actor.
    settings
        .tracker(&regions)
        .validate()
        .map_err(|e| anyhow::anyhow!("{e} (regions of the configured nodes: {regions:?})"))?;
    let access_log = open_log(
        config,
        &settings.access_topic,
        settings.access_partitions,
        &config.access_log_dir(),
    )
    .await?;
    // With Kafka and a group, this instance runs the access partitions its group assigns.
    let (changes, group) = match (
        pinhive_log::kafka::parse_kafka_url(&config.log),
        config.kafka_group.is_empty(),
    ) {
        (Some(brokers), false) => {
            let (group, changes) = GroupMembership::join(
                &brokers,
                &settings.access_topic,
                &format!("{}-analytics", config.kafka_group),
                Duration::from_millis(config.kafka_session_timeout_ms),
            )
            .context("joining the analytics consumer group")?;
            (Some(changes), Some(Arc::new(group)))
        }
        _ => (None, None),
    };
    let node_region: pinhive_analytics::NodeRegion = {
        let registry = registry.clone();
        Arc::new(move |id: &str| registry.get(id).map(|e| e.descriptor.region))
    };
    tracing::info!(
        ?regions,
        partitions = access_log.partition_count(),
        epoch_secs = settings.epoch_secs,
        "analytics actors starting"
    );
    let analytics = pinhive_analytics::Analytics::start(
        access_log,
        pin_log,
        store,
        node_region,
        settings.clone(),
        regions,
        changes,
    );
    Ok((Some(analytics), group))
}

/// Opens the data directory and starts everything. Must run inside an actix System.
pub async fn start(
    config: &Config,
    factory: IpfsFactory,
    drivers: NodeDriverConfig,
) -> anyhow::Result<Service> {
    prepare_data_dir(&config.data_dir)?;
    let log = open_log(
        config,
        &config.kafka_topic,
        config.partitions,
        &config.log_dir(),
    )
    .await?;
    let store = open_store(config).await?;
    let registry = NodeRegistry::default();
    // With Kafka and a group, this instance runs only the partitions the group assigns it.
    let (membership, committer, group) = match (
        pinhive_log::kafka::parse_kafka_url(&config.log),
        config.kafka_group.is_empty(),
    ) {
        (Some(brokers), false) => {
            let (group, changes) = GroupMembership::join(
                &brokers,
                &config.kafka_topic,
                &config.kafka_group,
                Duration::from_millis(config.kafka_session_timeout_ms),
            )
            .context("joining the Kafka consumer group")?;
            let group = Arc::new(group);
            let committer: OffsetCommitter = {
                let group = group.clone();
                Arc::new(move |partition, offset| group.commit(partition, offset))
            };
            tracing::info!(group = %config.kafka_group, "joined the Kafka consumer group");
            (Membership::Dynamic(changes), Some(committer), Some(group))
        }
        _ => (Membership::All, None, None),
    };
    // Node drivers get a thread of their own: IPFS calls, retries and health checks do not
    // queue behind the consumers and repair loops of the main arbiter.
    let manager = Arc::new(DriverManager {
        arbiter: Arbiter::new().handle(),
        registry: registry.clone(),
        sink: Arc::new(LogSink::new(log.clone())),
        config: drivers,
        factory,
    });
    // Nodes: the control log's (every instance's registrations), plus the configured ones and
    // those an earlier release's admin API stored, registered if the log does not know them.
    let mut configured: Vec<NodeDescriptor> = config
        .ipfs_nodes
        .iter()
        .map(|n| parse_node(n))
        .collect::<anyhow::Result<_>>()?;
    for node in store.list_nodes()? {
        if !configured.iter().any(|n| n.id == node.id) {
            configured.push(node);
        }
    }
    let control_log = open_log(
        config,
        &config.control_topic(),
        1,
        &config.control_log_dir(),
    )
    .await
    .context("opening the control log")?;
    // The leader of the control log (health transitions) is the instance running pin-log
    // partition 0: the only instance with the embedded log.
    let leader_of: Arc<std::sync::OnceLock<std::sync::Weak<Orchestrator>>> = Arc::default();
    let leader: pinhive_orchestrator::control::Leader = {
        let leader_of = leader_of.clone();
        Arc::new(move || {
            leader_of
                .get()
                .and_then(std::sync::Weak::upgrade)
                .is_some_and(|orchestrator| orchestrator.owns(0))
        })
    };
    let control = ControlPlane::start(
        control_log,
        registry.clone(),
        manager,
        configured,
        leader,
        ControlConfig {
            grace: Duration::from_secs(config.node_grace_secs),
            check_interval: Duration::from_secs(1),
        },
    )
    .await
    .context("reading the control log")?;
    if control.nodes().is_empty() {
        tracing::info!(
            "no IPFS node configured; using the local Kubo RPC at http://127.0.0.1:5001"
        );
        control
            .register(parse_node("http://127.0.0.1:5001")?)
            .await
            .context("registering the local IPFS node")?;
    }
    let configured_nodes: Vec<NodeDescriptor> = control
        .nodes()
        .into_iter()
        .map(|record| record.descriptor)
        .collect();
    let node_ids: Vec<String> = configured_nodes.iter().map(|n| n.id.clone()).collect();
    for node in &configured_nodes {
        // A URL an earlier release registered may still carry user info: never logged.
        let rpc_url = pinhive_ipfs::auth::redact_url(&node.rpc_url);
        tracing::info!(node = %node.id, rpc_url = %rpc_url, "ipfs node");
    }
    // The first responses name the nodes' addresses (`delegates`): give every node its first
    // health check before the shards start and before serving (bounded: an unreachable node
    // answers fast or times out).
    if !registry
        .wait_first_checks(&node_ids, Duration::from_secs(5))
        .await
    {
        tracing::info!("serving before every IPFS node answered its first health check");
    }
    // Shards start once the nodes are known (and, within the wait above, their addresses):
    // the first batches plan placements and compute the delegates pins show from the registry.
    let orchestrator = Orchestrator::start_with(
        log.clone(),
        store.clone(),
        registry.clone(),
        OrchestratorConfig {
            repair_interval: Duration::from_secs(config.repair_interval_secs.max(1)),
            expiry_interval: Duration::from_secs(config.expiry_interval_secs),
            retention: Duration::from_secs(config.log_retention_secs),
            journal_retention: Duration::from_secs(config.history_retention_secs),
            dead_letter_retention: Duration::from_secs(config.history_retention_secs),
            dial_private_origins: config.dial_private_origins,
            cache_bytes: config.cache_bytes,
            shared_store: config.store != "embedded",
            rereplication_rate: config.rereplication_rate,
            rereplication_rate_per_node: config.rereplication_rate_per_node,
            anti_entropy_interval: Duration::from_secs(config.anti_entropy_interval_secs),
            anti_entropy_checks_per_sec: config.anti_entropy_checks_per_sec,
            anti_entropy_remove_unknown: config.anti_entropy_remove_unknown,
            anti_entropy_integrity_samples: config.anti_entropy_integrity_samples,
            retry: config.retry_policy(),
            quota: config.quota(),
            ..OrchestratorConfig::default()
        },
        membership,
        committer,
    )?;
    let _ = leader_of.set(Arc::downgrade(&orchestrator));
    let (analytics, analytics_group) = start_analytics(
        config,
        log.clone(),
        store.clone(),
        &registry,
        &configured_nodes,
    )
    .await?;
    let mut state = AppState::new(
        log.clone(),
        store.clone(),
        orchestrator.clone(),
        control.clone(),
        ApiConfig {
            replicas_min: config.replicas_min,
            replicas_max: config.replicas_max,
            s3_owner: config.s3_owner.clone(),
            rate_limit: config.rate_limit(),
            token_lookup_limit: config.token_lookup_limit(),
            ..ApiConfig::default()
        },
    );
    if let Some(analytics) = &analytics {
        state = state.with_analytics(analytics.clone());
    }
    let state = actix_web::web::Data::new(state.with_dashboard(config.dashboard()));
    actix::spawn(pinhive_api::dashboard::run_hub(state.clone()));
    // Open consoles are closed at SIGTERM/SIGINT (the page reconnects to the next instance),
    // so the server's graceful stop does not wait for them.
    {
        let dashboard = state.dashboard.clone();
        actix::spawn(async move {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            dashboard.close_all();
        });
    }
    // S3 bucket notifications from Kafka (the webhook POST /admin/s3/events works in any mode).
    if let (Some(brokers), false) = (
        pinhive_log::kafka::parse_kafka_url(&config.log),
        config.s3_topic.is_empty(),
    ) {
        let subscription = pinhive_log::kafka::TopicSubscription::subscribe(
            &brokers,
            &config.s3_topic,
            &format!("{}-s3", config.kafka_group.trim()),
            1,
        )
        .await
        .with_context(|| format!("subscribing to the S3 topic {}", config.s3_topic))?;
        tracing::info!(topic = %config.s3_topic, "ingesting S3 bucket notifications");
        actix::spawn(
            state
                .s3
                .clone()
                .consume_kafka(subscription, config.s3_topic.clone()),
        );
    }
    let dashboard = state.dashboard.clone();
    let server = HttpServer::new(move || {
        App::new()
            // Inner: gives actix's own error responses a `Failure` body; metrics see the final
            // status either way.
            .wrap(actix_web::middleware::from_fn(
                pinhive_api::routing::failure_bodies,
            ))
            .wrap(actix_web::middleware::from_fn(pinhive_api::metrics::track))
            .configure(pinhive_api::configure(state.clone()))
    })
    .workers(2)
    .shutdown_timeout(15);
    // With a certificate, HTTPS only: a plain HTTP request on the port fails its handshake.
    let cert = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::ReloadingCert::load(cert, key)?),
        _ => None,
    };
    crate::tls::reload_on_sighup(cert.clone())?;
    let tls = match &cert {
        Some(cert) => Some(cert.server_config()?),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let server = match tls {
        Some(tls) => server.bind_rustls_0_23(config.listen, tls),
        None => server.bind(config.listen),
    }
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                anyhow::anyhow!("cannot listen on {}: the address is already in use (another pinhive?); choose one with --listen", config.listen)
            } else {
                anyhow::anyhow!("cannot listen on {}: {e}", config.listen)
            }
        })?;
    let addr = server.addrs().first().copied().unwrap_or(config.listen);
    let server = server.run();
    Ok(Service {
        addr,
        scheme,
        server,
        orchestrator,
        log,
        store,
        registry,
        group,
        analytics,
        analytics_group,
        control,
        dashboard,
    })
}

/// Logging, plus OTLP trace export when configured; the guard flushes spans when dropped.
pub fn init_telemetry(config: &Config) -> anyhow::Result<pinhive_telemetry::TelemetryGuard> {
    let guard = pinhive_telemetry::init(&pinhive_telemetry::TelemetryConfig {
        log_format: config.log_format.clone(),
        otlp_endpoint: config.otlp_endpoint.clone(),
        sample_ratio: config.trace_sample_ratio,
        service_name: "pinhive".into(),
        instance: config.listen.to_string(),
    })?;
    if guard.tracing_enabled() {
        tracing::info!(
            sample_ratio = config.trace_sample_ratio,
            "exporting traces over OTLP"
        );
    }
    Ok(guard)
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(&args)?;
    let telemetry = init_telemetry(&config)?;
    let system = actix_rt::System::new();
    let simulated = args.ipfs_simulated;
    let mut config = config;
    if simulated > 0 {
        config.ipfs_nodes = crate::simulated::simulated_node_specs(simulated);
    }
    system.block_on(async move {
        let (factory, drivers) = if simulated > 0 {
            tracing::warn!(nodes = simulated, "benchmark mode: IPFS nodes are simulated in process");
            (crate::simulated::simulated_factory(), crate::simulated::simulated_drivers())
        } else {
            let factory =
                kubo_factory(Duration::from_secs(30), config.node_auth()?, config.ipfs_roots()?);
            (factory, driver_config(&config))
        };
        let service = start(&config, factory, drivers).await?;
        tracing::info!(listen = %service.addr, scheme = service.scheme, data_dir = %config.data_dir.display(), partitions = config.partitions, "pinhive serving");
        // Returns after SIGTERM/SIGINT once in-flight requests drained.
        service.server.await.context("http server")?;
        tracing::info!("http server stopped; draining shards");
        service.orchestrator.shutdown(Duration::from_secs(15)).await;
        service.control.stop().await;
        if let Some(analytics) = &service.analytics {
            analytics.shutdown().await;
        }
        if let Some(group) = service.analytics_group {
            tokio::task::spawn_blocking(move || drop(group)).await.ok();
        }
        if let Some(group) = service.group {
            // Leaving the group lets the others take this instance's partitions at once.
            tokio::task::spawn_blocking(move || drop(group)).await.ok();
        }
        tracing::info!("shutdown complete");
        anyhow::Ok(())
    })?;
    drop(telemetry);
    Ok(())
}

/// `pinhive check`: data directory usable, every node reachable; prints a line per dependency.
pub fn check(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(&args)?;
    prepare_data_dir(&config.data_dir)?;
    println!("data dir {}: ok (writable)", config.data_dir.display());
    let mut failed = false;
    match pinhive_log::kafka::parse_kafka_url(&config.log) {
        Some(brokers) => {
            match pinhive_log::kafka_group::describe(
                &brokers,
                &config.kafka_topic,
                &config.kafka_group,
            ) {
                Ok(partitions) if !partitions.is_empty() => println!(
                    "log kafka://{brokers}: ok, topic {} has {} partitions",
                    config.kafka_topic,
                    partitions.len()
                ),
                Ok(_) => println!(
                    "log kafka://{brokers}: ok, topic {} does not exist yet (serve creates it)",
                    config.kafka_topic
                ),
                Err(error) => {
                    failed = true;
                    println!("log kafka://{brokers}: FAILED: {error}");
                }
            }
        }
        None => println!("log: embedded in {}", config.log_dir().display()),
    }
    if config.store != "embedded" {
        match pinhive_store_scylla::ScyllaStore::open(&config.store) {
            Ok(_) => println!(
                "store {}: ok (connected, statements prepared)",
                config.store
            ),
            Err(error) => {
                failed = true;
                println!("store {}: FAILED: {error}", config.store);
            }
        }
    } else {
        check_embedded_store(&config, &mut failed);
    }
    let nodes: Vec<NodeDescriptor> = if config.ipfs_nodes.is_empty() {
        vec![parse_node("http://127.0.0.1:5001")?]
    } else {
        config
            .ipfs_nodes
            .iter()
            .map(|n| parse_node(n))
            .collect::<anyhow::Result<_>>()?
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut reachable = 0;
    let auth = config.node_auth()?;
    let roots = config.ipfs_roots()?;
    for node in nodes {
        let client = KuboClient::with_options(
            &node.rpc_url,
            Duration::from_secs(5),
            auth.for_node(&node.id),
            &roots,
        )?;
        let url = pinhive_ipfs::auth::redact_url(&node.rpc_url);
        match runtime.block_on(async { client.id().await }) {
            Ok(identity) => {
                reachable += 1;
                println!(
                    "ipfs node {} ({url}): ok, peer {}",
                    node.id, identity.peer_id
                );
            }
            Err(error) => println!("ipfs node {} ({url}): FAILED: {error}", node.id),
        }
    }
    if reachable == 0 {
        anyhow::bail!("no IPFS node reachable");
    }
    if failed {
        anyhow::bail!("a dependency is not usable (see above)");
    }
    Ok(())
}

/// `pinhive check` of the embedded store: opens it (or finds it held by a running pinhive).
fn check_embedded_store(config: &Config, failed: &mut bool) {
    match EmbeddedStore::open_with(&config.store_dir(), config.store_memory()) {
        Ok(_) => println!("store {}: ok", config.store_dir().display()),
        Err(StoreError::Locked { .. }) => println!(
            "store {}: ok (held by a running pinhive)",
            config.store_dir().display()
        ),
        Err(error) => {
            *failed = true;
            println!("store {}: FAILED: {error}", config.store_dir().display());
        }
    }
}
