//! Bitbucket Server / Data Center: <https://developer.atlassian.com/server/bitbucket/rest/>.

use promoter_sdk::testing::MockHost;
use serde_json::{Value, json};

use super::{
    BASE, BODY, Fixture, HEAD, OLD_TITLE, TITLE, answer, body_json, calls, forge_scenarios,
};
use crate::forge::{Repo, ensure_pr, find_open_pr, update_pr};

fn pull(id: u64, from: &str, title: &str, body: &str) -> Value {
    let repository = json!({"slug": "fleet-config", "project": {"key": "OPS"}});
    json!({
        "id": id,
        "version": 3,
        "title": title,
        "description": body,
        "state": "OPEN",
        "open": true,
        "fromRef": {"id": format!("refs/heads/{from}"), "repository": repository},
        "toRef": {"id": format!("refs/heads/{BASE}"), "repository": repository},
        "reviewers": [
            {"user": {"name": "alice", "slug": "alice"}, "role": "REVIEWER", "approved": false},
        ],
        "links": {"self": [{
            "href": format!("https://bitbucket.example.com/projects/OPS/repos/fleet-config/pull-requests/{id}"),
        }]},
    })
}

fn page(values: Vec<Value>) -> Value {
    json!({"size": values.len(), "limit": 25, "start": 0, "isLastPage": true, "values": values})
}

const REPO: &str = "https://bitbucket.example.com/rest/api/1.0/projects/OPS/repos/fleet-config";

fn fixture() -> Fixture {
    let repository = json!({"slug": "fleet-config", "project": {"key": "OPS"}});
    Fixture {
        repo: Repo::new(
            "https://bitbucket.example.com/scm/ops/fleet-config.git",
            None,
            None,
        )
        .unwrap(),
        find_url: format!(
            "{REPO}/pull-requests?state=OPEN&direction=OUTGOING\
             &at=refs%2Fheads%2Fpromotion-flux-system-podinfo-prod"
        ),
        none_open: || answer(200, page(vec![])),
        open: |title, body| answer(200, page(vec![pull(7, HEAD, title, body)])),
        create_url: format!("{REPO}/pull-requests"),
        create_body: json!({
            "title": TITLE,
            "description": BODY,
            "fromRef": {"id": format!("refs/heads/{HEAD}"), "repository": repository},
            "toRef": {"id": format!("refs/heads/{BASE}"), "repository": repository},
        }),
        created: |title, body| answer(201, pull(7, HEAD, title, body)),
        already_exists: || {
            answer(
                409,
                json!({"errors": [{
                    "context": null,
                    "message": "Only one pull request may be open for a given source and target branch",
                    "exceptionName": "com.atlassian.bitbucket.pull.DuplicatePullRequestException",
                    "existingPullRequest": pull(7, HEAD, TITLE, BODY),
                }]}),
            )
        },
        update: ("PUT", format!("{REPO}/pull-requests/7")),
        update_body: json!({
            "version": 3,
            "title": TITLE,
            "description": BODY,
            "reviewers": [{"user": {"name": "alice"}}],
        }),
        updated: |title, body| answer(200, pull(7, HEAD, title, body)),
        web_url: "https://bitbucket.example.com/projects/OPS/repos/fleet-config/pull-requests/7",
    }
}

forge_scenarios!(fixture());

#[test]
fn pages_of_outgoing_pull_requests_are_followed_and_the_target_branch_matched() {
    let mut into_main = pull(5, HEAD, "other", "");
    into_main["toRef"]["id"] = json!("refs/heads/main");
    let first = json!({"isLastPage": false, "nextPageStart": 25, "values": [into_main]});
    let host = MockHost::new()
        .respond(answer(200, first))
        .respond(answer(200, page(vec![pull(7, HEAD, TITLE, BODY)])));
    let found = find_open_pr(&host, &fixture().repo, HEAD, BASE)
        .unwrap()
        .unwrap();
    assert_eq!(found.number, 7);
    assert_eq!(
        calls(&host)[1].1,
        format!(
            "{REPO}/pull-requests?state=OPEN&direction=OUTGOING\
             &at=refs%2Fheads%2Fpromotion-flux-system-podinfo-prod&start=25"
        )
    );
}

#[test]
fn a_pull_request_into_a_forks_branch_of_the_same_name_is_not_this_repositorys() {
    let mut into_fork = pull(5, HEAD, "into the fork", "");
    into_fork["toRef"]["repository"] =
        json!({"slug": "fleet-config", "project": {"key": "~ALICE"}});
    let host = MockHost::new()
        .respond(answer(200, page(vec![into_fork.clone()])))
        .respond(answer(201, pull(7, HEAD, TITLE, BODY)));
    let ensured = ensure_pr(&host, &fixture().repo, HEAD, BASE, TITLE, BODY).unwrap();
    assert_eq!(
        ensured.pull_request.number, 7,
        "a new one, into this repository"
    );
    assert_eq!(calls(&host)[1].0, "POST");
    // The project key is matched without regard to case, as Bitbucket does.
    let mut lower = pull(8, HEAD, TITLE, BODY);
    lower["toRef"]["repository"]["project"]["key"] = json!("ops");
    let host = MockHost::new().respond(answer(200, page(vec![into_fork, lower])));
    let found = find_open_pr(&host, &fixture().repo, HEAD, BASE).unwrap();
    assert_eq!(found.map(|pr| pr.number), Some(8));
}

#[test]
fn an_update_based_on_an_outdated_version_is_retryable() {
    let host = MockHost::new()
        .respond(answer(200, page(vec![pull(7, HEAD, OLD_TITLE, BODY)])))
        .respond(answer(
            409,
            json!({"errors": [{
                "message": "You are attempting to modify a pull request based on out-of-date information.",
                "exceptionName": "com.atlassian.bitbucket.pull.PullRequestOutOfDateException",
                "currentVersion": 4,
                "expectedVersion": 3,
            }]}),
        ));
    let error = ensure_pr(&host, &fixture().repo, HEAD, BASE, TITLE, BODY).unwrap_err();
    assert!(error.retryable, "{error}");
    assert!(error.message.contains("out-of-date"), "{error}");
}

#[test]
fn an_update_needs_the_version_a_find_returned() {
    let host = MockHost::new().respond(answer(200, page(vec![pull(7, HEAD, OLD_TITLE, BODY)])));
    let mut found = find_open_pr(&host, &fixture().repo, HEAD, BASE)
        .unwrap()
        .unwrap();
    found.bitbucket = None;
    let error = update_pr(&host, &fixture().repo, &found, TITLE, BODY).unwrap_err();
    assert!(!error.retryable);
    assert!(error.message.contains("version is unknown"), "{error}");
}

#[test]
fn an_update_keeps_every_reviewer() {
    let mut listed = pull(7, HEAD, OLD_TITLE, BODY);
    listed["reviewers"] = json!([
        {"user": {"name": "alice"}, "role": "REVIEWER"},
        {"user": {"name": "bob"}, "role": "REVIEWER", "approved": true},
    ]);
    let host = MockHost::new()
        .respond(answer(200, page(vec![listed])))
        .respond(answer(200, pull(7, HEAD, TITLE, BODY)));
    ensure_pr(&host, &fixture().repo, HEAD, BASE, TITLE, BODY).unwrap();
    assert_eq!(
        body_json(&host.requests()[1])["reviewers"],
        json!([{"user": {"name": "alice"}}, {"user": {"name": "bob"}}])
    );
}
