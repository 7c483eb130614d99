//! `pinhive bench scale --pins N`: a real `pinhive serve` child process (embedded log and
//! store, simulated IPFS fleet) loaded with N pins, each figure reported beside baselines
//! measured in the same run:
//!
//! * baseline A: raw fjall batched writes in a scratch dir on the same disk;
//! * baseline B: `GET /health` of the same server, same load generator, same connections;
//! * `POST /pins` (202 after the durable append and the apply) for the first `--http-pins`;
//! * the rest appended to the stopped server's log as the `PinRequested` records the API would
//!   write, then events applied per second while the restarted server catches up;
//! * listing walks over every page (all pins, one shared CID, one exact name), shallow vs deep;
//! * RSS, data-dir bytes per pin, and time to answer after `kill -9`.

mod load;
mod log_load;
pub(crate) mod process;
mod report;
mod walk;
mod workload;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use indicatif::ProgressBar;
use pinhive_store::{EmbeddedStore, Store};

use crate::pipeline::progress;
use load::{get_json, time_until_ok};
use log_load::{append_to_log, catch_up};
use process::{ServerProcess, ServerSpec};
use report::{describe_paths, report_walk, Report};
use walk::{walk, ALL_STATUSES};
use workload::{Workload, PROBE_NAME};

#[derive(Args, Debug)]
pub struct ScaleArgs {
    /// Pins loaded into the server.
    #[arg(long, default_value_t = 1_000_000)]
    pub pins: usize,
    /// Pins created over HTTP (the first ones); the rest go through the log. Default:
    /// min(pins, 200000).
    #[arg(long)]
    pub http_pins: Option<usize>,
    /// HTTP connections of the load generator (one request in flight on each).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Tokio worker threads of the load generator.
    #[arg(long, default_value_t = 2)]
    pub load_threads: usize,
    /// Simulated IPFS nodes of the server.
    #[arg(long, default_value_t = 16)]
    pub nodes: usize,
    #[arg(long, default_value_t = 16)]
    pub partitions: u32,
    /// Seconds of the `GET /health` baseline.
    #[arg(long, default_value_t = 5)]
    pub health_secs: u64,
    /// Pages walked per listing at most (default: every page).
    #[arg(long)]
    pub max_pages: Option<usize>,
    /// Directory the run's data dir and scratch baseline go under (default: the temp dir).
    /// Put it on the disk you want to measure.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Keep the data dir after the run (its path is printed).
    #[arg(long)]
    pub keep: bool,
    /// Deadline of each long phase (loading, catching up, one walk), in seconds.
    #[arg(long, default_value_t = 3600)]
    pub phase_timeout_secs: u64,
    /// Print the figures as JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Owner of the run's pins (its token is also an admin token, for `/admin/shards`).
const OWNER: &str = "bench";
const START_DEADLINE: Duration = Duration::from_secs(120);
const STOP_DEADLINE: Duration = Duration::from_secs(60);
/// Log records per append while loading through the log.
const APPEND_CHUNK: usize = 1000;

pub fn run(args: ScaleArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.pins > 0, "--pins must be at least 1");
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(args.nodes > 0, "--nodes must be at least 1");
    let builder = {
        let mut builder = tempfile::Builder::new();
        builder.prefix("pinhive-scale-");
        builder
    };
    let work = match &args.work_dir {
        Some(dir) => builder.tempdir_in(dir),
        None => builder.tempdir(),
    }
    .context("creating the work dir")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.load_threads.max(1))
        .enable_all()
        .build()?;
    let result = runtime.block_on(measure(&args, work.path()));
    if args.keep {
        let kept = work.keep();
        eprintln!("kept the data dir under {}", kept.display());
    }
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        report.print_table();
    }
    Ok(())
}

fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

pub(crate) fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn say(args: &ScaleArgs, line: &str) {
    // With --json, stdout carries only the JSON document.
    if args.json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

async fn measure(args: &ScaleArgs, work: &Path) -> anyhow::Result<Report> {
    let pins = args.pins;
    let http_pins = args.http_pins.unwrap_or(200_000).min(pins);
    let phase_deadline = Duration::from_secs(args.phase_timeout_secs);
    let data_dir = work.join("data");
    let defaults = pinhive_server::config::Config::default();
    let replicas =
        pinhive_domain::command::ReplicaBounds::new(defaults.replicas_min, defaults.replicas_max)
            .map_err(|rejection| anyhow::anyhow!("{rejection}"))?;
    let workload = Arc::new(Workload::new(pins, OWNER, replicas));
    let mut report = Report::default();
    for (key, value) in [
        ("pins", pins),
        ("http_pins", http_pins),
        ("log_pins", pins - http_pins),
        ("concurrency", args.concurrency),
        ("load_threads", args.load_threads),
        ("simulated_nodes", args.nodes),
        ("partitions", args.partitions as usize),
        ("shared_cid_pins", workload.shared_count),
    ] {
        report.settings.insert(key.into(), value.into());
    }
    say(
        args,
        &format!(
            "pinhive bench scale: {pins} pins ({http_pins} over HTTP, {} through the log), \
             concurrency {}, {} simulated nodes, {} partitions, data dir {}",
            pins - http_pins,
            args.concurrency,
            args.nodes,
            args.partitions,
            data_dir.display()
        ),
    );

    // Baseline A: raw store batched writes on the same disk.
    let scratch = work.join("baseline-store");
    let store_rate = tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
        let store = EmbeddedStore::open(&scratch)?;
        let (batches, per_batch) = (100, 1000);
        let started = Instant::now();
        store.write_baseline(batches, per_batch, 120)?;
        let elapsed = started.elapsed();
        drop(store);
        std::fs::remove_dir_all(&scratch)?;
        Ok(rate((batches * per_batch) as u64, elapsed))
    })
    .await??;

    let secret = create_token(&data_dir)?;
    let spec = ServerSpec {
        data_dir: data_dir.clone(),
        partitions: args.partitions,
        simulated_nodes: args.nodes,
        log_file: work.join("server.log"),
    };
    let client = load::client(args.concurrency)?;
    let mut server = ServerProcess::spawn(&spec)?;
    wait_ready(&client, &mut server, args.nodes).await?;

    // Baseline B: the same server's cheapest route, same generator, same connections.
    let health = load::get_for(
        &client,
        &format!("{}/health", server.url),
        args.concurrency,
        Duration::from_secs(args.health_secs.max(1)),
    )
    .await?;
    let health_rate = health.per_second();
    report.row(
        "baseline_store_writes",
        "baseline A: raw fjall batched writes (keys, 1000/batch)",
        store_rate,
        "/s",
    );
    report.row(
        "baseline_health",
        format!("baseline B: GET /health ({} connections)", args.concurrency),
        health_rate,
        "/s",
    );

    // HTTP: the first pins through POST /pins.
    if http_pins > 0 {
        let (own_cpu, server_cpu) = (process::own_cpu_time()?, server.cpu_time()?);
        let bar = progress(http_pins as u64, "POST /pins (202 durable)");
        let on_answer = {
            let bar = bar.clone();
            move || bar.inc(1)
        };
        let posted = load::post_pins(
            &client,
            &server.url,
            &secret,
            &workload,
            http_pins,
            args.concurrency,
            on_answer,
        )
        .await?;
        bar.finish_and_clear();
        let own_cpu = process::own_cpu_time()?.saturating_sub(own_cpu);
        let server_cpu = server.cpu_time()?.saturating_sub(server_cpu);
        report.row_ratio(
            "post_pins",
            "POST /pins accepted (202 after fsync + apply)",
            posted.per_second(),
            "/s",
            posted.per_second() / health_rate,
            "B (target >= 0.3)",
        );
        report.note(format!(
            "load generator: reqwest (hyper) in the bench process, {} keep-alive connections with \
             one request in flight each, {} tokio worker threads, {} cores on this machine; during \
             the POSTs it used {:.1} CPU-s and the server {:.1} CPU-s over {:.1} s wall{}",
            args.concurrency,
            args.load_threads,
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            own_cpu.as_secs_f64(),
            server_cpu.as_secs_f64(),
            posted.elapsed.as_secs_f64(),
            if posted.retried > 0 {
                format!("; {} POSTs answered 429/503 were retried", posted.retried)
            } else {
                String::new()
            }
        ));
        wait_pinned(
            &client,
            &mut server,
            &secret,
            http_pins as u64,
            phase_deadline,
        )
        .await?;
    }
    let shutdown = server.terminate(STOP_DEADLINE)?;
    report.row(
        "graceful_shutdown",
        "graceful shutdown (SIGTERM → exit)",
        millis(shutdown),
        "ms",
    );

    // The log: the remaining pins appended while the server is stopped, applied on restart.
    let log_pins = pins - http_pins;
    if log_pins > 0 {
        let appended =
            append_to_log(&data_dir, args.partitions, &workload, http_pins..pins).await?;
        report.row(
            "log_append",
            "PinRequested appended offline (records, 1000/append)",
            rate(log_pins as u64, appended),
            "/s",
        );
    }
    let restarted = Instant::now();
    let mut server = ServerProcess::spawn(&spec)?;
    if log_pins > 0 {
        let (events, elapsed) = catch_up(
            &client,
            &mut server,
            &secret,
            pins as u64,
            restarted,
            phase_deadline,
        )
        .await?;
        report.row_ratio(
            "catch_up_events",
            "events applied while catching up (request, alloc, outcomes)",
            rate(events, elapsed),
            "/s",
            rate(events, elapsed) / store_rate,
            "A",
        );
        report.row_ratio(
            "catch_up_pins",
            "log pins requested → pinned while catching up",
            rate(log_pins as u64, elapsed),
            "/s",
            rate(log_pins as u64, elapsed) / store_rate,
            "A",
        );
        report.note(format!(
            "catch-up is timed from the restart (process spawn) until every shard's lag is 0 and \
             all {pins} pins are pinned: {events} events in {:.1} s",
            elapsed.as_secs_f64()
        ));
    } else {
        wait_ready(&client, &mut server, args.nodes).await?;
    }
    describe_paths(&mut report, &workload, http_pins);

    let rss_loaded = server.rss_bytes()?;
    let data_bytes = process::dir_bytes(&data_dir)?;
    report.row(
        "rss_loaded",
        "server RSS after loading",
        rss_loaded as f64 / 1048576.0,
        "MiB",
    );
    report.row(
        "data_dir_bytes_per_pin",
        "data dir bytes per pin",
        data_bytes as f64 / pins as f64,
        "B",
    );

    // Listings, walked to the last page.
    let walks = [
        ("all", ALL_STATUSES.to_string(), pins),
        (
            "cid",
            format!("{ALL_STATUSES}&cid={}", workload.shared_cid),
            workload.shared_count,
        ),
        (
            "name",
            format!("{ALL_STATUSES}&name={PROBE_NAME}"),
            Workload::probe_named_in(0..pins),
        ),
    ];
    for (label, filter, expected) in walks {
        let bar = ProgressBar::new_spinner().with_message(format!("walking GET /pins ({label})"));
        bar.enable_steady_tick(Duration::from_millis(200));
        let walked = walk(
            &client,
            &server.url,
            &secret,
            label,
            &filter,
            args.max_pages,
            phase_deadline,
        )
        .await?;
        bar.finish_and_clear();
        report_walk(&mut report, &walked, expected);
    }
    let partial_started = Instant::now();
    let partial = get_json(
        &client,
        &format!(
            "{}/pins?limit=1000&{ALL_STATUSES}&match=partial&name={PROBE_NAME}",
            server.url
        ),
        &secret,
    )
    .await?;
    report.row(
        "partial_name_ms",
        format!(
            "GET /pins match=partial&name={PROBE_NAME} (one request, count {})",
            partial["count"].as_u64().unwrap_or(0)
        ),
        millis(partial_started.elapsed()),
        "ms",
    );
    let rss_walked = server.rss_bytes()?;
    report.row(
        "rss_walked",
        "server RSS after the walks",
        rss_walked as f64 / 1048576.0,
        "MiB",
    );

    // Crash: kill -9, restart, time until it answers.
    server.kill_hard()?;
    let respawned = Instant::now();
    let mut server = ServerProcess::spawn(&spec)?;
    let health_url = format!("{}/health", server.url);
    let list_url = format!("{}/pins?limit=10", server.url);
    let to_health = time_until_ok(
        &client,
        &health_url,
        None,
        respawned,
        START_DEADLINE,
        &mut server,
    )
    .await?;
    let to_list = time_until_ok(
        &client,
        &list_url,
        Some(&secret),
        respawned,
        START_DEADLINE,
        &mut server,
    )
    .await?;
    report.row(
        "restart_health_ms",
        "after kill -9: restart → GET /health 200",
        millis(to_health),
        "ms",
    );
    report.row(
        "restart_list_ms",
        "after kill -9: restart → GET /pins?limit=10 200",
        millis(to_list),
        "ms",
    );
    server.terminate(STOP_DEADLINE)?;
    report.note(format!(
        "RSS is VmRSS of the server process; data dir size is the sum of file sizes under {} \
         after loading ({data_bytes} bytes)",
        data_dir.display()
    ));
    footprint(&mut report, &data_dir, pins).await?;
    Ok(report)
}

/// Where the data dir's bytes are, with the server stopped: the log (its records are kept for
/// `log_retention_secs`, so in production they follow the pin *rate*), and each store table as
/// loaded (memtables flushed) and after a major compaction (what the rows themselves occupy).
async fn footprint(report: &mut Report, data_dir: &Path, pins: usize) -> anyhow::Result<()> {
    let per_pin = |bytes: u64| bytes as f64 / pins as f64;
    report.row(
        "log_bytes_per_pin",
        "log bytes per pin (event records; kept for log_retention_secs)",
        per_pin(process::dir_bytes(&data_dir.join("log"))?),
        "B",
    );
    let store_dir = data_dir.join("store");
    let (loaded, compacted, took) = tokio::task::spawn_blocking(move || {
        let store = EmbeddedStore::open(&store_dir).context("opening the store")?;
        store.flush_tables()?;
        let loaded = store.footprint()?;
        let started = Instant::now();
        store.compact_all()?;
        let took = started.elapsed();
        anyhow::Ok((loaded, store.footprint()?, took))
    })
    .await??;
    let total = |tables: &[pinhive_store::embedded::TableFootprint]| {
        tables.iter().map(|table| table.disk_bytes).sum::<u64>()
    };
    report.row(
        "store_bytes_per_pin",
        "store tables bytes per pin, as loaded (memtables flushed)",
        per_pin(total(&loaded)),
        "B",
    );
    report.row(
        "store_compacted_bytes_per_pin",
        "store tables bytes per pin after a major compaction",
        per_pin(total(&compacted)),
        "B",
    );
    report.row(
        "store_compaction_secs",
        "major compaction of every table (offline)",
        took.as_secs_f64(),
        "s",
    );
    for table in compacted.iter().filter(|table| table.disk_bytes > 0) {
        report.row(
            format!("table_{}_bytes_per_pin", table.name),
            format!(
                "  table {} after compaction (≈{:.2} entries per pin)",
                table.name,
                table.approximate_entries as f64 / pins as f64
            ),
            per_pin(table.disk_bytes),
            "B",
        );
    }
    Ok(())
}

/// An admin token owned by [`OWNER`], written into the store before the server first starts.
pub(crate) fn create_token(data_dir: &Path) -> anyhow::Result<String> {
    let store = EmbeddedStore::open(&data_dir.join("store")).context("opening the store")?;
    let secret = crate::put_token(&store, OWNER, true)?;
    store.flush()?;
    Ok(secret)
}

/// Waits until the server answers `/ready` with every simulated node reachable.
pub(crate) async fn wait_ready(
    client: &reqwest::Client,
    server: &mut ServerProcess,
    nodes: usize,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let ready = client.get(format!("{}/ready", server.url)).send().await;
        if let Ok(response) = ready {
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            if body["ipfs"]["reachable"].as_u64() >= Some(nodes as u64) {
                return Ok(());
            }
        }
        server.ensure_alive()?;
        anyhow::ensure!(
            started.elapsed() < START_DEADLINE,
            "pinhive serve was not ready with {nodes} reachable nodes within {START_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn pinned_count(
    client: &reqwest::Client,
    server: &ServerProcess,
    secret: &str,
) -> anyhow::Result<u64> {
    let body = get_json(
        client,
        &format!("{}/pins?status=pinned&limit=1", server.url),
        secret,
    )
    .await?;
    body["count"].as_u64().context("a listing without count")
}

async fn wait_pinned(
    client: &reqwest::Client,
    server: &mut ServerProcess,
    secret: &str,
    target: u64,
    deadline: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let bar = progress(target, "HTTP pins → pinned");
    loop {
        let pinned = pinned_count(client, server, secret).await?;
        bar.set_position(pinned);
        if pinned >= target {
            bar.finish_and_clear();
            return Ok(());
        }
        server.ensure_alive()?;
        anyhow::ensure!(
            started.elapsed() < deadline,
            "only {pinned} of {target} HTTP pins pinned after {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
