//! Anti-entropy's rules: what one node's answer says about one CID, against the CID's state,
//! and what to do about it. The orchestrator's pass (listing, filters, point checks) only
//! gathers the facts.

use pinhive_events::Event;

use crate::state::{CidState, ReplicaStatus};

/// What a node's pins say about one CID, once checked with a point `pin/ls`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The node and the state agree, or the difference is work in flight (a pin being made,
    /// a failed attempt, an unpin on its way).
    Consistent,
    /// The state records a pinned replica on the node; the node does not pin the CID.
    Missing,
    /// The node pins the CID; the state holds no replica of it on the node.
    Unknown,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Consistent => "consistent",
            Verdict::Missing => "missing",
            Verdict::Unknown => "unknown",
        }
    }
}

/// Judges one CID on `node`: `state` is the CID's stored state (None: pinhive does not know the
/// CID), `pinned` what the node answered to a point `pin/ls`.
pub fn judge(state: Option<&CidState>, node: &str, pinned: bool) -> Verdict {
    let replica = state.and_then(|s| s.replicas.get(node)).map(|r| r.status);
    match (replica, pinned) {
        (Some(ReplicaStatus::Pinned), false) => Verdict::Missing,
        (None, true) => Verdict::Unknown,
        // Allocated: the pin is being made (or was, and its outcome is on its way); Failed: a
        // late pin the planner unpins when nothing wants it; absent everywhere: nothing to do.
        _ => Verdict::Consistent,
    }
}

/// The event that corrects `verdict` on `node`. An unknown pin is corrected (it was removed
/// from the node) only when the operator lets anti-entropy remove such pins.
pub fn correction(verdict: Verdict, node: &str, remove_unknown: bool) -> Option<Event> {
    match verdict {
        Verdict::Consistent => None,
        Verdict::Missing => Some(Event::ReplicaMissing {
            node: node.to_string(),
            reason: "not in the node's pin list (anti-entropy)".into(),
        }),
        Verdict::Unknown => remove_unknown.then(|| Event::UnknownPinRemoved {
            node: node.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use pinhive_events::PinRequested;

    use super::*;

    const CID: &str = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";

    fn with_replica(status: Option<ReplicaStatus>) -> CidState {
        let mut state = CidState::new(CID);
        let request = Event::PinRequested(PinRequested {
            requestid: "r1".into(),
            owner: "alice".into(),
            cid: CID.into(),
            name: None,
            origins: vec![],
            meta: Default::default(),
            created_ns: 1,
            replicas_min: 1,
            replicas_max: 1,
            replaces: None,
        });
        state.apply(0, &request, None);
        if let Some(status) = status {
            state.apply(
                1,
                &Event::ReplicasAllocated {
                    nodes: vec!["n1".into()],
                    target: 1,
                },
                None,
            );
            let outcome = match status {
                ReplicaStatus::Allocated => None,
                ReplicaStatus::Pinned => Some(Event::ReplicaPinned {
                    node: "n1".into(),
                    delegates: vec![],
                    attempts: 1,
                    duration_ms: 1,
                }),
                ReplicaStatus::Failed => Some(Event::ReplicaFailed {
                    node: "n1".into(),
                    reason: "timed out".into(),
                    attempts: 1,
                }),
            };
            if let Some(outcome) = outcome {
                state.apply(2, &outcome, None);
            }
            assert_eq!(state.replicas["n1"].status, status);
        }
        state
    }

    #[test]
    fn verdict_table() {
        use ReplicaStatus::*;
        use Verdict::*;
        let rows: [(Option<Option<ReplicaStatus>>, bool, Verdict); 10] = [
            (Some(Some(Pinned)), true, Consistent),
            (Some(Some(Pinned)), false, Missing),
            (Some(Some(Allocated)), true, Consistent),
            (Some(Some(Allocated)), false, Consistent),
            (Some(Some(Failed)), true, Consistent),
            (Some(Some(Failed)), false, Consistent),
            (Some(None), true, Unknown),
            (Some(None), false, Consistent),
            (None, true, Unknown),
            (None, false, Consistent),
        ];
        for (replica, pinned, expected) in rows {
            let state = replica.map(with_replica);
            assert_eq!(
                judge(state.as_ref(), "n1", pinned),
                expected,
                "replica {replica:?}, node pins it: {pinned}"
            );
            // Another node's replica says nothing about n1.
            assert_ne!(judge(state.as_ref(), "n2", pinned), Missing);
        }
    }

    #[test]
    fn corrections() {
        assert_eq!(correction(Verdict::Consistent, "n1", true), None);
        assert!(matches!(
            correction(Verdict::Missing, "n1", false),
            Some(Event::ReplicaMissing { node, .. }) if node == "n1"
        ));
        assert_eq!(correction(Verdict::Unknown, "n1", false), None);
        assert_eq!(
            correction(Verdict::Unknown, "n1", true),
            Some(Event::UnknownPinRemoved { node: "n1".into() })
        );
    }
}
