//! GitLab: <https://docs.gitlab.com/api/merge_requests/>.

use std::time::Duration;

use promoter_sdk::testing::MockHost;
use serde_json::{Value, json};

use super::{BASE, BODY, Fixture, HEAD, TITLE, answer, calls, forge_scenarios};
use crate::forge::{Repo, find_open_pr};

fn merge_request(title: &str, body: &str) -> Value {
    json!({
        "id": 9001,
        "iid": 7,
        "project_id": 42,
        "source_project_id": 42,
        "target_project_id": 42,
        "state": "opened",
        "title": title,
        "description": body,
        "source_branch": HEAD,
        "target_branch": BASE,
        "web_url": "https://gitlab.com/acme/platform/fleet-config/-/merge_requests/7",
    })
}

const PROJECT: &str = "https://gitlab.com/api/v4/projects/acme%2Fplatform%2Ffleet-config";

fn fixture() -> Fixture {
    Fixture {
        repo: Repo::new("git@gitlab.com:acme/platform/fleet-config.git", None, None).unwrap(),
        find_url: format!(
            "{PROJECT}/merge_requests?state=opened\
             &source_branch=promotion-flux-system-podinfo-prod&target_branch=env%2Fprod"
        ),
        none_open: || answer(200, json!([])),
        open: |title, body| answer(200, json!([merge_request(title, body)])),
        create_url: format!("{PROJECT}/merge_requests"),
        create_body: json!({
            "source_branch": HEAD,
            "target_branch": BASE,
            "title": TITLE,
            "description": BODY,
        }),
        created: |title, body| answer(201, merge_request(title, body)),
        already_exists: || {
            answer(
                409,
                json!({"message": ["Another open merge request already exists for this source branch: !7"]}),
            )
        },
        update: ("PUT", format!("{PROJECT}/merge_requests/7")),
        update_body: json!({"title": TITLE, "description": BODY}),
        updated: |title, body| answer(200, merge_request(title, body)),
        web_url: "https://gitlab.com/acme/platform/fleet-config/-/merge_requests/7",
    }
}

forge_scenarios!(fixture());

#[test]
fn a_merge_request_from_a_fork_with_the_same_branch_name_is_not_taken() {
    let mut from_fork = merge_request(TITLE, BODY);
    from_fork["source_project_id"] = json!(77);
    let host = MockHost::new().respond(answer(200, json!([from_fork])));
    assert_eq!(
        find_open_pr(&host, &fixture().repo, HEAD, BASE).unwrap(),
        None
    );
}

#[test]
fn self_managed_gitlab_under_a_sub_path_uses_the_api_base_and_the_project_path_after_it() {
    let repo = Repo::new(
        "https://code.example.com/gitlab/acme/fleet-config.git",
        Some("gitlab"),
        Some("https://code.example.com/gitlab/api/v4"),
    )
    .unwrap();
    let host = MockHost::new().respond(answer(200, json!([])));
    find_open_pr(&host, &repo, HEAD, BASE).unwrap();
    assert_eq!(
        calls(&host)[0].1,
        "https://code.example.com/gitlab/api/v4/projects/acme%2Ffleet-config/merge_requests\
         ?state=opened&source_branch=promotion-flux-system-podinfo-prod&target_branch=env%2Fprod"
    );
}

#[test]
fn rate_limit_reset_is_measured_against_the_date_header() {
    let host = MockHost::new().respond(
        answer(429, json!({"message": "Retry later"}))
            .with_header("Date", "Mon, 13 Jun 2022 11:48:53 GMT")
            .with_header("RateLimit-Remaining", "0")
            .with_header("RateLimit-Reset", "1655120978"),
    );
    let error = find_open_pr(&host, &fixture().repo, HEAD, BASE).unwrap_err();
    assert!(error.retryable);
    assert_eq!(error.retry_after, Some(Duration::from_secs(45)));
}
