//! GitHub (and GitHub Enterprise Server): the REST API's pulls endpoints, version 2022-11-28.
//!
//! <https://docs.github.com/en/rest/pulls/pulls>

use promoter_sdk::Host;
use serde_json::{Value, json};

use super::{
    Created, ForgeError, PullRequest, Repo, array, call, create_with, request, text, unexpected,
    update_with,
};
use promoter_sdk::forge::encode;

pub(super) fn find(
    host: &dyn Host,
    repo: &Repo,
    head: &str,
    base: &str,
) -> Result<Option<PullRequest>, ForgeError> {
    let action = "listing open pull requests";
    // `head` must be `owner:branch`; at most one open pull request matches head and base.
    let url = format!(
        "{}/pulls?state=open&head={}&base={}",
        repo.api_repo(),
        encode(&format!("{}:{head}", repo.owner)),
        encode(base)
    );
    let list = call(host, repo, action, request(repo, "GET", url, None))?;
    array(repo, action, &list, None)?
        .iter()
        .find(|pr| pr["head"]["ref"] == head && pr["base"]["ref"] == base)
        .map(|pr| parse(repo, action, pr))
        .transpose()
}

pub(super) fn create(
    host: &dyn Host,
    repo: &Repo,
    head: &str,
    base: &str,
    title: &str,
    body: &str,
) -> Result<Created, ForgeError> {
    let url = format!("{}/pulls", repo.api_repo());
    let body = json!({"title": title, "head": head, "base": base, "body": body});
    create_with(host, repo, (head, base), url, body, parse)
}

pub(super) fn update(
    host: &dyn Host,
    repo: &Repo,
    pr: &PullRequest,
    title: &str,
    body: &str,
) -> Result<PullRequest, ForgeError> {
    let url = format!("{}/pulls/{}", repo.api_repo(), pr.number);
    let body = json!({"title": title, "body": body});
    update_with(host, repo, pr, "PATCH", url, body, parse)
}

pub(super) fn parse(repo: &Repo, action: &str, pr: &Value) -> Result<PullRequest, ForgeError> {
    Ok(PullRequest {
        number: pr["number"]
            .as_u64()
            .ok_or_else(|| unexpected(repo, action, "pull request number"))?,
        url: text(pr, "html_url"),
        title: text(pr, "title"),
        body: text(pr, "body"),
        bitbucket: None,
    })
}
