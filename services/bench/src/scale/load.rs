//! The HTTP load generator of a scale run: `concurrency` tokio tasks, each looping over one
//! keep-alive connection of a shared reqwest client (so exactly `concurrency` requests are in
//! flight), on this process's own runtime. The same generator measures `GET /health` (the
//! baseline) and `POST /pins`, so their ratio compares the server, not two clients.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use reqwest::StatusCode;

use super::workload::Workload;

/// Attempts of one `POST /pins` answered 429/503 (backpressure) before the run fails.
const POST_ATTEMPTS: usize = 5;

pub struct LoadFigures {
    pub requests: u64,
    pub elapsed: Duration,
    /// Requests answered 429/503 and sent again.
    pub retried: u64,
}

impl LoadFigures {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

pub fn client(concurrency: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()?)
}

/// `GET url` from `concurrency` loops for `duration`; every answer must be 200.
pub async fn get_for(
    client: &reqwest::Client,
    url: &str,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<LoadFigures> {
    let answered = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let end = started + duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, url, answered) = (client.clone(), url.to_string(), answered.clone());
        workers.spawn(async move {
            while Instant::now() < end {
                let response = client.get(&url).send().await?;
                let status = response.status();
                response.bytes().await?;
                anyhow::ensure!(status == StatusCode::OK, "GET {url} answered {status}");
                answered.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        });
    }
    while let Some(result) = workers.join_next().await {
        result.context("load worker")??;
    }
    Ok(LoadFigures {
        requests: answered.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        retried: 0,
    })
}

/// `POST /pins` for workload pins `0..count` from `concurrency` loops; every pin must be
/// answered 202 (429/503 are retried, bounded). `on_answer` runs once per accepted pin.
pub async fn post_pins(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    workload: &Arc<Workload>,
    count: usize,
    concurrency: usize,
    on_answer: impl Fn() + Send + Sync + 'static,
) -> anyhow::Result<LoadFigures> {
    let next = Arc::new(AtomicUsize::new(0));
    let retried = Arc::new(AtomicU64::new(0));
    let on_answer = Arc::new(on_answer);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, url, secret) = (client.clone(), format!("{url}/pins"), secret.to_string());
        let (workload, next, retried, on_answer) = (
            workload.clone(),
            next.clone(),
            retried.clone(),
            on_answer.clone(),
        );
        workers.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    return anyhow::Ok(());
                }
                let body = workload.pin_body(index);
                let mut attempt = 1;
                loop {
                    let response = client
                        .post(&url)
                        .bearer_auth(&secret)
                        .json(&body)
                        .send()
                        .await?;
                    let status = response.status();
                    let text = response.bytes().await?;
                    if status == StatusCode::ACCEPTED {
                        break;
                    }
                    let backpressure = status == StatusCode::TOO_MANY_REQUESTS
                        || status == StatusCode::SERVICE_UNAVAILABLE;
                    anyhow::ensure!(
                        backpressure && attempt < POST_ATTEMPTS,
                        "POST /pins of pin {index} answered {status}: {}",
                        String::from_utf8_lossy(&text)
                    );
                    retried.fetch_add(1, Ordering::Relaxed);
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                }
                on_answer();
            }
        });
    }
    while let Some(result) = workers.join_next().await {
        result.context("load worker")??;
    }
    Ok(LoadFigures {
        requests: count as u64,
        elapsed: started.elapsed(),
        retried: retried.load(Ordering::Relaxed),
    })
}

/// Polls `url` every 10 ms until it answers 200; returns how long that took from `since`.
pub async fn time_until_ok(
    client: &reqwest::Client,
    url: &str,
    secret: Option<&str>,
    since: Instant,
    deadline: Duration,
    server: &mut super::process::ServerProcess,
) -> anyhow::Result<Duration> {
    loop {
        let mut request = client.get(url).timeout(Duration::from_secs(2));
        if let Some(secret) = secret {
            request = request.bearer_auth(secret);
        }
        if let Ok(response) = request.send().await {
            if response.status() == StatusCode::OK {
                return Ok(since.elapsed());
            }
        }
        server.ensure_alive()?;
        anyhow::ensure!(
            since.elapsed() < deadline,
            "GET {url} did not answer 200 within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// GETs `url` with the bearer token and parses the JSON body (must be 200).
pub async fn get_json(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
) -> anyhow::Result<serde_json::Value> {
    let response = client.get(url).bearer_auth(secret).send().await?;
    let status = response.status();
    let text = response.bytes().await?;
    anyhow::ensure!(
        status == StatusCode::OK,
        "GET {url} answered {status}: {}",
        String::from_utf8_lossy(&text)
    );
    serde_json::from_slice(&text).with_context(|| format!("GET {url}: malformed JSON"))
}
