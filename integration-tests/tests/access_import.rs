//! `pinhive access import` against the real binary: a gateway log with good and bad lines goes
//! through `POST /access`, the summary counts and locates what was skipped, and the server's
//! `pinhive_analytics_access_events_total{result="accepted"}` shows every event sent.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use pinhive_integration_tests::{binary, create_token, eventually, free_port, metric_sum, Pinhive};
use serde_json::Value;

const CIDS: [&str; 3] = [
    "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
    "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",
    "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy",
];
const LINES: u64 = 2_500;

/// Which skip reason a line of the generated log gets, if any (1-based line numbers).
// The workspace's rust-version (1.86) predates `u64::is_multiple_of` (1.87).
#[allow(clippy::manual_is_multiple_of)]
fn expected_skip(line: u64) -> Option<&'static str> {
    match line {
        _ if line % 101 == 0 => Some("unparsable"),
        _ if line % 37 == 0 => Some("bad_cid"),
        _ if line % 23 == 0 => Some("not_gateway_read"),
        _ => None,
    }
}

/// An nginx `combined` log of [`LINES`] lines, some with a `region=` field.
fn write_log(path: &Path) {
    let mut log = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for line in 1..=LINES {
        let cid = CIDS[(line % 3) as usize];
        let ip = format!("10.{}.0.{}", line % 2, line % 250);
        let (method, path, status) = match expected_skip(line) {
            Some("unparsable") => {
                writeln!(log, "{ip} this is not a log line").unwrap();
                continue;
            }
            Some("bad_cid") => ("GET", format!("/ipfs/notacid{line}"), 200),
            Some(_) if line % 2 == 0 => ("POST", format!("/ipfs/{cid}"), 200),
            Some(_) => ("GET", "/ipns/example.org/".to_string(), 200),
            None if line % 4 == 0 => ("GET", format!("/ipfs/{cid}/dir/file?x={line}"), 206),
            None => ("GET", format!("/ipfs/{cid}"), 200),
        };
        let region = if line % 5 == 0 { " region=ap" } else { "" };
        writeln!(
            log,
            r#"{ip} - - [14/Nov/2023:22:13:20 +0000] "{method} {path} HTTP/1.1" {status} {line} "-" "curl/8.4.0" rt=0.001{region}"#
        )
        .unwrap();
    }
    log.flush().unwrap();
}

async fn import(url: &str, token: &str, log: &Path) -> std::process::Output {
    tokio::process::Command::new(binary())
        .args(["access", "import", "--quiet", "--json", "--batch", "300"])
        .args(["--region-field", "region", "--region-map", "10.1.=eu"])
        .args(["--url", url, "--token", token])
        .arg(log)
        .env_remove("PINHIVE_TOKEN")
        .env_remove("PINHIVE_URL")
        .output()
        .await
        .expect("running pinhive access import")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_log_is_imported_through_post_access() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let admin = create_token(&data, "ops", true).unwrap();
    let tenant = create_token(&data, "alice", false).unwrap();
    let closed = format!("http://127.0.0.1:{}", free_port());
    let pinhive = Pinhive::start(&data, &["--ipfs-node", &closed])
        .await
        .unwrap();
    let log = dir.path().join("access.log");
    write_log(&log);

    let output = import(&pinhive.url, &admin, &log).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {stderr}\nserver:\n{}",
        pinhive.log_tail()
    );
    let summary: Value = serde_json::from_slice(&output.stdout).expect("a JSON summary");

    let mut skipped: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for line in 1..=LINES {
        if let Some(reason) = expected_skip(line) {
            skipped.entry(reason).or_default().push(line);
        }
    }
    let valid = LINES
        - skipped
            .values()
            .map(|lines| lines.len() as u64)
            .sum::<u64>();
    assert_eq!(summary["lines_read"], LINES, "{summary:#}");
    assert_eq!(summary["events_sent"], valid, "{summary:#}");
    assert_eq!(summary["events_accepted"], valid, "{summary:#}");
    assert_eq!(summary["complete"], true, "{summary:#}");
    for (reason, lines) in &skipped {
        let entry = &summary["skipped"][reason];
        assert_eq!(entry["count"], lines.len() as u64, "{reason}: {summary:#}");
        let first: Vec<u64> = lines.iter().copied().take(10).collect();
        assert_eq!(entry["first_lines"], serde_json::json!(first), "{reason}");
    }

    let sent = valid as f64;
    eventually(
        Duration::from_secs(30),
        "pinhive_analytics_access_events_total{result=\"accepted\"} to reach the events sent",
        || async {
            let accepted = metric_sum(
                &pinhive.url,
                "pinhive_analytics_access_events_total",
                r#"result="accepted""#,
            )
            .await;
            (accepted >= sent).then_some(())
        },
    )
    .await;

    // Access events are admin-only: a tenant's token is refused, and the import says so.
    let refused = import(&pinhive.url, &tenant, &log).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("(403)"), "stderr: {stderr}");
    let summary: Value = serde_json::from_slice(&refused.stdout).expect("a JSON summary");
    assert_eq!(summary["events_sent"], 0, "{summary:#}");
    assert_eq!(summary["complete"], false, "{summary:#}");
}
