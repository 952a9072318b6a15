//! Kubernetes mode with the real binary against the fake API server of `api.rs` on
//! loopback: Pipelines listed from every namespace, plugin ConfigMaps from the controller's
//! namespace, Secrets read by name only, each Pipeline's `Ready` condition written; a signed
//! event in, a promotion out.

mod api;
mod load;
mod metrics;
mod migration;
mod operate;
mod shapes;
mod shutdown;
#[path = "../support/mod.rs"]
mod support;

use axum::http::StatusCode;
use promoter::client::deployment_event;
use serde_json::{Value, json};
use support::{APPROVAL_KEY, EVENTS_KEY, Receiver, Server, scratch, send, write_manifests};

use api::*;

/// The local-mode example's objects (Pipeline podinfo and its two Secrets), as a user
/// would apply them; `edit` may change the folder first.
fn objects(dir: &std::path::Path, hook_url: &str) -> Vec<Value> {
    objects_with(dir, hook_url, |_| {})
}

fn objects_with(
    dir: &std::path::Path,
    hook_url: &str,
    edit: impl FnOnce(&std::path::Path),
) -> Vec<Value> {
    let manifests = dir.join("as-applied");
    std::fs::create_dir_all(&manifests).unwrap();
    write_manifests(&manifests, hook_url);
    edit(&manifests);
    let text = std::fs::read_to_string(manifests.join("pipeline.yaml")).unwrap();
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let mut v: Value = serde::Deserialize::deserialize(doc).unwrap();
        v["metadata"]["generation"] = json!(1);
        let uid = format!("uid-of-{}", v["metadata"]["name"].as_str().unwrap());
        v["metadata"]["uid"] = json!(uid);
        out.push(v);
    }
    out
}

/// A Pipeline whose strategy no plugin provides.
fn broken_pipeline() -> Value {
    json!({
        "apiVersion": "pipelines.weave.works/v1alpha1", "kind": "Pipeline",
        "metadata": {"name": "broken", "namespace": "flux-system", "generation": 3},
        "spec": {
            "appRef": {"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease", "name": "broken"},
            "environments": [
                {"name": "dev", "targets": [{"namespace": "broken-dev"}]},
                {"name": "prod", "targets": [{"namespace": "broken-prod"}]},
            ],
            "promotion": {"strategy": {"jenkins": {"url": "http://127.0.0.1:9/"}}},
        },
    })
}

/// A signed event for `pipeline` (namespace/name): dev deployed the app `broken`.
async fn broken_dev_deployed(server: &Server, pipeline: &str) -> (u16, String) {
    let url = format!("{}/promotion/{pipeline}/dev", server.webhook);
    let event = deployment_event("HelmRelease", "broken-dev", "broken", "1.0.0");
    promoter::client::post_signed(&url, serde_json::to_vec(&event).unwrap(), Some(EVENTS_KEY))
        .await
        .unwrap()
}

/// Runs `promoter serve` in Kubernetes mode with `extra` flags, expecting it to stop at
/// start; its stderr.
async fn serve_fails(
    dir: &std::path::Path,
    kubeconfig: &std::path::Path,
    extra: &[&str],
) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_promoter"))
        .args(["serve", "--data-dir"])
        .arg(dir.join("data"))
        .args([
            "--webhook-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .args(extra)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("POD_NAMESPACE")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success(), "serve started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A scratch folder `name` and the fake API server holding the example's objects, whose
/// webhook strategy calls `ci`.
async fn example_cluster(name: &str, ci: &Receiver) -> (std::path::PathBuf, Cluster) {
    let dir = scratch(name);
    std::fs::create_dir_all(&dir).unwrap();
    let cluster = cluster(&dir, objects(&dir, &ci.url("/job/promote"))).await;
    (dir, cluster)
}

/// dev reports `version` deployed; the promotion into test succeeds.
async fn promoted_into_test(server: &Server, api: &Api, version: &str) {
    let event = deployment_event("HelmRelease", "podinfo-dev", "podinfo", version);
    let (code, body) = send(server, "dev", &event, Some(EVENTS_KEY)).await;
    assert_eq!(code, 202, "{body}");
    wait_until("the promotion into test", server, || {
        promotion_of(api, "test", version).is_some_and(|p| p["status"]["phase"] == "succeeded")
    })
    .await;
}

async fn wait_until(what: &str, server: &Server, mut done: impl FnMut() -> bool) {
    for _ in 0..300 {
        if done() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}\n{}", server.logs());
}

// Multi-threaded: the fake API server keeps answering while the test waits for the
// server to start (a blocking wait).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_from_the_api_promote_and_report_ready_and_a_broken_one_does_not_stop_them() {
    let dir = scratch("kubernetes-mode");
    std::fs::create_dir_all(&dir).unwrap();
    let ci = Receiver::start(202, "queued").await;
    let mut applied = objects(&dir, &ci.url("/job/promote"));
    applied.push(broken_pipeline());
    // A team whose namespace the operator did not list in rbac.secrets.namespaces.
    let mut team = broken_pipeline();
    team["metadata"] = json!({"name": "shop", "namespace": "team-a", "generation": 1});
    team["spec"]["promotion"] = json!({
        "secretRef": {"name": "shop-events"},
        "webhook": {"url": ci.url("/job/shop")},
    });
    applied.push(team);
    // A Pipeline whose approval key is one of its event keys: dev's Flux could approve.
    let mut reused = broken_pipeline();
    reused["metadata"] = json!({"name": "reused", "namespace": "flux-system", "generation": 2});
    reused["spec"]["promotion"] = json!({
        "secretRef": {"name": "podinfo-events"},
        "approvalSecretRef": {"name": "podinfo-events"},
        "manual": true,
        "webhook": {"url": ci.url("/job/reused")},
    });
    applied.push(reused);
    let cluster = cluster(&dir, applied).await;
    let started = std::time::Instant::now();
    let mut server = Server::start_in_cluster(
        &cluster.kubeconfig,
        &dir.join("data"),
        &["--watch-interval", "200ms"],
    );

    // Each Pipeline's Ready condition says whether it is in force.
    let api = cluster.api.clone();
    wait_until("both Pipelines' status", &server, || {
        api.ready("flux-system/podinfo").is_some() && api.ready("flux-system/broken").is_some()
    })
    .await;
    let good = api.ready("flux-system/podinfo").unwrap();
    assert_eq!(good["status"], "True", "{good}");
    assert_eq!(good["observedGeneration"], 1);
    let bad = api.ready("flux-system/broken").unwrap();
    assert_eq!(bad["status"], "False", "{bad}");
    assert_eq!(bad["reason"], "Invalid");
    assert!(
        bad["message"].as_str().unwrap().contains("jenkins"),
        "the condition names the problem: {bad}"
    );
    assert_eq!(bad["observedGeneration"], 3);
    wait_until("the reused key's Pipeline status", &server, || {
        api.ready("flux-system/reused").is_some()
    })
    .await;
    let reused = api.ready("flux-system/reused").unwrap();
    assert_eq!(reused["status"], "False", "{reused}");
    assert_eq!(reused["reason"], "Invalid", "{reused}");
    let message = reused["message"].as_str().unwrap();
    assert!(
        message.contains(
            "Secret flux-system/podinfo-events, the approval key of promotions into prod"
        ) && message.contains("event key must never approve"),
        "the condition names the Secret and the rule: {reused}"
    );
    let (code, _) = broken_dev_deployed(&server, "flux-system/reused").await;
    assert_eq!(code, 401, "a Pipeline left out takes no events");
    // In force, but its key cannot be read: the status says why, events say so too.
    wait_until("the team's Pipeline status", &server, || {
        api.ready("team-a/shop").is_some()
    })
    .await;
    let shop = api.ready("team-a/shop").unwrap();
    assert_eq!(shop["status"], "False", "{shop}");
    assert_eq!(shop["reason"], "SecretUnavailable", "{shop}");
    let message = shop["message"].as_str().unwrap();
    assert!(
        message.contains("shop-events") && message.contains("rbac.secrets.namespaces"),
        "{shop}"
    );
    let (code, body) = broken_dev_deployed(&server, "team-a/shop").await;
    assert_eq!(code, 401, "{body}");
    assert!(
        !body.contains("shop-events"),
        "no Secret name to the caller: {body}"
    );
    assert!(server.logs().contains("shop-events"), "the log says which");

    // The good one works end to end; the broken one is not in force.
    let event = deployment_event("HelmRelease", "podinfo-dev", "podinfo", "6.5.4");
    let (code, body) = send(&server, "dev", &event, Some(EVENTS_KEY)).await;
    assert_eq!(code, 202, "{body}");
    server
        .wait_for("the promotion into test", |all| {
            all.iter()
                .any(|p| p["targetEnvironment"] == "test" && p["phase"] == "succeeded")
        })
        .await;
    assert_eq!(
        ci.received().len(),
        1,
        "the webhook plugin called the receiver"
    );
    // The same deployment reported again (another reporting instance): one Promotion.
    let mut again = deployment_event("HelmRelease", "podinfo-dev", "podinfo", "6.5.4");
    again.reporting_instance = "helm-controller-2".into();
    let (code, body) = send(&server, "dev", &again, Some(EVENTS_KEY)).await;
    assert!(code < 300, "{code} {body}");
    // The status tells the story per environment, Weave's waitingApproval included.
    wait_until("the latest promotion into test in status", &server, || {
        api.status("flux-system/podinfo").is_some_and(|s| {
            s["environments"]["test"]["latestPromotion"]["phase"] == "succeeded"
                && s["environments"]["test"]["latestPromotion"]["version"] == "6.5.4"
        })
    })
    .await;
    let event = deployment_event("HelmRelease", "podinfo-test", "podinfo", "6.5.4");
    let (code, body) = send(&server, "test", &event, Some(EVENTS_KEY)).await;
    assert_eq!(code, 202, "{body}");
    wait_until("prod waiting for approval in status", &server, || {
        api.status("flux-system/podinfo").is_some_and(|s| {
            s["environments"]["prod"]["waitingApproval"]["revision"] == "6.5.4"
                && s["environments"]["prod"]["latestPromotion"]["phase"] == "waiting-approval"
        })
    })
    .await;
    let (code, body) = broken_dev_deployed(&server, "flux-system/broken").await;
    assert_eq!(
        code, 401,
        "not in force: the same answer as no pipeline: {body}"
    );

    // Fixed in the cluster: in force once the watch brings it, without a restart.
    api.update("Pipeline", "flux-system", "broken", |broken| {
        broken["spec"]["promotion"] = json!({"webhook": {"url": ci.url("/job/broken")}});
        broken["metadata"]["generation"] = json!(4);
    });
    wait_until("the fixed Pipeline to be Ready", &server, || {
        api.ready("flux-system/broken")
            .is_some_and(|c| c["status"] == "True" && c["observedGeneration"] == 4)
    })
    .await;

    // Only what the chart's RBAC grants, and Secrets by name, never listed.
    api.assert_only_granted();
    let requests = api.requests.lock().unwrap().clone();
    let secrets: Vec<&String> = requests.iter().filter(|r| r.contains("/secrets")).collect();
    assert!(!secrets.is_empty());
    assert!(
        secrets.iter().all(|r| r
            .starts_with("GET /api/v1/namespaces/flux-system/secrets/podinfo-events?")
            || r.starts_with("GET /api/v1/namespaces/flux-system/secrets/podinfo-approvals?")
            || r.starts_with("GET /api/v1/namespaces/flux-system/secrets/ci-hmac?")
            || r.starts_with("GET /api/v1/namespaces/team-a/secrets/shop-events?")),
        "Secrets are read by the names Pipelines give: {secrets:#?}"
    );
    // Pipelines are listed once and then watched, not listed at every read.
    let pipeline_lists = api.lists_of("/apis/pipelines.weave.works/v1alpha1/pipelines");
    assert!(pipeline_lists <= 2, "{requests:#?}");
    // Reads so far: one per --watch-interval (200 ms) since the server started.
    let reads = started.elapsed().as_millis() / 200;
    // Promotions are listed once at start (before serving, as the watch's first list) and
    // then followed by that watch, not listed again at every read.
    let promotions = |watch: bool| {
        requests
            .iter()
            .filter(|r| r.starts_with("GET /apis/promoter.dev/v1alpha1/promotions?"))
            .filter(|r| r.contains("watch=true") == watch)
            .count()
    };
    assert!(promotions(true) >= 1, "{requests:#?}");
    assert_eq!(promotions(false), 1, "{requests:#?}");
    let key_reads = secrets
        .iter()
        .filter(|r| r.contains("/podinfo-events?"))
        .count();
    assert!(
        reads >= 5 && key_reads == 1,
        "a Secret is read once a minute, not at every read ({key_reads} reads of one in {reads} reads)"
    );
    // Kubernetes Events on the Pipeline tell each step.
    wait_until("the Events of both promotions", &server, || {
        let events = api.events.lock().unwrap();
        events.iter().any(|e| e["reason"] == "Promoted")
            && events.iter().any(|e| e["reason"] == "WaitingApproval")
    })
    .await;
    for e in api.events.lock().unwrap().iter() {
        assert_eq!(e["regarding"]["kind"], "Pipeline", "{e}");
        assert_eq!(e["regarding"]["name"], "podinfo", "{e}");
        assert_eq!(e["regarding"]["uid"], "uid-of-podinfo", "{e}");
        assert_eq!(e["reportingController"], "promoter", "{e}");
        assert_eq!(e["related"]["kind"], "Promotion", "{e}");
    }
    let events = api.events.lock().unwrap().clone();
    let promoted = events.iter().find(|e| e["reason"] == "Promoted").unwrap();
    assert!(
        promoted["note"]
            .as_str()
            .unwrap()
            .contains("6.5.4 into test"),
        "{promoted}"
    );
    let waiting = events
        .iter()
        .find(|e| e["reason"] == "WaitingApproval")
        .unwrap();
    assert!(
        waiting["note"]
            .as_str()
            .unwrap()
            .contains("6.5.4 into prod"),
        "{waiting}"
    );

    // `kubectl get promotions` tells the story, and an annotation approves.
    let promotions = api.of_kind("Promotion", Some("flux-system"));
    let prod = promotions
        .iter()
        .find(|p| p["spec"]["targetEnvironment"] == "prod")
        .expect("a Promotion resource for prod");
    wait_until("the Promotions' status", &server, || {
        let phase = |env: &str| {
            api.of_kind("Promotion", Some("flux-system"))
                .into_iter()
                .find(|p| p["spec"]["targetEnvironment"] == env)
                .map(|p| p["status"]["phase"].clone())
        };
        phase("test") == Some(json!("succeeded"))
            && phase("prod") == Some(json!("waiting-approval"))
    })
    .await;
    assert_eq!(prod["spec"]["version"], "6.5.4");
    let into_test = api
        .of_kind("Promotion", Some("flux-system"))
        .into_iter()
        .filter(|p| p["spec"]["targetEnvironment"] == "test")
        .count();
    assert_eq!(into_test, 1, "a duplicate event makes no second Promotion");
    assert_eq!(prod["spec"]["pipeline"], "podinfo");
    let name = prod["metadata"]["name"].as_str().unwrap().to_string();
    api.update("Promotion", "flux-system", &name, |prod| {
        prod["metadata"]["annotations"]["promoter.dev/approved"] = json!("true");
    });
    wait_until("the approved promotion into prod to run", &server, || {
        api.find("Promotion", "flux-system", &name)
            .is_some_and(|p| p["status"]["phase"] == "succeeded")
    })
    .await;
    assert_eq!(
        ci.received().len(),
        2,
        "prod was promoted once, after the approval"
    );

    // An unchanged status is not written again (once the last change is reported).
    wait_until(
        "prod's promotion in the Pipeline's status and Events",
        &server,
        || {
            let promoted = api
                .events
                .lock()
                .unwrap()
                .iter()
                .filter(|e| e["reason"] == "Promoted")
                .count();
            promoted == 2
                && api.status("flux-system/podinfo").is_some_and(|s| {
                    s["environments"]["prod"]["latestPromotion"]["phase"] == "succeeded"
                })
        },
    )
    .await;
    let before = api.patch_count();
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    assert_eq!(
        api.patch_count(),
        before,
        "status is written when it changes"
    );

    // After a restart the Promotions are found as they are: none created or written again.
    let promotion_writes = |api: &Api| {
        let requests = api.requests.lock().unwrap();
        requests
            .iter()
            .filter(|r| r.starts_with("POST") || r.starts_with("PUT"))
            .filter(|r| r.contains("/promotions"))
            .count()
    };
    let lists = |api: &Api| {
        let requests = api.requests.lock().unwrap();
        requests
            .iter()
            .filter(|r| r.starts_with("GET /apis/promoter.dev/v1alpha1/promotions"))
            .count()
    };
    server.kill();
    let (before, listed) = (promotion_writes(&api), lists(&api));
    server.restart();
    wait_until(
        "the restarted server to list the Promotions and watch them",
        &server,
        || lists(&api) >= listed + 2,
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(
        promotion_writes(&api),
        before,
        "nothing written again after a restart"
    );
}

#[tokio::test]
async fn without_an_api_server_kubernetes_mode_says_so_at_start() {
    let dir = scratch("kubernetes-no-api");
    std::fs::create_dir_all(&dir).unwrap();
    let port = support::free_port();
    let kubeconfig = kubeconfig(&dir, port, "any-token");
    let err = serve_fails(&dir, &kubeconfig, &[]).await;
    assert!(err.contains("cannot list Pipelines"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_configmaps_of_the_controllers_namespace_run_and_a_broken_one_is_reported() {
    use sha2::Digest;
    let dir = scratch("kubernetes-plugins");
    std::fs::create_dir_all(&dir).unwrap();
    let ci = Receiver::start(202, "ok").await;
    // Promotions into test use the custom plugin `fetcher`, configured with a url.
    let mut applied = objects_with(&dir, &ci.url("/job"), |m| {
        support::use_custom_plugin(m, "fetcher", &ci.url("/custom"))
    });
    let wasm = std::fs::read(env!("PROMOTER_WASM_FIXTURE_FORBIDDEN_HTTP")).unwrap();
    let plugin = |name: &str, digest: String| {
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": CONTROLLER_NS,
                         "labels": {"promoter.dev/plugin": "true"}},
            "data": {
                "sha256": digest,
                "grant": format!(
                    "namespaces: [flux-system]\nnamespaceSelector: {{matchLabels: {{promoter.dev/ci: \"true\"}}}}\nallow: [{origin}]\ncredentials:\n  - origin: {origin}\n    header: Authorization\n    prefix: \"Bearer \"\n    secretRef: {{name: ci-token, key: token}}\n",
                    origin = ci.origin()
                ),
            },
            "binaryData": {"plugin.wasm": support::base64_encode(&wasm)},
        })
    };
    applied.push(plugin("fetcher", hex::encode(sha2::Sha256::digest(&wasm))));
    applied.push(plugin("tampered", "0".repeat(64)));
    applied.push(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "ci-token", "namespace": CONTROLLER_NS},
        "data": {"token": support::base64_encode(b"t0ken-for-ci")},
    }));
    let mut uses_tampered = broken_pipeline();
    uses_tampered["metadata"]["name"] = json!("uses-tampered");
    uses_tampered["spec"]["promotion"] =
        json!({"strategy": {"plugin": {"name": "tampered", "config": {}}}});
    applied.push(uses_tampered);
    // A Pipeline of team-b, a namespace fetcher's grant does not name, borrowing the
    // operator's token: left out, and its Ready condition says how the operator opens it.
    let mut borrower = broken_pipeline();
    borrower["metadata"]["namespace"] = json!("team-b");
    borrower["metadata"]["name"] = json!("borrower");
    borrower["spec"]["promotion"] = json!({"strategy": {"plugin": {
        "name": "fetcher", "config": {"url": ci.url("/team-b")}}}});
    applied.push(borrower);
    // team-c is selected by its label: its Pipeline is in force.
    let mut selected = broken_pipeline();
    selected["metadata"]["namespace"] = json!("team-c");
    selected["metadata"]["name"] = json!("selected");
    selected["spec"]["promotion"] = json!({"strategy": {"plugin": {
        "name": "fetcher", "config": {"url": ci.url("/team-c")}}}});
    applied.push(selected);
    for (name, labels) in [
        ("team-b", json!({"kubernetes.io/metadata.name": "team-b"})),
        (
            "team-c",
            json!({"kubernetes.io/metadata.name": "team-c", "promoter.dev/ci": "true"}),
        ),
    ] {
        applied.push(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels}}));
    }
    let cluster = cluster(&dir, applied).await;
    let server = Server::start_in_cluster(
        &cluster.kubeconfig,
        &dir.join("data"),
        &["--watch-interval", "200ms"],
    );
    let api = cluster.api.clone();
    wait_until("both Pipelines' status", &server, || {
        api.ready("flux-system/podinfo").is_some()
            && api.ready("flux-system/uses-tampered").is_some()
            && api.ready("team-b/borrower").is_some()
            && api.ready("team-c/selected").is_some()
    })
    .await;
    let selected = api.ready("team-c/selected").unwrap();
    assert_eq!(selected["status"], "True", "{selected}");
    let borrower = api.ready("team-b/borrower").unwrap();
    assert_eq!(borrower["status"], "False", "{borrower}");
    let message = borrower["message"].as_str().unwrap();
    assert!(
        message.contains("plugin \"fetcher\" (ConfigMap promoter-system/fetcher) is not granted to namespace team-b")
            && message.contains("grant.namespaces")
            && message.contains("namespace team-b's labels do not match"),
        "{borrower}"
    );
    let (code, _) = broken_dev_deployed(&server, "team-b/borrower").await;
    assert_ne!(code, 202, "a Pipeline left out takes no events");
    assert_eq!(api.ready("flux-system/podinfo").unwrap()["status"], "True");
    let bad = api.ready("flux-system/uses-tampered").unwrap();
    assert_eq!(bad["status"], "False", "{bad}");
    assert!(
        bad["message"].as_str().unwrap().contains("tampered"),
        "{bad}"
    );
    assert!(
        server.logs().contains("digest mismatch"),
        "the broken ConfigMap is reported: {}",
        server.logs()
    );

    // The grant's Secret was read by name in the controller's namespace.
    support::fetcher_promotes_with_its_credential(&server, &ci, "5.0.0").await;
    api.assert_only_granted();
}

/// The Promotion of `version` into `env`, as the API server holds it.
fn promotion_of(api: &Api, env: &str, version: &str) -> Option<Value> {
    api.of_kind("Promotion", Some("flux-system"))
        .into_iter()
        .find(|p| p["spec"]["targetEnvironment"] == env && p["spec"]["version"] == version)
}

fn lease_holder(api: &Api) -> Option<String> {
    let lease = api.find("Lease", CONTROLLER_NS, "promoter")?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_string)
}

/// Named scenarios with several replicas against one API server: a status update that
/// meets a changed object is retried; the replica holding the Lease is killed
/// mid-promotion and another resumes the promotion (same idempotency key) and takes over
/// the Pipelines' status; a promotion recorded on one replica is approved through
/// another; duplicate events on two replicas make one Promotion run once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_run_each_promotion_once_and_one_resumes_what_a_killed_one_held() {
    let ci = Receiver::start(202, "queued").await;
    let (dir, cluster) = example_cluster("kubernetes-replicas", &ci).await;
    let api = cluster.api.clone();
    let interval = ["--watch-interval", "200ms"];
    let replica = |name: &str| {
        let data = dir.join(name);
        Server::start_replica(
            &cluster.kubeconfig,
            &data,
            &format!("promoter-{name}"),
            &interval,
        )
    };
    let calls = |id: &str| {
        ci.received()
            .iter()
            .filter(|r| r.header("Idempotency-Key") == Some(id))
            .count()
    };
    let name_of = |p: &Value| p["metadata"]["name"].as_str().unwrap().to_string();
    let mut a = replica("a");
    wait_until("replica a to take the Lease", &a, || {
        lease_holder(&api).as_deref() == Some("promoter-a")
    })
    .await;

    // Scenario: conflict on status update retried. The update recording the outcome finds
    // the Promotion changed meanwhile (someone annotated it): re-read, written again. Were
    // the outcome dropped, the claim would lapse and the promotion run a second time.
    api.conflict_next
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let event = deployment_event("HelmRelease", "podinfo-dev", "podinfo", "6.5.4");
    let (code, body) = send(&a, "dev", &event, Some(EVENTS_KEY)).await;
    assert_eq!(code, 202, "{body}");
    wait_until("the promotion of 6.5.4 to succeed", &a, || {
        promotion_of(&api, "test", "6.5.4").is_some_and(|p| p["status"]["phase"] == "succeeded")
    })
    .await;
    assert!(!api.conflict_next.load(std::sync::atomic::Ordering::SeqCst));
    let p = promotion_of(&api, "test", "6.5.4").unwrap();
    assert_eq!(p["status"]["attempts"], 1, "{p}");
    assert_eq!(
        p["metadata"]["annotations"]["example.com/touched-by"], "someone else",
        "the other writer's change is kept"
    );
    assert!(
        api.conflicts.lock().unwrap().contains(&name_of(&p)),
        "the outcome's first write was refused with 409"
    );
    assert_eq!(calls(&name_of(&p)), 1);

    // Scenario: leader change mid-promotion. Replica a, holding the Lease (and for now
    // alone), claims the promotion of 6.5.5 and calls the receiver, which holds the call.
    // Replica b starts; a is killed while its plugin waits.
    ci.hold.store(1, std::sync::atomic::Ordering::SeqCst);
    let event = deployment_event("HelmRelease", "podinfo-dev", "podinfo", "6.5.5");
    let (code, body) = send(&a, "dev", &event, Some(EVENTS_KEY)).await;
    assert_eq!(code, 202, "{body}");
    wait_until("replica a to call the receiver for 6.5.5", &a, || {
        ci.received()
            .iter()
            .any(|r| String::from_utf8_lossy(&r.body).contains("6.5.5"))
    })
    .await;
    let held = promotion_of(&api, "test", "6.5.5").unwrap();
    assert_eq!(held["status"]["phase"], "running", "{held}");
    assert_eq!(held["status"]["holder"], "promoter-a", "{held}");
    let id = name_of(&held);
    let b = replica("b");
    a.kill();
    let killed = std::time::Instant::now();
    let resumed = loop {
        if let Some(p) = promotion_of(&api, "test", "6.5.5")
            && p["status"]["phase"] == "succeeded"
        {
            break p;
        }
        assert!(
            killed.elapsed() < std::time::Duration::from_secs(30),
            "not resumed within 30 s\n{}",
            b.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let took = killed.elapsed();
    assert_eq!(resumed["status"]["attempts"], 2, "{resumed}");
    assert!(resumed["status"]["holder"].is_null(), "{resumed}");
    assert_eq!(calls(&id), 2, "the same idempotency key on both attempts");
    // Replica b took the Lease and reports the Pipeline's status now.
    wait_until(
        "replica b to report 6.5.5 in the Pipeline's status",
        &b,
        || {
            lease_holder(&api).as_deref() == Some("promoter-b")
                && api.status("flux-system/podinfo").is_some_and(|s| {
                    s["environments"]["test"]["latestPromotion"]["version"] == "6.5.5"
                        && s["environments"]["test"]["latestPromotion"]["phase"] == "succeeded"
                })
        },
    )
    .await;
    let lease = api.find("Lease", CONTROLLER_NS, "promoter").unwrap();
    assert_eq!(lease["spec"]["leaseTransitions"], 1, "{lease}");
    eprintln!("resumed {took:?} after the kill");

    // The killed pod is replaced, under a new name as a Deployment does.
    let c = replica("c");

    // Scenario: approval through another replica. Prod waits for approval, recorded by
    // b; the signed approval reaches c, which knows the Promotion from its watch.
    let event = deployment_event("HelmRelease", "podinfo-test", "podinfo", "6.5.4");
    let (code, body) = send(&b, "test", &event, Some(EVENTS_KEY)).await;
    assert_eq!(code, 202, "{body}");
    let approval = serde_json::to_vec(&promoter::client::ApprovalBody {
        namespace: "flux-system".into(),
        name: "podinfo".into(),
        environment: "prod".into(),
        revision: "6.5.4".into(),
        timestamp: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    })
    .unwrap();
    let url = format!("{}/approval/flux-system/podinfo/prod/6.5.4", c.webhook);
    let mut approved = (0, String::new());
    for _ in 0..50 {
        approved = promoter::client::post_signed(&url, approval.clone(), Some(APPROVAL_KEY))
            .await
            .unwrap();
        if approved.0 != 404 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(approved.0, 200, "{approved:?}");
    wait_until("the approved promotion into prod to succeed", &c, || {
        promotion_of(&api, "prod", "6.5.4").is_some_and(|p| p["status"]["phase"] == "succeeded")
    })
    .await;
    let prod = promotion_of(&api, "prod", "6.5.4").unwrap();
    assert_eq!(
        calls(&name_of(&prod)),
        1,
        "prod promoted once, after the approval: {prod}\n--- replica b\n{}\n--- replica c\n{}",
        b.logs(),
        c.logs()
    );

    // Scenario: one deployment reported to both replicas at once (by two instances of
    // helm-controller, so two events): one Promotion, run once.
    let event = deployment_event("HelmRelease", "podinfo-dev", "podinfo", "6.5.6");
    let mut again = event.clone();
    again.reporting_instance = "helm-controller-2".into();
    let (to_b, to_c) = tokio::join!(
        send(&b, "dev", &event, Some(EVENTS_KEY)),
        send(&c, "dev", &again, Some(EVENTS_KEY))
    );
    assert!(to_b.0 < 300 && to_c.0 < 300, "{to_b:?} {to_c:?}");
    assert!(to_b.0 == 202 || to_c.0 == 202, "{to_b:?} {to_c:?}");
    wait_until("the promotion of 6.5.6 to succeed", &b, || {
        promotion_of(&api, "test", "6.5.6").is_some_and(|p| p["status"]["phase"] == "succeeded")
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let p = promotion_of(&api, "test", "6.5.6").unwrap();
    assert_eq!(calls(&name_of(&p)), 1, "run once, by one replica");
    let created = api
        .of_kind("Promotion", Some("flux-system"))
        .iter()
        .filter(|p| p["spec"]["version"] == "6.5.6")
        .count();
    assert_eq!(created, 1);

    api.assert_only_granted();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_promotions_past_retention_are_deleted_but_the_newest_per_environment_stays() {
    let ci = Receiver::start(202, "queued").await;
    let (dir, cluster) = example_cluster("kubernetes-retention", &ci).await;
    let api = cluster.api.clone();
    let server = Server::start_in_cluster(
        &cluster.kubeconfig,
        &dir.join("data"),
        &["--watch-interval", "200ms", "--keep-finished", "1s"],
    );
    for version in ["1.0.0", "1.1.0"] {
        let event = deployment_event("HelmRelease", "podinfo-dev", "podinfo", version);
        let (code, body) = send(&server, "dev", &event, Some(EVENTS_KEY)).await;
        assert_eq!(code, 202, "{body}");
        wait_until("the promotion to succeed", &server, || {
            promotion_of(&api, "test", version).is_some_and(|p| p["status"]["phase"] == "succeeded")
        })
        .await;
    }
    wait_until(
        "the older finished Promotion to be deleted",
        &server,
        || promotion_of(&api, "test", "1.0.0").is_none(),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(
        promotion_of(&api, "test", "1.1.0").is_some(),
        "the newest into test stays, however old"
    );
    let listed = server.promotions().await;
    assert!(
        listed.iter().all(|p| p["version"] != "1.0.0"),
        "gone from /promotions too: {listed:#?}"
    );
    // Decisions still compare with the newest: the older version is not promoted again.
    let mut again = deployment_event("HelmRelease", "podinfo-dev", "podinfo", "1.0.0");
    again.reporting_instance = "helm-controller-2".into();
    let (code, body) = send(&server, "dev", &again, Some(EVENTS_KEY)).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("ignored"), "{body}");
    assert_eq!(ci.received().len(), 2);
    let deletes: Vec<String> = api
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.starts_with("DELETE"))
        .cloned()
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:#?}");
    api.assert_only_granted();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_promotion_crd_kubernetes_mode_stops_at_start_and_says_how_to_install_it() {
    let dir = scratch("kubernetes-no-crd");
    std::fs::create_dir_all(&dir).unwrap();
    let cluster = cluster(&dir, objects(&dir, "http://127.0.0.1:9/")).await;
    cluster
        .api
        .no_promotion_crd
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let err = serve_fails(&dir, &cluster.kubeconfig, &[]).await;
    assert!(
        err.contains("cannot list Promotion resources") && err.contains("promoter crds"),
        "{err}"
    );
}

/// A Promotion as `kubectl create` would make it in `ns`: the request fields, plus whatever
/// else its author wrote (the fake keeps unknown fields, as a CRD that preserves them
/// would).
fn requested(ns: &str, name: &str, spec: Value, annotations: Value) -> Value {
    json!({
        "apiVersion": "promoter.dev/v1alpha1", "kind": "Promotion",
        "metadata": {"name": name, "namespace": ns,
                     "labels": {"app.kubernetes.io/managed-by": "promoter"},
                     "annotations": annotations,
                     "creationTimestamp": jiff::Timestamp::now().to_string()},
        "spec": spec,
    })
}

fn promotion_named(api: &Api, name: &str) -> Option<Value> {
    api.find("Promotion", "flux-system", name)
}

/// Item 2 of the tenant rules: a Promotion resource is a request checked against its
/// Pipeline, never a command. Its author's strategy, config and targets are never run;
/// one the Pipeline does not allow (skipping an environment, created already approved,
/// named after another promotion) is refused with a condition and an Event, and kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_created_with_its_own_strategy_runs_the_pipelines_and_one_it_does_not_allow_is_refused()
 {
    use promoter::decide::promotion_id;
    let dir = scratch("kubernetes-requests");
    std::fs::create_dir_all(&dir).unwrap();
    let ci = Receiver::start(202, "queued").await;
    let evil = Receiver::start(200, "ok").await;
    let cluster = cluster(&dir, objects(&dir, &ci.url("/job/promote"))).await;
    let api = cluster.api.clone();
    let server = Server::start_in_cluster(
        &cluster.kubeconfig,
        &dir.join("data"),
        &["--watch-interval", "200ms"],
    );
    let own_strategy = json!({"plugin": "webhook", "config": {"url": evil.url("/steal")}});
    let create = |name: &str, spec: Value, annotations: Value| {
        let object = requested("flux-system", name, spec, annotations);
        let response = super_create(&api, object);
        assert_eq!(response, StatusCode::CREATED);
    };
    // Allowed: into test (after dev, the first), with a strategy of its author's own.
    let into_test = promotion_id("flux-system", "podinfo", "test", "9.9.0");
    create(
        &into_test,
        // Everything the spec carried before it became a request, so the same object
        // would have been obeyed as it stood.
        json!({"pipeline": "podinfo", "targetEnvironment": "test", "version": "9.9.0",
               "sourceEnvironment": "dev", "reason": "hotfix", "strategy": own_strategy,
               "targets": [{"namespace": "kube-system"}], "event": {},
               "app": {"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease", "name": "podinfo"}}),
        json!({}),
    );
    // Refused: prod for a version never promoted into test (skips an environment).
    let skip = promotion_id("flux-system", "podinfo", "prod", "9.8.0");
    create(
        &skip,
        json!({"pipeline": "podinfo", "targetEnvironment": "prod", "version": "9.8.0"}),
        json!({}),
    );
    // Refused: a name that is not its request's (another promotion's id, say).
    create(
        "podinfo-prod-anything",
        json!({"pipeline": "podinfo", "targetEnvironment": "test", "version": "9.7.0"}),
        json!({}),
    );
    wait_until(
        "the allowed request to run with the Pipeline's strategy",
        &server,
        || promotion_named(&api, &into_test).is_some_and(|p| p["status"]["phase"] == "succeeded"),
    )
    .await;
    assert!(
        evil.received().is_empty(),
        "the author's own strategy never ran: {:?}",
        evil.received()
    );
    let done = promotion_named(&api, &into_test).unwrap();
    assert_eq!(done["status"]["plugin"], "webhook");
    assert_eq!(done["status"]["conditions"][0]["type"], "Accepted");
    assert_eq!(done["status"]["conditions"][0]["status"], "True");
    let received = ci.received();
    assert_eq!(received.len(), 1, "the Pipeline's receiver got it");
    let body: Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(body["version"], "9.9.0");
    assert_eq!(
        body["targets"][0]["namespace"], "podinfo-test",
        "the Pipeline's targets: {body}"
    );

    // Prod waits for approval even on request; created pre-approved it is refused.
    let approved_at_birth = promotion_id("flux-system", "podinfo", "prod", "9.9.0");
    create(
        &approved_at_birth,
        json!({"pipeline": "podinfo", "targetEnvironment": "prod", "version": "9.9.0"}),
        json!({"promoter.dev/approved": "true"}),
    );
    for (name, why) in [
        (skip.as_str(), "cannot skip an environment"),
        ("podinfo-prod-anything", "must be named"),
        (
            approved_at_birth.as_str(),
            "approval is given to a promotion waiting for it",
        ),
    ] {
        wait_until("the request to be refused", &server, || {
            promotion_named(&api, name).is_some_and(|p| p["status"]["phase"] == "refused")
        })
        .await;
        let refused = promotion_named(&api, name).unwrap();
        let condition = &refused["status"]["conditions"][0];
        assert_eq!(condition["status"], "False", "{refused}");
        assert!(
            condition["message"].as_str().unwrap().contains(why),
            "{refused}"
        );
    }
    wait_until("an Event for each refusal", &server, || {
        api.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["reason"] == "PromotionRefused")
            .count()
            >= 3
    })
    .await;
    assert!(
        evil.received().is_empty(),
        "the author's own strategy never ran"
    );
    assert_eq!(
        ci.received().len(),
        1,
        "nothing refused reached the receiver"
    );
    let listed = server.promotions().await;
    assert_eq!(
        listed.iter().filter(|p| p["phase"] == "refused").count(),
        3,
        "refused requests are kept, not dropped: {listed:#?}"
    );

    // A request refused under the id of a promotion to come (planted, or asked for too
    // soon) does not swallow it: the signed event's promotion replaces it and runs.
    let planted = promotion_id("flux-system", "podinfo", "test", "9.9.5");
    create(
        &planted,
        json!({"pipeline": "podinfo", "targetEnvironment": "test", "version": "9.9.5"}),
        json!({"promoter.dev/approved": "true"}),
    );
    wait_until("the planted request to be refused", &server, || {
        promotion_named(&api, &planted).is_some_and(|p| p["status"]["phase"] == "refused")
    })
    .await;
    let event = deployment_event("HelmRelease", "podinfo-dev", "podinfo", "9.9.5");
    let (code, body) = send(&server, "dev", &event, Some(EVENTS_KEY)).await;
    assert_eq!(code, 202, "{body}");
    wait_until("the event's promotion to run in its place", &server, || {
        promotion_named(&api, &planted).is_some_and(|p| p["status"]["phase"] == "succeeded")
    })
    .await;
    let received = ci.received();
    assert_eq!(received.len(), 2, "{received:?}");
    let body: Value = serde_json::from_slice(&received[1].body).unwrap();
    assert_eq!(body["version"], "9.9.5");
    api.assert_only_granted();
}

fn super_create(api: &Api, object: Value) -> StatusCode {
    let ns = object["metadata"]["namespace"]
        .as_str()
        .unwrap()
        .to_string();
    create(api, object, &ns, "promotions").status()
}

// ---- The admin API: Kubernetes tokens, RBAC per namespace (#17 item 9) ----------------

const ALICE_TOKEN: &str = "token-of-alice-of-team-a";
const BOB_TOKEN: &str = "token-of-bob-of-team-b";
const BOT_TOKEN: &str = "token-of-team-a-release-bot";

/// The Role and RoleBinding the chart's README tells an operator to apply so that a team
/// may read its promotions, for `team` (the README's example is team-a).
fn readers_of(team: &str) -> Vec<Value> {
    let readme = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/promoter/README.md"
    ))
    .unwrap();
    let after = readme
        .split("Give a team read access")
        .nth(1)
        .expect("the chart README says how to grant read access");
    let yaml = after.split("```yaml\n").nth(1).unwrap();
    let yaml = yaml.split("```").next().unwrap().replace("team-a", team);
    serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .collect()
}

/// A promotion Promoter recorded and finished earlier in `ns` (Pipeline `shop`), with
/// what its team would not show another: the CI job it started.
fn finished(ns: &str, version: &str) -> Value {
    let id = promoter::decide::promotion_id(ns, "shop", "prod", version);
    let spec = json!({"pipeline": "shop", "targetEnvironment": "prod", "version": version,
                      "sourceEnvironment": "test"});
    let mut p = requested(ns, &id, spec, json!({}));
    p["status"] = json!({
        "phase": "succeeded", "attempts": 1, "plugin": "webhook",
        "outcomeUrl": format!("https://ci.example.com/{ns}/secret-job-{version}"),
        "finishedAt": "2026-12-01T10:00:05Z",
    });
    p
}

async fn admin_get(server: &Server, path: &str, token: Option<&str>) -> (u16, Value) {
    let url = format!("{}{path}", server.admin);
    promoter::client::admin_get(&url, token).await.unwrap()
}

fn ids(listing: &Value) -> Vec<String> {
    let all = listing["promotions"].as_array().unwrap();
    all.iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}

/// Two teams' promotions, each team granted read access to its own namespace as the
/// chart's README says, and the server started; (team-a's id, team-b's id).
async fn two_teams(dir: &std::path::Path) -> (Cluster, Server, String, String) {
    use promoter::decide::promotion_id;
    let mut applied = objects(dir, "http://127.0.0.1:9/");
    applied.extend([finished("team-a", "1.0.0"), finished("team-b", "2.0.0")]);
    applied.extend(readers_of("team-a"));
    applied.extend(readers_of("team-b"));
    let cluster = cluster(dir, applied).await;
    let api = &cluster.api;
    api.add_user(ALICE_TOKEN, "alice", &["team-a", "system:authenticated"]);
    api.add_user(BOB_TOKEN, "bob", &["team-b", "system:authenticated"]);
    let bot = "system:serviceaccount:team-a:release-bot";
    let bot_groups = ["system:serviceaccounts", "system:serviceaccounts:team-a"];
    api.add_user(BOT_TOKEN, bot, &bot_groups);
    let server = Server::start_in_cluster(
        &cluster.kubeconfig,
        &dir.join("data"),
        &["--watch-interval", "200ms"],
    );
    let (a, b) = (
        promotion_id("team-a", "shop", "prod", "1.0.0"),
        promotion_id("team-b", "shop", "prod", "2.0.0"),
    );
    server
        .wait_for(
            "both teams' promotions, as the cluster admin sees them",
            |all| {
                all.iter().any(|p| p["id"] == a.as_str())
                    && all.iter().any(|p| p["id"] == b.as_str())
            },
        )
        .await;
    (cluster, server, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_token_cannot_read_another_namespaces_promotions() {
    let dir = scratch("kubernetes-admin-tenants");
    std::fs::create_dir_all(&dir).unwrap();
    let (cluster, server, a_id, b_id) = two_teams(&dir).await;
    let api = cluster.api.clone();

    // Alice (team-a) lists: team-a's promotion, nothing of team-b's.
    let (code, listing) = admin_get(&server, "/promotions", Some(ALICE_TOKEN)).await;
    assert_eq!(code, 200, "{listing}");
    assert_eq!(ids(&listing), vec![a_id.clone()], "{listing}");
    let text = listing.to_string();
    assert!(
        !text.contains("team-b") && !text.contains("secret-job-2.0.0"),
        "{text}"
    );
    // Asking for team-b's namespace outright: 403 naming what is missing, and no data.
    let (code, refused) =
        admin_get(&server, "/promotions?namespace=team-b", Some(ALICE_TOKEN)).await;
    assert_eq!(code, 403, "{refused}");
    assert_eq!(refused["verb"], "list", "{refused}");
    assert_eq!(refused["group"], "promoter.dev", "{refused}");
    assert_eq!(refused["resource"], "promotions", "{refused}");
    assert_eq!(refused["namespace"], "team-b", "{refused}");
    assert!(
        !refused.to_string().contains(&b_id) && !refused.to_string().contains("secret-job"),
        "{refused}"
    );
    // Team-b's promotion by its id: exactly the answer for an id that does not exist.
    let (code, theirs) =
        admin_get(&server, &format!("/promotions/{b_id}"), Some(ALICE_TOKEN)).await;
    assert_eq!(code, 404, "alice read team-b's promotion: {theirs}");
    let nothing = promoter::decide::promotion_id("team-b", "shop", "prod", "9.9.9");
    let (code, missing) = admin_get(
        &server,
        &format!("/promotions/{nothing}"),
        Some(ALICE_TOKEN),
    )
    .await;
    assert_eq!(code, 404, "{missing}");
    assert_eq!(
        theirs.to_string().replace(&b_id, "ID"),
        missing.to_string().replace(&nothing, "ID"),
        "an unreadable promotion is answered as a missing one"
    );
    // Her own team's: readable.
    let (code, own) = admin_get(&server, &format!("/promotions/{a_id}"), Some(ALICE_TOKEN)).await;
    assert_eq!(code, 200, "{own}");
    assert_eq!(
        own["outcomeUrl"],
        "https://ci.example.com/team-a/secret-job-1.0.0"
    );
    // And the other way round: bob sees team-b's only; team-a's bot (a ServiceAccount
    // subject of the README's RoleBinding) sees team-a's only.
    let (code, listing) = admin_get(&server, "/promotions", Some(BOB_TOKEN)).await;
    assert_eq!(
        (code, ids(&listing)),
        (200, vec![b_id.clone()]),
        "{listing}"
    );
    let (code, _) = admin_get(&server, &format!("/promotions/{a_id}"), Some(BOB_TOKEN)).await;
    assert_eq!(code, 404);
    let (code, listing) = admin_get(&server, "/promotions", Some(BOT_TOKEN)).await;
    assert_eq!(
        (code, ids(&listing)),
        (200, vec![a_id.clone()]),
        "{listing}"
    );

    // What Promoter asked the API server, in the documented shapes.
    let reviews = api.token_reviews.lock().unwrap().clone();
    let alice = reviews
        .iter()
        .find(|r| r["spec"]["token"] == ALICE_TOKEN)
        .expect("alice's token was reviewed");
    assert_eq!(alice["apiVersion"], "authentication.k8s.io/v1", "{alice}");
    assert_eq!(alice["kind"], "TokenReview", "{alice}");
    let access = api.access_reviews.lock().unwrap().clone();
    let mut asked = Vec::new();
    for (review, allowed) in access.iter().filter(|(r, _)| r["spec"]["user"] == "alice") {
        assert_eq!(review["apiVersion"], "authorization.k8s.io/v1", "{review}");
        assert_eq!(review["kind"], "SubjectAccessReview", "{review}");
        let attributes = &review["spec"]["resourceAttributes"];
        assert_eq!(attributes["group"], "promoter.dev", "{review}");
        assert_eq!(attributes["resource"], "promotions", "{review}");
        assert_eq!(
            review["spec"]["groups"],
            json!(["team-a", "system:authenticated"]),
            "{review}"
        );
        let (ns, verb) = (
            attributes["namespace"].as_str(),
            attributes["verb"].as_str(),
        );
        asked.push((ns.unwrap().to_string(), verb.unwrap().to_string(), *allowed));
    }
    for want in [
        ("team-a", "list", true),
        ("team-b", "list", false),
        ("team-b", "get", false),
        ("team-a", "get", true),
    ] {
        let want = (want.0.to_string(), want.1.to_string(), want.2);
        assert!(asked.contains(&want), "{want:?} not in {asked:?}");
    }
    // Answers are reused for a few seconds: team-b's list was asked twice, reviewed once.
    let times = |ns: &str, verb: &str| {
        let key = (ns.to_string(), verb.to_string());
        asked
            .iter()
            .filter(|(n, v, _)| (n.clone(), v.clone()) == key)
            .count()
    };
    assert_eq!(times("team-b", "list"), 1, "{asked:?}");
    assert!(
        server.logs().contains("caller=user alice"),
        "the caller is in the request's span:\n{}",
        server.logs()
    );
    api.assert_only_granted();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_or_missing_token_gets_401_and_only_health_and_metrics_stay_open() {
    let dir = scratch("kubernetes-admin-unknown");
    std::fs::create_dir_all(&dir).unwrap();
    let (cluster, server, a_id, _) = two_teams(&dir).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for token in [None, Some("made-up-token"), Some("")] {
        for path in [
            "/promotions".to_string(),
            format!("/promotions/{a_id}"),
            "/promotions?namespace=team-a".into(),
            "/no-such-route".into(),
        ] {
            let mut request = client.get(format!("{}{path}", server.admin));
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401, "{token:?} {path}");
            let challenge = response.headers().get("www-authenticate").cloned();
            assert_eq!(challenge.unwrap(), "Bearer", "{token:?} {path}");
            let body = response.text().await.unwrap();
            assert!(
                !body.contains(&a_id) && !body.contains("secret-job"),
                "{body}"
            );
        }
    }
    for path in ["/healthz", "/readyz", "/metrics"] {
        let response = client
            .get(format!("{}{path}", server.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path} is open");
    }
    let reviews = cluster.api.token_reviews.lock().unwrap().clone();
    let unknown = reviews
        .iter()
        .find(|r| r["spec"]["token"] == "made-up-token")
        .expect("the unknown token was reviewed");
    assert_eq!(unknown["kind"], "TokenReview", "{unknown}");
    assert!(
        reviews.iter().all(|r| r["spec"]["token"] != ""),
        "an empty token is refused before asking: {reviews:?}"
    );
    cluster.api.assert_only_granted();
}
