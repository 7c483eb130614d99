//! `pinhive topics describe`: partitions of the events topic, their watermarks and the
//! consumer group's lag per partition.

use anyhow::Context;
use clap::Subcommand;

use pinhive_server::config::{Config, ServeArgs};

#[derive(Subcommand, Debug)]
pub enum TopicsCommand {
    /// Partitions, watermarks, committed offsets and lag of the events topic.
    Describe(ServeArgs),
}

pub fn run(command: TopicsCommand) -> anyhow::Result<()> {
    match command {
        TopicsCommand::Describe(args) => {
            let config = Config::load(&args)?;
            let brokers = pinhive_log::kafka::parse_kafka_url(&config.log)
                .context("topics describe needs --log kafka://HOST:PORT")?;
            let partitions = pinhive_log::kafka_group::describe(
                &brokers,
                &config.kafka_topic,
                &config.kafka_group,
            )
            .with_context(|| format!("describing {} on {brokers}", config.kafka_topic))?;
            println!(
                "topic {} (group {}): {} partitions",
                config.kafka_topic,
                config.kafka_group,
                partitions.len()
            );
            println!(
                "{:>9} {:>12} {:>12} {:>12} {:>10}",
                "partition", "low", "high", "committed", "lag"
            );
            let mut total = 0;
            for p in &partitions {
                let committed = p
                    .committed
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:>9} {:>12} {:>12} {:>12} {:>10}",
                    p.partition,
                    p.low,
                    p.high,
                    committed,
                    p.lag()
                );
                total += p.lag();
            }
            println!("total lag: {total}");
            Ok(())
        }
    }
}
