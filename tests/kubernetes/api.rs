//! The fake Kubernetes API server the Kubernetes-mode tests run the real binary against.
//! It answers only the requests the chart's RBAC allows and records everything, so a
//! request outside that set fails the test. Like a real API server it keeps a
//! resourceVersion per object and refuses an update carrying a stale one (409 Conflict),
//! which is what keeps two replicas from claiming one promotion. It answers TokenReviews
//! for the tokens it knows (`Api::users`) and SubjectAccessReviews by evaluating the
//! Roles, ClusterRoles and their bindings among its objects (RBAC's rules: verbs, groups
//! and resources with `*`, User, Group and ServiceAccount subjects, and `system:masters`),
//! refusing reviews not shaped as authentication.k8s.io/v1 and authorization.k8s.io/v1
//! document them.
//!
//! As strict as the real server where Promoter could meet the difference: merge patches
//! merge (RFC 7386: `null` deletes a key, anything else is merged or replaced), creates and
//! status updates are checked against the generated CRD schemas (types, required fields,
//! enums, lengths) and labels against their syntax (422 Invalid), Secrets' `stringData`
//! is folded into `data`, a write that changes nothing keeps the resourceVersion, and a
//! list is served in pages of the `limit` asked for, joined by `continue` tokens.
//! Scenario knobs break watches the ways a real one breaks: closed early
//! ([`Api::close_watches`]), reset mid-event ([`Api::reset_watches`]), and expired across
//! an API server upgrade ([`Api::upgrade`]: 410 Gone, then a relist).

use crate::support::CLUSTER_ADMIN_TOKEN;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

pub(crate) const TOKEN: &str = "service-account-token-for-tests";
pub(crate) const CONTROLLER_NS: &str = "promoter-system";

#[derive(Default)]
pub(crate) struct Api {
    /// Objects as a user applied them (with apiVersion and kind).
    pub(crate) objects: Mutex<Vec<Value>>,
    /// Every request: "METHOD path?query".
    pub(crate) requests: Mutex<Vec<String>>,
    /// Requests outside what the chart's RBAC grants.
    pub(crate) refused: Mutex<Vec<String>>,
    /// Status patches: (namespace/name, patch body).
    pub(crate) patches: Mutex<Vec<(String, Value)>>,
    /// Events created (events.k8s.io/v1).
    pub(crate) events: Mutex<Vec<Value>>,
    /// The last resourceVersion given out.
    pub(crate) revision: std::sync::atomic::AtomicU64,
    /// Scenario "conflict on status update": the next status update recording a Promotion's
    /// outcome finds it changed by someone else (an annotation added): 409 Conflict.
    pub(crate) conflict_next: std::sync::atomic::AtomicBool,
    /// The Promotion CRD is not installed: its paths answer 404, as the API server does.
    pub(crate) no_promotion_crd: std::sync::atomic::AtomicBool,
    /// Names of objects whose update was refused with 409 Conflict.
    pub(crate) conflicts: Mutex<Vec<String>>,
    /// Every change to a Promotion, as a watch reports it: (resourceVersion, event).
    pub(crate) changes: Mutex<Vec<(u64, Value)>>,
    /// Bearer tokens the API server's authenticator knows: token -> (user, groups).
    pub(crate) users: Mutex<std::collections::BTreeMap<String, (String, Vec<String>)>>,
    /// TokenReviews received (bodies as sent).
    pub(crate) token_reviews: Mutex<Vec<Value>>,
    /// SubjectAccessReviews received (bodies as sent) and the answer given.
    pub(crate) access_reviews: Mutex<Vec<(Value, bool)>>,
    /// Reviews refused for not having the documented shape: what was wrong.
    pub(crate) malformed: Mutex<Vec<String>>,
    /// Every change to a Pipeline or a ConfigMap, as their watches report it:
    /// (resourceVersion, event).
    pub(crate) catalog_changes: Mutex<Vec<(u64, Value)>>,
    /// Scenario "API priority and fairness": the next this many lists (GET of a collection,
    /// not a watch) answer 429 TooManyRequests with `Retry-After: retry_after`.
    pub(crate) throttle_lists: std::sync::atomic::AtomicUsize,
    /// Likewise for the next this many Promotion creates (nothing is stored).
    pub(crate) throttle_creates: std::sync::atomic::AtomicUsize,
    /// Scenario "504 after commit": the next this many Promotion creates are stored (and
    /// watchers told) but answered 504 Timeout with `Retry-After: retry_after`, as an API
    /// server whose storage answered late does.
    pub(crate) timeout_after_commit: std::sync::atomic::AtomicUsize,
    /// Seconds the 429s and 504s above ask the client to wait.
    pub(crate) retry_after: std::sync::atomic::AtomicU64,
    /// Scenario "slow API server": each Pipeline status patch is answered (and applied) only
    /// this long after it arrived.
    pub(crate) slow_status: Mutex<Option<std::time::Duration>>,
    /// Writes refused with 422 Invalid: the causes given.
    pub(crate) invalid: Mutex<Vec<String>>,
    /// Bumped to end every watch open now ([`Api::close_watches`]).
    pub(crate) watch_epoch: std::sync::atomic::AtomicU64,
    /// Scenario "connection reset": open watches send half of their next event, then the
    /// connection is reset.
    pub(crate) reset_next: std::sync::atomic::AtomicBool,
    /// The oldest resourceVersion a watch may start from: older ones are answered with an
    /// ERROR event, 410 Gone ("too old resource version"), as after etcd's compaction.
    pub(crate) compacted: std::sync::atomic::AtomicU64,
    /// Watches answered 410 Gone.
    pub(crate) expired: std::sync::atomic::AtomicUsize,
    /// Scenario "API server unavailable for Promotions": lists and watches of Promotions
    /// answer 503 ServiceUnavailable.
    pub(crate) promotions_unavailable: std::sync::atomic::AtomicBool,
    /// Namespaces besides flux-system and the controller's whose Secrets the chart's
    /// `rbac.secrets.namespaces` lets Promoter get by name.
    pub(crate) secret_namespaces: Mutex<std::collections::BTreeSet<String>>,
}

impl Api {
    /// Gives `object` the next resourceVersion, as every write does.
    pub(crate) fn bump(&self, object: &mut Value) {
        use std::sync::atomic::Ordering;
        let v = self.revision.fetch_add(1, Ordering::SeqCst) + 1;
        object["metadata"]["resourceVersion"] = json!(v.to_string());
    }

    /// Notes a change of a Promotion (or of a Pipeline or ConfigMap) for its watchers.
    pub(crate) fn changed(&self, kind: &str, object: &Value) {
        if object["kind"] == "Promotion" {
            let version = object["metadata"]["resourceVersion"].as_str().unwrap();
            let event = json!({"type": kind, "object": object});
            let mut changes = self.changes.lock().unwrap();
            changes.push((version.parse().unwrap(), event));
        } else if object["kind"] == "Pipeline" || object["kind"] == "ConfigMap" {
            let version = object["metadata"]["resourceVersion"].as_str().unwrap();
            let event = json!({"type": kind, "object": object});
            let mut changes = self.catalog_changes.lock().unwrap();
            changes.push((version.parse().unwrap(), event));
        }
    }

    /// Stores `object` as a user's create would (a new resourceVersion, watchers told).
    pub(crate) fn add(&self, mut object: Value) {
        self.bump(&mut object);
        self.changed("ADDED", &object);
        self.objects.lock().unwrap().push(object);
    }

    /// Lists answered so far, of the collection at `path` (e.g.
    /// `/apis/pipelines.weave.works/v1alpha1/pipelines`), watches left out.
    pub(crate) fn lists_of(&self, path: &str) -> usize {
        let requests = self.requests.lock().unwrap();
        requests
            .iter()
            .filter(|r| {
                r.strip_prefix("GET ")
                    .and_then(|r| r.strip_prefix(path))
                    .is_some_and(|q| q.starts_with('?'))
            })
            .filter(|r| !r.contains("watch=true"))
            .count()
    }

    /// Changes a stored object as a user's update would (a new resourceVersion).
    pub(crate) fn update(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        change: impl FnOnce(&mut Value),
    ) {
        let mut objects = self.objects.lock().unwrap();
        let object = objects
            .iter_mut()
            .find(|o| {
                // Cluster-scoped objects have no namespace: "" names them.
                o["kind"] == kind
                    && o["metadata"]["namespace"].as_str().unwrap_or_default() == namespace
                    && o["metadata"]["name"] == name
            })
            .unwrap_or_else(|| panic!("no {kind} {namespace}/{name}"));
        let before = object.clone();
        change(object);
        if *object != before {
            self.bump(object);
            self.changed("MODIFIED", object);
        }
    }

    /// Ends every watch open now, cleanly, long before its timeout (as an API server does
    /// when it shuts down, or spreads its watches): the client watches again from the
    /// last resourceVersion it saw.
    pub(crate) fn close_watches(&self) {
        self.watch_epoch
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Open watches send half of their next event and then their connection is reset.
    pub(crate) fn reset_watches(&self) {
        self.reset_next
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// An API server upgrade: every watch closes, `change` happens while none is open,
    /// and the new server's watch history starts after it — a watch from any earlier
    /// resourceVersion is answered 410 Gone, so what `change` did is learnt only by
    /// listing again.
    pub(crate) fn upgrade(&self, change: impl FnOnce(&mut Vec<Value>)) {
        use std::sync::atomic::Ordering;
        // No watch hears of `change` (it is not among the changes watches replay), and
        // none reopened from before it is served: history starts after it, then the
        // watches open now close.
        change(&mut self.objects.lock().unwrap());
        let now = self.revision.fetch_add(1, Ordering::SeqCst) + 1;
        self.compacted.store(now, Ordering::SeqCst);
        self.close_watches();
    }

    /// Fails the test if any request asked for more than the chart's RBAC grants.
    pub(crate) fn assert_only_granted(&self) {
        let refused = self.refused.lock().unwrap().clone();
        assert!(
            refused.is_empty(),
            "requests outside the RBAC: {refused:#?}"
        );
        let malformed = self.malformed.lock().unwrap().clone();
        assert!(malformed.is_empty(), "malformed reviews: {malformed:#?}");
    }

    /// The authenticator learns `token` as `user` in `groups`.
    pub(crate) fn add_user(&self, token: &str, user: &str, groups: &[&str]) {
        let groups = groups.iter().map(|g| g.to_string()).collect();
        let mut users = self.users.lock().unwrap();
        users.insert(token.to_string(), (user.to_string(), groups));
    }

    /// RBAC's answer: the binding that allows `user` (in `groups`) to `verb` `resource`
    /// of `group` in `namespace`, if any.
    pub(crate) fn rbac_allows(
        &self,
        user: &str,
        groups: &[String],
        namespace: &str,
        verb: &str,
        group: &str,
        resource: &str,
    ) -> Option<String> {
        if groups.iter().any(|g| g == "system:masters") {
            return Some("system:masters".into());
        }
        let has = |list: &Value, want: &str| {
            list.as_array()
                .is_some_and(|l| l.iter().any(|v| v == want || v == "*"))
        };
        let subject = |s: &Value| match s["kind"].as_str() {
            Some("User") => s["name"] == user,
            Some("Group") => groups.iter().any(|g| s["name"] == g.as_str()),
            Some("ServiceAccount") => match (s["namespace"].as_str(), s["name"].as_str()) {
                (Some(ns), Some(name)) => user == format!("system:serviceaccount:{ns}:{name}"),
                _ => false,
            },
            _ => false,
        };
        let allows = |role: &Value| {
            role["rules"].as_array().is_some_and(|rules| {
                rules.iter().any(|r| {
                    has(&r["apiGroups"], group)
                        && has(&r["resources"], resource)
                        && has(&r["verbs"], verb)
                        && r["resourceNames"].as_array().is_none_or(|n| n.is_empty())
                })
            })
        };
        let bindings = self
            .of_kind("RoleBinding", Some(namespace))
            .into_iter()
            .chain(self.of_kind("ClusterRoleBinding", None));
        for binding in bindings {
            let bound = binding["subjects"]
                .as_array()
                .is_some_and(|s| s.iter().any(subject));
            if !bound {
                continue;
            }
            let role_name = binding["roleRef"]["name"].as_str().unwrap_or_default();
            let role = match binding["roleRef"]["kind"].as_str() {
                Some("Role") => self.find("Role", namespace, role_name),
                Some("ClusterRole") => self
                    .of_kind("ClusterRole", None)
                    .into_iter()
                    .find(|r| r["metadata"]["name"] == role_name),
                _ => None,
            };
            if role.as_ref().is_some_and(allows) {
                return Some(format!(
                    "RBAC: allowed by {} {:?} of {} {role_name:?}",
                    binding["kind"].as_str().unwrap_or_default(),
                    binding["metadata"]["name"],
                    binding["roleRef"]["kind"].as_str().unwrap_or_default(),
                ));
            }
        }
        None
    }

    pub(crate) fn list_version(&self) -> String {
        self.revision
            .load(std::sync::atomic::Ordering::SeqCst)
            .to_string()
    }

    pub(crate) fn of_kind(&self, kind: &str, namespace: Option<&str>) -> Vec<Value> {
        self.objects
            .lock()
            .unwrap()
            .iter()
            .filter(|o| o["kind"] == kind)
            .filter(|o| namespace.is_none_or(|ns| o["metadata"]["namespace"] == ns))
            .cloned()
            .collect()
    }

    pub(crate) fn find(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        self.of_kind(kind, Some(namespace))
            .into_iter()
            .find(|o| o["metadata"]["name"] == name)
    }

    /// The status of `pipeline` (namespace/name) as the API server holds it, once
    /// Promoter wrote one.
    pub(crate) fn status(&self, pipeline: &str) -> Option<Value> {
        let (ns, name) = pipeline.split_once('/').unwrap();
        self.find("Pipeline", ns, name)
            .map(|p| p["status"].clone())
            .filter(|s| !s.is_null())
    }

    pub(crate) fn ready(&self, pipeline: &str) -> Option<Value> {
        self.status(pipeline)
            .map(|status| status["conditions"][0].clone())
    }

    /// Writes so far: status patches (Pipelines and Promotions), Promotions created, Events.
    pub(crate) fn patch_count(&self) -> usize {
        let promotions = self.of_kind("Promotion", None);
        self.patches.lock().unwrap().len() + promotions.len() + self.events.lock().unwrap().len()
    }
}

pub(crate) fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({
        "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, axum::Json(body)).into_response()
}

/// A JSON merge patch applied as the API server applies one (RFC 7386): objects merge key
/// by key, `null` deletes the key, anything else replaces what was there.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// The generated CRDs (`promoter crds`, as the chart installs them): by kind, the
/// validator of the schema the API server checks each write of that kind against.
fn crd_schemas() -> &'static std::collections::BTreeMap<String, jsonschema::Validator> {
    static SCHEMAS: std::sync::OnceLock<std::collections::BTreeMap<String, jsonschema::Validator>> =
        std::sync::OnceLock::new();
    SCHEMAS.get_or_init(|| {
        promoter::cluster::crd::crds_yaml()
            .into_iter()
            .map(|(_, yaml)| {
                let crd: Value = serde_yaml_ng::from_str(&yaml).unwrap();
                let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_string();
                let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
                (kind, jsonschema::validator_for(schema).unwrap())
            })
            .collect()
    })
}

/// Drops null fields, as the API server prunes them before validating a custom resource.
fn without_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(without_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(without_nulls),
        _ => {}
    }
}

/// A label's name, or a label value when `value` (apimachinery's qualified-name and
/// label-value rules): at most 63 characters of alphanumerics, '-', '_' and '.',
/// beginning and ending with an alphanumeric; a value may be empty.
fn label_part_problem(text: &str, value: bool) -> Option<String> {
    if text.is_empty() {
        return (!value).then(|| "name part must be non-empty".to_string());
    }
    if text.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let inner = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    (!(inner && edge(text.chars().next()) && edge(text.chars().last()))).then(|| {
        "a valid label must be an empty string or consist of alphanumeric characters, '-', \
         '_' or '.', and must start and end with an alphanumeric character"
            .to_string()
    })
}

/// A DNS-1123 subdomain (an object's name, a label key's prefix): at most 253
/// characters of lowercase alphanumerics, '-' and '.', beginning and ending with an
/// alphanumeric.
fn subdomain_problem(text: &str) -> Option<String> {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let inner = text
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'));
    if text.len() > 253 {
        Some("must be no more than 253 characters".into())
    } else if !(inner && edge(text.chars().next()) && edge(text.chars().last())) {
        Some(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
             '-' or '.', and must start and end with an alphanumeric character"
                .into(),
        )
    } else {
        None
    }
}

/// What the API server refuses in `object` on a write, as "field: Invalid value: …"
/// causes: its name, its labels' keys and values and, for a custom resource, its CRD's
/// schema (nulls pruned first, as for a custom resource).
pub(crate) fn invalid_causes(object: &Value) -> Vec<String> {
    let mut causes = Vec::new();
    let meta = &object["metadata"];
    let name = meta["name"].as_str().unwrap_or_default();
    if let Some(why) = subdomain_problem(name) {
        causes.push(format!("metadata.name: Invalid value: {name:?}: {why}"));
    }
    if let Some(labels) = meta["labels"].as_object() {
        for (key, value) in labels {
            let (prefix, part) = match key.split_once('/') {
                Some((prefix, part)) => (Some(prefix), part),
                None => (None, key.as_str()),
            };
            let key_problem = prefix
                .and_then(subdomain_problem)
                .map(|why| format!("prefix part {why}"))
                .or_else(|| label_part_problem(part, false));
            if let Some(why) = key_problem {
                causes.push(format!("metadata.labels: Invalid value: {key:?}: {why}"));
            }
            match value.as_str() {
                Some(v) => {
                    if let Some(why) = label_part_problem(v, true) {
                        causes.push(format!("metadata.labels: Invalid value: {v:?}: {why}"));
                    }
                }
                None => causes.push(format!("metadata.labels.{key}: must be a string")),
            }
        }
    }
    if let Some(validator) = object["kind"].as_str().and_then(|k| crd_schemas().get(k)) {
        let mut pruned = object.clone();
        without_nulls(&mut pruned);
        for error in validator.iter_errors(&pruned) {
            let at = error.instance_path().to_string();
            let field = at.trim_start_matches('/').replace('/', ".");
            causes.push(format!("{field}: Invalid value: {error}"));
        }
    }
    causes
}

/// 422 Invalid for `object` when the API server would refuse it, recorded in
/// `Api::invalid`; None when it is valid.
pub(crate) fn refuse_invalid(api: &Api, object: &Value) -> Option<Response> {
    let causes = invalid_causes(object);
    if causes.is_empty() {
        return None;
    }
    api.invalid.lock().unwrap().extend(causes.iter().cloned());
    let kind = object["kind"].as_str().unwrap_or_default();
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let message = format!("{kind} {name:?} is invalid: {}", causes.join(", "));
    Some(status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message))
}

/// An object as `kubectl apply` leaves it on the API server: a Secret's `stringData` is
/// folded into `data` (base64), and the write is checked as the server checks it.
pub(crate) fn applied(mut object: Value) -> Result<Value, Vec<String>> {
    use base64::Engine;
    if object["kind"] == "Secret"
        && let Some(Value::Object(strings)) = object.as_object_mut().unwrap().remove("stringData")
    {
        for (key, value) in strings {
            let text = value.as_str().unwrap_or_default().to_string();
            let encoded = base64::engine::general_purpose::STANDARD.encode(text);
            object["data"][key] = json!(encoded);
        }
    }
    let causes = invalid_causes(&object);
    if causes.is_empty() {
        Ok(object)
    } else {
        Err(causes)
    }
}

/// The page of `items` a list's `query` asks for, as the API server serves one: at most
/// `limit` items (all without one), from where the `continue` token of the page before
/// left off; and the list's metadata, with the token of the next page while items are
/// left (opaque to clients; here the index of the next item).
pub(crate) fn page<'a>(
    items: impl IntoIterator<Item = &'a Value>,
    query: &str,
    version: String,
) -> (Vec<Value>, Value) {
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse::<usize>().ok())
    };
    let from = param("continue").unwrap_or(0);
    let limit = param("limit").filter(|l| *l > 0).unwrap_or(usize::MAX);
    let mut rest = items.into_iter().skip(from);
    // Only the page is copied: a list of thousands is asked for in pages.
    let page: Vec<Value> = rest.by_ref().take(limit).cloned().collect();
    let mut metadata = json!({"resourceVersion": version});
    if rest.next().is_some() {
        metadata["continue"] = json!((from + page.len()).to_string());
    }
    (page, metadata)
}

/// A page of a list (see [`page`]), as the API server serves it: items without
/// apiVersion and kind.
pub(crate) fn list(kind: &str, items: Vec<Value>, version: String, query: &str) -> Response {
    let (items, metadata) = page(&items, query, version);
    let items: Vec<Value> = items
        .into_iter()
        .map(|mut o| {
            let map = o.as_object_mut().unwrap();
            map.remove("apiVersion");
            map.remove("kind");
            o
        })
        .collect();
    axum::Json(json!({
        "apiVersion": "v1", "kind": format!("{kind}List"),
        "metadata": metadata, "items": items,
    }))
    .into_response()
}

/// An update (PUT) of `kind` `ns/name`: refused unless it carries the stored
/// resourceVersion; `apply` makes the change on the stored object.
pub(crate) fn update(
    api: &Api,
    kind: &str,
    ns: &str,
    name: &str,
    body: &[u8],
    apply: impl FnOnce(&mut Value, Value),
) -> Response {
    let new: Value = serde_json::from_slice(body).unwrap();
    let mut objects = api.objects.lock().unwrap();
    let Some(object) = objects.iter_mut().find(|o| {
        o["kind"] == kind && o["metadata"]["namespace"] == ns && o["metadata"]["name"] == name
    }) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{kind} {name:?} not found"),
        );
    };
    let outcome = new["status"]["phase"] == "succeeded";
    if kind == "Promotion"
        && outcome
        && api
            .conflict_next
            .swap(false, std::sync::atomic::Ordering::SeqCst)
    {
        object["metadata"]["annotations"]["example.com/touched-by"] = json!("someone else");
        api.bump(object);
        api.changed("MODIFIED", object);
    }
    if new["metadata"]["resourceVersion"] != object["metadata"]["resourceVersion"] {
        api.conflicts.lock().unwrap().push(name.to_string());
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {kind} {name:?}: the object has been modified; \
                 please apply your changes to the latest version and try again"
            ),
        );
    }
    let mut changed = object.clone();
    apply(&mut changed, new);
    if let Some(refused) = refuse_invalid(api, &changed) {
        return refused;
    }
    // A write that changes nothing keeps the resourceVersion (and tells no watcher).
    if changed != *object {
        *object = changed;
        api.bump(object);
        api.changed("MODIFIED", object);
    }
    axum::Json(object.clone()).into_response()
}

/// A watch of Promotions: every change after the resourceVersion asked for, one JSON
/// object per line, until the timeout asked for — or until [`Api::close_watches`] ends it,
/// or [`Api::reset_watches`] cuts it mid-event. A resourceVersion older than the history
/// kept ([`Api::upgrade`]) is answered with one ERROR event, 410 Gone, as the API server
/// answers it (the watch itself is a 200), and the stream ends.
pub(crate) fn watch(api: Arc<Api>, query: &str) -> Response {
    use std::sync::atomic::Ordering;
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let from = param("resourceVersion").unwrap_or(0);
    let until = std::time::Instant::now()
        + std::time::Duration::from_secs(param("timeoutSeconds").unwrap_or(290));
    let epoch = api.watch_epoch.load(Ordering::SeqCst);
    let compacted = api.compacted.load(Ordering::SeqCst);
    let lines: futures_util::stream::BoxStream<'static, Result<String, std::io::Error>> = if from
        < compacted
    {
        api.expired.fetch_add(1, Ordering::SeqCst);
        let gone = json!({"type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("too old resource version: {from} ({compacted})"),
            "reason": "Expired", "code": 410,
        }});
        Box::pin(futures_util::stream::iter([Ok(format!("{gone}\n"))]))
    } else {
        Box::pin(futures_util::stream::unfold(
            (0usize, false),
            move |(mut next, cut)| {
                let api = api.clone();
                async move {
                    if cut {
                        return Some((
                            Err(std::io::Error::other("connection reset")),
                            (next, true),
                        ));
                    }
                    while std::time::Instant::now() < until
                        && api.watch_epoch.load(Ordering::SeqCst) == epoch
                    {
                        let found = {
                            let changes = api.changes.lock().unwrap();
                            let at = (next..changes.len()).find(|&i| changes[i].0 > from);
                            next = changes.len();
                            at.map(|i| (i, changes[i].1.to_string()))
                        };
                        match found {
                            Some((i, line)) if api.reset_next.swap(false, Ordering::SeqCst) => {
                                // Half of the event, then the connection is reset.
                                let half = line[..line.len() / 2].to_string();
                                return Some((Ok(half), (i, true)));
                            }
                            Some((i, line)) => {
                                return Some((Ok(format!("{line}\n")), (i + 1, false)));
                            }
                            None => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                        }
                    }
                    None
                }
            },
        ))
    };
    Response::builder()
        .header("content-type", "application/json")
        .body(axum::body::Body::from_stream(lines))
        .unwrap()
}

/// A watch of Pipelines (every namespace) or of the ConfigMaps of `namespace` carrying the
/// label `selector` (`key=value`) asks for: each change after the resourceVersion asked
/// for, one JSON object per line, until the timeout asked for or the client goes. An
/// object that no longer carries the label is reported DELETED, as the API server does.
pub(crate) fn watch_catalog(
    api: Arc<Api>,
    query: &str,
    kind: &'static str,
    namespace: Option<String>,
    selector: Option<(String, String)>,
) -> Response {
    let number = |name: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.parse::<u64>().ok())
    };
    let mut after = number("resourceVersion").unwrap_or(0);
    let seconds = number("timeoutSeconds").unwrap_or(290);
    let (lines, mut rx) = tokio::sync::mpsc::channel::<String>(16);
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds);
        while tokio::time::Instant::now() < deadline {
            let fresh: Vec<(u64, Value)> = api
                .catalog_changes
                .lock()
                .unwrap()
                .iter()
                .filter(|(version, event)| {
                    let object = &event["object"];
                    *version > after
                        && object["kind"] == kind
                        && namespace
                            .as_ref()
                            .is_none_or(|ns| object["metadata"]["namespace"] == ns.as_str())
                })
                .cloned()
                .collect();
            for (version, mut event) in fresh {
                after = version;
                if let Some((key, value)) = &selector
                    && event["object"]["metadata"]["labels"][key.as_str()] != value.as_str()
                {
                    event["type"] = json!("DELETED");
                }
                if lines.send(format!("{event}\n")).await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    });
    let body = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|line| line.map(Ok::<_, std::io::Error>))
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(axum::body::Body::from_stream(body))
        .unwrap()
}

/// The scenario knobs that answer a request before it is looked at: 429 for a throttled
/// list or Promotion create, a pause before a slow Pipeline status patch.
async fn knobs(api: &Api, method: &Method, rest: &[&str], query: &str) -> Option<Response> {
    use std::sync::atomic::Ordering;
    let take = |knob: &std::sync::atomic::AtomicUsize| {
        knob.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    };
    // A collection's path has an odd number of segments: [resource] or
    // [namespaces, ns, resource].
    let list = *method == Method::GET && rest.len() % 2 == 1 && !query.contains("watch=true");
    let create = *method == Method::POST && rest.last() == Some(&"promotions");
    if (list && take(&api.throttle_lists)) || (create && take(&api.throttle_creates)) {
        let mut answer = status(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later".into(),
        );
        retry_after(api, &mut answer);
        return Some(answer);
    }
    let status_patch =
        *method == Method::PATCH && matches!(rest, ["namespaces", _, "pipelines", _, "status"]);
    let slow = *api.slow_status.lock().unwrap();
    if let (true, Some(delay)) = (status_patch, slow) {
        tokio::time::sleep(delay).await;
    }
    None
}

fn retry_after(api: &Api, answer: &mut Response) {
    let seconds = api.retry_after.load(std::sync::atomic::Ordering::SeqCst);
    answer
        .headers_mut()
        .insert("retry-after", seconds.to_string().parse().unwrap());
}

/// A Promotion create's answer, unless scenario "504 after commit" turns a stored one
/// into a timeout.
fn after_commit(api: &Api, created: Response) -> Response {
    use std::sync::atomic::Ordering;
    let knob = &api.timeout_after_commit;
    if created.status() != StatusCode::CREATED
        || knob
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_err()
    {
        return created;
    }
    let mut answer = status(
        StatusCode::GATEWAY_TIMEOUT,
        "Timeout",
        "Timeout: request did not complete within the allotted timeout".into(),
    );
    retry_after(api, &mut answer);
    answer
}

/// A create: the object gets its namespace and a resourceVersion; one that exists is
/// refused (checked and stored under one lock, so of two creates at once one fails).
pub(crate) fn create(api: &Api, mut object: Value, ns: &str, resource: &str) -> Response {
    object["metadata"]["namespace"] = json!(ns);
    if let Some(refused) = refuse_invalid(api, &object) {
        return refused;
    }
    api.bump(&mut object);
    let mut objects = api.objects.lock().unwrap();
    let same = |o: &Value| {
        o["kind"] == object["kind"]
            && o["metadata"]["namespace"] == ns
            && o["metadata"]["name"] == object["metadata"]["name"]
    };
    if objects.iter().any(same) {
        let name = &object["metadata"]["name"];
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{resource} {name} already exists"),
        );
    }
    objects.push(object.clone());
    api.changed("ADDED", &object);
    (StatusCode::CREATED, axum::Json(object)).into_response()
}

/// Checks `review` against its documented shape: apiVersion and kind, and the string
/// fields at each of `fields` (JSON pointers). Problems are recorded and refused (400).
pub(crate) fn malformed(
    api: &Api,
    review: &Value,
    api_version: &str,
    kind: &str,
    fields: &[&str],
) -> Option<Response> {
    let mut problems = Vec::new();
    if review["apiVersion"] != api_version {
        problems.push(format!(
            "apiVersion {} (want {api_version})",
            review["apiVersion"]
        ));
    }
    if review["kind"] != kind {
        problems.push(format!("kind {} (want {kind})", review["kind"]));
    }
    for field in fields {
        if review
            .pointer(field)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            problems.push(format!("{field} missing or empty"));
        }
    }
    if problems.is_empty() {
        return None;
    }
    let problem = format!("{kind}: {}", problems.join("; "));
    api.malformed.lock().unwrap().push(problem.clone());
    Some(status(StatusCode::BAD_REQUEST, "BadRequest", problem))
}

/// ClusterRole: tokenreviews create. Who a bearer token belongs to, as the API server's
/// authenticator says (an unknown token: not authenticated, with the error it gives).
pub(crate) fn token_review(api: &Api, body: &[u8]) -> Response {
    let review: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    api.token_reviews.lock().unwrap().push(review.clone());
    let wanted = ["/spec/token"];
    if let Some(refused) = malformed(
        api,
        &review,
        "authentication.k8s.io/v1",
        "TokenReview",
        &wanted,
    ) {
        return refused;
    }
    let token = review["spec"]["token"].as_str().unwrap();
    let known = api.users.lock().unwrap().get(token).cloned();
    let answer = match known {
        Some((user, groups)) => json!({
            "authenticated": true,
            "user": {"username": user, "uid": format!("uid-of-{user}"), "groups": groups},
            "audiences": ["https://kubernetes.default.svc.cluster.local"],
        }),
        None => json!({"user": {}, "error": "[invalid bearer token, token lookup failed]"}),
    };
    let body = json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
        "metadata": {"creationTimestamp": null}, "spec": review["spec"], "status": answer,
    });
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

/// ClusterRole: subjectaccessreviews create. RBAC's answer for the user, groups and
/// resource attributes asked about.
pub(crate) fn access_review(api: &Api, body: &[u8]) -> Response {
    let review: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let wanted = [
        "/spec/user",
        "/spec/resourceAttributes/namespace",
        "/spec/resourceAttributes/verb",
        "/spec/resourceAttributes/group",
        "/spec/resourceAttributes/resource",
    ];
    let kind = "SubjectAccessReview";
    if let Some(refused) = malformed(api, &review, "authorization.k8s.io/v1", kind, &wanted) {
        api.access_reviews.lock().unwrap().push((review, false));
        return refused;
    }
    let groups: Vec<String> = match &review["spec"]["groups"] {
        Value::Null => Vec::new(),
        Value::Array(groups) if groups.iter().all(Value::is_string) => groups
            .iter()
            .map(|g| g.as_str().unwrap().to_string())
            .collect(),
        other => {
            let problem = format!("{kind}: spec.groups {other} is not a list of strings");
            api.malformed.lock().unwrap().push(problem.clone());
            return status(StatusCode::BAD_REQUEST, "BadRequest", problem);
        }
    };
    let attributes = &review["spec"]["resourceAttributes"];
    let field = |name: &str| attributes[name].as_str().unwrap();
    let allowed = api.rbac_allows(
        review["spec"]["user"].as_str().unwrap(),
        &groups,
        field("namespace"),
        field("verb"),
        field("group"),
        field("resource"),
    );
    api.access_reviews
        .lock()
        .unwrap()
        .push((review.clone(), allowed.is_some()));
    let answer = match allowed {
        Some(reason) => json!({"allowed": true, "reason": reason}),
        None => json!({"allowed": false}),
    };
    let body = json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": kind,
        "metadata": {"creationTimestamp": null}, "spec": review["spec"], "status": answer,
    });
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

/// 415 for a PATCH that is not a JSON merge patch: the only kind this fake applies (a
/// real server would apply the others by their own rules, which no test here checks).
fn merge_patch_only(headers: &HeaderMap) -> Option<Response> {
    let kind = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    (kind != "application/merge-patch+json").then(|| {
        status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("the fake API server applies merge patches only, not {kind:?}"),
        )
    })
}

pub(crate) async fn handle(
    State(api): State<Arc<Api>>,
    method: Method,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let path = uri.path().to_string();
    let line = format!("{method} {path}?{}", query.clone().unwrap_or_default());
    api.requests.lock().unwrap().push(line.clone());
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {TOKEN}"))
    {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "no token".into());
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    // The group and version ("" for the core group), then the rest of the path.
    let (group, rest): (String, &[&str]) = match parts.as_slice() {
        ["api", "v1", rest @ ..] => ("v1".into(), rest),
        ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
        _ => (String::new(), &[]),
    };
    if let Some(answer) = knobs(&api, &method, rest, query.as_deref().unwrap_or_default()).await {
        return answer;
    }
    if group == "promoter.dev/v1alpha1"
        && api
            .no_promotion_crd
            .load(std::sync::atomic::Ordering::SeqCst)
    {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource".into(),
        );
    }
    let watching = query.as_deref().unwrap_or_default().contains("watch=true");
    match (method.as_str(), group.as_str(), rest) {
        // ClusterRole: pipelines watch.
        ("GET", "pipelines.weave.works/v1alpha1", ["pipelines"]) if watching => watch_catalog(
            api.clone(),
            &query.unwrap_or_default(),
            "Pipeline",
            None,
            None,
        ),
        // Role in the controller's namespace: configmaps watch, by the plugin label.
        ("GET", "v1", ["namespaces", ns, "configmaps"]) if watching && *ns == CONTROLLER_NS => {
            let selector = query.unwrap_or_default();
            assert!(
                selector.contains("labelSelector=promoter.dev%2Fplugin%3Dtrue"),
                "plugin ConfigMaps are watched by label: {selector}"
            );
            let label = ("promoter.dev/plugin".to_string(), "true".to_string());
            watch_catalog(
                api.clone(),
                &selector,
                "ConfigMap",
                Some(ns.to_string()),
                Some(label),
            )
        }
        // ClusterRole: pipelines list.
        ("GET", "pipelines.weave.works/v1alpha1", ["pipelines"]) => list(
            "Pipeline",
            api.of_kind("Pipeline", None),
            api.list_version(),
            query.as_deref().unwrap_or_default(),
        ),
        // ClusterRole: pipelines/status patch.
        (
            "PATCH",
            "pipelines.weave.works/v1alpha1",
            ["namespaces", ns, "pipelines", name, "status"],
        ) => {
            if let Some(refused) = merge_patch_only(&headers) {
                return refused;
            }
            let patch: Value = serde_json::from_slice(&body).unwrap();
            let key = format!("{ns}/{name}");
            let mut objects = api.objects.lock().unwrap();
            let found = objects.iter_mut().find(|o| {
                o["kind"] == "Pipeline"
                    && o["metadata"]["namespace"] == *ns
                    && o["metadata"]["name"] == *name
            });
            match found {
                Some(p) => {
                    api.patches.lock().unwrap().push((key, patch.clone()));
                    // The status subresource: only the status is patched.
                    let mut changed = p.clone();
                    merge_patch(&mut changed, &json!({"status": patch["status"]}));
                    if let Some(refused) = refuse_invalid(&api, &changed) {
                        return refused;
                    }
                    if changed != *p {
                        *p = changed;
                        api.bump(p);
                        api.changed("MODIFIED", p);
                    }
                    axum::Json(p.clone()).into_response()
                }
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("pipelines {name:?} not found"),
                ),
            }
        }
        // ClusterRole: pipelines patch: spec.suspend, from the admin API's suspend/resume.
        ("PATCH", "pipelines.weave.works/v1alpha1", ["namespaces", ns, "pipelines", name]) => {
            if let Some(refused) = merge_patch_only(&headers) {
                return refused;
            }
            let patch: Value = serde_json::from_slice(&body).unwrap();
            let mut objects = api.objects.lock().unwrap();
            let found = objects.iter_mut().find(|o| {
                o["kind"] == "Pipeline"
                    && o["metadata"]["namespace"] == *ns
                    && o["metadata"]["name"] == *name
            });
            let Some(p) = found else {
                return status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("pipelines {name:?} not found"),
                );
            };
            // The main resource: the status is the subresource's, never patched here.
            let mut changed = p.clone();
            let mut spec_only = patch.clone();
            if let Some(o) = spec_only.as_object_mut() {
                o.remove("status");
            }
            merge_patch(&mut changed, &spec_only);
            if let Some(refused) = refuse_invalid(&api, &changed) {
                return refused;
            }
            if changed["spec"] != p["spec"] {
                let generation = changed["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                changed["metadata"]["generation"] = json!(generation);
            }
            if changed != *p {
                *p = changed;
                api.bump(p);
                api.changed("MODIFIED", p);
            }
            axum::Json(p.clone()).into_response()
        }
        // ClusterRole: events.k8s.io events create (patch when one repeats).
        ("POST", "events.k8s.io/v1", ["namespaces", ns, "events"]) => {
            let mut event: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                event["regarding"]["namespace"], *ns,
                "an Event lives beside its object"
            );
            event["metadata"]["namespace"] = json!(ns);
            api.events.lock().unwrap().push(event.clone());
            (StatusCode::CREATED, axum::Json(event)).into_response()
        }
        // A repeat of an Event is a merge patch of its series.
        ("PATCH", "events.k8s.io/v1", ["namespaces", ns, "events", name]) => {
            if let Some(refused) = merge_patch_only(&headers) {
                return refused;
            }
            let patch: Value = serde_json::from_slice(&body).unwrap();
            let mut events = api.events.lock().unwrap();
            match events
                .iter_mut()
                .find(|e| e["metadata"]["name"] == *name && e["metadata"]["namespace"] == *ns)
            {
                Some(event) => {
                    merge_patch(event, &patch);
                    axum::Json(event.clone()).into_response()
                }
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("events.events.k8s.io {name:?} not found"),
                ),
            }
        }
        // ClusterRole: promoter.dev promotions create, get and list, promotions/status update.
        ("POST", "promoter.dev/v1alpha1", ["namespaces", ns, "promotions"]) => {
            let mut object: Value = serde_json::from_slice(&body).unwrap();
            // The status subresource: a create's status is dropped.
            object.as_object_mut().unwrap().remove("status");
            // Set by the server, to the second, whatever the client sent.
            object["metadata"]["creationTimestamp"] =
                json!(humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string());
            assert_eq!(
                object["metadata"]["labels"]["app.kubernetes.io/managed-by"],
                "promoter"
            );
            after_commit(&api, create(&api, object, ns, "promotions"))
        }
        ("DELETE", "promoter.dev/v1alpha1", ["namespaces", ns, "promotions", name]) => {
            let mut objects = api.objects.lock().unwrap();
            let at = objects.iter().position(|o| {
                o["kind"] == "Promotion"
                    && o["metadata"]["namespace"] == *ns
                    && o["metadata"]["name"] == *name
            });
            match at {
                Some(at) => {
                    let mut gone = objects.remove(at);
                    api.bump(&mut gone);
                    api.changed("DELETED", &gone);
                    axum::Json(gone).into_response()
                }
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("promotions {name:?} not found"),
                ),
            }
        }
        ("GET", "promoter.dev/v1alpha1", ["namespaces", ns, "promotions", name]) => {
            match api.find("Promotion", ns, name) {
                Some(p) => axum::Json(p).into_response(),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("promotions {name:?} not found"),
                ),
            }
        }
        ("PUT", "promoter.dev/v1alpha1", ["namespaces", ns, "promotions", name, "status"]) => {
            let key = format!("promotion {ns}/{name}");
            update(&api, "Promotion", ns, name, &body, |object, new| {
                object["status"] = new["status"].clone();
                let patch = json!({"status": new["status"]});
                api.patches.lock().unwrap().push((key, patch));
            })
        }
        // Role in the controller's namespace: leases get, create, update.
        ("GET", "coordination.k8s.io/v1", ["namespaces", ns, "leases", name])
            if *ns == CONTROLLER_NS =>
        {
            match api.find("Lease", ns, name) {
                Some(lease) => axum::Json(lease).into_response(),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("leases.coordination.k8s.io {name:?} not found"),
                ),
            }
        }
        ("POST", "coordination.k8s.io/v1", ["namespaces", ns, "leases"])
            if *ns == CONTROLLER_NS =>
        {
            let mut lease: Value = serde_json::from_slice(&body).unwrap();
            lease["apiVersion"] = json!("coordination.k8s.io/v1");
            lease["kind"] = json!("Lease");
            create(&api, lease, ns, "leases.coordination.k8s.io")
        }
        ("PUT", "coordination.k8s.io/v1", ["namespaces", ns, "leases", name])
            if *ns == CONTROLLER_NS =>
        {
            update(&api, "Lease", ns, name, &body, |object, new| {
                object["spec"] = new["spec"].clone();
            })
        }
        ("GET", "promoter.dev/v1alpha1", ["promotions"]) => {
            let selector = query.unwrap_or_default();
            assert!(
                selector.contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dpromoter"),
                "{selector}"
            );
            if api
                .promotions_unavailable
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                return status(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "the server is currently unable to handle the request".into(),
                );
            }
            if selector.contains("watch=true") {
                return watch(api.clone(), &selector);
            }
            // Custom resources keep apiVersion and kind in list items.
            let version = api.list_version();
            let objects = api.objects.lock().unwrap();
            let all = objects.iter().filter(|o| o["kind"] == "Promotion");
            let (items, metadata) = page(all, &selector, version);
            drop(objects);
            axum::Json(json!({
                "apiVersion": "promoter.dev/v1alpha1", "kind": "PromotionList",
                "metadata": metadata, "items": items,
            }))
            .into_response()
        }
        // ClusterRole: namespaces list (the labels plugin grants' namespaceSelector matches).
        ("GET", "v1", ["namespaces"]) => list(
            "Namespace",
            api.of_kind("Namespace", None),
            api.list_version(),
            query.as_deref().unwrap_or_default(),
        ),
        // Role in the controller's namespace: configmaps list.
        ("GET", "v1", ["namespaces", ns, "configmaps"]) if *ns == CONTROLLER_NS => {
            let selector = query.unwrap_or_default();
            assert!(
                selector.contains("labelSelector=promoter.dev%2Fplugin%3Dtrue"),
                "plugin ConfigMaps are listed by label: {selector}"
            );
            list(
                "ConfigMap",
                api.of_kind("ConfigMap", Some(ns)),
                api.list_version(),
                &selector,
            )
        }
        // rbac.secrets.namespaces: get by name, never list.
        ("GET", "v1", ["namespaces", ns, "secrets", name])
            if *ns == "flux-system"
                || *ns == CONTROLLER_NS
                || api.secret_namespaces.lock().unwrap().contains(*ns) =>
        {
            match api
                .of_kind("Secret", Some(ns))
                .into_iter()
                .find(|s| s["metadata"]["name"] == *name)
            {
                Some(secret) => axum::Json(secret).into_response(),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("secrets {name:?} not found"),
                ),
            }
        }
        // ClusterRole: tokenreviews and subjectaccessreviews create (the admin API's callers).
        ("POST", "authentication.k8s.io/v1", ["tokenreviews"]) => token_review(&api, &body),
        ("POST", "authorization.k8s.io/v1", ["subjectaccessreviews"]) => access_review(&api, &body),
        // ClusterRole: its own two CRDs, get by name.
        ("GET", "apiextensions.k8s.io/v1", ["customresourcedefinitions", name])
            if *name == "pipelines.pipelines.weave.works" || *name == "promotions.promoter.dev" =>
        {
            match api
                .of_kind("CustomResourceDefinition", None)
                .into_iter()
                .find(|c| c["metadata"]["name"] == *name)
            {
                Some(crd) => axum::Json(crd).into_response(),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("customresourcedefinitions.apiextensions.k8s.io {name:?} not found"),
                ),
            }
        }
        // Elsewhere the chart grants nothing: the API server refuses, as a real one would.
        ("GET", "v1", ["namespaces", ns, "secrets", name]) => status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "secrets {name:?} is forbidden: cannot get resource \"secrets\" in the namespace {ns:?}"
            ),
        ),
        _ => {
            api.refused.lock().unwrap().push(line.clone());
            status(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!("not granted: {line}"),
            )
        }
    }
}

pub(crate) struct Cluster {
    pub(crate) api: Arc<Api>,
    pub(crate) kubeconfig: std::path::PathBuf,
}

pub(crate) async fn cluster(dir: &std::path::Path, objects: Vec<Value>) -> Cluster {
    let api = Arc::new(Api::default());
    api.add_user(
        CLUSTER_ADMIN_TOKEN,
        "kubernetes-admin",
        &["system:masters", "system:authenticated"],
    );
    let mut objects: Vec<Value> = objects
        .into_iter()
        .map(|o| {
            let what = format!("{} {}", o["kind"], o["metadata"]["name"]);
            applied(o).unwrap_or_else(|causes| panic!("the API server refuses {what}: {causes:#?}"))
        })
        .collect();
    // The CRDs, as the chart installs them, unless the test brings its own.
    for (_, yaml) in promoter::cluster::crd::crds_yaml() {
        let crd: Value = serde_yaml_ng::from_str(&yaml).unwrap();
        if !objects
            .iter()
            .any(|o| o["metadata"]["name"] == crd["metadata"]["name"])
        {
            objects.push(crd);
        }
    }
    for object in &mut objects {
        api.bump(object);
    }
    *api.objects.lock().unwrap() = objects;
    let app = axum::Router::new().fallback(handle).with_state(api.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let kubeconfig = kubeconfig(dir, port, TOKEN);
    Cluster { api, kubeconfig }
}

/// A kubeconfig for the API server on `port`, in the controller's namespace.
pub(crate) fn kubeconfig(dir: &std::path::Path, port: u16, token: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters: [{{name: fake, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n\
             users: [{{name: promoter, user: {{token: {token}}}}}]\n\
             contexts: [{{name: fake, context: {{cluster: fake, user: promoter, namespace: {CONTROLLER_NS}}}}}]\n\
             current-context: fake\n"
        ),
    )
    .unwrap();
    path
}
