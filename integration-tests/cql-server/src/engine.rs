//! The engine: prepares statements against the catalog (bind and result metadata, ScyllaDB's
//! restriction rules checked at prepare time as ScyllaDB does), and executes them.

use std::sync::Arc;

use crate::error::CqlError;
use crate::parser::{self, Condition, InTerms, Relation, Selection, Statement, TableName, Term};
use crate::rules;
use crate::schema::{Catalog, ColumnKind, SchemaChange, TableSchema, SYSTEM_KEYSPACES};
use crate::types::{CqlType, Value};

/// The metadata of one bind marker or result column.
#[derive(Debug, Clone)]
pub struct ColumnSpec {
    pub keyspace: String,
    pub table: String,
    pub name: String,
    pub cql_type: CqlType,
}

/// A statement analysed against the schema it was prepared on.
#[derive(Debug)]
pub struct Prepared {
    pub id: Vec<u8>,
    pub text: String,
    pub statement: Statement,
    /// The table the statement reads or writes, `(keyspace, table)`.
    pub table: Option<(String, String)>,
    pub bind_specs: Vec<ColumnSpec>,
    pub result_specs: Vec<ColumnSpec>,
    pub partition_key_indexes: Vec<u16>,
    pub is_conditional: bool,
}

impl Prepared {
    pub fn is_write(&self) -> bool {
        matches!(
            self.statement,
            Statement::Insert { .. } | Statement::Update { .. } | Statement::Delete { .. }
        )
    }
}

/// A bound value as the client sent it.
#[derive(Debug, Clone, PartialEq)]
pub enum Bound {
    Null,
    Unset,
    Value(Value),
}

/// What the client asked for beyond the statement: paging.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub page_size: Option<i32>,
    pub paging_state: Option<Vec<u8>>,
}

#[derive(Debug)]
pub enum ExecResult {
    Void,
    Rows {
        specs: Vec<ColumnSpec>,
        rows: Vec<Vec<Option<Value>>>,
        paging_state: Option<Vec<u8>>,
    },
    SetKeyspace(String),
    SchemaChange(SchemaChange),
}

#[derive(Default)]
pub struct Engine {
    pub catalog: Catalog,
    /// Added to the wall clock: tests advance it to expire TTLs.
    pub clock_offset_ms: i64,
    /// The last write timestamp assigned (µs), so server-side timestamps strictly increase.
    pub last_timestamp: i64,
}

/// A stable statement id: the same text on the same keyspace prepares to the same id.
pub fn statement_id(text: &str, keyspace: Option<&str>) -> Vec<u8> {
    use std::hash::{Hash, Hasher};
    let mut id = Vec::with_capacity(16);
    for salt in [0x5eedu64, 0xc0ffee] {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        salt.hash(&mut hasher);
        text.hash(&mut hasher);
        keyspace.hash(&mut hasher);
        id.extend_from_slice(&hasher.finish().to_be_bytes());
    }
    id
}

impl Engine {
    pub fn now_ms(&self) -> i64 {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis() as i64)
            .unwrap_or(0);
        wall + self.clock_offset_ms
    }

    /// A server-side write timestamp (µs): the server clock, strictly increasing, as a
    /// coordinator assigns when the client sends none (the driver's default).
    pub fn next_timestamp(&mut self) -> i64 {
        let now_us = self.now_ms().saturating_mul(1000);
        self.last_timestamp = now_us.max(self.last_timestamp + 1);
        self.last_timestamp
    }

    pub fn resolve_table_name(
        name: &TableName,
        session_keyspace: Option<&str>,
    ) -> Result<(String, String), CqlError> {
        let keyspace = name
            .keyspace
            .clone()
            .or_else(|| session_keyspace.map(str::to_string))
            .ok_or_else(|| {
                CqlError::invalid("No keyspace has been specified. USE a keyspace, or explicitly specify keyspace.tablename")
            })?;
        Ok((keyspace, name.table.clone()))
    }

    /// Parses and analyses a statement.
    pub fn prepare(
        &self,
        text: &str,
        session_keyspace: Option<&str>,
    ) -> Result<Prepared, CqlError> {
        let (statement, bind_count) = parser::parse(text)?;
        let mut analysis = Analysis {
            binds: vec![None; bind_count],
            result_specs: Vec::new(),
            table: None,
            is_conditional: false,
        };
        match &statement {
            Statement::Insert {
                table,
                columns,
                values,
                if_not_exists,
                ttl,
                timestamp,
            } => {
                let schema = self.schema_for(table, session_keyspace)?;
                analysis.table = Some((schema.keyspace.clone(), schema.name.clone()));
                analysis.is_conditional = *if_not_exists;
                for (column, term) in columns.iter().zip(values) {
                    let (index, _) = schema.column(column)?;
                    analysis.bind_column(&schema, index, term);
                }
                rules::check_insert_keys(&schema, columns)?;
                if let Some(ttl) = ttl {
                    analysis.bind_special(&schema, ttl, "[ttl]", CqlType::Int);
                }
                if let Some(timestamp) = timestamp {
                    analysis.bind_special(&schema, timestamp, "[timestamp]", CqlType::BigInt);
                }
            }
            Statement::Update {
                table,
                ttl,
                timestamp,
                assignments,
                relations,
                condition,
            } => {
                let schema = self.schema_for(table, session_keyspace)?;
                analysis.table = Some((schema.keyspace.clone(), schema.name.clone()));
                if let Some(ttl) = ttl {
                    analysis.bind_special(&schema, ttl, "[ttl]", CqlType::Int);
                }
                if let Some(timestamp) = timestamp {
                    analysis.bind_special(&schema, timestamp, "[timestamp]", CqlType::BigInt);
                }
                for (column, term) in assignments {
                    let (index, definition) = schema.column(column)?;
                    if matches!(
                        definition.kind,
                        ColumnKind::PartitionKey(_) | ColumnKind::Clustering(_)
                    ) {
                        return Err(CqlError::invalid(format!(
                            "PRIMARY KEY part {column} found in SET part"
                        )));
                    }
                    analysis.bind_column(&schema, index, term);
                }
                analysis.bind_relations(&schema, relations)?;
                analysis.bind_condition(&schema, condition)?;
                let only_static = assignments.iter().all(|(column, _)| {
                    matches!(
                        schema.column(column).map(|c| c.1.kind),
                        Ok(ColumnKind::Static)
                    )
                });
                rules::check_write_where(&schema, relations, !only_static, false)?;
            }
            Statement::Delete {
                table,
                timestamp,
                columns,
                relations,
                condition,
            } => {
                let schema = self.schema_for(table, session_keyspace)?;
                analysis.table = Some((schema.keyspace.clone(), schema.name.clone()));
                if let Some(timestamp) = timestamp {
                    analysis.bind_special(&schema, timestamp, "[timestamp]", CqlType::BigInt);
                }
                let mut needs_full_clustering = false;
                for column in columns {
                    let (_, definition) = schema.column(column)?;
                    match definition.kind {
                        ColumnKind::PartitionKey(_) | ColumnKind::Clustering(_) => {
                            return Err(CqlError::invalid(format!(
                                "Invalid identifier {column} for deletion (should not be a PRIMARY KEY part)"
                            )))
                        }
                        ColumnKind::Regular => needs_full_clustering = true,
                        ColumnKind::Static => {}
                    }
                }
                analysis.bind_relations(&schema, relations)?;
                analysis.bind_condition(&schema, condition)?;
                let conditional = !matches!(condition, Condition::None);
                rules::check_write_where(
                    &schema,
                    relations,
                    needs_full_clustering || conditional,
                    true,
                )?;
            }
            Statement::Select {
                table,
                selection,
                relations,
                order_by,
                limit,
                allow_filtering,
            } => {
                let schema = self.schema_for(table, session_keyspace)?;
                analysis.table = Some((schema.keyspace.clone(), schema.name.clone()));
                if *allow_filtering {
                    return Err(CqlError::invalid(
                        "ALLOW FILTERING is refused by this test server: pinhive's queries must never filter",
                    ));
                }
                analysis.bind_relations(&schema, relations)?;
                if let Some(limit) = limit {
                    analysis.bind_special(&schema, limit, "[limit]", CqlType::Int);
                }
                rules::check_select(&schema, relations, order_by)?;
                analysis.result_specs = match selection {
                    Selection::All => schema
                        .columns
                        .iter()
                        .map(|column| spec(&schema, &column.name, column.cql_type.clone()))
                        .collect(),
                    Selection::Count => vec![spec(&schema, "count", CqlType::BigInt)],
                    Selection::Columns(columns) => columns
                        .iter()
                        .map(|name| {
                            schema
                                .column_index(name)
                                .map(|index| {
                                    spec(&schema, name, schema.columns[index].cql_type.clone())
                                })
                                .ok_or_else(|| {
                                    CqlError::invalid(format!(
                                        "Undefined name {name} in selection clause"
                                    ))
                                })
                        })
                        .collect::<Result<_, _>>()?,
                };
            }
            _ => {}
        }
        let bind_specs = analysis
            .binds
            .iter()
            .map(|bind| {
                bind.clone().unwrap_or(ColumnSpec {
                    keyspace: String::new(),
                    table: String::new(),
                    name: "[timeout]".into(),
                    cql_type: CqlType::BigInt,
                })
            })
            .collect();
        let partition_key_indexes = match (&analysis.table, &statement) {
            (
                Some((keyspace, table)),
                Statement::Insert { .. }
                | Statement::Update { .. }
                | Statement::Delete { .. }
                | Statement::Select { .. },
            ) => {
                let schema = self.catalog.table(keyspace, table)?.schema.clone();
                partition_key_indexes(&schema, &analysis.binds)
            }
            _ => Vec::new(),
        };
        Ok(Prepared {
            id: statement_id(text, session_keyspace),
            text: text.to_string(),
            statement,
            table: analysis.table,
            bind_specs,
            result_specs: analysis.result_specs,
            partition_key_indexes,
            is_conditional: analysis.is_conditional,
        })
    }

    fn schema_for(
        &self,
        name: &TableName,
        session_keyspace: Option<&str>,
    ) -> Result<Arc<TableSchema>, CqlError> {
        let (keyspace, table) = Self::resolve_table_name(name, session_keyspace)?;
        Ok(self.catalog.table(&keyspace, &table)?.schema.clone())
    }

    /// Executes a prepared statement with its bound values (`session_keyspace` serves DDL
    /// statements, which are not analysed at prepare time).
    pub fn execute(
        &mut self,
        prepared: &Prepared,
        binds: &[Bound],
        page: &PageRequest,
        session_keyspace: Option<&str>,
        timestamp: Option<i64>,
    ) -> Result<ExecResult, CqlError> {
        if binds.len() != prepared.bind_specs.len() {
            return Err(CqlError::invalid(format!(
                "There were {} markers(?) in CQL but {} bound variables",
                prepared.bind_specs.len(),
                binds.len()
            )));
        }
        match &prepared.statement {
            Statement::CreateKeyspace {
                name,
                if_not_exists,
                replication,
                durable_writes,
            } => schema_change(self.catalog.create_keyspace(
                name,
                *if_not_exists,
                replication.clone(),
                *durable_writes,
            )?),
            Statement::CreateTable {
                name,
                if_not_exists,
                columns,
                partition_key,
                clustering_key,
                clustering_order,
                default_time_to_live,
            } => {
                let (keyspace, _) = Self::resolve_table_name(name, session_keyspace)?;
                schema_change(self.catalog.create_table(
                    &keyspace,
                    name,
                    *if_not_exists,
                    columns,
                    partition_key,
                    clustering_key,
                    clustering_order,
                    *default_time_to_live,
                )?)
            }
            Statement::DropTable { name, if_exists } => {
                let (keyspace, table) = Self::resolve_table_name(name, session_keyspace)?;
                schema_change(self.catalog.drop_table(&keyspace, &table, *if_exists)?)
            }
            Statement::DropKeyspace { name, if_exists } => {
                schema_change(self.catalog.drop_keyspace(name, *if_exists)?)
            }
            Statement::Truncate { name } => {
                let (keyspace, table) = Self::resolve_table_name(name, session_keyspace)?;
                if SYSTEM_KEYSPACES.contains(&keyspace.as_str()) {
                    return Err(CqlError::invalid(format!(
                        "Cannot modify system keyspace {keyspace}"
                    )));
                }
                self.catalog
                    .table_mut(&keyspace, &table)?
                    .partitions
                    .clear();
                Ok(ExecResult::Void)
            }
            Statement::Use { keyspace } => {
                if !self.catalog.keyspaces.contains_key(keyspace) {
                    return Err(CqlError::invalid(format!(
                        "Keyspace '{keyspace}' does not exist"
                    )));
                }
                Ok(ExecResult::SetKeyspace(keyspace.clone()))
            }
            Statement::Select { .. } => crate::read::select(self, prepared, binds, page),
            Statement::Insert { .. } | Statement::Update { .. } | Statement::Delete { .. } => {
                let timestamp = timestamp.unwrap_or_else(|| self.next_timestamp());
                crate::write::execute_single(self, prepared, binds, timestamp)
            }
        }
    }
}

fn schema_change(change: Option<SchemaChange>) -> Result<ExecResult, CqlError> {
    Ok(match change {
        Some(change) => ExecResult::SchemaChange(change),
        None => ExecResult::Void,
    })
}

fn spec(schema: &TableSchema, name: &str, cql_type: CqlType) -> ColumnSpec {
    ColumnSpec {
        keyspace: schema.keyspace.clone(),
        table: schema.name.clone(),
        name: name.to_string(),
        cql_type,
    }
}

struct Analysis {
    binds: Vec<Option<ColumnSpec>>,
    result_specs: Vec<ColumnSpec>,
    table: Option<(String, String)>,
    is_conditional: bool,
}

impl Analysis {
    fn bind_column(&mut self, schema: &TableSchema, index: usize, term: &Term) {
        let column = &schema.columns[index];
        self.bind_special(schema, term, &column.name, column.cql_type.clone());
    }

    fn bind_special(&mut self, schema: &TableSchema, term: &Term, name: &str, cql_type: CqlType) {
        if let Term::Bind(position) = term {
            if let Some(slot) = self.binds.get_mut(*position) {
                *slot = Some(spec(schema, name, cql_type));
            }
        }
    }

    fn bind_relations(
        &mut self,
        schema: &TableSchema,
        relations: &[Relation],
    ) -> Result<(), CqlError> {
        for relation in relations {
            match relation {
                Relation::Single { column, term, .. } => {
                    let (index, _) = rules::where_column(schema, column)?;
                    self.bind_column(schema, index, term);
                }
                Relation::In { column, terms } => {
                    let (index, definition) = rules::where_column(schema, column)?;
                    match terms {
                        InTerms::List(terms) => {
                            for term in terms {
                                self.bind_column(schema, index, term);
                            }
                        }
                        InTerms::Bind(position) => {
                            if let Some(slot) = self.binds.get_mut(*position) {
                                *slot = Some(spec(
                                    schema,
                                    &format!("in({column})"),
                                    CqlType::List(Box::new(definition.cql_type.clone())),
                                ));
                            }
                        }
                    }
                }
                Relation::Tuple { columns, terms, .. } => {
                    for (column, term) in columns.iter().zip(terms) {
                        let (index, _) = rules::where_column(schema, column)?;
                        self.bind_column(schema, index, term);
                    }
                }
            }
        }
        Ok(())
    }

    fn bind_condition(
        &mut self,
        schema: &TableSchema,
        condition: &Condition,
    ) -> Result<(), CqlError> {
        if !matches!(condition, Condition::None) {
            self.is_conditional = true;
        }
        if let Condition::Columns(conditions) = condition {
            for (column, term) in conditions {
                let (index, definition) = schema.column(column)?;
                if matches!(
                    definition.kind,
                    ColumnKind::PartitionKey(_) | ColumnKind::Clustering(_)
                ) {
                    return Err(CqlError::invalid(format!(
                        "PRIMARY KEY column '{column}' cannot have IF conditions"
                    )));
                }
                self.bind_column(schema, index, term);
            }
        }
        Ok(())
    }
}

/// The bind marker index of each partition key column, when every one is bound by a marker
/// (the driver computes the token from them).
fn partition_key_indexes(schema: &TableSchema, binds: &[Option<ColumnSpec>]) -> Vec<u16> {
    let mut indexes = Vec::new();
    for key_index in &schema.partition_key {
        let name = &schema.columns[*key_index].name;
        match binds
            .iter()
            .position(|bind| bind.as_ref().is_some_and(|spec| &spec.name == name))
        {
            Some(position) => indexes.push(position as u16),
            None => return Vec::new(),
        }
    }
    indexes
}
