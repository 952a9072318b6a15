//! Load and timeouts against the fake API server: Pipelines and plugin ConfigMaps are
//! followed by watches (API priority and fairness may throttle every list meanwhile); an
//! event whose Promotion create is throttled or answered late gets 503 with Retry-After
//! before Flux's 15 s timeout, and Flux's retry records it once; the Lease holder stops
//! writing before another replica may take the Lease, and gives it up on release.

use super::api::*;
use super::support::{self, EVENTS_KEY, Receiver, Server, scratch};
use super::{broken_pipeline, example_cluster, lease_holder, objects, serve_fails, wait_until};
use promoter::client::{deployment_event, signature_header};
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const PIPELINES: &str = "/apis/pipelines.weave.works/v1alpha1/pipelines";
const CONFIG_MAPS: &str = "/api/v1/namespaces/promoter-system/configmaps";

/// A Pipeline of flux-system named `name` promoting with `promotion`.
fn pipeline(name: &str, promotion: Value) -> Value {
    let mut p = broken_pipeline();
    p["metadata"] = json!({"name": name, "namespace": "flux-system", "generation": 1});
    p["spec"]["promotion"] = promotion;
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_and_plugins_changed_in_the_cluster_arrive_through_the_watch_while_every_list_is_throttled()
 {
    use sha2::Digest;
    let dir = scratch("kubernetes-watch-catalog");
    std::fs::create_dir_all(&dir).unwrap();
    let ci = Receiver::start(202, "ok").await;
    let cluster = cluster(&dir, objects(&dir, &ci.url("/job"))).await;
    let api = cluster.api.clone();
    let server = Server::start_in_cluster(
        &cluster.kubeconfig,
        &dir.join("data"),
        &["--watch-interval", "200ms"],
    );
    wait_until("podinfo's status", &server, || {
        api.ready("flux-system/podinfo").is_some()
    })
    .await;
    let listed = (api.lists_of(PIPELINES), api.lists_of(CONFIG_MAPS));
    assert_eq!(listed, (1, 1), "each listed once, at start");

    // From now on API priority and fairness answers every list with 429.
    const THROTTLED: usize = 1_000_000;
    api.retry_after.store(1, Ordering::SeqCst);
    api.throttle_lists.store(THROTTLED, Ordering::SeqCst);

    // A Pipeline added is in force, then a change to it is seen.
    api.add(pipeline(
        "late",
        json!({"webhook": {"url": ci.url("/job/late")}}),
    ));
    wait_until("the added Pipeline to be Ready", &server, || {
        api.ready("flux-system/late")
            .is_some_and(|c| c["status"] == "True")
    })
    .await;
    api.update("Pipeline", "flux-system", "late", |late| {
        late["spec"]["promotion"] =
            json!({"strategy": {"jenkins": {"url": "http://127.0.0.1:9/"}}});
        late["metadata"]["generation"] = json!(2);
    });
    wait_until("the changed Pipeline to be refused", &server, || {
        api.ready("flux-system/late")
            .is_some_and(|c| c["status"] == "False" && c["observedGeneration"] == 2)
    })
    .await;

    // A plugin ConfigMap installed after the Pipeline that needs it.
    api.add(pipeline(
        "custom",
        json!({"strategy": {"plugin": {"name": "fetcher", "config": {"url": ci.url("/custom")}}}}),
    ));
    wait_until(
        "the Pipeline without its plugin to be refused",
        &server,
        || {
            api.ready("flux-system/custom")
                .is_some_and(|c| c["status"] == "False")
        },
    )
    .await;
    let wasm = std::fs::read(env!("PROMOTER_WASM_FIXTURE_FORBIDDEN_HTTP")).unwrap();
    api.add(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "fetcher", "namespace": CONTROLLER_NS,
                     "labels": {"promoter.dev/plugin": "true"}},
        "data": {
            "sha256": hex::encode(sha2::Sha256::digest(&wasm)),
            "grant": format!("namespaces: [flux-system]\nallow: [{}]\n", ci.origin()),
        },
        "binaryData": {"plugin.wasm": support::base64_encode(&wasm)},
    }));
    wait_until("the Pipeline to be Ready with its plugin", &server, || {
        api.ready("flux-system/custom")
            .is_some_and(|c| c["status"] == "True")
    })
    .await;

    // Reads go on every 200 ms, from the watches' caches: no list was even tried.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        (api.lists_of(PIPELINES), api.lists_of(CONFIG_MAPS)),
        listed,
        "{:#?}",
        api.requests.lock().unwrap()
    );
    assert_eq!(api.throttle_lists.load(Ordering::SeqCst), THROTTLED);
    api.assert_only_granted();
}

/// Posts the signed event `body` as Flux does: (status, Retry-After, body, time taken).
async fn flux_posts(
    server: &Server,
    env: &str,
    body: &[u8],
) -> (u16, Option<String>, Value, Duration) {
    let started = Instant::now();
    let answer = reqwest::Client::new()
        .post(support::event_url(server, env))
        .header("content-type", "application/json")
        .header("x-signature", signature_header(EVENTS_KEY, body))
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let retry_after = answer
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let body = answer.json().await.unwrap_or(Value::Null);
    (status, retry_after, body, started.elapsed())
}

/// The Promotion resources into `env`.
fn promotions_into(api: &Api, env: &str) -> Vec<Value> {
    api.of_kind("Promotion", Some("flux-system"))
        .into_iter()
        .filter(|p| p["spec"]["targetEnvironment"] == env)
        .collect()
}

#[tokio::test]
async fn an_accept_timeout_flux_would_not_wait_for_is_refused_at_start() {
    let dir = scratch("kubernetes-accept-timeout");
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = kubeconfig(&dir, support::free_port(), TOKEN);
    for flag in ["15s", "0s"] {
        let err = serve_fails(&dir, &kubeconfig, &["--accept-timeout", flag]).await;
        assert!(
            err.contains(&format!("--accept-timeout {flag}"))
                && err.contains("below the 15s Flux's notification-controller waits"),
            "{err}"
        );
    }
}

/// The event's 202 `answer` recorded the promotion into test, which then ran once: one
/// Promotion resource, one call to the receiver.
async fn promoted_once_into_test(api: &Api, server: &Server, ci: &Receiver, answer: &Value) {
    assert_eq!(answer["promotions"][0]["phase"], "pending", "{answer}");
    server
        .wait_for("the promotion into test", |all| {
            all.iter()
                .any(|p| p["targetEnvironment"] == "test" && p["phase"] == "succeeded")
        })
        .await;
    assert_eq!(promotions_into(api, "test").len(), 1, "one Promotion");
    assert_eq!(ci.received().len(), 1, "promoted once");
}

/// Kubernetes mode with a 2 s accept bound, podinfo in force (its webhook strategy calls
/// the receiver), in the scratch folder `name`.
async fn bounded(name: &str) -> (Receiver, Cluster, Server) {
    let ci = Receiver::start(202, "queued").await;
    let (dir, cluster) = example_cluster(name, &ci).await;
    let server = Server::start_in_cluster(
        &cluster.kubeconfig,
        &dir.join("data"),
        &["--watch-interval", "200ms", "--accept-timeout", "2s"],
    );
    let api = cluster.api.clone();
    wait_until("podinfo's status", &server, || {
        api.ready("flux-system/podinfo").is_some()
    })
    .await;
    (ci, cluster, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_meeting_a_throttled_create_gets_503_within_the_bound_and_flux_s_retry_records_it_once()
 {
    let (ci, cluster, server) = bounded("kubernetes-throttled-create").await;
    let api = cluster.api.clone();
    // Three creates refused with 429 and Retry-After: 1; kube-client would wait them out
    // (3 s), past the 2 s bound.
    api.retry_after.store(1, Ordering::SeqCst);
    api.throttle_creates.store(3, Ordering::SeqCst);
    let event = deployment_event("HelmRelease", "podinfo-dev", "podinfo", "6.5.4");
    let body = serde_json::to_vec(&event).unwrap();

    let (status, retry_after, answer, took) = flux_posts(&server, "dev", &body).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(retry_after.as_deref(), Some("5"), "{answer}");
    assert!(
        took < Duration::from_millis(3500),
        "answered after {took:?}, not within the 2 s bound"
    );
    assert!(
        answer["reason"]
            .as_str()
            .unwrap()
            .contains("did not confirm"),
        "{answer}"
    );

    // Flux retries the same body (sooner than Retry-After, to keep the test short).
    let mut tries = Vec::new();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (status, _, answer, _) = flux_posts(&server, "dev", &body).await;
        tries.push((status, answer));
        if status != 503 || tries.len() == 4 {
            break;
        }
    }
    let (status, answer) = tries.last().unwrap();
    assert_eq!(*status, 202, "{tries:#?}");
    promoted_once_into_test(&api, &server, &ci, answer).await;
    assert_eq!(api.throttle_creates.load(Ordering::SeqCst), 0);
    api.assert_only_granted();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_committed_but_answered_504_is_one_promotion_and_flux_s_retry_is_no_replay() {
    let (ci, cluster, server) = bounded("kubernetes-504-after-commit").await;
    let api = cluster.api.clone();

    // Stored, answered 504: kube-client's own retry meets AlreadyExists, and the webhook
    // knows the Promotion for this event's.
    api.timeout_after_commit.store(1, Ordering::SeqCst);
    let event = deployment_event("HelmRelease", "podinfo-dev", "podinfo", "6.5.4");
    let body = serde_json::to_vec(&event).unwrap();
    let (status, _, answer, _) = flux_posts(&server, "dev", &body).await;
    assert_eq!(status, 202, "{answer}");
    promoted_once_into_test(&api, &server, &ci, &answer).await;
    // Answered now: the same body again is a replay.
    let (status, _, answer, _) = flux_posts(&server, "dev", &body).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["result"], "replay");

    // Stored, answered 504 asking for 30 s: past the bound the webhook answers 503; Flux's
    // retry finds the Promotion its first attempt made, and is answered 2xx.
    api.retry_after.store(30, Ordering::SeqCst);
    api.timeout_after_commit.store(1, Ordering::SeqCst);
    let event = deployment_event("HelmRelease", "podinfo-test", "podinfo", "6.5.4");
    let body = serde_json::to_vec(&event).unwrap();
    let (status, retry_after, answer, took) = flux_posts(&server, "test", &body).await;
    assert_eq!(
        (status, retry_after.as_deref()),
        (503, Some("5")),
        "{answer}"
    );
    assert!(took < Duration::from_millis(3500), "{took:?}");
    assert_eq!(
        promotions_into(&api, "prod").len(),
        1,
        "the create committed"
    );
    let (status, _, answer, _) = flux_posts(&server, "test", &body).await;
    assert!(
        (200..300).contains(&status) && answer["result"] != "replay",
        "{status} {answer}"
    );
    let prod = promotions_into(&api, "prod");
    assert_eq!(prod.len(), 1, "one Promotion into prod: {prod:#?}");
    wait_until("prod's promotion to wait for approval", &server, || {
        promotions_into(&api, "prod")
            .first()
            .is_some_and(|p| p["status"]["phase"] == "waiting-approval")
    })
    .await;
    api.assert_only_granted();
}

/// A kube client for the fake API server, as a replica in the test's hands.
async fn client(kubeconfig: &std::path::Path) -> kube::Client {
    let config = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let options = kube::config::KubeConfigOptions::default();
    let config = kube::Config::from_custom_kubeconfig(config, &options)
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn status_writes(api: &Api) -> usize {
    let requests = api.requests.lock().unwrap();
    requests
        .iter()
        .filter(|r| {
            r.starts_with("PATCH /apis/pipelines.weave.works/v1alpha1/namespaces/")
                && r.contains("/status?")
        })
        .count()
}

/// The Lease holder's status writes hang for 20 s (longer than the Lease's 15 s). The
/// holder cuts them short within the renew deadline and keeps renewing, so the test's own
/// replica never finds the Lease lapsed; had it taken the Lease, no status write of the
/// old holder may follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_api_server_cannot_keep_the_lease_holder_writing_after_another_replica_takes_it() {
    use promoter::cluster::lease::Leadership;
    let dir = scratch("kubernetes-slow-status");
    std::fs::create_dir_all(&dir).unwrap();
    let ci = Receiver::start(202, "queued").await;
    let mut applied = objects(&dir, &ci.url("/job/promote"));
    applied.push(broken_pipeline());
    let cluster = cluster(&dir, applied).await;
    let api = cluster.api.clone();
    *api.slow_status.lock().unwrap() = Some(Duration::from_secs(20));
    let server = Server::start_replica(
        &cluster.kubeconfig,
        &dir.join("data"),
        "promoter-a",
        &["--watch-interval", "200ms"],
    );
    wait_until("the first status write", &server, || {
        lease_holder(&api).as_deref() == Some("promoter-a") && status_writes(&api) > 0
    })
    .await;

    let other = Leadership::new(
        client(&cluster.kubeconfig).await,
        CONTROLLER_NS,
        "promoter-b",
    );
    let watched = Instant::now();
    let mut taken = None;
    while watched.elapsed() < Duration::from_secs(24) {
        if taken.is_none() && other.lead().await.unwrap() {
            taken = Some((watched.elapsed(), status_writes(&api)));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if let Some((at, writes)) = taken {
        assert_eq!(
            status_writes(&api),
            writes,
            "promoter-a wrote status after promoter-b took the Lease ({at:?} in)\n{}",
            server.logs()
        );
    }
    assert_eq!(
        taken,
        None,
        "promoter-a stopped renewing while its status writes hung\n{}",
        server.logs()
    );
    assert!(
        server.logs().contains("cut short"),
        "the log says why status is late\n{}",
        server.logs()
    );

    // The API server is fast again: the status is written.
    *api.slow_status.lock().unwrap() = None;
    wait_until("podinfo's status", &server, || {
        api.ready("flux-system/podinfo").is_some()
    })
    .await;
}

/// A replica going away releases the Lease: the next replica takes it at its next sync,
/// not 15 s later, and writes the Pipelines' status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_lease_is_taken_by_the_next_replica_at_once() {
    use promoter::cluster::lease::Leadership;
    let ci = Receiver::start(202, "queued").await;
    let (dir, cluster) = example_cluster("kubernetes-lease-release", &ci).await;
    let api = cluster.api.clone();
    let leaving = Leadership::new(
        client(&cluster.kubeconfig).await,
        CONTROLLER_NS,
        "promoter-old",
    );
    assert!(leaving.lead().await.unwrap());
    let server = Server::start_replica(
        &cluster.kubeconfig,
        &dir.join("data"),
        "promoter-new",
        &["--watch-interval", "200ms"],
    );
    // Serving, and not the holder: no status written.
    server.promotions().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(lease_holder(&api).as_deref(), Some("promoter-old"));
    assert!(api.ready("flux-system/podinfo").is_none());

    assert!(leaving.release().await.unwrap(), "released");
    let lease = api.find("Lease", CONTROLLER_NS, "promoter").unwrap();
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 1, "{lease}");
    let released = Instant::now();
    wait_until("promoter-new to take the Lease", &server, || {
        lease_holder(&api).as_deref() == Some("promoter-new")
    })
    .await;
    assert!(
        released.elapsed() < Duration::from_secs(3),
        "taken {:?} after the release",
        released.elapsed()
    );
    wait_until("podinfo's status from the new holder", &server, || {
        api.ready("flux-system/podinfo").is_some()
    })
    .await;
    // Only the holder releases.
    assert!(!leaving.release().await.unwrap());
    assert_eq!(lease_holder(&api).as_deref(), Some("promoter-new"));
    api.assert_only_granted();
}
