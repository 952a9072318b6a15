//! Item 5: credentials are never borrowed. A custom plugin whose grant binds an operator
//! credential serves only the namespaces its grant names (its ConfigMap's own by
//! default); a Secret is sent as forge/git credentials only to the hosts its annotation
//! `promoter.dev/allowed-hosts` lists. A Pipeline breaking either rule is refused when the
//! manifests load, so nothing is ever sent.
//!
//! Each attack runs the real binary: if it starts (as it did before the fix), dev reports
//! a version, the promotion runs, and the receiver on loopback — the attacker's server —
//! is checked for the credential first; then the refusal is checked for what it says.

use crate::support::{Receiver, Server, base64_encode, scratch};
use promoter::client::{deployment_event, post_signed};
use sha2::Digest as _;

const OPERATOR_TOKEN: &str = "operator-t0ken-for-ci";
const FLUX_PASSWORD: &str = "flux-bootstrap-deploy-token";

/// A tenant Pipeline `ns/podinfo`: dev, then test promoted by `strategy` (YAML lines at
/// the indentation of `promotion:`'s children), with its events key.
fn pipeline(ns: &str, strategy: &str) -> String {
    format!(
        r#"apiVersion: pipelines.weave.works/v1alpha1
kind: Pipeline
metadata: {{name: podinfo, namespace: {ns}}}
spec:
  appRef: {{apiVersion: helm.toolkit.fluxcd.io/v2, kind: HelmRelease, name: podinfo}}
  environments:
    - name: dev
      targets: [{{namespace: podinfo-dev}}]
    - name: test
      targets: [{{namespace: podinfo-test}}]
  promotion:
    secretRef: {{name: events}}
{strategy}
---
apiVersion: v1
kind: Secret
metadata: {{name: events, namespace: {ns}}}
stringData: {{hmac-key: key-of-{ns}}}
"#
    )
}

/// The outcome of serving `manifests`: `Err` with the server's output when it refuses
/// them at load. When it starts instead, dev of `ns/podinfo` reports a version and the
/// promotion into test is given time to reach `receiver`.
async fn serve_and_promote(
    dir: &std::path::Path,
    ns: &str,
    receiver: &Receiver,
) -> Result<Server, String> {
    let server = Server::try_start(&dir.join("manifests"), &dir.join("data"), &[])?;
    let event = deployment_event("HelmRelease", "podinfo-dev", "podinfo", "7.0.0");
    let (code, body) = post_signed(
        &format!("{}/promotion/{ns}/podinfo/dev", server.webhook),
        serde_json::to_vec(&event).unwrap(),
        Some(format!("key-of-{ns}").as_bytes()),
    )
    .await
    .unwrap();
    assert_eq!(code, 202, "{body}");
    for _ in 0..200 {
        let done = server
            .promotions()
            .await
            .iter()
            .any(|p| p["phase"] == "succeeded" || p["phase"] == "failed" || p["attempts"] != 0);
        if done && !receiver.received().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(server)
}

/// Fails the test if any request `receiver` saw carried `secret`, raw or in basic auth.
fn assert_never_received(receiver: &Receiver, secret: &str) {
    for got in receiver.received() {
        for (name, value) in &got.headers {
            let decoded = value
                .strip_prefix("Basic ")
                .and_then(|b| {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD.decode(b).ok()
                })
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            assert!(
                !value.contains(secret) && !decoded.contains(secret),
                "the credential reached the receiver: {} {} with {name}: {value}",
                got.method,
                got.path
            );
        }
    }
}

/// The operator's plugin `fetcher` in `promoter-system`, with a grant that binds the
/// operator's CI token to `ci`'s origin; `namespaces` is the grant's line for them.
fn operator_plugin(ci: &Receiver, namespaces: &str) -> String {
    let wasm = std::fs::read(env!("PROMOTER_WASM_FIXTURE_FORBIDDEN_HTTP")).unwrap();
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: fetcher
  namespace: promoter-system
  labels: {{promoter.dev/plugin: "true"}}
data:
  sha256: {digest}
  grant: |
    {namespaces}
    allow: [{origin}]
    privateNetworks: true
    credentials:
      - origin: {origin}
        header: Authorization
        prefix: "Bearer "
        secretRef: {{name: ci-token, key: token}}
binaryData:
  plugin.wasm: {wasm}
---
apiVersion: v1
kind: Secret
metadata: {{name: ci-token, namespace: promoter-system}}
stringData: {{token: {OPERATOR_TOKEN}}}
"#,
        digest = hex::encode(sha2::Sha256::digest(&wasm)),
        origin = ci.origin(),
        wasm = base64_encode(&wasm),
    )
}

#[tokio::test]
async fn a_pipeline_in_team_b_cannot_use_an_operator_credential_through_a_plugin_grant_that_does_not_name_team_b()
 {
    let ci = Receiver::start(200, "ok").await;
    let dir = scratch("tenants-credentials-plugin");
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    // team-b names the operator's plugin, with a url of its own choosing.
    let strategy = format!(
        "    strategy:\n      plugin:\n        name: fetcher\n        config: {{url: \"{}\"}}",
        ci.url("/team-b-wants-the-token")
    );
    std::fs::write(manifests.join("team-b.yaml"), pipeline("team-b", &strategy)).unwrap();
    // The grant lends the token to team-a only.
    std::fs::write(
        manifests.join("plugin.yaml"),
        operator_plugin(&ci, "namespaces: [team-a]"),
    )
    .unwrap();

    let refused = serve_and_promote(&dir, "team-b", &ci).await;
    assert_never_received(&ci, OPERATOR_TOKEN);
    let refused = refused.err().expect("the manifests are refused at load");
    assert!(
        refused.contains("Pipeline team-b/podinfo: promotion into test")
            && refused.contains("plugin \"fetcher\" (ConfigMap promoter-system/fetcher) is not granted to namespace team-b")
            && refused.contains("grant.namespaces"),
        "the refusal names the pipeline, the plugin and how the operator opens it:\n{refused}"
    );

    // Without `namespaces`, the plugin serves its own namespace only: still refused.
    std::fs::write(manifests.join("plugin.yaml"), operator_plugin(&ci, "")).unwrap();
    let refused = serve_and_promote(&dir, "team-b", &ci).await;
    assert_never_received(&ci, OPERATOR_TOKEN);
    let refused = refused
        .err()
        .expect("the default is the ConfigMap's namespace");
    assert!(
        refused.contains("only promoter-system may use it"),
        "{refused}"
    );

    // Once the operator names team-b, team-b's promotion runs with the credential.
    std::fs::write(
        manifests.join("plugin.yaml"),
        operator_plugin(&ci, "namespaces: [team-a, team-b]"),
    )
    .unwrap();
    let server = serve_and_promote(&dir, "team-b", &ci)
        .await
        .unwrap_or_else(|e| panic!("the grant names team-b: {e}"));
    let all = server
        .wait_for("the promotion into test", |all| {
            all.iter().any(|p| p["phase"] == "succeeded")
        })
        .await;
    assert_eq!(all[0]["strategy"]["plugin"], "fetcher");
    let got = ci.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0].header("authorization"),
        Some(format!("Bearer {OPERATOR_TOKEN}").as_str())
    );
}

/// A pull-request strategy at `receiver` (git remote and forge API) sending `secret`.
fn pull_request_at(receiver: &Receiver, secret: &str) -> String {
    format!(
        "    strategy:\n      pull-request:\n        type: gitea\n        url: \"{}\"\n        apiBase: \"{}\"\n        baseBranch: main\n        secretRef: {{name: {secret}}}",
        receiver.url("/org/config.git"),
        receiver.origin(),
    )
}

#[tokio::test]
async fn a_pipeline_cannot_send_fluxs_bootstrap_secret_to_a_url_it_picks() {
    // The attacker's server: it records every request and its headers.
    let attacker = Receiver::start(200, "ok").await;
    let dir = scratch("tenants-credentials-flux");
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let mut yaml = pipeline("flux-system", &pull_request_at(&attacker, "flux-system"));
    // Flux's own bootstrap Secret: git credentials for the fleet repository. It never
    // opted in to being sent anywhere by Promoter.
    yaml.push_str(&format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: flux-system, namespace: flux-system}}\n\
         stringData: {{username: git, password: {FLUX_PASSWORD}}}\n"
    ));
    std::fs::write(manifests.join("pipeline.yaml"), yaml).unwrap();

    let refused = serve_and_promote(&dir, "flux-system", &attacker).await;
    assert_never_received(&attacker, FLUX_PASSWORD);
    let refused = refused.err().expect("the Pipeline is refused at load");
    let host = attacker.origin().trim_start_matches("http://").to_string();
    assert!(
        refused.contains("Pipeline flux-system/podinfo: promotion into test")
            && refused.contains("Secret flux-system/flux-system")
            && refused.contains(&format!("may not be sent to {host}"))
            && refused.contains(&format!("promoter.dev/allowed-hosts: \"{host}\"")),
        "the refusal names the Secret, the host and the annotation to add:\n{refused}"
    );
}

#[tokio::test]
async fn a_secret_whose_annotation_names_another_host_is_not_sent_to_this_one() {
    let attacker = Receiver::start(200, "ok").await;
    let dir = scratch("tenants-credentials-other-host");
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let mut yaml = pipeline("flux-system", &pull_request_at(&attacker, "github-token"));
    // The owner meant this token for GitHub, nowhere else.
    yaml.push_str(&format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: github-token\n  namespace: flux-system\n  \
         annotations: {{promoter.dev/allowed-hosts: \"github.com, api.github.com\"}}\n\
         stringData: {{token: {FLUX_PASSWORD}}}\n"
    ));
    std::fs::write(manifests.join("pipeline.yaml"), yaml).unwrap();

    let refused = serve_and_promote(&dir, "flux-system", &attacker).await;
    assert_never_received(&attacker, FLUX_PASSWORD);
    let refused = refused.err().expect("the Pipeline is refused at load");
    let host = attacker.origin().trim_start_matches("http://").to_string();
    assert!(
        refused.contains("Secret flux-system/github-token")
            && refused.contains(&format!("may not be sent to {host}"))
            && refused.contains("\"github.com, api.github.com\"")
            && refused.contains(&format!(
                "promoter.dev/allowed-hosts: \"github.com, api.github.com, {host}\""
            )),
        "the refusal names the Secret, the host and the annotation to add:\n{refused}"
    );
}

#[tokio::test]
async fn a_namespace_selector_lends_the_operator_credential_only_to_namespaces_with_its_labels() {
    let ci = Receiver::start(200, "ok").await;
    let dir = scratch("tenants-credentials-selector");
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let strategy = format!(
        "    strategy:\n      plugin:\n        name: fetcher\n        config: {{url: \"{}\"}}",
        ci.url("/team-b")
    );
    std::fs::write(manifests.join("team-b.yaml"), pipeline("team-b", &strategy)).unwrap();
    std::fs::write(
        manifests.join("plugin.yaml"),
        operator_plugin(
            &ci,
            "namespaceSelector: {matchLabels: {promoter.dev/ci: \"true\"}}",
        ),
    )
    .unwrap();
    let namespace = |labels: &str| {
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: team-b, labels: {{{labels}}}}}\n"
        )
    };
    // team-b labels itself otherwise: not selected.
    std::fs::write(
        manifests.join("namespace.yaml"),
        namespace("promoter.dev/ci: \"false\""),
    )
    .unwrap();
    let refused = serve_and_promote(&dir, "team-b", &ci).await;
    assert_never_received(&ci, OPERATOR_TOKEN);
    let refused = refused.err().expect("team-b is not selected");
    assert!(
        refused.contains("namespaces labelled promoter.dev/ci=true by grant.namespaceSelector")
            && refused.contains("namespace team-b's labels do not match"),
        "{refused}"
    );

    // With the label the operator selects, team-b's promotion runs with the credential.
    std::fs::write(
        manifests.join("namespace.yaml"),
        namespace("promoter.dev/ci: \"true\""),
    )
    .unwrap();
    let server = serve_and_promote(&dir, "team-b", &ci)
        .await
        .unwrap_or_else(|e| panic!("team-b is selected: {e}"));
    server
        .wait_for("the promotion into test", |all| {
            all.iter().any(|p| p["phase"] == "succeeded")
        })
        .await;
    assert_eq!(
        ci.received()[0].header("authorization"),
        Some(format!("Bearer {OPERATOR_TOKEN}").as_str())
    );
}
