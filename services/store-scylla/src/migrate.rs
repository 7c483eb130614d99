//! Numbered CQL migrations (`schemas/cql/NNNN_name.cql`) and their runner.
//!
//! A migration is a file of `;`-separated CQL statements with `{keyspace}` and `{replication}`
//! placeholders. Every statement is idempotent (`IF NOT EXISTS`), so a run that stopped half
//! way is completed by the next one; a migration's version is recorded in `schema_migrations`
//! after all its statements succeeded, and a recorded version is never applied again.
//! DDL cannot be prepared (and the placeholders are identifiers, not bind values), so the
//! runner sends plain statements; the store itself uses prepared statements only.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use scylla::client::session::Session;
use scylla::errors::{DbError, ExecutionError, PrepareError, RequestAttemptError};
use scylla::statement::Statement;

use crate::driver::{connect, Driver, ScyllaOptions};
use crate::uri::ScyllaUri;

/// One migration file, compiled in.
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub text: &'static str,
}

/// Every migration, in version order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_initial",
        text: include_str!("../../../schemas/cql/0001_initial.cql"),
    },
    Migration {
        version: 2,
        name: "0002_node_cids",
        text: include_str!("../../../schemas/cql/0002_node_cids.cql"),
    },
    Migration {
        version: 3,
        name: "0003_expiry_index",
        text: include_str!("../../../schemas/cql/0003_expiry_index.cql"),
    },
    Migration {
        version: 4,
        name: "0004_quarantine",
        text: include_str!("../../../schemas/cql/0004_quarantine.cql"),
    },
    Migration {
        version: 5,
        name: "0005_token_index",
        text: include_str!("../../../schemas/cql/0005_token_index.cql"),
    },
    Migration {
        version: 6,
        name: "0006_token_backfill",
        text: include_str!("../../../schemas/cql/0006_token_backfill.cql"),
    },
];

/// Keyspace replication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replication {
    /// One datacenter, `factor` replicas (tests: 1).
    Simple { factor: u32 },
    /// `factor` replicas in every datacenter, or per named datacenter (production: RF 3).
    NetworkTopology {
        factor: u32,
        datacenters: Vec<(String, u32)>,
    },
}

impl Replication {
    /// The production default: NetworkTopologyStrategy, three replicas per datacenter.
    pub fn production() -> Self {
        Replication::NetworkTopology {
            factor: 3,
            datacenters: Vec::new(),
        }
    }

    /// What tests use: SimpleStrategy, one replica.
    pub fn single() -> Self {
        Replication::Simple { factor: 1 }
    }

    /// The CQL map literal of `WITH replication = ...`.
    pub fn to_cql(&self) -> String {
        match self {
            Replication::Simple { factor } => {
                format!("{{'class': 'SimpleStrategy', 'replication_factor': {factor}}}")
            }
            Replication::NetworkTopology {
                factor,
                datacenters,
            } if datacenters.is_empty() => {
                format!("{{'class': 'NetworkTopologyStrategy', 'replication_factor': {factor}}}")
            }
            Replication::NetworkTopology { datacenters, .. } => {
                let mut map = "{'class': 'NetworkTopologyStrategy'".to_string();
                for (dc, factor) in datacenters {
                    map.push_str(&format!(", '{dc}': {factor}"));
                }
                map.push('}');
                map
            }
        }
    }
}

impl fmt::Display for Replication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_cql())
    }
}

/// Splits a migration into statements: `;` ends a statement outside quotes, `--` and `//`
/// comments run to the end of the line, `/* */` comments are dropped; empty statements are
/// skipped. Quotes: `'...'` (with `''` inside) and `"..."`.
pub fn split_statements(text: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            current.push(c);
            if c == q {
                if chars.peek() == Some(&q) {
                    current.push(q);
                    chars.next();
                } else {
                    quote = None;
                }
            }
            continue;
        }
        match c {
            '\'' | '"' => {
                quote = Some(c);
                current.push(c);
            }
            '-' | '/' if chars.peek() == Some(&c) => {
                for skipped in chars.by_ref() {
                    if skipped == '\n' {
                        current.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut previous = ' ';
                for skipped in chars.by_ref() {
                    if previous == '*' && skipped == '/' {
                        break;
                    }
                    previous = skipped;
                }
                current.push(' ');
            }
            ';' => {
                push_statement(&mut statements, &current);
                current.clear();
            }
            _ => current.push(c),
        }
    }
    push_statement(&mut statements, &current);
    statements
}

fn push_statement(statements: &mut Vec<String>, text: &str) {
    let statement = text
        .lines()
        .map(str::trim_end)
        .filter(|line| !line.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    let statement = statement.trim();
    if !statement.is_empty() {
        statements.push(statement.to_string());
    }
}

/// The statements of `migration` for `keyspace` and `replication`.
pub fn render(
    migration: &Migration,
    keyspace: &str,
    replication: &Replication,
    tablets: Tablets,
) -> Vec<String> {
    let options = match tablets {
        Tablets::Unknown => "",
        Tablets::DefaultOn => " AND tablets = {'enabled': false}",
    };
    split_statements(migration.text)
        .into_iter()
        .map(|statement| {
            statement
                .replace("{keyspace}", keyspace)
                .replace("{replication}", &replication.to_cql())
                .replace("{keyspace_options}", options)
        })
        .collect()
}

/// Whether the server makes tablet keyspaces by default. ScyllaDB does from 6.0 (and its
/// 2024.2+ releases); tablet keyspaces do not support LWT, which pinhive's partition claims and
/// fenced commits are, so pinhive's keyspace is created with tablets off there. Other servers
/// (older ScyllaDB, Cassandra, the CQL test server) do not know the option: nothing is added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tablets {
    Unknown,
    DefaultOn,
}

impl Tablets {
    /// From a ScyllaDB version string (`system.versions`): `6.2.1`, `2025.1.0`.
    pub fn of_scylla_version(version: &str) -> Tablets {
        let mut parts = version
            .split(['.', '-', '~'])
            .map(|p| p.parse::<u32>().ok());
        let (major, minor) = (parts.next().flatten(), parts.next().flatten());
        match (major, minor) {
            (Some(major), _) if (6..2000).contains(&major) => Tablets::DefaultOn,
            (Some(2024), Some(minor)) if minor >= 2 => Tablets::DefaultOn,
            (Some(major), _) if major >= 2025 => Tablets::DefaultOn,
            _ => Tablets::Unknown,
        }
    }

    /// Asks the server (`system.versions` is ScyllaDB's own table; elsewhere the read fails
    /// and the answer is [`Tablets::Unknown`]).
    async fn of_server(session: &Session) -> Tablets {
        let read = session
            .query_unpaged(
                "SELECT version FROM system.versions WHERE key = 'local'",
                (),
            )
            .await;
        let version = read
            .ok()
            .and_then(|result| result.into_rows_result().ok())
            .and_then(|rows| rows.maybe_first_row::<(String,)>().ok().flatten())
            .map(|(version,)| version);
        version.map_or(Tablets::Unknown, |v| Tablets::of_scylla_version(&v))
    }
}

/// Applies the migrations not yet recorded in `schema_migrations` of the URI's keyspace (creating
/// the keyspace with `replication` if needed), in version order; returns the versions applied
/// (none on a second run).
pub fn migrate(uri: &str, replication: &Replication) -> anyhow::Result<Vec<i32>> {
    migrate_with(uri, replication, &ScyllaOptions::default())
}

pub fn migrate_with(
    uri: &str,
    replication: &Replication,
    options: &ScyllaOptions,
) -> anyhow::Result<Vec<i32>> {
    let uri = ScyllaUri::parse(uri)?;
    let driver = Driver::new(1)?;
    driver.run(async {
        let session = connect(&uri, options).await?;
        apply_pending(&session, &uri.keyspace, replication).await
    })
}

async fn apply_pending(
    session: &Session,
    keyspace: &str,
    replication: &Replication,
) -> anyhow::Result<Vec<i32>> {
    let applied = applied_versions(session, keyspace).await?;
    let tablets = Tablets::of_server(session).await;
    let mut done = Vec::new();
    for migration in MIGRATIONS {
        if applied.contains(&migration.version) {
            continue;
        }
        for statement in render(migration, keyspace, replication, tablets) {
            session
                .query_unpaged(statement.as_str(), ())
                .await
                .with_context(|| format!("migration {}: {statement}", migration.name))?;
        }
        if migration.version == TOKEN_BACKFILL_VERSION {
            let indexed = index_earlier_tokens(session, keyspace).await?;
            tracing::info!(keyspace, indexed, "tokens of earlier releases indexed");
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        let mut record = session
            .prepare(format!(
                "INSERT INTO {keyspace}.schema_migrations (scope, version, name, applied_ns) \
                 VALUES ('pinhive', ?, ?, ?)"
            ))
            .await
            .context("preparing the schema_migrations insert")?;
        record.set_is_idempotent(true);
        session
            .execute_unpaged(&record, (migration.version, migration.name, now))
            .await
            .with_context(|| format!("recording migration {}", migration.name))?;
        tracing::info!(
            keyspace,
            version = migration.version,
            name = migration.name,
            "cql migration applied"
        );
        done.push(migration.version);
    }
    Ok(done)
}

/// The migration that indexes the tokens of earlier releases (`0006_token_backfill`; the
/// index's tables are 0005's).
const TOKEN_BACKFILL_VERSION: i32 = 6;

/// Tokens per page of the backfill's read of `tokens`.
const TOKEN_PAGE: i32 = 1000;

/// Indexes every token an earlier release wrote (row version below 3: made before the index),
/// so it is listed and revocable by id before it is next used. One paged read of `tokens` —
/// a table of tokens, not pins — once, as part of applying migration 0006 (before it is
/// recorded: a run that stops half way is completed by the next). Only the index entries are
/// written, never the token row, as when such a row is read (`Store::get_token`); the row is
/// read again after its owner entry is written, and a revocation that came meanwhile (an
/// instance of the earlier release) removes the entry again. Returns how many it indexed.
async fn index_earlier_tokens(session: &Session, keyspace: &str) -> anyhow::Result<usize> {
    use scylla::response::{PagingState, PagingStateResponse};
    let mut scan = session
        .prepare(format!("SELECT secret_hash, token FROM {keyspace}.tokens"))
        .await
        .context("preparing the token backfill read")?;
    scan.set_page_size(TOKEN_PAGE);
    let upsert = |cql: String| async move {
        let mut statement = session
            .prepare(cql.as_str())
            .await
            .with_context(|| format!("preparing {cql}"))?;
        statement.set_is_idempotent(true);
        anyhow::Ok(statement)
    };
    let by_id = upsert(format!(
        "INSERT INTO {keyspace}.token_ids (token_id, secret_hash) VALUES (?, ?)"
    ))
    .await?;
    let by_owner = upsert(format!(
        "INSERT INTO {keyspace}.tokens_by_owner (owner, token_id, token) VALUES (?, ?, ?)"
    ))
    .await?;
    let unlist = upsert(format!(
        "DELETE FROM {keyspace}.tokens_by_owner WHERE owner = ? AND token_id = ?"
    ))
    .await?;
    let reread = upsert(format!(
        "SELECT token FROM {keyspace}.tokens WHERE secret_hash = ?"
    ))
    .await?;
    let mut indexed = 0;
    let mut paging = PagingState::start();
    loop {
        let (result, next) = session
            .execute_single_page(&scan, (), paging)
            .await
            .context("reading tokens for the backfill")?;
        let rows = result
            .into_rows_result()
            .context("reading tokens for the backfill")?;
        for row in rows
            .rows::<(String, Vec<u8>)>()
            .context("reading tokens for the backfill")?
        {
            let (hash, bytes) = row.context("reading tokens for the backfill")?;
            if pinhive_store::row::version_of(&bytes) >= 3 {
                continue; // written with its index entries
            }
            // A row that does not decode is left alone (a request with it fails as before).
            let Ok(token) =
                pinhive_store::row::decode::<pinhive_store::TokenRecord>("token", &bytes)
            else {
                tracing::warn!(keyspace, "a token row does not decode; not indexed");
                continue;
            };
            let id = pinhive_store::token_id(&hash);
            session
                .execute_unpaged(&by_id, (&id, &hash))
                .await
                .context("indexing a token by id")?;
            session
                .execute_unpaged(
                    &by_owner,
                    (&token.owner, &id, pinhive_store::row::encode(&token)),
                )
                .await
                .context("indexing a token by owner")?;
            let now: Option<pinhive_store::TokenRecord> = session
                .execute_unpaged(&reread, (&hash,))
                .await
                .context("reading a token again")?
                .into_rows_result()
                .context("reading a token again")?
                .maybe_first_row::<(Vec<u8>,)>()
                .context("reading a token again")?
                .and_then(|(bytes,)| pinhive_store::row::decode("token", &bytes).ok());
            if now.is_some_and(|token| token.revoked_ns.is_some()) {
                session
                    .execute_unpaged(&unlist, (&token.owner, &id))
                    .await
                    .context("unlisting a token revoked meanwhile")?;
                continue;
            }
            indexed += 1;
        }
        match next {
            PagingStateResponse::HasMorePages { state } => paging = state,
            PagingStateResponse::NoMorePages => break,
        }
    }
    Ok(indexed)
}

/// Versions recorded in `schema_migrations`; none when the keyspace or table does not exist yet.
async fn applied_versions(session: &Session, keyspace: &str) -> anyhow::Result<Vec<i32>> {
    let statement = Statement::new(format!(
        "SELECT version FROM {keyspace}.schema_migrations WHERE scope = 'pinhive'"
    ));
    let result = match session.query_unpaged(statement, ()).await {
        Ok(result) => result,
        Err(error) if is_missing_schema(&error) => return Ok(Vec::new()),
        Err(error) => return Err(error).context("reading schema_migrations"),
    };
    let rows = result
        .into_rows_result()
        .context("reading schema_migrations")?;
    let mut versions = Vec::new();
    for row in rows.rows::<(i32,)>().context("reading schema_migrations")? {
        versions.push(row.context("reading schema_migrations")?.0);
    }
    Ok(versions)
}

/// The keyspace or table does not exist (InvalidRequest), as opposed to a failure to reach it.
fn is_missing_schema(error: &ExecutionError) -> bool {
    let invalid = |db: &DbError| matches!(db, DbError::Invalid | DbError::ConfigError);
    match error {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, _)) => invalid(db),
        ExecutionError::PrepareError(PrepareError::AllAttemptsFailed {
            first_attempt: RequestAttemptError::DbError(db, _),
        }) => invalid(db),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitter_handles_comments_quotes_and_blank_statements() {
        let text = "-- header; not a statement\n\
                    CREATE TABLE a (x int PRIMARY KEY); -- trailing ; comment\n\
                    ;;\n\
                    /* block; comment */ INSERT INTO a (x, s) VALUES (1, 'semi;colon''s -- not a comment');\n\
                    // another comment\n\
                    SELECT \"odd;name\" FROM a";
        assert_eq!(
            split_statements(text),
            vec![
                "CREATE TABLE a (x int PRIMARY KEY)",
                "INSERT INTO a (x, s) VALUES (1, 'semi;colon''s -- not a comment')",
                "SELECT \"odd;name\" FROM a",
            ]
        );
        assert!(split_statements("-- only a comment\n\n").is_empty());
    }

    #[test]
    fn the_initial_migration_renders_for_a_keyspace() {
        let statements = render(
            &MIGRATIONS[0],
            "ph_test",
            &Replication::single(),
            Tablets::Unknown,
        );
        assert!(statements[0].starts_with("CREATE KEYSPACE IF NOT EXISTS ph_test WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"), "{}", statements[0]);
        assert!(statements
            .iter()
            .all(|s| !s.contains('{') || s.starts_with("CREATE KEYSPACE")));
        assert!(statements.iter().all(|s| s.contains("IF NOT EXISTS")));
        for table in [
            "schema_migrations",
            "cid_state",
            "pins",
            "cid_pins",
            "listing_by_status",
            "listing_by_cid",
            "listing_by_name",
            "listing_buckets",
            "commits",
            "journal",
            "pending",
            "checkpoints",
            "tokens",
            "nodes",
            "dead_letters",
            "s3_objects",
            "s3_by_cid",
            "analytics",
        ] {
            let create = format!("CREATE TABLE IF NOT EXISTS ph_test.{table} (");
            assert!(statements.iter().any(|s| s.starts_with(&create)), "{table}");
        }
        // ScyllaDB 6+: the keyspace without tablets (LWT), and only the keyspace statement.
        let on = render(
            &MIGRATIONS[0],
            "ph_test",
            &Replication::single(),
            Tablets::DefaultOn,
        );
        assert!(
            on[0].ends_with("'replication_factor': 1} AND tablets = {'enabled': false}"),
            "{}",
            on[0]
        );
        assert_eq!(&on[1..], &statements[1..]);
        let versions: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
        let mut sorted = versions.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(versions, sorted, "migrations in strictly increasing order");
    }

    #[test]
    fn scylla_6_and_later_make_tablet_keyspaces_by_default() {
        for (version, tablets) in [
            ("5.4.9", Tablets::Unknown),
            ("6.0.0", Tablets::DefaultOn),
            ("6.2.1-0.20241106.a3a0ffbcd015", Tablets::DefaultOn),
            ("2024.1.12", Tablets::Unknown),
            ("2024.2.0", Tablets::DefaultOn),
            ("2025.1.3", Tablets::DefaultOn),
            ("garbage", Tablets::Unknown),
        ] {
            assert_eq!(Tablets::of_scylla_version(version), tablets, "{version}");
        }
    }

    #[test]
    fn the_node_index_migration_creates_its_table_only() {
        let statements = render(
            &MIGRATIONS[1],
            "ph_test",
            &Replication::single(),
            Tablets::Unknown,
        );
        assert_eq!(statements.len(), 1, "{statements:?}");
        assert!(statements[0].starts_with("CREATE TABLE IF NOT EXISTS ph_test.node_cids ("));
        assert!(
            statements[0].contains("PRIMARY KEY ((node, log_partition, slot), cid)"),
            "{}",
            statements[0]
        );
    }

    #[test]
    fn the_expiry_index_migration_creates_its_table_only() {
        let statements = render(
            &MIGRATIONS[2],
            "ph_test",
            &Replication::single(),
            Tablets::Unknown,
        );
        assert_eq!(statements.len(), 1, "{statements:?}");
        assert!(statements[0].starts_with("CREATE TABLE IF NOT EXISTS ph_test.expiry_index ("));
        assert!(
            statements[0]
                .contains("PRIMARY KEY ((log_partition, bucket, slot), due_ns, cid, requestid)"),
            "{}",
            statements[0]
        );
    }

    #[test]
    fn the_quarantine_migration_creates_its_table_only() {
        let statements = render(
            &MIGRATIONS[3],
            "ph_test",
            &Replication::single(),
            Tablets::Unknown,
        );
        assert_eq!(statements.len(), 1, "{statements:?}");
        assert!(statements[0].starts_with("CREATE TABLE IF NOT EXISTS ph_test.quarantine ("));
        assert!(
            statements[0].contains("PRIMARY KEY ((log_partition), cid)"),
            "{}",
            statements[0]
        );
    }

    #[test]
    fn replication_literals() {
        assert_eq!(
            Replication::production().to_cql(),
            "{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}"
        );
        assert_eq!(
            Replication::NetworkTopology {
                factor: 3,
                datacenters: vec![("eu".into(), 3), ("us".into(), 2)]
            }
            .to_cql(),
            "{'class': 'NetworkTopologyStrategy', 'eu': 3, 'us': 2}"
        );
    }
}
