//! Whether the log takes appends, as the last appends found it.
//!
//! A Kafka outage shows as appends failing with [`LogError::Unavailable`] (once librdkafka
//! gives up on their delivery). [`AppendHealth`] keeps the outcome of the last appends so that
//! readiness reports the log without a broker round trip, and it logs an outage once when it
//! starts, a summary at most every [`REPORT_EVERY`] while it lasts and once when it ends, not
//! a line per failed append (each of which is an HTTP 503 its client retries).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::LogError;

/// Least time between two "log still unavailable" lines of one outage.
pub const REPORT_EVERY: Duration = Duration::from_secs(30);

/// What [`crate::Log::health`] reports (times are Unix milliseconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogHealth {
    /// False from an append that failed as [`LogError::Unavailable`] until an append succeeds
    /// (or the log's own probe finds it reachable again).
    pub available: bool,
    /// False when the log does not track its appends (the embedded log: its failures are disk
    /// faults, each an error for an operator); then `available` is always true.
    pub tracked: bool,
    pub last_success_ms: Option<i64>,
    /// Start of the current outage.
    pub unavailable_since_ms: Option<i64>,
    /// Why the last append of the current outage failed.
    pub last_error: Option<String>,
    /// Appends failed during the current outage.
    pub failed_appends: u64,
}

impl LogHealth {
    /// The health of a log that does not track its appends.
    pub fn untracked() -> Self {
        LogHealth {
            available: true,
            tracked: false,
            last_success_ms: None,
            unavailable_since_ms: None,
            last_error: None,
            failed_appends: 0,
        }
    }
}

struct Outage {
    since_ms: i64,
    started: Instant,
    last_error: String,
    failed_appends: u64,
    last_report: Instant,
    /// Failures since the last line logged.
    unreported: u64,
}

/// The outcome of a log's last appends. Cheap on the success path (two atomic operations).
pub struct AppendHealth {
    /// What the log is called in log lines (`pin log`, `access log`: a process has both).
    name: String,
    unavailable: AtomicBool,
    last_success_ms: AtomicI64,
    outage: Mutex<Option<Outage>>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl AppendHealth {
    pub fn new(name: impl Into<String>) -> Self {
        AppendHealth {
            name: name.into(),
            unavailable: AtomicBool::new(false),
            last_success_ms: AtomicI64::new(0),
            outage: Mutex::new(None),
        }
    }

    /// Records the outcome of one append. Only [`LogError::Unavailable`] says something about
    /// the log's health: `Overloaded` is backpressure, the others are faults of the request or
    /// of this process, which their callers report.
    pub fn record<T>(&self, result: &Result<T, LogError>) {
        match result {
            Ok(_) => self.succeeded(),
            Err(LogError::Unavailable(reason)) => self.failed(reason),
            Err(_) => {}
        }
    }

    /// An append succeeded, or the log found its brokers reachable again: ends an outage.
    pub fn succeeded(&self) {
        self.last_success_ms.store(now_ms(), Ordering::Relaxed);
        if !self.unavailable.load(Ordering::Acquire) {
            return;
        }
        let mut outage = self.outage.lock();
        if let Some(ended) = outage.take() {
            self.unavailable.store(false, Ordering::Release);
            tracing::info!(
                log = %self.name,
                unavailable_secs = ended.started.elapsed().as_secs(),
                failed_appends = ended.failed_appends,
                "log available again"
            );
        }
    }

    fn failed(&self, reason: &str) {
        let mut outage = self.outage.lock();
        match outage.as_mut() {
            None => {
                self.unavailable.store(true, Ordering::Release);
                // Once per outage: appends fail until an operator or the brokers fix it.
                tracing::error!(
                    log = %self.name,
                    error = %reason,
                    "log unavailable: appends fail (HTTP 503 + Retry-After) until it recovers"
                );
                let now = Instant::now();
                *outage = Some(Outage {
                    since_ms: now_ms(),
                    started: now,
                    last_error: reason.to_string(),
                    failed_appends: 1,
                    last_report: now,
                    unreported: 0,
                });
            }
            Some(current) => {
                current.failed_appends += 1;
                current.unreported += 1;
                current.last_error = reason.to_string();
                if current.last_report.elapsed() >= REPORT_EVERY {
                    tracing::warn!(
                        log = %self.name,
                        error = %reason,
                        unavailable_secs = current.started.elapsed().as_secs(),
                        failed_appends = current.unreported,
                        "log still unavailable"
                    );
                    current.last_report = Instant::now();
                    current.unreported = 0;
                }
            }
        }
    }

    pub fn is_available(&self) -> bool {
        !self.unavailable.load(Ordering::Acquire)
    }

    pub fn snapshot(&self) -> LogHealth {
        let last_success_ms = Some(self.last_success_ms.load(Ordering::Relaxed)).filter(|&t| t > 0);
        let outage = self.outage.lock();
        LogHealth {
            available: outage.is_none(),
            tracked: true,
            last_success_ms,
            unavailable_since_ms: outage.as_ref().map(|o| o.since_ms),
            last_error: outage.as_ref().map(|o| o.last_error.clone()),
            failed_appends: outage.as_ref().map_or(0, |o| o.failed_appends),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_starts_with_an_unavailable_append_and_ends_with_a_success() {
        let health = AppendHealth::new("pin log");
        assert_eq!(health.snapshot().failed_appends, 0);
        assert!(health.snapshot().available);
        assert_eq!(health.snapshot().last_success_ms, None);

        health.record::<()>(&Ok(()));
        let success = health.snapshot().last_success_ms;
        assert!(success.is_some());

        // Backpressure and request faults are not outages.
        health.record::<()>(&Err(LogError::Overloaded));
        health.record::<()>(&Err(LogError::RecordTooLarge(1 << 30)));
        assert!(health.is_available());

        health.record::<()>(&Err(LogError::Unavailable("broker down".into())));
        health.record::<()>(&Err(LogError::Unavailable("message timed out".into())));
        let during = health.snapshot();
        assert!(!health.is_available());
        assert_eq!(
            (during.available, during.tracked, during.failed_appends),
            (false, true, 2)
        );
        assert_eq!(during.last_error.as_deref(), Some("message timed out"));
        assert!(during.unavailable_since_ms.is_some());
        assert_eq!(during.last_success_ms, success);

        health.succeeded();
        let after = health.snapshot();
        assert!(after.available && health.is_available());
        assert_eq!(
            (
                after.unavailable_since_ms,
                after.last_error,
                after.failed_appends
            ),
            (None, None, 0)
        );
    }

    #[test]
    fn an_untracked_log_is_always_available() {
        let health = LogHealth::untracked();
        assert!(health.available && !health.tracked);
    }
}
