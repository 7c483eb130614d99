//! The listing query of `GET /pins` and the filtering every store applies to index hits.

use pinhive_domain::{PinRecord, PinStatus};

use crate::Meta;

/// Most listing entries one request filtering without an index of its own (partial name
/// match, meta) may examine: such filters are evaluated over the owner's status index within
/// this budget; a page may then hold fewer than `limit` results and `count` is a lower bound.
pub const SCAN_BUDGET: usize = 10_000;
/// Extra entries examined past a full page to compute `count` for queries the counters cannot
/// answer (`cid`, `name`, `before`/`after`): `count` is exact up to this many past the page,
/// a lower bound beyond.
pub const COUNT_BUDGET: usize = 10_000;

/// The spec's four name match strategies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameMatch {
    Exact,
    IExact,
    Partial,
    IPartial,
}

impl NameMatch {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "exact" => Some(NameMatch::Exact),
            "iexact" => Some(NameMatch::IExact),
            "partial" => Some(NameMatch::Partial),
            "ipartial" => Some(NameMatch::IPartial),
            _ => None,
        }
    }

    pub fn matches(self, pattern: &str, name: &str) -> bool {
        match self {
            NameMatch::Exact => name == pattern,
            NameMatch::IExact => name.to_lowercase() == pattern.to_lowercase(),
            NameMatch::Partial => name.contains(pattern),
            NameMatch::IPartial => name.to_lowercase().contains(&pattern.to_lowercase()),
        }
    }
}

/// A validated listing query (the API checks bounds before building one).
#[derive(Clone, Debug, PartialEq)]
pub struct PinQuery {
    pub owner: String,
    /// At most 10 CIDs, canonical form (CIDv1 base32); empty = any.
    pub cids: Vec<String>,
    pub name: Option<(String, NameMatch)>,
    /// Never empty (the API defaults it to `pinned`).
    pub statuses: Vec<PinStatus>,
    /// Only pins created strictly before this time (ns).
    pub before_ns: Option<i64>,
    /// Only pins created strictly after this time (ns).
    pub after_ns: Option<i64>,
    /// Every pair must be present in the pin's meta.
    pub meta: Meta,
    /// 1..=1000.
    pub limit: usize,
}

impl PinQuery {
    /// True when `count` can come from the per-status counters alone.
    pub fn is_status_only(&self) -> bool {
        self.cids.is_empty()
            && self.name.is_none()
            && self.before_ns.is_none()
            && self.after_ns.is_none()
            && self.meta.is_empty()
    }

    /// True when an index of its own serves the query (CID or exact name).
    pub fn is_indexed(&self) -> bool {
        !self.cids.is_empty()
            || matches!(self.name, Some((_, NameMatch::Exact | NameMatch::IExact)))
    }

    /// Full check of a pin row against the query (index hits are re-checked with this, which
    /// also filters out stale index entries).
    pub fn matches(&self, pin: &PinRecord) -> bool {
        pin.owner == self.owner
            && self.statuses.contains(&pin.status)
            && (self.cids.is_empty() || self.cids.contains(&pin.canonical_cid()))
            && self.before_ns.is_none_or(|before| pin.created_ns < before)
            && self.after_ns.is_none_or(|after| pin.created_ns > after)
            && self.name.as_ref().is_none_or(|(pattern, mode)| {
                pin.name
                    .as_deref()
                    .is_some_and(|name| mode.matches(pattern, name))
            })
            && self
                .meta
                .iter()
                .all(|(k, v)| pin.meta.get(k).is_some_and(|have| have == v))
    }
}

/// One page of results, newest first.
#[derive(Clone, Debug, PartialEq)]
pub struct PinPage {
    pub count: u64,
    pub results: Vec<PinRecord>,
}
