//! Item 3: an authority is never borrowed. An event key reports the deployments of one
//! environment; approving a promotion takes the approval key of the environment it goes
//! into (`approvalSecretRef`), which no event key may equal — a Pipeline where one does
//! is refused at load, naming both Secrets. With `--require-promoted-source` an event
//! from an environment after the first must report a version promoted into it.
//!
//! The pipeline here is the one the README and examples used to show: one event Secret
//! for every environment (`podinfo-events`), so dev's Flux holds the key test's events
//! are signed with. Prod is manual, approved with `podinfo-approvals`.

use crate::support::{APPROVAL_KEY, EVENTS_KEY, Receiver, Server, scratch, send, write_manifests};
use promoter::client::deployment_event;

/// dev's Flux, holding the key it signs its events with, reports `version` as deployed
/// in test.
async fn dev_posts_as_test(server: &Server, version: &str) -> (u16, String) {
    let event = deployment_event("HelmRelease", "podinfo-test", "podinfo", version);
    send(server, "test", &event, Some(EVENTS_KEY)).await
}

fn manifests(name: &str, receiver: &Receiver) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = scratch(name);
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    write_manifests(&manifests, &receiver.url("/job/promote"));
    (manifests, dir.join("data"))
}

#[tokio::test]
async fn dev_s_event_key_cannot_approve_prod() {
    let ci = Receiver::start(202, "queued").await;
    let (manifests, data) = manifests("tenants-keys-approve", &ci);
    let server = Server::start(&manifests, &data, &[]);
    let (code, body) = dev_posts_as_test(&server, "2.0.0").await;
    assert_eq!(code, 202, "{body}");
    server
        .wait_for("prod to wait for approval", |all| {
            all.iter()
                .any(|p| p["targetEnvironment"] == "prod" && p["phase"] == "waiting-approval")
        })
        .await;

    let (code, body) = crate::approve_prod(&server, "flux-system", "2.0.0", EVENTS_KEY).await;
    assert_eq!(code, 401, "an event key approved prod: {body}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let all = server.promotions().await;
    assert_eq!(all[0]["phase"], "waiting-approval", "{all:?}");
    assert!(all[0].get("approvedBy").is_none(), "{all:?}");
    assert!(ci.received().is_empty(), "nothing ran without an approval");

    // The approval key approves, and the record says which Secret's key it was.
    let (code, body) = crate::approve_prod(&server, "flux-system", "2.0.0", APPROVAL_KEY).await;
    assert_eq!(code, 200, "{body}");
    let all = server
        .wait_for("the approved promotion to succeed", |all| {
            all[0]["phase"] == "succeeded"
        })
        .await;
    assert_eq!(all[0]["approvedBy"], "key flux-system/podinfo-approvals");
    assert_eq!(ci.received().len(), 1);
}

#[test]
fn an_event_key_equal_to_the_approval_key_is_refused_at_load_naming_both_secrets() {
    let dir = scratch("tenants-keys-equal");
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    write_manifests(&manifests, "https://ci.example.com/job");
    let text = std::fs::read_to_string(manifests.join("pipeline.yaml")).unwrap();
    let approvals = std::str::from_utf8(APPROVAL_KEY).unwrap();
    let events = std::str::from_utf8(EVENTS_KEY).unwrap();
    assert!(text.contains(approvals));
    // Another Secret, the same value: the leaf clusters' key approves.
    std::fs::write(
        manifests.join("pipeline.yaml"),
        text.replace(approvals, events),
    )
    .unwrap();
    let err = crate::support::serve_fails(&manifests, &dir.join("data"), &[]);
    assert!(
        err.contains("Pipeline flux-system/podinfo: Secret flux-system/podinfo-approvals, the approval key of promotions into prod")
            && err.contains("holds the same hmac-key as Secret flux-system/podinfo-events")
            && err.contains("event key must never approve"),
        "{err}"
    );
    assert!(
        !err.contains(events),
        "the key itself is never printed: {err}"
    );

    // One Secret for both.
    std::fs::write(
        manifests.join("pipeline.yaml"),
        text.replace(
            "approvalSecretRef: {name: podinfo-approvals}",
            "approvalSecretRef: {name: podinfo-events}",
        ),
    )
    .unwrap();
    let err = crate::support::serve_fails(&manifests, &dir.join("data"), &[]);
    assert!(
        err.contains("Secret flux-system/podinfo-events, the approval key of promotions into prod (approvalSecretRef), is the same Secret as the event key for events from dev, events from test, events from prod (secretRef)"),
        "{err}"
    );
}

#[tokio::test]
async fn with_require_promoted_source_a_dev_key_posting_as_test_for_a_version_never_promoted_into_test_is_refused()
 {
    let ci = Receiver::start(202, "queued").await;
    let (manifests, data) = manifests("tenants-keys-strict", &ci);
    let server = Server::start(&manifests, &data, &["--require-promoted-source"]);
    let (code, body) = dev_posts_as_test(&server, "9.9.9").await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("version 9.9.9 was never promoted into test")
            && body.contains("--require-promoted-source"),
        "the refusal says why: {body}"
    );
    assert!(server.promotions().await.is_empty(), "nothing recorded");

    // The way through the pipeline still works: dev, then test, then prod waits.
    let event = deployment_event("HelmRelease", "podinfo-dev", "podinfo", "3.0.0");
    let (code, body) = send(&server, "dev", &event, Some(EVENTS_KEY)).await;
    assert_eq!(code, 202, "{body}");
    server
        .wait_for("the promotion into test to succeed", |all| {
            all.iter()
                .any(|p| p["targetEnvironment"] == "test" && p["phase"] == "succeeded")
        })
        .await;
    let (code, body) = dev_posts_as_test(&server, "3.0.0").await;
    assert_eq!(code, 202, "test reports what was promoted into it: {body}");
    drop(server);

    // Without the flag (the default), an environment may report any version: the
    // skip is accepted, prod waits for its approval key.
    let server = Server::start(&manifests, &data.with_extension("lax"), &[]);
    let (code, body) = dev_posts_as_test(&server, "9.9.9").await;
    assert_eq!(code, 202, "{body}");
}
