//! The store contract against a real ScyllaDB cluster: `PINHIVE_SCYLLA_URI=scylla://host:9042/any`
//! (each check migrates a fresh keyspace on that cluster, SimpleStrategy RF 1). Without the
//! variable every check prints why it was skipped and returns.

mod common;

/// Says the check was skipped, on stderr itself: the test harness captures `println!`
/// and `eprintln!` of passing tests, not direct writes, so the reason shows in every run.
fn skipped(check: &str) {
    use std::io::Write;
    let line = format!("{check}: skipped: PINHIVE_SCYLLA_URI is not set\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    println!("skipped: PINHIVE_SCYLLA_URI is not set");
}

/// Every check of `pinhive_store::store_contract_tests!`, each skipped (with the reason
/// printed) when no cluster is configured. Keep in step with that macro's list.
macro_rules! contract_on_cluster {
    ($($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                let Ok(uri) = std::env::var("PINHIVE_SCYLLA_URI") else {
                    skipped(stringify!($check));
                    return;
                };
                let store = common::migrated_store(&common::hosts_of(&uri));
                pinhive_store::contract::$check(store.as_ref());
            }
        )*
    };
}

contract_on_cluster!(
    s3_objects,
    rows_round_trip,
    status_change_moves_index,
    listing_pages_newest_first,
    filters,
    batch_is_repeatable,
    checkpoints_and_pending,
    journal_in_order,
    tokens_nodes_dead_letters,
    dead_letters_page_after,
    cid_pin_list_walks_by_cursor,
    stale_entries_of_an_interrupted_batch_are_removed,
    any_prefix_then_the_batch_equals_the_batch,
    commit_row_and_counters,
    persist_batch_writes_rows_and_commit,
    journal_and_dead_letters_are_pruned_by_age,
    analytics_checkpoints_round_trip,
);
