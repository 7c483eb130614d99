//! The CQL test server driven by the real `scylla` driver: one test per behaviour.

use std::time::Duration;

use futures::TryStreamExt;
use pinhive_cql_server::{CqlServer, Fault, StatementMatcher};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use scylla::response::{PagingState, PagingStateResponse};
use scylla::statement::batch::{Batch, BatchType};
use scylla::value::{CqlTimestamp, CqlTimeuuid, MaybeUnset};

async fn started() -> (CqlServer, Session) {
    // `RUST_LOG=scylla=debug cargo test ...` shows what the driver thinks of the server.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let server = CqlServer::start().await.expect("server starts");
    let session = SessionBuilder::new()
        .known_node_addr(server.addr())
        .build()
        .await
        .expect("driver connects");
    session
        .query_unpaged(
            "CREATE KEYSPACE ks WITH replication = {'class': 'NetworkTopologyStrategy', 'replication_factor': 1}",
            &[],
        )
        .await
        .expect("keyspace created");
    session.use_keyspace("ks", false).await.expect("USE ks");
    (server, session)
}

async fn run(session: &Session, statement: &str) {
    session
        .query_unpaged(statement, &[])
        .await
        .unwrap_or_else(|error| panic!("{statement}: {error}"));
}

fn db_error(error: ExecutionError) -> (DbError, String) {
    match error {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db_error, message)) => {
            (db_error, message)
        }
        other => panic!("expected a database error, got {other:?}"),
    }
}

async fn refused(session: &Session, statement: &str) -> String {
    let error = session
        .query_unpaged(statement, &[])
        .await
        .expect_err("statement must be refused");
    match db_error(error) {
        (DbError::Invalid, message) => message,
        (other, message) => panic!("expected Invalid, got {other:?}: {message}"),
    }
}

async fn clustered_table(session: &Session, order: &str) {
    run(
        session,
        &format!(
            "CREATE TABLE events (p text, c1 int, c2 int, v text, s text static, PRIMARY KEY (p, c1, c2)) \
             WITH CLUSTERING ORDER BY (c1 {order}, c2 {order})"
        ),
    )
    .await;
    let insert = session
        .prepare("INSERT INTO events (p, c1, c2, v) VALUES (?, ?, ?, ?)")
        .await
        .unwrap();
    for c1 in 0..3 {
        for c2 in 0..3 {
            session
                .execute_unpaged(&insert, ("a", c1, c2, format!("{c1}.{c2}")))
                .await
                .unwrap();
        }
    }
}

async fn values(session: &Session, statement: &str) -> Vec<String> {
    session
        .query_unpaged(statement, &[])
        .await
        .unwrap_or_else(|error| panic!("{statement}: {error}"))
        .into_rows_result()
        .unwrap()
        .rows::<(String,)>()
        .unwrap()
        .map(|row| row.unwrap().0)
        .collect()
}

#[tokio::test]
async fn the_driver_connects_and_reads_the_schema_metadata() {
    let (_server, session) = started().await;
    run(
        &session,
        "CREATE TABLE pins (cid text, owner bigint, name text, PRIMARY KEY (cid, owner))",
    )
    .await;
    session.refresh_metadata().await.expect("metadata refresh");
    let state = session.get_cluster_state();
    let keyspace = state
        .get_keyspace("ks")
        .expect("keyspace in the driver's metadata");
    let table = keyspace
        .tables
        .get("pins")
        .expect("table in the driver's metadata");
    assert_eq!(table.partition_key, vec!["cid".to_string()]);
    assert_eq!(table.clustering_key, vec!["owner".to_string()]);
    assert_eq!(state.get_nodes_info().len(), 1);
}

#[tokio::test]
async fn create_existing_keyspace_and_table_is_already_exists_unless_if_not_exists() {
    let (_server, session) = started().await;
    run(&session, "CREATE TABLE t (k text PRIMARY KEY, v int)").await;
    run(
        &session,
        "CREATE TABLE IF NOT EXISTS t (k text PRIMARY KEY, v int)",
    )
    .await;
    let error = session
        .query_unpaged("CREATE TABLE t (k text PRIMARY KEY, v int)", &[])
        .await
        .unwrap_err();
    assert!(matches!(db_error(error).0, DbError::AlreadyExists { .. }));
    let error = session
        .query_unpaged("CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}", &[])
        .await
        .unwrap_err();
    assert!(matches!(db_error(error).0, DbError::AlreadyExists { .. }));
    run(&session, "DROP TABLE IF EXISTS t").await;
    run(&session, "DROP TABLE IF EXISTS t").await;
    let message = refused(&session, "SELECT * FROM t WHERE k = 'x'").await;
    assert!(message.contains("unconfigured table t"), "{message}");
}

#[tokio::test]
async fn prepared_insert_and_select_round_trip_every_type() {
    let (_server, session) = started().await;
    run(
        &session,
        "CREATE TABLE all_types (k text PRIMARY KEY, a ascii, b blob, bi bigint, i int, si smallint, ti tinyint, \
         bo boolean, d double, ts timestamp, u uuid, tu timeuuid)",
    )
    .await;
    let insert = session
        .prepare("INSERT INTO all_types (k, a, b, bi, i, si, ti, bo, d, ts, u, tu) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
        .await
        .unwrap();
    let uuid = uuid::Uuid::parse_str("6c1b1b6e-8d55-4f3c-9a52-1a2b3c4d5e6f").unwrap();
    let timeuuid =
        CqlTimeuuid::from(uuid::Uuid::parse_str("8e14e760-7fa8-11eb-bc66-000000000001").unwrap());
    let row = (
        "key".to_string(),
        "ascii".to_string(),
        vec![0u8, 1, 2, 255],
        -9_000_000_000i64,
        -7i32,
        -300i16,
        -5i8,
        true,
        2.5f64,
        CqlTimestamp(1_700_000_000_123),
        uuid,
        timeuuid,
    );
    session.execute_unpaged(&insert, row.clone()).await.unwrap();
    let select = session
        .prepare("SELECT k, a, b, bi, i, si, ti, bo, d, ts, u, tu FROM all_types WHERE k = ?")
        .await
        .unwrap();
    let read = session
        .execute_unpaged(&select, ("key",))
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row::<(
            String,
            String,
            Vec<u8>,
            i64,
            i32,
            i16,
            i8,
            bool,
            f64,
            CqlTimestamp,
            uuid::Uuid,
            CqlTimeuuid,
        )>()
        .unwrap();
    assert_eq!(read, row);
}

#[tokio::test]
async fn prepared_metadata_carries_bind_types_and_partition_key_indexes() {
    let (_server, session) = started().await;
    run(
        &session,
        "CREATE TABLE t (p1 text, p2 int, c bigint, v blob, PRIMARY KEY ((p1, p2), c))",
    )
    .await;
    let prepared = session
        .prepare("UPDATE t SET v = ? WHERE p2 = ? AND p1 = ? AND c = ?")
        .await
        .unwrap();
    let variables = prepared.get_variable_col_specs();
    let names: Vec<&str> = variables.iter().map(|spec| spec.name()).collect();
    assert_eq!(names, vec!["v", "p2", "p1", "c"]);
    let indexes: Vec<u16> = prepared
        .get_variable_pk_indexes()
        .iter()
        .map(|index| index.index)
        .collect();
    assert_eq!(indexes, vec![1, 2]);
    // The driver type-checks values against the server's metadata.
    let wrong = session
        .execute_unpaged(&prepared, (1i32, 2i32, "x", 3i64))
        .await;
    assert!(
        wrong.is_err(),
        "an int bound to a blob must be refused by the driver"
    );
}

#[tokio::test]
async fn rows_come_back_in_ascending_clustering_order_and_reversed_by_order_by() {
    let (_server, session) = started().await;
    clustered_table(&session, "ASC").await;
    let ascending = values(&session, "SELECT v FROM events WHERE p = 'a'").await;
    assert_eq!(
        ascending,
        vec!["0.0", "0.1", "0.2", "1.0", "1.1", "1.2", "2.0", "2.1", "2.2"]
    );
    let descending = values(
        &session,
        "SELECT v FROM events WHERE p = 'a' ORDER BY c1 DESC, c2 DESC",
    )
    .await;
    assert_eq!(
        descending,
        ascending.iter().rev().cloned().collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn rows_come_back_in_descending_clustering_order_when_declared() {
    let (_server, session) = started().await;
    clustered_table(&session, "DESC").await;
    let rows = values(&session, "SELECT v FROM events WHERE p = 'a' LIMIT 4").await;
    assert_eq!(rows, vec!["2.2", "2.1", "2.0", "1.2"]);
    let reversed = values(
        &session,
        "SELECT v FROM events WHERE p = 'a' ORDER BY c1 ASC LIMIT 2",
    )
    .await;
    assert_eq!(reversed, vec!["0.0", "0.1"]);
}

#[tokio::test]
async fn range_and_tuple_restrictions_select_clustering_slices() {
    let (_server, session) = started().await;
    clustered_table(&session, "ASC").await;
    let slice = values(
        &session,
        "SELECT v FROM events WHERE p = 'a' AND c1 = 1 AND c2 >= 1",
    )
    .await;
    assert_eq!(slice, vec!["1.1", "1.2"]);
    let bounded = values(
        &session,
        "SELECT v FROM events WHERE p = 'a' AND c1 > 0 AND c1 <= 1",
    )
    .await;
    assert_eq!(bounded, vec!["1.0", "1.1", "1.2"]);
    let tuple = session
        .prepare("SELECT v FROM events WHERE p = ? AND (c1, c2) > (?, ?) LIMIT ?")
        .await
        .unwrap();
    let rows: Vec<String> = session
        .execute_unpaged(&tuple, ("a", 1, 1, 3))
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .rows::<(String,)>()
        .unwrap()
        .map(|row| row.unwrap().0)
        .collect();
    assert_eq!(rows, vec!["1.2", "2.0", "2.1"]);
}

#[tokio::test]
async fn static_columns_are_shared_by_the_rows_of_a_partition() {
    let (_server, session) = started().await;
    clustered_table(&session, "ASC").await;
    run(&session, "UPDATE events SET s = 'shared' WHERE p = 'a'").await;
    let statics = values(&session, "SELECT s FROM events WHERE p = 'a' AND c1 = 2").await;
    assert_eq!(statics, vec!["shared", "shared", "shared"]);
    run(&session, "UPDATE events SET s = 'alone' WHERE p = 'b'").await;
    let rows = session
        .query_unpaged("SELECT p, c1, s FROM events WHERE p = 'b'", &[])
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .rows::<(String, Option<i32>, String)>()
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    assert_eq!(rows, vec![("b".to_string(), None, "alone".to_string())]);
}

#[tokio::test]
async fn a_where_clause_without_the_full_partition_key_is_refused_as_filtering() {
    let (_server, session) = started().await;
    run(
        &session,
        "CREATE TABLE t (p1 text, p2 int, c int, v int, PRIMARY KEY ((p1, p2), c))",
    )
    .await;
    let message = refused(&session, "SELECT * FROM t WHERE p1 = 'a'").await;
    assert!(
        message.starts_with("Cannot execute this query as it might involve data filtering"),
        "{message}"
    );
    let message = refused(&session, "SELECT * FROM t WHERE c = 1").await;
    assert!(message.contains("ALLOW FILTERING"), "{message}");
    let message = refused(
        &session,
        "SELECT * FROM t WHERE p1 = 'a' AND p2 = 1 AND v = 3",
    )
    .await;
    assert!(message.contains("ALLOW FILTERING"), "{message}");
}

#[tokio::test]
async fn allow_filtering_is_refused() {
    let (_server, session) = started().await;
    run(
        &session,
        "CREATE TABLE t (p text, c int, v int, PRIMARY KEY (p, c))",
    )
    .await;
    let message = refused(&session, "SELECT * FROM t WHERE v = 1 ALLOW FILTERING").await;
    assert!(message.contains("ALLOW FILTERING is refused"), "{message}");
}

#[tokio::test]
async fn ranges_on_non_clustering_columns_and_out_of_order_are_refused() {
    let (_server, session) = started().await;
    clustered_table(&session, "ASC").await;
    let message = refused(&session, "SELECT * FROM events WHERE p > 'a'").await;
    assert!(
        message.contains("Only EQ and IN relation are supported on the partition key"),
        "{message}"
    );
    let message = refused(&session, "SELECT * FROM events WHERE p = 'a' AND c2 > 1").await;
    assert!(
        message.contains("cannot be restricted as preceding column \"c1\" is not restricted"),
        "{message}"
    );
    let message = refused(
        &session,
        "SELECT * FROM events WHERE p = 'a' AND c1 > 1 AND c2 = 1",
    )
    .await;
    assert!(
        message.contains("restricted by a non-EQ relation"),
        "{message}"
    );
    let message = refused(&session, "SELECT * FROM events WHERE p = 'a' AND v > 'x'").await;
    assert!(message.contains("ALLOW FILTERING"), "{message}");
}

#[tokio::test]
async fn order_by_must_follow_or_reverse_the_declared_order() {
    let (_server, session) = started().await;
    clustered_table(&session, "ASC").await;
    let message = refused(
        &session,
        "SELECT * FROM events WHERE p = 'a' ORDER BY c1 ASC, c2 DESC",
    )
    .await;
    assert!(
        message.contains("Unsupported order by relation"),
        "{message}"
    );
    let message = refused(
        &session,
        "SELECT * FROM events WHERE p = 'a' ORDER BY c2 ASC",
    )
    .await;
    assert!(
        message.contains("following their declared order"),
        "{message}"
    );
    let message = refused(&session, "SELECT * FROM events ORDER BY c1 DESC").await;
    assert!(
        message.contains("ORDER BY is only supported when the partition key is restricted"),
        "{message}"
    );
}

#[tokio::test]
async fn writes_need_the_full_primary_key() {
    let (_server, session) = started().await;
    run(
        &session,
        "CREATE TABLE t (p text, c int, v int, PRIMARY KEY (p, c))",
    )
    .await;
    let message = refused(&session, "INSERT INTO t (p, v) VALUES ('a', 1)").await;
    assert!(
        message.contains("Missing mandatory PRIMARY KEY part c"),
        "{message}"
    );
    let message = refused(&session, "UPDATE t SET v = 1 WHERE p = 'a'").await;
    assert!(
        message.contains("Missing mandatory PRIMARY KEY part c"),
        "{message}"
    );
    let message = refused(&session, "DELETE FROM t WHERE c = 1").await;
    assert!(
        message.contains("Some partition key parts are missing: p"),
        "{message}"
    );
}

#[tokio::test]
async fn insert_if_not_exists_applies_once_and_returns_the_existing_row() {
    let (_server, session) = started().await;
    run(&session, "CREATE TABLE t (k text PRIMARY KEY, v int)").await;
    let insert = session
        .prepare("INSERT INTO t (k, v) VALUES (?, ?) IF NOT EXISTS")
        .await
        .unwrap();
    let first = session
        .execute_unpaged(&insert, ("a", 1))
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    assert_eq!(first.first_row::<(bool,)>().unwrap(), (true,));
    let second = session
        .execute_unpaged(&insert, ("a", 2))
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let (applied, key, value) = second.first_row::<(bool, String, i32)>().unwrap();
    assert!(!applied);
    assert_eq!((key.as_str(), value), ("a", 1));
}

#[tokio::test]
async fn conditional_update_applies_only_when_the_condition_holds() {
    let (_server, session) = started().await;
    run(
        &session,
        "CREATE TABLE t (k text PRIMARY KEY, epoch bigint, owner text)",
    )
    .await;
    run(
        &session,
        "INSERT INTO t (k, epoch, owner) VALUES ('p0', 1, 'a')",
    )
    .await;
    let fence = session
        .prepare("UPDATE t SET epoch = ?, owner = ? WHERE k = ? IF epoch = ?")
        .await
        .unwrap();
    let applied = session
        .execute_unpaged(&fence, (2i64, "b", "p0", 1i64))
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    assert_eq!(applied.first_row::<(bool,)>().unwrap(), (true,));
    let stale = session
        .execute_unpaged(&fence, (2i64, "c", "p0", 1i64))
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    assert_eq!(stale.first_row::<(bool, i64)>().unwrap(), (false, 2));
    let owner = values(&session, "SELECT owner FROM t WHERE k = 'p0'").await;
    assert_eq!(owner, vec!["b"]);
    let exists = session
        .prepare("DELETE FROM t WHERE k = ? IF EXISTS")
        .await
        .unwrap();
    let gone = session
        .execute_unpaged(&exists, ("nope",))
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    assert_eq!(gone.first_row::<(bool,)>().unwrap(), (false,));
}

#[tokio::test]
async fn ttl_expires_when_the_clock_advances() {
    let (server, session) = started().await;
    run(&session, "CREATE TABLE t (k text PRIMARY KEY, v text)").await;
    let insert = session
        .prepare("INSERT INTO t (k, v) VALUES (?, ?) USING TTL ?")
        .await
        .unwrap();
    session
        .execute_unpaged(&insert, ("short", "x", 10))
        .await
        .unwrap();
    session
        .execute_unpaged(&insert, ("long", "y", 100))
        .await
        .unwrap();
    server.advance_clock(Duration::from_secs(11));
    assert!(values(&session, "SELECT v FROM t WHERE k = 'short'")
        .await
        .is_empty());
    assert_eq!(
        values(&session, "SELECT v FROM t WHERE k = 'long'").await,
        vec!["y"]
    );
    let message = refused(
        &session,
        "INSERT INTO t (k, v) VALUES ('n', 'z') USING TTL -1",
    )
    .await;
    assert!(
        message.contains("A TTL must be greater or equal to 0"),
        "{message}"
    );
}

#[tokio::test]
async fn default_time_to_live_applies_when_no_ttl_is_given() {
    let (server, session) = started().await;
    run(
        &session,
        "CREATE TABLE t (k text PRIMARY KEY, v text) WITH default_time_to_live = 5",
    )
    .await;
    run(&session, "INSERT INTO t (k, v) VALUES ('a', 'x')").await;
    assert_eq!(
        values(&session, "SELECT v FROM t WHERE k = 'a'").await,
        vec!["x"]
    );
    server.advance_clock(Duration::from_secs(6));
    assert!(values(&session, "SELECT v FROM t WHERE k = 'a'")
        .await
        .is_empty());
}

#[tokio::test]
async fn a_batch_is_applied_atomically() {
    let (_server, session) = started().await;
    run(&session, "CREATE TABLE t (k text PRIMARY KEY, v int)").await;
    let insert = session
        .prepare("INSERT INTO t (k, v) VALUES (?, ?)")
        .await
        .unwrap();
    let mut batch = Batch::new(BatchType::Logged);
    batch.append_statement(insert.clone());
    batch.append_statement(insert.clone());
    session.batch(&batch, (("a", 1), ("b", 2))).await.unwrap();
    let count = session
        .query_unpaged("SELECT COUNT(*) FROM t", &[])
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row::<(i64,)>()
        .unwrap();
    assert_eq!(count, (2,));
    // The second statement is invalid (a null key): nothing of the batch is applied.
    let mut failing = Batch::new(BatchType::Logged);
    failing.append_statement(insert.clone());
    failing.append_statement(insert);
    let error = session
        .batch(&failing, (("c", 3), (None::<&str>, 4)))
        .await
        .unwrap_err();
    assert!(matches!(db_error(error).0, DbError::Invalid));
    assert!(values(&session, "SELECT k FROM t WHERE k = 'c'")
        .await
        .is_empty());
}

#[tokio::test]
async fn a_batch_above_the_fail_threshold_is_refused_and_above_the_warn_threshold_warns() {
    let (_server, session) = started().await;
    run(&session, "CREATE TABLE t (k text PRIMARY KEY, v blob)").await;
    let insert = session
        .prepare("INSERT INTO t (k, v) VALUES (?, ?)")
        .await
        .unwrap();
    let mut batch = Batch::new(BatchType::Unlogged);
    batch.append_statement(insert.clone());
    batch.append_statement(insert.clone());
    let half_mebibyte = vec![7u8; 600 * 1024];
    let error = session
        .batch(&batch, (("a", half_mebibyte.clone()), ("b", half_mebibyte)))
        .await
        .unwrap_err();
    let (kind, message) = db_error(error);
    assert!(matches!(kind, DbError::Invalid));
    assert!(message.contains("Batch too large"), "{message}");
    assert!(values(&session, "SELECT k FROM t WHERE k = 'a'")
        .await
        .is_empty());
    let warned = session
        .batch(
            &batch,
            (("a", vec![1u8; 100 * 1024]), ("b", vec![2u8; 100 * 1024])),
        )
        .await
        .unwrap();
    let warnings: Vec<&str> = warned.warnings().collect();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("WARN threshold"), "{warnings:?}");
}

#[tokio::test]
async fn a_conditional_batch_must_stay_in_one_partition() {
    let (_server, session) = started().await;
    run(
        &session,
        "CREATE TABLE t (p text, c int, v int, PRIMARY KEY (p, c))",
    )
    .await;
    let insert = session
        .prepare("INSERT INTO t (p, c, v) VALUES (?, ?, ?) IF NOT EXISTS")
        .await
        .unwrap();
    let mut batch = Batch::new(BatchType::Logged);
    batch.append_statement(insert.clone());
    batch.append_statement(insert);
    let error = session
        .batch(&batch, (("a", 1, 1), ("b", 1, 1)))
        .await
        .unwrap_err();
    let (_, message) = db_error(error);
    assert!(
        message.contains("cannot span multiple partitions"),
        "{message}"
    );
    let applied = session
        .batch(&batch, (("a", 1, 1), ("a", 2, 2)))
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    assert_eq!(applied.first_row::<(bool,)>().unwrap(), (true,));
}

#[tokio::test]
async fn paging_walks_three_pages_with_the_paging_state() {
    let (_server, session) = started().await;
    run(
        &session,
        "CREATE TABLE t (p text, c int, PRIMARY KEY (p, c))",
    )
    .await;
    let insert = session
        .prepare("INSERT INTO t (p, c) VALUES (?, ?)")
        .await
        .unwrap();
    for c in 0..25 {
        session.execute_unpaged(&insert, ("a", c)).await.unwrap();
    }
    let mut select = session
        .prepare("SELECT c FROM t WHERE p = ?")
        .await
        .unwrap();
    select.set_page_size(10);
    let mut paging_state = PagingState::start();
    let mut pages = Vec::new();
    loop {
        let (result, response) = session
            .execute_single_page(&select, ("a",), paging_state)
            .await
            .unwrap();
        let page: Vec<i32> = result
            .into_rows_result()
            .unwrap()
            .rows::<(i32,)>()
            .unwrap()
            .map(|row| row.unwrap().0)
            .collect();
        pages.push(page);
        match response {
            PagingStateResponse::HasMorePages { state } => paging_state = state,
            PagingStateResponse::NoMorePages => break,
        }
    }
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![10, 10, 5]
    );
    assert_eq!(pages.concat(), (0..25).collect::<Vec<_>>());
}

#[tokio::test]
async fn execute_iter_streams_every_row_across_pages() {
    let (_server, session) = started().await;
    run(
        &session,
        "CREATE TABLE t (p text, c int, PRIMARY KEY (p, c)) WITH CLUSTERING ORDER BY (c DESC)",
    )
    .await;
    let insert = session
        .prepare("INSERT INTO t (p, c) VALUES (?, ?)")
        .await
        .unwrap();
    for c in 0..33 {
        session.execute_unpaged(&insert, ("a", c)).await.unwrap();
    }
    let mut select = session
        .prepare("SELECT c FROM t WHERE p = ? LIMIT 31")
        .await
        .unwrap();
    select.set_page_size(7);
    let rows: Vec<(i32,)> = session
        .execute_iter(select, ("a",))
        .await
        .unwrap()
        .rows_stream::<(i32,)>()
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let expected: Vec<(i32,)> = (2..33).rev().map(|c| (c,)).collect();
    assert_eq!(rows, expected);
}

#[tokio::test]
async fn injected_unavailable_surfaces_as_db_error_unavailable() {
    let (server, session) = started().await;
    run(&session, "CREATE TABLE pins (k text PRIMARY KEY, v int)").await;
    server.inject(
        Fault::Unavailable,
        StatementMatcher::contains("INSERT INTO pins"),
        1,
    );
    let error = session
        .query_unpaged("INSERT INTO pins (k, v) VALUES ('a', 1)", &[])
        .await
        .unwrap_err();
    assert!(matches!(db_error(error).0, DbError::Unavailable { .. }));
    assert!(values(&session, "SELECT k FROM pins WHERE k = 'a'")
        .await
        .is_empty());
    assert_eq!(server.pending_faults(), 0);
    run(&session, "INSERT INTO pins (k, v) VALUES ('a', 1)").await;
}

#[tokio::test]
async fn injected_write_timeout_after_applying_keeps_the_write() {
    let (server, session) = started().await;
    run(&session, "CREATE TABLE pins (k text PRIMARY KEY, v int)").await;
    server.inject(
        Fault::WriteTimeout { applied: true },
        StatementMatcher::contains("INSERT INTO pins"),
        1,
    );
    let error = session
        .query_unpaged("INSERT INTO pins (k, v) VALUES ('a', 1)", &[])
        .await
        .unwrap_err();
    assert!(matches!(db_error(error).0, DbError::WriteTimeout { .. }));
    assert_eq!(
        values(&session, "SELECT k FROM pins WHERE k = 'a'").await,
        vec!["a"]
    );
    server.inject(
        Fault::WriteTimeout { applied: false },
        StatementMatcher::contains("INSERT INTO pins"),
        1,
    );
    let error = session
        .query_unpaged("INSERT INTO pins (k, v) VALUES ('b', 1)", &[])
        .await
        .unwrap_err();
    assert!(matches!(db_error(error).0, DbError::WriteTimeout { .. }));
    assert!(values(&session, "SELECT k FROM pins WHERE k = 'b'")
        .await
        .is_empty());
}

#[tokio::test]
async fn injected_read_timeout_surfaces_as_db_error_read_timeout() {
    let (server, session) = started().await;
    run(&session, "CREATE TABLE pins (k text PRIMARY KEY, v int)").await;
    server.inject(
        Fault::ReadTimeout,
        StatementMatcher::contains("SELECT v FROM pins"),
        1,
    );
    let error = session
        .query_unpaged("SELECT v FROM pins WHERE k = 'a'", &[])
        .await
        .unwrap_err();
    assert!(matches!(db_error(error).0, DbError::ReadTimeout { .. }));
}

#[tokio::test]
async fn a_dropped_connection_fails_the_request_and_the_driver_reconnects() {
    let (server, session) = started().await;
    run(&session, "CREATE TABLE pins (k text PRIMARY KEY, v int)").await;
    server.inject(
        Fault::DropConnection,
        StatementMatcher::contains("INSERT INTO pins"),
        1,
    );
    let error = session
        .query_unpaged("INSERT INTO pins (k, v) VALUES ('a', 1)", &[])
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            ExecutionError::LastAttemptError(RequestAttemptError::BrokenConnectionError(_))
                | ExecutionError::ConnectionPoolError(_)
        ),
        "{error:?}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match session
            .query_unpaged("INSERT INTO pins (k, v) VALUES ('a', 1)", &[])
            .await
        {
            Ok(_) => break,
            Err(error) if tokio::time::Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("the driver did not reconnect: {error}"),
        }
    }
    assert_eq!(
        values(&session, "SELECT k FROM pins WHERE k = 'a'").await,
        vec!["a"]
    );
}

#[tokio::test]
async fn a_forgotten_prepared_statement_is_prepared_again_by_the_driver() {
    let (server, session) = started().await;
    run(&session, "CREATE TABLE t (k text PRIMARY KEY, v int)").await;
    let insert = session
        .prepare("INSERT INTO t (k, v) VALUES (?, ?)")
        .await
        .unwrap();
    session.execute_unpaged(&insert, ("a", 1)).await.unwrap();
    server.forget_prepared_statements();
    session.execute_unpaged(&insert, ("b", 2)).await.unwrap();
    assert_eq!(
        values(&session, "SELECT k FROM t WHERE k = 'b'").await,
        vec!["b"]
    );
}

#[tokio::test]
async fn a_conditional_batch_on_a_static_epoch_fences_a_stale_owner() {
    let (_server, session) = started().await;
    run(
        &session,
        "CREATE TABLE state (p text, c bigint, epoch bigint static, v text, PRIMARY KEY (p, c))",
    )
    .await;
    run(&session, "UPDATE state SET epoch = 1 WHERE p = 'p0'").await;
    let write = session
        .prepare("UPDATE state SET v = ? WHERE p = ? AND c = ? IF epoch = ?")
        .await
        .unwrap();
    let mut batch = Batch::new(BatchType::Logged);
    batch.append_statement(write.clone());
    batch.append_statement(write);
    let applied = session
        .batch(&batch, (("x", "p0", 1i64, 1i64), ("y", "p0", 2i64, 1i64)))
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    assert_eq!(applied.first_row::<(bool,)>().unwrap(), (true,));
    // A new owner takes over; the old owner's late batch must not land.
    run(&session, "UPDATE state SET epoch = 2 WHERE p = 'p0'").await;
    let stale = session
        .batch(
            &batch,
            (("stale", "p0", 3i64, 1i64), ("stale", "p0", 1i64, 1i64)),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    assert_eq!(stale.first_row::<(bool, i64)>().unwrap(), (false, 2));
    assert_eq!(
        values(&session, "SELECT v FROM state WHERE p = 'p0'").await,
        vec!["x", "y"]
    );
}

#[tokio::test]
async fn unset_values_leave_columns_untouched() {
    let (_server, session) = started().await;
    run(
        &session,
        "CREATE TABLE t (k text PRIMARY KEY, a text, b text)",
    )
    .await;
    run(&session, "INSERT INTO t (k, a, b) VALUES ('k', 'a0', 'b0')").await;
    let insert = session
        .prepare("INSERT INTO t (k, a, b) VALUES (?, ?, ?)")
        .await
        .unwrap();
    session
        .execute_unpaged(
            &insert,
            ("k", MaybeUnset::Set("a1"), MaybeUnset::<&str>::Unset),
        )
        .await
        .unwrap();
    let row = session
        .query_unpaged("SELECT a, b FROM t WHERE k = 'k'", &[])
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row::<(String, String)>()
        .unwrap();
    assert_eq!(row, ("a1".to_string(), "b0".to_string()));
    let select = session
        .prepare("SELECT a FROM t WHERE k = ?")
        .await
        .unwrap();
    let error = session
        .execute_unpaged(&select, (MaybeUnset::<&str>::Unset,))
        .await
        .unwrap_err();
    assert!(db_error(error)
        .1
        .contains("Invalid unset value for column k"));
}

#[tokio::test]
async fn delete_removes_a_clustering_prefix_or_range() {
    let (_server, session) = started().await;
    clustered_table(&session, "ASC").await;
    run(&session, "DELETE FROM events WHERE p = 'a' AND c1 = 1").await;
    run(
        &session,
        "DELETE FROM events WHERE p = 'a' AND c1 = 2 AND c2 >= 1",
    )
    .await;
    run(
        &session,
        "DELETE v FROM events WHERE p = 'a' AND c1 = 0 AND c2 = 0",
    )
    .await;
    let rows = session
        .query_unpaged("SELECT c1, c2, v FROM events WHERE p = 'a'", &[])
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .rows::<(i32, i32, Option<String>)>()
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    assert_eq!(
        rows,
        vec![
            (0, 0, None),
            (0, 1, Some("0.1".to_string())),
            (0, 2, Some("0.2".to_string())),
            (2, 0, Some("2.0".to_string()))
        ]
    );
    run(&session, "DELETE FROM events WHERE p = 'a'").await;
    assert!(values(&session, "SELECT v FROM events WHERE p = 'a'")
        .await
        .is_empty());
}

#[tokio::test]
async fn update_using_ttl_expires_only_the_cells_it_wrote() {
    let (server, session) = started().await;
    run(
        &session,
        "CREATE TABLE t (k text PRIMARY KEY, a text, b text)",
    )
    .await;
    run(&session, "INSERT INTO t (k, a) VALUES ('k', 'kept')").await;
    let update = session
        .prepare("UPDATE t USING TTL ? SET b = ? WHERE k = ?")
        .await
        .unwrap();
    session
        .execute_unpaged(&update, (5, "brief", "k"))
        .await
        .unwrap();
    server.advance_clock(Duration::from_secs(6));
    let row = session
        .query_unpaged("SELECT a, b FROM t WHERE k = 'k'", &[])
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row::<(String, Option<String>)>()
        .unwrap();
    assert_eq!(row, ("kept".to_string(), None));
    // A row made only by an UPDATE with TTL disappears entirely.
    session
        .execute_unpaged(&update, (5, "brief", "other"))
        .await
        .unwrap();
    server.advance_clock(Duration::from_secs(6));
    assert!(values(&session, "SELECT b FROM t WHERE k = 'other'")
        .await
        .is_empty());
}

#[tokio::test]
async fn in_on_the_partition_key_reads_several_partitions() {
    let (_server, session) = started().await;
    run(&session, "CREATE TABLE t (k text PRIMARY KEY, v text)").await;
    for key in ["a", "b", "c"] {
        run(
            &session,
            &format!("INSERT INTO t (k, v) VALUES ('{key}', 'v{key}')"),
        )
        .await;
    }
    let select = session
        .prepare("SELECT v FROM t WHERE k IN ?")
        .await
        .unwrap();
    let rows: Vec<String> = session
        .execute_unpaged(&select, (vec!["c", "a", "zz"],))
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .rows::<(String,)>()
        .unwrap()
        .map(|row| row.unwrap().0)
        .collect();
    assert_eq!(rows, vec!["va", "vc"]);
}

#[tokio::test]
async fn system_local_describes_one_murmur3_node_with_tokens() {
    let (_server, session) = started().await;
    let (partitioner, tokens, host_id) = session
        .query_unpaged(
            "SELECT partitioner, tokens, host_id FROM system.local WHERE key = 'local'",
            &[],
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row::<(String, Vec<String>, uuid::Uuid)>()
        .unwrap();
    assert_eq!(partitioner, "org.apache.cassandra.dht.Murmur3Partitioner");
    assert!(tokens.len() >= 3);
    assert!(!host_id.is_nil());
    let peers = session
        .query_unpaged("SELECT peer FROM system.peers", &[])
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .rows_num();
    assert_eq!(peers, 0);
    let message = refused(&session, "INSERT INTO system.local (key) VALUES ('x')").await;
    assert!(message.contains("system keyspace"), "{message}");
}

#[tokio::test]
async fn injected_overloaded_surfaces_as_db_error_overloaded() {
    let (server, session) = started().await;
    run(&session, "CREATE TABLE pins (k text PRIMARY KEY, v int)").await;
    server.inject(
        Fault::Overloaded,
        StatementMatcher::contains("INSERT INTO pins"),
        1,
    );
    let error = session
        .query_unpaged("INSERT INTO pins (k, v) VALUES ('a', 1)", &[])
        .await
        .unwrap_err();
    assert!(matches!(db_error(error).0, DbError::Overloaded));
}

#[tokio::test]
async fn a_partial_write_timeout_applies_only_the_first_statements_of_a_batch() {
    let (server, session) = started().await;
    run(&session, "CREATE TABLE pins (k text PRIMARY KEY, v int)").await;
    let insert = session
        .prepare("INSERT INTO pins (k, v) VALUES (?, ?)")
        .await
        .unwrap();
    let mut batch = Batch::new(BatchType::Unlogged);
    for _ in 0..3 {
        batch.append_statement(insert.clone());
    }
    server.inject(
        Fault::PartialWriteTimeout {
            applied_statements: 2,
        },
        StatementMatcher::contains("INSERT INTO pins"),
        1,
    );
    let error = session
        .batch(&batch, (("a", 1), ("b", 2), ("c", 3)))
        .await
        .unwrap_err();
    match db_error(error).0 {
        DbError::WriteTimeout { write_type, .. } => {
            assert_eq!(write_type, scylla::errors::WriteType::UnloggedBatch)
        }
        other => panic!("expected a write timeout, got {other:?}"),
    }
    let count = session
        .query_unpaged("SELECT COUNT(*) FROM pins", &[])
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row::<(i64,)>()
        .unwrap();
    assert_eq!(count, (2,));
    assert!(values(&session, "SELECT k FROM pins WHERE k = 'c'")
        .await
        .is_empty());
}

#[tokio::test]
async fn a_delayed_answer_trips_the_client_timeout_though_the_write_landed() {
    let (server, session) = started().await;
    run(&session, "CREATE TABLE pins (k text PRIMARY KEY, v int)").await;
    server.inject(
        Fault::Delay(Duration::from_millis(800)),
        StatementMatcher::contains("INSERT INTO pins"),
        1,
    );
    let mut insert = scylla::statement::Statement::new("INSERT INTO pins (k, v) VALUES ('a', 1)");
    insert.set_request_timeout(Some(Duration::from_millis(100)));
    let error = session.query_unpaged(insert, &[]).await.unwrap_err();
    assert!(
        matches!(error, ExecutionError::RequestTimeout(_)),
        "{error:?}"
    );
    assert_eq!(
        values(&session, "SELECT k FROM pins WHERE k = 'a'").await,
        vec!["a"]
    );
}

#[tokio::test]
async fn dropping_all_connections_is_survived_by_the_driver() {
    let (server, session) = started().await;
    run(&session, "CREATE TABLE pins (k text PRIMARY KEY, v int)").await;
    let insert = session
        .prepare("INSERT INTO pins (k, v) VALUES (?, ?)")
        .await
        .unwrap();
    server.drop_all_connections();
    server.forget_prepared_statements();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Err(error) = session.execute_unpaged(&insert, ("a", 1)).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the driver did not recover: {error}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        values(&session, "SELECT k FROM pins WHERE k = 'a'").await,
        vec!["a"]
    );
}

#[tokio::test]
async fn stats_count_statements_by_text_including_batch_members() {
    let (server, session) = started().await;
    run(&session, "CREATE TABLE pins (k text PRIMARY KEY, v int)").await;
    let insert = session
        .prepare("INSERT INTO pins (k, v) VALUES (?, ?)")
        .await
        .unwrap();
    server.reset_stats();
    session.execute_unpaged(&insert, ("a", 1)).await.unwrap();
    let mut batch = Batch::new(BatchType::Unlogged);
    batch.append_statement(insert.clone());
    batch.append_statement(insert);
    session.batch(&batch, (("b", 2), ("c", 3))).await.unwrap();
    let stats = server.stats();
    assert_eq!(stats.executes, 1);
    assert_eq!(stats.batches, 1);
    assert_eq!(stats.statements_containing("INSERT INTO pins"), 3);
    let levels = &stats.consistency_by_statement["INSERT INTO pins (k, v) VALUES (?, ?)"];
    assert_eq!(levels.iter().collect::<Vec<_>>(), vec!["LocalQuorum"]);
    let mut read = scylla::statement::Statement::new("SELECT v FROM pins WHERE k = 'a'");
    read.set_consistency(scylla::statement::Consistency::One);
    session.query_unpaged(read, &[]).await.unwrap();
    let levels = &server.stats().consistency_by_statement["SELECT v FROM pins WHERE k = 'a'"];
    assert_eq!(levels.iter().collect::<Vec<_>>(), vec!["One"]);
}

#[tokio::test]
async fn the_paging_state_resumes_after_the_last_row_even_if_rows_change_between_pages() {
    let (_server, session) = started().await;
    run(
        &session,
        "CREATE TABLE t (p text, c int, PRIMARY KEY (p, c))",
    )
    .await;
    for c in [10, 20, 30, 40, 50] {
        run(&session, &format!("INSERT INTO t (p, c) VALUES ('a', {c})")).await;
    }
    let mut select = session
        .prepare("SELECT c FROM t WHERE p = ?")
        .await
        .unwrap();
    select.set_page_size(2);
    let page = |result: scylla::response::query_result::QueryResult| -> Vec<i32> {
        result
            .into_rows_result()
            .unwrap()
            .rows::<(i32,)>()
            .unwrap()
            .map(|row| row.unwrap().0)
            .collect()
    };
    let (first, response) = session
        .execute_single_page(&select, ("a",), PagingState::start())
        .await
        .unwrap();
    assert_eq!(page(first), vec![10, 20]);
    let PagingStateResponse::HasMorePages { state } = response else {
        panic!("more pages expected");
    };
    // Between pages: the next row goes away, a row appears before the cursor and one after it.
    run(&session, "DELETE FROM t WHERE p = 'a' AND c = 30").await;
    run(&session, "INSERT INTO t (p, c) VALUES ('a', 15)").await;
    run(&session, "INSERT INTO t (p, c) VALUES ('a', 35)").await;
    let (second, _) = session
        .execute_single_page(&select, ("a",), state)
        .await
        .unwrap();
    assert_eq!(page(second), vec![35, 40]);
}

#[tokio::test]
async fn using_timestamp_orders_writes_and_deletes_by_timestamp_not_arrival() {
    let (_server, session) = started().await;
    run(&session, "CREATE TABLE t (k text PRIMARY KEY, v text)").await;
    run(
        &session,
        "INSERT INTO t (k, v) VALUES ('a', 'new') USING TIMESTAMP 2000",
    )
    .await;
    run(
        &session,
        "INSERT INTO t (k, v) VALUES ('a', 'old') USING TIMESTAMP 1000",
    )
    .await;
    assert_eq!(
        values(&session, "SELECT v FROM t WHERE k = 'a'").await,
        vec!["new"]
    );
    run(&session, "DELETE FROM t USING TIMESTAMP 1500 WHERE k = 'a'").await;
    assert_eq!(
        values(&session, "SELECT v FROM t WHERE k = 'a'").await,
        vec!["new"]
    );
    run(&session, "DELETE FROM t USING TIMESTAMP 3000 WHERE k = 'a'").await;
    assert!(values(&session, "SELECT v FROM t WHERE k = 'a'")
        .await
        .is_empty());
    // The tombstone stays: an older write arriving after the delete does not resurrect the row.
    run(
        &session,
        "INSERT INTO t (k, v) VALUES ('a', 'zombie') USING TIMESTAMP 2500",
    )
    .await;
    assert!(values(&session, "SELECT v FROM t WHERE k = 'a'")
        .await
        .is_empty());
    let message = refused(
        &session,
        "INSERT INTO t (k, v) VALUES ('b', 'x') IF NOT EXISTS USING TIMESTAMP 5",
    )
    .await;
    assert!(
        message.contains("Cannot provide custom timestamp for conditional updates"),
        "{message}"
    );
}

#[tokio::test]
async fn a_late_write_lands_after_the_timeout_but_loses_to_a_newer_write() {
    let (server, session) = started().await;
    run(&session, "CREATE TABLE pins (k text PRIMARY KEY, v text)").await;
    let insert = session
        .prepare("INSERT INTO pins (k, v) VALUES (?, ?)")
        .await
        .unwrap();
    server.inject(
        Fault::LateWrite {
            delay: Duration::from_millis(300),
        },
        StatementMatcher::contains("INSERT INTO pins"),
        2,
    );
    let error = session
        .execute_unpaged(&insert, ("a", "first"))
        .await
        .unwrap_err();
    assert!(matches!(db_error(error).0, DbError::WriteTimeout { .. }));
    let error = session
        .execute_unpaged(&insert, ("b", "only"))
        .await
        .unwrap_err();
    assert!(matches!(db_error(error).0, DbError::WriteTimeout { .. }));
    // Not there yet; the retry of 'a' lands first and has the later timestamp.
    assert!(values(&session, "SELECT v FROM pins WHERE k = 'b'")
        .await
        .is_empty());
    session
        .execute_unpaged(&insert, ("a", "retry"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        values(&session, "SELECT v FROM pins WHERE k = 'a'").await,
        vec!["retry"]
    );
    assert_eq!(
        values(&session, "SELECT v FROM pins WHERE k = 'b'").await,
        vec!["only"]
    );
}
