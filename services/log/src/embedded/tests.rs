use super::*;

fn record(key: &str, value: &str) -> Record {
    Record {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        content_type: 1,
        timestamp_ns: 7,
        traceparent: None,
    }
}

fn config(partitions: u32) -> EmbeddedLogConfig {
    EmbeddedLogConfig {
        partitions,
        segment_bytes: 4096,
        ..EmbeddedLogConfig::default()
    }
}

async fn read_all(log: &EmbeddedLog, partition: u32) -> Vec<StoredRecord> {
    let mut out = Vec::new();
    let mut from = log.start_offset(partition);
    loop {
        let batch = log.read(partition, from, 1024).await.unwrap();
        let Some(last) = batch.last() else { break };
        from = last.next_offset;
        out.extend(batch);
    }
    out
}

#[tokio::test]
async fn append_then_read_back_in_order_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), config(4)).unwrap();
    let mut expected: Vec<Vec<String>> = vec![Vec::new(); 4];
    for i in 0..500 {
        let key = format!("key-{}", i % 37);
        let value = format!("value-{i}");
        let positions = log.append(vec![record(&key, &value)]).await.unwrap();
        expected[positions[0].partition as usize].push(value);
    }
    for p in 0..4 {
        let got: Vec<String> = read_all(&log, p)
            .await
            .into_iter()
            .map(|r| String::from_utf8(r.record.unwrap().value).unwrap())
            .collect();
        assert_eq!(got, expected[p as usize]);
    }
    assert!(
        log.partitions[0].segments.lock().len() > 1,
        "segments rolled"
    );
}

#[tokio::test]
async fn reopen_recovers_and_truncates_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let end;
    {
        let log = EmbeddedLog::open(dir.path(), config(1)).unwrap();
        log.append(vec![record("a", "1"), record("a", "2")])
            .await
            .unwrap();
        end = log.end_offset(0);
    }
    // A crash mid-write leaves half a frame behind.
    let segment = segment_path(&dir.path().join("partition-0000"), 0);
    let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
    file.write_all(&[40, 0, 0, 0, 1, 2, 3]).unwrap();
    drop(file);
    let log = EmbeddedLog::open(dir.path(), config(1)).unwrap();
    assert_eq!(log.end_offset(0), end);
    log.append(vec![record("a", "3")]).await.unwrap();
    let values: Vec<Vec<u8>> = read_all(&log, 0)
        .await
        .into_iter()
        .map(|r| r.record.unwrap().value)
        .collect();
    assert_eq!(values, vec![b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]);
}

#[tokio::test]
async fn concurrent_appends_share_group_commits_and_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), config(8)).unwrap();
    let mut tasks = Vec::new();
    for t in 0..16 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..100 {
                log.append(vec![record(&format!("k{t}-{i}"), "v")])
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut total = 0;
    for p in 0..8 {
        total += read_all(&log, p).await.len();
    }
    assert_eq!(total, 1600);
}

#[tokio::test]
async fn retention_drops_only_consumed_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), config(1)).unwrap();
    for i in 0..200 {
        log.append(vec![record("k", &format!("{i:0100}"))])
            .await
            .unwrap();
    }
    let segments = log.partitions[0].segments.lock().len();
    assert!(segments > 3);
    // Nothing consumed: nothing dropped.
    assert_eq!(log.release_before(0, 0, Duration::ZERO).await.unwrap(), 0);
    // Too young: nothing dropped.
    let end = log.end_offset(0);
    assert_eq!(
        log.release_before(0, end, Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    let freed = log.release_before(0, end, Duration::ZERO).await.unwrap();
    assert!(freed > 0);
    assert_eq!(
        log.partitions[0].segments.lock().len(),
        1,
        "active segment kept"
    );
    let start = log.start_offset(0);
    assert!(matches!(
        log.read(0, 0, 1024).await,
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert!(read_all(&log, 0).await.iter().all(|r| r.offset >= start));
}

#[tokio::test]
async fn a_second_process_cannot_open_the_same_log() {
    let dir = tempfile::tempdir().unwrap();
    let _log = EmbeddedLog::open(dir.path(), config(1)).unwrap();
    let error = EmbeddedLog::open(dir.path(), config(1)).err().unwrap();
    assert!(error.to_string().contains("in use"), "{error}");
}

#[tokio::test]
async fn changing_the_partition_count_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(EmbeddedLog::open(dir.path(), config(2)).unwrap());
    let error = EmbeddedLog::open(dir.path(), config(3)).err().unwrap();
    assert!(error.to_string().contains("cannot change"), "{error}");
}

#[test]
fn partitioner_matches_kafka_for_known_keys() {
    // toPositive(murmur2("21")) % 16 etc., from the Java client's formula.
    assert_eq!(
        crate::partition_for(b"21", 16),
        ((-973932308i32 as u32) & 0x7fff_ffff) % 16
    );
}
