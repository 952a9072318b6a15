//! Kubernetes mode at size: the release binary (`promoter serve` with a kubeconfig, as a
//! new pod with an empty data dir) against the fake API server of the Kubernetes tests on
//! 127.0.0.1, holding 1,000 Pipelines (3 environments, 5 targets, 50 namespaces, each
//! with its event and approval Secrets) and 10,000 Promotion resources as Promoter and
//! the API server leave them (managedFields included; mostly succeeded, some failed,
//! refused and waiting for approval). Three configurations in one run — nothing, the
//! Pipelines alone, the Pipelines and the Promotions — so that the difference is what a
//! Pipeline and a cached Promotion cost. For each: start-to-ready (spawn until `/readyz`
//! answers 200), resident memory at ready and once the Lease holder has written every
//! Pipeline's status (VmRSS; VmHWM, the peak), and the lists and watches the fake API
//! server answered per resource. Targets: start-to-ready ≤ 5 s, peak RSS ≤ 256 MiB
//! (the chart's memory request), each collection listed once then watched. Prints the
//! figures and whether each target is met; never fails on a figure.
//! Run: cargo bench -p promoter --bench kubernetes

#[allow(dead_code)]
#[path = "../../tests/kubernetes/api.rs"]
mod api;
#[path = "../../tests/support/mod.rs"]
mod support;

// The jiff k8s-openapi's Time wraps.
use k8s_openapi::jiff;
use promoter::cluster::crd;
use promoter::decide::promotion_id;
use promoter::promotion::EventInfo;
use promoter::record::Phase;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const NAMESPACES: usize = 50;
const PIPELINES: usize = 1_000;
const PROMOTIONS: usize = 10_000;
const READY_TARGET: Duration = Duration::from_secs(5);
const RSS_TARGET_MIB: u64 = 256;
/// Left after every Pipeline has its status, before memory is read.
const SETTLE: Duration = Duration::from_secs(3);

const PIPELINES_PATH: &str = "/apis/pipelines.weave.works/v1alpha1/pipelines";
const CONFIG_MAPS_PATH: &str = "/api/v1/namespaces/promoter-system/configmaps";
const PROMOTIONS_PATH: &str = "/apis/promoter.dev/v1alpha1/promotions";

fn namespace(i: usize) -> String {
    format!("team-{:02}", i % NAMESPACES)
}

fn pipeline_name(i: usize) -> String {
    format!("app-{i:04}")
}

/// Pipeline `i`: dev (one cluster), staging (two), prod (two, manual with an approval
/// key); events signed with its namespace's key; the webhook strategy.
fn pipeline(i: usize) -> Value {
    let (ns, name) = (namespace(i), pipeline_name(i));
    let target = |env: &str, cluster: Option<&str>| match cluster {
        Some(c) => json!({"namespace": format!("{name}-{env}"),
                          "clusterRef": {"kind": "GitopsCluster", "name": c}}),
        None => json!({"namespace": format!("{name}-{env}")}),
    };
    json!({
        "apiVersion": "pipelines.weave.works/v1alpha1", "kind": "Pipeline",
        "metadata": {
            "name": name, "namespace": ns, "generation": 1,
            "uid": format!("00000000-0000-4000-8000-{i:012}"),
            "creationTimestamp": "2026-01-05T09:00:00Z",
            "labels": {"kustomize.toolkit.fluxcd.io/name": "pipelines",
                       "kustomize.toolkit.fluxcd.io/namespace": "flux-system"},
            // Applied by Flux (server-side apply), as the API server records it.
            "managedFields": [{
                "manager": "kustomize-controller", "operation": "Apply",
                "apiVersion": "pipelines.weave.works/v1alpha1",
                "time": "2026-01-05T09:00:00Z", "fieldsType": "FieldsV1",
                "fieldsV1": {
                    "f:metadata": {"f:labels": {"f:kustomize.toolkit.fluxcd.io/name": {},
                                                "f:kustomize.toolkit.fluxcd.io/namespace": {}}},
                    "f:spec": {"f:appRef": {"f:apiVersion": {}, "f:kind": {}, "f:name": {}},
                               "f:environments": {}, "f:promotion": {
                                   "f:secretRef": {"f:name": {}},
                                   "f:webhook": {"f:url": {}}}},
                },
            }],
        },
        "spec": {
            "appRef": {"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease", "name": name},
            "environments": [
                {"name": "dev", "targets": [target("dev", None)]},
                {"name": "staging", "targets": [target("staging", Some("staging-eu")),
                                                 target("staging", Some("staging-us"))]},
                {"name": "prod", "targets": [target("prod", Some("prod-eu")),
                                              target("prod", Some("prod-us"))],
                 "promotion": {"manual": true, "approvalSecretRef": {"name": "approvals"}}},
            ],
            "promotion": {
                "secretRef": {"name": "events"},
                "webhook": {"url": format!("http://127.0.0.1:9/job/{name}/promote")},
            },
        },
    })
}

fn secret(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "stringData": {"hmac-key": format!("{ns}-{name}-0123456789abcdef0123456789abcdef")},
    })
}

fn rfc3339(t: jiff::Timestamp) -> String {
    t.round(jiff::Unit::Second).unwrap().to_string()
}

/// Promotion `n` of pipeline `i` — version `1.<n/2>.0`, into staging (from dev) or prod
/// (from staging) — as the API server holds one Promoter created and finished: labels,
/// annotations, the Flux event, the status with its `Accepted` condition, and the
/// managedFields the API server adds for the create and the status updates.
fn promotion(i: usize, n: usize, total: usize) -> Value {
    let (ns, name) = (namespace(i), pipeline_name(i));
    let version = format!("1.{}.0", n / 2);
    let (source, env) = if n.is_multiple_of(2) {
        ("dev", "staging")
    } else {
        ("staging", "prod")
    };
    let id = promotion_id(&ns, &name, env, &version);
    // Spread over the last 20 days (within --keep-finished), newest last.
    let now = jiff::Timestamp::now();
    let back = Duration::from_secs(20 * 24 * 3600) * (total - n) as u32 / total as u32;
    let created = now - jiff::SignedDuration::try_from(back).unwrap();
    let finished = created + jiff::SignedDuration::from_secs(40);
    // The phase mix of a pipeline's history: 2 % refused requests, 8 % failed, 5 %
    // waiting for approval (the newest into prod), the rest succeeded.
    let mix = (i * 7 + n * 13) % 100;
    let phase = match mix {
        0..2 => Phase::Refused,
        2..10 => Phase::Failed,
        _ if env == "prod" && n + 2 >= total => Phase::WaitingApproval,
        10..15 if env == "prod" => Phase::WaitingApproval,
        _ => Phase::Succeeded,
    };
    let finished_phase = matches!(phase, Phase::Succeeded | Phase::Failed | Phase::Refused);
    let (reason, message) = match phase {
        Phase::Refused => (
            "Refused",
            format!("version {version} is not newer than the one promoted into {env}"),
        ),
        _ => (
            "Event",
            format!("a signed Flux event from {source} asked for it"),
        ),
    };
    let condition = k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        type_: "Accepted".into(),
        status: if phase == Phase::Refused {
            "False"
        } else {
            "True"
        }
        .into(),
        reason: reason.into(),
        message,
        last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(created),
        observed_generation: None,
    };
    let mut resource = crd::Promotion::new(
        &id,
        crd::PromotionSpec {
            pipeline: name.clone(),
            target_environment: env.into(),
            version: version.clone(),
            source_environment: Some(source.into()),
            reason: None,
            rollback: false,
            round: None,
            event: Some(EventInfo {
                kind: "HelmRelease".into(),
                name: name.clone(),
                namespace: format!("{name}-{source}"),
                reason: "UpgradeSucceeded".into(),
                severity: "info".into(),
                message: format!(
                    "Helm upgrade succeeded for release {name}-{source}/{name}.v{} with chart \
                     {name}@{version}",
                    n / 2 + 1
                ),
                timestamp: rfc3339(created),
                reporting_controller: "helm-controller".into(),
                metadata: [("revision".to_string(), version.clone())].into(),
            }),
        },
    );
    resource.status = Some(crd::PromotionStatus {
        phase,
        attempts: match phase {
            Phase::Failed => 8,
            Phase::Succeeded => 1,
            _ => 0,
        },
        last_error: (phase == Phase::Failed).then(|| {
            format!(
                "webhook http://127.0.0.1:9/job/{name}/promote answered 502 Bad Gateway: \
                 upstream connect error or disconnect/reset before headers"
            )
        }),
        outcome_url: (phase == Phase::Succeeded)
            .then(|| format!("http://127.0.0.1:9/job/{name}/promote/builds/{}", n + 1)),
        outcome_details: None,
        next_attempt_at: None,
        finished_at: finished_phase.then(|| rfc3339(finished)),
        holder: None,
        held_until: None,
        plugin: (phase != Phase::Refused && phase != Phase::WaitingApproval)
            .then(|| "webhook".into()),
        approved_by: (env == "prod" && phase != Phase::WaitingApproval && phase != Phase::Refused)
            .then(|| format!("key {ns}/approvals")),
        requested_by: None,
        retried_by: None,
        retried_at: None,
        closed_by: None,
        close_reason: None,
        conditions: vec![condition],
    });
    let mut object = serde_json::to_value(&resource).unwrap();
    let digest = format!("{:064x}", (i as u128) << 64 | n as u128);
    object["metadata"] = json!({
        "name": id,
        "namespace": ns,
        "uid": format!("00000000-0000-4000-9000-{:012}", i * 100 + n),
        "generation": 1,
        "creationTimestamp": rfc3339(created),
        "labels": {
            "app.kubernetes.io/managed-by": "promoter",
            "promoter.dev/pipeline": promoter::record::resources::pipeline_label(&name),
        },
        "annotations": {
            "promoter.dev/accepted-at": created.round(jiff::Unit::Millisecond).unwrap().to_string(),
            "promoter.dev/event-digest": digest,
        },
        "managedFields": [
            {
                "manager": "promoter", "operation": "Update",
                "apiVersion": "promoter.dev/v1alpha1", "time": rfc3339(created),
                "fieldsType": "FieldsV1",
                "fieldsV1": {
                    "f:metadata": {
                        "f:annotations": {".": {}, "f:promoter.dev/accepted-at": {},
                                          "f:promoter.dev/event-digest": {}},
                        "f:labels": {".": {}, "f:app.kubernetes.io/managed-by": {},
                                     "f:promoter.dev/pipeline": {}},
                    },
                    "f:spec": {
                        ".": {},
                        "f:event": {".": {}, "f:kind": {}, "f:message": {},
                                    "f:metadata": {".": {}, "f:revision": {}},
                                    "f:name": {}, "f:namespace": {}, "f:reason": {},
                                    "f:reportingController": {}, "f:severity": {},
                                    "f:timestamp": {}},
                        "f:pipeline": {}, "f:sourceEnvironment": {},
                        "f:targetEnvironment": {}, "f:version": {},
                    },
                },
            },
            {
                "manager": "promoter", "operation": "Update",
                "apiVersion": "promoter.dev/v1alpha1", "time": rfc3339(finished),
                "fieldsType": "FieldsV1", "subresource": "status",
                "fieldsV1": {"f:status": {
                    ".": {}, "f:approvedBy": {}, "f:attempts": {}, "f:finishedAt": {},
                    "f:conditions": {".": {}, "k:{\"type\":\"Accepted\"}": {
                        ".": {}, "f:lastTransitionTime": {}, "f:message": {},
                        "f:reason": {}, "f:status": {}, "f:type": {},
                    }},
                    "f:lastError": {}, "f:outcomeUrl": {}, "f:phase": {}, "f:plugin": {},
                }},
            },
        ],
    });
    object
}

/// The objects of a cluster with `pipelines` Pipelines and `promotions` Promotions.
fn objects(pipelines: usize, promotions: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for ns in (0..NAMESPACES.min(pipelines)).map(namespace) {
        out.push(secret(&ns, "events"));
        out.push(secret(&ns, "approvals"));
    }
    out.extend((0..pipelines).map(pipeline));
    let per = promotions.checked_div(pipelines).unwrap_or(0);
    for i in 0..pipelines {
        out.extend((0..per).map(|n| promotion(i, n, per)));
    }
    out
}

/// (VmRSS, VmHWM) of a process, KiB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Requests to one collection: lists begun (first pages), pages in all, watches.
#[derive(Clone, Copy, Default)]
struct Calls {
    lists: usize,
    pages: usize,
    watches: usize,
}

impl Calls {
    fn of(requests: &[String], path: &str) -> Calls {
        let mut calls = Calls::default();
        let on_path = requests.iter().filter_map(|r| {
            r.strip_prefix("GET ")?
                .strip_prefix(path)?
                .strip_prefix('?')
                .map(|q| q.split('&').collect::<Vec<_>>())
        });
        for query in on_path {
            if query.contains(&"watch=true") {
                calls.watches += 1;
            } else {
                calls.pages += 1;
                if !query.iter().any(|kv| kv.starts_with("continue=")) {
                    calls.lists += 1;
                }
            }
        }
        calls
    }

    fn once_then_watched(self) -> bool {
        self.lists == 1 && self.watches >= 1
    }
}

impl std::fmt::Display for Calls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.lists, self.pages, self.watches)
    }
}

struct Measured {
    ready: Duration,
    /// KiB.
    rss_ready: u64,
    rss_settled: u64,
    hwm: u64,
    pipelines: Calls,
    config_maps: Calls,
    promotions: Calls,
    /// Bytes of JSON the Promotions list's items take, as served.
    promotion_bytes: usize,
}

async fn measure(pipelines: usize, promotions: usize) -> Measured {
    let dir = support::scratch("bench-kubernetes");
    let seeded = objects(pipelines, promotions);
    let promotion_bytes = seeded
        .iter()
        .filter(|o| o["kind"] == "Promotion")
        .map(|o| serde_json::to_vec(o).unwrap().len())
        .sum();
    let cluster = api::cluster(&dir, seeded).await;
    let api = cluster.api.clone();
    api.secret_namespaces
        .lock()
        .unwrap()
        .extend((0..NAMESPACES).map(namespace));
    let log = dir.join("promoter.log");
    let out = std::fs::File::create(&log).unwrap();
    let admin = format!("127.0.0.1:{}", support::free_port());
    let started = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_promoter"))
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--webhook-addr", "127.0.0.1:0", "--admin-addr", &admin])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("POD_NAME", "promoter-0")
        .env_remove("POD_NAMESPACE")
        .env("PROMOTER_LOG", "info")
        .env("PROMOTER_BUILTIN_PRIVATE_NETWORKS", "true")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let pid = child.id();
    let fail = |why: &str| -> ! {
        panic!(
            "{why}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    };
    let client = reqwest::Client::new();
    let readyz = format!("http://{admin}/readyz");
    let ready = loop {
        if let Ok(Some(status)) = child.try_wait() {
            fail(&format!("promoter exited with {status}"));
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            fail("not ready within 120 s");
        }
        let answered = client
            .get(&readyz)
            .timeout(Duration::from_secs(1))
            .send()
            .await;
        if answered.is_ok_and(|a| a.status() == 200) {
            break started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let (rss_ready, _) = memory(pid);
    // Settled: the Lease holder has written every Pipeline's status.
    let written = || {
        api.objects
            .lock()
            .unwrap()
            .iter()
            .filter(|o| o["kind"] == "Pipeline" && !o["status"].is_null())
            .count()
    };
    let waiting = Instant::now();
    while written() < pipelines {
        if waiting.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            fail(&format!("{} of {pipelines} statuses written", written()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(SETTLE).await;
    let (rss_settled, hwm) = memory(pid);
    let requests = api.requests.lock().unwrap().clone();
    api.assert_only_granted();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    Measured {
        ready,
        rss_ready,
        rss_settled,
        hwm,
        pipelines: Calls::of(&requests, PIPELINES_PATH),
        config_maps: Calls::of(&requests, CONFIG_MAPS_PATH),
        promotions: Calls::of(&requests, PROMOTIONS_PATH),
        promotion_bytes,
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

async fn run() {
    println!(
        "Kubernetes mode at size: release binary against the fake API server (127.0.0.1), \
         {NAMESPACES} namespaces"
    );
    println!(
        "{:<36} {:>8} {:>11} {:>11} {:>11}  {:>9} {:>9} {:>9}",
        "cluster",
        "ready",
        "RSS ready",
        "RSS settled",
        "peak RSS",
        "Pipelines",
        "ConfigMap",
        "Promotion"
    );
    let configurations = [
        ("nothing", 0, 0),
        ("1,000 Pipelines", PIPELINES, 0),
        ("1,000 Pipelines + 10,000 Promotions", PIPELINES, PROMOTIONS),
    ];
    let mut results = Vec::new();
    for (label, pipelines, promotions) in configurations {
        let m = measure(pipelines, promotions).await;
        println!(
            "{label:<36} {:>7.2}s {:>11} {:>11} {:>11}  {:>9} {:>9} {:>9}",
            m.ready.as_secs_f64(),
            mib(m.rss_ready),
            mib(m.rss_settled),
            mib(m.hwm),
            m.pipelines.to_string(),
            m.config_maps.to_string(),
            m.promotions.to_string(),
        );
        results.push(m);
    }
    println!("(requests per collection: lists begun/pages/watches)");
    let [none, pipelines, full] = &results[..] else {
        unreachable!()
    };
    let per = |more: &Measured, less: &Measured, n: usize| {
        (more.rss_settled as f64 - less.rss_settled as f64) * 1024.0 / n as f64
    };
    println!(
        "per Pipeline: {:.1} KiB resident (1,000 Pipelines vs none, settled)",
        per(pipelines, none, PIPELINES) / 1024.0
    );
    println!(
        "per Promotion: {:.1} KiB resident (10,000 Promotions vs none, same Pipelines, \
         settled); {:.1} KiB of JSON each as served",
        per(full, pipelines, PROMOTIONS) / 1024.0,
        full.promotion_bytes as f64 / PROMOTIONS as f64 / 1024.0
    );
    let listed_once = full.pipelines.once_then_watched()
        && full.config_maps.once_then_watched()
        && full.promotions.once_then_watched();
    println!(
        "target start-to-ready ≤ {} s: {:.2} s, {}",
        READY_TARGET.as_secs(),
        full.ready.as_secs_f64(),
        verdict(full.ready <= READY_TARGET)
    );
    println!(
        "target RSS ≤ {RSS_TARGET_MIB} MiB: peak {}, settled {}, {}",
        mib(full.hwm),
        mib(full.rss_settled),
        verdict(full.hwm <= RSS_TARGET_MIB * 1024)
    );
    println!(
        "target one list then a watch per collection: Pipelines {}, ConfigMaps {}, \
         Promotions {}, {}",
        full.pipelines,
        full.config_maps,
        full.promotions,
        verdict(listed_once)
    );
}

fn main() {
    promoter::install_crypto_provider();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}
