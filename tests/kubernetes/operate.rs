//! Operators steer in Kubernetes mode: the CLI against a replica's admin API, the records
//! being Promotion resources on the fake API server, every caller checked with a
//! TokenReview and a SubjectAccessReview.

use super::*;
use crate::support::CLUSTER_ADMIN_TOKEN;

const BIN: &str = env!("CARGO_BIN_EXE_promoter");

/// `promoter ARGS --admin <server> --token-file <token>`: exit code, stdout, stderr.
fn cli(
    server: &Server,
    dir: &std::path::Path,
    token: &str,
    args: &[&str],
) -> (i32, String, String) {
    let file = dir.join(format!("token-{}", token.len()));
    std::fs::write(&file, token).unwrap();
    let out = std::process::Command::new(BIN)
        .args(args)
        .args(["--admin", &server.admin, "--token-file"])
        .arg(&file)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn versions_into(ci: &Receiver, env: &str) -> Vec<String> {
    ci.received()
        .iter()
        .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .filter(|b| b["targetEnvironment"] == env)
        .map(|b| b["version"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_kubernetes_mode_retry_after_the_secret_is_added_rollback_and_suspend_work_through_the_api()
 {
    let ci = Receiver::start(202, "queued").await;
    let dir = scratch("kubernetes-operate");
    std::fs::create_dir_all(&dir).unwrap();
    let mut applied = objects(&dir, &ci.url("/job/promote"));
    // The strategy's Secret is missing at first.
    let secret = applied
        .iter()
        .position(|o| o["kind"] == "Secret" && o["metadata"]["name"] == "ci-hmac")
        .unwrap();
    let ci_secret = applied.remove(secret);
    let cluster = cluster(&dir, applied).await;
    let api = cluster.api.clone();
    let server = Server::start_in_cluster(
        &cluster.kubeconfig,
        &dir.join("data"),
        &["--watch-interval", "200ms"],
    );
    let token = CLUSTER_ADMIN_TOKEN;

    let event = deployment_event("HelmRelease", "podinfo-dev", "podinfo", "1.1.0");
    let (code, body) = send(&server, "dev", &event, Some(EVENTS_KEY)).await;
    assert_eq!(code, 202, "{body}");
    wait_until(
        "the promotion to fail for the missing Secret",
        &server,
        || promotion_of(&api, "test", "1.1.0").is_some_and(|p| p["status"]["phase"] == "failed"),
    )
    .await;
    let failed = promotion_of(&api, "test", "1.1.0").unwrap();
    let id = failed["metadata"]["name"].as_str().unwrap().to_string();
    assert!(
        failed["status"]["lastError"]
            .as_str()
            .unwrap()
            .contains("ci-hmac"),
        "{failed}"
    );

    api.add(ci_secret);
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let (code, out, err) = cli(&server, &dir, token, &["retry", &id]);
    assert_eq!(code, 0, "{out}{err}");
    wait_until("the retried promotion to succeed", &server, || {
        promotion_of(&api, "test", "1.1.0").is_some_and(|p| p["status"]["phase"] == "succeeded")
    })
    .await;
    let done = promotion_of(&api, "test", "1.1.0").unwrap();
    assert_eq!(
        done["metadata"]["name"],
        id.as_str(),
        "the same Promotion, the same key"
    );
    assert_eq!(done["status"]["retriedBy"], "user kubernetes-admin");
    assert_eq!(versions_into(&ci, "test"), ["1.1.0"]);

    // Rollback: 1.2.0 goes out, then 1.1.0 again, as a Promotion of its own (round 2).
    promoted_into_test(&server, &api, "1.2.0").await;
    let (code, _, err) = cli(
        &server,
        &dir,
        token,
        &["promote", "flux-system/podinfo", "test", "1.1.0"],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("HTTP 409") && err.contains("--rollback"),
        "{err}"
    );
    let (code, out, err) = cli(
        &server,
        &dir,
        token,
        &[
            "promote",
            "flux-system/podinfo",
            "test",
            "1.1.0",
            "--rollback",
            "--reason",
            "bad 1.2.0",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let round2 = promoter::decide::promotion_id_round("flux-system", "podinfo", "test", "1.1.0", 2);
    wait_until("the rollback to succeed", &server, || {
        promotion_named(&api, &round2).is_some_and(|p| p["status"]["phase"] == "succeeded")
    })
    .await;
    let rollback = promotion_named(&api, &round2).unwrap();
    assert_eq!(rollback["spec"]["rollback"], true);
    assert_eq!(rollback["spec"]["round"], 2);
    assert_eq!(rollback["spec"]["reason"], "bad 1.2.0");
    assert_eq!(rollback["status"]["requestedBy"], "user kubernetes-admin");
    assert_eq!(versions_into(&ci, "test"), ["1.1.0", "1.2.0", "1.1.0"]);

    // Suspend sets spec.suspend on the Pipeline; events are held; resume runs the newest.
    let (code, out, err) = cli(&server, &dir, token, &["suspend", "flux-system/podinfo"]);
    assert_eq!(code, 0, "{out}{err}");
    let pipeline = api.find("Pipeline", "flux-system", "podinfo").unwrap();
    assert_eq!(pipeline["spec"]["suspend"], true);
    assert_eq!(
        pipeline["metadata"]["annotations"]["promoter.dev/suspended-by"],
        "user kubernetes-admin"
    );
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    for version in ["1.3.0", "1.4.0"] {
        let event = deployment_event("HelmRelease", "podinfo-dev", "podinfo", version);
        let (code, body) = send(&server, "dev", &event, Some(EVENTS_KEY)).await;
        assert_eq!(code, 202, "{body}");
        assert!(body.contains("\"phase\":\"held\""), "{body}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    assert_eq!(
        versions_into(&ci, "test").len(),
        3,
        "nothing runs while suspended"
    );
    let (code, out, err) = cli(&server, &dir, token, &["resume", "flux-system/podinfo"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_until(
        "1.4.0 to succeed and 1.3.0 to be superseded",
        &server,
        || {
            promotion_of(&api, "test", "1.4.0").is_some_and(|p| p["status"]["phase"] == "succeeded")
                && promotion_of(&api, "test", "1.3.0")
                    .is_some_and(|p| p["status"]["phase"] == "superseded")
        },
    )
    .await;
    assert_eq!(
        versions_into(&ci, "test"),
        ["1.1.0", "1.2.0", "1.1.0", "1.4.0"]
    );
    api.assert_only_granted();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_who_may_not_patch_promotions_cannot_retry_reject_or_promote_and_nothing_changes()
{
    let dir = scratch("kubernetes-operate-rights");
    std::fs::create_dir_all(&dir).unwrap();
    let (cluster, server, a_id, b_id) = two_teams(&dir).await;
    let api = cluster.api.clone();
    let before = api.find("Promotion", "team-a", &a_id).unwrap();

    // Alice may read team-a's promotions, not change them.
    let (code, _, err) = cli(
        &server,
        &dir,
        ALICE_TOKEN,
        &["abort", &a_id, "--reason", "no"],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("HTTP 403") && err.contains("patch") && err.contains("team-a"),
        "{err}"
    );
    let (code, _, err) = cli(&server, &dir, ALICE_TOKEN, &["retry", &a_id]);
    assert_eq!(code, 1);
    assert!(err.contains("HTTP 403"), "{err}");
    let (code, _, err) = cli(
        &server,
        &dir,
        ALICE_TOKEN,
        &["promote", "team-a/shop", "prod", "9.9.9"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("HTTP 403") && err.contains("create"), "{err}");
    // Team-b's promotion is not even there for her.
    let (code, _, err) = cli(&server, &dir, ALICE_TOKEN, &["retry", &b_id]);
    assert_eq!(code, 1);
    assert!(err.contains("HTTP 404"), "{err}");
    let (code, _, err) = cli(&server, &dir, ALICE_TOKEN, &["suspend", "team-b/shop"]);
    assert_eq!(code, 1);
    assert!(err.contains("HTTP 403"), "{err}");
    assert_eq!(
        api.find("Promotion", "team-a", &a_id).unwrap()["status"],
        before["status"]
    );

    // Team-a's release bot may patch promotions, not Pipelines: it may not have the
    // controller suspend one for it.
    api.add(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "promotions-steerer", "namespace": "team-a"},
        "rules": [{"apiGroups": ["promoter.dev"], "resources": ["promotions"], "verbs": ["patch"]}],
    }));
    api.add(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "promotions-steerer", "namespace": "team-a"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "promotions-steerer"},
        "subjects": [{"kind": "ServiceAccount", "name": "release-bot", "namespace": "team-a"}],
    }));
    let (code, _, err) = cli(&server, &dir, BOT_TOKEN, &["suspend", "team-a/shop"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("HTTP 403") && err.contains("pipelines.pipelines.weave.works"),
        "{err}"
    );
    let shop = api.find("Pipeline", "team-a", "shop");
    assert!(
        shop.as_ref().is_none_or(|p| p["spec"]["suspend"].is_null()),
        "{shop:?}"
    );
    // Its patch right on promotions does reach them: a succeeded one cannot be aborted.
    let (code, _, err) = cli(&server, &dir, BOT_TOKEN, &["abort", &a_id, "--reason", "x"]);
    assert_eq!(code, 1);
    assert!(err.contains("HTTP 409"), "{err}");
    api.assert_only_granted();
}

/// POSTs `body` to the admin API as the cluster admin.
async fn post(server: &Server, path: &str, body: Value) -> (u16, Value) {
    let url = format!("{}{path}", server.admin);
    promoter::client::admin_call(&url, Some(CLUSTER_ADMIN_TOKEN), Some(&body))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_kubernetes_mode_supersede_reject_and_abort_change_what_reaches_the_receiver() {
    let ci = Receiver::start(202, "queued").await;
    let (dir, cluster) = example_cluster("kubernetes-operate-close", &ci).await;
    let api = cluster.api.clone();
    let server = Server::start_in_cluster(
        &cluster.kubeconfig,
        &dir.join("data"),
        &["--watch-interval", "200ms"],
    );
    // 1.2.0, 1.3.0 and 1.4.0 reach test; test reports each; all wait for approval in prod.
    for version in ["1.2.0", "1.3.0", "1.4.0"] {
        promoted_into_test(&server, &api, version).await;
        let event = deployment_event("HelmRelease", "podinfo-test", "podinfo", version);
        let (code, body) = send(&server, "test", &event, Some(EVENTS_KEY)).await;
        assert_eq!(code, 202, "{body}");
    }
    wait_until("three promotions waiting in prod", &server, || {
        ["1.2.0", "1.3.0", "1.4.0"].iter().all(|v| {
            promotion_of(&api, "prod", v)
                .is_some_and(|p| p["status"]["phase"] == "waiting-approval")
        })
    })
    .await;
    let id = |v: &str| {
        promotion_of(&api, "prod", v).unwrap()["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // Reject 1.4.0: final, recorded with who and why.
    let (code, body) = post(
        &server,
        &format!("/promotions/{}/reject", id("1.4.0")),
        json!({"reason": "fails the load test"}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    // Approve 1.3.0: it goes out, and 1.2.0, older and waiting, is superseded.
    let (code, body) = post(
        &server,
        &format!("/promotions/{}/approve", id("1.3.0")),
        json!({}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    wait_until("1.3.0 into prod, 1.2.0 superseded", &server, || {
        promotion_of(&api, "prod", "1.3.0").is_some_and(|p| p["status"]["phase"] == "succeeded")
            && promotion_of(&api, "prod", "1.2.0")
                .is_some_and(|p| p["status"]["phase"] == "superseded")
    })
    .await;
    let (code, body) = post(
        &server,
        &format!("/promotions/{}/approve", id("1.2.0")),
        json!({}),
    )
    .await;
    assert_eq!(code, 409, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("superseded by 1.3.0"),
        "{body}"
    );
    let rejected = promotion_of(&api, "prod", "1.4.0").unwrap();
    assert_eq!(rejected["status"]["phase"], "rejected");
    assert_eq!(rejected["status"]["closedBy"], "user kubernetes-admin");
    assert_eq!(rejected["status"]["closeReason"], "fails the load test");

    // Abort: 1.5.0 into test waits for its next attempt (the receiver is down) and never
    // runs again.
    ci.then_answer(&[(503, &[]), (503, &[]), (503, &[])]);
    let event = deployment_event("HelmRelease", "podinfo-dev", "podinfo", "1.5.0");
    let (code, body) = send(&server, "dev", &event, Some(EVENTS_KEY)).await;
    assert_eq!(code, 202, "{body}");
    wait_until("1.5.0 to be pending its next attempt", &server, || {
        promotion_of(&api, "test", "1.5.0")
            .is_some_and(|p| p["status"]["phase"] == "pending" && p["status"]["attempts"] == 1)
    })
    .await;
    let aborted = promotion_of(&api, "test", "1.5.0").unwrap()["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, body) = post(
        &server,
        &format!("/promotions/{aborted}/abort"),
        json!({"reason": "wrong build"}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let calls = versions_into(&ci, "test").len();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        versions_into(&ci, "test").len(),
        calls,
        "an aborted promotion never runs"
    );
    assert_eq!(
        promotion_of(&api, "test", "1.5.0").unwrap()["status"]["phase"],
        "aborted"
    );
    assert_eq!(
        versions_into(&ci, "prod"),
        ["1.3.0"],
        "only the approved version reached prod"
    );
    api.assert_only_granted();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_kubernetes_mode_a_later_event_for_a_failed_version_runs_it_again() {
    let ci = Receiver::start(202, "queued").await;
    ci.then_answer(&[(400, &[])]);
    let (dir, cluster) = example_cluster("kubernetes-operate-event-retry", &ci).await;
    let api = cluster.api.clone();
    let server = Server::start_in_cluster(
        &cluster.kubeconfig,
        &dir.join("data"),
        &["--watch-interval", "200ms"],
    );
    let event = deployment_event("HelmRelease", "podinfo-dev", "podinfo", "1.2.0");
    let (code, body) = send(&server, "dev", &event, Some(EVENTS_KEY)).await;
    assert_eq!(code, 202, "{body}");
    wait_until("the promotion to fail", &server, || {
        promotion_of(&api, "test", "1.2.0").is_some_and(|p| p["status"]["phase"] == "failed")
    })
    .await;
    // Flux reports it again, a second later.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let event = deployment_event("HelmRelease", "podinfo-dev", "podinfo", "1.2.0");
    let (code, body) = send(&server, "dev", &event, Some(EVENTS_KEY)).await;
    assert_eq!(code, 202, "{body}\n{}", server.logs());
    assert!(body.contains("\"result\":\"retried\""), "{body}");
    wait_until("the retried promotion to succeed", &server, || {
        promotion_of(&api, "test", "1.2.0").is_some_and(|p| p["status"]["phase"] == "succeeded")
    })
    .await;
    let done = promotion_of(&api, "test", "1.2.0").unwrap();
    assert_eq!(done["status"]["retriedBy"], "event from dev");
    assert_eq!(versions_into(&ci, "test"), ["1.2.0", "1.2.0"]);
    api.assert_only_granted();
}

/// A rollback asked for by a caller who may create promotions but not approve them waits
/// for approval as its own record (round 2); the approval webhook names only the version,
/// and approves that round, not the finished first one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approval_webhook_approves_a_rollback_waiting_as_a_later_round() {
    let ci = Receiver::start(202, "queued").await;
    let (dir, cluster) = example_cluster("kubernetes-operate-round-approval", &ci).await;
    let api = cluster.api.clone();
    // A release bot may create promotions in flux-system, not patch (approve) them.
    let bot = "system:serviceaccount:flux-system:release-bot";
    api.add_user(BOT_TOKEN, bot, &["system:serviceaccounts"]);
    api.add(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "promotions-requester", "namespace": "flux-system"},
        "rules": [{"apiGroups": ["promoter.dev"], "resources": ["promotions"], "verbs": ["create"]}],
    }));
    api.add(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "promotions-requester", "namespace": "flux-system"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "promotions-requester"},
        "subjects": [{"kind": "ServiceAccount", "name": "release-bot", "namespace": "flux-system"}],
    }));
    let server = Server::start_in_cluster(
        &cluster.kubeconfig,
        &dir.join("data"),
        &["--watch-interval", "200ms"],
    );
    // 1.2.0 and then 1.3.0 reach prod, each approved over the webhook.
    for version in ["1.2.0", "1.3.0"] {
        promoted_into_test(&server, &api, version).await;
        let event = deployment_event("HelmRelease", "podinfo-test", "podinfo", version);
        let (code, body) = send(&server, "test", &event, Some(EVENTS_KEY)).await;
        assert_eq!(code, 202, "{body}");
        wait_until("the promotion to wait for approval", &server, || {
            promotion_of(&api, "prod", version)
                .is_some_and(|p| p["status"]["phase"] == "waiting-approval")
        })
        .await;
        let (code, body) = crate::support::approve_prod(&server, version, APPROVAL_KEY).await;
        assert_eq!(code, 200, "{body}");
        wait_until("the approved promotion to succeed", &server, || {
            promotion_of(&api, "prod", version).is_some_and(|p| p["status"]["phase"] == "succeeded")
        })
        .await;
    }

    // The bot asks for a rollback to 1.2.0: it may not approve, so round 2 waits.
    let (code, out, err) = cli(
        &server,
        &dir,
        BOT_TOKEN,
        &[
            "promote",
            "flux-system/podinfo",
            "prod",
            "1.2.0",
            "--rollback",
            "--reason",
            "1.3.0 leaks memory",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let round2 = promoter::decide::promotion_id_round("flux-system", "podinfo", "prod", "1.2.0", 2);
    wait_until("round 2 to wait for approval", &server, || {
        promotion_named(&api, &round2).is_some_and(|p| p["status"]["phase"] == "waiting-approval")
    })
    .await;
    assert_eq!(versions_into(&ci, "prod"), ["1.2.0", "1.3.0"]);

    // The webhook approval of 1.2.0 approves round 2 (before: 409, round 1 is finished).
    let (code, body) = crate::support::approve_prod(&server, "1.2.0", APPROVAL_KEY).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(&round2), "{body}");
    wait_until("the rollback to succeed", &server, || {
        promotion_named(&api, &round2).is_some_and(|p| p["status"]["phase"] == "succeeded")
    })
    .await;
    assert_eq!(versions_into(&ci, "prod"), ["1.2.0", "1.3.0", "1.2.0"]);
    let first = promoter::decide::promotion_id("flux-system", "podinfo", "prod", "1.2.0");
    assert_eq!(
        promotion_named(&api, &first).unwrap()["status"]["attempts"],
        1,
        "the first round is left as it was"
    );
    api.assert_only_granted();
}
