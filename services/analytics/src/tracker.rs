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
    /// What the table ranks by: decayed bytes, the larger half-life view per region.
    fn score(&self) -> f64 {
        self.sums.iter().map(|sums| sums.fast.max(sums.slow)).sum()
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
    /// An empty tracker; refuses a config [`TrackerConfig::validate`] refuses.
    pub fn new(config: TrackerConfig) -> Result<Self, String> {
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
        let estimate = self.sketch.estimate(hash) as f64;
        let tracked = self.table.len();
        let admit = tracked < self.config.top_k
            || (tracked < 2 * self.config.top_k && estimate >= self.admission_threshold);
        if !admit {
            return;
        }
        let mut sums = vec![DecayedBytes::default(); self.config.regions.len() + 1];
        // The estimate stands for the CID's history before admission, in this read's region.
        sums[slot] = DecayedBytes {
            fast: estimate,
            slow: estimate,
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
        for entry in self.table.values_mut() {
            for sums in entry.sums.iter_mut() {
                sums.fast *= fast_decay;
                sums.slow *= slow_decay;
            }
        }
        self.sketch.decay(slow_decay);
        self.admission_threshold *= slow_decay;
        self.table
            .retain(|_, entry| entry.memory.target != 0 || entry.score() >= FORGET_BELOW_BYTES);

        let top_k = self.config.top_k;
        if self.table.len() <= top_k {
            return Vec::new();
        }
        let mut ranked: Vec<(f64, u64)> = self
            .table
            .iter()
            .map(|(hash, entry)| (entry.score(), *hash))
            .collect();
        // Highest score first; ties by hash so that replicas of a partition agree.
        ranked.select_nth_unstable_by(top_k - 1, |(score_a, hash_a), (score_b, hash_b)| {
            score_b.total_cmp(score_a).then(hash_a.cmp(hash_b))
        });
        self.admission_threshold = ranked[top_k - 1].0;
        let mut evicted_with_target = Vec::new();
        for (_, hash) in &ranked[top_k..] {
            if let Some(entry) = self.table.remove(hash) {
                if entry.memory.target != 0 {
                    evicted_with_target.push(String::from(entry.cid));
                }
            }
        }
        evicted_with_target.sort_unstable();
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
                Some(Candidate {
                    cid: entry.cid.to_string(),
                    size_bytes: entry.size_bytes.max(1),
                    demand,
                    other_demand,
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
