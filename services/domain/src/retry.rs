//! When a failed replica is tried again: automatic retries with a backoff that grows per
//! failure round, up to a limit; `PinRecoverRequested` starts the rounds over.
//!
//! A replica that fails (`ReplicaFailed` after the node driver's own retries) records its
//! round (`ReplicaState::failures`) and the time of the failure (the envelope's). Meanwhile
//! the planner allocates another node at once if one is free (a node-specific failure moves
//! elsewhere without waiting). Once the backoff of round `f` has passed —
//! `base · 2^(f−1)`, at most `cap` — the failed node is allocated again (`ReplicasAllocated`
//! turns the replica back to `Allocated`), nodes never tried first. After `retries` rounds
//! have been retried and failed, the replica stays `Failed`: when no live replica is left the
//! pin shows `failed`, with the reasons in `info.failure`, until `pins recover`.
//!
//! Pure: the time is passed in (`PlanContext::now_ns`), the failure time comes from the log.

use std::time::Duration;

use pinhive_events::NodeId;

use crate::allocator::NodeView;
use crate::state::{CidState, ReplicaState, ReplicaStatus};

/// How failed replicas are retried (config: `pin_retry_base_secs`, `pin_retry_max_secs`,
/// `pin_retry_limit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait after the first failure round; doubled each further round.
    pub base: Duration,
    /// The longest wait between rounds.
    pub cap: Duration,
    /// Automatic retries of a failed replica (0: a failed replica is never retried unasked).
    pub retries: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(30),
            cap: Duration::from_secs(3600),
            retries: 5,
        }
    }
}

impl RetryPolicy {
    /// The wait after failure round `failures` (0, a recovered replica: none).
    pub fn backoff(&self, failures: u32) -> Duration {
        let Some(doublings) = failures.checked_sub(1) else {
            return Duration::ZERO;
        };
        let factor = 1u32.checked_shl(doublings.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// When `replica` is retried (ns since the epoch), if it is failed and has retries left.
    pub fn due_ns(&self, replica: &ReplicaState) -> Option<i64> {
        if replica.status != ReplicaStatus::Failed || replica.failures > self.retries {
            return None;
        }
        let wait = i64::try_from(self.backoff(replica.failures).as_nanos()).unwrap_or(i64::MAX);
        Some(replica.failed_ns.saturating_add(wait))
    }
}

/// The next time a failed replica of `state` on a registered node is retried, if any (the
/// value the shard keeps in `CidState::retry_at_ns`). A node that left the registry is never
/// retried.
pub fn next_retry(state: &CidState, nodes: &[NodeView], policy: &RetryPolicy) -> Option<i64> {
    state
        .replicas
        .iter()
        .filter(|(node, _)| nodes.iter().any(|n| &n.id == *node))
        .filter_map(|(_, replica)| policy.due_ns(replica))
        .min()
}

/// Failed replicas whose retry is due at `now_ns`, earliest due first (ties by node id): the
/// nodes the planner may allocate again when no node that never failed is left.
pub fn due_retries(state: &CidState, policy: &RetryPolicy, now_ns: i64) -> Vec<NodeId> {
    let mut due: Vec<(i64, &NodeId)> = state
        .replicas
        .iter()
        .filter_map(|(node, replica)| policy.due_ns(replica).map(|at| (at, node)))
        .filter(|(at, _)| *at <= now_ns)
        .collect();
    due.sort();
    due.into_iter().map(|(_, node)| node.clone()).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use pinhive_events::{Event, PinRequested};

    use super::*;
    use crate::{needs_work, plan, Action, PinStatus, PlanContext};

    const CID: &str = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";
    const S: i64 = 1_000_000_000;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_secs(10),
            cap: Duration::from_secs(40),
            retries: 2,
        }
    }

    fn context(nodes: &[&str], now_s: i64) -> PlanContext {
        PlanContext {
            nodes: nodes
                .iter()
                .map(|id| NodeView {
                    id: id.to_string(),
                    region: String::new(),
                    weight: 1,
                    healthy: true,
                    free_bytes: None,
                    state: pinhive_events::NodeState::Up,
                })
                .collect(),
            now_ns: now_s * S,
            retry: policy(),
            ..PlanContext::default()
        }
    }

    fn request() -> Event {
        Event::PinRequested(PinRequested {
            requestid: "r1".into(),
            owner: "alice".into(),
            cid: CID.into(),
            name: None,
            origins: vec![],
            meta: BTreeMap::new(),
            created_ns: 1,
            replicas_min: 1,
            replicas_max: 1,
            replaces: None,
        })
    }

    /// One step of the log: an event at a time (seconds).
    enum Step {
        Allocate(&'static str),
        Fail(&'static str, i64),
        Pin(&'static str),
        Recover,
    }
    use Step::*;

    /// Folds the steps as the shard does (each event at its envelope time, `retry_at_ns`
    /// derived after each) over the nodes of `context`.
    fn fold(steps: &[Step], context: &PlanContext) -> CidState {
        let mut state = CidState::new(CID);
        state.apply_at(0, 0, &request(), None);
        for (i, step) in steps.iter().enumerate() {
            let (event, at) = match step {
                Allocate(node) => (
                    Event::ReplicasAllocated {
                        nodes: vec![node.to_string()],
                        target: 1,
                    },
                    0,
                ),
                Fail(node, at) => (
                    Event::ReplicaFailed {
                        node: node.to_string(),
                        reason: "node timed out: pin/add timed out".into(),
                        attempts: 3,
                    },
                    at * S,
                ),
                Pin(node) => (
                    Event::ReplicaPinned {
                        node: node.to_string(),
                        delegates: vec![],
                        attempts: 1,
                        duration_ms: 1,
                    },
                    0,
                ),
                Recover => (
                    Event::PinRecoverRequested {
                        requestid: "r1".into(),
                    },
                    0,
                ),
            };
            state.apply_at(i as u64 + 1, at, &event, None);
            state.retry_at_ns = next_retry(&state, &context.nodes, &context.retry);
        }
        state
    }

    struct Case {
        name: &'static str,
        nodes: &'static [&'static str],
        steps: Vec<Step>,
        now_s: i64,
        /// Nodes allocated by the plan (empty: no allocation).
        allocates: &'static [&'static str],
        status: PinStatus,
        retry_at_s: Option<i64>,
        pending: bool,
    }

    #[test]
    fn retry_rule() {
        let cases = [
            Case {
                name: "a first failure waits the base backoff",
                nodes: &["n0"],
                steps: vec![Allocate("n0"), Fail("n0", 100)],
                now_s: 109,
                allocates: &[],
                status: PinStatus::Queued,
                retry_at_s: Some(110),
                pending: true,
            },
            Case {
                name: "once the backoff has passed the failed node is allocated again",
                nodes: &["n0"],
                steps: vec![Allocate("n0"), Fail("n0", 100)],
                now_s: 110,
                allocates: &["n0"],
                status: PinStatus::Queued,
                retry_at_s: Some(110),
                pending: true,
            },
            Case {
                name: "the second round waits twice as long",
                nodes: &["n0"],
                steps: vec![
                    Allocate("n0"),
                    Fail("n0", 100),
                    Allocate("n0"),
                    Fail("n0", 115),
                ],
                now_s: 134,
                allocates: &[],
                status: PinStatus::Queued,
                retry_at_s: Some(135),
                pending: true,
            },
            Case {
                name: "a retried replica shows pinning",
                nodes: &["n0"],
                steps: vec![Allocate("n0"), Fail("n0", 100), Allocate("n0")],
                now_s: 200,
                allocates: &[],
                status: PinStatus::Pinning,
                retry_at_s: None,
                pending: true,
            },
            Case {
                name: "after the last retry failed the pin is failed and needs nothing",
                nodes: &["n0"],
                steps: vec![
                    Allocate("n0"),
                    Fail("n0", 100),
                    Allocate("n0"),
                    Fail("n0", 115),
                    Allocate("n0"),
                    Fail("n0", 140),
                ],
                now_s: 100_000,
                allocates: &[],
                status: PinStatus::Failed,
                retry_at_s: None,
                pending: false,
            },
            Case {
                name: "recover starts the rounds over: retried at once",
                nodes: &["n0"],
                steps: vec![
                    Allocate("n0"),
                    Fail("n0", 100),
                    Allocate("n0"),
                    Fail("n0", 115),
                    Allocate("n0"),
                    Fail("n0", 140),
                    Recover,
                ],
                now_s: 141,
                allocates: &["n0"],
                status: PinStatus::Queued,
                retry_at_s: Some(140),
                pending: true,
            },
            Case {
                name: "a node that never failed is allocated at once, before any retry",
                nodes: &["n0", "n1"],
                steps: vec![Allocate("n0"), Fail("n0", 100)],
                now_s: 100,
                allocates: &["n1"],
                status: PinStatus::Queued,
                retry_at_s: Some(110),
                pending: true,
            },
            Case {
                name: "with every node failed, the earliest due is retried",
                nodes: &["n0", "n1"],
                steps: vec![
                    Allocate("n0"),
                    Fail("n0", 100),
                    Allocate("n1"),
                    Fail("n1", 101),
                ],
                now_s: 110,
                allocates: &["n0"],
                status: PinStatus::Queued,
                retry_at_s: Some(110),
                pending: true,
            },
            Case {
                name: "a pinned replica forgets its rounds",
                nodes: &["n0"],
                steps: vec![Allocate("n0"), Fail("n0", 100), Allocate("n0"), Pin("n0")],
                now_s: 200,
                allocates: &[],
                status: PinStatus::Pinned,
                retry_at_s: None,
                pending: false,
            },
            Case {
                name: "a repeated outcome of one round counts once",
                nodes: &["n0"],
                steps: vec![Allocate("n0"), Fail("n0", 100), Fail("n0", 105)],
                now_s: 110,
                allocates: &["n0"],
                status: PinStatus::Queued,
                retry_at_s: Some(110),
                pending: true,
            },
            Case {
                name: "a node that left the registry is not retried: failed",
                nodes: &[],
                steps: vec![Allocate("n0"), Fail("n0", 100)],
                now_s: 1_000,
                allocates: &[],
                status: PinStatus::Failed,
                retry_at_s: None,
                pending: false,
            },
        ];
        for case in cases {
            let context = context(case.nodes, case.now_s);
            let state = fold(&case.steps, &context);
            let actions = plan(&state, &context);
            let allocated: Vec<String> = actions
                .iter()
                .filter_map(|action| match action {
                    Action::Allocate { nodes, .. } => Some(nodes.clone()),
                    _ => None,
                })
                .flatten()
                .collect();
            assert_eq!(allocated, case.allocates, "{}: allocations", case.name);
            assert_eq!(state.pin_status(), case.status, "{}: status", case.name);
            assert_eq!(
                state.retry_at_ns,
                case.retry_at_s.map(|s| s * S),
                "{}: retry time",
                case.name
            );
            assert_eq!(
                needs_work(&state, &context, &actions),
                case.pending,
                "{}: pending",
                case.name
            );
        }
    }

    #[test]
    fn the_failed_pin_names_its_reason() {
        let context = context(&["n0"], 0);
        let steps = [
            Allocate("n0"),
            Fail("n0", 1),
            Allocate("n0"),
            Fail("n0", 2),
            Allocate("n0"),
            Fail("n0", 3),
        ];
        let state = fold(&steps, &context);
        assert_eq!(state.pin_status(), PinStatus::Failed);
        assert_eq!(
            state.pin_info().get("failure").map(String::as_str),
            Some(crate::disclosure::FAILURE_NOT_FOUND)
        );
        assert_eq!(state.replicas["n0"].failures, 3);
    }

    #[test]
    fn backoff_doubles_per_round_up_to_the_cap() {
        let policy = policy();
        let table = [
            (0, 0),
            (1, 10),
            (2, 20),
            (3, 40),
            (4, 40),
            (40, 40),
            (u32::MAX, 40),
        ];
        for (failures, seconds) in table {
            assert_eq!(
                policy.backoff(failures),
                Duration::from_secs(seconds),
                "round {failures}"
            );
        }
    }

    #[test]
    fn replay_rebuilds_the_same_state() {
        let context = context(&["n0"], 0);
        let steps = [
            Allocate("n0"),
            Fail("n0", 100),
            Allocate("n0"),
            Fail("n0", 115),
        ];
        let state = fold(&steps, &context);
        let again = fold(&steps, &context);
        assert_eq!(state, again);
        // A repeated event (at or below the applied offset) changes nothing.
        let mut replayed = state.clone();
        replayed.apply_at(
            2,
            999 * S,
            &Event::ReplicaFailed {
                node: "n0".into(),
                reason: "again".into(),
                attempts: 1,
            },
            None,
        );
        assert_eq!(replayed, state);
    }
}
