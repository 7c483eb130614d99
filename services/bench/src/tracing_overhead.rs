//! `pinhive bench --tracing-overhead`: the same workload against three real `pinhive serve`
//! processes (simulated IPFS fleet) — traces off, OTLP export at sampling 1.0, and at 0.01 —
//! with an OTLP/gRPC receiver in this process taking the spans. Reported as ratios to "off"
//! measured in the same run.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use pinhive_store::{EmbeddedStore, Store};

#[derive(Clone, Default)]
struct SpanCounter(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for SpanCounter {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

struct Child_(Child);

impl Drop for Child_ {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Figures {
    accepted_per_second: f64,
    pinned_per_second: f64,
}

async fn run_mode(
    dir: &std::path::Path,
    otlp: Option<(&str, f64)>,
    pins: usize,
    concurrency: usize,
) -> anyhow::Result<Figures> {
    let data = dir.join(match otlp {
        None => "off".to_string(),
        Some((_, ratio)) => format!("ratio-{ratio}"),
    });
    let secret = {
        let store = EmbeddedStore::open(&data.join("store"))?;
        let secret = crate::put_token(&store, "bench", false)?;
        store.flush()?;
        secret
    };
    let listen = free_addr()?;
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(["serve", "--ipfs-simulated", "16", "--data-dir"])
        .arg(&data)
        .args(["--listen", &listen.to_string()])
        .env("PINHIVE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some((endpoint, ratio)) = otlp {
        command.args([
            "--otlp-endpoint",
            endpoint,
            "--trace-sample-ratio",
            &ratio.to_string(),
        ]);
    }
    let _child = Child_(command.spawn().context("starting pinhive serve")?);
    let url = format!("http://{listen}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = client.get(format!("{url}/ready")).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "pinhive did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    let accepted =
        crate::pipeline::post_pins(&url, &secret, "trace", pins, concurrency, || {}).await?;
    loop {
        let body: serde_json::Value = client
            .get(format!("{url}/pins?status=pinned&limit=1"))
            .bearer_auth(&secret)
            .send()
            .await?
            .json()
            .await?;
        if body["count"].as_u64() >= Some(pins as u64) {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "pins did not converge"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pinned = started.elapsed();
    Ok(Figures {
        accepted_per_second: pins as f64 / accepted.as_secs_f64(),
        pinned_per_second: pins as f64 / pinned.as_secs_f64(),
    })
}

pub fn run(pins: usize, concurrency: usize, rounds: usize) -> anyhow::Result<()> {
    let rounds = rounds.max(1);
    let dir = tempfile::tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let counter = SpanCounter::default();
        let receiver = free_addr()?;
        let service = TraceServiceServer::new(counter.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve(receiver),
        );
        let endpoint = format!("http://{receiver}");
        println!("pinhive bench --tracing-overhead: {pins} pins per mode and round, {rounds} rounds, concurrency {concurrency}, 16 simulated nodes");
        // Interleaved rounds, median per mode: this machine's noise is larger than the effect.
        let modes: [Option<f64>; 3] = [None, Some(1.0), Some(0.01)];
        let mut figures: Vec<Vec<Figures>> = vec![Vec::new(), Vec::new(), Vec::new()];
        let mut spans = [0u64; 3];
        for round in 0..rounds {
            for (m, ratio) in modes.iter().enumerate() {
                let before = counter.0.load(Ordering::Relaxed);
                let dir = dir.path().join(format!("round-{round}"));
                std::fs::create_dir_all(&dir)?;
                let otlp = ratio.map(|r| (endpoint.as_str(), r));
                figures[m].push(run_mode(&dir, otlp, pins, concurrency).await?);
                if round + 1 == rounds && ratio.is_some() {
                    // Let the batch exporter deliver what it holds before counting.
                    tokio::time::sleep(Duration::from_secs(6)).await;
                    spans[m] = counter.0.load(Ordering::Relaxed) - before;
                }
            }
        }
        let median = |values: &mut Vec<f64>| {
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        let medians: Vec<Figures> = figures
            .iter()
            .map(|runs| Figures {
                accepted_per_second: median(&mut runs.iter().map(|f| f.accepted_per_second).collect()),
                pinned_per_second: median(&mut runs.iter().map(|f| f.pinned_per_second).collect()),
            })
            .collect();
        let (off, full, sampled) = (&medians[0], &medians[1], &medians[2]);
        let (full_spans, sampled_spans) = (spans[1], spans[2]);
        println!();
        println!(
            "{:<26} {:>16} {:>8} {:>16} {:>8} {:>14}",
            "mode", "POST 202/s", "ratio", "pins pinned/s", "ratio", "spans received"
        );
        for (name, figures, spans) in [
            ("traces off", off, 0),
            ("OTLP, sampling 1.0", full, full_spans),
            ("OTLP, sampling 0.01", sampled, sampled_spans),
        ] {
            println!(
                "{name:<26} {:>16.0} {:>7.3}x {:>16.0} {:>7.3}x {:>14}",
                figures.accepted_per_second,
                figures.accepted_per_second / off.accepted_per_second,
                figures.pinned_per_second,
                figures.pinned_per_second / off.pinned_per_second,
                spans
            );
        }
        println!("medians of {rounds} interleaved rounds; ratios against \"traces off\" of the same run; spans counted in the last round");
        anyhow::Ok(())
    })
}
