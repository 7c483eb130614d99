//! `pinhive token create`: writes a hashed token into the store and prints the secret once.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use pinhive_store::{EmbeddedStore, Store, StoreError, TokenRecord};

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token; prints the secret on stdout (it is stored only as a hash).
    Create {
        /// Owner name; pins created with the token belong to it.
        #[arg(long)]
        name: String,
        /// Allow the admin API (nodes, tokens, dead letters, history of any pin).
        #[arg(long)]
        admin: bool,
        #[arg(long, env = "PINHIVE_DATA_DIR", default_value = "pinhive-data")]
        data_dir: PathBuf,
        /// The store: `embedded` (under the data dir) or `scylla://host:9042/keyspace`.
        #[arg(long, env = "PINHIVE_STORE", default_value = "embedded")]
        store: String,
    },
}

/// The store a token is written to: the embedded one (refused while a service holds it) or a
/// ScyllaDB keyspace, which running services share.
fn open_store(data_dir: &std::path::Path, store: &str) -> anyhow::Result<Box<dyn Store>> {
    if store != "embedded" {
        let scylla = pinhive_store_scylla::ScyllaStore::open(store).with_context(|| {
            format!("opening the store at {store} (migrated? `pinhive migrate`)")
        })?;
        return Ok(Box::new(scylla));
    }
    pinhive_server::config::prepare_data_dir(data_dir)?;
    match EmbeddedStore::open(&data_dir.join("store")) {
        Err(StoreError::Locked { path }) => anyhow::bail!(
            "{path} is in use by a running pinhive; create the token through the \
             running service instead: POST /admin/tokens with an admin token"
        ),
        other => Ok(Box::new(other.context("opening the store")?)),
    }
}

pub fn run(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            name,
            admin,
            data_dir,
            store,
        } => {
            if !pinhive_store::valid_owner(&name) {
                anyhow::bail!(
                    "--name must be 1..128 bytes, not start with '#', without control characters"
                );
            }
            let store = open_store(&data_dir, &store)?;
            let secret = pinhive_store::new_secret();
            store.put_token(
                &pinhive_store::hash_secret(&secret),
                &TokenRecord {
                    owner: name.clone(),
                    created_ns: pinhive_events::now_ns(),
                    admin,
                },
            )?;
            store.flush()?;
            eprintln!(
                "created token for {name}{}",
                if admin { " (admin)" } else { "" }
            );
            println!("{secret}");
            Ok(())
        }
    }
}
