//! `pinhive bench` (mode `pipeline`, the default): throughput of the embedded deployment, each figure reported beside
//! baselines measured in the same run on the same disk (these machines are noisy, so ratios
//! are what compare across runs).
//!
//! * baseline: raw fjall batched writes (1,000 keys × 120 B per batch), the store pinhive uses;
//! * baseline: raw durable log appends (group commit, same concurrency as the HTTP load);
//! * `POST /pins` accepted per second, each answered 202 only after the durable append and the
//!   shard's apply (read-your-writes), over real HTTP on loopback;
//! * events applied per second end to end (request → allocation → replica outcome), with the
//!   IPFS fleet simulated in process so the pipeline, not a daemon, is measured.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures::stream::{self, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use pinhive_domain::PinStatus;
use pinhive_events::{Envelope, Event, PinRequested};
use pinhive_log::{EmbeddedLog, EmbeddedLogConfig, Log, Record};
use pinhive_store::EmbeddedStore;

use pinhive_server::config::Config;
use pinhive_server::serve::start;
use pinhive_server::simulated::{simulated_drivers, simulated_factory, simulated_node_specs};

#[derive(Args, Debug)]
pub struct PipelineArgs {
    /// Pins created through HTTP, and again through the log for the pipeline figure.
    #[arg(long, default_value_t = 20_000)]
    pub pins: usize,
    /// Concurrent HTTP clients / log appenders.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Simulated IPFS nodes.
    #[arg(long, default_value_t = 16)]
    pub nodes: usize,
    #[arg(long, default_value_t = 16)]
    pub partitions: u32,
    /// Instead: compare throughput with OTLP trace export off / sampling 1.0 / sampling 0.01,
    /// each against a real `pinhive serve` process.
    #[arg(long)]
    pub tracing_overhead: bool,
    /// Rounds of the tracing-overhead comparison (medians are reported).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Instead: raw rdkafka vs pinhive in Kafka mode on this broker (HOST:PORT).
    #[arg(long)]
    pub kafka: Option<String>,
    /// With `--kafka`: also run pinhive on this store (`scylla://HOST:PORT/KEYSPACE`, migrated
    /// at start) and report it beside the same run's embedded-store figures.
    #[arg(long, requires = "kafka")]
    pub store: Option<String>,
}

/// POSTs `count` pins (CIDs `bench_cid(tag, i)`) to `url` with `concurrency` in flight and
/// returns how long it took; fails if any was not answered 202.
pub async fn post_pins(
    url: &str,
    secret: &str,
    tag: &str,
    count: usize,
    concurrency: usize,
    on_answer: impl Fn(),
) -> anyhow::Result<Duration> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let failures = AtomicU64::new(0);
    let started = Instant::now();
    stream::iter(0..count)
        .map(|i| {
            let client = &client;
            async move {
                client
                    .post(format!("{url}/pins"))
                    .bearer_auth(secret)
                    .json(&serde_json::json!({"cid": bench_cid(tag, i)}))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            }
        })
        .buffer_unordered(concurrency)
        .for_each(|status| {
            if status.ok() != Some(202) {
                failures.fetch_add(1, Ordering::Relaxed);
            }
            on_answer();
            async {}
        })
        .await;
    let elapsed = started.elapsed();
    let failed = failures.load(Ordering::Relaxed);
    anyhow::ensure!(failed == 0, "{failed} POSTs were not accepted");
    Ok(elapsed)
}

/// Sum of the events every shard applied so far.
async fn events_applied(orchestrator: &pinhive_orchestrator::Orchestrator) -> u64 {
    orchestrator
        .snapshots()
        .await
        .iter()
        .map(|s| s.events_applied)
        .sum()
}

/// A `PinRequested` record for bench item `i` (owner `bench`, one replica).
pub fn pin_request_record(tag: &str, i: usize) -> Record {
    let cid = bench_cid(tag, i);
    Record::from_envelope(&Envelope::new(
        cid.clone(),
        Event::PinRequested(PinRequested {
            requestid: format!("{tag}-{i}"),
            owner: "bench".into(),
            cid,
            name: None,
            origins: vec![],
            meta: Default::default(),
            created_ns: pinhive_events::now_ns() + i as i64,
            replicas_min: 1,
            replicas_max: 1,
            replaces: None,
        }),
    ))
}

/// A CIDv1 (raw, sha2-256) for bench item `i`.
pub fn bench_cid(tag: &str, i: usize) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{tag}-{i}").as_bytes());
    let hash = cid::multihash::Multihash::<64>::wrap(0x12, &digest).unwrap_or_default();
    cid::Cid::new_v1(0x55, hash).to_string()
}

fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

pub fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{msg:>28} {bar:40} {pos}/{len} {per_sec}") {
        bar.set_style(style);
    }
    bar.set_message(what.to_string());
    bar
}

pub fn run(args: PipelineArgs) -> anyhow::Result<()> {
    if let Some(brokers) = &args.kafka {
        return crate::kafka::run(brokers, args.pins, args.store.as_deref());
    }
    if args.tracing_overhead {
        return crate::tracing_overhead::run(args.pins, args.concurrency, args.rounds);
    }
    let dir = tempfile::tempdir().context("temp dir")?;
    println!(
        "pinhive bench: {} pins, concurrency {}, {} simulated nodes, {} partitions",
        args.pins, args.concurrency, args.nodes, args.partitions
    );

    // Baseline 1: raw store batched writes.
    let store_rate = {
        let store = EmbeddedStore::open(&dir.path().join("baseline-store"))?;
        let (batches, per_batch) = (100, 1000);
        let started = Instant::now();
        store.write_baseline(batches, per_batch, 120)?;
        rate(batches * per_batch, started.elapsed())
    };
    // Baseline 2: raw durable log appends at the same concurrency.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let log_rate = runtime.block_on(async {
        let log = EmbeddedLog::open(
            &dir.path().join("baseline-log"),
            EmbeddedLogConfig {
                partitions: args.partitions,
                ..EmbeddedLogConfig::default()
            },
        )?;
        let started = Instant::now();
        let records = args.pins;
        stream::iter(0..records)
            .map(|i| {
                let log = log.clone();
                async move {
                    let envelope = Envelope::new(
                        bench_cid("log", i),
                        Event::ReplicaUnpinned { node: "n".into() },
                    );
                    log.append(vec![Record::from_envelope(&envelope)]).await
                }
            })
            .buffer_unordered(args.concurrency)
            .for_each(|_| async {})
            .await;
        anyhow::Ok(rate(records, started.elapsed()))
    })?;

    let config = Config {
        data_dir: dir.path().join("service"),
        listen: "127.0.0.1:0".parse()?,
        partitions: args.partitions,
        ipfs_nodes: simulated_node_specs(args.nodes),
        ..Config::default()
    };
    let factory = simulated_factory();
    let drivers = simulated_drivers();
    let pins = args.pins;
    let concurrency = args.concurrency;
    let system = actix_rt::System::new();
    let (http_rate, pipeline_rate, pipeline_events) = system.block_on(async move {
        let service = start(&config, factory, drivers).await?;
        let secret = crate::put_token(service.store.as_ref(), "bench", false)?;
        let url = format!("http://{}", service.addr);
        let server = service.server.handle();
        actix_rt::spawn(service.server);
        // Wait until every simulated node passed its first health check.
        while service.registry.reachable_count() < args.nodes {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // HTTP load from its own threads, so it does not share the shards' runtime.
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let result = (|| -> anyhow::Result<f64> {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                runtime.block_on(async {
                    let bar = progress(pins as u64, "POST /pins (202 durable)");
                    let elapsed =
                        post_pins(&url, &secret, "http", pins, concurrency, || bar.inc(1)).await?;
                    bar.finish_and_clear();
                    Ok(rate(pins, elapsed))
                })
            })();
            let _ = done_tx.send(result);
        });
        let http_rate = done_rx.await.context("load thread")??;
        wait_pinned(
            &service.store,
            args.partitions,
            pins as u64,
            "HTTP pins → pinned",
        )
        .await?;

        // Pipeline: requests appended straight to the log, timed until every one is pinned.
        let before = events_applied(&service.orchestrator).await;
        let started = Instant::now();
        let log = service.log.clone();
        let records: Vec<Record> = (0..pins)
            .map(|i| pin_request_record("pipeline", i))
            .collect();
        for chunk in records.chunks(512) {
            log.append(chunk.to_vec()).await?;
        }
        wait_pinned(
            &service.store,
            args.partitions,
            2 * pins as u64,
            "log pins → pinned",
        )
        .await?;
        let elapsed = started.elapsed();
        let after = events_applied(&service.orchestrator).await;
        let events = (after - before) as usize;
        server.stop(true).await;
        service.orchestrator.shutdown(Duration::from_secs(10)).await;
        drop(service.group);
        anyhow::Ok((http_rate, rate(pins, elapsed), rate(events, elapsed)))
    })?;

    println!();
    println!("{:<58} {:>12} {:>9}", "measure", "per second", "ratio");
    let row = |name: &str, value: f64| {
        println!("{name:<58} {value:>12.0} {:>8.3}x", value / store_rate);
    };
    row(
        "baseline: raw fjall batched writes (keys, 1000/batch)",
        store_rate,
    );
    row(
        "baseline: raw durable log appends (records, grouped)",
        log_rate,
    );
    row("POST /pins accepted (202 after fsync + apply)", http_rate);
    row(
        "pins requested → pinned, end to end (simulated IPFS)",
        pipeline_rate,
    );
    row(
        "events applied end to end (request, allocation, outcome)",
        pipeline_events,
    );
    println!("ratios are against the raw fjall batched write rate measured above");
    println!(
        "POST /pins vs raw durable log appends: {:.3}x",
        http_rate / log_rate
    );
    Ok(())
}

pub async fn wait_pinned(
    store: &Arc<dyn pinhive_store::Store>,
    partitions: u32,
    target: u64,
    what: &str,
) -> anyhow::Result<()> {
    let bar = progress(target, what);
    // Ten minutes, and one more second per thousand pins (a 1M-pin load on a busy machine).
    let deadline = Instant::now() + Duration::from_secs(600 + target / 1000);
    loop {
        let store = store.clone();
        let pinned = tokio::task::spawn_blocking(move || {
            pinhive_store::total_count(store.as_ref(), "bench", PinStatus::Pinned, partitions)
        })
        .await??;
        bar.set_position(pinned);
        if pinned >= target {
            bar.finish_and_clear();
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what}: only {pinned} of {target} pinned"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the process used less than `max_cpu` of a core over one second (the store's
/// background work after a load has calmed down), or until `bound`; returns the time waited.
pub async fn settle(bound: Duration, max_cpu: f64) -> Duration {
    let started = Instant::now();
    let mut last = process_cpu();
    while started.elapsed() < bound {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = process_cpu();
        if now.saturating_sub(last).as_secs_f64() < max_cpu {
            break;
        }
        last = now;
    }
    started.elapsed()
}

/// User + system CPU time of the whole process so far.
pub fn process_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let time = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}
