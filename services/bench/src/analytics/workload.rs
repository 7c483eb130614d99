//! The synthetic access stream of `pinhive bench analytics`: Zipf popularity over N CIDs, a
//! heavy-tailed object size and a home region per CID, and a popularity shift half way.
//!
//! Nothing is stored per CID: a CID's name, size and home region are functions of its index
//! (xxh3 of the index and the seed), so the generator's memory does not grow with N and the
//! benchmark's peak RSS is the tracker's plus a fixed chunk of pre-generated events.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Smallest and largest object size (the Pareto draw is clipped to these).
pub const MIN_SIZE: u64 = 1 << 10;
pub const MAX_SIZE: u64 = 10 << 30;
/// Pareto scale x_m and shape α of object sizes: mean ≈ 6·x_m before clipping.
const PARETO_SCALE: f64 = 64.0 * 1024.0;
const PARETO_SHAPE: f64 = 1.2;
/// Share of a CID's reads that come from its home region; the rest are uniform over regions.
pub const HOME_SHARE: f64 = 0.7;

/// CID names: a fixed prefix and the index in base32 (RFC 4648 lower case, as CIDv1 strings
/// use), fixed width so a chunk of events is one string sliced at multiples of [`CID_LEN`].
const CID_PREFIX: &str = "bafkreibench";
const CID_DIGITS: usize = 7;
pub const CID_LEN: usize = CID_PREFIX.len() + CID_DIGITS;
const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Largest CID count the fixed-width names can spell.
pub const MAX_CIDS: u64 = 1 << (5 * CID_DIGITS);

const SIZE_SEED: u64 = 0x5151_7a3e;
const HOME_SEED: u64 = 0x4803_e5e1;

/// The pure per-CID functions of one run.
#[derive(Clone, Debug)]
pub struct Population {
    pub cids: u64,
    pub regions: u16,
    seed: u64,
    /// rank → index = (rank · stride + offset) mod cids; `stride` is coprime to `cids`.
    stride: u64,
    offsets: [u64; 2],
}

impl Population {
    pub fn new(cids: u64, regions: u16, seed: u64) -> Self {
        let mut stride = (cids / 2 + 0x9e37_79b9) % cids.max(1);
        while gcd(stride, cids) != 1 {
            stride += 1;
        }
        let offsets = [
            xxh3_64_with_seed(b"before", seed) % cids,
            xxh3_64_with_seed(b"after", seed) % cids,
        ];
        Population {
            cids,
            regions,
            seed,
            stride,
            offsets,
        }
    }

    /// The CID at popularity `rank` (0 = hottest) in `phase` (0 before the shift, 1 after).
    pub fn index_of_rank(&self, rank: u64, phase: usize) -> u64 {
        ((u128::from(rank) * u128::from(self.stride) + u128::from(self.offsets[phase]))
            % u128::from(self.cids)) as u64
    }

    /// Object size of CID `index`: Pareto(x_m 64 KiB, α 1.2) clipped to 1 KiB..10 GiB.
    pub fn size(&self, index: u64) -> u64 {
        let hash = xxh3_64_with_seed(&index.to_le_bytes(), self.seed ^ SIZE_SEED);
        let unit = ((hash >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let size = PARETO_SCALE / unit.powf(1.0 / PARETO_SHAPE);
        (size as u64).clamp(MIN_SIZE, MAX_SIZE)
    }

    /// Region that reads CID `index` most.
    pub fn home_region(&self, index: u64) -> u16 {
        let hash = xxh3_64_with_seed(&index.to_le_bytes(), self.seed ^ HOME_SEED);
        (hash % u64::from(self.regions)) as u16
    }

    /// Σ size over every CID: one pass of hashes, nothing kept.
    pub fn total_size(&self) -> u128 {
        (0..self.cids)
            .map(|index| u128::from(self.size(index)))
            .sum()
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Writes the name of CID `index` to `out`.
pub fn push_cid(out: &mut String, index: u64) {
    out.push_str(CID_PREFIX);
    for digit in (0..CID_DIGITS).rev() {
        out.push(BASE32[((index >> (5 * digit)) & 31) as usize] as char);
    }
}

/// The index of a name [`push_cid`] wrote.
pub fn parse_cid(cid: &str) -> Option<u64> {
    let digits = cid.strip_prefix(CID_PREFIX)?;
    if digits.len() != CID_DIGITS {
        return None;
    }
    digits.bytes().try_fold(0u64, |index, byte| {
        let value = BASE32.iter().position(|&b| b == byte)? as u64;
        Some(index << 5 | value)
    })
}

/// Pre-generated events: CID names back to back in one string, and per event the CID index,
/// the reader's region and the bytes read (a whole object per read).
#[derive(Default)]
pub struct Chunk {
    names: String,
    pub indexes: Vec<u64>,
    pub regions: Vec<u16>,
    pub bytes: Vec<u64>,
}

impl Chunk {
    pub fn len(&self) -> usize {
        self.indexes.len()
    }

    pub fn cid(&self, event: usize) -> &str {
        &self.names[event * CID_LEN..(event + 1) * CID_LEN]
    }

    fn clear(&mut self) {
        self.names.clear();
        self.indexes.clear();
        self.regions.clear();
        self.bytes.clear();
    }
}

/// Deterministic event source for one seed.
pub struct Generator {
    population: Population,
    zipf: Zipf<f64>,
    rng: StdRng,
}

impl Generator {
    pub fn new(population: Population, exponent: f64, seed: u64) -> anyhow::Result<Self> {
        let zipf = Zipf::new(population.cids, exponent).map_err(|error| {
            anyhow::anyhow!("zipf({exponent}) over {}: {error:?}", population.cids)
        })?;
        Ok(Generator {
            population,
            zipf,
            rng: StdRng::seed_from_u64(seed),
        })
    }

    /// Replaces `chunk` with the next `count` events of popularity `phase`.
    pub fn fill(&mut self, chunk: &mut Chunk, count: usize, phase: usize) {
        chunk.clear();
        chunk.names.reserve(count * CID_LEN);
        let regions = self.population.regions;
        for _ in 0..count {
            let rank = self.zipf.sample(&mut self.rng) as u64 - 1;
            let index = self.population.index_of_rank(rank, phase);
            let region = if self.rng.gen::<f64>() < HOME_SHARE {
                self.population.home_region(index)
            } else {
                self.rng.gen_range(0..regions)
            };
            push_cid(&mut chunk.names, index);
            chunk.indexes.push(index);
            chunk.regions.push(region);
            chunk.bytes.push(self.population.size(index));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_at_fixed_width() {
        for index in [0, 1, 31, 32, 9_999_999, MAX_CIDS - 1] {
            let mut name = String::new();
            push_cid(&mut name, index);
            assert_eq!(name.len(), CID_LEN);
            assert_eq!(parse_cid(&name), Some(index));
        }
        assert_eq!(parse_cid("bafkreibenchaaaaaa"), None);
    }

    #[test]
    fn rank_mapping_is_a_permutation_that_shifts() {
        let population = Population::new(1_000, 8, 7);
        let mut seen = vec![false; 1_000];
        for rank in 0..1_000 {
            seen[population.index_of_rank(rank, 0) as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
        let moved = (0..100)
            .filter(|&rank| population.index_of_rank(rank, 0) != population.index_of_rank(rank, 1))
            .count();
        assert!(moved > 90, "{moved}");
    }

    #[test]
    fn sizes_are_heavy_tailed_and_clipped() {
        let population = Population::new(100_000, 8, 1);
        let sizes: Vec<u64> = (0..100_000).map(|i| population.size(i)).collect();
        assert!(sizes.iter().all(|s| (MIN_SIZE..=MAX_SIZE).contains(s)));
        let mut sorted = sizes.clone();
        sorted.sort_unstable();
        let median = sorted[sorted.len() / 2];
        let mean = sizes.iter().sum::<u64>() / sizes.len() as u64;
        assert!(mean > 2 * median, "mean {mean} median {median}");
    }

    #[test]
    fn generation_is_deterministic_for_a_seed() {
        let events = |seed| {
            let population = Population::new(10_000, 8, seed);
            let mut generator = Generator::new(population, 1.1, seed).unwrap();
            let mut chunk = Chunk::default();
            generator.fill(&mut chunk, 1_000, 0);
            (
                chunk.indexes.clone(),
                chunk.regions.clone(),
                chunk.cid(17).to_string(),
            )
        };
        assert_eq!(events(3), events(3));
        assert_ne!(events(3), events(4));
    }
}
