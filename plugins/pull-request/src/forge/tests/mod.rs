//! Each forge against a scripted host: the exact requests its documented API expects, and
//! the find-or-create behaviour a user relies on (one pull request, whatever the retries).
//!
//! Every forge module describes its API in a [`Fixture`]; [`forge_scenarios!`] runs the same
//! scenarios against each.

mod azure;
mod bitbucket;
mod errors;
mod gitea;
mod github;
mod gitlab;
mod repo;

use promoter_sdk::testing::MockHost;
use promoter_sdk::{HttpRequest, HttpResponse};
use serde_json::Value;
use std::time::Duration;

use super::{Action, Repo, ensure_pr, find_open_pr};

pub(super) const HEAD: &str = "promotion-flux-system-podinfo-prod";
/// A base branch with a `/`, so the tests see it percent-encoded where it must be.
pub(super) const BASE: &str = "env/prod";
pub(super) const TITLE: &str = "Promote flux-system/podinfo in prod to 1.2.3";
pub(super) const OLD_TITLE: &str = "Promote flux-system/podinfo in prod to 1.2.2";
pub(super) const BODY: &str = "Promotes podinfo to 1.2.3.\n\n<details><summary>Promotion</summary>\n\nflux-system/podinfo/prod\n</details>";

/// One forge's documented API, as these tests expect to see it used.
pub(super) struct Fixture {
    pub repo: Repo,
    /// The exact URL of the first find request for [`HEAD`] into [`BASE`].
    pub find_url: String,
    /// The answer to that request when nothing is open.
    pub none_open: fn() -> HttpResponse,
    /// The answer listing open pull request 7 with this title and body.
    pub open: fn(&str, &str) -> HttpResponse,
    pub create_url: String,
    /// The JSON body a create of [`TITLE`] and [`BODY`] sends.
    pub create_body: Value,
    /// The answer to a create: pull request 7 with this title and body.
    pub created: fn(&str, &str) -> HttpResponse,
    /// The forge's "one is already open" answer to a create.
    pub already_exists: fn() -> HttpResponse,
    /// Method and URL that update pull request 7.
    pub update: (&'static str, String),
    /// The JSON body an update of the pull request [`Fixture::open`] lists (with
    /// [`OLD_TITLE`]) to [`TITLE`] and [`BODY`] sends.
    pub update_body: Value,
    pub updated: fn(&str, &str) -> HttpResponse,
    /// Pull request 7's web page.
    pub web_url: &'static str,
}

/// A JSON answer.
pub(super) fn answer(status: u16, json: Value) -> HttpResponse {
    HttpResponse::new(status)
        .with_header("Content-Type", "application/json; charset=utf-8")
        .with_body(json.to_string())
}

pub(super) fn body_json(request: &HttpRequest) -> Value {
    serde_json::from_slice(&request.body).unwrap_or_else(|error| {
        panic!(
            "{} {} sent a body that is not JSON ({error}): {:?}",
            request.method,
            request.url,
            String::from_utf8_lossy(&request.body)
        )
    })
}

/// Method and URL of each request, for assertions that read like the API docs.
pub(super) fn calls(host: &MockHost) -> Vec<(String, String)> {
    host.requests()
        .into_iter()
        .map(|r| (r.method, r.url))
        .collect()
}

fn assert_plain_api_request(request: &HttpRequest) {
    assert_eq!(
        request.header("Authorization"),
        None,
        "the host adds credentials, not the plugin"
    );
    assert!(
        request
            .header("User-Agent")
            .is_some_and(|ua| ua.starts_with("promoter-pull-request/")),
        "{:?}",
        request.headers
    );
    assert!(request.header("Accept").is_some(), "{:?}", request.headers);
    if !request.body.is_empty() {
        assert_eq!(request.header("Content-Type"), Some("application/json"));
    }
}

pub(super) fn finds_the_open_pull_request_with_the_documented_request(f: &Fixture) {
    let host = MockHost::new().respond((f.open)(TITLE, BODY));
    let found = find_open_pr(&host, &f.repo, HEAD, BASE)
        .unwrap()
        .expect("open");
    assert_eq!((found.number, found.url.as_str()), (7, f.web_url));
    assert_eq!((found.title.as_str(), found.body.as_str()), (TITLE, BODY));
    let requests = host.requests();
    assert_eq!(calls(&host), [("GET".to_string(), f.find_url.clone())]);
    assert!(requests[0].body.is_empty());
    assert_plain_api_request(&requests[0]);
}

pub(super) fn ensure_creates_a_pull_request_when_none_is_open(f: &Fixture) {
    let host = MockHost::new()
        .respond((f.none_open)())
        .respond((f.created)(TITLE, BODY));
    let ensured = ensure_pr(&host, &f.repo, HEAD, BASE, TITLE, BODY).unwrap();
    assert_eq!(ensured.action, Action::Created);
    assert_eq!(ensured.pull_request.number, 7);
    assert_eq!(ensured.pull_request.url, f.web_url);
    assert_eq!(
        calls(&host),
        [
            ("GET".to_string(), f.find_url.clone()),
            ("POST".to_string(), f.create_url.clone())
        ]
    );
    let create = &host.requests()[1];
    assert_eq!(body_json(create), f.create_body);
    assert_plain_api_request(create);
}

pub(super) fn ensure_updates_the_open_pull_request_when_its_title_differs(f: &Fixture) {
    let host = MockHost::new()
        .respond((f.open)(OLD_TITLE, BODY))
        .respond((f.updated)(TITLE, BODY));
    let ensured = ensure_pr(&host, &f.repo, HEAD, BASE, TITLE, BODY).unwrap();
    assert_eq!(ensured.action, Action::Updated);
    assert_eq!(ensured.pull_request.title, TITLE);
    assert_eq!(ensured.pull_request.url, f.web_url);
    let (method, url) = &f.update;
    assert_eq!(
        calls(&host),
        [
            ("GET".to_string(), f.find_url.clone()),
            (method.to_string(), url.clone())
        ]
    );
    let update = &host.requests()[1];
    assert_eq!(body_json(update), f.update_body);
    assert_plain_api_request(update);
}

pub(super) fn ensure_sends_nothing_more_when_the_open_pull_request_is_identical(f: &Fixture) {
    let host = MockHost::new().respond((f.open)(TITLE, BODY));
    let ensured = ensure_pr(&host, &f.repo, HEAD, BASE, TITLE, BODY).unwrap();
    assert_eq!(ensured.action, Action::Unchanged);
    assert_eq!(ensured.pull_request.number, 7);
    assert_eq!(host.requests().len(), 1);
}

pub(super) fn ensure_after_already_exists_finds_the_pull_request_with_one_create(f: &Fixture) {
    let host = MockHost::new()
        .respond((f.none_open)())
        .respond((f.already_exists)())
        .respond((f.open)(TITLE, BODY));
    let ensured = ensure_pr(&host, &f.repo, HEAD, BASE, TITLE, BODY).unwrap();
    assert_eq!(ensured.action, Action::Unchanged);
    assert_eq!(ensured.pull_request.number, 7);
    assert_eq!(
        calls(&host),
        [
            ("GET".to_string(), f.find_url.clone()),
            ("POST".to_string(), f.create_url.clone()),
            ("GET".to_string(), f.find_url.clone()),
        ]
    );
}

pub(super) fn rate_limit_is_retryable_after_what_the_forge_asked(f: &Fixture) {
    let host = MockHost::new().respond(
        answer(429, serde_json::json!({"message": "Too Many Requests"}))
            .with_header("Retry-After", "30"),
    );
    let error = ensure_pr(&host, &f.repo, HEAD, BASE, TITLE, BODY).unwrap_err();
    assert!(error.retryable, "{error}");
    assert_eq!(error.retry_after, Some(Duration::from_secs(30)));
    assert!(error.message.contains("rate limited"), "{error}");
}

pub(super) fn rejected_token_is_permanent_and_names_the_origin(f: &Fixture) {
    let host = MockHost::new().respond(answer(
        401,
        serde_json::json!({"message": "Bad credentials"}),
    ));
    let error = ensure_pr(&host, &f.repo, HEAD, BASE, TITLE, BODY).unwrap_err();
    assert!(!error.retryable, "{error}");
    let origin = f.repo.api_origin();
    assert!(
        error
            .message
            .contains(&format!("the forge rejected the token bound to {origin}"))
            && error.message.contains("check the Secret's token"),
        "{error}"
    );
}

pub(super) fn missing_repository_is_permanent_and_names_it(f: &Fixture) {
    let host = MockHost::new().respond(answer(404, serde_json::json!({"message": "Not Found"})));
    let error = ensure_pr(&host, &f.repo, HEAD, BASE, TITLE, BODY).unwrap_err();
    assert!(!error.retryable, "{error}");
    let expected = format!(
        "repository {} not found at {} (or the token bound to {} cannot see it)",
        f.repo.path(),
        f.repo.api_base,
        f.repo.api_origin()
    );
    assert!(error.message.contains(&expected), "{error}");
}

pub(super) fn server_error_is_retryable(f: &Fixture) {
    let host = MockHost::new().respond(HttpResponse::new(503).with_body("upstream down"));
    let error = ensure_pr(&host, &f.repo, HEAD, BASE, TITLE, BODY).unwrap_err();
    assert!(error.retryable, "{error}");
    assert_eq!(error.retry_after, None);
    assert!(error.message.contains("HTTP 503: upstream down"), "{error}");
}

/// The shared scenarios as `#[test]`s for one forge's fixture.
macro_rules! forge_scenarios {
    ($fixture:expr) => {
        forge_scenarios!(@tests $fixture;
            finds_the_open_pull_request_with_the_documented_request,
            ensure_creates_a_pull_request_when_none_is_open,
            ensure_updates_the_open_pull_request_when_its_title_differs,
            ensure_sends_nothing_more_when_the_open_pull_request_is_identical,
            ensure_after_already_exists_finds_the_pull_request_with_one_create,
            rate_limit_is_retryable_after_what_the_forge_asked,
            rejected_token_is_permanent_and_names_the_origin,
            missing_repository_is_permanent_and_names_it,
            server_error_is_retryable,
        );
    };
    (@tests $fixture:expr; $($scenario:ident,)*) => {
        $(
            #[test]
            fn $scenario() {
                super::$scenario(&$fixture);
            }
        )*
    };
}
pub(super) use forge_scenarios;
