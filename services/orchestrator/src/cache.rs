//! The CID-state cache every shard of this process shares, bounded by bytes.
//!
//! A cache per shard bounded by entries cannot bound memory: CID states differ in size (one
//! replica or sixty-four, short or long failure reasons). This one weighs each state by an
//! estimate of its heap size and evicts (CLOCK-Pro, `quick_cache`) to stay within
//! `cache_bytes` in total. It holds committed states only: a shard puts a state after its
//! batch is committed, and drops a partition's states when it stops owning the partition.

use std::sync::Arc;

use pinhive_domain::CidState;
use quick_cache::sync::Cache;
use quick_cache::Weighter;

struct Cached {
    partition: u32,
    state: CidState,
    bytes: u64,
}

#[derive(Clone)]
struct ByBytes;

impl Weighter<String, Arc<Cached>> for ByBytes {
    fn weight(&self, key: &String, value: &Arc<Cached>) -> u64 {
        // The entry itself: key, Arc, the cached struct.
        key.len() as u64 + 96 + value.bytes
    }
}

/// Shared by all shards (`Clone` shares it).
#[derive(Clone)]
pub struct StateCache {
    inner: Arc<Cache<String, Arc<Cached>, ByBytes>>,
}

/// Heap size of a state, estimated the way the allocations are laid out: B-tree maps hold
/// their entries in nodes of up to 11 (a map of one entry costs a whole leaf), vectors and
/// strings their capacity, and every allocation a few bytes of allocator overhead.
fn approx_bytes(state: &CidState) -> u64 {
    use std::mem::size_of;
    const ALLOCATION: usize = 16;
    fn map<K, V>(len: usize) -> usize {
        // Leaf nodes of 11 slots, plus a parent pointer and lengths.
        len.div_ceil(11) * (11 * (size_of::<K>() + size_of::<V>()) + 16 + ALLOCATION)
    }
    let text = |s: &str| {
        if s.is_empty() {
            0
        } else {
            s.len() + ALLOCATION
        }
    };
    let texts = |list: &[String]| {
        list.iter().map(|s| text(s)).sum::<usize>()
            + if list.is_empty() {
                0
            } else {
                std::mem::size_of_val(list) + ALLOCATION
            }
    };
    let mut bytes = size_of::<CidState>() + text(&state.cid);
    bytes += state.bounds.len() * size_of::<pinhive_domain::state::BoundCount>() + ALLOCATION;
    bytes += map::<String, pinhive_domain::PinRef>(state.holds.len())
        + state
            .holds
            .iter()
            .map(|(id, hold)| text(id) + text(&hold.owner))
            .sum::<usize>();
    bytes += map::<String, pinhive_domain::Release>(state.releases.len())
        + state
            .releases
            .iter()
            .map(|(id, release)| text(id) + text(&release.cid) + text(&release.by))
            .sum::<usize>();
    bytes += map::<String, pinhive_domain::ReplicaState>(state.replicas.len())
        + state
            .replicas
            .iter()
            .map(|(node, replica)| text(node) + replica.last_error.as_deref().map_or(0, text))
            .sum::<usize>();
    bytes += texts(&state.preferred_regions) + texts(&state.origins);
    bytes as u64
}

impl StateCache {
    /// A cache holding at most `bytes` of states (estimated).
    pub fn new(bytes: u64) -> Self {
        // quick_cache sizes its tables from an item estimate: assume ~1 KiB per state.
        let items = usize::try_from(bytes / 1024).unwrap_or(usize::MAX).max(16);
        StateCache {
            inner: Arc::new(Cache::with_weighter(items, bytes.max(1), ByBytes)),
        }
    }

    pub fn get(&self, cid: &str) -> Option<CidState> {
        self.inner.get(cid).map(|cached| cached.state.clone())
    }

    pub fn put(&self, partition: u32, state: CidState) {
        let bytes = approx_bytes(&state);
        self.inner.insert(
            state.cid.clone(),
            Arc::new(Cached {
                partition,
                state,
                bytes,
            }),
        );
    }

    pub fn remove(&self, cid: &str) {
        self.inner.remove(cid);
    }

    /// Drops every state of `partition` (ownership moved, or a batch failed half-written).
    pub fn clear_partition(&self, partition: u32) {
        self.inner.retain(|_, cached| cached.partition != partition);
    }

    /// Estimated bytes held.
    pub fn weight(&self) -> u64 {
        self.inner.weight()
    }

    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_its_byte_budget() {
        let cache = StateCache::new(64 * 1024);
        for i in 0..10_000 {
            let mut state = CidState::new(format!("cid-{i:05}"));
            state.origins = vec!["x".repeat(100)];
            cache.put(0, state);
        }
        assert!(cache.weight() <= 64 * 1024, "{}", cache.weight());
        assert!(cache.len() > 10, "{}", cache.len());
        assert!(cache.len() < 10_000, "{}", cache.len());
    }

    #[test]
    fn clearing_a_partition_keeps_the_others() {
        let cache = StateCache::new(1 << 20);
        cache.put(1, CidState::new("a"));
        cache.put(2, CidState::new("b"));
        cache.clear_partition(1);
        assert!(cache.get("a").is_none());
        assert_eq!(cache.get("b").map(|s| s.cid), Some("b".to_string()));
    }
}
