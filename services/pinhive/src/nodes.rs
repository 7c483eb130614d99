//! `pinhive nodes`: the IPFS nodes of a running service, through its admin API
//! (`/admin/nodes`): list, show, add, drain, undrain, remove.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

#[derive(Args, Debug)]
pub struct Connection {
    /// The pinhive service.
    #[arg(long, env = "PINHIVE_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An admin token.
    #[arg(long, env = "PINHIVE_TOKEN", hide_env_values = true)]
    token: String,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
pub enum NodesCommand {
    /// Every node: state, replicas, free space, queue, error rate, last heartbeat.
    List(Connection),
    /// One node in full.
    Show {
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Register a node (every instance starts using it).
    Add {
        id: String,
        /// Its Kubo RPC API, e.g. http://10.0.0.5:5001.
        rpc_url: String,
        #[arg(long, default_value = "")]
        region: String,
        #[arg(long, default_value_t = 1)]
        weight: u32,
        #[command(flatten)]
        connection: Connection,
    },
    /// Move every replica off the node, at the re-replication rate; `list` shows `drained`
    /// once it holds none.
    Drain {
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Take a draining node back into placement.
    Undrain {
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Remove a node (refused while it holds replicas, unless --force).
    Remove {
        id: String,
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        connection: Connection,
    },
}

pub fn run(command: NodesCommand) -> anyhow::Result<()> {
    match command {
        NodesCommand::List(connection) => {
            let body = call(&connection, reqwest::Method::GET, "/admin/nodes", None)?;
            if connection.json {
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else {
                print_table(body["nodes"].as_array().map(Vec::as_slice).unwrap_or(&[]));
            }
        }
        NodesCommand::Show { id, connection } => {
            let body = call(&connection, reqwest::Method::GET, &node_path(&id, ""), None)?;
            println!("{}", serde_json::to_string_pretty(&body)?);
        }
        NodesCommand::Add {
            id,
            rpc_url,
            region,
            weight,
            connection,
        } => {
            let node = json!({"id": id, "rpc_url": rpc_url, "region": region, "weight": weight});
            let body = call(
                &connection,
                reqwest::Method::POST,
                "/admin/nodes",
                Some(node),
            )?;
            report(&connection, &body, "registered")?;
        }
        NodesCommand::Drain { id, connection } => {
            let body = call(
                &connection,
                reqwest::Method::POST,
                &node_path(&id, "/drain"),
                None,
            )?;
            report(&connection, &body, "draining")?;
        }
        NodesCommand::Undrain { id, connection } => {
            let path = node_path(&id, "/undrain");
            let body = call(&connection, reqwest::Method::POST, &path, None)?;
            report(&connection, &body, "back in placement")?;
        }
        NodesCommand::Remove {
            id,
            force,
            connection,
        } => {
            let path = format!(
                "{}{}",
                node_path(&id, ""),
                if force { "?force=true" } else { "" }
            );
            call(&connection, reqwest::Method::DELETE, &path, None)?;
            if !connection.json {
                println!("node {id}: removed");
            }
        }
    }
    Ok(())
}

fn node_path(id: &str, tail: &str) -> String {
    let id: String =
        percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).collect();
    format!("/admin/nodes/{id}{tail}")
}

fn report(connection: &Connection, body: &Value, what: &str) -> anyhow::Result<()> {
    if connection.json {
        println!("{}", serde_json::to_string_pretty(body)?);
    } else {
        println!(
            "node {}: {what} (state {}, {} replicas)",
            body["id"].as_str().unwrap_or("?"),
            body["state"].as_str().unwrap_or("?"),
            body["replicas"]
        );
    }
    Ok(())
}

/// One admin API call; a `Failure` body becomes the error's message.
fn call(
    connection: &Connection,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    request(
        &client,
        &connection.url,
        &connection.token,
        method,
        path,
        body,
    )
}

/// One API call with `client`; a `Failure` body becomes the error's message.
pub(crate) fn request(
    client: &reqwest::blocking::Client,
    base_url: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let url = format!("{}{path}", base_url.trim_end_matches('/'));
    let mut request = client.request(method, &url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .with_context(|| format!("calling {url} (is pinhive running there? --url)"))?;
    let status = response.status();
    let text = response.text().unwrap_or_default();
    let value: Value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    if !status.is_success() {
        let details = value["error"]["details"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| value.to_string());
        bail!("{status}: {details}");
    }
    Ok(value)
}

fn print_table(nodes: &[Value]) {
    println!(
        "{:<16} {:<9} {:<8} {:>9} {:>12} {:>6} {:>6}  {:<30}  REASON",
        "ID", "STATE", "REGION", "REPLICAS", "FREE", "QUEUE", "ERR%", "LAST HEARTBEAT"
    );
    for node in nodes {
        let free = node["free_bytes"]
            .as_u64()
            .map(|b| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64))
            .unwrap_or_else(|| "-".into());
        let error_rate = node["error_rate"]
            .as_f64()
            .map(|r| format!("{:.0}", r * 100.0))
            .unwrap_or_else(|| "-".into());
        let state = match (node["state"].as_str(), node["drained"].as_bool()) {
            (Some("draining"), Some(true)) => "drained",
            (Some(state), _) => state,
            _ => "?",
        };
        println!(
            "{:<16} {:<9} {:<8} {:>9} {:>12} {:>6} {:>6}  {:<30}  {}",
            node["id"].as_str().unwrap_or("?"),
            state,
            node["region"].as_str().unwrap_or(""),
            node["replicas"],
            free,
            node["queue"].as_u64().map_or("-".into(), |q| q.to_string()),
            error_rate,
            node["last_heartbeat"].as_str().unwrap_or("never"),
            node["state_reason"].as_str().unwrap_or(""),
        );
    }
}
