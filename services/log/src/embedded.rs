//! Embedded partitioned log: one directory per partition, segment files named by their base
//! offset, offsets are byte positions within the partition (monotonic, unique, stable across
//! restarts), one writer thread doing group commit.
//!
//! Group commit: the writer thread takes every append waiting in its queue (up to a byte
//! budget), writes each partition's frames with one `write`, fsyncs every touched segment once,
//! then publishes the new durable ends and acknowledges all appends of the group. Under load
//! many requests share one fsync; an idle log fsyncs each append alone.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};

use crate::frame::{self, Parsed};
use crate::{Log, LogError, Position, Record, StoredRecord};

#[derive(Clone, Debug)]
pub struct EmbeddedLogConfig {
    pub partitions: u32,
    /// A segment is closed and a new one started once it reaches this size.
    pub segment_bytes: u64,
    /// Appends waiting for the writer beyond this many make `append` fail with `Overloaded`
    /// (the API turns that into 503 + Retry-After) instead of queueing without bound.
    pub queue_depth: usize,
    /// Most bytes written per group commit.
    pub group_bytes: usize,
}

impl Default for EmbeddedLogConfig {
    fn default() -> Self {
        EmbeddedLogConfig {
            partitions: 16,
            segment_bytes: 64 * 1024 * 1024,
            queue_depth: 8192,
            group_bytes: 8 * 1024 * 1024,
        }
    }
}

struct Segment {
    base: u64,
    path: PathBuf,
}

struct Partition {
    dir: PathBuf,
    /// Durable end: readers never go past it.
    end: AtomicU64,
    start: AtomicU64,
    segments: Mutex<Vec<Segment>>,
    notify: watch::Sender<u64>,
}

struct AppendJob {
    frames: Vec<(u32, Vec<u8>)>,
    reply: oneshot::Sender<Result<Vec<Position>, LogError>>,
}

/// The embedded log. Cheap to clone; the writer thread stops when the last clone is dropped.
#[derive(Clone)]
pub struct EmbeddedLog {
    partitions: Arc<Vec<Partition>>,
    sender: mpsc::SyncSender<AppendJob>,
    _lock: Arc<File>,
}

impl EmbeddedLog {
    /// Opens (creating if needed) the log in `dir`, recovering every partition: a torn tail
    /// left by a crash is truncated to the last whole, checksummed frame.
    pub fn open(dir: &Path, config: EmbeddedLogConfig) -> Result<Self, LogError> {
        fs::create_dir_all(dir)?;
        let lock = lock_dir(dir)?;
        let existing = count_partition_dirs(dir)?;
        if existing != 0 && existing != config.partitions {
            return Err(LogError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} holds {existing} partitions but {} are configured; the partition count \
                     of an existing log cannot change",
                    dir.display(),
                    config.partitions
                ),
            )));
        }
        let mut partitions = Vec::with_capacity(config.partitions as usize);
        let mut active_files = Vec::with_capacity(config.partitions as usize);
        for p in 0..config.partitions {
            let pdir = dir.join(format!("partition-{p:04}"));
            fs::create_dir_all(&pdir)?;
            let (segments, end, file) = recover_partition(&pdir)?;
            let start = segments.first().map(|s| s.base).unwrap_or(0);
            let (notify, _) = watch::channel(end);
            partitions.push(Partition {
                dir: pdir,
                end: AtomicU64::new(end),
                start: AtomicU64::new(start),
                segments: Mutex::new(segments),
                notify,
            });
            active_files.push(file);
        }
        let partitions = Arc::new(partitions);
        let (sender, receiver) = mpsc::sync_channel(config.queue_depth);
        let writer = Writer {
            partitions: partitions.clone(),
            uncut: vec![false; active_files.len()],
            files: active_files,
            config,
        };
        std::thread::Builder::new()
            .name("pinhive-log-writer".into())
            .spawn(move || writer.run(receiver))?;
        Ok(EmbeddedLog {
            partitions,
            sender,
            _lock: Arc::new(lock),
        })
    }

    fn partition(&self, partition: u32) -> Result<&Partition, LogError> {
        self.partitions
            .get(partition as usize)
            .ok_or(LogError::NoSuchPartition(partition))
    }

    /// A receiver that sees every new durable end of `partition`.
    pub fn subscribe(&self, partition: u32) -> Result<watch::Receiver<u64>, LogError> {
        Ok(self.partition(partition)?.notify.subscribe())
    }

    /// Hands the records to the writer thread and waits for their group's fsync.
    async fn append_group(&self, records: Vec<Record>) -> Result<Vec<Position>, LogError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let partitions = self.partition_count();
        let mut frames = Vec::with_capacity(records.len());
        for record in &records {
            let len = frame::encoded_len(record);
            if len > frame::MAX_BODY || record.key.len() > u16::MAX as usize {
                return Err(LogError::RecordTooLarge(len));
            }
            let mut bytes = Vec::with_capacity(len);
            frame::encode(record, &mut bytes);
            frames.push((crate::partition_for(&record.key, partitions), bytes));
        }
        let (reply, answer) = oneshot::channel();
        let started = std::time::Instant::now();
        match self.sender.try_send(AppendJob { frames, reply }) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(_)) => return Err(LogError::Overloaded),
            Err(mpsc::TrySendError::Disconnected(_)) => return Err(LogError::Closed),
        }
        let result = answer.await.map_err(|_| LogError::Closed)?;
        crate::metrics::METRICS
            .append_seconds
            .with_label_values::<&str>(&[])
            .observe(started.elapsed().as_secs_f64());
        result
    }

    fn read_blocking(
        &self,
        partition: u32,
        from: u64,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, LogError> {
        let part = self.partition(partition)?;
        let end = part.end.load(Ordering::Acquire);
        let start = part.start.load(Ordering::Acquire);
        if from < start {
            return Err(LogError::OffsetOutOfRange {
                partition,
                offset: from,
                start,
            });
        }
        if from >= end {
            return Ok(Vec::new());
        }
        let (base, path, segment_end) = {
            let segments = part.segments.lock();
            let index = segments
                .partition_point(|s| s.base <= from)
                .saturating_sub(1);
            let segment = &segments[index];
            let segment_end = segments.get(index + 1).map(|s| s.base).unwrap_or(end);
            (segment.base, segment.path.clone(), segment_end.min(end))
        };
        let file = File::open(&path)?;
        let mut records = Vec::new();
        let mut position = from;
        // Only as large as what is there to read (usually a few KiB), not `max_bytes`.
        let available = (segment_end - from) as usize;
        let mut buf = vec![0u8; available.min(max_bytes.clamp(4096, 16 * 1024 * 1024))];
        while position < segment_end {
            let want = ((segment_end - position) as usize).min(buf.len());
            file.read_exact_at(&mut buf[..want], position - base)?;
            let mut cursor = 0usize;
            let mut progressed = false;
            loop {
                match frame::parse(&buf[cursor..want]) {
                    Parsed::Frame(len, record) => {
                        let offset = position + cursor as u64;
                        records.push(StoredRecord {
                            partition,
                            offset,
                            next_offset: offset + len as u64,
                            record,
                        });
                        cursor += len;
                        progressed = true;
                    }
                    Parsed::Incomplete => break,
                    Parsed::Garbage => {
                        // Unframeable bytes inside the durable range: skip to the end of the
                        // segment so the consumer can go on; the reason is dead-lettered.
                        let offset = position + cursor as u64;
                        records.push(StoredRecord {
                            partition,
                            offset,
                            next_offset: segment_end,
                            record: Err("unframeable bytes; rest of segment skipped".into()),
                        });
                        return Ok(records);
                    }
                }
            }
            position += cursor as u64;
            if !records.is_empty() && cursor >= want / 2 {
                break;
            }
            if !progressed {
                // One frame larger than the buffer: grow it once and retry.
                if buf.len() >= frame::MAX_BODY + frame::HEADER {
                    return Err(LogError::Io(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("frame at {position} exceeds the maximum size"),
                    )));
                }
                buf.resize(frame::MAX_BODY + frame::HEADER, 0);
            }
            if records.len() >= 10_000 {
                break;
            }
        }
        Ok(records)
    }
}

#[async_trait]
impl Log for EmbeddedLog {
    fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }

    async fn append(&self, records: Vec<Record>) -> Result<Vec<Position>, LogError> {
        let result = self.append_group(records).await;
        if let Err(error) = &result {
            crate::metrics::METRICS
                .append_errors
                .with_label_values(&[error.kind()])
                .inc();
        }
        result
    }

    async fn read(
        &self,
        partition: u32,
        from: u64,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, LogError> {
        let log = self.clone();
        tokio::task::spawn_blocking(move || log.read_blocking(partition, from, max_bytes))
            .await
            .map_err(|e| LogError::Io(io::Error::other(e)))?
    }

    async fn wait_beyond(&self, partition: u32, offset: u64, timeout: Duration) {
        let Ok(mut receiver) = self.subscribe(partition) else {
            return;
        };
        let _ = tokio::time::timeout(timeout, receiver.wait_for(|end| *end > offset)).await;
    }

    fn start_offset(&self, partition: u32) -> u64 {
        self.partition(partition)
            .map(|p| p.start.load(Ordering::Acquire))
            .unwrap_or(0)
    }

    fn end_offset(&self, partition: u32) -> u64 {
        self.partition(partition)
            .map(|p| p.end.load(Ordering::Acquire))
            .unwrap_or(0)
    }

    async fn release_before(
        &self,
        partition: u32,
        offset: u64,
        min_age: Duration,
    ) -> Result<u64, LogError> {
        let part = self.partition(partition)?;
        let mut freed = 0;
        let mut segments = part.segments.lock();
        // Never the active (last) segment; only segments whose successor starts at or
        // below `offset`, i.e. wholly consumed.
        while segments.len() > 1 && segments[1].base <= offset {
            let meta = fs::metadata(&segments[0].path)?;
            let age = meta
                .modified()
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .unwrap_or_default();
            if age < min_age {
                break;
            }
            fs::remove_file(&segments[0].path)?;
            freed += meta.len();
            segments.remove(0);
            part.start.store(segments[0].base, Ordering::Release);
        }
        Ok(freed)
    }
}

struct Writer {
    partitions: Arc<Vec<Partition>>,
    files: Vec<File>,
    /// Partitions whose file may still hold bytes of a failed group past the durable end
    /// (the cut back failed).
    uncut: Vec<bool>,
    config: EmbeddedLogConfig,
}

impl Writer {
    fn run(mut self, receiver: mpsc::Receiver<AppendJob>) {
        while let Ok(first) = receiver.recv() {
            let mut jobs = vec![first];
            let mut bytes: usize = jobs[0].frames.iter().map(|(_, f)| f.len()).sum();
            while bytes < self.config.group_bytes {
                match receiver.try_recv() {
                    Ok(job) => {
                        bytes += job.frames.iter().map(|(_, f)| f.len()).sum::<usize>();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            self.commit_group(jobs);
        }
    }

    fn commit_group(&mut self, jobs: Vec<AppendJob>) {
        let count = self.partitions.len();
        let mut buffers: Vec<Vec<u8>> = vec![Vec::new(); count];
        let mut ends: Vec<u64> = self
            .partitions
            .iter()
            .map(|p| p.end.load(Ordering::Acquire))
            .collect();
        let starting_ends = ends.clone();
        let mut positions: Vec<Vec<Position>> = Vec::with_capacity(jobs.len());
        for job in &jobs {
            let mut job_positions = Vec::with_capacity(job.frames.len());
            for (partition, bytes) in &job.frames {
                let p = *partition as usize;
                job_positions.push(Position {
                    partition: *partition,
                    offset: ends[p],
                });
                ends[p] += bytes.len() as u64;
                buffers[p].extend_from_slice(bytes);
            }
            positions.push(job_positions);
        }
        let metrics = &crate::metrics::METRICS;
        let records: usize = jobs.iter().map(|j| j.frames.len()).sum();
        let bytes: usize = buffers.iter().map(Vec::len).sum();
        metrics
            .group_records
            .with_label_values::<&str>(&[])
            .observe(records as f64);
        metrics
            .group_bytes
            .with_label_values::<&str>(&[])
            .observe(bytes as f64);
        let result = self.write_and_sync(&buffers, &starting_ends);
        if result.is_ok() {
            metrics
                .appended_records
                .with_label_values::<&str>(&[])
                .inc_by(records as u64);
        }
        match result {
            Ok(()) => {
                for (p, part) in self.partitions.iter().enumerate() {
                    if ends[p] != starting_ends[p] {
                        part.end.store(ends[p], Ordering::Release);
                        part.notify.send_replace(ends[p]);
                    }
                }
                for (job, job_positions) in jobs.into_iter().zip(positions) {
                    let _ = job.reply.send(Ok(job_positions));
                }
            }
            Err(error) => {
                tracing::error!(error = %error, "log append failed; acknowledged data is intact, this group is rejected");
                for job in jobs {
                    let _ = job.reply.send(Err(LogError::Io(io::Error::new(
                        error.kind(),
                        error.to_string(),
                    ))));
                }
            }
        }
    }

    /// Writes and fsyncs the group. On failure every partition the group touched is cut back
    /// to its length before the group: the group's appends all get an error, so none of their
    /// bytes may stay where a later group or a recovery after a crash would make them records.
    fn write_and_sync(&mut self, buffers: &[Vec<u8>], starting_ends: &[u64]) -> io::Result<()> {
        let mut touched = Vec::new();
        let result = self
            .write_partitions(buffers, starting_ends, &mut touched)
            .and_then(|()| self.sync_partitions(&touched));
        let Err(error) = result else {
            return Ok(());
        };
        for &p in &touched {
            self.cut_back(p, starting_ends[p]);
        }
        Err(error)
    }

    /// Writes each partition's frames with one `write`, recording every partition it starts to
    /// write in `touched` (before writing: a failed write may have left part of its bytes).
    fn write_partitions(
        &mut self,
        buffers: &[Vec<u8>],
        starting_ends: &[u64],
        touched: &mut Vec<usize>,
    ) -> io::Result<()> {
        for (p, buffer) in buffers.iter().enumerate() {
            if buffer.is_empty() {
                continue;
            }
            if self.uncut[p] {
                // An earlier failed group could not be cut back: retry before writing, since
                // the file is opened for appending and new frames must start at the durable end.
                self.cut_back(p, starting_ends[p]);
                if self.uncut[p] {
                    return Err(io::Error::other(format!(
                        "partition {p} still holds the bytes of a failed group"
                    )));
                }
            }
            self.roll_if_full(p, starting_ends[p])?;
            touched.push(p);
            injected_fault("log::write", p)?;
            self.files[p].write_all(buffer)?;
        }
        Ok(())
    }

    /// One fsync per touched segment, issued in parallel: the device overlaps them, so a group
    /// touching many partitions costs about one flush, not one per partition.
    fn sync_partitions(&self, touched: &[usize]) -> io::Result<()> {
        let files = &self.files;
        let sync = |p: usize| injected_fault("log::fsync", p).and_then(|()| files[p].sync_data());
        let fsync_timer = crate::metrics::METRICS
            .fsync_seconds
            .with_label_values::<&str>(&[])
            .start_timer();
        let result = std::thread::scope(|scope| {
            let handles: Vec<_> = touched
                .iter()
                .skip(1)
                .map(|&p| scope.spawn(move || sync(p)))
                .collect();
            let mut result = touched.first().map_or(Ok(()), |&p| sync(p));
            for handle in handles {
                let joined = handle
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("fsync thread panicked")));
                // The first error wins; every thread is joined either way.
                result = result.and(joined);
            }
            result
        });
        fsync_timer.observe_duration();
        result
    }

    /// Truncates partition `p` back to `end` (its durable end) and makes the truncation durable.
    /// Readers never saw the bytes past `end` (the durable end moves only after a whole group
    /// succeeded); this keeps recovery and the next group from seeing them either. If the cut
    /// fails the partition stays marked and takes no new frames until a retry succeeds.
    fn cut_back(&mut self, p: usize, end: u64) {
        let segment_base = self.partitions[p]
            .segments
            .lock()
            .last()
            .map(|s| s.base)
            .unwrap_or(0);
        let file = &self.files[p];
        match file
            .set_len(end.saturating_sub(segment_base))
            .and_then(|()| file.sync_all())
        {
            Ok(()) => self.uncut[p] = false,
            Err(error) => {
                self.uncut[p] = true;
                tracing::error!(partition = p, error = %error, "cannot cut a failed group off the log; the partition refuses appends until it can");
            }
        }
    }

    fn roll_if_full(&mut self, p: usize, end: u64) -> io::Result<()> {
        let part = &self.partitions[p];
        let base = part.segments.lock().last().map(|s| s.base).unwrap_or(0);
        if end - base < self.config.segment_bytes {
            return Ok(());
        }
        let path = segment_path(&part.dir, end);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        File::open(&part.dir)?.sync_all()?;
        part.segments.lock().push(Segment { base: end, path });
        self.files[p] = file;
        Ok(())
    }
}

/// The failpoints `log::write` (before a partition's frames are written) and `log::fsync`
/// (before a touched partition is fsynced), from the `fail` crate: compiled in only with its
/// `failpoints` feature, which only tests enable. `return` fails the step on every partition,
/// `return(k)` only on partition k.
#[allow(unused_variables)] // without the feature `fail_point!` expands to nothing
fn injected_fault(failpoint: &str, partition: usize) -> io::Result<()> {
    fail::fail_point!(failpoint, |only: Option<String>| {
        if only.is_some_and(|only| only != partition.to_string()) {
            Ok(())
        } else {
            Err(io::Error::other(format!("injected fault at {failpoint}")))
        }
    });
    Ok(())
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

fn lock_dir(dir: &Path) -> Result<File, LogError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"))?;
    file.try_lock().map_err(|_| {
        LogError::Io(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!(
                "log directory {} is in use by another pinhive process",
                dir.display()
            ),
        ))
    })?;
    Ok(file)
}

fn count_partition_dirs(dir: &Path) -> io::Result<u32> {
    let mut count = 0;
    for entry in fs::read_dir(dir)? {
        if entry?
            .file_name()
            .to_string_lossy()
            .starts_with("partition-")
        {
            count += 1;
        }
    }
    Ok(count)
}

/// Lists segments, validates the last one frame by frame and truncates a torn tail.
fn recover_partition(dir: &Path) -> io::Result<(Vec<Segment>, u64, File)> {
    let mut segments: Vec<Segment> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(base) = name
            .strip_suffix(".seg")
            .and_then(|b| b.parse::<u64>().ok())
        {
            segments.push(Segment {
                base,
                path: entry.path(),
            });
        }
    }
    segments.sort_by_key(|s| s.base);
    if segments.is_empty() {
        segments.push(Segment {
            base: 0,
            path: segment_path(dir, 0),
        });
    }
    let last = segments
        .last()
        .map(|s| (s.base, s.path.clone()))
        .unwrap_or_default();
    let file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(&last.1)?;
    let len = file.metadata()?.len();
    let mut valid = 0u64;
    let mut buf = vec![0u8; 1024 * 1024];
    let mut carry: Vec<u8> = Vec::new();
    let mut read_at = 0u64;
    'scan: while read_at < len {
        let n = ((len - read_at) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], read_at)?;
        read_at += n as u64;
        carry.extend_from_slice(&buf[..n]);
        let mut cursor = 0;
        loop {
            match frame::parse(&carry[cursor..]) {
                Parsed::Frame(frame_len, Ok(_)) => {
                    cursor += frame_len;
                    valid += frame_len as u64;
                }
                Parsed::Frame(_, Err(_)) | Parsed::Garbage => break 'scan,
                Parsed::Incomplete => break,
            }
        }
        carry.drain(..cursor);
    }
    if valid < len {
        tracing::warn!(segment = %last.1.display(), kept = valid, dropped = len - valid, "truncating torn log tail");
        file.set_len(valid)?;
        file.sync_all()?;
    }
    Ok((segments, last.0 + valid, file))
}

#[cfg(test)]
mod tests;
