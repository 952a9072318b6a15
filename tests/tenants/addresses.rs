//! Item 4 (HTTP): a Pipeline's URLs are tenant input. A built-in strategy's webhook `url`
//! or pull-request `url`/`apiBase` naming a literal loopback, private, link-local or
//! metadata address is refused unless the operator passes `--builtin-private-networks`;
//! the refusal is recorded on the promotion, naming the pipeline, the URL and the flag,
//! and nothing connects, so no byte of an internal answer reaches the status. An address
//! the operator wrote into a custom plugin's grant stays allowed: the operator is trusted.

use crate::support::{
    PRIVATE_NETWORKS_OFF, Receiver, Server, base64_encode, deployed_in_dev, scratch,
    use_custom_plugin, write_manifests,
};
use sha2::Digest as _;

/// What a sidecar's admin port (Envoy's :15000, say) would hand to whoever asks.
const ADMIN_ANSWER: &str = "admin-port-answer: cluster secrets, config_dump";

/// Waits for the promotion into test to fail; returns it and the whole listing as text.
async fn failed_into_test(server: &Server) -> (serde_json::Value, String) {
    let all = server
        .wait_for("the promotion into test to fail", |all| {
            all.iter()
                .any(|p| p["targetEnvironment"] == "test" && p["phase"] == "failed")
        })
        .await;
    let failed = all
        .iter()
        .find(|p| p["targetEnvironment"] == "test")
        .unwrap()
        .clone();
    (failed, serde_json::to_string(&all).unwrap())
}

#[tokio::test]
async fn a_pipeline_webhook_to_a_loopback_admin_port_is_refused_and_recorded_naming_the_flag() {
    let admin_port = Receiver::start(200, ADMIN_ANSWER).await;
    let dir = scratch("tenants-address-webhook");
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let url = admin_port.url("/config_dump");
    write_manifests(&manifests, &url);
    // As an operator installs it: no --builtin-private-networks.
    let server =
        Server::start_with_env(&manifests, &dir.join("data"), &[], &[PRIVATE_NETWORKS_OFF]);

    let (code, body) = deployed_in_dev(&server, "6.5.4").await;
    assert_eq!(
        code, 202,
        "the event is accepted and the promotion recorded: {body}"
    );
    let (failed, listing) = failed_into_test(&server).await;
    let error = failed["lastError"].as_str().unwrap();
    assert!(
        error.contains("Pipeline flux-system/podinfo")
            && error.contains(&format!("webhook url {url}"))
            && error.contains("--builtin-private-networks"),
        "the refusal names the pipeline, the URL and the flag: {error}"
    );
    assert_eq!(failed["attempts"], 1, "a refused address is not retried");
    assert_eq!(
        admin_port.connection_count(),
        0,
        "nothing connected to the admin port"
    );
    assert!(!listing.contains("admin-port-answer"), "{listing}");
}

#[tokio::test]
async fn a_pipeline_pull_request_api_base_on_an_internal_address_is_refused_before_any_request() {
    let forge = Receiver::start(201, ADMIN_ANSWER).await;
    let dir = scratch("tenants-address-pr");
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    write_manifests(&manifests, "https://ci.example.com/hook");
    let api_base = forge.url("/api/v3");
    let text = std::fs::read_to_string(manifests.join("pipeline.yaml")).unwrap();
    let text = text.replacen(
        "          clusterRef: {kind: GitopsCluster, name: test-us}\n",
        &format!(
            "          clusterRef: {{kind: GitopsCluster, name: test-us}}\n      promotion:\n        \
             strategy:\n          pull-request:\n            type: github\n            \
             url: \"{repo}\"\n            baseBranch: main\n            \
             apiBase: \"{api_base}\"\n",
            // A named remote: only the API base is internal here (a literal internal
            // remote is refused at load, see repository.rs).
            repo = "https://git.example.invalid/org/config.git",
        ),
        1,
    );
    std::fs::write(manifests.join("pipeline.yaml"), text).unwrap();
    let server =
        Server::start_with_env(&manifests, &dir.join("data"), &[], &[PRIVATE_NETWORKS_OFF]);

    let (code, body) = deployed_in_dev(&server, "6.5.4").await;
    assert_eq!(code, 202, "{body}");
    let (failed, listing) = failed_into_test(&server).await;
    let error = failed["lastError"].as_str().unwrap();
    assert!(
        error.contains("Pipeline flux-system/podinfo")
            && error.contains(&format!("pull-request apiBase {api_base}"))
            && error.contains("--builtin-private-networks"),
        "{error}"
    );
    assert_eq!(forge.connection_count(), 0);
    assert!(!listing.contains("admin-port-answer"), "{listing}");
}

#[tokio::test]
async fn an_operator_granted_literal_loopback_address_stays_allowed_for_a_custom_plugin() {
    let ci = Receiver::start(200, "ok").await;
    let dir = scratch("tenants-address-operator");
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    write_manifests(&manifests, &ci.url("/job"));
    use_custom_plugin(&manifests, "fetcher", &ci.url("/custom"));
    let wasm = std::fs::read(env!("PROMOTER_WASM_FIXTURE_FORBIDDEN_HTTP")).unwrap();
    std::fs::write(
        manifests.join("plugin.yaml"),
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fetcher\n  namespace: flux-system\n  \
             labels: {{promoter.dev/plugin: \"true\"}}\ndata:\n  sha256: {}\n  grant: |\n    \
             allow: [{}]\nbinaryData:\n  plugin.wasm: {}\n",
            hex::encode(sha2::Sha256::digest(&wasm)),
            ci.origin(),
            base64_encode(&wasm)
        ),
    )
    .unwrap();
    let server =
        Server::start_with_env(&manifests, &dir.join("data"), &[], &[PRIVATE_NETWORKS_OFF]);
    let into_test = crate::readback::promote_into_test(&server).await;
    assert_eq!(into_test["phase"], "succeeded", "{into_test:#}");
    assert!(
        ci.received().iter().any(|r| r.path == "/custom"),
        "the operator's literal 127.0.0.1 origin was reached"
    );
}
