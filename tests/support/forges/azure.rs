//! Azure DevOps Server 2022 (and Services) REST API, Git pull requests, as documented
//! (<https://learn.microsoft.com/en-us/rest/api/azure/devops/git/pull-requests>):
//! `GET {collection}/{project}/_apis/git/repositories/{repo}/pullrequests` ("Get Pull
//! Requests": `searchCriteria.sourceRefName`, `searchCriteria.targetRefName` (full ref names),
//! `searchCriteria.status` (notSet, active, abandoned, completed, all; active when not set);
//! `{value, count}`; "description field will be truncated up to 400 symbols in the result"),
//! `GET …/pullrequests/{id}`, `POST …/pullrequests` (`sourceRefName`, `targetRefName`,
//! `title`; 201; 409 TF401179 `GitPullRequestExistsException` when one is active for the same
//! branches), `PATCH …/pullrequests/{id}`. Every call needs an `api-version` the server
//! serves, in the query or the `Accept` header
//! (<https://learn.microsoft.com/en-us/azure/devops/integrate/concepts/rest-api-versioning>).
//! Personal access tokens go in basic auth with an empty user name
//! (<https://learn.microsoft.com/en-us/azure/devops/organizations/accounts/use-personal-access-tokens-to-authenticate>).
//! Rate limits: 429 with `Retry-After` and `X-RateLimit-*`
//! (<https://learn.microsoft.com/en-us/azure/devops/integrate/concepts/rate-limits>). Errors:
//! `{"$id", "innerException", "message", "typeName", "typeKey", "errorCode", "eventId"}`.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::collections::HashMap;

use super::{
    Answer, Credential, Dialect, Forge, NewPull, Refusal, Repo, Shared, View, branch_of_ref, edit,
    header, json_body, open, routes, text_field,
};

pub struct Azure;

/// The fake is a self-hosted collection, Azure DevOps Server 2022: it serves the REST API
/// versions up to 7.0 (the "Supported versions" table); Azure DevOps Services serves those too.
const LATEST_API_VERSION: (u32, u32) = (7, 0);
const LISTED_DESCRIPTION_CHARS: usize = 400;
const MAX_DESCRIPTION_CHARS: usize = 4000;

impl Dialect for Azure {
    const REPO_PATH: &'static str = "org/project/_git/config";
    const API_ROOT: &'static str = "/org";
    const PULLS: &'static str = "/org/project/_apis/git/repositories/config/pullrequests";
    const UPDATE: (&'static str, u16) = ("PATCH", 200);

    /// Any user name; the personal access token is the password.
    const CREDENTIALS: &'static [Credential] = &[Credential::Basic];

    fn error(status: StatusCode, message: &str) -> Response {
        typed_error(status, message, "InvalidArgumentValueException")
    }

    fn unauthorized() -> Response {
        (
            StatusCode::UNAUTHORIZED,
            [
                ("content-type", "text/html; charset=utf-8"),
                ("www-authenticate", "Basic realm=\"https://dev.azure.com/\""),
            ],
            "<html><head><title>Access Denied</title></head><body>Access Denied: The Personal Access Token used has expired or is invalid.</body></html>",
        )
            .into_response()
    }

    fn rate_limited() -> Response {
        let mut answer = typed_error(
            StatusCode::TOO_MANY_REQUESTS,
            "TF400733: The request has been delayed or blocked because of rate limits.",
            "RequestBlockedException",
        );
        let reset = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 1;
        for (key, value) in [
            ("retry-after", "1".to_string()),
            ("x-ratelimit-resource", "Core".to_string()),
            ("x-ratelimit-delay", "0.5".to_string()),
            ("x-ratelimit-limit", "200".to_string()),
            ("x-ratelimit-remaining", "0".to_string()),
            ("x-ratelimit-reset", reset.to_string()),
        ] {
            answer.headers_mut().insert(key, value.parse().unwrap());
        }
        answer
    }

    fn routes() -> Router<Shared> {
        let pattern = "/{org}/{project}/_apis/git/repositories/{repo}/pullrequests";
        routes(pattern, get(list).post(create), get(one).patch(update))
    }

    fn repository(params: &HashMap<String, String>, request: &Parts) -> Result<(), Refusal> {
        let named = |key: &str, name: &str| params[key].eq_ignore_ascii_case(name);
        if !(named("org", "org") && named("project", "project") && named("repo", "config")) {
            return Err(Refusal::new(
                StatusCode::NOT_FOUND,
                format!(
                    "TF401019: The Git repository with name or identifier {} does not exist or you do not have permissions for the operation you are attempting.",
                    params["repo"]
                ),
            ));
        }
        let Query(query) = Query::<HashMap<String, String>>::try_from_uri(&request.uri)
            .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e.to_string()))?;
        let in_accept = header(&request.headers, "accept").and_then(|a| {
            a.split(';')
                .find_map(|p| p.trim().strip_prefix("api-version="))
        });
        match query.get("api-version").map(String::as_str).or(in_accept) {
            None => Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "No api-version was supplied for the request. The version must be supplied either as part of the Accept header (e.g. \"application/json; api-version=1.0\") or as a query parameter (e.g. '?api-version=1.0').",
            )),
            Some(version) if served(version) => Ok(()),
            Some(version) => Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "The requested REST API version of {version} is out of range for this server. The latest REST API version this server supports is 7.0."
                ),
            )),
        }
    }

    /// The repository and project as the API returns them; no `webUrl` (the documented
    /// samples of pull requests have none).
    fn pull(forge: &Forge, id: u64, new: &NewPull) -> Value {
        let repo_url = format!("{}/org/project/_apis/git/repositories/config", forge.origin);
        json!({
            "repository": {
                "id": "3411ebc1-d5aa-464f-9615-0b527bc66719", "name": "config", "url": repo_url,
                "project": {"id": "a7573007-bbb3-4341-b726-0c4148a07853", "name": "project"},
            },
            "pullRequestId": id, "codeReviewId": id, "status": "active",
            "createdBy": {"displayName": "Promoter"},
            "title": new.title, "description": new.body,
            "sourceRefName": format!("refs/heads/{}", new.head),
            "targetRefName": format!("refs/heads/{}", new.base),
            "mergeStatus": "queued", "isDraft": false,
            "url": format!("{repo_url}/pullRequests/{id}"),
        })
    }

    fn mark_merged(pr: &mut Value) {
        pr["status"] = json!("completed");
    }

    fn already_open(_: &Value) -> Response {
        typed_error(
            StatusCode::CONFLICT,
            "TF401179: An active pull request for the source and target branch already exists.",
            "GitPullRequestExistsException",
        )
    }

    fn no_branch(_: &str) -> Refusal {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "TF401398: The pull request cannot be activated because the source and/or the target branch no longer exists, or the requested refs are not branches",
        )
    }

    fn no_pull(id: u64) -> Refusal {
        Refusal::new(
            StatusCode::NOT_FOUND,
            format!("TF401180: The requested pull request was not found. ({id})"),
        )
    }

    fn view(pr: &Value) -> View {
        let number = pr["pullRequestId"].as_u64().unwrap();
        let repo_url = pr["repository"]["url"].as_str().unwrap();
        View {
            number,
            open: pr["status"] == "active",
            title: pr["title"].as_str().unwrap().into(),
            body: pr["description"].as_str().unwrap_or_default().into(),
            head: branch_of_ref(&pr["sourceRefName"]),
            base: branch_of_ref(&pr["targetRefName"]),
            // The web page: {collection}/{project}/_git/{repo}/pullrequest/{id}.
            url: format!(
                "{}/pullrequest/{number}",
                repo_url.replace("/_apis/git/repositories/", "/_git/")
            ),
        }
    }
}

fn typed_error(status: StatusCode, message: &str, type_key: &str) -> Response {
    let body = json!({
        "$id": "1", "innerException": null, "message": message,
        "typeName": format!("Microsoft.TeamFoundation.Git.Server.{type_key}, Microsoft.TeamFoundation.Git.Server"),
        "typeKey": type_key, "errorCode": 0, "eventId": 3000,
    });
    (status, Json(body)).into_response()
}

/// `{major}.{minor}[-{stage}[.{resource-version}]]`, at most [`LATEST_API_VERSION`].
fn served(version: &str) -> bool {
    let number = version.split('-').next().unwrap_or_default();
    let Some((major, minor)) = number.split_once('.') else {
        return false;
    };
    match (major.parse::<u32>(), minor.parse::<u32>()) {
        (Ok(major), Ok(minor)) => major >= 1 && (major, minor) <= LATEST_API_VERSION,
        _ => false,
    }
}

/// Descriptions longer than 4,000 characters are refused.
fn description_fits(body: &Value) -> Result<(), Refusal> {
    let chars = body["description"]
        .as_str()
        .unwrap_or_default()
        .chars()
        .count();
    if chars > MAX_DESCRIPTION_CHARS {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!(
                "The description is {chars} characters long; at most {MAX_DESCRIPTION_CHARS} are allowed."
            ),
        ));
    }
    Ok(())
}

async fn list(State(forge): State<Shared>, repo: Repo<Azure>) -> Answer {
    let status = repo
        .query_or("searchCriteria.status", "active")
        .to_ascii_lowercase();
    if !["notset", "active", "abandoned", "completed", "all"].contains(&status.as_str()) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("searchCriteria.status {status:?} is not a PullRequestStatus"),
        ));
    }
    let criterion = |key: &str, pr: &Value| {
        repo.query
            .get(&format!("searchCriteria.{key}"))
            .is_none_or(|r| pr[key] == r.as_str())
    };
    let f = forge.lock().unwrap();
    let value: Vec<Value> = f
        .pulls
        .iter()
        .filter(|pr| status == "all" || pr["status"] == status.as_str())
        .filter(|pr| criterion("sourceRefName", pr) && criterion("targetRefName", pr))
        .map(|pr| {
            let mut listed = pr.clone();
            let description = pr["description"].as_str().unwrap_or_default();
            let cut: String = description.chars().take(LISTED_DESCRIPTION_CHARS).collect();
            listed["description"] = json!(cut);
            listed
        })
        .collect();
    Ok(Json(json!({"value": value, "count": value.len()})).into_response())
}

async fn one(State(forge): State<Shared>, repo: Repo<Azure>) -> Answer {
    let number = repo.number()?;
    let f = forge.lock().unwrap();
    let pr = f
        .pulls
        .iter()
        .find(|pr| pr["pullRequestId"] == number)
        .ok_or_else(|| Azure::no_pull(number))?;
    Ok(Json(pr).into_response())
}

async fn create(State(forge): State<Shared>, _: Repo<Azure>, body: Bytes) -> Answer {
    let body = json_body(&body)?;
    description_fits(&body)?;
    let branch = |key: &str| {
        let name = text_field(&body, key, StatusCode::BAD_REQUEST)?;
        name.strip_prefix("refs/heads/")
            .map(String::from)
            .ok_or_else(|| Azure::no_branch(name))
    };
    let new = NewPull {
        head: branch("sourceRefName")?,
        base: branch("targetRefName")?,
        title: text_field(&body, "title", StatusCode::BAD_REQUEST)?.into(),
        body: body["description"].as_str().unwrap_or_default().into(),
    };
    open::<Azure>(&forge, &new)
}

async fn update(State(forge): State<Shared>, repo: Repo<Azure>, body: Bytes) -> Answer {
    let body = json_body(&body)?;
    description_fits(&body)?;
    edit::<Azure>(&forge, repo.number()?, &body, |_| Ok(()))
}
