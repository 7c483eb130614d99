//! Turning terms (literals and bind markers) into typed values.

use crate::engine::Bound;
use crate::error::CqlError;
use crate::parser::Term;
use crate::types::{CqlType, Value};

/// Resolves a term against the type of the column it is compared with or assigned to.
pub fn resolve(term: &Term, cql_type: &CqlType, binds: &[Bound]) -> Result<Bound, CqlError> {
    let invalid_literal = |text: &str| {
        CqlError::invalid(format!(
            "Invalid literal {text} for a {} value",
            cql_type.cql_name()
        ))
    };
    Ok(match term {
        Term::Bind(position) => binds
            .get(*position)
            .cloned()
            .ok_or_else(|| CqlError::invalid("missing bound value"))?,
        Term::Null => Bound::Null,
        Term::Str(text) => match cql_type {
            CqlType::Text => Bound::Value(Value::Text(text.clone())),
            CqlType::Ascii if text.is_ascii() => Bound::Value(Value::Text(text.clone())),
            CqlType::Inet => Bound::Value(Value::Inet(
                text.parse().map_err(|_| invalid_literal(text))?,
            )),
            _ => return Err(invalid_literal(text)),
        },
        Term::Number(text) => Bound::Value(match cql_type {
            CqlType::BigInt => Value::BigInt(text.parse().map_err(|_| invalid_literal(text))?),
            CqlType::Timestamp => {
                Value::Timestamp(text.parse().map_err(|_| invalid_literal(text))?)
            }
            CqlType::Int => Value::Int(text.parse().map_err(|_| invalid_literal(text))?),
            CqlType::SmallInt => Value::SmallInt(text.parse().map_err(|_| invalid_literal(text))?),
            CqlType::TinyInt => Value::TinyInt(text.parse().map_err(|_| invalid_literal(text))?),
            CqlType::Double => Value::Double(text.parse().map_err(|_| invalid_literal(text))?),
            _ => return Err(invalid_literal(text)),
        }),
        Term::Hex(bytes) => match cql_type {
            CqlType::Blob => Bound::Value(Value::Blob(bytes.clone())),
            _ => return Err(invalid_literal("0x…")),
        },
        Term::Uuid(text) => {
            let digits: String = text.chars().filter(|c| *c != '-').collect();
            let mut bytes = [0u8; 16];
            for (index, byte) in bytes.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&digits[index * 2..index * 2 + 2], 16)
                    .map_err(|_| invalid_literal(text))?;
            }
            match cql_type {
                CqlType::Uuid => Bound::Value(Value::Uuid(bytes)),
                CqlType::TimeUuid => Bound::Value(Value::decode(cql_type, &bytes)?),
                _ => return Err(invalid_literal(text)),
            }
        }
        Term::Boolean(value) => match cql_type {
            CqlType::Boolean => Bound::Value(Value::Boolean(*value)),
            _ => return Err(invalid_literal(&value.to_string())),
        },
        Term::List(elements) => match cql_type {
            CqlType::List(element_type) | CqlType::Set(element_type) => {
                let mut values = Vec::new();
                for element in elements {
                    match resolve(element, element_type, binds)? {
                        Bound::Value(value) => values.push(value),
                        _ => {
                            return Err(CqlError::invalid(
                                "null is not supported inside collections",
                            ))
                        }
                    }
                }
                Bound::Value(Value::List(values))
            }
            _ => return Err(invalid_literal("[…]")),
        },
        Term::Map(_) => return Err(invalid_literal("{…}")),
    })
}

/// A value that must be present: key columns and conditions.
pub fn resolve_key(
    term: &Term,
    cql_type: &CqlType,
    binds: &[Bound],
    column: &str,
) -> Result<Value, CqlError> {
    match resolve(term, cql_type, binds)? {
        Bound::Value(value) => Ok(value),
        Bound::Null => Err(CqlError::invalid(format!(
            "Invalid null value in condition for column {column}"
        ))),
        Bound::Unset => Err(CqlError::invalid(format!(
            "Invalid unset value for column {column}"
        ))),
    }
}

/// Decodes the raw values of a QUERY/EXECUTE/BATCH by the bind markers' types.
pub fn decode_binds(
    specs: &[crate::engine::ColumnSpec],
    raw: &[scylla_cql::frame::types::RawValue<'_>],
) -> Result<Vec<Bound>, CqlError> {
    use scylla_cql::frame::types::RawValue;
    if specs.len() != raw.len() {
        return Err(CqlError::invalid(format!(
            "There were {} markers(?) in CQL but {} bound variables",
            specs.len(),
            raw.len()
        )));
    }
    specs
        .iter()
        .zip(raw)
        .map(|(spec, value)| match value {
            RawValue::Null => Ok(Bound::Null),
            RawValue::Unset => Ok(Bound::Unset),
            RawValue::Value(bytes) => Value::decode(&spec.cql_type, bytes)
                .map(Bound::Value)
                .map_err(|error| {
                    CqlError::invalid(format!(
                        "Exception while binding column {}: {error}",
                        spec.name
                    ))
                }),
        })
        .collect()
}
