//! The client side of Promoter's HTTP APIs: what `promoter event send`, `promoter
//! approve` and `promoter promotions` do, and what tests use to talk to a server.

use crate::signature::{Algorithm, sign_hex};
use serde::Serialize;
use std::collections::BTreeMap;

/// A Flux event exactly as notification-controller's generic providers post it (field
/// order included).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FluxEventBody {
    pub involved_object: InvolvedObject,
    pub severity: String,
    pub timestamp: String,
    pub message: String,
    pub reason: String,
    pub metadata: BTreeMap<String, String>,
    pub reporting_controller: String,
    pub reporting_instance: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InvolvedObject {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub api_version: String,
    pub resource_version: String,
}

/// What a successful deployment of `version` looks like coming from Flux.
pub fn deployment_event(kind: &str, namespace: &str, name: &str, version: &str) -> FluxEventBody {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let (api_version, reason, message, controller, revision) = if kind == "Kustomization" {
        (
            "kustomize.toolkit.fluxcd.io/v1",
            "ReconciliationSucceeded",
            format!("Reconciliation finished, next run in 10m0s; applied revision {version}"),
            "kustomize-controller",
            version.to_string(),
        )
    } else {
        (
            "helm.toolkit.fluxcd.io/v2",
            "UpgradeSucceeded",
            format!(
                "Helm upgrade succeeded for release {namespace}/{name}.v2 with chart {name}@{version}"
            ),
            "helm-controller",
            version.to_string(),
        )
    };
    FluxEventBody {
        involved_object: InvolvedObject {
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid: format!("{:08x}-0000-4000-8000-000000000000", crc(namespace, name)),
            api_version: api_version.to_string(),
            resource_version: "1".into(),
        },
        severity: "info".into(),
        timestamp: now,
        message,
        reason: reason.into(),
        metadata: BTreeMap::from([("revision".to_string(), revision)]),
        reporting_controller: controller.into(),
        reporting_instance: format!("{controller}-7d9f8c6b5-x2x4z"),
    }
}

fn crc(a: &str, b: &str) -> u32 {
    a.bytes()
        .chain(b.bytes())
        .fold(2166136261u32, |h, c| (h ^ c as u32).wrapping_mul(16777619))
}

/// The body of an approval: what is approved and when, so a signature cannot be
/// replayed for another promotion or later.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalBody {
    pub namespace: String,
    pub name: String,
    pub environment: String,
    pub revision: String,
    pub timestamp: String,
}

/// `X-Signature` value for `body` under `key` (sha256, as Flux's generic-hmac).
pub fn signature_header(key: &[u8], body: &[u8]) -> String {
    format!("sha256={}", sign_hex(Algorithm::Sha256, key, body))
}

/// POSTs `body` to `url`, signed when a key is given. Returns status and response text.
pub async fn post_signed(
    url: &str,
    body: Vec<u8>,
    key: Option<&[u8]>,
) -> Result<(u16, String), reqwest::Error> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .header("gotk-component", "helm-controller");
    if let Some(key) = key {
        request = request.header("x-signature", signature_header(key, &body));
    }
    let response = request.body(body).send().await?;
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let mut text = response.text().await?;
    if let Some(location) = location {
        text = format!("{text}\nLocation: {location}");
    }
    Ok((status, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployment_event_serialises_in_fluxs_field_order() {
        let e = deployment_event("HelmRelease", "podinfo-dev", "podinfo", "6.5.4");
        let text = serde_json::to_string(&e).unwrap();
        let order = [
            "involvedObject",
            "severity",
            "timestamp",
            "message",
            "reason",
            "metadata",
            "reportingController",
            "reportingInstance",
        ];
        let positions: Vec<usize> = order
            .iter()
            .map(|k| text.find(&format!("\"{k}\"")).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(text.contains("\"revision\":\"6.5.4\""));
        assert!(text.contains("UpgradeSucceeded"));
    }
}
