//! `pinhive access import`: reads a gateway's access log (nginx `combined` or Caddy JSON),
//! keeps the successful reads of `/ipfs/<cid>` and sends them to `POST /access`, where they
//! feed the replica optimizer. Parsing is pure ([`parse`]), sending is [`send`]; this file reads
//! the input, shows progress and prints the summary.

mod parse;
mod send;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pinhive_events::access::MAX_ACCESS_BATCH;
use serde::Serialize;

use parse::{Format, RegionRule, RegionRules, Skip};
use send::{Batch, Sender};

/// Exit code for a refused or failed import.
const EXIT_FAILED: u8 = 1;
/// Exit code for arguments that cannot work (clap uses it for the ones it rejects).
const EXIT_BAD_ARGUMENTS: u8 = 2;
/// Line numbers listed per skip reason.
const LISTED_LINES: usize = 10;
/// Lines between progress bar updates.
const PROGRESS_EVERY_LINES: u64 = 512;
/// A longer line is no log line; reading stops there so one cannot fill the memory.
const MAX_LINE_BYTES: u64 = 1 << 20;

#[derive(Subcommand, Debug)]
pub enum AccessCommand {
    /// Send the reads of pinned content in a gateway access log to `POST /access`.
    Import(ImportArgs),
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Access log to read; `-` reads stdin.
    file: PathBuf,
    /// Base URL of a pinhive instance.
    #[arg(long, env = "PINHIVE_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// API token.
    #[arg(long, env = "PINHIVE_TOKEN", hide_env_values = true)]
    token: String,
    /// Log format.
    #[arg(long, value_enum, default_value = "auto")]
    format: Format,
    /// Field holding the reader's region: an nginx `key=value` field after the combined
    /// format (`region`), or a Caddy field, top-level or dotted (`request.headers.X-Region.0`).
    #[arg(long)]
    region_field: Option<String>,
    /// PREFIX=REGION, repeatable or comma-separated: the region of client IPs starting with a
    /// text prefix (`10.1.=eu`) or inside a network (`10.1.0.0/16=eu`). The longest prefix
    /// wins; used when the line has no region field.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(RegionRuleArg))]
    region_map: Vec<RegionRuleArg>,
    /// Region of reads neither the field nor the map place.
    #[arg(long, default_value = "unknown")]
    default_region: String,
    /// Events per request (at most the server's limit, 10,000).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Attempts after the first for a batch the server asks to retry (429/503) or that
    /// could not reach it.
    #[arg(long, default_value_t = 8)]
    retries: usize,
    /// No progress bar (it is hidden anyway when stderr is not a terminal).
    #[arg(long, short)]
    quiet: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// clap wants `Clone + Send + Sync + 'static` values with a `FromStr` whose error displays.
#[derive(Clone, Debug)]
struct RegionRuleArg(RegionRule);

impl std::str::FromStr for RegionRuleArg {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        text.parse().map(RegionRuleArg)
    }
}

pub fn run(command: AccessCommand) -> ExitCode {
    match command {
        AccessCommand::Import(args) => import(args),
    }
}

/// What the summary reports; `--json` prints it as is.
#[derive(Serialize, Debug, Default)]
struct Summary {
    lines_read: u64,
    /// Events in batches the server answered 202.
    events_sent: u64,
    /// Sum of the server's `accepted`.
    events_accepted: u64,
    batches_sent: u64,
    retries: u64,
    skipped: SkipCounts,
    /// True when every line was read and every event parsed was sent.
    complete: bool,
    error: Option<String>,
}

#[derive(Serialize, Debug, Default)]
struct SkipCounts {
    not_gateway_read: Skipped,
    bad_cid: Skipped,
    unparsable: Skipped,
}

#[derive(Serialize, Debug, Default)]
struct Skipped {
    count: u64,
    /// The first line numbers (1-based).
    first_lines: Vec<u64>,
}

impl SkipCounts {
    fn of(&self, reason: Skip) -> &Skipped {
        match reason {
            Skip::NotGatewayRead => &self.not_gateway_read,
            Skip::BadCid => &self.bad_cid,
            Skip::Unparsable => &self.unparsable,
        }
    }

    fn of_mut(&mut self, reason: Skip) -> &mut Skipped {
        match reason {
            Skip::NotGatewayRead => &mut self.not_gateway_read,
            Skip::BadCid => &mut self.bad_cid,
            Skip::Unparsable => &mut self.unparsable,
        }
    }

    fn record(&mut self, reason: Skip, line: u64) {
        let skipped = self.of_mut(reason);
        skipped.count += 1;
        if skipped.first_lines.len() < LISTED_LINES {
            skipped.first_lines.push(line);
        }
    }
}

fn bad_arguments(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_BAD_ARGUMENTS)
}

fn import(args: ImportArgs) -> ExitCode {
    if !(1..=MAX_ACCESS_BATCH).contains(&args.batch) {
        return bad_arguments(&format!("--batch must be 1 to {MAX_ACCESS_BATCH}"));
    }
    if !(1..=64).contains(&args.concurrency) {
        return bad_arguments("--concurrency must be 1 to 64");
    }
    if !(args.url.starts_with("http://") || args.url.starts_with("https://")) {
        return bad_arguments("--url must start with http:// or https://");
    }
    let map = args.region_map.iter().map(|rule| rule.0.clone()).collect();
    let rules = match RegionRules::new(args.region_field.clone(), map, args.default_region.clone())
    {
        Ok(rules) => rules,
        Err(message) => return bad_arguments(&message),
    };
    let (input, length): (Box<dyn Read + Send>, Option<u64>) = if args.file.as_os_str() == "-" {
        (Box::new(io::stdin()), None)
    } else {
        match File::open(&args.file) {
            Ok(file) => {
                let length = file
                    .metadata()
                    .ok()
                    .filter(|m| m.is_file())
                    .map(|m| m.len());
                (Box::new(file), length)
            }
            Err(error) => {
                return bad_arguments(&format!("cannot open {}: {error}", args.file.display()))
            }
        }
    };
    let sender = match Sender::new(&args.url, args.token.clone(), args.retries) {
        Ok(sender) => sender,
        Err(error) => return bad_arguments(&format!("{error:#}")),
    };
    let progress = progress_bar(
        length,
        args.quiet,
        (
            "{bar:30} {binary_bytes}/{binary_total_bytes} {msg} ETA {eta}",
            "{spinner} {binary_bytes} {msg}",
        ),
    );
    let mut summary = Summary::default();
    let (batches, received) = mpsc::sync_channel::<Batch>(args.concurrency);
    let received = Mutex::new(received);
    let read_result = std::thread::scope(|scope| {
        for _ in 0..args.concurrency {
            scope.spawn(|| sender.work(&received));
        }
        let read = read_input(
            input,
            &args,
            &rules,
            &sender,
            &batches,
            &progress,
            &mut summary,
        );
        // Closing the channel lets the workers finish what is queued and return.
        drop(batches);
        read
    });
    progress.finish_and_clear();
    let delivered = &sender.delivered;
    summary.events_sent = delivered.events.load(Ordering::Relaxed);
    summary.events_accepted = delivered.accepted.load(Ordering::Relaxed);
    summary.batches_sent = delivered.batches.load(Ordering::Relaxed);
    summary.retries = delivered.retries.load(Ordering::Relaxed);
    let send_error = sender.into_error();
    summary.error = match (&read_result, &send_error) {
        (_, Some(error)) => Some(error.to_string()),
        (Err(error), None) => Some(format!("reading {}: {error}", args.file.display())),
        (Ok(()), None) => None,
    };
    summary.complete = summary.error.is_none();
    print_summary(&summary, args.json);
    if let Some(error) = &summary.error {
        eprintln!("error: {error}");
        return ExitCode::from(EXIT_FAILED);
    }
    ExitCode::SUCCESS
}

/// Reads, parses and batches until the end of the input or until sending failed.
fn read_input(
    input: Box<dyn Read + Send>,
    args: &ImportArgs,
    rules: &RegionRules,
    sender: &Sender,
    batches: &mpsc::SyncSender<Batch>,
    progress: &ProgressBar,
    summary: &mut Summary,
) -> io::Result<()> {
    let mut reader = BufReader::with_capacity(256 * 1024, input);
    let mut line = Vec::with_capacity(4096);
    let mut bytes_read = 0;
    let mut batch = Batch {
        events: Vec::with_capacity(args.batch),
        first_line: 1,
        last_line: 0,
    };
    let started = Instant::now();
    let mut next_progress = PROGRESS_EVERY_LINES;
    loop {
        if sender.stopped() {
            return Ok(());
        }
        let (consumed, complete) = read_bounded_line(&mut reader, &mut line)?;
        if consumed == 0 {
            break;
        }
        bytes_read += consumed;
        summary.lines_read += 1;
        let number = summary.lines_read;
        let parsed = if complete {
            let text = String::from_utf8_lossy(trim_newline(&line));
            parse::parse_line(&text, args.format, rules)
        } else {
            Err(Skip::Unparsable)
        };
        match parsed {
            Ok(event) => {
                if batch.events.is_empty() {
                    batch.first_line = number;
                }
                batch.last_line = number;
                batch.events.push(event);
            }
            Err(reason) => summary.skipped.record(reason, number),
        }
        if batch.events.len() == args.batch {
            let full = std::mem::replace(
                &mut batch,
                Batch {
                    events: Vec::with_capacity(args.batch),
                    first_line: number + 1,
                    last_line: number,
                },
            );
            // Blocks while `concurrency` batches wait: reading keeps pace with sending.
            if batches.send(full).is_err() {
                return Ok(());
            }
        }
        if number >= next_progress {
            next_progress = number + PROGRESS_EVERY_LINES;
            show_progress(progress, bytes_read, number, started, sender);
        }
    }
    if !batch.events.is_empty() {
        let _ = batches.send(batch);
    }
    show_progress(progress, bytes_read, summary.lines_read, started, sender);
    Ok(())
}

/// One line into `line` (newline included), at most [`MAX_LINE_BYTES`] of it kept. Returns the
/// bytes consumed (0 at the end) and whether the line was kept whole.
pub(crate) fn read_bounded_line(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
) -> io::Result<(u64, bool)> {
    line.clear();
    let kept = reader
        .by_ref()
        .take(MAX_LINE_BYTES)
        .read_until(b'\n', line)? as u64;
    if kept < MAX_LINE_BYTES || line.last() == Some(&b'\n') {
        return Ok((kept, true));
    }
    // Too long: skip to the end of the line without keeping it.
    let mut skipped = 0;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            break;
        }
        let (used, done) = match available.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (available.len(), false),
        };
        reader.consume(used);
        skipped += used as u64;
        if done {
            break;
        }
    }
    line.clear();
    Ok((kept + skipped, false))
}

pub(crate) fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// A progress bar on stderr (hidden when `quiet`, and by indicatif itself when stderr is not
/// a terminal): `templates.0` when the total is known, `templates.1` otherwise.
pub(crate) fn progress_bar(
    length: Option<u64>,
    quiet: bool,
    templates: (&str, &str),
) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(length, ProgressDrawTarget::stderr());
    let template = match length {
        Some(_) => templates.0,
        None => templates.1,
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn show_progress(bar: &ProgressBar, bytes: u64, lines: u64, started: Instant, sender: &Sender) {
    bar.set_position(bytes);
    let per_second = lines as f64 / started.elapsed().as_secs_f64().max(1e-3);
    let sent = sender.delivered.events.load(Ordering::Relaxed);
    bar.set_message(format!(
        "{lines} lines ({per_second:.0}/s), {sent} events sent"
    ));
}

fn print_summary(summary: &Summary, json: bool) {
    if json {
        match serde_json::to_string_pretty(summary) {
            Ok(text) => println!("{text}"),
            Err(error) => eprintln!("error: printing the summary: {error}"),
        }
        return;
    }
    println!("lines read:   {}", summary.lines_read);
    println!(
        "events sent:  {} in {} requests (server accepted {}, {} retries)",
        summary.events_sent, summary.batches_sent, summary.events_accepted, summary.retries
    );
    let skipped = &summary.skipped;
    let total: u64 = Skip::ALL
        .iter()
        .map(|&reason| skipped.of(reason).count)
        .sum();
    println!("skipped:      {total}");
    for reason in Skip::ALL {
        let entry = skipped.of(reason);
        if entry.count == 0 {
            continue;
        }
        let lines: Vec<String> = entry.first_lines.iter().map(u64::to_string).collect();
        let more = if entry.count > entry.first_lines.len() as u64 {
            ", …"
        } else {
            ""
        };
        println!(
            "  {:<20}{:>8}  lines {}{more}",
            format!("{}:", reason.label()),
            entry.count,
            lines.join(", ")
        );
    }
    if !summary.complete {
        println!(
            "incomplete: {}",
            summary.error.as_deref().unwrap_or("stopped")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overlong_line_is_consumed_but_not_kept() {
        let mut input = vec![b'x'; MAX_LINE_BYTES as usize + 10];
        input.extend_from_slice(b"\nnext\r\n");
        let mut reader = io::Cursor::new(input);
        let mut line = Vec::new();
        let (consumed, complete) = read_bounded_line(&mut reader, &mut line).unwrap();
        assert_eq!(
            (consumed, complete, line.len()),
            (MAX_LINE_BYTES + 11, false, 0)
        );
        let (consumed, complete) = read_bounded_line(&mut reader, &mut line).unwrap();
        assert_eq!(
            (consumed, complete, trim_newline(&line)),
            (6, true, &b"next"[..])
        );
        assert_eq!(
            read_bounded_line(&mut reader, &mut line).unwrap(),
            (0, true)
        );
    }

    #[test]
    fn skipped_lines_list_the_first_ten_numbers() {
        let mut skipped = SkipCounts::default();
        for line in 1..=25 {
            skipped.record(Skip::BadCid, line);
        }
        skipped.record(Skip::Unparsable, 30);
        assert_eq!(skipped.bad_cid.count, 25);
        assert_eq!(skipped.bad_cid.first_lines, (1..=10).collect::<Vec<_>>());
        assert_eq!(skipped.unparsable.first_lines, vec![30]);
        assert_eq!(skipped.not_gateway_read.count, 0);
    }
}
