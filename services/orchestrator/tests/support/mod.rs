//! What the orchestrator's integration tests share.
#![allow(dead_code)] // each test target uses part of it

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pinhive_log::{Log, StoredRecord};

/// Implements every `Store` method but `write_shard_batch` and `commit` (which each wrapper
/// writes itself) by calling `self.on_call(name)`, then the same method of `self.inner`.
#[macro_export]
macro_rules! delegate_store_reads {
    () => {
        $crate::delegate_store_reads! {
        fn load_cid(&self, cid: &str) -> Result<Option<CidState>, StoreError>;
        }
        $crate::delegate_store_reads!(except_load_cid);
    };
    // For a wrapper that injects faults into `load_cid`.
    (except_load_cid) => {
        $crate::delegate_store_reads! {
        fn load_pin(&self, requestid: &str) -> Result<Option<PinRow>, StoreError>;
        fn cid_pins(&self, cid: &str, from: &Cursor, limit: usize) -> Result<Vec<(u64, String)>, StoreError>;
        fn claim_partition(&self, partition: u32) -> Result<u64, StoreError>;
        fn committed(&self, partition: u32) -> Result<CommitState, StoreError>;
        fn checkpoint(&self, consumer: &str, partition: u32) -> Result<Option<u64>, StoreError>;
        fn set_checkpoint(&self, consumer: &str, partition: u32, offset: u64) -> Result<(), StoreError>;
        fn counter(&self, owner: &str, status: PinStatus, partition: u32) -> Result<Option<i64>, StoreError>;
        fn pending_cids(&self, partition: u32, after: Option<&str>, limit: usize) -> Result<Vec<String>, StoreError>;
        fn node_cids(&self, node: &str, partition: u32, from: &pinhive_store::NodeCidCursor, limit: usize) -> Result<(Vec<String>, Option<pinhive_store::NodeCidCursor>), StoreError>;
        fn expiry_due(&self, partition: u32, after_ns: i64, up_to_ns: i64, from: &pinhive_store::ExpiryCursor, limit: usize) -> Result<(Vec<pinhive_store::ExpiryEntry>, Option<pinhive_store::ExpiryCursor>), StoreError>;
        fn get_pin(&self, requestid: &str) -> Result<Option<PinRecord>, StoreError>;
        fn list_pins(&self, query: &PinQuery, partitions: u32) -> Result<PinPage, StoreError>;
        fn prune_journal(&self, partition: u32, before_ns: i64, limit: usize) -> Result<usize, StoreError>;
        fn prune_dead_letters(&self, before_ns: i64, limit: usize) -> Result<usize, StoreError>;
        fn journal(&self, cid: &str, after: Option<u64>, limit: usize) -> Result<Vec<JournalEntry>, StoreError>;
        fn put_token(&self, secret_hash: &str, token: &TokenRecord) -> Result<(), StoreError>;
        fn get_token(&self, secret_hash: &str) -> Result<Option<TokenRecord>, StoreError>;
        fn token_by_id(&self, id: &str) -> Result<Option<(String, TokenRecord)>, StoreError>;
        fn list_tokens(&self, owner: &str, after: Option<&str>, limit: usize) -> Result<Vec<(String, TokenRecord)>, StoreError>;
        fn put_node(&self, node: &NodeDescriptor) -> Result<(), StoreError>;
        fn remove_node(&self, id: &str) -> Result<(), StoreError>;
        fn list_nodes(&self) -> Result<Vec<NodeDescriptor>, StoreError>;
        fn put_s3_object(&self, bucket: &str, key: &str, object: Option<&S3Object>) -> Result<(), StoreError>;
        fn get_s3_object(&self, bucket: &str, key: &str) -> Result<Option<S3Object>, StoreError>;
        fn list_s3_objects(&self, bucket: &str, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<S3Object>, StoreError>;
        fn s3_objects_by_cid(&self, cid: &str, limit: usize) -> Result<Vec<S3Object>, StoreError>;
        fn put_dead_letter(&self, letter: &DeadLetter) -> Result<(), StoreError>;
        fn put_quarantine(&self, entry: &pinhive_store::Quarantine) -> Result<(), StoreError>;
        fn quarantined(&self, partition: u32) -> Result<Vec<pinhive_store::Quarantine>, StoreError>;
        fn clear_quarantine(&self, partition: u32, cid: &str) -> Result<bool, StoreError>;
        fn dead_letters(&self, after: Option<(u32, u64)>, limit: usize) -> Result<Vec<DeadLetter>, StoreError>;
        fn put_analytics_checkpoint(&self, partition: u32, checkpoint: &AnalyticsCheckpoint) -> Result<(), StoreError>;
        fn analytics_checkpoint(&self, partition: u32) -> Result<Option<AnalyticsCheckpoint>, StoreError>;
        fn flush(&self) -> Result<(), StoreError>;
        }
    };
    ($(fn $method:ident(&self $(, $arg:ident: $type:ty)*) -> $result:ty;)*) => {
        $(fn $method(&self $(, $arg: $type)*) -> $result {
            self.on_call(stringify!($method));
            self.inner.$method($($arg),*)
        })*
    };
}

/// Reads partition 0 of `log` from the start until `expected` records came back.
pub async fn read_all(log: &Arc<dyn Log>, expected: usize) -> Vec<StoredRecord> {
    let mut stored: Vec<StoredRecord> = Vec::with_capacity(expected);
    let mut from = 0;
    // Each read returns at least one record: `expected` reads at most.
    for _ in 0..=expected {
        if stored.len() >= expected {
            break;
        }
        let read = log.read(0, from, 4 << 20).await.expect("read");
        let Some(last) = read.last() else { break };
        from = last.next_offset;
        stored.extend(read);
    }
    assert_eq!(stored.len(), expected, "every appended record read back");
    stored
}

/// A real CIDv1 (raw, sha2-256-shaped digest), canonical form: the shard admits only those.
pub fn cid(i: usize) -> String {
    let mut digest = [0u8; 32];
    digest[..8].copy_from_slice(&(i as u64).to_be_bytes());
    let hash = cid::multihash::Multihash::<64>::wrap(0x12, &digest).expect("32 bytes fit");
    cid::Cid::new_v1(0x55, hash).to_string()
}

/// The request of pin `req-{i}` (owner alice) of [`cid`]`(i)` with min = max = `replicas`, as
/// the API appends it.
pub fn pin_request(i: usize, replicas: u8) -> pinhive_log::Record {
    request_as(&format!("req-{i}"), i, replicas)
}

/// [`pin_request`] under request id `requestid`.
pub fn request_as(requestid: &str, i: usize, replicas: u8) -> pinhive_log::Record {
    use pinhive_events::{Envelope, Event, PinRequested};
    pinhive_log::Record::from_envelope(&Envelope::new(
        cid(i),
        Event::PinRequested(PinRequested {
            requestid: requestid.into(),
            owner: "alice".into(),
            cid: cid(i),
            name: None,
            origins: vec![],
            meta: Default::default(),
            created_ns: i as i64 + 1,
            replicas_min: replicas,
            replicas_max: replicas,
            replaces: None,
        }),
    ))
}

/// A store whose `load_cid` of one CID (while `failing` names it) fails with `error(cid)`:
/// a corrupt row, or a row a later release wrote.
pub struct FailingLoadStore {
    pub inner: Box<dyn pinhive_store::Store>,
    pub failing: parking_lot::Mutex<Option<String>>,
    pub error: fn(&str) -> pinhive_store::StoreError,
}

impl FailingLoadStore {
    fn on_call(&self, _method: &'static str) {}
}

mod failing_load {
    use pinhive_domain::{CidState, Cursor, PinRecord, PinRow, PinStatus};
    use pinhive_events::NodeDescriptor;
    use pinhive_store::{
        AnalyticsCheckpoint, Commit, CommitState, DeadLetter, JournalEntry, PinPage, PinQuery,
        S3Object, ShardBatch, Store, StoreError, TokenRecord,
    };

    impl Store for super::FailingLoadStore {
        fn load_cid(&self, cid: &str) -> Result<Option<CidState>, StoreError> {
            if self.failing.lock().as_deref() == Some(cid) {
                return Err((self.error)(cid));
            }
            self.inner.load_cid(cid)
        }
        fn write_shard_batch(&self, batch: &ShardBatch) -> Result<(), StoreError> {
            self.inner.write_shard_batch(batch)
        }
        fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
            self.inner.commit(commit)
        }
        crate::delegate_store_reads!(except_load_cid);
    }
}

/// `read` on the store, on a blocking thread (as every caller of a `Store` runs it): a
/// blocking call inside the actix runtime's own task could wait on a wake-up deferred to it.
pub async fn on_store<S: Send + Sync + 'static, T: Send + 'static>(
    store: &Arc<S>,
    read: impl FnOnce(&S) -> T + Send + 'static,
) -> T {
    let store = store.clone();
    tokio::task::spawn_blocking(move || read(&store))
        .await
        .expect("the store read runs")
}

/// Waits until `check` holds, polling it every 10 ms; fails the test after 30 s.
pub async fn until_async<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut poll = tokio::time::interval(Duration::from_millis(10));
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        poll.tick().await;
    }
}

/// [`until_async`] for a condition that needs no await.
pub async fn until(what: &str, mut check: impl FnMut() -> bool) {
    until_async(what, || std::future::ready(check())).await
}

/// An embedded log of `partitions` partitions under `dir/log`.
pub fn open_log(dir: &std::path::Path, partitions: u32) -> Arc<dyn Log> {
    Arc::new(
        pinhive_log::EmbeddedLog::open(
            &dir.join("log"),
            pinhive_log::EmbeddedLogConfig {
                partitions,
                ..pinhive_log::EmbeddedLogConfig::default()
            },
        )
        .expect("open the embedded log"),
    )
}

/// Starts a node driver for each of `count` simulated daemons (`n0`, `n1`, … in regions
/// `r0`, `r1`, …) publishing outcomes into `log`, with fast health checks and backoff, and
/// waits until every one is reachable.
pub async fn simulated_fleet(
    count: usize,
    log: &Arc<dyn Log>,
    registry: &pinhive_ipfs::NodeRegistry,
) -> Vec<Arc<pinhive_ipfs::SimulatedIpfs>> {
    let fleet: Vec<_> = (0..count)
        .map(|i| start_simulated_node(i, log, registry))
        .collect();
    until("every simulated node reachable", || {
        registry.reachable_count() == count
    })
    .await;
    fleet
}

/// Starts the driver of simulated daemon `n{i}` (region `r{i}`), as [`simulated_fleet`] does,
/// without waiting for it.
pub fn start_simulated_node(
    i: usize,
    log: &Arc<dyn Log>,
    registry: &pinhive_ipfs::NodeRegistry,
) -> Arc<pinhive_ipfs::SimulatedIpfs> {
    use pinhive_ipfs::{IpfsApi, NodeDriver, NodeDriverConfig, SimulatedIpfs};
    let node = Arc::new(SimulatedIpfs::new(&format!("peer-{i}"), Duration::ZERO));
    let config = NodeDriverConfig {
        health_interval: Duration::from_millis(50),
        min_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        breaker_threshold: 1000,
        ..NodeDriverConfig::default()
    };
    let api: Arc<dyn IpfsApi> = node.clone();
    NodeDriver::new(
        pinhive_events::NodeDescriptor {
            id: format!("n{i}"),
            rpc_url: format!("sim://{i}"),
            region: format!("r{i}"),
            weight: 1,
        },
        api,
        Arc::new(pinhive_orchestrator::consumer::LogSink::new(log.clone())),
        registry.clone(),
        config,
    )
    .spawn();
    node
}
