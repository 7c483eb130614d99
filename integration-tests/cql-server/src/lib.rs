//! A CQL test server for pinhive's ScyllaDB adapter (see README.md in this crate).
//!
//! Native protocol v4 over TCP, in memory, with ScyllaDB's query rules enforced and faults
//! injectable. A test starts it with [`CqlServer::start`], points the `scylla` driver at
//! [`CqlServer::addr`], and arms faults with [`CqlServer::inject`].

mod engine;
mod error;
mod fault;
mod lexer;
mod parser;
mod protocol;
mod read;
mod rules;
mod schema;
mod server;
mod stats;
mod system_tables;
mod terms;
mod types;
mod write;

pub use error::CqlError;
pub use fault::{Fault, StatementMatcher};
pub use server::CqlServer;
pub use stats::ServerStats;
pub use write::{BATCH_SIZE_FAIL_THRESHOLD_BYTES, BATCH_SIZE_WARN_THRESHOLD_BYTES};
