//! Bearer-token authentication and scope checks.
//!
//! The token's SHA-256 is looked up in the store; the token's owner scopes every pin
//! operation and its scopes ([`Scope`]) say which routes it may call. Each route names the
//! scope it needs by the extractor it takes: [`PinsReader`], [`PinsWriter`], [`AdminCaller`],
//! [`S3Ingester`], [`AccessIngester`]; routes on one pin's data that its owner may use too
//! take [`PinReader`] / [`PinWriter`] (the scope, or `admin`) and then ask
//! [`Caller::pin_access`].
//!
//! Revocation and expiry: a verified token is cached for [`crate::TOKEN_CACHE_TTL`] (500 ms)
//! only, so a revocation made through any instance sharing the store is seen everywhere
//! within that time; the instance that revokes evicts it at once. Expiry is checked on every
//! request, cached or not.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use pinhive_domain::tokens::{Scope, Scopes, TokenStatus};

use crate::error::{ApiError, ErrorCode};
use crate::AppState;

/// The authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The owner name pins are scoped to.
    pub owner: String,
    /// A stable, non-secret id of the token (16 hex digits derived from the secret's hash; the
    /// same on every instance and across restarts): what rate limits, audit lines and
    /// `DELETE /admin/tokens/{id}` use.
    pub token_id: String,
    /// The token's name (the device or purpose it was made for).
    pub token_name: String,
    pub scopes: Scopes,
    /// When the token stops working (ns since the epoch).
    pub expires_ns: Option<i64>,
}

/// How a caller reaches one pin's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinAccess {
    /// The caller owns the pin.
    Own,
    /// An admin reaches another owner's pin (audited).
    AdminOfOtherOwner,
}

impl Caller {
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(scope)
    }

    /// True if the token holds the `admin` scope.
    pub fn is_admin(&self) -> bool {
        self.has(Scope::Admin)
    }

    /// Whether the caller may use `scope` on a pin of `pin_owner`: its owner with the scope,
    /// or an admin; `None` otherwise (the route answers 404, as for a pin that does not
    /// exist, so a tenant learns nothing about other tenants' request ids).
    pub fn pin_access(&self, pin_owner: &str, scope: Scope) -> Option<PinAccess> {
        if pin_owner == self.owner && (self.has(scope) || self.is_admin()) {
            Some(PinAccess::Own)
        } else if self.is_admin() {
            Some(PinAccess::AdminOfOtherOwner)
        } else {
            None
        }
    }

    /// Allows `scope` on pin `requestid` of `pin_owner` ([`Caller::pin_access`]) or answers
    /// 404. An admin's access to another owner's pin is audited by the route once its action
    /// succeeded ([`crate::owned::OwnedPin::audit`]).
    pub fn check_pin(
        &self,
        pin_owner: &str,
        requestid: &str,
        scope: Scope,
    ) -> Result<PinAccess, ApiError> {
        self.pin_access(pin_owner, scope)
            .ok_or_else(|| ApiError::not_found(format!("no pin with requestid {requestid}")))
    }

    pub(crate) fn require(self, any_of: &[Scope]) -> Result<Caller, ApiError> {
        if any_of.iter().any(|scope| self.has(*scope)) {
            return Ok(self);
        }
        let needed = any_of
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(" or ");
        Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "this token (scopes {}) lacks the scope this route needs: {needed}",
                self.scopes
            ),
        ))
    }
}

pub(crate) fn bearer(request: &HttpRequest) -> Result<String, ApiError> {
    let header = request
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                "missing Authorization: Bearer <token>",
            )
        })?;
    let text = header
        .to_str()
        .map_err(|_| ApiError::new(ErrorCode::Unauthorized, "malformed Authorization header"))?;
    let token = text
        .strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                "Authorization must be Bearer <token>",
            )
        })?;
    Ok(token.to_string())
}

/// What [`TokenCache::lookup`] found.
pub(crate) enum Cached {
    /// Verified less than the TTL ago.
    Fresh(Caller),
    /// Verified before, due to be read again: its re-check is no stranger's guess, so the
    /// per-address lookup limit does not apply to it.
    Stale,
    /// Never verified here, or evicted from the bounded cache.
    Unknown,
}

/// Verified tokens by secret, each trusted for [`crate::TOKEN_CACHE_TTL`] (bounded LRU). A
/// revocation through this instance evicts at once, and a row read before it is not cached
/// after it: [`TokenCache::put`] takes the [`TokenCache::generation`] seen before the read.
pub(crate) struct TokenCache {
    entries: parking_lot::Mutex<lru::LruCache<String, (Caller, std::time::Instant)>>,
    /// Evictions so far (moves under the entries' lock).
    evictions: AtomicU64,
}

impl TokenCache {
    pub(crate) fn new(capacity: usize) -> Self {
        TokenCache {
            entries: parking_lot::Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(capacity).unwrap_or(std::num::NonZeroUsize::MIN),
            )),
            evictions: AtomicU64::new(0),
        }
    }

    /// What the cache holds of `secret`, in one lookup.
    pub(crate) fn lookup(&self, secret: &str) -> Cached {
        match self.entries.lock().get(secret) {
            Some((caller, seen)) if seen.elapsed() < crate::TOKEN_CACHE_TTL => {
                Cached::Fresh(caller.clone())
            }
            Some(_) => Cached::Stale,
            None => Cached::Unknown,
        }
    }

    /// Taken before a token row is read; passed to [`TokenCache::put`] after.
    pub(crate) fn generation(&self) -> u64 {
        self.evictions.load(Ordering::SeqCst)
    }

    /// Caches `caller` unless a token was evicted since `generation`: the row it came from may
    /// predate that revocation, and caching it would serve a revoked token for up to the TTL.
    pub(crate) fn put(&self, secret: String, caller: Caller, generation: u64) {
        let mut entries = self.entries.lock();
        if self.evictions.load(Ordering::SeqCst) == generation {
            entries.put(secret, (caller, std::time::Instant::now()));
        }
    }

    /// Forgets every cached secret of token `token_id`. Walks the bounded cache.
    pub(crate) fn evict(&self, token_id: &str) {
        let mut entries = self.entries.lock();
        self.evictions.fetch_add(1, Ordering::SeqCst);
        let secrets: Vec<String> = entries
            .iter()
            .filter(|(_, (caller, _))| caller.token_id == token_id)
            .map(|(secret, _)| secret.clone())
            .collect();
        for secret in secrets {
            entries.pop(&secret);
        }
    }
}

fn expired() -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, "access token expired")
}

/// The caller of bearer `token`: from the cache, or from a store read. A store read of a token
/// this instance never verified (or evicted from its bounded cache) is limited per client
/// address (`peer`), so trying secrets costs the store a bounded rate per address, never one
/// read per request.
async fn authenticate(
    token: String,
    peer: Option<std::net::IpAddr>,
    state: web::Data<AppState>,
) -> Result<Caller, ApiError> {
    let now = pinhive_events::now_ns();
    // Cached by the secret itself: a request with a cached token costs no hashing.
    let cached = state.tokens.lookup(&token);
    if let Cached::Fresh(caller) = cached {
        if caller.expires_ns.is_some_and(|expires| now >= expires) {
            return Err(expired());
        }
        return Ok(caller);
    }
    // Only tokens never verified here (or long evicted) count against the address's lookups:
    // a known token's re-read every TTL is not someone trying secrets.
    if let Some(peer) = peer.filter(|_| matches!(cached, Cached::Unknown)) {
        if let Err(wait) = state.token_lookup_limiter.check(&peer.to_string()) {
            let secs = crate::ratelimit::retry_after_secs(wait);
            return Err(ApiError::new(
                ErrorCode::TooManyRequests,
                format!(
                    "too many lookups of tokens not seen recently from this address; retry in \
                     {secs} s"
                ),
            )
            .retry_after(secs));
        }
    }
    let store = state.store.clone();
    let hash = pinhive_store::hash_secret(&token);
    let token_id = pinhive_store::token_id(&hash);
    let generation = state.tokens.generation();
    let record = web::block(move || store.get_token(&hash))
        .await??
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "unknown access token"))?;
    match record.status(now) {
        TokenStatus::Active => {}
        TokenStatus::Expired => return Err(expired()),
        TokenStatus::Revoked => {
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "access token revoked",
            ))
        }
    }
    let caller = Caller {
        owner: record.owner,
        token_id,
        token_name: record.name,
        scopes: record.scopes,
        expires_ns: record.expires_ns,
    };
    state.tokens.put(token, caller.clone(), generation);
    Ok(caller)
}

/// The caller a token secret names (401 if unknown, revoked or expired; 429 over its rate
/// limit): what every extractor and the dashboard's WebSocket handshake check.
pub(crate) async fn caller_for(
    token: String,
    peer: Option<std::net::IpAddr>,
    state: web::Data<AppState>,
) -> Result<Caller, ApiError> {
    let caller = authenticate(token, peer, state.clone()).await?;
    // Only known tokens are limited (and tracked): unknown ones are 401 above. Keyed
    // by the token's stable public id, never the secret.
    if let Err(wait) = state.rate_limiter.check(&caller.token_id) {
        let secs = crate::ratelimit::retry_after_secs(wait);
        return Err(ApiError::new(
            ErrorCode::TooManyRequests,
            format!("this token is over its request rate limit; retry in {secs} s"),
        )
        .retry_after(secs));
    }
    Ok(caller)
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = bearer(request);
        let state = request.app_data::<web::Data<AppState>>().cloned();
        let peer = request.peer_addr().map(|addr| addr.ip());
        Box::pin(async move {
            let token = token?;
            let state = state.ok_or_else(|| ApiError::internal("application state missing"))?;
            caller_for(token, peer, state).await
        })
    }
}

/// Declares an extractor that authenticates and then requires any of the given scopes (403
/// with the scopes the route needs otherwise).
macro_rules! scoped {
    ($(#[$doc:meta])* $name:ident, [$($scope:expr),+]) => {
        $(#[$doc])*
        pub struct $name(pub Caller);

        impl FromRequest for $name {
            type Error = ApiError;
            type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

            fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
                let caller = Caller::from_request(request, payload);
                Box::pin(async move { Ok($name(caller.await?.require(&[$($scope),+])?)) })
            }
        }
    };
}

scoped!(
    /// `pins:read`: the caller's own pins (listing, status).
    PinsReader,
    [Scope::PinsRead]
);
scoped!(
    /// `pins:write`: adding, replacing and deleting the caller's own pins.
    PinsWriter,
    [Scope::PinsWrite]
);
scoped!(
    /// `admin`: the admin API.
    AdminCaller,
    [Scope::Admin]
);
scoped!(
    /// `s3:ingest`: the S3 notification webhook.
    S3Ingester,
    [Scope::S3Ingest]
);
scoped!(
    /// `access:ingest` (or `admin`): access events for the replica optimizer.
    AccessIngester,
    [Scope::AccessIngest, Scope::Admin]
);
scoped!(
    /// One pin's data read by its owner (`pins:read`) or an admin; then [`Caller::pin_access`].
    PinReader,
    [Scope::PinsRead, Scope::Admin]
);
scoped!(
    /// One pin changed by its owner (`pins:write`) or an admin; then [`Caller::pin_access`].
    PinWriter,
    [Scope::PinsWrite, Scope::Admin]
);

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(cache: &TokenCache, secret: &str) -> bool {
        matches!(cache.lookup(secret), Cached::Fresh(_))
    }

    fn caller(token_id: &str) -> Caller {
        Caller {
            owner: "alice".into(),
            token_id: token_id.into(),
            token_name: "laptop".into(),
            scopes: Scopes::default_tenant(),
            expires_ns: None,
        }
    }

    #[test]
    fn a_revocation_evicts_at_once() {
        let cache = TokenCache::new(8);
        cache.put("s1".into(), caller("t1"), cache.generation());
        cache.put("s2".into(), caller("t2"), cache.generation());
        assert!(fresh(&cache, "s1"));
        cache.evict("t1");
        assert!(!fresh(&cache, "s1"));
        assert!(fresh(&cache, "s2"), "other tokens stay");
    }

    #[test]
    fn a_row_read_before_a_revocation_is_not_cached_after_it() {
        let cache = TokenCache::new(8);
        // A lookup starts (generation taken), reads the row while it is still active; the
        // token is revoked (evicted) before the lookup caches what it read.
        let before = cache.generation();
        cache.evict("t1");
        cache.put("s1".into(), caller("t1"), before);
        assert!(!fresh(&cache, "s1"), "the revoked token was put back");
        // A lookup that starts after the revocation caches as usual.
        cache.put("s1".into(), caller("t1"), cache.generation());
        assert!(fresh(&cache, "s1"));
    }
}
