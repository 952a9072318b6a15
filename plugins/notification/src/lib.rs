//! Promoter's default `notification` strategy: announces each promotion as a Flux event
//! about the Pipeline, posted to Flux notification-controller's event receiver, so any Flux
//! `Provider` (Slack, Teams, a generic webhook, …) with an `Alert` on `kind: Pipeline` can
//! carry it on. This is what Weave's pipeline-controller did for `notification: {}`.
//!
//! The request is `POST <address>` with `Content-Type: application/json`,
//! `Idempotency-Key: <promotion id>` (stable across retries) and
//! `User-Agent: promoter-notification/<version>`; the body is a Flux `Event`:
//!
//! ```json
//! {"involvedObject": {"kind": "Pipeline", "namespace": "flux-system", "name": "podinfo",
//!                     "apiVersion": "pipelines.weave.works/v1alpha1"},
//!  "severity": "info", "timestamp": "2026-11-23T10:00:00Z",
//!  "message": "Promote pipeline flux-system/podinfo to prod with version 6.5.4",
//!  "reason": "Promote",
//!  "metadata": {"pipelines.weave.works/environment": "prod", …},
//!  "reportingController": "promoter"}
//! ```
//!
//! Metadata keys carry the `pipelines.weave.works/` prefix because notification-controller
//! keeps only the keys prefixed with the involved object's API group (and strips the
//! prefix before the providers see them); Weave's unprefixed `environment` and `version`
//! were dropped on the way. Keys: `pipeline` (`<ns>/<name>`), `environment`, `version`,
//! `namespace` (the target environment's target namespaces, in order, `, `-separated),
//! `cluster` (their clusters as `<ns>/<name>`, `management` for a target without a
//! `clusterRef`; only when some target has one), `promotion` (the promotion id: the
//! idempotency key, also sent as `Idempotency-Key`) and `token` (see below).
//!
//! The address is not the Pipeline's to choose: a Pipeline writes `notification: {}` and the
//! host adds `address` (the server's `--events-addr`) to the configuration, and grants this
//! plugin that one origin and nothing else.
//!
//! Duplicates. notification-controller's receiver answers 429 to an event whose key it saw
//! within `--rate-limit-interval` (5 minutes by default); the key is the involved object's
//! name, namespace and kind, the message, and the metadata `<group>/originRevision`,
//! `<group>/revision` and `<group>/token` (`internal/server/event_server.go`, `eventKeyFunc`).
//! Name and message alone would make a second promotion of one version into one environment
//! (a deleted Promotion run again from a new deployment event, a second Promoter on the same
//! notification-controller) a duplicate of the first, dropped unseen. So every event carries
//! `pipelines.weave.works/token`, Flux's key for "what makes this event unique"
//! (`eventv1.MetaTokenKey`), which notification-controller removes before any Provider sees
//! it (since v1.2.3, `excludeInternalMetadata`): the promotion id, and when the promotion
//! came from a Flux event, `@` and that event's timestamp. It is stable across the
//! retries of one promotion and differs between two promotions of the same version.
//!
//! Answers: 2xx is done — but notification-controller answers 202 also when no Alert
//! matches the event and it drops it, so "done" says the event reached the receiver, not a
//! Provider (an Alert on `kind: Pipeline` needs Flux's Alert CRD patched: see the README).
//! 408, 429, 5xx and timeouts or connection failures are retried (a `Retry-After` in
//! seconds is honoured). One 429 is not retried: notification-controller's duplicate filter
//! (an answer carrying its `X-RateLimit-Limit`) on a later attempt. The token is this
//! promotion's own, so the filter saw this very event pass within its window: an earlier
//! attempt delivered it and its answer was lost (a timeout, a replica that died), and
//! counting it delivered is what keeps a retry from announcing the promotion twice.
//! Other statuses fail for good with the status, a hint and the start of the body.

mod time;

use std::collections::BTreeMap;
use std::time::SystemTime;

use promoter_sdk::{
    Capability, Host, HttpError, HttpRequest, HttpResponse, HttpUrl, Outcome, PluginMetadata,
    PromoteError, PromotionRequest, Strategy,
};
use serde::{Deserialize, Serialize};

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// API group of the Pipeline resource: the prefix notification-controller keeps.
pub const GROUP: &str = "pipelines.weave.works";
/// `apiVersion` of the Pipeline resource, the event's involved object.
pub const API_VERSION: &str = "pipelines.weave.works/v1alpha1";
/// The event's `reason`, as Weave's.
pub const REASON: &str = "Promote";
/// The event's `reportingController`.
pub const REPORTING_CONTROLLER: &str = "promoter";
/// The header notification-controller's rate limiter (go-limiter's `httplimit`) sets on
/// every answer, a 429 included; a proxy's 429 does not carry it.
const RATE_LIMIT_HEADER: &str = "x-ratelimit-limit";

/// The `<group>/token` value for `request`: the promotion id, then `@` and the timestamp of
/// the Flux event it came from, when there is one. Stable across retries (both are
/// recorded with the promotion); a promotion of the same version recorded again from a
/// later deployment event gets another.
pub fn token(request: &PromotionRequest) -> String {
    match request.event.timestamp.as_str() {
        "" => request.id.clone(),
        timestamp => format!("{}@{timestamp}", request.id),
    }
}

/// The configuration: what a Pipeline writes (`{}`) plus what the host adds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// notification-controller's event receiver, set by the host from `--events-addr`.
    #[serde(default)]
    pub address: Option<String>,
}

/// The `notification` strategy.
pub struct Notification;

impl Strategy for Notification {
    type Config = Config;

    fn metadata() -> PluginMetadata {
        PluginMetadata {
            name: "notification".into(),
            version: VERSION.into(),
            description: "Posts a Flux event (reason Promote) about the Pipeline to Flux \
                          notification-controller, whose Alerts and Providers carry it on"
                .into(),
            capabilities: vec![Capability::Http],
            config_schema: include_str!("config.schema.json").into(),
        }
    }

    fn validate(config: &Config) -> Vec<String> {
        match &config.address {
            Some(address) => match HttpUrl::parse(address) {
                Ok(_) => Vec::new(),
                Err(problem) => vec![format!("address: {problem}")],
            },
            // The host reports a server without --events-addr itself, naming the flag.
            None => Vec::new(),
        }
    }

    fn promote(
        host: &dyn Host,
        request: &PromotionRequest,
        config: Config,
    ) -> Result<Outcome, PromoteError> {
        announce(host, request, &config, SystemTime::now())
    }
}

promoter_sdk::export_strategy!(Notification);

/// Posts the event for `request`, stamped `now`. [`Strategy::promote`] with the clock read.
pub fn announce(
    host: &dyn Host,
    request: &PromotionRequest,
    config: &Config,
    now: SystemTime,
) -> Result<Outcome, PromoteError> {
    let Some(address) = config.address.as_deref() else {
        return Err(PromoteError::permanent(
            "no events address: the notification strategy posts to Flux notification-controller, \
             whose address the operator gives with `promoter serve --events-addr URL` \
             (PROMOTER_EVENTS_ADDR)",
        ));
    };
    let event = Event::new(request, time::rfc3339(now));
    let body = serde_json::to_vec(&event)
        .map_err(|error| PromoteError::permanent(format!("encoding the event: {error}")))?;
    let http = HttpRequest::post(address, body)
        .with_header("Content-Type", "application/json")
        .with_header("User-Agent", format!("promoter-notification/{VERSION}"))
        .with_header("Idempotency-Key", &request.id);

    host.info(&format!(
        "POST {address}: event {REASON} for promotion {} (attempt {})",
        request.id, request.attempt
    ));
    match host.send(http) {
        Ok(response) => answer(host, address, request.attempt, response),
        Err(error) => Err(failure(address, error)),
    }
}

/// Maps notification-controller's answer to an outcome.
fn answer(
    host: &dyn Host,
    address: &str,
    attempt: u32,
    response: HttpResponse,
) -> Result<Outcome, PromoteError> {
    let status = response.status;
    if response.is_success() {
        host.info(&format!("notification-controller answered HTTP {status}"));
        return Ok(Outcome::done().with_details(format!(
            "event {REASON} posted to {address} (HTTP {status}); notification-controller \
             answers so also when no Alert on kind Pipeline matches and it drops the event"
        )));
    }
    if status == 429 && attempt > 1 && response.header(RATE_LIMIT_HEADER).is_some() {
        host.info(
            "notification-controller answered HTTP 429: its duplicate filter saw this \
             promotion's event (its own token) pass from an earlier attempt",
        );
        return Ok(Outcome::done().with_details(format!(
            "event {REASON} posted to {address} by an earlier attempt (HTTP 429 to a repeat)"
        )));
    }
    host.warn(&format!("notification-controller answered HTTP {status}"));
    let mut message = format!("notification-controller at {address} answered HTTP {status}");
    let hint = match status {
        300..=399 => response
            .header("location")
            .map(|to| format!("redirect to {to}; give --events-addr the final URL")),
        400 => Some(
            "it refuses a body it cannot decode as a Flux event, and answers 400 when it cannot \
             list its Alerts"
                .to_string(),
        ),
        401 | 403 | 407 => Some(
            "the event receiver takes no credentials; is --events-addr notification-controller's \
             event receiver?"
                .to_string(),
        ),
        429 => Some(
            "notification-controller drops an event identical to one it accepted within its \
             --rate-limit-interval; retried"
                .to_string(),
        ),
        404 | 405 => Some(
            "is --events-addr notification-controller's event receiver (its Service's port 80, \
             path /)?"
                .to_string(),
        ),
        _ => None,
    };
    if let Some(hint) = hint {
        message.push_str(&format!(" ({hint})"));
    }
    Err(PromoteError::from_response(message, &response))
}

/// Maps a request that got no answer to an error.
fn failure(address: &str, error: HttpError) -> PromoteError {
    match error {
        HttpError::Denied(detail) => PromoteError::permanent(format!(
            "the host refused to reach {address}: it grants this plugin only the origin of the \
             server's --events-addr ({detail})"
        )),
        HttpError::InvalidRequest(_) => {
            PromoteError::permanent(format!("notification-controller at {address}: {error}"))
        }
        HttpError::Timeout(_) | HttpError::Connection(_) | HttpError::Other(_) => {
            PromoteError::retryable(format!("notification-controller at {address}: {error}"))
        }
    }
}

/// Flux's `eventv1.Event`, fields in Flux's order; empty optional fields are left out as
/// Go's `omitempty` does.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event<'a> {
    pub involved_object: ObjectReference<'a>,
    pub severity: &'static str,
    /// RFC 3339, seconds, UTC (Kubernetes' `metav1.Time`).
    pub timestamp: String,
    pub message: String,
    pub reason: &'static str,
    pub metadata: BTreeMap<String, String>,
    pub reporting_controller: &'static str,
}

/// The involved object: the Pipeline (`corev1.ObjectReference`, Go's field order).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference<'a> {
    pub kind: &'static str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub api_version: &'static str,
}

impl<'a> Event<'a> {
    /// The event announcing `request`, stamped `timestamp`.
    pub fn new(request: &'a PromotionRequest, timestamp: String) -> Event<'a> {
        let pipeline = &request.pipeline;
        let key = |name: &str| format!("{GROUP}/{name}");
        let mut metadata = BTreeMap::new();
        metadata.insert(
            key("pipeline"),
            format!("{}/{}", pipeline.namespace, pipeline.name),
        );
        metadata.insert(key("environment"), request.target_environment.clone());
        metadata.insert(key("version"), request.version.clone());
        metadata.insert(key("promotion"), request.id.clone());
        metadata.insert(key("token"), token(request));
        if !request.targets.is_empty() {
            let namespaces: Vec<&str> = request
                .targets
                .iter()
                .map(|t| t.namespace.as_str())
                .collect();
            metadata.insert(key("namespace"), namespaces.join(", "));
        }
        if request.targets.iter().any(|t| t.cluster.is_some()) {
            let clusters: Vec<String> = request
                .targets
                .iter()
                .map(|t| match &t.cluster {
                    // A clusterRef's namespace defaults to the Pipeline's.
                    Some(c) => format!(
                        "{}/{}",
                        c.namespace.as_deref().unwrap_or(&pipeline.namespace),
                        c.name
                    ),
                    None => "management".to_string(),
                })
                .collect();
            metadata.insert(key("cluster"), clusters.join(", "));
        }
        Event {
            involved_object: ObjectReference {
                kind: "Pipeline",
                namespace: &pipeline.namespace,
                name: &pipeline.name,
                api_version: API_VERSION,
            },
            severity: "info",
            timestamp,
            message: format!(
                "Promote pipeline {}/{} to {} with version {}",
                pipeline.namespace, pipeline.name, request.target_environment, request.version
            ),
            reason: REASON,
            metadata,
            reporting_controller: REPORTING_CONTROLLER,
        }
    }
}

#[cfg(test)]
mod tests;
