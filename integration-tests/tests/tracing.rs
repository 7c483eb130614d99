//! One trace per pin, exported over OTLP/gRPC to a real OTLP receiver started in the test (the
//! opentelemetry-proto TraceService served with tonic): HTTP handler → log append → shard apply
//! → allocator → node driver → Kubo RPC → outcome event → status change, all one trace.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use pinhive_integration_tests::{create_token, eventually, free_port, Client, IpfsDaemon, Pinhive};
use serde_json::json;

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pin_is_one_trace_from_http_to_ipfs_and_back() {
    let receiver = Receiver::default();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_shutdown(addr, async {
                let _ = stopped.await;
            }),
    );

    let ipfs = IpfsDaemon::start().await.expect("js-ipfs daemon");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "alice", false).unwrap();
    let node = format!("ipfs-a={}", ipfs.api_url);
    let endpoint = format!("http://{addr}");
    let pinhive = Pinhive::start_with_env(
        &data,
        &[
            "--ipfs-node",
            &node,
            "--otlp-endpoint",
            &endpoint,
            "--trace-sample-ratio",
            "1.0",
            "--log-format",
            "json",
        ],
        &[
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("PINHIVE_LOG", "info,pinhive_api=debug"),
        ],
    )
    .await
    .unwrap();
    let client = Client::new(&pinhive.url, &token);
    let cid = ipfs.add(b"traced content", 1).await.unwrap();
    let (status, body) = client.pin(json!({"cid": cid})).await;
    assert_eq!(status, 202, "{body}");
    client
        .wait_status(
            body["requestid"].as_str().unwrap(),
            "pinned",
            Duration::from_secs(60),
        )
        .await;

    let expected = [
        "POST /pins",
        "log.append",
        "apply pin_requested",
        "allocator.plan",
        "store.write",
        "apply replicas_allocated",
        "ipfs pin",
        "kubo pin/add",
        "apply replica_pinned",
    ];
    let trace = eventually(
        Duration::from_secs(30),
        "the pin's spans to arrive",
        || async {
            let spans = receiver.spans.lock().unwrap().clone();
            let root = spans.iter().find(|s| s.name == "POST /pins")?;
            let trace: Vec<Span> = spans
                .iter()
                .filter(|s| s.trace_id == root.trace_id)
                .cloned()
                .collect();
            let names: BTreeSet<&str> = trace.iter().map(|s| s.name.as_str()).collect();
            expected.iter().all(|n| names.contains(n)).then_some(trace)
        },
    )
    .await;

    // One tree: a single root, every other span's parent is in the trace.
    let ids: BTreeSet<String> = trace.iter().map(|s| hex(&s.span_id)).collect();
    let roots: Vec<&str> = trace
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(roots, vec!["POST /pins"], "single root");
    for span in &trace {
        if !span.parent_span_id.is_empty() {
            assert!(
                ids.contains(&hex(&span.parent_span_id)),
                "{} has a parent outside the trace",
                span.name
            );
        }
    }
    // The chain of causes: request → apply → decision → driver → RPC → outcome applied.
    let by_id: BTreeMap<String, &Span> = trace.iter().map(|s| (hex(&s.span_id), s)).collect();
    let ancestors = |name: &str| -> Vec<String> {
        let mut chain = Vec::new();
        let mut current = trace.iter().find(|s| s.name == name).unwrap();
        while let Some(parent) = by_id.get(&hex(&current.parent_span_id)) {
            chain.push(parent.name.clone());
            current = parent;
        }
        chain
    };
    let chain = ancestors("apply replica_pinned");
    for link in [
        "kubo pin/add",
        "ipfs pin",
        "allocator.plan",
        "apply replicas_allocated",
        "apply pin_requested",
        "POST /pins",
    ] {
        if link == "kubo pin/add" {
            continue; // the outcome is published after the RPC returned: a sibling, not a child
        }
        assert!(
            chain.iter().any(|n| n == link),
            "{link} not an ancestor of the outcome: {chain:?}"
        );
    }
    assert!(ancestors("kubo pin/add").iter().any(|n| n == "ipfs pin"));
    // The status change is recorded on the span that applied the outcome.
    let outcome = trace
        .iter()
        .find(|s| s.name == "apply replica_pinned")
        .unwrap();
    let status = outcome
        .attributes
        .iter()
        .find(|kv| kv.key == "pin.status")
        .and_then(|kv| kv.value.as_ref())
        .map(|v| format!("{v:?}"))
        .unwrap_or_default();
    assert!(status.contains("pinned"), "{status}");

    // Health checks are traces of their own.
    let spans = receiver.spans.lock().unwrap().clone();
    let health = spans
        .iter()
        .find(|s| s.name == "ipfs.health_check")
        .expect("health check spans exported");
    assert_ne!(health.trace_id, trace[0].trace_id);

    // JSON logs carry the trace id, so logs and traces join.
    let trace_id = hex(&trace[0].trace_id);
    let logs = std::fs::read_to_string(&pinhive.log_path).unwrap();
    let joined = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|line| {
            line["fields"]["message"] == "pin request accepted"
                && line["span"]["trace_id"].as_str() == Some(trace_id.as_str())
        });
    assert!(joined, "no JSON log line with trace_id {trace_id}");

    drop(pinhive);
    let _ = stop.send(());
    let _ = server.await;
}
