//! The ScyllaDB store adapter (issue 11): the `Store` trait over CQL with the `scylla` driver.
