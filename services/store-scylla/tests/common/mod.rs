//! Fresh keyspaces for contract runs.
#![allow(dead_code)] // each test target uses part of it

use std::sync::atomic::{AtomicU32, Ordering};

use pinhive_store::Store;
use pinhive_store_scylla::{migrate, Replication, ScyllaOptions, ScyllaStore, ScyllaUri};

/// A keyspace name no other test run uses.
pub fn fresh_keyspace() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "ph_test_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Migrates a fresh keyspace on the cluster `hosts` (a URI's host list) and opens the store.
pub fn migrated_store(hosts: &str) -> Box<dyn Store> {
    Box::new(migrated_store_with(hosts, ScyllaOptions::default()))
}

/// [`migrated_store`] with options.
pub fn migrated_store_with(hosts: &str, options: ScyllaOptions) -> ScyllaStore {
    ScyllaStore::open_with(&migrated_keyspace(hosts), options).expect("open")
}

/// Migrates a fresh keyspace on the cluster `hosts`; its `scylla://` URI.
pub fn migrated_keyspace(hosts: &str) -> String {
    let uri = format!("scylla://{hosts}/{}", fresh_keyspace());
    let applied = migrate(&uri, &Replication::single()).expect("migrate");
    assert!(!applied.is_empty(), "a fresh keyspace gets every migration");
    assert!(
        migrate(&uri, &Replication::single())
            .expect("migrate again")
            .is_empty(),
        "a second run applies nothing"
    );
    uri
}

/// The host list of a `scylla://` URI, for a fresh keyspace on the same cluster.
pub fn hosts_of(uri: &str) -> String {
    ScyllaUri::parse(uri)
        .expect("PINHIVE_SCYLLA_URI")
        .hosts
        .join(",")
}
