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
    /// ERROR WriteTimeout after applying only the first `applied_statements` statements of a
    /// batch (each one whole): an unlogged batch that ScyllaDB applied in part. On a single
    /// statement, 0 applies nothing and anything else applies it.
    PartialWriteTimeout { applied_statements: usize },
    /// ERROR Overloaded (0x1001); nothing is done.
    Overloaded,
    /// The connection is closed without an answer (the statement is not applied).
    DropConnection,
    /// ERROR WriteTimeout at once, and the write (statement or whole batch) is applied `delay`
    /// later with the timestamp it got on arrival: a replica applying a timed-out write late.
    /// A write that arrived after it with a later timestamp still wins, as in ScyllaDB.
    LateWrite { delay: std::time::Duration },
    /// The statement runs at once but its answer is held back this long (a slow coordinator or
    /// network: the driver's client-side timeout can fire on a write that was applied).
    Delay(std::time::Duration),
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
    /// Apply the first n statements, then fail.
    FailAfterPartial(usize, CqlError),
    /// Fail now, apply after the delay.
    ApplyLater(std::time::Duration, CqlError),
    Delay(std::time::Duration),
}

impl Fault {
    pub(crate) fn outcome(&self, consistency: u16, write_type: &str) -> FaultOutcome {
        match self {
            Fault::Unavailable => FaultOutcome::FailBefore(CqlError::Unavailable { consistency }),
            Fault::ReadTimeout => FaultOutcome::FailBefore(CqlError::ReadTimeout { consistency }),
            Fault::Overloaded => FaultOutcome::FailBefore(CqlError::Overloaded),
            Fault::DropConnection => FaultOutcome::Drop,
            Fault::Delay(duration) => FaultOutcome::Delay(*duration),
            Fault::LateWrite { delay } => FaultOutcome::ApplyLater(
                *delay,
                CqlError::WriteTimeout {
                    consistency,
                    write_type: write_type.to_string(),
                },
            ),
            Fault::PartialWriteTimeout { applied_statements } => FaultOutcome::FailAfterPartial(
                *applied_statements,
                CqlError::WriteTimeout {
                    consistency,
                    write_type: write_type.to_string(),
                },
            ),
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
