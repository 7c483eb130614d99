//! `GET /pins` over the listing tables: each source (owner × status, CID or name) is read
//! bucket by bucket, newest first, with the driver's paging state; sources are merged newest
//! first as the embedded store merges its key ranges, with the same budgets and counts.

use std::collections::VecDeque;

use pinhive_domain::PinRow;
use pinhive_store::merge::{self, ListingSource, MergeSource};
use pinhive_store::{NameMatch, PinPage, PinQuery, StoreError};
use scylla::response::{PagingState, PagingStateResponse};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlValue;

use crate::store::{backend, rows, Marker, ScyllaStore};

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
}

impl<'a> Source<'a> {
    fn new(store: &'a ScyllaStore, query: &PinQuery, kind: i8, key: CqlValue, page: i32) -> Self {
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
        }
    }

    fn read_next(&mut self) -> Result<Option<Entry>, StoreError> {
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

impl ListingSource for Source<'_> {
    type Value = Vec<u8>;

    fn next_entry(&mut self) -> Result<Option<Entry>, StoreError> {
        self.read_next()
    }
}

pub(crate) fn list_pins(
    store: &ScyllaStore,
    query: &PinQuery,
    partitions: u32,
) -> Result<PinPage, StoreError> {
    let key_decides = merge::key_decides(query);
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
    let mut sources: Vec<MergeSource<Source<'_>>> = if by_status {
        query
            .statuses
            .iter()
            .zip(&totals)
            .filter(|(_, total)| **total > 0)
            .map(|(status, total)| {
                let range = Source::new(
                    store,
                    query,
                    STATUS,
                    CqlValue::TinyInt(status.code() as i8),
                    page,
                );
                MergeSource::new(range, (unbounded_in_time && key_decides).then_some(*total))
            })
            .collect()
    } else if !query.cids.is_empty() {
        query
            .cids
            .iter()
            .map(|cid| {
                let range = Source::new(store, query, CID, CqlValue::Text(cid.clone()), page);
                MergeSource::new(range, None)
            })
            .collect()
    } else if let Some((name, NameMatch::Exact | NameMatch::IExact)) = &query.name {
        let range = Source::new(
            store,
            query,
            NAME,
            CqlValue::Text(name.to_lowercase()),
            page,
        );
        vec![MergeSource::new(range, None)]
    } else {
        query
            .statuses
            .iter()
            .map(|status| {
                let range = Source::new(
                    store,
                    query,
                    STATUS,
                    CqlValue::TinyInt(status.code() as i8),
                    page,
                );
                MergeSource::new(range, None)
            })
            .collect()
    };
    merge::merge_page(query, &mut sources, &totals)
}
