//! The client side of Promoter's HTTP APIs: what `promoter event send`, `promoter
//! approve` and `promoter promotions` do, and what tests use to talk to a server.

use crate::signature::{Algorithm, sign_hex};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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

/// Where `promoter promotions` found the bearer token it sends to the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `--token-file` / `PROMOTER_TOKEN_FILE`.
    File(PathBuf),
    /// In a pod: its service account's token.
    ServiceAccount,
    /// The current context's user in a kubeconfig (KUBECONFIG or ~/.kube/config).
    Kubeconfig(PathBuf),
}

impl std::fmt::Display for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::File(path) => write!(f, "token file {}", path.display()),
            TokenSource::ServiceAccount => {
                write!(f, "service account token {SERVICE_ACCOUNT_TOKEN}")
            }
            TokenSource::Kubeconfig(path) => write!(f, "kubeconfig {}", path.display()),
        }
    }
}

/// Where a pod's service-account token is mounted.
pub const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the {source_name}: {error}")]
    Unreadable {
        source_name: String,
        error: std::io::Error,
    },
    #[error("the {0} is empty")]
    Empty(String),
}

/// The token for the admin API: the file given, else the service account's when running
/// in a pod, else the bearer token of the kubeconfig's current user (when it has one).
/// `None`: send none (a local server answering loopback callers needs none).
pub fn admin_token(file: Option<&Path>) -> Result<Option<(String, TokenSource)>, TokenError> {
    if let Some(file) = file {
        let source = TokenSource::File(file.to_path_buf());
        return read_token(file, &source).map(|t| Some((t, source)));
    }
    let service_account = Path::new(SERVICE_ACCOUNT_TOKEN);
    if service_account.exists() {
        let source = TokenSource::ServiceAccount;
        return read_token(service_account, &source).map(|t| Some((t, source)));
    }
    Ok(kubeconfig_token(kubeconfig_paths()))
}

fn read_token(path: &Path, source: &TokenSource) -> Result<String, TokenError> {
    let text = std::fs::read_to_string(path).map_err(|error| TokenError::Unreadable {
        source_name: source.to_string(),
        error,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenError::Empty(source.to_string()));
    }
    Ok(token.to_string())
}

/// The kubeconfig files kubectl reads: KUBECONFIG's list, else ~/.kube/config.
fn kubeconfig_paths() -> Vec<PathBuf> {
    match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        Some(list) => std::env::split_paths(&list).collect(),
        None => std::env::var_os("HOME")
            .map(|home| vec![Path::new(&home).join(".kube").join("config")])
            .unwrap_or_default(),
    }
}

/// The current context's user's `token` (or `tokenFile`), looked up as kubectl merges
/// KUBECONFIG's files: the first file to set a name wins.
fn kubeconfig_token(paths: Vec<PathBuf>) -> Option<(String, TokenSource)> {
    let files: Vec<(PathBuf, serde_json::Value)> = paths
        .into_iter()
        .filter_map(|path| {
            let text = std::fs::read_to_string(&path).ok()?;
            let config = serde_yaml_ng::from_str(&text).ok()?;
            Some((path, config))
        })
        .collect();
    let first_named = |list: &str, name: &str| {
        files.iter().find_map(|(path, config)| {
            let entries = config[list].as_array()?;
            let entry = entries.iter().find(|e| e["name"] == name)?;
            Some((path.clone(), entry.clone()))
        })
    };
    let context = files
        .iter()
        .find_map(|(_, c)| c["current-context"].as_str().filter(|s| !s.is_empty()))?;
    let (_, context) = first_named("contexts", context)?;
    let user = context["context"]["user"].as_str()?;
    let (path, user) = first_named("users", user)?;
    let source = TokenSource::Kubeconfig(path);
    if let Some(token) = user["user"]["token"].as_str().filter(|t| !t.is_empty()) {
        return Some((token.to_string(), source));
    }
    let file = user["user"]["tokenFile"].as_str()?;
    read_token(Path::new(file), &source)
        .ok()
        .map(|t| (t, source))
}

/// Whether a request to `url` crosses a network in clear text (http, not to loopback):
/// a bearer token sent there can be read on the way.
pub fn is_clear_text_remote(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or("");
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback());
    !loopback
}

/// GETs `url` from the admin API, with `token` as a bearer token when given. Returns the
/// status and the body (JSON, or the text as a JSON string).
pub async fn admin_get(
    url: &str,
    token: Option<&str>,
) -> Result<(u16, serde_json::Value), reqwest::Error> {
    admin_call(url, token, None).await
}

/// GETs `url` from the admin API, or POSTs `body` (JSON) to it, with `token` as a bearer
/// token when given. Returns the status and the body (JSON, or the text as a JSON string).
pub async fn admin_call(
    url: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> Result<(u16, serde_json::Value), reqwest::Error> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let mut request = match body {
        Some(body) => client.post(url).json(body),
        None => client.get(url),
    };
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    Ok((status, body))
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

    #[test]
    fn the_kubeconfig_token_is_the_current_contexts_users_across_merged_files() {
        let dir = std::env::temp_dir().join(format!("promoter-kubeconfig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = dir.join("first");
        let second = dir.join("second");
        std::fs::write(
            &first,
            "current-context: team-a\n\
             contexts: [{name: team-a, context: {cluster: c, user: alice}}]\n\
             users: [{name: bob, user: {token: bobs-token}}]\n",
        )
        .unwrap();
        std::fs::write(
            &second,
            "current-context: other\n\
             users: [{name: alice, user: {token: alices-token}}, {name: bob, user: {token: not-this}}]\n",
        )
        .unwrap();
        let got = kubeconfig_token(vec![first.clone(), second.clone()]).unwrap();
        assert_eq!(
            got,
            (
                "alices-token".into(),
                TokenSource::Kubeconfig(second.clone())
            )
        );
        // A user with a client certificate instead of a token: nothing to send.
        std::fs::write(
            &second,
            "users: [{name: alice, user: {client-certificate-data: AAAA}}]\n",
        )
        .unwrap();
        assert_eq!(kubeconfig_token(vec![first, second]), None);
        assert_eq!(kubeconfig_token(vec![dir.join("missing")]), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_token_is_in_clear_text_only_over_http_to_another_host() {
        for url in [
            "http://127.0.0.1:8080",
            "http://localhost:8080/",
            "http://[::1]:8080",
            "https://promoter.example.com",
        ] {
            assert!(!is_clear_text_remote(url), "{url}");
        }
        for url in [
            "http://promoter-metrics.promoter-system.svc:8080",
            "http://10.0.0.5:8080",
            "http://example.com",
        ] {
            assert!(is_clear_text_remote(url), "{url}");
        }
    }
}
