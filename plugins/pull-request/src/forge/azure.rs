//! Azure DevOps Services and Server: Git pull requests through REST API 7.0 (or the
//! pipeline's `apiVersion`: Azure DevOps Server 2020 serves at most 6.0).
//!
//! <https://learn.microsoft.com/en-us/rest/api/azure/devops/git/pull-requests> (Get Pull
//! Requests, Create, Update). 7.0 is the newest version both Services and Azure DevOps
//! Server 2022 serve (<https://learn.microsoft.com/en-us/azure/devops/integrate/concepts/rest-api-versioning>,
//! "Supported versions"); the server refuses 7.1 as "out of range", and these endpoints are
//! the same in both. The list truncates descriptions to 400 characters, so a long
//! one is read again from the pull request itself before it is compared.

use promoter_sdk::Host;
use serde_json::{Value, json};

use super::{
    Created, ForgeError, PullRequest, Repo, array, call, create_with, request, text, unexpected,
    update_with,
};
use promoter_sdk::forge::encode;

const DEFAULT_API_VERSION: &str = "7.0";

/// The `api-version` query parameter this repository's requests carry.
fn api_version(repo: &Repo) -> String {
    let version = repo.api_version.as_deref().unwrap_or(DEFAULT_API_VERSION);
    format!("api-version={}", encode(version))
}
/// Descriptions in the list are cut to this many characters.
const LISTED_DESCRIPTION_CHARS: usize = 400;

pub(super) fn find(
    host: &dyn Host,
    repo: &Repo,
    head: &str,
    base: &str,
) -> Result<Option<PullRequest>, ForgeError> {
    let action = "listing active pull requests";
    let (from, to) = (branch_ref(head), branch_ref(base));
    let url = format!(
        "{}/pullrequests?searchCriteria.sourceRefName={}&searchCriteria.targetRefName={}\
         &searchCriteria.status=active&{}",
        repo.api_repo(),
        encode(&from),
        encode(&to),
        api_version(repo)
    );
    let list = call(host, repo, action, request(repo, "GET", url, None))?;
    let Some(listed) = array(repo, action, &list, Some("value"))?
        .iter()
        .find(|pr| pr["sourceRefName"] == from.as_str() && pr["targetRefName"] == to.as_str())
    else {
        return Ok(None);
    };
    let pr = parse(repo, action, listed)?;
    if pr.body.chars().count() < LISTED_DESCRIPTION_CHARS {
        return Ok(Some(pr));
    }
    let action = format!("reading pull request #{}", pr.number);
    let url = format!(
        "{}/pullrequests/{}?{}",
        repo.api_repo(),
        pr.number,
        api_version(repo)
    );
    let full = call(host, repo, &action, request(repo, "GET", url, None))?;
    let mut full = parse(repo, &action, &full)?;
    if full.url.is_empty() {
        full.url = pr.url;
    }
    Ok(Some(full))
}

pub(super) fn create(
    host: &dyn Host,
    repo: &Repo,
    head: &str,
    base: &str,
    title: &str,
    body: &str,
) -> Result<Created, ForgeError> {
    let url = format!("{}/pullrequests?{}", repo.api_repo(), api_version(repo));
    let body = json!({
        "sourceRefName": branch_ref(head),
        "targetRefName": branch_ref(base),
        "title": title,
        "description": body,
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
    let url = format!(
        "{}/pullrequests/{}?{}",
        repo.api_repo(),
        pr.number,
        api_version(repo)
    );
    let body = json!({"title": title, "description": body});
    update_with(host, repo, pr, "PATCH", url, body, parse)
}

fn branch_ref(branch: &str) -> String {
    format!("refs/heads/{branch}")
}

fn parse(repo: &Repo, action: &str, pr: &Value) -> Result<PullRequest, ForgeError> {
    let number = pr["pullRequestId"]
        .as_u64()
        .ok_or_else(|| unexpected(repo, action, "pullRequestId"))?;
    // The API's own `url` is an API address; the web page hangs off the repository's.
    let url = match pr["repository"]["webUrl"].as_str() {
        Some(web) => format!("{}/pullrequest/{number}", web.trim_end_matches('/')),
        None => format!(
            "{}/{}/_git/{}/pullrequest/{number}",
            repo.api_base,
            encode(&repo.owner),
            encode(&repo.name)
        ),
    };
    Ok(PullRequest {
        number,
        url,
        title: text(pr, "title"),
        body: text(pr, "description"),
        bitbucket: None,
    })
}
