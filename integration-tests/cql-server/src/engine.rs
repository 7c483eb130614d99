//! The engine: prepares statements against the catalog (bind and result metadata, ScyllaDB's
//! restriction rules checked at prepare time as ScyllaDB does), and executes them.

use std::sync::Arc;

use crate::error::CqlError;
use crate::parser::{
    self, Condition, InTerms, Operator, Relation, Selection, Statement, TableName, Term,
};
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

pub const FILTERING_MESSAGE: &str = "Cannot execute this query as it might involve data filtering and thus may have unpredictable performance. If you want to execute this query despite the performance unpredictability, use ALLOW FILTERING";

#[derive(Default)]
pub struct Engine {
    pub catalog: Catalog,
    /// Added to the wall clock: tests advance it to expire TTLs.
    pub clock_offset_ms: i64,
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
            } => {
                let schema = self.schema_for(table, session_keyspace)?;
                analysis.table = Some((schema.keyspace.clone(), schema.name.clone()));
                analysis.is_conditional = *if_not_exists;
                for (column, term) in columns.iter().zip(values) {
                    let (index, _) = schema.column(column)?;
                    analysis.bind_column(&schema, index, term);
                }
                check_insert_keys(&schema, columns)?;
                if let Some(ttl) = ttl {
                    analysis.bind_special(&schema, ttl, "[ttl]", CqlType::Int);
                }
            }
            Statement::Update {
                table,
                ttl,
                assignments,
                relations,
                condition,
            } => {
                let schema = self.schema_for(table, session_keyspace)?;
                analysis.table = Some((schema.keyspace.clone(), schema.name.clone()));
                if let Some(ttl) = ttl {
                    analysis.bind_special(&schema, ttl, "[ttl]", CqlType::Int);
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
                check_write_where(&schema, relations, !only_static, false)?;
            }
            Statement::Delete {
                table,
                columns,
                relations,
                condition,
            } => {
                let schema = self.schema_for(table, session_keyspace)?;
                analysis.table = Some((schema.keyspace.clone(), schema.name.clone()));
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
                check_write_where(
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
                check_select(&schema, relations, order_by)?;
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
                crate::write::execute_single(self, prepared, binds)
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
                    let (index, _) = where_column(schema, column)?;
                    self.bind_column(schema, index, term);
                }
                Relation::In { column, terms } => {
                    let (index, definition) = where_column(schema, column)?;
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
                        let (index, _) = where_column(schema, column)?;
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

fn where_column<'a>(
    schema: &'a TableSchema,
    column: &str,
) -> Result<(usize, &'a crate::schema::Column), CqlError> {
    schema.column(column).map_err(|_| {
        CqlError::invalid(format!(
            "Undefined name {column} in where clause ('{column} = ?')"
        ))
    })
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

fn check_insert_keys(schema: &TableSchema, columns: &[String]) -> Result<(), CqlError> {
    if SYSTEM_KEYSPACES.contains(&schema.keyspace.as_str()) {
        return Err(CqlError::invalid(format!(
            "Cannot modify system keyspace {}",
            schema.keyspace
        )));
    }
    for index in schema.partition_key.iter().chain(&schema.clustering_key) {
        let name = &schema.columns[*index].name;
        if !columns.contains(name) {
            return Err(CqlError::invalid(format!(
                "Missing mandatory PRIMARY KEY part {name}"
            )));
        }
    }
    Ok(())
}

/// WHERE of UPDATE and DELETE: `=` on the whole partition key; `=` on the whole clustering key
/// when `full_clustering`, otherwise (DELETE of whole rows) a prefix and at most one range.
fn check_write_where(
    schema: &TableSchema,
    relations: &[Relation],
    full_clustering: bool,
    allow_range: bool,
) -> Result<(), CqlError> {
    if SYSTEM_KEYSPACES.contains(&schema.keyspace.as_str()) {
        return Err(CqlError::invalid(format!(
            "Cannot modify system keyspace {}",
            schema.keyspace
        )));
    }
    let mut equal_columns = Vec::new();
    let mut range_columns = Vec::new();
    for relation in relations {
        match relation {
            Relation::Single { column, operator, .. } => {
                let (index, definition) = where_column(schema, column)?;
                if matches!(definition.kind, ColumnKind::Regular | ColumnKind::Static) {
                    return Err(CqlError::invalid(format!("Non PRIMARY KEY columns found in where clause: {column} ")));
                }
                match operator {
                    Operator::Eq => equal_columns.push(index),
                    Operator::NotEq => return Err(CqlError::invalid("Unsupported \"!=\" relation")),
                    _ => {
                        if !allow_range || matches!(definition.kind, ColumnKind::PartitionKey(_)) {
                            return Err(CqlError::invalid(format!(
                                "Invalid operator {operator:?} for PRIMARY KEY part {column}"
                            )));
                        }
                        range_columns.push(index);
                    }
                }
            }
            Relation::In { column, .. } => {
                return Err(CqlError::invalid(format!(
                    "IN restrictions in UPDATE/DELETE (on {column}) are not supported by this test server"
                )))
            }
            Relation::Tuple { .. } => {
                return Err(CqlError::invalid(
                    "Multi-column relations in UPDATE/DELETE are not supported by this test server",
                ))
            }
        }
    }
    for index in &schema.partition_key {
        if !equal_columns.contains(index) {
            return Err(CqlError::invalid(format!(
                "Some partition key parts are missing: {}",
                schema.columns[*index].name
            )));
        }
    }
    let mut range_seen = false;
    for (position, index) in schema.clustering_key.iter().enumerate() {
        let name = &schema.columns[*index].name;
        if equal_columns.contains(index) {
            if range_seen {
                return Err(CqlError::invalid(format!(
                    "Clustering column \"{name}\" cannot be restricted (preceding column is restricted by a non-EQ relation)"
                )));
            }
            continue;
        }
        if full_clustering {
            return Err(CqlError::invalid(format!(
                "Missing mandatory PRIMARY KEY part {name}"
            )));
        }
        if range_columns.contains(index) && !range_seen {
            range_seen = true;
            continue;
        }
        // Unrestricted: nothing after it may be restricted.
        for later in &schema.clustering_key[position + 1..] {
            if equal_columns.contains(later) || range_columns.contains(later) {
                return Err(CqlError::invalid(format!(
                    "PRIMARY KEY column \"{}\" cannot be restricted as preceding column \"{name}\" is not restricted",
                    schema.columns[*later].name
                )));
            }
        }
        break;
    }
    Ok(())
}

/// ScyllaDB's rules for a SELECT without ALLOW FILTERING.
fn check_select(
    schema: &TableSchema,
    relations: &[Relation],
    order_by: &[(String, bool)],
) -> Result<(), CqlError> {
    let mut partition_restricted = Vec::new();
    let mut partition_in = false;
    let mut clustering_equal = Vec::new();
    let mut clustering_range = Vec::new();
    let mut tuple_relations = 0;
    for relation in relations {
        match relation {
            Relation::Single { column, .. } | Relation::In { column, .. } => {
                let (index, definition) = where_column(schema, column)?;
                let operator = match relation {
                    Relation::Single { operator, .. } => *operator,
                    _ => Operator::Eq,
                };
                if operator == Operator::NotEq {
                    return Err(CqlError::invalid("Unsupported \"!=\" relation"));
                }
                match definition.kind {
                    ColumnKind::Regular | ColumnKind::Static => {
                        return Err(CqlError::invalid(FILTERING_MESSAGE))
                    }
                    ColumnKind::PartitionKey(_) => {
                        if operator != Operator::Eq {
                            return Err(CqlError::invalid(
                                "Only EQ and IN relation are supported on the partition key (unless you use the token() function)",
                            ));
                        }
                        if matches!(relation, Relation::In { .. }) {
                            partition_in = true;
                        }
                        partition_restricted.push(index);
                    }
                    ColumnKind::Clustering(_) => {
                        if matches!(relation, Relation::In { .. }) {
                            return Err(CqlError::invalid(format!(
                                "IN on clustering column {column} is not supported by this test server"
                            )));
                        }
                        if operator == Operator::Eq {
                            clustering_equal.push(index);
                        } else {
                            clustering_range.push(index);
                        }
                    }
                }
            }
            Relation::Tuple {
                columns, operator, ..
            } => {
                tuple_relations += 1;
                if *operator == Operator::NotEq {
                    return Err(CqlError::invalid("Unsupported \"!=\" relation"));
                }
                for (position, column) in columns.iter().enumerate() {
                    let (index, definition) = where_column(schema, column)?;
                    if definition.kind != ColumnKind::Clustering(position) {
                        return Err(CqlError::invalid(format!(
                            "Multi-column relations can only be applied to clustering columns in their declared order, starting with the first: {column} is misplaced"
                        )));
                    }
                    let _ = index;
                }
            }
        }
    }
    if tuple_relations > 0 && (!clustering_equal.is_empty() || !clustering_range.is_empty()) {
        return Err(CqlError::invalid(
            "Mixing single column relations and multi column relations on clustering columns is not allowed",
        ));
    }
    if tuple_relations > 2 {
        return Err(CqlError::invalid(
            "More than two multi-column slice restrictions",
        ));
    }
    let clustering_restricted =
        !clustering_equal.is_empty() || !clustering_range.is_empty() || tuple_relations > 0;
    let whole_partition_key = schema
        .partition_key
        .iter()
        .all(|index| partition_restricted.contains(index));
    if !partition_restricted.is_empty() && !whole_partition_key {
        return Err(CqlError::invalid(FILTERING_MESSAGE));
    }
    if partition_restricted.is_empty() && clustering_restricted {
        return Err(CqlError::invalid(FILTERING_MESSAGE));
    }
    // Clustering columns: an EQ prefix, then at most one column with a range.
    let mut range_seen: Option<&str> = None;
    let mut gap: Option<&str> = None;
    for index in &schema.clustering_key {
        let name = schema.columns[*index].name.as_str();
        let equal = clustering_equal.contains(index);
        let range = clustering_range.contains(index);
        if !(equal || range) {
            gap.get_or_insert(name);
            continue;
        }
        if let Some(previous) = gap {
            return Err(CqlError::invalid(format!(
                "PRIMARY KEY column \"{name}\" cannot be restricted as preceding column \"{previous}\" is not restricted"
            )));
        }
        if let Some(previous) = range_seen {
            return Err(CqlError::invalid(format!(
                "Clustering column \"{name}\" cannot be restricted (preceding column \"{previous}\" is restricted by a non-EQ relation)"
            )));
        }
        if equal && range {
            return Err(CqlError::invalid(format!(
                "{name} cannot be restricted by both an equality and an inequality relation"
            )));
        }
        if range {
            range_seen = Some(name);
        }
    }
    if !order_by.is_empty() {
        if !whole_partition_key {
            return Err(CqlError::invalid("ORDER BY is only supported when the partition key is restricted by an EQ or an IN."));
        }
        if partition_in {
            return Err(CqlError::invalid(
                "Cannot page queries with both ORDER BY and a IN restriction on the partition key; you must either remove the ORDER BY or the IN and sort client side, or disable paging for this query",
            ));
        }
        let mut reversed: Option<bool> = None;
        for (position, (column, descending)) in order_by.iter().enumerate() {
            let (_, definition) = schema
                .column(column)
                .map_err(|_| CqlError::invalid(format!("Order by on unknown column {column}")))?;
            let ColumnKind::Clustering(clustering_position) = definition.kind else {
                return Err(CqlError::invalid(format!("Order by is currently only supported on the clustered columns of the PRIMARY KEY, got {column}")));
            };
            if clustering_position != position {
                return Err(CqlError::invalid(
                    "Order by currently only supports the ordering of columns following their declared order in the PRIMARY KEY",
                ));
            }
            let this_reversed = *descending != schema.clustering_descending[clustering_position];
            if *reversed.get_or_insert(this_reversed) != this_reversed {
                return Err(CqlError::invalid("Unsupported order by relation"));
            }
        }
    }
    Ok(())
}
