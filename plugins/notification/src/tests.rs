use std::time::{Duration, SystemTime, UNIX_EPOCH};

use promoter_sdk::testing::{MockHost, sample_request};
use promoter_sdk::{
    DeploymentTarget, HttpError, HttpResponse, Outcome, PromoteError, PromotionRequest, Strategy,
};
use serde_json::{Value, json};

use crate::{Config, Notification, announce};

const ADDRESS: &str = "http://notification-controller.flux-system.svc.cluster.local./";
/// 2023-11-14T22:13:20Z
const NOW: u64 = 1_700_000_000;

fn config() -> Config {
    Config {
        address: Some(ADDRESS.into()),
    }
}

fn request() -> PromotionRequest {
    sample_request(&json!({"address": ADDRESS}).to_string())
}

fn at_now(host: &MockHost, request: &PromotionRequest) -> Result<Outcome, PromoteError> {
    announce(
        host,
        request,
        &config(),
        UNIX_EPOCH + Duration::from_secs(NOW),
    )
}

fn sent_event(host: &MockHost) -> Value {
    serde_json::from_slice(&host.requests().last().expect("a request was sent").body)
        .expect("the body is JSON")
}

#[test]
fn the_body_is_a_flux_event_about_the_pipeline() {
    let host = MockHost::new().respond(HttpResponse::new(202));
    let request = request();
    at_now(&host, &request).unwrap();
    assert_eq!(
        sent_event(&host),
        json!({
            "involvedObject": {
                "kind": "Pipeline",
                "namespace": "flux-system",
                "name": "podinfo",
                "apiVersion": "pipelines.weave.works/v1alpha1"
            },
            "severity": "info",
            "timestamp": "2023-11-14T22:13:20Z",
            "message": "Promote pipeline flux-system/podinfo to prod with version 1.2.3",
            "reason": "Promote",
            "metadata": {
                "pipelines.weave.works/pipeline": "flux-system/podinfo",
                "pipelines.weave.works/environment": "prod",
                "pipelines.weave.works/version": "1.2.3",
                "pipelines.weave.works/promotion": request.id,
                "pipelines.weave.works/token": format!("{}@2025-01-01T12:00:00Z", request.id),
                "pipelines.weave.works/namespace": "podinfo, podinfo",
                "pipelines.weave.works/cluster": "management, flux-system/prod-eu"
            },
            "reportingController": "promoter"
        })
    );
}

#[test]
fn fields_come_in_fluxs_order() {
    let host = MockHost::new().respond(HttpResponse::new(202));
    at_now(&host, &request()).unwrap();
    let text = String::from_utf8(host.requests()[0].body.clone()).unwrap();
    let order = [
        "\"involvedObject\":{\"kind\"",
        "\"apiVersion\"",
        "\"severity\"",
        "\"timestamp\"",
        "\"message\"",
        "\"reason\"",
        "\"metadata\"",
        "\"reportingController\"",
    ];
    let positions: Vec<usize> = order.iter().map(|f| text.find(f).unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
}

#[test]
fn every_metadata_key_carries_the_pipeline_group_prefix() {
    // notification-controller keeps only keys prefixed with the involved object's group.
    let host = MockHost::new().respond(HttpResponse::new(202));
    at_now(&host, &request()).unwrap();
    let event = sent_event(&host);
    let group = event["involvedObject"]["apiVersion"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let metadata = event["metadata"].as_object().unwrap();
    assert!(metadata.len() >= 5);
    for key in metadata.keys() {
        assert!(key.starts_with(&format!("{group}/")), "{key}");
        let bare = &key[group.len() + 1..];
        assert!(
            bare != "checksum" && bare != "digest",
            "dropped by notification-controller"
        );
    }
}

#[test]
fn a_single_target_on_the_management_cluster_has_no_cluster_entry() {
    let host = MockHost::new().respond(HttpResponse::new(202));
    let mut request = request();
    request.targets = vec![DeploymentTarget {
        namespace: "podinfo-prod".into(),
        cluster: None,
    }];
    at_now(&host, &request).unwrap();
    let metadata = &sent_event(&host)["metadata"];
    assert_eq!(metadata["pipelines.weave.works/namespace"], "podinfo-prod");
    assert!(metadata.get("pipelines.weave.works/cluster").is_none());
}

#[test]
fn the_request_is_a_json_post_to_the_address_keyed_by_the_promotion_id() {
    let host = MockHost::new().respond(HttpResponse::new(202));
    let request = request();
    at_now(&host, &request).unwrap();
    let sent = &host.requests()[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.url, ADDRESS);
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_eq!(sent.header("idempotency-key"), Some(request.id.as_str()));
    assert_eq!(
        sent.header("user-agent"),
        Some(concat!("promoter-notification/", env!("CARGO_PKG_VERSION")))
    );
}

#[test]
fn retries_send_the_same_event_but_for_its_time() {
    let host = MockHost::new()
        .respond(HttpResponse::new(503))
        .respond(HttpResponse::new(202));
    let mut request = request();
    at_now(&host, &request).unwrap_err();
    request.attempt = 2;
    announce(
        &host,
        &request,
        &config(),
        UNIX_EPOCH + Duration::from_secs(NOW + 5),
    )
    .unwrap();
    let sent = host.requests();
    let mut first: Value = serde_json::from_slice(&sent[0].body).unwrap();
    let second: Value = serde_json::from_slice(&sent[1].body).unwrap();
    assert_eq!(second["timestamp"], "2023-11-14T22:13:25Z");
    first["timestamp"] = second["timestamp"].clone();
    assert_eq!(first, second);
    assert_eq!(
        sent[0].header("idempotency-key"),
        sent[1].header("idempotency-key")
    );
}

#[test]
fn through_the_sdk_the_event_is_stamped_with_the_clock() {
    let host = MockHost::new().respond(HttpResponse::new(202));
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let outcome = promoter_sdk::promote::<Notification>(&host, &request()).unwrap();
    assert!(
        matches!(outcome, Outcome::Done { url: None, details: Some(d) }
            if d.contains("HTTP 202") && d.contains("no Alert on kind Pipeline"))
    );
    let stamp = sent_event(&host)["timestamp"].as_str().unwrap().to_string();
    assert_eq!(stamp.len(), "2023-11-14T22:13:20Z".len(), "{stamp}");
    assert!(
        stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
        "{stamp}"
    );
    let year: u64 = stamp[..4].parse().unwrap();
    assert!(year >= 1970 + before / 31_557_600, "{stamp}");
}

#[test]
fn any_2xx_is_done() {
    for status in [200, 202, 204] {
        let host = MockHost::new().respond(HttpResponse::new(status));
        assert!(matches!(
            at_now(&host, &request()),
            Ok(Outcome::Done { .. })
        ));
    }
}

#[test]
fn server_errors_and_timeouts_are_retried_honouring_retry_after_seconds() {
    for status in [500, 502, 503, 408] {
        let host = MockHost::new().respond(HttpResponse::new(status));
        let error = at_now(&host, &request()).unwrap_err();
        assert!(error.retryable, "{status}: {error}");
        assert!(error.message.contains(&format!("HTTP {status}")), "{error}");
        assert_eq!(error.retry_after, None);
    }
    let host = MockHost::new().respond(HttpResponse::new(503).with_header("Retry-After", "7"));
    let error = at_now(&host, &request()).unwrap_err();
    assert_eq!(error.retry_after, Some(Duration::from_secs(7)));
}

#[test]
fn connection_failures_are_retried_and_a_host_refusal_is_not() {
    for failure in [
        HttpError::Connection("connection refused".into()),
        HttpError::Timeout("no answer in 10s".into()),
    ] {
        let host = MockHost::new().fail(failure);
        let error = at_now(&host, &request()).unwrap_err();
        assert!(error.retryable, "{error}");
        assert!(error.message.contains(ADDRESS), "{error}");
    }
    let host = MockHost::new().fail(HttpError::Denied("origin not granted".into()));
    let error = at_now(&host, &request()).unwrap_err();
    assert!(!error.retryable);
    assert!(error.message.contains("--events-addr"), "{error}");
}

/// notification-controller's duplicate filter answers as go-limiter's `httplimit` does:
/// the limiter's headers, Retry-After the end of its window (a date), a plain-text body.
fn rate_limited() -> HttpResponse {
    HttpResponse::new(429)
        .with_header("X-RateLimit-Limit", "1")
        .with_header("X-RateLimit-Remaining", "0")
        .with_header("X-RateLimit-Reset", "Tue, 14 Nov 2023 22:18:20 UTC")
        .with_header("Retry-After", "Tue, 14 Nov 2023 22:18:20 UTC")
        .with_body("Too Many Requests\n")
}

#[test]
fn a_429_on_the_first_attempt_is_retried() {
    let host = MockHost::new().respond(rate_limited());
    let error = at_now(&host, &request()).unwrap_err();
    assert!(error.retryable, "{error}");
    assert!(error.message.contains("HTTP 429"), "{error}");
    assert!(error.message.contains("--rate-limit-interval"), "{error}");
    assert_eq!(error.retry_after, None, "an HTTP-date is not waited out");
}

#[test]
fn the_duplicate_filters_429_on_a_retry_means_an_earlier_attempt_delivered() {
    let host = MockHost::new().respond(rate_limited());
    let mut again = request();
    again.attempt = 2;
    match at_now(&host, &again) {
        Ok(Outcome::Done {
            details: Some(details),
            ..
        }) => assert!(details.contains("earlier attempt"), "{details}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_429_without_the_limiters_headers_is_retried_on_every_attempt() {
    // A proxy or gateway in front of notification-controller throttling: nothing says the
    // event got through.
    for attempt in [1, 2, 5] {
        let host = MockHost::new().respond(HttpResponse::new(429).with_header("Retry-After", "30"));
        let mut request = request();
        request.attempt = attempt;
        let error = at_now(&host, &request).unwrap_err();
        assert!(error.retryable, "attempt {attempt}: {error}");
        assert_eq!(error.retry_after, Some(Duration::from_secs(30)));
    }
}

#[test]
fn the_token_is_the_promotions_own_stable_across_retries() {
    let token = |request: &PromotionRequest| {
        let host = MockHost::new().respond(HttpResponse::new(202));
        at_now(&host, request).unwrap();
        sent_event(&host)["metadata"]["pipelines.weave.works/token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let first = request();
    let mut retry = first.clone();
    retry.attempt = 3;
    assert_eq!(token(&first), token(&retry));
    assert!(token(&first).starts_with(&first.id));

    // The same version into the same environment, recorded again from a later deployment
    // event (the first Promotion deleted): same message, same id, another token.
    let mut again = first.clone();
    again.event.timestamp = "2025-01-01T12:03:00Z".into();
    assert_ne!(token(&first), token(&again));

    // A request with no Flux event behind it: the id alone.
    let mut requested = first.clone();
    requested.event.timestamp.clear();
    assert_eq!(token(&requested), first.id);
}

#[test]
fn client_errors_fail_for_good_with_a_hint_and_the_body() {
    let host = MockHost::new()
        .respond(HttpResponse::new(400).with_body("decoding the request body failed\n"));
    let error = at_now(&host, &request()).unwrap_err();
    assert!(!error.retryable);
    assert!(
        error.message.starts_with(&format!(
            "notification-controller at {ADDRESS} answered HTTP 400"
        )),
        "{error}"
    );
    assert!(error.message.contains("Flux event"), "{error}");
    assert!(
        error
            .message
            .ends_with(": decoding the request body failed"),
        "{error}"
    );

    let host = MockHost::new().respond(HttpResponse::new(404));
    let error = at_now(&host, &request()).unwrap_err();
    assert!(!error.retryable);
    assert!(error.message.contains("event receiver"), "{error}");

    let host = MockHost::new()
        .respond(HttpResponse::new(301).with_header("Location", "http://nc.example/events"));
    let error = at_now(&host, &request()).unwrap_err();
    assert!(!error.retryable);
    assert!(
        error
            .message
            .contains("redirect to http://nc.example/events"),
        "{error}"
    );
}

#[test]
fn a_pipeline_writes_an_empty_mapping_and_only_the_address_is_accepted() {
    assert_eq!(
        promoter_sdk::validate_config::<Notification>("{}").unwrap(),
        Config::default()
    );
    assert_eq!(
        promoter_sdk::validate_config::<Notification>("").unwrap(),
        Config::default()
    );
    let problems =
        promoter_sdk::validate_config::<Notification>(r#"{"url": "http://x/"}"#).unwrap_err();
    assert!(problems[0].contains("unknown field `url`"), "{problems:?}");
    let problems =
        promoter_sdk::validate_config::<Notification>(r#"{"address": "ftp://x/"}"#).unwrap_err();
    assert!(problems[0].starts_with("address: "), "{problems:?}");
}

#[test]
fn without_an_address_nothing_is_sent_and_the_flag_is_named() {
    let host = MockHost::new();
    let error = promoter_sdk::promote::<Notification>(&host, &sample_request("{}")).unwrap_err();
    assert!(!error.retryable);
    assert!(error.message.contains("--events-addr"), "{error}");
    assert!(host.requests().is_empty());
}

#[test]
fn metadata_asks_for_http_only_and_ships_a_json_schema() {
    let meta = Notification::metadata();
    assert_eq!(meta.name, "notification");
    assert_eq!(meta.capabilities, vec![promoter_sdk::Capability::Http]);
    let schema: Value = serde_json::from_str(&meta.config_schema).unwrap();
    assert_eq!(schema["additionalProperties"], false);
}
