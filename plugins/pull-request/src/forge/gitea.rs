//! Gitea and Forgejo: pull requests through API v1.
//!
//! <https://gitea.com/api/swagger> (`repoListPullRequests`, `repoCreatePullRequest`,
//! `repoEditPullRequest`). The list has no head-branch filter, so the open pull requests are
//! paged through (newer servers narrow them with `base_branch`; older ones ignore it) and
//! matched here.

use promoter_sdk::Host;

use super::{ForgeError, PullRequest, Repo, array, json, request, send};
use promoter_sdk::forge::encode;

/// Gitea's default (and usual maximum) page size.
const PAGE_SIZE: usize = 50;
/// Enough for 1,000 open pull requests into one branch; the rest is not searched.
const MAX_PAGES: usize = 20;

pub(super) fn find(
    host: &dyn Host,
    repo: &Repo,
    head: &str,
    base: &str,
) -> Result<Option<PullRequest>, ForgeError> {
    let action = "listing open pull requests";
    let mut seen = 0;
    for page in 1..=MAX_PAGES {
        let url = format!(
            "{}/pulls?state=open&base_branch={}&limit={PAGE_SIZE}&page={page}",
            repo.api_repo(),
            encode(base)
        );
        let response = send(host, repo, action, request(repo, "GET", url, None))?;
        let list = json(repo, action, &response)?;
        let items = array(repo, action, &list, None)?;
        if let Some(pr) = items.iter().find(|pr| {
            let same_repo = match (pr["head"].get("repo_id"), pr["base"].get("repo_id")) {
                (Some(head_repo), Some(base_repo)) => head_repo == base_repo,
                _ => true,
            };
            pr["head"]["ref"] == head && pr["base"]["ref"] == base && same_repo
        }) {
            return parse(repo, action, pr).map(Some);
        }
        seen += items.len();
        let total = response
            .header("X-Total-Count")
            .and_then(|t| t.trim().parse::<usize>().ok());
        if items.is_empty() || total.is_some_and(|total| seen >= total) {
            break;
        }
    }
    Ok(None)
}

// Gitea's create, update and pull-request objects follow GitHub's API (same paths under
// the repository, same fields), so they are GitHub's code.
pub(super) use super::github::{create, parse, update};
