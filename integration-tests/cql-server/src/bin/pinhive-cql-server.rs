//! `pinhive-cql-server [--listen HOST:PORT]`: the CQL test server as a process, for pointing a
//! real `pinhive serve --store scylla://HOST:PORT/KEYSPACE` (or `pinhive bench --store …`) at
//! it. Prints its address and runs until killed. A test double: its speed is not ScyllaDB's.
//!
//! The server binds a free port of 127.0.0.1; `--listen` (default 127.0.0.1:9042) is a plain
//! TCP relay to it, so the library keeps one way of starting.

use std::net::SocketAddr;

use anyhow::Context;
use pinhive_cql_server::CqlServer;
use tokio::net::{TcpListener, TcpStream};

fn listen_address() -> anyhow::Result<SocketAddr> {
    let mut args = std::env::args().skip(1);
    let mut listen = "127.0.0.1:9042".to_string();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().context("--listen needs HOST:PORT")?,
            other => match other.strip_prefix("--listen=") {
                Some(value) => listen = value.to_string(),
                None => anyhow::bail!("usage: pinhive-cql-server [--listen HOST:PORT]"),
            },
        }
    }
    listen.parse().with_context(|| format!("--listen {listen}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let listen = listen_address()?;
    let server = CqlServer::start()
        .await
        .context("starting the CQL test server")?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let backend = server.addr();
    println!(
        "pinhive-cql-server listening on {} (a test double: its speed is not ScyllaDB's)",
        listener.local_addr()?
    );
    loop {
        let (mut client, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            let Ok(mut upstream) = TcpStream::connect(backend).await else {
                return;
            };
            let _ = upstream.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        });
    }
}
