//! The closed set of API errors, each mapped to an HTTP status and the spec's `Failure` body.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    TooManyRequests,
    /// The owner holds as many pins as its quota allows (403; waiting does not help).
    PinQuotaExceeded,
    /// The owner has as many pins in flight as its quota allows (429 with `Retry-After`).
    InFlightQuotaExceeded,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::PinQuotaExceeded => StatusCode::FORBIDDEN,
            ErrorCode::InFlightQuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `Failure.error.reason` string (the spec's examples where it has one).
    pub fn reason(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::TooManyRequests => "TOO_MANY_REQUESTS",
            ErrorCode::PinQuotaExceeded => "PIN_QUOTA_EXCEEDED",
            ErrorCode::InFlightQuotaExceeded => "IN_FLIGHT_QUOTA_EXCEEDED",
            ErrorCode::Unavailable => "SERVICE_UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL_SERVER_ERROR",
        }
    }

    /// The code answering with `status`, if the closed set has one (used to give actix's own
    /// error responses a `Failure` body; the quota codes share their statuses with the
    /// general ones, which are the answer).
    pub fn from_status(status: StatusCode) -> Option<ErrorCode> {
        [
            ErrorCode::BadRequest,
            ErrorCode::Unauthorized,
            ErrorCode::Forbidden,
            ErrorCode::NotFound,
            ErrorCode::MethodNotAllowed,
            ErrorCode::Conflict,
            ErrorCode::PayloadTooLarge,
            ErrorCode::TooManyRequests,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
        ]
        .into_iter()
        .find(|code| code.status() == status)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {details}", code.reason())]
pub struct ApiError {
    pub code: ErrorCode,
    pub details: String,
    /// `Retry-After` seconds of a 429/503 (1 unless the refusal knows better).
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, details: impl Into<String>) -> Self {
        ApiError {
            code,
            details: details.into(),
            retry_after_secs: None,
        }
    }
    /// Sets the `Retry-After` of a 429 or 503.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }
    pub fn bad_request(details: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::BadRequest, details)
    }
    pub fn not_found(details: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::NotFound, details)
    }
    pub fn internal(details: impl std::fmt::Display) -> Self {
        tracing::error!(error = %details, "internal error answering a request");
        ApiError::new(ErrorCode::Internal, details.to_string())
    }
}

#[derive(Serialize)]
struct FailureBody<'a> {
    error: FailureError<'a>,
}

#[derive(Serialize)]
struct FailureError<'a> {
    reason: &'a str,
    details: &'a str,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.code.status());
        if matches!(
            self.code,
            ErrorCode::TooManyRequests | ErrorCode::InFlightQuotaExceeded | ErrorCode::Unavailable
        ) {
            let secs = self.retry_after_secs.unwrap_or(1).max(1);
            response.insert_header(("Retry-After", secs.to_string()));
        }
        if self.code == ErrorCode::Unauthorized {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        response.json(FailureBody {
            error: FailureError {
                reason: self.code.reason(),
                details: &self.details,
            },
        })
    }
}

impl From<pinhive_store::StoreError> for ApiError {
    fn from(error: pinhive_store::StoreError) -> Self {
        ApiError::internal(error)
    }
}

/// A log that refuses for now (at capacity, or unreachable: a Kafka outage) is a 503 with
/// `Retry-After`, logged by the log once per outage rather than here once per request; any
/// other log error is a 500.
impl From<pinhive_log::LogError> for ApiError {
    fn from(error: pinhive_log::LogError) -> Self {
        match error {
            pinhive_log::LogError::Overloaded => ApiError::new(
                ErrorCode::Unavailable,
                "the log is at capacity; retry after the Retry-After delay",
            ),
            pinhive_log::LogError::Unavailable(reason) => ApiError::new(
                ErrorCode::Unavailable,
                format!(
                    "the log is unavailable ({reason}); the request was not acknowledged, \
                     retry after the Retry-After delay"
                ),
            ),
            other => ApiError::internal(other),
        }
    }
}

/// A request body that could not be read as JSON: 413 when it exceeds the configured limit
/// (declared or streamed), 400 for everything else (syntax, content type, wrong fields).
impl From<actix_web::error::JsonPayloadError> for ApiError {
    fn from(error: actix_web::error::JsonPayloadError) -> Self {
        use actix_web::error::{JsonPayloadError, PayloadError};
        match error {
            JsonPayloadError::OverflowKnownLength { length, limit } => ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("request body of {length} bytes exceeds the limit of {limit} bytes"),
            ),
            JsonPayloadError::Overflow { limit } => ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("request body exceeds the limit of {limit} bytes"),
            ),
            JsonPayloadError::Payload(PayloadError::Overflow) => ApiError::new(
                ErrorCode::PayloadTooLarge,
                "request body exceeds the size limit",
            ),
            other => ApiError::bad_request(other.to_string()),
        }
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(error: actix_web::error::BlockingError) -> Self {
        ApiError::new(ErrorCode::Unavailable, error.to_string())
    }
}

/// Seconds a client over its in-flight quota is told to wait: pins settle in seconds to
/// minutes, so sooner is mostly refused again.
pub const IN_FLIGHT_RETRY_AFTER_SECS: u64 = 5;

/// An owner over a quota: 403 `PIN_QUOTA_EXCEEDED` when it holds its most pins (waiting does
/// not help), 429 `IN_FLIGHT_QUOTA_EXCEEDED` with `Retry-After` when it has its most pins in
/// flight (they settle by themselves).
impl From<pinhive_orchestrator::quota::QuotaError> for ApiError {
    fn from(error: pinhive_orchestrator::quota::QuotaError) -> Self {
        use pinhive_orchestrator::quota::QuotaError;
        match error {
            QuotaError::Exceeded(exceeded) if exceeded.is_transient() => {
                ApiError::new(ErrorCode::InFlightQuotaExceeded, exceeded.to_string())
                    .retry_after(IN_FLIGHT_RETRY_AFTER_SECS)
            }
            QuotaError::Exceeded(exceeded) => {
                ApiError::new(ErrorCode::PinQuotaExceeded, exceeded.to_string())
            }
            QuotaError::Store(error) => ApiError::from(error),
        }
    }
}

/// A domain rejection of client input is the client's error: 400 with the rule it broke.
impl From<pinhive_domain::Rejection> for ApiError {
    fn from(rejection: pinhive_domain::Rejection) -> Self {
        match rejection {
            pinhive_domain::Rejection::NotOwner { requestid } => {
                ApiError::not_found(format!("no pin with requestid {requestid}"))
            }
            other => ApiError::bad_request(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::error::{JsonPayloadError, PayloadError};

    #[test]
    fn every_code_maps_back_from_its_status() {
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::MethodNotAllowed,
            ErrorCode::PayloadTooLarge,
            ErrorCode::Internal,
        ] {
            assert_eq!(ErrorCode::from_status(code.status()), Some(code));
        }
        assert_eq!(ErrorCode::from_status(StatusCode::IM_A_TEAPOT), None);
    }

    #[test]
    fn a_log_that_refuses_for_now_is_503_with_retry_after_and_other_log_errors_500() {
        use pinhive_log::LogError;
        for (error, status) in [
            (LogError::Overloaded, StatusCode::SERVICE_UNAVAILABLE),
            (
                LogError::Unavailable("Local: Message timed out".into()),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (LogError::Closed, StatusCode::INTERNAL_SERVER_ERROR),
            (
                LogError::Io(std::io::Error::other("disk")),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ] {
            let response = ApiError::from(error).error_response();
            assert_eq!(response.status(), status);
            assert_eq!(
                response.headers().contains_key("Retry-After"),
                status == StatusCode::SERVICE_UNAVAILABLE
            );
        }
    }

    #[test]
    fn json_overflow_is_413_and_other_json_errors_are_400() {
        let overflows = [
            JsonPayloadError::OverflowKnownLength {
                length: 70_000,
                limit: 65_536,
            },
            JsonPayloadError::Overflow { limit: 65_536 },
            JsonPayloadError::Payload(PayloadError::Overflow),
        ];
        for error in overflows {
            assert_eq!(ApiError::from(error).code, ErrorCode::PayloadTooLarge);
        }
        let syntax = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        for error in [
            JsonPayloadError::ContentType,
            JsonPayloadError::Deserialize(syntax),
            JsonPayloadError::Payload(PayloadError::Incomplete(None)),
        ] {
            assert_eq!(ApiError::from(error).code, ErrorCode::BadRequest);
        }
    }
}
