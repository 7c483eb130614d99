//! The audit trail: one structured log line (tracing target `audit`) and one increment of
//! `pinhive_audit_events_total{action}` per security-relevant action — token mint and revoke,
//! node add / remove / drain / undrain, pin delete, S3 webhook call, an admin's read or
//! change of another owner's pin, and an admin's read of other owners' data outside the pin
//! routes (token listings, dead letters, quarantined CIDs, S3 objects). Each line names the caller by token id, token name and owner;
//! never by secret.
//!
//! The lines go wherever the service logs (stderr; `--log-format json` makes them one JSON
//! object each, with `target: "audit"`), so an operator ships them with the rest or filters
//! them with `RUST_LOG=audit=info`. They are emitted after the action succeeded.

use std::sync::LazyLock;

use prometheus::IntCounterVec;

use crate::auth::Caller;

/// What was done: the counter's label (a closed set, so the label stays bounded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    TokenMint,
    TokenRevoke,
    NodeAdd,
    NodeRemove,
    NodeDrain,
    NodeUndrain,
    PinDelete,
    S3Webhook,
    AdminReadOtherOwner,
    AdminChangeOtherOwner,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::TokenMint => "token_mint",
            Action::TokenRevoke => "token_revoke",
            Action::NodeAdd => "node_add",
            Action::NodeRemove => "node_remove",
            Action::NodeDrain => "node_drain",
            Action::NodeUndrain => "node_undrain",
            Action::PinDelete => "pin_delete",
            Action::S3Webhook => "s3_webhook",
            Action::AdminReadOtherOwner => "admin_read_other_owner",
            Action::AdminChangeOtherOwner => "admin_change_other_owner",
        }
    }
}

static EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    pinhive_telemetry::counter_vec(
        "pinhive_audit_events_total",
        "Audited actions (token mint/revoke, node changes, pin deletes, S3 webhook calls, \
         admin reads of another owner's data) by action",
        &["action"],
    )
});

/// Records an admin's read of data that is not (only) its own owner's — another owner's
/// tokens, dead letters (records of any owner), quarantined CIDs, the S3 owner's objects — on
/// `subject`, when `owner` (the data's owner; `None` for data of many owners) is not the
/// caller's.
pub fn admin_read(caller: &Caller, owner: Option<&str>, subject: &str, detail: &str) {
    if owner != Some(caller.owner.as_str()) {
        record(Action::AdminReadOtherOwner, caller, subject, detail);
    }
}

/// Records one audited action by `caller` on `subject` (a token id, node id, requestid,
/// bucket…), with `detail` saying what exactly (may be empty).
pub fn record(action: Action, caller: &Caller, subject: &str, detail: &str) {
    EVENTS.with_label_values(&[action.name()]).inc();
    tracing::info!(
        target: "audit",
        action = action.name(),
        token_id = %caller.token_id,
        token_name = %caller.token_name,
        owner = %caller.owner,
        subject = %subject,
        detail = %detail,
        "audit"
    );
}
