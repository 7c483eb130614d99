//! The errors the server answers with: each one becomes an ERROR frame with the code the
//! native protocol v4 spec (section 9) assigns to it.

/// An error answered to the client as an ERROR frame.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CqlError {
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("syntax error: {0}")]
    Syntax(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("already exists: {keyspace}.{table}")]
    AlreadyExists { keyspace: String, table: String },
    #[error("unprepared statement")]
    Unprepared { id: Vec<u8> },
    #[error("unavailable")]
    Unavailable { consistency: u16 },
    #[error("write timeout")]
    WriteTimeout {
        consistency: u16,
        write_type: String,
    },
    #[error("read timeout")]
    ReadTimeout { consistency: u16 },
    #[error("overloaded")]
    Overloaded,
    #[error("server error: {0}")]
    Server(String),
}

impl CqlError {
    pub fn invalid(message: impl Into<String>) -> CqlError {
        CqlError::Invalid(message.into())
    }

    pub fn syntax(message: impl Into<String>) -> CqlError {
        CqlError::Syntax(message.into())
    }

    pub fn protocol(message: impl Into<String>) -> CqlError {
        CqlError::Protocol(message.into())
    }

    /// The ERROR frame body: `[int code][string message]` and the code-specific fields.
    pub fn encode_body(&self) -> Vec<u8> {
        let mut body = Vec::new();
        let (code, message): (i32, String) = match self {
            CqlError::Protocol(message) => (0x000A, message.clone()),
            CqlError::Syntax(message) => (0x2000, message.clone()),
            CqlError::Invalid(message) => (0x2200, message.clone()),
            CqlError::AlreadyExists { keyspace, table } => {
                let message = if table.is_empty() {
                    format!("Cannot add existing keyspace \"{keyspace}\"")
                } else {
                    format!(
                        "Cannot add already existing table \"{table}\" to keyspace \"{keyspace}\""
                    )
                };
                (0x2400, message)
            }
            CqlError::Unprepared { .. } => (0x2500, "Prepared query not found in cache".into()),
            CqlError::Unavailable { .. } => (
                0x1000,
                "Cannot achieve consistency level (injected fault)".into(),
            ),
            CqlError::WriteTimeout { .. } => (
                0x1100,
                "Operation timed out for a write (injected fault)".into(),
            ),
            CqlError::ReadTimeout { .. } => (
                0x1200,
                "Operation timed out for a read (injected fault)".into(),
            ),
            CqlError::Overloaded => (
                0x1001,
                "Coordinator node overloaded (injected fault)".into(),
            ),
            CqlError::Server(message) => (0x0000, message.clone()),
        };
        body.extend_from_slice(&code.to_be_bytes());
        write_string(&message, &mut body);
        match self {
            CqlError::AlreadyExists { keyspace, table } => {
                write_string(keyspace, &mut body);
                write_string(table, &mut body);
            }
            CqlError::Unprepared { id } => {
                body.extend_from_slice(&(id.len() as u16).to_be_bytes());
                body.extend_from_slice(id);
            }
            CqlError::Unavailable { consistency } => {
                body.extend_from_slice(&consistency.to_be_bytes());
                body.extend_from_slice(&3i32.to_be_bytes()); // required
                body.extend_from_slice(&1i32.to_be_bytes()); // alive
            }
            CqlError::WriteTimeout {
                consistency,
                write_type,
            } => {
                body.extend_from_slice(&consistency.to_be_bytes());
                body.extend_from_slice(&1i32.to_be_bytes()); // received
                body.extend_from_slice(&2i32.to_be_bytes()); // block_for
                write_string(write_type, &mut body);
            }
            CqlError::ReadTimeout { consistency } => {
                body.extend_from_slice(&consistency.to_be_bytes());
                body.extend_from_slice(&1i32.to_be_bytes()); // received
                body.extend_from_slice(&2i32.to_be_bytes()); // block_for
                body.push(0); // data_present
            }
            _ => {}
        }
        body
    }
}

/// Writes a `[string]`: a short length and UTF-8 bytes.
pub fn write_string(text: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}
