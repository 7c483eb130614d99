//! What the server was asked to do, for tests that count statements (e.g. CQL statements per
//! pin on the hot path).

use std::collections::{BTreeMap, BTreeSet};

/// Counters since the server started (or since [`crate::CqlServer::reset_stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// QUERY requests.
    pub queries: u64,
    /// EXECUTE requests.
    pub executes: u64,
    /// PREPARE requests.
    pub prepares: u64,
    /// BATCH requests.
    pub batches: u64,
    /// Statements run, by text: one per QUERY or EXECUTE, one per statement of a BATCH.
    /// Includes the driver's own queries of the system tables.
    pub by_statement: BTreeMap<String, u64>,
    /// The consistency levels each statement text was sent with (`LocalQuorum`, `One`, ...;
    /// `Serial`/`LocalSerial` added for conditional statements that carried one).
    pub consistency_by_statement: BTreeMap<String, BTreeSet<String>>,
}

impl ServerStats {
    /// Statements run whose text contains `fragment`.
    pub fn statements_containing(&self, fragment: &str) -> u64 {
        self.by_statement
            .iter()
            .filter(|(text, _)| text.contains(fragment))
            .map(|(_, count)| count)
            .sum()
    }

    pub(crate) fn record(
        &mut self,
        text: &str,
        consistency: String,
        serial_consistency: Option<String>,
    ) {
        *self.by_statement.entry(text.to_string()).or_default() += 1;
        let levels = self
            .consistency_by_statement
            .entry(text.to_string())
            .or_default();
        levels.insert(consistency);
        levels.extend(serial_consistency);
    }
}
