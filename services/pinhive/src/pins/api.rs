//! How `pinhive pins …` reaches a service: the URL and token (flags, then `PINHIVE_URL` /
//! `PINHIVE_TOKEN`, then a profile of the CLI config file, then the default URL), and one
//! blocking client that retries what the server asks to be retried (429, 503 — honouring
//! `Retry-After` — and connection failures), with bounded exponential backoff from `backon`.
//!
//! The CLI never opens the data dir: everything goes through the API, like `ipfs pin remote`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{bail, Context};
use backon::{BackoffBuilder, ExponentialBuilder};
use clap::Args;
use reqwest::blocking::Client;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;

/// The default service when neither flags, environment nor profile name one.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";
/// Longest wait a `Retry-After` may impose.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// One request, including reading the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Args, Debug, Clone)]
pub struct Connection {
    /// The pinhive service (else PINHIVE_URL, else the profile's `url`, else
    /// http://127.0.0.1:8080).
    #[arg(long, env = "PINHIVE_URL")]
    url: Option<String>,
    /// The pins' owner's token, or an admin token (else PINHIVE_TOKEN, else the profile's
    /// `token`).
    #[arg(long, env = "PINHIVE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Profile of the CLI config file to take `url` and `token` from.
    #[arg(long, env = "PINHIVE_PROFILE", default_value = "default")]
    profile: String,
    /// The CLI config file (default $XDG_CONFIG_HOME/pinhive/cli.toml, else
    /// ~/.config/pinhive/cli.toml): one table per profile, e.g.
    /// `[default]` with `url = "https://pins.example"` and `token = "…"`.
    #[arg(long, env = "PINHIVE_CLI_CONFIG")]
    config: Option<PathBuf>,
    /// Attempts after the first for a request the server asks to retry (429, 503) or that
    /// could not reach it.
    #[arg(long, default_value_t = 8)]
    retries: usize,
}

/// One profile of the CLI config file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct Profile {
    url: Option<String>,
    token: Option<String>,
}

fn config_path(explicit: Option<&PathBuf>) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.clone());
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("pinhive").join("cli.toml"))
}

/// The named profile; an absent default file is no profile, an explicit file must exist.
fn load_profile(connection: &Connection) -> anyhow::Result<Profile> {
    let Some(path) = config_path(connection.config.as_ref()) else {
        return Ok(Profile::default());
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error)
            if error.kind() == std::io::ErrorKind::NotFound && connection.config.is_none() =>
        {
            return Ok(Profile::default())
        }
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    };
    let mut profiles: std::collections::BTreeMap<String, Profile> =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    match profiles.remove(&connection.profile) {
        Some(profile) => Ok(profile),
        None if connection.profile == "default" && connection.config.is_none() => {
            Ok(Profile::default())
        }
        None => bail!(
            "{} has no profile [{}] (it has: {})",
            path.display(),
            connection.profile,
            profiles.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Why a request did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The server answered with an error status that retrying does not change.
    #[error("{status}: {details}")]
    Refused { status: u16, details: String },
    /// Still 429/503 or unreachable after every retry.
    #[error("gave up after {attempts} attempts: {last_error}")]
    GaveUp { attempts: u32, last_error: String },
    /// A `POST` whose request may have reached the service (a timeout, a connection lost after
    /// sending) is not sent again blindly: that could pin twice. The caller checks first.
    #[error("no answer, the request may have been applied: {details}")]
    Unknown { details: String },
}

impl ApiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Refused { status, .. } => Some(*status),
            ApiError::GaveUp { .. } | ApiError::Unknown { .. } => None,
        }
    }

    /// Errors that would hit every request alike (credentials, wrong URL, no service): an
    /// import stops at the first rather than reporting each line.
    pub fn is_fatal(&self) -> bool {
        match self {
            ApiError::GaveUp { .. } => true,
            ApiError::Unknown { .. } => false,
            ApiError::Refused { status, .. } => matches!(status, 401 | 403 | 404 | 405 | 0),
        }
    }
}

pub struct Api {
    client: Client,
    pub url: String,
    token: String,
    backoff: ExponentialBuilder,
    /// Requests sent again after a 429, a 503 or a connection failure.
    pub retries: AtomicU64,
}

impl Api {
    pub fn connect(connection: &Connection) -> anyhow::Result<Api> {
        let profile = load_profile(connection)?;
        let url = connection
            .url
            .clone()
            .or(profile.url)
            .unwrap_or_else(|| DEFAULT_URL.to_string());
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!("the service URL must start with http:// or https:// (got {url})");
        }
        let Some(token) = connection.token.clone().or(profile.token) else {
            bail!(
                "no token: pass --token, set PINHIVE_TOKEN, or put `token = \"…\"` in profile \
                 [{}] of {}",
                connection.profile,
                config_path(connection.config.as_ref())
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "the CLI config file".into())
            );
        };
        let client = Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("pinhive-cli/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Api {
            client,
            url: url.trim_end_matches('/').to_string(),
            token,
            backoff: ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(10))
                .with_max_times(connection.retries)
                .with_jitter(),
            retries: AtomicU64::new(0),
        })
    }

    /// Sends the request (again while the server asks for a retry, at most `retries` times)
    /// and returns the status and JSON body (Null when there is none). A 429 or 503 did
    /// nothing and a connection that failed sent nothing, so those are retried for every
    /// method; a `POST` that may have arrived without an answer is [`ApiError::Unknown`].
    pub fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), ApiError> {
        let body = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        let mut delays = self.backoff.build();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut request = self
                .client
                .request(method.clone(), format!("{}{path}", self.url))
                .bearer_auth(&self.token);
            if let Some(body) = &body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            let (last_error, retry_after) = match request.send() {
                Ok(response) => {
                    let status = response.status();
                    let retry_after = retry_after(&response);
                    let text = response.text().unwrap_or_default();
                    if status.is_success() {
                        let value = serde_json::from_str(&text).unwrap_or(Value::Null);
                        return Ok((status.as_u16(), value));
                    }
                    if !matches!(
                        status,
                        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
                    ) {
                        return Err(ApiError::Refused {
                            status: status.as_u16(),
                            details: details(status, &text),
                        });
                    }
                    (format!("{status}: {}", details(status, &text)), retry_after)
                }
                // Never sent: safe to send again, whatever the method.
                Err(error) if error.is_connect() => (error_chain(&error), Duration::ZERO),
                Err(error)
                    if method == Method::POST && (error.is_timeout() || error.is_request()) =>
                {
                    return Err(ApiError::Unknown {
                        details: error_chain(&error),
                    })
                }
                Err(error) if error.is_timeout() || error.is_request() => {
                    (error_chain(&error), Duration::ZERO)
                }
                Err(error) => {
                    return Err(ApiError::Refused {
                        status: 0,
                        details: error_chain(&error),
                    })
                }
            };
            let Some(delay) = delays.next() else {
                return Err(ApiError::GaveUp {
                    attempts,
                    last_error,
                });
            };
            self.retries.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(delay.max(retry_after));
        }
    }
}

fn retry_after(response: &reqwest::blocking::Response) -> Duration {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok()?.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, |secs| {
            Duration::from_secs(secs).min(MAX_RETRY_AFTER)
        })
}

/// `value` percent-encoded for a URL path segment or query value.
pub fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).collect()
}

/// reqwest's message and its causes ("error sending request: … Connection refused").
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `error.details` (with the reason) of the API's `Failure` body, else the start of the body;
/// with a hint for the statuses that mean the command is pointed at the wrong place.
fn details(status: StatusCode, text: &str) -> String {
    let parsed = serde_json::from_str::<Value>(text).ok();
    let mut details = match parsed.as_ref().map(|b| &b["error"]) {
        Some(error) if error["details"].is_string() || error["reason"].is_string() => format!(
            "{} {}",
            error["reason"].as_str().unwrap_or(""),
            error["details"].as_str().unwrap_or("")
        )
        .trim()
        .to_string(),
        _ => {
            let text = text.trim();
            match text.char_indices().nth(200) {
                Some((end, _)) => format!("{}…", &text[..end]),
                None if text.is_empty() => "no details".into(),
                None => text.to_string(),
            }
        }
    };
    match status {
        StatusCode::UNAUTHORIZED => details.push_str(" (check --token / PINHIVE_TOKEN / profile)"),
        StatusCode::METHOD_NOT_ALLOWED => details.push_str(" (is --url a pinhive service?)"),
        _ => {}
    }
    details
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(config: Option<PathBuf>, profile: &str) -> Connection {
        Connection {
            url: None,
            token: None,
            profile: profile.into(),
            config,
            retries: 0,
        }
    }

    /// A server that reads each request and closes the connection without an answer.
    fn hanging_up_server(connections: usize) -> String {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for _ in 0..connections {
                let Ok((mut stream, _)) = listener.accept() else {
                    return;
                };
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer);
            }
        });
        url
    }

    #[test]
    fn a_post_without_an_answer_is_not_sent_again_but_a_get_is() {
        let mut connection = connection(None, "default");
        connection.token = Some("t".into());
        connection.retries = 1;
        connection.url = Some(hanging_up_server(1));
        let api = Api::connect(&connection).unwrap();
        let error = api
            .call(
                Method::POST,
                "/pins",
                Some(&serde_json::json!({"cid": "x"})),
            )
            .unwrap_err();
        assert!(matches!(error, ApiError::Unknown { .. }), "{error}");
        connection.url = Some(hanging_up_server(2));
        let api = Api::connect(&connection).unwrap();
        let error = api.call(Method::GET, "/pins", None).unwrap_err();
        assert!(
            matches!(error, ApiError::GaveUp { attempts: 2, .. }),
            "{error}"
        );
    }

    #[test]
    fn a_profile_gives_url_and_token_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cli.toml");
        std::fs::write(
            &path,
            "[default]\nurl = \"http://a:1\"\ntoken = \"ta\"\n[staging]\nurl = \"https://b\"\n",
        )
        .unwrap();
        let api = Api::connect(&connection(Some(path.clone()), "default")).unwrap();
        assert_eq!((api.url.as_str(), api.token.as_str()), ("http://a:1", "ta"));
        let mut staging = connection(Some(path.clone()), "staging");
        let error = Api::connect(&staging).err().unwrap().to_string();
        assert!(error.contains("no token"), "{error}");
        staging.token = Some("flag".into());
        let api = Api::connect(&staging).unwrap();
        assert_eq!(
            (api.url.as_str(), api.token.as_str()),
            ("https://b", "flag")
        );
        let error = Api::connect(&connection(Some(path), "prod"))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("no profile [prod]"), "{error}");
    }
}
