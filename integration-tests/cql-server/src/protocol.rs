//! Native protocol v4 frames: the header, and the bodies of the responses the server sends.
//! Requests are decoded with `scylla-cql`'s request types (see README.md); responses are
//! written here because `scylla-cql` only parses them.

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::engine::{ColumnSpec, ExecResult, Prepared};
use crate::error::{write_string, CqlError};
use crate::types::write_value_bytes;

pub const OPCODE_ERROR: u8 = 0x00;
pub const OPCODE_STARTUP: u8 = 0x01;
pub const OPCODE_READY: u8 = 0x02;
pub const OPCODE_OPTIONS: u8 = 0x05;
pub const OPCODE_SUPPORTED: u8 = 0x06;
pub const OPCODE_QUERY: u8 = 0x07;
pub const OPCODE_RESULT: u8 = 0x08;
pub const OPCODE_PREPARE: u8 = 0x09;
pub const OPCODE_EXECUTE: u8 = 0x0A;
pub const OPCODE_REGISTER: u8 = 0x0B;
pub const OPCODE_BATCH: u8 = 0x0D;

const FLAG_COMPRESSION: u8 = 0x01;
const FLAG_CUSTOM_PAYLOAD: u8 = 0x04;
const FLAG_WARNING: u8 = 0x08;

/// The largest frame the protocol allows (256 MB).
const MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;

pub struct RequestFrame {
    pub version: u8,
    pub stream: i16,
    pub opcode: u8,
    pub body: Vec<u8>,
}

/// Reads one request frame; `Ok(None)` at a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> std::io::Result<Option<Result<RequestFrame, (i16, CqlError)>>> {
    let mut header = [0u8; 9];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let version = header[0];
    let flags = header[1];
    let stream = i16::from_be_bytes([header[2], header[3]]);
    let opcode = header[4];
    let length = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) as usize;
    if length > MAX_FRAME_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).await?;
    if version & 0x7F != 4 {
        return Ok(Some(Err((
            stream,
            CqlError::protocol(format!(
                "Invalid or unsupported protocol version ({}); supported versions are (4/v4)",
                version & 0x7F
            )),
        ))));
    }
    if flags & FLAG_COMPRESSION != 0 {
        return Ok(Some(Err((
            stream,
            CqlError::protocol("compression is not supported by this test server"),
        ))));
    }
    if flags & FLAG_CUSTOM_PAYLOAD != 0 {
        body = skip_custom_payload(&body).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "bad custom payload")
        })?;
    }
    Ok(Some(Ok(RequestFrame {
        version,
        stream,
        opcode,
        body,
    })))
}

fn skip_custom_payload(body: &[u8]) -> Result<Vec<u8>, CqlError> {
    let mut reader = body;
    let count = read_short(&mut reader)?;
    for _ in 0..count {
        let key_length = read_short(&mut reader)? as usize;
        reader = reader
            .get(key_length..)
            .ok_or_else(|| CqlError::protocol("truncated payload"))?;
        crate::types::read_bytes(&mut reader)?;
    }
    Ok(reader.to_vec())
}

pub fn read_short(reader: &mut &[u8]) -> Result<u16, CqlError> {
    if reader.len() < 2 {
        return Err(CqlError::protocol("truncated short"));
    }
    let value = u16::from_be_bytes([reader[0], reader[1]]);
    *reader = &reader[2..];
    Ok(value)
}

pub fn read_long_string(reader: &mut &[u8]) -> Result<String, CqlError> {
    let length = crate::types::read_i32(reader)?;
    let length =
        usize::try_from(length).map_err(|_| CqlError::protocol("negative string length"))?;
    let bytes = reader
        .get(..length)
        .ok_or_else(|| CqlError::protocol("truncated long string"))?;
    *reader = &reader[length..];
    String::from_utf8(bytes.to_vec()).map_err(|_| CqlError::protocol("invalid UTF-8 in statement"))
}

/// Encodes a response frame.
pub fn response(stream: i16, opcode: u8, body: &[u8], warnings: &[String]) -> Vec<u8> {
    let mut payload = Vec::new();
    let mut flags = 0u8;
    if !warnings.is_empty() {
        flags |= FLAG_WARNING;
        payload.extend_from_slice(&(warnings.len() as u16).to_be_bytes());
        for warning in warnings {
            write_string(warning, &mut payload);
        }
    }
    payload.extend_from_slice(body);
    let mut frame = Vec::with_capacity(9 + payload.len());
    frame.push(0x84);
    frame.push(flags);
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.push(opcode);
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    frame
}

pub fn supported_body() -> Vec<u8> {
    let options: [(&str, &[&str]); 2] = [("CQL_VERSION", &["3.3.1"]), ("COMPRESSION", &[])];
    let mut body = Vec::new();
    body.extend_from_slice(&(options.len() as u16).to_be_bytes());
    for (key, values) in options {
        write_string(key, &mut body);
        body.extend_from_slice(&(values.len() as u16).to_be_bytes());
        for value in values {
            write_string(value, &mut body);
        }
    }
    body
}

fn write_specs(specs: &[ColumnSpec], body: &mut Vec<u8>, global: bool) {
    if global {
        if let Some(first) = specs.first() {
            write_string(&first.keyspace, body);
            write_string(&first.table, body);
        }
    }
    for spec in specs {
        if !global {
            write_string(&spec.keyspace, body);
            write_string(&spec.table, body);
        }
        write_string(&spec.name, body);
        spec.cql_type.write_option(body);
    }
}

fn is_global(specs: &[ColumnSpec]) -> bool {
    specs.first().is_some_and(|first| {
        specs
            .iter()
            .all(|spec| spec.keyspace == first.keyspace && spec.table == first.table)
    })
}

/// `<metadata>` of a Rows result (or the result metadata of a Prepared result).
fn write_rows_metadata(specs: &[ColumnSpec], paging_state: Option<&[u8]>, body: &mut Vec<u8>) {
    let global = is_global(specs);
    let mut flags = 0i32;
    if global {
        flags |= 0x0001;
    }
    if paging_state.is_some() {
        flags |= 0x0002;
    }
    if specs.is_empty() {
        flags |= 0x0004;
    }
    body.extend_from_slice(&flags.to_be_bytes());
    body.extend_from_slice(&(specs.len() as i32).to_be_bytes());
    if let Some(state) = paging_state {
        body.extend_from_slice(&(state.len() as i32).to_be_bytes());
        body.extend_from_slice(state);
    }
    if !specs.is_empty() {
        write_specs(specs, body, global);
    }
}

pub fn result_body(result: &ExecResult) -> Vec<u8> {
    let mut body = Vec::new();
    match result {
        ExecResult::Void => body.extend_from_slice(&1i32.to_be_bytes()),
        ExecResult::Rows {
            specs,
            rows,
            paging_state,
        } => {
            body.extend_from_slice(&2i32.to_be_bytes());
            write_rows_metadata(specs, paging_state.as_deref(), &mut body);
            body.extend_from_slice(&(rows.len() as i32).to_be_bytes());
            for row in rows {
                for value in row {
                    write_value_bytes(value.as_ref(), &mut body);
                }
            }
        }
        ExecResult::SetKeyspace(keyspace) => {
            body.extend_from_slice(&3i32.to_be_bytes());
            write_string(keyspace, &mut body);
        }
        ExecResult::SchemaChange(change) => {
            body.extend_from_slice(&5i32.to_be_bytes());
            write_string(change.change_type, &mut body);
            write_string(change.target, &mut body);
            write_string(&change.keyspace, &mut body);
            if let Some(table) = &change.table {
                write_string(table, &mut body);
            }
        }
    }
    body
}

pub fn prepared_body(prepared: &Prepared) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&4i32.to_be_bytes());
    body.extend_from_slice(&(prepared.id.len() as u16).to_be_bytes());
    body.extend_from_slice(&prepared.id);
    // <prepared metadata>: bind markers with the partition key indexes.
    let specs = &prepared.bind_specs;
    let global = is_global(specs);
    body.extend_from_slice(&(if global { 1i32 } else { 0 }).to_be_bytes());
    body.extend_from_slice(&(specs.len() as i32).to_be_bytes());
    body.extend_from_slice(&(prepared.partition_key_indexes.len() as i32).to_be_bytes());
    for index in &prepared.partition_key_indexes {
        body.extend_from_slice(&index.to_be_bytes());
    }
    write_specs(specs, &mut body, global);
    // <result metadata>: none for writes and for LWTs (whose columns depend on the outcome).
    write_rows_metadata(&prepared.result_specs, None, &mut body);
    body
}
