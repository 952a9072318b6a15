//! GitLab's REST API v4, merge requests, as documented:
//! <https://docs.gitlab.com/api/merge_requests/> (list, create, update),
//! <https://docs.gitlab.com/api/rest/authentication/> (`PRIVATE-TOKEN: <token>` or
//! `Authorization: Bearer <token>`), <https://docs.gitlab.com/api/rest/#namespaced-paths>
//! (a project path in `:id` is URL-encoded: `org%2Fconfig`),
//! <https://docs.gitlab.com/security/rate_limits/> (429, `Retry-After`, `RateLimit-*`),
//! <https://docs.gitlab.com/api/rest/troubleshooting/> (errors: `{"message": …}`, bad
//! parameters `{"error": …}`). A create that conflicts with an open merge request, or names a
//! branch the project lacks, is answered 409 with the messages in a list (GitLab's
//! `handle_merge_request_errors!`: `conflict!(errors[:validate_branches])`).

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde_json::{Value, json};
use std::collections::HashMap;

use super::{
    Answer, Credential, Dialect, Forge, NewPull, Refusal, Repo, Shared, View, edit, json_body,
    open, routes, text_field,
};

pub struct GitLab;

/// The project's numeric id; its path is `org/config`.
const PROJECT_ID: u64 = 42;

impl Dialect for GitLab {
    const REPO_PATH: &'static str = "org/config.git";
    const API_ROOT: &'static str = "/api/v4";
    const PULLS: &'static str = "/api/v4/projects/org%2Fconfig/merge_requests";
    const UPDATE: (&'static str, u16) = ("PUT", 200);

    const CREDENTIALS: &'static [Credential] = &[
        Credential::Header("private-token"),
        Credential::Scheme("Bearer"),
    ];

    fn error(status: StatusCode, message: &str) -> Response {
        // Grape's parameter errors say `error`; a model's validation errors are a list.
        let body = match status {
            StatusCode::BAD_REQUEST => json!({ "error": message }),
            StatusCode::CONFLICT => json!({ "message": [message] }),
            _ => json!({ "message": message }),
        };
        (status, Json(body)).into_response()
    }

    fn unauthorized() -> Response {
        Self::error(StatusCode::UNAUTHORIZED, "401 Unauthorized")
    }

    fn rate_limited() -> Response {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        (
            StatusCode::TOO_MANY_REQUESTS,
            [
                (CONTENT_TYPE.as_str(), "text/plain".to_string()),
                ("retry-after", "1".to_string()),
                ("ratelimit-name", "throttle_authenticated_api".to_string()),
                ("ratelimit-limit", "60".to_string()),
                ("ratelimit-observed", "61".to_string()),
                ("ratelimit-remaining", "0".to_string()),
                ("ratelimit-reset", (now + 1).to_string()),
            ],
            "Retry later\n",
        )
            .into_response()
    }

    fn routes() -> Router<Shared> {
        let pattern = "/api/v4/projects/{id}/merge_requests";
        routes(pattern, get(list).post(create), put(update))
    }

    fn repository(params: &HashMap<String, String>, _: &Parts) -> Result<(), Refusal> {
        let id = params["id"].as_str();
        if id == "org/config" || id == PROJECT_ID.to_string() {
            Ok(())
        } else {
            Err(Refusal::new(StatusCode::NOT_FOUND, "404 Project Not Found"))
        }
    }

    fn pull(forge: &Forge, iid: u64, new: &NewPull) -> Value {
        json!({
            "id": 1000 + iid, "iid": iid, "project_id": PROJECT_ID,
            "title": new.title, "description": new.body, "state": "opened",
            "source_branch": new.head, "target_branch": new.base,
            "source_project_id": PROJECT_ID, "target_project_id": PROJECT_ID,
            "web_url": format!("{}/org/config/-/merge_requests/{iid}", forge.origin),
        })
    }

    fn mark_merged(mr: &mut Value) {
        mr["state"] = json!("merged");
    }

    fn already_open(open: &Value) -> Response {
        let message = format!(
            "Another open merge request already exists for this source branch: !{}",
            open["iid"]
        );
        Self::error(StatusCode::CONFLICT, &message)
    }

    fn no_branch(branch: &str) -> Refusal {
        Refusal::new(
            StatusCode::CONFLICT,
            format!("Branch \"{branch}\" does not exist"),
        )
    }

    fn no_pull(_: u64) -> Refusal {
        Refusal::new(StatusCode::NOT_FOUND, "404 Not found")
    }

    fn view(mr: &Value) -> View {
        View {
            number: mr["iid"].as_u64().unwrap(),
            open: mr["state"] == "opened",
            title: mr["title"].as_str().unwrap().into(),
            body: mr["description"].as_str().unwrap_or_default().into(),
            head: mr["source_branch"].as_str().unwrap().into(),
            base: mr["target_branch"].as_str().unwrap().into(),
            url: mr["web_url"].as_str().unwrap().into(),
        }
    }
}

/// `GET /projects/:id/merge_requests`: `state` is opened, closed, locked, merged or all (the
/// default: all); `source_branch` and `target_branch` filter.
async fn list(State(forge): State<Shared>, repo: Repo<GitLab>) -> Answer {
    let state = repo.query_or("state", "all");
    if !["opened", "closed", "locked", "merged", "all"].contains(&state) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "state does not have a valid value",
        ));
    }
    let filter = |key: &str, mr: &Value| repo.query.get(key).is_none_or(|b| mr[key] == b.as_str());
    let f = forge.lock().unwrap();
    let found: Vec<&Value> = f
        .pulls
        .iter()
        .filter(|mr| state == "all" || mr["state"] == state)
        .filter(|mr| filter("source_branch", mr) && filter("target_branch", mr))
        .collect();
    Ok(Json(found).into_response())
}

/// `POST /projects/:id/merge_requests`: `source_branch`, `target_branch` and `title` are
/// required.
async fn create(State(forge): State<Shared>, _: Repo<GitLab>, body: Bytes) -> Answer {
    let body = json_body(&body)?;
    let field = |name: &str| text_field(&body, name, StatusCode::BAD_REQUEST).map(String::from);
    let new = NewPull {
        head: field("source_branch")?,
        base: field("target_branch")?,
        title: field("title")?,
        body: body["description"].as_str().unwrap_or_default().into(),
    };
    open::<GitLab>(&forge, &new)
}

/// `PUT /projects/:id/merge_requests/:merge_request_iid`: at least one attribute.
async fn update(State(forge): State<Shared>, repo: Repo<GitLab>, body: Bytes) -> Answer {
    let body = json_body(&body)?;
    let editable = [
        "title",
        "description",
        "target_branch",
        "state_event",
        "labels",
    ];
    if !editable.iter().any(|k| body.get(k).is_some()) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!(
                "{} are missing, at least one parameter must be provided",
                editable.join(", ")
            ),
        ));
    }
    edit::<GitLab>(&forge, repo.number()?, &body, |_| Ok(()))
}
