//! How pinhive's Kafka clients report librdkafka's global errors.
//!
//! rdkafka's default context logs every global error at ERROR. In an outage every client (the
//! producer, one reader per partition, the group member) reports that its brokers are down,
//! again at every reconnect attempt: a steady stream of ERROR lines for one fact, which the
//! log's append health already reports once at ERROR ([`crate::health`]). So broker
//! connectivity errors are a WARN here, at most once per [`CONNECTIVITY_REPORT_EVERY`] per
//! client, with the count of those not logged; every other global error stays an ERROR.

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

/// Least time between two connectivity warnings of one client.
pub const CONNECTIVITY_REPORT_EVERY: Duration = Duration::from_secs(30);

/// The context of the log's producer and readers.
#[derive(Default)]
pub struct QuietContext {
    connectivity: ConnectivityReports,
}

impl ClientContext for QuietContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.connectivity.report(error, reason);
    }
}

impl ConsumerContext for QuietContext {}

/// Rate-limited reporting of one client's global errors (shared with the group context).
#[derive(Default)]
pub struct ConnectivityReports {
    /// When the last connectivity warning was logged, and how many were not since.
    last: Mutex<Option<(Instant, u64)>>,
}

impl ConnectivityReports {
    pub fn report(&self, error: KafkaError, reason: &str) {
        if !is_connectivity(&error) {
            tracing::error!(error = %error, reason, "kafka client error");
            return;
        }
        let mut last = self.last.lock();
        match last.as_mut() {
            Some((at, suppressed)) if at.elapsed() < CONNECTIVITY_REPORT_EVERY => {
                *suppressed += 1;
            }
            _ => {
                let suppressed = last.map_or(0, |(_, suppressed)| suppressed);
                tracing::warn!(error = %error, reason, suppressed, "kafka brokers unreachable");
                *last = Some((Instant::now(), 0));
            }
        }
    }
}

fn is_connectivity(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as Code;
    matches!(
        error.rdkafka_error_code(),
        Some(
            Code::AllBrokersDown
                | Code::BrokerTransportFailure
                | Code::Resolve
                | Code::BrokerNotAvailable
                | Code::NetworkException
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connectivity_errors_are_reported_once_per_interval() {
        let reports = ConnectivityReports::default();
        let down = || KafkaError::Global(RDKafkaErrorCode::AllBrokersDown);
        reports.report(down(), "1/1 brokers are down");
        reports.report(down(), "1/1 brokers are down");
        reports.report(
            KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure),
            "disconnected",
        );
        let (_, suppressed) = reports.last.lock().expect("one report logged");
        assert_eq!(suppressed, 2);
        // Not connectivity: never counted as suppressed.
        reports.report(
            KafkaError::Global(RDKafkaErrorCode::TopicAuthorizationFailed),
            "denied",
        );
        assert_eq!(reports.last.lock().map(|(_, s)| s), Some(2));
        assert!(!is_connectivity(&KafkaError::Global(
            RDKafkaErrorCode::TopicAuthorizationFailed
        )));
    }
}
