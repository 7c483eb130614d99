//! A small circuit breaker per node: after `threshold` consecutive node failures it opens for
//! `cooldown`; then one probe is let through (half-open) and its outcome closes or re-opens it.

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    consecutive_failures: u32,
    open_until: Option<Instant>,
    probing: bool,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            consecutive_failures: 0,
            open_until: None,
            probing: false,
        }
    }

    pub fn state(&self, now: Instant) -> BreakerState {
        match self.open_until {
            None => BreakerState::Closed,
            Some(until) if now < until => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// Whether a call may go out now. In half-open state only one probe at a time.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => {
                if self.probing {
                    false
                } else {
                    self.probing = true;
                    true
                }
            }
        }
    }

    pub fn on_success(&mut self) {
        self.consecutive_failures = 0;
        self.open_until = None;
        self.probing = false;
    }

    pub fn on_failure(&mut self, now: Instant) {
        self.consecutive_failures += 1;
        self.probing = false;
        if self.consecutive_failures >= self.threshold || self.open_until.is_some() {
            self.open_until = Some(now + self.cooldown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_probes_after_cooldown() {
        let start = Instant::now();
        let mut breaker = Breaker::new(3, Duration::from_secs(10));
        for _ in 0..2 {
            breaker.on_failure(start);
        }
        assert!(breaker.allow(start));
        breaker.on_failure(start);
        assert_eq!(breaker.state(start), BreakerState::Open);
        assert!(!breaker.allow(start + Duration::from_secs(5)));
        let later = start + Duration::from_secs(11);
        assert!(breaker.allow(later), "one probe");
        assert!(!breaker.allow(later), "only one probe");
        breaker.on_failure(later);
        assert_eq!(breaker.state(later), BreakerState::Open);
        let much_later = later + Duration::from_secs(11);
        assert!(breaker.allow(much_later));
        breaker.on_success();
        assert_eq!(breaker.state(much_later), BreakerState::Closed);
    }
}
