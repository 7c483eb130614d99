//! SELECT: partitions chosen by the partition key, rows in clustering order (reversed when
//! ORDER BY asks for it), clustering restrictions, LIMIT, and paging with a resumable cursor.

use std::cmp::Ordering;

use crate::engine::{Bound, Engine, ExecResult, PageRequest, Prepared};
use crate::error::CqlError;
use crate::parser::{InTerms, Operator, Relation, Selection, Statement};
use crate::schema::{ClusteringKey, ColumnKind, Partition, TableSchema};
use crate::terms::{resolve, resolve_key};
use crate::types::{read_bytes, read_i32, write_value_bytes, Value};

/// A restriction on the clustering values of a row.
#[derive(Debug, Clone)]
pub enum ClusteringPredicate {
    /// Column at clustering position compared with a value.
    Single {
        position: usize,
        operator: Operator,
        value: Value,
    },
    /// The first `values.len()` clustering columns, compared as a tuple.
    Tuple {
        operator: Operator,
        values: Vec<Value>,
    },
}

impl ClusteringPredicate {
    pub fn matches(&self, clustering: &[Value]) -> bool {
        let (ordering, operator) = match self {
            ClusteringPredicate::Single {
                position,
                operator,
                value,
            } => match clustering.get(*position) {
                Some(actual) => (actual.cmp(value), *operator),
                None => return false,
            },
            ClusteringPredicate::Tuple { operator, values } => {
                let prefix = &clustering[..values.len().min(clustering.len())];
                (prefix.cmp(values.as_slice()), *operator)
            }
        };
        match operator {
            Operator::Eq => ordering == Ordering::Equal,
            Operator::Lt => ordering == Ordering::Less,
            Operator::Le => ordering != Ordering::Greater,
            Operator::Gt => ordering == Ordering::Greater,
            Operator::Ge => ordering != Ordering::Less,
            Operator::NotEq => ordering != Ordering::Equal,
        }
    }
}

/// The partition keys and clustering predicates a WHERE clause selects.
pub struct Selected {
    /// `None`: every partition (a SELECT without WHERE).
    pub partition_keys: Option<Vec<Vec<Value>>>,
    pub clustering: Vec<ClusteringPredicate>,
}

pub fn selected(
    schema: &TableSchema,
    relations: &[Relation],
    binds: &[Bound],
) -> Result<Selected, CqlError> {
    let mut per_column: Vec<Option<Vec<Value>>> = vec![None; schema.partition_key.len()];
    let mut clustering = Vec::new();
    for relation in relations {
        match relation {
            Relation::Single {
                column,
                operator,
                term,
            } => {
                let (index, definition) = schema.column(column)?;
                let value = resolve_key(term, &definition.cql_type, binds, column)?;
                match definition.kind {
                    ColumnKind::PartitionKey(position) => per_column[position] = Some(vec![value]),
                    ColumnKind::Clustering(position) => {
                        clustering.push(ClusteringPredicate::Single {
                            position,
                            operator: *operator,
                            value,
                        })
                    }
                    _ => {
                        let _ = index;
                        return Err(CqlError::invalid(crate::rules::FILTERING_MESSAGE));
                    }
                }
            }
            Relation::In { column, terms } => {
                let (_, definition) = schema.column(column)?;
                let ColumnKind::PartitionKey(position) = definition.kind else {
                    return Err(CqlError::invalid(format!(
                        "IN on {column} is not supported by this test server"
                    )));
                };
                let values = match terms {
                    InTerms::List(terms) => terms
                        .iter()
                        .map(|term| resolve_key(term, &definition.cql_type, binds, column))
                        .collect::<Result<Vec<_>, _>>()?,
                    InTerms::Bind(position) => match binds.get(*position) {
                        Some(Bound::Value(Value::List(values) | Value::Set(values))) => {
                            values.clone()
                        }
                        Some(Bound::Unset) => {
                            return Err(CqlError::invalid(format!(
                                "Invalid unset value for column {column}"
                            )))
                        }
                        _ => {
                            return Err(CqlError::invalid(format!(
                                "Invalid null value for IN restriction on {column}"
                            )))
                        }
                    },
                };
                per_column[position] = Some(values);
            }
            Relation::Tuple {
                columns,
                operator,
                terms,
            } => {
                let mut values = Vec::new();
                for (column, term) in columns.iter().zip(terms) {
                    let (_, definition) = schema.column(column)?;
                    values.push(resolve_key(term, &definition.cql_type, binds, column)?);
                }
                clustering.push(ClusteringPredicate::Tuple {
                    operator: *operator,
                    values,
                });
            }
        }
    }
    let partition_keys = if per_column.iter().all(Option::is_none) {
        None
    } else {
        let mut keys: Vec<Vec<Value>> = vec![Vec::new()];
        for values in per_column {
            let values =
                values.ok_or_else(|| CqlError::invalid(crate::rules::FILTERING_MESSAGE))?;
            keys = keys
                .into_iter()
                .flat_map(|prefix| {
                    values.iter().map(move |value| {
                        let mut key = prefix.clone();
                        key.push(value.clone());
                        key
                    })
                })
                .collect();
        }
        keys.sort();
        keys.dedup();
        Some(keys)
    };
    Ok(Selected {
        partition_keys,
        clustering,
    })
}

/// A row's place in the result order, for the paging cursor.
#[derive(Debug, Clone, PartialEq)]
struct Position {
    partition_key: Vec<Value>,
    clustering: Option<ClusteringKey>,
}

/// Compares positions in result order: partitions ascending, then rows in clustering order
/// (reversed for a reversed query); a partition's static-only row comes first.
fn compare_positions(left: &Position, right: &Position, reversed: bool) -> Ordering {
    left.partition_key.cmp(&right.partition_key).then_with(|| {
        match (&left.clustering, &right.clustering) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(a), Some(b)) => {
                if reversed {
                    b.cmp(a)
                } else {
                    a.cmp(b)
                }
            }
        }
    })
}

pub fn select(
    engine: &Engine,
    prepared: &Prepared,
    binds: &[Bound],
    page: &PageRequest,
) -> Result<ExecResult, CqlError> {
    let Statement::Select {
        selection,
        relations,
        order_by,
        limit,
        ..
    } = &prepared.statement
    else {
        return Err(CqlError::Server("not a SELECT".into()));
    };
    let Some((keyspace, table_name)) = &prepared.table else {
        return Err(CqlError::Server("SELECT without a table".into()));
    };
    let table = engine.catalog.table(keyspace, table_name)?;
    let schema = table.schema.clone();
    let now_ms = engine.now_ms();
    let selection_of = selected(&schema, relations, binds)?;
    let limit = match limit {
        None => None,
        Some(term) => match resolve(term, &crate::types::CqlType::Int, binds)? {
            Bound::Value(Value::Int(limit)) if limit > 0 => Some(limit as usize),
            Bound::Value(Value::Int(limit)) => {
                return Err(CqlError::invalid(format!(
                    "LIMIT must be strictly positive, got {limit}"
                )))
            }
            Bound::Unset => None,
            _ => return Err(CqlError::invalid("Invalid null value of limit")),
        },
    };
    let reversed = order_by
        .first()
        .and_then(
            |(column, descending)| match schema.column(column).ok()?.1.kind {
                ColumnKind::Clustering(position) => {
                    Some(*descending != schema.clustering_descending[position])
                }
                _ => None,
            },
        )
        .unwrap_or(false);

    let partitions: Vec<(&Vec<Value>, &Partition)> = match &selection_of.partition_keys {
        None => table.partitions.iter().collect(),
        Some(keys) => keys
            .iter()
            .filter_map(|key| table.partitions.get_key_value(key))
            .collect(),
    };
    let mut rows: Vec<(Position, Vec<Option<Value>>)> = Vec::new();
    for (partition_key, partition) in partitions {
        let statics = |values: &mut Vec<Option<Value>>| {
            for (index, value) in partition.live_static(now_ms) {
                values[index] = Some(value.clone());
            }
        };
        let base = || {
            let mut values = vec![None; schema.columns.len()];
            for (position, index) in schema.partition_key.iter().enumerate() {
                values[*index] = Some(partition_key[position].clone());
            }
            values
        };
        let mut emitted = false;
        let ordered: Box<dyn Iterator<Item = (&ClusteringKey, &crate::schema::Row)>> = if reversed {
            Box::new(partition.rows.iter().rev())
        } else {
            Box::new(partition.rows.iter())
        };
        for (clustering, row) in ordered {
            let selected = selection_of
                .clustering
                .iter()
                .all(|predicate| predicate.matches(&clustering.values));
            if !selected {
                continue;
            }
            let Some(cells) = partition.live_row(clustering, row, now_ms) else {
                continue;
            };
            let mut values = base();
            for (position, index) in schema.clustering_key.iter().enumerate() {
                values[*index] = Some(clustering.values[position].clone());
            }
            statics(&mut values);
            for (index, value) in cells {
                values[index] = Some(value.clone());
            }
            rows.push((
                Position {
                    partition_key: partition_key.clone(),
                    clustering: Some(clustering.clone()),
                },
                values,
            ));
            emitted = true;
        }
        // A partition holding only static cells is one row with null clustering columns.
        if !emitted && selection_of.clustering.is_empty() && partition.has_live_static(now_ms) {
            let mut values = base();
            statics(&mut values);
            rows.push((
                Position {
                    partition_key: partition_key.clone(),
                    clustering: None,
                },
                values,
            ));
        }
    }

    if let Selection::Count = selection {
        let count = limit.map_or(rows.len(), |limit| rows.len().min(limit));
        return Ok(ExecResult::Rows {
            specs: prepared.result_specs.clone(),
            rows: vec![vec![Some(Value::BigInt(count as i64))]],
            paging_state: None,
        });
    }

    let (already_returned, cursor) = match &page.paging_state {
        Some(state) if !state.is_empty() => {
            decode_cursor(&schema, table.descending.clone(), state)?
        }
        _ => (0, None),
    };
    let start = match &cursor {
        None => 0,
        Some(cursor) => rows
            .iter()
            .position(|(position, _)| {
                compare_positions(position, cursor, reversed) == Ordering::Greater
            })
            .unwrap_or(rows.len()),
    };
    let remaining_by_limit = limit.map(|limit| limit.saturating_sub(already_returned));
    let mut take = rows.len() - start;
    if let Some(remaining) = remaining_by_limit {
        take = take.min(remaining);
    }
    let mut paging_state = None;
    if let Some(page_size) = page.page_size.filter(|size| *size > 0) {
        let page_size = page_size as usize;
        if take > page_size {
            take = page_size;
            let (last, _) = &rows[start + take - 1];
            paging_state = Some(encode_cursor(already_returned + take, last));
        }
    }
    let column_indexes: Vec<usize> = match selection {
        Selection::All => (0..schema.columns.len()).collect(),
        Selection::Columns(columns) => columns
            .iter()
            .filter_map(|name| schema.column_index(name))
            .collect(),
        Selection::Count => Vec::new(),
    };
    let projected = rows[start..start + take]
        .iter()
        .map(|(_, values)| {
            column_indexes
                .iter()
                .map(|index| values[*index].clone())
                .collect()
        })
        .collect();
    Ok(ExecResult::Rows {
        specs: prepared.result_specs.clone(),
        rows: projected,
        paging_state,
    })
}

/// The paging state: rows returned so far (for LIMIT), then the last row's partition key and
/// clustering key (absent for a static-only row). Resuming starts strictly after that row, so
/// rows written or deleted between pages do not shift the cursor.
fn encode_cursor(returned: usize, last: &Position) -> Vec<u8> {
    let mut state = Vec::new();
    state.extend_from_slice(&(returned as i32).to_be_bytes());
    state.extend_from_slice(&(last.partition_key.len() as i32).to_be_bytes());
    for value in &last.partition_key {
        write_value_bytes(Some(value), &mut state);
    }
    match &last.clustering {
        None => state.extend_from_slice(&(-1i32).to_be_bytes()),
        Some(clustering) => {
            state.extend_from_slice(&(clustering.values.len() as i32).to_be_bytes());
            for value in &clustering.values {
                write_value_bytes(Some(value), &mut state);
            }
        }
    }
    state
}

fn decode_cursor(
    schema: &TableSchema,
    descending: std::sync::Arc<Vec<bool>>,
    state: &[u8],
) -> Result<(usize, Option<Position>), CqlError> {
    let corrupt = || CqlError::protocol("Invalid value for the paging state");
    let mut reader = state;
    let returned = read_i32(&mut reader).map_err(|_| corrupt())?;
    let key_count = read_i32(&mut reader).map_err(|_| corrupt())?;
    if key_count as usize != schema.partition_key.len() {
        return Err(corrupt());
    }
    let mut partition_key = Vec::new();
    for index in &schema.partition_key {
        let bytes = read_bytes(&mut reader)
            .map_err(|_| corrupt())?
            .ok_or_else(corrupt)?;
        partition_key.push(Value::decode(&schema.columns[*index].cql_type, bytes)?);
    }
    let clustering_count = read_i32(&mut reader).map_err(|_| corrupt())?;
    let clustering = if clustering_count < 0 {
        None
    } else {
        let mut values = Vec::new();
        for index in schema.clustering_key.iter().take(clustering_count as usize) {
            let bytes = read_bytes(&mut reader)
                .map_err(|_| corrupt())?
                .ok_or_else(corrupt)?;
            values.push(Value::decode(&schema.columns[*index].cql_type, bytes)?);
        }
        Some(ClusteringKey { values, descending })
    };
    Ok((
        returned.max(0) as usize,
        Some(Position {
            partition_key,
            clustering,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use crate::engine::{Engine, ExecResult, PageRequest};
    use crate::types::Value;

    fn run(engine: &mut Engine, statement: &str, page: &PageRequest) -> ExecResult {
        let prepared = engine.prepare(statement, None).expect(statement);
        engine
            .execute(&prepared, &[], page, None, None)
            .expect(statement)
    }

    /// xorshift64*: a few lines instead of a dependency (a new one rebuilds the driver).
    struct Random(u64);

    impl Random {
        fn below(&mut self, bound: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound
        }
    }

    fn random_engine(random: &mut Random) -> Engine {
        let mut engine = Engine::default();
        let unpaged = PageRequest::default();
        run(
            &mut engine,
            "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
            &unpaged,
        );
        run(
            &mut engine,
            "CREATE TABLE ks.t (p int, c1 int, c2 int, s int static, v int, PRIMARY KEY (p, c1, c2)) \
             WITH CLUSTERING ORDER BY (c1 DESC, c2 ASC)",
            &unpaged,
        );
        for _ in 0..random.below(40) {
            let (p, c1, c2, v) = (
                random.below(3),
                random.below(5),
                random.below(5),
                random.below(1000),
            );
            let insert = format!("INSERT INTO ks.t (p, c1, c2, v) VALUES ({p}, {c1}, {c2}, {v})");
            run(&mut engine, &insert, &unpaged);
        }
        for _ in 0..random.below(3) {
            let (p, s) = (random.below(4), random.below(1000));
            run(
                &mut engine,
                &format!("UPDATE ks.t SET s = {s} WHERE p = {p}"),
                &unpaged,
            );
        }
        engine
    }

    fn rows_of(result: ExecResult) -> (Vec<Vec<Option<Value>>>, Option<Vec<u8>>) {
        match result {
            ExecResult::Rows {
                rows, paging_state, ..
            } => (rows, paging_state),
            other => panic!("expected rows, got {other:?}"),
        }
    }

    const QUERIES: [&str; 7] = [
        "SELECT * FROM ks.t",
        "SELECT * FROM ks.t WHERE p = 1",
        "SELECT * FROM ks.t WHERE p = 1 ORDER BY c1 ASC, c2 DESC",
        "SELECT p, c1, c2 FROM ks.t WHERE p IN (2, 0, 1)",
        "SELECT * FROM ks.t WHERE p = 2 AND c1 <= 3 AND c1 > 0",
        "SELECT v FROM ks.t WHERE p = 0 AND (c1, c2) >= (2, 1) LIMIT 5",
        "SELECT * FROM ks.t LIMIT 7",
    ];

    /// Reading page by page with the paging state returns exactly the unpaged result, for
    /// random tables (static-only partitions included), every query shape and page size.
    #[test]
    fn pages_concatenate_to_the_unpaged_result() {
        let mut random = Random(0x9E37_79B9_7F4A_7C15);
        for case in 0..300 {
            let mut engine = random_engine(&mut random);
            let query = QUERIES[case % QUERIES.len()];
            let page_size = 1 + random.below(7) as i32;
            let (unpaged, state) = rows_of(run(&mut engine, query, &PageRequest::default()));
            assert!(state.is_none());
            let mut paged = Vec::new();
            let mut page = PageRequest {
                page_size: Some(page_size),
                paging_state: None,
            };
            for _ in 0..100 {
                let (rows, state) = rows_of(run(&mut engine, query, &page));
                assert!(rows.len() <= page_size as usize);
                paged.extend(rows);
                match state {
                    Some(state) => page.paging_state = Some(state),
                    None => break,
                }
            }
            assert_eq!(
                paged, unpaged,
                "case {case}: {query} with pages of {page_size}"
            );
        }
    }
}
