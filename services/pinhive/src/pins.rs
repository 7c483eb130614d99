//! `pinhive pins`: pins of a running service, through its API. `recover` retries the failed
//! replicas of one pin (`REQUESTID`) or of every failed pin of the token's owner
//! (`--all-failed`) now, with their automatic retries started over
//! (`POST /admin/pins/{requestid}/recover`); `expire` sets or clears a pin's expiry
//! (`/admin/pins/{requestid}/expiry`).

use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use crate::nodes::request;

#[derive(Args, Debug)]
pub struct Connection {
    /// The pinhive service.
    #[arg(long, env = "PINHIVE_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The pins' owner's token, or an admin token.
    #[arg(long, env = "PINHIVE_TOKEN", hide_env_values = true)]
    token: String,
}

#[derive(Subcommand, Debug)]
pub enum PinsCommand {
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

pub fn run(command: PinsCommand) -> anyhow::Result<()> {
    match command {
        PinsCommand::Recover {
            requestid,
            all_failed,
            page,
            connection,
        } => {
            let client = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?;
            match (requestid, all_failed) {
                (Some(requestid), false) => {
                    let body = recover(&client, &connection, &requestid)?;
                    println!(
                        "pin {requestid}: recovery requested (was {})",
                        body["status"].as_str().unwrap_or("?")
                    );
                    Ok(())
                }
                (None, true) => recover_all_failed(&client, &connection, page),
                _ => bail!("give a REQUESTID or --all-failed"),
            }
        }
        PinsCommand::Expire {
            requestid,
            at,
            clear,
            connection,
        } => {
            let client = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?;
            let path = format!("/admin/pins/{}/expiry", path_segment(&requestid));
            let (method, body) = match (at, clear) {
                (Some(at), false) => (
                    reqwest::Method::PUT,
                    Some(serde_json::json!({ "expires_at": at })),
                ),
                (None, true) => (reqwest::Method::DELETE, None),
                _ => bail!("give --at TIME or --clear"),
            };
            let pin = request(
                &client,
                &connection.url,
                &connection.token,
                method,
                &path,
                body,
            )?;
            match pin["pin"]["meta"]["expires_at"].as_str() {
                Some(at) => println!("pin {requestid}: expires at {at}"),
                None => println!("pin {requestid}: no expiry"),
            }
            Ok(())
        }
    }
}

/// `value` percent-encoded for a URL path segment.
fn path_segment(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).collect()
}

fn recover(
    client: &reqwest::blocking::Client,
    connection: &Connection,
    requestid: &str,
) -> anyhow::Result<Value> {
    request(
        client,
        &connection.url,
        &connection.token,
        reqwest::Method::POST,
        &format!("/admin/pins/{}/recover", path_segment(requestid)),
        None,
    )
}

/// Walks the failed pins newest first, one bounded page at a time (`before` = the `created`
/// of the page's last pin: a recovered pin leaves the listing, and the walk never revisits
/// a page), and recovers each. Pins that fail while the walk runs, newer than where it
/// started, are left for the next run.
fn recover_all_failed(
    client: &reqwest::blocking::Client,
    connection: &Connection,
    page: u16,
) -> anyhow::Result<()> {
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
        let listing = request(
            client,
            &connection.url,
            &connection.token,
            reqwest::Method::GET,
            &path,
            None,
        )?;
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
            match recover(client, connection, requestid) {
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
