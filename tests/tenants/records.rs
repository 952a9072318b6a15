//! Item 1: promotions of different namespaces never share a record. Ids carry 128 bits
//! of hash over (namespace, pipeline, environment, version), so no tenant can search for
//! a version of their own pipeline whose id is another namespace's promotion; and an
//! approval is checked against the record it approves, never trusted by id alone.

use crate::support::{Receiver, Server, scratch};
use promoter::client::{ApprovalBody, deployment_event, post_signed};

/// Two tenants with a Pipeline of the same name: dev, then prod (manual), their own keys.
fn two_tenants(dir: &std::path::Path, receiver: &Receiver) {
    let mut yaml = String::new();
    for ns in ["team-a", "team-b"] {
        yaml.push_str(&format!(
            r#"apiVersion: pipelines.weave.works/v1alpha1
kind: Pipeline
metadata: {{name: podinfo, namespace: {ns}}}
spec:
  appRef: {{apiVersion: helm.toolkit.fluxcd.io/v2, kind: HelmRelease, name: podinfo}}
  environments:
    - name: dev
      targets: [{{namespace: {ns}-dev}}]
    - name: prod
      targets: [{{namespace: {ns}-prod}}]
      promotion: {{manual: true}}
  promotion:
    secretRef: {{name: events}}
    approvalSecretRef: {{name: approvals}}
    webhook: {{url: "{url}"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: events, namespace: {ns}}}
stringData: {{hmac-key: key-of-{ns}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: approvals, namespace: {ns}}}
stringData: {{hmac-key: approval-key-of-{ns}}}
---
"#,
            url = receiver.url(&format!("/{ns}"))
        ));
    }
    std::fs::write(dir.join("pipelines.yaml"), yaml).unwrap();
}

async fn deployed(server: &Server, ns: &str, version: &str) -> (u16, String) {
    let event = deployment_event("HelmRelease", &format!("{ns}-dev"), "podinfo", version);
    post_signed(
        &format!("{}/promotion/{ns}/podinfo/dev", server.webhook),
        serde_json::to_vec(&event).unwrap(),
        Some(format!("key-of-{ns}").as_bytes()),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_tenant_approving_its_own_promotion_never_approves_another_namespaces_of_the_same_name() {
    let dir = scratch("tenants-records");
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let receiver = Receiver::start(202, "queued").await;
    two_tenants(&manifests, &receiver);
    let server = Server::start(&manifests, &dir.join("data"), &[]);
    for ns in ["team-a", "team-b"] {
        let (code, body) = deployed(&server, ns, "1.0.0").await;
        assert_eq!(code, 202, "{body}");
    }
    server
        .wait_for("both to wait for approval", |all| {
            all.iter()
                .filter(|p| p["phase"] == "waiting-approval")
                .count()
                == 2
        })
        .await;
    let all = server.promotions().await;
    let ids: Vec<&str> = all.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_ne!(ids[0], ids[1], "one record per namespace");
    for id in &ids {
        let hash = id.rsplit('-').next().unwrap();
        assert!(
            hash.len() >= 32 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
            "an id carries at least 128 bits of hash, not a searchable 40: {id}"
        );
    }

    let (code, body) =
        crate::approve_prod(&server, "team-b", "1.0.0", b"approval-key-of-team-b").await;
    assert_eq!(code, 200, "{body}");
    server
        .wait_for("team-b's to succeed", |all| {
            all.iter()
                .any(|p| p["pipeline"]["namespace"] == "team-b" && p["phase"] == "succeeded")
        })
        .await;
    let all = server.promotions().await;
    let team_a = all
        .iter()
        .find(|p| p["pipeline"]["namespace"] == "team-a")
        .unwrap();
    assert_eq!(
        team_a["phase"], "waiting-approval",
        "team-a's promotion still waits"
    );
    assert!(team_a.get("approvedBy").is_none(), "{team_a}");
    let team_b = all
        .iter()
        .find(|p| p["pipeline"]["namespace"] == "team-b")
        .unwrap();
    assert!(
        team_b["approvedBy"]
            .as_str()
            .is_some_and(|by| !by.is_empty()),
        "the approval says how it was authorised: {team_b}"
    );
    let received = receiver.received();
    assert_eq!(received.len(), 1, "only team-b's promotion ran");
    assert_eq!(received[0].path, "/team-b");

    // team-b's key signs nothing for team-a.
    let body = ApprovalBody {
        namespace: "team-a".into(),
        name: "podinfo".into(),
        environment: "prod".into(),
        revision: "1.0.0".into(),
        timestamp: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    };
    let (code, _) = post_signed(
        &format!("{}/approval/team-a/podinfo/prod/1.0.0", server.webhook),
        serde_json::to_vec(&body).unwrap(),
        Some(b"approval-key-of-team-b"),
    )
    .await
    .unwrap();
    assert_eq!(code, 401);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 1);
}
