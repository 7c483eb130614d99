//! The k-way merge every store runs for `GET /pins`: the newest-first walk over one or more
//! ordered ranges of a listing index (the owner's statuses, or CID / name ranges), with the
//! budgets of [`crate::query`] and the count rules of docs/api.md. A store supplies each range
//! as a [`ListingSource`]; this module owns the order, the budget and the counting.

use pinhive_domain::PinRecord;

use crate::query::{PinPage, PinQuery, COUNT_BUDGET, SCAN_BUDGET};
use crate::StoreError;

/// (inverted creation time, request id): listing order, newest first.
pub type ListingPosition = (u64, String);

/// One ordered range of listing entries (position and encoded `PinRecord`).
pub trait ListingSource {
    type Value: AsRef<[u8]>;

    /// The next entry of the range, or `None` at its end.
    fn next_entry(&mut self) -> Result<Option<(ListingPosition, Self::Value)>, StoreError>;
}

/// A source in the merge: its range, the entry read ahead, and how many entries it may still
/// yield when the counters know (a status range without time bounds stops after its count).
pub struct MergeSource<S: ListingSource> {
    source: S,
    head: Option<(ListingPosition, S::Value)>,
    left: Option<u64>,
}

impl<S: ListingSource> MergeSource<S> {
    pub fn new(source: S, left: Option<u64>) -> Self {
        MergeSource {
            source,
            head: None,
            left,
        }
    }

    /// Reads the next entry into `head` unless there is one (or the source is done).
    fn fill(&mut self) -> Result<(), StoreError> {
        if self.head.is_none() && self.left != Some(0) {
            self.head = self.source.next_entry()?;
        }
        Ok(())
    }

    fn take(&mut self) -> Option<(ListingPosition, S::Value)> {
        let head = self.head.take()?;
        if let Some(left) = &mut self.left {
            *left = left.saturating_sub(1);
        }
        Some(head)
    }
}

/// Entries of the status index match a query with no other filter by their key alone:
/// counting them past the page needs no decoding.
pub fn key_decides(query: &PinQuery) -> bool {
    query.cids.is_empty() && query.name.is_none() && query.meta.is_empty()
}

/// Walks `sources` newest first and returns the page. `totals` are the owner's counters of the
/// queried statuses (empty unless the walk is over status ranges); with a status-only query the
/// count is theirs, otherwise the entries matched within the budget (exact when the walk
/// reached the end of its ranges, a lower bound otherwise: docs/api.md).
pub fn merge_page<S: ListingSource>(
    query: &PinQuery,
    sources: &mut [MergeSource<S>],
    totals: &[u64],
) -> Result<PinPage, StoreError> {
    let key_decides = key_decides(query);
    let status_only = query.is_status_only();
    let budget = if key_decides || query.is_indexed() {
        query.limit + COUNT_BUDGET
    } else {
        SCAN_BUDGET
    };
    let mut results = Vec::with_capacity(query.limit.min(1000));
    let mut matched: u64 = 0;
    let mut examined = 0usize;
    let mut last: Option<ListingPosition> = None;
    loop {
        if (results.len() >= query.limit && status_only) || examined >= budget {
            break;
        }
        for source in sources.iter_mut() {
            source.fill()?;
        }
        // k-way merge: the smallest (inverted time, request id) head.
        let Some(best) = sources
            .iter()
            .enumerate()
            .filter_map(|(i, source)| source.head.as_ref().map(|(position, _)| (i, position)))
            .min_by(|(_, a), (_, b)| a.cmp(b))
            .map(|(i, _)| i)
        else {
            break;
        };
        let Some((position, value)) = sources[best].take() else {
            break;
        };
        examined += 1;
        if sources.len() > 1 {
            if last.as_ref() == Some(&position) {
                continue; // the same pin seen through two sources
            }
            last = Some(position);
        }
        if results.len() >= query.limit && key_decides {
            matched += 1;
            continue;
        }
        let pin: PinRecord = crate::row::decode("listing entry", value.as_ref())?;
        if !query.matches(&pin) {
            continue;
        }
        matched += 1;
        if results.len() < query.limit {
            results.push(pin);
        }
    }
    let count = if status_only {
        (totals.iter().sum::<u64>()).max(results.len() as u64)
    } else {
        matched
    };
    Ok(PinPage { count, results })
}
