//! The custom resources, as Rust types; their CRDs are generated from these types
//! (`promoter crds`) and shipped in `charts/promoter/files/crds/`, and a test keeps the two the
//! same.
//!
//! - `Pipeline` (`pipelines.weave.works/v1alpha1`): Weave's resource, unchanged for its
//!   users — both dialects, Weave's printer columns, `status.environments[env]
//!   .waitingApproval.revision`. The spec's `promotion` blocks keep unknown fields (the
//!   seed design's `pullRequest`/`webhook`, custom plugins' configuration); the host
//!   validates them as it does in local mode and reports problems in the `Ready` condition.
//! - `Promotion` (`promoter.dev/v1alpha1`): one promotion, named deterministically from
//!   (pipeline, target environment, version), so a duplicate's create is an
//!   `AlreadyExists`. In Kubernetes mode these *are* the promotion records
//!   ([`crate::record::kube`]): created before the webhook answers 202, claimed by one
//!   replica at a time through optimistic concurrency on their status, approved by the
//!   annotation `promoter.dev/approved: "true"`. `kubectl get promotions` tells the story.

// Each `printcolumn(...)` repeats `type_ = …`; clippy reads them as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use crate::promotion::{AppRef, EventInfo, Target};
use crate::record::Phase;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An object whose fields the API server keeps as they are (validated by the host).
pub fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// A Weave GitOps pipeline: an app promoted through environments in order.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "pipelines.weave.works",
    version = "v1alpha1",
    kind = "Pipeline",
    namespaced,
    status = "PipelineStatus",
    printcolumn(name = "App Kind", type_ = "string", json_path = ".spec.appRef.kind"),
    printcolumn(name = "App Name", type_ = "string", json_path = ".spec.appRef.name"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PipelineSpec {
    /// The app deployed in every environment (no namespace: each target gives it).
    pub app_ref: AppRef,
    /// The environments, in promotion order.
    pub environments: Vec<EnvironmentSpec>,
    /// How versions are promoted (per environment `promotion` overrides it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub promotion: Option<serde_json::Value>,
    /// Suspended: events are recorded as held and nothing runs; when it is resumed, the
    /// newest held version per environment goes on (`promoter suspend|resume`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentSpec {
    pub name: String,
    pub targets: Vec<Target>,
    /// How versions are promoted into this environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub promotion: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: True when the pipeline is valid and served, else False with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Per environment: the latest promotion into it, and what waits for approval.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environments: BTreeMap<String, EnvironmentStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentStatus {
    /// A manual promotion into this environment waiting for approval (Weave's field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_approval: Option<WaitingApproval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_promotion: Option<LatestPromotion>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaitingApproval {
    pub revision: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatestPromotion {
    /// The Promotion resource's name.
    pub name: String,
    pub version: String,
    pub phase: Phase,
}

/// A request to promote one version into one environment of one pipeline. The spec is
/// the request only — what, and why — and cannot be changed once made; which strategy
/// runs, with which configuration and targets, is the Pipeline's in force when it runs.
/// Promoter creates one per promotion a Flux event asks for; anyone allowed to create
/// Promotions in a namespace may ask for one too (named
/// `promoter::decide::promotion_id`'s way), and Promoter checks it against the Pipeline
/// before anything runs. Annotate one waiting for approval with
/// `promoter.dev/approved: "true"` to approve it.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "promoter.dev",
    version = "v1alpha1",
    kind = "Promotion",
    namespaced,
    status = "PromotionStatus",
    shortname = "promo",
    // `kubectl get promotions --field-selector spec.pipeline=<name>` (Kubernetes 1.31+):
    // selects by any Pipeline name, also one too long for the promoter.dev/pipeline label.
    selectable = ".spec.pipeline",
    printcolumn(name = "Pipeline", type_ = "string", json_path = ".spec.pipeline"),
    printcolumn(name = "To", type_ = "string", json_path = ".spec.targetEnvironment"),
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.version"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Attempts", type_ = "integer", json_path = ".status.attempts"),
    printcolumn(
        name = "Holder",
        type_ = "string",
        json_path = ".status.holder",
        priority = "1"
    ),
    printcolumn(
        name = "Outcome",
        type_ = "string",
        json_path = ".status.outcomeUrl",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self == oldSelf",
    "message": "a Promotion's spec cannot be changed: it is a request; create another Promotion"
}]))]
pub struct PromotionSpec {
    /// The Pipeline's name (in the Promotion's namespace).
    #[schemars(length(max = 253))]
    pub pipeline: String,
    #[schemars(length(max = 253))]
    pub target_environment: String,
    #[schemars(length(max = 256))]
    pub version: String,
    /// The environment the version was deployed in, when a Flux event asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub source_environment: Option<String>,
    /// Why it was asked for, in a person's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub reason: Option<String>,
    /// Asks for a version older than the one in the environment now (a rollback).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollback: bool,
    /// The same version promoted into the same environment again is a new Promotion, its
    /// round one more than the last; the name is the id of that round. Absent: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub round: Option<u32>,
    /// The Flux event that asked for it, when one did (handed to the strategy as is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<EventInfo>,
}

/// No status yet means requested: no replica has checked it against its Pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromotionStatus {
    pub phase: Phase,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome_details: Option<String>,
    /// RFC 3339: not before this will the next attempt run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The replica running it (its pod name), while the phase is running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// RFC 3339: the holder renews its claim before this; after it, another replica
    /// resumes the promotion (same idempotency key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_until: Option<String>,
    /// The strategy plugin that runs it: the Pipeline's in force when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// How the approval was authorised (`annotation`, `key <ns>/<Secret>`, `user <name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// Who asked for it through the admin API (a request created with kubectl: absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// Who last ran it again after it failed, and when (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retried_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retried_at: Option<String>,
    /// Rejected or aborted: by whom; superseded: by which version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_reason: Option<String>,
    /// `Accepted`: True once the request was checked against its Pipeline, False with the
    /// reason when the Pipeline does not allow it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Both CRDs as YAML documents, as `promoter crds` prints them and the chart ships them.
pub fn crds_yaml() -> Vec<(&'static str, String)> {
    use kube::CustomResourceExt;
    let yaml = |mut crd: CustomResourceDefinition| {
        let annotations = crd.metadata.annotations.get_or_insert_default();
        annotations.insert(REVISION_ANNOTATION.into(), CRD_REVISION.to_string());
        serde_yaml_ng::to_string(&crd).expect("a CRD serializes")
    };
    vec![
        ("pipelines.yaml", yaml(Pipeline::crd())),
        ("promotions.yaml", yaml(Promotion::crd())),
    ]
}

/// Which CRDs an installed CRD is: the annotation carries [`CRD_REVISION`] of the Promoter
/// that generated it. Weave's CRD, or one from before the annotation, has none.
pub const REVISION_ANNOTATION: &str = "promoter.dev/crd-revision";

/// Raised whenever the generated CRDs change (a test pins their digest to it), so that a
/// Promoter can tell that the installed CRDs are older than the ones it was built with.
pub const CRD_REVISION: u32 = 4;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// What is wrong with an installed CRD for this Promoter, if anything: Weave's closed
/// Pipeline schema (the API server drops `strategy.plugin`, `baseBranch`, Promoter's
/// status fields), or an older Promoter's.
pub fn installed_problem(installed: &CustomResourceDefinition) -> Option<String> {
    let name = installed.metadata.name.as_deref().unwrap_or_default();
    let revision = installed
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION_ANNOTATION))
        .and_then(|r| r.parse::<u32>().ok());
    let fix = "apply the CRDs this Promoter was built with: \
               `promoter crds | kubectl apply --server-side --force-conflicts -f -` \
               (or `helm upgrade` with crds.enabled=true), then restart the controller";
    match revision {
        Some(r) if r >= CRD_REVISION => None,
        Some(r) => Some(format!(
            "the installed CRD {name} is an older Promoter's (revision {r}; this Promoter \
             needs {CRD_REVISION}): fields it added are dropped by the API server; {fix}"
        )),
        None if name == "pipelines.pipelines.weave.works" => Some(format!(
            "the installed CRD {name} is Weave pipeline-controller's (or an early \
             Promoter's): its closed schema makes the API server drop strategy.plugin, \
             baseBranch, the seed dialect's pullRequest/webhook and Promoter's status \
             fields from every Pipeline; {fix}"
        )),
        None => Some(format!(
            "the installed CRD {name} predates CRD revisions (revision {CRD_REVISION} \
             needed); {fix}"
        )),
    }
}

#[cfg(test)]
mod revision_tests {
    use super::*;
    use sha2::Digest as _;

    /// The digest of the generated CRDs at [`CRD_REVISION`].
    const DIGEST: &str = "36b9f7598f6886662049720530596af67c04ca26a9dbf694a3fcfc12a7f34966";

    #[test]
    fn a_change_to_the_generated_crds_raises_their_revision() {
        let mut hash = sha2::Sha256::new();
        for (_, yaml) in crds_yaml() {
            hash.update(yaml.as_bytes());
        }
        let digest = hex::encode(hash.finalize());
        assert_eq!(
            digest, DIGEST,
            "the generated CRDs changed: raise CRD_REVISION (a Promoter built from this \
             will then say that clusters with the older CRDs need them applied), set \
             DIGEST to the new digest, and regenerate charts/promoter/files/crds"
        );
    }

    fn installed(name: &str, revision: Option<&str>) -> CustomResourceDefinition {
        let mut crd: CustomResourceDefinition = serde_yaml_ng::from_str(&crds_yaml()[0].1).unwrap();
        crd.metadata.name = Some(name.into());
        let annotations = crd.metadata.annotations.get_or_insert_default();
        annotations.remove(REVISION_ANNOTATION);
        if let Some(r) = revision {
            annotations.insert(REVISION_ANNOTATION.into(), r.into());
        }
        crd
    }

    #[test]
    fn weaves_crd_and_older_promoters_are_named_with_the_command_that_fixes_them() {
        let weave = installed_problem(&installed("pipelines.pipelines.weave.works", None));
        let weave = weave.expect("Weave's CRD has no revision");
        assert!(weave.contains("Weave pipeline-controller's"), "{weave}");
        assert!(weave.contains("strategy.plugin"), "{weave}");
        assert!(
            weave.contains("promoter crds | kubectl apply --server-side"),
            "{weave}"
        );
        let older = installed_problem(&installed("promotions.promoter.dev", Some("1")));
        let older = older.expect("revision 1 is older");
        assert!(older.contains("older Promoter's (revision 1"), "{older}");
        let current = CRD_REVISION.to_string();
        let newer = (CRD_REVISION + 1).to_string();
        for ok in [current.as_str(), newer.as_str()] {
            let crd = installed("pipelines.pipelines.weave.works", Some(ok));
            assert_eq!(
                installed_problem(&crd),
                None,
                "revision {ok}: a newer CRD (a rolling upgrade) is fine"
            );
        }
    }
}
