//! The [`Strategy`] trait a plugin implements, what `promote` returns, and the two
//! entry points ([`validate_config`], [`promote`]) the export macro and plugin tests share.

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::host::Host;
use crate::{PluginMetadata, PromotionRequest};

/// A promotion strategy: how a promotion is carried out.
///
/// Implement it on a unit struct and export it with [`export_strategy!`](crate::export_strategy).
/// Every call runs in a fresh sandbox, so a strategy keeps no state between calls.
pub trait Strategy {
    /// The strategy's configuration from the Pipeline, parsed from JSON with serde.
    /// Use [`serde::de::IgnoredAny`] for a strategy that takes none.
    type Config: DeserializeOwned;

    /// Name, version, requested capabilities and the JSON Schema of [`Self::Config`].
    fn metadata() -> PluginMetadata;

    /// Checks that need more than a successful parse (a URL's scheme, a header name).
    /// Returns every problem found; an empty list means the configuration is fine.
    fn validate(config: &Self::Config) -> Vec<String> {
        let _ = config;
        Vec::new()
    }

    /// Carries one promotion out. Must be idempotent for a given `request.id`: the host
    /// retries with the same id. Never sleeps: ask for a retry with
    /// [`PromoteError::retryable`] or report [`Outcome::waiting`] instead.
    fn promote(
        host: &dyn Host,
        request: &PromotionRequest,
        config: Self::Config,
    ) -> Result<Outcome, PromoteError>;
}

/// What a successful `promote` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The promotion took effect (or already had: strategies are find-or-create).
    Done {
        /// Where the result can be seen (a pull request, a build).
        url: Option<String>,
        /// A short human-readable note.
        details: Option<String>,
    },
    /// Accepted by the far side but not finished; the host asks again later.
    Waiting {
        /// Why the promotion is not finished yet.
        reason: String,
    },
}

impl Outcome {
    /// The promotion took effect; add a URL or details with the `with_` methods.
    pub fn done() -> Self {
        Outcome::Done {
            url: None,
            details: None,
        }
    }

    /// The promotion is under way; the host asks again later.
    pub fn waiting(reason: impl Into<String>) -> Self {
        Outcome::Waiting {
            reason: reason.into(),
        }
    }

    /// Sets where the result can be seen. No effect on [`Outcome::Waiting`].
    pub fn with_url(mut self, new_url: impl Into<String>) -> Self {
        if let Outcome::Done { url, .. } = &mut self {
            *url = Some(new_url.into());
        }
        self
    }

    /// Sets a short human-readable note. No effect on [`Outcome::Waiting`].
    pub fn with_details(mut self, new_details: impl Into<String>) -> Self {
        if let Outcome::Done { details, .. } = &mut self {
            *details = Some(new_details.into());
        }
        self
    }
}

/// Why a promotion failed, and whether trying again may help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PromoteError {
    /// What went wrong, for the Promotion record and the operator.
    pub message: String,
    /// True when the same request may succeed later (rate limits, 5xx, timeouts).
    pub retryable: bool,
    /// How long the far side asked us to wait before the next attempt.
    pub retry_after: Option<Duration>,
}

impl PromoteError {
    /// A failure that may go away (rate limit, 5xx, timeout): the host retries with backoff.
    pub fn retryable(message: impl Into<String>) -> Self {
        PromoteError {
            message: message.into(),
            retryable: true,
            retry_after: None,
        }
    }

    /// A failure that will not go away by itself (bad configuration, 4xx): no retry.
    pub fn permanent(message: impl Into<String>) -> Self {
        PromoteError {
            message: message.into(),
            retryable: false,
            retry_after: None,
        }
    }

    /// The far side asked to wait this long (`Retry-After`) before trying again.
    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// The error for an answer that is not a success: `message`, then the start of the
    /// body. 408, 429 and 5xx are retryable, after the server's `Retry-After` when it
    /// gave one in seconds; anything else is permanent.
    pub fn from_response(message: impl Into<String>, response: &crate::HttpResponse) -> Self {
        let mut message = message.into();
        let excerpt = response.excerpt(EXCERPT_CHARS);
        if !excerpt.is_empty() {
            message.push_str(": ");
            message.push_str(&excerpt);
        }
        let status = response.status;
        if status == 408 || status == 429 || (500..600).contains(&status) {
            let error = PromoteError::retryable(message);
            match response.retry_after() {
                Some(delay) => error.with_retry_after(delay),
                None => error,
            }
        } else {
            PromoteError::permanent(message)
        }
    }
}

/// The longest body excerpt [`PromoteError::from_response`] quotes.
const EXCERPT_CHARS: usize = 200;

/// Parses `config` (JSON text; empty text counts as `{}`) into the strategy's
/// configuration and runs [`Strategy::validate`]. `Err` lists every problem found.
///
/// This is what the exported `validate-config` does.
pub fn validate_config<S: Strategy>(config: &str) -> Result<S::Config, Vec<String>> {
    let text = if config.trim().is_empty() {
        "{}"
    } else {
        config
    };
    let parsed: S::Config = serde_json::from_str(text)
        .map_err(|error| vec![format!("configuration is not valid: {error}")])?;
    let problems = S::validate(&parsed);
    if problems.is_empty() {
        Ok(parsed)
    } else {
        Err(problems)
    }
}

/// Parses and validates `request.config`, then runs [`Strategy::promote`]. A configuration
/// that does not parse or validate is a permanent error naming every problem.
///
/// This is what the exported `promote` does (with [`WasiHost`](crate::WasiHost)); plugin
/// tests call it with a [`MockHost`](crate::testing::MockHost).
pub fn promote<S: Strategy>(
    host: &dyn Host,
    request: &PromotionRequest,
) -> Result<Outcome, PromoteError> {
    let config = validate_config::<S>(&request.config).map_err(|problems| {
        PromoteError::permanent(format!("promotion {}: {}", request.id, problems.join("; ")))
    })?;
    S::promote(host, request, config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{MockHost, sample_request};
    use crate::{Capability, Level};

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct GreetConfig {
        greeting: String,
    }

    struct Greeter;

    impl Strategy for Greeter {
        type Config = GreetConfig;

        fn metadata() -> PluginMetadata {
            PluginMetadata {
                name: "greeter".into(),
                version: "1.0.0".into(),
                description: "says hello".into(),
                capabilities: vec![Capability::Http],
                config_schema: "{}".into(),
            }
        }

        fn validate(config: &GreetConfig) -> Vec<String> {
            if config.greeting.is_empty() {
                vec!["greeting must not be empty".into()]
            } else {
                Vec::new()
            }
        }

        fn promote(
            host: &dyn Host,
            request: &PromotionRequest,
            config: GreetConfig,
        ) -> Result<Outcome, PromoteError> {
            host.info(&format!("{} {}", config.greeting, request.version));
            Ok(Outcome::done().with_details(config.greeting))
        }
    }

    #[test]
    fn config_that_does_not_parse_is_reported_with_serde_message() {
        let problems = validate_config::<Greeter>(r#"{"greting": "hi"}"#)
            .err()
            .expect("a typo is a problem");
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains("unknown field `greting`"),
            "{problems:?}"
        );
    }

    #[test]
    fn semantic_problems_from_the_strategy_are_returned() {
        let problems = validate_config::<Greeter>(r#"{"greeting": ""}"#)
            .err()
            .expect("empty greeting is a problem");
        assert_eq!(problems, vec!["greeting must not be empty".to_string()]);
    }

    struct Anything;

    impl Strategy for Anything {
        type Config = serde_json::Value;

        fn metadata() -> PluginMetadata {
            Greeter::metadata()
        }

        fn promote(
            _: &dyn Host,
            _: &PromotionRequest,
            config: serde_json::Value,
        ) -> Result<Outcome, PromoteError> {
            Ok(Outcome::done().with_details(config.to_string()))
        }
    }

    #[test]
    fn empty_config_text_is_treated_as_an_empty_object() {
        let outcome = promote::<Anything>(&MockHost::new(), &sample_request("  ")).unwrap();
        assert_eq!(outcome, Outcome::done().with_details("{}"));
        let problems = validate_config::<Greeter>("").err().unwrap();
        assert!(
            problems[0].contains("missing field `greeting`"),
            "{problems:?}"
        );
    }

    #[test]
    fn promote_with_bad_config_is_a_permanent_error_naming_the_problem() {
        let host = MockHost::new();
        let error = promote::<Greeter>(&host, &sample_request(r#"{"greeting": 3}"#))
            .expect_err("a number is not a greeting");
        assert!(!error.retryable);
        assert!(
            error.message.contains("invalid type: integer `3`"),
            "{error}"
        );
        assert!(host.logs().is_empty(), "promote must not run");
    }

    #[test]
    fn promote_parses_config_and_runs_the_strategy() {
        let host = MockHost::new();
        let outcome = promote::<Greeter>(&host, &sample_request(r#"{"greeting": "hello"}"#))
            .expect("promotes");
        assert_eq!(outcome, Outcome::done().with_details("hello"));
        assert_eq!(host.logs(), vec![(Level::Info, "hello 1.2.3".to_string())]);
    }

    #[test]
    fn url_and_details_are_ignored_on_waiting() {
        let outcome = Outcome::waiting("checks pending").with_url("https://x.example");
        assert_eq!(
            outcome,
            Outcome::Waiting {
                reason: "checks pending".into()
            }
        );
    }

    #[test]
    fn retry_after_is_kept_on_retryable_errors() {
        let error = PromoteError::retryable("busy").with_retry_after(Duration::from_secs(7));
        assert!(error.retryable);
        assert_eq!(error.retry_after, Some(Duration::from_secs(7)));
        assert_eq!(error.to_string(), "busy");
    }
}
