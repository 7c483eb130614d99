//! What answers when no handler does: the spec's `Failure` body for an unknown path (404), a
//! known path with another method (405 with `Allow`), and any error response actix renders
//! itself (an oversized raw body, 413) — clients of the Pinning Service API parse `Failure`
//! on every error status, so none may answer with an empty or plain-text body.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError, Route};

use crate::error::{ApiError, ErrorCode};

/// One resource for `path` whose routes each answer one method; any other method gets a 405
/// `Failure` whose `Allow` header lists exactly these methods.
pub fn resource<const N: usize>(path: &str, routes: [(Method, Route); N]) -> actix_web::Resource {
    let allow = routes
        .iter()
        .map(|(method, _)| method.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let mut resource = web::resource(path);
    for (method, route) in routes {
        resource = resource.route(route.method(method));
    }
    resource.default_service(web::to(move |request: HttpRequest| {
        let allow = allow.clone();
        async move { method_not_allowed(&request, &allow) }
    }))
}

fn method_not_allowed(request: &HttpRequest, allow: &str) -> HttpResponse {
    let mut response = ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!(
            "{} is not allowed on {}; allowed: {allow}",
            request.method(),
            request.path()
        ),
    )
    .error_response();
    if let Ok(value) = HeaderValue::from_str(allow) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

/// The app's default service: a path no resource matches.
pub async fn not_found(request: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found(format!(
        "no route for {} {}",
        request.method(),
        request.path()
    )))
}

/// Middleware (`actix_web::middleware::from_fn(failure_bodies)`) that gives a `Failure` body
/// to error responses actix rendered itself (extractor errors without an error handler, such
/// as a raw body over `PayloadConfig`'s limit). JSON error bodies pass untouched; so do
/// statuses outside [`ErrorCode`]'s closed set. The status and other headers are kept.
pub async fn failure_bodies(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let response = next.call(request).await?.map_into_boxed_body();
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    let code = match ErrorCode::from_status(status) {
        Some(code) if !is_json => code,
        _ => return Ok(response),
    };
    let details = response
        .response()
        .error()
        .map(|error| error.to_string())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    let (request, original) = response.into_parts();
    let mut failure = ApiError::new(code, details).error_response();
    for (name, value) in original.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            failure.headers_mut().append(name.clone(), value.clone());
        }
    }
    Ok(ServiceResponse::new(request, failure))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{test, App};
    use serde_json::Value;

    async fn ok() -> HttpResponse {
        HttpResponse::Ok().finish()
    }

    async fn raw_body(_body: web::Bytes) -> HttpResponse {
        HttpResponse::Ok().finish()
    }

    async fn plain_error() -> HttpResponse {
        HttpResponse::ImATeapot().body("plain")
    }

    fn app() -> App<
        impl actix_web::dev::ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<impl MessageBody>,
            Error = actix_web::Error,
            InitError = (),
        >,
    > {
        App::new()
            .wrap(actix_web::middleware::from_fn(failure_bodies))
            .app_data(web::PayloadConfig::default().limit(8))
            .service(resource(
                "/things",
                [
                    (Method::GET, web::to(ok)),
                    (Method::POST, web::to(raw_body)),
                ],
            ))
            .service(resource("/teapot", [(Method::GET, web::to(plain_error))]))
            .default_service(web::to(not_found))
    }

    async fn failure(response: ServiceResponse<impl MessageBody>) -> (u16, Option<String>, Value) {
        let status = response.status().as_u16();
        let allow = response
            .headers()
            .get(header::ALLOW)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body: Value = test::read_body_json(response).await;
        (status, allow, body)
    }

    #[actix_web::test]
    async fn unknown_path_is_a_404_failure() {
        let app = test::init_service(app()).await;
        let request = test::TestRequest::get().uri("/nowhere").to_request();
        let (status, _, body) = failure(test::call_service(&app, request).await).await;
        assert_eq!(status, 404);
        assert_eq!(body["error"]["reason"], "NOT_FOUND");
        assert_eq!(body["error"]["details"], "no route for GET /nowhere");
    }

    #[actix_web::test]
    async fn other_method_is_a_405_failure_with_allow() {
        let app = test::init_service(app()).await;
        let request = test::TestRequest::delete().uri("/things").to_request();
        let (status, allow, body) = failure(test::call_service(&app, request).await).await;
        assert_eq!(status, 405);
        assert_eq!(allow.as_deref(), Some("GET, POST"));
        assert_eq!(body["error"]["reason"], "METHOD_NOT_ALLOWED");
        let request = test::TestRequest::get().uri("/things").to_request();
        assert_eq!(test::call_service(&app, request).await.status(), 200);
    }

    #[actix_web::test]
    async fn oversized_raw_body_is_a_413_failure() {
        let app = test::init_service(app()).await;
        let request = test::TestRequest::post()
            .uri("/things")
            .set_payload("more than eight bytes")
            .to_request();
        let (status, _, body) = failure(test::call_service(&app, request).await).await;
        assert_eq!(status, 413);
        assert_eq!(body["error"]["reason"], "PAYLOAD_TOO_LARGE");
        assert!(body["error"]["details"].is_string());
    }

    #[actix_web::test]
    async fn statuses_outside_the_closed_set_pass_untouched() {
        let app = test::init_service(app()).await;
        let request = test::TestRequest::get().uri("/teapot").to_request();
        let response = test::call_service(&app, request).await;
        assert_eq!(response.status(), 418);
        assert_eq!(test::read_body(response).await, "plain");
    }
}
