//! Whether a Flux event calls for a promotion: pure functions of the Pipeline, the event and
//! what was already promoted. Nothing here reads a clock, a file or the network.
//!
//! The rules (the seed design's, with Weave's answers for misuse):
//! 1. A promotion applies to the deployment targets of the next environment: one intent for
//!    that environment carries all its targets (a strategy splits per target if it wants).
//! 2. A promotion happens when at least one target of the lower environment deployed the
//!    version; a second target reporting the same version adds nothing.
//! 3. Nothing is promoted beyond the last environment.
//! 4. Only successful installs and upgrades promote (Weave promoted failed upgrades too).
//! 5. A version older (by semver) than one already promoted into the target environment is
//!    not promoted; revisions that are not semver are never compared.
//! 6. Strict mode only (`--require-promoted-source`): an event from an environment after
//!    the first is for a version that was promoted into it — a promotion of that exact
//!    revision into that environment was recorded and allowed to run (not waiting for
//!    approval, not refused). Otherwise the leaf cluster that holds one environment's key
//!    could report a version its environment never got and skip every environment and
//!    approval before it ([`check_promoted_source`]). Off by default, as Weave: an event
//!    from an environment deployed by other means promotes.

use crate::event::{FluxEvent, Severity, api_group};
use crate::pipeline::{Pipeline, StrategyRef};
use crate::promotion::{PipelineRef, PromotionRequest, Target};
use sha2::{Digest, Sha256};

/// What to do with an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Record these promotions.
    Promote(Vec<Intent>),
    /// A fine event that calls for nothing (answered 2xx).
    Ignore(IgnoreReason),
    /// An event that does not fit the pipeline (answered 422, as Weave did).
    Reject(RejectReason),
}

/// One promotion to record: a version into one environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Intent {
    /// [`promotion_id`]: the idempotency key.
    pub id: String,
    pub pipeline: PipelineRef,
    pub source_env: String,
    pub target_env: String,
    pub targets: Vec<Target>,
    pub version: String,
    pub strategy: StrategyRef,
    /// Wait for an approval before running the strategy.
    pub manual: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreReason {
    #[error("ignored: severity error is not a successful deployment")]
    ErrorSeverity,
    #[error("ignored: reason {reason} is not a successful deployment")]
    NotADeployment { reason: String },
    #[error("ignored: message {message:?} is not a successful install or upgrade")]
    NotASuccessMessage { message: String },
    #[error("ignored: version {version} was already promoted into {target_env}")]
    AlreadyPromoted { version: String, target_env: String },
    #[error(
        "ignored: version {version} is older than {promoted}, already promoted into {target_env}"
    )]
    OlderThanPromoted {
        version: String,
        promoted: String,
        target_env: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    #[error("pipeline {pipeline}: environment {env:?} not found; have {}", have.join(", "))]
    UnknownEnvironment {
        pipeline: String,
        env: String,
        have: Vec<String>,
    },
    #[error("pipeline {pipeline}: {env} is the last environment; nothing to promote into")]
    LastEnvironment { pipeline: String, env: String },
    #[error("pipeline {pipeline}: environment {env} has no targets to promote into")]
    NoTargets { pipeline: String, env: String },
    #[error("pipeline {pipeline}: no promotion is configured into environment {env}")]
    NoPromotion { pipeline: String, env: String },
    #[error("event has no revision in its metadata")]
    NoRevision,
    #[error(
        "pipeline {pipeline}: version {version} was never promoted into {env} ({found}); \
         this server requires an event from an environment after the first to report a version \
         that was promoted into it (--require-promoted-source), so no environment or approval \
         is skipped"
    )]
    NotPromotedIntoSource {
        pipeline: String,
        env: String,
        version: String,
        /// What the record of that promotion says, if there is one.
        found: SourcePromotion,
    },
    #[error(transparent)]
    Mismatch(#[from] Mismatch),
}

/// The event is about something the pipeline does not govern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error(
        "involved object does not match the pipeline: {found} is not the pipeline's appRef {expected}"
    )]
    App { found: String, expected: String },
    #[error(
        "involved object does not match the pipeline: namespace {namespace} is not a target of environment {env}; have {}",
        have.join(", ")
    )]
    Namespace {
        namespace: String,
        env: String,
        have: Vec<String>,
    },
    #[error("involved object does not match the pipeline: it has no environment {env}")]
    Environment { env: String },
}

/// What the records say of the promotion of an event's version into the environment the
/// event comes from (rule 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourcePromotion {
    /// No promotion of that revision into that environment was recorded.
    Never,
    /// Recorded, but not allowed to run: waiting for approval, refused, or a request
    /// not yet checked against its Pipeline (the phase).
    NotAllowed(String),
    /// Recorded and allowed to run (pending, running or finished).
    Allowed,
}

impl std::fmt::Display for SourcePromotion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourcePromotion::Never => write!(f, "no promotion of it was recorded"),
            SourcePromotion::NotAllowed(phase) => {
                write!(f, "its promotion is {phase}, not allowed to run")
            }
            SourcePromotion::Allowed => write!(f, "its promotion was allowed to run"),
        }
    }
}

/// Rule 6 (strict mode): an event from `source_env` reports `version`; unless `source_env`
/// is the first environment, a promotion of `version` into it must have been allowed to
/// run. Unknown environments are left to [`decide`].
pub fn check_promoted_source(
    pipeline: &Pipeline,
    source_env: &str,
    version: &str,
    source: SourcePromotion,
) -> Result<(), RejectReason> {
    match pipeline.position(source_env) {
        None | Some(0) => Ok(()),
        Some(_) if source == SourcePromotion::Allowed => Ok(()),
        Some(_) => Err(RejectReason::NotPromotedIntoSource {
            pipeline: pipeline.to_string(),
            env: source_env.to_string(),
            version: version.to_string(),
            found: source,
        }),
    }
}

/// Promotions already recorded for one pipeline (whatever their state), as `decide` needs them.
pub trait History {
    /// Whether `version` (or a semver-equal spelling of it) was recorded into `target_env`.
    fn has(&self, target_env: &str, version: &str) -> bool;
    /// The newest semver version recorded into `target_env`, as it was written.
    fn newest(&self, target_env: &str) -> Option<String>;
}

/// One recorded promotion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promoted {
    pub target_env: String,
    pub version: String,
}

/// Versions recorded per environment, indexed so `decide` costs the same however long
/// a pipeline's history grows.
#[derive(Debug, Clone, Default)]
pub struct VersionIndex {
    envs: std::collections::HashMap<String, EnvVersions>,
}

#[derive(Debug, Clone, Default)]
struct EnvVersions {
    keys: std::collections::HashSet<String>,
    newest: Option<(semver::Version, String)>,
}

/// Semver-equal spellings (`v1.2.0`, `1.2.0`) share a key; anything else is its own.
fn version_key(version: &str) -> String {
    semver(version).map_or_else(|| version.to_string(), |v| v.to_string())
}

impl VersionIndex {
    pub fn record(&mut self, target_env: &str, version: &str) {
        let env = self.envs.entry(target_env.to_string()).or_default();
        env.keys.insert(version_key(version));
        if let Some(v) = semver(version)
            && env
                .newest
                .as_ref()
                .is_none_or(|(n, _)| v.cmp_precedence(n).is_gt())
        {
            env.newest = Some((v, version.to_string()));
        }
    }
}

impl History for VersionIndex {
    fn has(&self, target_env: &str, version: &str) -> bool {
        self.envs
            .get(target_env)
            .is_some_and(|e| e.keys.contains(&version_key(version)))
    }

    fn newest(&self, target_env: &str) -> Option<String> {
        self.envs
            .get(target_env)
            .and_then(|e| e.newest.as_ref().map(|(_, text)| text.clone()))
    }
}

impl History for [Promoted] {
    fn has(&self, target_env: &str, version: &str) -> bool {
        index(self).has(target_env, version)
    }

    fn newest(&self, target_env: &str) -> Option<String> {
        index(self).newest(target_env)
    }
}

impl History for Vec<Promoted> {
    fn has(&self, target_env: &str, version: &str) -> bool {
        self.as_slice().has(target_env, version)
    }

    fn newest(&self, target_env: &str) -> Option<String> {
        self.as_slice().newest(target_env)
    }
}

fn index(promoted: &[Promoted]) -> VersionIndex {
    let mut index = VersionIndex::default();
    for p in promoted {
        index.record(&p.target_env, &p.version);
    }
    index
}

/// The event's object is the pipeline's app: same API group (any version), kind and name, in
/// the namespace of one of `source_env`'s targets.
pub fn match_app(pipeline: &Pipeline, source_env: &str, event: &FluxEvent) -> Result<(), Mismatch> {
    let object = &event.involved_object;
    let app = &pipeline.app_ref;
    if object.group() != api_group(&app.api_version)
        || object.kind != app.kind
        || object.name != app.name
    {
        return Err(Mismatch::App {
            found: format!("{} {} ({})", object.kind, object.name, object.api_version),
            expected: format!("{} {} ({})", app.kind, app.name, app.api_version),
        });
    }
    let env = pipeline
        .environment(source_env)
        .ok_or_else(|| Mismatch::Environment {
            env: source_env.to_string(),
        })?;
    if !env.targets.iter().any(|t| t.namespace == object.namespace) {
        let mut have: Vec<String> = Vec::new();
        for t in &env.targets {
            if !have.contains(&t.namespace) {
                have.push(t.namespace.clone());
            }
        }
        return Err(Mismatch::Namespace {
            namespace: object.namespace.clone(),
            env: source_env.to_string(),
            have,
        });
    }
    Ok(())
}

/// Only a successful install or upgrade promotes.
pub fn is_successful_deployment(event: &FluxEvent) -> Result<(), IgnoreReason> {
    if event.severity == Severity::Error {
        return Err(IgnoreReason::ErrorSeverity);
    }
    let reason = event.reason.as_str();
    let ok = match event.involved_object.kind.as_str() {
        "HelmRelease" if reason == "info" => {
            // helm-controller for v2beta1 used the severity as the reason.
            let message = event.message.trim_start();
            if message.starts_with("Helm install succeeded")
                || message.starts_with("Helm upgrade succeeded")
            {
                return Ok(());
            }
            return Err(IgnoreReason::NotASuccessMessage {
                message: event.message.clone(),
            });
        }
        "HelmRelease" => matches!(reason, "InstallSucceeded" | "UpgradeSucceeded"),
        "Kustomization" => reason == "ReconciliationSucceeded",
        // Other kinds: the reasons Flux controllers use for a successful apply.
        _ => matches!(
            reason,
            "InstallSucceeded" | "UpgradeSucceeded" | "ReconciliationSucceeded"
        ),
    };
    if ok {
        Ok(())
    } else {
        Err(IgnoreReason::NotADeployment {
            reason: event.reason.clone(),
        })
    }
}

/// Decides what an event posted for `source_env` calls for.
pub fn decide(
    pipeline: &Pipeline,
    source_env: &str,
    event: &FluxEvent,
    history: &(impl History + ?Sized),
) -> Decision {
    let name = pipeline.to_string();
    let Some(position) = pipeline.position(source_env) else {
        return Decision::Reject(RejectReason::UnknownEnvironment {
            pipeline: name,
            env: source_env.to_string(),
            have: pipeline
                .environment_names()
                .into_iter()
                .map(String::from)
                .collect(),
        });
    };
    let Some(target) = pipeline.environments.get(position + 1) else {
        return Decision::Reject(RejectReason::LastEnvironment {
            pipeline: name,
            env: source_env.to_string(),
        });
    };
    if target.targets.is_empty() {
        return Decision::Reject(RejectReason::NoTargets {
            pipeline: name,
            env: target.name.clone(),
        });
    }
    if let Err(m) = match_app(pipeline, source_env, event) {
        return Decision::Reject(m.into());
    }
    if let Err(reason) = is_successful_deployment(event) {
        return Decision::Ignore(reason);
    }
    let Some(version) = event.revision() else {
        return Decision::Reject(RejectReason::NoRevision);
    };
    let Some(promotion) = &target.promotion else {
        return Decision::Reject(RejectReason::NoPromotion {
            pipeline: name,
            env: target.name.clone(),
        });
    };
    if let Err(reason) = check_history(version, &target.name, history) {
        return Decision::Ignore(reason);
    }
    Decision::Promote(vec![Intent {
        id: promotion_id(&pipeline.namespace, &pipeline.name, &target.name, version),
        pipeline: pipeline.reference(),
        source_env: source_env.to_string(),
        target_env: target.name.clone(),
        targets: target.targets.clone(),
        version: version.to_string(),
        strategy: promotion.strategy.clone(),
        manual: promotion.manual,
    }])
}

fn check_history(
    version: &str,
    target_env: &str,
    history: &(impl History + ?Sized),
) -> Result<(), IgnoreReason> {
    if history.has(target_env, version) {
        return Err(IgnoreReason::AlreadyPromoted {
            version: version.to_string(),
            target_env: target_env.to_string(),
        });
    }
    let (Some(new), Some(promoted)) = (semver(version), history.newest(target_env)) else {
        return Ok(());
    };
    match semver(&promoted) {
        Some(v) if v.cmp_precedence(&new).is_gt() => Err(IgnoreReason::OlderThanPromoted {
            version: version.to_string(),
            promoted,
            target_env: target_env.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Why a Promotion resource — a request that did not come through the webhook's checks,
/// or whose first status was never written — is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no Pipeline {pipeline} is in force")]
    NoPipeline { pipeline: String },
    #[error("pipeline {pipeline}: environment {env:?} not found; have {}", have.join(", "))]
    UnknownEnvironment {
        pipeline: String,
        env: String,
        have: Vec<String>,
    },
    #[error("pipeline {pipeline}: {env} is the first environment; nothing is promoted into it")]
    FirstEnvironment { pipeline: String, env: String },
    #[error(
        "pipeline {pipeline}: sourceEnvironment {given:?} is not {expected}, the environment before {env}"
    )]
    WrongSource {
        pipeline: String,
        env: String,
        given: String,
        expected: String,
    },
    #[error(
        "pipeline {pipeline}: version {version} was never promoted into {source_env} (no \
         promotion there succeeded), the environment before {env}; a request cannot skip an \
         environment"
    )]
    NotInSource {
        pipeline: String,
        env: String,
        source_env: String,
        version: String,
    },
    #[error("{0}")]
    Reject(RejectReason),
    #[error("{0}")]
    History(IgnoreReason),
}

/// A request the Pipeline allows: where it comes from, and whether it waits for approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    pub source_env: String,
    pub manual: bool,
}

/// Whether `pipeline` allows promoting `version` into `target_env` on request (a
/// `Promotion` resource): the environment exists, is not the first, has targets and a
/// promotion configured; the version was promoted (succeeded) into the environment before
/// it, unless that is the first — no environment, and no approval on the way, is skipped;
/// and the rules of [`decide`] for history hold (not promoted there already, not older
/// than what was). `history` holds what was recorded, not this request; `succeeded` what
/// succeeded.
pub fn admit(
    pipeline: &Pipeline,
    target_env: &str,
    version: &str,
    source_env: Option<&str>,
    history: &(impl History + ?Sized),
    succeeded: &(impl History + ?Sized),
) -> Result<Admitted, Refusal> {
    let name = format!("{}/{}", pipeline.namespace, pipeline.name);
    let Some(position) = pipeline.position(target_env) else {
        return Err(Refusal::UnknownEnvironment {
            pipeline: name,
            env: target_env.to_string(),
            have: pipeline
                .environment_names()
                .into_iter()
                .map(String::from)
                .collect(),
        });
    };
    if position == 0 {
        return Err(Refusal::FirstEnvironment {
            pipeline: name,
            env: target_env.to_string(),
        });
    }
    let source = &pipeline.environments[position - 1].name;
    if let Some(given) = source_env.filter(|given| given != source) {
        return Err(Refusal::WrongSource {
            pipeline: name,
            env: target_env.to_string(),
            given: given.to_string(),
            expected: source.clone(),
        });
    }
    let target = &pipeline.environments[position];
    if target.targets.is_empty() {
        return Err(Refusal::Reject(RejectReason::NoTargets {
            pipeline: name,
            env: target_env.to_string(),
        }));
    }
    let Some(promotion) = &target.promotion else {
        return Err(Refusal::Reject(RejectReason::NoPromotion {
            pipeline: name,
            env: target_env.to_string(),
        }));
    };
    if position > 1 && !succeeded.has(source, version) {
        return Err(Refusal::NotInSource {
            pipeline: name,
            env: target_env.to_string(),
            source_env: source.clone(),
            version: version.to_string(),
        });
    }
    check_history(version, target_env, history).map_err(Refusal::History)?;
    Ok(Admitted {
        source_env: source.clone(),
        manual: promotion.manual,
    })
}

/// A revision as semver, allowing a leading `v`.
fn semver(revision: &str) -> Option<semver::Version> {
    let text = revision.strip_prefix(['v', 'V']).unwrap_or(revision);
    semver::Version::parse(text).ok()
}

/// The idempotency key of a promotion: a valid Kubernetes object name (at most 63 of
/// `[a-z0-9-]`, starting and ending with a letter or digit), readable and deterministic:
/// `<name>-<env>-<128 bits of sha256>` over the four parts, each prefixed with its length
/// so no two tuples hash the same input. 128 bits: finding another (namespace, pipeline,
/// environment, version) with the same id takes about 2^64 hashes for any two, 2^128 for a
/// given one; at 40 bits a tenant could search for a version of their own pipeline whose id
/// is another namespace's promotion in minutes.
pub fn promotion_id(namespace: &str, name: &str, target_env: &str, version: &str) -> String {
    const HASH_LEN: usize = 32;
    let mut hasher = Sha256::new();
    for part in [namespace, name, target_env, version] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let hash = &hex::encode(hasher.finalize())[..HASH_LEN];
    let mut prefix = String::new();
    for c in format!("{name}-{target_env}").chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if !(c == '-' && (prefix.is_empty() || prefix.ends_with('-'))) {
            prefix.push(c);
        }
    }
    prefix.truncate(63 - HASH_LEN - 1);
    let prefix = prefix.trim_end_matches('-');
    if prefix.is_empty() {
        hash.to_string()
    } else {
        format!("{prefix}-{hash}")
    }
}

impl Intent {
    /// The request handed to the strategy plugin for this intent.
    pub fn request(
        &self,
        pipeline: &Pipeline,
        event: &FluxEvent,
        attempt: u32,
    ) -> PromotionRequest {
        PromotionRequest {
            id: self.id.clone(),
            attempt,
            pipeline: self.pipeline.clone(),
            source_environment: self.source_env.clone(),
            target_environment: self.target_env.clone(),
            targets: self.targets.clone(),
            app: pipeline.app_ref.clone(),
            version: self.version.clone(),
            config: self.strategy.config.clone(),
            event: event.into(),
        }
    }
}

#[cfg(test)]
mod tests;
