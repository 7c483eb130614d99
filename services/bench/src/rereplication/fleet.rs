//! The simulated fleet of one run: the IPFS factory `serve::start` builds its node clients
//! with, keeping each node's `SimulatedIpfs` so the bench can make one fail (its fault
//! injection) and count what every node holds — the data, not what pinhive believes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pinhive_events::NodeDescriptor;
use pinhive_ipfs::{IpfsApi, SimulatedIpfs};
use pinhive_server::serve::IpfsFactory;

use super::timeline::Holdings;

#[derive(Default)]
pub struct Fleet {
    nodes: Mutex<BTreeMap<String, Arc<SimulatedIpfs>>>,
}

impl Fleet {
    /// Builds (or hands back, when a driver is restarted) the node's simulated daemon.
    pub fn factory(self: &Arc<Self>) -> IpfsFactory {
        let fleet = self.clone();
        Arc::new(move |node: &NodeDescriptor| {
            let mut nodes = fleet
                .nodes
                .lock()
                .map_err(|_| anyhow::anyhow!("fleet lock poisoned"))?;
            let ipfs = nodes
                .entry(node.id.clone())
                .or_insert_with(|| Arc::new(SimulatedIpfs::new(&node.id, Duration::ZERO)));
            Ok(ipfs.clone() as Arc<dyn IpfsApi>)
        })
    }

    pub fn node(&self, id: &str) -> Option<Arc<SimulatedIpfs>> {
        self.nodes.lock().ok()?.get(id).cloned()
    }

    fn snapshot(&self) -> Vec<(String, Arc<SimulatedIpfs>)> {
        self.nodes
            .lock()
            .map(|nodes| {
                nodes
                    .iter()
                    .map(|(id, n)| (id.clone(), n.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Replicas held by every node but `except`.
    pub fn replicas_held(&self, except: Option<&str>) -> usize {
        self.snapshot()
            .iter()
            .filter(|(id, _)| Some(id.as_str()) != except)
            .map(|(_, node)| node.pinned_count())
            .sum()
    }

    /// Which nodes hold each of `cids` now.
    pub fn holdings(&self, cids: &[String]) -> Holdings {
        let nodes = self.snapshot();
        let of: HashMap<String, Vec<u16>> = cids
            .iter()
            .map(|cid| {
                let held = nodes
                    .iter()
                    .enumerate()
                    .filter(|(_, (_, node))| node.holds(cid))
                    .filter_map(|(i, _)| u16::try_from(i).ok())
                    .collect();
                (cid.clone(), held)
            })
            .collect();
        Holdings {
            nodes: nodes.into_iter().map(|(id, _)| id).collect(),
            of,
        }
    }
}
