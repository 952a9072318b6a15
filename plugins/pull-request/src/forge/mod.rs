//! Opening and updating pull requests through each forge's REST API.
//!
//! The branch is pushed elsewhere (the host's git capability); this module only talks to the
//! forge's API: find the open pull request from `head` into `base`, update its title and body
//! when they changed, or create it. [`ensure_pr`] is that find-or-create, safe to repeat: a
//! retry after a crash between the push and the creation, or a race with another replica,
//! ends with exactly one pull request, because a create that the forge answers with "already
//! exists" is followed by another look-up instead of an error.
//!
//! Credentials never enter the plugin: the host adds the token the operator bound to the
//! forge's API origin ([`Repo::api_origin`]) to every request for it. The clients here set no
//! `Authorization` header; they turn the forge's answers into [`ForgeError`]s that say whether
//! a retry can help and what the operator should fix (401: the token; 403: its permissions;
//! 404: the repository or the token's visibility; a refusal by the host: the origin grant).
//!
//! Endpoints, one module per forge, as documented by each:
//!
//! | forge | find | create | update |
//! |---|---|---|---|
//! | GitHub | `GET /repos/{o}/{r}/pulls?state=open&head={o}:{head}&base={base}` | `POST /repos/{o}/{r}/pulls` | `PATCH /repos/{o}/{r}/pulls/{number}` |
//! | GitLab | `GET /projects/{path}/merge_requests?state=opened&source_branch=&target_branch=` | `POST /projects/{path}/merge_requests` | `PUT /projects/{path}/merge_requests/{iid}` |
//! | Gitea, Forgejo | `GET /repos/{o}/{r}/pulls?state=open&base_branch=&limit=50&page=` (head filtered here) | `POST /repos/{o}/{r}/pulls` | `PATCH /repos/{o}/{r}/pulls/{index}` |
//! | Bitbucket Server | `GET …/pull-requests?state=OPEN&direction=OUTGOING&at=refs/heads/{head}` | `POST …/pull-requests` | `PUT …/pull-requests/{id}` (with `version` and the reviewers) |
//! | Azure DevOps | `GET …/pullrequests?searchCriteria.sourceRefName=…&searchCriteria.targetRefName=…&searchCriteria.status=active` | `POST …/pullrequests` | `PATCH …/pullrequests/{id}` |

mod azure;
mod bitbucket;
mod error;
mod gitea;
mod github;
mod gitlab;
mod repo;
#[cfg(test)]
mod tests;

use promoter_sdk::{Host, HttpRequest, HttpResponse};
use serde_json::Value;

pub use error::ForgeError;
pub use repo::{ForgeKind, Repo};

const USER_AGENT: &str = concat!("promoter-pull-request/", env!("CARGO_PKG_VERSION"));

/// An open pull request (a merge request on GitLab) as the forge reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    /// What the forge's API addresses it by: GitHub and Gitea `number`, GitLab `iid`,
    /// Bitbucket Server `id`, Azure DevOps `pullRequestId`.
    pub number: u64,
    /// Its web page, for humans.
    pub url: String,
    pub title: String,
    /// The description (empty when the forge has none).
    pub body: String,
    /// Bitbucket Server only: what an update must send back. `None` for the other forges.
    pub bitbucket: Option<BitbucketState>,
}

/// Bitbucket Server's update (`PUT`) replaces the pull request whole: it needs the `version`
/// the change is based on (optimistic locking) and drops every reviewer it is not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitbucketState {
    pub version: i64,
    /// The reviewers' user names, sent back unchanged.
    pub reviewers: Vec<String>,
}

/// What [`ensure_pr`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Created,
    Updated,
    /// The open pull request already had this title and body.
    Unchanged,
}

/// The pull request [`ensure_pr`] left open, and what it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ensured {
    pub pull_request: PullRequest,
    pub action: Action,
}

/// The open pull request from branch `head` into branch `base` of `repo` (both in `repo`
/// itself, not a fork), if there is one.
pub fn find_open_pr(
    host: &dyn Host,
    repo: &Repo,
    head: &str,
    base: &str,
) -> Result<Option<PullRequest>, ForgeError> {
    match repo.kind {
        ForgeKind::GitHub => github::find(host, repo, head, base),
        ForgeKind::GitLab => gitlab::find(host, repo, head, base),
        ForgeKind::Gitea => gitea::find(host, repo, head, base),
        ForgeKind::BitbucketServer => bitbucket::find(host, repo, head, base),
        ForgeKind::AzureDevOps => azure::find(host, repo, head, base),
    }
}

/// Opens a pull request from `head` into `base`. One that is already open for the same
/// branches is a permanent error here; [`ensure_pr`] handles that case.
pub fn create_pr(
    host: &dyn Host,
    repo: &Repo,
    head: &str,
    base: &str,
    title: &str,
    body: &str,
) -> Result<PullRequest, ForgeError> {
    match create(
        host,
        repo,
        head,
        base,
        title,
        &fit_description(repo.kind, body),
    )? {
        Created::New(pr) => Ok(pr),
        Created::AlreadyExists => Err(ForgeError::permanent(format!(
            "{}: a pull request from {head} into {base} is already open in {}",
            repo.kind,
            repo.path()
        ))),
    }
}

/// Sets the title and body of `pr`, one [`find_open_pr`] returned.
pub fn update_pr(
    host: &dyn Host,
    repo: &Repo,
    pr: &PullRequest,
    title: &str,
    body: &str,
) -> Result<PullRequest, ForgeError> {
    let body = &fit_description(repo.kind, body);
    match repo.kind {
        ForgeKind::GitHub => github::update(host, repo, pr, title, body),
        ForgeKind::GitLab => gitlab::update(host, repo, pr, title, body),
        ForgeKind::Gitea => gitea::update(host, repo, pr, title, body),
        ForgeKind::BitbucketServer => bitbucket::update(host, repo, pr, title, body),
        ForgeKind::AzureDevOps => azure::update(host, repo, pr, title, body),
    }
}

/// Exactly one open pull request from `head` into `base` with this title and body: the open
/// one, updated if its title or body differ, or a new one. A create answered with "already
/// exists" (a retry after a crash, another replica) looks the pull request up again.
pub fn ensure_pr(
    host: &dyn Host,
    repo: &Repo,
    head: &str,
    base: &str,
    title: &str,
    body: &str,
) -> Result<Ensured, ForgeError> {
    let body = &fit_description(repo.kind, body);
    if let Some(open) = find_open_pr(host, repo, head, base)? {
        return bring_up_to_date(host, repo, open, title, body);
    }
    match create(host, repo, head, base, title, body)? {
        Created::New(pull_request) => Ok(Ensured {
            pull_request,
            action: Action::Created,
        }),
        Created::AlreadyExists => match find_open_pr(host, repo, head, base)? {
            Some(open) => bring_up_to_date(host, repo, open, title, body),
            None => Err(ForgeError::retryable(format!(
                "{}: creating a pull request from {head} into {base} in {} was refused because \
                 one already exists, but none is listed as open yet",
                repo.kind,
                repo.path()
            ))),
        },
    }
}

fn bring_up_to_date(
    host: &dyn Host,
    repo: &Repo,
    open: PullRequest,
    title: &str,
    body: &str,
) -> Result<Ensured, ForgeError> {
    if open.title == title && same_text(&open.body, body) {
        return Ok(Ensured {
            pull_request: open,
            action: Action::Unchanged,
        });
    }
    Ok(Ensured {
        pull_request: update_pr(host, repo, &open, title, body)?,
        action: Action::Updated,
    })
}

/// Azure DevOps refuses a description longer than 4,000 characters (UTF-16 code units, as
/// .NET counts) with a 400 that no retry can fix.
const AZURE_DESCRIPTION_LIMIT: usize = 4000;

/// `body` as the forge will take it: on Azure DevOps, one over the limit keeps its end from
/// the last `<details>` on (the metadata block that names the promotion), and as much of
/// its beginning as fits before a note saying it was cut.
pub fn fit_description(kind: ForgeKind, body: &str) -> std::borrow::Cow<'_, str> {
    let units = |text: &str| text.encode_utf16().count();
    if kind != ForgeKind::AzureDevOps || units(body) <= AZURE_DESCRIPTION_LIMIT {
        return body.into();
    }
    const NOTE: &str = "\n\n… (cut: Azure DevOps keeps 4,000 characters of a description)";
    let tail = match body.rfind("<details>") {
        Some(at) if body.trim_end().ends_with("</details>") => &body[at..],
        _ => "",
    };
    let separator = if tail.is_empty() { "" } else { "\n\n" };
    let room = AZURE_DESCRIPTION_LIMIT.saturating_sub(units(tail) + units(NOTE) + units(separator));
    let mut head = String::new();
    let mut used = 0;
    for c in body.chars() {
        used += c.len_utf16();
        if used > room {
            break;
        }
        head.push(c);
    }
    let cut = format!("{}{NOTE}{separator}{tail}", head.trim_end());
    if units(&cut) <= AZURE_DESCRIPTION_LIMIT {
        cut.into()
    } else {
        // A metadata block that alone is too long: keep the beginning.
        body.chars()
            .scan(0, |used, c| {
                *used += c.len_utf16();
                (*used <= AZURE_DESCRIPTION_LIMIT).then_some(c)
            })
            .collect::<String>()
            .into()
    }
}

/// Bodies compare equal when they differ only in line endings or trailing whitespace, which
/// some forges normalise on the way in.
fn same_text(stored: &str, wanted: &str) -> bool {
    let normal = |s: &str| s.replace("\r\n", "\n").trim_end().to_string();
    normal(stored) == normal(wanted)
}

/// A create's result: a new pull request, or the forge's "one is already open".
enum Created {
    New(PullRequest),
    AlreadyExists,
}

fn create(
    host: &dyn Host,
    repo: &Repo,
    head: &str,
    base: &str,
    title: &str,
    body: &str,
) -> Result<Created, ForgeError> {
    match repo.kind {
        ForgeKind::GitHub => github::create(host, repo, head, base, title, body),
        ForgeKind::GitLab => gitlab::create(host, repo, head, base, title, body),
        ForgeKind::Gitea => gitea::create(host, repo, head, base, title, body),
        ForgeKind::BitbucketServer => bitbucket::create(host, repo, head, base, title, body),
        ForgeKind::AzureDevOps => azure::create(host, repo, head, base, title, body),
    }
}

/// A request to the forge's API with the headers every forge gets (no credentials: the host
/// adds those), and a JSON body when there is one.
fn request(repo: &Repo, method: &str, url: String, body: Option<&Value>) -> HttpRequest {
    let mut request = HttpRequest::new(method, url).with_header("User-Agent", USER_AGENT);
    request = match repo.kind {
        ForgeKind::GitHub => request
            .with_header("Accept", "application/vnd.github+json")
            .with_header("X-GitHub-Api-Version", "2022-11-28"),
        _ => request.with_header("Accept", "application/json"),
    };
    if let Some(body) = body {
        request = request
            .with_header("Content-Type", "application/json")
            .with_body(body.to_string());
    }
    request
}

/// Sends `request`; a transport failure becomes a [`ForgeError`], any answer comes back.
fn send(
    host: &dyn Host,
    repo: &Repo,
    action: &str,
    request: HttpRequest,
) -> Result<HttpResponse, ForgeError> {
    host.send(request)
        .map_err(|error| error::transport(repo, action, error))
}

/// The JSON body of a successful answer; any other answer becomes a [`ForgeError`].
fn json(repo: &Repo, action: &str, response: &HttpResponse) -> Result<Value, ForgeError> {
    if !response.is_success() || (repo.kind == ForgeKind::AzureDevOps && response.status == 203) {
        return Err(error::status(repo, action, response));
    }
    serde_json::from_slice(&response.body).map_err(|_| {
        ForgeError::permanent(format!(
            "{}: {action} in {}: {} answered HTTP {} with something other than JSON{}; check \
             apiBase and the token bound to {}",
            repo.kind,
            repo.path(),
            repo.api_base,
            response.status,
            error::excerpt_suffix(response),
            repo.api_origin()
        ))
    })
}

/// Sends `request` and returns the JSON of its successful answer.
fn call(
    host: &dyn Host,
    repo: &Repo,
    action: &str,
    request: HttpRequest,
) -> Result<Value, ForgeError> {
    let response = send(host, repo, action, request)?;
    json(repo, action, &response)
}

/// A pull request whose JSON lacks a field every answer of this forge has.
fn unexpected(repo: &Repo, action: &str, what: &str) -> ForgeError {
    ForgeError::permanent(format!(
        "{}: {action} in {}: the answer from {} has no {what}; is apiBase pointing at the \
         forge's API?",
        repo.kind,
        repo.path(),
        repo.api_base
    ))
}

/// `value[key]` as text, `""` when absent or null.
fn text(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// How a forge module turns one pull request's JSON into a [`PullRequest`].
type Parse = fn(&Repo, &str, &Value) -> Result<PullRequest, ForgeError>;

/// POSTs `body` to `url`; the forge's "already exists" answer becomes
/// [`Created::AlreadyExists`].
fn create_with(
    host: &dyn Host,
    repo: &Repo,
    (head, base): (&str, &str),
    url: String,
    body: Value,
    parse: Parse,
) -> Result<Created, ForgeError> {
    let action = format!("creating a pull request from {head} into {base}");
    let response = send(host, repo, &action, request(repo, "POST", url, Some(&body)))?;
    if !response.is_success() && error::says_already_exists(repo.kind, &response) {
        return Ok(Created::AlreadyExists);
    }
    let created = json(repo, &action, &response)?;
    parse(repo, &action, &created).map(Created::New)
}

/// Sends `body` to `url` with `method` and parses the updated pull request (keeping the
/// known web URL when the answer has none).
fn update_with(
    host: &dyn Host,
    repo: &Repo,
    pr: &PullRequest,
    method: &str,
    url: String,
    body: Value,
    parse: Parse,
) -> Result<PullRequest, ForgeError> {
    let action = format!("updating pull request #{}", pr.number);
    let updated = call(host, repo, &action, request(repo, method, url, Some(&body)))?;
    let mut updated = parse(repo, &action, &updated)?;
    if updated.url.is_empty() {
        updated.url = pr.url.clone();
    }
    Ok(updated)
}

/// The JSON array in `value` (or in `value[key]` when `key` is given).
fn array<'a>(
    repo: &Repo,
    action: &str,
    value: &'a Value,
    key: Option<&str>,
) -> Result<&'a Vec<Value>, ForgeError> {
    let list = match key {
        Some(key) => value.get(key),
        None => Some(value),
    };
    list.and_then(Value::as_array)
        .ok_or_else(|| unexpected(repo, action, "list of pull requests"))
}
