//! `pinhive bench anti-entropy`: one anti-entropy pass over a node believed to hold `--pins`
//! CIDs (issue 12: "anti-entropy pass time and memory for a node holding 1M pins"), beside the
//! naive reconciliation (the whole listing and the whole index in hash sets, diffed) over the
//! same store and node in the same run.
//!
//! Setup, in a temp dir: an embedded log and store; node `sim-0`'s index entries and its
//! per-partition replica counters written straight into the store (one shard batch per
//! partition per chunk; the counters, absolute values, in each partition's commit under a
//! claimed owner epoch), and a real CID state (pin requested, replica allocated on `sim-0`,
//! pinned there — the domain fold) for each CID the node will have lost. The node is a
//! `SimulatedIpfs` holding the same pins except `--drift` of them (missing), plus `--drift`
//! pins pinhive does not know (unknown). Its listing is streamed one CID at a time from a list
//! built before the measurement, as a real node's `pin/ls` streams (`--listing snapshot` uses
//! the simulated node's own listing, which copies its whole pin set first).
//!
//! Then an orchestrator over that log and store (every partition, its own anti-entropy loop
//! off, point checks unpaced) runs `reconcile("sim-0")`, timed, with the process's resident
//! memory sampled every 10 ms (peak minus the value just before). The baseline runs after it
//! (the allocator keeps what it freed, so the larger run goes last).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use clap::{Args, ValueEnum};
use futures::StreamExt;
use pinhive_domain::state::PinChange;
use pinhive_domain::{canonical_cid, CidState, PinRow, PinStatus, ReplicaStatus};
use pinhive_events::{codec, Event, PinRequested};
use pinhive_ipfs::{
    IpfsApi, IpfsError, NodeIdentity, NodeRegistry, PinStream, RepoStat, SimulatedIpfs,
};
use pinhive_log::{EmbeddedLog, EmbeddedLogConfig, Log};
use pinhive_orchestrator::antientropy::AntiEntropyReport;
use pinhive_orchestrator::consumer::Membership;
use pinhive_orchestrator::{Orchestrator, OrchestratorConfig};
use pinhive_store::{
    node_scope, CidWrite, Commit, CommitState, CounterRow, EmbeddedStore, NodeCidCursor,
    NodeCidWrite, PinWrite, ShardBatch, Store,
};

use crate::pipeline::{bench_cid, progress, settle};

/// Process CPU use (share of one core) below which the store counts as settled.
const SETTLED_CPU: f64 = 0.1;

#[derive(Args, Debug, Clone)]
pub struct AntiEntropyArgs {
    /// CIDs pinhive believes the node holds.
    #[arg(long, default_value_t = 1_000_000)]
    pub pins: usize,
    /// Of those, CIDs the node lost (missing); as many pins again the node holds that pinhive
    /// does not know (unknown).
    #[arg(long, default_value_t = 1000)]
    pub drift: usize,
    #[arg(long, default_value_t = 16)]
    pub partitions: u32,
    /// Index entries per page of the node walks (`repair_page`).
    #[arg(long, default_value_t = 256)]
    pub page: usize,
    /// How the node lists its pins: streamed one at a time (as a real node), or the simulated
    /// node's own listing (a copy of its whole pin set, made when the listing starts).
    #[arg(long, value_enum, default_value_t = Listing::Stream)]
    pub listing: Listing,
    /// Run only one of the two (e.g. under a profiler).
    #[arg(long, value_enum)]
    pub only: Option<Method>,
    /// Wait at most this long after the setup for the store to go quiet (compactions).
    #[arg(long, default_value_t = 60)]
    pub settle_secs: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Listing {
    Stream,
    Snapshot,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Method {
    Bloom,
    Naive,
}

/// The node reconciled.
const NODE: &str = "sim-0";
/// Index entries (and their CID states) written per chunk of the setup.
const CHUNK: usize = 20_000;

/// One method's measurements.
struct Measured {
    elapsed: Duration,
    /// Peak resident memory during the run minus the value just before, bytes.
    rss_delta: u64,
    /// Index entries walked (per walk) and pins listed.
    believed: u64,
    listed: u64,
    missing: u64,
    unknown: u64,
    /// Bloom pass only: the filters' bytes, point checks, `replica_missing` events appended.
    filter_bytes: Option<u64>,
    checked: Option<u64>,
    appended: Option<u64>,
    error: Option<String>,
}

pub fn run(args: AntiEntropyArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.drift > 0 && args.drift <= args.pins,
        "--drift must be in 1..=--pins"
    );
    anyhow::ensure!(args.page > 0, "--page must be positive");
    println!(
        "pinhive bench anti-entropy: node {NODE} believed to hold {} pins ({} partitions), \
         {} of them missing on the node, {} unknown pins on it; listing: {:?}, page {}",
        args.pins, args.partitions, args.drift, args.drift, args.listing, args.page
    );
    let dir = tempfile::tempdir().context("temp dir")?;
    let system = actix_rt::System::new();
    let (bloom, naive, setup) = system.block_on(async {
        let log = EmbeddedLog::open(
            &dir.path().join("log"),
            EmbeddedLogConfig {
                partitions: args.partitions,
                ..EmbeddedLogConfig::default()
            },
        )?;
        let log: Arc<dyn Log> = Arc::new(log);
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("store"))?);
        let setup_started = Instant::now();
        let drift = Drift::new(args.pins, args.drift);
        let counts = write_index(&args, &drift, log.as_ref(), store.clone()).await?;
        let node = build_node(&args, &drift).await;
        let setup = setup_started.elapsed();
        println!(
            "  setup {:.1} s: index and counters written ({} entries, {}..{} per partition), \
             node holds {} pins",
            setup.as_secs_f64(),
            counts.iter().sum::<i64>(),
            counts.iter().min().copied().unwrap_or(0),
            counts.iter().max().copied().unwrap_or(0),
            node.inner.pinned_count()
        );
        let settled = settle(Duration::from_secs(args.settle_secs), SETTLED_CPU).await;
        println!("  store settled after {:.1} s", settled.as_secs_f64());

        let config = OrchestratorConfig {
            anti_entropy_interval: Duration::ZERO,
            anti_entropy_checks_per_sec: 0,
            repair_page: args.page,
            ..OrchestratorConfig::default()
        };
        let orchestrator = Orchestrator::start_with(
            log.clone(),
            store.clone(),
            NodeRegistry::default(),
            config,
            Membership::All,
            None,
        )?;
        // Let the shards claim their partitions and their consumers reach the (empty) log end.
        tokio::time::sleep(Duration::from_millis(500)).await;
        settle(Duration::from_secs(10), SETTLED_CPU).await;
        let api: Arc<dyn IpfsApi> = match args.listing {
            Listing::Stream => node.clone(),
            Listing::Snapshot => node.inner.clone(),
        };

        // Both methods read the index through the same store cache: warm it first, so neither
        // is charged for loading it (nor the other's time for finding it loaded).
        let warmed = walk_index(store.clone(), args.partitions, args.page, |_| {}).await?;
        anyhow::ensure!(
            warmed == args.pins as u64,
            "the index holds {warmed} entries"
        );
        settle(Duration::from_secs(10), SETTLED_CPU).await;

        let bloom = if args.only != Some(Method::Naive) {
            println!("  index walked once (store cache warm); measuring the pass");
            let ends: Vec<u64> = (0..args.partitions).map(|p| log.end_offset(p)).collect();
            let sampler = RssSampler::start();
            let started = Instant::now();
            let report = orchestrator.reconcile(NODE, api.clone()).await;
            let elapsed = started.elapsed();
            let rss_delta = sampler.stop();
            let appended = replica_missing_since(log.as_ref(), &ends).await?;
            check_unknown_names(&report, &drift)?;
            Some(measured_bloom(report, elapsed, rss_delta, appended))
        } else {
            None
        };
        let naive = if args.only != Some(Method::Bloom) {
            println!("  measuring the naive reconciliation");
            let sampler = RssSampler::start();
            let started = Instant::now();
            let result = naive_pass(store.clone(), api.clone(), args.partitions, args.page).await;
            let elapsed = started.elapsed();
            let rss_delta = sampler.stop();
            let (believed, listed, missing, unknown) = result?;
            Some(Measured {
                elapsed,
                rss_delta,
                believed,
                listed,
                missing,
                unknown,
                filter_bytes: None,
                checked: None,
                appended: None,
                error: None,
            })
        } else {
            None
        };
        orchestrator.shutdown(Duration::from_secs(10)).await;
        anyhow::Ok((bloom, naive, setup))
    })?;
    print_table(&args, bloom.as_ref(), naive.as_ref(), setup);
    Ok(())
}

/// Which CIDs drift: every `step`-th index entry is missing on the node; `unknown` are pins
/// only the node has.
struct Drift {
    step: usize,
    count: usize,
}

impl Drift {
    fn new(pins: usize, count: usize) -> Self {
        Drift {
            step: pins / count,
            count,
        }
    }

    fn missing(&self, i: usize) -> bool {
        i.is_multiple_of(self.step) && i / self.step < self.count
    }

    fn unknown(&self) -> impl Iterator<Item = String> {
        (0..self.count).map(|j| bench_cid("anti-entropy-unknown", j))
    }
}

fn believed_cid(i: usize) -> String {
    bench_cid("anti-entropy", i)
}

/// Writes the node's index, its counters and the missing CIDs' states; returns the index
/// entries per partition.
async fn write_index(
    args: &AntiEntropyArgs,
    drift: &Drift,
    log: &dyn Log,
    store: Arc<dyn Store>,
) -> anyhow::Result<Vec<i64>> {
    let first = believed_cid(0);
    anyhow::ensure!(
        canonical_cid(&first).ok().as_deref() == Some(first.as_str()),
        "bench CIDs are not canonical"
    );
    let partitions = args.partitions as usize;
    let mut counts = vec![0i64; partitions];
    let bar = progress(args.pins as u64, "index entries written");
    let mut start = 0;
    while start < args.pins {
        let end = (start + CHUNK).min(args.pins);
        let mut batches: Vec<ShardBatch> = (0..args.partitions)
            .map(|partition| ShardBatch {
                partition,
                ..ShardBatch::default()
            })
            .collect();
        for i in start..end {
            let cid = believed_cid(i);
            let partition = log.partition_for(cid.as_bytes()) as usize;
            counts[partition] += 1;
            let batch = &mut batches[partition];
            if drift.missing(i) {
                let (state, pin) = pinned_state(&cid, i)?;
                batch.pins.push(PinWrite {
                    requestid: pin.requestid().to_string(),
                    old: None,
                    stale: vec![],
                    new: Some(pin),
                });
                batch.cids.push(CidWrite {
                    cid: cid.clone(),
                    state: Some(state),
                });
            }
            batch.node_cids.push(NodeCidWrite {
                node: NODE.into(),
                cid,
                present: true,
            });
        }
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            batches
                .iter()
                .filter(|batch| !batch.is_empty())
                .try_for_each(|batch| store.write_shard_batch(batch))
        })
        .await??;
        bar.inc((end - start) as u64);
        start = end;
    }
    bar.finish_and_clear();
    // The counters the pass sizes its filters from: absolute values, written only in the
    // partition's commit, by its owner (a claimed epoch, as a shard commits).
    for (partition, &count) in counts.iter().enumerate() {
        let partition = u32::try_from(partition)?;
        let epoch = store.claim_partition(partition)?;
        store.commit(&Commit {
            partition,
            state: CommitState::default(),
            counters: vec![CounterRow {
                owner: node_scope(NODE),
                status: PinStatus::Pinned,
                partition,
                value: count,
            }],
            owner_epoch: epoch,
        })?;
        anyhow::ensure!(
            store.counter(&node_scope(NODE), PinStatus::Pinned, partition)? == Some(count),
            "partition {partition}: the node counter did not read back"
        );
    }
    store.flush()?;
    Ok(counts)
}

/// A CID with one pin (min = max = 1) whose replica is pinned on the node, folded from the
/// events that put it there, and the pin's row.
fn pinned_state(cid: &str, i: usize) -> anyhow::Result<(CidState, PinRow)> {
    let mut state = CidState::new(cid);
    let events = [
        Event::PinRequested(PinRequested {
            requestid: format!("anti-entropy-{i}"),
            owner: "bench".into(),
            cid: cid.to_string(),
            name: None,
            origins: vec![],
            meta: Default::default(),
            created_ns: pinhive_events::now_ns(),
            replicas_min: 1,
            replicas_max: 1,
            replaces: None,
        }),
        Event::ReplicasAllocated {
            nodes: vec![NODE.into()],
            target: 1,
        },
        Event::ReplicaPinned {
            node: NODE.into(),
            delegates: vec![],
            attempts: 1,
            duration_ms: 1,
        },
    ];
    let mut row = None;
    for (offset, event) in events.iter().enumerate() {
        if let Some(PinChange::Created(created)) = state.apply(offset as u64, event, None) {
            row = Some(created);
        }
    }
    let row = row.context("the pin request created no pin row")?;
    anyhow::ensure!(
        state.replicas.get(NODE).map(|r| r.status) == Some(ReplicaStatus::Pinned),
        "the folded state of {cid} has no pinned replica on {NODE}"
    );
    Ok((state, row))
}

/// The node: a simulated daemon holding the believed pins but the missing ones, plus the
/// unknown ones; its listing streamed from a list built now.
async fn build_node(args: &AntiEntropyArgs, drift: &Drift) -> Arc<StreamingNode> {
    let inner = Arc::new(SimulatedIpfs::new(NODE, Duration::ZERO));
    let mut listing = Vec::with_capacity(args.pins);
    listing.extend(
        (0..args.pins)
            .filter(|&i| !drift.missing(i))
            .map(believed_cid),
    );
    listing.extend(drift.unknown());
    // SimulatedIpfs has no bulk insert; pin_add without latency never waits.
    let bar = progress(listing.len() as u64, "node pins added");
    for chunk in listing.chunks(CHUNK) {
        for cid in chunk {
            inner.pin_add(cid, Duration::ZERO).await.ok();
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Arc::new(StreamingNode {
        inner,
        listing: Arc::new(listing),
    })
}

/// A simulated node whose `pin/ls` streams its pins one at a time (a real node's answer is a
/// stream; the simulated node copies its whole set first).
struct StreamingNode {
    inner: Arc<SimulatedIpfs>,
    listing: Arc<Vec<String>>,
}

#[async_trait]
impl IpfsApi for StreamingNode {
    async fn id(&self) -> Result<NodeIdentity, IpfsError> {
        self.inner.id().await
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
    async fn pin_ls_all(&self) -> Result<PinStream, IpfsError> {
        let listing = self.listing.clone();
        Ok(futures::stream::iter(0..listing.len())
            .map(move |i| Ok(listing[i].clone()))
            .boxed())
    }
    async fn block_stat(&self, cid: &str) -> Result<u64, IpfsError> {
        self.inner.block_stat(cid).await
    }
    async fn swarm_connect(&self, multiaddr: &str) -> Result<(), IpfsError> {
        self.inner.swarm_connect(multiaddr).await
    }
}

/// The naive reconciliation: the whole listing and the whole index into hash sets, diffed.
/// Returns (index entries, pins listed, missing, unknown). No point checks, no events: its
/// candidates are exact (no false positives), which is what it pays the memory for.
async fn naive_pass(
    store: Arc<dyn Store>,
    api: Arc<dyn IpfsApi>,
    partitions: u32,
    page: usize,
) -> anyhow::Result<(u64, u64, u64, u64)> {
    let mut listed = HashSet::new();
    let mut pins = api.pin_ls_all().await?;
    while let Some(item) = pins.next().await {
        // The same canonical form the pass compares.
        if let Ok(cid) = canonical_cid(&item?) {
            listed.insert(cid);
        }
    }
    drop(pins);
    let mut believed = HashSet::new();
    walk_index(store, partitions, page, |cids| believed.extend(cids)).await?;
    let missing = believed.difference(&listed).count() as u64;
    let unknown = listed.difference(&believed).count() as u64;
    Ok((believed.len() as u64, listed.len() as u64, missing, unknown))
}

/// Walks the node's index on every partition, a page at a time (as the pass does); returns
/// the entries walked.
async fn walk_index(
    store: Arc<dyn Store>,
    partitions: u32,
    page: usize,
    mut visit: impl FnMut(Vec<String>),
) -> anyhow::Result<u64> {
    let mut walked = 0;
    for partition in 0..partitions {
        let mut cursor = NodeCidCursor::default();
        loop {
            let store = store.clone();
            let (cids, next) = tokio::task::spawn_blocking(move || {
                store.node_cids(NODE, partition, &cursor, page)
            })
            .await??;
            walked += cids.len() as u64;
            visit(cids);
            match next {
                Some(next) => cursor = next,
                None => break,
            }
        }
    }
    Ok(walked)
}

fn measured_bloom(
    report: AntiEntropyReport,
    elapsed: Duration,
    rss_delta: u64,
    appended: u64,
) -> Measured {
    Measured {
        elapsed,
        rss_delta,
        believed: report.believed,
        listed: report.listed,
        missing: report.missing,
        unknown: report.unknown,
        filter_bytes: Some(report.filter_bytes),
        checked: Some(report.checked),
        appended: Some(appended),
        error: report.error,
    }
}

/// The unknown CIDs the report names must be ones the node was given.
fn check_unknown_names(report: &AntiEntropyReport, drift: &Drift) -> anyhow::Result<()> {
    let unknown: HashSet<String> = drift.unknown().collect();
    for cid in &report.unknown_cids {
        anyhow::ensure!(
            unknown.contains(cid),
            "the pass reports {cid} unknown, which pinhive knows"
        );
    }
    Ok(())
}

/// `replica_missing` events appended since `ends` (one offset per partition).
async fn replica_missing_since(log: &dyn Log, ends: &[u64]) -> anyhow::Result<u64> {
    let mut count = 0;
    for (partition, &from) in ends.iter().enumerate() {
        let partition = u32::try_from(partition)?;
        let (mut next, end) = (from, log.end_offset(partition));
        while next < end {
            let records = log.read(partition, next, 1 << 20).await?;
            let Some(last) = records.last() else { break };
            next = last.next_offset;
            for stored in records {
                let Ok(record) = stored.record else { continue };
                let envelope = codec::decode(record.content_type, &record.key, &record.value)
                    .context("decoding a pin-log record")?;
                if matches!(&envelope.event, Event::ReplicaMissing { node, .. } if node == NODE) {
                    count += 1;
                }
            }
        }
    }
    Ok(count)
}

/// Samples the process's resident memory every 10 ms on a thread of its own.
struct RssSampler {
    before: u64,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl RssSampler {
    fn start() -> Self {
        let before = rss_bytes();
        let peak = Arc::new(AtomicU64::new(before));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peak, stop) = (peak.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_bytes(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        RssSampler {
            before,
            peak,
            stop,
            thread,
        }
    }

    /// Peak minus the value at the start, bytes.
    fn stop(self) -> u64 {
        self.peak.fetch_max(rss_bytes(), Ordering::Relaxed);
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().ok();
        self.peak
            .load(Ordering::Relaxed)
            .saturating_sub(self.before)
    }
}

/// VmRSS of this process, bytes (0 if unreadable).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map_or(0, |kb| kb * 1024)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn print_table(
    args: &AntiEntropyArgs,
    bloom: Option<&Measured>,
    naive: Option<&Measured>,
    setup: Duration,
) {
    let drift = args.drift as u64;
    println!();
    println!(
        "{:<22} {:>9} {:>6} {:>9} {:>11} {:>10} {:>10} {:>14} {:>14}",
        "method",
        "pins",
        "drift",
        "time s",
        "pins/s",
        "peak RSS Δ",
        "filters",
        "missing found",
        "unknown found"
    );
    let row = |name: &str, m: &Measured| {
        let filters = m
            .filter_bytes
            .map_or_else(|| "-".to_string(), |b| format!("{:.2} MiB", mib(b)));
        println!(
            "{:<22} {:>9} {:>6} {:>9.2} {:>11.0} {:>6.1} MiB {:>10} {:>8}/{:<5} {:>8}/{:<5}",
            name,
            args.pins,
            args.drift,
            m.elapsed.as_secs_f64(),
            args.pins as f64 / m.elapsed.as_secs_f64().max(1e-9),
            mib(m.rss_delta),
            filters,
            m.missing,
            drift,
            m.unknown,
            drift
        );
    };
    if let Some(b) = bloom {
        row("bloom pass (reconcile)", b);
    }
    if let Some(n) = naive {
        row("naive (hash sets)", n);
    }
    println!();
    if let Some(b) = bloom {
        println!(
            "bloom pass: index entries {} (walked twice), pins listed {}, point checks {}, \
             replica_missing appended {}; missed this pass (filter false positives): {} missing, \
             {} unknown{}",
            b.believed,
            b.listed,
            b.checked.unwrap_or(0),
            b.appended.unwrap_or(0),
            drift.saturating_sub(b.missing),
            drift.saturating_sub(b.unknown),
            b.error
                .as_deref()
                .map_or_else(String::new, |e| format!("; ERROR: {e}"))
        );
    }
    if let Some(n) = naive {
        println!(
            "naive: index entries {}, pins listed {}, differences {} missing / {} unknown \
             (exact, not point-checked, nothing appended)",
            n.believed, n.listed, n.missing, n.unknown
        );
    }
    if let (Some(b), Some(n)) = (bloom, naive) {
        let time = b.elapsed.as_secs_f64() / n.elapsed.as_secs_f64().max(1e-9);
        let memory = n.rss_delta as f64 / (b.rss_delta.max(1) as f64);
        println!(
            "ratios: bloom pass time / naive time = {time:.2}×; naive peak RSS Δ / bloom peak RSS \
             Δ = {memory:.1}×"
        );
    }
    println!(
        "(setup {:.1} s, not measured; RSS sampled every 10 ms from /proc/self/status)",
        setup.as_secs_f64()
    );
}
