//! A real HTTP reverse proxy in front of a js-ipfs daemon's RPC that demands an
//! `Authorization` header, as Kubo's `API.Authorizations` does (js-ipfs has no such setting):
//! a request without the expected header gets Kubo's 403 and never reaches the daemon.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

/// Counts of what the proxy saw.
#[derive(Default)]
pub struct ProxyCounts {
    pub authorized: AtomicUsize,
    pub refused: AtomicUsize,
}

pub struct AuthProxy {
    /// The proxy's RPC root (`http://127.0.0.1:PORT`).
    pub url: String,
    pub counts: Arc<ProxyCounts>,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Upstream {
    base: String,
    expected: String,
    http: reqwest::Client,
    counts: Arc<ProxyCounts>,
}

async fn forward(
    request: HttpRequest,
    body: web::Bytes,
    upstream: web::Data<Upstream>,
) -> HttpResponse {
    let given = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    if given != Some(upstream.expected.as_str()) {
        upstream.counts.refused.fetch_add(1, Ordering::Relaxed);
        return HttpResponse::Forbidden().body("403 - Forbidden");
    }
    upstream.counts.authorized.fetch_add(1, Ordering::Relaxed);
    let url = format!("{}{}", upstream.base, request.uri());
    let mut outgoing = upstream.http.post(&url).body(body.to_vec());
    if let Some(content_type) = request.headers().get("content-type") {
        outgoing = outgoing.header("content-type", content_type.as_bytes());
    }
    match outgoing.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .to_string();
            let bytes = response.bytes().await.unwrap_or_default();
            HttpResponse::build(
                actix_web::http::StatusCode::from_u16(status)
                    .unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY),
            )
            .content_type(content_type)
            .body(bytes)
        }
        Err(error) => HttpResponse::BadGateway().body(error.to_string()),
    }
}

impl AuthProxy {
    /// Serves on a free loopback port, over TLS when `tls` is given (then `url` is
    /// `https://localhost:PORT`), forwarding requests that carry `Authorization: expected` to
    /// `upstream` (the daemon's RPC root).
    pub fn start(
        upstream: &str,
        expected: &str,
        tls: Option<rustls::ServerConfig>,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let counts = Arc::new(ProxyCounts::default());
        let data = web::Data::new(Upstream {
            base: upstream.trim_end_matches('/').to_string(),
            expected: expected.to_string(),
            http: reqwest::Client::new(),
            counts: counts.clone(),
        });
        let url = match tls {
            Some(_) => format!("https://localhost:{port}"),
            None => format!("http://127.0.0.1:{port}"),
        };
        let (sender, receiver) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let system = actix_rt::System::new();
            system.block_on(async move {
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .app_data(web::PayloadConfig::default().limit(64 << 20))
                        .default_service(web::to(forward))
                })
                .workers(1)
                .disable_signals();
                let server = match tls {
                    Some(config) => server.listen_rustls_0_23(listener, config),
                    None => server.listen(listener),
                };
                match server {
                    Ok(server) => {
                        let server = server.run();
                        let _ = sender.send(Ok(server.handle()));
                        let _ = server.await;
                    }
                    Err(error) => {
                        let _ = sender.send(Err(error));
                    }
                }
            });
        });
        let handle = receiver.recv()??;
        Ok(AuthProxy {
            url,
            counts,
            handle,
            thread: Some(thread),
        })
    }

    pub fn authorized(&self) -> usize {
        self.counts.authorized.load(Ordering::Relaxed)
    }

    pub fn refused(&self) -> usize {
        self.counts.refused.load(Ordering::Relaxed)
    }
}

impl Drop for AuthProxy {
    fn drop(&mut self) {
        // Stops the server, then its thread ends.
        let handle = self.handle.clone();
        let stop = std::thread::spawn(move || {
            actix_rt::System::new().block_on(handle.stop(false));
        });
        let _ = stop.join();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
