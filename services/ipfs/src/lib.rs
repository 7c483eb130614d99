//! IPFS adapter: the [`IpfsApi`] trait, its Kubo RPC implementation ([`kubo::KuboClient`]), a
//! simulated node for benchmarks and fault injection ([`simulated::SimulatedIpfs`]), and the
//! node driver actor ([`driver::NodeDriver`], one per node) with bounded concurrency, retries
//! with exponential backoff and jitter, a circuit breaker and periodic health checks.
//!
//! Invariant: drivers never touch state; every outcome goes back into the log as an event
//! (through an [`OutcomeSink`]) keyed by the CID, and the owning shard applies it.

pub mod auth;
pub mod breaker;
pub mod contract;
pub mod driver;
pub mod fair;
pub mod kubo;
pub mod metrics;
pub mod registry;
pub mod simulated;

use std::time::Duration;

use async_trait::async_trait;

pub use auth::NodeAuth;
pub use driver::{NodeCommand, NodeDriver, NodeDriverConfig, NodeOp, StopDriver};
pub use kubo::KuboClient;
pub use registry::{AgreedState, NodeHealth, NodeRegistry};
pub use simulated::SimulatedIpfs;

/// What `id` tells about a node.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct NodeIdentity {
    pub peer_id: String,
    /// Multiaddrs ending in `/p2p/<peer id>`.
    pub addresses: Vec<String>,
}

/// What `repo/stat` tells about a node's space.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RepoStat {
    pub repo_size: u64,
    pub storage_max: u64,
}

impl RepoStat {
    pub fn free_bytes(&self) -> u64 {
        self.storage_max.saturating_sub(self.repo_size)
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum IpfsError {
    /// Connection refused/reset, DNS, HTTP-level failure: the node may come back.
    #[error("node unreachable: {0}")]
    Unreachable(String),
    /// The node answered that the operation timed out (e.g. content not found in time).
    #[error("node timed out: {0}")]
    TimedOut(String),
    /// The node rejected the request (bad CID, not pinned, …): retrying will not help.
    #[error("node rejected the request: {0}")]
    Rejected(String),
    /// The answer could not be understood.
    #[error("unexpected answer: {0}")]
    BadResponse(String),
}

impl IpfsError {
    /// Errors worth retrying with backoff.
    pub fn is_retryable(&self) -> bool {
        matches!(self, IpfsError::Unreachable(_) | IpfsError::TimedOut(_))
    }

    /// Errors that say something about the node's health (they feed the circuit breaker).
    pub fn is_node_failure(&self) -> bool {
        matches!(self, IpfsError::Unreachable(_) | IpfsError::BadResponse(_))
    }
}

/// The subset of the Kubo RPC API pinhive uses.
#[async_trait]
pub trait IpfsApi: Send + Sync + 'static {
    async fn id(&self) -> Result<NodeIdentity, IpfsError>;
    async fn repo_stat(&self) -> Result<RepoStat, IpfsError>;
    /// Recursive pin; `timeout` bounds how long the node searches for the content.
    async fn pin_add(&self, cid: &str, timeout: Duration) -> Result<(), IpfsError>;
    /// Unpin; a CID that is not pinned counts as success (idempotent).
    async fn pin_rm(&self, cid: &str) -> Result<(), IpfsError>;
    /// True if the node holds a recursive pin of `cid`.
    async fn pin_ls(&self, cid: &str) -> Result<bool, IpfsError>;
    /// Every recursive pin of the node, as the node spells the CIDs, streamed: the caller sees
    /// one pin at a time and the answer is never held whole (a node may pin millions). The
    /// stream ends with an error item if the node breaks off.
    async fn pin_ls_all(&self) -> Result<PinStream, IpfsError>;
    /// Size of `cid`'s root block if the node holds it locally; an error if it cannot read it
    /// within a few seconds (integrity sampling: a pinned CID whose root is unreadable).
    async fn block_stat(&self, cid: &str) -> Result<u64, IpfsError>;
    async fn swarm_connect(&self, multiaddr: &str) -> Result<(), IpfsError>;
}

/// A node's recursive pins, one CID per item (see [`IpfsApi::pin_ls_all`]).
pub type PinStream = futures::stream::BoxStream<'static, Result<String, IpfsError>>;

/// Where node drivers publish outcome events (the log, in production).
#[async_trait]
pub trait OutcomeSink: Send + Sync + 'static {
    async fn publish(&self, envelope: pinhive_events::Envelope) -> Result<(), String>;
}

#[cfg(test)]
mod tests {
    use super::IpfsError;
    use pinhive_domain::disclosure::{self, failure_category};

    /// The tenant-visible failure reasons are derived from these errors' display (the node
    /// drivers record `error.to_string()` in `ReplicaFailed`): a change of wording here must
    /// keep its category.
    #[test]
    fn every_error_maps_to_its_tenant_visible_category() {
        let raw = "http://user:secret@10.0.0.7:5001 said: node unreachable, node timed out";
        let table = [
            (
                IpfsError::TimedOut(raw.into()),
                disclosure::FAILURE_NOT_FOUND,
            ),
            (
                IpfsError::Rejected(raw.into()),
                disclosure::FAILURE_REJECTED,
            ),
            (
                IpfsError::Unreachable(raw.into()),
                disclosure::FAILURE_NODE_UNAVAILABLE,
            ),
            (
                IpfsError::BadResponse(raw.into()),
                disclosure::FAILURE_NODE_ERROR,
            ),
        ];
        for (error, category) in table {
            assert_eq!(failure_category(&error.to_string()), category, "{error}");
        }
    }
}
