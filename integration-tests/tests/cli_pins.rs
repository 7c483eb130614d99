//! `pinhive pins import|export|ls|status|rm` against the real binary and a real service over HTTP: a large
//! import with malformed lines, killed and restarted, lands every valid pin exactly once and
//! reports each bad line by number; an export imported into a fresh deployment gives the same
//! listing; 429s from the rate limit are waited out. No IPFS node is needed: the service
//! accepts pins (`queued`) while its node is unreachable.

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pinhive_integration_tests::{binary, create_token, eventually, free_port, Client, Pinhive};
use serde_json::Value;

/// Lines of the large import: 100,000, what the issue asks for (`PINHIVE_IMPORT_TEST_LINES`
/// sets another size for a quicker local run). In a debug build the import alone took 55 s
/// here (1,806 pins/s at --concurrency 32, 2 shared cores, measured 2026-11-26).
const IMPORT_LINES: usize = 100_000;
/// Every 100th line is malformed (1%).
const BAD_EVERY: usize = 100;

/// A CIDv1 (raw, sha256) of `i`, computed with the `cid` crate.
fn cid_of(i: usize) -> String {
    use cid::multihash::Multihash;
    let digest = {
        // sha2-256 code 0x12; any 32 bytes unique per i make a valid CID.
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&(i as u64).to_be_bytes());
        bytes[8..16].copy_from_slice(&0x5eed_u64.to_be_bytes());
        bytes
    };
    let hash = Multihash::<64>::wrap(0x12, &digest).expect("multihash");
    cid::Cid::new_v1(0x55, hash).to_string()
}

fn no_node() -> String {
    format!("ipfs-a=http://127.0.0.1:{}", free_port())
}

fn cli(pinhive: &Pinhive, token: &str, args: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command
        .args(args)
        .env("PINHIVE_URL", &pinhive.url)
        .env("PINHIVE_TOKEN", token)
        // No profile of the machine running the tests.
        .env("XDG_CONFIG_HOME", pinhive.data_dir.with_extension("config"))
        .stdin(Stdio::null());
    command
}

fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {} stderr {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// Every pin of the owner (all statuses) as (cid, name, meta), counted: the listing a fresh
/// import must reproduce, and the exactly-once check.
async fn listing(client: &Client) -> BTreeMap<(String, Option<String>, String), usize> {
    let mut pins = BTreeMap::new();
    let mut before: Option<String> = None;
    loop {
        let mut path = "/pins?status=queued,pinning,pinned,failed&limit=1000".to_string();
        if let Some(b) = &before {
            path.push_str(&format!("&before={}", b.replace(':', "%3A")));
        }
        let (status, body) = client.get(&path).await;
        assert_eq!(status, 200, "{body}");
        let page = body["results"].as_array().cloned().unwrap_or_default();
        let Some(last) = page.last() else { break };
        before = last["created"].as_str().map(str::to_string);
        for pin in &page {
            let key = (
                pin["pin"]["cid"].as_str().unwrap().to_string(),
                pin["pin"]["name"].as_str().map(str::to_string),
                pin["pin"]["meta"].to_string(),
            );
            *pins.entry(key).or_insert(0) += 1;
        }
    }
    pins
}

async fn count(client: &Client) -> u64 {
    let (status, body) = client
        .get("/pins?status=queued,pinning,pinned,failed&limit=1")
        .await;
    assert_eq!(status, 200, "{body}");
    body["count"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_import_of_many_cids_finishes_on_rerun_with_each_valid_pin_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "importer", false).unwrap();
    let node = no_node();
    // The rate limit off: this test is about exactly-once, not about 429s (the next one).
    let pinhive = Pinhive::start(&data, &["--ipfs-node", &node, "--rate-limit-per-sec", "0"])
        .await
        .unwrap();
    let client = Client::new(&pinhive.url, &token).without_reachable_node();

    let lines: usize = std::env::var("PINHIVE_IMPORT_TEST_LINES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(IMPORT_LINES);
    let input = dir.path().join("cids.txt");
    let mut text = String::new();
    let mut valid = Vec::new();
    let mut bad_lines = Vec::new();
    for i in 0..lines {
        if i % BAD_EVERY == BAD_EVERY / 2 {
            text.push_str(&format!("not-a-cid-{i}\n"));
            bad_lines.push(i as u64 + 1);
        } else {
            let cid = cid_of(i);
            text.push_str(&cid);
            text.push('\n');
            valid.push(cid);
        }
    }
    std::fs::write(&input, text).unwrap();
    let input_arg = input.to_str().unwrap();

    // First run: killed once the service holds a quarter of the pins (progress seen, no
    // fixed sleep), with requests in flight.
    let first = std::cell::RefCell::new(
        cli(&pinhive, &token, &["pins", "import", input_arg, "--json"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    eventually(
        Duration::from_secs(300),
        "a quarter of the pins imported",
        || async {
            assert!(
                first.borrow_mut().try_wait().unwrap().is_none(),
                "the import ended before it was killed"
            );
            (count(&client).await >= (valid.len() / 4) as u64).then_some(())
        },
    )
    .await;
    let mut first = first.into_inner();
    first.kill().unwrap();
    first.wait().unwrap();
    let after_kill = count(&client).await;
    assert!(
        after_kill < valid.len() as u64,
        "killed too late: {after_kill}"
    );

    // Second run: finishes; each bad line reported with its number; exit 3 (lines failed).
    let started = Instant::now();
    let output = cli(&pinhive, &token, &["pins", "import", input_arg, "--json"])
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    let summary = json_of(&output);
    assert_eq!(output.status.code(), Some(3), "{summary}");
    assert_eq!(summary["complete"], true, "{summary}");
    assert_eq!(summary["lines_read"], lines as u64);
    let failed: Vec<u64> = summary["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["line"].as_u64().unwrap())
        .collect();
    assert_eq!(failed, bad_lines);
    assert!(summary["failures"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("invalid cid"));
    let imported = summary["imported"].as_u64().unwrap();
    let skipped = summary["already_imported"].as_u64().unwrap();
    let found = summary["found_on_service"].as_u64().unwrap();
    assert_eq!(imported + skipped + found, valid.len() as u64, "{summary}");
    assert!(skipped > 0 && imported > 0, "{summary}");
    eprintln!(
        "second run: {imported} imported in {elapsed:?}, {skipped} skipped by the journal, \
         {found} found on the service"
    );

    // Every valid CID exactly once; nothing else.
    let pins = listing(&client).await;
    let duplicated: Vec<_> = pins.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "duplicates: {duplicated:?}");
    let mut listed: Vec<String> = pins.keys().map(|(cid, _, _)| cid.clone()).collect();
    listed.sort();
    valid.sort();
    assert_eq!(listed.len(), valid.len());
    assert!(listed == valid, "the listing differs from the valid lines");

    // A third run sends nothing.
    let output = cli(&pinhive, &token, &["pins", "import", input_arg, "--json"])
        .output()
        .unwrap();
    let summary = json_of(&output);
    assert_eq!(summary["imported"], 0, "{summary}");
    assert_eq!(summary["already_imported"], valid.len() as u64, "{summary}");
    assert_eq!(count(&client).await, valid.len() as u64);
}

/// CSV with names and meta, imported through a rate limit low enough to answer 429s, exported,
/// and imported into a fresh deployment: the same listing.
#[tokio::test(flavor = "multi_thread")]
async fn export_then_import_into_a_fresh_deployment_gives_the_same_listing() {
    const PINS: usize = 600;
    let dir = tempfile::tempdir().unwrap();
    let (data_a, data_b) = (dir.path().join("a"), dir.path().join("b"));
    let token_a = create_token(&data_a, "alice", false).unwrap();
    let token_b = create_token(&data_b, "alice", false).unwrap();
    let node = no_node();
    let limited = [
        "--ipfs-node",
        &node,
        "--rate-limit-per-sec",
        "200",
        "--rate-limit-burst",
        "20",
    ];
    let a = Pinhive::start(&data_a, &limited).await.unwrap();
    let b = Pinhive::start(&data_b, &["--ipfs-node", &node])
        .await
        .unwrap();

    let input = dir.path().join("pins.csv");
    let mut text = String::from("cid,name,meta.source,meta\n");
    for i in 0..PINS {
        let name = if i % 3 == 0 {
            String::new()
        } else {
            format!("\"file {i}, v2\"")
        };
        text.push_str(&format!(
            "{},{name},bucket-{},\"{{\"\"n\"\":\"\"{i}\"\"}}\"\n",
            cid_of(1_000_000 + i),
            i % 4
        ));
    }
    std::fs::write(&input, text).unwrap();
    let output = cli(
        &a,
        &token_a,
        &["pins", "import", input.to_str().unwrap(), "--json"],
    )
    .output()
    .unwrap();
    let summary = json_of(&output);
    assert_eq!(output.status.code(), Some(0), "{summary}");
    assert_eq!(summary["imported"], PINS as u64, "{summary}");
    assert!(
        summary["retries"].as_u64().unwrap() > 0,
        "200/s with a burst of 20 must have answered 429s: {summary}"
    );

    // Export, then again after cutting the file as an interrupted export leaves it.
    let export = dir.path().join("export.jsonl");
    let output = cli(
        &a,
        &token_a,
        &["pins", "export", "-o", export.to_str().unwrap()],
    )
    .output()
    .unwrap();
    assert!(output.status.success(), "{output:?}");
    let exported = std::fs::read_to_string(&export).unwrap();
    assert_eq!(exported.lines().count(), PINS);
    // 250 whole lines and part of the next one; --output FILE continues after the 250th.
    let cut = exported
        .lines()
        .take(250)
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        + &exported.lines().nth(250).unwrap()[..40];
    std::fs::write(&export, cut).unwrap();
    let output = cli(
        &a,
        &token_a,
        &["pins", "export", "-o", export.to_str().unwrap()],
    )
    .output()
    .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(std::fs::read_to_string(&export).unwrap(), exported);

    let output = cli(
        &b,
        &token_b,
        &["pins", "import", export.to_str().unwrap(), "--json"],
    )
    .output()
    .unwrap();
    let summary = json_of(&output);
    assert_eq!(output.status.code(), Some(0), "{summary}");
    let client_a = Client::new(&a.url, &token_a).without_reachable_node();
    let client_b = Client::new(&b.url, &token_b).without_reachable_node();
    let listing_a = listing(&client_a).await;
    assert_eq!(listing_a.values().sum::<usize>(), PINS);
    assert_eq!(listing_a, listing(&client_b).await);
}

/// `pins ls|status|rm` for scripts: JSON lines, tab-separated rows, exit 3 for an unknown
/// request id; the URL and token from a profile of the CLI config file.
#[tokio::test(flavor = "multi_thread")]
async fn ls_status_and_rm_answer_scripts_with_json_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "scripts", false).unwrap();
    let node = no_node();
    let pinhive = Pinhive::start(&data, &["--ipfs-node", &node])
        .await
        .unwrap();
    let client = Client::new(&pinhive.url, &token).without_reachable_node();
    let mut requestids = Vec::new();
    for i in 0..5 {
        let (status, body) = client
            .pin(serde_json::json!({"cid": cid_of(2_000_000 + i), "name": format!("n{i}")}))
            .await;
        assert_eq!(status, 202, "{body}");
        requestids.push(body["requestid"].as_str().unwrap().to_string());
    }

    // The service from a profile only: no flags, no PINHIVE_URL / PINHIVE_TOKEN.
    let config = dir.path().join("config");
    std::fs::create_dir_all(config.join("pinhive")).unwrap();
    std::fs::write(
        config.join("pinhive/cli.toml"),
        format!("[ops]\nurl = \"{}\"\ntoken = \"{token}\"\n", pinhive.url),
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(binary())
            .args(args)
            .args(["--profile", "ops"])
            .env_remove("PINHIVE_URL")
            .env_remove("PINHIVE_TOKEN")
            .env("XDG_CONFIG_HOME", &config)
            .output()
            .unwrap()
    };
    let output = run(&["pins", "ls", "--json", "--limit", "3"]);
    assert!(output.status.success(), "{output:?}");
    let listed: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let newest: Vec<&str> = listed
        .iter()
        .map(|p| p["requestid"].as_str().unwrap())
        .collect();
    assert_eq!(newest, [&requestids[4], &requestids[3], &requestids[2]]);
    let output = run(&["pins", "ls", "--limit", "0", "--name", "n1"]);
    let text = String::from_utf8(output.stdout).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 1, "{text}");
    assert_eq!(
        (rows[0][0], rows[0][1], rows[0][4]),
        (requestids[1].as_str(), "queued", "n1")
    );

    let output = run(&["pins", "status", &requestids[0], "--json"]);
    assert!(output.status.success(), "{output:?}");
    let pin: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(pin["pin"]["name"], "n0");
    let output = run(&["pins", "status", &requestids[0], "no-such-pin"]);
    assert_eq!(output.status.code(), Some(3), "{output:?}");

    let output = run(&["pins", "rm", &requestids[0], "--json"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let output = run(&["pins", "rm", &requestids[0]]);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    let (status, _) = client.get(&format!("/pins/{}", requestids[0])).await;
    assert_eq!(status, 404);

    // A wrong token stops with exit 1 and says what to check.
    let output = Command::new(binary())
        .args(["pins", "ls", "--url", &pinhive.url, "--token", "wrong"])
        .env("XDG_CONFIG_HOME", &config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("401"),
        "{output:?}"
    );
}
