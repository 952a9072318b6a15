//! The public listener: Weave's webhook paths, authenticated, decided and recorded.
//!
//! `POST /promotion/{ns}/{pipeline}/{sourceEnv}`: a Flux event. In order: the body is
//! signed with the `hmac-key` of the Secret `sourceEnv`'s secretRef names (401; unsigned
//! events only for an environment without one, when the operator allowed them); it parses
//! (400); its timestamp is recent (401); it was not accepted before (409); it fits the
//! pipeline (422), in strict mode for a version promoted into `sourceEnv` (422, rule 6 of
//! `decide.rs`), and is a successful deployment (else 200 "ignored: …", so Flux does not
//! retry). Then the promotions are recorded durably and the answer is 202 with the
//! promotion's status as `Location`.
//!
//! `POST /approval/{ns}/{pipeline}/{env}/{revision}`: approves a promotion waiting for it,
//! signed with the key of the Secret `env`'s approvalSecretRef names — never an event key
//! (a Pipeline where one equals the other is refused at load). Unlike Weave (which signed
//! an empty body, making the signature a fixed password), the signed body names what is
//! approved and when. The record says which Secret's key approved it.
//!
//! Authentication comes first, and every refusal before it — no such pipeline or
//! environment, no key configured, the Secret missing, a bad signature — is the same 401,
//! byte for byte ([`unauthorized`]): an unauthenticated caller learns no pipeline,
//! environment or Secret name. The reason goes to the log.

use crate::decide::{Decision, SourcePromotion, promotion_id};
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

/// The one answer to every caller who did not authenticate, whatever the reason: no such
/// pipeline or environment, no key configured, its Secret missing, a bad or missing
/// signature. Byte for byte the same, so that an unauthenticated caller learns no name;
/// the reason is in the server's log.
fn unauthorized() -> Answer {
    Answer::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "not authenticated: the body must be signed (X-Signature: sha256=<hex hmac>) with the \
         key this path takes; the server's log says why this request was refused",
    )
}

/// What a request to `/…/{ns}/{name}/{env}` is authenticated as.
#[derive(Clone, Copy)]
enum Signer<'a> {
    /// A Flux event from `env`: the key of the Secret `env`'s secretRef names.
    Events(&'a str),
    /// An approval of a promotion into `env`: the key of the Secret its
    /// approvalSecretRef names, which no event key may equal.
    Approvals(&'a str),
}

/// Who signed a request: the Secret whose key verified it (`None`: an unsigned event the
/// operator allowed).
struct Authenticated {
    secret: Option<String>,
}

/// Checks the signature with the key `signer` takes in this pipeline. Every refusal is
/// [`unauthorized`]; what was wrong, with the pipeline and environment, goes to the log.
fn authenticate(
    shared: &Shared,
    namespace: &str,
    name: &str,
    signer: Signer<'_>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Authenticated, Answer> {
    let signature = headers.get("x-signature").and_then(|v| v.to_str().ok());
    let refuse = |why: String| {
        // The same work as a real check, so that timing does not tell either.
        let _ = verify(signature, b"no key: the request is refused", body);
        let env = match signer {
            Signer::Events(env) | Signer::Approvals(env) => env,
        };
        tracing::warn!(pipeline = %format!("{namespace}/{name}"), environment = %env, "refused before authentication: {why}");
        unauthorized()
    };
    let catalog = shared.catalog();
    let Some(pipeline) = catalog.pipeline(namespace, name) else {
        return Err(refuse(format!(
            "no Pipeline {namespace}/{name} is in force"
        )));
    };
    let (env, secret_name) = match signer {
        Signer::Events(env) => (env, pipeline.hmac_secret_for(env)),
        Signer::Approvals(env) => (env, pipeline.approval_secret_for(env)),
    };
    if pipeline.position(env).is_none() {
        return Err(refuse(format!(
            "pipeline {namespace}/{name} has no environment {env:?}; have {}",
            pipeline.environment_names().join(", ")
        )));
    }
    let Some(secret_name) = secret_name else {
        return match signer {
            Signer::Events(_) if shared.settings.allow_unsigned => {
                Ok(Authenticated { secret: None })
            }
            Signer::Events(_) => Err(refuse(format!(
                "pipeline {namespace}/{name} has no Secret with an hmac-key for events from {env} \
                 (secretRef); unsigned events are refused unless the server runs with \
                 --allow-unsigned-events"
            ))),
            Signer::Approvals(_) if pipeline.position(env) == Some(0) => Err(refuse(format!(
                "{env} is the first environment of pipeline {namespace}/{name}; nothing is \
                 promoted into it, so nothing is approved"
            ))),
            Signer::Approvals(_) => Err(refuse(format!(
                "pipeline {namespace}/{name} has no approval key for promotions into {env} \
                 (approvalSecretRef in that environment's promotion or the pipeline's): its \
                 promotions are approved only with the promoter.dev/approved annotation on \
                 the Promotion (Kubernetes mode), never over the public listener; give the \
                 environment an approvalSecretRef whose key no event key equals to approve \
                 over it"
            ))),
        };
    };
    let Some(key) = catalog
        .secret(namespace, secret_name)
        .and_then(|s| s.hmac_key())
    else {
        return Err(refuse(format!(
            "Secret {namespace}/{secret_name} is missing or has no hmac-key"
        )));
    };
    match verify(signature, key, body) {
        Ok(_) => Ok(Authenticated {
            secret: Some(secret_name.to_string()),
        }),
        Err(e) => Err(refuse(format!("{e} (Secret {namespace}/{secret_name})"))),
    }
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
        tracing::info_span!("event", pipeline = %Named(&namespace, &name), environment = %env);
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
    // Only an authenticated event names a series (authentication found its Pipeline in
    // force): the path is the sender's to choose, and an unauthenticated caller must not
    // learn from /metrics whether the Pipeline it guessed exists.
    let pipeline = match result {
        "unauthorized" => String::new(),
        _ => format!("{namespace}/{name}"),
    };
    shared
        .metrics
        .events
        .with_label_values(&[pipeline.as_str(), result])
        .inc();
    response
}

/// `namespace/name`, written where it is shown (a log line) rather than built for each
/// request.
struct Named<'a>(&'a str, &'a str);

impl std::fmt::Display for Named<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.0, self.1)
    }
}

async fn handle_promotion(
    shared: &Shared,
    namespace: &str,
    name: &str,
    env: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(&'static str, Response), Answer> {
    authenticate(shared, namespace, name, Signer::Events(env), headers, body)?;
    let event: FluxEvent = crate::event::parse(body)
        .map_err(|e| Answer::new(StatusCode::BAD_REQUEST, "invalid", e.to_string()))?;
    let timestamp = event
        .timestamp()
        .map_err(|e| Answer::new(StatusCode::BAD_REQUEST, "invalid", e.to_string()))?;
    check_age(shared, timestamp)?;
    let catalog = shared.catalog();
    let Some(pipeline) = catalog.pipeline(namespace, name) else {
        // Authenticated a moment ago; the Pipeline has gone since.
        tracing::warn!("pipeline {namespace}/{name} is no longer in force");
        return Err(unauthorized());
    };
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
        // (New events are checked for replay atomically when they are recorded.) An event
        // that is no successful deployment was never accepted: no replay to look for.
        Decision::Ignore(reason)
            if !reason.about_the_event_alone()
                && shared.store.seen(body).map_err(unavailable)? =>
        {
            return Err(replayed());
        }
        Decision::Ignore(reason) => {
            // Flux forwards every reconciliation its Alert matches: those that are no
            // deployment are counted (promoter_events_received_total{result="ignored"})
            // and logged at debug; an ignored version is news, logged at info.
            if reason.about_the_event_alone() {
                tracing::debug!("{reason}");
            } else {
                tracing::info!("{reason}");
            }
            let body = json!({"result": "ignored", "reason": reason.to_string()});
            return Ok((
                "ignored",
                (StatusCode::OK, axum::Json(body)).into_response(),
            ));
        }
        Decision::Retry(failed) => {
            check_source(shared, pipeline, env, &event)?;
            return retry_failed(shared, pipeline, env, body, failed).await;
        }
        Decision::Promote(intents) => intents,
    };
    check_source(shared, pipeline, env, &event)?;
    let suspended = shared.suspension(pipeline).is_some();
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
                phase: if suspended {
                    Phase::Held
                } else if intent.manual {
                    Phase::WaitingApproval
                } else {
                    Phase::Pending
                },
                created_at: now,
                updated_at: now,
                ..Promotion::blank(&intent.target_env, &intent.version)
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

/// An event for a version whose promotion failed: the promotion runs again (same id, a
/// new count of attempts), once per event — the event is recorded first, so a replay of
/// it is refused as one.
async fn retry_failed(
    shared: &Shared,
    pipeline: &crate::pipeline::Pipeline,
    env: &str,
    body: &[u8],
    failed: crate::decide::Latest,
) -> Result<(&'static str, Response), Answer> {
    // Local mode keeps the event's digest, so a replay is refused as one. Kubernetes mode
    // keeps digests on the Promotions an event creates, and a retry creates none: a
    // replay meets the promotion running or done (ignored), or failed once more.
    if let crate::record::Store::Local(store) = &shared.store {
        let accepted = store.accept(body, Vec::new()).await.map_err(unavailable)?;
        if accepted.replay {
            return Err(replayed());
        }
    }
    let by = format!("event from {env}");
    // An event is no approval: into a manual environment, the retry waits for one again.
    let manual = pipeline
        .next_environment(env)
        .and_then(|e| e.promotion.as_ref())
        .is_some_and(|p| p.manual);
    let retry = crate::record::Action::Retry {
        by,
        approve_again: manual,
    };
    match shared
        .store
        .act(&failed.id, &pipeline.namespace, retry)
        .await
    {
        Ok(p) => {
            tracing::info!(promotion = %p.id, "failed promotion retried by an event");
            shared.executor.wake();
            let body = json!({
                "result": "retried",
                "promotions": [{
                    "id": p.id, "targetEnvironment": p.target_environment,
                    "version": p.version, "phase": p.phase.as_str(),
                    "status": format!("/promotions/{}", p.id),
                }],
            });
            let mut response = (StatusCode::ACCEPTED, axum::Json(body)).into_response();
            response.headers_mut().insert(
                header::LOCATION,
                format!("/promotions/{}", p.id).parse().unwrap(),
            );
            Ok(("retried", response))
        }
        // Retried meanwhile by someone else.
        Err(e @ StoreError::WrongPhase { .. }) => {
            let body = json!({"result": "ignored", "reason": format!("ignored: {e}")});
            Ok((
                "ignored",
                (StatusCode::OK, axum::Json(body)).into_response(),
            ))
        }
        Err(e) => Err(unavailable(e)),
    }
}

/// Strict mode (`--require-promoted-source`, rule 6): the event's version was promoted
/// into the environment it comes from, whatever it then asks for (a new promotion, or a
/// failed one run again).
fn check_source(
    shared: &Shared,
    pipeline: &crate::pipeline::Pipeline,
    env: &str,
    event: &FluxEvent,
) -> Result<(), Answer> {
    if !shared.settings.require_promoted_source {
        return Ok(());
    }
    let version = event.revision().unwrap_or_default();
    let source = source_promotion(shared, pipeline, env, version);
    crate::decide::check_promoted_source(pipeline, env, version, source).map_err(|reason| {
        Answer::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "rejected",
            reason.to_string(),
        )
    })
}

/// Rule 6's input: what the records say of the promotion of `version` into `env` (its
/// newest round; any round that succeeded allows it).
fn source_promotion(
    shared: &Shared,
    pipeline: &crate::pipeline::Pipeline,
    env: &str,
    version: &str,
) -> SourcePromotion {
    let latest = shared
        .store
        .with_history(&pipeline.reference(), |h| h.latest(env, version));
    match latest {
        None => SourcePromotion::Never,
        Some(l) if l.succeeded => SourcePromotion::Allowed,
        Some(l) => match l.phase {
            Phase::Pending | Phase::Running | Phase::Succeeded | Phase::Failed => {
                SourcePromotion::Allowed
            }
            Phase::Requested
            | Phase::WaitingApproval
            | Phase::Refused
            | Phase::Held
            | Phase::Rejected
            | Phase::Aborted
            | Phase::Superseded => SourcePromotion::NotAllowed(l.phase.as_str().to_string()),
        },
    }
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
    let signed = authenticate(
        shared,
        namespace,
        name,
        Signer::Approvals(env),
        headers,
        body,
    )?;
    // Approvals are always signed: `Signer::Approvals` never lets an unsigned one through.
    let secret = signed.secret.unwrap_or_default();
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
    let pipeline = PipelineRef {
        namespace: namespace.to_string(),
        name: name.to_string(),
    };
    // The version's last round: a rollback to a version promoted before is a record of
    // its own (round 2, 3, …), and only the last round can be waiting.
    let id = shared
        .store
        .with_history(&pipeline, |h| h.latest(env, revision))
        .map(|latest| latest.id)
        .unwrap_or_else(|| promotion_id(namespace, name, env, revision));
    let approval = Approval {
        pipeline,
        environment: env.to_string(),
        version: revision.to_string(),
        by: format!("key {namespace}/{secret}"),
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
        Err(e @ StoreError::Superseded { .. }) => Err(Answer::new(
            StatusCode::CONFLICT,
            "superseded",
            e.to_string(),
        )),
        Err(
            e @ (StoreError::NotWaiting { .. }
            | StoreError::Mismatch { .. }
            | StoreError::WrongPhase { .. }),
        ) => Err(Answer::new(
            StatusCode::CONFLICT,
            "not-waiting",
            e.to_string(),
        )),
        Err(e) => Err(unavailable(e)),
    }
}
