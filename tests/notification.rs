//! The notification strategy end to end, with the real binary in local mode: a signed Flux
//! event for dev makes Promoter post a Flux event about the Pipeline to a fake
//! notification-controller on loopback, which treats it as the real event receiver does
//! (`internal/server/event_server.go`, `event_handlers.go`): it decodes and cleans the event,
//! rate-limits it by its key, matches it against its Alerts — which exist only as the API
//! server would have admitted them against Flux's Alert CRD, whose `eventSources[].kind`
//! enum lists Flux's kinds alone — and hands it to their Providers, or drops it with 202.

mod support;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{EVENTS_KEY, Server, deployed_in_dev, free_port, scratch, send};

// ---- Flux's Alert CRD, as far as the API server checks an Alert against it

/// `eventSources[].kind`'s enum in Flux's Alert CRD (notification-controller v1.9,
/// `api/v1/reference_types.go`): Flux's own kinds, no `Pipeline`.
const FLUX_KINDS: [&str; 12] = [
    "Bucket",
    "GitRepository",
    "Kustomization",
    "HelmRelease",
    "HelmChart",
    "HelmRepository",
    "ImageRepository",
    "ImagePolicy",
    "ImageUpdateAutomation",
    "OCIRepository",
    "ArtifactGenerator",
    "ExternalArtifact",
];

/// The parts of `alerts.notification.toolkit.fluxcd.io` a kustomize patch of the kind enum
/// walks, laid out as in notification-controller v1.9 and later (one version, v1beta3).
fn stock_alert_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "alerts.notification.toolkit.fluxcd.io"},
        "spec": {"group": "notification.toolkit.fluxcd.io", "versions": [{
            "name": "v1beta3",
            "served": true,
            "storage": true,
            "schema": {"openAPIV3Schema": {"properties": {"spec": {
                "properties": {
                    "eventSeverity": {"type": "string", "enum": ["info", "error"]},
                    "eventSources": {"type": "array", "items": {"properties": {
                        "kind": {"type": "string", "enum": FLUX_KINDS},
                        "name": {"type": "string", "minLength": 1},
                    }}},
                },
                "required": ["eventSources", "providerRef"],
            }}}},
        }]},
    })
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Applies the patches of the shipped `examples/kubernetes/flux-system/kustomization.yaml`
/// that target `crd`, as kustomize does (JSON 6902 patches, matched by group, version,
/// kind and name).
fn patch_as_shipped(crd: &mut Value) {
    let path = repo().join("examples/kubernetes/flux-system/kustomization.yaml");
    let kustomization: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut applied = 0;
    for entry in kustomization["patches"].as_array().unwrap() {
        let target = &entry["target"];
        let (group, version) = crd["apiVersion"].as_str().unwrap().split_once('/').unwrap();
        if target["group"] != group
            || target["version"] != version
            || target["kind"] != crd["kind"]
            || target["name"] != crd["metadata"]["name"]
        {
            continue;
        }
        let ops: json_patch::Patch =
            serde_yaml_ng::from_str(entry["patch"].as_str().unwrap()).unwrap();
        json_patch::patch(crd, &ops).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        applied += 1;
    }
    assert_eq!(
        applied,
        1,
        "one patch of the Alert CRD in {}",
        path.display()
    );
}

/// The schema of the served version `version` of the Alert CRD.
fn schema_of<'a>(crd: &'a Value, version: &str) -> &'a Value {
    let versions = crd["spec"]["versions"].as_array().unwrap();
    let v = versions
        .iter()
        .find(|v| v["name"] == version && v["served"] == true)
        .unwrap_or_else(|| panic!("the Alert CRD serves no {version}"));
    &v["schema"]["openAPIV3Schema"]["properties"]["spec"]
}

// ---- a fake notification-controller event receiver

/// Flux's `eventv1.Event` as notification-controller decodes it: the fields it requires.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FluxEvent {
    involved_object: ObjectReference,
    severity: String,
    timestamp: String,
    message: String,
    reason: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    reporting_controller: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectReference {
    kind: String,
    namespace: String,
    name: String,
    #[serde(default)]
    api_version: String,
}

impl ObjectReference {
    fn group(&self) -> &str {
        self.api_version
            .split_once('/')
            .map_or("", |(group, _)| group)
    }
}

/// An Alert (`notification.toolkit.fluxcd.io/v1beta3`) as the API server stored it.
#[derive(Debug, Clone, Deserialize)]
struct Alert {
    metadata: Meta,
    spec: AlertSpec,
}

#[derive(Debug, Clone, Deserialize)]
struct Meta {
    name: String,
    namespace: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AlertSpec {
    provider_ref: ProviderRef,
    #[serde(default = "info")]
    event_severity: String,
    event_sources: Vec<EventSource>,
    #[serde(default)]
    inclusion_list: Vec<String>,
    #[serde(default)]
    exclusion_list: Vec<String>,
    #[serde(default)]
    event_metadata: BTreeMap<String, String>,
    #[serde(default)]
    suspend: bool,
}

fn info() -> String {
    "info".into()
}

#[derive(Debug, Clone, Deserialize)]
struct ProviderRef {
    name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventSource {
    kind: String,
    name: String,
    namespace: Option<String>,
    match_labels: Option<BTreeMap<String, String>>,
}

/// One event the receiver let through its rate limiter.
#[derive(Debug, Clone)]
struct Accepted {
    /// As posted, once cleaned up (keys of other groups gone; the token still there).
    event: FluxEvent,
    /// What a Provider would see: keys of the involved object's API group, prefix
    /// stripped, the token gone (checksum and digest dropped).
    metadata: BTreeMap<String, String>,
    idempotency_key: Option<String>,
}

/// One event handed to a Provider.
#[derive(Debug, Clone)]
struct Delivery {
    /// `<namespace>/<name>` of the Alert and of its Provider.
    alert: String,
    provider: String,
    message: String,
    metadata: BTreeMap<String, String>,
}

/// What the fake does to the next requests before any processing.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Answer this status (a restarting pod, a proxy).
    Status(u16),
    /// Handle the event in full, then answer 504 as a proxy whose upstream answered too
    /// late would: the event went through, its answer was lost.
    LoseAnswer,
}

struct Inner {
    requests: usize,
    accepted: Vec<Accepted>,
    deliveries: Vec<Delivery>,
    /// notification-controller's log lines about events it did not deliver.
    dropped: Vec<String>,
    faults: VecDeque<Fault>,
    crd: Value,
    alerts: Vec<Alert>,
    /// `<namespace>/<name>` of the Providers.
    providers: Vec<String>,
    /// `--no-cross-namespace-refs`.
    no_cross_namespace_refs: bool,
    /// The Pipelines' labels, when notification-controller may read Pipelines (RBAC).
    pipelines: Option<BTreeMap<String, BTreeMap<String, String>>>,
    /// `--rate-limit-interval`, and go-limiter's buckets: when each key was first taken
    /// and the interval it was last taken in (one token per interval).
    interval: Duration,
    buckets: HashMap<String, (Instant, u32)>,
}

struct NotificationController {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl NotificationController {
    /// A notification-controller with stock Flux's Alert CRD and no Alerts yet.
    async fn start() -> NotificationController {
        let inner = Arc::new(Mutex::new(Inner {
            requests: 0,
            accepted: Vec::new(),
            deliveries: Vec::new(),
            dropped: Vec::new(),
            faults: VecDeque::new(),
            crd: stock_alert_crd(),
            alerts: Vec::new(),
            providers: Vec::new(),
            no_cross_namespace_refs: false,
            pipelines: None,
            interval: Duration::from_secs(5 * 60),
            buckets: HashMap::new(),
        }));
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        NotificationController { addr, inner }
    }

    /// One with the management cluster's Flux as the examples ship it: the Alert CRD
    /// patched, the notification example's Provider and Alert applied.
    async fn as_shipped() -> NotificationController {
        let nc = NotificationController::start().await;
        nc.patch_alert_crd();
        nc.apply_file("examples/kubernetes/notification/alert.yaml")
            .unwrap();
        nc
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn then(&self, faults: &[Fault]) {
        self.inner.lock().unwrap().faults.extend(faults);
    }

    fn patch_alert_crd(&self) {
        patch_as_shipped(&mut self.inner.lock().unwrap().crd);
    }

    fn no_cross_namespace_refs(&self) {
        self.inner.lock().unwrap().no_cross_namespace_refs = true;
    }

    /// notification-controller may read Pipelines (the example's ClusterRole), which
    /// carry these labels.
    fn may_read_pipelines(&self, pipelines: &[(&str, &[(&str, &str)])]) {
        self.inner.lock().unwrap().pipelines = Some(
            pipelines
                .iter()
                .map(|(name, labels)| {
                    let labels = labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect();
                    (name.to_string(), labels)
                })
                .collect(),
        );
    }

    /// `kubectl apply -f` of a file of the repository: its Providers and Alerts.
    fn apply_file(&self, path: &str) -> Result<(), String> {
        self.apply(&std::fs::read_to_string(repo().join(path)).unwrap())
    }

    /// `kubectl apply` of Providers and Alerts; an Alert the API server would refuse
    /// under the CRD in force is refused with its words.
    fn apply(&self, yaml: &str) -> Result<(), String> {
        let mut inner = self.inner.lock().unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
            let doc = Value::deserialize(doc).unwrap();
            let at = format!(
                "{}/{}",
                doc["metadata"]["namespace"].as_str().unwrap(),
                doc["metadata"]["name"].as_str().unwrap()
            );
            match doc["kind"].as_str().unwrap() {
                "Provider" => inner.providers.push(at),
                "Alert" => {
                    let version = doc["apiVersion"]
                        .as_str()
                        .unwrap()
                        .strip_prefix("notification.toolkit.fluxcd.io/")
                        .unwrap();
                    admit(schema_of(&inner.crd, version), &doc["spec"]).map_err(|e| {
                        format!("Alert.notification.toolkit.fluxcd.io {at:?} is invalid: {e}")
                    })?;
                    inner.alerts.push(serde_json::from_value(doc).unwrap());
                }
                other => panic!("the fake holds Providers and Alerts, not {other}"),
            }
        }
        Ok(())
    }

    fn requests(&self) -> usize {
        self.inner.lock().unwrap().requests
    }

    fn accepted(&self) -> Vec<Accepted> {
        self.inner.lock().unwrap().accepted.clone()
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.inner.lock().unwrap().deliveries.clone()
    }

    fn dropped(&self) -> Vec<String> {
        self.inner.lock().unwrap().dropped.clone()
    }
}

/// The API server's check of an Alert's spec against the CRD schema: required fields and
/// the enums (`Unsupported value` is its words for a value outside one).
fn admit(schema: &Value, spec: &Value) -> Result<(), String> {
    for field in schema["required"].as_array().unwrap() {
        let field = field.as_str().unwrap();
        if spec.get(field).is_none() {
            return Err(format!("spec.{field}: Required value"));
        }
    }
    let properties = &schema["properties"];
    let in_enum = |at: String, allowed: &Value, value: &Value| {
        let allowed = allowed.as_array().unwrap();
        if allowed.contains(value) {
            Ok(())
        } else {
            let list: Vec<String> = allowed.iter().map(|v| v.to_string()).collect();
            Err(format!(
                "{at}: Unsupported value: {value}: supported values: {}",
                list.join(", ")
            ))
        }
    };
    if let Some(severity) = spec.get("eventSeverity") {
        in_enum(
            "spec.eventSeverity".into(),
            &properties["eventSeverity"]["enum"],
            severity,
        )?;
    }
    let source_schema = &properties["eventSources"]["items"]["properties"];
    for (i, source) in spec["eventSources"].as_array().unwrap().iter().enumerate() {
        in_enum(
            format!("spec.eventSources[{i}].kind"),
            &source_schema["kind"]["enum"],
            &source["kind"],
        )?;
        if source["name"].as_str().is_none_or(str::is_empty) {
            return Err(format!("spec.eventSources[{i}].name: Required value"));
        }
    }
    Ok(())
}

async fn receive(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut inner = inner.lock().unwrap();
    inner.requests += 1;
    let fault = inner.faults.pop_front();
    if let Some(Fault::Status(status)) = fault {
        return (StatusCode::from_u16(status).unwrap(), "scripted").into_response();
    }
    let answer = handle(&mut inner, &method, &headers, &body);
    match fault {
        Some(Fault::LoseAnswer) => {
            (StatusCode::GATEWAY_TIMEOUT, "upstream timed out").into_response()
        }
        _ => answer,
    }
}

/// notification-controller's middlewares and handler, in their order.
fn handle(inner: &mut Inner, method: &Method, headers: &HeaderMap, body: &[u8]) -> Response {
    if method != Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    // eventMiddleware: decode, then cleanupMetadata.
    let mut event: FluxEvent = match serde_json::from_slice(body) {
        Ok(event) => event,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("decoding failed: {e}")).into_response();
        }
    };
    let object = &event.involved_object;
    if object.kind.is_empty() || object.name.is_empty() || object.namespace.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            "involvedObject needs kind, name and namespace",
        )
            .into_response();
    }
    if !matches!(event.severity.as_str(), "info" | "error") {
        return (
            StatusCode::BAD_REQUEST,
            format!("severity {:?}", event.severity),
        )
            .into_response();
    }
    if let Err(e) = event.timestamp.parse::<jiff::Timestamp>() {
        return (StatusCode::BAD_REQUEST, format!("timestamp: {e}")).into_response();
    }
    const EVENT_GROUP: &str = "event.toolkit.fluxcd.io/";
    let group = format!("{}/", object.group());
    event.metadata.retain(|k, _| {
        (k.starts_with(EVENT_GROUP) || k.starts_with(&group))
            && !k.eq_ignore_ascii_case(&format!("{group}checksum"))
            && !k.eq_ignore_ascii_case(&format!("{group}digest"))
    });

    // The rate limiter (go-limiter, one token per interval), keyed by eventKeyFunc.
    let mut key = vec![
        "event".to_string(),
        format!("name={}", object.name),
        format!("namespace={}", object.namespace),
        format!("kind={}", object.kind),
        format!("message={}", event.message),
    ];
    for (part, meta) in [
        ("originRevision", "originRevision"),
        ("revision", "revision"),
        ("token", "token"),
    ] {
        if let Some(value) = event.metadata.get(&format!("{group}{meta}")) {
            key.push(format!("{part}={value}"));
        }
    }
    let now = Instant::now();
    let interval = inner.interval;
    let (start, last) = *inner
        .buckets
        .entry(key.join("/"))
        .or_insert((now, u32::MAX));
    let tick = (now.duration_since(start).as_nanos() / interval.as_nanos()) as u32;
    let reset = jiff::Timestamp::now() + (start + interval * (tick + 1)).duration_since(now);
    let reset = reset.strftime("%a, %d %b %Y %H:%M:%S UTC").to_string();
    let limited = last != u32::MAX && tick <= last;
    let mut limiter_headers = HeaderMap::new();
    limiter_headers.insert("x-ratelimit-limit", HeaderValue::from_static("1"));
    limiter_headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
    limiter_headers.insert("x-ratelimit-reset", reset.parse().unwrap());
    if limited {
        limiter_headers.insert("retry-after", reset.parse().unwrap());
        inner.dropped.push(format!(
            "Discarding event, rate limiting duplicate events: {}",
            event.message
        ));
        return (
            StatusCode::TOO_MANY_REQUESTS,
            limiter_headers,
            "Too Many Requests\n",
        )
            .into_response();
    }
    inner.buckets.get_mut(&key.join("/")).unwrap().1 = tick;

    // handleEvent: excludeInternalMetadata, then the Alerts.
    let received = event.clone();
    event.metadata.remove(&format!("{group}token"));
    let for_providers: BTreeMap<String, String> = event
        .metadata
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(&group)?.to_string(), v.clone())))
        .collect();
    inner.accepted.push(Accepted {
        event: received,
        metadata: for_providers,
        idempotency_key: headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    });
    let alerts = inner.alerts.clone();
    let matching: Vec<Alert> = alerts
        .into_iter()
        .filter(|alert| !alert.spec.suspend && matches_sources(inner, &event, alert))
        .filter(|alert| {
            let matches = |list: &[String]| {
                list.iter()
                    .any(|re| regex::Regex::new(re).unwrap().is_match(&event.message))
            };
            (alert.spec.inclusion_list.is_empty() || matches(&alert.spec.inclusion_list))
                && !matches(&alert.spec.exclusion_list)
        })
        .collect();
    if matching.is_empty() {
        inner
            .dropped
            .push("discarding event, no alerts found for the involved object".into());
        return (StatusCode::ACCEPTED, limiter_headers).into_response();
    }
    for alert in matching {
        let at = format!("{}/{}", alert.metadata.namespace, alert.metadata.name);
        if inner.no_cross_namespace_refs
            && event.involved_object.namespace != alert.metadata.namespace
        {
            inner.dropped.push(format!(
                "alert '{at}' can't process event from '{}/{}/{}', cross-namespace references have been blocked",
                event.involved_object.kind, event.involved_object.namespace, event.involved_object.name
            ));
            continue;
        }
        let provider = format!(
            "{}/{}",
            alert.metadata.namespace, alert.spec.provider_ref.name
        );
        if !inner.providers.contains(&provider) {
            inner
                .dropped
                .push(format!("failed to read provider {provider}"));
            continue;
        }
        // combineEventMetadata: the event group's keys, the Alert's eventMetadata, the
        // object group's keys, each stripped of its prefix, later ones winning.
        let mut metadata = BTreeMap::new();
        for (k, v) in &event.metadata {
            if let Some(k) = k.strip_prefix(EVENT_GROUP) {
                metadata.insert(k.to_string(), v.clone());
            }
        }
        metadata.extend(alert.spec.event_metadata.clone());
        for (k, v) in &event.metadata {
            if let Some(k) = k.strip_prefix(&group) {
                metadata.insert(k.to_string(), v.clone());
            }
        }
        inner.deliveries.push(Delivery {
            alert: at,
            provider,
            message: event.message.clone(),
            metadata,
        });
    }
    (StatusCode::ACCEPTED, limiter_headers).into_response()
}

/// eventMatchesAlertSources: kind and namespace (the Alert's when the source names none),
/// severity (an `info` Alert takes every event), name or `*`, then matchLabels against the
/// object's labels — which notification-controller must be allowed to read.
fn matches_sources(inner: &mut Inner, event: &FluxEvent, alert: &Alert) -> bool {
    let object = &event.involved_object;
    for source in &alert.spec.event_sources {
        let namespace = source
            .namespace
            .as_deref()
            .unwrap_or(&alert.metadata.namespace);
        if object.namespace != namespace || object.kind != source.kind {
            continue;
        }
        let severity = &alert.spec.event_severity;
        if event.severity != *severity && severity != "info" {
            continue;
        }
        if source.name != "*" && source.name != object.name {
            continue;
        }
        let Some(wanted) = &source.match_labels else {
            return true;
        };
        let labels = inner.pipelines.as_ref().map(|p| {
            p.get(&format!("{}/{}", object.namespace, object.name))
                .cloned()
        });
        match labels {
            None => inner.dropped.push(format!(
                "error getting the involved object: pipelines.pipelines.weave.works {:?} is \
                 forbidden: User \"system:serviceaccount:flux-system:notification-controller\" \
                 cannot list resource \"pipelines\"",
                object.name
            )),
            Some(None) => inner.dropped.push(format!("{} not found", object.name)),
            Some(Some(labels)) => {
                if wanted.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                    return true;
                }
            }
        }
    }
    false
}

// ---- a pipeline dev -> test (two clusters) with Weave's notification strategy

fn write_manifests(dir: &Path, notification: &str) {
    std::fs::write(
        dir.join("pipeline.yaml"),
        format!(
            r#"apiVersion: pipelines.weave.works/v1alpha1
kind: Pipeline
metadata:
  name: podinfo
  namespace: flux-system
spec:
  appRef:
    apiVersion: helm.toolkit.fluxcd.io/v2
    kind: HelmRelease
    name: podinfo
  environments:
    - name: dev
      targets:
        - namespace: podinfo-dev
    - name: test
      targets:
        - namespace: podinfo-test
          clusterRef: {{kind: GitopsCluster, name: test-eu}}
        - namespace: podinfo-test
          clusterRef: {{kind: GitopsCluster, name: test-us, namespace: clusters}}
  promotion:
    strategy:
      secretRef: {{name: podinfo-events}}
      notification: {notification}
---
apiVersion: v1
kind: Secret
metadata: {{name: podinfo-events, namespace: flux-system}}
stringData: {{hmac-key: {key}}}
"#,
            key = std::str::from_utf8(EVENTS_KEY).unwrap(),
        ),
    )
    .unwrap();
}

async fn start(name: &str, nc: &NotificationController) -> Server {
    let dir = scratch(name);
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    write_manifests(&manifests, "{}");
    Server::start(&manifests, &dir.join("data"), &["--events-addr", &nc.url()])
}

/// `promoter serve` that is expected to refuse to start: its exit status and output.
fn serve_expecting_refusal(name: &str, notification: &str, extra: &[&str]) -> (i32, String) {
    let dir = scratch(name);
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    write_manifests(&manifests, notification);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_promoter"))
        .arg("serve")
        .arg("--manifests")
        .arg(&manifests)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--webhook-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin-addr", &format!("127.0.0.1:{}", free_port())])
        .args(extra)
        .env_remove("PROMOTER_EVENTS_ADDR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..1200 {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            return (
                out.status.code().unwrap_or(-1),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    panic!(
        "the server started instead of refusing:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Dev reports `version` with its event stamped `seconds_ago`.
async fn deployed_in_dev_at(server: &Server, version: &str, seconds_ago: i64) -> (u16, String) {
    let mut event =
        promoter::client::deployment_event("HelmRelease", "podinfo-dev", "podinfo", version);
    let at = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(seconds_ago);
    event.timestamp = at.round(jiff::Unit::Second).unwrap().to_string();
    send(server, "dev", &event, Some(EVENTS_KEY)).await
}

/// Dev reports `version`; waits until `n` promotions have finished and returns them.
async fn promoted(server: &Server, version: &str, n: usize) -> Vec<Value> {
    let (status, body) = deployed_in_dev(server, version).await;
    assert_eq!(status, 202, "{body}");
    finished(server, n).await
}

/// A Provider `provider` (its spec in flow style) and an Alert `alert` of `namespace`
/// sending events of `sources` (a flow-style list) to it.
fn provider_and_alert(
    namespace: &str,
    provider: &str,
    provider_spec: &str,
    alert: &str,
    sources: &str,
) -> String {
    format!(
        r#"apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Provider
metadata: {{name: {provider}, namespace: {namespace}}}
spec: {provider_spec}
---
apiVersion: notification.toolkit.fluxcd.io/v1beta3
kind: Alert
metadata: {{name: {alert}, namespace: {namespace}}}
spec:
  providerRef: {{name: {provider}}}
  eventSources: {sources}
"#
    )
}

/// Waits until `n` promotions have finished; returns them.
async fn finished(server: &Server, n: usize) -> Vec<Value> {
    server
        .wait_for(&format!("{n} finished promotions"), |all| {
            all.iter().filter(|p| p["phase"] == "succeeded").count() >= n
        })
        .await
}

#[tokio::test]
async fn a_promotion_posts_a_flux_event_about_the_pipeline_that_reaches_the_alerts_provider() {
    let nc = NotificationController::as_shipped().await;
    let server = start("notification", &nc).await;
    let all = promoted(&server, "6.5.4", 1).await;
    let promotion = &all[0];
    let id = promotion["id"].as_str().unwrap();
    assert_eq!(promotion["attempts"], 1);
    assert_eq!(promotion["targetEnvironment"], "test");

    let accepted = nc.accepted();
    assert_eq!(accepted.len(), 1, "{accepted:#?}");
    assert_eq!(nc.requests(), 1);
    let Accepted {
        event,
        metadata,
        idempotency_key,
    } = &accepted[0];
    assert_eq!(event.reason, "Promote");
    assert_eq!(
        event.message,
        "Promote pipeline flux-system/podinfo to test with version 6.5.4"
    );
    assert_eq!(event.severity, "info");
    assert_eq!(event.reporting_controller, "promoter");
    assert_eq!(event.involved_object.kind, "Pipeline");
    assert_eq!(
        event.involved_object.api_version,
        "pipelines.weave.works/v1alpha1"
    );
    assert_eq!(
        (
            event.involved_object.namespace.as_str(),
            event.involved_object.name.as_str()
        ),
        ("flux-system", "podinfo")
    );
    let age = jiff::Timestamp::now() - event.timestamp.parse::<jiff::Timestamp>().unwrap();
    assert!(
        age.as_secs().abs() < 120,
        "stamped when sent: {}",
        event.timestamp
    );

    // Every key survives notification-controller's clean-up, but for the token, which is
    // for its duplicate filter alone and removed before the Alerts.
    assert!(
        event.metadata["pipelines.weave.works/token"].starts_with(&format!("{id}@")),
        "{:?}",
        event.metadata
    );
    let expected: BTreeMap<String, String> = [
        ("pipeline", "flux-system/podinfo"),
        ("environment", "test"),
        ("version", "6.5.4"),
        ("namespace", "podinfo-test, podinfo-test"),
        ("cluster", "flux-system/test-eu, clusters/test-us"),
        ("promotion", id),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(metadata, &expected);
    assert_eq!(idempotency_key.as_deref(), Some(id));

    // The shipped Alert (on the patched CRD) hands it to its Provider.
    let deliveries = nc.deliveries();
    assert_eq!(deliveries.len(), 1, "{deliveries:#?} {:?}", nc.dropped());
    assert_eq!(deliveries[0].alert, "flux-system/promotions");
    assert_eq!(deliveries[0].provider, "flux-system/promotions");
    assert_eq!(deliveries[0].metadata, expected);

    let metrics = server.metrics().await;
    assert!(
        metrics.contains(r#"promoter_promotions_total{environment="test",pipeline="flux-system/podinfo",result="succeeded",strategy="notification"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn stock_fluxs_alert_crd_refuses_an_alert_on_pipelines_and_the_event_is_dropped_with_202() {
    let nc = NotificationController::start().await;
    let refused = nc
        .apply_file("examples/kubernetes/notification/alert.yaml")
        .unwrap_err();
    assert!(
        refused.contains(r#"spec.eventSources[0].kind: Unsupported value: "Pipeline""#),
        "{refused}"
    );

    let server = start("notification-stock-flux", &nc).await;
    let all = promoted(&server, "6.5.4", 1).await;

    // notification-controller took the event and dropped it: nothing reached a Provider,
    // and its 202 says nothing else. The promotion's outcome says what 202 does not prove.
    assert_eq!(nc.accepted().len(), 1);
    assert!(nc.deliveries().is_empty());
    assert_eq!(
        nc.dropped(),
        ["discarding event, no alerts found for the involved object"]
    );
    let details = all[0]["outcomeDetails"].as_str().unwrap();
    assert!(details.contains("HTTP 202"), "{details}");
    assert!(
        details.contains("also when no Alert on kind Pipeline matches"),
        "{details}"
    );
}

#[tokio::test]
async fn two_promotions_of_one_version_within_the_rate_limit_window_both_reach_the_provider() {
    // The same version promoted into the same environment twice within notification-
    // controller's 5 minutes: the first Promotion's record gone (deleted in Kubernetes
    // mode; here a second data directory) and a later deployment event recording it again.
    let nc = NotificationController::as_shipped().await;
    let first = start("notification-twice-1", &nc).await;
    let (status, body) = deployed_in_dev_at(&first, "6.5.4", 30).await;
    assert_eq!(status, 202, "{body}");
    finished(&first, 1).await;
    drop(first);

    let second = start("notification-twice-2", &nc).await;
    let (status, body) = deployed_in_dev_at(&second, "6.5.4", 0).await;
    assert_eq!(status, 202, "{body}");
    let all = finished(&second, 1).await;
    assert_eq!(all[0]["attempts"], 1, "{:#?}", all[0]);

    // Same message, same promotion id: only the token tells them apart.
    let deliveries = nc.deliveries();
    assert_eq!(deliveries.len(), 2, "{deliveries:#?} {:?}", nc.dropped());
    assert_eq!(deliveries[0].message, deliveries[1].message);
    assert_eq!(
        deliveries[0].metadata["promotion"],
        deliveries[1].metadata["promotion"]
    );
    assert_eq!(nc.requests(), 2, "no 429 on the way: {:?}", nc.dropped());
}

#[tokio::test]
async fn a_retry_after_a_lost_answer_is_not_announced_twice() {
    // The first attempt's event goes through but its answer is lost (a proxy times out);
    // the retry meets notification-controller's duplicate filter, which proves delivery.
    let nc = NotificationController::as_shipped().await;
    nc.then(&[Fault::LoseAnswer]);
    let server = start("notification-lost-answer", &nc).await;
    let all = promoted(&server, "6.5.4", 1).await;

    assert_eq!(all[0]["attempts"], 2, "{:#?}", all[0]);
    assert_eq!(nc.requests(), 2);
    assert_eq!(nc.deliveries().len(), 1, "{:#?}", nc.deliveries());
    assert!(
        nc.dropped()[0].starts_with("Discarding event, rate limiting duplicate events"),
        "{:?}",
        nc.dropped()
    );
    let details = all[0]["outcomeDetails"].as_str().unwrap();
    assert!(details.contains("by an earlier attempt"), "{details}");
}

#[tokio::test]
async fn with_no_cross_namespace_refs_only_an_alert_in_the_pipelines_namespace_delivers() {
    let nc = NotificationController::as_shipped().await;
    nc.no_cross_namespace_refs();
    // A team's own Alert and Provider in their namespace, watching the Pipeline across.
    nc.apply(&provider_and_alert(
        "team-billing",
        "chat",
        "{type: slack, channel: releases}",
        "podinfo",
        "[{kind: Pipeline, name: podinfo, namespace: flux-system}]",
    ))
    .unwrap();
    let server = start("notification-no-cross-ns", &nc).await;
    promoted(&server, "6.5.4", 1).await;

    let deliveries = nc.deliveries();
    assert_eq!(deliveries.len(), 1, "{deliveries:#?}");
    assert_eq!(deliveries[0].alert, "flux-system/promotions");
    assert_eq!(
        nc.dropped(),
        [
            "alert 'team-billing/podinfo' can't process event from 'Pipeline/flux-system/podinfo', \
          cross-namespace references have been blocked"
        ]
    );
}

#[tokio::test]
async fn an_alert_picking_pipelines_by_label_needs_notification_controller_to_read_them() {
    let nc = NotificationController::start().await;
    nc.patch_alert_crd();
    nc.apply(&provider_and_alert(
        "flux-system",
        "promotions",
        r#"{type: generic, address: "https://ci.example.com/hooks/promote"}"#,
        "billing-team",
        "[{kind: Pipeline, name: '*', matchLabels: {team: billing}}]",
    ))
    .unwrap();
    let server = start("notification-match-labels", &nc).await;

    // Flux's own RBAC: notification-controller cannot read Pipelines; the Alert never matches.
    promoted(&server, "6.5.4", 1).await;
    assert!(nc.deliveries().is_empty());
    assert!(
        nc.dropped()[0].contains("cannot list resource \"pipelines\""),
        "{:?}",
        nc.dropped()
    );

    // With examples/kubernetes/notification/notification-controller-reads-pipelines.yaml.
    nc.may_read_pipelines(&[("flux-system/podinfo", &[("team", "billing")])]);
    promoted(&server, "6.5.5", 2).await;
    let deliveries = nc.deliveries();
    assert_eq!(deliveries.len(), 1, "{deliveries:#?}");
    assert_eq!(deliveries[0].metadata["version"], "6.5.5");
}

#[test]
fn the_shipped_patch_targets_the_kind_enum_of_the_alert_crds_v1beta3() {
    let mut crd = stock_alert_crd();
    let kinds = |crd: &Value| {
        schema_of(crd, "v1beta3")["properties"]["eventSources"]["items"]
        ["properties"]["kind"]["enum"]
        .clone()
    };
    assert!(!kinds(&crd).as_array().unwrap().contains(&json!("Pipeline")));
    patch_as_shipped(&mut crd);
    let mut expected: Vec<Value> = FLUX_KINDS.iter().map(|k| json!(k)).collect();
    expected.push(json!("Pipeline"));
    assert_eq!(
        kinds(&crd),
        Value::Array(expected),
        "Flux's kinds kept, Pipeline added"
    );
    assert!(admit(
        schema_of(&crd, "v1beta3"),
        &json!({"providerRef": {"name": "p"}, "eventSources": [{"kind": "Pipeline", "name": "*"}]})
    )
    .is_ok());
}

#[tokio::test]
async fn a_500_is_retried_and_the_event_is_accepted_once() {
    let nc = NotificationController::as_shipped().await;
    nc.then(&[Fault::Status(500)]);
    let server = start("notification-retry", &nc).await;
    let all = promoted(&server, "6.5.5", 1).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["attempts"], 2, "{:#?}", all[0]);
    assert_eq!(nc.requests(), 2, "one failed attempt, one accepted");
    let accepted = nc.accepted();
    assert_eq!(accepted.len(), 1, "{accepted:#?}");
    assert_eq!(
        accepted[0].idempotency_key.as_deref(),
        all[0]["id"].as_str()
    );
    assert_eq!(accepted[0].metadata["version"], "6.5.5");
    assert_eq!(nc.deliveries().len(), 1);

    // Nothing more arrives: the promotion is done.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(nc.requests(), 2);
}

#[test]
fn a_notification_pipeline_on_a_server_without_events_addr_is_refused_at_start() {
    let (code, out) = serve_expecting_refusal("notification-no-addr", "{}", &[]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains(
            "Pipeline flux-system/podinfo: promotion into test: the notification strategy"
        ),
        "{out}"
    );
    assert!(out.contains("--events-addr URL"), "{out}");
    assert!(out.contains("PROMOTER_EVENTS_ADDR"), "{out}");
}

#[test]
fn a_pipeline_cannot_send_the_notification_elsewhere() {
    let (code, out) = serve_expecting_refusal(
        "notification-own-addr",
        "{address: 'http://203.0.113.7/'}",
        &["--events-addr", "http://127.0.0.1:9/"],
    );
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("notification.address cannot be set in a Pipeline"),
        "{out}"
    );
}

#[test]
fn an_events_addr_that_is_not_an_http_url_is_refused() {
    let (code, out) = serve_expecting_refusal(
        "notification-bad-addr",
        "{}",
        &["--events-addr", "notification-controller.flux-system:80"],
    );
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("--events-addr"), "{out}");
    assert!(out.contains("expected http://host[:port][/path]"), "{out}");
}
