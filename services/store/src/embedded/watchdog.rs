//! A guard under fjall's own memtable rotation, and the store's memory and journal gauges.
//!
//! fjall rotates a table's memtable (and, with it, lets the journal be rotated and trimmed)
//! only through messages to its worker pool. Released fjall 3.1.13 sent them with `try_send` on
//! a bounded queue of 1,000 and dropped them when it was full, and its workers could deadlock
//! on that queue (third_party/fjall/PINHIVE-PATCH.md); the 8M-pin `pinhive bench scale` run
//! (docs/capacity.md, 3.3) grew memtables to 24 GB of RSS and one journal file to 14 GB. The
//! patched fjall pinhive builds with has an unbounded queue, so requests are no longer lost; but
//! a request can still wait behind compactions while writers fill the memtable, and nothing in
//! fjall bounds that.
//!
//! The watchdog looks at every table's active memtable ten times a second and rotates one that
//! has grown past twice its size limit itself (fjall asks as soon as the size passes the limit,
//! so twice the limit means the request is stuck or lost). Once rotated, fjall's write stall
//! (four sealed memtables waiting) halts writers as designed, so memory per table is bounded by
//! about 2 × limit active + 4 × that sealed. While the journal is past twice its limit it also
//! rotates every table whose memtable has not changed for a second: the journal can only be
//! trimmed up to the oldest entry still in a memtable, so a rarely written table would
//! otherwise keep every journal file written since its last flush.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use fjall::{AbstractTree, Database, Keyspace};
use prometheus::{IntCounterVec, IntGaugeVec};

/// How often the memtables are looked at.
const PERIOD: Duration = Duration::from_millis(100);

struct Gauges {
    write_buffer: IntGaugeVec,
    journal: IntGaugeVec,
    rotations: IntCounterVec,
}

fn gauges() -> &'static Gauges {
    static GAUGES: std::sync::OnceLock<Gauges> = std::sync::OnceLock::new();
    GAUGES.get_or_init(|| Gauges {
        write_buffer: pinhive_telemetry::gauge_vec(
            "pinhive_store_write_buffer_bytes",
            "Embedded store: bytes in memtables (active and sealed) across tables",
            &[],
        ),
        journal: pinhive_telemetry::gauge_vec(
            "pinhive_store_journal_bytes",
            "Embedded store: bytes of journal (write-ahead) files, what a crash restart replays",
            &[],
        ),
        rotations: pinhive_telemetry::counter_vec(
            "pinhive_store_forced_rotations_total",
            "Embedded store: memtables rotated by the watchdog because the engine's own \
             rotation request was stuck or lost",
            &["table"],
        ),
    })
}

/// The running watchdog thread; dropping it stops and joins the thread.
pub(super) struct Watchdog {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    pub(super) fn start(
        db: Database,
        tables: Vec<(String, Keyspace)>,
        memtable_limit: u64,
        journal_limit: u64,
    ) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("pinhive-store-watchdog".into())
            .spawn(move || {
                let mut ages = MemtableAges::default();
                loop {
                    match stopped.recv_timeout(PERIOD) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    let gauges = gauges();
                    gauges
                        .write_buffer
                        .with_label_values::<&str>(&[])
                        .set(db.write_buffer_size() as i64);
                    rotate_oversized(&tables, memtable_limit);
                    let Ok(journal) = db.journal_disk_space() else {
                        continue;
                    };
                    gauges
                        .journal
                        .with_label_values::<&str>(&[])
                        .set(journal as i64);
                    let stragglers = ages.observe(&tables, std::time::Instant::now());
                    if journal > journal_limit.saturating_mul(2) {
                        rotate_stragglers(&tables, &stragglers);
                    }
                }
            })?;
        Ok(Watchdog {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A table whose active memtable is this old is a straggler once the journal is over its limit.
const STRAGGLER_AGE: Duration = Duration::from_secs(1);

/// When each table's active memtable was first seen (memtable ids change on every rotation).
#[derive(Default)]
struct MemtableAges {
    seen: std::collections::HashMap<String, (u64, std::time::Instant)>,
}

impl MemtableAges {
    /// Records the tables' active memtables at `now`; returns the tables whose active memtable
    /// has been the same for at least [`STRAGGLER_AGE`].
    fn observe(&mut self, tables: &[(String, Keyspace)], now: std::time::Instant) -> Vec<String> {
        let mut old = Vec::new();
        for (name, keyspace) in tables {
            let id = keyspace.tree.active_memtable().id();
            let entry = self.seen.entry(name.clone()).or_insert((id, now));
            if entry.0 != id {
                *entry = (id, now);
            } else if now.duration_since(entry.1) >= STRAGGLER_AGE {
                old.push(name.clone());
            }
        }
        old
    }
}

/// The journal can only be trimmed up to the oldest entry still in a memtable. fjall asks the
/// tables holding it to rotate when the journal passes its limit, with the same `try_send` that
/// gets lost; a table written rarely then pins every journal file written since. Rotating the
/// tables whose memtable is not new and not empty lets the journal be trimmed.
fn rotate_stragglers(tables: &[(String, Keyspace)], stragglers: &[String]) {
    for (name, keyspace) in tables.iter().filter(|(name, _)| stragglers.contains(name)) {
        match keyspace.rotate_memtable() {
            Ok(true) => gauges().rotations.with_label_values(&[name.as_str()]).inc(),
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(table = %name, %error, "rotating a table holding the journal failed");
            }
        }
    }
}

/// One WARN per this long at most: under a sustained load the guard acts many times a second.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Rotates every table whose active memtable holds more than twice `memtable_limit` bytes;
/// returns the names of those it rotated.
pub(super) fn rotate_oversized(tables: &[(String, Keyspace)], memtable_limit: u64) -> Vec<String> {
    static LAST_WARNED: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    let mut rotated = Vec::new();
    for (name, keyspace) in tables {
        let size = keyspace.tree.active_memtable().size();
        if size <= memtable_limit.saturating_mul(2) {
            continue;
        }
        match keyspace.rotate_memtable() {
            Ok(true) => {
                let mut last = LAST_WARNED.lock().unwrap_or_else(|e| e.into_inner());
                if last.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    *last = Some(std::time::Instant::now());
                    tracing::warn!(
                        table = %name,
                        memtable_bytes = size,
                        "store table's memtable was past twice its limit without being rotated: \
                         rotated it (the engine's rotation request is stuck or lost; at most one such \
                         line a minute, every time in pinhive_store_forced_rotations_total)"
                    );
                }
                gauges().rotations.with_label_values(&[name.as_str()]).inc();
                rotated.push(name.clone());
            }
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(table = %name, %error, "rotating an oversized memtable failed");
            }
        }
    }
    rotated
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjall::KeyspaceCreateOptions;

    /// Waits (30 s at most) until `keyspace` has a table on disk: its memtable was flushed.
    fn wait_until_on_disk(keyspace: &Keyspace, what: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while keyspace.disk_space() == 0 {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_memtable_past_twice_its_limit_is_rotated_and_flushed_and_a_small_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::builder(dir.path()).open().unwrap();
        // fjall's own limit is far away (64 MiB): only the watchdog can rotate these.
        let open = |name: &str| {
            db.keyspace(name, || {
                KeyspaceCreateOptions::default().max_memtable_size(64 << 20)
            })
            .unwrap()
        };
        let (big, small) = (open("big"), open("small"));
        for i in 0..3000u32 {
            big.insert(i.to_be_bytes(), vec![i as u8; 1000]).unwrap();
        }
        small.insert("k", "v").unwrap();
        let tables = vec![
            ("big".to_string(), big.clone()),
            ("small".to_string(), small.clone()),
        ];
        // 3 MB in `big`: past twice a 1 MiB limit; `small` is not.
        assert_eq!(rotate_oversized(&tables, 1 << 20), vec!["big".to_string()]);
        assert!(big.tree.active_memtable().size() < 1 << 20);
        // Flushed by fjall's workers: on disk, readable.
        wait_until_on_disk(&big, "the rotated memtable was never flushed");
        assert_eq!(big.get(7u32.to_be_bytes()).unwrap().unwrap().len(), 1000);
        assert_eq!(small.disk_space(), 0);
        // Nothing left past the limit: nothing to do.
        assert!(rotate_oversized(&tables, 1 << 20).is_empty());
    }

    #[test]
    fn a_rarely_written_table_does_not_keep_the_journal_from_being_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        // fjall's own straggler rotation starts at 1 GiB of journal here, so only the
        // watchdog's can trim it below that (as when fjall's requests are lost).
        let db = Database::builder(dir.path())
            .max_journaling_size(1 << 30)
            .open()
            .unwrap();
        let open = |name: &str| {
            db.keyspace(name, || {
                KeyspaceCreateOptions::default().max_memtable_size(4 << 20)
            })
            .unwrap()
        };
        let (busy, rare) = (open("busy"), open("rare"));
        // One entry in `rare`, in the first journal file; then `busy` fills many journal files
        // through rotations of its own memtable.
        rare.insert("k", "v").unwrap();
        let tables = vec![
            ("busy".to_string(), busy.clone()),
            ("rare".to_string(), rare.clone()),
        ];
        let mut ages = MemtableAges::default();
        let started = std::time::Instant::now();
        ages.observe(&tables, started);
        // Incompressible values (the journal may compress).
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut value = vec![0u8; 4096];
        for i in 0..60_000u32 {
            for byte in value.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *byte = seed as u8;
            }
            busy.insert(i.to_be_bytes(), value.as_slice()).unwrap();
            if i % 1000 == 999 {
                busy.rotate_memtable().unwrap();
            }
        }
        let journal_before = db.journal_disk_space().unwrap();
        // `rare` holds the oldest journal file: 240 MB of journal stay behind its one entry.
        assert!(
            journal_before > 128 << 20,
            "{journal_before} B in {} journal files",
            db.journal_count()
        );
        // Its memtable has not changed for a second: a straggler; `busy`'s has.
        let later = started + STRAGGLER_AGE;
        busy.rotate_memtable().unwrap();
        busy.insert("last", "x").unwrap();
        assert_eq!(ages.observe(&tables, later), vec!["rare".to_string()]);
        rotate_stragglers(&tables, &["rare".to_string()]);
        // Flushed, and then journal files are dropped on the next flush's maintenance.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            busy.insert("tick", "x").unwrap();
            busy.rotate_memtable_and_wait().unwrap();
            let journal = db.journal_disk_space().unwrap();
            if journal < journal_before / 2 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "journal still {journal} (was {journal_before})"
            );
        }
        assert_eq!(rare.get("k").unwrap().unwrap().as_ref(), b"v");
    }

    #[test]
    fn the_running_watchdog_rotates_an_oversized_memtable_and_stops_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::builder(dir.path()).open().unwrap();
        let keyspace = db
            .keyspace("t", || {
                KeyspaceCreateOptions::default().max_memtable_size(64 << 20)
            })
            .unwrap();
        let watchdog = Watchdog::start(
            db.clone(),
            vec![("t".into(), keyspace.clone())],
            1 << 20,
            64 << 20,
        )
        .unwrap();
        for i in 0..3000u32 {
            keyspace
                .insert(i.to_be_bytes(), vec![i as u8; 1000])
                .unwrap();
        }
        wait_until_on_disk(&keyspace, "never rotated and flushed");
        assert!(keyspace.tree.active_memtable().size() <= 2 << 20);
        drop(watchdog);
        drop(keyspace);
        drop(db);
    }
}
