//! The operator console: the page at `/dashboard` (static assets compiled into the binary) and
//! its live feed, the WebSocket `/ws/dashboard` (docs/dashboard.md has the protocol).
//!
//! One hub task per process builds every message once and fans it out over a bounded
//! `tokio::sync::broadcast` channel: pin status changes as the shards commit them
//! ([`pinhive_orchestrator::feed`]), node changes (the node list and the health registry are
//! in memory: polled every [`NODE_POLL`]), stats every [`STATS_INTERVAL`] and a history sample
//! every [`SAMPLE_INTERVAL`] into a bounded ring buffer. Nothing here reads the store: the
//! numbers come from the gauges and counters the shards keep, so the cost does not grow with
//! the pinset.
//!
//! Each session is bounded: its queue is its place in the broadcast channel
//! ([`DashboardConfig::queue`] messages); a session that falls that far behind, or whose socket
//! does not take a message within [`DashboardConfig::send_timeout`], is disconnected (the page
//! reconnects and starts over from a fresh snapshot). At most
//! [`DashboardConfig::max_sessions`] sessions run at once; more are refused (503).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Message};
use parking_lot::Mutex;
use pinhive_domain::tokens::Scope;
use pinhive_domain::PinStatus;
use prometheus::IntCounterVec;
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};

use crate::error::{ApiError, ErrorCode};
use crate::model::format_created;
use crate::AppState;

/// The subprotocol the page and clients speak; the server always answers with it.
pub const PROTOCOL: &str = "pinhive.dashboard.v1";
/// The prefix of the subprotocol entry that carries the admin token (`bearer.<token>`).
pub const TOKEN_PROTOCOL_PREFIX: &str = "bearer.";

/// How often the hub looks at the (in-memory) node list and health registry.
pub const NODE_POLL: Duration = Duration::from_millis(250);
/// How often a `stats` message goes out.
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// How often a history sample is taken.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(10);
/// Samples the ring buffer keeps: one hour.
pub const HISTORY_SAMPLES: usize = 360;
/// Recent pin changes a snapshot carries.
const RECENT_PINS: usize = 100;
/// Partitions with the most lag a `stats` message names (the total covers all).
const LAG_PARTITIONS: usize = 64;
/// Warnings and errors forwarded per second at most (the rest are counted in `log_suppressed`).
const LOG_RATE: u32 = 20;
/// The largest message a client may send.
const MAX_CLIENT_FRAME: usize = 4 * 1024;

#[derive(Clone, Debug)]
pub struct DashboardConfig {
    /// Concurrent WebSocket sessions (more are refused with 503).
    pub max_sessions: usize,
    /// Messages a session may fall behind before it is disconnected.
    pub queue: usize,
    /// Longest the socket of a session may take to accept one message.
    pub send_timeout: Duration,
    /// Between two server pings; a session that answered none of the last two is closed.
    pub ping_interval: Duration,
    /// How this instance names itself in snapshots (its listen address).
    pub instance: String,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            max_sessions: 16,
            queue: 256,
            send_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(15),
            instance: String::new(),
        }
    }
}

static DISCONNECTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    pinhive_telemetry::counter_vec(
        "pinhive_dashboard_disconnects_total",
        "Dashboard WebSocket sessions ended, by reason (client, slow, lagged, no_pong, \
         token, shutdown, refused_full)",
        &["reason"],
    )
});

static SESSIONS: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    pinhive_telemetry::gauge_vec(
        "pinhive_dashboard_sessions",
        "Dashboard WebSocket sessions open",
        &[],
    )
});

/// What the hub last saw, for snapshots.
#[derive(Default)]
struct Seen {
    stats: Value,
    nodes: BTreeMap<String, Value>,
    history: VecDeque<Value>,
    recent: VecDeque<Value>,
}

/// The hub: shared by the handlers (one per process).
pub struct Dashboard {
    config: DashboardConfig,
    sender: broadcast::Sender<Arc<str>>,
    sessions: AtomicUsize,
    seen: Mutex<Seen>,
    closing: watch::Sender<bool>,
    /// A subscription to the shards' feed made by the first session's handshake, for the hub
    /// to take (so no change committed after the handshake is missed).
    feed_slot: Mutex<Option<PinFeedReceiver>>,
    feed_subscribed: AtomicBool,
    wake: tokio::sync::Notify,
}

type PinFeedReceiver = broadcast::Receiver<Arc<pinhive_orchestrator::feed::PinChange>>;

impl Dashboard {
    pub fn new(config: DashboardConfig) -> Self {
        Dashboard {
            sender: broadcast::channel(config.queue.max(1)).0,
            config,
            sessions: AtomicUsize::new(0),
            seen: Mutex::new(Seen::default()),
            closing: watch::channel(false).0,
            feed_slot: Mutex::new(None),
            feed_subscribed: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
        }
    }

    pub fn config(&self) -> &DashboardConfig {
        &self.config
    }

    /// Closes every session (code 1001, going away) and refuses new ones: at shutdown, so the
    /// server's graceful stop does not wait for open consoles.
    pub fn close_all(&self) {
        self.closing.send_replace(true);
    }

    fn broadcast(&self, message: &Value) {
        if self.sender.receiver_count() > 0 {
            let _ = self.sender.send(Arc::from(message.to_string()));
        }
    }

    fn snapshot(&self, instance: &str) -> Value {
        let seen = self.seen.lock();
        json!({
            "type": "snapshot",
            "protocol": PROTOCOL,
            "time": format_created(pinhive_events::now_ns()),
            "instance": instance,
            "stats": seen.stats,
            "nodes": seen.nodes.values().collect::<Vec<_>>(),
            "history": seen.history,
            "recent": seen.recent,
            "logs": pinhive_telemetry::recent::lines()
                .iter()
                .map(|line| log_message(line))
                .collect::<Vec<_>>(),
            "limits": {
                "sample_secs": SAMPLE_INTERVAL.as_secs(),
                "history_samples": HISTORY_SAMPLES,
                "ping_secs": self.config.ping_interval.as_secs_f64(),
                "queue": self.config.queue,
            },
        })
    }

    /// The history ring buffer (oldest first).
    pub fn history(&self) -> Vec<Value> {
        self.seen.lock().history.iter().cloned().collect()
    }
}

/// A session slot; released when dropped.
struct Slot(Arc<Dashboard>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::SeqCst);
        SESSIONS.with_label_values::<&str>(&[]).dec();
    }
}

fn take_slot(dashboard: &Arc<Dashboard>) -> Option<Slot> {
    let max = dashboard.config.max_sessions;
    dashboard
        .sessions
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()?;
    SESSIONS.with_label_values::<&str>(&[]).inc();
    Some(Slot(dashboard.clone()))
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    use crate::routing::resource;
    use actix_web::http::Method;
    let get = |route| [(Method::GET, route)];
    cfg.service(resource("/ws/dashboard", get(web::to(ws_dashboard))))
        .service(resource("/dashboard", get(web::to(page))))
        .service(resource("/dashboard/", get(web::to(page))))
        .service(resource("/dashboard/app.js", get(web::to(script))))
        .service(resource("/dashboard/app.css", get(web::to(style))))
        .service(resource(
            "/admin/dashboard/history",
            get(web::to(history_route)),
        ));
}

const INDEX_HTML: &str = include_str!("../dashboard/index.html");
const APP_JS: &str = include_str!("../dashboard/app.js");
const APP_CSS: &str = include_str!("../dashboard/app.css");

/// The page and its assets: no data in them, so no token; the data comes over the socket.
fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; connect-src 'self'; img-src 'self' data:; \
             style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
             form-action 'none'",
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

async fn page() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", APP_CSS)
}

/// `GET /admin/dashboard/history`: the last hour's samples (the ring buffer).
async fn history_route(
    state: web::Data<AppState>,
    _admin: crate::auth::AdminCaller,
) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "sample_secs": SAMPLE_INTERVAL.as_secs(),
        "samples": state.dashboard.history(),
    }))
}

/// The token of a WebSocket handshake: the `bearer.<token>` entry of `Sec-WebSocket-Protocol`
/// (what a browser can send), else `Authorization: Bearer`. Never the URL.
fn handshake_token(request: &HttpRequest) -> Result<String, ApiError> {
    for value in request.headers().get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        let Ok(value) = value.to_str() else { continue };
        if let Some(token) = value
            .split(',')
            .map(str::trim)
            .find_map(|p| p.strip_prefix(TOKEN_PROTOCOL_PREFIX))
            .filter(|t| !t.is_empty())
        {
            return Ok(token.to_string());
        }
    }
    crate::auth::bearer(request).map_err(|_| {
        ApiError::new(
            ErrorCode::Unauthorized,
            format!(
                "the dashboard needs an admin token: Sec-WebSocket-Protocol: {PROTOCOL}, \
                 {TOKEN_PROTOCOL_PREFIX}<token> (or Authorization: Bearer <token>)"
            ),
        )
    })
}

/// `GET /ws/dashboard`: authenticated at the handshake (401 / 403 / 429 / 503 before any
/// upgrade), then one session task.
async fn ws_dashboard(
    request: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let token = handshake_token(&request)?;
    let peer = request.peer_addr().map(|addr| addr.ip());
    let caller = crate::auth::caller_for(token.clone(), peer, state.clone())
        .await?
        .require(&[Scope::Admin])?;
    let dashboard = state.dashboard.clone();
    if *dashboard.closing.borrow() {
        return Err(ApiError::new(ErrorCode::Unavailable, "the server is stopping").retry_after(1));
    }
    let Some(slot) = take_slot(&dashboard) else {
        DISCONNECTS.with_label_values(&["refused_full"]).inc();
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            format!(
                "{} dashboard sessions are open already (dashboard_max_sessions)",
                dashboard.config.max_sessions
            ),
        )
        .retry_after(5));
    };
    let (response, session, stream) = actix_ws::handle_with_protocols(&request, body, &[PROTOCOL])
        .map_err(|e| ApiError::bad_request(format!("not a WebSocket handshake: {e}")))?;
    // Under the slot's lock, which the hub also holds while it decides to unsubscribe: a
    // session counted after the hub saw none finds the flag cleared and subscribes again.
    {
        let mut parked = dashboard.feed_slot.lock();
        if !dashboard.feed_subscribed.swap(true, Ordering::SeqCst) {
            *parked = Some(state.orchestrator.feed().subscribe());
            dashboard.wake.notify_one();
        }
    }
    tracing::info!(token_id = %caller.token_id, owner = %caller.owner, "dashboard session opened");
    let stream = stream.max_frame_size(MAX_CLIENT_FRAME);
    actix_web::rt::spawn(run_session(state, token, session, stream, slot));
    Ok(response)
}

/// Why a session ended.
enum End {
    Client,
    Slow,
    Lagged,
    NoPong,
    Token,
    Shutdown,
}

impl End {
    fn label(&self) -> &'static str {
        match self {
            End::Client => "client",
            End::Slow => "slow",
            End::Lagged => "lagged",
            End::NoPong => "no_pong",
            End::Token => "token",
            End::Shutdown => "shutdown",
        }
    }
}

async fn send(session: &mut actix_ws::Session, text: String, timeout: Duration) -> Result<(), End> {
    match tokio::time::timeout(timeout, session.text(text)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Client),
        Err(_) => Err(End::Slow),
    }
}

async fn run_session(
    state: web::Data<AppState>,
    token: String,
    mut session: actix_ws::Session,
    mut stream: actix_ws::MessageStream,
    slot: Slot,
) {
    let dashboard = slot.0.clone();
    let config = dashboard.config.clone();
    // Subscribed before the snapshot is taken: no change falls between the two.
    let mut feed = dashboard.sender.subscribe();
    let mut closing = dashboard.closing.subscribe();
    let instance = config.instance.clone();
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + config.ping_interval,
        config.ping_interval,
    );
    let mut last_pong = Instant::now();
    let snapshot = dashboard.snapshot(&instance).to_string();
    let mut end = send(&mut session, snapshot, config.send_timeout)
        .await
        .err();
    while end.is_none() {
        let step = tokio::select! {
            message = feed.recv() => match message {
                Ok(text) => send(&mut session, text.to_string(), config.send_timeout).await,
                Err(broadcast::error::RecvError::Lagged(_)) => Err(End::Lagged),
                Err(broadcast::error::RecvError::Closed) => Err(End::Shutdown),
            },
            incoming = stream.recv() => match incoming {
                Some(Ok(Message::Ping(bytes))) => {
                    match tokio::time::timeout(config.send_timeout, session.pong(&bytes)).await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(_)) => Err(End::Client),
                        Err(_) => Err(End::Slow),
                    }
                }
                Some(Ok(Message::Pong(_))) => {
                    last_pong = Instant::now();
                    Ok(())
                }
                Some(Ok(Message::Text(text))) => {
                    let request: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    let reply = match request["type"].as_str() {
                        Some("snapshot") => dashboard.snapshot(&instance),
                        _ => json!({
                            "type": "error",
                            "error": "unknown request: send {\"type\":\"snapshot\"}",
                        }),
                    };
                    send(&mut session, reply.to_string(), config.send_timeout).await
                }
                Some(Ok(Message::Binary(_))) => {
                    let reply = json!({"type": "error", "error": "binary messages are not part of the protocol"});
                    send(&mut session, reply.to_string(), config.send_timeout).await
                }
                Some(Ok(Message::Continuation(_) | Message::Nop)) => Ok(()),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => Err(End::Client),
            },
            _ = ping.tick() => {
                if last_pong.elapsed() > config.ping_interval * 2 + config.send_timeout {
                    Err(End::NoPong)
                } else if crate::auth::caller_for(token.clone(), None, state.clone())
                    .await
                    .is_ok_and(|caller| caller.is_admin())
                {
                    match tokio::time::timeout(config.send_timeout, session.ping(b"pinhive")).await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(_)) => Err(End::Client),
                        Err(_) => Err(End::Slow),
                    }
                } else {
                    Err(End::Token)
                }
            },
            _ = closing.wait_for(|closing| *closing) => Err(End::Shutdown),
        };
        if let Err(reason) = step {
            end = Some(reason);
        }
    }
    let end = end.unwrap_or(End::Client);
    DISCONNECTS.with_label_values(&[end.label()]).inc();
    let close = match end {
        // The socket takes nothing more: dropping the session ends the response.
        End::Slow | End::Client => None,
        End::Lagged => Some((
            CloseCode::Policy,
            "too slow: reconnect for a fresh snapshot",
        )),
        End::NoPong => Some((CloseCode::Policy, "no pong")),
        End::Token => Some((CloseCode::Policy, "token revoked or expired")),
        End::Shutdown => Some((CloseCode::Away, "server stopping")),
    };
    if let Some((code, description)) = close {
        let reason = CloseReason {
            code,
            description: Some(description.into()),
        };
        let _ = tokio::time::timeout(config.send_timeout, session.close(Some(reason))).await;
    }
    tracing::info!(reason = end.label(), "dashboard session closed");
    drop(slot);
}

/// Sum of a gauge or counter over this instance's partitions.
fn per_partition(partitions: &[u32], get: impl Fn(&str) -> i64) -> (i64, Vec<(u32, i64)>) {
    let mut total = 0;
    let mut each = Vec::with_capacity(partitions.len());
    for partition in partitions {
        let value = get(&partition.to_string());
        total += value;
        each.push((*partition, value));
    }
    (total, each)
}

/// Counters the rates are computed from.
struct Rates {
    at: Instant,
    appended: u64,
    applied: u64,
}

fn counters(partitions: &[u32]) -> (u64, u64) {
    let shard = &pinhive_orchestrator::metrics::METRICS;
    let appended = pinhive_log::metrics::METRICS
        .appended_records
        .with_label_values::<&str>(&[])
        .get();
    let applied = partitions
        .iter()
        .map(|p| {
            shard
                .events_applied
                .with_label_values(&[&p.to_string()])
                .get()
        })
        .sum();
    (appended, applied)
}

fn stats(state: &AppState, previous: &mut Rates) -> Value {
    let shard = &pinhive_orchestrator::metrics::METRICS;
    let partitions = state.orchestrator.owned_partitions();
    let mut pins = serde_json::Map::new();
    for status in PinStatus::ALL {
        let (total, _) = per_partition(&partitions, |p| {
            shard.pins.with_label_values(&[status.as_str(), p]).get()
        });
        pins.insert(status.as_str().to_string(), total.into());
    }
    let (desired, _) = per_partition(&partitions, |p| {
        shard.replicas.with_label_values(&["desired", p]).get()
    });
    let (pinned, _) = per_partition(&partitions, |p| {
        shard.replicas.with_label_values(&["pinned", p]).get()
    });
    let (lag_total, mut lag) = per_partition(&partitions, |p| {
        shard.consumer_lag_bytes.with_label_values(&[p]).get()
    });
    lag.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    lag.truncate(LAG_PARTITIONS);
    lag.sort_by_key(|(p, _)| *p);
    let (dead_letters, _) = per_partition(&partitions, |p| {
        i64::try_from(shard.dead_letters.with_label_values(&[p]).get()).unwrap_or(i64::MAX)
    });
    let (appended, applied) = counters(&partitions);
    let now = Instant::now();
    let secs = now.duration_since(previous.at).as_secs_f64().max(0.001);
    let ingest = appended.saturating_sub(previous.appended) as f64 / secs;
    let apply = applied.saturating_sub(previous.applied) as f64 / secs;
    *previous = Rates {
        at: now,
        appended,
        applied,
    };
    json!({
        "time": format_created(pinhive_events::now_ns()),
        "pins": pins,
        "replicas": {"desired": desired, "pinned": pinned},
        "ingest_per_sec": (ingest * 10.0).round() / 10.0,
        "apply_per_sec": (apply * 10.0).round() / 10.0,
        "lag": {
            "total_bytes": lag_total,
            "partitions": partitions.len(),
            "by_partition": lag.iter().map(|(p, bytes)| json!({"partition": p, "bytes": bytes})).collect::<Vec<_>>(),
        },
        "dead_letters": dead_letters,
        "log_available": state.log.health().available,
    })
}

/// Every node as the console shows it: the agreed state (control log) and this instance's
/// health view (in memory; no store read).
fn nodes(state: &AppState) -> BTreeMap<String, Value> {
    let health: HashMap<String, pinhive_ipfs::NodeHealth> = state
        .registry
        .entries()
        .into_iter()
        .map(|entry| (entry.descriptor.id.clone(), entry.health))
        .collect();
    state
        .nodes
        .nodes()
        .into_iter()
        .map(|record| {
            let id = record.descriptor.id.clone();
            let health = health.get(&id);
            let node = json!({
                "id": id,
                "rpc_url": pinhive_ipfs::auth::redact_url(&record.descriptor.rpc_url),
                "region": record.descriptor.region,
                "weight": record.descriptor.weight,
                "state": record.state.as_str(),
                "state_since": format_created(record.since_ns),
                "state_reason": record.reason,
                "reachable": health.map(|h| h.reachable),
                "free_bytes": health.and_then(|h| h.free_bytes),
                "queue": health.map(|h| h.in_flight),
                "error_rate": health.and_then(|h| h.error_rate),
                "breaker": health.map(|h| format!("{:?}", h.breaker).to_lowercase()),
                "last_heartbeat": health.and_then(|h| h.last_heartbeat_ns).map(format_created),
                "error": health.and_then(|h| h.last_error.clone()),
            });
            (id, node)
        })
        .collect()
}

fn log_message(line: &pinhive_telemetry::recent::LogLine) -> Value {
    json!({
        "type": "log",
        "time": format_created(line.time_ns),
        "level": line.level,
        "target": line.target,
        "message": line.message,
        "node": line.fields.get("node"),
        "fields": line.fields,
    })
}

fn pin_message(change: &pinhive_orchestrator::feed::PinChange) -> Value {
    json!({
        "type": "pin",
        "requestid": change.requestid,
        "cid": change.cid,
        "owner": change.owner,
        "status": change.status.map(|s| s.as_str()).unwrap_or("removed"),
        "previous": change.previous.map(|s| s.as_str()),
        "partition": change.partition,
        "applied": format_created(change.applied_ns),
        "applied_ns": change.applied_ns,
    })
}

/// Runs the hub until the system stops. Spawn once per process (in an actix/tokio runtime).
pub async fn run_hub(state: web::Data<AppState>) {
    let dashboard = state.dashboard.clone();
    let mut node_poll = tokio::time::interval(NODE_POLL);
    let mut stats_tick = tokio::time::interval(STATS_INTERVAL);
    // The first sample soon after the start, then one per interval.
    let mut sample_tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(2),
        SAMPLE_INTERVAL,
    );
    for tick in [&mut node_poll, &mut stats_tick, &mut sample_tick] {
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    let (appended, applied) = counters(&state.orchestrator.owned_partitions());
    let mut rates = Rates {
        at: Instant::now(),
        appended,
        applied,
    };
    // The shard feed is listened to only while a session is open: shards build no change
    // for nobody.
    let mut feed: Option<PinFeedReceiver> = None;
    let mut logs: Option<broadcast::Receiver<Arc<pinhive_telemetry::recent::LogLine>>> = None;
    let (mut logs_sent, mut logs_suppressed) = (0u32, 0u64);
    loop {
        tokio::select! {
            line = async {
                match logs.as_mut() {
                    Some(logs) => logs.recv().await,
                    None => std::future::pending().await,
                }
            } => match line {
                Ok(line) if logs_sent < LOG_RATE => {
                    logs_sent += 1;
                    dashboard.broadcast(&log_message(&line));
                }
                Ok(_) => logs_suppressed += 1,
                Err(broadcast::error::RecvError::Lagged(missed)) => logs_suppressed += missed,
                Err(broadcast::error::RecvError::Closed) => logs = None,
            },
            change = async {
                match feed.as_mut() {
                    Some(feed) => feed.recv().await,
                    None => std::future::pending().await,
                }
            } => match change {
                Ok(change) => {
                    let message = pin_message(&change);
                    {
                        let mut seen = dashboard.seen.lock();
                        if seen.recent.len() >= RECENT_PINS {
                            seen.recent.pop_front();
                        }
                        seen.recent.push_back(message.clone());
                    }
                    dashboard.broadcast(&message);
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    dashboard.broadcast(&json!({"type": "feed_lagged", "missed": missed}));
                }
                Err(broadcast::error::RecvError::Closed) => feed = None,
            },
            _ = dashboard.wake.notified() => {
                if let Some(subscribed) = dashboard.feed_slot.lock().take() {
                    feed = Some(subscribed);
                }
            },
            _ = node_poll.tick() => {
                // The session count, the parked subscription and the flag are read and
                // changed under one lock (see the handshake): no session can open between the
                // count and the unsubscribe unseen.
                let watched = {
                    let mut parked = dashboard.feed_slot.lock();
                    let watched = dashboard.sessions.load(Ordering::SeqCst) > 0;
                    if let Some(subscribed) = parked.take() {
                        feed = Some(subscribed);
                    }
                    match (watched, feed.is_some()) {
                        (true, false) => {
                            dashboard.feed_subscribed.store(true, Ordering::SeqCst);
                            feed = Some(state.orchestrator.feed().subscribe());
                        }
                        (false, true) => {
                            feed = None;
                            dashboard.feed_subscribed.store(false, Ordering::SeqCst);
                        }
                        _ => {}
                    }
                    watched
                };
                match (watched, logs.is_some()) {
                    (true, false) => logs = Some(pinhive_telemetry::recent::subscribe()),
                    (false, true) => logs = None,
                    _ => {}
                }
                let now = nodes(&state);
                let mut changed = Vec::new();
                let mut removed = Vec::new();
                {
                    let mut seen = dashboard.seen.lock();
                    for (id, node) in &now {
                        if seen.nodes.get(id) != Some(node) {
                            changed.push(node.clone());
                        }
                    }
                    for id in seen.nodes.keys() {
                        if !now.contains_key(id) {
                            removed.push(id.clone());
                        }
                    }
                    seen.nodes = now;
                }
                for node in changed {
                    dashboard.broadcast(&json!({"type": "node", "node": node}));
                }
                for id in removed {
                    dashboard.broadcast(&json!({"type": "node_removed", "id": id}));
                }
            },
            _ = stats_tick.tick() => {
                if logs_suppressed > 0 {
                    dashboard.broadcast(&json!({"type": "log_suppressed", "count": logs_suppressed}));
                }
                (logs_sent, logs_suppressed) = (0, 0);
                let stats = stats(&state, &mut rates);
                dashboard.seen.lock().stats = stats.clone();
                dashboard.broadcast(&json!({"type": "stats", "stats": stats}));
            },
            _ = sample_tick.tick() => {
                let sample = {
                    let mut seen = dashboard.seen.lock();
                    let stats = &seen.stats;
                    let free: serde_json::Map<String, Value> = seen
                        .nodes
                        .iter()
                        .map(|(id, node)| (id.clone(), node["free_bytes"].clone()))
                        .collect();
                    let sample = json!({
                        "time": format_created(pinhive_events::now_ns()),
                        "ingest_per_sec": stats["ingest_per_sec"],
                        "apply_per_sec": stats["apply_per_sec"],
                        "lag_bytes": stats["lag"]["total_bytes"],
                        "replicas_desired": stats["replicas"]["desired"],
                        "replicas_pinned": stats["replicas"]["pinned"],
                        "free_bytes": free,
                    });
                    if seen.history.len() >= HISTORY_SAMPLES {
                        seen.history.pop_front();
                    }
                    seen.history.push_back(sample.clone());
                    sample
                };
                dashboard.broadcast(&json!({"type": "sample", "sample": sample}));
            },
        }
    }
}
