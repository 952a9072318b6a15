//! Promoter's default `pull-request` strategy.
//!
//! A promotion sets every marked value of the configuration repository to the promoted
//! version on a branch of its own, pushes it, and opens (or brings up to date) a pull request
//! into the base branch — Weave pipeline-controller's behaviour, with its names:
//!
//! - head branch `promotion-<pipelineNamespace>-<pipelineName>-<targetEnv>`, title
//!   `Promote <ns>/<name> in <env> to <version>`, commit message `promoting version`, and a
//!   description ending in Weave's collapsed metadata block holding `<ns>/<name>/<env>`;
//! - markers are YAML line comments `# {"$promotion": "<ns>:<name>:<env>"}` after the value
//!   to set, edited line by line so every other byte of the file stays ([`markers`]).
//!
//! Where it differs from Weave:
//!
//! - Each step is find-or-create: a retry rebuilds the head branch from the base, pushes
//!   nothing when the remote already has it, and finds the pull request an earlier attempt
//!   opened instead of failing with "nothing to commit" or opening a second one.
//! - When the base branch already has the version at every marker, the promotion is done
//!   ("already at <version>") without a push or a pull request.
//! - A marker that cannot be applied, or no marker for the target at all, fails the
//!   promotion for good, naming the file and the line.
//! - When the target environment's deployment targets are on several clusters, one pull
//!   request is opened per cluster: branch `…-<env>-<cluster>` (targets without a
//!   `clusterRef`, on the management cluster, share one named after the index of the first
//!   of them), with the markers `<ns>:<name>:<env>:<cluster>` of that cluster only, and the
//!   plain `<ns>:<name>:<env>` markers in every one. The outcome's URL is the first pull
//!   request's; its details list them all. Deployment targets in several namespaces of one
//!   cluster share that cluster's pull request: a marker names no namespace, so their
//!   markers are the same lines, and a pull request each would make one change twice.
//! - GitHub, GitLab, Gitea/Forgejo, Bitbucket Server and Azure DevOps ([`forge`]); git over
//!   whatever the host speaks (it clones, authenticates and pushes; credentials never enter
//!   the plugin).
//!
//! The configuration is described in [`config`].

pub mod config;
pub mod forge;
pub mod markers;
mod strategy;
#[cfg(test)]
mod tests;

use promoter_sdk::{
    Capability, Host, Outcome, PluginMetadata, PromoteError, PromotionRequest, Strategy,
};

pub use config::Config;

/// The `pull-request` strategy.
pub struct PullRequestStrategy;

impl Strategy for PullRequestStrategy {
    type Config = Config;

    fn metadata() -> PluginMetadata {
        PluginMetadata {
            name: "pull-request".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Sets the version at the promotion markers of the configuration \
                          repository on a branch and opens a pull request for it (GitHub, \
                          GitLab, Gitea, Bitbucket Server, Azure DevOps)"
                .into(),
            capabilities: vec![Capability::Http, Capability::Git],
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
        strategy::promote(host, request, &config)
    }
}

promoter_sdk::export_strategy!(PullRequestStrategy);
