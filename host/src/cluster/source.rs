//! Kubernetes mode's catalog: the Pipelines of every namespace, the plugin ConfigMaps of
//! the controller's namespace, and the Secrets these name, read by name (never listed).
//! Each Pipeline's status says whether it is in force (the `Ready` condition, and why
//! not) and, per environment, the latest promotion and what waits for approval.
//!
//! Pipelines and plugin ConfigMaps are watched, as informers do: listed once (from the API
//! server's watch cache), then followed, and listed again only when a watch expires. Every
//! read comes from these caches. Listing them at every read instead (every 2 s, by every
//! replica, with plugin ConfigMaps of up to ~768 KiB each) is the load API priority and
//! fairness answers with 429.

use super::crd::{EnvironmentStatus, LatestPromotion, WaitingApproval};
use crate::pipeline::{Manifests, PLUGIN_LABEL};
use crate::record::{Phase, Promotion};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ObjectReference, Secret};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

/// Weave's Pipeline resource, read as plain JSON: one malformed Pipeline must not stop
/// the list (the host reports it in that Pipeline's status instead).
fn pipeline_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "pipelines.weave.works",
        "v1alpha1",
        "Pipeline",
    ))
}

/// Plugin ConfigMaps per page of the first list: each may carry ~768 KiB of component,
/// and a page is one response the API server builds in memory.
const PLUGIN_PAGE: u32 = 8;

/// A collection followed by a watch into a cache (kube-runtime's reflector store).
struct Followed<K: Resource + 'static>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    store: reflector::Store<K>,
    /// The last error the watch met, until it works again.
    error: tokio::sync::watch::Receiver<Option<String>>,
    /// What it is, as errors name it ("Pipelines").
    what: String,
}

impl<K> Followed<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Send + Sync,
{
    /// Starts following `api`'s objects `config` selects (for the life of the process).
    fn start(api: Api<K>, config: watcher::Config, dyntype: K::DynamicType, what: String) -> Self {
        use futures_util::StreamExt;
        let writer = reflector::store::Writer::new(dyntype);
        let store = writer.as_reader();
        let (report, error) = tokio::sync::watch::channel(None::<String>);
        let label = what.clone();
        tokio::spawn(async move {
            // managedFields are never read: not kept.
            let events = watcher(api, config).modify(|o| o.meta_mut().managed_fields = None);
            let mut events = reflector(writer, events).default_backoff().boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(_) => {
                        if report.send_replace(None).is_some() {
                            tracing::info!("watching {label} again");
                        }
                    }
                    Err(e) => {
                        let e = e.to_string();
                        if report.borrow().as_ref() != Some(&e) {
                            tracing::warn!(
                                "cannot watch {label} (what was read last stays in force; \
                                 retried with backoff): {e}"
                            );
                        }
                        report.send_replace(Some(e));
                    }
                }
            }
        });
        Followed { store, error, what }
    }

    /// What the cache holds, once the first list has filled it; until then, the error that
    /// keeps it from being filled, if any.
    async fn items(&self) -> anyhow::Result<Vec<Arc<K>>> {
        let mut error = self.error.clone();
        tokio::select! {
            biased;
            ready = self.store.wait_until_ready() => {
                ready.map_err(|e| anyhow::anyhow!("cannot list {}: {e}", self.what))?;
            }
            failed = error.wait_for(Option::is_some) => {
                let e = failed.map(|e| e.clone().unwrap_or_default()).unwrap_or_default();
                anyhow::bail!("cannot list {}: {e}", self.what);
            }
        }
        Ok(self.store.state())
    }
}

/// How long a Secret read is used before it is read again: a rotated key or token counts
/// within this time, and the API server is not asked for every Secret at every read.
const SECRET_REFRESH: std::time::Duration = std::time::Duration::from_secs(60);

/// The cluster Promoter runs in.
pub struct Cluster {
    client: Client,
    /// The controller's own namespace: plugin ConfigMaps live here.
    namespace: String,
    /// The status last written per Pipeline (namespace, name), without its timestamp, so
    /// an unchanged one is not written again.
    written: Mutex<HashMap<(String, String), Value>>,
    /// What the last read found. Problems are logged when they appear, not at every read.
    observed: Mutex<Seen>,
    /// Secrets found, with when they were read: read again after [`SECRET_REFRESH`]
    /// (a missing one at every read, so a new one counts at once).
    secrets: Mutex<HashMap<(String, String), (std::time::Instant, Value)>>,
    /// The Secrets the last read needed.
    wanted: Mutex<BTreeSet<(String, String)>>,
    /// What is wrong with the installed CRDs for this Promoter (Weave's Pipeline CRD, an
    /// older revision), as found by [`Cluster::check_crds`]; said on every Pipeline.
    crd_problems: Mutex<Vec<String>>,
    /// Whether the API server answers the lists and watches of Promotions.
    promotion_feed: crate::cluster::requests::PromotionFeed,
    /// The phase last reported per promotion, by (namespace, id) (None before the first).
    phases: Mutex<Option<HashMap<(String, String), Phase>>>,
    recorder: Recorder,
    /// Every namespace's Pipelines, followed.
    pipelines: Followed<DynamicObject>,
    /// The plugin ConfigMaps of the controller's namespace, followed.
    plugins: Followed<ConfigMap>,
}

#[derive(Clone, Default)]
struct Seen {
    pipelines: Vec<Observed>,
    /// Problems that keep their Pipelines out.
    problems: BTreeSet<String>,
    /// Secrets a Pipeline in force needs and cannot have.
    unavailable: BTreeSet<String>,
}

/// A Pipeline as read.
#[derive(Clone)]
struct Observed {
    namespace: String,
    name: String,
    generation: Option<i64>,
    uid: Option<String>,
    /// Its status as read: the keys a status write must remove, if gone.
    status: Option<Value>,
}

impl Observed {
    fn reference(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some(pipeline_resource().api_version),
            kind: Some("Pipeline".into()),
            namespace: Some(self.namespace.clone()),
            name: Some(self.name.clone()),
            uid: self.uid.clone(),
            ..Default::default()
        }
    }
}

/// What was read: the objects, and the Secrets the service account may not read.
pub struct Snapshot {
    pub objects: Vec<Value>,
    pub forbidden: BTreeSet<(String, String)>,
}

impl Cluster {
    /// Suspends the Pipeline `namespace/name` (`by`: who, and why, kept in the annotation
    /// `promoter.dev/suspended-by`) or resumes it (`None`): one merge patch of
    /// `spec.suspend` and the annotation.
    pub async fn set_suspend(
        client: Client,
        namespace: &str,
        name: &str,
        by: Option<String>,
    ) -> Result<(), kube::Error> {
        let api: kube::Api<crate::cluster::crd::Pipeline> =
            kube::Api::namespaced(client, namespace);
        let patch = serde_json::json!({
            "metadata": {"annotations": {"promoter.dev/suspended-by": by}},
            "spec": {"suspend": by.is_some()},
        });
        api.patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .map(drop)
    }

    /// Connects with the pod's service account, or the kubeconfig outside a cluster;
    /// every request is measured into `requests`.
    pub async fn connect(
        namespace: Option<String>,
        requests: prometheus::HistogramVec,
    ) -> anyhow::Result<Cluster> {
        let cannot = |e: &dyn std::fmt::Display| {
            anyhow::anyhow!(
                "Kubernetes mode (no --manifests): cannot configure a client for the API server \
                 (in-cluster service account or KUBECONFIG): {e}"
            )
        };
        let config = kube::Config::infer().await.map_err(|e| cannot(&e))?;
        let promotion_feed = crate::cluster::requests::PromotionFeed::default();
        let client = kube::client::ClientBuilder::try_from(config)
            .map_err(|e| cannot(&e))?
            .with_layer(&crate::cluster::requests::Measure {
                requests,
                promotions: promotion_feed.clone(),
            })
            .build();
        let namespace = namespace.unwrap_or_else(|| client.default_namespace().to_string());
        let resource = pipeline_resource();
        let pipelines = Followed::start(
            Api::all_with(client.clone(), &resource),
            watcher::Config::default(),
            resource,
            "Pipelines".into(),
        );
        let selector = format!("{PLUGIN_LABEL}=true");
        let plugins = Followed::start(
            Api::namespaced(client.clone(), &namespace),
            watcher::Config::default()
                .labels(&selector)
                .page_size(PLUGIN_PAGE),
            (),
            format!("plugin ConfigMaps ({selector}) in {namespace}"),
        );
        Ok(Cluster {
            pipelines,
            plugins,
            namespace,
            written: Mutex::default(),
            observed: Mutex::default(),
            phases: Mutex::default(),
            secrets: Mutex::default(),
            wanted: Mutex::default(),
            crd_problems: Mutex::default(),
            promotion_feed,
            recorder: Recorder::new(
                client.clone(),
                Reporter {
                    controller: "promoter".into(),
                    instance: std::env::var("POD_NAME").ok(),
                },
            ),
            client,
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Since when the API server has failed the lists and watches of Promotions.
    pub fn promotion_feed(&self) -> crate::cluster::requests::PromotionFeed {
        self.promotion_feed.clone()
    }

    /// Reads the installed Pipeline and Promotion CRDs and notes (and logs, when new)
    /// what makes them unfit for this Promoter; a CRD that cannot be read is logged and
    /// assumed fine (the chart grants `get` on exactly these two).
    pub async fn check_crds(&self) {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let mut problems = Vec::new();
        for name in ["pipelines.pipelines.weave.works", "promotions.promoter.dev"] {
            match api.get(name).await {
                Ok(crd) => problems.extend(crate::cluster::crd::installed_problem(&crd)),
                Err(e) => tracing::warn!("cannot read the installed CRD {name}: {e}"),
            }
        }
        let mut noted = self.crd_problems.lock().unwrap();
        for p in &problems {
            if !noted.contains(p) {
                tracing::error!("{p}");
            }
        }
        *noted = problems;
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Another replica reports now: what this one wrote and noted is stale, so if it
    /// reports again it starts over (writes what changed, notes before publishing).
    pub fn forget_reported(&self) {
        self.written.lock().unwrap().clear();
        *self.phases.lock().unwrap() = None;
    }

    /// The Secrets the last complete read needed.
    pub fn secrets_wanted(&self) -> BTreeSet<(String, String)> {
        self.wanted.lock().unwrap().clone()
    }

    /// Notes the Secrets a complete read needed; the cache keeps only those.
    pub fn want_secrets(&self, wanted: BTreeSet<(String, String)>) {
        self.secrets
            .lock()
            .unwrap()
            .retain(|k, _| wanted.contains(k));
        *self.wanted.lock().unwrap() = wanted;
    }

    /// The Pipelines and plugin ConfigMaps as followed (waiting for their first list), and
    /// each Secret in `secrets`.
    pub async fn read(&self, secrets: &BTreeSet<(String, String)>) -> anyhow::Result<Snapshot> {
        let mut objects = Vec::new();
        let mut forbidden = BTreeSet::new();
        let resource = pipeline_resource();
        for item in sorted(self.pipelines.items().await?) {
            objects.push(typed(
                serde_json::to_value(&*item)?,
                &resource.api_version,
                &resource.kind,
            ));
        }
        let plugins = sorted(self.plugins.items().await?);
        let selects_namespaces = plugins.iter().any(|cm| grant_selects_namespaces(cm));
        for item in plugins {
            objects.push(typed(serde_json::to_value(&*item)?, "v1", "ConfigMap"));
        }
        // A plugin grant's namespaceSelector is matched against the Namespaces' labels:
        // read only when a grant has one (the chart's ClusterRole grants list).
        if selects_namespaces {
            let namespaces: Api<Namespace> = Api::all(self.client.clone());
            match namespaces.list(&ListParams::default()).await {
                Ok(list) => {
                    for item in list.items {
                        objects.push(typed(serde_json::to_value(item)?, "v1", "Namespace"));
                    }
                }
                // The selector then matches nothing, and the Pipelines it would admit
                // are refused saying their namespace's labels are not known.
                Err(e) => tracing::warn!(
                    "cannot list Namespaces for plugin grants' namespaceSelector \
                     (the chart's ClusterRole grants list on namespaces): {e}"
                ),
            }
        }
        for (namespace, name) in secrets {
            let key = (namespace.clone(), name.clone());
            let cached = self.secrets.lock().unwrap().get(&key).cloned();
            if let Some((read_at, secret)) = cached
                && read_at.elapsed() < SECRET_REFRESH
            {
                objects.push(secret);
                continue;
            }
            let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
            match api.get_opt(name).await {
                Ok(Some(secret)) => {
                    let secret = typed(serde_json::to_value(secret)?, "v1", "Secret");
                    let now = std::time::Instant::now();
                    self.secrets
                        .lock()
                        .unwrap()
                        .insert(key, (now, secret.clone()));
                    objects.push(secret);
                }
                // Reported by whoever needs it ("Secret … does not exist").
                Ok(None) => {}
                Err(kube::Error::Api(status)) if status.code == 403 => {
                    forbidden.insert(key);
                }
                Err(e) => {
                    return Err(anyhow::anyhow!(
                        "cannot read Secret {namespace}/{name}: {e}"
                    ));
                }
            }
        }
        Ok(Snapshot { objects, forbidden })
    }

    /// Notes what a read found, and logs the problems that are new: `problems` kept
    /// their Pipelines out; `unavailable` (Secrets missing or not readable) leave them in
    /// force but unable to work.
    pub fn observed(&self, objects: &[Value], problems: &[String], unavailable: &[String]) {
        let problems: BTreeSet<String> = problems.iter().cloned().collect();
        let unavailable: BTreeSet<String> = unavailable.iter().cloned().collect();
        let mut observed = self.observed.lock().unwrap();
        for p in problems.difference(&observed.problems) {
            tracing::warn!("{p}");
        }
        for p in unavailable.difference(&observed.unavailable) {
            tracing::warn!("{p}");
        }
        *observed = Seen {
            pipelines: pipelines_in(objects),
            problems,
            unavailable,
        };
    }

    /// Writes each Pipeline's status where it changed: the `Ready` condition (in force, or
    /// the problems that keep it out) and, per environment, the latest promotion and the
    /// version waiting for approval (Weave's `waitingApproval.revision`).
    pub async fn report(&self, promotions: &[Promotion]) {
        let Seen {
            pipelines,
            problems,
            unavailable,
        } = self.observed.lock().unwrap().clone();
        self.publish_events(&pipelines, promotions).await;
        for Observed {
            namespace,
            name,
            generation,
            status: read,
            ..
        } in pipelines
        {
            let label = format!("Pipeline {namespace}/{name}:");
            let own = |set: &BTreeSet<String>| -> Vec<String> {
                set.iter().filter(|p| p.contains(&label)).cloned().collect()
            };
            let (invalid, missing) = (own(&problems), own(&unavailable));
            let ready = invalid.is_empty() && missing.is_empty();
            let (reason, message) = if !invalid.is_empty() {
                ("Invalid", invalid.join("; "))
            } else if !missing.is_empty() {
                ("SecretUnavailable", missing.join("; "))
            } else {
                (
                    "Ready",
                    "in force: events for this pipeline are accepted".to_string(),
                )
            };
            let mine = promotions
                .iter()
                .filter(|p| p.pipeline.namespace == namespace && p.pipeline.name == name);
            let mut conditions = vec![json!({
                "type": "Ready",
                "status": if ready { "True" } else { "False" },
                "reason": reason,
                "message": message,
                "observedGeneration": generation,
            })];
            let crd_problems = self.crd_problems.lock().unwrap().clone();
            if !crd_problems.is_empty() {
                conditions.push(json!({
                    "type": "CRDCurrent",
                    "status": "False",
                    "reason": "OutdatedCRD",
                    "message": crd_problems.join("; "),
                    "observedGeneration": generation,
                }));
            }
            let status = json!({
                "observedGeneration": generation,
                "conditions": conditions,
                "environments": environments(mine),
            });
            let key = (namespace.clone(), name.clone());
            let before = self.written.lock().unwrap().get(&key).cloned();
            if before.as_ref() == Some(&status) {
                continue;
            }
            let mut new = status.clone();
            let now = jiff::Timestamp::now().to_string();
            for condition in new["conditions"].as_array_mut().unwrap() {
                condition["lastTransitionTime"] = json!(now);
            }
            // A merge patch deletes only what it sets to null (RFC 7386): every key the
            // API server may hold — as read, or as this replica last wrote it, should the
            // read predate that write — and the new status lacks is written as null, so an
            // approved promotion's `waitingApproval` goes (Weave's UI offers Approve while
            // it is there). A patch, not a replace: no resourceVersion to conflict with
            // every edit of the Pipeline's spec, and the chart's `patch` grant suffices.
            let held: Vec<&Value> = read.iter().chain(before.iter()).collect();
            let patch = json!({"status": removing(&new, &held)});
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), &namespace, &pipeline_resource());
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.written.lock().unwrap().insert(key, status);
                }
                Err(e) => tracing::warn!(
                    pipeline = %format!("{namespace}/{name}"),
                    "cannot write the Pipeline's status: {e}"
                ),
            }
        }
    }
}

impl Cluster {
    /// A Kubernetes Event on the Pipeline for each promotion recorded, waiting for
    /// approval, succeeded or failed since the last call (the first call only notes where
    /// things stand, so a restart does not repeat history).
    async fn publish_events(&self, pipelines: &[Observed], promotions: &[Promotion]) {
        let mut fresh = Vec::new();
        {
            let mut phases = self.phases.lock().unwrap();
            let first = phases.is_none();
            let known = phases.get_or_insert_with(HashMap::new);
            // Gone ones are forgotten, so the map is as large as the promotions are.
            let present: std::collections::HashSet<(&str, &str)> = promotions
                .iter()
                .map(|p| (p.pipeline.namespace.as_str(), p.id.as_str()))
                .collect();
            known.retain(|(ns, id), _| present.contains(&(ns.as_str(), id.as_str())));
            for p in promotions {
                let key = (p.pipeline.namespace.clone(), p.id.clone());
                let before = known.insert(key, p.phase);
                if !first && before != Some(p.phase) {
                    fresh.push((p, before.is_none()));
                }
            }
        }
        for (p, new) in fresh {
            let promotion = ObjectReference {
                api_version: Some("promoter.dev/v1alpha1".into()),
                kind: Some("Promotion".into()),
                namespace: Some(p.pipeline.namespace.clone()),
                name: Some(p.id.clone()),
                ..Default::default()
            };
            // About the Pipeline; a refused request (whose Pipeline may not exist) about
            // itself.
            let regarding = match pipelines
                .iter()
                .find(|o| o.namespace == p.pipeline.namespace && o.name == p.pipeline.name)
            {
                Some(pipeline) => pipeline.reference(),
                None if p.phase == Phase::Refused => promotion.clone(),
                None => continue,
            };
            let what = format!("{} into {}", p.version, p.target_environment);
            let (type_, reason, note) = match p.phase {
                Phase::Pending if new => (
                    EventType::Normal,
                    "PromotionRecorded",
                    format!("promotion of {what} recorded ({})", p.id),
                ),
                Phase::WaitingApproval => (
                    EventType::Normal,
                    "WaitingApproval",
                    format!("promotion of {what} waits for approval ({})", p.id),
                ),
                Phase::Succeeded => (
                    EventType::Normal,
                    "Promoted",
                    match &p.outcome_url {
                        Some(url) => format!("promoted {what}: {url}"),
                        None => format!("promoted {what}"),
                    },
                ),
                Phase::Failed => (
                    EventType::Warning,
                    "PromotionFailed",
                    format!(
                        "promotion of {what} failed after {} attempt(s): {}",
                        p.attempts,
                        p.last_error.as_deref().unwrap_or("no error recorded")
                    ),
                ),
                Phase::Refused => (
                    EventType::Warning,
                    "PromotionRefused",
                    format!(
                        "Promotion {} of {what} refused: {}",
                        p.id,
                        p.last_error.as_deref().unwrap_or("no reason recorded")
                    ),
                ),
                Phase::Held if new => (
                    EventType::Normal,
                    "PromotionHeld",
                    format!(
                        "promotion of {what} held: the Pipeline is suspended ({})",
                        p.id
                    ),
                ),
                Phase::Rejected | Phase::Aborted => (
                    EventType::Normal,
                    if p.phase == Phase::Rejected {
                        "PromotionRejected"
                    } else {
                        "PromotionAborted"
                    },
                    format!(
                        "promotion of {what} {} by {}: {}",
                        p.phase.as_str(),
                        p.closed_by.as_deref().unwrap_or("someone"),
                        p.close_reason.as_deref().unwrap_or("no reason given")
                    ),
                ),
                Phase::Superseded => (
                    EventType::Normal,
                    "PromotionSuperseded",
                    format!(
                        "promotion of {what} superseded by {}",
                        p.closed_by.as_deref().unwrap_or("a newer version")
                    ),
                ),
                Phase::Requested | Phase::Pending | Phase::Running | Phase::Held => continue,
            };
            let event = Event {
                type_,
                reason: reason.into(),
                // The Events API takes at most 1 kB of note.
                note: Some(crate::runtime::clip(note, 1000)),
                action: "Promote".into(),
                // The Promotion it is about: also what keeps one promotion's Events
                // apart from another's (the recorder counts repeats per related object).
                secondary: Some(promotion),
            };
            if let Err(e) = self.recorder.publish(&event, &regarding).await {
                tracing::warn!(promotion = %p.id, "cannot publish a Kubernetes Event: {e}");
            }
        }
    }
}

/// `new` as a JSON merge patch over any of `held` (objects a server may hold): each key
/// of a held object that `new` lacks is set to null, nested objects alike (arrays and
/// other values are replaced whole, as a merge patch does anyway).
fn removing(new: &Value, held: &[&Value]) -> Value {
    let Value::Object(fields) = new else {
        return new.clone();
    };
    let mut out = serde_json::Map::new();
    for (k, v) in fields {
        let inner: Vec<&Value> = held.iter().filter_map(|h| h.get(k)).collect();
        out.insert(k.clone(), removing(v, &inner));
    }
    for k in held
        .iter()
        .filter_map(|h| h.as_object())
        .flat_map(|h| h.keys())
    {
        out.entry(k.clone()).or_insert(Value::Null);
    }
    Value::Object(out)
}

/// Per target environment: the newest promotion, and the newest one waiting for approval.
fn environments<'a>(promotions: impl Iterator<Item = &'a Promotion>) -> Value {
    let mut out: BTreeMap<String, EnvironmentStatus> = BTreeMap::new();
    let mut newest: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for p in promotions {
        let env = out.entry(p.target_environment.clone()).or_default();
        let (latest, waiting) = newest.entry(p.target_environment.clone()).or_default();
        if env.latest_promotion.is_none() || p.created_at > *latest {
            *latest = p.created_at;
            env.latest_promotion = Some(LatestPromotion {
                name: p.id.clone(),
                version: p.version.clone(),
                phase: p.phase,
            });
        }
        if p.phase == Phase::WaitingApproval
            && (env.waiting_approval.is_none() || p.created_at > *waiting)
        {
            *waiting = p.created_at;
            env.waiting_approval = Some(WaitingApproval {
                revision: p.version.clone(),
            });
        }
    }
    serde_json::to_value(out).unwrap_or_default()
}

/// Whether a plugin ConfigMap's grant selects namespaces by label.
fn grant_selects_namespaces(cm: &ConfigMap) -> bool {
    cm.data
        .as_ref()
        .and_then(|d| d.get("grant"))
        .and_then(|g| serde_yaml_ng::from_str::<crate::plugins::GrantSpec>(g).ok())
        .is_some_and(|g| g.namespace_selector.is_some())
}

/// A cache's objects in the order a list gives them (namespace, then name), so that reads
/// of one state agree.
fn sorted<K: Resource>(mut items: Vec<Arc<K>>) -> Vec<Arc<K>> {
    items.sort_by(|a, b| {
        let key = |o: &K| (o.meta().namespace.clone(), o.meta().name.clone());
        key(a).cmp(&key(b))
    });
    items
}

/// Items of a list come without apiVersion and kind; the loader needs them.
fn typed(mut object: Value, api_version: &str, kind: &str) -> Value {
    if let Some(map) = object.as_object_mut() {
        map.insert("apiVersion".into(), api_version.into());
        map.insert("kind".into(), kind.into());
    }
    object
}

/// (namespace, name, generation) of every Pipeline among `objects`.
fn pipelines_in(objects: &[Value]) -> Vec<Observed> {
    objects
        .iter()
        .filter(|o| o.get("kind").and_then(Value::as_str) == Some("Pipeline"))
        .map(|o| {
            let meta = o.get("metadata");
            let text = |k: &str| {
                meta.and_then(|m| m.get(k))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            Observed {
                namespace: text("namespace").unwrap_or_default(),
                name: text("name").unwrap_or_default(),
                generation: meta
                    .and_then(|m| m.get("generation"))
                    .and_then(Value::as_i64),
                uid: text("uid"),
                status: o.get("status").filter(|s| s.is_object()).cloned(),
            }
        })
        .collect()
}

/// Drops the Pipelines any problem names, so the rest stay in force.
pub fn without_invalid(manifests: &mut Manifests, problems: &[String]) {
    manifests.pipelines.retain(|p| {
        let label = format!("Pipeline {p}:");
        !problems.iter().any(|m| m.contains(&label))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_patch_nulls_what_the_server_holds_and_the_new_status_lacks() {
        let read = json!({"environments": {
            "prod": {"waitingApproval": {"revision": "1.0.0"}, "latestPromotion": {"phase": "waiting-approval"}},
            "gone": {"latestPromotion": {"phase": "succeeded"}},
        }, "conditions": [{"type": "Ready"}]});
        let written = json!({"observedGeneration": 2});
        let new = json!({"environments": {"prod": {"latestPromotion": {"phase": "succeeded"}}},
                         "conditions": [{"type": "Ready", "status": "True"}]});
        let patch = removing(&new, &[&read, &written]);
        assert_eq!(
            patch,
            json!({"environments": {
                "prod": {"waitingApproval": null, "latestPromotion": {"phase": "succeeded"}},
                "gone": null,
            }, "conditions": [{"type": "Ready", "status": "True"}], "observedGeneration": null})
        );
        // Applied as RFC 7386 says, it leaves exactly the new status.
        let mut server = read.clone();
        json_patch::merge(&mut server, &patch);
        assert_eq!(server, new);
    }
}
