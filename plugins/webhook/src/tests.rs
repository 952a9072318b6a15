use std::time::Duration;

use hmac::{Hmac, Mac};
use promoter_sdk::testing::{MockHost, sample_request};
use promoter_sdk::{HttpError, HttpResponse, Outcome, PromotionRequest, Strategy};
use serde_json::json;

use crate::Webhook;

const URL: &str = "https://hooks.example.com/promote";

fn signed_config() -> String {
    json!({"url": URL, "secretRef": {"name": "webhook-hmac"}}).to_string()
}

fn promote(
    host: &MockHost,
    request: &PromotionRequest,
) -> Result<Outcome, promoter_sdk::PromoteError> {
    promoter_sdk::promote::<Webhook>(host, request)
}

fn ok() -> HttpResponse {
    HttpResponse::new(200)
}

#[test]
fn signature_header_verifies_with_the_bound_key() {
    let host = MockHost::new()
        .with_key("webhook-hmac", "flux-shared-secret")
        .respond(ok());
    promote(&host, &sample_request(&signed_config())).unwrap();

    let sent = &host.requests()[0];
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"flux-shared-secret").unwrap();
    mac.update(&sent.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(sent.header("X-Signature"), Some(expected.as_str()));
}

#[test]
fn idempotency_key_is_the_promotion_id() {
    let host = MockHost::new().respond(ok());
    let request = sample_request(&json!({"url": URL}).to_string());
    promote(&host, &request).unwrap();
    assert_eq!(
        host.requests()[0].header("Idempotency-Key"),
        Some(request.id.as_str())
    );
}

#[test]
fn body_describes_the_promotion_as_json() {
    let host = MockHost::new().respond(ok());
    let request = sample_request(&json!({"url": URL}).to_string());
    promote(&host, &request).unwrap();

    let sent = &host.requests()[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.url, URL);
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_eq!(
        sent.header("user-agent"),
        Some(concat!("promoter-webhook/", env!("CARGO_PKG_VERSION")))
    );
    let body: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(
        body,
        json!({
            "id": request.id,
            "attempt": 1,
            "pipeline": {"namespace": "flux-system", "name": "podinfo"},
            "sourceEnvironment": "dev",
            "targetEnvironment": "prod",
            "targets": [
                {"namespace": "podinfo"},
                {"namespace": "podinfo", "cluster": {
                    "apiVersion": "gitops.weave.works/v1alpha1",
                    "kind": "GitopsCluster",
                    "name": "prod-eu",
                    "namespace": "flux-system"
                }}
            ],
            "app": {"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease", "name": "podinfo"},
            "version": "1.2.3",
            "event": {
                "kind": "HelmRelease",
                "name": "podinfo",
                "namespace": "podinfo",
                "reason": "UpgradeSucceeded",
                "severity": "info",
                "message": request.event.message,
                "timestamp": "2025-01-01T12:00:00Z",
                "reportingController": "helm-controller",
                "metadata": {"revision": "1.2.3", "token": "dev"}
            }
        })
    );
}

#[test]
fn configured_headers_are_sent() {
    let host = MockHost::new().respond(ok());
    let config = json!({"url": URL, "headers": {"X-Team": "web", "User-Agent": "acme-hook"}});
    promote(&host, &sample_request(&config.to_string())).unwrap();
    let sent = &host.requests()[0];
    assert_eq!(sent.header("x-team"), Some("web"));
    let agents: Vec<_> = sent
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("user-agent"))
        .collect();
    assert_eq!(
        agents.len(),
        1,
        "a configured User-Agent replaces the default"
    );
    assert_eq!(agents[0].1, "acme-hook");
}

#[test]
fn request_is_unsigned_without_secret_ref() {
    let host = MockHost::new().respond(ok());
    promote(&host, &sample_request(&json!({"url": URL}).to_string())).unwrap();
    assert_eq!(host.requests()[0].header("X-Signature"), None);
}

#[test]
fn seed_nested_config_is_accepted_and_signs() {
    let config = json!({"webhook": {"url": URL, "secretRef": {"name": "webhook-hmac"}}});
    assert!(promoter_sdk::validate_config::<Webhook>(&config.to_string()).is_ok());

    let host = MockHost::new().with_key("webhook-hmac", "k").respond(ok());
    promote(&host, &sample_request(&config.to_string())).unwrap();
    let sent = &host.requests()[0];
    assert_eq!(sent.url, URL);
    assert!(sent.header("X-Signature").unwrap().starts_with("sha256="));
}

#[test]
fn success_status_is_done_with_the_webhook_url() {
    let host = MockHost::new().respond(HttpResponse::new(202));
    let outcome = promote(&host, &sample_request(&json!({"url": URL}).to_string())).unwrap();
    assert_eq!(
        outcome,
        Outcome::done().with_url(URL).with_details("HTTP 202")
    );
}

#[test]
fn service_unavailable_with_retry_after_is_retried_after_that_delay() {
    let host = MockHost::new().respond(
        HttpResponse::new(503)
            .with_header("Retry-After", "7")
            .with_body("down for maintenance"),
    );
    let error = promote(&host, &sample_request(&json!({"url": URL}).to_string())).unwrap_err();
    assert!(error.retryable);
    assert_eq!(error.retry_after, Some(Duration::from_secs(7)));
    assert_eq!(
        error.message,
        format!("webhook {URL} answered HTTP 503: down for maintenance")
    );
}

#[test]
fn rate_limit_and_request_timeout_are_retried() {
    for status in [408, 429, 500, 502] {
        let host = MockHost::new().respond(HttpResponse::new(status));
        let error = promote(&host, &sample_request(&json!({"url": URL}).to_string())).unwrap_err();
        assert!(error.retryable, "HTTP {status}");
        assert_eq!(error.retry_after, None, "HTTP {status}");
    }
}

#[test]
fn retry_after_as_http_date_is_ignored() {
    let host = MockHost::new().respond(
        HttpResponse::new(429).with_header("Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT"),
    );
    let error = promote(&host, &sample_request(&json!({"url": URL}).to_string())).unwrap_err();
    assert!(error.retryable);
    assert_eq!(error.retry_after, None);
}

#[test]
fn not_found_is_permanent_and_quotes_the_body() {
    let host = MockHost::new().respond(HttpResponse::new(404).with_body("no such hook"));
    let error = promote(&host, &sample_request(&json!({"url": URL}).to_string())).unwrap_err();
    assert!(!error.retryable);
    assert_eq!(
        error.message,
        format!("webhook {URL} answered HTTP 404: no such hook")
    );
}

#[test]
fn long_error_bodies_are_cut_to_two_hundred_characters() {
    let host = MockHost::new().respond(HttpResponse::new(400).with_body("é".repeat(500)));
    let error = promote(&host, &sample_request(&json!({"url": URL}).to_string())).unwrap_err();
    let excerpt = error.message.split(": ").nth(1).unwrap();
    assert_eq!(excerpt.chars().count(), 200);
    assert!(excerpt.ends_with('…'));
}

#[test]
fn connection_errors_and_timeouts_are_retried() {
    for failure in [
        HttpError::Connection("POST https://hooks.example.com/promote: connection refused".into()),
        HttpError::Timeout("POST https://hooks.example.com/promote: no response in time".into()),
    ] {
        let host = MockHost::new().fail(failure.clone());
        let error = promote(&host, &sample_request(&json!({"url": URL}).to_string())).unwrap_err();
        assert!(error.retryable, "{failure}");
        assert!(
            error.message.contains(&failure.to_string()),
            "{}",
            error.message
        );
    }
}

#[test]
fn origin_denied_by_the_host_is_permanent_and_says_so() {
    let host = MockHost::new().fail(HttpError::Denied(
        "POST https://hooks.example.com/promote: the origin is not granted to this plugin".into(),
    ));
    let error = promote(&host, &sample_request(&json!({"url": URL}).to_string())).unwrap_err();
    assert!(!error.retryable);
    assert!(
        error
            .message
            .starts_with("the host refused the webhook origin https://hooks.example.com;"),
        "{}",
        error.message
    );
}

#[test]
fn unbound_signing_key_is_a_permanent_error_naming_the_key() {
    let host = MockHost::new();
    let error = promote(&host, &sample_request(&signed_config())).unwrap_err();
    assert!(!error.retryable);
    assert!(
        error.message.contains("no signing key \"webhook-hmac\""),
        "{}",
        error.message
    );
    assert!(host.requests().is_empty(), "nothing is sent unsigned");
}

#[test]
fn forbidden_headers_are_rejected_by_validate() {
    let config = json!({"url": URL, "headers": {
        "X-Signature": "sha256=forged",
        "idempotency-key": "1",
        "Authorization": "Bearer t",
        "Host": "elsewhere.example",
        "Content-Length": "0",
        "X-Team": "web"
    }});
    let problems = promoter_sdk::validate_config::<Webhook>(&config.to_string()).unwrap_err();
    assert_eq!(problems.len(), 5, "{problems:?}");
    for name in [
        "X-Signature",
        "idempotency-key",
        "Authorization",
        "Host",
        "Content-Length",
    ] {
        assert!(
            problems
                .iter()
                .any(|p| p.contains(&format!("{name:?} may not be configured"))),
            "{name}: {problems:?}"
        );
    }
}

#[test]
fn invalid_config_never_reaches_the_network() {
    let host = MockHost::new();
    let error = promote(
        &host,
        &sample_request(r#"{"url": "ftp://files.example.com/"}"#),
    )
    .unwrap_err();
    assert!(!error.retryable);
    assert!(
        error.message.contains("expected http or https"),
        "{}",
        error.message
    );
    assert!(host.requests().is_empty());
}

#[test]
fn metadata_asks_for_http_and_signing_and_ships_a_json_schema() {
    let metadata = Webhook::metadata();
    assert_eq!(metadata.name, "webhook");
    assert_eq!(metadata.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(
        metadata.capabilities,
        vec![
            promoter_sdk::Capability::Http,
            promoter_sdk::Capability::Sign
        ]
    );
    let schema: serde_json::Value = serde_json::from_str(&metadata.config_schema).unwrap();
    assert_eq!(schema["$defs"]["webhook"]["required"], json!(["url"]));
}
