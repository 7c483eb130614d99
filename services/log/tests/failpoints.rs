//! Fault injection into the embedded log's group commit (failpoints `log::write`, `log::fsync`).
//!
//! Failpoints are process-wide, so they live in this test binary of their own, and every test
//! holds a `FailScenario` (one scenario at a time; teardown clears every failpoint).
//!
//! What every test proves: a group that fails leaves no trace. Its appends get an error, and
//! none of their records can be read, now, after later appends, or after a reopen (recovery
//! keeps every whole frame it finds, so a leftover frame would come back as a record).

use std::path::Path;

use fail::FailScenario;
use pinhive_log::{EmbeddedLog, EmbeddedLogConfig, Log, Position, Record};

const PARTITIONS: u32 = 3;

fn record(key: &str, value: &str) -> Record {
    Record {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        content_type: 1,
        timestamp_ns: 7,
        traceparent: None,
    }
}

/// A key landing on `partition`.
fn key_of(partition: u32) -> String {
    (0..)
        .map(|i| format!("key-{i}"))
        .find(|key| pinhive_log::partition_for(key.as_bytes(), PARTITIONS) == partition)
        .expect("some key lands on every partition")
}

/// One record for each partition, in one append: the writer takes it as one group.
fn one_per_partition(value: &str) -> Vec<Record> {
    (0..PARTITIONS)
        .map(|p| record(&key_of(p), &format!("{value}-{p}")))
        .collect()
}

fn open(dir: &Path, segment_bytes: u64) -> EmbeddedLog {
    let config = EmbeddedLogConfig {
        partitions: PARTITIONS,
        segment_bytes,
        ..EmbeddedLogConfig::default()
    };
    EmbeddedLog::open(dir, config).unwrap()
}

/// Every value of `partition`, in order.
async fn values(log: &EmbeddedLog, partition: u32) -> Vec<String> {
    let mut out = Vec::new();
    let mut from = log.start_offset(partition);
    loop {
        let batch = log.read(partition, from, 1024).await.unwrap();
        let Some(last) = batch.last() else {
            return out;
        };
        from = last.next_offset;
        out.extend(
            batch
                .into_iter()
                .map(|r| String::from_utf8(r.record.unwrap().value).unwrap()),
        );
    }
}

/// Bytes on disk of `partition` (every segment).
fn bytes_on_disk(dir: &Path, partition: u32) -> u64 {
    std::fs::read_dir(dir.join(format!("partition-{partition:04}")))
        .unwrap()
        .map(|entry| entry.unwrap().metadata().unwrap().len())
        .sum()
}

/// Every partition holds `before-p`, then a group fails at `failpoint` as `actions` says;
/// then the failpoint is cleared and `after-p` is appended. Checks the log at each step and
/// after a reopen.
async fn a_failed_group_leaves_no_trace(failpoint: &str, actions: &str, segment_bytes: u64) {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), segment_bytes);
    log.append(one_per_partition("before")).await.unwrap();
    let ends: Vec<u64> = (0..PARTITIONS).map(|p| log.end_offset(p)).collect();
    let disk: Vec<u64> = (0..PARTITIONS)
        .map(|p| bytes_on_disk(dir.path(), p))
        .collect();
    let before = |p: u32| vec![format!("before-{p}")];

    fail::cfg(failpoint, actions).unwrap();
    let error = log.append(one_per_partition("failed")).await.unwrap_err();
    assert!(error.to_string().contains("injected fault"), "{error}");
    fail::remove(failpoint);

    for p in 0..PARTITIONS {
        assert_eq!(log.end_offset(p), ends[p as usize], "durable end of {p}");
        assert_eq!(
            bytes_on_disk(dir.path(), p),
            disk[p as usize],
            "bytes of {p}"
        );
        assert_eq!(values(&log, p).await, before(p), "partition {p}");
    }

    // Later appends work and start where the failed group started.
    let positions = log.append(one_per_partition("after")).await.unwrap();
    let expected: Vec<Position> = (0..PARTITIONS)
        .map(|p| Position {
            partition: p,
            offset: ends[p as usize],
        })
        .collect();
    assert_eq!(positions, expected);
    let both = |p: u32| vec![format!("before-{p}"), format!("after-{p}")];
    for p in 0..PARTITIONS {
        assert_eq!(values(&log, p).await, both(p), "partition {p}");
    }

    drop(log);
    let log = open(dir.path(), segment_bytes);
    for p in 0..PARTITIONS {
        assert_eq!(values(&log, p).await, both(p), "partition {p} after reopen");
    }
}

#[tokio::test]
async fn a_write_failing_on_the_last_partition_of_a_group_leaves_no_trace_in_earlier_ones() {
    let scenario = FailScenario::setup();
    // Partitions are written in order: 0 and 1 are written when 2 fails.
    a_failed_group_leaves_no_trace("log::write", "return(2)", 1 << 20).await;
    scenario.teardown();
}

#[tokio::test]
async fn a_write_failing_after_earlier_partitions_rolled_their_segments_leaves_no_trace() {
    let scenario = FailScenario::setup();
    // A tiny segment size: each record fills a segment, so the failed group opens new segments
    // on partitions 0 and 1 before partition 2 fails.
    a_failed_group_leaves_no_trace("log::write", "return(2)", 1).await;
    scenario.teardown();
}

#[tokio::test]
async fn an_fsync_failing_on_one_partition_leaves_no_trace_in_any() {
    let scenario = FailScenario::setup();
    // Every partition was written (and the others fsynced) when partition 1's fsync fails.
    a_failed_group_leaves_no_trace("log::fsync", "return(1)", 1 << 20).await;
    scenario.teardown();
}

#[tokio::test]
async fn a_group_of_several_appends_fails_and_recovers_as_a_whole() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 1 << 20);
    // Several appends waiting together form one group; partition 2's write fails after 0 and 1
    // took the frames of every append of the group.
    fail::cfg("log::write", "return(2)").unwrap();
    let appends: Vec<_> = (0..8)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.append(one_per_partition(&format!("failed{i}"))).await })
        })
        .collect();
    for append in appends {
        assert!(append.await.unwrap().is_err());
    }
    fail::remove("log::write");
    for p in 0..PARTITIONS {
        assert_eq!(log.end_offset(p), 0);
        assert_eq!(bytes_on_disk(dir.path(), p), 0);
    }
    log.append(one_per_partition("after")).await.unwrap();
    for p in 0..PARTITIONS {
        assert_eq!(values(&log, p).await, vec![format!("after-{p}")]);
    }
    scenario.teardown();
}
