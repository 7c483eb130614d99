//! A CQL test server for pinhive's ScyllaDB adapter (see README.md in this crate).
