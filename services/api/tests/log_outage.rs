//! A log outage as the API sees it: appends fail the way a Kafka outage makes them fail
//! (`LogError::Unavailable`, what `KafkaLog` turns a timed-out delivery into). Writes answer
//! 503 + `Retry-After` with a `Failure` body, `/ready` says the log is unavailable, and both
//! recover once appends succeed again. (integration-tests/tests/kafka_outage.rs does the same
//! against a real broker.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{test, App};
use async_trait::async_trait;
use pinhive_api::{configure, AppState};
use pinhive_events::NodeDescriptor;
use pinhive_ipfs::NodeRegistry;
use pinhive_log::{
    AppendHealth, EmbeddedLog, EmbeddedLogConfig, Log, LogError, LogHealth, Position, Record,
    StoredRecord,
};
use pinhive_orchestrator::control::{ControlConfig, ControlPlane, DriverControl};
use pinhive_orchestrator::{Orchestrator, OrchestratorConfig};
use pinhive_store::{EmbeddedStore, Store, TokenRecord};
use serde_json::{json, Value};

/// An embedded log whose appends fail as during a Kafka outage while `down` is set.
struct OutageLog {
    log: EmbeddedLog,
    down: AtomicBool,
    health: AppendHealth,
}

#[async_trait]
impl Log for OutageLog {
    fn partition_count(&self) -> u32 {
        self.log.partition_count()
    }

    async fn append(&self, records: Vec<Record>) -> Result<Vec<Position>, LogError> {
        let result = if self.down.load(Ordering::SeqCst) {
            Err(LogError::Unavailable(
                "Message production error: MessageTimedOut (Local: Message timed out)".into(),
            ))
        } else {
            self.log.append(records).await
        };
        self.health.record(&result);
        result
    }

    async fn read(
        &self,
        partition: u32,
        from: u64,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, LogError> {
        self.log.read(partition, from, max_bytes).await
    }

    async fn wait_beyond(&self, partition: u32, offset: u64, timeout: Duration) {
        self.log.wait_beyond(partition, offset, timeout).await
    }

    fn start_offset(&self, partition: u32) -> u64 {
        self.log.start_offset(partition)
    }

    fn end_offset(&self, partition: u32) -> u64 {
        self.log.end_offset(partition)
    }

    fn health(&self) -> LogHealth {
        self.health.snapshot()
    }

    async fn release_before(
        &self,
        partition: u32,
        offset: u64,
        min_age: Duration,
    ) -> Result<u64, LogError> {
        self.log.release_before(partition, offset, min_age).await
    }
}

/// No IPFS node in this test: node drivers are never started.
struct NoDrivers;

impl DriverControl for NoDrivers {
    fn start(&self, _node: NodeDescriptor) -> Result<(), String> {
        Ok(())
    }
    fn stop(&self, _id: &str) {}
}

const TOKEN: &str = "alice-secret";

fn pin_request(i: u32) -> test::TestRequest {
    // A distinct CIDv1 (raw, sha2-256 shaped) per request.
    let digest = [i as u8 + 1; 32];
    let cid = cid::Cid::new_v1(
        0x55,
        cid::multihash::Multihash::<64>::wrap(0x12, &digest).unwrap(),
    );
    test::TestRequest::post()
        .uri("/pins")
        .insert_header(("Authorization", format!("Bearer {TOKEN}")))
        .set_json(json!({ "cid": cid.to_string() }))
}

#[actix_web::test]
async fn a_log_outage_answers_503_with_retry_after_and_ready_says_so_until_appends_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmbeddedLogConfig {
        partitions: 2,
        ..EmbeddedLogConfig::default()
    };
    let log = Arc::new(OutageLog {
        log: EmbeddedLog::open(&dir.path().join("log"), config).unwrap(),
        down: AtomicBool::new(false),
        health: AppendHealth::new("test log"),
    });
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("store")).unwrap());
    let owner = TokenRecord {
        owner: "alice".into(),
        created_ns: 1,
        name: "laptop".into(),
        scopes: pinhive_domain::tokens::Scopes::default_tenant(),
        expires_ns: None,
        revoked_ns: None,
    };
    store
        .put_token(&pinhive_store::hash_secret(TOKEN), &owner)
        .unwrap();
    let registry = NodeRegistry::default();
    let orchestrator = Orchestrator::start(
        log.clone(),
        store.clone(),
        registry.clone(),
        OrchestratorConfig::default(),
    )
    .unwrap();
    let control_log = EmbeddedLog::open(
        &dir.path().join("control"),
        EmbeddedLogConfig {
            partitions: 1,
            ..EmbeddedLogConfig::default()
        },
    )
    .unwrap();
    let control = ControlPlane::start(
        Arc::new(control_log),
        registry,
        Arc::new(NoDrivers),
        Vec::new(),
        Arc::new(|| false),
        ControlConfig::default(),
    )
    .await
    .unwrap();
    let state = actix_web::web::Data::new(AppState::new(
        log.clone(),
        store,
        orchestrator,
        control,
        pinhive_api::ApiConfig::default(),
    ));
    let app = test::init_service(App::new().configure(configure(state))).await;
    let ready_log = |body: &Value| body["log"].clone();

    let response = test::call_service(&app, pin_request(0).to_request()).await;
    assert_eq!(response.status(), 202);
    let ready: Value =
        test::call_and_read_body_json(&app, test::TestRequest::get().uri("/ready").to_request())
            .await;
    let healthy = ready_log(&ready);
    assert_eq!(
        (&healthy["ok"], &healthy["available"]),
        (&json!(true), &json!(true))
    );
    assert!(healthy["last_append_ok"].is_string(), "{healthy}");

    log.down.store(true, Ordering::SeqCst);
    for i in 1..=3 {
        let response = test::call_service(&app, pin_request(i).to_request()).await;
        assert_eq!(response.status(), 503);
        assert_eq!(
            response.headers().get("Retry-After").map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        let body: Value = test::read_body_json(response).await;
        assert_eq!(body["error"]["reason"], "SERVICE_UNAVAILABLE", "{body}");
        let details = body["error"]["details"].as_str().unwrap();
        assert!(details.contains("log is unavailable"), "{details}");
    }
    let response =
        test::call_service(&app, test::TestRequest::get().uri("/ready").to_request()).await;
    assert_eq!(response.status(), 503);
    let ready: Value = test::read_body_json(response).await;
    let outage = ready_log(&ready);
    assert_eq!(ready["ready"], false);
    assert_eq!(
        (
            &outage["ok"],
            &outage["available"],
            &outage["failed_appends"]
        ),
        (&json!(false), &json!(false), &json!(3))
    );
    assert!(outage["unavailable_since"].is_string(), "{outage}");
    assert!(
        outage["error"].as_str().unwrap().contains("timed out"),
        "{outage}"
    );
    assert!(outage["hint"].is_string(), "{outage}");

    log.down.store(false, Ordering::SeqCst);
    let response = test::call_service(&app, pin_request(4).to_request()).await;
    assert_eq!(response.status(), 202);
    let ready: Value =
        test::call_and_read_body_json(&app, test::TestRequest::get().uri("/ready").to_request())
            .await;
    let recovered = ready_log(&ready);
    assert_eq!(
        (
            &recovered["ok"],
            &recovered["available"],
            &recovered["error"]
        ),
        (&json!(true), &json!(true), &Value::Null)
    );
}
