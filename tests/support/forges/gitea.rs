//! Gitea's (and Forgejo's) API v1, pull requests, as documented in its Swagger
//! (<https://gitea.com/api/swagger>; the annotations of `routers/api/v1/repo/pull.go`):
//! `repoListPullRequests` (`state` open|closed|all, default open; `base_branch`; `page`,
//! `limit` capped by `MAX_RESPONSE_ITEMS`, 50 by default; `X-Total-Count`),
//! `repoCreatePullRequest` (`head`, `base`, `title` required; 201; 409 when one is open for the
//! same branches; 404 for a branch it lacks), `repoEditPullRequest` (PATCH, answered 201).
//! Credentials (<https://docs.gitea.com/development/api-usage>): `Authorization: token <t>`,
//! `Authorization: Bearer <t>`, or basic auth with the token as password. Errors:
//! `{"message": …, "url": …}`.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use serde_json::{Value, json};
use std::collections::HashMap;

use super::{
    Answer, Credential, Dialect, Forge, NewPull, Refusal, Repo, Shared, View, edit, json_body,
    open, routes, text_field,
};

pub struct Gitea;

const REPO_ID: u64 = 7;
const MAX_RESPONSE_ITEMS: usize = 50;
const NOT_FOUND: &str = "The target couldn't be found.";

impl Dialect for Gitea {
    const REPO_PATH: &'static str = "org/config.git";
    const API_ROOT: &'static str = "/api/v1";
    const PULLS: &'static str = "/api/v1/repos/org/config/pulls";
    /// Gitea answers an edit 201 ("TODO this should be 200, not 201").
    const UPDATE: (&'static str, u16) = ("PATCH", 201);
    const DESCRIPTION: &'static str = "body";

    const CREDENTIALS: &'static [Credential] = &[
        Credential::Scheme("token"),
        Credential::Scheme("Bearer"),
        Credential::Basic,
    ];

    fn error(status: StatusCode, message: &str) -> Response {
        let body = json!({"message": message, "url": "http://gitea.invalid/api/swagger"});
        (status, Json(body)).into_response()
    }

    fn unauthorized() -> Response {
        Self::error(StatusCode::UNAUTHORIZED, "token is required")
    }

    fn routes() -> Router<Shared> {
        let pattern = "/api/v1/repos/{owner}/{repo}/pulls";
        routes(pattern, get(list).post(create), patch(update))
    }

    fn repository(params: &HashMap<String, String>, _: &Parts) -> Result<(), Refusal> {
        if params["owner"] == "org" && params["repo"] == "config" {
            Ok(())
        } else {
            Err(Refusal::new(StatusCode::NOT_FOUND, NOT_FOUND))
        }
    }

    fn pull(forge: &Forge, number: u64, new: &NewPull) -> Value {
        let html_url = format!("{}/org/config/pulls/{number}", forge.origin);
        let branch = |name: &str| json!({"label": name, "ref": name, "repo_id": REPO_ID});
        json!({
            "id": 500 + number, "number": number, "url": html_url, "html_url": html_url,
            "title": new.title, "body": new.body, "state": "open", "merged": false,
            "head": branch(&new.head), "base": branch(&new.base),
        })
    }

    fn mark_merged(pr: &mut Value) {
        pr["state"] = json!("closed");
        pr["merged"] = json!(true);
    }

    fn already_open(open: &Value) -> Response {
        let message = format!(
            "pull request already exists for these targets [id: {}, issue_id: {}, head_repo_id: {REPO_ID}, base_repo_id: {REPO_ID}, head_branch: {}, base_branch: {}]",
            open["id"], open["number"], open["head"]["ref"], open["base"]["ref"]
        );
        Self::error(StatusCode::CONFLICT, &message)
    }

    fn no_branch(_: &str) -> Refusal {
        Refusal::new(StatusCode::NOT_FOUND, NOT_FOUND)
    }

    fn no_pull(_: u64) -> Refusal {
        Refusal::new(StatusCode::NOT_FOUND, NOT_FOUND)
    }

    fn view(pr: &Value) -> View {
        View::of_github_json(pr)
    }
}

async fn list(State(forge): State<Shared>, repo: Repo<Gitea>) -> Answer {
    let state = repo.query_or("state", "open");
    if !["open", "closed", "all"].contains(&state) {
        return Err(Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("state {state:?} is not one of open, closed, all"),
        ));
    }
    let number = |key: &str, default: &str| {
        repo.query_or(key, default).parse::<usize>().map_err(|_| {
            Refusal::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{key} is not a number"),
            )
        })
    };
    let page = number("page", "1")?.max(1);
    let limit = match number("limit", "0")? {
        0 => MAX_RESPONSE_ITEMS,
        n => n.min(MAX_RESPONSE_ITEMS),
    };
    let base = repo.query.get("base_branch");
    let f = forge.lock().unwrap();
    let matching: Vec<&Value> = f
        .pulls
        .iter()
        .filter(|pr| state == "all" || pr["state"] == state)
        .filter(|pr| base.is_none_or(|b| pr["base"]["ref"] == b.as_str()))
        .collect();
    let total = matching.len().to_string();
    let items: Vec<&&Value> = matching
        .iter()
        .skip((page - 1) * limit)
        .take(limit)
        .collect();
    Ok(([("x-total-count", total)], Json(items)).into_response())
}

async fn create(State(forge): State<Shared>, _: Repo<Gitea>, body: Bytes) -> Answer {
    let body = json_body(&body)?;
    let field =
        |name: &str| text_field(&body, name, StatusCode::UNPROCESSABLE_ENTITY).map(String::from);
    let new = NewPull {
        head: field("head")?,
        base: field("base")?,
        title: field("title")?,
        body: body["body"].as_str().unwrap_or_default().into(),
    };
    if new.head == new.base {
        return Err(Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid PullRequest: There are no changes between the head and the base",
        ));
    }
    open::<Gitea>(&forge, &new)
}

async fn update(State(forge): State<Shared>, repo: Repo<Gitea>, body: Bytes) -> Answer {
    let body = json_body(&body)?;
    edit::<Gitea>(&forge, repo.number()?, &body, |_| Ok(()))
}
