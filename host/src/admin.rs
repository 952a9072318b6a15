//! The internal listener: metrics and health, open; the promotions' status, for callers
//! [`auth`] established, each shown only what they may read:
//!
//! - `GET /healthz`, `GET /readyz`, `GET /metrics`: open (probes, Prometheus).
//! - `GET /promotions[?namespace=NS]`: the promotions of the namespaces where the caller
//!   may `list` promotions (403 naming the namespace when one is asked for and not
//!   allowed).
//! - `GET /promotions/{id}`: needs `get` in the promotion's namespace; one the caller may
//!   not read is answered exactly as one that does not exist (404), so ids do not tell
//!   whether another tenant's promotion exists.
//! - anything else: authenticated first, then 404.

pub mod auth;
pub mod operate;

use crate::record::{Promotion, rfc3339};
use crate::serve::Shared;
use auth::{Auth, Authenticated, Verb};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::sync::Arc;

pub fn router(shared: Arc<Shared>, auth: Auth) -> Router {
    let open = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    // Every other route, and the fallback, is behind the auth layer.
    let guarded = Router::new()
        .route("/promotions", get(list).post(operate::promote))
        .route("/promotions/retry", post(operate::retry_failed))
        .route("/promotions/{id}", get(show))
        .route("/promotions/{id}/{step}", post(operate::step))
        .route(
            "/pipelines/{namespace}/{name}/history",
            get(operate::history),
        )
        .route(
            "/pipelines/{namespace}/{name}/{step}",
            post(operate::suspend),
        )
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(axum::middleware::from_fn(json_only))
        .layer(axum::middleware::from_fn_with_state(
            auth,
            auth::authenticate,
        ));
    open.merge(guarded).with_state(shared)
}

/// Every change is asked for with `Content-Type: application/json`, which a browser sends
/// across origins only after a CORS preflight this listener never grants: a page the
/// operator visits cannot post a form or a `text/plain` body to steer promotions (CSRF).
async fn json_only(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if request.method() != axum::http::Method::GET && !json {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            axum::Json(json!({"reason": "send the request with Content-Type: application/json"})),
        )
            .into_response();
    }
    next.run(request).await
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let waiting = shared.store.waiting();
    let metrics = &shared.metrics;
    metrics.approvals_waiting.set(waiting.count as i64);
    let waited = waiting
        .oldest_created_at
        .map_or(0, |at| crate::record::now_ms().saturating_sub(at));
    metrics.oldest_approval_wait.set(waited as f64 / 1000.0);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        shared.metrics.render(),
    )
        .into_response()
}

/// Ready to take events: not draining, and the store can record them.
async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: draining").into_response();
    }
    match shared.store.ready() {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}")).into_response(),
    }
}

/// Alive: the worker loop and the local store's writer thread go round.
async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    let worker = shared.executor.since_heartbeat();
    let problem = if worker > WORKER_SILENCE {
        Some(format!(
            "the promotion worker has not run for {}s",
            worker.as_secs()
        ))
    } else {
        shared.store.alive().err()
    };
    match problem {
        None => (StatusCode::OK, "ok").into_response(),
        Some(p) => (StatusCode::SERVICE_UNAVAILABLE, p).into_response(),
    }
}

/// A worker loop silent this long (it goes round at least every second) is dead or stuck.
const WORKER_SILENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// A promotion as the API shows it: the record with readable times.
pub fn view(p: &Promotion) -> Value {
    let mut v = serde_json::to_value(p).expect("records serialise");
    let obj = v.as_object_mut().expect("records are objects");
    for key in ["createdAt", "updatedAt", "nextAttemptAt", "finishedAt"] {
        if let Some(ms) = obj.get(key).and_then(Value::as_u64) {
            obj.insert(key.to_string(), Value::String(rfc3339(ms)));
        }
    }
    // The strategy's configuration may hold URLs with tokens in them; the status API
    // shows which plugin ran, not how it was configured.
    if let Some(strategy) = obj.get_mut("strategy").and_then(Value::as_object_mut) {
        strategy.remove("config");
    }
    v
}

#[derive(serde::Deserialize)]
struct ListQuery {
    namespace: Option<String>,
}

async fn list(
    State(shared): State<Arc<Shared>>,
    who: Authenticated,
    Query(query): Query<ListQuery>,
) -> Result<Response, auth::Refusal> {
    let mut all = match shared.store.list() {
        Ok(all) => all,
        Err(e) => return Ok((StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()),
    };
    if let Some(ns) = &query.namespace {
        who.require(Verb::List, ns).await?;
        all.retain(|p| p.pipeline.namespace == *ns);
    }
    let namespaces = all.iter().map(|p| p.pipeline.namespace.clone()).collect();
    let readable = who.allowed_in(Verb::List, namespaces).await?;
    let shown: Vec<Value> = all
        .iter()
        .filter(|p| readable.contains(&p.pipeline.namespace))
        .map(view)
        .collect();
    Ok(axum::Json(json!({"promotions": shown})).into_response())
}

async fn show(
    State(shared): State<Arc<Shared>>,
    who: Authenticated,
    Path(id): Path<String>,
) -> Result<Response, auth::Refusal> {
    let not_found = || {
        (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"reason": format!("no promotion {id}")})),
        )
            .into_response()
    };
    match shared.store.get(&id) {
        Ok(Some(p)) if who.may(Verb::Get, &p.pipeline.namespace).await? => {
            Ok(axum::Json(view(&p)).into_response())
        }
        // Not readable by this caller: the same answer as no such promotion.
        Ok(_) => Ok(not_found()),
        Err(e) => Ok((StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()),
    }
}
