//! The `[analytics]` section of the config file (docs/analytics.md explains every knob).

use pinhive_domain::analytics::OptimizerParams;
use serde::Deserialize;

use crate::tracker::TrackerConfig;

#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    /// Run the analytics actors (access events are refused with 503 when off).
    pub enabled: bool,
    /// Partitions of the access log (embedded) or topic (Kafka); fixed when it is created.
    pub access_partitions: u32,
    /// Kafka topic of access events (created if absent).
    pub access_topic: String,
    /// Embedded access log: segments the checkpoints cover are dropped once this old (Kafka:
    /// the topic's `retention.ms`).
    pub access_retention_secs: u64,
    /// Regions the optimizer places replicas in. Empty: the regions of the nodes configured at
    /// start (`--ipfs-node URL#REGION` and nodes added earlier through the admin API).
    pub regions: Vec<String>,
    pub epoch_secs: f64,
    /// Time between two checkpoints of a partition, rounded up to whole epochs (a stop always
    /// checkpoints). A
    /// checkpoint encodes the whole tracker (megabytes), so it is not written every epoch when
    /// epochs are short; a crash re-reads the access records counted since the last one.
    pub checkpoint_secs: f64,
    pub fast_half_life_secs: f64,
    pub slow_half_life_secs: f64,
    pub replica_bytes_per_sec: f64,
    pub rho_up: f64,
    pub rho_down: f64,
    pub geo_views_per_day: f64,
    pub geo_hysteresis: f64,
    pub cool_down_epochs: u64,
    pub min_hold_epochs: u64,
    /// Per access partition.
    pub max_changes_per_epoch: usize,
    /// Cluster-wide; each access partition spends an equal share.
    pub extra_budget_bytes: u64,
    /// Heavy hitters tracked exactly, per access partition.
    pub top_k: usize,
    pub sketch_hashes: u8,
    pub sketch_buckets: u32,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        let params = OptimizerParams::default();
        AnalyticsConfig {
            enabled: true,
            access_partitions: 4,
            access_topic: "pinhive-access".into(),
            access_retention_secs: 3600,
            regions: Vec::new(),
            epoch_secs: 60.0,
            checkpoint_secs: 60.0,
            fast_half_life_secs: 3600.0,
            slow_half_life_secs: 86_400.0,
            replica_bytes_per_sec: params.replica_bytes_per_sec,
            rho_up: params.rho_up,
            rho_down: params.rho_down,
            geo_views_per_day: params.geo_views_per_day,
            geo_hysteresis: params.geo_hysteresis,
            cool_down_epochs: params.cool_down_epochs,
            min_hold_epochs: params.min_hold_epochs,
            max_changes_per_epoch: params.max_changes_per_epoch,
            extra_budget_bytes: params.extra_budget_bytes,
            top_k: 10_000,
            sketch_hashes: 4,
            sketch_buckets: 65_536,
        }
    }
}

impl AnalyticsConfig {
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("epoch_secs", self.epoch_secs),
            ("checkpoint_secs", self.checkpoint_secs),
            ("fast_half_life_secs", self.fast_half_life_secs),
            ("slow_half_life_secs", self.slow_half_life_secs),
            ("replica_bytes_per_sec", self.replica_bytes_per_sec),
            ("geo_views_per_day", self.geo_views_per_day),
        ];
        for (name, value) in positive {
            if !(value.is_finite() && value > 0.0) {
                return Err(format!(
                    "analytics.{name} must be a positive number, not {value}"
                ));
            }
        }
        if !(0.0 < self.rho_down && self.rho_down < self.rho_up && self.rho_up <= 1.0) {
            return Err(format!(
                "analytics needs 0 < rho_down < rho_up <= 1, not rho_down {} and rho_up {}",
                self.rho_down, self.rho_up
            ));
        }
        if !(self.geo_hysteresis.is_finite() && self.geo_hysteresis >= 0.0) {
            return Err("analytics.geo_hysteresis must be 0 or more".into());
        }
        if !(1..=1024).contains(&self.access_partitions) {
            return Err(format!(
                "analytics.access_partitions must be 1 to 1024, not {}",
                self.access_partitions
            ));
        }
        if self.top_k == 0 || self.top_k > 10_000_000 {
            return Err("analytics.top_k must be 1 to 10000000".into());
        }
        if self.sketch_hashes == 0 || self.sketch_buckets < 64 {
            return Err(
                "analytics.sketch_hashes must be at least 1 and sketch_buckets at least 64".into(),
            );
        }
        // The tracker's own checks (half-lives in order, region names, sketch shape).
        self.tracker(&self.regions).validate()
    }

    /// Epochs between two checkpoints: `checkpoint_secs` in whole epochs, at least one.
    pub fn epochs_per_checkpoint(&self) -> u64 {
        let epochs = (self.checkpoint_secs / self.epoch_secs).ceil();
        if epochs.is_finite() && epochs >= 1.0 {
            epochs as u64
        } else {
            1
        }
    }

    pub fn tracker(&self, regions: &[String]) -> TrackerConfig {
        TrackerConfig {
            regions: regions.to_vec(),
            top_k: self.top_k,
            sketch_hashes: self.sketch_hashes,
            sketch_buckets: self.sketch_buckets,
            epoch_secs: self.epoch_secs,
            fast_half_life_secs: self.fast_half_life_secs,
            slow_half_life_secs: self.slow_half_life_secs,
        }
    }

    /// Optimizer parameters of one access partition: the budget is split evenly (CIDs hash
    /// uniformly over partitions).
    pub fn optimizer(&self, regions: &[String]) -> OptimizerParams {
        OptimizerParams {
            regions: regions.to_vec(),
            replica_bytes_per_sec: self.replica_bytes_per_sec,
            rho_up: self.rho_up,
            rho_down: self.rho_down,
            geo_views_per_day: self.geo_views_per_day,
            geo_hysteresis: self.geo_hysteresis,
            cool_down_epochs: self.cool_down_epochs,
            min_hold_epochs: self.min_hold_epochs,
            max_changes_per_epoch: self.max_changes_per_epoch,
            extra_budget_bytes: self.extra_budget_bytes / u64::from(self.access_partitions.max(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_come_every_whole_number_of_epochs() {
        let every = |epoch_secs: f64, checkpoint_secs: f64| {
            AnalyticsConfig {
                epoch_secs,
                checkpoint_secs,
                ..AnalyticsConfig::default()
            }
            .epochs_per_checkpoint()
        };
        assert_eq!(every(60.0, 60.0), 1, "the defaults: every epoch");
        assert_eq!(every(60.0, 90.0), 2, "rounded up");
        assert_eq!(every(60.0, 30.0), 1, "at least one epoch");
        assert_eq!(every(0.3, 60.0), 200);
    }
}
