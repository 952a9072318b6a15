//! Bitbucket Server and Data Center: pull requests through REST API 1.0.
//!
//! <https://developer.atlassian.com/server/bitbucket/rest/> (group "Pull requests"). An
//! update is a whole replacement: it must carry the `version` it is based on and the current
//! reviewers, or Bitbucket drops them.

use promoter_sdk::Host;
use serde_json::{Value, json};

use super::{
    BitbucketState, Created, ForgeError, PullRequest, Repo, array, call, create_with, error,
    request, send, text, unexpected,
};
use promoter_sdk::forge::encode;

/// Enough for thousands of open pull requests from one branch; the rest is not searched.
const MAX_PAGES: usize = 20;

pub(super) fn find(
    host: &dyn Host,
    repo: &Repo,
    head: &str,
    base: &str,
) -> Result<Option<PullRequest>, ForgeError> {
    let action = "listing open pull requests";
    let (from, to) = (branch_ref(head), branch_ref(base));
    let mut start = None;
    for _ in 0..MAX_PAGES {
        let mut url = format!(
            "{}/pull-requests?state=OPEN&direction=OUTGOING&at={}",
            repo.api_repo(),
            encode(&from)
        );
        if let Some(start) = start {
            url.push_str(&format!("&start={start}"));
        }
        let page = call(host, repo, action, request(repo, "GET", url, None))?;
        let values = array(repo, action, &page, Some("values"))?;
        if let Some(pr) = values.iter().find(|pr| {
            pr["fromRef"]["id"] == from.as_str()
                && pr["toRef"]["id"] == to.as_str()
                && in_this_repository(repo, &pr["fromRef"])
                && in_this_repository(repo, &pr["toRef"])
        }) {
            return parse(repo, action, pr).map(Some);
        }
        match page["nextPageStart"].as_u64() {
            Some(next) if page["isLastPage"] == false && !values.is_empty() => start = Some(next),
            _ => break,
        }
    }
    Ok(None)
}

/// Whether a `fromRef` or `toRef` is in `repo` (project key and slug, as Bitbucket compares
/// them, without regard to case): an outgoing pull request from this branch may target a
/// branch of the same name in a fork or in the repository it was forked from.
fn in_this_repository(repo: &Repo, side: &Value) -> bool {
    let repository = &side["repository"];
    let same = |found: &Value, wanted: &str| {
        found
            .as_str()
            .is_some_and(|found| found.eq_ignore_ascii_case(wanted))
    };
    same(&repository["project"]["key"], &repo.owner) && same(&repository["slug"], &repo.name)
}

pub(super) fn create(
    host: &dyn Host,
    repo: &Repo,
    head: &str,
    base: &str,
    title: &str,
    body: &str,
) -> Result<Created, ForgeError> {
    let url = format!("{}/pull-requests", repo.api_repo());
    let this_repo = json!({"slug": repo.name, "project": {"key": repo.owner}});
    let body = json!({
        "title": title,
        "description": body,
        "fromRef": {"id": branch_ref(head), "repository": this_repo},
        "toRef": {"id": branch_ref(base), "repository": this_repo},
    });
    create_with(host, repo, (head, base), url, body, parse)
}

pub(super) fn update(
    host: &dyn Host,
    repo: &Repo,
    pr: &PullRequest,
    title: &str,
    body: &str,
) -> Result<PullRequest, ForgeError> {
    let Some(state) = &pr.bitbucket else {
        return Err(ForgeError::permanent(format!(
            "{}: updating pull request #{} in {}: its version is unknown; pass a pull request \
             that find_open_pr returned",
            repo.kind,
            pr.number,
            repo.path()
        )));
    };
    let url = format!("{}/pull-requests/{}", repo.api_repo(), pr.number);
    let reviewers: Vec<Value> = state
        .reviewers
        .iter()
        .map(|name| json!({"user": {"name": name}}))
        .collect();
    let body = json!({
        "version": state.version,
        "title": title,
        "description": body,
        "reviewers": reviewers,
    });
    let action = format!("updating pull request #{}", pr.number);
    let response = send(host, repo, &action, request(repo, "PUT", url, Some(&body)))?;
    // Someone changed the pull request since it was read: the next attempt reads it again.
    if response.status == 409 && response.text().contains("PullRequestOutOfDateException") {
        return Err(ForgeError::retryable(format!(
            "{}: {action} in {}: it changed while being updated{}",
            repo.kind,
            repo.path(),
            error::excerpt_suffix(&response)
        )));
    }
    let updated = super::json(repo, &action, &response)?;
    let mut updated = parse(repo, &action, &updated)?;
    if updated.url.is_empty() {
        updated.url = pr.url.clone();
    }
    Ok(updated)
}

fn branch_ref(branch: &str) -> String {
    format!("refs/heads/{branch}")
}

fn parse(repo: &Repo, action: &str, pr: &Value) -> Result<PullRequest, ForgeError> {
    let number = pr["id"]
        .as_u64()
        .ok_or_else(|| unexpected(repo, action, "pull request id"))?;
    let version = pr["version"]
        .as_i64()
        .ok_or_else(|| unexpected(repo, action, "pull request version"))?;
    let reviewers = pr["reviewers"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter_map(|r| r["user"]["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok(PullRequest {
        number,
        url: pr["links"]["self"][0]["href"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        title: text(pr, "title"),
        body: text(pr, "description"),
        bitbucket: Some(BitbucketState { version, reviewers }),
    })
}
