//! Clients of the operator console: a WebSocket client of `/ws/dashboard` (tokio-tungstenite)
//! and a minimal W3C WebDriver client (chromedriver driving headless Chromium) over reqwest.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const PROTOCOL: &str = "pinhive.dashboard.v1";

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The handshake request for `base` (`http://host:port`), the token in `Sec-WebSocket-Protocol`.
pub fn request(
    base: &str,
    token: Option<&str>,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let url = format!("{}/ws/dashboard", base.replacen("http", "ws", 1));
    let mut request = url.into_client_request().expect("ws request");
    let protocols = match token {
        Some(token) => format!("{PROTOCOL}, bearer.{token}"),
        None => PROTOCOL.to_string(),
    };
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(&protocols).expect("header"),
    );
    request
}

/// Connects; `Err(status)` when the handshake is refused with an HTTP status.
pub async fn connect(base: &str, token: Option<&str>) -> Result<Socket, u16> {
    match tokio_tungstenite::connect_async(request(base, token)).await {
        Ok((socket, response)) => {
            assert_eq!(
                response
                    .headers()
                    .get("sec-websocket-protocol")
                    .and_then(|v| v.to_str().ok()),
                Some(PROTOCOL),
                "the server answers with the dashboard subprotocol (never the token entry)"
            );
            Ok(socket)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(error) => panic!("dashboard handshake failed: {error}"),
    }
}

/// The next JSON text message, answering nothing itself (tungstenite queues pongs for pings it
/// reads and sends them on the next read or write); `None` when the socket closed. Panics after
/// `timeout`.
pub async fn next_json(socket: &mut Socket, timeout: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("a dashboard message in time");
        match message {
            Some(Ok(Message::Text(text))) => {
                return Some(serde_json::from_str(text.as_str()).expect("JSON message"))
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

/// Reads until a message `select` accepts; panics after `timeout` or if the socket closes.
pub async fn wait_for(
    socket: &mut Socket,
    timeout: Duration,
    what: &str,
    select: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"));
        let message = next_json(socket, left)
            .await
            .unwrap_or_else(|| panic!("socket closed while waiting for {what}"));
        if select(&message) {
            return message;
        }
    }
}

/// Asks for a fresh snapshot.
pub async fn ask_snapshot(socket: &mut Socket) {
    socket
        .send(Message::text(json!({"type": "snapshot"}).to_string()))
        .await
        .expect("send");
}

/// Where chromedriver is (Debian's `chromium-driver`), if installed.
pub fn chromedriver() -> Option<PathBuf> {
    ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A chromedriver process and one headless Chromium session (W3C WebDriver over HTTP).
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start() -> anyhow::Result<Self> {
        let binary = chromedriver().context(
            "chromedriver is missing: scripts/setup.sh installs chromium and chromium-driver",
        )?;
        let port = crate::free_port();
        let driver = Command::new(binary)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver")?;
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            http,
            _profile: tempfile::tempdir()?,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = browser
                .http
                .get(format!("{}/status", browser.base))
                .send()
                .await;
            if let Ok(response) = status {
                let body: Value = response.json().await.unwrap_or_default();
                if body["value"]["ready"] == true {
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("chromedriver did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = browser._profile.path().display().to_string();
        let created = browser
            .call(
                reqwest::Method::POST,
                "/session",
                json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "unhandledPromptBehavior": "ignore",
                    "goog:chromeOptions": {"args": [
                        "--headless", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", "--window-size=1280,1600",
                        format!("--user-data-dir={profile}"),
                    ]},
                }}}),
            )
            .await?;
        browser.session = created["sessionId"]
            .as_str()
            .context("no session id")?
            .to_string();
        Ok(browser)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if method != reqwest::Method::GET {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("WebDriver {path}: {status} {}", body["value"]);
        }
        Ok(body["value"].clone())
    }

    fn path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.call(
            reqwest::Method::POST,
            &self.path("/url"),
            json!({"url": url}),
        )
        .await
        .map(drop)
    }

    /// The element of a CSS selector, if present.
    pub async fn find(&self, css: &str) -> Option<String> {
        let found = self
            .call(
                reqwest::Method::POST,
                &self.path("/element"),
                json!({"using": "css selector", "value": css}),
            )
            .await
            .ok()?;
        found
            .as_object()?
            .values()
            .next()?
            .as_str()
            .map(str::to_string)
    }

    pub async fn text(&self, css: &str) -> Option<String> {
        let id = self.find(css).await?;
        self.call(
            reqwest::Method::GET,
            &self.path(&format!("/element/{id}/text")),
            Value::Null,
        )
        .await
        .ok()?
        .as_str()
        .map(str::to_string)
    }

    pub async fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let id = self.find(css).await.context(format!("no {css}"))?;
        self.call(
            reqwest::Method::POST,
            &self.path(&format!("/element/{id}/value")),
            json!({"text": text}),
        )
        .await
        .map(drop)
    }

    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        let id = self.find(css).await.context(format!("no {css}"))?;
        self.call(
            reqwest::Method::POST,
            &self.path(&format!("/element/{id}/click")),
            json!({}),
        )
        .await
        .map(drop)
    }

    /// The text of an open `confirm()`/`alert()`, if one is open.
    pub async fn alert_text(&self) -> Option<String> {
        self.call(reqwest::Method::GET, &self.path("/alert/text"), Value::Null)
            .await
            .ok()?
            .as_str()
            .map(str::to_string)
    }

    pub async fn accept_alert(&self) -> anyhow::Result<()> {
        self.call(
            reqwest::Method::POST,
            &self.path("/alert/accept"),
            json!({}),
        )
        .await
        .map(drop)
    }

    pub async fn execute(&self, script: &str) -> anyhow::Result<Value> {
        self.call(
            reqwest::Method::POST,
            &self.path("/execute/sync"),
            json!({"script": script, "args": []}),
        )
        .await
    }

    /// Saves a PNG screenshot of the viewport to `path`.
    pub async fn screenshot(&self, path: &std::path::Path) -> anyhow::Result<()> {
        use base64::Engine as _;
        let data = self
            .call(reqwest::Method::GET, &self.path("/screenshot"), Value::Null)
            .await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().context("screenshot data")?)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png)?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the browser session (a plain HTTP DELETE, bounded), then chromedriver.
        use std::io::{Read, Write};
        let address = self.base.trim_start_matches("http://").to_string();
        if let Ok(mut stream) = std::net::TcpStream::connect(&address) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                stream,
                "DELETE /session/{} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n",
                self.session
            );
            let _ = stream.read_to_end(&mut Vec::new());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
