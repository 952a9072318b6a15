//! The Flux event as notification-controller's `generic` and `generic-hmac` providers POST it.
//!
//! ```json
//! {"involvedObject": {"kind": "HelmRelease", "namespace": "search", "name": "search",
//!   "uid": "…", "apiVersion": "helm.toolkit.fluxcd.io/v2", "resourceVersion": "155540"},
//!  "severity": "info", "timestamp": "2024-05-10T12:00:00Z",
//!  "message": "Helm upgrade succeeded for release search/search.v3 with chart search@1.2.0",
//!  "reason": "UpgradeSucceeded", "metadata": {"revision": "1.2.0"},
//!  "reportingController": "helm-controller", "reportingInstance": "helm-controller-7cdc7874f8-9qpft"}
//! ```
//!
//! Parsing reads the raw body (the same bytes the signature was checked over) and says which
//! field is missing or wrong. Fields Promoter does not use are ignored.

use crate::promotion::EventInfo;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FluxEvent {
    pub involved_object: ObjectReference,
    pub severity: Severity,
    /// RFC 3339, as sent; see [`FluxEvent::timestamp`].
    pub timestamp: String,
    pub message: String,
    pub reason: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub reporting_controller: String,
    #[serde(default)]
    pub reporting_instance: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub api_version: String,
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub resource_version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Trace,
    Info,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("event body is empty; expected a Flux event as JSON")]
    Empty,
    #[error("event body is not JSON: {0}")]
    NotJson(String),
    #[error("event field {field} is missing")]
    Missing { field: String },
    #[error("event field {field}: expected {expected}, found {found}")]
    Wrong {
        field: String,
        expected: &'static str,
        found: String,
    },
}

/// Metadata keys that carry the revision, in order of preference. Flux strips the group
/// prefix before posting; older controllers did not.
const REVISION_KEYS: &[&str] = &[
    "revision",
    "helm.toolkit.fluxcd.io/revision",
    "kustomize.toolkit.fluxcd.io/revision",
];

/// Parses a Flux event from the raw request body.
pub fn parse(body: &[u8]) -> Result<FluxEvent, EventError> {
    let mut json = serde_json::Deserializer::from_slice(body);
    match map_only::<_, Wire>(&mut json).and_then(|wire| json.end().map(|()| wire)) {
        Ok(wire) => wire.into_event().map_or_else(|| parse_fields(body), Ok),
        Err(_) => parse_fields(body),
    }
}

/// Reads a `T` from a JSON object only (a derived struct would also take an array).
fn map_only<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Object<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Object<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_map(Object(std::marker::PhantomData))
}

/// An event as Flux sends it, read straight into strings. Anything else (a null, a
/// number, a duplicate key, a blank required field, a bad timestamp) is left to
/// [`parse_fields`], which accepts or refuses it and says what is wrong; this is the
/// fast path for the common case, and accepts nothing `parse_fields` would refuse.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    #[serde(deserialize_with = "map_only")]
    involved_object: WireObject,
    severity: Severity,
    timestamp: String,
    message: String,
    reason: String,
    metadata: Option<BTreeMap<String, String>>,
    reporting_controller: Option<String>,
    reporting_instance: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireObject {
    kind: String,
    namespace: String,
    name: String,
    api_version: String,
    uid: Option<String>,
    resource_version: Option<String>,
}

impl Wire {
    fn into_event(self) -> Option<FluxEvent> {
        let o = self.involved_object;
        let blank = |s: &str| s.trim().is_empty();
        if [
            &o.kind,
            &o.namespace,
            &o.name,
            &o.api_version,
            &self.timestamp,
            &self.reason,
        ]
        .iter()
        .any(|s| blank(s))
            || self.timestamp.parse::<jiff::Timestamp>().is_err()
        {
            return None;
        }
        Some(FluxEvent {
            involved_object: ObjectReference {
                kind: o.kind,
                namespace: o.namespace,
                name: o.name,
                api_version: o.api_version,
                uid: o.uid.unwrap_or_default(),
                resource_version: o.resource_version.unwrap_or_default(),
            },
            severity: self.severity,
            timestamp: self.timestamp,
            message: self.message,
            reason: self.reason,
            metadata: self.metadata.unwrap_or_default(),
            reporting_controller: self.reporting_controller.unwrap_or_default(),
            reporting_instance: self.reporting_instance.unwrap_or_default(),
        })
    }
}

/// Reads the event field by field, saying which one is missing or wrong.
fn parse_fields(body: &[u8]) -> Result<FluxEvent, EventError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(EventError::Empty);
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| EventError::NotJson(e.to_string()))?;
    let root = value
        .as_object()
        .ok_or_else(|| wrong("(body)", "a JSON object", &value))?;

    let object = match root.get("involvedObject") {
        Some(Value::Object(o)) => o,
        Some(other) => return Err(wrong("involvedObject", "an object", other)),
        None => return Err(missing("involvedObject")),
    };
    let involved_object = ObjectReference {
        kind: required(object, "kind", "involvedObject.kind")?,
        namespace: required(object, "namespace", "involvedObject.namespace")?,
        name: required(object, "name", "involvedObject.name")?,
        api_version: required(object, "apiVersion", "involvedObject.apiVersion")?,
        uid: optional(object, "uid", "involvedObject.uid")?,
        resource_version: optional(object, "resourceVersion", "involvedObject.resourceVersion")?,
    };
    let severity = match root.get("severity") {
        None => return Err(missing("severity")),
        Some(v) => match v.as_str() {
            Some("info") => Severity::Info,
            Some("error") => Severity::Error,
            Some("trace") => Severity::Trace,
            _ => return Err(wrong("severity", "info, error or trace", v)),
        },
    };
    let timestamp = required(root, "timestamp", "timestamp")?;
    if let Err(e) = timestamp.parse::<jiff::Timestamp>() {
        return Err(EventError::Wrong {
            field: "timestamp".into(),
            expected: "an RFC 3339 time such as 2024-05-10T12:00:00Z",
            found: format!("{timestamp:?} ({e})"),
        });
    }
    let metadata = match root.get("metadata") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(m)) => {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                match v {
                    Value::String(s) => {
                        out.insert(k.clone(), s.clone());
                    }
                    other => return Err(wrong(&format!("metadata.{k}"), "a string", other)),
                }
            }
            out
        }
        Some(other) => return Err(wrong("metadata", "an object of strings", other)),
    };
    Ok(FluxEvent {
        involved_object,
        severity,
        timestamp,
        message: required_allow_empty(root, "message")?,
        reason: required(root, "reason", "reason")?,
        metadata,
        reporting_controller: optional(root, "reportingController", "reportingController")?,
        reporting_instance: optional(root, "reportingInstance", "reportingInstance")?,
    })
}

impl FluxEvent {
    /// The deployed revision: the chart version of a HelmRelease, `<branch>@sha1:<sha>` of a
    /// Kustomization. `None` when the metadata has none (or an empty one).
    pub fn revision(&self) -> Option<&str> {
        REVISION_KEYS
            .iter()
            .filter_map(|k| self.metadata.get(*k))
            .map(|v| v.trim())
            .find(|v| !v.is_empty())
    }

    /// When the event happened. Checked by [`parse`], so only a hand-built event fails here.
    pub fn timestamp(&self) -> Result<jiff::Timestamp, EventError> {
        self.timestamp.parse().map_err(|e| EventError::Wrong {
            field: "timestamp".into(),
            expected: "an RFC 3339 time such as 2024-05-10T12:00:00Z",
            found: format!("{:?} ({e})", self.timestamp),
        })
    }

    /// `Kind namespace/name` of the object the event is about.
    pub fn object_label(&self) -> String {
        let o = &self.involved_object;
        format!("{} {}/{}", o.kind, o.namespace, o.name)
    }
}

impl ObjectReference {
    /// API group of `apiVersion` (`helm.toolkit.fluxcd.io` of `helm.toolkit.fluxcd.io/v2`,
    /// empty for the core group's `v1`).
    pub fn group(&self) -> &str {
        api_group(&self.api_version)
    }
}

/// API group of an `apiVersion`: the part before the `/`, empty for the core group.
pub fn api_group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

impl From<&FluxEvent> for EventInfo {
    fn from(e: &FluxEvent) -> EventInfo {
        EventInfo {
            kind: e.involved_object.kind.clone(),
            name: e.involved_object.name.clone(),
            namespace: e.involved_object.namespace.clone(),
            reason: e.reason.clone(),
            severity: match e.severity {
                Severity::Trace => "trace",
                Severity::Info => "info",
                Severity::Error => "error",
            }
            .to_string(),
            message: e.message.clone(),
            timestamp: e.timestamp.clone(),
            reporting_controller: e.reporting_controller.clone(),
            metadata: e.metadata.clone(),
        }
    }
}

fn missing(field: &str) -> EventError {
    EventError::Missing {
        field: field.to_string(),
    }
}

fn wrong(field: &str, expected: &'static str, found: &Value) -> EventError {
    let found = match found {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.is_empty() => "an empty string".to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "a list".to_string(),
        Value::Object(_) => "an object".to_string(),
    };
    EventError::Wrong {
        field: field.to_string(),
        expected,
        found,
    }
}

/// A non-empty string.
fn required(map: &Map<String, Value>, key: &str, field: &str) -> Result<String, EventError> {
    match map.get(key) {
        None | Some(Value::Null) => Err(missing(field)),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(other) => Err(wrong(field, "a non-empty string", other)),
    }
}

/// A string that must be present but may be empty.
fn required_allow_empty(map: &Map<String, Value>, key: &str) -> Result<String, EventError> {
    match map.get(key) {
        None | Some(Value::Null) => Err(missing(key)),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(wrong(key, "a string", other)),
    }
}

/// A string or nothing; a number is taken as its text (some senders write resourceVersion so).
fn optional(map: &Map<String, Value>, key: &str, field: &str) -> Result<String, EventError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(other) => Err(wrong(field, "a string", other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The example event of the seed design (helm-controller for HelmRelease v2beta1).
    const SEED_EXAMPLE: &str = r#"{
      "involvedObject": {
        "kind": "HelmRelease",
        "namespace": "flux-system",
        "name": "metallb",
        "uid": "57c3579b-42da-4f27-afc5-8bd7778286e1",
        "apiVersion": "helm.toolkit.fluxcd.io/v2beta1",
        "resourceVersion": "155540"
      },
      "severity": "info",
      "timestamp": "2022-09-13T16:01:01Z",
      "message": "Helm upgrade succeeded",
      "reason": "info",
      "metadata": {
        "revision": "0.13.4",
        "summary": "foobar"
      },
      "reportingController": "helm-controller",
      "reportingInstance": "helm-controller-7cdc7874f8-9qpft"
    }"#;

    fn with(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
        let mut v: Value = serde_json::from_str(SEED_EXAMPLE).unwrap();
        edit(&mut v);
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn the_seed_design_example_event_parses_with_every_field() {
        let e = parse(SEED_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(e.involved_object.kind, "HelmRelease");
        assert_eq!(e.involved_object.namespace, "flux-system");
        assert_eq!(e.involved_object.name, "metallb");
        assert_eq!(e.involved_object.group(), "helm.toolkit.fluxcd.io");
        assert_eq!(e.involved_object.resource_version, "155540");
        assert_eq!(e.severity, Severity::Info);
        assert_eq!(e.reason, "info");
        assert_eq!(e.message, "Helm upgrade succeeded");
        assert_eq!(e.revision(), Some("0.13.4"));
        assert_eq!(e.reporting_controller, "helm-controller");
        assert_eq!(e.reporting_instance, "helm-controller-7cdc7874f8-9qpft");
        assert_eq!(e.timestamp().unwrap().as_second(), 1_663_084_861);
        assert_eq!(e.object_label(), "HelmRelease flux-system/metallb");
    }

    #[test]
    fn the_fast_path_gives_what_reading_field_by_field_gives_on_odd_bodies_too() {
        let mut bodies: Vec<Vec<u8>> = vec![
            SEED_EXAMPLE.as_bytes().to_vec(),
            with(|v| v["involvedObject"]["resourceVersion"] = json!(155540)),
            with(|v| v["involvedObject"]["uid"] = Value::Null),
            with(|v| {
                v["involvedObject"] = json!([
                    "HelmRelease",
                    "flux-system",
                    "metallb",
                    "helm.toolkit.fluxcd.io/v2",
                    "u",
                    "1"
                ])
            }),
            with(|v| v["involvedObject"]["name"] = json!("  ")),
            with(|v| v["message"] = Value::Null),
            with(|v| v["message"] = json!("")),
            with(|v| v["metadata"] = Value::Null),
            with(|v| v["metadata"]["revision"] = json!(13)),
            with(|v| v["severity"] = json!("warning")),
            with(|v| v["timestamp"] = json!("yesterday")),
            with(|v| v["reportingController"] = Value::Null),
            with(|v| {
                v.as_object_mut()
                    .unwrap()
                    .remove("reportingInstance")
                    .map(drop)
                    .unwrap()
            }),
            br#"["not", "an", "object"]"#.to_vec(),
            b"{} trailing".to_vec(),
            b"   ".to_vec(),
        ];
        // A duplicate key: the last one wins, as when reading into a tree.
        let text = SEED_EXAMPLE.replacen(
            r#""reason": "info","#,
            r#""reason": "x", "reason": "info","#,
            1,
        );
        bodies.push(text.into_bytes());
        for body in bodies {
            assert_eq!(
                parse(&body),
                parse_fields(&body),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn a_missing_field_is_named() {
        let body = with(|v| {
            v["involvedObject"]
                .as_object_mut()
                .unwrap()
                .remove("apiVersion");
        });
        let err = parse(&body).unwrap_err();
        assert_eq!(
            err.to_string(),
            "event field involvedObject.apiVersion is missing"
        );

        let body = with(|v| {
            v.as_object_mut().unwrap().remove("reason");
        });
        assert_eq!(
            parse(&body).unwrap_err().to_string(),
            "event field reason is missing"
        );
    }

    #[test]
    fn a_wrong_field_says_what_was_expected_and_what_came() {
        let body = with(|v| v["severity"] = "warning".into());
        assert_eq!(
            parse(&body).unwrap_err().to_string(),
            r#"event field severity: expected info, error or trace, found "warning""#
        );
        let body = with(|v| v["metadata"]["revision"] = 3.into());
        assert_eq!(
            parse(&body).unwrap_err().to_string(),
            "event field metadata.revision: expected a string, found the number 3"
        );
        let body = with(|v| v["timestamp"] = "yesterday".into());
        let err = parse(&body).unwrap_err().to_string();
        assert!(
            err.starts_with("event field timestamp: expected an RFC 3339 time"),
            "{err}"
        );
    }

    #[test]
    fn a_body_that_is_not_an_event_object_is_refused_clearly() {
        assert_eq!(parse(b"").unwrap_err(), EventError::Empty);
        assert!(matches!(
            parse(b"incompatible"),
            Err(EventError::NotJson(_))
        ));
        assert_eq!(
            parse(b"[1]").unwrap_err().to_string(),
            "event field (body): expected a JSON object, found a list"
        );
    }

    #[test]
    fn legacy_prefixed_revision_keys_are_read() {
        for key in [
            "helm.toolkit.fluxcd.io/revision",
            "kustomize.toolkit.fluxcd.io/revision",
        ] {
            let body = with(|v| v["metadata"] = serde_json::json!({ key: "main@sha1:abc" }));
            assert_eq!(
                parse(&body).unwrap().revision(),
                Some("main@sha1:abc"),
                "{key}"
            );
        }
        let body = with(|v| v["metadata"] = serde_json::json!({ "revision": "" }));
        assert_eq!(parse(&body).unwrap().revision(), None);
        let body = with(|v| {
            v.as_object_mut().unwrap().remove("metadata");
        });
        assert_eq!(parse(&body).unwrap().revision(), None);
    }

    #[test]
    fn a_timestamp_with_an_offset_and_fractions_is_accepted() {
        let body = with(|v| v["timestamp"] = "2024-05-10T14:00:00.5+02:00".into());
        let ts = parse(&body).unwrap().timestamp().unwrap();
        assert_eq!(ts.to_string(), "2024-05-10T12:00:00.5Z");
    }

    #[test]
    fn a_numeric_resource_version_is_taken_as_text() {
        let body = with(|v| v["involvedObject"]["resourceVersion"] = 2830123.into());
        let e = parse(&body).unwrap();
        assert_eq!(e.involved_object.resource_version, "2830123");
    }

    #[test]
    fn event_info_carries_what_the_plugin_sees() {
        let e = parse(SEED_EXAMPLE.as_bytes()).unwrap();
        let info = EventInfo::from(&e);
        assert_eq!(info.kind, "HelmRelease");
        assert_eq!(info.severity, "info");
        assert_eq!(info.metadata["revision"], "0.13.4");
    }
}
