//! Per-owner quotas: the most pins an owner may hold, and the most of them that may be in
//! flight (queued or pinning) at once. The rule is here; the counts come from the store's
//! per-owner counter rows (read by the edges, see `pinhive_orchestrator::quota`).

use crate::pin::PinStatus;

/// An owner's limits (`None`: unlimited).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quota {
    /// Pins the owner may hold, whatever their status.
    pub max_pins: Option<u64>,
    /// Pins the owner may have queued or pinning.
    pub max_in_flight: Option<u64>,
}

/// What an owner holds now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub pins: u64,
    pub in_flight: u64,
}

impl Usage {
    /// The usage shown by an owner's pin counts per status.
    pub fn of_counts(count: impl Fn(PinStatus) -> u64) -> Usage {
        let in_flight = count(PinStatus::Queued) + count(PinStatus::Pinning);
        Usage {
            pins: in_flight + count(PinStatus::Pinned) + count(PinStatus::Failed),
            in_flight,
        }
    }

    /// The usage once `admission` is applied.
    pub fn after(self, admission: Admission) -> Usage {
        Usage {
            pins: self.pins + u64::from(admission == Admission::NewPin),
            in_flight: self.in_flight + 1,
        }
    }
}

/// What a request adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// A new pin: one more pin, one more in flight.
    NewPin,
    /// A pin that replaces one of the owner's pins: as many pins (the old one goes), one more
    /// in flight.
    Replacement,
}

/// Why a request is over its owner's quota. The text is what clients and dead letters show.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuotaExceeded {
    #[error("quota exceeded: owner {owner} holds {pins} pins, the most it may hold is {max}; delete pins first")]
    Pins { owner: String, pins: u64, max: u64 },
    #[error("quota exceeded: owner {owner} has {in_flight} pins queued or pinning, the most it may have is {max}; retry once some have settled")]
    InFlight {
        owner: String,
        in_flight: u64,
        max: u64,
    },
}

impl QuotaExceeded {
    /// Whether waiting helps (pins in flight settle by themselves; held pins do not).
    pub fn is_transient(&self) -> bool {
        matches!(self, QuotaExceeded::InFlight { .. })
    }
}

impl Quota {
    pub fn is_unlimited(&self) -> bool {
        self.max_pins.is_none() && self.max_in_flight.is_none()
    }

    /// Whether `owner`, holding `usage`, may make `admission`. The pin count is checked first:
    /// a request that waiting cannot help says so.
    pub fn admit(
        &self,
        owner: &str,
        usage: Usage,
        admission: Admission,
    ) -> Result<(), QuotaExceeded> {
        let after = usage.after(admission);
        if let Some(max) = self.max_pins {
            if admission == Admission::NewPin && after.pins > max {
                return Err(QuotaExceeded::Pins {
                    owner: owner.to_string(),
                    pins: usage.pins,
                    max,
                });
            }
        }
        if let Some(max) = self.max_in_flight {
            if after.in_flight > max {
                return Err(QuotaExceeded::InFlight {
                    owner: owner.to_string(),
                    in_flight: usage.in_flight,
                    max,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(pins: u64, in_flight: u64) -> Usage {
        Usage { pins, in_flight }
    }

    #[test]
    fn quota_table() {
        let quota = Quota {
            max_pins: Some(10),
            max_in_flight: Some(3),
        };
        // (usage, admission, verdict: None = admitted, Some(true) = transient, Some(false) = not)
        let table = [
            (usage(0, 0), Admission::NewPin, None),
            (usage(9, 2), Admission::NewPin, None),
            (usage(10, 0), Admission::NewPin, Some(false)),
            (usage(10, 0), Admission::Replacement, None),
            (usage(5, 3), Admission::NewPin, Some(true)),
            (usage(10, 3), Admission::Replacement, Some(true)),
            // Both over: the one waiting cannot fix is named.
            (usage(10, 3), Admission::NewPin, Some(false)),
        ];
        for (usage, admission, verdict) in table {
            let result = quota.admit("alice", usage, admission);
            assert_eq!(
                result.as_ref().err().map(QuotaExceeded::is_transient),
                verdict,
                "{usage:?} {admission:?}: {result:?}"
            );
        }
        assert!(Quota::default().is_unlimited());
        assert!(Quota::default()
            .admit(
                "alice",
                usage(u64::MAX - 1, u64::MAX - 1),
                Admission::NewPin
            )
            .is_ok());
    }

    #[test]
    fn usage_counts_every_status_and_in_flight_only_queued_and_pinning() {
        let usage = Usage::of_counts(|status| match status {
            PinStatus::Queued => 1,
            PinStatus::Pinning => 2,
            PinStatus::Pinned => 4,
            PinStatus::Failed => 8,
        });
        assert_eq!((usage.pins, usage.in_flight), (15, 3));
    }

    #[test]
    fn the_reason_names_the_owner_the_count_and_the_limit() {
        let quota = Quota {
            max_pins: Some(2),
            max_in_flight: None,
        };
        let error = quota
            .admit("alice", usage(2, 0), Admission::NewPin)
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "quota exceeded: owner alice holds 2 pins, the most it may hold is 2; delete pins first"
        );
    }
}
