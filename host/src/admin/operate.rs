//! Operators steer promotions through the admin listener (JSON in, JSON out), each call
//! authorised in the namespace of the Pipeline it is about ([`super::auth`]):
//!
//! - `POST /promotions` `{namespace, pipeline, environment, version, reason?, rollback?}`:
//!   promote a chosen version now (`create`). The environment's approval rule applies
//!   unless the caller may also approve (`patch`). 201 with the record.
//! - `POST /promotions/{id}/{approve|retry|reject|abort}` `{reason?}` (`patch`): reject
//!   and abort need a reason. 200 with the record after the step.
//! - `POST /promotions/retry` `{namespace, pipeline, environment?}` (`patch`): every
//!   failed promotion of the pipeline (into one environment) runs again.
//! - `POST /pipelines/{ns}/{name}/{suspend|resume}` `{reason?}` (`patch`).
//! - `GET /pipelines/{ns}/{name}/history[?environment=]` (`list`): per environment, what
//!   arrived when, how, who approved or closed it, and the outcome.
//!
//! Every change is durable (journal fsync'd, or the API server's write) before the answer.
//! A promotion the caller may not read is answered as one that does not exist (404).

use super::auth::{Authenticated, Refusal as AuthRefusal, Verb};
use super::view;
use crate::decide::Refusal;
use crate::pipeline::Pipeline;
use crate::promotion::PipelineRef;
use crate::record::{Action, Approval, Phase, Promotion, Store, StoreError, now_ms};
use crate::serve::Shared;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// Longest version accepted (the Promotion CRD's limit).
pub const MAX_VERSION: usize = 256;
/// Longest reason accepted (the Promotion CRD's limit).
pub const MAX_REASON: usize = 1024;

/// A refusal with its status and a message naming the object.
pub struct Problem(StatusCode, String);

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"reason": self.1}))).into_response()
    }
}

/// A refusal of the caller (401/403/503), answered as the auth layer answers them.
pub enum Refused {
    Caller(AuthRefusal),
    Problem(Problem),
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Caller(r) => r.into_response(),
            Refused::Problem(p) => p.into_response(),
        }
    }
}

impl From<AuthRefusal> for Refused {
    fn from(r: AuthRefusal) -> Refused {
        Refused::Caller(r)
    }
}

impl<T: Into<Problem>> From<T> for Refused {
    fn from(p: T) -> Refused {
        Refused::Problem(p.into())
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Problem {
        let status = match &e {
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::NotWaiting { .. }
            | StoreError::WrongPhase { .. }
            | StoreError::Superseded { .. }
            | StoreError::Claimed { .. }
            | StoreError::Mismatch { .. } => StatusCode::CONFLICT,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        Problem(status, e.to_string())
    }
}

fn bad(message: String) -> Problem {
    Problem(StatusCode::BAD_REQUEST, message)
}

/// A text field: present when `required`, at most `max` characters, no control characters.
fn check_text(field: &str, value: Option<&str>, max: usize, required: bool) -> Result<(), Problem> {
    match value {
        None if required => Err(bad(format!("{field} is required and was empty"))),
        Some(v) if required && v.trim().is_empty() => {
            Err(bad(format!("{field} is required and was empty")))
        }
        None => Ok(()),
        Some(v) if v.chars().count() > max => Err(bad(format!(
            "{field} has {} characters; at most {max} are allowed",
            v.chars().count()
        ))),
        Some(v) if v.chars().any(char::is_control) => {
            Err(bad(format!("{field} {v:?} contains control characters")))
        }
        Some(_) => Ok(()),
    }
}

/// The Pipeline in force, or 404 naming it.
fn pipeline(shared: &Shared, namespace: &str, name: &str) -> Result<Pipeline, Problem> {
    shared
        .catalog()
        .pipeline(namespace, name)
        .cloned()
        .ok_or_else(|| {
            Problem(
                StatusCode::NOT_FOUND,
                format!("no Pipeline {namespace}/{name} is in force"),
            )
        })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PromoteBody {
    namespace: String,
    pipeline: String,
    environment: String,
    version: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    rollback: bool,
}

/// Reads a JSON body, refusing what does not parse with 400 naming the problem.
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|e| bad(format!("the request body is not valid: {e}")))
}

pub async fn promote(
    State(shared): State<Arc<Shared>>,
    who: Authenticated,
    bytes: axum::body::Bytes,
) -> Result<Response, Refused> {
    let req: PromoteBody = body(&bytes)?;
    who.require(Verb::Create, &req.namespace).await?;
    check_text("version", Some(&req.version), MAX_VERSION, true)?;
    // What Flux reports as a revision: a semver or a tag, a branch@sha1:…, a digest.
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._+@:/-".contains(c);
    if !req.version.chars().all(allowed) || req.version.starts_with('-') {
        return Err(bad(format!(
            "version {:?} may hold only letters, digits and . _ + @ : / - (not first)",
            req.version
        ))
        .into());
    }
    check_text("reason", req.reason.as_deref(), MAX_REASON, false)?;
    let pipeline = pipeline(&shared, &req.namespace, &req.pipeline)?;
    let admitted = shared
        .store
        .with_history(&pipeline.reference(), |history| {
            crate::decide::admit(
                &pipeline,
                &req.environment,
                &req.version,
                None,
                req.rollback,
                history,
            )
        })
        .map_err(refusal)?;
    let env = pipeline
        .environment(&req.environment)
        .expect("admit found the environment");
    let strategy = env
        .promotion
        .as_ref()
        .map(|p| p.strategy.clone())
        .unwrap_or_default();
    // The approval rule applies, unless the caller may approve too.
    let approver = admitted.manual && who.may(Verb::Patch, &req.namespace).await?;
    let by = who.caller.to_string();
    let now = now_ms();
    let phase = if shared.suspension(&pipeline).is_some() {
        Phase::Held
    } else if admitted.manual && !approver {
        Phase::WaitingApproval
    } else {
        Phase::Pending
    };
    let record = Promotion {
        id: admitted.id.clone(),
        pipeline: pipeline.reference(),
        source_environment: admitted.source_env.clone(),
        targets: env.targets.clone(),
        app: pipeline.app_ref.clone(),
        strategy,
        phase,
        created_at: now,
        updated_at: now,
        approved_by: approver.then(|| format!("{by} (who asked for it)")),
        cause: admitted.cause,
        round: admitted.round,
        requested_by: Some(by.clone()),
        reason: req.reason.clone(),
        ..Promotion::blank(&req.environment, &req.version)
    };
    // The record's "event" key is unique per request: the same request again (a client's
    // retry after a lost answer) finds the record instead of making a second.
    let key = format!("request {}", admitted.id);
    let accepted = shared.store.accept(key.as_bytes(), vec![record]).await?;
    if accepted.replay || accepted.created.is_empty() {
        return Err(Problem(
            StatusCode::CONFLICT,
            format!("promotion {} was recorded already", admitted.id),
        )
        .into());
    }
    tracing::info!(promotion = %admitted.id, caller = %by, cause = admitted.cause.as_str(), phase = phase.as_str(), "promotion requested by an operator");
    shared.executor.wake();
    let stored = shared.store.get(&admitted.id)?.ok_or_else(|| {
        Problem(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "promotion {} was recorded but cannot be read back",
                admitted.id
            ),
        )
    })?;
    Ok((StatusCode::CREATED, Json(view(&stored))).into_response())
}

/// A Pipeline's refusal of a request, with the status that says what kind it is.
fn refusal(r: Refusal) -> Problem {
    let status = match &r {
        Refusal::NoPipeline { .. } | Refusal::UnknownEnvironment { .. } => StatusCode::NOT_FOUND,
        Refusal::InProgress { .. }
        | Refusal::Failed { .. }
        | Refusal::AlreadyThere { .. }
        | Refusal::NeedsRollback { .. } => StatusCode::CONFLICT,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    Problem(status, r.to_string())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StepBody {
    #[serde(default)]
    reason: Option<String>,
}

/// The record `id`, when the caller may read it; else 404 as for no such promotion.
async fn readable(shared: &Shared, who: &Authenticated, id: &str) -> Result<Promotion, Refused> {
    let not_found = || Problem(StatusCode::NOT_FOUND, format!("no promotion {id}"));
    match shared.store.get(id)? {
        Some(p) if who.may(Verb::Get, &p.pipeline.namespace).await? => Ok(p),
        _ => Err(not_found().into()),
    }
}

pub async fn step(
    State(shared): State<Arc<Shared>>,
    who: Authenticated,
    Path((id, step)): Path<(String, String)>,
    bytes: axum::body::Bytes,
) -> Result<Response, Refused> {
    let req: StepBody = body(&bytes)?;
    check_text("reason", req.reason.as_deref(), MAX_REASON, false)?;
    let p = readable(&shared, &who, &id).await?;
    let ns = p.pipeline.namespace.clone();
    who.require(Verb::Patch, &ns).await?;
    let by = who.caller.to_string();
    let reason = || -> Result<String, Refused> {
        check_text("reason", req.reason.as_deref(), MAX_REASON, true)?;
        Ok(req.reason.clone().unwrap_or_default())
    };
    let action = match step.as_str() {
        "approve" => Action::Approve(Approval {
            pipeline: p.pipeline.clone(),
            environment: p.target_environment.clone(),
            version: p.version.clone(),
            by: by.clone(),
        }),
        "retry" => Action::Retry {
            by: by.clone(),
            approve_again: false,
        },
        "reject" => Action::Reject {
            by: by.clone(),
            reason: reason()?,
        },
        "abort" => Action::Abort {
            by: by.clone(),
            reason: reason()?,
        },
        other => {
            return Err(Problem(
                StatusCode::NOT_FOUND,
                format!("no step {other:?}: approve, retry, reject or abort"),
            )
            .into());
        }
    };
    let done = shared.store.act(&id, &ns, action).await?;
    tracing::info!(promotion = %id, caller = %by, step = %step, phase = done.phase.as_str(), "operator step");
    shared.executor.wake();
    Ok(Json(view(&done)).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryAllBody {
    namespace: String,
    pipeline: String,
    #[serde(default)]
    environment: Option<String>,
}

pub async fn retry_failed(
    State(shared): State<Arc<Shared>>,
    who: Authenticated,
    bytes: axum::body::Bytes,
) -> Result<Response, Refused> {
    let req: RetryAllBody = body(&bytes)?;
    who.require(Verb::Patch, &req.namespace).await?;
    let pipeline = pipeline(&shared, &req.namespace, &req.pipeline)?;
    if let Some(env) = &req.environment
        && pipeline.environment(env).is_none()
    {
        return Err(refusal(Refusal::UnknownEnvironment {
            pipeline: pipeline.to_string(),
            env: env.clone(),
            have: pipeline
                .environment_names()
                .into_iter()
                .map(String::from)
                .collect(),
        })
        .into());
    }
    let by = who.caller.to_string();
    let failed: Vec<Promotion> = records_of(
        &shared.store,
        &pipeline.reference(),
        req.environment.as_deref(),
    )?
    .into_iter()
    .filter(|p| p.phase == Phase::Failed)
    .filter(|p| {
        req.environment
            .as_ref()
            .is_none_or(|e| *e == p.target_environment)
    })
    .collect();
    let mut retried = Vec::new();
    for p in failed {
        match shared
            .store
            .act(
                &p.id,
                &req.namespace,
                Action::Retry {
                    by: by.clone(),
                    approve_again: false,
                },
            )
            .await
        {
            Ok(p) => retried.push(view(&p)),
            Err(StoreError::WrongPhase { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    shared.executor.wake();
    Ok(Json(json!({"retried": retried})).into_response())
}

/// Every record of `pipeline` (into `environment`, if given), newest first: read a page at
/// a time through the pipeline's own index, never the whole store.
fn records_of(
    store: &Store,
    pipeline: &PipelineRef,
    environment: Option<&str>,
) -> Result<Vec<Promotion>, StoreError> {
    let query = crate::record::Query {
        namespace: Some(pipeline.namespace.clone()),
        pipeline: Some(pipeline.name.clone()),
        environment: environment.map(String::from),
        ..Default::default()
    };
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store.page(&query, super::MAX_LIMIT, after.as_ref(), &|_| true)?;
        all.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(all),
        }
    }
}

pub async fn suspend(
    State(shared): State<Arc<Shared>>,
    who: Authenticated,
    Path((namespace, name, step)): Path<(String, String, String)>,
    bytes: axum::body::Bytes,
) -> Result<Response, Refused> {
    let req: StepBody = body(&bytes)?;
    check_text("reason", req.reason.as_deref(), MAX_REASON, false)?;
    who.require(Verb::Patch, &namespace).await?;
    // Kubernetes: the controller sets the Pipeline's spec.suspend for the caller, so the
    // caller must be allowed to patch the Pipeline too.
    if matches!(shared.store, Store::Resources(_)) {
        who.require(Verb::PatchPipelines, &namespace).await?;
    }
    let suspend = match step.as_str() {
        "suspend" => true,
        "resume" => false,
        other => {
            return Err(Problem(
                StatusCode::NOT_FOUND,
                format!("no step {other:?}: suspend or resume"),
            )
            .into());
        }
    };
    let pipeline = pipeline(&shared, &namespace, &name)?;
    let by = who.caller.to_string();
    match (&shared.store, shared.kube_client()) {
        (Store::Local(store), _) => {
            if !suspend && pipeline.suspend {
                return Err(Problem(
                    StatusCode::CONFLICT,
                    format!(
                        "Pipeline {pipeline} is suspended by its manifest (spec.suspend: true); \
                         set it to false there to resume it"
                    ),
                )
                .into());
            }
            let who = req
                .reason
                .as_ref()
                .map_or_else(|| by.clone(), |r| format!("{by}: {r}"));
            store
                .suspend(&pipeline.reference(), suspend.then_some(who))
                .await?;
        }
        (Store::Resources(_), Some(client)) => {
            let note = suspend.then(|| {
                req.reason
                    .as_ref()
                    .map_or_else(|| by.clone(), |r| format!("{by}: {r}"))
            });
            crate::cluster::source::Cluster::set_suspend(client, &namespace, &name, note)
                .await
                .map_err(|e| {
                    Problem(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("cannot set spec.suspend of Pipeline {namespace}/{name}: {e}"),
                    )
                })?;
        }
        (Store::Resources(_), None) => {
            return Err(Problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "no Kubernetes client to suspend the Pipeline with".into(),
            )
            .into());
        }
    }
    tracing::info!(pipeline = %pipeline, caller = %by, suspend, "pipeline {}", if suspend { "suspended" } else { "resumed" });
    shared.executor.wake();
    Ok(Json(json!({
        "pipeline": format!("{namespace}/{name}"),
        "suspended": suspend,
        "by": by,
    }))
    .into_response())
}

#[derive(Deserialize)]
pub struct HistoryQuery {
    environment: Option<String>,
}

pub async fn history(
    State(shared): State<Arc<Shared>>,
    who: Authenticated,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<HistoryQuery>,
) -> Result<Response, Refused> {
    who.require(Verb::List, &namespace).await?;
    let pipeline = pipeline(&shared, &namespace, &name)?;
    let names: Vec<String> = match &query.environment {
        Some(env) if pipeline.environment(env).is_none() => {
            return Err(refusal(Refusal::UnknownEnvironment {
                pipeline: pipeline.to_string(),
                env: env.clone(),
                have: pipeline
                    .environment_names()
                    .into_iter()
                    .map(String::from)
                    .collect(),
            })
            .into());
        }
        Some(env) => vec![env.clone()],
        None => pipeline
            .environment_names()
            .into_iter()
            .skip(1)
            .map(String::from)
            .collect(),
    };
    let records = records_of(
        &shared.store,
        &pipeline.reference(),
        query.environment.as_deref(),
    )?;
    let environments: Vec<Value> = names
        .iter()
        .map(|env| {
            let current = shared
                .store
                .with_history(&pipeline.reference(), |h| h.current(env));
            let entries: Vec<Value> = records
                .iter()
                .filter(|p| p.target_environment == *env)
                .map(entry)
                .collect();
            json!({
                "name": env,
                "current": current.map(|c| json!({"version": c.version, "id": c.id})),
                "promotions": entries,
            })
        })
        .collect();
    Ok(Json(json!({
        "pipeline": format!("{namespace}/{name}"),
        "suspended": shared.suspension(&pipeline),
        "environments": environments,
    }))
    .into_response())
}

/// One line of history: the record in the words of `promoter history`.
fn entry(p: &Promotion) -> Value {
    let how = if p.retried_by.is_some() {
        format!("{}, retried", p.cause.as_str())
    } else {
        p.cause.as_str().to_string()
    };
    json!({
        "id": p.id,
        "version": p.version,
        "arrived": crate::record::rfc3339(p.created_at),
        "how": how,
        "requestedBy": p.requested_by,
        "reason": p.reason,
        "approvedBy": p.approved_by,
        "retriedBy": p.retried_by,
        "closedBy": p.closed_by,
        "closeReason": p.close_reason,
        "phase": p.phase.as_str(),
        "attempts": p.attempts,
        "finished": p.finished_at.map(crate::record::rfc3339),
        "outcome": p.outcome_url.clone().or_else(|| p.last_error.clone()),
    })
}
