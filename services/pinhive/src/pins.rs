//! `pinhive pins`: pins of a running service, through its API (never the data dir; the URL and
//! token come from flags, the environment or a profile: [`api`]). `import` pins a file of CIDs
//! ([`import`]); `export`, `ls`, `status` and `rm` read and remove pins ([`listing`]);
//! `recover` retries the failed
//! replicas of one pin (`REQUESTID`) or of every failed pin of the token's owner
//! (`--all-failed`) now, with their automatic retries started over
//! (`POST /admin/pins/{requestid}/recover`); `expire` sets or clears a pin's expiry
//! (`/admin/pins/{requestid}/expiry`).

pub(crate) mod api;
mod import;
mod input;
mod journal;
mod listing;

use std::process::ExitCode;

use anyhow::bail;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use api::{Api, Connection};

#[derive(Subcommand, Debug)]
pub enum PinsCommand {
    /// Pin every line of a file (a CID per line, CSV or JSON lines; `-` for stdin) through
    /// `POST /pins`. Resumable: a re-run skips what its journal lists. Exit 0: all imported;
    /// 1: stopped (service, credentials, input); 2: bad arguments; 3: some lines failed.
    Import(import::ImportArgs),
    /// Every pin as JSON lines (`PinStatus`), newest first; resumable (`--before CURSOR`,
    /// or `--output FILE` again).
    Export(listing::ExportArgs),
    /// List pins, newest first (tab-separated requestid, status, created, cid, name; or --json).
    Ls(listing::LsArgs),
    /// Show pins by request id (exit 3 if one is not found).
    Status(listing::ByIdArgs),
    /// Remove pins by request id (exit 3 if one is not found).
    Rm(listing::ByIdArgs),
    /// Retry a failed pin now (its failed replicas start their automatic retries over).
    Recover {
        /// The pin to recover.
        #[arg(required_unless_present = "all_failed", conflicts_with = "all_failed")]
        requestid: Option<String>,
        /// Every pin of the token's owner whose status is `failed`, walked page by page
        /// through `GET /pins?status=failed`.
        #[arg(long)]
        all_failed: bool,
        /// Pins listed per page with --all-failed (1..=1000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
        page: u16,
        #[command(flatten)]
        connection: Connection,
    },
    /// Set or clear a pin's expiry (`PUT`/`DELETE /admin/pins/{requestid}/expiry`): at that
    /// time the pin is unpinned, as if its owner had deleted it.
    Expire {
        /// The pin.
        requestid: String,
        /// When it expires: an RFC 3339 time with a zone, after now
        /// (e.g. 2027-01-31T00:00:00Z).
        #[arg(long, required_unless_present = "clear", conflicts_with = "clear")]
        at: Option<String>,
        /// Remove its expiry: the pin stays until deleted.
        #[arg(long)]
        clear: bool,
        #[command(flatten)]
        connection: Connection,
    },
}

pub fn run(command: PinsCommand) -> ExitCode {
    let result = match command {
        PinsCommand::Import(args) => return import::run(args),
        PinsCommand::Export(args) => listing::export(args).map(|()| None),
        PinsCommand::Ls(args) => listing::ls(args).map(|()| None),
        PinsCommand::Status(args) => listing::by_id(args, false).map(Some),
        PinsCommand::Rm(args) => listing::by_id(args, true).map(Some),
        PinsCommand::Recover {
            requestid,
            all_failed,
            page,
            connection,
        } => run_recover(requestid, all_failed, page, &connection).map(|()| None),
        PinsCommand::Expire {
            requestid,
            at,
            clear,
            connection,
        } => run_expire(&requestid, at, clear, &connection).map(|()| None),
    };
    match result {
        Ok(Some(code)) => code,
        Ok(None) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_recover(
    requestid: Option<String>,
    all_failed: bool,
    page: u16,
    connection: &Connection,
) -> anyhow::Result<()> {
    let api = Api::connect(connection)?;
    match (requestid, all_failed) {
        (Some(requestid), false) => {
            let body = recover(&api, &requestid)?;
            println!(
                "pin {requestid}: recovery requested (was {})",
                body["status"].as_str().unwrap_or("?")
            );
            Ok(())
        }
        (None, true) => recover_all_failed(&api, page),
        _ => bail!("give a REQUESTID or --all-failed"),
    }
}

fn run_expire(
    requestid: &str,
    at: Option<String>,
    clear: bool,
    connection: &Connection,
) -> anyhow::Result<()> {
    let api = Api::connect(connection)?;
    let path = format!("/admin/pins/{}/expiry", path_segment(requestid));
    let (method, body) = match (at, clear) {
        (Some(at), false) => (
            reqwest::Method::PUT,
            Some(serde_json::json!({ "expires_at": at })),
        ),
        (None, true) => (reqwest::Method::DELETE, None),
        _ => bail!("give --at TIME or --clear"),
    };
    let (_, pin) = api.call(method, &path, body.as_ref())?;
    match pin["pin"]["meta"]["expires_at"].as_str() {
        Some(at) => println!("pin {requestid}: expires at {at}"),
        None => println!("pin {requestid}: no expiry"),
    }
    Ok(())
}

/// `value` percent-encoded for a URL path segment.
fn path_segment(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).collect()
}

fn recover(api: &Api, requestid: &str) -> anyhow::Result<Value> {
    let path = format!("/admin/pins/{}/recover", path_segment(requestid));
    Ok(api.call(reqwest::Method::POST, &path, None)?.1)
}

/// Walks the failed pins newest first, one bounded page at a time (`before` = the `created`
/// of the page's last pin: a recovered pin leaves the listing, and the walk never revisits
/// a page), and recovers each. Pins that fail while the walk runs, newer than where it
/// started, are left for the next run.
fn recover_all_failed(api: &Api, page: u16) -> anyhow::Result<()> {
    let progress = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    progress.set_style(
        ProgressStyle::with_template("{spinner} recovering failed pins {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let (mut recovered, mut errors) = (0u64, 0u64);
    let mut before: Option<String> = None;
    loop {
        let mut path = format!("/pins?status=failed&limit={page}");
        if let Some(before) = &before {
            path.push_str(&format!("&before={}", path_segment(before)));
        }
        let (_, listing) = api.call(reqwest::Method::GET, &path, None)?;
        let results = listing["results"].as_array().cloned().unwrap_or_default();
        if before.is_none() {
            progress.set_length(listing["count"].as_u64().unwrap_or(0));
        }
        let Some(last) = results.last() else {
            break;
        };
        before = last["created"].as_str().map(str::to_string);
        for pin in &results {
            let Some(requestid) = pin["requestid"].as_str() else {
                continue;
            };
            match recover(api, requestid) {
                Ok(_) => recovered += 1,
                Err(error) => {
                    errors += 1;
                    progress.println(format!("pin {requestid}: {error:#}"));
                }
            }
            progress.inc(1);
        }
        if before.is_none() || results.len() < usize::from(page) {
            break;
        }
    }
    progress.finish_and_clear();
    println!("{recovered} failed pins recovered, {errors} errors");
    if errors > 0 {
        bail!("{errors} pins could not be recovered");
    }
    Ok(())
}
