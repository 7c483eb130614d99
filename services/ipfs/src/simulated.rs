//! An in-process IPFS node for benchmarks (thousands of nodes) and fault injection. Never the
//! only proof a feature works: integration tests use a real daemon.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::{IpfsApi, IpfsError, NodeIdentity, RepoStat};

pub struct SimulatedIpfs {
    peer_id: String,
    pinned: Mutex<HashSet<String>>,
    latency: Duration,
    /// The next this-many calls fail as unreachable (fault injection).
    failures_left: AtomicU32,
    pub pin_calls: AtomicU64,
}

impl SimulatedIpfs {
    pub fn new(peer_id: &str, latency: Duration) -> Self {
        SimulatedIpfs {
            peer_id: peer_id.to_string(),
            pinned: Mutex::new(HashSet::new()),
            latency,
            failures_left: AtomicU32::new(0),
            pin_calls: AtomicU64::new(0),
        }
    }

    pub fn fail_next(&self, calls: u32) {
        self.failures_left.store(calls, Ordering::SeqCst);
    }

    pub fn pinned_count(&self) -> usize {
        self.pinned.lock().len()
    }

    pub fn holds(&self, cid: &str) -> bool {
        self.pinned.lock().contains(cid)
    }

    async fn step(&self) -> Result<(), IpfsError> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let injected = self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if injected {
            return Err(IpfsError::Unreachable("injected failure".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl IpfsApi for SimulatedIpfs {
    async fn id(&self) -> Result<NodeIdentity, IpfsError> {
        self.step().await?;
        Ok(NodeIdentity {
            peer_id: self.peer_id.clone(),
            // A parseable address that names the simulated node (it has no real endpoint).
            addresses: vec![format!("/dns4/{}.simulated.invalid/tcp/4001", self.peer_id)],
        })
    }

    async fn repo_stat(&self) -> Result<RepoStat, IpfsError> {
        self.step().await?;
        Ok(RepoStat {
            repo_size: self.pinned.lock().len() as u64 * 1024,
            storage_max: 1 << 40,
        })
    }

    async fn pin_add(&self, cid: &str, _timeout: Duration) -> Result<(), IpfsError> {
        self.pin_calls.fetch_add(1, Ordering::Relaxed);
        self.step().await?;
        self.pinned.lock().insert(cid.to_string());
        Ok(())
    }

    async fn pin_rm(&self, cid: &str) -> Result<(), IpfsError> {
        self.step().await?;
        self.pinned.lock().remove(cid);
        Ok(())
    }

    async fn pin_ls(&self, cid: &str) -> Result<bool, IpfsError> {
        self.step().await?;
        Ok(self.holds(cid))
    }

    async fn pin_ls_all(&self) -> Result<crate::PinStream, IpfsError> {
        self.step().await?;
        // The simulated node keeps its pins in memory anyway; a snapshot is what a real node's
        // answer would stream.
        let pins: Vec<Result<String, IpfsError>> =
            self.pinned.lock().iter().cloned().map(Ok).collect();
        Ok(Box::pin(futures::stream::iter(pins)))
    }

    async fn block_stat(&self, cid: &str) -> Result<u64, IpfsError> {
        self.step().await?;
        if self.holds(cid) {
            Ok(1024)
        } else {
            Err(IpfsError::TimedOut(format!("block/stat {cid}: not held")))
        }
    }

    async fn swarm_connect(&self, _multiaddr: &str) -> Result<(), IpfsError> {
        self.step().await
    }
}
