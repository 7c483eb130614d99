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
    TooManyRequests,
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
            ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
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
            ErrorCode::TooManyRequests => "TOO_MANY_REQUESTS",
            ErrorCode::Unavailable => "SERVICE_UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL_SERVER_ERROR",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {details}", code.reason())]
pub struct ApiError {
    pub code: ErrorCode,
    pub details: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, details: impl Into<String>) -> Self {
        ApiError {
            code,
            details: details.into(),
        }
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
            ErrorCode::TooManyRequests | ErrorCode::Unavailable
        ) {
            response.insert_header(("Retry-After", "1"));
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

impl From<pinhive_log::LogError> for ApiError {
    fn from(error: pinhive_log::LogError) -> Self {
        match error {
            pinhive_log::LogError::Overloaded => ApiError::new(
                ErrorCode::Unavailable,
                "the log is at capacity; retry after the Retry-After delay",
            ),
            other => ApiError::internal(other),
        }
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(error: actix_web::error::BlockingError) -> Self {
        ApiError::new(ErrorCode::Unavailable, error.to_string())
    }
}
