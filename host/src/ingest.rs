//! The public listener: Weave's webhook paths, authenticated, decided and recorded.
//!
//! `POST /promotion/{ns}/{pipeline}/{sourceEnv}`: a Flux event. In order: the pipeline
//! exists (404); the body is signed with the pipeline's `hmac-key` (401; unsigned events
//! only when the operator allowed them); it parses (400); its timestamp is recent (401);
//! it was not accepted before (409); it fits the pipeline (422) and is a successful
//! deployment (else 200 "ignored: …", so Flux does not retry). Then the promotions are
//! recorded durably and the answer is 202 with the promotion's status as `Location`.
//!
//! `POST /approval/{ns}/{pipeline}/{env}/{revision}`: approves a promotion waiting for it.
//! Unlike Weave (which signed an empty body, making the signature a fixed password), the
//! signed body names what is approved and when.

use crate::decide::{Decision, promotion_id};
use crate::event::FluxEvent;
use crate::promotion::PipelineRef;
use crate::record::{Approval, Phase, Promotion, StoreError, now_ms};
use crate::serve::Shared;
use crate::signature::verify;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

pub fn router(shared: Arc<Shared>) -> Router {
    let limit = shared.settings.body_limit;
    Router::new()
        .route("/promotion/{namespace}/{name}/{env}", post(promotion))
        .route(
            "/approval/{namespace}/{name}/{env}/{revision}",
            post(approval),
        )
        .layer(DefaultBodyLimit::max(limit))
        .with_state(shared)
}

/// A refusal: status, machine-readable result, human reason.
struct Answer {
    status: StatusCode,
    result: &'static str,
    reason: String,
}

impl Answer {
    fn new(status: StatusCode, result: &'static str, reason: impl Into<String>) -> Answer {
        Answer {
            status,
            result,
            reason: reason.into(),
        }
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            axum::Json(json!({"result": self.result, "reason": self.reason})),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, "5".parse().unwrap());
        }
        response
    }
}

/// Checks the signature with the key the pipeline's Secret holds for `env`'s events.
fn authenticate(
    shared: &Shared,
    namespace: &str,
    name: &str,
    env: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Answer> {
    let catalog = shared.catalog();
    let pipeline = catalog
        .pipeline(namespace, name)
        .ok_or_else(|| no_pipeline(namespace, name))?;
    let signature = headers.get("x-signature").and_then(|v| v.to_str().ok());
    let Some(secret_name) = pipeline.hmac_secret_for(env) else {
        if shared.settings.allow_unsigned {
            return Ok(());
        }
        return Err(Answer::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!(
                "pipeline {namespace}/{name} has no Secret with an hmac-key for events from {env} \
                 (spec.promotion.strategy.secretRef); unsigned events are refused unless the server \
                 runs with --allow-unsigned-events"
            ),
        ));
    };
    let Some(key) = catalog
        .secret(namespace, secret_name)
        .and_then(|s| s.hmac_key())
    else {
        tracing::error!(pipeline = %format!("{namespace}/{name}"), "Secret {namespace}/{secret_name} is missing or has no hmac-key; refusing events");
        return Err(Answer::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!(
                "pipeline {namespace}/{name}: Secret {secret_name} with an hmac-key is not available"
            ),
        ));
    };
    verify(signature, key, body)
        .map(|_| ())
        .map_err(|e| Answer::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string()))
}

/// Refuses events older than the window (or from too far in the future): a captured
/// event cannot be replayed later, and recent ones are caught by their digest.
fn check_age(shared: &Shared, timestamp: jiff::Timestamp) -> Result<(), Answer> {
    let now = jiff::Timestamp::now();
    let age_ms = now.as_millisecond() - timestamp.as_millisecond();
    let window = shared.settings.max_event_age;
    let skew = Duration::from_secs(60);
    if age_ms > window.as_millis() as i64 || -age_ms > skew.as_millis() as i64 {
        return Err(Answer::new(
            StatusCode::UNAUTHORIZED,
            "stale",
            format!(
                "event timestamp {timestamp} is outside the accepted window ({} old at most, {} ahead at most); \
                 refused as a possible replay",
                crate::runtime::limits::format_duration(window),
                crate::runtime::limits::format_duration(skew)
            ),
        ));
    }
    Ok(())
}

fn no_pipeline(namespace: &str, name: &str) -> Answer {
    Answer::new(
        StatusCode::NOT_FOUND,
        "not-found",
        format!("no pipeline {namespace}/{name}"),
    )
}

fn replayed() -> Answer {
    Answer::new(
        StatusCode::CONFLICT,
        "replay",
        "this event was already accepted; nothing changed",
    )
}

fn unavailable(e: StoreError) -> Answer {
    tracing::error!("cannot record event: {e}");
    Answer::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("event not accepted: {e}"),
    )
}

async fn promotion(
    State(shared): State<Arc<Shared>>,
    Path((namespace, name, env)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let span =
        tracing::info_span!("event", pipeline = %format!("{namespace}/{name}"), environment = %env);
    let answer = handle_promotion(&shared, &namespace, &name, &env, &headers, &body)
        .instrument(span.clone())
        .await;
    let (result, response) = match answer {
        Ok((result, response)) => (result, response),
        Err(a) => {
            span.in_scope(|| {
                tracing::info!(status = a.status.as_u16(), "event refused: {}", a.reason)
            });
            (a.result, a.into_response())
        }
    };
    shared.metrics.events.with_label_values(&[result]).inc();
    response
}

async fn handle_promotion(
    shared: &Shared,
    namespace: &str,
    name: &str,
    env: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(&'static str, Response), Answer> {
    authenticate(shared, namespace, name, env, headers, body)?;
    let event: FluxEvent = crate::event::parse(body)
        .map_err(|e| Answer::new(StatusCode::BAD_REQUEST, "invalid", e.to_string()))?;
    let timestamp = event
        .timestamp()
        .map_err(|e| Answer::new(StatusCode::BAD_REQUEST, "invalid", e.to_string()))?;
    check_age(shared, timestamp)?;
    let catalog = shared.catalog();
    let pipeline = catalog
        .pipeline(namespace, name)
        .ok_or_else(|| no_pipeline(namespace, name))?;
    let decision = shared.store.with_history(&pipeline.reference(), |history| {
        crate::decide::decide(pipeline, env, &event, history)
    });
    let intents = match decision {
        Decision::Reject(reason) => {
            return Err(Answer::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "rejected",
                reason.to_string(),
            ));
        }
        // A replay of an accepted event would be "already promoted": say what it is.
        // (New events are checked for replay atomically when they are recorded.)
        Decision::Ignore(_) if shared.store.seen(body).map_err(unavailable)? => {
            return Err(replayed());
        }
        Decision::Ignore(reason) => {
            tracing::info!("{reason}");
            let body = json!({"result": "ignored", "reason": reason.to_string()});
            return Ok((
                "ignored",
                (StatusCode::OK, axum::Json(body)).into_response(),
            ));
        }
        Decision::Promote(intents) => intents,
    };
    let now = now_ms();
    let records: Vec<Promotion> = intents
        .iter()
        .map(|intent| {
            let request = intent.request(pipeline, &event, 0);
            Promotion {
                id: intent.id.clone(),
                pipeline: intent.pipeline.clone(),
                source_environment: intent.source_env.clone(),
                target_environment: intent.target_env.clone(),
                version: intent.version.clone(),
                targets: intent.targets.clone(),
                app: request.app,
                strategy: intent.strategy.clone(),
                event: request.event,
                phase: if intent.manual {
                    Phase::WaitingApproval
                } else {
                    Phase::Pending
                },
                attempts: 0,
                last_error: None,
                outcome_url: None,
                outcome_details: None,
                created_at: now,
                updated_at: now,
                next_attempt_at: None,
                finished_at: None,
                approved_by: None,
            }
        })
        .collect();
    let accepted = match shared.store.accept(body, records.clone()).await {
        Ok(accepted) => accepted,
        Err(e @ StoreError::Mismatch { .. }) => {
            tracing::error!("{e}");
            return Err(Answer::new(StatusCode::CONFLICT, "conflict", e.to_string()));
        }
        Err(e) => return Err(unavailable(e)),
    };
    if accepted.replay {
        return Err(replayed());
    }
    shared.executor.wake();
    let promotions: Vec<_> = records
        .iter()
        .map(|p| RecordedPromotion {
            id: &p.id,
            target_environment: &p.target_environment,
            version: &p.version,
            phase: if accepted.created.contains(&p.id) {
                p.phase.as_str()
            } else {
                "existing"
            },
            status: format!("/promotions/{}", p.id),
        })
        .collect();
    for p in &records {
        tracing::info!(promotion = %p.id, target = %p.target_environment, version = %p.version, phase = p.phase.as_str(), "promotion recorded");
    }
    let location = format!("/promotions/{}", records[0].id);
    let body = AcceptedBody {
        result: "accepted",
        promotions,
    };
    let mut response = (StatusCode::ACCEPTED, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::LOCATION, location.parse().unwrap());
    Ok(("accepted", response))
}

/// The 202's body: what the event recorded, each with where its status is.
#[derive(serde::Serialize)]
struct AcceptedBody<'a> {
    result: &'static str,
    promotions: Vec<RecordedPromotion<'a>>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct RecordedPromotion<'a> {
    id: &'a str,
    target_environment: &'a str,
    version: &'a str,
    phase: &'static str,
    status: String,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApprovalBody {
    namespace: String,
    name: String,
    environment: String,
    revision: String,
    timestamp: String,
}

async fn approval(
    State(shared): State<Arc<Shared>>,
    Path((namespace, name, env, revision)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match handle_approval(&shared, &namespace, &name, &env, &revision, &headers, &body).await {
        Ok(response) => response,
        Err(a) => {
            tracing::info!(status = a.status.as_u16(), "approval refused: {}", a.reason);
            a.into_response()
        }
    }
}

async fn handle_approval(
    shared: &Shared,
    namespace: &str,
    name: &str,
    env: &str,
    revision: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, Answer> {
    // The key that signs events from the environment before `env` also approves
    // promotions into `env`.
    let source = {
        let catalog = shared.catalog();
        let pipeline = catalog
            .pipeline(namespace, name)
            .ok_or_else(|| no_pipeline(namespace, name))?;
        let position = pipeline.position(env).ok_or_else(|| {
            Answer::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "rejected",
                format!(
                    "pipeline {namespace}/{name}: environment {env:?} not found; have {}",
                    pipeline.environment_names().join(", ")
                ),
            )
        })?;
        if position == 0 {
            return Err(Answer::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "rejected",
                format!(
                    "pipeline {namespace}/{name}: {env} is the first environment; nothing is promoted into it"
                ),
            ));
        }
        pipeline.environments[position - 1].name.clone()
    };
    authenticate(shared, namespace, name, &source, headers, body)?;
    let approval: ApprovalBody = serde_json::from_slice(body).map_err(|e| {
        Answer::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("approval body must be JSON {{namespace, name, environment, revision, timestamp}}: {e}"),
        )
    })?;
    if (
        approval.namespace.as_str(),
        approval.name.as_str(),
        approval.environment.as_str(),
        approval.revision.as_str(),
    ) != (namespace, name, env, revision)
    {
        return Err(Answer::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            "approval body does not name the promotion in the path",
        ));
    }
    let timestamp: jiff::Timestamp = approval.timestamp.parse().map_err(|e| {
        Answer::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("approval timestamp: {e}"),
        )
    })?;
    check_age(shared, timestamp)?;
    let id = promotion_id(namespace, name, env, revision);
    let approval = Approval {
        pipeline: PipelineRef {
            namespace: namespace.to_string(),
            name: name.to_string(),
        },
        environment: env.to_string(),
        version: revision.to_string(),
        by: format!("key of events from {source}"),
    };
    match shared.store.approve(&id, &approval).await {
        Ok(p) => {
            tracing::info!(promotion = %p.id, "promotion approved");
            shared.executor.wake();
            let mut response = (
                StatusCode::OK,
                axum::Json(json!({"result": "approved", "id": p.id})),
            )
                .into_response();
            response.headers_mut().insert(
                header::LOCATION,
                format!("/promotions/{}", p.id).parse().unwrap(),
            );
            Ok(response)
        }
        Err(StoreError::NotFound(_)) => Err(Answer::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no promotion of {revision} into {env} for pipeline {namespace}/{name}"),
        )),
        Err(e @ (StoreError::NotWaiting { .. } | StoreError::Mismatch { .. })) => Err(Answer::new(
            StatusCode::CONFLICT,
            "not-waiting",
            e.to_string(),
        )),
        Err(e) => Err(unavailable(e)),
    }
}
