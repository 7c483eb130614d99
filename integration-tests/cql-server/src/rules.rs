//! ScyllaDB's rules for WHERE, ORDER BY and key columns, checked when a statement is prepared
//! (as ScyllaDB does): each violation is an Invalid error with ScyllaDB's wording.

use crate::error::CqlError;
use crate::parser::{Operator, Relation};
use crate::schema::{ColumnKind, TableSchema, SYSTEM_KEYSPACES};

pub const FILTERING_MESSAGE: &str = "Cannot execute this query as it might involve data filtering and thus may have unpredictable performance. If you want to execute this query despite the performance unpredictability, use ALLOW FILTERING";

pub(crate) fn where_column<'a>(
    schema: &'a TableSchema,
    column: &str,
) -> Result<(usize, &'a crate::schema::Column), CqlError> {
    schema.column(column).map_err(|_| {
        CqlError::invalid(format!(
            "Undefined name {column} in where clause ('{column} = ?')"
        ))
    })
}

pub(crate) fn check_insert_keys(schema: &TableSchema, columns: &[String]) -> Result<(), CqlError> {
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
pub(crate) fn check_write_where(
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
pub(crate) fn check_select(
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
