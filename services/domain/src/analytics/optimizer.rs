//! The budgeted water-level optimizer (docs/analytics.md).

use super::{Candidate, EpochOutcome, OptimizerParams};

/// Computes every candidate's target for `epoch`.
pub fn optimize(candidates: &[Candidate], params: &OptimizerParams, epoch: u64) -> EpochOutcome {
    let _ = (candidates, params, epoch);
    todo!("implemented by the optimizer work")
}
