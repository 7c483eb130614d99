//! `ScyllaStore`: the `Store` trait over CQL. Table by table the mapping of
//! docs/data-model.md (schemas/cql/: 0001_initial.cql, 0002_node_cids.cql,
//! 0003_expiry_index.cql, 0004_quarantine.cql); what each method
//! sends is listed on it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use parking_lot::Mutex;
use pinhive_domain::{CidState, Cursor, PinRow, PinStatus};
use pinhive_events::NodeDescriptor;
use pinhive_store::{
    AnalyticsCheckpoint, Attempt, Commit, CommitState, DeadLetter, JournalEntry, NodeCidCursor,
    PinPage, PinQuery, Quarantine, S3Object, ShardBatch, Store, StoreError, TokenRecord,
};
use scylla::client::session::Session;
use scylla::deserialize::row::DeserializeRow;
use scylla::response::query_result::QueryResult;
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
use serde::de::DeserializeOwned;

use crate::driver::{connect, Driver, ScyllaOptions};
use crate::statements::Statements;
use crate::uri::ScyllaUri;

/// Writes of one shard batch in flight at once (they are independent rows).
pub(crate) const WRITE_CONCURRENCY: usize = 64;
/// Bucket markers remembered as written before the memory is cleared.
const KNOWN_MARKERS: usize = 200_000;
pub(crate) const DAY_NS: i64 = 86_400 * 1_000_000_000;

/// The ScyllaDB store. See the crate docs for the mapping, LWT and fencing.
pub struct ScyllaStore {
    pub(crate) session: Option<Session>,
    pub(crate) statements: Statements,
    pub(crate) options: ScyllaOptions,
    /// Bucket markers (listing, CID pin list, journal days) known to be written: a marker is
    /// never deleted, so one written once need not be written again by this process.
    pub(crate) markers: Mutex<HashSet<Marker>>,
    pub(crate) sent: Sent,
    pub(crate) driver: Driver,
}

/// Requests and CQL statements sent (a batch is one request of several statements).
#[derive(Default)]
pub(crate) struct Sent {
    requests: AtomicU64,
    statements: AtomicU64,
}

impl Sent {
    pub(crate) fn add(&self, statements: u64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.statements.fetch_add(statements, Ordering::Relaxed);
    }
}

/// What a store has sent so far (diagnostics, benchmarks: statements per pin).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SentCounts {
    /// Round trips: single statements, pages and batches.
    pub requests: u64,
    /// CQL statements, each statement of a batch counted.
    pub statements: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Marker {
    Listing {
        owner: String,
        kind: i8,
        key: String,
        bucket: i64,
    },
    CidPins {
        cid: String,
        bucket: i64,
    },
    JournalDay {
        cid: String,
        day: i64,
    },
}

pub(crate) fn backend(error: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(error.to_string())
}

/// Rows carry their encoding's version (`pinhive_store::row`, docs/data-model.md).
pub(crate) use pinhive_store::row::{decode, encode};

/// A u64 as a bigint that sorts the same way (clustering columns): the top bit flipped.
pub(crate) fn ordered(value: u64) -> i64 {
    (value ^ (1 << 63)) as i64
}

pub(crate) fn day_of(timestamp_ns: i64) -> i64 {
    timestamp_ns.max(0) / DAY_NS
}

/// A CQL `LIMIT` bind value.
pub(crate) fn limit_of(limit: usize) -> i32 {
    limit.clamp(1, i32::MAX as usize) as i32
}

/// Every row of a result, deserialized into owned values.
pub(crate) fn rows<R>(result: QueryResult) -> Result<Vec<R>, StoreError>
where
    R: for<'frame> DeserializeRow<'frame, 'frame>,
{
    let rows = result.into_rows_result().map_err(backend)?;
    let typed = rows.rows::<R>().map_err(backend)?;
    typed.map(|row| row.map_err(backend)).collect()
}

impl ScyllaStore {
    /// Connects to `uri` (`scylla://host:9042[,host:9042]/keyspace`, migrated with
    /// [`crate::migrate`]) with default options and prepares every statement.
    pub fn open(uri: &str) -> Result<Self, StoreError> {
        Self::open_with(uri, ScyllaOptions::default())
    }

    pub fn open_with(uri: &str, options: ScyllaOptions) -> Result<Self, StoreError> {
        let uri = ScyllaUri::parse(uri).map_err(backend)?;
        let driver = Driver::new(options.runtime_threads).map_err(backend)?;
        let (session, statements) = driver.run(async {
            let session = connect(&uri, &options)
                .await
                .map_err(|e| backend(format!("{e:#}")))?;
            let statements =
                Statements::prepare(&session, &uri.keyspace, options.consistency).await?;
            Ok::<_, StoreError>((session, statements))
        })?;
        Ok(ScyllaStore {
            session: Some(session),
            statements,
            options,
            markers: Mutex::new(HashSet::new()),
            sent: Sent::default(),
            driver,
        })
    }

    /// Requests and statements sent since the store opened.
    pub fn sent(&self) -> SentCounts {
        SentCounts {
            requests: self.sent.requests.load(Ordering::Relaxed),
            statements: self.sent.statements.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn session(&self) -> Result<&Session, StoreError> {
        self.session
            .as_ref()
            .ok_or_else(|| backend("the store is closed"))
    }

    pub(crate) async fn exec(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<QueryResult, StoreError> {
        self.sent.add(1);
        self.session()?
            .execute_unpaged(statement, values)
            .await
            .map_err(|e| backend(format!("{}: {e}", statement.get_statement())))
    }

    /// A write whose result is not read.
    pub(crate) fn write<'a>(
        &'a self,
        statement: &'a PreparedStatement,
        values: impl SerializeRow + Send + 'a,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { self.exec(statement, values).await.map(drop) })
    }

    /// Runs independent writes, at most [`WRITE_CONCURRENCY`] at once; the first error wins.
    pub(crate) async fn all(
        &self,
        writes: Vec<BoxFuture<'_, Result<(), StoreError>>>,
    ) -> Result<(), StoreError> {
        futures::stream::iter(writes)
            .buffer_unordered(WRITE_CONCURRENCY)
            .try_collect::<()>()
            .await
    }

    /// The first row's value of a point read.
    async fn point<R>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Option<R>, StoreError>
    where
        R: for<'frame> DeserializeRow<'frame, 'frame>,
    {
        Ok(rows::<R>(self.exec(statement, values).await?)?
            .into_iter()
            .next())
    }

    fn blob<T: DeserializeOwned>(
        &self,
        what: &'static str,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Option<T>, StoreError> {
        self.driver.run(async {
            match self.point::<(Option<Vec<u8>>,)>(statement, values).await? {
                Some((Some(bytes),)) => decode(what, &bytes).map(Some),
                _ => Ok(None),
            }
        })
    }

    /// Records markers as written (after the write succeeded).
    pub(crate) fn remember(&self, written: impl IntoIterator<Item = Marker>) {
        let mut markers = self.markers.lock();
        if markers.len() > KNOWN_MARKERS {
            markers.clear();
        }
        markers.extend(written);
    }

    pub(crate) fn known(&self, marker: &Marker) -> bool {
        self.markers.lock().contains(marker)
    }

    /// An owner's totals per status over all partitions, in `statuses` order: one read per
    /// partition (the owner's counter rows are one clustering range of it), concurrently.
    pub(crate) async fn totals(
        &self,
        owner: &str,
        statuses: &[PinStatus],
        partitions: u32,
    ) -> Result<Vec<u64>, StoreError> {
        let reads = (0..partitions).map(|partition| async move {
            rows::<(i8, Option<i64>)>(
                self.exec(&self.statements.owner_counters, (partition as i64, owner))
                    .await?,
            )
        });
        let per_partition: Vec<Vec<(i8, Option<i64>)>> = futures::stream::iter(reads)
            .buffer_unordered(WRITE_CONCURRENCY)
            .try_collect()
            .await?;
        let mut sums = vec![0i64; statuses.len()];
        for (code, value) in per_partition.into_iter().flatten() {
            if let Some(i) = statuses.iter().position(|s| s.code() as i8 == code) {
                sums[i] += value.unwrap_or(0);
            }
        }
        Ok(sums.into_iter().map(|sum| sum.max(0) as u64).collect())
    }

    async fn counter_async(
        &self,
        owner: &str,
        status: PinStatus,
        partition: u32,
    ) -> Result<Option<i64>, StoreError> {
        Ok(self
            .point::<(Option<i64>,)>(
                &self.statements.counter,
                (partition as i64, owner, status.code() as i8),
            )
            .await?
            .and_then(|(value,)| value))
    }

    async fn get_s3_object_async(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<S3Object>, StoreError> {
        match self
            .point::<(Option<Vec<u8>>,)>(&self.statements.get_s3_object, (bucket, key))
            .await?
        {
            Some((Some(bytes),)) => decode("s3 object", &bytes).map(Some),
            _ => Ok(None),
        }
    }
}

impl Drop for ScyllaStore {
    fn drop(&mut self) {
        // The session's connections are tasks of the adapter's runtime: closed inside it.
        let _context = self.driver.enter();
        drop(self.session.take());
    }
}

impl Store for ScyllaStore {
    /// `SELECT state FROM cid_state WHERE cid = ?` (one point read).
    fn load_cid(&self, cid: &str) -> Result<Option<CidState>, StoreError> {
        self.blob("cid state", &self.statements.load_cid, (cid,))
            .map_err(|error| error.of_row(cid))
    }

    /// `SELECT pin_row FROM pins WHERE requestid = ?` (one point read).
    fn load_pin(&self, requestid: &str) -> Result<Option<PinRow>, StoreError> {
        self.blob("pin", &self.statements.load_pin, (requestid,))
            .map_err(|error| error.of_row(requestid))
    }

    /// The CID's buckets from `from.bucket` (`cid_pin_buckets`), then each bucket's range of
    /// `cid_pins` until `limit` entries: one or a few single-partition reads.
    fn cid_pins(
        &self,
        cid: &str,
        from: &Cursor,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        self.driver.run(async {
            let statements = &self.statements;
            let mut out = Vec::new();
            let mut next_bucket = from.bucket as i64;
            while out.len() < limit {
                let buckets: Vec<(i64,)> = rows(
                    self.exec(
                        &statements.cid_pin_buckets_from,
                        (cid, next_bucket, limit_of(16)),
                    )
                    .await?,
                )?;
                let Some((last,)) = buckets.last().copied() else {
                    break;
                };
                for (bucket,) in buckets {
                    let left = limit_of(limit - out.len());
                    let result = match (&from.after, bucket == from.bucket as i64) {
                        (Some(after), true) => {
                            self.exec(&statements.cid_pins_after, (cid, bucket, after, left))
                                .await?
                        }
                        _ => {
                            self.exec(&statements.cid_pins_from, (cid, bucket, left))
                                .await?
                        }
                    };
                    for (requestid,) in rows::<(String,)>(result)? {
                        out.push((bucket as u64, requestid));
                    }
                    if out.len() >= limit {
                        break;
                    }
                }
                next_bucket = last + 1;
            }
            out.truncate(limit);
            Ok(out)
        })
    }

    fn write_shard_batch(&self, batch: &ShardBatch) -> Result<(), StoreError> {
        self.driver.run(self.write_rows(batch))
    }

    fn committed(&self, partition: u32) -> Result<CommitState, StoreError> {
        self.driver.run(async {
            type Row = (Option<i64>, Option<i64>, Option<Vec<u8>>);
            let Some((batch, next_offset, attempt)) = self
                .point::<Row>(&self.statements.committed, (partition as i64,))
                .await?
            else {
                return Ok(CommitState::default());
            };
            Ok(CommitState {
                batch: batch.unwrap_or(0) as u64,
                next_offset: next_offset.map(|offset| offset as u64),
                attempt: attempt
                    .map(|bytes| Attempt::from_bytes(&bytes))
                    .transpose()?,
            })
        })
    }

    /// A conditional batch when fenced (`owner_epoch > 0`): see `commit_async`.
    fn commit(&self, commit: &Commit) -> Result<(), StoreError> {
        self.driver.run(self.commit_async(commit))
    }

    /// Reads the epoch row (`kind = 2` of the partition's `commits` partition), then one LWT:
    /// `INSERT … IF NOT EXISTS` (the first claim) or `UPDATE … SET value = next IF value =
    /// current`; repeated after a lost race (bounded).
    fn claim_partition(&self, partition: u32) -> Result<u64, StoreError> {
        self.driver.run(self.claim_async(partition))
    }

    fn checkpoint(&self, consumer: &str, partition: u32) -> Result<Option<u64>, StoreError> {
        self.driver.run(async {
            Ok(self
                .point::<(Option<i64>,)>(&self.statements.checkpoint, (consumer, partition as i64))
                .await?
                .and_then(|(offset,)| offset)
                .map(|offset| offset as u64))
        })
    }

    fn set_checkpoint(
        &self,
        consumer: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), StoreError> {
        self.driver.run(self.write(
            &self.statements.put_checkpoint,
            (consumer, partition as i64, offset as i64),
        ))
    }

    fn counter(
        &self,
        owner: &str,
        status: PinStatus,
        partition: u32,
    ) -> Result<Option<i64>, StoreError> {
        self.driver
            .run(self.counter_async(owner, status, partition))
    }

    /// `SELECT cid FROM pending WHERE log_partition = ? [AND cid > ?] LIMIT ?`.
    fn pending_cids(
        &self,
        partition: u32,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.driver.run(async {
            let result = match after {
                Some(after) => {
                    self.exec(
                        &self.statements.pending_after,
                        (partition as i64, after, limit_of(limit)),
                    )
                    .await?
                }
                None => {
                    self.exec(
                        &self.statements.pending_from,
                        (partition as i64, limit_of(limit)),
                    )
                    .await?
                }
            };
            Ok(rows::<(String,)>(result)?
                .into_iter()
                .map(|(cid,)| cid)
                .take(limit)
                .collect())
        })
    }

    /// `node_cids` slot by slot from the cursor's, `LIMIT` each: see `node_cids_async`.
    fn node_cids(
        &self,
        node: &str,
        partition: u32,
        from: &NodeCidCursor,
        limit: usize,
    ) -> Result<(Vec<String>, Option<NodeCidCursor>), StoreError> {
        self.driver
            .run(self.node_cids_async(node, partition, from, limit))
    }

    /// `expiry_index` bucket by bucket and slot by slot over the window, `LIMIT` each, at
    /// most [`crate::EXPIRY_READS_PER_CALL`] reads a call: see `expiry_due_async`.
    fn expiry_due(
        &self,
        partition: u32,
        after_ns: i64,
        up_to_ns: i64,
        from: &pinhive_store::ExpiryCursor,
        limit: usize,
    ) -> Result<
        (
            Vec<pinhive_store::ExpiryEntry>,
            Option<pinhive_store::ExpiryCursor>,
        ),
        StoreError,
    > {
        self.driver
            .run(self.expiry_due_async(partition, after_ns, up_to_ns, from, limit))
    }

    fn list_pins(&self, query: &PinQuery, partitions: u32) -> Result<PinPage, StoreError> {
        crate::listing::list_pins(self, query, partitions)
    }

    /// Walks `journal_by_time` of the partition day by day from the oldest day that has not
    /// expired (the tables' TTL) up to the cutoff's day; deletes each entry and its time row.
    fn prune_journal(
        &self,
        partition: u32,
        before_ns: i64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        self.driver
            .run(self.prune_journal_async(partition, before_ns, limit))
    }

    fn prune_dead_letters(&self, before_ns: i64, limit: usize) -> Result<usize, StoreError> {
        self.driver
            .run(self.prune_dead_letters_async(before_ns, limit))
    }

    /// The CID's days (`journal_days`), then `journal` of each day from the offset on.
    fn journal(
        &self,
        cid: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        let from = match after {
            Some(u64::MAX) => return Ok(Vec::new()),
            Some(offset) => offset + 1,
            None => 0,
        };
        self.driver.run(async {
            let days: Vec<(i64,)> = rows(
                self.exec(&self.statements.journal_days, (cid, limit_of(10_000)))
                    .await?,
            )?;
            let mut out = Vec::new();
            for (day,) in days {
                if out.len() >= limit {
                    break;
                }
                let result = self
                    .exec(
                        &self.statements.journal_day,
                        (cid, day, ordered(from), limit_of(limit - out.len())),
                    )
                    .await?;
                for (entry,) in rows::<(Vec<u8>,)>(result)? {
                    out.push(decode("journal entry", &entry)?);
                }
            }
            out.truncate(limit);
            Ok(out)
        })
    }

    /// The token row first, then its index entries: a crash between them leaves a token that
    /// works but is not listed yet; writing it again (a revoke, or a read of a legacy row)
    /// completes it.
    fn put_token(&self, secret_hash: &str, token: &TokenRecord) -> Result<(), StoreError> {
        let id = pinhive_store::token_id(secret_hash);
        let row = encode(token);
        self.driver.run(async {
            self.exec(&self.statements.put_token, (secret_hash, &row))
                .await?;
            self.exec(&self.statements.put_token_id, (&id, secret_hash))
                .await?;
            match token.revoked_ns {
                None => {
                    self.exec(
                        &self.statements.put_token_by_owner,
                        (&token.owner, &id, &row),
                    )
                    .await?
                }
                Some(_) => {
                    self.exec(&self.statements.delete_token_by_owner, (&token.owner, &id))
                        .await?
                }
            };
            Ok(())
        })
    }

    fn get_token(&self, secret_hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        let bytes = self.driver.run(async {
            Ok::<_, StoreError>(
                self.point::<(Option<Vec<u8>>,)>(&self.statements.get_token, (secret_hash,))
                    .await?
                    .and_then(|(bytes,)| bytes),
            )
        })?;
        let Some(bytes) = bytes else {
            return Ok(None);
        };
        let token: TokenRecord = decode("token", &bytes)?;
        if pinhive_store::row::version_of(&bytes) < 3 {
            // Made before the token index: indexed, so it is listed and revocable by id. Only
            // the index is written, never the token row: rewriting the row could land after a
            // revocation written meanwhile (by another instance) and undo it. A token of an
            // earlier release was never revoked (there was no revocation).
            let id = pinhive_store::token_id(secret_hash);
            let row = encode(&token);
            self.driver.run(async {
                self.exec(&self.statements.put_token_id, (&id, secret_hash))
                    .await?;
                self.exec(
                    &self.statements.put_token_by_owner,
                    (&token.owner, &id, &row),
                )
                .await?;
                Ok::<_, StoreError>(())
            })?;
        }
        Ok(Some(token))
    }

    fn token_by_id(&self, id: &str) -> Result<Option<(String, TokenRecord)>, StoreError> {
        let hash = self.driver.run(async {
            Ok::<_, StoreError>(
                self.point::<(Option<String>,)>(&self.statements.get_token_id, (id,))
                    .await?
                    .and_then(|(hash,)| hash),
            )
        })?;
        match hash {
            Some(hash) => Ok(self.get_token(&hash)?.map(|token| (hash, token))),
            None => Ok(None),
        }
    }

    fn list_tokens(
        &self,
        owner: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, TokenRecord)>, StoreError> {
        self.driver.run(async {
            let result = match after {
                Some(after) => {
                    self.exec(
                        &self.statements.tokens_by_owner_after,
                        (owner, after, limit_of(limit)),
                    )
                    .await?
                }
                None => {
                    self.exec(
                        &self.statements.tokens_by_owner_from,
                        (owner, limit_of(limit)),
                    )
                    .await?
                }
            };
            let mut out = Vec::new();
            for (id, token) in rows::<(String, Vec<u8>)>(result)?.into_iter().take(limit) {
                out.push((id, decode("token", &token)?));
            }
            Ok(out)
        })
    }

    fn put_node(&self, node: &NodeDescriptor) -> Result<(), StoreError> {
        self.driver
            .run(self.write(&self.statements.put_node, (node.id.as_str(), encode(node))))
    }

    fn remove_node(&self, id: &str) -> Result<(), StoreError> {
        self.driver
            .run(self.write(&self.statements.delete_node, (id,)))
    }

    /// The one partition of `nodes`, page by page.
    fn list_nodes(&self) -> Result<Vec<NodeDescriptor>, StoreError> {
        self.driver.run(async {
            use scylla::response::{PagingState, PagingStateResponse};
            let session = self.session()?;
            let mut out = Vec::new();
            let mut paging = PagingState::start();
            loop {
                self.sent.add(1);
                let (result, next) = session
                    .execute_single_page(&self.statements.nodes, (), paging)
                    .await
                    .map_err(backend)?;
                for (node,) in rows::<(Vec<u8>,)>(result)? {
                    out.push(decode("node", &node)?);
                }
                match next {
                    PagingStateResponse::HasMorePages { state } => paging = state,
                    PagingStateResponse::NoMorePages => break,
                }
            }
            Ok(out)
        })
    }

    /// Reads the previous object; removes its by-CID entry if the CID changes; writes the
    /// by-CID entry before the object (a by-CID read re-checks the object's CID).
    fn put_s3_object(
        &self,
        bucket: &str,
        key: &str,
        object: Option<&S3Object>,
    ) -> Result<(), StoreError> {
        let statements = &self.statements;
        self.driver.run(async {
            let previous = self.get_s3_object_async(bucket, key).await?;
            if let Some(previous) = &previous {
                if object.is_none_or(|object| object.cid != previous.cid) {
                    self.exec(
                        &statements.delete_s3_by_cid,
                        (previous.cid.as_str(), bucket, key),
                    )
                    .await?;
                }
            }
            match object {
                Some(object) => {
                    self.exec(
                        &statements.put_s3_by_cid,
                        (object.cid.as_str(), bucket, key),
                    )
                    .await?;
                    self.exec(&statements.put_s3_object, (bucket, key, encode(object)))
                        .await?;
                }
                None => {
                    self.exec(&statements.delete_s3_object, (bucket, key))
                        .await?;
                }
            }
            Ok(())
        })
    }

    fn get_s3_object(&self, bucket: &str, key: &str) -> Result<Option<S3Object>, StoreError> {
        self.driver.run(self.get_s3_object_async(bucket, key))
    }

    /// One range of the bucket's partition from `after` (exclusive) or `prefix`, ending at the
    /// first key outside the prefix.
    fn list_s3_objects(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<S3Object>, StoreError> {
        self.driver.run(async {
            let result = match after {
                Some(after) => {
                    self.exec(
                        &self.statements.s3_objects_after,
                        (bucket, after, limit_of(limit)),
                    )
                    .await?
                }
                None => {
                    self.exec(
                        &self.statements.s3_objects_from,
                        (bucket, prefix, limit_of(limit)),
                    )
                    .await?
                }
            };
            let mut out = Vec::new();
            for (key, object) in rows::<(String, Vec<u8>)>(result)? {
                if !key.starts_with(prefix) || out.len() >= limit {
                    break;
                }
                out.push(decode("s3 object", &object)?);
            }
            Ok(out)
        })
    }

    fn s3_objects_by_cid(&self, cid: &str, limit: usize) -> Result<Vec<S3Object>, StoreError> {
        self.driver.run(async {
            let entries: Vec<(String, String)> = rows(
                self.exec(&self.statements.s3_by_cid, (cid, limit_of(limit)))
                    .await?,
            )?;
            let mut out = Vec::new();
            for (bucket, key) in entries.into_iter().take(limit) {
                if let Some(object) = self.get_s3_object_async(&bucket, &key).await? {
                    if object.cid == cid {
                        out.push(object);
                    }
                }
            }
            Ok(out)
        })
    }

    fn put_dead_letter(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        let partition = letter.partition as i64;
        self.driver.run(self.all(vec![
            self.write(
                &self.statements.put_dead_letter,
                (partition, ordered(letter.offset), encode(letter)),
            ),
            self.write(&self.statements.put_dead_letter_partition, (partition,)),
        ]))
    }

    fn dead_letters(
        &self,
        after: Option<(u32, u64)>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        self.driver.run(self.dead_letters_async(after, limit))
    }

    /// `quarantine`: a point read, a `LIMIT` read of the partition's CIDs, one insert (see
    /// `put_quarantine_async`).
    fn put_quarantine(&self, entry: &Quarantine) -> Result<(), StoreError> {
        self.driver.run(self.put_quarantine_async(entry))
    }

    /// One range of the log partition's `quarantine` partition, `LIMIT` 1,000.
    fn quarantined(&self, partition: u32) -> Result<Vec<Quarantine>, StoreError> {
        self.driver.run(self.quarantined_async(partition))
    }

    /// A point read, then a single-row delete if the entry is there.
    fn clear_quarantine(&self, partition: u32, cid: &str) -> Result<bool, StoreError> {
        self.driver.run(self.clear_quarantine_async(partition, cid))
    }

    fn put_analytics_checkpoint(
        &self,
        partition: u32,
        checkpoint: &AnalyticsCheckpoint,
    ) -> Result<(), StoreError> {
        self.driver.run(self.write(
            &self.statements.put_analytics,
            (
                partition as i64,
                checkpoint.next_offset as i64,
                checkpoint.state.as_slice(),
            ),
        ))
    }

    fn analytics_checkpoint(
        &self,
        partition: u32,
    ) -> Result<Option<AnalyticsCheckpoint>, StoreError> {
        self.driver.run(async {
            type Row = (Option<i64>, Option<Vec<u8>>);
            Ok(self
                .point::<Row>(&self.statements.analytics, (partition as i64,))
                .await?
                .map(|(next_offset, state)| AnalyticsCheckpoint {
                    next_offset: next_offset.unwrap_or(0) as u64,
                    state: state.unwrap_or_default(),
                }))
        })
    }

    /// Nothing to do: every write returned after the configured consistency level
    /// acknowledged it (ScyllaDB's commitlog is its own).
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_offsets_sort_like_u64() {
        let offsets = [0, 1, 7, (1 << 63) - 1, 1 << 63, u64::MAX - 1, u64::MAX];
        let mapped: Vec<i64> = offsets.iter().map(|o| ordered(*o)).collect();
        let mut sorted = mapped.clone();
        sorted.sort();
        assert_eq!(mapped, sorted);
        assert_eq!(ordered(0), i64::MIN);
        assert_eq!(ordered(u64::MAX), i64::MAX);
    }

    #[test]
    fn days_and_limits() {
        assert_eq!(day_of(-5), 0);
        assert_eq!(day_of(DAY_NS - 1), 0);
        assert_eq!(day_of(DAY_NS), 1);
        assert_eq!(limit_of(0), 1);
        assert_eq!(limit_of(usize::MAX), i32::MAX);
    }
}
