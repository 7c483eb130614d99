//! On-disk framing of one record: `[len u32][crc32 u32][body]`, little endian, where
//! `body = [content_type u8][timestamp_ns i64][key_len u16][key][value]` and the CRC covers
//! the body. A torn tail (short or failing frame at the end of the last segment) is cut off at
//! recovery; a bad CRC elsewhere is reported to the consumer, which dead-letters it.

use crate::Record;

pub const HEADER: usize = 8;
const BODY_FIXED: usize = 1 + 8 + 2;
/// Largest body accepted; bigger lengths are treated as corruption.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

pub fn encode(record: &Record, out: &mut Vec<u8>) {
    let body_len = BODY_FIXED + record.key.len() + record.value.len();
    let start = out.len();
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(record.content_type);
    out.extend_from_slice(&record.timestamp_ns.to_le_bytes());
    out.extend_from_slice(&(record.key.len() as u16).to_le_bytes());
    out.extend_from_slice(&record.key);
    out.extend_from_slice(&record.value);
    let crc = crc32fast::hash(&out[start + HEADER..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

pub fn encoded_len(record: &Record) -> usize {
    HEADER + BODY_FIXED + record.key.len() + record.value.len()
}

/// Result of parsing at the start of `buf`.
pub enum Parsed {
    /// A whole frame of `len` bytes; `Err` if its checksum or layout is bad.
    Frame(usize, Result<Record, String>),
    /// `buf` ends inside the frame (or holds no header).
    Incomplete,
    /// The length field is impossible: the bytes are not a frame.
    Garbage,
}

pub fn parse(buf: &[u8]) -> Parsed {
    if buf.len() < HEADER {
        return Parsed::Incomplete;
    }
    let body_len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(BODY_FIXED..=MAX_BODY).contains(&body_len) {
        return Parsed::Garbage;
    }
    let total = HEADER + body_len;
    if buf.len() < total {
        return Parsed::Incomplete;
    }
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let body = &buf[HEADER..total];
    if crc32fast::hash(body) != crc {
        return Parsed::Frame(total, Err("frame checksum mismatch".into()));
    }
    let content_type = body[0];
    let timestamp_ns = i64::from_le_bytes(body[1..9].try_into().unwrap_or_default());
    let key_len = u16::from_le_bytes([body[9], body[10]]) as usize;
    if BODY_FIXED + key_len > body.len() {
        return Parsed::Frame(total, Err("frame key length exceeds body".into()));
    }
    let key = body[BODY_FIXED..BODY_FIXED + key_len].to_vec();
    let value = body[BODY_FIXED + key_len..].to_vec();
    Parsed::Frame(
        total,
        Ok(Record {
            key,
            value,
            content_type,
            timestamp_ns,
            traceparent: None,
        }),
    )
}
