//! Gitea and Forgejo: <https://gitea.com/api/swagger>.

use promoter_sdk::testing::MockHost;
use serde_json::{Value, json};

use super::{BASE, BODY, Fixture, HEAD, TITLE, answer, calls, forge_scenarios};
use crate::forge::{ForgeKind, Repo, find_open_pr};

fn pull(number: u64, head: &str, title: &str, body: &str) -> Value {
    json!({
        "number": number,
        "state": "open",
        "html_url": format!("https://git.example.com/acme/fleet-config/pulls/{number}"),
        "title": title,
        "body": body,
        "head": {"ref": head, "repo_id": 3},
        "base": {"ref": BASE, "repo_id": 3},
    })
}

const REPO: &str = "https://git.example.com/api/v1/repos/acme/fleet-config";

fn fixture() -> Fixture {
    Fixture {
        repo: Repo::new(
            "https://git.example.com/acme/fleet-config.git",
            Some("gitea"),
            None,
        )
        .unwrap(),
        find_url: format!("{REPO}/pulls?state=open&base_branch=env%2Fprod&limit=50&page=1"),
        none_open: || answer(200, json!([])).with_header("X-Total-Count", "0"),
        open: |title, body| {
            answer(200, json!([pull(7, HEAD, title, body)])).with_header("X-Total-Count", "1")
        },
        create_url: format!("{REPO}/pulls"),
        create_body: json!({"head": HEAD, "base": BASE, "title": TITLE, "body": BODY}),
        created: |title, body| answer(201, pull(7, HEAD, title, body)),
        already_exists: || {
            answer(
                409,
                json!({
                    "message": "pull request already exists for these targets [id: 7, issue_id: 7, \
                                head_repo_id: 3, base_repo_id: 3, head_branch: promotion-flux-system-podinfo-prod, \
                                base_branch: env/prod]",
                    "url": "https://git.example.com/api/swagger",
                }),
            )
        },
        update: ("PATCH", format!("{REPO}/pulls/7")),
        update_body: json!({"title": TITLE, "body": BODY}),
        // Gitea answers an edit with 201 Created.
        updated: |title, body| answer(201, pull(7, HEAD, title, body)),
        web_url: "https://git.example.com/acme/fleet-config/pulls/7",
    }
}

forge_scenarios!(fixture());

#[test]
fn forgejo_is_the_gitea_api() {
    let repo = Repo::new(
        "git@code.example.org:acme/fleet-config.git",
        Some("forgejo"),
        None,
    )
    .unwrap();
    assert_eq!(repo.kind, ForgeKind::Gitea);
    assert_eq!(
        repo.api_repo(),
        "https://code.example.org/api/v1/repos/acme/fleet-config"
    );
}

#[test]
fn open_pull_requests_are_paged_through_until_the_head_branch_is_found() {
    let others: Vec<Value> = (100..150)
        .map(|n| pull(n, &format!("feature-{n}"), "other", ""))
        .collect();
    let host = MockHost::new()
        .respond(answer(200, json!(others)).with_header("X-Total-Count", "51"))
        .respond(
            answer(200, json!([pull(7, HEAD, TITLE, BODY)])).with_header("X-Total-Count", "51"),
        );
    let found = find_open_pr(&host, &fixture().repo, HEAD, BASE)
        .unwrap()
        .unwrap();
    assert_eq!(found.number, 7);
    let urls: Vec<String> = calls(&host).into_iter().map(|(_, url)| url).collect();
    assert_eq!(
        urls,
        [
            format!("{REPO}/pulls?state=open&base_branch=env%2Fprod&limit=50&page=1"),
            format!("{REPO}/pulls?state=open&base_branch=env%2Fprod&limit=50&page=2"),
        ]
    );
}

#[test]
fn paging_stops_at_the_total_count_when_the_branch_has_no_pull_request() {
    let others: Vec<Value> = (100..103)
        .map(|n| pull(n, &format!("feature-{n}"), "other", ""))
        .collect();
    let host =
        MockHost::new().respond(answer(200, json!(others)).with_header("X-Total-Count", "3"));
    assert_eq!(
        find_open_pr(&host, &fixture().repo, HEAD, BASE).unwrap(),
        None
    );
    assert_eq!(host.requests().len(), 1);
}

#[test]
fn a_pull_request_from_a_fork_branch_of_the_same_name_is_not_taken() {
    let mut from_fork = pull(7, HEAD, TITLE, BODY);
    from_fork["head"]["repo_id"] = json!(99);
    let host =
        MockHost::new().respond(answer(200, json!([from_fork])).with_header("X-Total-Count", "1"));
    assert_eq!(
        find_open_pr(&host, &fixture().repo, HEAD, BASE).unwrap(),
        None
    );
}
