//! Kubernetes mode's catalog: the Pipelines of every namespace, the plugin ConfigMaps of
//! the controller's namespace, and the Secrets these name, read by name (never listed).
//! Each Pipeline's `Ready` condition says whether it is in force, and why not.

use crate::pipeline::{Manifests, PLUGIN_LABEL};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

/// Weave's Pipeline resource, read as plain JSON: one malformed Pipeline must not stop
/// the list (the host reports it in that Pipeline's status instead).
fn pipeline_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "pipelines.weave.works",
        "v1alpha1",
        "Pipeline",
    ))
}

/// The cluster Promoter runs in.
pub struct Cluster {
    client: Client,
    /// The controller's own namespace: plugin ConfigMaps live here.
    namespace: String,
    /// The `Ready` condition last written per Pipeline (namespace, name), so an unchanged
    /// one is not written again.
    written: Mutex<HashMap<(String, String), (bool, String)>>,
    /// The problems last logged, so each is logged when it appears, not at every read.
    logged: Mutex<BTreeSet<String>>,
}

/// What was read: the objects, and the problems of reading them.
pub struct Snapshot {
    pub objects: Vec<Value>,
    pub problems: Vec<String>,
}

impl Cluster {
    /// Connects with the pod's service account, or the kubeconfig outside a cluster.
    pub async fn connect(namespace: Option<String>) -> anyhow::Result<Cluster> {
        let client = Client::try_default().await.map_err(|e| {
            anyhow::anyhow!(
                "Kubernetes mode (no --manifests): cannot configure a client for the API server \
                 (in-cluster service account or KUBECONFIG): {e}"
            )
        })?;
        let namespace = namespace.unwrap_or_else(|| client.default_namespace().to_string());
        Ok(Cluster {
            client,
            namespace,
            written: Mutex::default(),
            logged: Mutex::default(),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Lists the Pipelines and plugin ConfigMaps, and gets each Secret in `secrets`.
    pub async fn read(&self, secrets: &BTreeSet<(String, String)>) -> anyhow::Result<Snapshot> {
        let mut objects = Vec::new();
        let mut problems = Vec::new();
        let resource = pipeline_resource();
        let pipelines: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
        let list = pipelines
            .list(&ListParams::default())
            .await
            .map_err(|e| anyhow::anyhow!("cannot list Pipelines: {e}"))?;
        for item in list.items {
            objects.push(typed(
                serde_json::to_value(item)?,
                &resource.api_version,
                &resource.kind,
            ));
        }
        let config_maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let selector = format!("{PLUGIN_LABEL}=true");
        let list = config_maps
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot list plugin ConfigMaps ({selector}) in {}: {e}",
                    self.namespace
                )
            })?;
        for item in list.items {
            objects.push(typed(serde_json::to_value(item)?, "v1", "ConfigMap"));
        }
        for (namespace, name) in secrets {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
            match api.get_opt(name).await {
                Ok(Some(secret)) => {
                    objects.push(typed(serde_json::to_value(secret)?, "v1", "Secret"))
                }
                // Reported by whoever needs it ("Secret … does not exist").
                Ok(None) => {}
                Err(kube::Error::Api(status)) if status.code == 403 => problems.push(format!(
                    "Secret {namespace}/{name}: not readable by Promoter's service account \
                     (the chart grants get on Secrets in the namespaces listed in rbac.secrets.namespaces): {}",
                    status.message
                )),
                Err(e) => return Err(anyhow::anyhow!("cannot read Secret {namespace}/{name}: {e}")),
            }
        }
        Ok(Snapshot { objects, problems })
    }

    /// Logs new problems and writes each Pipeline's `Ready` condition: in force, or the
    /// problems that keep it out.
    pub async fn report(&self, pipelines: &[(String, String, Option<i64>)], problems: &[String]) {
        {
            let now: BTreeSet<String> = problems.iter().cloned().collect();
            let mut logged = self.logged.lock().unwrap();
            for p in now.difference(&logged) {
                tracing::warn!("{p}");
            }
            *logged = now;
        }
        for (namespace, name, generation) in pipelines {
            let label = format!("Pipeline {namespace}/{name}:");
            let own: Vec<&str> = problems
                .iter()
                .filter(|p| p.contains(&label))
                .map(String::as_str)
                .collect();
            let ready = own.is_empty();
            let message = if ready {
                "in force: events for this pipeline are accepted".to_string()
            } else {
                own.join("; ")
            };
            let key = (namespace.clone(), name.clone());
            if self.written.lock().unwrap().get(&key) == Some(&(ready, message.clone())) {
                continue;
            }
            let condition = json!({
                "type": "Ready",
                "status": if ready { "True" } else { "False" },
                "reason": if ready { "Ready" } else { "Invalid" },
                "message": message,
                "lastTransitionTime": jiff::Timestamp::now().to_string(),
                "observedGeneration": generation,
            });
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), namespace, &pipeline_resource());
            let patch =
                json!({"status": {"conditions": [condition], "observedGeneration": generation}});
            match api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.written.lock().unwrap().insert(key, (ready, message));
                }
                Err(e) => tracing::warn!(
                    pipeline = %format!("{namespace}/{name}"),
                    "cannot write the Pipeline's status: {e}"
                ),
            }
        }
    }
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
pub fn pipelines_in(objects: &[Value]) -> Vec<(String, String, Option<i64>)> {
    objects
        .iter()
        .filter(|o| o.get("kind").and_then(Value::as_str) == Some("Pipeline"))
        .map(|o| {
            let meta = o.get("metadata");
            let text = |k: &str| {
                meta.and_then(|m| m.get(k))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let generation = meta
                .and_then(|m| m.get("generation"))
                .and_then(Value::as_i64);
            (text("namespace"), text("name"), generation)
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
