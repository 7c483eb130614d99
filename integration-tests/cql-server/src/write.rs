//! INSERT, UPDATE, DELETE and BATCH: each statement becomes mutations (checked first, applied
//! after, so a batch is all-or-nothing), lightweight-transaction conditions, TTLs, and the
//! batch-size thresholds.

use crate::engine::{Bound, ColumnSpec, Engine, ExecResult, Prepared};
use crate::error::CqlError;
use crate::parser::{Condition, Relation, Statement, Term};
use crate::read::{selected, ClusteringPredicate};
use crate::schema::{Cell, ClusteringKey, ColumnKind, Marker, Row, TableSchema};
use crate::terms::{resolve, resolve_key};
use crate::types::{CqlType, Value};

/// ScyllaDB's `batch_size_warn_threshold_in_kb` default.
pub const BATCH_SIZE_WARN_THRESHOLD_BYTES: usize = 128 * 1024;
/// ScyllaDB's `batch_size_fail_threshold_in_kb` default.
pub const BATCH_SIZE_FAIL_THRESHOLD_BYTES: usize = 1024 * 1024;
/// The largest TTL ScyllaDB accepts (20 years).
const MAX_TTL_SECONDS: i32 = 630_720_000;

#[derive(Debug, Clone)]
enum Mutation {
    Upsert {
        partition_key: Vec<Value>,
        clustering: Option<Vec<Value>>,
        cells: Vec<(usize, Option<Value>)>,
        row_marker: bool,
        ttl_seconds: i32,
    },
    Delete {
        partition_key: Vec<Value>,
        clustering: Vec<ClusteringPredicate>,
        columns: Vec<usize>,
    },
}

#[derive(Debug, Clone)]
enum Check {
    NotExists,
    Exists,
    Columns(Vec<(usize, Option<Value>)>),
}

/// One statement's effect, ready to check and apply.
struct Plan {
    keyspace: String,
    table: String,
    schema: std::sync::Arc<TableSchema>,
    partition_key: Vec<Value>,
    clustering: Option<Vec<Value>>,
    mutation: Mutation,
    check: Option<Check>,
    /// The write timestamp (µs) every cell, marker and tombstone of the mutation carries.
    timestamp: i64,
}

impl Plan {
    fn size_bytes(&self) -> usize {
        match &self.mutation {
            Mutation::Upsert { cells, .. } => {
                cells
                    .iter()
                    .map(|(_, value)| value.as_ref().map_or(0, Value::encoded_len))
                    .sum::<usize>()
                    + self
                        .partition_key
                        .iter()
                        .map(Value::encoded_len)
                        .sum::<usize>()
            }
            Mutation::Delete { .. } => self.partition_key.iter().map(Value::encoded_len).sum(),
        }
    }
}

fn ttl_seconds(
    term: Option<&Term>,
    schema: &TableSchema,
    binds: &[Bound],
) -> Result<i32, CqlError> {
    let Some(term) = term else {
        return Ok(schema.default_time_to_live);
    };
    match resolve(term, &CqlType::Int, binds)? {
        Bound::Value(Value::Int(ttl)) if ttl < 0 => Err(CqlError::invalid(format!(
            "A TTL must be greater or equal to 0, but was {ttl}"
        ))),
        Bound::Value(Value::Int(ttl)) if ttl > MAX_TTL_SECONDS => Err(CqlError::invalid(format!(
            "ttl is too large. requested ({ttl}) maximum ({MAX_TTL_SECONDS})"
        ))),
        Bound::Value(Value::Int(ttl)) => Ok(ttl),
        Bound::Unset => Ok(schema.default_time_to_live),
        _ => Err(CqlError::invalid("Invalid null value of TTL")),
    }
}

/// The statement's `USING TIMESTAMP`, else the request's timestamp.
fn statement_timestamp(
    prepared: &Prepared,
    binds: &[Bound],
    default_timestamp: i64,
) -> Result<i64, CqlError> {
    let term = match &prepared.statement {
        Statement::Insert { timestamp, .. }
        | Statement::Update { timestamp, .. }
        | Statement::Delete { timestamp, .. } => timestamp.as_ref(),
        _ => None,
    };
    let Some(term) = term else {
        return Ok(default_timestamp);
    };
    if prepared.is_conditional {
        return Err(CqlError::invalid(
            "Cannot provide custom timestamp for conditional updates",
        ));
    }
    match resolve(term, &CqlType::BigInt, binds)? {
        Bound::Value(Value::BigInt(timestamp)) => Ok(timestamp),
        Bound::Unset => Ok(default_timestamp),
        _ => Err(CqlError::invalid("Invalid null value of timestamp")),
    }
}

fn plan(
    engine: &Engine,
    prepared: &Prepared,
    binds: &[Bound],
    default_timestamp: i64,
) -> Result<Plan, CqlError> {
    let timestamp = statement_timestamp(prepared, binds, default_timestamp)?;
    let Some((keyspace, table)) = &prepared.table else {
        return Err(CqlError::Server("write without a table".into()));
    };
    let schema = engine.catalog.table(keyspace, table)?.schema.clone();
    let key_values =
        |relations: &[Relation]| -> Result<(Vec<Value>, Vec<ClusteringPredicate>), CqlError> {
            let selection = selected(&schema, relations, binds)?;
            let partition_key = selection
                .partition_keys
                .and_then(|keys| keys.into_iter().next())
                .ok_or_else(|| CqlError::invalid("Some partition key parts are missing"))?;
            Ok((partition_key, selection.clustering))
        };
    let full_clustering = |predicates: &[ClusteringPredicate]| -> Option<Vec<Value>> {
        let mut values: Vec<Option<Value>> = vec![None; schema.clustering_key.len()];
        for predicate in predicates {
            if let ClusteringPredicate::Single {
                position,
                operator: crate::parser::Operator::Eq,
                value,
            } = predicate
            {
                values[*position] = Some(value.clone());
            }
        }
        values.into_iter().collect()
    };
    let check_of = |condition: &Condition| -> Result<Option<Check>, CqlError> {
        Ok(match condition {
            Condition::None => None,
            Condition::IfExists => Some(Check::Exists),
            Condition::IfNotExists => Some(Check::NotExists),
            Condition::Columns(conditions) => {
                let mut expected = Vec::new();
                for (column, term) in conditions {
                    let (index, definition) = schema.column(column)?;
                    let value = match resolve(term, &definition.cql_type, binds)? {
                        Bound::Value(value) => Some(value),
                        Bound::Null => None,
                        Bound::Unset => {
                            return Err(CqlError::invalid(format!(
                                "Invalid unset value for column {column}"
                            )))
                        }
                    };
                    expected.push((index, value));
                }
                Some(Check::Columns(expected))
            }
        })
    };
    let (partition_key, clustering, mutation, check) = match &prepared.statement {
        Statement::Insert {
            columns,
            values,
            if_not_exists,
            ttl,
            ..
        } => {
            let mut partition_key = vec![None; schema.partition_key.len()];
            let mut clustering = vec![None; schema.clustering_key.len()];
            let mut cells = Vec::new();
            for (column, term) in columns.iter().zip(values) {
                let (index, definition) = schema.column(column)?;
                match definition.kind {
                    ColumnKind::PartitionKey(position) => {
                        partition_key[position] =
                            Some(resolve_key(term, &definition.cql_type, binds, column)?)
                    }
                    ColumnKind::Clustering(position) => {
                        clustering[position] =
                            Some(resolve_key(term, &definition.cql_type, binds, column)?)
                    }
                    ColumnKind::Static | ColumnKind::Regular => {
                        match resolve(term, &definition.cql_type, binds)? {
                            Bound::Unset => {}
                            Bound::Null => cells.push((index, None)),
                            Bound::Value(value) => cells.push((index, Some(value))),
                        }
                    }
                }
            }
            let partition_key: Vec<Value> = partition_key
                .into_iter()
                .collect::<Option<_>>()
                .ok_or_else(|| CqlError::invalid("Missing mandatory PRIMARY KEY part"))?;
            let clustering: Vec<Value> = clustering
                .into_iter()
                .collect::<Option<_>>()
                .ok_or_else(|| CqlError::invalid("Missing mandatory PRIMARY KEY part"))?;
            let ttl_seconds = ttl_seconds(ttl.as_ref(), &schema, binds)?;
            let mutation = Mutation::Upsert {
                partition_key: partition_key.clone(),
                clustering: Some(clustering.clone()),
                cells,
                row_marker: true,
                ttl_seconds,
            };
            (
                partition_key,
                Some(clustering),
                mutation,
                if_not_exists.then_some(Check::NotExists),
            )
        }
        Statement::Update {
            ttl,
            assignments,
            relations,
            condition,
            ..
        } => {
            let (partition_key, predicates) = key_values(relations)?;
            let clustering = full_clustering(&predicates);
            let mut cells = Vec::new();
            for (column, term) in assignments {
                let (index, definition) = schema.column(column)?;
                match resolve(term, &definition.cql_type, binds)? {
                    Bound::Unset => {}
                    Bound::Null => cells.push((index, None)),
                    Bound::Value(value) => cells.push((index, Some(value))),
                }
            }
            let ttl_seconds = ttl_seconds(ttl.as_ref(), &schema, binds)?;
            let mutation = Mutation::Upsert {
                partition_key: partition_key.clone(),
                clustering: clustering.clone(),
                cells,
                row_marker: false,
                ttl_seconds,
            };
            (partition_key, clustering, mutation, check_of(condition)?)
        }
        Statement::Delete {
            columns,
            relations,
            condition,
            ..
        } => {
            let (partition_key, predicates) = key_values(relations)?;
            let clustering = full_clustering(&predicates);
            let columns = columns
                .iter()
                .map(|column| schema.column(column).map(|(index, _)| index))
                .collect::<Result<Vec<_>, _>>()?;
            let mutation = Mutation::Delete {
                partition_key: partition_key.clone(),
                clustering: predicates,
                columns,
            };
            (partition_key, clustering, mutation, check_of(condition)?)
        }
        _ => return Err(CqlError::invalid(
            "Invalid statement in batch: only UPDATE, INSERT and DELETE statements are allowed.",
        )),
    };
    Ok(Plan {
        keyspace: keyspace.clone(),
        table: table.clone(),
        schema,
        partition_key,
        clustering,
        mutation,
        check,
        timestamp,
    })
}

/// What a condition is checked against: the row's values (static columns from the partition,
/// which a condition sees even when the clustering row does not exist).
struct Current {
    row_exists: bool,
    static_exists: bool,
    values: Vec<Option<Value>>,
}

fn current_row(engine: &Engine, plan: &Plan) -> Result<Current, CqlError> {
    let table = engine.catalog.table(&plan.keyspace, &plan.table)?;
    let now_ms = engine.now_ms();
    let mut current = Current {
        row_exists: false,
        static_exists: false,
        values: vec![None; plan.schema.columns.len()],
    };
    let Some(partition) = table.partitions.get(&plan.partition_key) else {
        return Ok(current);
    };
    for (position, index) in plan.schema.partition_key.iter().enumerate() {
        current.values[*index] = Some(plan.partition_key[position].clone());
    }
    for (index, value) in partition.live_static(now_ms) {
        current.values[index] = Some(value.clone());
        current.static_exists = true;
    }
    let Some(clustering) = &plan.clustering else {
        current.row_exists = current.static_exists;
        return Ok(current);
    };
    let key = ClusteringKey {
        values: clustering.clone(),
        descending: table.descending.clone(),
    };
    let Some(cells) = partition
        .rows
        .get(&key)
        .and_then(|row| partition.live_row(&key, row, now_ms))
    else {
        return Ok(current);
    };
    current.row_exists = true;
    for (position, index) in plan.schema.clustering_key.iter().enumerate() {
        current.values[*index] = Some(clustering[position].clone());
    }
    for (index, value) in cells {
        current.values[index] = Some(value.clone());
    }
    Ok(current)
}

fn applied_spec(plan: &Plan, name: &str, cql_type: CqlType) -> ColumnSpec {
    ColumnSpec {
        keyspace: plan.keyspace.clone(),
        table: plan.table.clone(),
        name: name.to_string(),
        cql_type,
    }
}

/// Evaluates a plan's condition. `Ok(None)`: it holds; `Ok(Some(result))`: the not-applied
/// answer (`[applied] = false` and the existing row's columns, as Cassandra and ScyllaDB send).
fn evaluate(engine: &Engine, plan: &Plan) -> Result<Option<ExecResult>, CqlError> {
    let Some(check) = &plan.check else {
        return Ok(None);
    };
    let current = current_row(engine, plan)?;
    let holds = match check {
        Check::NotExists => !current.row_exists,
        Check::Exists => current.row_exists,
        Check::Columns(expected) => expected
            .iter()
            .all(|(index, value)| current.values[*index] == *value),
    };
    if holds {
        return Ok(None);
    }
    let mut specs = vec![applied_spec(plan, "[applied]", CqlType::Boolean)];
    let mut row = vec![Some(Value::Boolean(false))];
    if current.row_exists || current.static_exists {
        let indexes: Vec<usize> = match check {
            Check::Columns(expected) => expected.iter().map(|(index, _)| *index).collect(),
            _ => (0..plan.schema.columns.len()).collect(),
        };
        for index in indexes {
            let column = &plan.schema.columns[index];
            specs.push(applied_spec(plan, &column.name, column.cql_type.clone()));
            row.push(current.values[index].clone());
        }
    }
    Ok(Some(ExecResult::Rows {
        specs,
        rows: vec![row],
        paging_state: None,
    }))
}

fn applied_result(plan: &Plan) -> ExecResult {
    ExecResult::Rows {
        specs: vec![applied_spec(plan, "[applied]", CqlType::Boolean)],
        rows: vec![vec![Some(Value::Boolean(true))]],
        paging_state: None,
    }
}

fn apply(engine: &mut Engine, plan: Plan) -> Result<(), CqlError> {
    let now_ms = engine.now_ms();
    let timestamp = plan.timestamp;
    let table = engine.catalog.table_mut(&plan.keyspace, &plan.table)?;
    let descending = table.descending.clone();
    match plan.mutation {
        Mutation::Upsert {
            partition_key,
            clustering,
            cells,
            row_marker,
            ttl_seconds,
        } => {
            let expires_at_ms = (ttl_seconds > 0).then(|| now_ms + i64::from(ttl_seconds) * 1000);
            let partition = table.partitions.entry(partition_key).or_default();
            let mut regular = Vec::new();
            for (index, value) in cells {
                let cell = Cell {
                    value,
                    expires_at_ms,
                    timestamp,
                };
                if plan.schema.columns[index].kind == ColumnKind::Static {
                    Cell::merge_into(&mut partition.static_cells, index, cell);
                } else {
                    regular.push((index, cell));
                }
            }
            let Some(clustering) = clustering else {
                if !regular.is_empty() || row_marker {
                    return Err(CqlError::invalid("Missing mandatory PRIMARY KEY part"));
                }
                return Ok(());
            };
            let key = ClusteringKey {
                values: clustering,
                descending,
            };
            let row: &mut Row = partition.rows.entry(key).or_default();
            if row_marker
                && row
                    .marker
                    .is_none_or(|marker| marker.timestamp <= timestamp)
            {
                row.marker = Some(Marker {
                    expires_at_ms,
                    timestamp,
                });
            }
            for (index, cell) in regular {
                Cell::merge_into(&mut row.cells, index, cell);
            }
        }
        Mutation::Delete {
            partition_key,
            clustering,
            columns,
        } => {
            let partition = table.partitions.entry(partition_key).or_default();
            let tombstone = || Cell {
                value: None,
                expires_at_ms: None,
                timestamp,
            };
            if !columns.is_empty() {
                for index in columns {
                    if plan.schema.columns[index].kind == ColumnKind::Static {
                        Cell::merge_into(&mut partition.static_cells, index, tombstone());
                        continue;
                    }
                    for (key, row) in partition.rows.iter_mut() {
                        if clustering
                            .iter()
                            .all(|predicate| predicate.matches(&key.values))
                        {
                            Cell::merge_into(&mut row.cells, index, tombstone());
                        }
                    }
                }
                return Ok(());
            }
            if clustering.is_empty() {
                partition.deleted_at = partition.deleted_at.max(timestamp);
                return Ok(());
            }
            let full_key: Option<Vec<Value>> = plan.clustering.clone().filter(|values| {
                values.len() == plan.schema.clustering_key.len()
                    && clustering.len() == values.len()
                    && clustering.iter().all(|predicate| {
                        matches!(
                            predicate,
                            ClusteringPredicate::Single {
                                operator: crate::parser::Operator::Eq,
                                ..
                            }
                        )
                    })
            });
            match full_key {
                Some(values) => {
                    let row = partition
                        .rows
                        .entry(ClusteringKey { values, descending })
                        .or_default();
                    row.deleted_at = row.deleted_at.max(timestamp);
                }
                None => partition.range_tombstones.push((clustering, timestamp)),
            }
        }
    }
    Ok(())
}

pub fn execute_single(
    engine: &mut Engine,
    prepared: &Prepared,
    binds: &[Bound],
    timestamp: i64,
) -> Result<ExecResult, CqlError> {
    let plan = plan(engine, prepared, binds, timestamp)?;
    let conditional = plan.check.is_some();
    if let Some(not_applied) = evaluate(engine, &plan)? {
        return Ok(not_applied);
    }
    let result = if conditional {
        applied_result(&plan)
    } else {
        ExecResult::Void
    };
    apply(engine, plan)?;
    Ok(result)
}

/// Executes a batch atomically; returns the result and the warnings to send with it.
pub fn execute_batch(
    engine: &mut Engine,
    statements: &[(std::sync::Arc<Prepared>, Vec<Bound>)],
    timestamp: Option<i64>,
) -> Result<(ExecResult, Vec<String>), CqlError> {
    let timestamp = timestamp.unwrap_or_else(|| engine.next_timestamp());
    let mut plans = Vec::new();
    for (prepared, binds) in statements {
        if !prepared.is_write() {
            return Err(CqlError::invalid(
                "Invalid statement in batch: only UPDATE, INSERT and DELETE statements are allowed.",
            ));
        }
        plans.push(plan(engine, prepared, binds, timestamp)?);
    }
    let mut warnings = Vec::new();
    let size: usize = plans.iter().map(Plan::size_bytes).sum();
    let partitions: std::collections::HashSet<(&str, &str, &Vec<Value>)> = plans
        .iter()
        .map(|plan| {
            (
                plan.keyspace.as_str(),
                plan.table.as_str(),
                &plan.partition_key,
            )
        })
        .collect();
    let tables: Vec<String> = {
        let mut names: Vec<String> = plans
            .iter()
            .map(|plan| format!("{}.{}", plan.keyspace, plan.table))
            .collect();
        names.sort();
        names.dedup();
        names
    };
    let describe = |kind: &str, threshold: usize| {
        format!(
            "Batch modifying {} partitions in {} is of size {} bytes, exceeding specified {} threshold of {} by {}.",
            partitions.len(),
            tables.join(", "),
            size,
            kind,
            threshold,
            size - threshold
        )
    };
    if size > BATCH_SIZE_FAIL_THRESHOLD_BYTES {
        return Err(CqlError::invalid(format!(
            "Batch too large: {}",
            describe("FAIL", BATCH_SIZE_FAIL_THRESHOLD_BYTES)
        )));
    }
    if size > BATCH_SIZE_WARN_THRESHOLD_BYTES {
        warnings.push(describe("WARN", BATCH_SIZE_WARN_THRESHOLD_BYTES));
    }
    let conditional = plans.iter().any(|plan| plan.check.is_some());
    if conditional {
        if tables.len() > 1 {
            return Err(CqlError::invalid(
                "Batch with conditions cannot span multiple tables",
            ));
        }
        if partitions.len() > 1 {
            return Err(CqlError::invalid(
                "Batch with conditions cannot span multiple partitions",
            ));
        }
        for plan in &plans {
            if let Some(not_applied) = evaluate(engine, plan)? {
                return Ok((not_applied, warnings));
            }
        }
    }
    let result = if conditional {
        plans
            .first()
            .map(applied_result)
            .unwrap_or(ExecResult::Void)
    } else {
        ExecResult::Void
    };
    for plan in plans {
        apply(engine, plan)?;
    }
    Ok((result, warnings))
}
