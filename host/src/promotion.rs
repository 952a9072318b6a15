//! The promotion as the host speaks of it: what a strategy is asked to do and what it
//! answers. These types mirror the WIT contract (`wit/strategy.wit`) with serde
//! names in Kubernetes style (camelCase), so the same JSON is used by
//! `promoter plugin run --promotion`, the status API and the webhook plugin's body.

use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineRef {
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default = "default_cluster_kind")]
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

fn default_cluster_kind() -> String {
    "GitopsCluster".to_string()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub namespace: String,
    #[serde(
        default,
        rename = "clusterRef",
        skip_serializing_if = "Option::is_none"
    )]
    pub cluster: Option<ClusterRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

/// The Flux event that triggered a promotion.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct EventInfo {
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub reason: String,
    pub severity: String,
    pub message: String,
    pub timestamp: String,
    pub reporting_controller: String,
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// One promotion as handed to a strategy plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromotionRequest {
    /// Stable across retries: the idempotency key.
    pub id: String,
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    pub pipeline: PipelineRef,
    pub source_environment: String,
    pub target_environment: String,
    #[serde(default)]
    pub targets: Vec<Target>,
    pub app: AppRef,
    pub version: String,
    /// The strategy configuration; JSON text when handed to the plugin.
    #[serde(default)]
    pub config: serde_json::Value,
    #[serde(default)]
    pub event: EventInfo,
}

fn first_attempt() -> u32 {
    1
}

/// What a strategy reports when a promotion did not fail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum Outcome {
    Done {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        details: Option<String>,
    },
    Waiting {
        reason: String,
    },
}

/// An error the strategy itself reported (as opposed to the sandbox stopping it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "camelCase")]
#[error("{message}")]
pub struct StrategyError {
    pub message: String,
    pub retryable: bool,
    #[serde(default, with = "millis", skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<Duration>,
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(d.as_millis() as u64),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}
