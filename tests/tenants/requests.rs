//! Item 2: a stored record is a request checked against the Pipeline in force, never a
//! command. What runs — strategy, configuration, targets, grant — is the Pipeline's when
//! it runs. (Kubernetes mode, where anyone allowed to create Promotions writes records,
//! is tested beside the fake API server: `tests/kubernetes.rs`,
//! `a_promotion_created_with_its_own_strategy_runs_the_pipelines_and_one_it_does_not_allow_is_refused`.)

use crate::support::{APPROVAL_KEY, EVENTS_KEY, Receiver, Server, scratch, send, write_manifests};
use promoter::client::deployment_event;

#[tokio::test]
async fn a_waiting_promotion_runs_the_strategy_in_force_not_the_one_it_was_recorded_with() {
    let dir = scratch("tenants-requests");
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let old = Receiver::start(202, "queued").await;
    let new = Receiver::start(202, "queued").await;
    write_manifests(&manifests, &old.url("/job/promote"));
    let server = Server::start(
        &manifests,
        &dir.join("data"),
        &["--watch-interval", "100ms"],
    );
    for (env, ns) in [("dev", "podinfo-dev"), ("test", "podinfo-test")] {
        let event = deployment_event("HelmRelease", ns, "podinfo", "2.0.0");
        let (code, body) = send(&server, env, &event, Some(EVENTS_KEY)).await;
        assert_eq!(code, 202, "{body}");
    }
    server
        .wait_for("test done and prod waiting for approval", |all| {
            let phase = |env: &str| {
                all.iter()
                    .find(|p| p["targetEnvironment"] == env)
                    .map(|p| p["phase"].clone())
            };
            phase("test") == Some("succeeded".into())
                && phase("prod") == Some("waiting-approval".into())
        })
        .await;
    let before = old.received().len();

    // The operator repoints the pipeline (a compromised CI endpoint, say) while prod waits.
    let reloads = || server.logs().matches("manifests reloaded").count();
    let before_reload = reloads();
    write_manifests(&manifests, &new.url("/job/promote"));
    // Reloads are polled every 100 ms; a loaded machine may take seconds.
    for _ in 0..600 {
        if reloads() > before_reload {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(reloads() > before_reload, "{}", server.logs());
    let (code, body) = crate::approve_prod(&server, "flux-system", "2.0.0", APPROVAL_KEY).await;
    assert_eq!(code, 200, "{body}");
    server
        .wait_for("prod to succeed", |all| {
            all.iter()
                .any(|p| p["targetEnvironment"] == "prod" && p["phase"] == "succeeded")
        })
        .await;
    assert_eq!(
        old.received().len(),
        before,
        "the recorded endpoint got nothing more"
    );
    let got = new.received();
    assert_eq!(got.len(), 1, "the endpoint in force got the promotion");
    let body: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["targetEnvironment"], "prod");
}
