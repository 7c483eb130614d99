//! Simulated IPFS nodes for benchmarks (`pinhive serve --ipfs-simulated N` and the in-process
//! benchmarks): the node drivers, shards and log run for real; only the daemon is replaced by
//! an in-process node that answers at once, so the pipeline rather than a daemon is measured.

use std::sync::Arc;
use std::time::Duration;

use pinhive_events::NodeDescriptor;
use pinhive_ipfs::{IpfsApi, NodeDriverConfig, SimulatedIpfs};

use crate::serve::IpfsFactory;

/// IPFS clients for benchmarks: in-process simulated nodes that answer at once.
pub fn simulated_factory() -> IpfsFactory {
    Arc::new(|node: &NodeDescriptor| {
        Ok(Arc::new(SimulatedIpfs::new(&node.id, Duration::ZERO)) as Arc<dyn IpfsApi>)
    })
}

/// Node driver settings for simulated nodes (no network: wide concurrency, quick health).
pub fn simulated_drivers() -> NodeDriverConfig {
    NodeDriverConfig {
        concurrency: 256,
        max_queued: 1 << 14,
        health_interval: Duration::from_millis(200),
        ..NodeDriverConfig::default()
    }
}

/// `count` node specs (`sim-I=http://simulated-I.invalid`) the simulated factory serves.
pub fn simulated_node_specs(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("sim-{i}=http://simulated-{i}.invalid"))
        .collect()
}
