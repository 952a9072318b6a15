//! The `pipelines.weave.works/v1alpha1` `Pipeline` as Promoter understands it: parsed from
//! the same YAML or JSON a cluster would hold, validated with every problem listed at once,
//! and normalised into one model whatever dialect the manifest was written in.
//!
//! Two dialects of `promotion` are accepted (see `strategy.rs` for the exact shapes): the one
//! Weave released (`strategy: {pull-request | notification | secretRef}`) and the older one of
//! the seed design (`pullRequest`, `webhook`), plus our own `strategy: {plugin: {name, config}}`.
//! Whatever was written, each environment after the first ends up with one
//! [`ResolvedPromotion`]: how a version is promoted *into* it.
//!
//! Override rules:
//! - A promotion is carried out with the target environment's own `promotion` if it names a
//!   strategy, else with the pipeline's (Weave's rule). An environment `promotion` that names
//!   no strategy (say only `manual: true`) keeps the pipeline's strategy and overrides `manual`.
//! - The Secret holding the `hmac-key` that signs events *from* an environment is the one its
//!   own `promotion` names, else the pipeline's. (Weave honoured only the pipeline's.)
//! - The Secret holding the `hmac-key` that signs approvals of promotions *into* an
//!   environment is the one its own `promotion` names (`approvalSecretRef`), else the
//!   pipeline's. No event key may equal an approval key (see `keys.rs`): a leaf cluster's
//!   key reports deployments and approves nothing. Without one, promotions into a
//!   `manual: true` environment are approved only through the Kubernetes annotation,
//!   never over the public listener.
//! - Nothing is promoted into the first environment: of its own `promotion` only the
//!   secretRef counts (an approvalSecretRef there is a problem: it would approve nothing).
//! - A target's `clusterRef.namespace` defaults to the Pipeline's namespace.

pub mod consent;
mod keys;
mod manifests;
mod strategy;
#[cfg(test)]
mod tests;

pub use keys::key_problems;
pub use manifests::{ConfigMap, LoadError, Manifests, Namespace, PLUGIN_LABEL, Problem, Secret};

use crate::promotion::{AppRef, PipelineRef, Target};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use strategy::{PromotionSpec, describe};

/// API group of the Pipeline resource.
pub const GROUP: &str = "pipelines.weave.works";
/// The one served version of the Pipeline resource.
pub const API_VERSION: &str = "pipelines.weave.works/v1alpha1";
/// Kind of the Pipeline resource.
pub const KIND: &str = "Pipeline";

/// A validated Pipeline, promotions resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pipeline {
    pub namespace: String,
    pub name: String,
    pub app_ref: AppRef,
    /// In promotion order; never empty, names unique.
    pub environments: Vec<Environment>,
    /// `spec.suspend`: events are recorded as held and nothing of it runs until it is
    /// resumed (`promoter resume`, or the field set back to false).
    pub suspend: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Environment {
    pub name: String,
    /// Never empty. Each `clusterRef` has its namespace filled in.
    pub targets: Vec<Target>,
    /// How a version is promoted into this environment; `None` for the first environment and
    /// when no promotion is configured.
    pub promotion: Option<ResolvedPromotion>,
    /// Name of the Secret (in the Pipeline's namespace) whose `hmac-key` signs the events
    /// posted to `/promotion/{ns}/{name}/{this environment}`.
    pub hmac_secret: Option<String>,
}

/// How one promotion (source environment → target environment) is carried out.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedPromotion {
    /// Wait for an approval before running the strategy.
    pub manual: bool,
    pub strategy: StrategyRef,
    /// The Secret whose `hmac-key` signs events from the source environment.
    pub hmac_secret: Option<String>,
    /// The Secret whose `hmac-key` signs approvals of promotions into this environment
    /// (`approvalSecretRef`); `None`: no approval over the public listener.
    pub approval_secret: Option<String>,
}

/// A strategy plugin and the configuration handed to it (camelCase JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StrategyRef {
    /// `pull-request`, `webhook`, `notification` or the name of a custom plugin.
    pub plugin: String,
    /// The plugin's configuration, as the Pipeline gives it.
    #[schemars(schema_with = "crate::cluster::crd::any_object")]
    pub config: Value,
}

impl Pipeline {
    /// Parses and validates one Pipeline object (already decoded from YAML or JSON).
    /// On failure returns every problem found, each starting with the field path.
    pub fn from_value(object: &Value) -> Result<Pipeline, Vec<String>> {
        let mut problems = Vec::new();
        let pipeline = parse(object, &mut problems);
        match pipeline {
            Some(p) if problems.is_empty() => Ok(p),
            _ => Err(problems),
        }
    }

    pub fn reference(&self) -> PipelineRef {
        PipelineRef {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    pub fn environment(&self, name: &str) -> Option<&Environment> {
        self.environments.iter().find(|e| e.name == name)
    }

    /// Position of an environment in promotion order.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.environments.iter().position(|e| e.name == name)
    }

    /// The environment a deployment to `source` is promoted into, if there is one.
    pub fn next_environment(&self, source: &str) -> Option<&Environment> {
        self.position(source)
            .and_then(|i| self.environments.get(i + 1))
    }

    pub fn environment_names(&self) -> Vec<&str> {
        self.environments.iter().map(|e| e.name.as_str()).collect()
    }

    /// The Secret whose `hmac-key` signs events posted for `source_env`; `None` for an
    /// unknown environment or when no secretRef is configured.
    pub fn hmac_secret_for(&self, source_env: &str) -> Option<&str> {
        self.environment(source_env)?.hmac_secret.as_deref()
    }

    /// The Secret whose `hmac-key` signs approvals posted for promotions into
    /// `target_env`; `None` for an unknown or first environment, or when no
    /// approvalSecretRef is configured.
    pub fn approval_secret_for(&self, target_env: &str) -> Option<&str> {
        self.promotion_into(target_env)?.approval_secret.as_deref()
    }

    /// How a version is promoted into `target_env`.
    pub fn promotion_into(&self, target_env: &str) -> Option<&ResolvedPromotion> {
        self.environment(target_env)?.promotion.as_ref()
    }

    /// Every strategy this pipeline uses, with the environment it promotes into, so the caller
    /// can ask each plugin's `validate-config` before any promotion runs.
    pub fn strategies(&self) -> impl Iterator<Item = (&str, &StrategyRef)> {
        self.environments
            .iter()
            .filter_map(|e| e.promotion.as_ref().map(|p| (e.name.as_str(), &p.strategy)))
    }
}

impl std::fmt::Display for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// `namespace/name` of any Kubernetes object, for messages; namespace defaults to "default".
pub(crate) fn object_key(object: &Value) -> (String, String) {
    let meta = object.get("metadata");
    let text = |k: &str| {
        meta.and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    (
        text("namespace").unwrap_or_else(|| "default".to_string()),
        text("name").unwrap_or_else(|| "<no name>".to_string()),
    )
}

/// The longest Pipeline or environment name: a Kubernetes object name's limit, and the
/// Promotion CRD's for `spec.pipeline` and `spec.targetEnvironment`.
const MAX_NAME: usize = 253;

fn parse(object: &Value, problems: &mut Vec<String>) -> Option<Pipeline> {
    match object.get("apiVersion").and_then(Value::as_str) {
        Some(API_VERSION) => {}
        other => problems.push(format!(
            "apiVersion: expected {API_VERSION}, found {}",
            other.map_or("nothing".to_string(), |v| format!("{v:?}"))
        )),
    }
    let name = object
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    if name.is_empty() {
        problems.push("metadata.name: expected the Pipeline's name, found nothing".into());
    } else if name.len() > MAX_NAME {
        problems.push(format!(
            "metadata.name: {} characters, more than the {MAX_NAME} a Kubernetes name (and a \
             Promotion's spec.pipeline) may have; choose a shorter name",
            name.len()
        ));
    }
    let (namespace, _) = object_key(object);
    let Some(spec) = object.get("spec").filter(|s| s.is_object()) else {
        problems.push(format!(
            "spec: expected a mapping with appRef and environments, found {}",
            describe(object.get("spec"))
        ));
        return None;
    };
    let app_ref = parse_app_ref(spec.get("appRef"), problems);
    let pipeline_promotion = spec
        .get("promotion")
        .filter(|v| !v.is_null())
        .and_then(|v| strategy::parse_promotion(v, "spec.promotion", problems));
    let environments = parse_environments(
        spec.get("environments"),
        &namespace,
        pipeline_promotion.as_ref(),
        problems,
    );
    let suspend = match spec.get("suspend") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        other => {
            problems.push(format!(
                "spec.suspend: expected true or false, found {}",
                describe(other)
            ));
            false
        }
    };
    Some(Pipeline {
        namespace,
        name: name.to_string(),
        app_ref: app_ref?,
        environments,
        suspend,
    })
}

fn parse_app_ref(value: Option<&Value>, problems: &mut Vec<String>) -> Option<AppRef> {
    let Some(map) = value.and_then(Value::as_object) else {
        problems.push(format!(
            "spec.appRef: expected a mapping with apiVersion, kind and name, found {}",
            describe(value)
        ));
        return None;
    };
    let mut field = |key: &str, example: &str| -> String {
        match map.get(key) {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            other => {
                problems.push(format!(
                    "spec.appRef.{key}: expected a string such as {example}, found {}",
                    describe(other)
                ));
                String::new()
            }
        }
    };
    let app = AppRef {
        api_version: field("apiVersion", "helm.toolkit.fluxcd.io/v2"),
        kind: field("kind", "HelmRelease"),
        name: field("name", "podinfo"),
    };
    Some(app)
}

fn parse_environments(
    value: Option<&Value>,
    namespace: &str,
    pipeline_promotion: Option<&PromotionSpec>,
    problems: &mut Vec<String>,
) -> Vec<Environment> {
    let items = match value {
        Some(Value::Array(items)) if !items.is_empty() => items,
        other => {
            problems.push(format!(
                "spec.environments: expected at least one environment, found {}",
                describe(other)
            ));
            return Vec::new();
        }
    };
    let mut envs: Vec<(Environment, Option<PromotionSpec>, String)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("spec.environments[{i}]");
        let name = match item.get("name") {
            Some(Value::String(s)) if !s.is_empty() && !s.contains('/') => s.clone(),
            other => {
                problems.push(format!(
                    "{path}.name: expected a name without '/', such as dev, found {}",
                    describe(other)
                ));
                continue;
            }
        };
        if name.len() > MAX_NAME {
            problems.push(format!(
                "{path}.name: {} characters, more than the {MAX_NAME} a Promotion's \
                 spec.targetEnvironment may have; choose a shorter environment name",
                name.len()
            ));
            continue;
        }
        let path = format!("{path} ({name})");
        if envs.iter().any(|(e, _, _)| e.name == name) {
            problems.push(format!(
                "{path}: environment name {name:?} is used twice; names must be unique"
            ));
        }
        let targets = parse_targets(item.get("targets"), namespace, &path, problems);
        let own = item
            .get("promotion")
            .filter(|v| !v.is_null())
            .and_then(|v| strategy::parse_promotion(v, &format!("{path}.promotion"), problems));
        let hmac_secret = own
            .as_ref()
            .and_then(|p| p.hmac_secret.clone())
            .or_else(|| pipeline_promotion.and_then(|p| p.hmac_secret.clone()));
        let env = Environment {
            name,
            targets,
            promotion: None,
            hmac_secret,
        };
        envs.push((env, own, path));
    }
    if let Some((first, Some(own), path)) = envs.first()
        && own.approval_secret.is_some()
    {
        problems.push(format!(
            "{path}.promotion.approvalSecretRef: nothing is promoted into {}, the first \
             environment, so there is nothing to approve; put approvalSecretRef on the \
             environment whose promotions it approves",
            first.name
        ));
    }
    // Resolve how each environment after the first is promoted into.
    for i in 1..envs.len() {
        let source_secret = envs[i - 1].0.hmac_secret.clone();
        let (env, own, path) = &mut envs[i];
        env.promotion = resolve(
            own.as_ref(),
            pipeline_promotion,
            source_secret,
            path,
            problems,
        );
    }
    envs.into_iter().map(|(e, _, _)| e).collect()
}

fn resolve(
    own: Option<&PromotionSpec>,
    pipeline: Option<&PromotionSpec>,
    hmac_secret: Option<String>,
    path: &str,
    problems: &mut Vec<String>,
) -> Option<ResolvedPromotion> {
    let (strategy, manual) = match (own, pipeline) {
        (None, None) => return None,
        (Some(own), _) if own.strategy.is_some() => (own.strategy.clone(), own.manual),
        (Some(own), pipeline) => (
            pipeline.and_then(|p| p.strategy.clone()),
            own.manual.or(pipeline.and_then(|p| p.manual)),
        ),
        (None, Some(pipeline)) => (pipeline.strategy.clone(), pipeline.manual),
    };
    let approval_secret = own
        .and_then(|p| p.approval_secret.clone())
        .or_else(|| pipeline.and_then(|p| p.approval_secret.clone()));
    let already_explained = own.is_some_and(|p| p.broken) || pipeline.is_some_and(|p| p.broken);
    let Some(strategy) = strategy else {
        if already_explained {
            return None;
        }
        problems.push(format!(
            "{path}: a promotion into this environment is configured but names no strategy; \
             expected strategy.pull-request, strategy.notification or strategy.plugin \
             (or pullRequest or webhook) here or in spec.promotion"
        ));
        return None;
    };
    Some(ResolvedPromotion {
        manual: manual.unwrap_or(false),
        strategy,
        hmac_secret,
        approval_secret,
    })
}

fn parse_targets(
    value: Option<&Value>,
    namespace: &str,
    path: &str,
    problems: &mut Vec<String>,
) -> Vec<Target> {
    let items = match value {
        Some(Value::Array(items)) if !items.is_empty() => items,
        other => {
            problems.push(format!(
                "{path}.targets: expected at least one target {{namespace, clusterRef?}}, found {}",
                describe(other)
            ));
            return Vec::new();
        }
    };
    let mut targets = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("{path}.targets[{i}]");
        match serde_json::from_value::<Target>(item.clone()) {
            Ok(mut target) => {
                if target.namespace.is_empty() {
                    problems.push(format!(
                        "{path}.namespace: expected a namespace, found \"\""
                    ));
                }
                if let Some(cluster) = &mut target.cluster {
                    if cluster.name.is_empty() {
                        problems.push(format!(
                            "{path}.clusterRef.name: expected a cluster name, found \"\""
                        ));
                    }
                    if cluster.namespace.as_deref().is_none_or(str::is_empty) {
                        cluster.namespace = Some(namespace.to_string());
                    }
                }
                targets.push(target);
            }
            Err(e) => problems.push(format!(
                "{path}: expected {{namespace, clusterRef: {{kind, name, namespace?}}?}}: {e}"
            )),
        }
    }
    targets
}
