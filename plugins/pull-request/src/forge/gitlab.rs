//! GitLab (SaaS and self-managed): merge requests through REST API v4.
//!
//! <https://docs.gitlab.com/api/merge_requests/>

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
    let action = "listing open merge requests";
    let url = format!(
        "{}/merge_requests?state=opened&source_branch={}&target_branch={}",
        repo.api_repo(),
        encode(head),
        encode(base)
    );
    let list = call(host, repo, action, request(repo, "GET", url, None))?;
    array(repo, action, &list, None)?
        .iter()
        .find(|mr| {
            // A fork's merge request may come from a branch with the same name.
            let from_this_project = match (mr.get("source_project_id"), mr.get("target_project_id"))
            {
                (Some(source), Some(target)) => source == target,
                _ => true,
            };
            mr["source_branch"] == head && mr["target_branch"] == base && from_this_project
        })
        .map(|mr| parse(repo, action, mr))
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
    let url = format!("{}/merge_requests", repo.api_repo());
    let body = json!({
        "source_branch": head,
        "target_branch": base,
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
    let url = format!("{}/merge_requests/{}", repo.api_repo(), pr.number);
    let body = json!({"title": title, "description": body});
    update_with(host, repo, pr, "PUT", url, body, parse)
}

fn parse(repo: &Repo, action: &str, mr: &Value) -> Result<PullRequest, ForgeError> {
    Ok(PullRequest {
        number: mr["iid"]
            .as_u64()
            .ok_or_else(|| unexpected(repo, action, "merge request iid"))?,
        url: text(mr, "web_url"),
        title: text(mr, "title"),
        body: text(mr, "description"),
        bitbucket: None,
    })
}
