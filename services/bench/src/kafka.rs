//! `pinhive bench --kafka HOST:PORT`: on one broker, in one run — raw rdkafka produce and
//! consume rates (the baseline), then pinhive's end-to-end pin rate in Kafka mode (requests
//! appended to the events topic, shards in a consumer group, simulated IPFS fleet), as ratios.
//! With `--store scylla://…` pinhive runs twice in the same process and run, on the embedded
//! store and on that store, and the second is reported beside the first (`POST /pins` and pins
//! end to end). Pointed at the CQL test server (`pinhive-cql-server`), that second figure says
//! nothing about ScyllaDB's speed: the test server is an in-memory double behind one lock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::stream::{self, StreamExt};
use pinhive_log::Record;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use pinhive_server::config::Config;
use pinhive_server::simulated::{simulated_drivers, simulated_factory, simulated_node_specs};
use pinhive_store::Store;

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

/// pinhive's figures in Kafka mode on one store.
struct PinhiveRates {
    /// `POST /pins` answered 202 per second (durable append + apply).
    post: f64,
    /// Pins appended to the log → pinned, per second.
    pins: f64,
    /// Events applied per second during the log phase.
    events: f64,
}

fn owner_pinned(store: &Arc<dyn Store>) -> anyhow::Result<u64> {
    Ok(pinhive_store::total_count(
        store.as_ref(),
        "bench",
        pinhive_domain::PinStatus::Pinned,
        PARTITIONS as u32,
    )?)
}

async fn pinhive_rates(config: Config, tag: &str, pins: usize) -> anyhow::Result<PinhiveRates> {
    let service =
        pinhive_server::serve::start(&config, simulated_factory(), simulated_drivers()).await?;
    let server = service.server.handle();
    actix_rt::spawn(service.server);
    while service.orchestrator.owned_partitions().len() < PARTITIONS as usize
        || service.registry.reachable_count() < 16
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let store = service.store.clone();
    let before = tokio::task::spawn_blocking(move || owner_pinned(&store)).await??;
    // HTTP load from its own thread, so it does not share the shards' runtime.
    let secret = crate::put_token(service.store.as_ref(), "bench", false)?;
    let url = format!("http://{}", service.addr);
    let http_tag = format!("{tag}-http");
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let result = (|| -> anyhow::Result<Duration> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(crate::pipeline::post_pins(
                &url,
                &secret,
                &http_tag,
                pins,
                64,
                || {},
            ))
        })();
        let _ = done_tx.send(result);
    });
    let post_elapsed = done_rx.await.context("load thread")??;
    crate::pipeline::wait_pinned(
        &service.store,
        PARTITIONS as u32,
        before + pins as u64,
        "HTTP pins → pinned",
    )
    .await?;
    let applied_before: u64 = service
        .orchestrator
        .snapshots()
        .await
        .iter()
        .map(|s| s.events_applied)
        .sum();
    let records: Vec<Record> = (0..pins)
        .map(|i| crate::pipeline::pin_request_record(tag, i))
        .collect();
    let started = Instant::now();
    for chunk in records.chunks(1000) {
        service.log.append(chunk.to_vec()).await?;
    }
    crate::pipeline::wait_pinned(
        &service.store,
        PARTITIONS as u32,
        before + 2 * pins as u64,
        "Kafka pins → pinned",
    )
    .await?;
    let elapsed = started.elapsed();
    let applied_after: u64 = service
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
    let seconds = |d: Duration| d.as_secs_f64().max(1e-9);
    Ok(PinhiveRates {
        post: pins as f64 / seconds(post_elapsed),
        pins: pins as f64 / seconds(elapsed),
        events: (applied_after - applied_before) as f64 / seconds(elapsed),
    })
}

pub fn run(brokers: &str, pins: usize, store: Option<&str>) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let tag = format!("{:08x}", rand::random::<u32>());
    let config_for = |name: &str, store: &str| -> anyhow::Result<Config> {
        Ok(Config {
            log: format!("kafka://{brokers}"),
            kafka_topic: format!("bench-events-{tag}-{name}"),
            kafka_group: format!("bench-{tag}-{name}"),
            data_dir: dir.path().join(name),
            listen: "127.0.0.1:0".parse()?,
            partitions: PARTITIONS as u32,
            ipfs_nodes: simulated_node_specs(16),
            store: store.to_string(),
            migrate: store != "embedded",
            store_replication: "simple:1".into(),
            ..Config::default()
        })
    };
    let embedded = config_for("embedded", "embedded")?;
    let other = store
        .map(|uri| config_for("store", uri).map(|config| (uri.to_string(), config)))
        .transpose()?;
    println!("pinhive bench --kafka {brokers}: {pins} records/pins, {PARTITIONS} partitions, 16 simulated nodes");
    if let Some((uri, _)) = &other {
        println!("then the same on the store {uri}");
    }
    let system = actix_rt::System::new();
    system.block_on(async move {
        let (produce, consume) = raw_rates(brokers, &format!("bench-raw-{tag}"), pins)
            .await
            .context("raw rdkafka baseline")?;
        let raw = 1.0 / (1.0 / produce + 1.0 / consume);
        let base = pinhive_rates(embedded, &format!("{tag}-embedded"), pins).await?;
        let compared = match other {
            Some((uri, config)) => Some((
                uri,
                pinhive_rates(config, &format!("{tag}-store"), pins)
                    .await
                    .context("pinhive on the other store")?,
            )),
            None => None,
        };
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
        row("pinhive Kafka mode: POST /pins (202 durable)", base.post);
        row(
            "pinhive Kafka mode: pins requested → pinned (simulated IPFS)",
            base.pins,
        );
        row(
            "pinhive Kafka mode: events applied (request, allocation, outcome)",
            base.events,
        );
        println!("ratios are against the raw produce→consume rate measured above");
        if let Some((uri, other)) = compared {
            println!();
            println!("store {uri} beside the embedded store, same run:");
            println!(
                "{:<62} {:>12} {:>9}",
                "measure", "per second", "vs embedded"
            );
            let versus = |name: &str, value: f64, embedded: f64| {
                println!("{name:<62} {value:>12.0} {:>8.3}x", value / embedded)
            };
            versus("POST /pins (202 durable)", other.post, base.post);
            versus("pins requested → pinned", other.pins, base.pins);
            versus("events applied", other.events, base.events);
            println!("a CQL test server (pinhive-cql-server) is an in-memory test double: its speed is not ScyllaDB's");
        }
        anyhow::Ok(())
    })
}
