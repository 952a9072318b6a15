//! Transport failures, the forge's answers and their retry hints, whatever the forge.

use std::time::Duration;

use promoter_sdk::testing::MockHost;
use promoter_sdk::{HttpError, HttpResponse, PromoteError};
use serde_json::json;

use super::{BASE, BODY, HEAD, TITLE, answer};
use crate::forge::error::{http_date, retry_after};
use crate::forge::{ForgeError, Repo, ensure_pr, find_open_pr};

fn github() -> Repo {
    Repo::new("https://github.com/acme/fleet-config", None, None).unwrap()
}

#[test]
fn a_request_the_host_refused_is_permanent_and_names_the_origin_to_grant() {
    let host = MockHost::new().fail(HttpError::Denied(
        "origin https://api.github.com is not granted".into(),
    ));
    let error = ensure_pr(&host, &github(), HEAD, BASE, TITLE, BODY).unwrap_err();
    assert!(!error.retryable, "{error}");
    assert!(
        error
            .message
            .contains("grant the plugin the origin https://api.github.com"),
        "{error}"
    );
}

#[test]
fn timeouts_and_connection_failures_are_retryable() {
    for failure in [
        HttpError::Timeout("no answer in 30s".into()),
        HttpError::Connection("connection reset".into()),
        HttpError::Other("response over the size limit".into()),
    ] {
        let host = MockHost::new().fail(failure.clone());
        let error = find_open_pr(&host, &github(), HEAD, BASE).unwrap_err();
        assert!(error.retryable, "{failure:?}: {error}");
    }
}

#[test]
fn an_invalid_request_is_permanent() {
    let host = MockHost::new().fail(HttpError::InvalidRequest("bad header".into()));
    let error = find_open_pr(&host, &github(), HEAD, BASE).unwrap_err();
    assert!(!error.retryable, "{error}");
}

#[test]
fn server_errors_honour_retry_after() {
    let host = MockHost::new().respond(HttpResponse::new(502).with_header("Retry-After", "12"));
    let error = find_open_pr(&host, &github(), HEAD, BASE).unwrap_err();
    assert!(error.retryable);
    assert_eq!(error.retry_after, Some(Duration::from_secs(12)));
}

#[test]
fn retry_after_as_an_http_date_is_measured_against_the_date_header() {
    let response = HttpResponse::new(429)
        .with_header("Date", "Wed, 21 Oct 2015 07:28:00 GMT")
        .with_header("Retry-After", "Wed, 21 Oct 2015 07:29:30 GMT");
    assert_eq!(retry_after(&response), Some(Duration::from_secs(90)));
}

#[test]
fn a_rate_limit_reset_while_requests_remain_is_no_reason_to_wait() {
    let response = HttpResponse::new(503)
        .with_header("x-ratelimit-remaining", "4000")
        .with_header("x-ratelimit-reset", "1655121053");
    assert_eq!(retry_after(&response), None);
}

#[test]
fn http_dates_parse_to_epoch_seconds() {
    assert_eq!(http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
    assert_eq!(
        http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
        Some(784_111_777)
    );
    assert_eq!(
        http_date("Tue, 29 Feb 2028 23:59:59 GMT"),
        Some(1_835_481_599)
    );
    assert_eq!(http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
    assert_eq!(http_date("yesterday"), None);
}

#[test]
fn an_answer_that_is_not_json_is_permanent_and_points_at_the_api_base() {
    let host = MockHost::new().respond(
        HttpResponse::new(200)
            .with_header("Content-Type", "text/html")
            .with_body("<!doctype html><title>Welcome</title>"),
    );
    let error = find_open_pr(&host, &github(), HEAD, BASE).unwrap_err();
    assert!(!error.retryable);
    assert!(
        error.message.contains("something other than JSON"),
        "{error}"
    );
    assert!(error.message.contains("check apiBase"), "{error}");
}

#[test]
fn a_redirect_is_permanent_and_says_where_it_went() {
    let host = MockHost::new()
        .respond(HttpResponse::new(302).with_header("Location", "https://github.com/login"));
    let error = find_open_pr(&host, &github(), HEAD, BASE).unwrap_err();
    assert!(!error.retryable);
    assert!(
        error
            .message
            .contains("redirected to https://github.com/login"),
        "{error}"
    );
}

#[test]
fn error_messages_quote_the_forge_but_not_the_request_headers() {
    let host = MockHost::new().respond(answer(
        401,
        json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"}),
    ));
    let error = find_open_pr(&host, &github(), HEAD, BASE).unwrap_err();
    assert!(error.message.ends_with(": Bad credentials"), "{error}");
    for leaked in [
        "promoter-pull-request/",
        "application/vnd.github+json",
        "2022-11-28",
    ] {
        assert!(!error.message.contains(leaked), "{leaked} in {error}");
    }
}

#[test]
fn long_forge_messages_are_cut() {
    let host = MockHost::new().respond(answer(400, json!({"message": "x".repeat(5000)})));
    let error = find_open_pr(&host, &github(), HEAD, BASE).unwrap_err();
    assert!(
        error.message.len() < 600,
        "{} characters",
        error.message.len()
    );
}

#[test]
fn forge_errors_convert_to_and_from_promote_errors() {
    let error = ForgeError::retryable("slow down").with_retry_after(Duration::from_secs(5));
    let promote: PromoteError = error.clone().into();
    assert_eq!(
        promote,
        PromoteError::retryable("slow down").with_retry_after(Duration::from_secs(5))
    );
    assert_eq!(ForgeError::from(promote), error);
    let permanent: PromoteError = ForgeError::permanent("no").into();
    assert!(!permanent.retryable);
}
