//! Pure domain logic of pinhive: no I/O, no async, no clocks.
//!
//! * [`state`]: the per-CID state ([`CidState`]) and its fold over events (`apply`); bounded
//!   whatever the number of pins referencing the CID.
//! * [`rows`]: pin rows and the view they show; [`writes`]: what a batch writes for one CID (`derive_writes`), incl. the bounded
//!   propagation of a CID's view to its pins.
//! * [`plan`]: what must happen next for a CID (allocate, pin, unpin), level-triggered, so the
//!   same call repairs whatever a crash left undone.
//! * [`retry`]: when a failed replica is tried again (backoff per failure round, a limit).
//! * [`antientropy`]: what a node's pins say about a CID against its state, and the
//!   correction (an event) for each disagreement.
//! * [`allocator`]: weighted rendezvous placement across healthy nodes and regions;
//!   [`rebalance`]: which CIDs move a replica to a node that joined, and from which node.
//! * [`nodes`]: node lifecycle (up, degraded, down, draining) folded from the control log, the
//!   health rule that moves it, and how endangered a CID is ([`Urgency`]).
//! * [`quota`]: per-owner quotas (most pins held, most in flight) against the owner's counts.
//! * [`disclosure`]: what a tenant may see of a CID shared with other tenants (sanitized
//!   failure reasons, a pin's own history).
//! * [`pin`]: the Pinning Service API status of a pin, derived from its CID's replicas.
//! * [`tokens`]: access-token scopes, expiry and revocation rules.
//! * [`values`]: typed values of outside input (canonical [`values::Cid`], owner, name, meta,
//!   origins); [`command`]: `decide` (edge commands → events) and `admit` (every log record
//!   → event or [`command::Rejection`]), shared by every entry path.

pub mod allocator;
pub mod analytics;
pub mod antientropy;
pub mod command;
pub mod disclosure;
pub mod nodes;
pub mod pin;
pub mod plan;
pub mod quota;
pub mod rebalance;
pub mod retry;
pub mod rows;
pub mod state;
pub mod tokens;
pub mod values;
pub mod writes;

pub use allocator::{allocate, NodeView};
pub use command::{
    admit, decide, legacy, Command, Decided, Legacy, PinCommand, Provenance, RawPin, Rejection,
};
pub use nodes::{HealthRule, NodeChange, NodeRecord, NodeTable, Urgency};
pub use pin::{PinRecord, PinStatus};
pub use plan::{needs_work, plan, urgency, Action, PlanContext};
pub use retry::{next_retry, RetryPolicy};
pub use rows::{PinRow, PinView, PIN_BUCKET};
pub use state::{CidState, Cursor, PinRef, Release, ReplicaState, ReplicaStatus};
pub use values::{canonical_cid, Cid};
pub use writes::{
    derive_writes, walk_start, CidInput, CidWrites, ExpiryIndexChange, PinRowWrite, PROPAGATE_STEP,
};

#[cfg(test)]
mod tests;
