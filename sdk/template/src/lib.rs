//! A template strategy: announces each promotion with a POST to the configured URL.

use promoter_sdk::{
    Capability, Host, HttpRequest, HttpUrl, Outcome, PluginMetadata, PromoteError,
    PromotionRequest, Strategy,
};
use serde::Deserialize;

/// The Pipeline's configuration for this strategy, e.g. `{"url": "https://chat.example.com/hook"}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    url: String,
}

pub struct Template;

impl Strategy for Template {
    type Config = Config;

    fn metadata() -> PluginMetadata {
        PluginMetadata {
            name: "template".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Announces each promotion with a POST".into(),
            capabilities: vec![Capability::Http],
            config_schema: r#"{"type":"object","required":["url"],"additionalProperties":false,"properties":{"url":{"type":"string","format":"uri"}}}"#.into(),
        }
    }

    fn validate(config: &Config) -> Vec<String> {
        match HttpUrl::parse(&config.url) {
            Ok(_) => Vec::new(),
            Err(problem) => vec![format!("url: {problem}")],
        }
    }

    fn promote(
        host: &dyn Host,
        request: &PromotionRequest,
        config: Config,
    ) -> Result<Outcome, PromoteError> {
        let text = format!(
            "{} {} -> {}",
            request.app.name, request.version, request.target_environment
        );
        host.info(&format!("announcing {text}"));
        let post = HttpRequest::post(&config.url, text)
            .with_header("Content-Type", "text/plain")
            .with_header("Idempotency-Key", &request.id);
        let response = host
            .send(post)
            .map_err(|error| PromoteError::retryable(error.to_string()))?;
        match response.status {
            200..=299 => Ok(Outcome::done().with_url(config.url)),
            429 | 500..=599 => Err(PromoteError::retryable(format!(
                "{} answered HTTP {}",
                config.url, response.status
            ))),
            status => Err(PromoteError::permanent(format!(
                "{} answered HTTP {status}",
                config.url
            ))),
        }
    }
}

promoter_sdk::export_strategy!(Template);

#[cfg(test)]
mod tests {
    use super::*;
    use promoter_sdk::HttpResponse;
    use promoter_sdk::testing::{MockHost, sample_request};

    const CONFIG: &str = r#"{"url": "https://chat.example.com/hook"}"#;

    #[test]
    fn promotion_is_announced_and_done_on_success() {
        let host = MockHost::new().respond(HttpResponse::new(204));
        let outcome = promoter_sdk::promote::<Template>(&host, &sample_request(CONFIG)).unwrap();

        assert_eq!(
            outcome,
            Outcome::done().with_url("https://chat.example.com/hook")
        );
        let sent = &host.requests()[0];
        assert_eq!(sent.body, b"podinfo 1.2.3 -> prod");
    }

    #[test]
    fn server_errors_are_retried() {
        let host = MockHost::new().respond(HttpResponse::new(503));
        let error = promoter_sdk::promote::<Template>(&host, &sample_request(CONFIG)).unwrap_err();
        assert!(error.retryable);
    }

    #[test]
    fn config_without_an_http_url_is_rejected() {
        let problems = promoter_sdk::validate_config::<Template>(r#"{"url": "ftp://x.example/"}"#)
            .unwrap_err();
        assert!(
            problems[0].contains("expected http or https"),
            "{problems:?}"
        );
    }
}
