//! The store contract against a real ScyllaDB cluster: `PINHIVE_SCYLLA_URI=scylla://host:9042/any`
//! (each check migrates a fresh keyspace on that cluster, SimpleStrategy RF 1). Without the
//! variable every check prints why it was skipped and returns.

mod common;

/// A migrated fresh keyspace on the cluster `PINHIVE_SCYLLA_URI` names (and its URI, to
/// open it again), or why there is none.
fn fresh_on_cluster() -> Result<(Box<dyn pinhive_store::Store>, String), &'static str> {
    let uri = std::env::var("PINHIVE_SCYLLA_URI").map_err(|_| "PINHIVE_SCYLLA_URI is not set")?;
    let keyspace = common::migrated_keyspace(&common::hosts_of(&uri));
    let store = pinhive_store_scylla::ScyllaStore::open(&keyspace).expect("open");
    Ok((Box::new(store), keyspace))
}

/// The same keyspace, opened again.
fn reopen(keyspace: &str) -> Box<dyn pinhive_store::Store> {
    Box::new(pinhive_store_scylla::ScyllaStore::open(keyspace).expect("reopen"))
}

pinhive_store::store_contract_tests!(optional fresh_on_cluster, reopen reopen);
