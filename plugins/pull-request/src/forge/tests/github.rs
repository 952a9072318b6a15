//! GitHub: <https://docs.github.com/en/rest/pulls/pulls>.

use promoter_sdk::HttpResponse;
use promoter_sdk::testing::MockHost;
use serde_json::{Value, json};

use super::{BASE, BODY, Fixture, HEAD, OLD_TITLE, TITLE, answer, forge_scenarios};
use crate::forge::{Repo, create_pr, find_open_pr};

fn pull(title: &str, body: &str) -> Value {
    json!({
        "number": 7,
        "state": "open",
        "html_url": "https://github.com/acme/fleet-config/pull/7",
        "url": "https://api.github.com/repos/acme/fleet-config/pulls/7",
        "title": title,
        "body": body,
        "head": {"ref": HEAD, "label": format!("acme:{HEAD}")},
        "base": {"ref": BASE, "label": format!("acme:{BASE}")},
    })
}

fn fixture() -> Fixture {
    Fixture {
        repo: Repo::new("https://github.com/acme/fleet-config.git", None, None).unwrap(),
        find_url: "https://api.github.com/repos/acme/fleet-config/pulls?state=open\
                   &head=acme%3Apromotion-flux-system-podinfo-prod&base=env%2Fprod"
            .into(),
        none_open: || answer(200, json!([])),
        open: |title, body| answer(200, json!([pull(title, body)])),
        create_url: "https://api.github.com/repos/acme/fleet-config/pulls".into(),
        create_body: json!({"title": TITLE, "head": HEAD, "base": BASE, "body": BODY}),
        created: |title, body| answer(201, pull(title, body)),
        already_exists: || {
            answer(
                422,
                json!({
                    "message": "Validation Failed",
                    "errors": [{
                        "resource": "PullRequest",
                        "code": "custom",
                        "message": format!("A pull request already exists for acme:{HEAD}."),
                    }],
                    "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request",
                }),
            )
        },
        update: (
            "PATCH",
            "https://api.github.com/repos/acme/fleet-config/pulls/7".into(),
        ),
        update_body: json!({"title": TITLE, "body": BODY}),
        updated: |title, body| answer(200, pull(title, body)),
        web_url: "https://github.com/acme/fleet-config/pull/7",
    }
}

forge_scenarios!(fixture());

#[test]
fn requests_carry_the_documented_media_type_and_api_version() {
    let host = MockHost::new().respond(answer(200, json!([])));
    find_open_pr(&host, &fixture().repo, HEAD, BASE).unwrap();
    let request = &host.requests()[0];
    assert_eq!(
        request.header("Accept"),
        Some("application/vnd.github+json")
    );
    assert_eq!(request.header("X-GitHub-Api-Version"), Some("2022-11-28"));
}

#[test]
fn a_listed_pull_request_for_other_branches_is_not_taken() {
    let mut other = pull(OLD_TITLE, BODY);
    other["base"]["ref"] = json!("main");
    let host = MockHost::new().respond(answer(200, json!([other])));
    assert_eq!(
        find_open_pr(&host, &fixture().repo, HEAD, BASE).unwrap(),
        None
    );
}

#[test]
fn a_null_body_reads_as_empty() {
    let mut listed = pull(TITLE, "");
    listed["body"] = Value::Null;
    let host = MockHost::new().respond(answer(200, json!([listed])));
    let found = find_open_pr(&host, &fixture().repo, HEAD, BASE)
        .unwrap()
        .unwrap();
    assert_eq!(found.body, "");
}

#[test]
fn no_commits_between_the_branches_is_a_permanent_error_with_github_s_reason() {
    let host = MockHost::new().respond(answer(
        422,
        json!({
            "message": "Validation Failed",
            "errors": [{"resource": "PullRequest", "code": "custom",
                        "message": format!("No commits between {BASE} and {HEAD}")}],
        }),
    ));
    let error = create_pr(&host, &fixture().repo, HEAD, BASE, TITLE, BODY).unwrap_err();
    assert!(!error.retryable);
    assert!(
        error
            .message
            .contains("HTTP 422: Validation Failed; No commits between"),
        "{error}"
    );
}

#[test]
fn create_pr_alone_reports_an_open_duplicate_as_permanent() {
    let host = MockHost::new().respond((fixture().already_exists)());
    let error = create_pr(&host, &fixture().repo, HEAD, BASE, TITLE, BODY).unwrap_err();
    assert!(!error.retryable);
    assert!(error.message.contains("is already open"), "{error}");
}

#[test]
fn exhausted_primary_rate_limit_waits_until_the_reset_measured_by_the_date_header() {
    let host = MockHost::new().respond(
        answer(
            403,
            json!({"message": "API rate limit exceeded for user ID 1."}),
        )
        .with_header("Date", "Mon, 13 Jun 2022 11:48:53 GMT")
        .with_header("x-ratelimit-remaining", "0")
        .with_header("x-ratelimit-reset", "1655121053"),
    );
    let error = find_open_pr(&host, &fixture().repo, HEAD, BASE).unwrap_err();
    assert!(error.retryable, "{error}");
    // 1655121053 is 11:50:53 that day: two minutes after the response's Date.
    assert_eq!(error.retry_after, Some(std::time::Duration::from_secs(120)));
}

#[test]
fn exhausted_rate_limit_without_a_date_waits_a_minute() {
    let host = MockHost::new().respond(
        HttpResponse::new(429)
            .with_header("x-ratelimit-remaining", "0")
            .with_header("x-ratelimit-reset", "1655121053"),
    );
    let error = find_open_pr(&host, &fixture().repo, HEAD, BASE).unwrap_err();
    assert_eq!(error.retry_after, Some(std::time::Duration::from_secs(60)));
}

#[test]
fn secondary_rate_limit_without_headers_waits_a_minute() {
    let host = MockHost::new().respond(answer(
        403,
        json!({"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."}),
    ));
    let error = find_open_pr(&host, &fixture().repo, HEAD, BASE).unwrap_err();
    assert!(error.retryable, "{error}");
    assert_eq!(error.retry_after, Some(std::time::Duration::from_secs(60)));
}

#[test]
fn forbidden_without_a_rate_limit_is_a_permanent_permission_error() {
    let host = MockHost::new().respond(
        answer(
            403,
            json!({"message": "Resource not accessible by personal access token"}),
        )
        .with_header("x-ratelimit-remaining", "4999"),
    );
    let error = find_open_pr(&host, &fixture().repo, HEAD, BASE).unwrap_err();
    assert!(!error.retryable, "{error}");
    assert!(
        error
            .message
            .contains("the token bound to https://api.github.com lacks permission"),
        "{error}"
    );
    assert!(error.message.contains("Resource not accessible"), "{error}");
}
