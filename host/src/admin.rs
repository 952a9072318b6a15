//! The internal listener: metrics, health and the promotions' status.

use crate::record::{Promotion, rfc3339};
use crate::serve::Shared;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::sync::Arc;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/promotions", get(list))
        .route("/promotions/{id}", get(show))
        .with_state(shared)
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        shared.metrics.render(),
    )
        .into_response()
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    match shared.store.list() {
        Ok(_) => (StatusCode::OK, "ready").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}")).into_response(),
    }
}

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

async fn list(State(shared): State<Arc<Shared>>) -> Response {
    match shared.store.list() {
        Ok(all) => axum::Json(json!({"promotions": all.iter().map(view).collect::<Vec<_>>()}))
            .into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

async fn show(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match shared.store.get(&id) {
        Ok(Some(p)) => axum::Json(view(&p)).into_response(),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"reason": format!("no promotion {id}")})),
        )
            .into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}
