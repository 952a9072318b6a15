//! Metrics of the Kubernetes API requests: a layer around kube's HTTP client that times
//! each request until its response headers and counts it by verb, resource and code
//! (`promoter_kubernetes_request_duration_seconds`). The labels come from the path, so
//! their values are the handful of resources Promoter uses, never object names.

use http::{Request, Response};
use prometheus::HistogramVec;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

#[derive(Clone)]
pub struct Measured<S> {
    inner: S,
    requests: HistogramVec,
    promotions: PromotionFeed,
}

/// Since when the lists and watches of Promotions have gone unanswered (None: the last one
/// was answered with success). kube-client retries a 429, 503 or 504 itself, below this
/// layer, so a watch stuck on an unavailable API server shows no error to the watcher:
/// it shows here, as a request asked long ago and still not answered.
pub type PromotionFeed = std::sync::Arc<std::sync::Mutex<Option<Instant>>>;

/// The layer for `kube::client::ClientBuilder::with_layer`.
pub struct Measure {
    pub requests: HistogramVec,
    pub promotions: PromotionFeed,
}

impl<S> tower::Layer<S> for Measure {
    type Service = Measured<S>;
    fn layer(&self, inner: S) -> Measured<S> {
        Measured {
            inner,
            requests: self.requests.clone(),
            promotions: self.promotions.clone(),
        }
    }
}

impl<S, B, R> tower::Service<Request<B>> for Measured<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (verb, resource) = describe(
            request.method(),
            request.uri().path(),
            request.uri().query(),
        );
        let requests = self.requests.clone();
        let feed = (resource == "promotions.promoter.dev" && matches!(verb, "list" | "watch"))
            .then(|| self.promotions.clone());
        if let Some(feed) = &feed {
            feed.lock().unwrap().get_or_insert_with(Instant::now);
        }
        let started = Instant::now();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            let code = match &answer {
                Ok(response) => response.status().as_u16().to_string(),
                Err(_) => "error".to_string(),
            };
            if let Some(feed) = feed
                && answer.as_ref().is_ok_and(|r| r.status().is_success())
            {
                *feed.lock().unwrap() = None;
            }
            requests
                .with_label_values(&[verb, &resource, &code])
                .observe(started.elapsed().as_secs_f64());
            answer
        })
    }
}

/// The Kubernetes verb and the resource (`promotions.promoter.dev`, `secrets`,
/// `promotions.promoter.dev/status`) of a request to the API server.
fn describe(method: &http::Method, path: &str, query: Option<&str>) -> (&'static str, String) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return (verb(method, false, query), "other".to_string()),
    };
    let rest = match rest {
        ["namespaces", _ns, resource, more @ ..] => {
            let mut r = vec![*resource];
            r.extend_from_slice(more);
            r
        }
        other => other.to_vec(),
    };
    let Some(resource) = rest.first() else {
        return (verb(method, false, query), "other".to_string());
    };
    let mut name = if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    };
    if let Some(sub) = rest.get(2) {
        name = format!("{name}/{sub}");
    }
    (verb(method, rest.len() == 1, query), name)
}

fn verb(method: &http::Method, collection: bool, query: Option<&str>) -> &'static str {
    let watch = query.is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    match *method {
        http::Method::GET if watch => "watch",
        http::Method::GET if collection => "list",
        http::Method::GET => "get",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn requests_are_named_by_verb_and_resource_never_by_object() {
        let cases = [
            (
                Method::GET,
                "/apis/promoter.dev/v1alpha1/promotions",
                Some("labelSelector=x&watch=true"),
                "watch",
                "promotions.promoter.dev",
            ),
            (
                Method::GET,
                "/apis/promoter.dev/v1alpha1/promotions",
                None,
                "list",
                "promotions.promoter.dev",
            ),
            (
                Method::PUT,
                "/apis/promoter.dev/v1alpha1/namespaces/team-a/promotions/podinfo-prod-0123/status",
                None,
                "update",
                "promotions.promoter.dev/status",
            ),
            (
                Method::POST,
                "/apis/promoter.dev/v1alpha1/namespaces/team-a/promotions",
                None,
                "create",
                "promotions.promoter.dev",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/flux-system/secrets/podinfo-events",
                None,
                "get",
                "secrets",
            ),
            (
                Method::GET,
                "/api/v1/namespaces",
                None,
                "list",
                "namespaces",
            ),
            (
                Method::PATCH,
                "/apis/pipelines.weave.works/v1alpha1/namespaces/a/pipelines/p/status",
                None,
                "patch",
                "pipelines.pipelines.weave.works/status",
            ),
            (
                Method::POST,
                "/apis/authentication.k8s.io/v1/tokenreviews",
                None,
                "create",
                "tokenreviews.authentication.k8s.io",
            ),
            (Method::GET, "/version", None, "get", "other"),
        ];
        for (method, path, query, verb, resource) in cases {
            assert_eq!(
                describe(&method, path, query),
                (verb, resource.to_string()),
                "{method} {path}"
            );
        }
    }
}
