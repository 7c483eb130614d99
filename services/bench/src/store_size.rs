//! `pinhive bench store-size`: the bytes a pin costs in each CQL table of the ScyllaDB store.
//!
//! The service runs in process with `--store scylla://…` pointed at the CQL test server
//! (integration-tests/cql-server, in this process on its own runtime), the embedded log and a
//! simulated IPFS fleet whose nodes announce two multiaddrs each. N representative pins are
//! POSTed over HTTP and driven to `pinned`; then every table of the keyspace is read back
//! through the `scylla` driver (full scans, paged) and its rows, partitions and encoded bytes
//! are summed. The sizes are computed on the client side from the values the driver returns:
//! a cell's size is its CQL native-protocol value (text/blob: its bytes; bigint 8; tinyint 1),
//! partition-key and static cells are counted once per partition, clustering-key and regular
//! cells once per row. That is the logical data; ScyllaDB's SSTables add per-row and per-cell
//! metadata (timestamps, flags, index entries) and then compress, neither of which is measured.
//!
//! The same run counts the CQL statements the store executed (the test server's `stats()`),
//! split into writes and reads, per pin over its whole life (request, allocation, outcome).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use clap::Args;
use futures::stream::{self, StreamExt, TryStreamExt};
use pinhive_domain::PinStatus;
use pinhive_events::NodeDescriptor;
use pinhive_ipfs::{IpfsApi, IpfsError, NodeIdentity, RepoStat, SimulatedIpfs};
use pinhive_server::config::Config;
use pinhive_server::serve::IpfsFactory;
use pinhive_server::simulated::{simulated_drivers, simulated_node_specs};
use scylla::value::{CqlValue, Row};

const KEYSPACE: &str = "pinhive_size";
/// The owner of every pin: 20 bytes, the length of a typical account id.
pub const OWNER: &str = "acct-7f3a9c2e41b8d605";

#[derive(Args, Debug)]
pub struct StoreSizeArgs {
    /// Pins created over HTTP (each: CIDv1 base32, a name, 2 meta keys, one replica).
    #[arg(long, default_value_t = 10_000)]
    pub pins: usize,
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 16)]
    pub partitions: u32,
    /// Simulated IPFS nodes.
    #[arg(long, default_value_t = 16)]
    pub nodes: usize,
}

/// A simulated node that announces two multiaddrs (TCP and QUIC) with a real-length peer id,
/// so the pins' `delegates` have the size they have in production.
struct TwoAddressNode {
    inner: SimulatedIpfs,
    peer_id: String,
}

#[async_trait]
impl IpfsApi for TwoAddressNode {
    async fn id(&self) -> Result<NodeIdentity, IpfsError> {
        self.inner.id().await?;
        let peer = &self.peer_id;
        Ok(NodeIdentity {
            peer_id: peer.clone(),
            addresses: vec![
                format!("/ip4/198.51.100.17/tcp/4001/p2p/{peer}"),
                format!("/ip4/198.51.100.17/udp/4001/quic-v1/p2p/{peer}"),
            ],
        })
    }
    async fn repo_stat(&self) -> Result<RepoStat, IpfsError> {
        self.inner.repo_stat().await
    }
    async fn pin_add(&self, cid: &str, timeout: Duration) -> Result<(), IpfsError> {
        self.inner.pin_add(cid, timeout).await
    }
    async fn pin_rm(&self, cid: &str) -> Result<(), IpfsError> {
        self.inner.pin_rm(cid).await
    }
    async fn pin_ls(&self, cid: &str) -> Result<bool, IpfsError> {
        self.inner.pin_ls(cid).await
    }
    async fn pin_ls_all(&self) -> Result<pinhive_ipfs::PinStream, IpfsError> {
        self.inner.pin_ls_all().await
    }
    async fn block_stat(&self, cid: &str) -> Result<u64, IpfsError> {
        self.inner.block_stat(cid).await
    }
    async fn swarm_connect(&self, multiaddr: &str) -> Result<(), IpfsError> {
        self.inner.swarm_connect(multiaddr).await
    }
}

/// A libp2p Ed25519 peer id's length (52 characters, `12D3KooW…`), derived from the node id.
fn peer_id_of(node: &str) -> String {
    use sha2::Digest;
    const ALPHABET: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let digest = sha2::Sha256::digest(node.as_bytes());
    let tail: String = digest
        .iter()
        .chain(digest.iter())
        .take(44)
        .map(|byte| ALPHABET[*byte as usize % ALPHABET.len()] as char)
        .collect();
    format!("12D3KooW{tail}")
}

fn two_address_factory() -> IpfsFactory {
    Arc::new(|node: &NodeDescriptor| {
        Ok(Arc::new(TwoAddressNode {
            inner: SimulatedIpfs::new(&node.id, Duration::ZERO),
            peer_id: peer_id_of(&node.id),
        }) as Arc<dyn IpfsApi>)
    })
}

/// The body of representative pin `i`: a 59-character CIDv1, a name, two meta keys.
pub fn representative_pin(i: usize) -> serde_json::Value {
    serde_json::json!({
        "cid": crate::pipeline::bench_cid("size", i),
        "name": format!("photo-{i:08}.jpg"),
        "meta": {"app": "pinhive-bench", "upload": format!("batch-{:06}", i / 100)},
    })
}

/// Per-table sums of one keyspace.
#[derive(Debug, Default, Clone)]
pub struct TableSize {
    pub rows: u64,
    pub partitions: u64,
    pub key_bytes: u64,
    pub cell_bytes: u64,
}

/// Bytes of a value as the CQL native protocol encodes it (without its length prefix).
fn encoded_len(value: &CqlValue) -> u64 {
    match value {
        CqlValue::Text(text) | CqlValue::Ascii(text) => text.len() as u64,
        CqlValue::Blob(bytes) => bytes.len() as u64,
        CqlValue::BigInt(_) | CqlValue::Timestamp(_) | CqlValue::Double(_) => 8,
        CqlValue::Int(_) | CqlValue::Float(_) => 4,
        CqlValue::SmallInt(_) => 2,
        CqlValue::TinyInt(_) | CqlValue::Boolean(_) => 1,
        CqlValue::Uuid(_) | CqlValue::Timeuuid(_) => 16,
        CqlValue::Inet(address) if address.is_ipv4() => 4,
        CqlValue::Inet(_) => 16,
        _ => 0,
    }
}

/// Reads every table of `keyspace` and sums rows, partitions and encoded bytes per table.
pub async fn measure_keyspace(
    session: &scylla::client::session::Session,
    keyspace: &str,
) -> anyhow::Result<BTreeMap<String, TableSize>> {
    // (table) -> [(column, kind)], kind: partition_key, clustering, static, regular.
    let mut columns: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let schema = session
        .query_unpaged(
            "SELECT table_name, column_name, kind FROM system_schema.columns WHERE keyspace_name = ?",
            (keyspace,),
        )
        .await?
        .into_rows_result()?;
    for row in schema.rows::<(String, String, String)>()? {
        let (table, column, kind) = row?;
        columns.entry(table).or_default().push((column, kind));
    }
    let mut sizes = BTreeMap::new();
    for (table, table_columns) in columns {
        let list: Vec<&str> = table_columns.iter().map(|(c, _)| c.as_str()).collect();
        let mut statement = scylla::statement::unprepared::Statement::new(format!(
            "SELECT {} FROM {keyspace}.{table}",
            list.join(", ")
        ));
        statement.set_page_size(5_000);
        let mut rows = session
            .query_iter(statement, ())
            .await?
            .rows_stream::<Row>()?;
        let mut size = TableSize::default();
        let mut partitions = BTreeSet::new();
        while let Some(row) = rows.try_next().await? {
            let mut partition_key = Vec::new();
            let (mut partition_bytes, mut row_key_bytes, mut static_bytes, mut cells) =
                (0, 0, 0, 0);
            for ((_, kind), value) in table_columns.iter().zip(&row.columns) {
                let len = value.as_ref().map(encoded_len).unwrap_or(0);
                match kind.as_str() {
                    "partition_key" => {
                        partition_bytes += len;
                        partition_key.push(format!("{value:?}"));
                    }
                    "clustering" => row_key_bytes += len,
                    "static" => static_bytes += len,
                    _ => cells += len,
                }
            }
            // A partition with only static cells reads as one row with null clustering columns.
            let clustering_row = table_columns
                .iter()
                .zip(&row.columns)
                .all(|((_, kind), value)| kind != "clustering" || value.is_some());
            if partitions.insert(partition_key) {
                size.partitions += 1;
                size.key_bytes += partition_bytes;
                size.cell_bytes += static_bytes;
            }
            if clustering_row {
                size.rows += 1;
                size.key_bytes += row_key_bytes;
                size.cell_bytes += cells;
            }
        }
        sizes.insert(table, size);
    }
    Ok(sizes)
}

pub fn run(args: StoreSizeArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("temp dir")?;
    // The CQL test server on its own runtime, so it does not share the service's threads.
    let cql_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let cql = cql_runtime.block_on(pinhive_cql_server::CqlServer::start())?;
    let uri = format!("scylla://{}/{KEYSPACE}", cql.addr());
    println!(
        "pinhive bench store-size: {} pins (CIDv1 base32, name, 2 meta keys, one replica, 2 delegate multiaddrs) \
         on the ScyllaDB store at {uri} (the CQL test server), {} partitions",
        args.pins, args.partitions
    );
    let config = Config {
        data_dir: dir.path().join("service"),
        listen: "127.0.0.1:0".parse()?,
        partitions: args.partitions,
        ipfs_nodes: simulated_node_specs(args.nodes),
        replicas_min: 1,
        replicas_max: 1,
        store: uri.clone(),
        migrate: true,
        store_replication: "simple:1".into(),
        ..Config::default()
    };
    let (pins, concurrency) = (args.pins, args.concurrency);
    let system = actix_rt::System::new();
    let started = Instant::now();
    system.block_on(async move {
        let service =
            pinhive_server::serve::start(&config, two_address_factory(), simulated_drivers())
                .await?;
        let secret = crate::put_token(service.store.as_ref(), OWNER, false)?;
        let url = format!("http://{}", service.addr);
        let server = service.server.handle();
        actix_rt::spawn(service.server);
        while service.registry.reachable_count() < args.nodes {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let client = reqwest::Client::new();
        let bar = crate::pipeline::progress(pins as u64, "POST /pins");
        let failures = stream::iter(0..pins)
            .map(|i| {
                let (client, url, secret) = (&client, &url, &secret);
                async move {
                    client
                        .post(format!("{url}/pins"))
                        .bearer_auth(secret)
                        .json(&representative_pin(i))
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                }
            })
            .buffer_unordered(concurrency)
            .fold(0usize, |failed, status| {
                bar.inc(1);
                async move { failed + usize::from(status.ok() != Some(202)) }
            })
            .await;
        bar.finish_and_clear();
        anyhow::ensure!(failures == 0, "{failures} POSTs were not accepted");
        wait_owner_pinned(&service.store, args.partitions, pins as u64).await?;
        // Let the repair loop settle the pending set before the tables are read.
        tokio::time::sleep(Duration::from_secs(2)).await;
        server.stop(true).await;
        service.orchestrator.shutdown(Duration::from_secs(10)).await;
        anyhow::Ok(())
    })?;
    let load_seconds = started.elapsed().as_secs_f64();
    let stats = cql.stats();
    let sizes = cql_runtime.block_on(async {
        let session = scylla::client::session_builder::SessionBuilder::new()
            .known_node_addr(cql.addr())
            .build()
            .await?;
        measure_keyspace(&session, KEYSPACE).await
    })?;
    print_report(&sizes, &stats, pins as f64, load_seconds);
    Ok(())
}

async fn wait_owner_pinned(
    store: &Arc<dyn pinhive_store::Store>,
    partitions: u32,
    target: u64,
) -> anyhow::Result<()> {
    let bar = crate::pipeline::progress(target, "pins → pinned");
    let deadline = Instant::now() + Duration::from_secs(1200);
    loop {
        let store = store.clone();
        let pinned = tokio::task::spawn_blocking(move || {
            pinhive_store::total_count(store.as_ref(), OWNER, PinStatus::Pinned, partitions)
        })
        .await??;
        bar.set_position(pinned);
        if pinned >= target {
            bar.finish_and_clear();
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {pinned} of {target} pinned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_report(
    sizes: &BTreeMap<String, TableSize>,
    stats: &pinhive_cql_server::ServerStats,
    pins: f64,
    load_seconds: f64,
) {
    println!();
    println!(
        "{:<22} {:>9} {:>10} {:>11} {:>11} {:>9} {:>9} {:>9} {:>9}",
        "table",
        "rows",
        "partitions",
        "key bytes",
        "cell bytes",
        "rows/pin",
        "key B/pin",
        "cell B/pin",
        "B/pin"
    );
    let mut total = TableSize::default();
    for (table, size) in sizes {
        if size.rows == 0 && size.partitions == 0 {
            continue;
        }
        println!(
            "{table:<22} {:>9} {:>10} {:>11} {:>11} {:>9.3} {:>9.1} {:>9.1} {:>9.1}",
            size.rows,
            size.partitions,
            size.key_bytes,
            size.cell_bytes,
            size.rows as f64 / pins,
            size.key_bytes as f64 / pins,
            size.cell_bytes as f64 / pins,
            (size.key_bytes + size.cell_bytes) as f64 / pins
        );
        total.rows += size.rows;
        total.partitions += size.partitions;
        total.key_bytes += size.key_bytes;
        total.cell_bytes += size.cell_bytes;
    }
    println!(
        "{:<22} {:>9} {:>10} {:>11} {:>11} {:>9.3} {:>9.1} {:>9.1} {:>9.1}",
        "total",
        total.rows,
        total.partitions,
        total.key_bytes,
        total.cell_bytes,
        total.rows as f64 / pins,
        total.key_bytes as f64 / pins,
        total.cell_bytes as f64 / pins,
        (total.key_bytes + total.cell_bytes) as f64 / pins
    );
    println!("bytes: CQL-encoded values (text/blob bytes, bigint 8, tinyint 1); partition key and static cells once per partition;");
    println!("not counted: ScyllaDB's per-row/per-cell metadata (timestamps, TTLs, flags), SSTable indexes, compression");
    // Statements of the keyspace only (the driver's own system queries left out).
    let (mut writes, mut reads) = (BTreeMap::<String, u64>::new(), 0u64);
    for (text, count) in &stats.by_statement {
        if !text.contains(KEYSPACE) || text.contains("schema_migrations") {
            continue;
        }
        let verb = text.split_whitespace().next().unwrap_or("").to_uppercase();
        if verb == "SELECT" {
            reads += count;
            continue;
        }
        if !matches!(verb.as_str(), "INSERT" | "UPDATE" | "DELETE") {
            continue; // the migration's CREATE statements
        }
        let table = text
            .split_whitespace()
            .find_map(|word| word.strip_prefix(&format!("{KEYSPACE}.")))
            .unwrap_or("?")
            .trim_matches(|c: char| !c.is_alphanumeric() && c != '_')
            .to_string();
        *writes.entry(table).or_default() += count;
    }
    let total_writes: u64 = writes.values().sum();
    println!();
    println!(
        "CQL statements executed while loading (whole life of each pin: request, allocation, outcome), per pin:"
    );
    for (table, count) in &writes {
        println!("  writes {table:<22} {:>8.2}", *count as f64 / pins);
    }
    println!(
        "  writes total                  {:>8.2}",
        total_writes as f64 / pins
    );
    println!(
        "  reads total                   {:>8.2}",
        reads as f64 / pins
    );
    println!(
        "load took {load_seconds:.1} s on the CQL test server (its speed says nothing about ScyllaDB's)"
    );
}
