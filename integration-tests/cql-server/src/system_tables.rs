//! The system tables the driver reads (`system.local`, `system.peers`, `system_schema.*`), as
//! ordinary tables of the catalog rewritten from it after every schema change.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};

use crate::schema::{
    Catalog, Cell, ClusteringKey, Column, ColumnKind, Keyspace, Row, TableSchema, SYSTEM_KEYSPACES,
};
use crate::types::{CqlType, Value};

/// A system table: keyspace, name, columns (partition key first, then clustering), and the
/// number of partition key and clustering columns.
type SystemTable = (
    &'static str,
    &'static str,
    Vec<(&'static str, CqlType)>,
    usize,
    usize,
);

impl Catalog {
    pub(crate) fn create_system_tables(&mut self) {
        use CqlType::*;
        let local_strategy = vec![(
            "class".to_string(),
            "org.apache.cassandra.locator.LocalStrategy".to_string(),
        )];
        for keyspace in SYSTEM_KEYSPACES {
            self.keyspaces.insert(
                keyspace.to_string(),
                Keyspace {
                    replication: local_strategy.clone(),
                    durable_writes: true,
                    tables: BTreeMap::new(),
                },
            );
        }
        let text_set = || Set(Box::new(Text));
        let text_list = || List(Box::new(Text));
        let text_map = || Map(Box::new(Text), Box::new(Text));
        let definitions: Vec<SystemTable> = vec![
            (
                "system",
                "local",
                vec![
                    ("key", Text),
                    ("bootstrapped", Text),
                    ("broadcast_address", Inet),
                    ("cluster_name", Text),
                    ("cql_version", Text),
                    ("data_center", Text),
                    ("host_id", Uuid),
                    ("listen_address", Inet),
                    ("native_protocol_version", Text),
                    ("partitioner", Text),
                    ("rack", Text),
                    ("release_version", Text),
                    ("rpc_address", Inet),
                    ("schema_version", Uuid),
                    ("supported_features", Text),
                    ("tokens", text_set()),
                ],
                1,
                0,
            ),
            (
                "system",
                "peers",
                vec![
                    ("peer", Inet),
                    ("data_center", Text),
                    ("host_id", Uuid),
                    ("preferred_ip", Inet),
                    ("rack", Text),
                    ("release_version", Text),
                    ("rpc_address", Inet),
                    ("schema_version", Uuid),
                    ("supported_features", Text),
                    ("tokens", text_set()),
                ],
                1,
                0,
            ),
            (
                "system_schema",
                "keyspaces",
                vec![
                    ("keyspace_name", Text),
                    ("durable_writes", Boolean),
                    ("replication", text_map()),
                ],
                1,
                0,
            ),
            (
                "system_schema",
                "tables",
                vec![
                    ("keyspace_name", Text),
                    ("table_name", Text),
                    ("default_time_to_live", Int),
                    ("id", Uuid),
                ],
                1,
                1,
            ),
            (
                "system_schema",
                "columns",
                vec![
                    ("keyspace_name", Text),
                    ("table_name", Text),
                    ("column_name", Text),
                    ("clustering_order", Text),
                    ("column_name_bytes", Blob),
                    ("kind", Text),
                    ("position", Int),
                    ("type", Text),
                ],
                1,
                2,
            ),
            (
                "system_schema",
                "scylla_tables",
                vec![
                    ("keyspace_name", Text),
                    ("table_name", Text),
                    ("partitioner", Text),
                ],
                1,
                1,
            ),
            (
                "system_schema",
                "types",
                vec![
                    ("keyspace_name", Text),
                    ("type_name", Text),
                    ("field_names", text_list()),
                    ("field_types", text_list()),
                ],
                1,
                1,
            ),
            (
                "system_schema",
                "views",
                vec![
                    ("keyspace_name", Text),
                    ("view_name", Text),
                    ("base_table_name", Text),
                ],
                1,
                1,
            ),
            (
                "system_schema",
                "indexes",
                vec![
                    ("keyspace_name", Text),
                    ("table_name", Text),
                    ("index_name", Text),
                    ("kind", Text),
                ],
                1,
                2,
            ),
            (
                "system_schema",
                "functions",
                vec![
                    ("keyspace_name", Text),
                    ("function_name", Text),
                    ("body", Text),
                ],
                1,
                1,
            ),
            (
                "system_schema",
                "aggregates",
                vec![
                    ("keyspace_name", Text),
                    ("aggregate_name", Text),
                    ("state_func", Text),
                ],
                1,
                1,
            ),
        ];
        for (keyspace, table, columns, partition_count, clustering_count) in definitions {
            let mut schema_columns: Vec<Column> = columns
                .into_iter()
                .enumerate()
                .map(|(index, (name, cql_type))| Column {
                    name: name.to_string(),
                    cql_type,
                    kind: if index < partition_count {
                        ColumnKind::PartitionKey(index)
                    } else if index < partition_count + clustering_count {
                        ColumnKind::Clustering(index - partition_count)
                    } else {
                        ColumnKind::Regular
                    },
                })
                .collect();
            schema_columns[partition_count + clustering_count..]
                .sort_by(|a, b| a.name.cmp(&b.name));
            self.insert_table(TableSchema {
                keyspace: keyspace.to_string(),
                name: table.to_string(),
                columns: schema_columns,
                partition_key: (0..partition_count).collect(),
                clustering_key: (partition_count..partition_count + clustering_count).collect(),
                clustering_descending: vec![false; clustering_count],
                default_time_to_live: 0,
            });
        }
    }

    /// Rewrites the system tables from the catalog: the node row, and one row per user
    /// keyspace, table and column.
    pub(crate) fn refresh_system_tables(&mut self) {
        let loopback = Value::Inet(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let text = |value: &str| Some(Value::Text(value.to_string()));
        let tokens: Vec<Value> = [
            -6_917_529_027_641_081_856i64,
            -3_458_764_513_820_540_928,
            0,
            3_458_764_513_820_540_928,
            6_917_529_027_641_081_856,
        ]
        .iter()
        .map(|token| Value::Text(token.to_string()))
        .collect();
        let mut tokens = tokens;
        tokens.sort();
        let local_row: Vec<(&str, Option<Value>)> = vec![
            ("key", text("local")),
            ("bootstrapped", text("COMPLETED")),
            ("broadcast_address", Some(loopback.clone())),
            ("cluster_name", text("pinhive-cql-test-server")),
            ("cql_version", text("3.3.1")),
            ("data_center", text("datacenter1")),
            ("host_id", Some(Value::Uuid(self.host_id))),
            ("listen_address", Some(loopback.clone())),
            ("native_protocol_version", text("4")),
            (
                "partitioner",
                text("org.apache.cassandra.dht.Murmur3Partitioner"),
            ),
            ("rack", text("rack1")),
            ("release_version", text("3.0.8")),
            ("rpc_address", Some(loopback)),
            ("schema_version", Some(Value::Uuid(self.schema_version))),
            ("supported_features", text("")),
            ("tokens", Some(Value::Set(tokens))),
        ];
        let mut keyspace_rows = Vec::new();
        let mut table_rows = Vec::new();
        let mut scylla_table_rows = Vec::new();
        let mut column_rows = Vec::new();
        for (keyspace_name, keyspace) in &self.keyspaces {
            if SYSTEM_KEYSPACES.contains(&keyspace_name.as_str()) {
                continue;
            }
            let mut replication: Vec<(Value, Value)> = keyspace
                .replication
                .iter()
                .map(|(key, value)| (Value::Text(key.clone()), Value::Text(value.clone())))
                .collect();
            replication.sort();
            keyspace_rows.push(vec![
                ("keyspace_name", text(keyspace_name)),
                (
                    "durable_writes",
                    Some(Value::Boolean(keyspace.durable_writes)),
                ),
                ("replication", Some(Value::Map(replication))),
            ]);
            for (table_name, table) in &keyspace.tables {
                let mut id = [0u8; 16];
                for (index, byte) in format!("{keyspace_name}.{table_name}").bytes().enumerate() {
                    id[index % 16] ^= byte;
                }
                table_rows.push(vec![
                    ("keyspace_name", text(keyspace_name)),
                    ("table_name", text(table_name)),
                    (
                        "default_time_to_live",
                        Some(Value::Int(table.schema.default_time_to_live)),
                    ),
                    ("id", Some(Value::Uuid(id))),
                ]);
                scylla_table_rows.push(vec![
                    ("keyspace_name", text(keyspace_name)),
                    ("table_name", text(table_name)),
                    ("partitioner", None),
                ]);
                for column in &table.schema.columns {
                    let (kind, position, clustering_order) = match column.kind {
                        ColumnKind::PartitionKey(position) => {
                            ("partition_key", position as i32, "none")
                        }
                        ColumnKind::Clustering(position) => (
                            "clustering",
                            position as i32,
                            if table.schema.clustering_descending[position] {
                                "desc"
                            } else {
                                "asc"
                            },
                        ),
                        ColumnKind::Static => ("static", -1, "none"),
                        ColumnKind::Regular => ("regular", -1, "none"),
                    };
                    column_rows.push(vec![
                        ("keyspace_name", text(keyspace_name)),
                        ("table_name", text(table_name)),
                        ("column_name", text(&column.name)),
                        ("clustering_order", text(clustering_order)),
                        (
                            "column_name_bytes",
                            Some(Value::Blob(column.name.as_bytes().to_vec())),
                        ),
                        ("kind", text(kind)),
                        ("position", Some(Value::Int(position))),
                        ("type", Some(Value::Text(column.cql_type.cql_name()))),
                    ]);
                }
            }
        }
        self.replace_system_rows("system", "local", vec![local_row]);
        self.replace_system_rows("system_schema", "keyspaces", keyspace_rows);
        self.replace_system_rows("system_schema", "tables", table_rows);
        self.replace_system_rows("system_schema", "scylla_tables", scylla_table_rows);
        self.replace_system_rows("system_schema", "columns", column_rows);
    }

    fn replace_system_rows(
        &mut self,
        keyspace: &str,
        table: &str,
        rows: Vec<Vec<(&str, Option<Value>)>>,
    ) {
        let Ok(table) = self.table_mut(keyspace, table) else {
            return;
        };
        table.partitions.clear();
        let schema = table.schema.clone();
        for row in rows {
            let value_of = |index: usize| {
                row.iter()
                    .find(|(name, _)| *name == schema.columns[index].name)
                    .and_then(|(_, value)| value.clone())
            };
            let partition_key: Vec<Value> = schema
                .partition_key
                .iter()
                .filter_map(|index| value_of(*index))
                .collect();
            let clustering = ClusteringKey {
                values: schema
                    .clustering_key
                    .iter()
                    .filter_map(|index| value_of(*index))
                    .collect(),
                descending: table.descending.clone(),
            };
            let mut stored = Row {
                marker: Some(crate::schema::Marker {
                    expires_at_ms: None,
                    timestamp: 0,
                }),
                deleted_at: crate::schema::NO_TOMBSTONE,
                cells: HashMap::new(),
            };
            for index in 0..schema.columns.len() {
                if matches!(schema.columns[index].kind, ColumnKind::Regular) {
                    if let Some(value) = value_of(index) {
                        stored.cells.insert(
                            index,
                            Cell {
                                value: Some(value),
                                timestamp: 0,
                                expires_at_ms: None,
                            },
                        );
                    }
                }
            }
            table
                .partitions
                .entry(partition_key)
                .or_default()
                .rows
                .insert(clustering, stored);
        }
    }
}
