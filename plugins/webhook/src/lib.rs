//! Promoter's default `webhook` strategy: POSTs each promotion as JSON to a URL.
//!
//! The request carries `Content-Type: application/json`, `Idempotency-Key: <request id>`
//! (stable across retries), `User-Agent: promoter-webhook/<version>`, the configured extra
//! headers and, when `secretRef` is set, `X-Signature: sha256=<hex HMAC-SHA256 of the body>`
//! computed by the host with the key bound under the Secret's name: the scheme of Flux's
//! `generic-hmac` provider, so receivers written for Flux verify it unchanged.
//!
//! Answers: 2xx is done; 408, 429 and 5xx are retried (honouring a `Retry-After` given in
//! seconds; an HTTP-date is ignored and the host's backoff applies); other statuses fail for
//! good with the status and the start of the body. Timeouts and connection failures are
//! retried; a refusal by the host's egress policy is not.

mod config;

use std::collections::BTreeMap;

use promoter_sdk::{
    Capability, Host, HttpError, HttpRequest, HttpResponse, HttpUrl, Outcome, PluginMetadata,
    PromoteError, PromotionRequest, Strategy,
};
use serde::Serialize;

pub use config::{Config, SecretRef};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The `webhook` strategy.
pub struct Webhook;

impl Strategy for Webhook {
    type Config = Config;

    fn metadata() -> PluginMetadata {
        PluginMetadata {
            name: "webhook".into(),
            version: VERSION.into(),
            description: "POSTs each promotion as JSON to a URL, signed with X-Signature: \
                          sha256=<HMAC> when secretRef is set"
                .into(),
            capabilities: vec![Capability::Http, Capability::Sign],
            config_schema: include_str!("config.schema.json").into(),
        }
    }

    fn validate(config: &Config) -> Vec<String> {
        config::problems(config)
    }

    fn promote(
        host: &dyn Host,
        request: &PromotionRequest,
        config: Config,
    ) -> Result<Outcome, PromoteError> {
        let body = serde_json::to_vec(&Notification::from(request)).map_err(|error| {
            PromoteError::permanent(format!("encoding the webhook body: {error}"))
        })?;

        let mut http = HttpRequest::post(&config.url, body);
        let configured = |name: &str| config.headers.keys().any(|n| n.eq_ignore_ascii_case(name));
        if !configured("content-type") {
            http = http.with_header("Content-Type", "application/json");
        }
        if !configured("user-agent") {
            http = http.with_header("User-Agent", format!("promoter-webhook/{VERSION}"));
        }
        http = http.with_header("Idempotency-Key", &request.id);
        for (name, value) in &config.headers {
            http = http.with_header(name, value);
        }
        if let Some(secret) = &config.secret_ref {
            let signature = host.sign_sha256(&secret.name, &http.body).map_err(|reason| {
                PromoteError::permanent(format!(
                    "cannot sign the webhook body: no signing key {:?} (secretRef.name) is bound \
                     to this plugin: {reason}",
                    secret.name
                ))
            })?;
            http = http.with_header("X-Signature", format!("sha256={signature}"));
        }

        host.info(&format!(
            "POST {} for promotion {} (attempt {})",
            config.url, request.id, request.attempt
        ));
        match host.send(http) {
            Ok(response) => answer(host, &config.url, response),
            Err(error) => Err(failure(&config.url, error)),
        }
    }
}

promoter_sdk::export_strategy!(Webhook);

/// Maps the receiver's answer to an outcome.
fn answer(host: &dyn Host, url: &str, response: HttpResponse) -> Result<Outcome, PromoteError> {
    let status = response.status;
    if response.is_success() {
        host.info(&format!("webhook answered HTTP {status}"));
        return Ok(Outcome::done()
            .with_url(url)
            .with_details(format!("HTTP {status}")));
    }
    host.warn(&format!("webhook answered HTTP {status}"));
    let mut message = format!("webhook {url} answered HTTP {status}");
    if (300..400).contains(&status)
        && let Some(location) = response.header("location")
    {
        message.push_str(&format!(
            " (redirect to {location}; configure the final URL)"
        ));
    }
    Err(PromoteError::from_response(message, &response))
}

/// Maps a request that got no answer to an error.
fn failure(url: &str, error: HttpError) -> PromoteError {
    match error {
        HttpError::Denied(detail) => {
            let origin = HttpUrl::parse(url)
                .map(|u| format!("{}://{}", u.scheme, u.authority))
                .unwrap_or_else(|_| url.to_string());
            PromoteError::permanent(format!(
                "the host refused the webhook origin {origin}; the operator must grant it to \
                 this plugin ({detail})"
            ))
        }
        HttpError::InvalidRequest(_) => PromoteError::permanent(format!("webhook {url}: {error}")),
        HttpError::Timeout(_) | HttpError::Connection(_) | HttpError::Other(_) => {
            PromoteError::retryable(format!("webhook {url}: {error}"))
        }
    }
}

/// The JSON document POSTed for a promotion.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Notification<'a> {
    id: &'a str,
    attempt: u32,
    pipeline: Named<'a>,
    source_environment: &'a str,
    target_environment: &'a str,
    targets: Vec<Target<'a>>,
    app: App<'a>,
    version: &'a str,
    event: Event<'a>,
}

#[derive(Serialize)]
struct Named<'a> {
    namespace: &'a str,
    name: &'a str,
}

#[derive(Serialize)]
struct Target<'a> {
    namespace: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<Cluster<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Cluster<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    api_version: Option<&'a str>,
    kind: &'a str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct App<'a> {
    api_version: &'a str,
    kind: &'a str,
    name: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Event<'a> {
    kind: &'a str,
    name: &'a str,
    namespace: &'a str,
    reason: &'a str,
    severity: &'a str,
    message: &'a str,
    timestamp: &'a str,
    reporting_controller: &'a str,
    metadata: BTreeMap<&'a str, &'a str>,
}

impl<'a> From<&'a PromotionRequest> for Notification<'a> {
    fn from(request: &'a PromotionRequest) -> Self {
        let event = &request.event;
        Notification {
            id: &request.id,
            attempt: request.attempt,
            pipeline: Named {
                namespace: &request.pipeline.namespace,
                name: &request.pipeline.name,
            },
            source_environment: &request.source_environment,
            target_environment: &request.target_environment,
            targets: request
                .targets
                .iter()
                .map(|target| Target {
                    namespace: &target.namespace,
                    cluster: target.cluster.as_ref().map(|cluster| Cluster {
                        api_version: cluster.api_version.as_deref(),
                        kind: &cluster.kind,
                        name: &cluster.name,
                        namespace: cluster.namespace.as_deref(),
                    }),
                })
                .collect(),
            app: App {
                api_version: &request.app.api_version,
                kind: &request.app.kind,
                name: &request.app.name,
            },
            version: &request.version,
            event: Event {
                kind: &event.kind,
                name: &event.name,
                namespace: &event.namespace,
                reason: &event.reason,
                severity: &event.severity,
                message: &event.message,
                timestamp: &event.timestamp,
                reporting_controller: &event.reporting_controller,
                metadata: event
                    .metadata
                    .iter()
                    .map(|(key, value)| (key.as_str(), value.as_str()))
                    .collect(),
            },
        }
    }
}

#[cfg(test)]
mod tests;
