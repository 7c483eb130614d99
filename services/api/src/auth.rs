//! Bearer-token authentication: the token's SHA-256 is looked up in the store; the token's
//! owner scopes every pin operation.

use std::future::Future;
use std::pin::Pin;

use actix_web::{dev::Payload, web, FromRequest, HttpRequest};

use crate::error::{ApiError, ErrorCode};
use crate::AppState;

/// The authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    pub owner: String,
    pub admin: bool,
}

/// An authenticated caller that holds an admin token.
pub struct AdminCaller(pub Caller);

fn bearer(request: &HttpRequest) -> Result<String, ApiError> {
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

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = bearer(request);
        let state = request.app_data::<web::Data<AppState>>().cloned();
        Box::pin(async move {
            let token = token?;
            let state = state.ok_or_else(|| ApiError::internal("application state missing"))?;
            // Cached by the secret itself: a request with a cached token costs no store read.
            let cached = state
                .tokens
                .lock()
                .get(&token)
                .filter(|(_, seen)| seen.elapsed() < crate::TOKEN_CACHE_TTL)
                .map(|(record, _)| record.clone());
            // The token's identity: the hash the store keeps it under, never the secret.
            let identity = pinhive_store::hash_secret(&token);
            let record = match cached {
                Some(record) => record,
                None => {
                    let store = state.store.clone();
                    let lookup = identity.clone();
                    let record = web::block(move || store.get_token(&lookup))
                        .await??
                        .ok_or_else(|| {
                            ApiError::new(ErrorCode::Unauthorized, "unknown access token")
                        })?;
                    state
                        .tokens
                        .lock()
                        .put(token, (record.clone(), std::time::Instant::now()));
                    record
                }
            };
            // Only known tokens are limited (and tracked): unknown ones are 401 above.
            if let Err(wait) = state.rate_limiter.check(&identity) {
                let secs = crate::ratelimit::retry_after_secs(wait);
                return Err(ApiError::new(
                    ErrorCode::TooManyRequests,
                    format!("this token is over its request rate limit; retry in {secs} s"),
                )
                .retry_after(secs));
            }
            Ok(Caller {
                owner: record.owner,
                admin: record.admin,
            })
        })
    }
}

impl FromRequest for AdminCaller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let caller = Caller::from_request(request, payload);
        Box::pin(async move {
            let caller = caller.await?;
            if !caller.admin {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    "this endpoint needs an admin token (pinhive token create --admin)",
                ));
            }
            Ok(AdminCaller(caller))
        })
    }
}
