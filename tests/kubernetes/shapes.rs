//! What a real API server does that a kind fake did not (issue #18, Kubernetes): merge
//! patches that keep what they do not mention, label values of 63 characters, CRD schemas,
//! and watches that close early, reset mid-event and expire (410 Gone) across an upgrade.

use super::*;

/// A scratch folder for `name`, the fake API server holding `applied(folder)`, and the
/// server started against it (re-reading every 200 ms).
async fn serving(
    name: &str,
    applied: impl FnOnce(&std::path::Path) -> Vec<Value>,
) -> (std::sync::Arc<Api>, Server) {
    let dir = scratch(name);
    std::fs::create_dir_all(&dir).unwrap();
    let cluster = cluster(&dir, applied(&dir)).await;
    let server = Server::start_in_cluster(
        &cluster.kubeconfig,
        &dir.join("data"),
        &["--watch-interval", "200ms"],
    );
    (cluster.api, server)
}

/// The deployment of 6.5.4 reported from `env` of `pipeline` (flux-system/<name>).
async fn deployed(server: &Server, pipeline: &str, env: &str) -> (u16, String) {
    let url = format!("{}/promotion/flux-system/{pipeline}/{env}", server.webhook);
    let event = deployment_event("HelmRelease", &format!("podinfo-{env}"), "podinfo", "6.5.4");
    promoter::client::post_signed(&url, serde_json::to_vec(&event).unwrap(), Some(EVENTS_KEY))
        .await
        .unwrap()
}

/// Item 8: once the promotion waiting for approval is approved and runs, the Pipeline's
/// status no longer says a version waits (Weave's UI offers Approve while it does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_promotion_no_longer_waits_for_approval_in_the_pipelines_status() {
    let ci = Receiver::start(202, "queued").await;
    let (api, server) = serving("kubernetes-waiting-cleared", |dir| {
        objects(dir, &ci.url("/job/promote"))
    })
    .await;
    assert_eq!(deployed(&server, "podinfo", "dev").await.0, 202);
    server
        .wait_for("the promotion into test", |all| {
            all.iter()
                .any(|p| p["targetEnvironment"] == "test" && p["phase"] == "succeeded")
        })
        .await;
    assert_eq!(deployed(&server, "podinfo", "test").await.0, 202);
    wait_until("prod waiting for approval in status", &server, || {
        api.status("flux-system/podinfo")
            .is_some_and(|s| s["environments"]["prod"]["waitingApproval"]["revision"] == "6.5.4")
    })
    .await;
    let prod = api
        .of_kind("Promotion", Some("flux-system"))
        .into_iter()
        .find(|p| p["spec"]["targetEnvironment"] == "prod")
        .unwrap();
    let name = prod["metadata"]["name"].as_str().unwrap().to_string();
    api.update("Promotion", "flux-system", &name, |prod| {
        prod["metadata"]["annotations"]["promoter.dev/approved"] = json!("true");
    });
    wait_until("prod's promotion to succeed in status", &server, || {
        api.status("flux-system/podinfo")
            .is_some_and(|s| s["environments"]["prod"]["latestPromotion"]["phase"] == "succeeded")
    })
    .await;
    let status = api.status("flux-system/podinfo").unwrap();
    assert_eq!(
        status["environments"]["prod"].get("waitingApproval"),
        None,
        "nothing waits for approval any more: {status:#}"
    );
    // Written as merge patches with an explicit null for what goes.
    let patches = api.patches.lock().unwrap().clone();
    assert!(
        patches
            .iter()
            .any(|(key, patch)| key == "flux-system/podinfo"
                && patch["status"]["environments"]["prod"]["waitingApproval"].is_null()
                && patch["status"]["environments"]["prod"]
                    .as_object()
                    .is_some_and(|p| p.contains_key("waitingApproval"))),
        "{patches:#?}"
    );
    // A Promotion's status is replaced whole (an update with the resourceVersion read):
    // the claim written while it ran is gone once it finished.
    let done = api.find("Promotion", "flux-system", &name).unwrap();
    assert_eq!(done["status"]["phase"], "succeeded");
    assert!(
        done["status"].get("holder").is_none() && done["status"].get("heldUntil").is_none(),
        "{done:#}"
    );
    assert!(api.invalid.lock().unwrap().is_empty());
    api.assert_only_granted();
}

/// Item 9: a Pipeline named with more characters than a label value may have promotes
/// (its Promotions carry a label that is always valid, and a field selector finds them
/// by name); a custom plugin's `config` that is not a mapping is refused at load, in the
/// Pipeline's Ready condition, with the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_named_longer_than_a_label_value_promotes_and_a_scalar_plugin_config_is_refused()
{
    let ci = Receiver::start(202, "queued").await;
    let long = format!("podinfo-{}", "long-pipeline-name.".repeat(8) + "end");
    assert!(long.len() > 63 && long.len() <= 253);
    let (api, server) = serving("kubernetes-long-names", |dir| {
        let mut applied = objects(dir, &ci.url("/job/promote"));
        let pipeline = applied
            .iter_mut()
            .find(|o| o["kind"] == "Pipeline")
            .unwrap();
        pipeline["metadata"]["name"] = json!(long);
        let mut scalar = pipeline.clone();
        scalar["metadata"]["name"] = json!("scalar-config");
        scalar["spec"]["environments"][1]["promotion"] = json!({"strategy": {"plugin":
            {"name": "webhook", "config": "url=http://127.0.0.1:9/"}}});
        applied.push(scalar);
        applied
    })
    .await;
    let (code, body) = deployed(&server, &long, "dev").await;
    assert_eq!(code, 202, "{body}");
    server
        .wait_for("the promotion into test", |all| {
            all.iter()
                .any(|p| p["targetEnvironment"] == "test" && p["phase"] == "succeeded")
        })
        .await;
    let promotion = api.of_kind("Promotion", Some("flux-system")).remove(0);
    assert_eq!(promotion["spec"]["pipeline"], long.as_str());
    let label = promotion["metadata"]["labels"]["promoter.dev/pipeline"]
        .as_str()
        .unwrap();
    assert_eq!(label, promoter::record::resources::pipeline_label(&long));
    assert!(
        label.len() <= 63 && long.starts_with(&label[..40]),
        "{label}"
    );
    assert!(api.invalid.lock().unwrap().is_empty());

    wait_until("the scalar config's Pipeline status", &server, || {
        api.ready("flux-system/scalar-config").is_some()
    })
    .await;
    let ready = api.ready("flux-system/scalar-config").unwrap();
    assert_eq!(ready["status"], "False", "{ready}");
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains("Pipeline flux-system/scalar-config")
            && message.contains("plugin.config: expected a mapping")
            && message.contains("config: {threshold: 3}"),
        "{ready}"
    );
    // The CRD lets `kubectl get promotions --field-selector spec.pipeline=<name>` find any.
    let crds = promoter::cluster::crd::crds_yaml();
    assert!(
        crds[1].1.contains("jsonPath: .spec.pipeline"),
        "{}",
        crds[1].1
    );
    api.assert_only_granted();
}

/// Item 10 and the fake's expired watch: a Promotion deleted during an API server
/// upgrade (no watch open, and the new server's watch answers 410 Gone to the old
/// resourceVersion) is gone from what Promoter shows after the relist — also the newest
/// one, which the old rule kept for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_deleted_while_the_watch_was_expired_is_gone_after_the_relist() {
    let (api, server) = serving("kubernetes-watch-expired", |dir| {
        let mut applied = objects(dir, "http://127.0.0.1:9/");
        // Applied in order: the second has the newer resourceVersion.
        applied.extend([1, 2].map(|v| finished("flux-system", &format!("{v}.0.0"))));
        applied
    })
    .await;
    let kept = promoter::decide::promotion_id("flux-system", "shop", "prod", "1.0.0");
    let deleted = promoter::decide::promotion_id("flux-system", "shop", "prod", "2.0.0");
    server
        .wait_for("both promotions", |all| all.len() == 2)
        .await;
    api.upgrade(|objects| objects.retain(|o| o["metadata"]["name"] != deleted.as_str()));
    server
        .wait_for("the deleted promotion to be gone after the relist", |all| {
            all.len() == 1 && all[0]["id"] == kept.as_str()
        })
        .await;
    assert!(
        api.expired.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the watch was answered 410 Gone"
    );
    let path = format!("/promotions/{deleted}");
    let (code, _) = admin_get(&server, &path, server.admin_token.as_deref()).await;
    assert_eq!(code, 404, "not found by id either");
    api.assert_only_granted();
}

/// The fake's watch closed early and reset mid-event: Promoter watches again from where
/// it was, without listing everything again, and misses no change — a Promotion created
/// after each shows up, and half an event is never taken for one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_watch_closed_early_or_reset_mid_event_no_change_is_missed() {
    let (api, server) = serving("kubernetes-watch-broken", |dir| {
        let mut applied = objects(dir, "http://127.0.0.1:9/");
        applied.push(finished("flux-system", "1.0.0"));
        applied
    })
    .await;
    server.wait_for("the promotion", |all| all.len() == 1).await;
    let requests = |watch: bool| {
        let requests = api.requests.lock().unwrap();
        requests
            .iter()
            .filter(|r| r.starts_with("GET /apis/promoter.dev/v1alpha1/promotions?"))
            .filter(|r| r.contains("watch=true") == watch)
            .count()
    };
    wait_until("the watch to be open", &server, || requests(true) >= 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (lists, watches) = (requests(false), requests(true));

    api.close_watches();
    wait_until("a new watch", &server, || requests(true) > watches).await;
    assert_eq!(
        super_create(&api, finished("flux-system", "2.0.0")),
        StatusCode::CREATED
    );
    server
        .wait_for("the promotion created after the close", |all| {
            all.len() == 2
        })
        .await;
    assert_eq!(requests(false), lists, "watched again, not listed again");

    let watches = requests(true);
    api.reset_watches();
    assert_eq!(
        super_create(&api, finished("flux-system", "3.0.0")),
        StatusCode::CREATED
    );
    server
        .wait_for("the promotion whose event was cut", |all| {
            all.len() == 3 && all.iter().any(|p| p["version"] == "3.0.0")
        })
        .await;
    assert!(requests(true) > watches, "the reset watch was opened again");
    api.assert_only_granted();
}

/// The stricter fake itself: creates the real server refuses are refused (422 Invalid),
/// a no-op write keeps the resourceVersion, `stringData` lands in `data`, and a merge
/// patch's null deletes.
#[test]
fn the_fake_refuses_what_the_api_server_refuses_and_merges_as_it_does() {
    let api = Api::default();
    let mut p = finished("flux-system", "1.0.0");
    p["metadata"]["labels"]["promoter.dev/pipeline"] = json!("x".repeat(64));
    assert_eq!(super_create(&api, p), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        api.invalid.lock().unwrap()[0].contains("must be no more than 63 characters"),
        "{:?}",
        api.invalid.lock().unwrap()
    );
    let mut p = finished("flux-system", "1.0.1");
    p["spec"]["targetEnvironment"] = json!(7);
    p["status"]["phase"] = json!("exploded");
    assert_eq!(super_create(&api, p), StatusCode::UNPROCESSABLE_ENTITY);
    let invalid = api.invalid.lock().unwrap().join("\n");
    assert!(invalid.contains("spec.targetEnvironment"), "{invalid}");
    let mut p = finished("flux-system", "1.0.2");
    p["spec"].as_object_mut().unwrap().remove("version");
    assert_eq!(super_create(&api, p), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(api.invalid.lock().unwrap().join("\n").contains("version"));

    let ok = finished("flux-system", "1.0.3");
    let name = ok["metadata"]["name"].as_str().unwrap().to_string();
    assert_eq!(super_create(&api, ok), StatusCode::CREATED);
    let version = |api: &Api| {
        api.find("Promotion", "flux-system", &name).unwrap()["metadata"]["resourceVersion"].clone()
    };
    let before = version(&api);
    api.update("Promotion", "flux-system", &name, |_| {});
    assert_eq!(version(&api), before, "a no-op keeps the resourceVersion");
    api.update("Promotion", "flux-system", &name, |p| {
        p["metadata"]["annotations"]["x"] = json!("y")
    });
    assert_ne!(version(&api), before);

    let secret = applied(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "s", "namespace": "flux-system"},
        "stringData": {"token": "abc"}, "data": {"other": "eHl6"}}))
    .unwrap();
    assert_eq!(secret["data"], json!({"token": "YWJj", "other": "eHl6"}));
    assert!(secret.get("stringData").is_none());

    let mut status = json!({"a": {"b": 1, "c": 2}, "d": [1]});
    merge_patch(&mut status, &json!({"a": {"b": null}, "d": [2]}));
    assert_eq!(status, json!({"a": {"c": 2}, "d": [2]}));
}
