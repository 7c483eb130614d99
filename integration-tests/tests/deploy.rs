//! The deployment files, checked without Docker or a cluster (neither runs on these
//! machines): `infra/compose/compose.yml` parsed and checked (pinned images, health checks,
//! profiles, volumes, ports, dependencies, pinhive's environment names against the real
//! binary's `serve --help`, what Prometheus scrapes); `infra/k8s/` validated against the
//! Kubernetes JSON schemas (`kubernetes-validate`, PyPI, installed by scripts/setup.sh) and its
//! objects checked against each other. promtool checks the Prometheus files in
//! tests/observability.rs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use pinhive_integration_tests::{binary, workspace_root};
use serde_yaml_ng::Value;

const PROFILES: [&str; 2] = ["single", "cluster"];

fn infra() -> PathBuf {
    workspace_root().join("infra")
}

fn yaml(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut value: Value =
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    value.apply_merge().expect("merge keys");
    value
}

/// Every document of a multi-document YAML file.
fn documents(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("a YAML document"))
        .collect()
}

/// The compose file's services, by name (merge keys applied).
fn services() -> BTreeMap<String, Value> {
    let compose = yaml(&infra().join("compose/compose.yml"));
    compose["services"]
        .as_mapping()
        .expect("services")
        .iter()
        .map(|(name, service)| (name.as_str().unwrap().to_string(), service.clone()))
        .collect()
}

fn profiles_of(service: &Value) -> BTreeSet<String> {
    service["profiles"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str().map(str::to_string))
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// The workspace version (the pinhive image's tag; this package takes it from the workspace).
fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// Environment variable names `pinhive serve` reads (from its `--help`).
fn serve_env_names() -> BTreeSet<String> {
    let output = Command::new(binary())
        .args(["serve", "--help"])
        .output()
        .expect("pinhive serve --help");
    let help = String::from_utf8_lossy(&output.stdout);
    let names: BTreeSet<String> = help
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next())
        .map(str::to_string)
        .collect();
    assert!(names.contains("PINHIVE_STORE"), "{help}");
    names
}

fn environment(service: &Value) -> BTreeMap<String, String> {
    service["environment"]
        .as_mapping()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => s.clone(),
                other => serde_yaml_ng::to_string(other).unwrap().trim().to_string(),
            };
            (k.as_str().unwrap().to_string(), value)
        })
        .collect()
}

#[test]
fn compose_images_are_pinned() {
    let version = version();
    for (name, service) in services() {
        let image = service["image"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no image"));
        let (_, tag) = image
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("{name}: {image} has no tag"));
        assert!(
            !tag.is_empty() && tag != "latest" && !tag.contains('/'),
            "{name}: {image} is not pinned"
        );
        if image.starts_with("pinhive:") {
            assert_eq!(
                tag, version,
                "{name}: the pinhive image is the workspace version"
            );
            assert_eq!(
                service["build"]["dockerfile"].as_str(),
                Some("infra/docker/Dockerfile"),
                "{name}"
            );
        }
    }
    assert!(infra().join("docker/Dockerfile").exists());
}

#[test]
fn compose_services_have_health_checks() {
    for (name, service) in services() {
        let test = strings(&service["healthcheck"]["test"]);
        assert!(
            test.len() >= 2 && test[0] != "NONE",
            "{name}: no health check ({test:?})"
        );
        assert_ne!(
            service["healthcheck"]["disable"].as_bool(),
            Some(true),
            "{name}"
        );
    }
}

#[test]
fn compose_profiles_are_single_and_cluster() {
    let services = services();
    let in_profile = |profile: &str| -> BTreeMap<String, Value> {
        services
            .iter()
            .filter(|(_, s)| profiles_of(s).contains(profile))
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect()
    };
    for (name, service) in &services {
        let profiles = profiles_of(service);
        assert!(!profiles.is_empty(), "{name}: in no profile");
        assert!(
            profiles.iter().all(|p| PROFILES.contains(&p.as_str())),
            "{name}: {profiles:?}"
        );
    }
    let image_count = |services: &BTreeMap<String, Value>, prefix: &str| {
        services
            .values()
            .filter(|s| s["image"].as_str().unwrap_or_default().starts_with(prefix))
            .count()
    };
    let single = in_profile("single");
    assert_eq!(image_count(&single, "pinhive:"), 1);
    assert_eq!(image_count(&single, "ipfs/kubo:"), 1);
    assert_eq!(image_count(&single, "scylladb/"), 0);
    assert_eq!(image_count(&single, "apache/kafka:"), 0);
    let cluster = in_profile("cluster");
    assert_eq!(image_count(&cluster, "pinhive:"), 3);
    assert_eq!(image_count(&cluster, "scylladb/scylla:"), 3);
    assert_eq!(image_count(&cluster, "ipfs/kubo:"), 3);
    assert_eq!(image_count(&cluster, "apache/kafka:"), 1);
    for profile in [&single, &cluster] {
        for observability in ["prom/prometheus:", "grafana/grafana:", "jaegertracing/"] {
            assert_eq!(image_count(profile, observability), 1, "{observability}");
        }
    }
    // The cluster's instances: one consumer group, one shared store, the same three nodes in
    // two regions (eu × 2, us × 1), every node a Kubo service of the profile.
    let pinhives: Vec<BTreeMap<String, String>> = cluster
        .values()
        .filter(|s| {
            s["image"]
                .as_str()
                .unwrap_or_default()
                .starts_with("pinhive:")
        })
        .map(environment)
        .collect();
    for env in &pinhives {
        assert_eq!(
            env["PINHIVE_KAFKA_GROUP"],
            pinhives[0]["PINHIVE_KAFKA_GROUP"]
        );
        assert_eq!(env["PINHIVE_STORE"], pinhives[0]["PINHIVE_STORE"]);
        assert!(env["PINHIVE_LOG_URL"].starts_with("kafka://kafka:"));
        assert!(env["PINHIVE_STORE"].starts_with("scylla://"));
        let regions: Vec<&str> = env["PINHIVE_IPFS_NODES"]
            .split(',')
            .map(|node| node.rsplit_once('#').map(|(_, r)| r).unwrap_or(""))
            .collect();
        assert_eq!(regions, ["eu", "eu", "us"], "{env:?}");
        for node in env["PINHIVE_IPFS_NODES"].split(',') {
            let host = node.split("//").nth(1).unwrap().split(':').next().unwrap();
            assert!(
                cluster.contains_key(host),
                "{host} is not a cluster service"
            );
        }
    }
    let migrating = pinhives
        .iter()
        .filter(|env| env.get("PINHIVE_MIGRATE").map(String::as_str) == Some("true"))
        .count();
    assert_eq!(migrating, 1, "exactly one instance applies the migrations");
}

#[test]
fn compose_volumes_ports_and_dependencies_are_consistent() {
    let compose = yaml(&infra().join("compose/compose.yml"));
    let services = services();
    let declared: BTreeSet<String> = compose["volumes"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    let mut used = BTreeSet::new();
    for (name, service) in &services {
        for volume in strings(&service["volumes"]) {
            let source = volume.split(':').next().unwrap();
            if source.starts_with('.') || source.starts_with('/') {
                let path = infra().join("compose").join(source);
                assert!(path.exists(), "{name}: mounts {} (missing)", path.display());
            } else {
                assert!(
                    declared.contains(source),
                    "{name}: volume {source} not declared"
                );
                used.insert(source.to_string());
            }
        }
        for dependency in service["depends_on"]
            .as_mapping()
            .into_iter()
            .flat_map(|m| m.keys())
            .filter_map(Value::as_str)
        {
            let target = services
                .get(dependency)
                .unwrap_or_else(|| panic!("{name} depends on a missing {dependency}"));
            assert!(
                profiles_of(service).is_subset(&profiles_of(target)),
                "{name} depends on {dependency}, which is not in all of its profiles"
            );
        }
    }
    assert_eq!(used, declared, "declared volumes no service uses");
    for profile in PROFILES {
        let mut host_ports = BTreeSet::new();
        for (name, service) in services
            .iter()
            .filter(|(_, s)| profiles_of(s).contains(profile))
        {
            for port in strings(&service["ports"]) {
                let parts: Vec<&str> = port.split(':').collect();
                assert_eq!(parts.len(), 3, "{name}: {port} names no host address");
                assert_eq!(parts[0], "127.0.0.1", "{name}: {port} is not on loopback");
                assert!(
                    host_ports.insert(parts[1].to_string()),
                    "{name}: host port {} twice in {profile}",
                    parts[1]
                );
            }
        }
    }
}

#[test]
fn compose_and_k8s_set_only_environment_pinhive_reads() {
    let known = serve_env_names();
    let mut named = Vec::new();
    for (name, service) in services() {
        if service["image"]
            .as_str()
            .unwrap_or_default()
            .starts_with("pinhive:")
        {
            named.extend(environment(&service).into_keys().map(|k| (name.clone(), k)));
        }
    }
    let configmap = yaml(&infra().join("k8s/configmap.yaml"));
    named.extend(
        configmap["data"]
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| ("configmap".to_string(), k.as_str().unwrap().to_string())),
    );
    let deployment = yaml(&infra().join("k8s/deployment.yaml"));
    for env in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        named.push((
            "deployment".into(),
            env["name"].as_str().unwrap().to_string(),
        ));
    }
    assert!(named.len() > 10);
    for (source, name) in named {
        // OTEL_* is the OpenTelemetry SDK's own (docs/observability.md).
        assert!(
            known.contains(&name) || name.starts_with("OTEL_EXPORTER_OTLP_"),
            "{source}: {name} is not a setting of `pinhive serve`"
        );
    }
}

#[test]
fn compose_prometheus_scrapes_the_instances_of_its_profile() {
    let services = services();
    for (prometheus, profile) in [("prometheus", "single"), ("prometheus-cluster", "cluster")] {
        let command = strings(&services[prometheus]["command"]);
        let file = command
            .iter()
            .find_map(|arg| arg.strip_prefix("--config.file=/etc/prometheus/"))
            .unwrap();
        let config = yaml(&infra().join("prometheus").join(file));
        let targets: BTreeSet<String> =
            strings(&config["scrape_configs"][0]["static_configs"][0]["targets"])
                .into_iter()
                .collect();
        let expected: BTreeSet<String> = services
            .iter()
            .filter(|(_, s)| {
                profiles_of(s).contains(profile)
                    && s["image"]
                        .as_str()
                        .unwrap_or_default()
                        .starts_with("pinhive:")
            })
            .map(|(name, s)| {
                let listen = &environment(s)["PINHIVE_LISTEN"];
                format!("{name}:{}", listen.rsplit(':').next().unwrap())
            })
            .collect();
        assert_eq!(targets, expected, "{file}");
        assert_eq!(strings(&config["rule_files"]), ["alerts.yml"], "{file}");
    }
}

/// The manifests of infra/k8s/.
fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(infra().join("k8s"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "{files:?}");
    files
}

#[test]
fn k8s_manifests_validate_against_the_kubernetes_schemas() {
    let output = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "--no-warn"])
        .args(manifests())
        .output()
        .expect("python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "kubernetes-validate (scripts/setup.sh installs it):\n{text}"
    );
    // Every core object was checked against a schema (only the CRD has none).
    for kind in [
        "configmap",
        "deployment",
        "job",
        "poddisruptionbudget",
        "service",
    ] {
        assert!(
            text.contains(&format!("resource {kind}/")),
            "{kind} not validated:\n{text}"
        );
    }
}

#[test]
fn k8s_objects_reference_each_other() {
    let mut objects: BTreeMap<String, Value> = BTreeMap::new();
    for file in manifests() {
        for doc in documents(&file) {
            let kind = doc["kind"].as_str().unwrap().to_string();
            assert!(objects.insert(kind.clone(), doc).is_none(), "two {kind}s");
        }
    }
    let deployment = &objects["Deployment"];
    let pod = &deployment["spec"]["template"];
    let pod_labels = pod["metadata"]["labels"].as_mapping().unwrap();
    let selects_pods = |selector: &Value, what: &str| {
        let labels = selector.as_mapping().unwrap();
        assert!(!labels.is_empty(), "{what}: empty selector");
        for (k, v) in labels {
            assert_eq!(
                pod_labels.get(k),
                Some(v),
                "{what} does not select the pods"
            );
        }
    };
    selects_pods(&deployment["spec"]["selector"]["matchLabels"], "Deployment");
    selects_pods(&objects["Service"]["spec"]["selector"], "Service");
    selects_pods(
        &objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        "PodDisruptionBudget",
    );
    // The ServiceMonitor finds the Service and its port.
    let monitor = &objects["ServiceMonitor"];
    let service_labels = objects["Service"]["metadata"]["labels"]
        .as_mapping()
        .unwrap();
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .unwrap()
    {
        assert_eq!(
            service_labels.get(k),
            Some(v),
            "ServiceMonitor misses the Service"
        );
    }
    let service_ports: Vec<&str> = objects["Service"]["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert!(service_ports.contains(&endpoint["port"].as_str().unwrap()));
    assert_eq!(endpoint["path"].as_str(), Some("/metrics"));
    // The container: pinned image, probes on its port, the ConfigMap, TLS files where the
    // Secret is mounted.
    let container = &pod["spec"]["containers"][0];
    assert_eq!(
        container["image"].as_str(),
        Some(format!("pinhive:{}", version()).as_str())
    );
    assert_eq!(
        objects["Job"]["spec"]["template"]["spec"]["containers"][0]["image"],
        container["image"]
    );
    let port_names: Vec<&str> = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for (probe, path) in [
        ("readinessProbe", "/ready"),
        ("livenessProbe", "/health"),
        ("startupProbe", "/health"),
    ] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert!(
            port_names.contains(&get["port"].as_str().unwrap()),
            "{probe}"
        );
    }
    let configmap = &objects["ConfigMap"];
    assert_eq!(
        container["envFrom"][0]["configMapRef"]["name"],
        configmap["metadata"]["name"]
    );
    let config = configmap["data"].as_mapping().unwrap();
    let setting = |key: &str| config[key].as_str().unwrap().to_string();
    let listen_port: u64 = setting("PINHIVE_LISTEN")
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        container["ports"][0]["containerPort"].as_u64(),
        Some(listen_port)
    );
    let mounts: BTreeMap<&str, &str> = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap(),
                m["mountPath"].as_str().unwrap(),
            )
        })
        .collect();
    for key in ["PINHIVE_TLS_CERT", "PINHIVE_TLS_KEY"] {
        assert!(setting(key).starts_with(mounts["tls"]), "{key}");
    }
    // A file a setting names must be there: not under a volume that may be absent
    // (pinhive refuses to start when a configured file is missing).
    let optional: Vec<&str> = pod["spec"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|v| v["secret"]["optional"].as_bool() == Some(true))
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for (key, value) in config {
        let value = value.as_str().unwrap_or_default();
        for volume in &optional {
            assert!(
                !value.starts_with(mounts[volume]),
                "{key:?} names a file in the optional volume {volume}"
            );
        }
    }
    assert_eq!(setting("PINHIVE_DATA_DIR"), mounts["data"]);
    // The rolling update never lowers capacity; the budget lets one pod go at a time.
    let rolling = &deployment["spec"]["strategy"]["rollingUpdate"];
    assert_eq!(rolling["maxUnavailable"].as_u64(), Some(0));
    assert_eq!(
        objects["PodDisruptionBudget"]["spec"]["maxUnavailable"].as_u64(),
        Some(1)
    );
    assert!(deployment["spec"]["replicas"].as_u64() >= Some(2));
    // Requests set (sized in docs/deploy.md), a memory limit.
    assert!(container["resources"]["requests"]["memory"]
        .as_str()
        .is_some());
    assert!(container["resources"]["limits"]["memory"]
        .as_str()
        .is_some());
}
