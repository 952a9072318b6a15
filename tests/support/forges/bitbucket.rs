//! Bitbucket Server / Data Center REST API 1.0, pull requests, as documented
//! (<https://developer.atlassian.com/server/bitbucket/rest/>, group "Pull requests"):
//! `GET …/pull-requests` (`direction` INCOMING|OUTGOING, default INCOMING, relative to `at`, a
//! fully qualified ref; `state` OPEN|DECLINED|MERGED|ALL, default OPEN; paged: `start`,
//! `limit`, `isLastPage`, `nextPageStart`); `POST …/pull-requests` (`title`, `fromRef` and
//! `toRef` with `id` and `repository {slug, project {key}}`; 409
//! `DuplicatePullRequestException` when one is open for the same branches); `PUT
//! …/pull-requests/{id}` (`version` required, 409 `PullRequestOutOfDateException` when it is
//! not the current one; the reviewers sent replace the reviewers: the Java API's
//! `PullRequestUpdateRequest.getReviewers`, "any current reviewer not in this set will be
//! relegated to participant status").
//! Credentials, for the API and for git over HTTPS alike: HTTP access tokens as
//! `Authorization: Bearer <token>`, or basic auth with the token's owner as the user name
//! (<https://confluence.atlassian.com/bitbucketserver/http-access-tokens-939515499.html>);
//! project and repository tokens have no owner, so only Bearer.
//! Errors: `{"errors": [{"context", "message", "exceptionName"}]}`. Rate limiting (Data
//! Center): 429 with `Retry-After` and `X-RateLimit-*`.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde_json::{Value, json};
use std::collections::HashMap;

use crate::support::USER;

use super::{
    Answer, Credential, Dialect, Forge, NewPull, Refusal, Repo, Shared, View, branch_of_ref, edit,
    json_body, open, routes, text_field,
};

pub struct Bitbucket;

impl Dialect for Bitbucket {
    const REPO_PATH: &'static str = "scm/org/config.git";
    const API_ROOT: &'static str = "/rest/api/1.0";
    const PULLS: &'static str = "/rest/api/1.0/projects/ORG/repos/config/pull-requests";
    const UPDATE: (&'static str, u16) = ("PUT", 200);

    /// A personal access token also works as the password of its owner's user name; project
    /// and repository HTTP access tokens belong to no user and work only as Bearer, so Basic
    /// with any other user name is refused (the fake's token is `USER`'s).
    const CREDENTIALS: &'static [Credential] =
        &[Credential::Scheme("Bearer"), Credential::BasicAs(USER)];
    const GIT_CREDENTIALS: &'static [Credential] = Self::CREDENTIALS;

    fn error(status: StatusCode, message: &str) -> Response {
        exception(status, message, Value::Null, json!({}))
    }

    fn unauthorized() -> Response {
        exception(
            StatusCode::UNAUTHORIZED,
            "Authentication failed. Please check your credentials and try again.",
            json!("com.atlassian.bitbucket.auth.IncorrectPasswordAuthenticationException"),
            json!({}),
        )
    }

    fn rate_limited() -> Response {
        let mut answer = Self::error(
            StatusCode::TOO_MANY_REQUESTS,
            "You have been rate limited. Please try again later.",
        );
        for (key, value) in [
            ("retry-after", "1"),
            ("x-ratelimit-limit", "60"),
            ("x-ratelimit-interval-seconds", "1"),
            ("x-ratelimit-fillrate", "5"),
        ] {
            answer.headers_mut().insert(key, value.parse().unwrap());
        }
        answer
    }

    fn routes() -> Router<Shared> {
        let pattern = "/rest/api/1.0/projects/{key}/repos/{slug}/pull-requests";
        routes(pattern, get(list).post(create), put(update))
    }

    fn repository(params: &HashMap<String, String>, _: &Parts) -> Result<(), Refusal> {
        this_repository(&params["key"], &params["slug"])
    }

    fn pull(forge: &Forge, id: u64, new: &NewPull) -> Value {
        let repository = json!({"slug": "config", "name": "config", "project": {"key": "ORG"}});
        let side = |branch: &str| json!({"id": format!("refs/heads/{branch}"), "displayId": branch, "repository": repository});
        let href = format!(
            "{}/projects/ORG/repos/config/pull-requests/{id}",
            forge.origin
        );
        json!({
            "id": id, "version": 0, "title": new.title, "description": new.body,
            "state": "OPEN", "open": true, "closed": false, "locked": false,
            "fromRef": side(&new.head), "toRef": side(&new.base),
            "author": {"user": {"name": "promoter-bot"}, "role": "AUTHOR", "approved": false},
            "reviewers": [], "participants": [],
            "links": {"self": [{"href": href}]},
        })
    }

    fn mark_merged(pr: &mut Value) {
        pr["state"] = json!("MERGED");
        pr["open"] = json!(false);
        pr["closed"] = json!(true);
    }

    fn already_open(open: &Value) -> Response {
        exception(
            StatusCode::CONFLICT,
            "Only one pull request may be open for a given source and target branch",
            json!("com.atlassian.bitbucket.pull.DuplicatePullRequestException"),
            json!({"existingPullRequest": open}),
        )
    }

    fn no_branch(branch: &str) -> Refusal {
        Refusal::new(
            StatusCode::NOT_FOUND,
            format!("Repository \"config\" of project ORG has no branch \"{branch}\"."),
        )
    }

    fn no_pull(id: u64) -> Refusal {
        Refusal::new(
            StatusCode::NOT_FOUND,
            format!("Pull request {id} does not exist in ORG/config."),
        )
    }

    fn view(pr: &Value) -> View {
        View {
            number: pr["id"].as_u64().unwrap(),
            open: pr["state"] == "OPEN",
            title: pr["title"].as_str().unwrap().into(),
            body: pr["description"].as_str().unwrap_or_default().into(),
            head: branch_of_ref(&pr["fromRef"]["id"]),
            base: branch_of_ref(&pr["toRef"]["id"]),
            url: pr["links"]["self"][0]["href"].as_str().unwrap().into(),
        }
    }
}

/// Bitbucket's error: one entry of `errors`, with `extra` fields merged into it.
fn exception(status: StatusCode, message: &str, name: Value, extra: Value) -> Response {
    let mut entry = json!({"context": null, "message": message, "exceptionName": name});
    for (key, value) in extra.as_object().unwrap() {
        entry[key] = value.clone();
    }
    (status, Json(json!({"errors": [entry]}))).into_response()
}

/// Project keys are upper case; Bitbucket matches them without regard to case.
fn this_repository(key: &str, slug: &str) -> Result<(), Refusal> {
    if key.eq_ignore_ascii_case("ORG") && slug == "config" {
        Ok(())
    } else {
        Err(Refusal::new(
            StatusCode::NOT_FOUND,
            format!("Repository {key}/{slug} does not exist."),
        ))
    }
}

/// One of `allowed` (the first is the default), or a refusal.
fn choice<'a>(
    repo: &'a Repo<Bitbucket>,
    key: &str,
    allowed: &[&'a str],
) -> Result<&'a str, Refusal> {
    let value = repo.query_or(key, allowed[0]);
    if allowed.contains(&value) {
        Ok(value)
    } else {
        Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("{key} {value:?} is not one of {allowed:?}"),
        ))
    }
}

async fn list(State(forge): State<Shared>, repo: Repo<Bitbucket>) -> Answer {
    let direction = choice(&repo, "direction", &["INCOMING", "OUTGOING"])?;
    let state = choice(&repo, "state", &["OPEN", "DECLINED", "MERGED", "ALL"])?;
    let at = repo.query.get("at");
    if at.is_some_and(|at| !at.starts_with("refs/")) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "at must be a fully qualified ref, such as refs/heads/main",
        ));
    }
    let number = |key: &str, default: &str| {
        repo.query_or(key, default)
            .parse::<usize>()
            .map_err(|_| Refusal::new(StatusCode::BAD_REQUEST, format!("{key} is not a number")))
    };
    let (start, limit) = (number("start", "0")?, number("limit", "25")?.clamp(1, 1000));
    let side = if direction == "OUTGOING" {
        "fromRef"
    } else {
        "toRef"
    };
    let f = forge.lock().unwrap();
    let matching: Vec<&Value> = f
        .pulls
        .iter()
        .filter(|pr| state == "ALL" || pr["state"] == state)
        .filter(|pr| at.is_none_or(|at| pr[side]["id"] == at.as_str()))
        .collect();
    let values: Vec<&&Value> = matching.iter().skip(start).take(limit).collect();
    let last = start + values.len() >= matching.len();
    let mut page = json!({
        "size": values.len(), "limit": limit, "start": start, "isLastPage": last, "values": values,
    });
    if !last {
        page["nextPageStart"] = json!(start + limit);
    }
    Ok(Json(page).into_response())
}

/// The branch a `fromRef` or `toRef` names, in this repository.
fn branch_of(body: &Value, side: &str) -> Result<String, Refusal> {
    let id = body[side]["id"]
        .as_str()
        .ok_or_else(|| Refusal::new(StatusCode::BAD_REQUEST, format!("{side}.id is required")))?;
    let repository = &body[side]["repository"];
    this_repository(
        repository["project"]["key"].as_str().unwrap_or_default(),
        repository["slug"].as_str().unwrap_or_default(),
    )?;
    let branch = id.strip_prefix("refs/heads/").ok_or_else(|| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("{side}.id {id:?} is not a branch ref (refs/heads/…)"),
        )
    })?;
    Ok(branch.to_string())
}

async fn create(State(forge): State<Shared>, _: Repo<Bitbucket>, body: Bytes) -> Answer {
    let body = json_body(&body)?;
    let new = NewPull {
        title: text_field(&body, "title", StatusCode::BAD_REQUEST)?.into(),
        head: branch_of(&body, "fromRef")?,
        base: branch_of(&body, "toRef")?,
        body: body["description"].as_str().unwrap_or_default().into(),
    };
    open::<Bitbucket>(&forge, &new)
}

/// Only on the `version` it is based on; the reviewers sent replace the reviewers.
async fn update(State(forge): State<Shared>, repo: Repo<Bitbucket>, body: Bytes) -> Answer {
    let body = json_body(&body)?;
    let version = body["version"].as_i64().ok_or_else(|| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "version is required to update a pull request",
        )
    })?;
    edit::<Bitbucket>(&forge, repo.number()?, &body, |pr| {
        if pr["version"] != version {
            return Err(Refusal::new(
                StatusCode::CONFLICT,
                format!(
                    "You are attempting to modify a pull request based on out-of-date information (version {version}, current {}). PullRequestOutOfDateException",
                    pr["version"]
                ),
            ));
        }
        let reviewers: Vec<Value> = body["reviewers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["user"]["name"].as_str())
            .map(reviewer)
            .collect();
        pr["reviewers"] = json!(reviewers);
        pr["version"] = json!(version + 1);
        Ok(())
    })
}

fn reviewer(name: &str) -> Value {
    json!({"user": {"name": name}, "role": "REVIEWER", "approved": false, "status": "UNAPPROVED"})
}

/// A person adds a reviewer in the web UI, which bumps the pull request's version.
pub fn add_reviewer(pr: &mut Value, name: &str) {
    pr["reviewers"].as_array_mut().unwrap().push(reviewer(name));
    pr["version"] = json!(pr["version"].as_i64().unwrap() + 1);
}
