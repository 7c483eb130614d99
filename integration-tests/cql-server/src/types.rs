//! CQL types and values: the native-protocol byte encoding, the type options written into
//! result metadata, the textual names written into `system_schema.columns`, and the ordering
//! ScyllaDB uses for clustering keys.

use std::cmp::Ordering;
use std::net::IpAddr;

use crate::error::CqlError;

/// The column types the engine stores. Collections exist for the system tables and for
/// `IN ?` bind markers; user tables may declare only the scalar types.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CqlType {
    Ascii,
    Text,
    Blob,
    BigInt,
    Int,
    SmallInt,
    TinyInt,
    Boolean,
    Double,
    Timestamp,
    Uuid,
    TimeUuid,
    Inet,
    List(Box<CqlType>),
    Set(Box<CqlType>),
    Map(Box<CqlType>, Box<CqlType>),
}

impl CqlType {
    /// Parses a type as written in CREATE TABLE (scalar types only: that is what pinhive uses).
    pub fn parse_scalar(name: &str) -> Result<CqlType, CqlError> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "ascii" => CqlType::Ascii,
            "text" | "varchar" => CqlType::Text,
            "blob" => CqlType::Blob,
            "bigint" => CqlType::BigInt,
            "int" => CqlType::Int,
            "smallint" => CqlType::SmallInt,
            "tinyint" => CqlType::TinyInt,
            "boolean" => CqlType::Boolean,
            "double" => CqlType::Double,
            "timestamp" => CqlType::Timestamp,
            "uuid" => CqlType::Uuid,
            "timeuuid" => CqlType::TimeUuid,
            "inet" => CqlType::Inet,
            other => {
                return Err(CqlError::invalid(format!(
                    "Unknown type {other} (this test server supports text, ascii, blob, bigint, int, smallint, tinyint, boolean, double, timestamp, uuid, timeuuid, inet)"
                )))
            }
        })
    }

    /// The name ScyllaDB writes into `system_schema.columns.type`.
    pub fn cql_name(&self) -> String {
        match self {
            CqlType::Ascii => "ascii".into(),
            CqlType::Text => "text".into(),
            CqlType::Blob => "blob".into(),
            CqlType::BigInt => "bigint".into(),
            CqlType::Int => "int".into(),
            CqlType::SmallInt => "smallint".into(),
            CqlType::TinyInt => "tinyint".into(),
            CqlType::Boolean => "boolean".into(),
            CqlType::Double => "double".into(),
            CqlType::Timestamp => "timestamp".into(),
            CqlType::Uuid => "uuid".into(),
            CqlType::TimeUuid => "timeuuid".into(),
            CqlType::Inet => "inet".into(),
            CqlType::List(element) => format!("list<{}>", element.cql_name()),
            CqlType::Set(element) => format!("set<{}>", element.cql_name()),
            CqlType::Map(key, value) => format!("map<{}, {}>", key.cql_name(), value.cql_name()),
        }
    }

    /// Writes the `[option]` of the protocol spec (section 4.2.5.2).
    pub fn write_option(&self, out: &mut Vec<u8>) {
        let id: u16 = match self {
            CqlType::Ascii => 0x0001,
            CqlType::BigInt => 0x0002,
            CqlType::Blob => 0x0003,
            CqlType::Boolean => 0x0004,
            CqlType::Double => 0x0007,
            CqlType::Int => 0x0009,
            CqlType::Timestamp => 0x000B,
            CqlType::Uuid => 0x000C,
            CqlType::Text => 0x000D,
            CqlType::TimeUuid => 0x000F,
            CqlType::Inet => 0x0010,
            CqlType::SmallInt => 0x0013,
            CqlType::TinyInt => 0x0014,
            CqlType::List(_) => 0x0020,
            CqlType::Map(_, _) => 0x0021,
            CqlType::Set(_) => 0x0022,
        };
        out.extend_from_slice(&id.to_be_bytes());
        match self {
            CqlType::List(element) | CqlType::Set(element) => element.write_option(out),
            CqlType::Map(key, value) => {
                key.write_option(out);
                value.write_option(out);
            }
            _ => {}
        }
    }
}

/// A non-null value. Null is `Option::None` wherever a value may be absent.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Blob(Vec<u8>),
    BigInt(i64),
    Int(i32),
    SmallInt(i16),
    TinyInt(i8),
    Boolean(bool),
    Double(f64),
    Timestamp(i64),
    Uuid([u8; 16]),
    TimeUuid([u8; 16]),
    Inet(IpAddr),
    List(Vec<Value>),
    Set(Vec<Value>),
    Map(Vec<(Value, Value)>),
}

impl Eq for Value {}

impl std::hash::Hash for Value {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut bytes = Vec::new();
        self.encode(&mut bytes);
        bytes.hash(state);
    }
}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Value {
    /// ScyllaDB's comparators for the scalar types: numbers numerically, text and blobs
    /// bytewise, timeuuids by their timestamp first. Values of different types never meet in
    /// one column; they are ordered by variant only to make the order total.
    fn cmp(&self, other: &Self) -> Ordering {
        use Value::*;
        match (self, other) {
            (Text(a), Text(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Blob(a), Blob(b)) => a.cmp(b),
            (BigInt(a), BigInt(b)) | (Timestamp(a), Timestamp(b)) => a.cmp(b),
            (Int(a), Int(b)) => a.cmp(b),
            (SmallInt(a), SmallInt(b)) => a.cmp(b),
            (TinyInt(a), TinyInt(b)) => a.cmp(b),
            (Boolean(a), Boolean(b)) => a.cmp(b),
            (Double(a), Double(b)) => a.total_cmp(b),
            (Uuid(a), Uuid(b)) => a.cmp(b),
            (TimeUuid(a), TimeUuid(b)) => timeuuid_timestamp(a)
                .cmp(&timeuuid_timestamp(b))
                .then_with(|| a.cmp(b)),
            (Inet(a), Inet(b)) => a.cmp(b),
            (List(a), List(b)) | (Set(a), Set(b)) => a.cmp(b),
            (Map(a), Map(b)) => a.cmp(b),
            _ => self.variant_rank().cmp(&other.variant_rank()),
        }
    }
}

fn timeuuid_timestamp(bytes: &[u8; 16]) -> u64 {
    let time_low = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as u64;
    let time_mid = u16::from_be_bytes([bytes[4], bytes[5]]) as u64;
    let time_high = (u16::from_be_bytes([bytes[6], bytes[7]]) & 0x0FFF) as u64;
    (time_high << 48) | (time_mid << 32) | time_low
}

impl Value {
    fn variant_rank(&self) -> u8 {
        match self {
            Value::Text(_) => 0,
            Value::Blob(_) => 1,
            Value::BigInt(_) => 2,
            Value::Int(_) => 3,
            Value::SmallInt(_) => 4,
            Value::TinyInt(_) => 5,
            Value::Boolean(_) => 6,
            Value::Double(_) => 7,
            Value::Timestamp(_) => 8,
            Value::Uuid(_) => 9,
            Value::TimeUuid(_) => 10,
            Value::Inet(_) => 11,
            Value::List(_) => 12,
            Value::Set(_) => 13,
            Value::Map(_) => 14,
        }
    }

    /// The protocol encoding of the value (the `[bytes]` body, without its length).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Text(text) => out.extend_from_slice(text.as_bytes()),
            Value::Blob(bytes) => out.extend_from_slice(bytes),
            Value::BigInt(v) | Value::Timestamp(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Int(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::SmallInt(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::TinyInt(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Boolean(v) => out.push(u8::from(*v)),
            Value::Double(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Uuid(v) | Value::TimeUuid(v) => out.extend_from_slice(v),
            Value::Inet(IpAddr::V4(v4)) => out.extend_from_slice(&v4.octets()),
            Value::Inet(IpAddr::V6(v6)) => out.extend_from_slice(&v6.octets()),
            Value::List(elements) | Value::Set(elements) => {
                out.extend_from_slice(&(elements.len() as i32).to_be_bytes());
                for element in elements {
                    write_value_bytes(Some(element), out);
                }
            }
            Value::Map(entries) => {
                out.extend_from_slice(&(entries.len() as i32).to_be_bytes());
                for (key, value) in entries {
                    write_value_bytes(Some(key), out);
                    write_value_bytes(Some(value), out);
                }
            }
        }
    }

    /// The encoded size, used for the batch-size thresholds.
    pub fn encoded_len(&self) -> usize {
        let mut bytes = Vec::new();
        self.encode(&mut bytes);
        bytes.len()
    }

    /// Decodes a value of type `cql_type` from its protocol encoding.
    pub fn decode(cql_type: &CqlType, bytes: &[u8]) -> Result<Value, CqlError> {
        let wrong_size = || {
            CqlError::invalid(format!(
                "Expected {} bytes for a {} value, got {}",
                fixed_size(cql_type).unwrap_or(0),
                cql_type.cql_name(),
                bytes.len()
            ))
        };
        Ok(match cql_type {
            CqlType::Ascii => {
                if !bytes.is_ascii() {
                    return Err(CqlError::invalid(
                        "Invalid ASCII character in string literal",
                    ));
                }
                Value::Text(String::from_utf8_lossy(bytes).into_owned())
            }
            CqlType::Text => Value::Text(
                String::from_utf8(bytes.to_vec())
                    .map_err(|_| CqlError::invalid("Invalid UTF-8 bytes"))?,
            ),
            CqlType::Blob => Value::Blob(bytes.to_vec()),
            CqlType::BigInt => Value::BigInt(i64::from_be_bytes(
                bytes.try_into().map_err(|_| wrong_size())?,
            )),
            CqlType::Timestamp => Value::Timestamp(i64::from_be_bytes(
                bytes.try_into().map_err(|_| wrong_size())?,
            )),
            CqlType::Int => Value::Int(i32::from_be_bytes(
                bytes.try_into().map_err(|_| wrong_size())?,
            )),
            CqlType::SmallInt => Value::SmallInt(i16::from_be_bytes(
                bytes.try_into().map_err(|_| wrong_size())?,
            )),
            CqlType::TinyInt => Value::TinyInt(i8::from_be_bytes(
                bytes.try_into().map_err(|_| wrong_size())?,
            )),
            CqlType::Boolean => match bytes {
                [byte] => Value::Boolean(*byte != 0),
                _ => return Err(wrong_size()),
            },
            CqlType::Double => Value::Double(f64::from_be_bytes(
                bytes.try_into().map_err(|_| wrong_size())?,
            )),
            CqlType::Uuid => Value::Uuid(bytes.try_into().map_err(|_| wrong_size())?),
            CqlType::TimeUuid => {
                let uuid: [u8; 16] = bytes.try_into().map_err(|_| wrong_size())?;
                if uuid[6] >> 4 != 1 {
                    return Err(CqlError::invalid(
                        "Unsupported UUID version for timeuuid (must be 1)",
                    ));
                }
                Value::TimeUuid(uuid)
            }
            CqlType::Inet => match bytes.len() {
                4 => Value::Inet(IpAddr::from(
                    <[u8; 4]>::try_from(bytes).map_err(|_| wrong_size())?,
                )),
                16 => Value::Inet(IpAddr::from(
                    <[u8; 16]>::try_from(bytes).map_err(|_| wrong_size())?,
                )),
                _ => return Err(wrong_size()),
            },
            CqlType::List(element) | CqlType::Set(element) => {
                let mut reader = bytes;
                let count = read_i32(&mut reader)?;
                let mut elements = Vec::new();
                for _ in 0..count.max(0) {
                    let element_bytes = read_bytes(&mut reader)?.ok_or_else(|| {
                        CqlError::invalid("null is not supported inside collections")
                    })?;
                    elements.push(Value::decode(element, element_bytes)?);
                }
                if matches!(cql_type, CqlType::Set(_)) {
                    elements.sort();
                    elements.dedup();
                    Value::Set(elements)
                } else {
                    Value::List(elements)
                }
            }
            CqlType::Map(key_type, value_type) => {
                let mut reader = bytes;
                let count = read_i32(&mut reader)?;
                let mut entries = Vec::new();
                for _ in 0..count.max(0) {
                    let key = read_bytes(&mut reader)?.ok_or_else(|| {
                        CqlError::invalid("null is not supported inside collections")
                    })?;
                    let value = read_bytes(&mut reader)?.ok_or_else(|| {
                        CqlError::invalid("null is not supported inside collections")
                    })?;
                    entries.push((
                        Value::decode(key_type, key)?,
                        Value::decode(value_type, value)?,
                    ));
                }
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                Value::Map(entries)
            }
        })
    }
}

fn fixed_size(cql_type: &CqlType) -> Option<usize> {
    match cql_type {
        CqlType::BigInt | CqlType::Timestamp | CqlType::Double => Some(8),
        CqlType::Int => Some(4),
        CqlType::SmallInt => Some(2),
        CqlType::TinyInt | CqlType::Boolean => Some(1),
        CqlType::Uuid | CqlType::TimeUuid => Some(16),
        _ => None,
    }
}

/// Writes a `[bytes]`: an int length (-1 for null) followed by the encoding.
pub fn write_value_bytes(value: Option<&Value>, out: &mut Vec<u8>) {
    match value {
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        Some(value) => {
            let mut encoded = Vec::new();
            value.encode(&mut encoded);
            out.extend_from_slice(&(encoded.len() as i32).to_be_bytes());
            out.extend_from_slice(&encoded);
        }
    }
}

pub fn read_i32(reader: &mut &[u8]) -> Result<i32, CqlError> {
    if reader.len() < 4 {
        return Err(CqlError::protocol("truncated int"));
    }
    let (head, tail) = reader.split_at(4);
    *reader = tail;
    Ok(i32::from_be_bytes([head[0], head[1], head[2], head[3]]))
}

/// Reads a `[bytes]`; `None` is null.
pub fn read_bytes<'a>(reader: &mut &'a [u8]) -> Result<Option<&'a [u8]>, CqlError> {
    let length = read_i32(reader)?;
    if length < 0 {
        return Ok(None);
    }
    let length = length as usize;
    if reader.len() < length {
        return Err(CqlError::protocol("truncated bytes"));
    }
    let (head, tail) = reader.split_at(length);
    *reader = tail;
    Ok(Some(head))
}
