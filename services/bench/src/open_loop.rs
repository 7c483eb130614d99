//! `pinhive bench load`: an open-loop HTTP load generator. Requests are scheduled at a fixed
//! target rate (request i at `start + i / rate`) whatever the answers do, and each latency is
//! measured from the request's *scheduled* start, not from when a connection was free to send
//! it: a stalled server is charged for every request that should have gone out meanwhile
//! (Gil Tene's coordinated omission, corrected as wrk2 does). Latencies go into an
//! `hdrhistogram` (microseconds, 3 significant digits).
//!
//! Each workload runs beside the same run's `/health` at the same rate and connection limit
//! (the ceiling of the HTTP stack itself). Without `--url` the service is a `pinhive serve`
//! child on a temp data dir with simulated IPFS nodes and no rate limit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::pipeline::bench_cid;
use crate::scale::process::{ServerProcess, ServerSpec};

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// `GET /health`: the HTTP stack's ceiling (always run first as the baseline).
    Health,
    /// `POST /pins`, each a new CID.
    Post,
    /// `GET /pins?limit=10`: the owner's newest pins.
    List,
    /// 90% `GET /pins?limit=10`, 10% `POST /pins`.
    Mixed,
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Workloads to run, in order, each after the `/health` baseline.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "post,list,mixed"
    )]
    workload: Vec<Workload>,
    /// Target rate, requests per second (open loop: sent on schedule whatever the answers).
    #[arg(long, default_value_t = 500)]
    rate: u32,
    /// Seconds per workload.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Most requests in flight; a request whose scheduled start finds them all busy waits,
    /// and the wait counts in its latency.
    #[arg(long, default_value_t = 256)]
    connections: usize,
    /// A running service to load (its token from --token / PINHIVE_TOKEN, rate limit off or
    /// above --rate). Without it a `pinhive serve` child is started.
    #[arg(long, requires = "token")]
    url: Option<String>,
    #[arg(long, env = "PINHIVE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Simulated IPFS nodes of the child service.
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

/// One workload's figures.
#[derive(Debug)]
pub struct Figures {
    workload: String,
    target_rate: u32,
    sent: u64,
    /// Answers per second over the whole run (until the last answer).
    achieved_rate: f64,
    /// Non-2xx answers and failed requests.
    errors: u64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
}

impl Figures {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "workload": self.workload, "target_rate": self.target_rate, "sent": self.sent,
            "achieved_rate": self.achieved_rate, "errors": self.errors, "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms, "p99_ms": self.p99_ms, "p999_ms": self.p999_ms,
            "max_ms": self.max_ms,
        })
    }
}

pub fn run(args: LoadArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.rate > 0, "--rate must be at least 1");
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let figures = runtime.block_on(measure(&args))?;
    if args.json {
        let rows: Vec<serde_json::Value> = figures.iter().map(Figures::to_json).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<8} {:>7} {:>8} {:>9} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "workload",
        "target",
        "sent",
        "achieved",
        "errors",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms"
    );
    for f in &figures {
        println!(
            "{:<8} {:>7} {:>8} {:>9.0} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            f.workload,
            f.target_rate,
            f.sent,
            f.achieved_rate,
            f.errors,
            f.p50_ms,
            f.p90_ms,
            f.p99_ms,
            f.p999_ms,
            f.max_ms
        );
    }
    println!(
        "latency from each request's scheduled start (coordinated omission corrected), \
         {} connections at most",
        args.connections
    );
    Ok(())
}

async fn measure(args: &LoadArgs) -> anyhow::Result<Vec<Figures>> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .timeout(Duration::from_secs(30))
        .build()?;
    // Keeps the child server (and its data dir) alive for the run.
    let mut _child: Option<(tempfile::TempDir, ServerProcess)> = None;
    let (url, token) = match (&args.url, &args.token) {
        (Some(url), Some(token)) => (url.trim_end_matches('/').to_string(), token.clone()),
        _ => {
            let work = tempfile::Builder::new()
                .prefix("pinhive-bench-load")
                .tempdir()?;
            let data_dir = work.path().join("data");
            let token = crate::scale::create_token(&data_dir)?;
            let spec = ServerSpec {
                data_dir,
                partitions: 16,
                simulated_nodes: args.nodes,
                log_file: work.path().join("server.log"),
            };
            let mut server = ServerProcess::spawn(&spec)?;
            crate::scale::wait_ready(&client, &mut server, args.nodes).await?;
            let url = server.url.clone();
            _child = Some((work, server));
            (url, token)
        }
    };
    let mut figures = Vec::new();
    let mut sequence = 0u64;
    for &workload in &args.workload {
        for run in [Workload::Health, workload] {
            if run == Workload::Health && workload == Workload::Health {
                continue;
            }
            let f = open_loop(&client, &url, &token, run, args, &mut sequence).await?;
            figures.push(f);
        }
    }
    Ok(figures)
}

/// Sends `rate × duration` requests of `workload`, request i at `start + i / rate`.
async fn open_loop(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    workload: Workload,
    args: &LoadArgs,
    sequence: &mut u64,
) -> anyhow::Result<Figures> {
    let total = u64::from(args.rate) * args.duration_secs;
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let histogram = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).context("histogram")?,
    ));
    let errors = Arc::new(AtomicU64::new(0));
    let slots = Arc::new(Semaphore::new(args.connections));
    let tag = format!("load-{}", std::process::id());
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let scheduled = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled).await;
        // Finished requests are reaped as the run goes, so the set holds only those in flight
        // (or waiting for a connection), not every request of the run.
        while let Some(joined) = tasks.try_join_next() {
            joined.context("a request task panicked")?;
        }
        let kind = match workload {
            Workload::Mixed if i % 10 == 0 => Workload::Post,
            Workload::Mixed => Workload::List,
            other => other,
        };
        let request = match kind {
            Workload::Health => client.get(format!("{url}/health")),
            Workload::List => client
                .get(format!("{url}/pins?limit=10"))
                .bearer_auth(token),
            _ => {
                *sequence += 1;
                client
                    .post(format!("{url}/pins"))
                    .bearer_auth(token)
                    .json(&serde_json::json!({"cid": bench_cid(&tag, *sequence as usize)}))
            }
        };
        let (slots, histogram, errors) = (slots.clone(), histogram.clone(), errors.clone());
        tasks.spawn(async move {
            // Waiting for a free connection is part of the latency (from `scheduled`).
            let _slot = slots.acquire_owned().await;
            let ok = match request.send().await {
                Ok(response) => {
                    let ok = response.status().is_success();
                    let _ = response.bytes().await;
                    ok
                }
                Err(_) => false,
            };
            let micros = scheduled.elapsed().as_micros().max(1) as u64;
            if !ok {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            let mut histogram = histogram.lock().unwrap_or_else(|e| e.into_inner());
            histogram.saturating_record(micros);
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a request task panicked")?;
    }
    let elapsed = start.elapsed();
    let histogram = histogram.lock().unwrap_or_else(|e| e.into_inner());
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Ok(Figures {
        workload: format!("{workload:?}").to_lowercase(),
        target_rate: args.rate,
        sent: total,
        achieved_rate: total as f64 / elapsed.as_secs_f64().max(1e-9),
        errors: errors.load(Ordering::Relaxed),
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: histogram.max() as f64 / 1000.0,
    })
}
