//! Demand tracking in bounded memory (see the crate docs and docs/analytics.md).

use pinhive_domain::analytics::{Candidate, Decision, Memory};
use serde::{Deserialize, Serialize};

/// Shape of a tracker (config file `[analytics]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrackerConfig {
    /// Regions with nodes (index = region id of the optimizer).
    pub regions: Vec<String>,
    /// Heavy hitters kept with exact per-region state (the table holds at most 2 × this during
    /// an epoch and is trimmed back at its end).
    pub top_k: usize,
    /// Count-Min sketch shape (admission estimates).
    pub sketch_hashes: u8,
    pub sketch_buckets: u32,
    /// Epoch length; counters decay once per epoch.
    pub epoch_secs: f64,
    /// Two half-lives; demand β = max(fast rate, slow rate).
    pub fast_half_life_secs: f64,
    pub slow_half_life_secs: f64,
}

/// Demand of one tracked CID, for explanations (admin API).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrackedDemand {
    pub cid: String,
    pub size_bytes: u64,
    /// (region, bytes per second), regions with nodes first, then "other".
    pub demand: Vec<(String, f64)>,
    pub memory: Memory,
}

/// Tracker of one analytics partition.
pub struct Tracker {
    _config: TrackerConfig,
}

impl Tracker {
    pub fn new(config: TrackerConfig) -> Self {
        Tracker { _config: config }
    }

    /// Counts one read: `bytes` from `region` of `cid` (canonical), `age_secs` ago (≥ 0; older
    /// reads are decayed by their age), `size` if the reporter knows the object's size.
    pub fn record(&mut self, cid: &str, region: &str, bytes: u64, size: Option<u64>, age_secs: f64) {
        let _ = (cid, region, bytes, size, age_secs);
        todo!()
    }

    /// Closes the epoch: decays every counter, trims the table to `top_k`, returns the CIDs
    /// evicted while a raised target was in force (their target must be reset to `min`).
    pub fn end_epoch(&mut self) -> Vec<String> {
        todo!()
    }

    /// Number of the current epoch (starts at 0, +1 per `end_epoch`).
    pub fn epoch(&self) -> u64 {
        todo!()
    }

    /// The optimizer's input: every tracked CID whose `bounds` are known (pins exist), as a
    /// candidate with its current demand rates.
    pub fn candidates(&self, bounds: &mut dyn FnMut(&str) -> Option<(u8, u8)>) -> Vec<Candidate> {
        let _ = bounds;
        todo!()
    }

    /// Stores the decisions' memory for the next epoch.
    pub fn remember(&mut self, decisions: &[Decision]) {
        let _ = decisions;
        todo!()
    }

    /// Demand of `cid` if tracked.
    pub fn demand(&self, cid: &str) -> Option<TrackedDemand> {
        let _ = cid;
        todo!()
    }

    /// Number of tracked CIDs.
    pub fn tracked(&self) -> usize {
        todo!()
    }

    /// Approximate heap bytes (sketch + table).
    pub fn memory_bytes(&self) -> usize {
        todo!()
    }

    /// Checkpoint form (versioned), and back.
    pub fn encode(&self) -> Vec<u8> {
        todo!()
    }

    pub fn decode(config: TrackerConfig, bytes: &[u8]) -> Result<Self, String> {
        let _ = (config, bytes);
        todo!()
    }
}
