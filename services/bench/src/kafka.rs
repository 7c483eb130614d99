//! `pinhive bench --kafka HOST:PORT`: on one broker, in one run — raw rdkafka produce and
//! consume rates (the baseline), then pinhive's end-to-end pin rate in Kafka mode (requests
//! appended to the events topic, shards in a consumer group, simulated IPFS fleet), as ratios.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::stream::{self, StreamExt};
use pinhive_log::Record;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use pinhive_server::config::Config;
use pinhive_server::simulated::{simulated_drivers, simulated_factory, simulated_node_specs};

const PARTITIONS: i32 = 8;

async fn raw_rates(brokers: &str, topic: &str, records: usize) -> anyhow::Result<(f64, f64)> {
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()?;
    let new_topic = rdkafka::admin::NewTopic::new(
        topic,
        PARTITIONS,
        rdkafka::admin::TopicReplication::Fixed(1),
    );
    admin
        .create_topics([&new_topic], &rdkafka::admin::AdminOptions::new())
        .await?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("partitioner", "murmur2_random")
        .create()?;
    let value = vec![7u8; 200];
    let started = Instant::now();
    stream::iter(0..records)
        .map(|i| {
            let (producer, value) = (&producer, &value);
            async move {
                let key = crate::pipeline::bench_cid("raw", i);
                producer
                    .send(
                        FutureRecord::to(topic).key(&key).payload(value),
                        Duration::from_secs(30),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| e)
            }
        })
        .buffer_unordered(1024)
        .for_each(|r| {
            if let Err(error) = r {
                eprintln!("produce failed: {error}");
            }
            async {}
        })
        .await;
    let produce = records as f64 / started.elapsed().as_secs_f64();
    let (brokers, topic) = (brokers.to_string(), topic.to_string());
    let consume = tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "pinhive-bench-raw")
            .set("enable.auto.commit", "false")
            .create()?;
        let mut assignment = TopicPartitionList::new();
        for partition in 0..PARTITIONS {
            assignment.add_partition_offset(&topic, partition, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
        let started = Instant::now();
        let mut seen = 0;
        while seen < records {
            match consumer.poll(Duration::from_secs(10)) {
                Some(Ok(_)) => seen += 1,
                Some(Err(error)) => anyhow::bail!("consume failed: {error}"),
                None => anyhow::bail!("consume stalled at {seen} of {records}"),
            }
        }
        Ok(records as f64 / started.elapsed().as_secs_f64())
    })
    .await??;
    Ok((produce, consume))
}

pub fn run(brokers: &str, pins: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let tag = format!("{:08x}", rand::random::<u32>());
    let config = Config {
        log: format!("kafka://{brokers}"),
        kafka_topic: format!("bench-events-{tag}"),
        kafka_group: format!("bench-{tag}"),
        data_dir: dir.path().join("service"),
        listen: "127.0.0.1:0".parse()?,
        partitions: PARTITIONS as u32,
        ipfs_nodes: simulated_node_specs(16),
        ..Config::default()
    };
    println!("pinhive bench --kafka {brokers}: {pins} records/pins, {PARTITIONS} partitions, 16 simulated nodes");
    let system = actix_rt::System::new();
    system.block_on(async move {
        let (produce, consume) = raw_rates(brokers, &format!("bench-raw-{tag}"), pins)
            .await
            .context("raw rdkafka baseline")?;
        let raw = 1.0 / (1.0 / produce + 1.0 / consume);
        let service =
            pinhive_server::serve::start(&config, simulated_factory(), simulated_drivers()).await?;
        let server = service.server.handle();
        actix_rt::spawn(service.server);
        while service.orchestrator.owned_partitions().len() < PARTITIONS as usize
            || service.registry.reachable_count() < 16
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let records: Vec<Record> = (0..pins)
            .map(|i| crate::pipeline::pin_request_record(&tag, i))
            .collect();
        let started = Instant::now();
        for chunk in records.chunks(1000) {
            service.log.append(chunk.to_vec()).await?;
        }
        crate::pipeline::wait_pinned(
            &service.store,
            PARTITIONS as u32,
            pins as u64,
            "Kafka pins → pinned",
        )
        .await?;
        let elapsed = started.elapsed();
        let events: u64 = service
            .orchestrator
            .snapshots()
            .await
            .iter()
            .map(|s| s.events_applied)
            .sum();
        server.stop(true).await;
        service.orchestrator.shutdown(Duration::from_secs(10)).await;
        if let Some(group) = service.group {
            tokio::task::spawn_blocking(move || drop(group)).await.ok();
        }
        let pin_rate = pins as f64 / elapsed.as_secs_f64();
        let event_rate = events as f64 / elapsed.as_secs_f64();
        println!();
        println!("{:<62} {:>12} {:>9}", "measure", "per second", "ratio");
        let row =
            |name: &str, value: f64| println!("{name:<62} {value:>12.0} {:>8.3}x", value / raw);
        row(
            "baseline: raw rdkafka produce (acks=all, idempotent)",
            produce,
        );
        row("baseline: raw rdkafka consume", consume);
        row("baseline: raw produce→consume (records through both)", raw);
        row(
            "pinhive Kafka mode: pins requested → pinned (simulated IPFS)",
            pin_rate,
        );
        row(
            "pinhive Kafka mode: events applied (request, allocation, outcome)",
            event_rate,
        );
        println!("ratios are against the raw produce→consume rate measured above");
        anyhow::Ok(())
    })
}
