//! `pinhive pins export|ls|status|rm`: reading and removing pins through the API, for backups
//! and scripts.
//!
//! `export` walks `GET /pins` newest first, a page at a time (`before` = the `created` of the
//! page's last pin; `created` is unique per instance, docs/api.md), and writes each pin as a
//! JSON line (`PinStatus`). Its cursor is the `created` of the last line written: `--before
//! CURSOR` continues from there, and `--output FILE` continues a file an interrupted export
//! left (from its last whole line). Pins made while an export runs are newer than where it
//! started and are not in it.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Method;
use serde_json::Value;

use super::api::{encode, Api, ApiError, Connection};

/// Some requests named a pin that does not exist (or is another owner's).
const EXIT_NOT_FOUND: u8 = 3;
const ALL_STATUSES: &str = "queued,pinning,pinned,failed";

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Statuses to export (comma-separated; default all).
    #[arg(long, default_value = ALL_STATUSES)]
    status: String,
    /// Continue after this cursor (the `created` of the last pin an earlier export wrote).
    #[arg(long)]
    before: Option<String>,
    /// Write to FILE instead of stdout; if it holds pins of an interrupted export, continue
    /// after its last whole line (a cut last line is dropped).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Pins per request (1..=1000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..=1000))]
    page: u16,
    /// No progress bar (it is hidden anyway when stderr is not a terminal).
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Statuses (comma-separated; default all).
    #[arg(long, default_value = ALL_STATUSES)]
    status: String,
    /// Only pins of these CIDs (repeatable, at most 10).
    #[arg(long)]
    cid: Vec<String>,
    /// Only pins with this name (see --match).
    #[arg(long)]
    name: Option<String>,
    /// How --name matches: exact, iexact, partial, ipartial.
    #[arg(long, default_value = "exact")]
    r#match: String,
    /// At most this many pins, newest first (0: all).
    #[arg(long, default_value_t = 100)]
    limit: u64,
    /// One JSON `PinStatus` per line instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Args, Debug)]
pub struct ByIdArgs {
    /// Request ids of pins.
    #[arg(required = true)]
    requestids: Vec<String>,
    /// One JSON object per pin instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

/// One page of `GET /pins` after `before`.
fn page(
    api: &Api,
    query: &str,
    limit: u64,
    before: Option<&str>,
) -> Result<(Vec<Value>, u64), ApiError> {
    let mut path = format!("/pins?{query}&limit={limit}");
    if let Some(before) = before {
        path.push_str(&format!("&before={}", encode(before)));
    }
    let (_, body) = api.call(Method::GET, &path, None)?;
    let results = body["results"].as_array().cloned().unwrap_or_default();
    Ok((results, body["count"].as_u64().unwrap_or(0)))
}

fn created(pin: &Value) -> anyhow::Result<String> {
    pin["created"]
        .as_str()
        .map(str::to_string)
        .context("the service listed a pin without `created`")
}

/// The cursor a file left by an interrupted export continues from (the `created` of its last
/// whole line), after dropping a cut last line; `None` for an empty file.
fn resume_file(path: &Path) -> anyhow::Result<Option<String>> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let length = file.metadata()?.len();
    // The last line is a PinStatus: far less than the tail read here.
    let tail_length = length.min(1 << 20);
    file.seek(SeekFrom::Start(length - tail_length))?;
    let mut tail = Vec::with_capacity(tail_length as usize);
    file.read_to_end(&mut tail)?;
    let Some(end) = tail.iter().rposition(|&b| b == b'\n') else {
        if length > tail_length {
            bail!("{}: no whole line in its last MiB", path.display());
        }
        file.set_len(0)?;
        return Ok(None);
    };
    // Drop what follows the last newline (a line cut by an interruption).
    file.set_len(length - tail_length + end as u64 + 1)?;
    let start = tail[..end]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |at| at + 1);
    let last: Value = serde_json::from_slice(&tail[start..end])
        .with_context(|| format!("{}: its last line is not a pin", path.display()))?;
    created(&last).map(Some)
}

pub fn export(args: ExportArgs) -> anyhow::Result<()> {
    let api = Api::connect(&args.connection)?;
    let mut before = args.before.clone();
    let mut out: Box<dyn Write> = match &args.output {
        None => Box::new(BufWriter::new(io::stdout().lock())),
        Some(path) => {
            if path.exists() && before.is_none() {
                before = resume_file(path)?;
                if let Some(cursor) = &before {
                    eprintln!("continuing {} after {cursor}", path.display());
                }
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            Box::new(BufWriter::new(file))
        }
    };
    let query = format!("status={}", encode(&args.status));
    let progress = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
    };
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} pins {per_sec} ETA {eta}")
    {
        progress.set_style(style);
    }
    let mut exported = 0u64;
    let result = (|| -> anyhow::Result<()> {
        loop {
            let (pins, count) = page(&api, &query, u64::from(args.page), before.as_deref())?;
            if progress.length().is_none() {
                progress.set_length(count);
            }
            let Some(last) = pins.last() else {
                return Ok(());
            };
            let cursor = created(last)?;
            for pin in &pins {
                serde_json::to_writer(&mut out, pin)?;
                out.write_all(b"\n")?;
            }
            // A page is written whole before the cursor moves past it.
            out.flush()?;
            exported += pins.len() as u64;
            progress.inc(pins.len() as u64);
            before = Some(cursor);
            if pins.len() < usize::from(args.page) {
                return Ok(());
            }
        }
    })();
    progress.finish_and_clear();
    match (&result, &before) {
        (Ok(()), _) => eprintln!("exported {exported} pins"),
        (Err(_), Some(cursor)) => eprintln!(
            "exported {exported} pins before stopping; continue with --before {cursor}{}",
            if args.output.is_some() {
                " (or run the same command again)"
            } else {
                ""
            }
        ),
        (Err(_), None) => {}
    }
    if let Err(error) = &result {
        // `pinhive pins export | head`: a closed pipe is the reader's choice, not an error.
        if error
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
        {
            return Ok(());
        }
    }
    result
}

pub fn ls(args: LsArgs) -> anyhow::Result<()> {
    let api = Api::connect(&args.connection)?;
    let mut query = format!("status={}", encode(&args.status));
    if !args.cid.is_empty() {
        query.push_str(&format!("&cid={}", encode(&args.cid.join(","))));
    }
    if let Some(name) = &args.name {
        query.push_str(&format!(
            "&name={}&match={}",
            encode(name),
            encode(&args.r#match)
        ));
    }
    let mut stdout = BufWriter::new(io::stdout().lock());
    let mut listed = 0u64;
    let mut before: Option<String> = None;
    loop {
        let want = match args.limit {
            0 => 1000,
            limit => (limit - listed).min(1000),
        };
        if want == 0 {
            break;
        }
        let (pins, _) = page(&api, &query, want, before.as_deref())?;
        for pin in &pins {
            if args.json {
                serde_json::to_writer(&mut stdout, pin)?;
                writeln!(stdout)?;
            } else {
                writeln!(stdout, "{}", row(pin))?;
            }
        }
        listed += pins.len() as u64;
        let Some(last) = pins.last() else { break };
        before = Some(created(last)?);
        if (pins.len() as u64) < want {
            break;
        }
    }
    stdout.flush()?;
    Ok(())
}

fn row(pin: &Value) -> String {
    format!(
        "{}\t{}\t{}\t{}\t{}",
        pin["requestid"].as_str().unwrap_or("?"),
        pin["status"].as_str().unwrap_or("?"),
        pin["created"].as_str().unwrap_or("?"),
        pin["pin"]["cid"].as_str().unwrap_or("?"),
        pin["pin"]["name"].as_str().unwrap_or("")
    )
}

/// `status`: each pin; `rm`: deletes each. Exit 3 when one was not found, 1 on other errors.
pub fn by_id(args: ByIdArgs, remove: bool) -> anyhow::Result<ExitCode> {
    let api = Api::connect(&args.connection)?;
    let mut not_found = 0;
    for requestid in &args.requestids {
        let path = format!("/pins/{}", encode(requestid));
        let method = if remove { Method::DELETE } else { Method::GET };
        match api.call(method, &path, None) {
            Ok((_, pin)) if remove => {
                let _ = pin;
                if args.json {
                    println!(
                        "{}",
                        serde_json::json!({"requestid": requestid, "removed": true})
                    );
                } else {
                    println!("{requestid}\tremoved");
                }
            }
            Ok((_, pin)) => {
                if args.json {
                    println!("{pin}");
                } else {
                    println!("{}", row(&pin));
                }
            }
            Err(ApiError::Refused { status: 404, .. }) => {
                not_found += 1;
                if args.json {
                    println!(
                        "{}",
                        serde_json::json!({"requestid": requestid, "error": "not found"})
                    );
                } else {
                    eprintln!("{requestid}: not found");
                }
            }
            Err(error) => bail!("{requestid}: {error}"),
        }
    }
    Ok(if not_found > 0 {
        ExitCode::from(EXIT_NOT_FOUND)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_export_continues_after_its_last_whole_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins.jsonl");
        std::fs::write(
            &path,
            "{\"created\":\"2026-01-02T00:00:00Z\"}\n{\"created\":\"2026-01-01T00:00:00Z\"}\n{\"cre",
        )
        .unwrap();
        assert_eq!(
            resume_file(&path).unwrap().as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("01T00:00:00Z\"}\n"), "{text}");
        std::fs::write(&path, "{\"cr").unwrap();
        assert_eq!(resume_file(&path).unwrap(), None);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }
}
