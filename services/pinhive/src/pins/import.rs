//! `pinhive pins import FILE|-`: pins every line of a CID list, CSV or JSON lines file through
//! `POST /pins`, `concurrency` requests at a time, resumable through a journal
//! ([`super::journal`]), with a failure summary by line number.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::Instant;

use clap::Args;
use indicatif::ProgressBar;
use pinhive_domain::command::RawPin;
use reqwest::Method;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::api::{encode, Api, ApiError, Connection};
use super::input::{body, Format, Line, Parser};
use super::journal::{Journal, Resume};
use crate::access::{read_bounded_line, trim_newline};

/// Every line imported (or already there).
const EXIT_OK: u8 = 0;
/// The import stopped: unreachable service, refused credentials, unreadable input or journal.
const EXIT_STOPPED: u8 = 1;
/// Arguments that cannot work (clap uses 2 for the ones it rejects).
const EXIT_BAD_ARGUMENTS: u8 = 2;
/// The input was read to its end, but some lines failed (listed with their numbers).
const EXIT_SOME_LINES_FAILED: u8 = 3;
/// Sends of one line whose answers were lost before the import gives up.
const UNKNOWN_OUTCOME_ATTEMPTS: u32 = 4;
/// Failures kept for the summary; past this only counted.
const MAX_LISTED_FAILURES: usize = 10_000;

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The pins: a CID per line, CSV (`cid[,name[,meta]]` or a header row naming `cid`,
    /// `name`, `meta`, `meta.<key>` columns) or JSON lines (`{"cid","name","meta"}` or what
    /// `pins export` writes); `-` reads stdin.
    file: PathBuf,
    #[arg(long, value_enum, default_value = "auto")]
    format: Format,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    concurrency: u16,
    /// The progress journal that makes a re-run skip imported lines (default: next to the
    /// input, `<FILE>.import-journal`; required for stdin unless --no-journal).
    #[arg(long, conflicts_with = "no_journal")]
    journal: Option<PathBuf>,
    /// No journal: a re-run sends every line again (and makes duplicate pins).
    #[arg(long)]
    no_journal: bool,
    /// No progress bar (it is hidden anyway when stderr is not a terminal).
    #[arg(long, short)]
    quiet: bool,
    /// Print the summary (with every failed line) as JSON on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: Connection,
}

/// What the summary reports; `--json` prints it as is.
#[derive(Serialize, Debug, Default)]
struct Summary {
    lines_read: u64,
    /// Lines with a pin (not blank, comment or header).
    pins: u64,
    /// Pins the service accepted in this run (202).
    imported: u64,
    /// Skipped: journaled as imported by an earlier run.
    already_imported: u64,
    /// Lines the service already held: uncertain ones of an earlier run, or a POST of this
    /// run whose answer was lost.
    found_on_service: u64,
    failed: u64,
    /// Requests sent again after 429/503 or a connection failure.
    retries: u64,
    /// Every failed line (at most 10,000), by line number.
    failures: Vec<Failure>,
    journal: Option<PathBuf>,
    /// True when the input was read to its end (failed lines may remain).
    complete: bool,
    error: Option<String>,
    seconds: f64,
}

#[derive(Serialize, Debug, Clone)]
struct Failure {
    line: u64,
    reason: String,
}

/// One line to send.
struct Job {
    line: u64,
    pin: RawPin,
    /// An earlier run may have sent it: check the service before sending.
    uncertain: bool,
}

#[derive(Default)]
struct Counters {
    imported: AtomicU64,
    found: AtomicU64,
    /// Lines finished in this run (for the progress bar).
    finished: AtomicU64,
}

struct Shared<'a> {
    api: &'a Api,
    journal: Option<&'a Journal>,
    counters: Counters,
    failures: Mutex<(u64, Vec<Failure>)>,
    stop: AtomicBool,
    fatal: Mutex<Option<String>>,
    progress: ProgressBar,
}

impl Shared<'_> {
    fn fail(&self, line: u64, reason: String) {
        // The bar's println prints nothing while the bar is hidden (no terminal, --quiet).
        if self.progress.is_hidden() {
            eprintln!("line {line}: {reason}");
        } else {
            self.progress.println(format!("line {line}: {reason}"));
        }
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.0 += 1;
        if failures.1.len() < MAX_LISTED_FAILURES {
            failures.1.push(Failure { line, reason });
        }
    }

    fn stop_with(&self, error: String) {
        self.fatal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(error);
        self.stop.store(true, Ordering::Release);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn done(&self, line: u64) {
        if let Some(journal) = self.journal {
            if let Err(error) = journal.done(line) {
                self.stop_with(format!("writing {}: {error}", journal.path().display()));
            }
        }
    }

    fn work(&self, jobs: &Mutex<mpsc::Receiver<Job>>) {
        loop {
            let received = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
            let Ok(job) = received else { return };
            if self.stopped() {
                continue;
            }
            self.send(job);
            self.counters.finished.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn send(&self, job: Job) {
        if job.uncertain {
            match held(self.api, &job.pin) {
                Ok(true) => {
                    self.counters.found.fetch_add(1, Ordering::Relaxed);
                    self.done(job.line);
                    return;
                }
                Ok(false) => {}
                Err(error) => return self.refused(job.line, error),
            }
        }
        let body = body(&job.pin);
        // A POST without an answer may have pinned: look before sending it again (bounded).
        for _ in 0..UNKNOWN_OUTCOME_ATTEMPTS {
            match self.api.call(Method::POST, "/pins", Some(&body)) {
                Ok(_) => {
                    self.counters.imported.fetch_add(1, Ordering::Relaxed);
                    return self.done(job.line);
                }
                Err(ApiError::Unknown { .. }) => {
                    // A request still in flight, or appended but not yet applied (the service
                    // answers after at most its 2 s apply wait), is not listed yet: give it
                    // that long before looking.
                    std::thread::sleep(UNKNOWN_OUTCOME_SETTLE);
                    match held(self.api, &job.pin) {
                        Ok(true) => {
                            self.counters.found.fetch_add(1, Ordering::Relaxed);
                            return self.done(job.line);
                        }
                        Ok(false) => continue,
                        Err(error) => return self.refused(job.line, error),
                    }
                }
                Err(error) => return self.refused(job.line, error),
            }
        }
        self.refused(
            job.line,
            ApiError::GaveUp {
                attempts: UNKNOWN_OUTCOME_ATTEMPTS,
                last_error: "no answer to POST /pins (timeouts or lost connections)".into(),
            },
        );
    }

    fn refused(&self, line: u64, error: ApiError) {
        // A quota refusal (403) or credentials problem would refuse every line alike.
        if error.is_fatal() || error.status() == Some(403) {
            self.stop_with(format!("line {line}: {error}"));
        } else {
            self.fail(line, error.to_string());
        }
    }
}

/// Whether the owner holds a pin with this line's CID, name and meta (any status): the check
/// of an uncertain line.
fn held(api: &Api, pin: &RawPin) -> Result<bool, ApiError> {
    let mut path = format!(
        "/pins?cid={}&status=queued,pinning,pinned,failed&limit=1000",
        encode(&pin.cid)
    );
    if let Some(name) = &pin.name {
        path.push_str(&format!("&name={}&match=exact", encode(name)));
    }
    let (_, listing) = api.call(Method::GET, &path, None)?;
    let results = listing["results"].as_array().cloned().unwrap_or_default();
    Ok(results.iter().any(|status| {
        let held = &status["pin"];
        let name_matches = held["name"].as_str() == pin.name.as_deref();
        let meta: std::collections::BTreeMap<String, String> =
            serde_json::from_value(held["meta"].clone()).unwrap_or_default();
        name_matches && meta == pin.meta
    }))
}

/// The input's SHA-256 and line count (one pass before importing; the journal is only valid
/// for the same bytes).
fn fingerprint(path: &PathBuf) -> io::Result<(String, u64)> {
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 20];
    let (mut lines, mut last) = (0u64, b'\n');
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        lines += buffer[..read].iter().filter(|&&b| b == b'\n').count() as u64;
        last = buffer[read - 1];
    }
    if last != b'\n' {
        lines += 1;
    }
    Ok((format!("{:x}", hasher.finalize()), lines))
}

/// How long an unanswered POST is given to be applied before the import looks for its pin.
const UNKNOWN_OUTCOME_SETTLE: std::time::Duration = std::time::Duration::from_secs(3);

fn bad_arguments(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_BAD_ARGUMENTS)
}

fn stopped(message: String, json: bool) -> ExitCode {
    if json {
        let summary = Summary {
            error: Some(message.clone()),
            ..Summary::default()
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).unwrap_or_default()
        );
    }
    eprintln!("error: {message}");
    ExitCode::from(EXIT_STOPPED)
}

pub fn run(args: ImportArgs) -> ExitCode {
    let started = Instant::now();
    let api = match Api::connect(&args.connection) {
        Ok(api) => api,
        Err(error) => return bad_arguments(&format!("{error:#}")),
    };
    let stdin = args.file.as_os_str() == "-";
    if stdin && args.journal.is_none() && !args.no_journal {
        return bad_arguments(
            "reading stdin: pass --journal PATH (a re-run then skips what was imported) or \
             --no-journal",
        );
    }
    let (identity, total) = if stdin {
        ("stdin".to_string(), None)
    } else {
        match fingerprint(&args.file) {
            Ok((digest, lines)) => (format!("sha256:{digest}"), Some(lines)),
            Err(error) => {
                return bad_arguments(&format!("cannot read {}: {error}", args.file.display()))
            }
        }
    };
    let journal_path = match (&args.journal, args.no_journal) {
        (_, true) => None,
        (Some(path), false) => Some(path.clone()),
        (None, false) => {
            let mut name = args.file.as_os_str().to_owned();
            name.push(".import-journal");
            Some(PathBuf::from(name))
        }
    };
    let (journal, resume) = match &journal_path {
        None => (None, Resume::default()),
        Some(path) => match Journal::open(path, &identity, &api.url) {
            Ok((journal, resume)) => (Some(journal), resume),
            Err(error) => return stopped(format!("{error:#}"), args.json),
        },
    };
    let input: Box<dyn Read + Send> = if stdin {
        Box::new(io::stdin())
    } else {
        match File::open(&args.file) {
            Ok(file) => Box::new(file),
            Err(error) => {
                return bad_arguments(&format!("cannot open {}: {error}", args.file.display()))
            }
        }
    };
    let progress = crate::access::progress_bar(
        total,
        args.quiet || args.json,
        (
            "{bar:30} {pos}/{len} lines {per_sec} ETA {eta} {msg}",
            "{spinner} {pos} lines {per_sec} {msg}",
        ),
    );
    let shared = Shared {
        api: &api,
        journal: journal.as_ref(),
        counters: Counters::default(),
        failures: Mutex::new((0, Vec::new())),
        stop: AtomicBool::new(false),
        fatal: Mutex::new(None),
        progress,
    };
    let mut summary = Summary {
        journal: journal_path,
        ..Summary::default()
    };
    let (jobs, received) = mpsc::sync_channel::<Job>(usize::from(args.concurrency) * 4);
    let received = Mutex::new(received);
    let read = std::thread::scope(|scope| {
        for _ in 0..args.concurrency {
            scope.spawn(|| shared.work(&received));
        }
        let read = read_lines(input, args.format, &resume, &shared, &jobs, &mut summary);
        // Closing the channel lets the workers finish what is queued and return.
        drop(jobs);
        read
    });
    shared.progress.finish_and_clear();
    let counters = &shared.counters;
    summary.imported = counters.imported.load(Ordering::Relaxed);
    summary.found_on_service = counters.found.load(Ordering::Relaxed);
    summary.retries = api.retries.load(Ordering::Relaxed);
    let (failed, mut failures) = shared
        .failures
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    failures.sort_by_key(|f| f.line);
    summary.failed = failed;
    summary.failures = failures;
    summary.error = match (
        shared.fatal.into_inner().unwrap_or_else(|e| e.into_inner()),
        read,
    ) {
        (Some(error), _) => Some(error),
        (None, Err(error)) => Some(format!("reading {}: {error}", args.file.display())),
        (None, Ok(())) => None,
    };
    summary.complete = summary.error.is_none();
    summary.seconds = started.elapsed().as_secs_f64();
    print_summary(&summary, args.json);
    if let Some(error) = &summary.error {
        eprintln!("error: {error}");
        return ExitCode::from(EXIT_STOPPED);
    }
    if summary.failed > 0 {
        return ExitCode::from(EXIT_SOME_LINES_FAILED);
    }
    ExitCode::from(EXIT_OK)
}

/// Reads and parses every line; hands the pins to the senders (blocking while `4 ×
/// concurrency` wait) unless the journal says they were imported.
fn read_lines(
    input: Box<dyn Read + Send>,
    format: Format,
    resume: &Resume,
    shared: &Shared,
    jobs: &mpsc::SyncSender<Job>,
    summary: &mut Summary,
) -> io::Result<()> {
    let mut reader = BufReader::with_capacity(256 * 1024, input);
    let mut parser = Parser::new(format);
    let mut bytes = Vec::with_capacity(4096);
    let mut skipped_before = 0u64;
    loop {
        if shared.stopped() {
            return Ok(());
        }
        let (consumed, whole) = read_bounded_line(&mut reader, &mut bytes)?;
        if consumed == 0 {
            break;
        }
        summary.lines_read += 1;
        let line = summary.lines_read;
        let parsed = if whole {
            match std::str::from_utf8(trim_newline(&bytes)) {
                Ok(text) => parser.parse(text),
                Err(_) => Err("not UTF-8".to_string()),
            }
        } else {
            Err("line longer than 1 MiB".to_string())
        };
        let pin = match parsed {
            Ok(Line::Pin(pin)) => pin,
            Ok(Line::Skip) => {
                skipped_before += 1;
                continue;
            }
            Err(reason) => {
                summary.pins += 1;
                shared.fail(line, reason);
                skipped_before += 1;
                continue;
            }
        };
        summary.pins += 1;
        if resume.done.contains(line) {
            summary.already_imported += 1;
            skipped_before += 1;
            continue;
        }
        if skipped_before > 0 {
            shared.progress.inc(skipped_before);
            skipped_before = 0;
        }
        if let Some(journal) = shared.journal {
            journal.reserve(line)?;
        }
        let job = Job {
            line,
            pin,
            uncertain: resume.uncertain(line),
        };
        if jobs.send(job).is_err() {
            return Ok(());
        }
        let finished = shared.counters.finished.swap(0, Ordering::Relaxed);
        shared.progress.inc(finished);
    }
    shared.progress.inc(skipped_before);
    Ok(())
}

fn print_summary(summary: &Summary, json: bool) {
    if json {
        match serde_json::to_string_pretty(summary) {
            Ok(text) => println!("{text}"),
            Err(error) => eprintln!("error: printing the summary: {error}"),
        }
        return;
    }
    let rate = summary.imported as f64 / summary.seconds.max(1e-3);
    println!(
        "{} lines, {} pins: {} imported ({rate:.0}/s), {} already imported, {} found on the \
         service, {} failed, {} retries",
        summary.lines_read,
        summary.pins,
        summary.imported,
        summary.already_imported,
        summary.found_on_service,
        summary.failed,
        summary.retries
    );
    if summary.failed > 0 {
        let lines: Vec<String> = summary
            .failures
            .iter()
            .take(20)
            .map(|f| f.line.to_string())
            .collect();
        let more = if summary.failed > 20 { ", …" } else { "" };
        println!(
            "failed lines: {}{more} (each with its reason above; --json lists them all)",
            lines.join(", ")
        );
    }
    if let Some(journal) = &summary.journal {
        println!(
            "journal: {} (a re-run skips what it lists)",
            journal.display()
        );
    }
    if !summary.complete {
        println!(
            "incomplete: {}",
            summary.error.as_deref().unwrap_or("stopped")
        );
    }
}
