//! Write Promoter strategy plugins in Rust.
//!
//! A strategy plugin is a WebAssembly component that carries a promotion out: opens a pull
//! request, calls a webhook, or anything you write. The host decides *whether* to promote,
//! owns retries and deadlines, and polices what the plugin may reach; the plugin decides
//! *how*. This crate wraps the `promoter:strategy@0.1.0` contract (vendored in `wit/`) so a
//! plugin is one [`Strategy`] implementation and one [`export_strategy!`] line.
//!
//! - Configuration is typed: the Pipeline's JSON is parsed into [`Strategy::Config`] with
//!   serde, so `validate-config` reports serde's message plus your [`Strategy::validate`].
//! - Everything the host offers goes through [`Host`]: log lines, HMAC signing with keys
//!   that never enter the sandbox, outbound HTTP, and git working copies of granted
//!   repositories ([`Host::git_open`], [`Repository`]; ask for [`Capability::Git`]). In the
//!   sandbox that is [`WasiHost`]; in native unit tests it is [`testing::MockHost`], whose
//!   git is an in-memory fake remote.
//!
//! # A complete plugin
//!
//! `Cargo.toml`: `crate-type = ["cdylib", "rlib"]`, dependencies `promoter-sdk` and
//! `serde` (with `derive`). Build with `cargo build --target wasm32-wasip2 --release`.
//!
//! ```
//! use promoter_sdk::{
//!     Capability, Host, HttpRequest, Outcome, PluginMetadata, PromoteError, PromotionRequest,
//!     Strategy,
//! };
//!
//! #[derive(serde::Deserialize)]
//! #[serde(rename_all = "camelCase", deny_unknown_fields)]
//! pub struct Config {
//!     /// Where to announce the promotion.
//!     url: String,
//! }
//!
//! pub struct Announce;
//!
//! impl Strategy for Announce {
//!     type Config = Config;
//!
//!     fn metadata() -> PluginMetadata {
//!         PluginMetadata {
//!             name: "announce".into(),
//!             version: env!("CARGO_PKG_VERSION").into(),
//!             description: "Announces each promotion with a POST".into(),
//!             capabilities: vec![Capability::Http],
//!             config_schema: r#"{"type":"object","required":["url"],
//!                 "properties":{"url":{"type":"string","format":"uri"}}}"#
//!                 .into(),
//!         }
//!     }
//!
//!     fn validate(config: &Config) -> Vec<String> {
//!         match promoter_sdk::HttpUrl::parse(&config.url) {
//!             Ok(_) => Vec::new(),
//!             Err(problem) => vec![format!("url: {problem}")],
//!         }
//!     }
//!
//!     fn promote(
//!         host: &dyn Host,
//!         request: &PromotionRequest,
//!         config: Config,
//!     ) -> Result<Outcome, PromoteError> {
//!         host.info(&format!("announcing {} {}", request.app.name, request.version));
//!         let body = format!("{} {} -> {}", request.app.name, request.version, request.target_environment);
//!         let response = host
//!             .send(HttpRequest::post(&config.url, body).with_header("Idempotency-Key", &request.id))
//!             .map_err(|error| PromoteError::retryable(error.to_string()))?;
//!         match response.status {
//!             200..=299 => Ok(Outcome::done().with_url(config.url)),
//!             status => Err(PromoteError::permanent(format!("{} answered HTTP {status}", config.url))),
//!         }
//!     }
//! }
//!
//! promoter_sdk::export_strategy!(Announce);
//!
//! // A native unit test: the same parse-validate-promote path as in the sandbox.
//! use promoter_sdk::testing::{MockHost, sample_request};
//! use promoter_sdk::HttpResponse;
//!
//! let host = MockHost::new().respond(HttpResponse::new(204));
//! let request = sample_request(r#"{"url": "https://chat.example.com/hook"}"#);
//! let outcome = promoter_sdk::promote::<Announce>(&host, &request).unwrap();
//! assert_eq!(outcome, Outcome::done().with_url("https://chat.example.com/hook"));
//! assert_eq!(host.requests()[0].header("Idempotency-Key"), Some(request.id.as_str()));
//! ```

pub mod forge;
pub mod git;
pub mod http;
pub mod testing;

mod host;
mod strategy;
#[cfg(target_arch = "wasm32")]
mod wasi_http;

/// The `wit-bindgen` output for world `promoter:strategy/plugin`. Plugins rarely need it:
/// [`export_strategy!`] and the re-exports at the crate root cover the contract.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "wit",
        pub_export_macro: true,
        default_bindings_module: "promoter_sdk::bindings",
    });
}

pub use bindings::promoter::strategy::host::{HmacAlgorithm, Level};
/// What a plugin asks the host for: [`Capability::Http`], [`Capability::Sign`],
/// [`Capability::Git`].
pub use bindings::promoter::strategy::types::Capability;
pub use bindings::promoter::strategy::types::{
    AppRef, ClusterRef, DeploymentTarget, EventInfo, PipelineRef, PluginMetadata, PromotionRequest,
};
pub use git::{Author, GitError, Repository};
pub use host::{Host, WasiHost};
pub use http::{HttpError, HttpRequest, HttpResponse, HttpUrl};
pub use strategy::{Outcome, PromoteError, Strategy, promote, validate_config};

/// Exports a [`Strategy`] as the component's `promoter:strategy/strategy` interface.
///
/// Use it once per plugin crate, at the top level: `promoter_sdk::export_strategy!(MyStrategy);`
/// The exported `promote` runs [`promote`] with a [`WasiHost`].
#[macro_export]
macro_rules! export_strategy {
    ($strategy:ty) => {
        const _: () = {
            // Only constructed by the component's exports, which exist on wasm32 alone.
            #[allow(dead_code)]
            struct PromoterStrategyExport;

            impl $crate::bindings::exports::promoter::strategy::strategy::Guest
                for PromoterStrategyExport
            {
                fn metadata() -> $crate::PluginMetadata {
                    <$strategy as $crate::Strategy>::metadata()
                }

                fn validate_config(
                    config: ::std::string::String,
                ) -> ::std::result::Result<(), ::std::vec::Vec<::std::string::String>> {
                    $crate::validate_config::<$strategy>(&config).map(|_| ())
                }

                fn promote(
                    request: $crate::PromotionRequest,
                ) -> ::std::result::Result<
                    $crate::bindings::promoter::strategy::types::Outcome,
                    $crate::bindings::promoter::strategy::types::PromoteError,
                > {
                    $crate::__private::promote_in_sandbox::<$strategy>(request)
                }
            }

            // Native builds (unit tests) type-check the exports but do not emit them: their
            // symbol names (`promoter:strategy/strategy@0.1.0#promote`) do not link there.
            #[cfg(target_arch = "wasm32")]
            $crate::bindings::export! { PromoterStrategyExport with_types_in $crate::bindings }

            // Keeps the strategy type alive for the dead-code lint in those native builds.
            #[cfg(not(target_arch = "wasm32"))]
            #[allow(dead_code)]
            fn strategy_is_exported_on_wasm32() {
                use $crate::bindings::exports::promoter::strategy::strategy::Guest as _;
                let _ = PromoterStrategyExport::metadata;
                let _ = PromoterStrategyExport::validate_config;
                let _ = PromoterStrategyExport::promote;
            }
        };
    };
}

#[doc(hidden)]
pub mod __private {
    use crate::bindings::promoter::strategy::types as wit;
    use crate::{Outcome, PromoteError, PromotionRequest, Strategy, WasiHost};

    /// The exported `promote`: the SDK's types turned into the contract's.
    pub fn promote_in_sandbox<S: Strategy>(
        request: PromotionRequest,
    ) -> Result<wit::Outcome, wit::PromoteError> {
        match crate::promote::<S>(&WasiHost, &request) {
            Ok(Outcome::Done { url, details }) => {
                Ok(wit::Outcome::Done(wit::Done { url, details }))
            }
            Ok(Outcome::Waiting { reason }) => Ok(wit::Outcome::Waiting(reason)),
            Err(PromoteError {
                message,
                retryable,
                retry_after,
            }) => Err(wit::PromoteError {
                message,
                retryable,
                retry_after_ms: retry_after
                    .map(|delay| u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn vendored_wit_is_identical_to_the_workspace_contract() {
        let vendored = Path::new(env!("CARGO_MANIFEST_DIR")).join("wit");
        let contract = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
        if !contract.is_dir() {
            eprintln!(
                "skipped: {} does not exist (packaged crate); nothing to compare the vendored WIT with",
                contract.display()
            );
            return;
        }
        let wit_files = |dir: &Path| {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()))
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(".wit"))
                .collect();
            names.sort();
            names
        };
        assert_eq!(
            wit_files(&vendored),
            wit_files(&contract),
            "sdk/wit must hold the same .wit files as wit/"
        );
        for name in wit_files(&contract) {
            let want = std::fs::read(contract.join(&name)).unwrap();
            let have = std::fs::read(vendored.join(&name)).unwrap();
            assert!(
                want == have,
                "sdk/wit/{name} differs from wit/{name}: copy it over (cp wit/*.wit sdk/wit/)"
            );
        }
    }
}
