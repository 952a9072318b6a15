//! One `promotion` block, in any of the accepted shapes, turned into a [`PromotionSpec`].
//!
//! ```yaml
//! # Weave, as released (v0.0.31):
//! promotion:
//!   manual: true                      # optional
//!   strategy:
//!     pull-request: {type: github, url: https://…, baseBranch: main, secretRef: {name: …}}
//!     # or notification: {}
//!     secretRef: {name: hmac-secret}  # Secret with key hmac-key: signs events
//!     approvalSecretRef: {name: approvals}  # Secret with key hmac-key: signs approvals
//! # The seed design's:
//! promotion:
//!   manual: true                      # optional
//!   pullRequest: {url: https://…, branch: main, secretRef: name}
//!   # or webhook: {url: https://…, secretRef: name}
//!   secretRef: hmac-secret            # optional, name or {name}
//!   approvalSecretRef: approvals      # optional, name or {name}
//! # Ours, for any plugin:
//! promotion:
//!   strategy:
//!     plugin: {name: my-plugin, config: {any: yaml}}
//! ```

use super::StrategyRef;
use serde_json::{Map, Value, json};

/// One `promotion` block as written, before the override rules apply.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PromotionSpec {
    /// `None` when the block does not say.
    pub manual: Option<bool>,
    pub strategy: Option<StrategyRef>,
    pub hmac_secret: Option<String>,
    /// The Secret whose `hmac-key` signs approvals (`approvalSecretRef`).
    pub approval_secret: Option<String>,
    /// Problems were reported for this block (so a missing strategy is already explained).
    pub broken: bool,
}

/// The git forges Weave's `pull-request.type` named, plus Gitea.
const FORGES: &[&str] = &[
    "github",
    "gitlab",
    "gitea",
    "forgejo",
    "bitbucket-server",
    "azure-devops",
];

pub(super) fn parse_promotion(
    value: &Value,
    path: &str,
    problems: &mut Vec<String>,
) -> Option<PromotionSpec> {
    let Some(map) = value.as_object() else {
        problems.push(format!(
            "{path}: expected a mapping with strategy (or pullRequest or webhook), found {}",
            describe(Some(value))
        ));
        return None;
    };
    let before = problems.len();
    let mut manual = None;
    let mut hmac_secret = None;
    let mut approval_secret = None;
    // (where it was written, what it resolved to)
    let mut found: Vec<(String, StrategyRef)> = Vec::new();
    for (key, v) in map {
        let at = format!("{path}.{key}");
        match key.as_str() {
            "manual" => match v {
                Value::Bool(b) => manual = Some(*b),
                Value::Null => {}
                other => problems.push(format!(
                    "{at}: expected true or false, found {}",
                    describe(Some(other))
                )),
            },
            "strategy" => {
                let secrets = Secrets {
                    hmac: &mut hmac_secret,
                    approval: &mut approval_secret,
                };
                parse_weave_strategy(v, &at, problems, &mut found, secrets)
            }
            "pullRequest" => {
                if let Some(config) = seed_pull_request(v, &at, problems) {
                    found.push((at, strategy("pull-request", config)));
                }
            }
            "webhook" => {
                if let Some(config) = seed_webhook(v, &at, problems) {
                    found.push((at, strategy("webhook", config)));
                }
            }
            "secretRef" => hmac_secret = secret_name(v, &at, problems),
            "approvalSecretRef" => approval_secret = secret_name(v, &at, problems),
            _ => problems.push(format!(
                "{at}: unknown field; expected manual and strategy (Weave), \
                 or manual, pullRequest, webhook, secretRef and approvalSecretRef (seed design)"
            )),
        }
    }
    if found.len() > 1 {
        let list: Vec<String> = found
            .iter()
            .map(|(at, s)| format!("{} ({at})", s.plugin))
            .collect();
        problems.push(format!(
            "{path}: expected exactly one strategy, found {}",
            list.join(" and ")
        ));
        found.clear();
    }
    Some(PromotionSpec {
        manual,
        strategy: found.pop().map(|(_, s)| s),
        hmac_secret,
        approval_secret,
        broken: problems.len() > before,
    })
}

/// Where a `strategy` block's Secret references go.
struct Secrets<'a> {
    hmac: &'a mut Option<String>,
    approval: &'a mut Option<String>,
}

fn parse_weave_strategy(
    value: &Value,
    path: &str,
    problems: &mut Vec<String>,
    found: &mut Vec<(String, StrategyRef)>,
    secrets: Secrets<'_>,
) {
    let Some(map) = value.as_object() else {
        problems.push(format!(
            "{path}: expected a mapping with one of pull-request, notification or plugin, found {}",
            describe(Some(value))
        ));
        return;
    };
    for (key, v) in map {
        let at = format!("{path}.{key}");
        match key.as_str() {
            "pull-request" => {
                if let Some(config) = weave_pull_request(v, &at, problems) {
                    found.push((at, strategy("pull-request", config)));
                }
            }
            "notification" => match v {
                Value::Null => found.push((at, strategy("notification", json!({})))),
                Value::Object(_) => found.push((at, strategy("notification", v.clone()))),
                other => problems.push(format!(
                    "{at}: expected {{}}, found {}",
                    describe(Some(other))
                )),
            },
            "plugin" => {
                if let Some(s) = plugin(v, &at, problems) {
                    found.push((at, s));
                }
            }
            "secretRef" => *secrets.hmac = secret_name(v, &at, problems),
            "approvalSecretRef" => *secrets.approval = secret_name(v, &at, problems),
            _ => problems.push(format!(
                "{at}: unknown strategy; expected pull-request, notification, plugin, \
                 secretRef or approvalSecretRef"
            )),
        }
    }
}

/// Weave's `pull-request`: handed to the plugin as written.
fn weave_pull_request(value: &Value, path: &str, problems: &mut Vec<String>) -> Option<Value> {
    let map = mapping(
        value,
        path,
        "{type, url, baseBranch, secretRef: {name}}",
        problems,
    )?;
    require_url(map, path, problems);
    if let Some(t) = map.get("type") {
        match t.as_str() {
            Some(t) if FORGES.contains(&t) => {}
            _ => problems.push(format!(
                "{path}.type: expected one of {}, found {}",
                FORGES.join(", "),
                describe(Some(t))
            )),
        }
    }
    Some(value.clone())
}

/// The seed design's `pullRequest {url, branch, secretRef}`: `branch` becomes `baseBranch`,
/// `secretRef` becomes `{name}`; any other field is passed on for the plugin to judge.
fn seed_pull_request(value: &Value, path: &str, problems: &mut Vec<String>) -> Option<Value> {
    let map = mapping(value, path, "{url, branch, secretRef?}", problems)?;
    require_url(map, path, problems);
    let mut config = Map::new();
    for (k, v) in map {
        match k.as_str() {
            "branch" => {
                config.insert("baseBranch".into(), v.clone());
            }
            "secretRef" => {
                if let Some(name) = secret_name(v, &format!("{path}.secretRef"), problems) {
                    config.insert("secretRef".into(), json!({ "name": name }));
                }
            }
            _ => {
                config.insert(k.clone(), v.clone());
            }
        }
    }
    Some(Value::Object(config))
}

/// The seed design's `webhook {url, secretRef}`; `secretRef` becomes `{name}`.
fn seed_webhook(value: &Value, path: &str, problems: &mut Vec<String>) -> Option<Value> {
    let map = mapping(value, path, "{url, secretRef?}", problems)?;
    require_url(map, path, problems);
    let mut config = map.clone();
    if let Some(v) = map.get("secretRef") {
        match secret_name(v, &format!("{path}.secretRef"), problems) {
            Some(name) => config.insert("secretRef".into(), json!({ "name": name })),
            None => config.remove("secretRef"),
        };
    }
    Some(Value::Object(config))
}

/// Our `plugin {name, config}`.
fn plugin(value: &Value, path: &str, problems: &mut Vec<String>) -> Option<StrategyRef> {
    let map = mapping(value, path, "{name, config?}", problems)?;
    let mut ok = true;
    for key in map
        .keys()
        .filter(|k| !matches!(k.as_str(), "name" | "config"))
    {
        problems.push(format!(
            "{path}.{key}: unknown field; expected name and config"
        ));
        ok = false;
    }
    let name = match map.get("name") {
        Some(Value::String(n)) if is_plugin_name(n) => n.clone(),
        other => {
            problems.push(format!(
                "{path}.name: expected a plugin name of lowercase letters, digits and '-', found {}",
                describe(other)
            ));
            return None;
        }
    };
    // Handed to the plugin as a JSON object, and what a Promotion's status and the admin
    // API show of it is one: a string or a list would load here and fail at every run.
    let config = match map.get("config") {
        None | Some(Value::Null) => json!({}),
        Some(c @ Value::Object(_)) => c.clone(),
        Some(other) => {
            problems.push(format!(
                "{path}.config: expected a mapping of the plugin's settings, found {}; write \
                 them as keys, e.g. `config: {{threshold: 3}}` (or leave config out)",
                describe(Some(other))
            ));
            return None;
        }
    };
    ok.then(|| strategy(&name, config))
}

fn is_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// A Secret reference: `name` or `{name: name}`.
fn secret_name(value: &Value, path: &str, problems: &mut Vec<String>) -> Option<String> {
    let name = match value {
        Value::String(s) => Some(s.as_str()),
        Value::Object(m) => m.get("name").and_then(Value::as_str),
        _ => None,
    };
    match name {
        Some(n) if !n.is_empty() => Some(n.to_string()),
        _ => {
            problems.push(format!(
                "{path}: expected a Secret name or {{name: <Secret name>}}, found {}",
                describe(Some(value))
            ));
            None
        }
    }
}

fn mapping<'a>(
    value: &'a Value,
    path: &str,
    shape: &str,
    problems: &mut Vec<String>,
) -> Option<&'a Map<String, Value>> {
    let map = value.as_object();
    if map.is_none() {
        problems.push(format!(
            "{path}: expected a mapping {shape}, found {}",
            describe(Some(value))
        ));
    }
    map
}

fn require_url(map: &Map<String, Value>, path: &str, problems: &mut Vec<String>) {
    match map.get("url") {
        Some(Value::String(u)) if !u.trim().is_empty() => {}
        other => problems.push(format!(
            "{path}.url: expected a URL, found {}",
            describe(other)
        )),
    }
}

fn strategy(plugin: &str, config: Value) -> StrategyRef {
    StrategyRef {
        plugin: plugin.to_string(),
        config,
    }
}

/// What was found where something else was expected, for messages.
pub(crate) fn describe(value: Option<&Value>) -> String {
    match value {
        None => "nothing".into(),
        Some(Value::Null) => "null".into(),
        Some(Value::Bool(b)) => format!("{b}"),
        Some(Value::Number(n)) => format!("the number {n}"),
        Some(Value::String(s)) if s.is_empty() => "\"\"".into(),
        Some(Value::String(s)) => format!("{s:?}"),
        Some(Value::Array(a)) if a.is_empty() => "an empty list".into(),
        Some(Value::Array(_)) => "a list".into(),
        Some(Value::Object(m)) => {
            let keys: Vec<&str> = m.keys().map(String::as_str).collect();
            if keys.is_empty() {
                "an empty mapping".into()
            } else {
                format!("a mapping with {}", keys.join(", "))
            }
        }
    }
}
