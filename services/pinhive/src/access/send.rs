//! Sending batches to `POST /access`: a few blocking worker threads fed through a bounded
//! channel (so reading never runs more than `concurrency` batches ahead of the network), each
//! retrying what the server asks to be retried, with bounded exponential backoff.
//!
//! Delivery is at least once: a batch whose answer is lost (timeout) is sent again, and its
//! reads may then count twice. Demand is an estimate, decayed over time; a double count after
//! a timeout is noise in it, a lost batch would be a hole.

use crate::pins::api::error_chain;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use pinhive_events::access::{AccessBatch, AccessEvent};
use reqwest::blocking::{Client, Response};
use reqwest::StatusCode;

/// Longest wait a `Retry-After` may impose.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// One request, including reading the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Events of consecutive lines of the input, sent as one request.
pub struct Batch {
    pub events: Vec<AccessEvent>,
    pub first_line: u64,
    pub last_line: u64,
}

/// Why sending stopped.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(
        "the server refused the batch of lines {first_line}-{last_line} ({status}): {details}"
    )]
    Refused {
        status: u16,
        details: String,
        first_line: u64,
        last_line: u64,
    },
    #[error("gave up on the batch of lines {first_line}-{last_line} after {attempts} attempts: {last_error}")]
    GaveUp {
        attempts: u32,
        last_error: String,
        first_line: u64,
        last_line: u64,
    },
}

/// Totals the workers keep, read by the progress bar and the summary.
#[derive(Default)]
pub struct Delivered {
    pub events: AtomicU64,
    pub accepted: AtomicU64,
    pub batches: AtomicU64,
    pub retries: AtomicU64,
}

pub struct Sender {
    client: Client,
    endpoint: String,
    token: String,
    backoff: ExponentialBuilder,
    /// Set by the first worker that fails; the others stop retrying and the reader stops.
    stop: AtomicBool,
    first_error: Mutex<Option<SendError>>,
    pub delivered: Delivered,
}

impl Sender {
    pub fn new(url: &str, token: String, retries: usize) -> anyhow::Result<Sender> {
        let client = Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("pinhive-access-import/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Sender {
            client,
            endpoint: format!("{}/access", url.trim_end_matches('/')),
            token,
            backoff: ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(10))
                .with_max_times(retries)
                .with_jitter(),
            stop: AtomicBool::new(false),
            first_error: Mutex::new(None),
            delivered: Delivered::default(),
        })
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub fn into_error(self) -> Option<SendError> {
        self.first_error
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// A worker: sends what arrives until the channel closes. After a failure (its own or
    /// another's) it keeps receiving and drops what it gets, so the reader never blocks on a
    /// full channel nobody drains.
    pub fn work(&self, batches: &Mutex<mpsc::Receiver<Batch>>) {
        loop {
            let received = batches.lock().unwrap_or_else(|e| e.into_inner()).recv();
            let Ok(batch) = received else { return };
            if self.stopped() {
                continue;
            }
            match self.send(&batch) {
                Ok(accepted) => {
                    let delivered = &self.delivered;
                    delivered
                        .events
                        .fetch_add(batch.events.len() as u64, Ordering::Relaxed);
                    delivered.accepted.fetch_add(accepted, Ordering::Relaxed);
                    delivered.batches.fetch_add(1, Ordering::Relaxed);
                }
                Err(None) => {}
                Err(Some(error)) => {
                    let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
                    first.get_or_insert(error);
                    self.stop.store(true, Ordering::Release);
                }
            }
        }
    }

    /// The server's `accepted`; `Err(None)` when another worker's failure stopped the retries.
    fn send(&self, batch: &Batch) -> Result<u64, Option<SendError>> {
        let body = serde_json::to_vec(&AccessBatch {
            events: batch.events.clone(),
        })
        .map_err(|e| Some(self.refused(batch, 0, format!("serializing the batch: {e}"))))?;
        let mut delays = self.backoff.build();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (last_error, retry_after) = match self.post(&body) {
                Ok(response) => match classify(response, batch.events.len()) {
                    Outcome::Accepted(accepted) => return Ok(accepted),
                    Outcome::Retry {
                        reason,
                        retry_after,
                    } => (reason, retry_after),
                    Outcome::Refused { status, details } => {
                        return Err(Some(self.refused(batch, status, details)))
                    }
                },
                Err(error) if error.is_connect() || error.is_timeout() || error.is_request() => {
                    (error_chain(&error), Duration::ZERO)
                }
                Err(error) => return Err(Some(self.refused(batch, 0, error_chain(&error)))),
            };
            let Some(delay) = delays.next() else {
                return Err(Some(SendError::GaveUp {
                    attempts,
                    last_error,
                    first_line: batch.first_line,
                    last_line: batch.last_line,
                }));
            };
            if self.stopped() {
                return Err(None);
            }
            self.delivered.retries.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(delay.max(retry_after));
        }
    }

    fn post(&self, body: &[u8]) -> reqwest::Result<Response> {
        self.client
            .post(&self.endpoint)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .send()
    }

    fn refused(&self, batch: &Batch, status: u16, details: String) -> SendError {
        SendError::Refused {
            status,
            details,
            first_line: batch.first_line,
            last_line: batch.last_line,
        }
    }
}

enum Outcome {
    Accepted(u64),
    Retry {
        reason: String,
        retry_after: Duration,
    },
    Refused {
        status: u16,
        details: String,
    },
}

fn classify(response: Response, sent: usize) -> Outcome {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok()?.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, |secs| {
            Duration::from_secs(secs).min(MAX_RETRY_AFTER)
        });
    let text = response.text().unwrap_or_default();
    if status.is_success() {
        let accepted = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|body| body["accepted"].as_u64());
        return Outcome::Accepted(accepted.unwrap_or(sent as u64));
    }
    if matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        return Outcome::Retry {
            reason: format!("{status}: {}", details(&text)),
            retry_after,
        };
    }
    let hint = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => " (check --token / PINHIVE_TOKEN)",
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {
            " (does this server have POST /access? check --url)"
        }
        StatusCode::PAYLOAD_TOO_LARGE => " (try a smaller --batch)",
        _ => "",
    };
    Outcome::Refused {
        status: status.as_u16(),
        details: format!("{}{hint}", details(&text)),
    }
}

/// `error.details` of the API's error body, else the start of the body.
fn details(text: &str) -> String {
    let parsed = serde_json::from_str::<serde_json::Value>(text).ok();
    if let Some(details) = parsed.as_ref().and_then(|b| b["error"]["details"].as_str()) {
        return details.to_string();
    }
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None if text.is_empty() => "no details".into(),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    use super::*;

    /// A server answering each request with the next of `answers` (status line, extra headers,
    /// body); returns its URL and the bodies it received.
    fn scripted_server(
        answers: Vec<(&'static str, &'static str, &'static str)>,
    ) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let mut bodies = Vec::new();
            for (status, headers, body) in answers {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream);
                let mut length = 0;
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).unwrap();
                    if header.trim().is_empty() {
                        break;
                    }
                    if let Some((name, value)) = header.split_once(':') {
                        if name.eq_ignore_ascii_case("content-length") {
                            length = value.trim().parse().unwrap();
                        }
                    }
                }
                let mut received = vec![0; length];
                reader.read_exact(&mut received).unwrap();
                bodies.push(String::from_utf8(received).unwrap());
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                reader.get_mut().write_all(answer.as_bytes()).unwrap();
            }
            bodies
        });
        (url, server)
    }

    fn batch() -> Batch {
        Batch {
            events: vec![AccessEvent {
                cid: "bafkqaaa".into(),
                region: "eu".into(),
                bytes: 3,
                ts: Some(1.5),
                size: None,
            }],
            first_line: 7,
            last_line: 7,
        }
    }

    #[test]
    fn retries_503_then_counts_the_accepted() {
        let (url, server) = scripted_server(vec![
            (
                "503 Service Unavailable",
                "retry-after: 0\r\n",
                r#"{"error":{"reason":"BUSY","details":"full"}}"#,
            ),
            ("202 Accepted", "", r#"{"accepted":1}"#),
        ]);
        let sender = Sender::new(&url, "secret".into(), 3).unwrap();
        assert_eq!(sender.send(&batch()).unwrap(), 1);
        let bodies = server.join().unwrap();
        assert_eq!(bodies[0], bodies[1]);
        let sent: AccessBatch = serde_json::from_str(&bodies[1]).unwrap();
        assert_eq!(sent.events, batch().events);
    }

    #[test]
    fn bad_request_stops_with_the_details_and_lines() {
        let (url, server) = scripted_server(vec![(
            "400 Bad Request",
            "",
            r#"{"error":{"reason":"BAD_REQUEST","details":"events[0].region: too long"}}"#,
        )]);
        let sender = Sender::new(&url, "secret".into(), 3).unwrap();
        let error = sender.send(&batch()).unwrap_err().unwrap();
        assert_eq!(
            error.to_string(),
            "the server refused the batch of lines 7-7 (400): events[0].region: too long"
        );
        server.join().unwrap();
    }

    #[test]
    fn gives_up_after_the_retries() {
        let busy = ("429 Too Many Requests", "", "{}");
        let (url, server) = scripted_server(vec![busy, busy]);
        let sender = Sender::new(&url, "secret".into(), 1).unwrap();
        let error = sender.send(&batch()).unwrap_err().unwrap();
        assert!(
            matches!(error, SendError::GaveUp { attempts: 2, .. }),
            "{error}"
        );
        server.join().unwrap();
    }
}
