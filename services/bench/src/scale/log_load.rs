//! The log path of a scale run: pins appended to the stopped server's embedded log as the
//! records `POST /pins` would write, then the restarted server timed while it catches up.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use pinhive_log::{EmbeddedLog, EmbeddedLogConfig, Log};

use super::load::get_json;
use super::process::ServerProcess;
use super::workload::Workload;
use super::{pinned_count, APPEND_CHUNK};
use crate::pipeline::progress;

/// Appends the `PinRequested` records of pins `range` to the stopped server's embedded log
/// (`<data dir>/log`, where `pinhive serve` keeps it); returns how long the appends took.
pub async fn append_to_log(
    data_dir: &Path,
    partitions: u32,
    workload: &Workload,
    range: std::ops::Range<usize>,
) -> anyhow::Result<Duration> {
    let log_dir = data_dir.join("log");
    let log = EmbeddedLog::open(
        &log_dir,
        EmbeddedLogConfig {
            partitions,
            ..EmbeddedLogConfig::default()
        },
    )
    .with_context(|| format!("opening the stopped server's log in {}", log_dir.display()))?;
    let bar = progress(range.len() as u64, "PinRequested → log");
    // Created times after every HTTP pin's, one nanosecond apart (as the API's clock makes
    // them), so `before` pagination sees no ties.
    let base_ns = pinhive_events::now_ns();
    let started = Instant::now();
    let first = range.start;
    let indexes: Vec<usize> = range.collect();
    for chunk in indexes.chunks(APPEND_CHUNK) {
        let mut records = Vec::with_capacity(chunk.len());
        for &index in chunk {
            records.extend(workload.pin_records(index, base_ns + (index - first) as i64)?);
        }
        log.append(records).await.context("appending to the log")?;
        bar.inc(chunk.len() as u64);
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    Ok(elapsed)
}

/// Polls the restarted server until every shard's lag is 0 and `target` pins are pinned;
/// returns the events its shards applied since it started and the time since `started` (its
/// spawn).
pub async fn catch_up(
    client: &reqwest::Client,
    server: &mut ServerProcess,
    secret: &str,
    target: u64,
    started: Instant,
    deadline: Duration,
) -> anyhow::Result<(u64, Duration)> {
    let bar = progress(target, "log pins → pinned (restart)");
    loop {
        let figures = async {
            let shards = get_json(client, &format!("{}/admin/shards", server.url), secret).await?;
            let pinned = pinned_count(client, server, secret).await?;
            anyhow::Ok((shards, pinned))
        }
        .await;
        if let Ok((shards, pinned)) = figures {
            let list = shards["shards"].as_array().cloned().unwrap_or_default();
            let events: u64 = list
                .iter()
                .filter_map(|s| s["snapshot"]["events_applied"].as_u64())
                .sum();
            let lag: u64 = list.iter().filter_map(|s| s["lag_bytes"].as_u64()).sum();
            bar.set_position(pinned);
            if !list.is_empty() && lag == 0 && pinned >= target {
                bar.finish_and_clear();
                return Ok((events, started.elapsed()));
            }
        }
        server.ensure_alive()?;
        anyhow::ensure!(
            started.elapsed() < deadline,
            "the restarted server did not catch up within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
