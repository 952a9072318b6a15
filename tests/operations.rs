//! What an operator meets running local mode: retries, permanent failures, TLS with
//! certificate rotation, manifest reloads, start-up validation and custom plugins.

mod support;

use promoter::client::deployment_event;
use sha2::Digest;
use std::time::Duration;
use support::{
    EVENTS_KEY, Receiver, Server, base64_encode, deployed_in_dev, scratch, send, serve_fails,
    start, use_custom_plugin, write_manifests,
};

#[tokio::test]
async fn a_rate_limited_receiver_is_retried_with_its_retry_after_until_it_accepts() {
    let ci = Receiver::start(202, "queued").await;
    ci.then_answer(&[(429, &[("Retry-After", "1")]), (503, &[])]);
    let server = start("retries", &ci, &[]).await;
    let started = std::time::Instant::now();
    let (status, text) = deployed_in_dev(&server, "1.2.3").await;
    assert_eq!(status, 202, "{text}");
    let all = server
        .wait_for("success after retries", |all| {
            all[0]["phase"] == "succeeded"
        })
        .await;
    assert_eq!(all[0]["attempts"], 3);
    assert!(
        all[0].get("lastError").is_none(),
        "a success clears the last error"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was honoured"
    );
    let keys: std::collections::HashSet<_> = ci
        .received()
        .iter()
        .map(|r| r.header("idempotency-key").unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), 1, "retries carry the same idempotency key");
}

#[tokio::test]
async fn a_permanent_refusal_fails_the_promotion_at_once_with_the_reason() {
    let ci = Receiver::start(404, "no such job").await;
    let server = start("permanent", &ci, &[]).await;
    deployed_in_dev(&server, "1.2.3").await;
    let all = server
        .wait_for("failure", |all| all[0]["phase"] == "failed")
        .await;
    assert_eq!(all[0]["attempts"], 1);
    let error = all[0]["lastError"].as_str().unwrap();
    assert!(
        error.contains("404") && error.contains("no such job"),
        "{error}"
    );
    let metrics = server.metrics().await;
    assert!(
        metrics.contains(r#"result="failed",strategy="webhook"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn retryable_failures_give_up_after_max_attempts() {
    let ci = Receiver::start(503, "down").await;
    let server = start("give-up", &ci, &["--max-attempts", "2"]).await;
    deployed_in_dev(&server, "1.2.3").await;
    let all = server
        .wait_for("failure", |all| all[0]["phase"] == "failed")
        .await;
    assert_eq!(all[0]["attempts"], 2);
    assert!(
        all[0]["lastError"]
            .as_str()
            .unwrap()
            .contains("gave up after 2 attempts")
    );
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413() {
    let ci = Receiver::start(202, "ok").await;
    let server = start("oversized", &ci, &["--max-body", "4KiB"]).await;
    let mut event = deployment_event("HelmRelease", "podinfo-dev", "podinfo", "1.2.3");
    event.message = "x".repeat(8192);
    let (status, _) = send(&server, "dev", &event, Some(EVENTS_KEY)).await;
    assert_eq!(status, 413);
    assert!(server.promotions().await.is_empty());
}

fn certificate(name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

async fn post_tls(server: &Server, ca_pem: &str) -> Result<u16, reqwest::Error> {
    let url = server
        .webhook
        .replace("http://127.0.0.1", "https://localhost")
        + "/promotion/flux-system/podinfo/dev";
    let port: u16 = server.webhook.rsplit(':').next().unwrap().parse().unwrap();
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .resolve("localhost", ([127, 0, 0, 1], port).into())
        .build()
        .unwrap();
    let event = serde_json::to_vec(&deployment_event(
        "HelmRelease",
        "podinfo-dev",
        "podinfo",
        &format!("1.0.{}", ca_pem.len() % 1000),
    ))
    .unwrap();
    let response = client
        .post(url)
        .header(
            "x-signature",
            promoter::client::signature_header(EVENTS_KEY, &event),
        )
        .body(event)
        .send()
        .await?;
    Ok(response.status().as_u16())
}

#[tokio::test]
async fn the_webhook_serves_tls_and_picks_up_a_rotated_certificate_without_restart() {
    let ci = Receiver::start(202, "ok").await;
    let dir = scratch("tls");
    let (cert1, key1) = certificate("first");
    std::fs::write(dir.join("tls.crt"), &cert1).unwrap();
    std::fs::write(dir.join("tls.key"), &key1).unwrap();
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    write_manifests(&manifests, &ci.url("/job"));
    let cert_arg = dir.join("tls.crt").display().to_string();
    let key_arg = dir.join("tls.key").display().to_string();
    let server = Server::start(
        &manifests,
        &dir.join("data"),
        &["--tls-cert", &cert_arg, "--tls-key", &key_arg],
    );

    assert_eq!(post_tls(&server, &cert1).await.unwrap(), 202);

    // cert-manager writes the new pair; the listener follows within a couple of seconds.
    let (cert2, key2) = certificate("second");
    std::fs::write(dir.join("tls.key"), &key2).unwrap();
    std::fs::write(dir.join("tls.crt"), &cert2).unwrap();
    let mut rotated = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if post_tls(&server, &cert2).await.is_ok() {
            rotated = true;
            break;
        }
    }
    assert!(
        rotated,
        "the new certificate is served without a restart:\n{}",
        server.logs()
    );
    assert!(
        post_tls(&server, &cert1).await.is_err(),
        "the old certificate is no longer served"
    );
}

#[tokio::test]
async fn a_changed_manifest_folder_is_reloaded_and_a_broken_change_keeps_the_last_good_state() {
    let ci = Receiver::start(202, "ok").await;
    let dir = scratch("reload");
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    write_manifests(&manifests, &ci.url("/job"));
    let server = Server::start(
        &manifests,
        &dir.join("data"),
        &["--watch-interval", "100ms"],
    );

    // A broken file: the server keeps the pipeline it had and says why.
    std::fs::write(manifests.join("broken.yaml"), "apiVersion: pipelines.weave.works/v1alpha1\nkind: Pipeline\nmetadata: {name: broken, namespace: flux-system}\nspec:\n  appRef: {apiVersion: v1, kind: X, name: y}\n  environments: [{name: dev, targets: []}]\n").unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        server.logs().contains("manifests not reloaded"),
        "{}",
        server.logs()
    );
    let (status, text) = deployed_in_dev(&server, "1.0.0").await;
    assert_eq!(status, 202, "the last good pipeline still serves: {text}");

    // Fixed, and the pipeline renamed: the new name serves, the old one is gone.
    std::fs::remove_file(manifests.join("broken.yaml")).unwrap();
    let text = std::fs::read_to_string(manifests.join("pipeline.yaml")).unwrap();
    std::fs::write(
        manifests.join("pipeline.yaml"),
        text.replacen(
            "name: podinfo\n  namespace",
            "name: podinfo-v2\n  namespace",
            1,
        ),
    )
    .unwrap();
    let mut reloaded = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let body = serde_json::to_vec(&deployment_event(
            "HelmRelease",
            "podinfo-dev",
            "podinfo",
            "1.1.0",
        ))
        .unwrap();
        let url = format!("{}/promotion/flux-system/podinfo-v2/dev", server.webhook);
        if promoter::client::post_signed(&url, body, Some(EVENTS_KEY))
            .await
            .unwrap()
            .0
            == 202
        {
            reloaded = true;
            break;
        }
    }
    assert!(reloaded, "{}", server.logs());
}

/// Runs `promoter serve` on manifests that must not load; returns what it said.

#[test]
fn invalid_manifests_stop_the_server_at_start_with_every_problem_listed() {
    let dir = scratch("invalid");
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(
        manifests.join("bad.yaml"),
        r#"apiVersion: pipelines.weave.works/v1alpha1
kind: Pipeline
metadata: {name: one, namespace: apps}
spec:
  appRef: {apiVersion: helm.toolkit.fluxcd.io/v2, kind: HelmRelease, name: one}
  environments:
    - name: dev
      targets: [{namespace: dev}]
    - name: dev
      targets: []
  promotion:
    strategy: {plugin: {name: no-such-plugin, config: {}}}
---
apiVersion: pipelines.weave.works/v1alpha1
kind: Pipeline
metadata: {name: two, namespace: apps}
spec:
  appRef: {apiVersion: helm.toolkit.fluxcd.io/v2, kind: HelmRelease, name: two}
  environments:
    - name: dev
      targets: [{namespace: dev}]
    - name: prod
      targets: [{namespace: prod}]
  promotion:
    webhook: {url: "not a url"}
"#,
    )
    .unwrap();
    let err = serve_fails(&manifests, &dir.join("data"), &[]);
    assert!(err.contains("Pipeline apps/one"), "{err}");
    assert!(err.contains("dev"), "{err}");
    assert!(
        err.contains("target"),
        "an environment without targets is named: {err}"
    );
}

#[test]
fn a_strategy_config_the_plugin_rejects_stops_the_server_at_start() {
    let dir = scratch("badconfig");
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    write_manifests(&manifests, "not a url");
    let text = std::fs::read_to_string(manifests.join("pipeline.yaml")).unwrap();
    std::fs::write(manifests.join("pipeline.yaml"), text.replace("prod\n      targets:\n        - namespace: podinfo-prod\n      promotion:\n        manual: true", "prod\n      targets:\n        - namespace: podinfo-prod\n      promotion:\n        strategy: {plugin: {name: no-such-plugin, config: {}}}")).unwrap();
    let err = serve_fails(&manifests, &dir.join("data"), &[]);
    assert!(
        err.contains("promotion into test: plugin webhook"),
        "the plugin's own validate-config speaks: {err}"
    );
    assert!(
        err.contains("unknown strategy \"no-such-plugin\""),
        "every problem is listed: {err}"
    );
}

#[tokio::test]
async fn a_custom_plugin_from_a_configmap_runs_with_the_operators_grant() {
    let ci = Receiver::start(202, "ok").await;
    let dir = scratch("configmap");
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    write_manifests(&manifests, &ci.url("/job"));
    // Promotions into test use the custom plugin `fetcher`, configured with a url.
    use_custom_plugin(&manifests, "fetcher", &ci.url("/custom"));
    let wasm = std::fs::read(env!("PROMOTER_WASM_FIXTURE_FORBIDDEN_HTTP")).unwrap();
    let digest = hex::encode(sha2::Sha256::digest(&wasm));
    let configmap = |allow: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fetcher\n  namespace: flux-system\n  labels: {{promoter.dev/plugin: \"true\"}}\ndata:\n  sha256: {digest}\n  grant: |\n    allow: [{allow}]\n    credentials:\n      - origin: {origin}\n        header: Authorization\n        prefix: \"Bearer \"\n        secretRef: {{name: ci-token, key: token}}\nbinaryData:\n  plugin.wasm: {}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: ci-token, namespace: flux-system}}\nstringData: {{token: t0ken-for-ci}}\n",
            base64_encode(&wasm),
            origin = ci.origin(),
        )
    };
    std::fs::write(manifests.join("plugin.yaml"), configmap(&ci.origin())).unwrap();
    let server = Server::start(&manifests, &dir.join("data"), &[]);
    support::fetcher_promotes_with_its_credential(&server, &ci, "5.0.0").await;
    assert!(
        !server.logs().contains("t0ken-for-ci"),
        "credentials appear in no log line"
    );
    let listing = serde_json::to_string(&server.promotions().await).unwrap();
    assert!(!listing.contains("t0ken-for-ci"), "nor in the status API");
}

#[tokio::test]
async fn a_tampered_plugin_configmap_is_refused_with_its_digest_named() {
    let ci = Receiver::start(202, "ok").await;
    let dir = scratch("tampered");
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    write_manifests(&manifests, &ci.url("/job"));
    let wasm = std::fs::read(env!("PROMOTER_WASM_FIXTURE_NOOP")).unwrap();
    std::fs::write(
        manifests.join("plugin.yaml"),
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: noop\n  namespace: flux-system\n  labels: {{promoter.dev/plugin: \"true\"}}\ndata:\n  sha256: {}\nbinaryData:\n  plugin.wasm: {}\n",
            "0".repeat(64),
            base64_encode(&wasm)
        ),
    )
    .unwrap();
    let err = serve_fails(&manifests, &dir.join("data"), &[]);
    assert!(err.contains("digest mismatch"), "{err}");
}

#[tokio::test]
async fn a_replaced_plugin_configmap_takes_effect_without_restart_and_a_broken_one_keeps_the_last()
{
    let ci = Receiver::start(202, "ok").await;
    let dir = scratch("plugin-reload");
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    write_manifests(&manifests, &ci.url("/job"));
    // Promotions into test use the custom plugin `custom`, configured with a url.
    use_custom_plugin(&manifests, "custom", &ci.url("/custom"));
    let configmap = |wasm: &[u8], digest: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: custom\n  namespace: flux-system\n  labels: {{promoter.dev/plugin: \"true\"}}\ndata:\n  sha256: {digest}\n  grant: |\n    allow: [{}]\nbinaryData:\n  plugin.wasm: {}\n",
            ci.origin(),
            base64_encode(wasm)
        )
    };
    let component = |path: &str| {
        let wasm = std::fs::read(path).unwrap();
        let digest = hex::encode(sha2::Sha256::digest(&wasm));
        (wasm, digest)
    };
    let plugin = manifests.join("plugin.yaml");

    // First the echo fixture: done, with its own URL, nothing sent anywhere.
    let (echo, echo_digest) = component(env!("PROMOTER_WASM_FIXTURE_ECHO"));
    std::fs::write(&plugin, configmap(&echo, &echo_digest)).unwrap();
    let server = Server::start(
        &manifests,
        &dir.join("data"),
        &["--watch-interval", "200ms"],
    );
    deployed_in_dev(&server, "5.0.0").await;
    let all = server
        .wait_for("echo promotion", |all| all[0]["phase"] == "succeeded")
        .await;
    assert!(
        all[0]["outcomeUrl"]
            .as_str()
            .unwrap()
            .starts_with("https://example.invalid/"),
        "{all:#?}"
    );
    assert!(ci.received().is_empty());

    // The same ConfigMap now carries the fetcher: the next promotion GETs the url.
    let (fetcher, fetcher_digest) = component(env!("PROMOTER_WASM_FIXTURE_FORBIDDEN_HTTP"));
    std::fs::write(&plugin, configmap(&fetcher, &fetcher_digest)).unwrap();
    let reloaded = |server: &Server| server.logs().matches("manifests reloaded").count();
    for _ in 0..100 {
        if reloaded(&server) >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reloaded(&server), 1, "{}", server.logs());
    deployed_in_dev(&server, "5.1.0").await;
    let all = server
        .wait_for("fetcher promotion", |all| {
            all.len() == 2 && all.iter().all(|p| p["phase"] == "succeeded")
        })
        .await;
    assert_eq!(all[0]["version"], "5.1.0");
    assert_eq!(all[0]["outcomeUrl"], ci.url("/custom"));
    assert_eq!(ci.received().len(), 1);

    // A broken replacement (its digest does not match) is reported; the fetcher keeps
    // serving.
    std::fs::write(&plugin, configmap(&echo, &fetcher_digest)).unwrap();
    for _ in 0..100 {
        if server.logs().contains("manifests not reloaded") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs = server.logs();
    assert!(
        logs.contains("manifests not reloaded") && logs.contains("digest mismatch"),
        "{logs}"
    );
    deployed_in_dev(&server, "5.2.0").await;
    let all = server
        .wait_for("promotion after the broken change", |all| {
            all.len() == 3 && all.iter().all(|p| p["phase"] == "succeeded")
        })
        .await;
    assert_eq!(all[0]["outcomeUrl"], ci.url("/custom"));
    assert_eq!(ci.received().len(), 2, "the previous plugin still serves");
}
