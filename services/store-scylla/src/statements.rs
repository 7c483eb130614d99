//! Every statement the adapter sends, prepared once when the store opens.

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::Consistency;

use crate::store::backend;
use pinhive_store::StoreError;

/// The prepared statements of one keyspace. Every one is a single-partition read or write;
/// all but the owner-epoch LWTs are idempotent (absolute values keyed by what they describe —
/// a replay writes the same cells), so the driver's retry policy may retry them after a
/// timeout. The conditional ones (`claim_first`, `cas_owner_epoch`) are not marked so: a
/// retried compare-and-set may report "not applied" for its own first write.
pub(crate) struct Statements {
    pub load_cid: PreparedStatement,
    pub put_cid: PreparedStatement,
    pub delete_cid: PreparedStatement,
    pub load_pin: PreparedStatement,
    pub put_pin: PreparedStatement,
    pub delete_pin: PreparedStatement,
    pub cid_pins_from: PreparedStatement,
    pub cid_pins_after: PreparedStatement,
    pub cid_pin_buckets_from: PreparedStatement,
    pub put_cid_pin: PreparedStatement,
    pub delete_cid_pin: PreparedStatement,
    pub put_cid_pin_bucket: PreparedStatement,
    /// Per listing kind (status, cid, name): insert, delete, one bucket's range.
    pub listing_put: [PreparedStatement; 3],
    pub listing_delete: [PreparedStatement; 3],
    pub listing_range: [PreparedStatement; 3],
    pub put_listing_bucket: PreparedStatement,
    pub listing_buckets: PreparedStatement,
    pub commit_row: PreparedStatement,
    pub put_counter: PreparedStatement,
    pub committed: PreparedStatement,
    pub counter: PreparedStatement,
    pub owner_counters: PreparedStatement,
    /// The owner epoch of a log partition: the `kind = 2` row of its commits partition.
    pub owner_epoch: PreparedStatement,
    /// The first claim: `INSERT … IF NOT EXISTS` of the epoch row with epoch 1.
    pub claim_first: PreparedStatement,
    /// `UPDATE … SET value = ? … IF value = ?`: a claim (current + 1 if still current), and,
    /// in a fenced commit's batch, the check (the epoch set to itself).
    pub cas_owner_epoch: PreparedStatement,
    pub checkpoint: PreparedStatement,
    pub put_checkpoint: PreparedStatement,
    pub put_pending: PreparedStatement,
    pub delete_pending: PreparedStatement,
    pub pending_from: PreparedStatement,
    pub pending_after: PreparedStatement,
    pub put_node_cid: PreparedStatement,
    pub delete_node_cid: PreparedStatement,
    pub node_cids_from: PreparedStatement,
    pub node_cids_after: PreparedStatement,
    pub put_expiry: PreparedStatement,
    pub delete_expiry: PreparedStatement,
    pub expiry_due_from: PreparedStatement,
    pub expiry_due_after: PreparedStatement,
    pub put_journal: PreparedStatement,
    pub put_journal_day: PreparedStatement,
    pub put_journal_time: PreparedStatement,
    pub journal_days: PreparedStatement,
    pub journal_day: PreparedStatement,
    pub journal_by_time: PreparedStatement,
    pub delete_journal: PreparedStatement,
    pub delete_journal_time: PreparedStatement,
    pub put_token: PreparedStatement,
    pub get_token: PreparedStatement,
    pub put_token_id: PreparedStatement,
    pub get_token_id: PreparedStatement,
    pub put_token_by_owner: PreparedStatement,
    pub delete_token_by_owner: PreparedStatement,
    pub tokens_by_owner_from: PreparedStatement,
    pub tokens_by_owner_after: PreparedStatement,
    pub put_node: PreparedStatement,
    pub delete_node: PreparedStatement,
    pub nodes: PreparedStatement,
    pub put_dead_letter: PreparedStatement,
    pub put_dead_letter_partition: PreparedStatement,
    pub dead_letter_partitions: PreparedStatement,
    pub dead_letters_from: PreparedStatement,
    pub dead_letters_after: PreparedStatement,
    pub delete_dead_letter: PreparedStatement,
    pub put_s3_object: PreparedStatement,
    pub delete_s3_object: PreparedStatement,
    pub get_s3_object: PreparedStatement,
    pub s3_objects_from: PreparedStatement,
    pub s3_objects_after: PreparedStatement,
    pub put_s3_by_cid: PreparedStatement,
    pub delete_s3_by_cid: PreparedStatement,
    pub s3_by_cid: PreparedStatement,
    pub put_analytics: PreparedStatement,
    pub analytics: PreparedStatement,
    pub put_quarantine: PreparedStatement,
    /// Whether a CID of a log partition is quarantined (a point read of its key).
    pub quarantine_cid: PreparedStatement,
    /// The quarantined CIDs of a log partition, up to a limit (the limit check).
    pub quarantine_cids: PreparedStatement,
    /// The entries of a log partition, up to a limit, in CID order.
    pub quarantined: PreparedStatement,
    pub delete_quarantine: PreparedStatement,
}

/// Listing tables and the name of their index column, in `ListingKind` order.
const LISTING: [(&str, &str); 3] = [
    ("listing_by_status", "status"),
    ("listing_by_cid", "cid"),
    ("listing_by_name", "name"),
];

impl Statements {
    pub(crate) async fn prepare(
        session: &Session,
        keyspace: &str,
        consistency: Consistency,
    ) -> Result<Self, StoreError> {
        let prepare = |cql: String| async move {
            let cql = cql.replace("{ks}", keyspace);
            let mut statement = session
                .prepare(cql.as_str())
                .await
                .map_err(|e| backend(format!("preparing {cql}: {e}")))?;
            statement.set_consistency(consistency);
            statement.set_is_idempotent(true);
            Ok::<_, StoreError>(statement)
        };
        let p = |cql: &str| prepare(cql.to_string());
        let conditional = |cql: &str| {
            let prepared = prepare(cql.to_string());
            async move {
                let mut statement = prepared.await?;
                statement.set_is_idempotent(false);
                Ok::<_, StoreError>(statement)
            }
        };
        let mut listing_put = Vec::new();
        let mut listing_delete = Vec::new();
        let mut listing_range = Vec::new();
        for (table, column) in LISTING {
            listing_put.push(
                prepare(format!(
                    "INSERT INTO {{ks}}.{table} (owner, {column}, bucket, created, requestid, record) \
                     VALUES (?, ?, ?, ?, ?, ?)"
                ))
                .await?,
            );
            listing_delete.push(
                prepare(format!(
                    "DELETE FROM {{ks}}.{table} WHERE owner = ? AND {column} = ? AND bucket = ? \
                     AND created = ? AND requestid = ?"
                ))
                .await?,
            );
            listing_range.push(
                prepare(format!(
                    "SELECT created, requestid, record FROM {{ks}}.{table} WHERE owner = ? \
                     AND {column} = ? AND bucket = ? AND created < ? AND created > ?"
                ))
                .await?,
            );
        }
        let three = |v: Vec<PreparedStatement>| -> Result<[PreparedStatement; 3], StoreError> {
            v.try_into()
                .map_err(|_| backend("listing statements: expected three"))
        };
        Ok(Statements {
            load_cid: p("SELECT state FROM {ks}.cid_state WHERE cid = ? LIMIT 1").await?,
            put_cid: p("INSERT INTO {ks}.cid_state (cid, state) VALUES (?, ?)").await?,
            delete_cid: p("DELETE FROM {ks}.cid_state WHERE cid = ?").await?,
            load_pin: p("SELECT pin_row FROM {ks}.pins WHERE requestid = ? LIMIT 1").await?,
            put_pin: p("INSERT INTO {ks}.pins (requestid, pin_row) VALUES (?, ?)").await?,
            delete_pin: p("DELETE FROM {ks}.pins WHERE requestid = ?").await?,
            cid_pins_from: p(
                "SELECT requestid FROM {ks}.cid_pins WHERE cid = ? AND bucket = ? LIMIT ?",
            )
            .await?,
            cid_pins_after: p(
                "SELECT requestid FROM {ks}.cid_pins WHERE cid = ? AND bucket = ? \
                 AND requestid > ? LIMIT ?",
            )
            .await?,
            cid_pin_buckets_from: p(
                "SELECT bucket FROM {ks}.cid_pin_buckets WHERE cid = ? AND bucket >= ? LIMIT ?",
            )
            .await?,
            put_cid_pin: p("INSERT INTO {ks}.cid_pins (cid, bucket, requestid) VALUES (?, ?, ?)")
                .await?,
            delete_cid_pin: p(
                "DELETE FROM {ks}.cid_pins WHERE cid = ? AND bucket = ? AND requestid = ?",
            )
            .await?,
            put_cid_pin_bucket: p("INSERT INTO {ks}.cid_pin_buckets (cid, bucket) VALUES (?, ?)")
                .await?,
            listing_put: three(listing_put)?,
            listing_delete: three(listing_delete)?,
            listing_range: three(listing_range)?,
            put_listing_bucket: p(
                "INSERT INTO {ks}.listing_buckets (owner, kind, index_key, bucket) \
                 VALUES (?, ?, ?, ?)",
            )
            .await?,
            listing_buckets: p(
                "SELECT bucket FROM {ks}.listing_buckets WHERE owner = ? AND kind = ? \
                 AND index_key = ? AND bucket <= ? AND bucket >= ?",
            )
            .await?,
            commit_row: p(
                "UPDATE {ks}.commits SET batch_number = ?, next_offset = ?, attempt = ? \
                 WHERE log_partition = ?",
            )
            .await?,
            put_counter: p(
                "UPDATE {ks}.commits SET value = ? WHERE log_partition = ? AND kind = 1 \
                 AND owner = ? AND status = ?",
            )
            .await?,
            committed: p(
                "SELECT batch_number, next_offset, attempt FROM {ks}.commits \
                 WHERE log_partition = ? LIMIT 1",
            )
            .await?,
            counter: p(
                "SELECT value FROM {ks}.commits WHERE log_partition = ? AND kind = 1 \
                 AND owner = ? AND status = ? LIMIT 1",
            )
            .await?,
            owner_counters: p(
                "SELECT status, value FROM {ks}.commits WHERE log_partition = ? \
                 AND kind = 1 AND owner = ? LIMIT 64",
            )
            .await?,
            owner_epoch: p(
                "SELECT value FROM {ks}.commits WHERE log_partition = ? AND kind = 2 \
                 AND owner = '' AND status = 0 LIMIT 1",
            )
            .await?,
            claim_first: conditional(
                "INSERT INTO {ks}.commits (log_partition, kind, owner, status, value) \
                 VALUES (?, 2, '', 0, 1) IF NOT EXISTS",
            )
            .await?,
            cas_owner_epoch: conditional(
                "UPDATE {ks}.commits SET value = ? WHERE log_partition = ? AND kind = 2 \
                 AND owner = '' AND status = 0 IF value = ?",
            )
            .await?,
            checkpoint: p(
                "SELECT next_offset FROM {ks}.checkpoints WHERE consumer = ? \
                 AND log_partition = ? LIMIT 1",
            )
            .await?,
            put_checkpoint: p(
                "INSERT INTO {ks}.checkpoints (consumer, log_partition, next_offset) \
                 VALUES (?, ?, ?)",
            )
            .await?,
            put_pending: p("INSERT INTO {ks}.pending (log_partition, cid) VALUES (?, ?)").await?,
            delete_pending: p("DELETE FROM {ks}.pending WHERE log_partition = ? AND cid = ?")
                .await?,
            pending_from: p("SELECT cid FROM {ks}.pending WHERE log_partition = ? LIMIT ?").await?,
            pending_after: p(
                "SELECT cid FROM {ks}.pending WHERE log_partition = ? AND cid > ? LIMIT ?",
            )
            .await?,
            put_node_cid: p(
                "INSERT INTO {ks}.node_cids (node, log_partition, slot, cid) VALUES (?, ?, ?, ?)",
            )
            .await?,
            delete_node_cid: p(
                "DELETE FROM {ks}.node_cids WHERE node = ? AND log_partition = ? AND slot = ? \
                 AND cid = ?",
            )
            .await?,
            node_cids_from: p(
                "SELECT cid FROM {ks}.node_cids WHERE node = ? AND log_partition = ? \
                 AND slot = ? LIMIT ?",
            )
            .await?,
            node_cids_after: p(
                "SELECT cid FROM {ks}.node_cids WHERE node = ? AND log_partition = ? \
                 AND slot = ? AND cid > ? LIMIT ?",
            )
            .await?,
            put_expiry: p("INSERT INTO {ks}.expiry_index \
                 (log_partition, bucket, slot, due_ns, cid, requestid) VALUES (?, ?, ?, ?, ?, ?)")
            .await?,
            delete_expiry: p("DELETE FROM {ks}.expiry_index WHERE log_partition = ? \
                 AND bucket = ? AND slot = ? AND due_ns = ? AND cid = ? AND requestid = ?")
            .await?,
            expiry_due_from: p("SELECT due_ns, cid, requestid FROM {ks}.expiry_index \
                 WHERE log_partition = ? AND bucket = ? AND slot = ? \
                 AND due_ns > ? AND due_ns <= ? LIMIT ?")
            .await?,
            expiry_due_after: p("SELECT due_ns, cid, requestid FROM {ks}.expiry_index \
                 WHERE log_partition = ? AND bucket = ? AND slot = ? \
                 AND (due_ns, cid, requestid) > (?, ?, ?) AND (due_ns) <= (?) LIMIT ?")
            .await?,
            put_journal: p("INSERT INTO {ks}.journal (cid, day, log_offset, entry) \
                 VALUES (?, ?, ?, ?)")
            .await?,
            put_journal_day: p(
                "INSERT INTO {ks}.journal_days (cid, day) VALUES (?, ?) USING TTL ?",
            )
            .await?,
            put_journal_time: p("INSERT INTO {ks}.journal_by_time \
                 (log_partition, day, recorded_ns, log_offset, cid) VALUES (?, ?, ?, ?, ?)")
            .await?,
            journal_days: p("SELECT day FROM {ks}.journal_days WHERE cid = ? LIMIT ?").await?,
            journal_day: p("SELECT entry FROM {ks}.journal WHERE cid = ? AND day = ? \
                 AND log_offset >= ? LIMIT ?")
            .await?,
            journal_by_time: p(
                "SELECT recorded_ns, log_offset, cid FROM {ks}.journal_by_time \
                 WHERE log_partition = ? AND day = ? AND recorded_ns < ? LIMIT ?",
            )
            .await?,
            delete_journal: p(
                "DELETE FROM {ks}.journal WHERE cid = ? AND day = ? AND log_offset = ?",
            )
            .await?,
            delete_journal_time: p("DELETE FROM {ks}.journal_by_time WHERE log_partition = ? \
                 AND day = ? AND recorded_ns = ? AND log_offset = ?")
            .await?,
            put_token: p("INSERT INTO {ks}.tokens (secret_hash, token) VALUES (?, ?)").await?,
            get_token: p("SELECT token FROM {ks}.tokens WHERE secret_hash = ? LIMIT 1").await?,
            put_token_id: p("INSERT INTO {ks}.token_ids (token_id, secret_hash) VALUES (?, ?)")
                .await?,
            get_token_id: p("SELECT secret_hash FROM {ks}.token_ids WHERE token_id = ? LIMIT 1")
                .await?,
            put_token_by_owner: p(
                "INSERT INTO {ks}.tokens_by_owner (owner, token_id, token) VALUES (?, ?, ?)",
            )
            .await?,
            delete_token_by_owner: p(
                "DELETE FROM {ks}.tokens_by_owner WHERE owner = ? AND token_id = ?",
            )
            .await?,
            tokens_by_owner_from: p(
                "SELECT token_id, token FROM {ks}.tokens_by_owner WHERE owner = ? LIMIT ?",
            )
            .await?,
            tokens_by_owner_after: p(
                "SELECT token_id, token FROM {ks}.tokens_by_owner WHERE owner = ? \
                 AND token_id > ? LIMIT ?",
            )
            .await?,
            put_node: p("INSERT INTO {ks}.nodes (scope, node_id, node) VALUES ('nodes', ?, ?)")
                .await?,
            delete_node: p("DELETE FROM {ks}.nodes WHERE scope = 'nodes' AND node_id = ?").await?,
            nodes: p("SELECT node FROM {ks}.nodes WHERE scope = 'nodes'").await?,
            put_dead_letter: p(
                "INSERT INTO {ks}.dead_letters (log_partition, log_offset, letter) \
                 VALUES (?, ?, ?)",
            )
            .await?,
            put_dead_letter_partition: p(
                "INSERT INTO {ks}.dead_letter_partitions (scope, log_partition) \
                 VALUES ('dead_letters', ?)",
            )
            .await?,
            dead_letter_partitions: p("SELECT log_partition FROM {ks}.dead_letter_partitions \
                 WHERE scope = 'dead_letters' AND log_partition >= ? LIMIT ?")
            .await?,
            dead_letters_from: p(
                "SELECT letter FROM {ks}.dead_letters WHERE log_partition = ? \
                 AND log_offset >= ? LIMIT ?",
            )
            .await?,
            dead_letters_after: p(
                "SELECT letter FROM {ks}.dead_letters WHERE log_partition = ? \
                 AND log_offset > ? LIMIT ?",
            )
            .await?,
            delete_dead_letter: p(
                "DELETE FROM {ks}.dead_letters WHERE log_partition = ? AND log_offset = ?",
            )
            .await?,
            put_s3_object: p(
                "INSERT INTO {ks}.s3_objects (s3_bucket, object_key, object) \
                 VALUES (?, ?, ?)",
            )
            .await?,
            delete_s3_object: p(
                "DELETE FROM {ks}.s3_objects WHERE s3_bucket = ? AND object_key = ?",
            )
            .await?,
            get_s3_object: p("SELECT object FROM {ks}.s3_objects WHERE s3_bucket = ? \
                 AND object_key = ? LIMIT 1")
            .await?,
            s3_objects_from: p(
                "SELECT object_key, object FROM {ks}.s3_objects WHERE s3_bucket = ? \
                 AND object_key >= ? LIMIT ?",
            )
            .await?,
            s3_objects_after: p(
                "SELECT object_key, object FROM {ks}.s3_objects WHERE s3_bucket = ? \
                 AND object_key > ? LIMIT ?",
            )
            .await?,
            put_s3_by_cid: p("INSERT INTO {ks}.s3_by_cid (cid, s3_bucket, object_key) \
                 VALUES (?, ?, ?)")
            .await?,
            delete_s3_by_cid: p(
                "DELETE FROM {ks}.s3_by_cid WHERE cid = ? AND s3_bucket = ? \
                 AND object_key = ?",
            )
            .await?,
            s3_by_cid: p("SELECT s3_bucket, object_key FROM {ks}.s3_by_cid WHERE cid = ? LIMIT ?")
                .await?,
            put_analytics: p(
                "INSERT INTO {ks}.analytics (access_partition, next_offset, state) \
                 VALUES (?, ?, ?)",
            )
            .await?,
            analytics: p("SELECT next_offset, state FROM {ks}.analytics \
                 WHERE access_partition = ? LIMIT 1")
            .await?,
            put_quarantine: p(
                "INSERT INTO {ks}.quarantine (log_partition, cid, entry) VALUES (?, ?, ?)",
            )
            .await?,
            quarantine_cid: p(
                "SELECT cid FROM {ks}.quarantine WHERE log_partition = ? AND cid = ? LIMIT 1",
            )
            .await?,
            quarantine_cids: p("SELECT cid FROM {ks}.quarantine WHERE log_partition = ? LIMIT ?")
                .await?,
            quarantined: p("SELECT entry FROM {ks}.quarantine WHERE log_partition = ? LIMIT ?")
                .await?,
            delete_quarantine: p("DELETE FROM {ks}.quarantine WHERE log_partition = ? AND cid = ?")
                .await?,
        })
    }
}
