//! Listing walks: `GET /pins?limit=1000` page after page, each page's `before` being the
//! `created` of the previous page's last result, timing every page. Shallow and deep pages are
//! compared: a listing whose cost grows with depth shows a deep/first ratio above 1.

use std::time::{Duration, Instant};

use anyhow::Context;

use super::load::get_json;

pub const PAGE: usize = 1000;
/// Every status: the walk visits every pin of the owner.
pub const ALL_STATUSES: &str = "status=queued,pinning,pinned,failed";

pub struct Walk {
    pub label: String,
    /// Latency of each page that returned results, in walk order.
    pub pages: Vec<Duration>,
    pub pins_seen: usize,
    /// `count` of the first page (the total the server reports for the filter).
    pub count_reported: u64,
    /// The walk stopped at `--max-pages` before the last page.
    pub capped: bool,
}

pub struct Percentiles {
    pub p50: Duration,
    pub p99: Duration,
}

impl Walk {
    /// Latencies of the first tenth of the pages (at least one page).
    pub fn first(&self) -> Percentiles {
        let tenth = (self.pages.len() / 10).max(1).min(self.pages.len());
        percentiles(&self.pages[..tenth])
    }

    /// Latencies of the deepest tenth of the pages (at least one page).
    pub fn deep(&self) -> Percentiles {
        let tenth = (self.pages.len() / 10).max(1).min(self.pages.len());
        percentiles(&self.pages[self.pages.len() - tenth..])
    }

    pub fn deep_over_first(&self) -> f64 {
        self.deep().p50.as_secs_f64() / self.first().p50.as_secs_f64().max(1e-9)
    }
}

/// Nearest-rank percentiles; zero for an empty slice.
fn percentiles(samples: &[Duration]) -> Percentiles {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let at = |q: f64| {
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    };
    Percentiles {
        p50: at(0.50),
        p99: at(0.99),
    }
}

/// Walks every page of `GET /pins?limit=1000&{filter}` (at most `max_pages`).
pub async fn walk(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    label: &str,
    filter: &str,
    max_pages: Option<usize>,
    deadline: Duration,
) -> anyhow::Result<Walk> {
    let started = Instant::now();
    let mut walk = Walk {
        label: label.to_string(),
        pages: Vec::new(),
        pins_seen: 0,
        count_reported: 0,
        capped: false,
    };
    let mut before: Option<String> = None;
    loop {
        if max_pages.is_some_and(|max| walk.pages.len() >= max) {
            walk.capped = true;
            return Ok(walk);
        }
        anyhow::ensure!(
            started.elapsed() < deadline,
            "walk {label}: not done after {deadline:?} ({} pages)",
            walk.pages.len()
        );
        let mut page_url = format!("{url}/pins?limit={PAGE}&{filter}");
        if let Some(before) = &before {
            // RFC 3339 may carry a `+` offset, which a query string reads as a space.
            page_url.push_str(&format!("&before={}", before.replace('+', "%2B")));
        }
        let page_started = Instant::now();
        let body = get_json(client, &page_url, secret).await?;
        let latency = page_started.elapsed();
        let results = body["results"]
            .as_array()
            .with_context(|| format!("walk {label}: a page without results"))?;
        if walk.pages.is_empty() {
            walk.count_reported = body["count"].as_u64().unwrap_or(0);
        }
        // The empty page that ends a walk whose last full page was exactly full is not a page
        // of results: it would pose as the cheapest "deep" page.
        if results.is_empty() && !walk.pages.is_empty() {
            return Ok(walk);
        }
        walk.pages.push(latency);
        walk.pins_seen += results.len();
        if results.len() < PAGE {
            return Ok(walk);
        }
        let last_created = results
            .last()
            .and_then(|pin| pin["created"].as_str())
            .with_context(|| format!("walk {label}: a result without created"))?;
        before = Some(last_created.to_string());
    }
}
