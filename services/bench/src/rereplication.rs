//! `pinhive bench rereplication`: one node of a simulated fleet is lost; how long until every
//! CID it held has all its replicas again, how fast allocations go out, and how many CIDs were
//! ever below their pins' minimum — with the re-replication caps, beside the same run with the
//! caps lifted (issue 12).
//!
//! Each run is the service in process (`serve::start`: embedded log and store in a temp dir,
//! the simulated fleet): `--cids` pins (min = max = `--replicas`) appended to the log as the
//! API would, waited for until every one is pinned on `--replicas` nodes and the process is
//! quiet again (the load leaves compactions running); then one node's simulated daemon fails
//! every call (its fault injection), so its health checks fail, it goes `degraded` and, after
//! `--grace-secs`, `down`, and the node walks re-replicate its CIDs.
//! Every figure is folded from the pin log after the run (`timeline`); completion is watched
//! through the fleet (replicas held by the other nodes).
//!
//! Why min = max: pins get `min` replicas unless analytics raises the target, so three replicas
//! need min = 3, and then losing one puts every CID the node held below `min` — "ever below
//! min" is the lost node's CIDs plus any other CID that lost a replica on the way (expected 0:
//! a walk never unpins a counting replica). The cap shows in how long they stay there.

mod fleet;
mod report;
mod timeline;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use pinhive_events::{codec, Envelope, Event, NodeState, PinRequested};
use pinhive_log::{Log, Record};
use pinhive_server::config::Config;
use pinhive_server::serve::start;
use pinhive_server::simulated::{simulated_drivers, simulated_node_specs};

use crate::pipeline::{bench_cid, progress, settle, wait_pinned};
use fleet::Fleet;
use timeline::{Figures, Observed};

#[derive(Args, Debug, Clone)]
pub struct RereplicationArgs {
    /// Simulated IPFS nodes.
    #[arg(long, default_value_t = 100)]
    pub nodes: usize,
    /// CIDs pinned (one pin each) before the node is lost.
    #[arg(long, default_value_t = 100_000)]
    pub cids: usize,
    /// Replicas per CID: the pins' min and max.
    #[arg(long, default_value_t = 3)]
    pub replicas: u8,
    /// The capped run's `rereplication_rate` (replicas/s per instance).
    #[arg(long, default_value_t = 500)]
    pub rate: u32,
    /// The capped run's `rereplication_rate_per_node` (replicas/s per destination node).
    #[arg(long, default_value_t = 20)]
    pub rate_per_node: u32,
    #[arg(long, default_value_t = 16)]
    pub partitions: u32,
    /// `node_grace_secs`: how long the lost node fails its health checks before it is `down`.
    #[arg(long, default_value_t = 1)]
    pub grace_secs: u64,
    /// Wait at most this long after the load for the process to go quiet (compactions) before
    /// the node is lost.
    #[arg(long, default_value_t = 120)]
    pub settle_secs: u64,
    /// Give up on a run whose re-replication takes longer than this.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Run only one of the two (e.g. under a profiler).
    #[arg(long, value_enum)]
    pub only: Option<Caps>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Caps {
    Capped,
    Lifted,
}

/// The node the runs lose.
const LOST: &str = "sim-0";

/// One run's measurements.
pub struct Run {
    pub caps: Caps,
    pub rate: u32,
    pub rate_per_node: u32,
    pub load: Duration,
    /// Load done → the process's CPU use fell below `SETTLED_CPU` (or the bound passed).
    pub settle: Duration,
    /// Fault injected → `down` agreed.
    pub inject_to_down: Duration,
    /// `pinhive_rereplication_replicas_total` during the run.
    pub walk_replicas: u64,
    pub figures: Figures,
}

pub fn run(args: RereplicationArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.nodes > usize::from(args.replicas),
        "--nodes must exceed --replicas"
    );
    println!(
        "pinhive bench rereplication: {} simulated nodes, {} CIDs × {} replicas (min = max = {}), \
         {} partitions, grace {} s; node {LOST} is lost",
        args.nodes, args.cids, args.replicas, args.replicas, args.partitions, args.grace_secs
    );
    let variants: Vec<Caps> = match args.only {
        Some(only) => vec![only],
        None => vec![Caps::Capped, Caps::Lifted],
    };
    let system = actix_rt::System::new();
    let runs = system.block_on(async {
        let mut runs = Vec::new();
        for caps in variants {
            // Each run prints its figures as soon as it has them: a later run that fails
            // loses nothing.
            runs.push(scenario(&args, caps).await?);
        }
        anyhow::Ok(runs)
    })?;
    if runs.len() > 1 {
        report::print(&args, &runs);
    }
    Ok(())
}

async fn scenario(args: &RereplicationArgs, caps: Caps) -> anyhow::Result<Run> {
    let (rate, rate_per_node) = match caps {
        Caps::Capped => (args.rate, args.rate_per_node),
        Caps::Lifted => (0, 0),
    };
    let dir = tempfile::tempdir().context("temp dir")?;
    let mut config = Config {
        data_dir: dir.path().join("service"),
        listen: "127.0.0.1:0".parse()?,
        partitions: args.partitions,
        ipfs_nodes: simulated_node_specs(args.nodes),
        replicas_min: args.replicas,
        replicas_max: args.replicas,
        node_grace_secs: args.grace_secs,
        rereplication_rate: rate,
        rereplication_rate_per_node: rate_per_node,
        ..Config::default()
    };
    // Analytics would change targets on its own epochs; nothing here reports accesses.
    config.analytics.enabled = false;
    let fleet = Arc::new(Fleet::default());
    let service = start(&config, fleet.factory(), simulated_drivers()).await?;
    let server = service.server.handle();
    actix_rt::spawn(service.server);
    while service.registry.reachable_count() < args.nodes {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("{caps:?} run: rereplication_rate {rate}, rereplication_rate_per_node {rate_per_node} (0 = lifted)");

    // Load: the pins, as the API would append them, until every CID is pinned everywhere.
    let replicas = usize::from(args.replicas);
    let cids: Vec<String> = (0..args.cids)
        .map(|i| bench_cid("rereplication", i))
        .collect();
    let started = Instant::now();
    for (chunk_index, chunk) in cids.chunks(512).enumerate() {
        let records = chunk
            .iter()
            .enumerate()
            .map(|(i, cid)| pin_record(cid, chunk_index * 512 + i, args.replicas))
            .collect();
        service.log.append(records).await?;
    }
    wait_pinned(
        &service.store,
        args.partitions,
        args.cids as u64,
        "pins → pinned",
    )
    .await?;
    wait_for(
        "the fleet to hold every replica",
        Duration::from_secs(60),
        || fleet.replicas_held(None) >= replicas * args.cids,
    )
    .await?;
    let load = started.elapsed();
    // The load leaves the store compacting for a while (the profile: fjall's workers took
    // three quarters of both cores); a node is lost in steady state, not during that.
    let settle = settle(Duration::from_secs(args.settle_secs), SETTLED_CPU).await;

    // Loss: what was held where, where the log ends, then the lost node fails every call.
    let holdings = {
        let (fleet, cids) = (fleet.clone(), cids.clone());
        tokio::task::spawn_blocking(move || fleet.holdings(&cids)).await?
    };
    let lost_index = holdings
        .index(LOST)
        .context("the lost node is not in the fleet")?;
    let held_by_lost = holdings
        .of
        .values()
        .filter(|held| held.contains(&lost_index))
        .count();
    let offsets: Vec<u64> = (0..args.partitions)
        .map(|p| service.log.end_offset(p))
        .collect();
    let walked_before = walk_replicas_total();
    let lost = fleet.node(LOST).context("the lost node has no daemon")?;
    let injected_ns = pinhive_events::now_ns();
    lost.fail_next(u32::MAX);
    println!("  {LOST} fails every call from now ({held_by_lost} CIDs on it)");

    let mut down_ns = 0;
    wait_for(
        "the lost node to be down",
        Duration::from_secs(60),
        || match service.registry.get(LOST) {
            Some(entry) if entry.state.state == NodeState::Down => {
                down_ns = entry.state.since_ns;
                true
            }
            _ => false,
        },
    )
    .await?;
    let target = replicas * args.cids;
    let bar = progress(held_by_lost as u64, "replicas re-made");
    let deadline = Duration::from_secs(args.timeout_secs);
    let waited = wait_for("re-replication", deadline, || {
        let others = fleet.replicas_held(Some(LOST));
        let missing = target.saturating_sub(others);
        bar.set_position(held_by_lost.saturating_sub(missing) as u64);
        missing == 0
    })
    .await;
    bar.finish_and_clear();
    if let Err(error) = waited {
        diagnose(&service.store, &fleet, &holdings, lost_index, replicas).await;
        return Err(error);
    }

    // The outcome events follow the daemons' answers: fold until the log shows them all.
    let read_until = Instant::now() + Duration::from_secs(30);
    let figures = loop {
        let observed = read_since(service.log.as_ref(), &offsets).await?;
        let figures = timeline::fold(
            &holdings,
            lost_index,
            down_ns,
            usize::from(args.replicas),
            replicas,
            &observed,
            pinhive_events::now_ns(),
        );
        if figures.full_ns.is_some() || Instant::now() > read_until {
            break figures;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let walk_replicas = walk_replicas_total() - walked_before;
    let run = Run {
        caps,
        rate,
        rate_per_node,
        load,
        settle,
        inject_to_down: Duration::from_nanos(u64::try_from(down_ns - injected_ns).unwrap_or(0)),
        walk_replicas,
        figures,
    };
    // The figures before the service stops: a stop that hangs (the store's flush at
    // shutdown) must not take them along.
    report::print(args, std::slice::from_ref(&run));
    server.stop(true).await;
    let stopped = tokio::time::timeout(
        Duration::from_secs(120),
        stop(&service.orchestrator, &service.control, &service.registry),
    )
    .await;
    anyhow::ensure!(
        stopped.is_ok(),
        "{caps:?} run: the service did not stop within 120 s (figures above)"
    );
    drop(dir);
    Ok(run)
}

/// Why a run did not finish: how many CIDs lack replicas on the other nodes, and the stored
/// state of a few of them.
async fn diagnose(
    store: &Arc<dyn pinhive_store::Store>,
    fleet: &Arc<Fleet>,
    holdings: &timeline::Holdings,
    lost_index: u16,
    replicas: usize,
) {
    let affected: Vec<String> = holdings
        .of
        .iter()
        .filter(|(_, held)| held.contains(&lost_index))
        .map(|(cid, _)| cid.clone())
        .collect();
    let now = {
        let fleet = fleet.clone();
        let affected = affected.clone();
        tokio::task::spawn_blocking(move || fleet.holdings(&affected)).await
    };
    let Ok(now) = now else { return };
    let short: Vec<&String> = now
        .of
        .iter()
        .filter(|(_, held)| held.iter().filter(|&&i| i != lost_index).count() < replicas)
        .map(|(cid, _)| cid)
        .collect();
    println!(
        "  stalled: {} of {} affected CIDs lack a replica on the other nodes",
        short.len(),
        affected.len()
    );
    for cid in short.into_iter().take(5) {
        match store.load_cid(cid) {
            Ok(state) => println!("    {cid}: {state:?}"),
            Err(error) => println!("    {cid}: store error {error}"),
        }
    }
}

/// A pin of `cid` with min = max = `replicas`, as `POST /pins` would append it.
fn pin_record(cid: &str, i: usize, replicas: u8) -> Record {
    Record::from_envelope(&Envelope::new(
        cid,
        Event::PinRequested(PinRequested {
            requestid: format!("rereplication-{i}"),
            owner: "bench".into(),
            cid: cid.to_string(),
            name: None,
            origins: vec![],
            meta: Default::default(),
            created_ns: pinhive_events::now_ns() + i as i64,
            replicas_min: replicas,
            replicas_max: replicas,
            replaces: None,
        }),
    ))
}

/// Polls `done` every 20 ms until it holds; an error naming `what` after `timeout`.
async fn wait_for(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "gave up waiting for {what} after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Every pin-log event appended since `offsets` (one per partition).
async fn read_since(log: &dyn Log, offsets: &[u64]) -> anyhow::Result<Vec<Observed>> {
    let mut observed = Vec::new();
    for (partition, &from) in offsets.iter().enumerate() {
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
                observed.push(Observed {
                    timestamp_ns: envelope.timestamp_ns,
                    cid: envelope.key,
                    event: envelope.event,
                });
            }
        }
    }
    Ok(observed)
}

/// `pinhive_rereplication_replicas_total`, every urgency (process-wide: compare differences).
fn walk_replicas_total() -> u64 {
    pinhive_domain::Urgency::ORDER
        .iter()
        .map(|urgency| {
            pinhive_orchestrator::metrics::METRICS
                .rereplicated
                .with_label_values(&[urgency.as_str()])
                .get()
        })
        .sum()
}

/// Stops the run's service: shards drained, control plane and every node driver stopped (the
/// next run must not share the two cores with this one's health checks).
async fn stop(
    orchestrator: &pinhive_orchestrator::Orchestrator,
    control: &pinhive_orchestrator::control::ControlPlane,
    registry: &pinhive_ipfs::NodeRegistry,
) {
    orchestrator.shutdown(Duration::from_secs(10)).await;
    control.shutdown();
    for entry in registry.entries() {
        entry.driver.do_send(pinhive_ipfs::StopDriver);
    }
}

/// Process CPU use (share of one core) below which the service counts as settled.
const SETTLED_CPU: f64 = 0.15;
