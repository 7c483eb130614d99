//! Pure domain logic of pinhive: no I/O, no async, no clocks.
//!
//! * [`state`]: the per-CID state ([`CidState`]) and its fold over events (`apply`).
//! * [`plan`]: what must happen next for a CID (allocate, pin, unpin), level-triggered, so the
//!   same call repairs whatever a crash left undone.
//! * [`allocator`]: weighted rendezvous placement across healthy nodes and regions.
//! * [`pin`]: the Pinning Service API status of a pin, derived from its CID's replicas.
//! * [`values`]: typed values of outside input (canonical [`values::Cid`], owner, name, meta,
//!   origins); [`command`]: `decide` (edge commands → events) and `admit` (every log record
//!   → event or [`command::Rejection`]), shared by every entry path.

pub mod allocator;
pub mod command;
pub mod pin;
pub mod plan;
pub mod state;
pub mod values;

pub use allocator::{allocate, NodeView};
pub use command::{
    admit, decide, legacy, Command, Decided, Legacy, PinCommand, Provenance, RawPin, Rejection,
};
pub use pin::{PinRecord, PinStatus};
pub use plan::{needs_work, plan, Action, PlanContext};
pub use state::{CidState, PinRef, ReplicaState, ReplicaStatus};
pub use values::{canonical_cid, Cid};

#[cfg(test)]
mod tests;
