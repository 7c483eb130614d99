//! The catalog: keyspaces, table schemas and their in-memory data, the DDL statements, and the
//! system tables the driver reads (regenerated from the catalog after every schema change).

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::error::CqlError;
use crate::parser::{ColumnDefinition, TableName};
use crate::types::{CqlType, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    PartitionKey(usize),
    Clustering(usize),
    Static,
    Regular,
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub cql_type: CqlType,
    pub kind: ColumnKind,
}

/// A table's schema. `columns` is in ScyllaDB's `SELECT *` order: partition key, clustering
/// key, then the other columns by name.
#[derive(Debug, Clone)]
pub struct TableSchema {
    pub keyspace: String,
    pub name: String,
    pub columns: Vec<Column>,
    pub partition_key: Vec<usize>,
    pub clustering_key: Vec<usize>,
    pub clustering_descending: Vec<bool>,
    pub default_time_to_live: i32,
}

impl TableSchema {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|column| column.name == name)
    }

    pub fn column(&self, name: &str) -> Result<(usize, &Column), CqlError> {
        self.column_index(name)
            .map(|index| (index, &self.columns[index]))
            .ok_or_else(|| CqlError::invalid(format!("Undefined column name {name}")))
    }
}

/// A clustering key whose order is the table's declared clustering order (ASC/DESC per column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusteringKey {
    pub values: Vec<Value>,
    pub descending: Arc<Vec<bool>>,
}

impl PartialOrd for ClusteringKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ClusteringKey {
    fn cmp(&self, other: &Self) -> Ordering {
        for (index, (left, right)) in self.values.iter().zip(&other.values).enumerate() {
            let ordering = left.cmp(right);
            let ordering = if self.descending.get(index).copied().unwrap_or(false) {
                ordering.reverse()
            } else {
                ordering
            };
            if ordering != Ordering::Equal {
                return ordering;
            }
        }
        self.values.len().cmp(&other.values.len())
    }
}

/// No tombstone: older than every write.
pub const NO_TOMBSTONE: i64 = i64::MIN;

/// A cell: a value (`None` is a cell tombstone: a null written or a column deleted), the write
/// timestamp (µs) it carries, and, when written with a TTL, the clock time (ms) it expires at.
#[derive(Debug, Clone)]
pub struct Cell {
    pub value: Option<Value>,
    pub expires_at_ms: Option<i64>,
    pub timestamp: i64,
}

impl Cell {
    /// The value, unless it is null, expired, or shadowed by a tombstone at `shadow` or later
    /// (a deletion wins a timestamp tie, as in ScyllaDB).
    pub fn live_value(&self, now_ms: i64, shadow: i64) -> Option<&Value> {
        let expired = self.expires_at_ms.is_some_and(|expiry| expiry <= now_ms);
        if expired || self.timestamp <= shadow {
            return None;
        }
        self.value.as_ref()
    }

    /// Writes `incoming` over this cell unless this one carries a later timestamp.
    pub fn merge_into(cells: &mut HashMap<usize, Cell>, index: usize, incoming: Cell) {
        match cells.get(&index) {
            Some(existing) if existing.timestamp > incoming.timestamp => {}
            _ => {
                cells.insert(index, incoming);
            }
        }
    }
}

/// The row marker INSERT writes: a row exists while its marker or any of its cells lives.
#[derive(Debug, Clone, Copy)]
pub struct Marker {
    pub expires_at_ms: Option<i64>,
    pub timestamp: i64,
}

/// A row: its marker, the cells of its regular columns by column index, and its row
/// tombstone's timestamp.
#[derive(Debug, Clone)]
pub struct Row {
    pub marker: Option<Marker>,
    pub cells: HashMap<usize, Cell>,
    pub deleted_at: i64,
}

impl Default for Row {
    fn default() -> Self {
        Row {
            marker: None,
            cells: HashMap::new(),
            deleted_at: NO_TOMBSTONE,
        }
    }
}

/// A partition: static cells, rows in clustering order, and its tombstones (partition-wide and
/// clustering ranges). Deleted data stays, shadowed, so a late write with an older timestamp
/// cannot resurrect it.
#[derive(Debug, Clone)]
pub struct Partition {
    pub static_cells: HashMap<usize, Cell>,
    pub rows: BTreeMap<ClusteringKey, Row>,
    pub deleted_at: i64,
    pub range_tombstones: Vec<(Vec<crate::read::ClusteringPredicate>, i64)>,
}

impl Default for Partition {
    fn default() -> Self {
        Partition {
            static_cells: HashMap::new(),
            rows: BTreeMap::new(),
            deleted_at: NO_TOMBSTONE,
            range_tombstones: Vec::new(),
        }
    }
}

impl Partition {
    /// The live static cells.
    pub fn live_static(&self, now_ms: i64) -> impl Iterator<Item = (usize, &Value)> {
        self.static_cells.iter().filter_map(move |(index, cell)| {
            cell.live_value(now_ms, self.deleted_at)
                .map(|value| (*index, value))
        })
    }

    pub fn has_live_static(&self, now_ms: i64) -> bool {
        self.live_static(now_ms).next().is_some()
    }

    /// The live cells of a row, or `None` when the row does not exist (no live marker or cell).
    pub fn live_row<'row>(
        &self,
        key: &ClusteringKey,
        row: &'row Row,
        now_ms: i64,
    ) -> Option<Vec<(usize, &'row Value)>> {
        let shadow = self
            .range_tombstones
            .iter()
            .filter(|(predicates, _)| {
                predicates
                    .iter()
                    .all(|predicate| predicate.matches(&key.values))
            })
            .map(|(_, timestamp)| *timestamp)
            .chain([self.deleted_at, row.deleted_at])
            .max()
            .unwrap_or(NO_TOMBSTONE);
        let cells: Vec<(usize, &Value)> = row
            .cells
            .iter()
            .filter_map(|(index, cell)| {
                cell.live_value(now_ms, shadow).map(|value| (*index, value))
            })
            .collect();
        let marker_live = row.marker.is_some_and(|marker| {
            marker.timestamp > shadow && marker.expires_at_ms.is_none_or(|expiry| expiry > now_ms)
        });
        (marker_live || !cells.is_empty()).then_some(cells)
    }
}

#[derive(Debug, Clone)]
pub struct Table {
    pub schema: Arc<TableSchema>,
    pub descending: Arc<Vec<bool>>,
    pub partitions: BTreeMap<Vec<Value>, Partition>,
}

#[derive(Debug, Clone)]
pub struct Keyspace {
    pub replication: Vec<(String, String)>,
    pub durable_writes: bool,
    pub tables: BTreeMap<String, Table>,
}

/// Keyspaces the user cannot write to; their tables are derived.
pub const SYSTEM_KEYSPACES: [&str; 2] = ["system", "system_schema"];

/// What a DDL statement changed, for the SCHEMA_CHANGE result.
#[derive(Debug, Clone)]
pub struct SchemaChange {
    pub change_type: &'static str,
    pub target: &'static str,
    pub keyspace: String,
    pub table: Option<String>,
}

pub struct Catalog {
    pub keyspaces: BTreeMap<String, Keyspace>,
    pub schema_version: [u8; 16],
    pub host_id: [u8; 16],
}

impl Catalog {
    pub fn new() -> Catalog {
        let mut catalog = Catalog {
            keyspaces: BTreeMap::new(),
            schema_version: [0x11; 16],
            host_id: *b"pinhive-cql-srv\x01",
        };
        catalog.host_id[6] = 0x40; // a version-4 UUID
        catalog.host_id[8] = 0x80;
        catalog.create_system_tables();
        catalog.refresh_system_tables();
        catalog
    }

    pub fn table(&self, keyspace: &str, table: &str) -> Result<&Table, CqlError> {
        let keyspace_entry = self
            .keyspaces
            .get(keyspace)
            .ok_or_else(|| CqlError::invalid(format!("Keyspace {keyspace} does not exist")))?;
        keyspace_entry
            .tables
            .get(table)
            .ok_or_else(|| CqlError::invalid(format!("unconfigured table {table}")))
    }

    pub fn table_mut(&mut self, keyspace: &str, table: &str) -> Result<&mut Table, CqlError> {
        let keyspace_entry = self
            .keyspaces
            .get_mut(keyspace)
            .ok_or_else(|| CqlError::invalid(format!("Keyspace {keyspace} does not exist")))?;
        keyspace_entry
            .tables
            .get_mut(table)
            .ok_or_else(|| CqlError::invalid(format!("unconfigured table {table}")))
    }

    fn bump_schema_version(&mut self) {
        for byte in self.schema_version.iter_mut().rev() {
            let (next, overflow) = byte.overflowing_add(1);
            *byte = next;
            if !overflow {
                break;
            }
        }
        self.schema_version[6] = (self.schema_version[6] & 0x0F) | 0x40;
        self.schema_version[8] = (self.schema_version[8] & 0x3F) | 0x80;
    }

    pub fn create_keyspace(
        &mut self,
        name: &str,
        if_not_exists: bool,
        replication: Vec<(String, String)>,
        durable_writes: bool,
    ) -> Result<Option<SchemaChange>, CqlError> {
        if SYSTEM_KEYSPACES.contains(&name) || name.starts_with("system") {
            return Err(CqlError::invalid(format!(
                "Cannot create a keyspace named {name}: system keyspace names are reserved"
            )));
        }
        if self.keyspaces.contains_key(name) {
            if if_not_exists {
                return Ok(None);
            }
            return Err(CqlError::AlreadyExists {
                keyspace: name.to_string(),
                table: String::new(),
            });
        }
        let class = replication
            .iter()
            .find(|(key, _)| key == "class")
            .map(|(_, value)| value.clone())
            .unwrap_or_default();
        let short_class = class.rsplit('.').next().unwrap_or_default().to_string();
        match short_class.as_str() {
            "SimpleStrategy" => {
                if !replication.iter().any(|(key, _)| key == "replication_factor") {
                    return Err(CqlError::invalid(
                        "SimpleStrategy requires a replication_factor strategy option.",
                    ));
                }
            }
            "NetworkTopologyStrategy" | "LocalStrategy" | "EverywhereStrategy" => {}
            _ => {
                return Err(CqlError::invalid(format!(
                    "Unable to find replication strategy class 'org.apache.cassandra.locator.{short_class}'"
                )))
            }
        }
        let replication = replication
            .into_iter()
            .map(|(key, value)| {
                if key == "class" {
                    (key, format!("org.apache.cassandra.locator.{short_class}"))
                } else {
                    (key, value)
                }
            })
            .collect();
        self.keyspaces.insert(
            name.to_string(),
            Keyspace {
                replication,
                durable_writes,
                tables: BTreeMap::new(),
            },
        );
        self.after_schema_change();
        Ok(Some(SchemaChange {
            change_type: "CREATED",
            target: "KEYSPACE",
            keyspace: name.to_string(),
            table: None,
        }))
    }

    #[allow(clippy::too_many_arguments)]
    pub fn create_table(
        &mut self,
        keyspace: &str,
        name: &TableName,
        if_not_exists: bool,
        definitions: &[ColumnDefinition],
        partition_key: &[String],
        clustering_key: &[String],
        clustering_order: &[(String, bool)],
        default_time_to_live: i32,
    ) -> Result<Option<SchemaChange>, CqlError> {
        if SYSTEM_KEYSPACES.contains(&keyspace) {
            return Err(CqlError::invalid(format!(
                "Cannot modify system keyspace {keyspace}"
            )));
        }
        let keyspace_entry = self
            .keyspaces
            .get(keyspace)
            .ok_or_else(|| CqlError::invalid(format!("Keyspace '{keyspace}' doesn't exist")))?;
        if keyspace_entry.tables.contains_key(&name.table) {
            if if_not_exists {
                return Ok(None);
            }
            return Err(CqlError::AlreadyExists {
                keyspace: keyspace.to_string(),
                table: name.table.clone(),
            });
        }
        if partition_key.is_empty() {
            return Err(CqlError::invalid(
                "No PRIMARY KEY specifed (exactly one required)",
            ));
        }
        if default_time_to_live < 0 {
            return Err(CqlError::invalid(
                "default_time_to_live cannot be smaller than 0",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for definition in definitions {
            if !seen.insert(definition.name.clone()) {
                return Err(CqlError::invalid(format!(
                    "Multiple definition of identifier {}",
                    definition.name
                )));
            }
        }
        let definition_of = |column: &str| {
            definitions
                .iter()
                .find(|definition| definition.name == column)
                .ok_or_else(|| {
                    CqlError::invalid(format!(
                        "Unknown definition {column} referenced in PRIMARY KEY"
                    ))
                })
        };
        let mut columns = Vec::new();
        for (position, key) in partition_key.iter().enumerate() {
            let definition = definition_of(key)?;
            if definition.is_static {
                return Err(CqlError::invalid(format!(
                    "Static column {key} cannot be part of the PRIMARY KEY"
                )));
            }
            columns.push(Column {
                name: key.clone(),
                cql_type: CqlType::parse_scalar(&definition.type_name)?,
                kind: ColumnKind::PartitionKey(position),
            });
        }
        for (position, key) in clustering_key.iter().enumerate() {
            let definition = definition_of(key)?;
            if definition.is_static {
                return Err(CqlError::invalid(format!(
                    "Static column {key} cannot be part of the PRIMARY KEY"
                )));
            }
            columns.push(Column {
                name: key.clone(),
                cql_type: CqlType::parse_scalar(&definition.type_name)?,
                kind: ColumnKind::Clustering(position),
            });
        }
        let mut others: Vec<&ColumnDefinition> = definitions
            .iter()
            .filter(|definition| {
                !partition_key.contains(&definition.name)
                    && !clustering_key.contains(&definition.name)
            })
            .collect();
        others.sort_by(|a, b| a.name.cmp(&b.name));
        for definition in others {
            if definition.is_static && clustering_key.is_empty() {
                return Err(CqlError::invalid(format!(
                    "Static column {} cannot be defined on a table without clustering columns",
                    definition.name
                )));
            }
            columns.push(Column {
                name: definition.name.clone(),
                cql_type: CqlType::parse_scalar(&definition.type_name)?,
                kind: if definition.is_static {
                    ColumnKind::Static
                } else {
                    ColumnKind::Regular
                },
            });
        }
        let mut clustering_descending = vec![false; clustering_key.len()];
        for (index, (column, descending)) in clustering_order.iter().enumerate() {
            if clustering_key.get(index) != Some(column) {
                return Err(CqlError::invalid(
                    "The order of columns in the CLUSTERING ORDER directive must be the one of the clustering key",
                ));
            }
            clustering_descending[index] = *descending;
        }
        let schema = TableSchema {
            keyspace: keyspace.to_string(),
            name: name.table.clone(),
            partition_key: (0..partition_key.len()).collect(),
            clustering_key: (partition_key.len()..partition_key.len() + clustering_key.len())
                .collect(),
            clustering_descending: clustering_descending.clone(),
            columns,
            default_time_to_live,
        };
        self.insert_table(schema);
        self.after_schema_change();
        Ok(Some(SchemaChange {
            change_type: "CREATED",
            target: "TABLE",
            keyspace: keyspace.to_string(),
            table: Some(name.table.clone()),
        }))
    }

    pub(crate) fn insert_table(&mut self, schema: TableSchema) {
        let descending = Arc::new(schema.clustering_descending.clone());
        let keyspace = schema.keyspace.clone();
        let name = schema.name.clone();
        if let Some(keyspace_entry) = self.keyspaces.get_mut(&keyspace) {
            keyspace_entry.tables.insert(
                name,
                Table {
                    schema: Arc::new(schema),
                    descending,
                    partitions: BTreeMap::new(),
                },
            );
        }
    }

    pub fn drop_table(
        &mut self,
        keyspace: &str,
        table: &str,
        if_exists: bool,
    ) -> Result<Option<SchemaChange>, CqlError> {
        if SYSTEM_KEYSPACES.contains(&keyspace) {
            return Err(CqlError::invalid(format!(
                "Cannot modify system keyspace {keyspace}"
            )));
        }
        let removed = self
            .keyspaces
            .get_mut(keyspace)
            .and_then(|keyspace_entry| keyspace_entry.tables.remove(table));
        if removed.is_none() {
            if if_exists {
                return Ok(None);
            }
            return Err(CqlError::invalid(format!(
                "Cannot drop non existing table '{table}' in keyspace '{keyspace}'."
            )));
        }
        self.after_schema_change();
        Ok(Some(SchemaChange {
            change_type: "DROPPED",
            target: "TABLE",
            keyspace: keyspace.to_string(),
            table: Some(table.to_string()),
        }))
    }

    pub fn drop_keyspace(
        &mut self,
        keyspace: &str,
        if_exists: bool,
    ) -> Result<Option<SchemaChange>, CqlError> {
        if SYSTEM_KEYSPACES.contains(&keyspace) {
            return Err(CqlError::invalid(format!(
                "Cannot modify system keyspace {keyspace}"
            )));
        }
        if self.keyspaces.remove(keyspace).is_none() {
            if if_exists {
                return Ok(None);
            }
            return Err(CqlError::invalid(format!(
                "Cannot drop non existing keyspace '{keyspace}'."
            )));
        }
        self.after_schema_change();
        Ok(Some(SchemaChange {
            change_type: "DROPPED",
            target: "KEYSPACE",
            keyspace: keyspace.to_string(),
            table: None,
        }))
    }

    fn after_schema_change(&mut self) {
        self.bump_schema_version();
        self.refresh_system_tables();
    }
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog::new()
    }
}
