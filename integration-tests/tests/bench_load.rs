//! `pinhive bench load` runs against its own `pinhive serve` child: every scheduled request is
//! sent and answered, and the figures are well formed. A smoke test of the tool, not a
//! performance claim (those come from runs of the benchmark, bench/wrk/README.md).

use std::process::Command;

use pinhive_integration_tests::binary;

#[test]
fn bench_load_sends_every_scheduled_request_and_reports_percentiles() {
    let output = Command::new(binary())
        .args([
            "bench",
            "load",
            "--rate",
            "40",
            "--duration-secs",
            "1",
            "--workload",
            "post,list",
            "--json",
        ])
        .env_remove("PINHIVE_TOKEN")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let rows: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let workloads: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["workload"].as_str().unwrap())
        .collect();
    assert_eq!(workloads, ["health", "post", "health", "list"]);
    for row in rows.as_array().unwrap() {
        assert_eq!(row["sent"], 40, "{row}");
        assert_eq!(row["errors"], 0, "{row}");
        let (p50, p99, max) = (
            row["p50_ms"].as_f64().unwrap(),
            row["p99_ms"].as_f64().unwrap(),
            row["max_ms"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{row}");
    }
}
