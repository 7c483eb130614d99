//! Where replicas sit under each strategy, computed on demand with the allocator the shard uses
//! (`pinhive_domain::allocator::allocate`), so nothing is stored per CID for the baseline and
//! only the raised targets in force are stored for the optimizer.

use std::collections::{BTreeSet, HashMap};

use pinhive_domain::allocator::{allocate, NodeView};

/// Replicas every pin gets from the optimizer's side (the pins' `min`).
pub const MIN_REPLICAS: u8 = 2;
/// Replicas of the fixed baseline.
pub const FIXED_REPLICAS: usize = 3;

/// The simulated fleet: `nodes_per_region` nodes in each region, equal weights, all healthy.
pub struct Fleet {
    pub region_names: Vec<String>,
    nodes: Vec<NodeView>,
    region_of_node: HashMap<String, u16>,
}

impl Fleet {
    pub fn new(regions: u16, nodes_per_region: usize) -> Self {
        let region_names: Vec<String> = (0..regions).map(|r| format!("region-{r}")).collect();
        let mut nodes = Vec::new();
        let mut region_of_node = HashMap::new();
        for (region, name) in region_names.iter().enumerate() {
            for n in 0..nodes_per_region {
                let id = format!("node-{region}-{n}");
                region_of_node.insert(id.clone(), region as u16);
                nodes.push(NodeView {
                    id,
                    region: name.clone(),
                    weight: 1,
                    healthy: true,
                    free_bytes: None,
                    state: pinhive_events::NodeState::Up,
                });
            }
        }
        Fleet {
            region_names,
            nodes,
            region_of_node,
        }
    }

    pub fn region_id(&self, name: &str) -> Option<u16> {
        self.region_names
            .iter()
            .position(|r| r == name)
            .map(|r| r as u16)
    }

    fn regions_of(&self, nodes: &[String]) -> u64 {
        nodes
            .iter()
            .filter_map(|id| self.region_of_node.get(id))
            .fold(0, |mask, &region| mask | 1 << region)
    }

    /// Nodes of the fixed replication factor: the allocator with no preference.
    pub fn fixed_nodes(&self, cid: &str) -> Vec<String> {
        self.allocate(cid, &BTreeSet::new(), &BTreeSet::new(), &[], FIXED_REPLICAS)
    }

    /// Regions (bit mask) holding a replica under the fixed replication factor.
    pub fn fixed_regions(&self, cid: &str) -> u64 {
        self.regions_of(&self.fixed_nodes(cid))
    }

    /// Nodes under the optimizer: `min` replicas placed as for any pin, then the replicas above
    /// `min` the way the shard adds them (existing regions used, preferred regions first).
    pub fn optimized_nodes(&self, cid: &str, raised: Option<&Raised>) -> Vec<String> {
        let mut nodes = self.allocate(
            cid,
            &BTreeSet::new(),
            &BTreeSet::new(),
            &[],
            usize::from(MIN_REPLICAS),
        );
        let Some(raised) = raised else {
            return nodes;
        };
        let extra = usize::from(raised.target.saturating_sub(MIN_REPLICAS));
        if extra == 0 {
            return nodes;
        }
        let exclude: BTreeSet<String> = nodes.iter().cloned().collect();
        let used: BTreeSet<String> = nodes
            .iter()
            .filter_map(|id| self.region_of_node.get(id))
            .map(|&r| self.region_names[usize::from(r)].clone())
            .collect();
        let preferred: Vec<String> = raised
            .preferred
            .iter()
            .map(|&r| self.region_names[usize::from(r)].clone())
            .collect();
        nodes.extend(self.allocate(cid, &exclude, &used, &preferred, extra));
        nodes
    }

    /// Regions (bit mask) holding a replica under the optimizer.
    pub fn optimized_regions(&self, cid: &str, raised: Option<&Raised>) -> u64 {
        self.regions_of(&self.optimized_nodes(cid, raised))
    }

    fn allocate(
        &self,
        cid: &str,
        exclude: &BTreeSet<String>,
        used: &BTreeSet<String>,
        preferred: &[String],
        count: usize,
    ) -> Vec<String> {
        allocate(cid, &self.nodes, exclude, used, preferred, count, 0)
    }
}

/// A target above `min` in force for one CID.
#[derive(Clone, Debug, PartialEq)]
pub struct Raised {
    pub target: u8,
    /// Region ids, highest demand first.
    pub preferred: Vec<u16>,
}

/// Region ids set in `mask`.
pub fn mask_regions(mask: u64) -> Vec<u16> {
    (0..64).filter(|r| mask & (1 << r) != 0).collect()
}

/// Replica moves between two node sets: nodes added plus nodes removed.
pub fn moves(before: &[String], after: &[String]) -> usize {
    let added = after.iter().filter(|n| !before.contains(n)).count();
    let removed = before.iter().filter(|n| !after.contains(n)).count();
    added + removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optimizer_base_is_within_the_fixed_placement() {
        let fleet = Fleet::new(8, 2);
        for i in 0..500 {
            let cid = format!("cid-{i}");
            let fixed = fleet.fixed_nodes(&cid);
            let base = fleet.optimized_nodes(&cid, None);
            assert_eq!(fixed.len(), 3);
            assert_eq!(fleet.fixed_regions(&cid).count_ones(), 3);
            assert!(base.iter().all(|n| fixed.contains(n)), "{base:?} {fixed:?}");
        }
    }

    #[test]
    fn raised_target_lands_in_preferred_regions() {
        let fleet = Fleet::new(8, 2);
        for i in 0..200 {
            let cid = format!("cid-{i}");
            let base = fleet.optimized_regions(&cid, None);
            let missing = (0..8u16).find(|r| base & (1 << r) == 0).unwrap();
            let raised = Raised {
                target: 3,
                preferred: vec![missing],
            };
            let mask = fleet.optimized_regions(&cid, Some(&raised));
            assert_eq!(mask, base | 1 << missing);
            assert_eq!(
                moves(
                    &fleet.optimized_nodes(&cid, None),
                    &fleet.optimized_nodes(&cid, Some(&raised))
                ),
                1
            );
        }
    }
}
