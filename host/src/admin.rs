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

/// Most records one page may ask for; the default is [`DEFAULT_LIMIT`].
pub const MAX_LIMIT: usize = 1000;
pub const DEFAULT_LIMIT: usize = 100;
/// How long a `continue` token is good for.
const CONTINUE_TTL_MS: u64 = 3_600_000;

/// A refusal of a query parameter: 400 naming it.
fn bad_parameter(name: &str, why: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"reason": format!("parameter {name}: {why}"), "parameter": name})),
    )
        .into_response()
}

/// What a `continue` token holds: where the last page stopped, for which query, when.
#[derive(serde::Serialize, serde::Deserialize)]
struct Continue {
    at: u64,
    id: String,
    query: crate::record::Query,
    issued: u64,
}

/// `base64url(JSON).checksum`: a position, not a capability or a secret — anyone can make
/// one, and every record of the next page is checked against the caller's rights again;
/// a cursor names only a record the caller was shown, or a millisecond. The checksum
/// catches a token cut or garbled on its way; the issue time, a token kept too long.
fn continue_token(c: &Continue) -> String {
    use base64::Engine as _;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(c).expect("a cursor serialises"));
    format!("{payload}.{}", checksum(&payload))
}

fn checksum(payload: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("promoter-continue:{payload}"));
    hex::encode(&digest[..8])
}

fn read_continue(
    token: &str,
    query: &crate::record::Query,
) -> Result<crate::record::Cursor, String> {
    use base64::Engine as _;
    let (payload, sum) = token
        .rsplit_once('.')
        .ok_or("not a token this server issued")?;
    if checksum(payload) != sum {
        return Err("not a token this server issued (its checksum does not match)".into());
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| "not a token this server issued")?;
    let c: Continue =
        serde_json::from_slice(&bytes).map_err(|_| "not a token this server issued")?;
    if c.query != *query {
        return Err("issued for other filters; ask again with the same ones, or start over without continue".into());
    }
    if crate::record::now_ms().saturating_sub(c.issued) > CONTINUE_TTL_MS {
        return Err("expired (tokens last an hour); list again from the start".into());
    }
    Ok((c.at, c.id))
}

/// `GET /promotions?namespace=&pipeline=&environment=&phase=&version=&limit=&continue=`:
/// newest first, `limit` (default 100, at most 1000) per page, `continue` from the last
/// page's answer. Only namespaces where the caller may `list` promotions are shown; a
/// namespace asked for without the right is a 403.
async fn list(
    State(shared): State<Arc<Shared>>,
    who: Authenticated,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, auth::Refusal> {
    let mut query = crate::record::Query::default();
    let (mut limit, mut token) = (DEFAULT_LIMIT, None);
    for (name, value) in &params {
        match name.as_str() {
            "namespace" => query.namespace = Some(value.clone()),
            "pipeline" => match value.split_once('/') {
                Some((ns, name)) => {
                    if query.namespace.as_ref().is_some_and(|given| given != ns) {
                        return Ok(bad_parameter(
                            "pipeline",
                            format!(
                                "{value} is not in namespace {}",
                                query.namespace.as_deref().unwrap_or("")
                            ),
                        ));
                    }
                    query.namespace = Some(ns.to_string());
                    query.pipeline = Some(name.to_string());
                }
                None => query.pipeline = Some(value.clone()),
            },
            "environment" => query.environment = Some(value.clone()),
            "version" => query.version = Some(value.clone()),
            "phase" => match crate::record::Phase::parse(value) {
                Some(phase) => query.phase = Some(phase),
                None => {
                    let all: Vec<&str> = crate::record::Phase::ALL
                        .iter()
                        .map(|p| p.as_str())
                        .collect();
                    return Ok(bad_parameter(
                        "phase",
                        format!("{value:?} is not one of {}", all.join(", ")),
                    ));
                }
            },
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => limit = n,
                _ => {
                    return Ok(bad_parameter(
                        "limit",
                        format!("{value:?} is not a number from 1 to {MAX_LIMIT}"),
                    ));
                }
            },
            "continue" => token = Some(value.clone()),
            other => {
                return Ok(bad_parameter(other, "unknown; known are namespace, pipeline, environment, phase, version, limit and continue".into()));
            }
        }
    }
    let after = match &token {
        Some(t) => match read_continue(t, &query) {
            Ok(cursor) => Some(cursor),
            Err(why) => return Ok(bad_parameter("continue", why)),
        },
        None => None,
    };
    if let Some(ns) = &query.namespace {
        who.require(Verb::List, ns).await?;
    }
    let namespaces = match &query.namespace {
        Some(ns) => [ns.clone()].into(),
        None => shared.store.namespaces(),
    };
    let readable = who.allowed_in(Verb::List, namespaces).await?;
    let page = match shared
        .store
        .page(&query, limit, after.as_ref(), &|ns| readable.contains(ns))
    {
        Ok(page) => page,
        Err(e) => return Ok((StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()),
    };
    let shown: Vec<Value> = page.items.iter().map(view).collect();
    let next = page.next.map(|(at, id)| {
        continue_token(&Continue {
            at,
            id,
            query: query.clone(),
            issued: crate::record::now_ms(),
        })
    });
    Ok(axum::Json(json!({"promotions": shown, "continue": next})).into_response())
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
