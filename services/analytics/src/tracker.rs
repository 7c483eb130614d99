//! Demand tracking in bounded memory (see the crate docs and docs/analytics.md).
//!
//! Two structures whose size is set by the config, never by the number of CIDs:
//!
//! * a Count-Min sketch (Apache DataSketches) keyed by `xxh3_64(cid)`, whose cells hold bytes
//!   decayed at the slow half-life. It only decides admission: a CID enters the table when its
//!   estimate reaches the lowest score the table kept at its last trim.
//! * a table of heavy hitters with exact per-region byte sums decayed at two half-lives and the
//!   optimizer's [`Memory`]. It holds at most `2 × top_k` CIDs during an epoch and is trimmed
//!   back to the `top_k` highest scores when the epoch ends.
//!
//! Sums decay once per epoch by `2^(−E/H)`; a steady stream of `R` bytes/s then converges to a
//! sum of `R·E / (1 − d)` at the end of an epoch, so `sum·(1 − d)/E` is its rate.

use std::collections::HashMap;
use std::mem::size_of;

use datasketches::countmin::CountMinSketch;
use pinhive_domain::analytics::{Candidate, Decision, Memory};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

/// First byte of [`Tracker::encode`]; bumped on any change of the layout behind it.
const CHECKPOINT_VERSION: u8 = 1;
/// Name of the slot that collects reads from regions without nodes.
pub const OTHER_REGION: &str = "other";
/// A CID whose score (decayed bytes) fell below this and that has no target in force is
/// forgotten at the end of an epoch: there is nothing left to remember about it.
const FORGET_BELOW_BYTES: f64 = 1.0;
/// DataSketches refuses sketches with this many cells or more.
const MAX_SKETCH_CELLS: u64 = 1 << 30;

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

impl TrackerConfig {
    /// Refuses shapes that cannot work, with a message naming the field.
    pub fn validate(&self) -> Result<(), String> {
        // Region ids are u16 and the "other" slot takes the id after the last region.
        if self.regions.len() >= usize::from(u16::MAX) {
            return Err(format!(
                "analytics.regions: {} regions, at most {} supported",
                self.regions.len(),
                u16::MAX - 1
            ));
        }
        for (index, region) in self.regions.iter().enumerate() {
            if region.is_empty() {
                return Err(format!("analytics.regions[{index}] is empty"));
            }
            if region == OTHER_REGION {
                return Err(format!(
                    "analytics.regions[{index}]: {OTHER_REGION:?} is reserved for regions without nodes"
                ));
            }
            if self.regions[..index].contains(region) {
                return Err(format!("analytics.regions: {region:?} is listed twice"));
            }
        }
        if self.top_k == 0 {
            return Err("analytics.top_k must be at least 1".into());
        }
        if self.top_k.checked_mul(2).is_none() {
            return Err(format!("analytics.top_k {} is too large", self.top_k));
        }
        if self.sketch_hashes == 0 {
            return Err("analytics.sketch_hashes must be at least 1".into());
        }
        if self.sketch_buckets < 3 {
            return Err(format!(
                "analytics.sketch_buckets must be at least 3, not {}",
                self.sketch_buckets
            ));
        }
        if u64::from(self.sketch_hashes) * u64::from(self.sketch_buckets) >= MAX_SKETCH_CELLS {
            return Err(format!(
                "analytics.sketch_hashes × sketch_buckets must be below {MAX_SKETCH_CELLS}"
            ));
        }
        positive_finite("analytics.epoch_secs", self.epoch_secs)?;
        positive_finite("analytics.fast_half_life_secs", self.fast_half_life_secs)?;
        positive_finite("analytics.slow_half_life_secs", self.slow_half_life_secs)?;
        if self.fast_half_life_secs > self.slow_half_life_secs {
            return Err(format!(
                "analytics.fast_half_life_secs ({}) must not exceed slow_half_life_secs ({})",
                self.fast_half_life_secs, self.slow_half_life_secs
            ));
        }
        Ok(())
    }
}

fn positive_finite(name: &str, value: f64) -> Result<(), String> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(format!(
            "{name} must be a positive number of seconds, not {value}"
        ))
    }
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

/// Bytes read from one region, decayed at both half-lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
struct DecayedBytes {
    fast: f64,
    slow: f64,
}

/// A heavy hitter.
#[derive(Debug)]
struct Entry {
    cid: Box<str>,
    /// Largest of the reported object size and the largest read seen.
    size_bytes: u64,
    /// Per region id; the last slot is [`OTHER_REGION`].
    sums: Box<[DecayedBytes]>,
    memory: Memory,
}

impl Entry {
    /// Decayed bytes read, the larger half-life view per region.
    fn bytes(&self) -> f64 {
        self.sums.iter().map(|sums| sums.fast.max(sums.slow)).sum()
    }

    /// What the table ranks by: decayed full copies read (bytes / size). The optimizer ranks
    /// extra replicas by views per day, so the table keeps the CIDs it would grant first; a
    /// byte ranking would evict small popular objects the budget favours, and they would
    /// flap between evicted (reset to min) and re-admitted (raised again).
    fn score(&self) -> f64 {
        self.bytes() / self.size_bytes.max(1) as f64
    }

    /// A target or a geo region is in force: evicting it would mean a reset.
    fn raised(&self) -> bool {
        self.memory.target != 0 || !self.memory.regions.is_empty()
    }

    fn heap_bytes(&self) -> usize {
        self.cid.len()
            + self.sums.len() * size_of::<DecayedBytes>()
            + self.memory.regions.capacity() * size_of::<u16>()
            + self.memory.below_since.capacity() * size_of::<(u16, u64)>()
    }
}

/// Tracker of one analytics partition.
///
/// Call order per epoch: [`record`](Self::record) every read, then
/// [`candidates`](Self::candidates) → optimizer → [`remember`](Self::remember), then
/// [`end_epoch`](Self::end_epoch). Rates read before `end_epoch` include the epoch just
/// finished, which is when a steady stream's rate is exact.
pub struct Tracker {
    config: TrackerConfig,
    sketch: CountMinSketch<u64>,
    table: HashMap<u64, Entry>,
    epoch: u64,
    /// Lowest score kept at the last trim (decayed since, like the sketch): an untracked CID
    /// whose estimate reaches it may take one of the `top_k` spare slots.
    admission_threshold: f64,
    /// Per-epoch decay factors 2^(−E/H).
    fast_decay: f64,
    slow_decay: f64,
    /// (1 − d) / E: decayed sum → bytes per second.
    fast_rate: f64,
    slow_rate: f64,
}

impl Tracker {
    /// An empty tracker for a validated config.
    ///
    /// # Panics
    ///
    /// If `config` does not pass [`TrackerConfig::validate`] (the analytics config validates
    /// it at start-up); [`try_new`](Self::try_new) returns the message instead.
    pub fn new(config: TrackerConfig) -> Self {
        Self::try_new(config).unwrap_or_else(|error| panic!("invalid tracker config: {error}"))
    }

    /// An empty tracker; refuses a config [`TrackerConfig::validate`] refuses.
    pub fn try_new(config: TrackerConfig) -> Result<Self, String> {
        config.validate()?;
        let sketch = CountMinSketch::new(config.sketch_hashes, config.sketch_buckets)
            .map_err(|error| format!("analytics sketch shape: {error}"))?;
        Ok(Self::with_sketch(config, sketch))
    }

    fn with_sketch(config: TrackerConfig, sketch: CountMinSketch<u64>) -> Self {
        let (fast_decay, fast_rate) =
            decay_per_epoch(config.epoch_secs, config.fast_half_life_secs);
        let (slow_decay, slow_rate) =
            decay_per_epoch(config.epoch_secs, config.slow_half_life_secs);
        // Never grows: the table holds at most 2 × top_k entries.
        let table = HashMap::with_capacity(2 * config.top_k);
        Tracker {
            config,
            sketch,
            table,
            epoch: 0,
            admission_threshold: 0.0,
            fast_decay,
            slow_decay,
            fast_rate,
            slow_rate,
        }
    }

    /// Counts one read: `bytes` from `region` of `cid` (canonical), `age_secs` ago (≥ 0; older
    /// reads are decayed by their age), `size` if the reporter knows the object's size.
    pub fn record(
        &mut self,
        cid: &str,
        region: &str,
        bytes: u64,
        size: Option<u64>,
        age_secs: f64,
    ) {
        let hash = xxh3_64(cid.as_bytes());
        let slot = self.region_slot(region);
        let (fast_bytes, slow_bytes) = if age_secs > 0.0 {
            (
                bytes as f64 * (-age_secs / self.config.fast_half_life_secs).exp2(),
                bytes as f64 * (-age_secs / self.config.slow_half_life_secs).exp2(),
            )
        } else {
            (bytes as f64, bytes as f64)
        };
        // Saturating: the library panics when its total weight overflows (18 EB of reads).
        let sketch_weight = (slow_bytes.round() as u64).min(u64::MAX - self.sketch.total_weight());
        self.sketch.update_with_weight(hash, sketch_weight);
        let size_bytes = size.unwrap_or(0).max(bytes);

        if let Some(entry) = self.table.get_mut(&hash) {
            // An xxh3 collision: the slot belongs to the CID admitted first.
            if *entry.cid != *cid {
                return;
            }
            entry.size_bytes = entry.size_bytes.max(size_bytes);
            entry.sums[slot].fast += fast_bytes;
            entry.sums[slot].slow += slow_bytes;
            return;
        }
        if sketch_weight == 0 {
            return;
        }
        // Compared in views (copies read), like the table's scores.
        let estimate = self.sketch.estimate(hash) as f64 / size_bytes.max(1) as f64;
        let tracked = self.table.len();
        let admit = tracked < self.config.top_k
            || (tracked < 2 * self.config.top_k && estimate >= self.admission_threshold);
        if !admit {
            return;
        }
        let mut sums = vec![DecayedBytes::default(); self.config.regions.len() + 1];
        // Exact counts start with this read: the sketch's estimate only admits. It over-counts
        // (other CIDs share its cells), and carried into the table it would raise a small
        // object that collides with a large one, only to lower it again as the inflated
        // history decays.
        sums[slot] = DecayedBytes {
            fast: fast_bytes,
            slow: slow_bytes,
        };
        self.table.insert(
            hash,
            Entry {
                cid: cid.into(),
                size_bytes,
                sums: sums.into_boxed_slice(),
                memory: Memory::default(),
            },
        );
    }

    /// Closes the epoch: decays every counter, trims the table to `top_k`, returns the CIDs
    /// evicted while a raised target was in force (their target must be reset to `min`).
    pub fn end_epoch(&mut self) -> Vec<String> {
        self.epoch += 1;
        let (fast_decay, slow_decay) = (self.fast_decay, self.slow_decay);
        self.sketch.decay(slow_decay);
        self.admission_threshold *= slow_decay;

        // The table is drained and refilled rather than edited in place: removals would leave
        // tombstones, and a table full of them reallocates at twice its size mid-epoch. Drain
        // keeps the allocation.
        let mut kept: Vec<(f64, u64, Entry)> = Vec::with_capacity(self.table.len());
        for (hash, mut entry) in self.table.drain() {
            for sums in entry.sums.iter_mut() {
                sums.fast *= fast_decay;
                sums.slow *= slow_decay;
            }
            if !entry.raised() && entry.bytes() < FORGET_BELOW_BYTES {
                continue;
            }
            kept.push((entry.score(), hash, entry));
        }

        let top_k = self.config.top_k;
        let mut evicted_with_target = Vec::new();
        if kept.len() > top_k {
            // CIDs with a target in force first (evicting one means a reset, and re-admitting
            // it a raise: flapping), then the highest score; ties by hash so that replicas of a
            // partition agree. Only more than `top_k` raised CIDs can evict a raised one.
            kept.select_nth_unstable_by(top_k - 1, |(score_a, hash_a, a), (score_b, hash_b, b)| {
                b.raised()
                    .cmp(&a.raised())
                    .then(score_b.total_cmp(score_a))
                    .then(hash_a.cmp(hash_b))
            });
            for (_, _, entry) in kept.drain(top_k..) {
                if entry.raised() {
                    evicted_with_target.push(String::from(entry.cid));
                }
            }
            self.admission_threshold = kept
                .iter()
                .map(|(score, _, _)| *score)
                .fold(f64::INFINITY, f64::min);
            evicted_with_target.sort_unstable();
        }
        self.table
            .extend(kept.into_iter().map(|(_, hash, entry)| (hash, entry)));
        evicted_with_target
    }

    /// Number of the current epoch (starts at 0, +1 per `end_epoch`).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The optimizer's input: every tracked CID whose `bounds` are known (pins exist), as a
    /// candidate with its current demand rates. Sorted by CID; `held_regions` is left empty
    /// for the caller to fill.
    pub fn candidates(&self, bounds: &mut dyn FnMut(&str) -> Option<(u8, u8)>) -> Vec<Candidate> {
        let mut entries: Vec<&Entry> = self.table.values().collect();
        entries.sort_unstable_by(|a, b| a.cid.cmp(&b.cid));
        let regions = self.config.regions.len();
        entries
            .into_iter()
            .filter_map(|entry| {
                let (min, max) = bounds(&entry.cid)?;
                let mut demand: Vec<f64> = entry.sums.iter().map(|sums| self.rate(sums)).collect();
                let other_demand = demand.pop().unwrap_or(0.0);
                debug_assert_eq!(demand.len(), regions);
                let sustained: Vec<f64> = entry.sums[..regions]
                    .iter()
                    .map(|sums| sums.slow * self.slow_rate)
                    .collect();
                Some(Candidate {
                    cid: entry.cid.to_string(),
                    size_bytes: entry.size_bytes.max(1),
                    demand,
                    other_demand,
                    sustained,
                    held_regions: Vec::new(),
                    min,
                    max,
                    memory: entry.memory.clone(),
                })
            })
            .collect()
    }

    /// Stores the decisions' memory for the next epoch (decisions for CIDs no longer tracked
    /// are ignored).
    pub fn remember(&mut self, decisions: &[Decision]) {
        for decision in decisions {
            if let Some(entry) = self.tracked_entry_mut(&decision.cid) {
                entry.memory = decision.memory.clone();
            }
        }
    }

    /// Demand of `cid` if tracked.
    pub fn demand(&self, cid: &str) -> Option<TrackedDemand> {
        let entry = self.table.get(&xxh3_64(cid.as_bytes()))?;
        if *entry.cid != *cid {
            return None;
        }
        let names = self
            .config
            .regions
            .iter()
            .map(String::as_str)
            .chain([OTHER_REGION]);
        Some(TrackedDemand {
            cid: cid.to_string(),
            size_bytes: entry.size_bytes.max(1),
            demand: names
                .zip(entry.sums.iter())
                .map(|(name, sums)| (name.to_string(), self.rate(sums)))
                .collect(),
            memory: entry.memory.clone(),
        })
    }

    /// Number of tracked CIDs.
    pub fn tracked(&self) -> usize {
        self.table.len()
    }

    /// Approximate heap bytes (sketch + table): the sketch's cells, every bucket of the table
    /// (allocated once for 2 × top_k entries, plus hashbrown's control byte) and the heap of
    /// the entries held.
    pub fn memory_bytes(&self) -> usize {
        // hashbrown keeps 1/8 of its buckets free.
        let buckets = self.table.capacity() * 8 / 7;
        let bucket_bytes = size_of::<(u64, Entry)>() + 1;
        let entry_heap: usize = self.table.values().map(Entry::heap_bytes).sum();
        self.sketch.estimated_size() + buckets * bucket_bytes + entry_heap
    }

    /// Checkpoint form (versioned), and back.
    pub fn encode(&self) -> Vec<u8> {
        let mut entries: Vec<(&u64, &Entry)> = self.table.iter().collect();
        // Sorted so that equal trackers encode to equal bytes.
        entries.sort_unstable_by_key(|(hash, _)| **hash);
        let checkpoint = CheckpointOut {
            regions: &self.config.regions,
            epoch: self.epoch,
            admission_threshold: self.admission_threshold,
            entries: entries
                .into_iter()
                .map(|(_, entry)| EntryOut {
                    cid: &entry.cid,
                    size_bytes: entry.size_bytes,
                    sums: &entry.sums,
                    memory: &entry.memory,
                })
                .collect(),
            sketch: self.sketch.serialize(),
        };
        let mut bytes = vec![CHECKPOINT_VERSION];
        // Writing plain structs into a Vec cannot fail; should it ever, the checkpoint is
        // empty, decode refuses it and the actor starts afresh (and says so).
        if let Err(error) = bincode::serde::encode_into_std_write(
            &checkpoint,
            &mut bytes,
            bincode::config::standard(),
        ) {
            tracing::error!(error = %error, "analytics tracker checkpoint not encoded");
            return Vec::new();
        }
        bytes
    }

    /// Restores [`encode`](Self::encode) output. Refuses a checkpoint of another version, of
    /// other regions, of another sketch shape or holding more than 2 × `top_k` CIDs: after
    /// such a config change the caller starts empty. (Changed epoch or half-lives are
    /// accepted: the sums stay decayed bytes and the rates settle within a few half-lives.)
    pub fn decode(config: TrackerConfig, bytes: &[u8]) -> Result<Self, String> {
        config.validate()?;
        let (version, body) = bytes.split_first().ok_or("analytics checkpoint is empty")?;
        if *version != CHECKPOINT_VERSION {
            return Err(format!(
                "analytics checkpoint version {version}, this build reads {CHECKPOINT_VERSION}"
            ));
        }
        let (checkpoint, read): (CheckpointIn, usize) =
            bincode::serde::decode_from_slice(body, bincode::config::standard())
                .map_err(|error| format!("analytics checkpoint unreadable: {error}"))?;
        if read != body.len() {
            return Err(format!(
                "analytics checkpoint has {} trailing bytes",
                body.len() - read
            ));
        }
        if checkpoint.regions != config.regions {
            return Err(format!(
                "analytics checkpoint regions {:?} differ from the configured {:?}",
                checkpoint.regions, config.regions
            ));
        }
        let sketch = CountMinSketch::<u64>::deserialize(&checkpoint.sketch)
            .map_err(|error| format!("analytics checkpoint sketch unreadable: {error}"))?;
        if (sketch.num_hashes(), sketch.num_buckets())
            != (config.sketch_hashes, config.sketch_buckets)
        {
            return Err(format!(
                "analytics checkpoint sketch is {}×{}, configured {}×{}",
                sketch.num_hashes(),
                sketch.num_buckets(),
                config.sketch_hashes,
                config.sketch_buckets
            ));
        }
        if checkpoint.entries.len() > 2 * config.top_k {
            return Err(format!(
                "analytics checkpoint tracks {} CIDs, more than 2 × top_k = {}",
                checkpoint.entries.len(),
                2 * config.top_k
            ));
        }
        if !(checkpoint.admission_threshold.is_finite() && checkpoint.admission_threshold >= 0.0) {
            return Err("analytics checkpoint admission threshold is not a byte count".into());
        }

        let mut tracker = Self::with_sketch(config, sketch);
        tracker.epoch = checkpoint.epoch;
        tracker.admission_threshold = checkpoint.admission_threshold;
        let slots = tracker.config.regions.len() + 1;
        for entry in checkpoint.entries {
            if entry.sums.len() != slots {
                return Err(format!(
                    "analytics checkpoint: {} has {} region sums, expected {slots}",
                    entry.cid,
                    entry.sums.len()
                ));
            }
            let counts = |value: f64| value.is_finite() && value >= 0.0;
            if !entry
                .sums
                .iter()
                .all(|sums| counts(sums.fast) && counts(sums.slow))
            {
                return Err(format!(
                    "analytics checkpoint: {} has sums that are not byte counts",
                    entry.cid
                ));
            }
            let hash = xxh3_64(entry.cid.as_bytes());
            let previous = tracker.table.insert(
                hash,
                Entry {
                    cid: entry.cid.into_boxed_str(),
                    size_bytes: entry.size_bytes,
                    sums: entry.sums.into_boxed_slice(),
                    memory: entry.memory,
                },
            );
            if let Some(previous) = previous {
                return Err(format!(
                    "analytics checkpoint: {} is listed twice",
                    previous.cid
                ));
            }
        }
        Ok(tracker)
    }

    fn region_slot(&self, region: &str) -> usize {
        let regions = &self.config.regions;
        regions
            .iter()
            .position(|name| name == region)
            .unwrap_or(regions.len())
    }

    fn rate(&self, sums: &DecayedBytes) -> f64 {
        (sums.fast * self.fast_rate).max(sums.slow * self.slow_rate)
    }

    fn tracked_entry_mut(&mut self, cid: &str) -> Option<&mut Entry> {
        self.table
            .get_mut(&xxh3_64(cid.as_bytes()))
            .filter(|entry| *entry.cid == *cid)
    }
}

/// (d, (1 − d)/E) for d = 2^(−E/H): the per-epoch decay and the factor turning a decayed sum
/// into its steady-state rate. `d` is kept above 0 (the sketch refuses a zero factor).
fn decay_per_epoch(epoch_secs: f64, half_life_secs: f64) -> (f64, f64) {
    let exponent = -epoch_secs / half_life_secs * std::f64::consts::LN_2;
    let decay = exponent.exp().max(f64::MIN_POSITIVE);
    // −expm1 keeps (1 − d) precise when epochs are short against the half-life.
    (decay, -exponent.exp_m1() / epoch_secs)
}

/// Checkpoint layout, version 1 (written from borrowed state, read into owned state: the two
/// structs must list the same fields in the same order).
#[derive(Serialize)]
struct CheckpointOut<'a> {
    regions: &'a [String],
    epoch: u64,
    admission_threshold: f64,
    entries: Vec<EntryOut<'a>>,
    /// DataSketches' own serial form.
    sketch: Vec<u8>,
}

#[derive(Serialize)]
struct EntryOut<'a> {
    cid: &'a str,
    size_bytes: u64,
    sums: &'a [DecayedBytes],
    memory: &'a Memory,
}

#[derive(Deserialize)]
struct CheckpointIn {
    regions: Vec<String>,
    epoch: u64,
    admission_threshold: f64,
    entries: Vec<EntryIn>,
    sketch: Vec<u8>,
}

#[derive(Deserialize)]
struct EntryIn {
    cid: String,
    size_bytes: u64,
    sums: Vec<DecayedBytes>,
    memory: Memory,
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinhive_domain::analytics::Explanation;

    const EPOCH_SECS: f64 = 10.0;
    /// Half-lives of 4 and 16 epochs: tests converge in tens of epochs.
    const FAST_HALF_LIFE_SECS: f64 = 40.0;
    const SLOW_HALF_LIFE_SECS: f64 = 160.0;

    fn config(regions: &[&str], top_k: usize) -> TrackerConfig {
        TrackerConfig {
            regions: regions.iter().map(|region| region.to_string()).collect(),
            top_k,
            sketch_hashes: 4,
            sketch_buckets: 2048,
            epoch_secs: EPOCH_SECS,
            fast_half_life_secs: FAST_HALF_LIFE_SECS,
            slow_half_life_secs: SLOW_HALF_LIFE_SECS,
        }
    }

    /// A CIDv1-long name (59 characters) for CID number `index`.
    fn cid(index: u64) -> String {
        format!("bafkrei{index:052}")
    }

    fn pinned(_: &str) -> Option<(u8, u8)> {
        Some((2, 8))
    }

    fn candidate(tracker: &Tracker, cid: &str) -> Candidate {
        tracker
            .candidates(&mut pinned)
            .into_iter()
            .find(|candidate| candidate.cid == cid)
            .expect("candidate is tracked")
    }

    fn decision(cid: &str, target: u8) -> Decision {
        let memory = Memory {
            target,
            regions: vec![1],
            raised_at: 3,
            below_since: vec![(0, 2)],
        };
        Decision {
            cid: cid.to_string(),
            target,
            preferred_regions: Vec::new(),
            changed: true,
            memory,
            explanation: Explanation {
                bytes_per_sec: 0.0,
                views_per_day: 0.0,
                load_replicas: 0,
                geo_regions: Vec::new(),
                wanted: target,
                denied: 0,
                reason: String::new(),
            },
        }
    }

    /// splitmix64: a deterministic stream without a dependency.
    struct Random(u64);

    impl Random {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Zipf (s = 1) over `population` ranks: rank r is read with probability ∝ 1/(r + 1).
    struct Zipf(Vec<f64>);

    impl Zipf {
        fn new(population: usize) -> Self {
            let mut total = 0.0;
            Zipf(
                (0..population)
                    .map(|rank| {
                        total += 1.0 / (rank + 1) as f64;
                        total
                    })
                    .collect(),
            )
        }

        fn sample(&self, random: &mut Random) -> u64 {
            let total = self.0.last().copied().unwrap_or(0.0);
            let point = random.unit() * total;
            self.0.partition_point(|&cumulative| cumulative <= point) as u64
        }
    }

    #[test]
    fn steady_stream_converges_to_its_rate() {
        let rate = 5_000.0;
        let reads_per_epoch = 10;
        let read_bytes = (rate * EPOCH_SECS / reads_per_epoch as f64) as u64;
        let mut tracker = Tracker::new(config(&["eu", "us"], 10));
        // Ten fast half-lives.
        for _ in 0..40 {
            for _ in 0..reads_per_epoch {
                tracker.record("bafy-steady", "us", read_bytes, Some(1 << 20), 0.0);
            }
            let demand = candidate(&tracker, "bafy-steady").demand[1];
            assert!(
                demand <= rate * 1.001,
                "a steady stream never exceeds its rate: {demand}"
            );
            tracker.end_epoch();
        }
        for _ in 0..reads_per_epoch {
            tracker.record("bafy-steady", "us", read_bytes, Some(1 << 20), 0.0);
        }
        let candidate = candidate(&tracker, "bafy-steady");
        assert!(
            (candidate.demand[1] - rate).abs() < 0.05 * rate,
            "{:?}",
            candidate.demand
        );
        assert_eq!(candidate.demand[0], 0.0);
        assert_eq!(candidate.other_demand, 0.0);
        assert_eq!(candidate.size_bytes, 1 << 20);
    }

    #[test]
    fn demand_is_split_per_region_and_unknown_regions_go_to_other() {
        let mut tracker = Tracker::new(config(&["eu", "us", "ap"], 10));
        for _ in 0..100 {
            tracker.record("bafy-split", "eu", 3_000, None, 0.0);
            tracker.record("bafy-split", "ap", 1_000, None, 0.0);
            tracker.record("bafy-split", "mars", 2_000, None, 0.0);
        }
        let candidate = candidate(&tracker, "bafy-split");
        assert_eq!(candidate.demand.len(), 3);
        let eu = candidate.demand[0];
        assert!(eu > 0.0);
        assert_eq!(candidate.demand[1], 0.0);
        assert!(
            (candidate.demand[2] / eu - 1.0 / 3.0).abs() < 1e-9,
            "{:?}",
            candidate.demand
        );
        assert!((candidate.other_demand / eu - 2.0 / 3.0).abs() < 1e-9);
        // Size is the largest read when none is reported.
        assert_eq!(candidate.size_bytes, 3_000);

        let demand = tracker.demand("bafy-split").expect("tracked");
        let names: Vec<&str> = demand
            .demand
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        assert_eq!(names, ["eu", "us", "ap", "other"]);
        assert_eq!(demand.demand[3].1, candidate.other_demand);
        assert_eq!(tracker.demand("bafy-never-read"), None);
    }

    #[test]
    fn old_reads_count_less() {
        let mut tracker = Tracker::new(config(&["eu"], 10));
        // Admit both with a negligible read, then the same bytes, one read two slow
        // half-lives ago.
        tracker.record("bafy-fresh", "eu", 1, None, 0.0);
        tracker.record("bafy-old", "eu", 1, None, 0.0);
        tracker.record("bafy-fresh", "eu", 1_000_000, None, 0.0);
        tracker.record("bafy-old", "eu", 1_000_000, None, 2.0 * SLOW_HALF_LIFE_SECS);
        let fresh = candidate(&tracker, "bafy-fresh").demand[0];
        let old = candidate(&tracker, "bafy-old").demand[0];
        assert!(old < fresh / 10.0, "fresh {fresh}, old {old}");
        // Eight fast half-lives ago: the fast view keeps 1/256, the slow view 1/4 and wins.
        let expected_old = 0.25 * 1_000_000.0 * tracker.slow_rate;
        assert!(
            (old / expected_old - 1.0).abs() < 1e-3,
            "old {old}, expected {expected_old}"
        );
        let expected_fresh = 1_000_000.0 * tracker.fast_rate;
        assert!((fresh / expected_fresh - 1.0).abs() < 1e-3, "fresh {fresh}");
    }

    #[test]
    fn heavy_hitters_of_a_zipf_stream_stay_tracked() {
        let population = 100_000;
        let zipf = Zipf::new(population);
        let mut random = Random(7);
        let mut tracker = Tracker::new(config(&["eu", "us"], 100));
        for _ in 0..10 {
            for _ in 0..50_000 {
                let rank = zipf.sample(&mut random);
                let region = ["eu", "us"][(random.next() % 2) as usize];
                tracker.record(&cid(rank), region, 10_000, None, 0.0);
            }
            tracker.end_epoch();
        }
        let candidates = tracker.candidates(&mut pinned);
        assert_eq!(candidates.len(), 100);
        let top_100 = (0..100)
            .filter(|rank| tracker.demand(&cid(*rank)).is_some())
            .count();
        println!("true top 100 tracked: {top_100}");
        for rank in 0..20 {
            assert!(
                tracker.demand(&cid(rank)).is_some(),
                "rank {rank} is not tracked"
            );
        }
    }

    #[test]
    fn memory_does_not_grow_with_the_number_of_cids() {
        let top_k = 100;
        let mut memory = Vec::new();
        for distinct in [10_000u64, 1_000_000] {
            let mut tracker = Tracker::new(config(&["eu", "us"], top_k));
            let table_capacity = tracker.table.capacity();
            let mut peak = tracker.memory_bytes();
            for index in 0..distinct {
                tracker.record(&cid(index), "eu", 1_000 + index % 7_919, None, 0.0);
                assert!(tracker.tracked() <= 2 * top_k);
                if index % 100 == 99 {
                    peak = peak.max(tracker.memory_bytes());
                }
                // Epochs of churn never make the table reallocate.
                if index % 100_000 == 99_999 {
                    tracker.end_epoch();
                    assert_eq!(tracker.table.capacity(), table_capacity);
                }
            }
            tracker.end_epoch();
            assert!(tracker.tracked() <= top_k);
            assert_eq!(tracker.table.capacity(), table_capacity);
            memory.push((peak, tracker.memory_bytes()));
        }
        println!("memory (peak, after the last epoch) for 10K and 1M CIDs: {memory:?}");
        for (small, large) in [(memory[0].0, memory[1].0), (memory[0].1, memory[1].1)] {
            let difference = small.abs_diff(large) as f64;
            assert!(difference < 0.05 * small as f64, "{small} vs {large} bytes");
        }
        // The bound: the sketch's cells, the table's buckets (allocated once for 2 × top_k)
        // and 2 × top_k CIDs of 59 bytes with 3 region slots of 16 bytes.
        let bound = 4 * 2048 * 8
            + 4 * 8
            + (2 * top_k * 8 / 7).next_power_of_two() * (size_of::<(u64, Entry)>() + 1)
            + 2 * top_k * (59 + 3 * 16);
        assert!(memory[1].0 <= bound, "{memory:?} > {bound}");
    }

    #[test]
    fn end_epoch_returns_evicted_cids_with_a_raised_target() {
        let fill = |tracker: &mut Tracker| {
            for (name, bytes) in [
                ("bafy-a", 1_000),
                ("bafy-b", 2_000),
                ("bafy-c", 3_000),
                ("bafy-d", 4_000),
            ] {
                tracker.record(name, "eu", bytes, Some(10_000), 0.0);
            }
        };
        // More raised CIDs than top_k: the lowest-scored raised one goes, and is returned.
        let mut tracker = Tracker::new(config(&["eu"], 2));
        fill(&mut tracker);
        assert_eq!(tracker.tracked(), 4);
        tracker.remember(&[
            decision("bafy-a", 3),
            decision("bafy-b", 3),
            decision("bafy-c", 3),
        ]);
        assert_eq!(tracker.demand("bafy-a").expect("tracked").memory.target, 3);
        assert_eq!(tracker.end_epoch(), ["bafy-a"]);
        assert_eq!(tracker.tracked(), 2);
        assert!(tracker.demand("bafy-b").is_some() && tracker.demand("bafy-c").is_some());
        assert_eq!(tracker.epoch(), 1);

        // A raised CID outranks unraised ones with more reads: evicting it would be a reset
        // now and a raise again on re-admission (flapping).
        let mut tracker = Tracker::new(config(&["eu"], 2));
        fill(&mut tracker);
        tracker.remember(&[decision("bafy-a", 3)]);
        assert!(tracker.end_epoch().is_empty());
        assert!(tracker.demand("bafy-a").is_some() && tracker.demand("bafy-d").is_some());
        assert!(tracker.demand("bafy-b").is_none() && tracker.demand("bafy-c").is_none());
    }

    /// The table ranks by copies read (bytes / size), as the optimizer ranks extra replicas:
    /// a small object read often outranks a large one read as many bytes.
    #[test]
    fn the_table_keeps_the_cids_read_most_often_per_byte_stored() {
        let mut tracker = Tracker::new(config(&["eu"], 1));
        tracker.record("bafy-small", "eu", 1_000, Some(1_000), 0.0);
        tracker.record("bafy-large", "eu", 1_000_000, Some(100_000_000), 0.0);
        tracker.end_epoch();
        assert!(tracker.demand("bafy-small").is_some());
        assert!(tracker.demand("bafy-large").is_none());
    }

    #[test]
    fn checkpoint_round_trip_gives_identical_candidates() {
        let regions = ["eu", "us"];
        let mut tracker = Tracker::new(config(&regions, 20));
        let mut random = Random(11);
        let zipf = Zipf::new(1_000);
        for _ in 0..3 {
            for _ in 0..2_000 {
                let rank = zipf.sample(&mut random);
                let region = ["eu", "us", "mars"][(random.next() % 3) as usize];
                tracker.record(&cid(rank), region, 1_000 + rank, Some(5_000), 12.5);
            }
            tracker.end_epoch();
        }
        tracker.remember(&[decision(&cid(0), 4)]);
        let bytes = tracker.encode();
        assert_eq!(bytes[0], CHECKPOINT_VERSION);

        let decoded = Tracker::decode(config(&regions, 20), &bytes).expect("decodes");
        assert_eq!(
            decoded.candidates(&mut pinned),
            tracker.candidates(&mut pinned)
        );
        assert_eq!(decoded.epoch(), 3);
        assert_eq!(decoded.encode(), bytes);
        assert_eq!(
            decoded.sketch.estimate(xxh3_64(cid(5).as_bytes())),
            tracker.sketch.estimate(xxh3_64(cid(5).as_bytes()))
        );
        assert_eq!(decoded.demand(&cid(0)).expect("tracked").memory.target, 4);
    }

    #[test]
    fn checkpoint_of_another_shape_is_refused() {
        let mut tracker = Tracker::new(config(&["eu", "us"], 20));
        tracker.record("bafy-a", "eu", 1_000, None, 0.0);
        let bytes = tracker.encode();

        let error = Tracker::decode(config(&["eu", "us", "ap"], 20), &bytes).err();
        assert!(error.is_some_and(|error| error.contains("regions")));
        let mut other_sketch = config(&["eu", "us"], 20);
        other_sketch.sketch_buckets = 1024;
        let error = Tracker::decode(other_sketch, &bytes).err();
        assert!(error.is_some_and(|error| error.contains("sketch")));
        let mut other_version = bytes.clone();
        other_version[0] = 2;
        let error = Tracker::decode(config(&["eu", "us"], 20), &other_version).err();
        assert!(error.is_some_and(|error| error.contains("version")));
        assert!(Tracker::decode(config(&["eu", "us"], 20), &bytes[..bytes.len() - 1]).is_err());
        assert!(Tracker::decode(config(&["eu", "us"], 20), &[]).is_err());
    }

    #[test]
    fn silence_decays_demand_and_forgets_cids_without_a_target() {
        let mut tracker = Tracker::new(config(&["eu"], 10));
        tracker.record("bafy-forgotten", "eu", 1_000_000, None, 0.0);
        tracker.record("bafy-raised", "eu", 1_000_000, None, 0.0);
        tracker.remember(&[decision("bafy-raised", 3)]);
        let initial = candidate(&tracker, "bafy-raised").demand[0];
        tracker.end_epoch();
        assert_eq!(tracker.tracked(), 2);
        // 1 MB falls below one byte after 20 slow half-lives.
        for _ in 0..(20 * 16 + 4) {
            assert!(tracker.end_epoch().is_empty());
        }
        assert_eq!(tracker.demand("bafy-forgotten"), None);
        let raised = tracker
            .demand("bafy-raised")
            .expect("a raised target is remembered");
        assert!(raised.demand[0].1 < 1e-6 * initial, "{raised:?}");
        assert_eq!(tracker.tracked(), 1);
    }

    #[test]
    fn validate_refuses_nonsense() {
        assert_eq!(config(&["eu", "us"], 10).validate(), Ok(()));
        let broken: [fn(&mut TrackerConfig); 9] = [
            |config| config.top_k = 0,
            |config| config.sketch_hashes = 0,
            |config| config.sketch_buckets = 0,
            |config| config.epoch_secs = 0.0,
            |config| config.fast_half_life_secs = -1.0,
            |config| config.slow_half_life_secs = f64::NAN,
            |config| config.fast_half_life_secs = 2.0 * SLOW_HALF_LIFE_SECS,
            |config| config.regions.push("eu".into()),
            |config| config.regions.push(OTHER_REGION.into()),
        ];
        for (index, break_config) in broken.iter().enumerate() {
            let mut config = config(&["eu", "us"], 10);
            break_config(&mut config);
            assert!(config.validate().is_err(), "case {index}: {config:?}");
            assert!(Tracker::try_new(config).is_err());
        }
    }

    /// Per-record cost: `cargo test -p pinhive-analytics --release -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn record_throughput() {
        let population = 1_000_000;
        let records = 4_000_000;
        let zipf = Zipf::new(population);
        let mut random = Random(3);
        let names: Vec<String> = (0..population as u64).map(cid).collect();
        let ranks: Vec<usize> = (0..records)
            .map(|_| zipf.sample(&mut random) as usize)
            .collect();
        let regions = ["eu", "us", "ap", "mars"];
        let mut tracker = Tracker::new(TrackerConfig {
            sketch_buckets: 1 << 16,
            ..config(&["eu", "us", "ap"], 10_000)
        });
        let started = std::time::Instant::now();
        for (index, rank) in ranks.iter().enumerate() {
            tracker.record(&names[*rank], regions[index % 4], 65_536, None, 1.0);
        }
        let elapsed = started.elapsed();
        let epoch_started = std::time::Instant::now();
        tracker.end_epoch();
        let epoch_elapsed = epoch_started.elapsed();
        println!(
            "record: {:.0} ns/record over {records} records ({} tracked, {} bytes); end_epoch {:?}",
            elapsed.as_nanos() as f64 / records as f64,
            tracker.tracked(),
            tracker.memory_bytes(),
            epoch_elapsed
        );
    }
}
