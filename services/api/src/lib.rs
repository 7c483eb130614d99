//! The HTTP surface (actix-web): the IPFS Pinning Service API (`/pins`), the admin API
//! (`/admin/...`), and `/health` + `/ready`.
//!
//! Invariants: a write answers 202 only after the log acknowledged the append (durable);
//! before answering it waits, with a short bound, until the owning shard applied the event, so
//! the client can read its write at once. Every error is a spec `Failure` body.

pub mod access;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod dashboard;
pub mod error;
pub mod expiry;
pub mod metrics;
pub mod model;
pub mod nodes;
pub mod owned;
pub mod pins;
pub mod quarantine;
pub mod ratelimit;
pub mod recover;
pub mod routing;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use parking_lot::Mutex;
use pinhive_ipfs::NodeRegistry;
use pinhive_log::Log;
use pinhive_orchestrator::Orchestrator;
use pinhive_store::Store;

#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub replicas_min: u8,
    pub replicas_max: u8,
    /// Longest a write waits for its shard to apply the event before answering anyway.
    pub apply_wait: Duration,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Owner of the pins created from S3 notifications.
    pub s3_owner: String,
    /// Requests per second (and burst) each token may make; `None`: unlimited.
    pub rate_limit: Option<ratelimit::RateLimit>,
    /// Lookups of tokens not cached (store reads) per client address.
    pub token_lookup_limit: Option<ratelimit::RateLimit>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            replicas_min: 1,
            replicas_max: 3,
            apply_wait: Duration::from_secs(2),
            max_body_bytes: 64 * 1024,
            s3_owner: "s3".into(),
            rate_limit: None,
            token_lookup_limit: None,
        }
    }
}

/// Everything the handlers share.
pub struct AppState {
    pub s3: Arc<pinhive_orchestrator::s3::S3Ingest>,
    pub log: Arc<dyn Log>,
    pub store: Arc<dyn Store>,
    pub orchestrator: Arc<Orchestrator>,
    pub registry: NodeRegistry,
    /// Node membership and states (the control log): node changes are control events.
    pub nodes: Arc<pinhive_orchestrator::control::ControlPlane>,
    pub config: ApiConfig,
    /// The analytics actors (None: disabled).
    pub analytics: Option<Arc<pinhive_analytics::Analytics>>,
    /// The operator console's hub (`/dashboard`, `/ws/dashboard`).
    pub dashboard: Arc<dashboard::Dashboard>,
    clock: Mutex<i64>,
    /// Recently seen tokens, by secret (bounded, short-lived), so a request costs no store
    /// read.
    pub(crate) tokens: auth::TokenCache,
    /// Request rate limits per token.
    pub(crate) rate_limiter: ratelimit::TokenRateLimiter,
    pub(crate) token_lookup_limiter: ratelimit::TokenRateLimiter,
}

/// How long a cached token stays trusted without a store read: the bound on how long a
/// revocation made through another instance (sharing the store) takes to be seen here. One
/// store point read per active token per 500 ms per instance is what it costs
/// (docs/architecture.md, "Tokens").
pub(crate) const TOKEN_CACHE_TTL: Duration = Duration::from_millis(500);

impl AppState {
    pub fn new(
        log: Arc<dyn Log>,
        store: Arc<dyn Store>,
        orchestrator: Arc<Orchestrator>,
        nodes: Arc<pinhive_orchestrator::control::ControlPlane>,
        config: ApiConfig,
    ) -> Self {
        AppState {
            s3: Arc::new(
                pinhive_orchestrator::s3::S3Ingest::new(
                    log.clone(),
                    store.clone(),
                    config.s3_owner.clone(),
                    pinhive_domain::command::ReplicaBounds::clamped(
                        config.replicas_min,
                        config.replicas_max,
                    ),
                )
                .with_quota(orchestrator.quota().clone()),
            ),
            rate_limiter: ratelimit::TokenRateLimiter::new(config.rate_limit),
            token_lookup_limiter: ratelimit::TokenRateLimiter::token_lookups(
                config.token_lookup_limit,
            ),
            registry: orchestrator.registry().clone(),
            log,
            store,
            orchestrator,
            nodes,
            config,
            analytics: None,
            dashboard: Arc::new(dashboard::Dashboard::new(Default::default())),
            clock: Mutex::new(0),
            tokens: auth::TokenCache::new(10_000),
        }
    }

    /// Serves `POST /access` and the analytics views with `analytics`.
    pub fn with_analytics(mut self, analytics: Arc<pinhive_analytics::Analytics>) -> Self {
        self.analytics = Some(analytics);
        self
    }

    /// The operator console with `config` (sessions, queue, timeouts).
    pub fn with_dashboard(mut self, config: dashboard::DashboardConfig) -> Self {
        self.dashboard = Arc::new(dashboard::Dashboard::new(config));
        self
    }

    /// Forgets every cached secret of token `token_id` (this instance revoked it: refused
    /// here at once, elsewhere within [`TOKEN_CACHE_TTL`]). Walks the bounded cache.
    pub(crate) fn evict_token(&self, token_id: &str) {
        self.tokens.evict(token_id);
    }

    /// A creation timestamp (ns) strictly greater than every one this process handed out:
    /// the spec's pagination by `created` needs them globally unique.
    pub fn next_created_ns(&self) -> i64 {
        let mut last = self.clock.lock();
        let now = pinhive_events::now_ns().max(*last + 1);
        *last = now;
        now
    }
}

/// Registers every route on an actix-web app, with a 404 `Failure` for unknown paths. Wrap the
/// app in [`routing::failure_bodies`] too, so that error responses actix renders itself also
/// carry a `Failure` body.
pub fn configure(state: web::Data<AppState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        let max_body = state.config.max_body_bytes;
        cfg.app_data(state)
            .app_data(
                web::JsonConfig::default()
                    .limit(max_body)
                    .error_handler(|err, _| error::ApiError::from(err).into()),
            )
            .app_data(web::PayloadConfig::default().limit(max_body))
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|err, _| error::ApiError::bad_request(err.to_string()).into()),
            )
            .app_data(
                web::PathConfig::default()
                    .error_handler(|err, _| error::ApiError::bad_request(err.to_string()).into()),
            )
            .configure(pins::routes)
            .configure(admin::routes)
            .configure(tokens::routes)
            .configure(nodes::routes)
            .configure(access::routes)
            .configure(quarantine::routes)
            .configure(expiry::routes)
            .configure(recover::routes)
            .configure(dashboard::routes)
            .default_service(web::to(routing::not_found));
    }
}
