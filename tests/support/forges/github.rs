//! GitHub Enterprise Server's REST API (the same as github.com's, under `/api/v3` of the
//! server's own origin), pull requests, as documented
//! (<https://docs.github.com/en/enterprise-server@3.14/rest/pulls/pulls>): `GET …/pulls`
//! (`state` open|closed|all, default open; `head` as `owner:branch`; `base`; `per_page` up to
//! 100, `page`), `POST …/pulls` (`title`, `head`, `base` required, `body`; 201; 422 "A pull
//! request already exists for owner:branch." when one is open for the same branches),
//! `PATCH …/pulls/{pull_number}` (200). Every request needs a `User-Agent` (403 without);
//! `X-GitHub-Api-Version`, when sent, must be one the server serves (400). Credentials
//! (<https://docs.github.com/en/enterprise-server@3.14/rest/authentication>):
//! `Authorization: Bearer <t>` or `token <t>`; git over HTTPS takes the token as the basic
//! password with any user name. Errors: `{"message", "documentation_url"}`.

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
    Answer, Credential, Dialect, Forge, NewPull, Refusal, Repo, Shared, View, edit, header,
    json_body, open, routes, text_field,
};

pub struct GitHub;

const DOCS: &str = "https://docs.github.com/enterprise-server@3.14/rest";

impl Dialect for GitHub {
    const REPO_PATH: &'static str = "org/config.git";
    const API_ROOT: &'static str = "/api/v3";
    const PULLS: &'static str = "/api/v3/repos/org/config/pulls";
    const UPDATE: (&'static str, u16) = ("PATCH", 200);
    const DESCRIPTION: &'static str = "body";

    const CREDENTIALS: &'static [Credential] =
        &[Credential::Scheme("Bearer"), Credential::Scheme("token")];

    fn error(status: StatusCode, message: &str) -> Response {
        let body = json!({"message": message, "documentation_url": DOCS});
        (status, Json(body)).into_response()
    }

    fn unauthorized() -> Response {
        Self::error(StatusCode::UNAUTHORIZED, "Bad credentials")
    }

    fn routes() -> Router<Shared> {
        let pattern = "/api/v3/repos/{owner}/{repo}/pulls";
        routes(pattern, get(list).post(create), patch(update))
    }

    fn repository(params: &HashMap<String, String>, request: &Parts) -> Result<(), Refusal> {
        if header(&request.headers, "user-agent").is_none_or(str::is_empty) {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "Request forbidden by administrative rules. Please make sure your request has a User-Agent header",
            ));
        }
        if let Some(version) = header(&request.headers, "x-github-api-version")
            && version != "2022-11-28"
        {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("API version {version} is not supported."),
            ));
        }
        if params["owner"].eq_ignore_ascii_case("org")
            && params["repo"].eq_ignore_ascii_case("config")
        {
            Ok(())
        } else {
            Err(Refusal::new(StatusCode::NOT_FOUND, "Not Found"))
        }
    }

    fn pull(forge: &Forge, number: u64, new: &NewPull) -> Value {
        let html_url = format!("{}/org/config/pull/{number}", forge.origin);
        let branch = |name: &str| json!({"label": format!("org:{name}"), "ref": name, "repo": {"full_name": "org/config"}});
        json!({
            "number": number, "url": format!("{}/api/v3/repos/org/config/pulls/{number}", forge.origin),
            "html_url": html_url, "title": new.title, "body": new.body, "state": "open",
            "merged": false, "head": branch(&new.head), "base": branch(&new.base),
        })
    }

    fn mark_merged(pr: &mut Value) {
        pr["state"] = json!("closed");
        pr["merged"] = json!(true);
    }

    fn already_open(open: &Value) -> Response {
        let body = json!({
            "message": "Validation Failed",
            "errors": [{"resource": "PullRequest", "code": "custom",
                        "message": format!("A pull request already exists for org:{}.", open["head"]["ref"].as_str().unwrap())}],
            "documentation_url": DOCS,
        });
        (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
    }

    fn no_branch(branch: &str) -> Refusal {
        Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("Validation Failed: field head or base, invalid ({branch})"),
        )
    }

    fn no_pull(_: u64) -> Refusal {
        Refusal::new(StatusCode::NOT_FOUND, "Not Found")
    }

    fn view(pr: &Value) -> View {
        View::of_github_json(pr)
    }
}

async fn list(State(forge): State<Shared>, repo: Repo<GitHub>) -> Answer {
    let state = repo.query_or("state", "open");
    if !["open", "closed", "all"].contains(&state) {
        return Err(Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("Validation Failed: state {state:?} is not one of open, closed, all"),
        ));
    }
    let head = repo.query.get("head");
    if head.is_some_and(|h| !h.contains(':')) {
        return Err(Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Validation Failed: head must be user:ref-name or organization:ref-name",
        ));
    }
    let base = repo.query.get("base");
    let f = forge.lock().unwrap();
    let matching: Vec<&Value> = f
        .pulls
        .iter()
        .filter(|pr| state == "all" || pr["state"] == state)
        .filter(|pr| head.is_none_or(|h| pr["head"]["label"] == h.as_str()))
        .filter(|pr| base.is_none_or(|b| pr["base"]["ref"] == b.as_str()))
        .collect();
    Ok(Json(matching).into_response())
}

async fn create(State(forge): State<Shared>, _: Repo<GitHub>, body: Bytes) -> Answer {
    let body = json_body(&body)?;
    let field =
        |name: &str| text_field(&body, name, StatusCode::UNPROCESSABLE_ENTITY).map(String::from);
    let head = field("head")?;
    let new = NewPull {
        head: head.strip_prefix("org:").unwrap_or(&head).to_string(),
        base: field("base")?,
        title: field("title")?,
        body: body["body"].as_str().unwrap_or_default().into(),
    };
    open::<GitHub>(&forge, &new)
}

async fn update(State(forge): State<Shared>, repo: Repo<GitHub>, body: Bytes) -> Answer {
    let body = json_body(&body)?;
    edit::<GitHub>(&forge, repo.number()?, &body, |_| Ok(()))
}
