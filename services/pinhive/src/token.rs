//! `pinhive token create|list|revoke|show`.
//!
//! With a token (`--token` / `PINHIVE_TOKEN`, `admin` scope) every command goes through a
//! running service's admin API at `--url` (audited there). Without one it works on the store
//! directly — the bootstrap path for the first admin token: the embedded store under
//! `--data-dir` (refused while a service holds it) or a ScyllaDB keyspace (`--store`).

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use pinhive_domain::tokens::{valid_token_name, Scopes, TokenStatus};
use pinhive_store::{EmbeddedStore, Store, StoreError, TokenRecord};
use serde_json::{json, Value};

#[derive(Args, Debug)]
pub struct Target {
    /// The pinhive service (used when a token is given).
    #[arg(long, env = "PINHIVE_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An admin token: the command then goes through the service's admin API. Without one
    /// it works on the store directly (bootstrap; the service must not hold the embedded store).
    #[arg(long, env = "PINHIVE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[arg(long, env = "PINHIVE_DATA_DIR", default_value = "pinhive-data")]
    data_dir: PathBuf,
    /// The store: `embedded` (under the data dir) or `scylla://host:9042/keyspace`.
    #[arg(long, env = "PINHIVE_STORE", default_value = "embedded")]
    store: String,
    /// Print the JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token; prints the secret on stdout, once (it is stored only as a hash).
    Create {
        /// What the token is for (one token per device or service). Without --owner it is
        /// also the owner (the form before names and owners were apart).
        #[arg(long)]
        name: String,
        /// Owner of the pins made with the token.
        #[arg(long)]
        owner: Option<String>,
        /// Comma-separated scopes: pins:read, pins:write, admin, s3:ingest, access:ingest
        /// (default pins:read,pins:write).
        #[arg(long, conflicts_with = "admin")]
        scopes: Option<String>,
        /// Every scope (what an admin token could do before scopes).
        #[arg(long)]
        admin: bool,
        /// RFC 3339 time from which the token is refused (default: never).
        #[arg(long)]
        expires_at: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// An owner's tokens (not revoked): id, name, scopes, created, expiry. Never secrets.
    List {
        #[arg(long)]
        owner: String,
        #[command(flatten)]
        target: Target,
    },
    /// One token by id (revoked ones too).
    Show {
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Revoke a token by id: every instance refuses it within a second.
    Revoke {
        id: String,
        #[command(flatten)]
        target: Target,
    },
}

/// The store a token is written to: the embedded one (refused while a service holds it) or a
/// ScyllaDB keyspace, which running services share.
fn open_store(target: &Target) -> anyhow::Result<Box<dyn Store>> {
    let (data_dir, store) = (&target.data_dir, &target.store);
    if store != "embedded" {
        let scylla = pinhive_store_scylla::ScyllaStore::open(store).with_context(|| {
            format!("opening the store at {store} (migrated? `pinhive migrate`)")
        })?;
        return Ok(Box::new(scylla));
    }
    pinhive_server::config::prepare_data_dir(data_dir)?;
    match EmbeddedStore::open(&data_dir.join("store")) {
        Err(StoreError::Locked { path }) => anyhow::bail!(
            "{path} is in use by a running pinhive; manage tokens through the running \
             service instead: pass an admin token (--token or PINHIVE_TOKEN) and --url"
        ),
        other => Ok(Box::new(other.context("opening the store")?)),
    }
}

fn format_ns(ns: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(ns)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A token as the admin API shows it (the offline commands print the same shape).
fn token_json(id: &str, token: &TokenRecord) -> Value {
    json!({
        "id": id,
        "owner": token.owner,
        "name": token.name,
        "scopes": token.scopes.names(),
        "created": format_ns(token.created_ns),
        "expires_at": token.expires_ns.map(format_ns),
        "revoked_at": token.revoked_ns.map(format_ns),
        "status": match token.status(pinhive_events::now_ns()) {
            TokenStatus::Active => "active",
            TokenStatus::Expired => "expired",
            TokenStatus::Revoked => "revoked",
        },
    })
}

fn call(
    target: &Target,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    crate::nodes::request(&client, &target.url, token, method, path, body)
}

fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).collect()
}

fn print_tokens(tokens: &[Value]) {
    println!(
        "{:<16}  {:<20} {:<16} {:<8} {:<21} {:<21} SCOPES",
        "ID", "NAME", "OWNER", "STATUS", "CREATED", "EXPIRES"
    );
    for token in tokens {
        let scopes: Vec<&str> = token["scopes"]
            .as_array()
            .map(|s| s.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let time = |key: &str| {
            token[key]
                .as_str()
                .map(|t| t.chars().take(19).collect::<String>() + "Z")
                .unwrap_or_else(|| "never".into())
        };
        println!(
            "{:<16}  {:<20} {:<16} {:<8} {:<21} {:<21} {}",
            token["id"].as_str().unwrap_or("?"),
            token["name"].as_str().unwrap_or(""),
            token["owner"].as_str().unwrap_or(""),
            token["status"].as_str().unwrap_or("?"),
            time("created"),
            time("expires_at"),
            scopes.join(","),
        );
    }
}

fn print(target: &Target, body: &Value) -> anyhow::Result<()> {
    if target.json {
        println!("{}", serde_json::to_string_pretty(body)?);
    } else {
        print_tokens(std::slice::from_ref(body));
    }
    Ok(())
}

/// The record `token create` asks for, checked as the admin API checks it.
fn offline_record(
    name: String,
    owner: Option<String>,
    scopes: Option<String>,
    admin: bool,
    expires_at: Option<String>,
) -> anyhow::Result<TokenRecord> {
    let owner = owner.unwrap_or_else(|| name.clone());
    if !pinhive_store::valid_owner(&owner) {
        bail!("the owner must be 1..128 bytes, not start with '#', without control characters");
    }
    if !valid_token_name(&name) {
        bail!("--name must be 1..128 bytes without control characters");
    }
    let scopes = match (scopes, admin) {
        (Some(text), _) => Scopes::parse(&text)?,
        (None, true) => Scopes::all(),
        (None, false) => Scopes::default_tenant(),
    };
    let now = pinhive_events::now_ns();
    let expires_ns = match expires_at {
        None => None,
        Some(text) => {
            let ns = chrono::DateTime::parse_from_rfc3339(text.trim())
                .with_context(|| format!("--expires-at {text:?}: an RFC 3339 time is expected"))?
                .timestamp_nanos_opt()
                .context("--expires-at is out of range (1970 to 2262)")?;
            if ns <= now {
                bail!("--expires-at {text:?} is not in the future");
            }
            Some(ns)
        }
    };
    Ok(TokenRecord {
        owner,
        created_ns: now,
        name,
        scopes,
        expires_ns,
        revoked_ns: None,
    })
}

pub fn run(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            name,
            owner,
            scopes,
            admin,
            expires_at,
            target,
        } => {
            let (secret, body) = match &target.token {
                Some(token) => {
                    let mut request = json!({"name": name, "owner": owner});
                    match (&scopes, admin) {
                        (Some(scopes), _) => request["scopes"] = json!(scopes),
                        (None, true) => request["admin"] = json!(true),
                        (None, false) => {}
                    }
                    if let Some(expires_at) = &expires_at {
                        request["expires_at"] = json!(expires_at);
                    }
                    let mut body = call(
                        &target,
                        token,
                        reqwest::Method::POST,
                        "/admin/tokens",
                        Some(request),
                    )?;
                    let secret = body["token"]
                        .as_str()
                        .context("the service answered without a token")?
                        .to_string();
                    if let Some(fields) = body.as_object_mut() {
                        fields.remove("token");
                    }
                    (secret, body)
                }
                None => {
                    let record = offline_record(name, owner, scopes, admin, expires_at)?;
                    let store = open_store(&target)?;
                    let secret = pinhive_store::new_secret();
                    let hash = pinhive_store::hash_secret(&secret);
                    store.put_token(&hash, &record)?;
                    store.flush()?;
                    (secret, token_json(&pinhive_store::token_id(&hash), &record))
                }
            };
            eprintln!(
                "created token {} ({:?}) for owner {}, scopes {}",
                body["id"].as_str().unwrap_or("?"),
                body["name"].as_str().unwrap_or(""),
                body["owner"].as_str().unwrap_or(""),
                body["scopes"]
            );
            println!("{secret}");
        }
        TokenCommand::List { owner, target } => {
            let body = match &target.token {
                Some(token) => {
                    let mut tokens = Vec::new();
                    let mut after: Option<String> = None;
                    loop {
                        let mut path = format!("/admin/tokens?owner={}&limit=1000", encode(&owner));
                        if let Some(after) = &after {
                            path.push_str(&format!("&after={}", encode(after)));
                        }
                        let page = call(&target, token, reqwest::Method::GET, &path, None)?;
                        tokens.extend(page["tokens"].as_array().cloned().unwrap_or_default());
                        match page["next"].as_str() {
                            Some(next) => after = Some(next.to_string()),
                            None => break,
                        }
                    }
                    json!({"owner": owner, "tokens": tokens})
                }
                None => {
                    let store = open_store(&target)?;
                    let mut tokens = Vec::new();
                    let mut after: Option<String> = None;
                    loop {
                        let page = store.list_tokens(&owner, after.as_deref(), 1000)?;
                        let full = page.len() == 1000;
                        after = page.last().map(|(id, _)| id.clone());
                        tokens.extend(page.iter().map(|(id, t)| token_json(id, t)));
                        if !full {
                            break;
                        }
                    }
                    json!({"owner": owner, "tokens": tokens})
                }
            };
            if target.json {
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else {
                print_tokens(body["tokens"].as_array().map(Vec::as_slice).unwrap_or(&[]));
            }
        }
        TokenCommand::Show { id, target } => {
            let body = match &target.token {
                Some(token) => call(
                    &target,
                    token,
                    reqwest::Method::GET,
                    &format!("/admin/tokens/{}", encode(&id)),
                    None,
                )?,
                None => {
                    let store = open_store(&target)?;
                    let (_, record) = store
                        .token_by_id(&id)?
                        .with_context(|| format!("no token with id {id}"))?;
                    token_json(&id, &record)
                }
            };
            print(&target, &body)?;
        }
        TokenCommand::Revoke { id, target } => {
            let body = match &target.token {
                Some(token) => call(
                    &target,
                    token,
                    reqwest::Method::DELETE,
                    &format!("/admin/tokens/{}", encode(&id)),
                    None,
                )?,
                None => {
                    let store = open_store(&target)?;
                    let (hash, mut record) = store
                        .token_by_id(&id)?
                        .with_context(|| format!("no token with id {id}"))?;
                    if record.revoked_ns.is_none() {
                        record.revoked_ns = Some(pinhive_events::now_ns());
                        store.put_token(&hash, &record)?;
                        store.flush()?;
                    }
                    token_json(&id, &record)
                }
            };
            if target.json {
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else {
                println!(
                    "token {} ({:?}, owner {}): revoked",
                    id,
                    body["name"].as_str().unwrap_or(""),
                    body["owner"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(())
}
