//! The progress journal of a pin import: what makes a re-run skip what was imported.
//!
//! A text file next to the input (`<input>.import-journal`, or `--journal PATH`): a header
//! naming the input (SHA-256 of its bytes) and the service URL, then one entry a line, each a
//! single `write` on a file opened for appending, so a killed import loses at most the entry
//! it was writing (an incomplete last line is ignored when read):
//!
//! * `r N` — *reserved*: lines up to N may have been sent. Written before line N is handed to
//!   a sender, [`RESERVE_AHEAD`] lines at a time.
//! * `d N` — line N is imported: the service answered 202, or it already held the pin.
//!
//! On a re-run, a line with `d` is skipped without a request. A line without `d` but at or
//! below the last `r` is *uncertain* — it may have been sent with its answer lost — and is
//! checked against the service's listing (`GET /pins?cid=…&name=…`) before it is sent again.
//! Lines past the last `r` were never sent. Only a process kill is covered: the entries are
//! not fsynced (after a machine crash, at most the lines whose entries were lost are checked or
//! sent again, as uncertain ones are).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context};

/// Lines reserved per `r` entry: a re-run checks at most this many (plus those in flight)
/// against the service.
pub const RESERVE_AHEAD: u64 = 1024;
const MAGIC: &str = "pinhive-import-journal v1";

/// Line numbers (1-based) as a bitset: a bit per line of the input.
#[derive(Default, Debug)]
pub struct LineSet(Vec<u64>);

impl LineSet {
    pub fn insert(&mut self, line: u64) {
        let (word, bit) = ((line / 64) as usize, line % 64);
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << bit;
    }

    pub fn contains(&self, line: u64) -> bool {
        let (word, bit) = ((line / 64) as usize, line % 64);
        self.0.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }

    #[cfg(test)]
    pub fn len(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }
}

/// What an earlier run left: the lines imported, and how far it may have sent.
#[derive(Default, Debug)]
pub struct Resume {
    pub done: LineSet,
    pub reserved: u64,
}

impl Resume {
    /// Whether line `n` may have reached the service without being journaled as done.
    pub fn uncertain(&self, n: u64) -> bool {
        n <= self.reserved && !self.done.contains(n)
    }
}

pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
    reserved: AtomicU64,
}

impl Journal {
    /// Opens (or starts) the journal at `path` for the input `identity` (its digest) imported
    /// into `url`; refuses a journal of another input or service.
    pub fn open(path: &Path, identity: &str, url: &str) -> anyhow::Result<(Journal, Resume)> {
        let header = format!("{MAGIC} input={identity} url={url}");
        let mut resume = Resume::default();
        match File::open(path) {
            Ok(file) => {
                let mut reader = BufReader::new(file);
                let mut line = String::new();
                let mut whole = reader.read_line(&mut line)? as u64;
                let first = line.trim_end_matches('\n');
                if first != header {
                    bail!(
                        "{} is the journal of another import ({first:?}); this one is \
                         {header:?}: remove it to start over, or pass another --journal",
                        path.display()
                    );
                }
                loop {
                    line.clear();
                    if reader.read_line(&mut line)? == 0 {
                        break;
                    }
                    // An entry cut short by a kill has no newline ("d 12" cut to "d 1" must
                    // not mark line 1): only whole lines count.
                    let Some(entry) = line.strip_suffix('\n') else {
                        break;
                    };
                    whole += line.len() as u64;
                    let Some((kind, number)) = entry.split_once(' ') else {
                        continue;
                    };
                    let Ok(number) = number.parse::<u64>() else {
                        continue;
                    };
                    match kind {
                        "d" => resume.done.insert(number),
                        "r" => resume.reserved = resume.reserved.max(number),
                        _ => {}
                    }
                }
                // Drop the cut entry, so that what is appended next starts a line.
                OpenOptions::new().write(true).open(path)?.set_len(whole)?;
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let mut file = File::create(path)
                    .with_context(|| format!("creating the journal {}", path.display()))?;
                file.write_all(format!("{header}\n").as_bytes())?;
            }
            Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
        }
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .with_context(|| format!("opening the journal {}", path.display()))?;
        Ok((
            Journal {
                path: path.to_path_buf(),
                file: Mutex::new(file),
                reserved: AtomicU64::new(resume.reserved),
            },
            resume,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Before line `n` is handed to a sender.
    pub fn reserve(&self, n: u64) -> std::io::Result<()> {
        if n <= self.reserved.load(Ordering::Acquire) {
            return Ok(());
        }
        let upto = n + RESERVE_AHEAD - 1;
        self.write(&format!("r {upto}\n"))?;
        self.reserved.store(upto, Ordering::Release);
        Ok(())
    }

    /// After line `n` was imported.
    pub fn done(&self, n: u64) -> std::io::Result<()> {
        self.write(&format!("d {n}\n"))
    }

    fn write(&self, entry: &str) -> std::io::Result<()> {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(entry.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reopened_journal_knows_done_and_uncertain_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        {
            let (journal, resume) = Journal::open(&path, "abc", "http://x").unwrap();
            assert_eq!((resume.reserved, resume.done.len()), (0, 0));
            journal.reserve(1).unwrap();
            journal.reserve(2).unwrap();
            journal.done(1).unwrap();
            journal.done(3).unwrap();
        }
        // A kill in the middle of an entry: "d 2" of "d 25".
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"d 2").unwrap();
        drop(file);
        let (journal, resume) = Journal::open(&path, "abc", "http://x").unwrap();
        assert_eq!(resume.reserved, RESERVE_AHEAD);
        assert!(resume.done.contains(1) && resume.done.contains(3));
        assert!(!resume.uncertain(1) && resume.uncertain(2));
        assert!(!resume.uncertain(RESERVE_AHEAD + 1));
        // The cut entry is gone; the next run's entries start on a line of their own.
        journal.done(4).unwrap();
        drop(journal);
        let (_, resume) = Journal::open(&path, "abc", "http://x").unwrap();
        assert!(resume.done.contains(4) && !resume.done.contains(2));
        let error = Journal::open(&path, "other", "http://x").err().unwrap();
        assert!(error.to_string().contains("another import"), "{error}");
    }
}
