//! Local mode's view of a cluster: the Pipelines, Secrets and ConfigMaps of a folder of
//! manifests, validated together with every problem reported at once.

use super::{API_VERSION, GROUP, KIND, Pipeline, object_key, strategy::describe};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Label that marks a ConfigMap as the source of a strategy plugin.
pub const PLUGIN_LABEL: &str = "promoter.dev/plugin";

/// A Secret's (namespace, name).
pub type SecretKey = (String, String);

#[derive(Debug, Clone, Default)]
pub struct Manifests {
    pub pipelines: Vec<Pipeline>,
    pub secrets: Vec<Secret>,
    pub config_maps: Vec<ConfigMap>,
    /// Namespaces with their labels, for plugin grants' `namespaceSelector`: in a folder,
    /// the `Namespace` objects it holds; in Kubernetes mode, listed when a grant has one.
    pub namespaces: Vec<Namespace>,
    /// Secrets looked up, as (namespace, name), while loading from the API: in Kubernetes
    /// mode, Secrets are read by name, and these are the names to read. `None` (a folder,
    /// or once loaded): lookups cost nothing on the event path.
    looked_up: Option<Arc<Mutex<BTreeSet<SecretKey>>>>,
}

/// A v1 Secret. `stringData` wins over `data` per key, as the API server does it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    pub namespace: String,
    pub name: String,
    pub type_: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Among them [`super::consent::ALLOWED_HOSTS`]: where its values may be sent.
    pub annotations: BTreeMap<String, String>,
    pub data: BTreeMap<String, Vec<u8>>,
}

/// A v1 Namespace: its name and labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// A v1 ConfigMap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigMap {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub data: BTreeMap<String, String>,
    pub binary_data: BTreeMap<String, Vec<u8>>,
}

/// One thing wrong in one manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file (or source name) the object came from.
    pub file: String,
    /// `Kind namespace/name` when the problem belongs to an object.
    pub object: Option<String>,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read manifests folder {}: {source}", path.display())]
    Folder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} in manifests {}:\n  {}", count(problems), path.display(), join(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn count(problems: &[Problem]) -> String {
    match problems.len() {
        1 => "1 problem".into(),
        n => format!("{n} problems"),
    }
}

fn join(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
    lines.join("\n  ")
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.object {
            Some(object) => write!(f, "{}: {object}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl fmt::Debug for Secret {
    /// Never prints the values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("type_", &self.type_)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Secret {
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.data.get(key).map(Vec::as_slice)
    }

    /// The key that signs webhook events, as Weave named it.
    pub fn hmac_key(&self) -> Option<&[u8]> {
        self.get("hmac-key").filter(|k| !k.is_empty())
    }
}

impl ConfigMap {
    /// Labelled `promoter.dev/plugin: "true"`.
    pub fn is_plugin_source(&self) -> bool {
        self.labels.get(PLUGIN_LABEL).map(String::as_str) == Some("true")
    }
}

impl Manifests {
    /// Reads every `*.yaml`, `*.yml` and `*.json` file under `dir` (sub-folders included,
    /// hidden ones skipped), in name order. Kinds other than Pipeline, Secret, ConfigMap and Namespace
    /// are skipped.
    pub fn load_dir(dir: &Path) -> Result<Manifests, LoadError> {
        let mut files = Vec::new();
        collect_files(dir, &mut files).map_err(|source| LoadError::Folder {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut loader = Loader::default();
        for file in files {
            let label = file
                .strip_prefix(dir)
                .unwrap_or(&file)
                .display()
                .to_string();
            match std::fs::read_to_string(&file) {
                Ok(text) => loader.add_text(&label, &text, is_json(&file)),
                Err(e) => loader.problem(&label, None, format!("cannot read: {e}")),
            }
        }
        loader.finish(dir)
    }

    /// Parses one YAML (or JSON) text of one or more documents; `source` names it in messages.
    pub fn from_yaml(source: &str, text: &str) -> Result<Manifests, LoadError> {
        let mut loader = Loader::default();
        loader.add_text(source, text, false);
        loader.finish(Path::new(source))
    }

    pub fn pipeline(&self, namespace: &str, name: &str) -> Option<&Pipeline> {
        self.pipelines
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
    }

    /// The labels of `namespace`, when its Namespace object is known.
    pub fn namespace_labels(&self, namespace: &str) -> Option<&BTreeMap<String, String>> {
        self.namespaces
            .iter()
            .find(|n| n.name == namespace)
            .map(|n| &n.labels)
    }

    pub fn secret(&self, namespace: &str, name: &str) -> Option<&Secret> {
        if let Some(looked_up) = &self.looked_up {
            let key = (namespace.to_string(), name.to_string());
            looked_up.lock().unwrap().insert(key);
        }
        self.secrets
            .iter()
            .find(|s| s.namespace == namespace && s.name == name)
    }

    /// Secrets looked up since these manifests were made, found or not.
    pub fn secrets_looked_up(&self) -> BTreeSet<(String, String)> {
        self.looked_up
            .as_ref()
            .map(|l| l.lock().unwrap().clone())
            .unwrap_or_default()
    }

    /// Stops recording lookups: the load is complete.
    pub fn loaded(&mut self) {
        self.looked_up = None;
    }

    /// Objects as the API server serves them (JSON, each with apiVersion and kind), in
    /// Kubernetes mode: unlike a folder, one bad object does not stop the rest; it is
    /// left out and its problems returned.
    pub fn from_objects(objects: &[Value]) -> (Manifests, Vec<Problem>) {
        let mut loader = Loader::default();
        loader.manifests.looked_up = Some(Arc::default());
        for object in objects {
            loader.add_object("the API server", object);
        }
        (loader.manifests, loader.problems)
    }

    /// ConfigMaps labelled as plugin sources.
    pub fn plugin_sources(&self) -> impl Iterator<Item = &ConfigMap> {
        self.config_maps.iter().filter(|c| c.is_plugin_source())
    }
}

fn is_json(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "json")
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if entry.file_type()?.is_dir() {
            collect_files(&path, out)?;
        } else if path
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        {
            out.push(path);
        }
    }
    Ok(())
}

#[derive(Default)]
struct Loader {
    manifests: Manifests,
    problems: Vec<Problem>,
    /// (kind, namespace, name) -> file that defined it first.
    seen: HashMap<(&'static str, String, String), String>,
}

impl Loader {
    fn problem(&mut self, file: &str, object: Option<String>, message: String) {
        self.problems.push(Problem {
            file: file.to_string(),
            object,
            message,
        });
    }

    fn add_text(&mut self, file: &str, text: &str, json: bool) {
        if json {
            match serde_json::from_str::<Value>(text) {
                Ok(v) => self.add_object(file, &v),
                Err(e) => self.problem(file, None, format!("not valid JSON: {e}")),
            }
            return;
        }
        for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            match Value::deserialize(doc) {
                Ok(v) => self.add_object(file, &v),
                Err(e) => {
                    // The rest of the stream cannot be trusted after a syntax error.
                    let message = format!("document {}: not valid YAML: {e}", i + 1);
                    self.problem(file, None, message);
                    break;
                }
            }
        }
    }

    fn add_object(&mut self, file: &str, object: &Value) {
        let api_version = object.get("apiVersion").and_then(Value::as_str);
        let kind = object.get("kind").and_then(Value::as_str);
        let (Some(api_version), Some(kind)) = (api_version, kind) else {
            if !object.is_null() {
                tracing::debug!(file, "skipping a document that has no apiVersion and kind");
            }
            return;
        };
        if kind.ends_with("List")
            && let Some(items) = object.get("items").and_then(Value::as_array)
        {
            for item in items {
                self.add_object(file, item);
            }
            return;
        }
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        match (group, kind) {
            (GROUP, KIND) if api_version != API_VERSION => {
                let (ns, name) = object_key(object);
                self.problem(
                    file,
                    Some(format!("{KIND} {ns}/{name}")),
                    format!("apiVersion: expected {API_VERSION}, found {api_version:?}"),
                );
            }
            (GROUP, KIND) => self.add_pipeline(file, object),
            ("", "Secret") if api_version == "v1" => self.add_secret(file, object),
            ("", "ConfigMap") if api_version == "v1" => self.add_config_map(file, object),
            ("", "Namespace") if api_version == "v1" => self.add_namespace(file, object),
            _ => tracing::debug!(
                file,
                api_version,
                kind,
                "skipping a kind Promoter does not read"
            ),
        }
    }

    /// Records that `kind ns/name` was seen in `file`; false (and a problem) if it was
    /// already defined.
    fn first_definition(&mut self, file: &str, kind: &'static str, object: &Value) -> bool {
        let (ns, name) = object_key(object);
        let label = format!("{kind} {ns}/{name}");
        match self.seen.get(&(kind, ns.clone(), name.clone())) {
            Some(first) => {
                let message = format!("defined more than once; first in {first}");
                self.problem(file, Some(label), message);
                false
            }
            None => {
                self.seen.insert((kind, ns, name), file.to_string());
                true
            }
        }
    }

    fn add_pipeline(&mut self, file: &str, object: &Value) {
        if !self.first_definition(file, KIND, object) {
            return;
        }
        let (ns, name) = object_key(object);
        match Pipeline::from_value(object) {
            Ok(p) => self.manifests.pipelines.push(p),
            Err(messages) => {
                for m in messages {
                    self.problem(file, Some(format!("{KIND} {ns}/{name}")), m);
                }
            }
        }
    }

    fn add_secret(&mut self, file: &str, object: &Value) {
        if !self.first_definition(file, "Secret", object) {
            return;
        }
        let (namespace, name) = object_key(object);
        let label = format!("Secret {namespace}/{name}");
        let mut problems = Vec::new();
        let mut data = decode_map(object.get("data"), "data", &mut problems);
        for (k, v) in string_map(object.get("stringData"), "stringData", &mut problems) {
            data.insert(k, v.into_bytes());
        }
        let type_ = object
            .get("type")
            .and_then(Value::as_str)
            .map(str::to_string);
        let labels = labels(object, &mut problems);
        let annotations = annotations(object, &mut problems);
        let secret = Secret {
            namespace,
            name,
            type_,
            labels,
            annotations,
            data,
        };
        if self.accept(file, &label, problems) {
            self.manifests.secrets.push(secret);
        }
    }

    fn add_config_map(&mut self, file: &str, object: &Value) {
        if !self.first_definition(file, "ConfigMap", object) {
            return;
        }
        let (namespace, name) = object_key(object);
        let label = format!("ConfigMap {namespace}/{name}");
        let mut problems = Vec::new();
        let data = string_map(object.get("data"), "data", &mut problems);
        let binary_data = decode_map(object.get("binaryData"), "binaryData", &mut problems);
        for key in binary_data.keys().filter(|k| data.contains_key(*k)) {
            problems.push(format!(
                "key {key:?} is in both data and binaryData; expected each key once"
            ));
        }
        let labels = labels(object, &mut problems);
        let annotations = annotations(object, &mut problems);
        let config_map = ConfigMap {
            namespace,
            name,
            labels,
            annotations,
            data,
            binary_data,
        };
        if self.accept(file, &label, problems) {
            self.manifests.config_maps.push(config_map);
        }
    }

    fn add_namespace(&mut self, file: &str, object: &Value) {
        if !self.first_definition(file, "Namespace", object) {
            return;
        }
        let (_, name) = object_key(object);
        let mut problems = Vec::new();
        let labels = labels(object, &mut problems);
        if self.accept(file, &format!("Namespace {name}"), problems) {
            self.manifests.namespaces.push(Namespace { name, labels });
        }
    }

    /// Reports the object's problems; true when it had none.
    fn accept(&mut self, file: &str, label: &str, problems: Vec<String>) -> bool {
        let ok = problems.is_empty();
        for m in problems {
            self.problem(file, Some(label.to_string()), m);
        }
        ok
    }

    fn finish(self, path: &Path) -> Result<Manifests, LoadError> {
        if self.problems.is_empty() {
            Ok(self.manifests)
        } else {
            Err(LoadError::Invalid {
                path: path.to_path_buf(),
                problems: self.problems,
            })
        }
    }
}

fn labels(object: &Value, problems: &mut Vec<String>) -> BTreeMap<String, String> {
    let value = object.get("metadata").and_then(|m| m.get("labels"));
    string_map(value, "metadata.labels", problems)
}

fn annotations(object: &Value, problems: &mut Vec<String>) -> BTreeMap<String, String> {
    let value = object.get("metadata").and_then(|m| m.get("annotations"));
    string_map(value, "metadata.annotations", problems)
}

fn string_map(
    value: Option<&Value>,
    field: &str,
    problems: &mut Vec<String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match value {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                match v {
                    Value::String(s) => {
                        out.insert(k.clone(), s.clone());
                    }
                    other => problems.push(format!(
                        "{field}.{k}: expected a string (quote numbers and booleans), found {}",
                        describe(Some(other))
                    )),
                }
            }
        }
        Some(other) => problems.push(format!(
            "{field}: expected a mapping of strings, found {}",
            describe(Some(other))
        )),
    }
    out
}

fn decode_map(
    value: Option<&Value>,
    field: &str,
    problems: &mut Vec<String>,
) -> BTreeMap<String, Vec<u8>> {
    let engine = &base64::engine::general_purpose::STANDARD;
    let mut out = BTreeMap::new();
    for (k, v) in string_map(value, field, problems) {
        let compact: String = v.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        match engine.decode(compact.as_bytes()) {
            Ok(bytes) => {
                out.insert(k, bytes);
            }
            Err(e) => problems.push(format!("{field}.{k}: expected base64, found text ({e})")),
        }
    }
    out
}
