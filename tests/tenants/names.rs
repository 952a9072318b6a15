//! Item 8: the network learns no names. Authentication comes first on the public
//! listener, and every refusal before it — no such pipeline, no such environment, no key
//! configured, the Secret missing, a bad or missing signature, on /promotion and on
//! /approval — is the same 401, byte for byte. What was wrong is in the server's log.

use crate::support::{APPROVAL_KEY, Receiver, Server, scratch, write_manifests};
use promoter::client::{ApprovalBody, deployment_event};

/// Two more Pipelines beside podinfo: one whose Secret does not exist, one with no key.
const OTHERS: &str = r#"
---
apiVersion: pipelines.weave.works/v1alpha1
kind: Pipeline
metadata: {name: orphan, namespace: flux-system}
spec:
  appRef: {apiVersion: helm.toolkit.fluxcd.io/v2, kind: HelmRelease, name: orphan}
  environments:
    - name: staging
      targets: [{namespace: orphan-staging}]
    - name: live
      targets: [{namespace: orphan-live}]
      promotion: {manual: true, approvalSecretRef: {name: orphan-approvals-secret}}
  promotion:
    secretRef: {name: orphan-events-secret}
    webhook: {url: "https://ci.example.com/orphan"}
---
apiVersion: pipelines.weave.works/v1alpha1
kind: Pipeline
metadata: {name: keyless, namespace: flux-system}
spec:
  appRef: {apiVersion: helm.toolkit.fluxcd.io/v2, kind: HelmRelease, name: keyless}
  environments:
    - name: qa
      targets: [{namespace: keyless-qa}]
    - name: canary
      targets: [{namespace: keyless-canary}]
      promotion: {manual: true}
  promotion:
    webhook: {url: "https://ci.example.com/keyless"}
"#;

/// Status, content type and body of an unauthenticated POST.
async fn post(url: &str, body: Vec<u8>, signature: Option<&str>) -> (u16, String, Vec<u8>) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(s) = signature {
        request = request.header("x-signature", s);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (
        status,
        content_type,
        response.bytes().await.unwrap().to_vec(),
    )
}

fn approval(ns: &str, name: &str, env: &str) -> Vec<u8> {
    serde_json::to_vec(&ApprovalBody {
        namespace: ns.into(),
        name: name.into(),
        environment: env.into(),
        revision: "1.0.0".into(),
        timestamp: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    })
    .unwrap()
}

#[tokio::test]
async fn an_unauthenticated_caller_gets_the_same_401_for_existing_and_missing_pipelines_environments_and_keys()
 {
    let ci = Receiver::start(202, "queued").await;
    let dir = scratch("tenants-names");
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    write_manifests(&manifests, &ci.url("/job"));
    let mut text = std::fs::read_to_string(manifests.join("pipeline.yaml")).unwrap();
    text.push_str(OTHERS);
    std::fs::write(manifests.join("pipeline.yaml"), text).unwrap();
    let server = Server::start(&manifests, &dir.join("data"), &[]);

    let event = |ns: &str| {
        serde_json::to_vec(&deployment_event("HelmRelease", ns, "podinfo", "1.0.0")).unwrap()
    };
    let bad = "sha256=0000000000000000000000000000000000000000000000000000000000000000";
    let w = &server.webhook;
    // (what is asked, path, body, signature)
    let asks: Vec<(&str, String, Vec<u8>, Option<&str>)> = vec![
        (
            "existing pipeline and environment, unsigned",
            format!("{w}/promotion/flux-system/podinfo/dev"),
            event("podinfo-dev"),
            None,
        ),
        (
            "existing pipeline and environment, bad signature",
            format!("{w}/promotion/flux-system/podinfo/dev"),
            event("podinfo-dev"),
            Some(bad),
        ),
        (
            "no such pipeline",
            format!("{w}/promotion/flux-system/nope/dev"),
            event("podinfo-dev"),
            Some(bad),
        ),
        (
            "no such namespace",
            format!("{w}/promotion/elsewhere/podinfo/dev"),
            event("podinfo-dev"),
            None,
        ),
        (
            "no such environment",
            format!("{w}/promotion/flux-system/podinfo/staging"),
            event("podinfo-dev"),
            Some(bad),
        ),
        (
            "Secret missing",
            format!("{w}/promotion/flux-system/orphan/staging"),
            event("orphan-staging"),
            Some(bad),
        ),
        (
            "no key configured",
            format!("{w}/promotion/flux-system/keyless/qa"),
            event("keyless-qa"),
            None,
        ),
        (
            "approval, bad signature",
            format!("{w}/approval/flux-system/podinfo/prod/1.0.0"),
            approval("flux-system", "podinfo", "prod"),
            Some(bad),
        ),
        (
            "approval, unsigned",
            format!("{w}/approval/flux-system/podinfo/prod/1.0.0"),
            approval("flux-system", "podinfo", "prod"),
            None,
        ),
        (
            "approval, no such pipeline",
            format!("{w}/approval/flux-system/nope/prod/1.0.0"),
            approval("flux-system", "nope", "prod"),
            Some(bad),
        ),
        (
            "approval, no such environment",
            format!("{w}/approval/flux-system/podinfo/staging/1.0.0"),
            approval("flux-system", "podinfo", "staging"),
            Some(bad),
        ),
        (
            "approval, the first environment",
            format!("{w}/approval/flux-system/podinfo/dev/1.0.0"),
            approval("flux-system", "podinfo", "dev"),
            Some(bad),
        ),
        (
            "approval, no approval key",
            format!("{w}/approval/flux-system/podinfo/test/1.0.0"),
            approval("flux-system", "podinfo", "test"),
            Some(bad),
        ),
        (
            "approval, Secret missing",
            format!("{w}/approval/flux-system/orphan/live/1.0.0"),
            approval("flux-system", "orphan", "live"),
            Some(bad),
        ),
        (
            "approval, no key configured",
            format!("{w}/approval/flux-system/keyless/canary/1.0.0"),
            approval("flux-system", "keyless", "canary"),
            None,
        ),
    ];
    let mut answers = Vec::new();
    for (what, url, body, signature) in asks {
        let (status, content_type, body) = post(&url, body, signature).await;
        assert_eq!(status, 401, "{what}: {}", String::from_utf8_lossy(&body));
        answers.push((what, content_type, body));
    }
    let (_, first_type, first) = &answers[0];
    for (what, content_type, body) in &answers {
        assert_eq!(
            (content_type, body),
            (first_type, first),
            "{what}: {} differs from {}",
            String::from_utf8_lossy(body),
            String::from_utf8_lossy(first)
        );
    }
    let body = String::from_utf8_lossy(first);
    for name in [
        "podinfo",
        "events",
        "approvals",
        "orphan",
        "keyless",
        "dev",
        "test",
        "prod",
        "staging",
        "canary",
        "flux-system",
        "Secret",
    ] {
        assert!(!body.contains(name), "the 401 names {name:?}: {body}");
    }

    // The operator's log says what was wrong, with the pipeline and environment.
    let logs = server.logs();
    for detail in [
        "no Pipeline flux-system/nope is in force",
        "pipeline flux-system/podinfo has no environment \"staging\"",
        "Secret flux-system/orphan-events-secret is missing or has no hmac-key",
        "pipeline flux-system/keyless has no Secret with an hmac-key for events from qa",
        "pipeline flux-system/podinfo has no approval key for promotions into test",
        "dev is the first environment of pipeline flux-system/podinfo",
        "Secret flux-system/orphan-approvals-secret is missing",
    ] {
        assert!(logs.contains(detail), "the log lacks {detail:?}:\n{logs}");
    }

    // Once authenticated, answers may be precise: a signed approval of nothing is a 404.
    let body = approval("flux-system", "podinfo", "prod");
    let signature = promoter::client::signature_header(APPROVAL_KEY, &body);
    let url = format!("{w}/approval/flux-system/podinfo/prod/1.0.0");
    let (status, _, body) = post(&url, body, Some(&signature)).await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
}
