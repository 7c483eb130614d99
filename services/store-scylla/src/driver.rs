//! The async driver behind the synchronous `Store` trait: a tokio runtime the adapter owns.
//!
//! Every call runs the driver future on the calling thread with `futures::executor::block_on`
//! inside the adapter's runtime context; the connections, timers and the driver's background
//! tasks live on the adapter's own worker threads. A caller never shares a runtime with the
//! driver, so no call can deadlock on it, and `block_on` never panics for being "inside a
//! runtime". Callers are expected on blocking threads (`spawn_blocking`, `SyncArbiter`), as
//! for every `Store`: called from an async worker, a call blocks that worker for the round
//! trip, and may never return: the driver's channels spend the calling task's cooperative
//! budget, and once it is spent tokio defers their wake-ups to the caller's scheduler, which
//! the blocked call never yields to (seen with many calls in one poll of an actix task).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::timestamp_generator::MonotonicTimestampGenerator;
use scylla::statement::Consistency;

use crate::uri::ScyllaUri;

/// Connection settings (the URI gives hosts and keyspace).
#[derive(Clone, Debug)]
pub struct ScyllaOptions {
    /// Consistency of every read and write (LOCAL_QUORUM: with RF 3 a write and a later read
    /// overlap in one replica, so any instance reads what another wrote).
    pub consistency: Consistency,
    /// Client-side timeout of one request (retries included).
    pub request_timeout: Duration,
    /// Timeout of opening the first connection.
    pub connect_timeout: Duration,
    /// Worker threads of the adapter's runtime.
    pub runtime_threads: usize,
    /// Width of a listing bucket (docs/data-model.md `listing`), ns. Fixed for a keyspace:
    /// entries are found by it.
    pub listing_bucket_ns: i64,
    /// Default TTL of the journal tables, days (schemas/cql: 7); prune_journal looks back
    /// this many days before its cutoff (older entries have expired).
    pub journal_ttl_days: i64,
}

impl Default for ScyllaOptions {
    fn default() -> Self {
        ScyllaOptions {
            consistency: Consistency::LocalQuorum,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            runtime_threads: 2,
            listing_bucket_ns: 3_600 * 1_000_000_000,
            journal_ttl_days: 7,
        }
    }
}

/// The adapter's runtime. Dropped without blocking (the caller may be anywhere).
pub(crate) struct Driver {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Driver {
    pub(crate) fn new(threads: usize) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("pinhive-scylla")
            .enable_all()
            .build()
            .context("starting the ScyllaDB driver runtime")?;
        Ok(Driver {
            runtime: Some(runtime),
        })
    }

    /// Enters the adapter's runtime context (for work that must happen inside it).
    pub(crate) fn enter(&self) -> Option<tokio::runtime::EnterGuard<'_>> {
        self.runtime.as_ref().map(|runtime| runtime.enter())
    }

    /// Runs `future` to completion on the calling thread, in the adapter's runtime context.
    pub(crate) fn run<F: Future>(&self, future: F) -> F::Output {
        let _context = self.runtime.as_ref().map(|runtime| runtime.enter());
        futures::executor::block_on(future)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Opens a session: token-aware load balancing (the driver's default policy, shard-aware on
/// ScyllaDB), the driver's default retry policy (it retries only statements marked
/// idempotent on timeouts), no speculative execution, client-side monotonic timestamps (a
/// row deleted and written again by the same shard is ordered by the writer, not by the
/// coordinators' clocks; a rollback's writes win over a timed-out write of the batch it rolls
/// back that lands late: see batch.rs).
pub(crate) async fn connect(uri: &ScyllaUri, options: &ScyllaOptions) -> anyhow::Result<Session> {
    let profile = ExecutionProfile::builder()
        .consistency(options.consistency)
        .request_timeout(Some(options.request_timeout))
        .build();
    SessionBuilder::new()
        .known_nodes(&uri.hosts)
        // Schema metadata of our keyspace only (its replication is what token-aware routing
        // needs); the rest of the cluster's schema is none of the store's business.
        .keyspaces_to_fetch([uri.keyspace.clone()])
        .connection_timeout(options.connect_timeout)
        .default_execution_profile_handle(profile.into_handle())
        .timestamp_generator(Arc::new(MonotonicTimestampGenerator::new()))
        .build()
        .await
        .with_context(|| format!("connecting to ScyllaDB at {}", uri.hosts.join(",")))
}
