//! The pinhive binary: parses the CLI and dispatches. Thin by design: the wiring lives in
//! `pinhive-server`, the benchmarks in `pinhive-bench`, behaviour in the service crates.

mod access;
mod nodes;
mod pins;
mod state;
mod token;
mod topics;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: shard threads allocate what fjall's flush threads
/// free, and glibc's per-thread arenas kept such memory (VmRSS 2.5 GiB after loading 300K pins
/// in `pinhive bench scale`, 1.9 GiB with mimalloc, and 25% more events applied per second).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use pinhive_server::{config, serve};

#[derive(Parser, Debug)]
#[command(
    name = "pinhive",
    version,
    about = "Event-sourced pin orchestration for IPFS"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the service (the default when no subcommand is given).
    Serve(config::ServeArgs),
    /// Manage API access tokens.
    Token {
        #[command(subcommand)]
        command: token::TokenCommand,
    },
    /// Apply pending CQL migrations of the ScyllaDB store (`--store scylla://…`).
    Migrate(config::ServeArgs),
    /// Check that the data directory and every configured IPFS node are usable.
    Check(config::ServeArgs),
    /// Kafka topic administration.
    Topics {
        #[command(subcommand)]
        command: topics::TopicsCommand,
    },
    /// The IPFS nodes of a running service: list, drain, remove (admin API).
    Nodes {
        #[command(subcommand)]
        command: nodes::NodesCommand,
    },
    /// Pins of a running service, through its API: import, export, ls, status, rm, recover,
    /// expire.
    Pins {
        #[command(subcommand)]
        command: pins::PinsCommand,
    },
    /// Offline backup and restore of an embedded deployment (store and logs).
    State {
        #[command(subcommand)]
        command: state::StateCommand,
    },
    /// Feed access (read) events to the replica optimizer.
    Access {
        #[command(subcommand)]
        command: access::AccessCommand,
    },
    /// Measure throughput against baselines taken in the same run.
    Bench(pinhive_bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli
        .command
        .unwrap_or(Command::Serve(config::ServeArgs::default()))
    {
        Command::Serve(args) => serve::run(args),
        Command::Token { command } => token::run(command),
        Command::Check(args) => serve::check(args),
        Command::Migrate(args) => serve::migrate(args),
        Command::Bench(args) => pinhive_bench::run(args),
        Command::Topics { command } => topics::run(command),
        Command::Access { command } => return access::run(command),
        Command::Nodes { command } => nodes::run(command),
        Command::Pins { command } => return pins::run(command),
        Command::State { command } => state::run(command),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
