//! Where the per-owner quota rule ([`pinhive_domain::quota`]) meets the store: an owner's
//! usage is read from its persisted counter rows (one point read per status and log
//! partition — never a scan, whatever the owner holds), kept for [`USAGE_REFRESH`] and
//! counted forward by the admissions made through this gate meanwhile.
//!
//! Every entry path asks the same gate: the HTTP handlers and the S3 ingester before they
//! append, the shard for records of external Kafka producers (a refusal is a dead letter).
//!
//! The guarantee is approximate, as admission at the edge of an event-sourced system with
//! concurrent instances can only be: an owner's usage as the counters show it lags behind
//! the log by the requests not yet applied by their shards and by at most [`USAGE_REFRESH`],
//! and every instance counts its own admissions only. An owner can therefore exceed a limit
//! by what other instances (and other entry paths of this instance) admitted for it within
//! one refresh, plus what is still in the log unapplied — never by more. A quota only refuses
//! new requests: pins already held are never removed for it.

use std::num::NonZeroUsize;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;
use pinhive_domain::quota::{Admission, Quota, QuotaExceeded, Usage};
use pinhive_domain::PinStatus;
use pinhive_store::{Store, StoreError};

/// How long an owner's usage read from the counters is used before it is read again.
pub const USAGE_REFRESH: Duration = Duration::from_secs(1);
/// Owners whose usage one gate keeps.
const OWNERS_CACHED: usize = 10_000;

/// Requests refused for a quota, by entry path and limit (bounded labels).
static REFUSED: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    pinhive_telemetry::counter_vec(
        "pinhive_quota_refused_total",
        "Pin requests refused because their owner was over a quota, by entry path and limit",
        &["entry", "limit"],
    )
});

/// Which entry path a request came in by (the metric's `entry` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    Http,
    Kafka,
    S3,
}

impl Entry {
    fn as_str(self) -> &'static str {
        match self {
            Entry::Http => "http",
            Entry::Kafka => "kafka",
            Entry::S3 => "s3",
        }
    }
}

#[derive(thiserror::Error, Debug)]
pub enum QuotaError {
    #[error(transparent)]
    Exceeded(#[from] QuotaExceeded),
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Seen {
    usage: Usage,
    read: Instant,
}

pub struct QuotaGate {
    quota: Quota,
    store: Arc<dyn Store>,
    partitions: u32,
    owners: Mutex<LruCache<String, Seen>>,
}

impl QuotaGate {
    pub fn new(quota: Quota, store: Arc<dyn Store>, partitions: u32) -> Self {
        QuotaGate {
            quota,
            store,
            partitions,
            owners: Mutex::new(LruCache::new(
                NonZeroUsize::new(OWNERS_CACHED).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// Admits one request of `owner` or says which limit it is over. Blocking (store reads
    /// when the owner's usage is older than [`USAGE_REFRESH`]): call it off the async runtime.
    pub fn admit(&self, owner: &str, admission: Admission, entry: Entry) -> Result<(), QuotaError> {
        if self.quota.is_unlimited() {
            return Ok(());
        }
        let fresh = self
            .owners
            .lock()
            .get(owner)
            .filter(|seen| seen.read.elapsed() < USAGE_REFRESH)
            .map(|seen| seen.usage);
        let usage = match fresh {
            Some(usage) => usage,
            None => self.read_usage(owner)?,
        };
        if let Err(exceeded) = self.quota.admit(owner, usage, admission) {
            let limit = match exceeded {
                QuotaExceeded::Pins { .. } => "max_pins",
                QuotaExceeded::InFlight { .. } => "max_in_flight",
            };
            REFUSED.with_label_values(&[entry.as_str(), limit]).inc();
            return Err(exceeded.into());
        }
        // Counted forward until the next read (which finds it in the counters once applied).
        let mut owners = self.owners.lock();
        match owners.get_mut(owner) {
            Some(seen) => seen.usage = seen.usage.after(admission),
            None => {
                owners.put(
                    owner.to_string(),
                    Seen {
                        usage: usage.after(admission),
                        read: Instant::now(),
                    },
                );
            }
        }
        Ok(())
    }

    fn read_usage(&self, owner: &str) -> Result<Usage, StoreError> {
        let mut counts = [0u64; 4];
        for (slot, status) in PinStatus::ALL.into_iter().enumerate() {
            counts[slot] =
                pinhive_store::total_count(self.store.as_ref(), owner, status, self.partitions)?;
        }
        let usage = Usage::of_counts(|status| {
            PinStatus::ALL
                .iter()
                .position(|s| *s == status)
                .map_or(0, |slot| counts[slot])
        });
        self.owners.lock().put(
            owner.to_string(),
            Seen {
                usage,
                read: Instant::now(),
            },
        );
        Ok(usage)
    }
}
