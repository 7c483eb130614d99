//! The one place that knows how events are encoded on the log.
//!
//! Internal records are bincode 2 (standard config, serde path); external producers send JSON.
//! A record's content type travels beside it (embedded log record header, Kafka `content-type`
//! header), so a consumer never guesses.

use crate::{Envelope, SCHEMA_VERSION};

/// How a record's value is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ContentType {
    /// bincode 2 of [`Envelope`] (internal producers).
    Bincode = 1,
    /// JSON of [`Envelope`], validated against `schemas/events/envelope.schema.json`.
    Json = 2,
}

impl ContentType {
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(ContentType::Bincode),
            2 => Some(ContentType::Json),
            _ => None,
        }
    }

    /// MIME name used in Kafka record headers.
    pub fn mime(self) -> &'static str {
        match self {
            ContentType::Bincode => "application/x-pinhive-bincode",
            ContentType::Json => "application/json",
        }
    }
}

/// Why a record could not be turned into an [`Envelope`]; the reason a dead letter carries.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown content type {0}")]
    UnknownContentType(u8),
    #[error("bincode decode failed: {0}")]
    Bincode(String),
    #[error("trailing {0} bytes after the envelope")]
    TrailingBytes(usize),
    #[error("json decode failed: {0}")]
    Json(String),
    #[error("unsupported schema version {0} (this build reads {SCHEMA_VERSION})")]
    UnsupportedVersion(u16),
    /// Written by a later pinhive release: not an error of the record. A shard holds its
    /// partition at such a record (never dead-letters it) until an upgraded instance runs it.
    #[error("event schema version {0}, written by a later pinhive release (this build reads {SCHEMA_VERSION}): the partition waits for an upgraded instance")]
    NewerSchema(u16),
    #[error("record key {record_key:?} does not match envelope key {envelope_key:?}")]
    KeyMismatch {
        record_key: String,
        envelope_key: String,
    },
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes an envelope for the log (bincode).
pub fn encode(envelope: &Envelope) -> Vec<u8> {
    // Encoding into a Vec cannot fail for these types: every field is serde-serializable
    // without maps keyed by non-strings and without `serialize_any`.
    bincode::serde::encode_to_vec(envelope, config()).unwrap_or_default()
}

/// The schema version a record value says it has, read without decoding the rest (a later
/// release may have changed everything after it): bincode envelopes start with it, JSON ones
/// name it. `None` when the value does not say.
pub fn schema_version_of(content_type: u8, value: &[u8]) -> Option<u16> {
    #[derive(serde::Deserialize)]
    struct VersionOnly {
        schema_version: u16,
    }
    match ContentType::from_byte(content_type)? {
        ContentType::Bincode => bincode::serde::decode_from_slice::<u16, _>(value, config())
            .ok()
            .map(|(version, _)| version),
        ContentType::Json => serde_json::from_slice::<VersionOnly>(value)
            .ok()
            .map(|v| v.schema_version),
    }
}

/// The schema of a record a later pinhive release wrote (a bincode record of a version above
/// [`SCHEMA_VERSION`]), if it is one; see [`decode`].
pub fn later_schema(content_type: u8, value: &[u8]) -> Option<u16> {
    if content_type != ContentType::Bincode as u8 {
        return None;
    }
    schema_version_of(content_type, value).filter(|version| *version > SCHEMA_VERSION)
}

/// Decodes a record value of the given content type and checks version and key. A bincode
/// record (pinhive's own, or a producer trusted like it) of a later schema is
/// [`DecodeError::NewerSchema`], whatever follows its version: a later release wrote it. A JSON
/// record of another version is an external producer's error ([`DecodeError::UnsupportedVersion`],
/// a dead letter): an untrusted producer must not be able to hold a partition.
pub fn decode(content_type: u8, record_key: &[u8], value: &[u8]) -> Result<Envelope, DecodeError> {
    if let Some(version) = later_schema(content_type, value) {
        return Err(DecodeError::NewerSchema(version));
    }
    let envelope = match ContentType::from_byte(content_type) {
        Some(ContentType::Bincode) => {
            // The limit bounds what a length prefix may make bincode allocate before it reads
            // (without it, 10 bytes of a damaged record abort the process).
            let (envelope, read): (Envelope, usize) =
                bincode::serde::decode_from_slice(value, config().with_limit::<{ 16 << 20 }>())
                    .map_err(|e| DecodeError::Bincode(e.to_string()))?;
            if read != value.len() {
                return Err(DecodeError::TrailingBytes(value.len() - read));
            }
            envelope
        }
        Some(ContentType::Json) => decode_json(value)?,
        None => return Err(DecodeError::UnknownContentType(content_type)),
    };
    if envelope.schema_version != SCHEMA_VERSION {
        return Err(DecodeError::UnsupportedVersion(envelope.schema_version));
    }
    if envelope.key.as_bytes() != record_key {
        return Err(DecodeError::KeyMismatch {
            record_key: String::from_utf8_lossy(record_key).into_owned(),
            envelope_key: envelope.key,
        });
    }
    Ok(envelope)
}

/// Decodes the external JSON form. Field-level validation (unknown fields, types) is done by
/// serde with `deny_unknown_fields`, which matches the generated JSON Schema.
pub fn decode_json(value: &[u8]) -> Result<Envelope, DecodeError> {
    serde_json::from_slice(value).map_err(|e| DecodeError::Json(e.to_string()))
}

/// The external JSON form of an envelope.
pub fn encode_json(envelope: &Envelope) -> Vec<u8> {
    serde_json::to_vec(envelope).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Event, PinRequested};

    fn sample() -> Envelope {
        Envelope::new(
            "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",
            Event::PinRequested(PinRequested {
                requestid: "r1".into(),
                owner: "alice".into(),
                cid: "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi".into(),
                name: Some("a".into()),
                origins: vec![],
                meta: [("k".to_string(), "v".to_string())].into(),
                created_ns: 1,
                replicas_min: 1,
                replicas_max: 3,
                replaces: None,
            }),
        )
    }

    #[test]
    fn bincode_round_trip() {
        let e = sample();
        let bytes = encode(&e);
        assert_eq!(decode(1, e.key.as_bytes(), &bytes).unwrap(), e);
    }

    #[test]
    fn json_round_trip() {
        let e = sample();
        let bytes = encode_json(&e);
        assert_eq!(decode(2, e.key.as_bytes(), &bytes).unwrap(), e);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for garbage in [
            &b""[..],
            b"\xff\xff\xff\xff",
            b"{\"schema_version\":1}",
            b"\x01",
        ] {
            assert!(decode(1, b"k", garbage).is_err());
            assert!(decode(2, b"k", garbage).is_err());
        }
        assert!(matches!(
            decode(9, b"k", b"x"),
            Err(DecodeError::UnknownContentType(9))
        ));
    }

    #[test]
    fn wrong_version_and_key_are_rejected() {
        let mut e = sample();
        e.schema_version = 0;
        assert!(matches!(
            decode(1, e.key.as_bytes(), &encode(&e)),
            Err(DecodeError::UnsupportedVersion(0))
        ));
        let e = sample();
        assert!(matches!(
            decode(1, b"other", &encode(&e)),
            Err(DecodeError::KeyMismatch { .. })
        ));
    }

    /// A later release's record is told apart from a bad one by its version alone, whatever
    /// follows it (its layout after the version may have changed).
    #[test]
    fn a_later_schema_is_recognised_before_the_rest_is_decoded() {
        let mut later = encode(&sample());
        later[0] = 2; // the varint of schema_version 2
        later.extend_from_slice(b"fields this build does not know");
        assert_eq!(schema_version_of(1, &later), Some(2));
        assert!(matches!(
            decode(1, b"k", &later),
            Err(DecodeError::NewerSchema(2))
        ));
        // An external producer's JSON of another version is its error, not a later release's.
        let json = br#"{"schema_version": 7, "key": "k", "a_later_field": true}"#;
        assert_eq!(schema_version_of(2, json), Some(7));
        assert!(!matches!(
            decode(2, b"k", json),
            Err(DecodeError::NewerSchema(_))
        ));
        // The current version still decodes in full.
        let e = sample();
        assert_eq!(schema_version_of(1, &encode(&e)), Some(SCHEMA_VERSION));
        assert!(decode(1, e.key.as_bytes(), &encode(&e)).is_ok());
    }
}
