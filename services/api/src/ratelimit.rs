//! Request rate limits per token (GCRA, the `governor` crate), checked when a request's bearer
//! token is authenticated: every authenticated route counts, and a caller over its limit gets
//! 429 `TOO_MANY_REQUESTS` with `Retry-After` (the seconds until its next request is allowed).
//!
//! Keyed by the token's id (the first 16 hex digits of its secret's SHA-256; never the
//! secret). Memory is bounded: a key whose bucket is full again holds nothing worth
//! keeping, and such keys are dropped (`retain_recent`) at most every [`PRUNE_EVERY`], so the
//! limiter holds only the tokens seen within about one burst's refill time. Each instance
//! limits on its own: with N instances behind a balancer a token gets up to N times the rate.

use std::num::NonZeroU32;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use parking_lot::Mutex;
use prometheus::IntCounterVec;

/// How often keys whose bucket refilled are dropped.
pub const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// Requests refused by a rate limit (label `limit`: `rate` — a token over its request rate;
/// `token_lookup` — a client address over its rate of lookups of tokens not cached, i.e.
/// unknown tokens being tried).
pub static LIMITED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    pinhive_telemetry::counter_vec(
        "pinhive_http_limited_total",
        "Requests refused with 429 by a rate limit: a token over its request rate (rate), a \
         client address over its rate of token lookups (token_lookup)",
        &["limit"],
    )
});

/// A token's request rate and burst (both > 0), or no limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

/// A keyed GCRA limiter: per token (its id) for requests, per client address for lookups of
/// tokens not cached (each a store read: what someone trying secrets costs).
pub struct TokenRateLimiter {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    last_prune: Mutex<Instant>,
    /// The `limit` label of [`LIMITED`] a refusal counts under.
    label: &'static str,
}

impl TokenRateLimiter {
    /// `None` (or a zero rate): every request passes.
    pub fn new(limit: Option<RateLimit>) -> Self {
        Self::labelled(limit, "rate")
    }

    /// Token lookups per client address ([`LIMITED`] label `token_lookup`).
    pub fn token_lookups(limit: Option<RateLimit>) -> Self {
        Self::labelled(limit, "token_lookup")
    }

    fn labelled(limit: Option<RateLimit>, label: &'static str) -> Self {
        let quota = limit.and_then(|limit| {
            let rate = NonZeroU32::new(limit.per_second)?;
            let burst = NonZeroU32::new(limit.burst).unwrap_or(rate);
            Some(Quota::per_second(rate).allow_burst(burst))
        });
        TokenRateLimiter {
            limiter: quota.map(RateLimiter::keyed),
            last_prune: Mutex::new(Instant::now()),
            label,
        }
    }

    /// Counts one request of token `key`: `Err(wait)` if it is over its limit, `wait` being
    /// how long until a request of it would pass.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        self.prune(limiter);
        match limiter.check_key(&key.to_string()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                LIMITED.with_label_values(&[self.label]).inc();
                Err(not_until.wait_time_from(limiter.clock().now()))
            }
        }
    }

    /// Keys tracked now (tests; at most the tokens seen within a refill time plus
    /// [`PRUNE_EVERY`]).
    pub fn tracked_keys(&self) -> usize {
        self.limiter.as_ref().map_or(0, |limiter| limiter.len())
    }

    fn prune(&self, limiter: &DefaultKeyedRateLimiter<String>) {
        let Some(mut last) = self.last_prune.try_lock() else {
            return; // another request is pruning
        };
        if last.elapsed() < PRUNE_EVERY {
            return;
        }
        *last = Instant::now();
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }
}

/// Whole seconds a client should wait (`Retry-After` has a resolution of one second): rounded
/// up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    u64::try_from(wait.as_nanos().div_ceil(1_000_000_000))
        .unwrap_or(u64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_token_waits_and_other_tokens_do_not() {
        let limiter = TokenRateLimiter::new(Some(RateLimit {
            per_second: 1,
            burst: 3,
        }));
        for _ in 0..3 {
            assert!(limiter.check("a").is_ok());
        }
        let wait = limiter.check("a").unwrap_err();
        assert!(
            wait > Duration::from_millis(500) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(limiter.check("b").is_ok(), "limits are per token");
        assert_eq!(limiter.tracked_keys(), 2);
    }

    #[test]
    fn no_limit_passes_everything() {
        let limiter = TokenRateLimiter::new(None);
        for _ in 0..10_000 {
            assert!(limiter.check("a").is_ok());
        }
        assert_eq!(limiter.tracked_keys(), 0);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
    }
}
