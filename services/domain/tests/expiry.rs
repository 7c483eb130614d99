//! Pin expiry in the domain: `meta.expires_at` and the admin command at the edges, admission of
//! the expiry events, the fold of `PinExpired` / `PinExpirySet`, and the expiry-index changes
//! a batch writes.

use std::collections::BTreeMap;

use pinhive_domain::command::{Rejection, ReplicaBounds};
use pinhive_domain::state::{named_pin, PinChange};
use pinhive_domain::values::{Expiry, META_EXPIRES_AT};
use pinhive_domain::{
    admit, decide, derive_writes, plan, Action, CidInput, CidState, Command, ExpiryIndexChange,
    NodeView, PinCommand, PinRow, PlanContext, Provenance, RawPin,
};
use pinhive_events::{Envelope, Event, PinRequested};

const CID: &str = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy";
const BASE58: &str = "zb2rhk6GMPQF3hfzwXTaNYFLKomMeC6UXdUt6jZKPpeVirLtV";
/// 2026-12-01T00:00:00Z
const DEC_1: i64 = 1_796_083_200_000_000_000;
const SECOND: i64 = 1_000_000_000;

fn meta(expires_at: &str) -> BTreeMap<String, String> {
    [
        (META_EXPIRES_AT.to_string(), expires_at.to_string()),
        ("app".to_string(), "x".to_string()),
    ]
    .into()
}

fn pin_command(meta: BTreeMap<String, String>) -> Result<PinCommand, Rejection> {
    PinCommand::new(
        RawPin {
            cid: BASE58.into(),
            meta,
            ..RawPin::default()
        },
        "alice",
        ReplicaBounds::new(1, 2).unwrap(),
    )
}

fn pin_at(created_ns: i64, meta: BTreeMap<String, String>) -> Result<Event, Rejection> {
    let decided = decide(Command::Pin {
        pin: pin_command(meta)?,
        requestid: "r-1".into(),
        created_ns,
    })?;
    Ok(decided[0].event.clone())
}

fn envelope(key: &str, event: Event) -> Envelope {
    Envelope {
        schema_version: pinhive_events::SCHEMA_VERSION,
        event_id: "e".into(),
        key: key.into(),
        timestamp_ns: 1,
        traceparent: None,
        event,
    }
}

fn request(id: &str, expires_at: Option<&str>) -> Event {
    Event::PinRequested(PinRequested {
        requestid: id.into(),
        owner: "alice".into(),
        cid: CID.into(),
        name: None,
        origins: vec![],
        meta: expires_at.map(meta).unwrap_or_default(),
        created_ns: DEC_1 - 3_600 * SECOND,
        replicas_min: 1,
        replicas_max: 1,
        replaces: None,
    })
}

fn expired(id: &str, expires_ns: i64) -> Event {
    Event::PinExpired {
        requestid: id.into(),
        expires_ns,
    }
}

fn expiry_set(id: &str, expires_ns: Option<i64>) -> Event {
    Event::PinExpirySet {
        requestid: id.into(),
        expires_ns,
    }
}

#[test]
fn a_pin_asks_for_an_expiry_in_meta_and_only_a_future_one() {
    let created = DEC_1 - SECOND;
    let Event::PinRequested(request) = pin_at(created, meta("2026-12-01T00:00:00Z")).unwrap()
    else {
        panic!("a pin request");
    };
    assert_eq!(request.meta[META_EXPIRES_AT], "2026-12-01T00:00:00Z");
    assert_eq!(
        PinRow::new(&request, 0).expiry(),
        Some(Expiry::from_ns(DEC_1).unwrap())
    );
    // Not after the request's time: a 400 at the edge, never a pin that vanishes at once.
    for past in [DEC_1, DEC_1 + 1] {
        let error = pin_at(past, meta("2026-12-01T00:00:00Z")).unwrap_err();
        assert!(
            matches!(&error, Rejection::InvalidExpiry(why) if why.contains("not in the future")),
            "{error}"
        );
    }
    for bad in [
        "soon",
        "2026-12-01",
        "2026-12-01T00:00:00",
        "0000-01-01T00:00:00Z",
    ] {
        let error = pin_at(created, meta(bad)).unwrap_err();
        assert!(
            error.to_string().starts_with("invalid expiry"),
            "{bad}: {error}"
        );
    }
    // Without the key: no expiry.
    let Event::PinRequested(request) = pin_at(created, BTreeMap::new()).unwrap() else {
        panic!("a pin request");
    };
    assert_eq!(PinRow::new(&request, 0).expiry(), None);
}

#[test]
fn the_admin_command_sets_or_clears_an_expiry_after_now() {
    let cid = pinhive_domain::Cid::parse(BASE58).unwrap();
    let set = |expiry: Option<i64>, now_ns: i64| {
        decide(Command::SetExpiry {
            requestid: "r-1".into(),
            cid: cid.clone(),
            expiry: expiry.map(|ns| Expiry::from_ns(ns).unwrap()),
            now_ns,
        })
    };
    let decided = set(Some(DEC_1), DEC_1 - 1).unwrap();
    assert_eq!(decided.len(), 1);
    assert_eq!(decided[0].key, CID, "keyed by the canonical CID");
    assert_eq!(decided[0].event, expiry_set("r-1", Some(DEC_1)));
    assert_eq!(set(None, DEC_1).unwrap()[0].event, expiry_set("r-1", None));
    assert!(matches!(
        set(Some(DEC_1), DEC_1),
        Err(Rejection::InvalidExpiry(_))
    ));
}

#[test]
fn admission_of_expiries() {
    use Provenance::{External, Internal};
    let external_request = |expires_at: &str, created_ns: i64| {
        let Event::PinRequested(mut r) = request("r-1", Some(expires_at)) else {
            unreachable!()
        };
        r.created_ns = created_ns;
        Event::PinRequested(r)
    };
    // (key, event, provenance, Ok or the start of the reason)
    let cases: Vec<(&str, Event, Provenance, Result<(), &str>)> = vec![
        (
            CID,
            external_request("2026-12-01T00:00:00Z", DEC_1 - 1),
            External,
            Ok(()),
        ),
        (
            CID,
            external_request("2026-12-01T00:00:00Z", DEC_1),
            External,
            Err("invalid expiry"),
        ),
        (
            CID,
            external_request("next week", DEC_1 - 1),
            External,
            Err("invalid expiry"),
        ),
        // pinhive's own records are held to their key only (an earlier release's meta).
        (CID, external_request("next week", DEC_1), Internal, Ok(())),
        (CID, expired("r-1", DEC_1), Internal, Ok(())),
        (
            CID,
            expired("r-1", DEC_1),
            External,
            Err("pin_expired events are produced by pinhive only"),
        ),
        (BASE58, expired("r-1", DEC_1), Internal, Err("record key")),
        (CID, expired("", DEC_1), Internal, Err("invalid requestid")),
        (CID, expiry_set("r-1", Some(DEC_1)), Internal, Ok(())),
        (CID, expiry_set("r-1", None), Internal, Ok(())),
        (
            CID,
            expiry_set("r-1", Some(0)),
            Internal,
            Err("invalid expiry"),
        ),
        (
            CID,
            expiry_set("r-1", Some(DEC_1)),
            External,
            Err("pin_expiry_set events are produced by pinhive only"),
        ),
    ];
    for (key, event, provenance, expected) in cases {
        let got = admit(&envelope(key, event.clone()), provenance).map_err(|r| r.to_string());
        match (expected, &got) {
            (Ok(()), Ok(_)) => {}
            (Err(prefix), Err(reason)) if reason.starts_with(prefix) => {}
            _ => panic!("{key} {event:?} {provenance:?}: expected {expected:?}, got {got:?}"),
        }
    }
}

/// A CID's state and pin rows, folded as the shard folds them.
#[derive(Default)]
struct Folded {
    state: CidState,
    rows: BTreeMap<String, PinRow>,
}

impl Folded {
    fn apply(&mut self, offset: u64, event: &Event) -> Option<PinChange> {
        let pin = named_pin(event).and_then(|id| self.rows.get(id)).cloned();
        let change = self.state.apply(offset, event, pin.as_ref());
        match &change {
            Some(PinChange::Created(row)) | Some(PinChange::Updated(row)) => {
                self.rows.insert(row.record.requestid.clone(), row.clone());
            }
            Some(PinChange::Removed(row)) => {
                self.rows.remove(&row.record.requestid);
            }
            None => {}
        }
        change
    }
}

fn folded(events: &[Event]) -> Folded {
    let mut folded = Folded {
        state: CidState::new(CID),
        ..Folded::default()
    };
    for (offset, event) in events.iter().enumerate() {
        folded.apply(offset as u64, event);
    }
    folded
}

fn fleet() -> PlanContext {
    PlanContext {
        nodes: vec![NodeView {
            id: "n0".into(),
            region: String::new(),
            weight: 1,
            healthy: true,
            free_bytes: None,
            state: pinhive_events::NodeState::Up,
        }],
        dial_private_origins: true,
        ..PlanContext::default()
    }
}

fn pinned_on_n0() -> [Event; 2] {
    [
        Event::ReplicasAllocated {
            nodes: vec!["n0".into()],
            target: 1,
        },
        Event::ReplicaPinned {
            node: "n0".into(),
            delegates: vec![],
            attempts: 1,
            duration_ms: 1,
        },
    ]
}

#[test]
fn an_expired_pin_goes_like_an_unpin_and_its_replica_is_unpinned() {
    let [allocated, pinned] = pinned_on_n0();
    let mut pin = folded(&[
        request("r-1", Some("2026-12-01T00:00:00Z")),
        allocated,
        pinned,
    ]);
    assert_eq!(pin.state.pins(), 1);
    // Due: the pin goes, whoever owns it (no owner in the event), and nothing else
    // references the CID, so its replica is unpinned.
    assert!(matches!(
        pin.apply(3, &expired("r-1", DEC_1)),
        Some(PinChange::Removed(_))
    ));
    assert!(pin.rows.is_empty());
    assert_eq!(pin.state.pins(), 0);
    assert_eq!(
        plan(&pin.state, &fleet()),
        [Action::Unpin { node: "n0".into() }]
    );
    // Replayed, or a second PinExpired of the same pin: nothing more.
    let before = pin.state.clone();
    assert_eq!(pin.apply(3, &expired("r-1", DEC_1)), None);
    assert_eq!(pin.apply(4, &expired("r-1", DEC_1)), None);
    assert_eq!(pin.state.pins(), before.pins());
}

#[test]
fn an_expiry_entry_of_a_moved_expiry_or_of_another_pin_removes_nothing() {
    let [allocated, pinned] = pinned_on_n0();
    let mut pins = folded(&[
        request("r-1", Some("2026-12-01T00:00:00Z")),
        request("r-2", None),
        allocated,
        pinned,
    ]);
    // An entry older than the pin's expiry (it was moved later): moot.
    assert_eq!(pins.apply(4, &expired("r-1", DEC_1 - 1)), None);
    // A pin without an expiry never expires, whatever an entry says.
    assert_eq!(pins.apply(5, &expired("r-2", DEC_1)), None);
    // An entry left behind after the pin's expiry was brought forward: the pin is due.
    assert!(pins.apply(6, &expired("r-1", DEC_1 + SECOND)).is_some());
    // The CID is still pinned by r-2: its replica stays.
    assert_eq!(pins.rows.keys().collect::<Vec<_>>(), ["r-2"]);
    assert_eq!(plan(&pins.state, &fleet()), []);
    assert_eq!(pins.apply(7, &expired("r-unknown", DEC_1)), None);
}

#[test]
fn setting_an_expiry_rewrites_meta_expires_at() {
    let mut pin = folded(&[request("r-1", None)]);
    let Some(PinChange::Updated(row)) = pin.apply(1, &expiry_set("r-1", Some(DEC_1 + 500))) else {
        panic!("the row is updated");
    };
    assert_eq!(
        row.record.meta[META_EXPIRES_AT],
        "2026-12-01T00:00:00.000000500Z"
    );
    assert_eq!(row.expiry().map(Expiry::ns), Some(DEC_1 + 500));
    assert_eq!(pin.state.pins(), 1, "the pin's bounds are counted once");
    let Some(PinChange::Updated(row)) = pin.apply(2, &expiry_set("r-1", None)) else {
        panic!("the row is updated");
    };
    assert!(!row.record.meta.contains_key(META_EXPIRES_AT));
    assert_eq!(pin.apply(3, &expiry_set("r-gone", Some(DEC_1))), None);
}

fn row(id: &str, expires_at: Option<&str>) -> PinRow {
    let Event::PinRequested(request) = request(id, expires_at) else {
        unreachable!()
    };
    PinRow::new(&request, 0)
}

fn index_of(
    created: Vec<PinRow>,
    removed: Vec<PinRow>,
    expired: Vec<(String, i64)>,
) -> Vec<ExpiryIndexChange> {
    let before = CidState::new(CID);
    let after = CidState::new(CID);
    let view = after.view(&|_| Vec::new());
    derive_writes(CidInput {
        before: &before,
        after,
        view,
        created,
        removed,
        step: Vec::new(),
        step_end: None,
        expired,
    })
    .expiry_index
}

fn change(id: &str, expires_ns: i64, present: bool) -> ExpiryIndexChange {
    ExpiryIndexChange {
        requestid: id.into(),
        expires_ns,
        present,
    }
}

#[test]
fn a_batch_writes_the_expiry_entries_of_its_pins() {
    let at = "2026-12-01T00:00:00Z";
    let later = "2026-12-02T00:00:00Z";
    let day = 86_400 * SECOND;
    // A pin made with an expiry; one without.
    assert_eq!(
        index_of(vec![row("r-1", Some(at)), row("r-2", None)], vec![], vec![]),
        [change("r-1", DEC_1, true)]
    );
    // A pin that went (unpinned, replaced, expired): its entry goes.
    assert_eq!(
        index_of(vec![], vec![row("r-1", Some(at))], vec![]),
        [change("r-1", DEC_1, false)]
    );
    // An expiry moved: the old entry goes, the new one comes (one pin row rewritten).
    assert_eq!(
        index_of(
            vec![row("r-1", Some(later))],
            vec![row("r-1", Some(at))],
            vec![]
        ),
        [
            change("r-1", DEC_1, false),
            change("r-1", DEC_1 + day, true)
        ]
    );
    // Rewritten with the same expiry: the entry stays.
    assert_eq!(
        index_of(
            vec![row("r-1", Some(at))],
            vec![row("r-1", Some(at))],
            vec![]
        ),
        [change("r-1", DEC_1, true)]
    );
    // The entry a PinExpired names goes, also when it was moot (the pin is still there).
    assert_eq!(
        index_of(vec![], vec![], vec![("r-1".into(), DEC_1 - 5)]),
        [change("r-1", DEC_1 - 5, false)]
    );
}
