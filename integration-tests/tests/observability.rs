//! Observability against real components: a real Prometheus server scrapes a running pinhive
//! (which pins through a real js-ipfs daemon); the alert rules and scrape config in `infra/`
//! pass promtool; every Grafana dashboard query parses on that Prometheus and names only
//! metrics pinhive exports.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pinhive_integration_tests::{
    create_token, eventually, free_port, workspace_root, Client, IpfsDaemon, Pinhive,
};
use serde_json::{json, Value};

struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    async fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: pinhive\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus installed (scripts/setup.sh)");
        let url = format!("http://127.0.0.1:{port}");
        let prometheus = Prometheus {
            child,
            url,
            _dir: dir,
        };
        eventually(Duration::from_secs(60), "prometheus ready", || async {
            let r = reqwest::get(format!("{}/-/ready", prometheus.url))
                .await
                .ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        prometheus
    }

    async fn query(&self, expr: &str) -> Value {
        reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until a query that returns one sample returns one that satisfies `expected`
    /// (described by `what`). Not the first sample: a scrape is a snapshot taken every second,
    /// and what pinhive exports can still change after the test's last wait (a gauge set by a
    /// health check, a counter incremented by a request that was still being answered...).
    async fn value_where(&self, expr: &str, what: &str, expected: impl Fn(f64) -> bool) -> f64 {
        eventually(
            Duration::from_secs(60),
            &format!("{expr} {what}"),
            || async {
                let body = self.query(expr).await;
                let value: f64 = body["data"]["result"][0]["value"][1]
                    .as_str()?
                    .parse()
                    .ok()?;
                expected(value).then_some(value)
            },
        )
        .await
    }

    async fn equals(&self, expr: &str, expected: f64) -> f64 {
        self.value_where(expr, &format!("== {expected}"), |v| v == expected)
            .await
    }

    async fn at_least(&self, expr: &str, min: f64) -> f64 {
        self.value_where(expr, &format!(">= {min}"), |v| v >= min)
            .await
    }
}

/// Sum of the samples of `name` whose labels include every `labels` pair, in a Prometheus text
/// exposition (0 when there is none).
fn exported_value(exposition: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    exposition
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn promtool(args: &[&str], dir: &Path) {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool installed (scripts/setup.sh)");
    assert!(
        output.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn prometheus_config_and_alert_rules_are_valid() {
    let dir = workspace_root().join("infra/prometheus");
    promtool(&["check", "config", "prometheus.yml"], &dir);
    promtool(&["check", "config", "prometheus-cluster.yml"], &dir);
    promtool(&["check", "rules", "alerts.yml"], &dir);
    promtool(&["test", "rules", "alerts_test.yml"], &dir);
}

/// Metric names a PromQL expression mentions.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(found) = expr[i..].find("pinhive_") {
        let start = i + found;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        names.insert(expr[start..end].to_string());
        i = end;
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_pinhive_and_dashboards_query_real_series() {
    let ipfs = IpfsDaemon::start().await.expect("js-ipfs daemon");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "alice", false).unwrap();
    let node = format!("ipfs-a={}", ipfs.api_url);
    let pinhive = Pinhive::start(&data, &["--ipfs-node", &node])
        .await
        .unwrap();
    let client = Client::new(&pinhive.url, &token);
    let cid = ipfs.add(b"observability", 1).await.unwrap();
    client.pin_and_wait_pinned(json!({"cid": cid})).await;
    // Waiting for `pinned` polls `GET /pins/{requestid}`, which answers 404 until the shard
    // applied the request (read-your-writes is best effort: the POST may answer first). So
    // count the 404s of that route before the one this test makes.
    let metrics = || async {
        reqwest::get(format!("{}/metrics", pinhive.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let not_found_route = [("route", "/pins/{requestid}"), ("status", "404")];
    let not_found_before = exported_value(
        &metrics().await,
        "pinhive_http_requests_total",
        &not_found_route,
    );
    assert_eq!(client.get("/pins/missing").await.0, 404);

    let target = pinhive.url.trim_start_matches("http://");
    let prometheus = Prometheus::start(target).await;
    prometheus
        .equals(r#"sum(pinhive_pins{status="pinned"})"#, 1.0)
        .await;
    prometheus
        .equals(r#"pinhive_ipfs_node_up{node="ipfs-a"}"#, 1.0)
        .await;
    prometheus
        .equals(r#"sum(pinhive_replicas{kind="pinned"})"#, 1.0)
        .await;
    prometheus
        .equals(
            r#"pinhive_http_requests_total{route="/pins",method="POST",status="202"}"#,
            1.0,
        )
        .await;
    prometheus
        .equals(
            r#"sum(pinhive_http_requests_total{route="/pins/{requestid}",status="404"})"#,
            not_found_before + 1.0,
        )
        .await;
    prometheus
        .at_least("pinhive_log_appended_records_total", 3.0)
        .await;
    prometheus
        .at_least(
            r#"sum(pinhive_ipfs_rpc_seconds_count{call="pin/add"})"#,
            1.0,
        )
        .await;

    // Exported names (histograms export _bucket/_sum/_count).
    let exposition = metrics().await;
    let exported: BTreeSet<String> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    let known = |name: &str| {
        exported.contains(name)
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|base| exported.contains(base))
            })
    };
    for rules in ["infra/prometheus/alerts.yml"] {
        let text = std::fs::read_to_string(workspace_root().join(rules)).unwrap();
        for name in metric_names(&text) {
            assert!(
                known(&name),
                "{rules} uses {name}, which pinhive does not export"
            );
        }
    }
    let dashboards = workspace_root().join("infra/grafana/dashboards");
    let mut queries = 0;
    for entry in std::fs::read_dir(&dashboards).unwrap() {
        let path = entry.unwrap().path();
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                let body = prometheus.query(expr).await;
                assert_eq!(
                    body["status"],
                    "success",
                    "{}: {expr}: {body}",
                    path.display()
                );
                for name in metric_names(expr) {
                    assert!(
                        known(&name),
                        "{}: {expr} uses {name}, not exported",
                        path.display()
                    );
                }
                queries += 1;
            }
        }
    }
    assert!(queries >= 20, "{queries} dashboard queries checked");
}
