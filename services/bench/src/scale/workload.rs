//! The pins of a scale run, by index: which CID and name pin `i` has. Pins share structure so
//! the listing filters have data: pin `i` is named `n{i % 1000}` (so `name=n7` matches one pin
//! in 1,000), and every `shared_every`-th pin asks for one shared CID (a CID pinned by many
//! requests, and a `cid=` listing of that many pins).

use pinhive_domain::command::{PinCommand, RawPin, ReplicaBounds};
use pinhive_domain::{decide, Command};
use pinhive_events::Envelope;
use pinhive_log::Record;

/// Distinct names; `name=n7` matches `pins / NAMES` pins.
pub const NAMES: usize = 1000;
/// At most this many pins share the one shared CID (fewer when `pins / 100` is smaller).
pub const MAX_SHARED: usize = 10_000;
/// The name whose exact and partial listings are measured.
pub const PROBE_NAME: &str = "n7";

pub struct Workload {
    pub pins: usize,
    pub owner: String,
    /// Pin `i` with `i % shared_every == 0` (and `i / shared_every < shared_count`) asks for
    /// the shared CID.
    pub shared_every: usize,
    pub shared_count: usize,
    pub shared_cid: String,
    /// The bounds `POST /pins` gives a request (the server's defaults).
    replicas: ReplicaBounds,
    tag: String,
}

impl Workload {
    pub fn new(pins: usize, owner: &str, replicas: ReplicaBounds) -> Self {
        let tag = format!("scale-{:08x}", rand::random::<u32>());
        let shared_count = (pins / 100).clamp(1, MAX_SHARED).min(pins);
        Workload {
            pins,
            owner: owner.to_string(),
            shared_every: (pins / shared_count.max(1)).max(1),
            shared_count,
            shared_cid: crate::pipeline::bench_cid(&tag, usize::MAX),
            replicas,
            tag,
        }
    }

    // The workspace's rust-version (1.85) predates `usize::is_multiple_of` (1.87).
    #[allow(clippy::manual_is_multiple_of)]
    pub fn shares_cid(&self, index: usize) -> bool {
        index % self.shared_every == 0 && index / self.shared_every < self.shared_count
    }

    pub fn cid(&self, index: usize) -> String {
        if self.shares_cid(index) {
            self.shared_cid.clone()
        } else {
            crate::pipeline::bench_cid(&self.tag, index)
        }
    }

    pub fn name(index: usize) -> String {
        format!("n{}", index % NAMES)
    }

    /// Pins among `range` that ask for the shared CID.
    pub fn shared_in(&self, range: std::ops::Range<usize>) -> usize {
        range.filter(|&i| self.shares_cid(i)).count()
    }

    /// Pins among `range` named exactly [`PROBE_NAME`].
    pub fn probe_named_in(range: std::ops::Range<usize>) -> usize {
        range.filter(|&i| Self::name(i) == PROBE_NAME).count()
    }

    /// The `POST /pins` body of pin `index`.
    pub fn pin_body(&self, index: usize) -> serde_json::Value {
        serde_json::json!({"cid": self.cid(index), "name": Self::name(index)})
    }

    /// The log records `POST /pins` would append for pin `index`, decided by the same domain
    /// command the API runs (so the shards cannot tell the two paths apart).
    pub fn pin_records(&self, index: usize, created_ns: i64) -> anyhow::Result<Vec<Record>> {
        let pin = PinCommand::new(
            RawPin {
                cid: self.cid(index),
                name: Some(Self::name(index)),
                origins: Vec::new(),
                meta: Default::default(),
            },
            &self.owner,
            self.replicas,
        )
        .map_err(|rejection| anyhow::anyhow!("pin {index}: {rejection}"))?;
        let decided = decide(Command::Pin {
            pin,
            requestid: pinhive_events::new_event_id(),
            created_ns,
        })
        .map_err(|rejection| anyhow::anyhow!("pin {index}: {rejection}"))?;
        Ok(decided
            .into_iter()
            .map(|decided| Record::from_envelope(&Envelope::new(decided.key, decided.event)))
            .collect())
    }
}
