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
use crate::record::{Cause, Phase, Promotion};
use sha2::{Digest, Sha256};

/// What to do with an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Record these promotions.
    Promote(Vec<Intent>),
    /// The version's promotion into the next environment failed before: run it again
    /// (same id, attempts go on).
    Retry(Latest),
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
        "ignored: the promotion of {version} into {target_env} ({id}) was {phase}; \
         `promoter promote` asks for it again"
    )]
    Closed {
        version: String,
        target_env: String,
        id: String,
        phase: &'static str,
    },
    #[error(
        "ignored: version {version} is older than {promoted}, already promoted into {target_env}"
    )]
    OlderThanPromoted {
        version: String,
        promoted: String,
        target_env: String,
    },
}

impl IgnoreReason {
    /// Whether the event alone is the reason (not a successful deployment), whatever was
    /// recorded: such an event was never accepted, so it cannot be a replay, and it is no
    /// news to the operator (Flux sends one for every reconciliation its Alert forwards).
    pub fn about_the_event_alone(&self) -> bool {
        matches!(
            self,
            IgnoreReason::ErrorSeverity
                | IgnoreReason::NotADeployment { .. }
                | IgnoreReason::NotASuccessMessage { .. }
        )
    }
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

/// Promotions already recorded for one pipeline, as `decide` needs them.
pub trait History {
    /// The newest record (highest round) of `version`, or a semver-equal spelling of it,
    /// into `target_env`. Requests not yet checked and refused ones are not records.
    fn latest(&self, target_env: &str, version: &str) -> Option<Latest>;
    /// The newest semver version recorded into `target_env` (in any phase), as written.
    fn newest(&self, target_env: &str) -> Option<String>;
    /// The version in `target_env` now: the promotion into it that succeeded last.
    fn current(&self, target_env: &str) -> Option<Current>;

    /// Whether `version` was recorded into `target_env`.
    fn has(&self, target_env: &str, version: &str) -> bool {
        self.latest(target_env, version).is_some()
    }
}

/// The newest record of one version into one environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Latest {
    pub id: String,
    pub phase: Phase,
    pub round: u32,
    /// Whether any round of it succeeded.
    pub succeeded: bool,
}

/// The promotion that put the version now in an environment there.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Current {
    pub id: String,
    pub version: String,
    /// When it succeeded (ms).
    pub finished_at: u64,
}

/// One recorded promotion that succeeded (tests and simple histories).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promoted {
    pub target_env: String,
    pub version: String,
}

/// What [`History`] needs per environment, from records held in memory: the Kubernetes
/// cache's, and tests'.
#[derive(Debug, Clone, Default)]
pub struct VersionIndex {
    envs: std::collections::HashMap<String, EnvVersions>,
    /// Per environment, what fits in constant size however long the history grows.
    latest: std::collections::HashMap<String, EnvLatest>,
}

#[derive(Debug, Clone, Default)]
struct EnvVersions {
    keys: std::collections::HashMap<String, Latest>,
}

/// The constant-size part of an environment's history: the newest semver version
/// recorded and the version in it now.
#[derive(Debug, Clone, Default)]
pub struct EnvLatest {
    newest: Option<(semver::Version, String)>,
    current: Option<Current>,
}

/// [`EnvLatest`] as the local store keeps it on disk.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredEnvLatest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    newest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    current: Option<Current>,
}

impl serde::Serialize for EnvLatest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        StoredEnvLatest {
            newest: self.newest(),
            current: self.current.clone(),
        }
        .serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for EnvLatest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<EnvLatest, D::Error> {
        let stored = StoredEnvLatest::deserialize(d)?;
        Ok(EnvLatest {
            newest: stored
                .newest
                .and_then(|text| semver(&text).map(|v| (v, text))),
            current: stored.current,
        })
    }
}

impl EnvLatest {
    /// Takes `p` into account (called with every record, and with each new state of one).
    /// An operator's request counts as the newest version only once it succeeded: one
    /// asked for by mistake (or by a caller who may only create) and then rejected never
    /// makes every later event "older".
    pub fn note(&mut self, p: &Promotion) {
        let counts = p.cause == Cause::Event || p.phase == Phase::Succeeded;
        if counts
            && let Some(v) = semver(&p.version)
            && self
                .newest
                .as_ref()
                .is_none_or(|(n, _)| v.cmp_precedence(n).is_gt())
        {
            self.newest = Some((v, p.version.clone()));
        }
        if p.phase == Phase::Succeeded {
            let at = p.finished_at.unwrap_or(p.updated_at);
            if self.current.as_ref().is_none_or(|c| c.finished_at <= at) {
                self.current = Some(Current {
                    id: p.id.clone(),
                    version: p.version.clone(),
                    finished_at: at,
                });
            }
        }
    }

    pub fn newest(&self) -> Option<String> {
        self.newest.as_ref().map(|(_, text)| text.clone())
    }

    pub fn current(&self) -> Option<Current> {
        self.current.clone()
    }
}

/// Semver-equal spellings (`v1.2.0`, `1.2.0`) share a key; anything else is its own.
pub fn version_key(version: &str) -> String {
    semver(version).map_or_else(|| version.to_string(), |v| v.to_string())
}

impl VersionIndex {
    /// Takes the record `p` into account.
    pub fn note(&mut self, p: &Promotion) {
        let env = self.envs.entry(p.target_environment.clone()).or_default();
        let key = version_key(&p.version);
        let succeeded = p.phase == Phase::Succeeded;
        match env.keys.get_mut(&key) {
            Some(l) if l.round > p.round => l.succeeded |= succeeded,
            Some(l) => {
                *l = Latest {
                    id: p.id.clone(),
                    phase: p.phase,
                    round: p.round,
                    succeeded: succeeded || l.succeeded,
                };
            }
            None => {
                env.keys.insert(
                    key,
                    Latest {
                        id: p.id.clone(),
                        phase: p.phase,
                        round: p.round,
                        succeeded,
                    },
                );
            }
        }
        self.latest
            .entry(p.target_environment.clone())
            .or_default()
            .note(p);
    }

    /// Records `version` as promoted (succeeded) into `target_env`.
    pub fn record(&mut self, target_env: &str, version: &str) {
        self.note(&Promotion::succeeded(target_env, version));
    }
}

impl History for VersionIndex {
    fn latest(&self, target_env: &str, version: &str) -> Option<Latest> {
        self.envs
            .get(target_env)
            .and_then(|e| e.keys.get(&version_key(version)).cloned())
    }

    fn newest(&self, target_env: &str) -> Option<String> {
        self.latest.get(target_env).and_then(EnvLatest::newest)
    }

    fn current(&self, target_env: &str) -> Option<Current> {
        self.latest.get(target_env).and_then(EnvLatest::current)
    }
}

impl History for [Promoted] {
    fn latest(&self, target_env: &str, version: &str) -> Option<Latest> {
        index(self).latest(target_env, version)
    }

    fn newest(&self, target_env: &str) -> Option<String> {
        index(self).newest(target_env)
    }

    fn current(&self, target_env: &str) -> Option<Current> {
        index(self).current(target_env)
    }
}

impl History for Vec<Promoted> {
    fn latest(&self, target_env: &str, version: &str) -> Option<Latest> {
        self.as_slice().latest(target_env, version)
    }

    fn newest(&self, target_env: &str) -> Option<String> {
        self.as_slice().newest(target_env)
    }

    fn current(&self, target_env: &str) -> Option<Current> {
        self.as_slice().current(target_env)
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
    match check_history(version, &target.name, history) {
        Err(reason) => return Decision::Ignore(reason),
        Ok(Some(failed)) => return Decision::Retry(failed),
        Ok(None) => {}
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

/// What the history says of an event's version: nothing against it (`None`), a failed
/// promotion of it to run again, or why it is ignored.
fn check_history(
    version: &str,
    target_env: &str,
    history: &(impl History + ?Sized),
) -> Result<Option<Latest>, IgnoreReason> {
    match history.latest(target_env, version) {
        Some(l) if l.phase == Phase::Failed => return Ok(Some(l)),
        Some(l)
            if matches!(
                l.phase,
                Phase::Rejected | Phase::Aborted | Phase::Superseded
            ) =>
        {
            return Err(IgnoreReason::Closed {
                version: version.to_string(),
                target_env: target_env.to_string(),
                id: l.id,
                phase: l.phase.as_str(),
            });
        }
        Some(_) => {
            return Err(IgnoreReason::AlreadyPromoted {
                version: version.to_string(),
                target_env: target_env.to_string(),
            });
        }
        None => {}
    }
    let (Some(new), Some(promoted)) = (semver(version), history.newest(target_env)) else {
        return Ok(None);
    };
    match semver(&promoted) {
        Some(v) if v.cmp_precedence(&new).is_gt() => Err(IgnoreReason::OlderThanPromoted {
            version: version.to_string(),
            promoted,
            target_env: target_env.to_string(),
        }),
        _ => Ok(None),
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
    #[error(
        "pipeline {pipeline}: {version} is already being promoted into {env}: promotion {id} \
         is {phase}"
    )]
    InProgress {
        pipeline: String,
        env: String,
        version: String,
        id: String,
        phase: &'static str,
    },
    #[error(
        "pipeline {pipeline}: the promotion of {version} into {env} ({id}) failed; run it \
         again with `promoter retry {id}`"
    )]
    Failed {
        pipeline: String,
        env: String,
        version: String,
        id: String,
    },
    #[error("pipeline {pipeline}: {version} is already in {env} (promotion {id})")]
    AlreadyThere {
        pipeline: String,
        env: String,
        version: String,
        id: String,
    },
    #[error(
        "pipeline {pipeline}: {version} is older than {current}, in {env} now; promoting it \
         is a rollback: ask with --rollback (API: \"rollback\": true)"
    )]
    NeedsRollback {
        pipeline: String,
        env: String,
        version: String,
        current: String,
    },
}

/// A request the Pipeline allows: where it comes from, whether it waits for approval,
/// and the record it makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    pub source_env: String,
    pub manual: bool,
    /// The round of the new record: one more than the last record of the version there.
    pub round: u32,
    pub cause: Cause,
    /// Its id: [`promotion_id_round`].
    pub id: String,
}

/// Whether `pipeline` allows promoting `version` into `target_env` on an operator's
/// request (`promoter promote`, or a `Promotion` resource created with kubectl): the
/// environment exists, is not the first, has targets and a promotion configured; the
/// version succeeded in the environment before it, unless that is the first (no
/// environment, and no approval on the way, is skipped); it is not being promoted there
/// already, did not fail there (that is `promoter retry`), and is not the version there
/// now. A version older (semver) than the one there now is a rollback, allowed only when
/// `rollback` says so. `history` holds what was recorded, not this request.
pub fn admit(
    pipeline: &Pipeline,
    target_env: &str,
    version: &str,
    source_env: Option<&str>,
    rollback: bool,
    history: &(impl History + ?Sized),
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
    if position > 1 && !history.latest(source, version).is_some_and(|l| l.succeeded) {
        return Err(Refusal::NotInSource {
            pipeline: name,
            env: target_env.to_string(),
            source_env: source.clone(),
            version: version.to_string(),
        });
    }
    let current = history.current(target_env);
    let round = match history.latest(target_env, version) {
        None => 1,
        Some(l) if l.phase == Phase::Failed => {
            return Err(Refusal::Failed {
                pipeline: name,
                env: target_env.to_string(),
                version: version.to_string(),
                id: l.id,
            });
        }
        Some(l)
            if l.phase == Phase::Succeeded && current.as_ref().is_some_and(|c| c.id == l.id) =>
        {
            return Err(Refusal::AlreadyThere {
                pipeline: name,
                env: target_env.to_string(),
                version: version.to_string(),
                id: l.id,
            });
        }
        Some(l) if !l.phase.is_finished() => {
            return Err(Refusal::InProgress {
                pipeline: name,
                env: target_env.to_string(),
                version: version.to_string(),
                id: l.id,
                phase: l.phase.as_str(),
            });
        }
        Some(l) => l.round + 1,
    };
    let older = current.as_ref().is_some_and(|c| {
        matches!((semver(version), semver(&c.version)), (Some(v), Some(c)) if v.cmp_precedence(&c).is_lt())
    });
    if older && !rollback {
        return Err(Refusal::NeedsRollback {
            pipeline: name,
            env: target_env.to_string(),
            version: version.to_string(),
            current: current.map(|c| c.version).unwrap_or_default(),
        });
    }
    Ok(Admitted {
        source_env: source.clone(),
        manual: promotion.manual,
        round,
        cause: if older {
            Cause::Rollback
        } else {
            Cause::Manual
        },
        id: promotion_id_round(
            &pipeline.namespace,
            &pipeline.name,
            target_env,
            version,
            round,
        ),
    })
}

/// Whether `current`, the promotion into `p`'s environment that succeeded last, supersedes
/// `p`, a promotion there that has not run: it succeeded after `p` was recorded, with a
/// newer version (semver; a version that is not semver is taken as newer, since it
/// arrived later). A rollback recorded after `current` succeeded is not superseded by it.
pub fn supersedes(current: &Current, p: &Promotion) -> bool {
    if current.id == p.id || current.finished_at <= p.created_at {
        return false;
    }
    match (semver(&current.version), semver(&p.version)) {
        (Some(c), Some(v)) => c.cmp_precedence(&v).is_gt(),
        _ => current.version != p.version,
    }
}

/// `a` against `b` by semver precedence; equal when either is not semver.
pub fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (semver(a), semver(b)) {
        (Some(a), Some(b)) => a.cmp_precedence(&b),
        _ => std::cmp::Ordering::Equal,
    }
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
    promotion_id_round(namespace, name, target_env, version, 1)
}

/// The id of the `round`th record of (namespace, pipeline, environment, version): the
/// first is [`promotion_id`]; a later one (the same version promoted there again) hashes a
/// fixed-size suffix with the round after the four parts, so every record has an id of
/// its own, as deterministic, and none equals another tuple's (the length prefixes fix
/// where each part ends).
pub fn promotion_id_round(
    namespace: &str,
    name: &str,
    target_env: &str,
    version: &str,
    round: u32,
) -> String {
    const HASH_LEN: usize = 32;
    let mut hasher = Sha256::new();
    for part in [namespace, name, target_env, version] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    if round > 1 {
        hasher.update(b"round");
        hasher.update(round.to_be_bytes());
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
