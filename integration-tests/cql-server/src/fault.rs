//! Injectable faults: what ScyllaDB does under overload or node failure, on demand.

use crate::error::CqlError;

/// A fault to inject into matching statements.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// ERROR Unavailable (0x1000); the statement is not applied.
    Unavailable,
    /// ERROR WriteTimeout (0x1100). `applied: true` applies the write first, as a coordinator
    /// that timed out waiting for replicas that did write it; `false` applies nothing.
    WriteTimeout { applied: bool },
    /// ERROR ReadTimeout (0x1200); nothing is read.
    ReadTimeout,
    /// The connection is closed without an answer (the statement is not applied).
    DropConnection,
}

/// Which statements a fault fires on: QUERY text, the text an EXECUTE was prepared from, or
/// any statement of a BATCH. PREPARE, OPTIONS and STARTUP never match.
#[derive(Debug, Clone, PartialEq)]
pub enum StatementMatcher {
    /// Every statement, including the driver's own queries of the system tables.
    Any,
    /// Statements whose text contains this string (case-sensitive).
    Contains(String),
}

impl StatementMatcher {
    pub fn contains(fragment: impl Into<String>) -> StatementMatcher {
        StatementMatcher::Contains(fragment.into())
    }

    pub fn matches(&self, statement: &str) -> bool {
        match self {
            StatementMatcher::Any => true,
            StatementMatcher::Contains(fragment) => statement.contains(fragment.as_str()),
        }
    }
}

pub(crate) struct ArmedFault {
    pub(crate) fault: Fault,
    pub(crate) matcher: StatementMatcher,
    pub(crate) remaining: usize,
}

pub(crate) enum FaultOutcome {
    Drop,
    FailBefore(CqlError),
    FailAfter(CqlError),
}

impl Fault {
    pub(crate) fn outcome(&self, consistency: u16, write_type: &str) -> FaultOutcome {
        match self {
            Fault::Unavailable => FaultOutcome::FailBefore(CqlError::Unavailable { consistency }),
            Fault::ReadTimeout => FaultOutcome::FailBefore(CqlError::ReadTimeout { consistency }),
            Fault::DropConnection => FaultOutcome::Drop,
            Fault::WriteTimeout { applied } => {
                let error = CqlError::WriteTimeout {
                    consistency,
                    write_type: write_type.to_string(),
                };
                if *applied {
                    FaultOutcome::FailAfter(error)
                } else {
                    FaultOutcome::FailBefore(error)
                }
            }
        }
    }
}
