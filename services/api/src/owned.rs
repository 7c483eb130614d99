//! The one lookup of a pin on behalf of a caller: every route that names a pin by request id
//! goes through [`owned_pin`], so a foreign pin is indistinguishable from a missing one
//! everywhere (same 404, same message).

use actix_web::web;
use pinhive_domain::tokens::Scope;
use pinhive_domain::PinRow;

use crate::audit::{self, Action};
use crate::auth::{Caller, PinAccess};
use crate::error::ApiError;
use crate::AppState;

/// Who may reach a pin through a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Only the pin's owner (the Pinning Service API: `/pins/{requestid}`; the route's
    /// extractor checked the scope).
    Owner,
    /// The pin's owner with `scope`, or an admin (the `/admin/pins/{requestid}/…` extensions;
    /// an admin's access to another owner's pin is audited as `what` by
    /// [`OwnedPin::audit`]).
    OwnerOrAdmin { scope: Scope, what: &'static str },
}

/// A pin a caller may reach, and what to audit once the route's action succeeded.
pub struct OwnedPin {
    pub row: PinRow,
    /// An admin reaching another owner's pin: the action and what was done.
    audited: Option<(Action, &'static str)>,
}

impl OwnedPin {
    /// Records an admin's read or change of another owner's pin in the audit trail (nothing
    /// for the pin's owner). Called after the route's action succeeded, so a refused or
    /// failed change leaves no line.
    pub fn audit(&self, caller: &Caller) {
        if let Some((action, what)) = self.audited {
            let pin = &self.row.record;
            audit::record(
                action,
                caller,
                &pin.requestid,
                &format!("{what} of a pin of {}", pin.owner),
            );
        }
    }
}

/// The stored pin `requestid` if `caller` may reach it with `access`; otherwise (missing, or
/// another owner's) a 404 that says nothing about which.
pub async fn owned_pin(
    state: &AppState,
    caller: &Caller,
    requestid: &str,
    access: Access,
) -> Result<OwnedPin, ApiError> {
    let store = state.store.clone();
    let lookup = requestid.to_string();
    let row = web::block(move || store.load_pin(&lookup)).await??;
    let not_found = || ApiError::not_found(format!("no pin with requestid {requestid}"));
    let row = row.ok_or_else(not_found)?;
    let audited = match access {
        Access::Owner if row.record.owner == caller.owner => None,
        Access::Owner => return Err(not_found()),
        Access::OwnerOrAdmin { scope, what } => {
            match caller.check_pin(&row.record.owner, requestid, scope)? {
                PinAccess::Own => None,
                PinAccess::AdminOfOtherOwner if scope == Scope::PinsRead => {
                    Some((Action::AdminReadOtherOwner, what))
                }
                PinAccess::AdminOfOtherOwner => Some((Action::AdminChangeOtherOwner, what)),
            }
        }
    };
    Ok(OwnedPin { row, audited })
}

/// True when `caller` sees a pin as its owner does (redacted to what a tenant may see of a
/// shared CID), false for an admin (raw events, node ids, raw errors).
pub fn sees_redacted(caller: &Caller) -> bool {
    !caller.is_admin()
}
