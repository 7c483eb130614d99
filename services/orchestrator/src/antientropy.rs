//! Anti-entropy: a periodic reconciliation, node by node, of what each node really pins with
//! what pinhive believes it holds, correcting drift both ways with an event per correction.
//!
//! One pass over node N, for the partitions this instance runs (every instance reconciles its
//! own partitions, so instances never correct a CID twice):
//!
//! 1. **Believed**: walk N's index (`Store::node_cids`, one page at a time) into a Bloom filter
//!    `B` sized from N's replica counters.
//! 2. **Observed**: stream N's `pin/ls` (never held whole). Every pin of a partition run here
//!    goes into a second filter `O`; a pin not in `B` is certainly not in the index: a
//!    candidate *unknown* pin.
//! 3. **Missing**: walk N's index again; a CID not in `O` certainly did not come back from the
//!    node: a candidate *missing* replica.
//!
//! Memory is the two filters (about 1.2 bytes per pin at 1% false positives) and one page;
//! nothing grows with the pinset beyond that. A candidate is judged
//! ([`pinhive_domain::antientropy::judge`]) only after a point `pin/ls` on the node and a read
//! of the CID's stored state, both made after the listing: a pin made or removed while the pass
//! ran is never "corrected". Point checks are paced (`anti_entropy_checks_per_sec`). A false
//! positive of a filter hides a drift for one pass at most: each pass seeds its filters anew.
//!
//! Integrity sampling: while the listing streams, a uniform sample of the pins both sides agree
//! on is kept (the `anti_entropy_integrity_samples` with the smallest seeded hash: bounded
//! memory); after the listing each sampled root gets a `block/stat`. An unreadable root is
//! reported (metrics, the node's report), not corrected: the pin is there, its data is not.
//!
//! Corrections: a missing replica → `ReplicaMissing` (the shard pins it there again); an
//! unknown pin is reported (metrics, log, the node's report) and, only with
//! `anti_entropy_remove_unknown`, unpinned on the node and recorded as `UnknownPinRemoved`.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fastbloom::BloomFilter;
use futures::StreamExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use pinhive_domain::antientropy::{correction, judge, Verdict};
use pinhive_domain::{CidState, PinStatus};
use pinhive_events::{Envelope, NodeState};
use pinhive_ipfs::IpfsApi;
use pinhive_log::Record;
use pinhive_store::{node_scope, NodeCidCursor, StoreError};
use serde::Serialize;

use crate::consumer::Orchestrator;
use crate::metrics::METRICS;

/// False-positive rate of both filters.
const FALSE_POSITIVES: f64 = 0.01;
/// Largest filter a pass builds (about 320 MB each at 1%): a node may hold more pins, at a
/// higher false-positive rate (reported as saturated).
const MAX_FILTER_ITEMS: usize = 1 << 28;
/// Unknown pins a node's report names (the rest are counted).
const REPORTED_UNKNOWN: usize = 20;

/// The outcome of a node's last pass (`GET /admin/nodes/{id}` shows it).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct AntiEntropyReport {
    /// When the pass finished (ns since the epoch) and how long it took.
    pub finished_ns: i64,
    pub duration_ms: u64,
    /// Partitions of this instance the pass covered.
    pub partitions: Vec<u32>,
    /// Index entries walked (each walk), pins the node listed for those partitions.
    pub believed: u64,
    pub listed: u64,
    /// Point checks made, and what they found.
    pub checked: u64,
    pub missing: u64,
    pub unknown: u64,
    /// Unknown pins removed from the node (`anti_entropy_remove_unknown`).
    pub removed: u64,
    /// Roots sampled for integrity (`block/stat`), and those the node could not read.
    pub sampled: u64,
    pub unreadable: u64,
    pub unreadable_cids: Vec<String>,
    /// Some of the unknown pins (at most 20).
    pub unknown_cids: Vec<String>,
    /// Bytes of the two filters.
    pub filter_bytes: u64,
    /// More entries went into a filter than its counters sized it for: its false-positive
    /// rate, hence what the pass misses, is higher than 1%.
    pub saturated: bool,
    /// Why the pass stopped early, if it did.
    pub error: Option<String>,
}

/// Paces point checks (shared by the passes of one instance).
pub(crate) struct CheckRate(Option<DefaultDirectRateLimiter>);

impl CheckRate {
    pub(crate) fn new(per_sec: u32) -> Self {
        CheckRate(NonZeroU32::new(per_sec).map(|r| RateLimiter::direct(Quota::per_second(r))))
    }

    async fn acquire(&self) {
        if let Some(limiter) = &self.0 {
            limiter.until_ready().await;
        }
    }
}

/// One pass's state: the node, its client and what was found so far.
struct Pass<'a> {
    orchestrator: &'a Orchestrator,
    node: String,
    api: Arc<dyn IpfsApi>,
    partitions: Vec<u32>,
    report: AntiEntropyReport,
}

impl Orchestrator {
    /// The anti-entropy loop of this instance: every `anti_entropy_interval`, one pass per
    /// node that is `up` or `degraded` (a down node cannot answer; a draining one is being
    /// emptied anyway).
    pub(crate) async fn anti_entropy(self: Arc<Self>) {
        let interval = self.config.anti_entropy_interval;
        if interval.is_zero() {
            return;
        }
        let mut shutdown = self.shutdown.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
            let nodes: Vec<(String, Arc<dyn IpfsApi>)> = self
                .registry
                .entries()
                .into_iter()
                .filter(|e| matches!(e.state.state, NodeState::Up | NodeState::Degraded))
                .map(|e| (e.descriptor.id, e.api))
                .collect();
            for (node, api) in nodes {
                if self.stopping() {
                    return;
                }
                let report = self.reconcile(&node, api).await;
                let result = if report.error.is_some() {
                    "error"
                } else {
                    "complete"
                };
                METRICS
                    .anti_entropy_passes
                    .with_label_values(&[result])
                    .inc();
                tracing::info!(
                    node,
                    believed = report.believed,
                    listed = report.listed,
                    missing = report.missing,
                    unknown = report.unknown,
                    removed = report.removed,
                    duration_ms = report.duration_ms,
                    error = report.error.as_deref().unwrap_or(""),
                    "anti-entropy pass"
                );
                self.anti_entropy_reports.lock().insert(node, report);
            }
        }
    }

    /// The last pass's report for `node`, if one ran here.
    pub fn anti_entropy_report(&self, node: &str) -> Option<AntiEntropyReport> {
        self.anti_entropy_reports.lock().get(node).cloned()
    }

    /// One pass over `node` (see the module docs). Never fails: an error ends the pass early
    /// and is reported.
    pub async fn reconcile(&self, node: &str, api: Arc<dyn IpfsApi>) -> AntiEntropyReport {
        let started = Instant::now();
        let mut pass = Pass {
            orchestrator: self,
            node: node.to_string(),
            api,
            partitions: self.owned_partitions(),
            report: AntiEntropyReport::default(),
        };
        pass.report.partitions = pass.partitions.clone();
        if let Err(error) = pass.run().await {
            pass.report.error = Some(error);
        }
        pass.report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        pass.report.finished_ns = pinhive_events::now_ns();
        METRICS
            .anti_entropy_seconds
            .with_label_values::<&str>(&[])
            .observe(started.elapsed().as_secs_f64());
        pass.report
    }
}

impl Pass<'_> {
    async fn run(&mut self) -> Result<(), String> {
        if self.partitions.is_empty() {
            return Ok(());
        }
        // Counters far off (a store written before the node index) must not make a filter
        // unbounded; a filter given more than it was sized for is reported as saturated.
        let expected = self.expected_pins().await?.min(MAX_FILTER_ITEMS);
        // A fresh seed per pass: a false positive of one pass is not one of the next.
        let seed = u128::from(pinhive_events::now_ns().unsigned_abs());
        let filter = |items: usize| {
            BloomFilter::with_false_pos(FALSE_POSITIVES)
                .seed(&seed)
                .expected_items(items.max(1024))
        };
        // The node may pin more than pinhive knows of: room for a quarter more.
        let mut believed = filter(expected);
        let mut observed = filter(expected + expected / 4);
        self.report.filter_bytes = ((believed.num_bits() + observed.num_bits()) / 8) as u64;
        METRICS
            .anti_entropy_filter_bytes
            .with_label_values::<&str>(&[])
            .set(i64::try_from(self.report.filter_bytes).unwrap_or(i64::MAX));

        let partitions = self.partitions.clone();
        let mut indexed = 0usize;
        for &partition in &partitions {
            self.walk(partition, |cid| {
                believed.insert(cid);
                indexed += 1;
            })
            .await?;
        }
        let listed_capacity = (expected + expected / 4).max(1024);
        self.report.saturated = indexed > expected.max(1024);

        let mut unknown = Vec::new();
        let mut sample = Sample::new(
            self.orchestrator.config.anti_entropy_integrity_samples,
            seed,
        );
        let mut pins = self
            .api
            .pin_ls_all()
            .await
            .map_err(|e| format!("pin/ls: {e}"))?;
        while let Some(item) = pins.next().await {
            if self.orchestrator.stopping() {
                return Err("shutting down".into());
            }
            let listed = item.map_err(|e| format!("pin/ls: {e}"))?;
            // The node may spell a CID another way (CIDv0, another base): the index and the
            // log key use the canonical form.
            let Ok(cid) = pinhive_domain::canonical_cid(&listed) else {
                continue;
            };
            let partition = self.orchestrator.log.partition_for(cid.as_bytes());
            if !partitions.contains(&partition) {
                continue;
            }
            self.report.listed += 1;
            observed.insert(&cid);
            if believed.contains(&cid) {
                sample.offer(&cid);
            } else {
                // Checked a page at a time (the stream waits meanwhile: bounded memory).
                unknown.push(cid);
                if unknown.len() >= self.orchestrator.config.repair_page {
                    self.check_all(std::mem::take(&mut unknown)).await?;
                }
            }
        }
        drop(pins);
        self.report.saturated |= self.report.listed as usize > listed_capacity;
        if self.report.saturated {
            tracing::warn!(
                node = self.node,
                expected,
                indexed,
                listed = self.report.listed,
                "anti-entropy filters saturated (the node's replica counters are off): this \
                 pass finds less drift than it should"
            );
        }
        self.check_all(unknown).await?;
        self.check_integrity(sample.into_cids()).await;

        for &partition in &partitions {
            let mut missing = Vec::new();
            let node = self.node.clone();
            let orchestrator = self.orchestrator;
            let mut cursor = NodeCidCursor::default();
            loop {
                let (cids, next) = orchestrator
                    .node_cids_page(&node, partition, &cursor)
                    .await
                    .map_err(|e| e.to_string())?;
                self.report.believed += cids.len() as u64;
                missing.extend(cids.into_iter().filter(|cid| !observed.contains(cid)));
                if !missing.is_empty() {
                    self.check_all(std::mem::take(&mut missing)).await?;
                }
                match next {
                    Some(next) => cursor = next,
                    None => break,
                }
            }
        }
        Ok(())
    }

    /// Replicas the node holds on this instance's partitions, by its counters (sizes the
    /// filters; a stale count only changes the false-positive rate).
    async fn expected_pins(&self) -> Result<usize, String> {
        let store = self.orchestrator.store.clone();
        let (scope, partitions) = (node_scope(&self.node), self.partitions.clone());
        tokio::task::spawn_blocking(move || -> Result<usize, StoreError> {
            let mut total = 0i64;
            for partition in partitions {
                total += store
                    .counter(&scope, PinStatus::Pinned, partition)?
                    .unwrap_or(0)
                    .max(0);
            }
            Ok(usize::try_from(total).unwrap_or(usize::MAX))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
    }

    /// Walks the node's index on `partition`, handing every CID to `visit`.
    async fn walk(&mut self, partition: u32, mut visit: impl FnMut(&str)) -> Result<(), String> {
        let mut cursor = NodeCidCursor::default();
        loop {
            let (cids, next) = self
                .orchestrator
                .node_cids_page(&self.node, partition, &cursor)
                .await
                .map_err(|e| e.to_string())?;
            for cid in &cids {
                visit(cid);
            }
            match next {
                Some(next) => cursor = next,
                None => return Ok(()),
            }
        }
    }

    /// `block/stat` of each sampled root (see the module docs).
    async fn check_integrity(&mut self, cids: Vec<String>) {
        for cid in cids {
            self.orchestrator.check_rate.acquire().await;
            self.report.sampled += 1;
            let result = match self.api.block_stat(&cid).await {
                Ok(_) => "ok",
                Err(error) => {
                    self.report.unreadable += 1;
                    if self.report.unreadable_cids.len() < REPORTED_UNKNOWN {
                        self.report.unreadable_cids.push(cid.clone());
                    }
                    tracing::warn!(node = self.node, cid, error = %error, "a pinned root cannot be read on its node");
                    "unreadable"
                }
            };
            METRICS
                .anti_entropy_integrity
                .with_label_values(&[result])
                .inc();
        }
    }

    /// Judges each candidate and appends the corrections (also those gathered before an
    /// error ends the pass: a correction made is never dropped).
    async fn check_all(&mut self, candidates: Vec<String>) -> Result<(), String> {
        let mut corrections = Vec::new();
        let result = self.judge_all(candidates, &mut corrections).await;
        if !corrections.is_empty() {
            self.orchestrator
                .log
                .append(corrections)
                .await
                .map_err(|e| format!("appending corrections: {e}"))?;
        }
        result
    }

    /// The stored state of `cid`.
    async fn load(&self, cid: &str) -> Result<Option<CidState>, String> {
        let store = self.orchestrator.store.clone();
        let key = cid.to_string();
        tokio::task::spawn_blocking(move || store.load_cid(&key))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    /// Judges each candidate: the stored state, a point `pin/ls`, the stored state again — a
    /// verdict only if no event touched the CID meanwhile (a pin landing or an unpin whose
    /// outcome is on its way is left to the next pass).
    async fn judge_all(
        &mut self,
        candidates: Vec<String>,
        corrections: &mut Vec<Record>,
    ) -> Result<(), String> {
        let config = &self.orchestrator.config;
        for cid in candidates {
            if self.orchestrator.stopping() {
                return Err("shutting down".into());
            }
            self.orchestrator.check_rate.acquire().await;
            self.report.checked += 1;
            let before = self.load(&cid).await?;
            let pinned = self
                .api
                .pin_ls(&cid)
                .await
                .map_err(|e| format!("pin/ls {cid}: {e}"))?;
            let state = self.load(&cid).await?;
            let applied = |s: &Option<CidState>| s.as_ref().and_then(|s| s.applied_offset);
            let verdict = if applied(&before) == applied(&state) {
                judge(state.as_ref(), &self.node, pinned)
            } else {
                Verdict::Consistent
            };
            METRICS
                .anti_entropy_drift
                .with_label_values(&[verdict.as_str()])
                .inc();
            match verdict {
                Verdict::Consistent => continue,
                Verdict::Missing => {
                    self.report.missing += 1;
                    tracing::warn!(
                        node = self.node,
                        cid,
                        "replica missing on its node; pinning it again"
                    );
                }
                Verdict::Unknown => {
                    self.report.unknown += 1;
                    if self.report.unknown_cids.len() < REPORTED_UNKNOWN {
                        self.report.unknown_cids.push(cid.clone());
                    }
                    tracing::warn!(
                        node = self.node,
                        cid,
                        remove = config.anti_entropy_remove_unknown,
                        "the node pins a CID pinhive holds no replica of there"
                    );
                    if config.anti_entropy_remove_unknown {
                        self.api
                            .pin_rm(&cid)
                            .await
                            .map_err(|e| format!("pin/rm {cid}: {e}"))?;
                        self.report.removed += 1;
                        // A replica placed on the node since the check (a request applied in
                        // between) is pinned there again at once: the blocks are still there.
                        let after = self.load(&cid).await?;
                        if judge(after.as_ref(), &self.node, false) == Verdict::Missing {
                            corrections.push(Record::from_envelope(&Envelope::new(
                                cid.clone(),
                                pinhive_events::Event::ReplicaMissing {
                                    node: self.node.clone(),
                                    reason: "placed while anti-entropy removed an unknown pin"
                                        .into(),
                                },
                            )));
                        }
                    }
                }
            }
            if let Some(event) = correction(verdict, &self.node, config.anti_entropy_remove_unknown)
            {
                corrections.push(Record::from_envelope(&Envelope::new(cid, event)));
            }
        }
        Ok(())
    }
}

/// A uniform sample of at most `size` CIDs of a stream, in bounded memory: the CIDs with the
/// smallest hashes under the pass's seed (bottom-k).
struct Sample {
    size: usize,
    seed: u128,
    kept: std::collections::BinaryHeap<(u64, String)>,
}

impl Sample {
    fn new(size: usize, seed: u128) -> Self {
        Sample {
            size,
            seed,
            kept: std::collections::BinaryHeap::new(),
        }
    }

    fn offer(&mut self, cid: &str) {
        if self.size == 0 {
            return;
        }
        let hash = xxhash_rust::xxh3::xxh3_64_with_seed(cid.as_bytes(), self.seed as u64);
        if self.kept.len() < self.size {
            self.kept.push((hash, cid.to_string()));
        } else if self.kept.peek().is_some_and(|(largest, _)| hash < *largest) {
            self.kept.pop();
            self.kept.push((hash, cid.to_string()));
        }
    }

    fn into_cids(self) -> Vec<String> {
        self.kept
            .into_sorted_vec()
            .into_iter()
            .map(|(_, cid)| cid)
            .collect()
    }
}

/// The reports of one instance, by node.
pub(crate) type Reports = parking_lot::Mutex<BTreeMap<String, AntiEntropyReport>>;

/// Default pause between two passes over the nodes (one hour).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(3600);

#[cfg(test)]
mod tests {
    use super::Sample;

    #[test]
    fn the_sample_is_bounded_and_uniform() {
        let mut sample = Sample::new(100, 7);
        for i in 0..100_000 {
            sample.offer(&format!("cid-{i}"));
        }
        let cids = sample.into_cids();
        assert_eq!(cids.len(), 100);
        // Uniform: about as many from each half of the stream.
        let early = cids
            .iter()
            .filter(|c| c[4..].parse::<u32>().unwrap() < 50_000)
            .count();
        assert!(
            (30..=70).contains(&early),
            "{early} of 100 from the first half"
        );
        assert!(Sample::new(0, 7).into_cids().is_empty());
        let mut few = Sample::new(10, 7);
        few.offer("a");
        few.offer("b");
        assert_eq!(few.into_cids().len(), 2);
    }
}
