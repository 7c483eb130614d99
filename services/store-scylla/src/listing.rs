//! `GET /pins` over the listing tables: each source (owner × status, CID or name) is read
//! bucket by bucket, newest first, with the driver's paging state; sources are merged newest
//! first as the embedded store merges its key ranges, with the same budgets and counts.

use std::collections::VecDeque;

use pinhive_domain::{PinRecord, PinRow};
use pinhive_store::query::{COUNT_BUDGET, SCAN_BUDGET};
use pinhive_store::{NameMatch, PinPage, PinQuery, StoreError};
use scylla::response::{PagingState, PagingStateResponse};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlValue;

use crate::store::{backend, decode, rows, Marker, ScyllaStore};

/// Listing kinds, as stored in `listing_buckets.kind` and indexing the statement arrays.
pub(crate) const STATUS: i8 = 0;
pub(crate) const CID: i8 = 1;
pub(crate) const NAME: i8 = 2;

/// Buckets read per `listing_buckets` page.
const BUCKET_PAGE: i32 = 64;
/// Largest page of listing entries requested at once.
const ENTRY_PAGE: i32 = 1_000;

/// One listing entry's primary key.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ListingEntry {
    pub kind: i8,
    pub owner: String,
    /// Status code (tinyint), canonical CID or lowercase name (text).
    pub key: CqlValue,
    pub bucket: i64,
    pub created: i64,
    pub requestid: String,
}

impl ListingEntry {
    pub(crate) fn key_text(&self) -> String {
        key_text(&self.key)
    }

    pub(crate) fn marker(&self) -> Marker {
        Marker::Listing {
            owner: self.owner.clone(),
            kind: self.kind,
            key: self.key_text(),
            bucket: self.bucket,
        }
    }
}

fn key_text(key: &CqlValue) -> String {
    match key {
        CqlValue::TinyInt(code) => code.to_string(),
        CqlValue::Text(text) => text.clone(),
        other => format!("{other:?}"),
    }
}

/// One entry of a CID's pin list.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CidPinEntry {
    pub cid: String,
    pub bucket: i64,
    pub requestid: String,
}

pub(crate) fn bucket_of(created_ns: i64, width: i64) -> i64 {
    created_ns.max(0) / width.max(1)
}

/// The listing entries and pin-list entry of a pin row value.
pub(crate) fn entries_of(row: &PinRow, width: i64) -> (Vec<ListingEntry>, CidPinEntry) {
    let record = &row.record;
    let entry = |kind, key| ListingEntry {
        kind,
        owner: record.owner.clone(),
        key,
        bucket: bucket_of(record.created_ns, width),
        created: record.created_ns,
        requestid: record.requestid.clone(),
    };
    let canonical = record.canonical_cid();
    let mut listing = vec![
        entry(STATUS, CqlValue::TinyInt(record.status.code() as i8)),
        entry(CID, CqlValue::Text(canonical.clone())),
    ];
    if let Some(name) = &record.name {
        listing.push(entry(NAME, CqlValue::Text(name.to_lowercase())));
    }
    let cid_pin = CidPinEntry {
        cid: canonical,
        bucket: row.bucket as i64,
        requestid: record.requestid.clone(),
    };
    (listing, cid_pin)
}

/// (inverted creation time, request id): the embedded store's key order, newest first.
type Position = (u64, String);
type Entry = (Position, Vec<u8>);

/// One range (owner × status, CID or name) across its buckets.
struct Source<'a> {
    store: &'a ScyllaStore,
    kind: i8,
    owner: String,
    key: CqlValue,
    before: i64,
    after: i64,
    range: PreparedStatement,
    buckets: VecDeque<i64>,
    buckets_paging: Option<PagingState>,
    /// The bucket being read and the paging state of its next page (None: read to its end).
    current: Option<(i64, Option<PagingState>)>,
    buffer: VecDeque<Entry>,
    head: Option<Entry>,
    /// Entries this source may still yield (known from the counters), if bounded.
    left: Option<u64>,
}

impl<'a> Source<'a> {
    fn new(
        store: &'a ScyllaStore,
        query: &PinQuery,
        kind: i8,
        key: CqlValue,
        page: i32,
        left: Option<u64>,
    ) -> Self {
        let mut range = store.statements.listing_range[kind as usize].clone();
        range.set_page_size(page);
        Source {
            store,
            kind,
            owner: query.owner.clone(),
            key,
            before: query.before_ns.unwrap_or(i64::MAX),
            after: query.after_ns.unwrap_or(i64::MIN),
            range,
            buckets: VecDeque::new(),
            buckets_paging: Some(PagingState::start()),
            current: None,
            buffer: VecDeque::new(),
            head: None,
            left,
        }
    }

    /// Reads the next entry into `head` unless there is one (or the source is done).
    fn fill(&mut self) -> Result<(), StoreError> {
        if self.head.is_none() && self.left != Some(0) {
            self.head = self.next_entry()?;
        }
        Ok(())
    }

    fn take(&mut self) -> Option<Entry> {
        let head = self.head.take()?;
        if let Some(left) = &mut self.left {
            *left = left.saturating_sub(1);
        }
        Some(head)
    }

    fn next_entry(&mut self) -> Result<Option<Entry>, StoreError> {
        loop {
            if let Some(entry) = self.buffer.pop_front() {
                return Ok(Some(entry));
            }
            match self.current.take() {
                Some((bucket, Some(paging))) => self.read_entries(bucket, paging)?,
                Some((_, None)) | None => {
                    if let Some(bucket) = self.buckets.pop_front() {
                        self.current = Some((bucket, Some(PagingState::start())));
                    } else if let Some(paging) = self.buckets_paging.take() {
                        self.read_buckets(paging)?;
                    } else {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// The next page of this range's buckets, newest first.
    fn read_buckets(&mut self, paging: PagingState) -> Result<(), StoreError> {
        let width = self.store.options.listing_bucket_ns;
        let mut statement = self.store.statements.listing_buckets.clone();
        statement.set_page_size(BUCKET_PAGE);
        let values = (
            self.owner.as_str(),
            self.kind,
            key_text(&self.key),
            bucket_of(self.before, width),
            bucket_of(self.after, width),
        );
        self.store.sent.add(1);
        let (result, next) = self.store.driver.run(async {
            self.store
                .session()?
                .execute_single_page(&statement, values, paging)
                .await
                .map_err(backend)
        })?;
        self.buckets
            .extend(rows::<(i64,)>(result)?.into_iter().map(|(bucket,)| bucket));
        self.buckets_paging = match next {
            PagingStateResponse::HasMorePages { state } => Some(state),
            PagingStateResponse::NoMorePages => None,
        };
        Ok(())
    }

    /// The next page of one bucket's entries.
    fn read_entries(&mut self, bucket: i64, paging: PagingState) -> Result<(), StoreError> {
        let values = (
            self.owner.as_str(),
            self.key.clone(),
            bucket,
            self.before,
            self.after,
        );
        self.store.sent.add(1);
        let (result, next) = self.store.driver.run(async {
            self.store
                .session()?
                .execute_single_page(&self.range, values, paging)
                .await
                .map_err(backend)
        })?;
        for (created, requestid, record) in rows::<(i64, String, Vec<u8>)>(result)? {
            let inverted = u64::MAX - created.max(0) as u64;
            self.buffer.push_back(((inverted, requestid), record));
        }
        self.current = match next {
            PagingStateResponse::HasMorePages { state } => Some((bucket, Some(state))),
            PagingStateResponse::NoMorePages => None,
        };
        Ok(())
    }
}

pub(crate) fn list_pins(
    store: &ScyllaStore,
    query: &PinQuery,
    partitions: u32,
) -> Result<PinPage, StoreError> {
    // Entries of the status index match a query with no other filter by their key alone:
    // counting them past the page needs no decoding.
    let key_decides = query.cids.is_empty() && query.name.is_none() && query.meta.is_empty();
    let by_status = query.cids.is_empty() && !query.is_indexed();
    let status_only = query.is_status_only();
    let page = if status_only {
        (query.limit as i32 + 1).clamp(16, ENTRY_PAGE)
    } else {
        ENTRY_PAGE
    };
    // Per status, how many pins the owner has (the counters, P point reads each): a status
    // with none is not read at all (one read per partition gives all statuses), and without time bounds a source stops after that many.
    let totals = if by_status {
        store
            .driver
            .run(store.totals(&query.owner, &query.statuses, partitions))?
    } else {
        Vec::new()
    };
    let unbounded_in_time = query.before_ns.is_none() && query.after_ns.is_none();
    let mut sources: Vec<Source<'_>> = if by_status {
        query
            .statuses
            .iter()
            .zip(&totals)
            .filter(|(_, total)| **total > 0)
            .map(|(status, total)| {
                Source::new(
                    store,
                    query,
                    STATUS,
                    CqlValue::TinyInt(status.code() as i8),
                    page,
                    (unbounded_in_time && key_decides).then_some(*total),
                )
            })
            .collect()
    } else if !query.cids.is_empty() {
        query
            .cids
            .iter()
            .map(|cid| Source::new(store, query, CID, CqlValue::Text(cid.clone()), page, None))
            .collect()
    } else if let Some((name, NameMatch::Exact | NameMatch::IExact)) = &query.name {
        vec![Source::new(
            store,
            query,
            NAME,
            CqlValue::Text(name.to_lowercase()),
            page,
            None,
        )]
    } else {
        query
            .statuses
            .iter()
            .map(|status| {
                Source::new(
                    store,
                    query,
                    STATUS,
                    CqlValue::TinyInt(status.code() as i8),
                    page,
                    None,
                )
            })
            .collect()
    };
    let budget = if key_decides || query.is_indexed() {
        query.limit + COUNT_BUDGET
    } else {
        SCAN_BUDGET
    };
    let mut results = Vec::with_capacity(query.limit.min(1000));
    let mut matched: u64 = 0;
    let mut examined = 0usize;
    let mut last: Option<Position> = None;
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
        let pin: PinRecord = decode("listing entry", &value)?;
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
        // Exact when the walk reached the end of the range within its budget; a lower bound
        // otherwise (docs/api.md).
        matched
    };
    Ok(PinPage { count, results })
}
