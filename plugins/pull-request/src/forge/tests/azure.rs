//! Azure DevOps: <https://learn.microsoft.com/en-us/rest/api/azure/devops/git/pull-requests>.

use promoter_sdk::HttpResponse;
use promoter_sdk::testing::MockHost;
use serde_json::{Value, json};

use super::{BASE, BODY, Fixture, HEAD, TITLE, answer, calls, forge_scenarios};
use crate::forge::{Action, Repo, ensure_pr, find_open_pr};

const REPO: &str = "https://dev.azure.com/acme/Platform%20Team/_apis/git/repositories/fleet-config";
const WEB: &str = "https://dev.azure.com/acme/Platform%20Team/_git/fleet-config";

fn pull(title: &str, body: &str) -> Value {
    json!({
        "pullRequestId": 7,
        "status": "active",
        "title": title,
        "description": body,
        "sourceRefName": format!("refs/heads/{HEAD}"),
        "targetRefName": format!("refs/heads/{BASE}"),
        "url": format!("{REPO}/pullRequests/7"),
        "repository": {"id": "0f0e", "name": "fleet-config", "webUrl": WEB},
    })
}

fn fixture() -> Fixture {
    Fixture {
        repo: Repo::new(
            "https://acme@dev.azure.com/acme/Platform%20Team/_git/fleet-config",
            None,
            None,
        )
        .unwrap(),
        find_url: format!(
            "{REPO}/pullrequests\
             ?searchCriteria.sourceRefName=refs%2Fheads%2Fpromotion-flux-system-podinfo-prod\
             &searchCriteria.targetRefName=refs%2Fheads%2Fenv%2Fprod\
             &searchCriteria.status=active&api-version=7.0"
        ),
        none_open: || answer(200, json!({"value": [], "count": 0})),
        open: |title, body| answer(200, json!({"value": [pull(title, body)], "count": 1})),
        create_url: format!("{REPO}/pullrequests?api-version=7.0"),
        create_body: json!({
            "sourceRefName": format!("refs/heads/{HEAD}"),
            "targetRefName": format!("refs/heads/{BASE}"),
            "title": TITLE,
            "description": BODY,
        }),
        created: |title, body| answer(201, pull(title, body)),
        already_exists: || {
            answer(
                409,
                json!({
                    "$id": "1",
                    "innerException": null,
                    "message": "TF401179: An active pull request for the source and target branch already exists.",
                    "typeName": "Microsoft.TeamFoundation.Git.Server.GitPullRequestExistsException, Microsoft.TeamFoundation.Git.Server",
                    "typeKey": "GitPullRequestExistsException",
                    "errorCode": 0,
                    "eventId": 3000,
                }),
            )
        },
        update: ("PATCH", format!("{REPO}/pullrequests/7?api-version=7.0")),
        update_body: json!({"title": TITLE, "description": BODY}),
        updated: |title, body| answer(200, pull(title, body)),
        web_url: "https://dev.azure.com/acme/Platform%20Team/_git/fleet-config/pullrequest/7",
    }
}

forge_scenarios!(fixture());

#[test]
fn a_description_the_list_may_have_cut_is_read_from_the_pull_request_itself() {
    let long = "x".repeat(1000);
    let cut: String = long.chars().take(400).collect();
    let host = MockHost::new()
        .respond(answer(
            200,
            json!({"value": [pull(TITLE, &cut)], "count": 1}),
        ))
        .respond(answer(200, pull(TITLE, &long)));
    let ensured = ensure_pr(&host, &fixture().repo, HEAD, BASE, TITLE, &long).unwrap();
    assert_eq!(ensured.action, Action::Unchanged);
    assert_eq!(
        calls(&host)[1],
        (
            "GET".to_string(),
            format!("{REPO}/pullrequests/7?api-version=7.0")
        )
    );
}

#[test]
fn without_a_repository_web_url_the_link_is_built_from_the_api_base() {
    let mut listed = pull(TITLE, BODY);
    listed.as_object_mut().unwrap().remove("repository");
    let host = MockHost::new().respond(answer(200, json!({"value": [listed]})));
    let found = find_open_pr(&host, &fixture().repo, HEAD, BASE)
        .unwrap()
        .unwrap();
    assert_eq!(found.url, format!("{WEB}/pullrequest/7"));
}

#[test]
fn a_sign_in_page_instead_of_json_is_reported_as_a_rejected_token() {
    let host = MockHost::new().respond(
        HttpResponse::new(203)
            .with_header("Content-Type", "text/html; charset=utf-8")
            .with_body("<html><head><title>Azure DevOps Services | Sign In</title></head></html>"),
    );
    let error = find_open_pr(&host, &fixture().repo, HEAD, BASE).unwrap_err();
    assert!(!error.retryable);
    assert!(
        error
            .message
            .contains("the forge rejected the token bound to https://dev.azure.com"),
        "{error}"
    );
    assert!(!error.message.contains("<html>"), "{error}");
}

#[test]
fn an_older_server_is_asked_for_the_api_version_the_pipeline_gives() {
    let mut repo = fixture().repo;
    repo.api_version = Some("6.0".into());
    let host = MockHost::new()
        .respond(answer(200, json!({"value": [], "count": 0})))
        .respond(answer(201, pull(TITLE, BODY)));
    ensure_pr(&host, &repo, HEAD, BASE, TITLE, BODY).unwrap();
    let urls: Vec<String> = calls(&host).into_iter().map(|(_, url)| url).collect();
    assert_eq!(urls.len(), 2);
    for url in urls {
        assert!(url.ends_with("api-version=6.0"), "{url}");
    }
}

#[test]
fn a_description_over_4000_characters_is_cut_keeping_the_metadata_block() {
    let metadata = "<details>\n<summary>metadata</summary>\n!!! DO NOT EDIT !!!\n\nflux-system/podinfo/prod\n</details>";
    // 'é' is one UTF-16 unit, '𝄞' two: Azure counts as .NET does.
    let long = format!("{}{}\n\n{metadata}", "é".repeat(3000), "𝄞".repeat(1000));
    let host = MockHost::new()
        .respond(answer(200, json!({"value": [], "count": 0})))
        .respond(answer(201, pull(TITLE, "")));
    ensure_pr(&host, &fixture().repo, HEAD, BASE, TITLE, &long).unwrap();
    let sent = super::body_json(&host.requests()[1]);
    let description = sent["description"].as_str().unwrap();
    assert!(
        description.encode_utf16().count() <= 4000,
        "{}",
        description.len()
    );
    assert!(
        description.ends_with(metadata),
        "the metadata block is kept"
    );
    assert!(description.starts_with("éé"), "the beginning is kept");
    assert!(description.contains("cut: Azure DevOps keeps 4,000 characters"));
    // Other forges take it whole.
    assert_eq!(
        crate::forge::fit_description(crate::forge::ForgeKind::GitHub, &long),
        long.as_str()
    );
}
