//! The `promoter plugin` commands plugin authors use, run as the real binary.

mod support;

use promoter::signature::{Algorithm, verify};
use std::process::Command;
use support::{Receiver, promotion_json};

const BIN: &str = env!("CARGO_BIN_EXE_promoter");

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("promoter-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn plugin_inspect_prints_the_webhook_plugins_metadata_capabilities_and_contract() {
    let out = Command::new(BIN)
        .args(["plugin", "inspect", env!("PROMOTER_WASM_PROMOTER_WEBHOOK")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("name:         webhook"), "{text}");
    assert!(
        text.contains("contract:     promoter:strategy@0.1.0"),
        "{text}"
    );
    assert!(text.contains("capabilities: http, sign"), "{text}");
    assert!(
        text.contains("\"url\""),
        "the config schema names the url field: {text}"
    );

    let out = Command::new(BIN)
        .args(["plugin", "inspect", "--json", "builtin:webhook"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["name"], "webhook");
    assert_eq!(json["capabilities"], serde_json::json!(["http", "sign"]));
}

#[test]
fn plugin_inspect_explains_a_component_without_the_strategy_export() {
    let out = Command::new(BIN)
        .args(["plugin", "inspect", env!("PROMOTER_WASM_FIXTURE_NO_EXPORT")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid component"), "{err}");
    assert!(
        err.contains("does not export promoter:strategy/strategy@0.1.0"),
        "{err}"
    );
}

#[tokio::test]
async fn plugin_run_delivers_a_signed_post_whose_signature_verifies_with_the_bound_key() {
    let receiver = Receiver::start(202, "queued").await;
    let dir = scratch("webhook");
    std::fs::write(
        dir.join("promotion.json"),
        promotion_json("promo-42").to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("config.yaml"),
        format!(
            "url: {}\nsecretRef:\n  name: jenkins-hmac\nheaders:\n  X-Team: payments\n",
            receiver.url("/job/promote")
        ),
    )
    .unwrap();
    std::fs::write(dir.join("key"), "s3cr3t-hmac-key\n").unwrap();

    let out = tokio::process::Command::new(BIN)
        .arg("plugin")
        .arg("run")
        .arg(env!("PROMOTER_WASM_PROMOTER_WEBHOOK"))
        .arg("--promotion")
        .arg(dir.join("promotion.json"))
        .arg("--config")
        .arg(dir.join("config.yaml"))
        .args(["--allow", &receiver.origin()])
        .arg("--secret")
        .arg(format!("jenkins-hmac={}", dir.join("key").display()))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outcome: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(outcome["state"], "done");

    let got = receiver.received();
    assert_eq!(got.len(), 1);
    let post = &got[0];
    assert_eq!(post.method, "POST");
    assert_eq!(post.path, "/job/promote");
    assert_eq!(post.header("idempotency-key"), Some("promo-42"));
    assert_eq!(post.header("x-team"), Some("payments"));
    assert_eq!(
        verify(post.header("x-signature"), b"s3cr3t-hmac-key", &post.body),
        Ok(Algorithm::Sha256),
        "signature {:?} must verify",
        post.header("x-signature")
    );
    let body: serde_json::Value = serde_json::from_slice(&post.body).unwrap();
    assert_eq!(body["version"], "6.5.4");
    assert_eq!(body["targetEnvironment"], "test");
    assert_eq!(body["pipeline"]["name"], "podinfo");
}

#[tokio::test]
async fn plugin_run_without_the_origin_granted_reports_capability_denied_and_sends_nothing() {
    let receiver = Receiver::start(200, "ok").await;
    let dir = scratch("denied");
    std::fs::write(
        dir.join("promotion.json"),
        promotion_json("promo-43").to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("config.yaml"),
        format!("url: {}\n", receiver.url("/hook")),
    )
    .unwrap();
    let out = tokio::process::Command::new(BIN)
        .args(["plugin", "run", "builtin:webhook", "--promotion"])
        .arg(dir.join("promotion.json"))
        .arg("--config")
        .arg(dir.join("config.yaml"))
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("capability denied"), "{err}");
    assert!(err.contains(&receiver.origin()), "{err}");
    assert_eq!(receiver.connection_count(), 0);
}

#[test]
fn plugin_run_shows_the_plugins_config_problems_before_running_it() {
    let dir = scratch("badconfig");
    std::fs::write(
        dir.join("promotion.json"),
        promotion_json("promo-44").to_string(),
    )
    .unwrap();
    std::fs::write(dir.join("config.yaml"), "url: not a url\n").unwrap();
    let out = Command::new(BIN)
        .args(["plugin", "run", "builtin:webhook", "--promotion"])
        .arg(dir.join("promotion.json"))
        .arg("--config")
        .arg(dir.join("config.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rejects the configuration"), "{err}");
}

#[test]
fn guest_stdout_becomes_log_lines_attributed_to_the_plugin() {
    let dir = scratch("echo");
    std::fs::write(
        dir.join("promotion.json"),
        promotion_json("promo-45").to_string(),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args([
            "plugin",
            "run",
            env!("PROMOTER_WASM_FIXTURE_ECHO"),
            "--promotion",
        ])
        .arg(dir.join("promotion.json"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("stdout from echo"))
        .unwrap_or_else(|| panic!("no stdout line in logs: {err}"));
    assert!(line.contains("plugin=fixture_echo"), "{line}");
    assert!(
        line.contains("promotion=\"promo-45\"") || line.contains("promotion=promo-45"),
        "{line}"
    );
    assert!(
        err.contains("echo 6.5.4"),
        "host log import reaches the logs: {err}"
    );
}
