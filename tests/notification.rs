//! The notification strategy end to end, with the real binary in local mode: a signed Flux
//! event for dev makes Promoter post a Flux event about the Pipeline to a fake
//! notification-controller on loopback, which checks it as the real event receiver does.

mod support;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use serde::Deserialize;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use support::{EVENTS_KEY, Server, deployed_in_dev, free_port, scratch};

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

/// One event the receiver accepted, with the metadata the Providers would see.
#[derive(Debug, Clone)]
struct Accepted {
    event: FluxEvent,
    /// notification-controller's clean-up: only keys prefixed with the involved object's
    /// API group survive, prefix stripped (checksum and digest dropped).
    metadata: BTreeMap<String, String>,
    idempotency_key: Option<String>,
}

#[derive(Default)]
struct Inner {
    requests: usize,
    accepted: Vec<Accepted>,
    /// Statuses for the next requests before any processing (a restarting pod, a proxy).
    script: VecDeque<u16>,
}

struct NotificationController {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl NotificationController {
    async fn start() -> NotificationController {
        let inner: Arc<Mutex<Inner>> = Arc::default();
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        NotificationController { addr, inner }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn then_answer(&self, statuses: &[u16]) {
        self.inner.lock().unwrap().script.extend(statuses);
    }

    fn requests(&self) -> usize {
        self.inner.lock().unwrap().requests
    }

    fn accepted(&self) -> Vec<Accepted> {
        self.inner.lock().unwrap().accepted.clone()
    }
}

async fn receive(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let mut inner = inner.lock().unwrap();
    inner.requests += 1;
    if let Some(status) = inner.script.pop_front() {
        return (StatusCode::from_u16(status).unwrap(), "scripted".into());
    }
    if method != Method::POST {
        return (StatusCode::METHOD_NOT_ALLOWED, String::new());
    }
    let event: FluxEvent = match serde_json::from_slice(&body) {
        Ok(event) => event,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("decoding failed: {e}")),
    };
    let object = &event.involved_object;
    if object.kind.is_empty() || object.name.is_empty() || object.namespace.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            "involvedObject needs kind, name and namespace".into(),
        );
    }
    if !matches!(event.severity.as_str(), "info" | "error") {
        return (
            StatusCode::BAD_REQUEST,
            format!("severity {:?}", event.severity),
        );
    }
    if let Err(e) = event.timestamp.parse::<jiff::Timestamp>() {
        return (StatusCode::BAD_REQUEST, format!("timestamp: {e}"));
    }
    let group = object
        .api_version
        .split_once('/')
        .map_or("", |(group, _)| group);
    let metadata = event
        .metadata
        .iter()
        .filter_map(|(k, v)| {
            let key = k.strip_prefix(group)?.strip_prefix('/')?;
            (key != "checksum" && key != "digest").then(|| (key.to_string(), v.clone()))
        })
        .collect();
    let idempotency_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    inner.accepted.push(Accepted {
        event,
        metadata,
        idempotency_key,
    });
    (StatusCode::ACCEPTED, String::new())
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

#[tokio::test]
async fn a_promotion_posts_a_flux_event_about_the_pipeline_that_notification_controller_accepts() {
    let nc = NotificationController::start().await;
    let server = start("notification", &nc).await;
    let (status, body) = deployed_in_dev(&server, "6.5.4").await;
    assert_eq!(status, 202, "{body}");

    let all = server
        .wait_for("the promotion into test to succeed", |all| {
            all.iter().any(|p| p["phase"] == "succeeded")
        })
        .await;
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

    // Every key survives notification-controller's clean-up: the Providers see them all.
    assert_eq!(metadata.len(), event.metadata.len(), "{:?}", event.metadata);
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

    let metrics = server.metrics().await;
    assert!(
        metrics.contains(r#"promoter_promotions_total{environment="test",pipeline="flux-system/podinfo",result="succeeded",strategy="notification"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_500_is_retried_and_the_event_is_accepted_once() {
    let nc = NotificationController::start().await;
    nc.then_answer(&[500]);
    let server = start("notification-retry", &nc).await;
    let (status, body) = deployed_in_dev(&server, "6.5.5").await;
    assert_eq!(status, 202, "{body}");

    let all = server
        .wait_for("the promotion to succeed after a retry", |all| {
            all.iter().any(|p| p["phase"] == "succeeded")
        })
        .await;
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
