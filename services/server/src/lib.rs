//! Wiring of one pinhive service: the typed configuration, opening the log and store, starting
//! the orchestrator, the node drivers and the HTTP server. The `pinhive` binary parses its CLI
//! and calls into this crate; the benchmarks start the same service in process.
//!
//! Invariant: no behaviour lives here that a service crate could own; this crate only connects
//! them.

pub mod config;
pub mod serve;
pub mod simulated;
pub mod tls;
