//! The plugin registry: built-in strategies and custom ones from ConfigMaps, and the
//! grant each gets for a given promotion.
//!
//! Built-in plugins get exactly what the Pipeline's strategy configuration names: the
//! webhook plugin may reach the origin of its `url` and sign with the `hmac-key` of the
//! Secret its `secretRef` names (in the Pipeline's namespace). Those origins are tenant
//! input ([`GrantedBy::Pipeline`]): loopback, private, link-local and metadata addresses,
//! literal or resolved, are refused unless the operator passes
//! `--builtin-private-networks`. The notification plugin gets the origin of the server's
//! `--events-addr` (Flux notification-controller's event receiver), plain http and private addresses allowed for it, and nothing else; the
//! address reaches the plugin as its configuration's `address`, written by the host over
//! whatever the Pipeline said (see [`Registry::bind_host_settings`]). Custom plugins get what
//! the operator wrote into their ConfigMap's `grant`, with Secrets from the
//! ConfigMap's namespace.
//!
//! Credentials are used only as their owners opted in (see [`crate::pipeline::consent`]):
//! a custom plugin serves the Pipelines of its ConfigMap's namespace and of the namespaces
//! its grant lists (`namespaces`; `"*"` for every namespace) or selects by label
//! (`namespaceSelector.matchLabels`, against the Namespace objects: a folder's, or the
//! cluster's, listed when a grant has a selector), and a Secret a pull-request
//! strategy names is sent only to the hosts its annotation `promoter.dev/allowed-hosts`
//! lists. Both are checked at load (the Pipeline is refused) and for each promotion.
//!
//! A plugin ConfigMap (label `promoter.dev/plugin: "true"`):
//!
//! ```yaml
//! data:
//!   sha256: <hex digest of the component>     # required
//!   grant: |                                   # optional; nothing is granted by default
//!     namespaces: [team-a, team-b]   # who may use it besides this namespace; "*": all
//!     namespaceSelector:             # and/or namespaces by their labels
//!       matchLabels: {promoter.dev/ci: "true"}
//!     allow: [https://ci.example.com]
//!     privateNetworks: false
//!     credentials:
//!       - origin: https://ci.example.com
//!         header: Authorization
//!         prefix: "Bearer "
//!         secretRef: {name: ci-token, key: token}
//!     keys:
//!       - name: ci-hmac
//!         secretRef: {name: ci-hmac, key: hmac-key}
//!     limits: {timeout: 30s, memory: 64MiB, maxInstances: 4}
//! binaryData:
//!   plugin.wasm: <base64 component>
//! ```
//! or, for a component published to an OCI registry (see [`crate::oci`]), instead of
//! `sha256` and `binaryData`:
//!
//! ```yaml
//! data:
//!   oci: oci://ghcr.io/org/strategy:1.0@sha256:<hex>   # pinned by manifest digest
//!   pullSecret: regcred    # optional: dockerconfigjson, or username and password
//! ```
//! The plugin's name is the ConfigMap's name unless the annotation
//! `promoter.dev/plugin-name` says otherwise.

use crate::oci::{Credentials, OciRef, Puller};
use crate::pipeline::consent::{Audience, Endpoint, may_send};
use crate::pipeline::{ConfigMap, Manifests, StrategyRef};
use crate::runtime::egress::{Credential, Grant, GrantedBy, Origin, is_internal};
use crate::runtime::limits::{Limits, parse_duration, parse_size};
use crate::runtime::secret::Secret;
use crate::runtime::{Plugin, Runtime};
use serde::Deserialize;
use sha2::Digest as _;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Data key of the component in a plugin ConfigMap's `binaryData`.
pub const WASM_KEY: &str = "plugin.wasm";
/// Data key of the digest-pinned OCI reference of a plugin ConfigMap's component.
pub const OCI_KEY: &str = "oci";
/// Data key naming the Secret with the registry's credentials.
pub const PULL_SECRET_KEY: &str = "pullSecret";
/// Annotation naming the plugin when it differs from the ConfigMap's name.
pub const NAME_ANNOTATION: &str = "promoter.dev/plugin-name";
/// The built-in strategy that posts a Flux event to notification-controller.
pub const NOTIFICATION: &str = "notification";
/// Where notification-controller's event receiver listens in a standard Flux install.
pub const EVENTS_ADDR_EXAMPLE: &str =
    "http://notification-controller.flux-system.svc.cluster.local./";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrantSpec {
    /// Namespaces whose Pipelines may use the plugin, besides the ConfigMap's own.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Namespaces selected by their labels, besides those listed.
    #[serde(default)]
    pub namespace_selector: Option<NamespaceSelector>,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub private_networks: bool,
    #[serde(default)]
    pub credentials: Vec<CredentialSpec>,
    #[serde(default)]
    pub keys: Vec<KeySpec>,
    #[serde(default)]
    pub limits: LimitsSpec,
}

/// A label selector of Namespaces; only `matchLabels` (every label must match).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceSelector {
    #[serde(default)]
    pub match_labels: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialSpec {
    pub origin: String,
    pub header: String,
    #[serde(default)]
    pub prefix: String,
    pub secret_ref: SecretKeyRef,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeySpec {
    pub name: String,
    pub secret_ref: SecretKeyRef,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitsSpec {
    pub timeout: Option<String>,
    pub memory: Option<String>,
    pub max_instances: Option<usize>,
}

impl LimitsSpec {
    fn limits(&self) -> Result<Limits, String> {
        let mut limits = Limits::default();
        if let Some(t) = &self.timeout {
            limits.timeout = parse_duration(t)?;
        }
        if let Some(m) = &self.memory {
            limits.memory_bytes = parse_size(m)?;
            if limits.memory_bytes > crate::runtime::MAX_PLUGIN_MEMORY {
                return Err(format!(
                    "memory {m} is above the 1GiB a plugin may be given"
                ));
            }
        }
        if let Some(n) = self.max_instances {
            limits.max_instances = n;
        }
        Ok(limits)
    }
}

enum Source {
    Builtin,
    ConfigMap {
        /// `namespace/name`.
        config_map: String,
        namespace: String,
        digest: String,
        grant: Box<GrantSpec>,
    },
}

impl Source {
    /// Refuses a Pipeline of `namespace` that this plugin's grant does not serve.
    fn serves(&self, plugin: &str, namespace: &str, manifests: &Manifests) -> Result<(), String> {
        match self {
            Source::Builtin => Ok(()),
            Source::ConfigMap {
                config_map,
                namespace: home,
                grant,
                ..
            } => Audience {
                home: home.clone(),
                namespaces: grant.namespaces.clone(),
                selector: grant
                    .namespace_selector
                    .as_ref()
                    .map(|s| s.match_labels.clone()),
            }
            .check(
                plugin,
                config_map,
                namespace,
                manifests.namespace_labels(namespace),
            ),
        }
    }
}

struct Entry {
    plugin: Arc<Plugin>,
    source: Source,
}

/// Every plugin this process can run, by name.
pub struct Registry {
    runtime: Arc<Runtime>,
    entries: RwLock<HashMap<String, Arc<Entry>>>,
    /// Let built-in plugins reach names that resolve to private addresses.
    builtin_private_networks: bool,
    /// notification-controller's event receiver (`--events-addr`), for the notification
    /// plugin; `None`: pipelines using it are refused.
    events_addr: Option<String>,
    /// Fetches the components of ConfigMaps with `data.oci`.
    oci: Puller,
}

impl Registry {
    /// Loads the built-in plugins.
    pub async fn new(
        runtime: Arc<Runtime>,
        builtin_private_networks: bool,
    ) -> anyhow::Result<Registry> {
        let mut entries = HashMap::new();
        for (name, bytes) in crate::builtin::PLUGINS {
            let plugin = runtime
                .load(name, bytes, Grant::default(), Limits::default())
                .await?;
            entries.insert(
                name.to_string(),
                Arc::new(Entry {
                    plugin: Arc::new(plugin),
                    source: Source::Builtin,
                }),
            );
        }
        Ok(Registry {
            runtime,
            entries: RwLock::new(entries),
            builtin_private_networks,
            events_addr: None,
            oci: Puller::default(),
        })
    }

    /// Sets how OCI components are pulled: where they are cached and their size cap.
    pub fn with_oci(mut self, oci: Puller) -> Registry {
        self.oci = oci;
        self
    }

    /// Sets notification-controller's event receiver, where the notification plugin posts
    /// (already checked with [`parse_events_addr`]).
    pub fn with_events_addr(mut self, events_addr: Option<String>) -> Registry {
        self.events_addr = events_addr;
        self
    }

    /// Writes what the host owns into built-in strategies' configurations before they are
    /// validated and recorded: the notification strategy's `address` is the server's
    /// `--events-addr`, never the Pipeline's. Returns the problems: a Pipeline that sets
    /// `address` itself, or uses the notification strategy on a server without an events
    /// address.
    pub fn bind_host_settings(&self, manifests: &mut Manifests) -> Vec<String> {
        bind_events_addr(self.events_addr.as_deref(), manifests)
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.entries.read().unwrap().keys().cloned().collect();
        names.sort();
        names
    }

    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        self.entries
            .read()
            .unwrap()
            .get(name)
            .map(|e| e.plugin.clone())
    }

    /// Brings custom plugins in line with the plugin ConfigMaps: new ones are loaded,
    /// changed ones replaced, removed ones dropped. A ConfigMap that cannot be loaded
    /// leaves the plugin it would replace serving; its problem is returned.
    pub async fn sync(&self, manifests: &Manifests) -> Vec<String> {
        let mut problems = Vec::new();
        let mut wanted: HashMap<String, &ConfigMap> = HashMap::new();
        for cm in manifests.plugin_sources() {
            let name = cm
                .annotations
                .get(NAME_ANNOTATION)
                .cloned()
                .unwrap_or_else(|| cm.name.clone());
            if crate::builtin::get(&name).is_some() {
                problems.push(format!(
                    "ConfigMap {}/{}: plugin name {name:?} is a built-in plugin's; choose another (annotation {NAME_ANNOTATION})",
                    cm.namespace, cm.name
                ));
                continue;
            }
            wanted.insert(name, cm);
        }
        // Drop custom plugins whose ConfigMap is gone.
        self.entries
            .write()
            .unwrap()
            .retain(|name, e| matches!(e.source, Source::Builtin) || wanted.contains_key(name));
        for (name, cm) in wanted {
            let current_digest =
                self.entries
                    .read()
                    .unwrap()
                    .get(&name)
                    .and_then(|e| match &e.source {
                        Source::ConfigMap { digest, .. } => Some(digest.clone()),
                        Source::Builtin => None,
                    });
            match self
                .load_config_map(&name, cm, manifests, current_digest.as_deref())
                .await
            {
                Ok(Some(entry)) => {
                    tracing::info!(plugin = %name, configmap = %format!("{}/{}", cm.namespace, cm.name), "plugin loaded");
                    self.entries.write().unwrap().insert(name, Arc::new(entry));
                }
                Ok(None) => {}
                Err(problem) => {
                    let problem = format!(
                        "ConfigMap {}/{} (plugin {name}): {problem}",
                        cm.namespace, cm.name
                    );
                    if current_digest.is_some() {
                        tracing::warn!("{problem}; the previous version keeps serving");
                    } else {
                        tracing::warn!("{problem}");
                    }
                    problems.push(problem);
                }
            }
        }
        problems
    }

    /// `Ok(None)`: unchanged.
    async fn load_config_map(
        &self,
        name: &str,
        cm: &ConfigMap,
        manifests: &Manifests,
        current_digest: Option<&str>,
    ) -> Result<Option<Entry>, String> {
        let grant: GrantSpec = match cm.data.get("grant") {
            Some(text) => serde_yaml_ng::from_str(text).map_err(|e| format!("data.grant: {e}"))?,
            None => GrantSpec::default(),
        };
        let limits = grant
            .limits
            .limits()
            .map_err(|e| format!("data.grant.limits: {e}"))?;
        let (wasm, actual) = self.component(cm, manifests).await?;
        if current_digest == Some(actual.as_str()) {
            return Ok(None);
        }
        let plugin = self
            .runtime
            .load(name, &wasm, Grant::default(), limits)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Some(Entry {
            plugin: Arc::new(plugin),
            source: Source::ConfigMap {
                config_map: format!("{}/{}", cm.namespace, cm.name),
                namespace: cm.namespace.clone(),
                digest: actual,
                grant: Box::new(grant),
            },
        }))
    }

    /// The component a plugin ConfigMap carries, with its sha256 (hex):
    /// `binaryData.plugin.wasm`, checked against `data.sha256`, or pulled by the pinned
    /// reference in `data.oci` with the credentials of the Secret `data.pullSecret` names
    /// (in the ConfigMap's namespace).
    async fn component<'a>(
        &self,
        cm: &'a ConfigMap,
        manifests: &Manifests,
    ) -> Result<(Cow<'a, [u8]>, String), String> {
        let wasm = match (cm.data.get(OCI_KEY), cm.binary_data.get(WASM_KEY)) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "data.{OCI_KEY} and binaryData.{WASM_KEY} are both set; give one"
                ));
            }
            (None, None) => {
                return Err(format!(
                    "binaryData.{WASM_KEY} is missing (or data.{OCI_KEY}, a pinned OCI reference)"
                ));
            }
            (Some(reference), None) => {
                let reference = OciRef::parse(reference).map_err(|e| e.to_string())?;
                let credentials = match cm.data.get(PULL_SECRET_KEY).map(|s| s.trim()) {
                    Some(name) => {
                        let secret = manifests.secret(&cm.namespace, name).ok_or_else(|| {
                            format!(
                                "Secret {}/{name} named by data.{PULL_SECRET_KEY} does not exist",
                                cm.namespace
                            )
                        })?;
                        Some(Credentials::from_secret(secret, &reference.registry)?)
                    }
                    None => None,
                };
                let wasm = self
                    .oci
                    .fetch(&reference, credentials.as_ref())
                    .await
                    .map_err(|e| e.to_string())?;
                let digest = hex::encode(sha2::Sha256::digest(&wasm));
                return Ok((Cow::Owned(wasm), digest));
            }
            (None, Some(wasm)) => wasm,
        };
        let expected = cm
            .data
            .get("sha256")
            .map(|s| s.trim().trim_start_matches("sha256:").to_ascii_lowercase())
            .ok_or("data.sha256 is missing; it must hold the component's sha256 digest")?;
        let actual = hex::encode(sha2::Sha256::digest(wasm));
        if expected != actual {
            return Err(format!(
                "digest mismatch: data.sha256 says {expected}, binaryData.{WASM_KEY} has {actual}"
            ));
        }
        Ok((Cow::Borrowed(wasm), actual))
    }

    /// Checks every strategy of every pipeline against the plugin it names, with the
    /// plugin's own `validate-config`. Returns every problem.
    pub async fn validate(&self, manifests: &Manifests) -> Vec<String> {
        let mut problems = Vec::new();
        for pipeline in &manifests.pipelines {
            for (env, strategy) in pipeline.strategies() {
                let at = format!("Pipeline {pipeline}: promotion into {env}");
                let Some(plugin) = self.get(&strategy.plugin) else {
                    problems.push(format!(
                        "{at}: unknown strategy {:?}; installed: {}",
                        strategy.plugin,
                        self.names().join(", ")
                    ));
                    continue;
                };
                if let Some(problem) = self.remote_problem(strategy) {
                    problems.push(format!("{at}: {problem}"));
                    continue;
                }
                match plugin.validate_config(&strategy.config).await {
                    Ok(found) => problems.extend(
                        found
                            .into_iter()
                            .map(|p| format!("{at}: plugin {}: {p}", strategy.plugin)),
                    ),
                    Err(e) => problems.push(format!("{at}: {e}")),
                }
                if let Err(e) = self.may_use(&pipeline.namespace, strategy, manifests) {
                    problems.push(format!("{at}: {e}"));
                }
            }
        }
        problems
    }

    /// Whether a Pipeline in `namespace` may use `strategy` as written: a custom plugin
    /// must be granted to the namespace; a pull-request strategy's Secret, when it
    /// exists, must name the hosts it would be sent to. (A missing Secret is reported
    /// when the grant is built.)
    fn may_use(
        &self,
        namespace: &str,
        strategy: &StrategyRef,
        manifests: &Manifests,
    ) -> Result<(), String> {
        if let Some(entry) = self.entries.read().unwrap().get(&strategy.plugin) {
            entry
                .source
                .serves(&strategy.plugin, namespace, manifests)?;
        }
        if strategy.plugin == "pull-request"
            && let Some(name) = secret_name(&strategy.config)
            && let Some(secret) = manifests.secret(namespace, name)
            // A URL the forge's API cannot be found from is the plugin's validate-config
            // problem (the same function, the same message); nothing more to say here.
            && let Ok(location) = forge_location(&strategy.config)
        {
            pull_request_consent(secret, &location)?;
            git_auth(Some(secret), &location)?;
        }
        Ok(())
    }

    /// What is wrong with the git remote of a built-in pull-request strategy, before any
    /// promotion: credentials in the URL, a transport other than https/http/ssh, or a
    /// literal internal address on a server without `--builtin-private-networks`.
    fn remote_problem(&self, strategy: &StrategyRef) -> Option<String> {
        let builtin = self
            .entries
            .read()
            .unwrap()
            .get(&strategy.plugin)
            .is_some_and(|e| matches!(e.source, Source::Builtin));
        if !builtin || strategy.plugin != "pull-request" {
            return None;
        }
        let url = strategy.config.get("url")?.as_str()?.trim();
        crate::runtime::git::check_remote(url, self.builtin_private_networks)
            .err()
            .map(|e| e.to_string())
    }

    /// The plugin for `strategy`, with the grant it gets for a promotion of a pipeline
    /// in `namespace`.
    pub fn granted(
        &self,
        namespace: &str,
        strategy: &StrategyRef,
        manifests: &Manifests,
    ) -> Result<Plugin, String> {
        let entry = self
            .entries
            .read()
            .unwrap()
            .get(&strategy.plugin)
            .cloned()
            .ok_or_else(|| format!("strategy plugin {:?} is not installed", strategy.plugin))?;
        entry
            .source
            .serves(&strategy.plugin, namespace, manifests)?;
        let grant = match &entry.source {
            Source::Builtin => self.builtin_grant(namespace, strategy, manifests)?,
            Source::ConfigMap {
                namespace, grant, ..
            } => custom_grant(namespace, grant, manifests)?,
        };
        Ok(entry.plugin.with_grant(grant))
    }

    /// The grant of a built-in strategy. Its origins come from the Pipeline (tenant input),
    /// except the notification strategy's, which is the server's `--events-addr`: a URL
    /// naming a literal internal address is refused here, with the field and the flag, unless
    /// the operator allowed private networks for built-in strategies (the egress policy
    /// refuses it again at request time, and names that resolve there).
    fn builtin_grant(
        &self,
        namespace: &str,
        strategy: &StrategyRef,
        manifests: &Manifests,
    ) -> Result<Grant, String> {
        if strategy.plugin == NOTIFICATION {
            return notification_grant(self.events_addr.as_deref());
        }
        let (mut grant, urls) = if strategy.plugin == "pull-request" {
            let grant = pull_request_grant(namespace, &strategy.config, manifests)?;
            let field = |k: &str| {
                let url = strategy.config.get(k).and_then(|u| u.as_str())?;
                Some((format!("pull-request {k}"), url.trim().to_string()))
            };
            // The forge API's origin comes from apiBase, or else from the repository url.
            (
                grant,
                field("apiBase")
                    .or_else(|| field("url"))
                    .into_iter()
                    .collect(),
            )
        } else {
            self.webhook_grant(namespace, strategy, manifests)?
        };
        grant.granted_by = GrantedBy::Pipeline;
        grant.private_networks = self.builtin_private_networks;
        if !self.builtin_private_networks {
            refuse_internal_literals(&grant, &urls)?;
        }
        Ok(grant)
    }

    /// The webhook strategy's grant, with the URL its origin came from.
    fn webhook_grant(
        &self,
        namespace: &str,
        strategy: &StrategyRef,
        manifests: &Manifests,
    ) -> Result<(Grant, Vec<(String, String)>), String> {
        let mut grant = Grant::default();
        let mut urls = Vec::new();
        // The seed dialect nests the webhook config; accept both shapes.
        let config = strategy.config.get("webhook").unwrap_or(&strategy.config);
        if let Some(url) = config.get("url").and_then(|u| u.as_str()) {
            grant.origins.push(Origin::parse(url)?);
            urls.push(("webhook url".to_string(), url.to_string()));
        }
        if let Some(secret) = config
            .get("secretRef")
            .and_then(|r| r.get("name").or(Some(r)))
            .and_then(|n| n.as_str())
        {
            let found = manifests.secret(namespace, secret).ok_or_else(|| {
                format!(
                    "Secret {namespace}/{secret} named by the strategy's secretRef does not exist"
                )
            })?;
            let key = found
                .hmac_key()
                .ok_or_else(|| format!("Secret {namespace}/{secret} has no hmac-key"))?;
            grant.keys.insert(secret.to_string(), Secret::new(key));
        }
        Ok((grant, urls))
    }
}

/// Refuses a Pipeline-derived grant whose origins name a literal loopback, private,
/// link-local or metadata address; `urls` are the (field, URL) pairs they came from.
fn refuse_internal_literals(grant: &Grant, urls: &[(String, String)]) -> Result<(), String> {
    for origin in &grant.origins {
        let Some(ip) = origin.ip().filter(|ip| is_internal(*ip)) else {
            continue;
        };
        let (field, url) = urls
            .iter()
            .find(|(_, url)| {
                url.parse::<http::Uri>()
                    .ok()
                    .and_then(|u| Origin::of(&u))
                    .as_ref()
                    == Some(origin)
            })
            .map(|(f, u)| (f.as_str(), u.as_str()))
            .unwrap_or(("URL", ""));
        let url = if url.is_empty() {
            origin.to_string()
        } else {
            url.to_string()
        };
        return Err(format!(
            "{field} {url} names the internal address {ip} (loopback, private, link-local or \
             metadata), which a Pipeline may not reach; an operator who runs the receiver on \
             a private network allows it with --builtin-private-networks \
             (PROMOTER_BUILTIN_PRIVATE_NETWORKS=true)"
        ));
    }
    Ok(())
}

/// [`Registry::bind_host_settings`] for the notification strategy's `address`.
fn bind_events_addr(events_addr: Option<&str>, manifests: &mut Manifests) -> Vec<String> {
    let mut problems = Vec::new();
    for pipeline in &mut manifests.pipelines {
        let name = pipeline.to_string();
        for env in &mut pipeline.environments {
            let Some(promotion) = env.promotion.as_mut() else {
                continue;
            };
            if promotion.strategy.plugin != NOTIFICATION {
                continue;
            }
            let at = format!("Pipeline {name}: promotion into {}", env.name);
            // Not a mapping: the plugin's own validation says so.
            let Some(config) = promotion.strategy.config.as_object_mut() else {
                continue;
            };
            if config.remove("address").is_some() {
                problems.push(format!(
                    "{at}: notification.address cannot be set in a Pipeline; the server posts \
                     to its --events-addr (write `notification: {{}}`)"
                ));
            }
            match events_addr {
                Some(address) => {
                    config.insert("address".into(), address.into());
                }
                None => problems.push(format!(
                    "{at}: the notification strategy posts a Flux event to notification-controller, \
                     but this server has no events address; start `promoter serve` with \
                     --events-addr URL (or PROMOTER_EVENTS_ADDR), e.g. {EVENTS_ADDR_EXAMPLE}"
                )),
            }
        }
    }
    problems
}

/// The notification plugin may reach the origin of `--events-addr` and nothing else: over
/// plain http when the address says so (the in-cluster receiver is http), and at a private
/// address (a Service's cluster IP) since that origin is the only one granted. What the
/// Pipeline wrote plays no part.
fn notification_grant(events_addr: Option<&str>) -> Result<Grant, String> {
    let address = events_addr.ok_or_else(|| {
        format!(
            "the notification strategy needs the server's --events-addr (PROMOTER_EVENTS_ADDR), \
             e.g. {EVENTS_ADDR_EXAMPLE}"
        )
    })?;
    Ok(Grant {
        origins: vec![Origin::parse(address)?],
        granted_by: GrantedBy::Operator,
        private_networks: true,
        ..Grant::default()
    })
}

/// Checks `--events-addr`: an absolute http(s) URL with a host, no credentials and no
/// fragment. Returns it trimmed, with `/` for an empty path.
pub fn parse_events_addr(text: &str) -> Result<String, String> {
    let text = text.trim();
    let example = format!("expected http://host[:port][/path], e.g. {EVENTS_ADDR_EXAMPLE}");
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("{text:?} is not a URL ({e}); {example}"))?;
    if Origin::of(&uri).is_none() {
        return Err(format!("{text:?}: {example}"));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(format!(
            "{text:?} carries credentials; notification-controller's event receiver takes none"
        ));
    }
    if text.contains('#') {
        return Err(format!("{text:?} has a fragment; {example}"));
    }
    let rest = text.split_once("://").map_or("", |(_, rest)| rest);
    if rest.contains(['/', '?']) {
        Ok(text.to_string())
    } else {
        Ok(format!("{text}/"))
    }
}

fn custom_grant(namespace: &str, spec: &GrantSpec, manifests: &Manifests) -> Result<Grant, String> {
    let secret = |r: &SecretKeyRef| -> Result<Vec<u8>, String> {
        manifests
            .secret(namespace, &r.name)
            .ok_or_else(|| format!("Secret {namespace}/{} does not exist", r.name))?
            .get(&r.key)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| format!("Secret {namespace}/{} has no key {:?}", r.name, r.key))
    };
    let mut grant = Grant {
        private_networks: spec.private_networks,
        ..Grant::default()
    };
    for origin in &spec.allow {
        grant.origins.push(Origin::parse(origin)?);
    }
    for c in &spec.credentials {
        let mut value = c.prefix.as_bytes().to_vec();
        value.extend(secret(&c.secret_ref)?);
        grant.credentials.push(Credential {
            origin: Origin::parse(&c.origin)?,
            header: c
                .header
                .parse()
                .map_err(|_| format!("credential header {:?} is not a header name", c.header))?,
            value: Secret::new(value),
        });
    }
    for k in &spec.keys {
        grant
            .keys
            .insert(k.name.clone(), Secret::new(secret(&k.secret_ref)?));
    }
    Ok(grant)
}

/// The pull-request plugin may open the configuration repository and call its forge's
/// API; the Secret its `secretRef` names (Weave's keys: `username`/`password`, `token`,
/// `caFile`, or `identity`/`known_hosts` for SSH) authenticates both, applied by the host.
/// The API is where the plugin itself finds it ([`forge_location`]).
fn pull_request_grant(
    namespace: &str,
    config: &serde_json::Value,
    manifests: &Manifests,
) -> Result<Grant, String> {
    use crate::runtime::git::GitRemote;
    let location = forge_location(config)?;
    let url = config_text(config, "url").unwrap_or_default();
    let api = Origin::parse(&location.api_base)?;
    let secret = secret_name(config)
        .map(|name| {
            manifests.secret(namespace, name).ok_or_else(|| {
                format!(
                    "Secret {namespace}/{name} named by the strategy's secretRef does not exist"
                )
            })
        })
        .transpose()?;
    if let Some(secret) = secret {
        pull_request_consent(secret, &location)?;
    }
    let key = |k: &str| secret.and_then(|s| s.get(k)).filter(|v| !v.is_empty());
    let mut grant = Grant {
        repos: vec![GitRemote {
            url: url.to_string(),
            auth: git_auth(secret, &location)?,
            ca: key("caFile").map(Secret::new),
        }],
        ..Grant::default()
    };
    if let Some(token) = key("token").map(|v| String::from_utf8_lossy(v).trim().to_string()) {
        use base64::Engine;
        use promoter_sdk::forge::ForgeKind;
        let (header, value) = match location.kind {
            ForgeKind::GitLab => ("private-token", token),
            ForgeKind::Gitea => ("authorization", format!("token {token}")),
            ForgeKind::AzureDevOps => (
                "authorization",
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!(":{token}"))
                ),
            ),
            ForgeKind::GitHub | ForgeKind::BitbucketServer => {
                ("authorization", format!("Bearer {token}"))
            }
        };
        grant.credentials.push(Credential {
            origin: api.clone(),
            header: http::HeaderName::from_static(header),
            value: Secret::from(value.as_str()),
        });
    }
    grant.origins.push(api);
    Ok(grant)
}

/// How git authenticates to the repository with the strategy's Secret, or why the Secret
/// cannot serve this remote. An ssh remote needs the SSH key (`identity`); an https one a
/// `password` or `token` (sent as Basic with `username`, or a stand-in user name the forge
/// ignores). A token alone on Bitbucket Data Center goes as `Authorization: Bearer`: its
/// project and repository HTTP access tokens belong to no user, so Basic with a made-up
/// user name is refused.
fn git_auth(
    secret: Option<&crate::pipeline::Secret>,
    location: &promoter_sdk::forge::Location,
) -> Result<crate::runtime::git::GitAuth, String> {
    use crate::runtime::git::GitAuth;
    use promoter_sdk::forge::{ForgeKind, Transport};
    let Some(secret) = secret else {
        return Ok(GitAuth::None);
    };
    let key = |k: &str| secret.get(k).filter(|v| !v.is_empty());
    let utf8 = |k: &str| key(k).map(|v| String::from_utf8_lossy(v).trim().to_string());
    let label = format!(
        "Secret {}/{} (the pull-request strategy's secretRef)",
        secret.namespace, secret.name
    );
    let remote = &location.remote;
    if remote.transport == Transport::Ssh {
        let Some(identity) = key("identity") else {
            return Err(format!(
                "{label} has no identity, and the repository url is an SSH remote ({}), which \
                 git can only use with an SSH key: add the private key as identity (and the \
                 server's key as known_hosts), or use the repository's https URL, with which \
                 git takes the token or username/password",
                remote.host
            ));
        };
        return Ok(GitAuth::Ssh {
            identity: Secret::new(identity),
            known_hosts: key("known_hosts").map(Secret::new),
        });
    }
    let username = utf8("username");
    if let Some(password) = key("password") {
        return Ok(GitAuth::Basic {
            username: username.unwrap_or_else(|| "promoter".into()),
            password: Secret::new(password),
        });
    }
    match (utf8("token"), username) {
        (Some(token), Some(username)) => Ok(GitAuth::Basic {
            username,
            password: Secret::from(token.as_str()),
        }),
        // Sent as it stands in a header line: a control character would start another.
        (Some(token), None)
            if location.kind == ForgeKind::BitbucketServer
                && token.chars().any(|c| c.is_control()) =>
        {
            Err(format!(
                "{label}: its token holds a control character (a trailing newline?); \
                 store the token alone"
            ))
        }
        (Some(token), None) if location.kind == ForgeKind::BitbucketServer => Ok(GitAuth::Bearer {
            token: Secret::from(token.as_str()),
        }),
        (Some(token), None) => Ok(GitAuth::Basic {
            username: "promoter".into(),
            password: Secret::from(token.as_str()),
        }),
        (None, _) if key("identity").is_some() => Err(format!(
            "{label} holds an SSH key (identity) but the repository url is {}, which git \
             reaches over {}: use the repository's SSH URL, or put a token (or \
             username/password) in the Secret",
            crate::runtime::git::redact(&location.url),
            remote.transport.scheme()
        )),
        (None, _) => Ok(GitAuth::None),
    }
}

/// A non-empty string value of a strategy's configuration, trimmed.
fn config_text<'a>(config: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    config
        .get(key)
        .and_then(|v| v.as_str())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The Secret a strategy's `secretRef` names (`{name: x}`, or the seed dialect's bare name).
fn secret_name(config: &serde_json::Value) -> Option<&str> {
    config
        .get("secretRef")
        .and_then(|r| r.get("name").or(Some(r)))
        .and_then(|n| n.as_str())
        .map(str::trim)
}

/// The pull-request strategy's repository and forge API, found as the plugin finds them
/// (`type`, `url`, `apiBase`).
fn forge_location(config: &serde_json::Value) -> Result<promoter_sdk::forge::Location, String> {
    let url = config_text(config, "url").ok_or("pull-request strategy has no url")?;
    promoter_sdk::forge::locate(
        url,
        config_text(config, "type"),
        config_text(config, "apiBase"),
    )
    .map_err(|e| format!("pull-request: {e}"))
}

/// The pull-request strategy sends its Secret's values to the repository's host (git
/// authentication) and to the forge API's (the token): the Secret must name both.
fn pull_request_consent(
    secret: &crate::pipeline::Secret,
    location: &promoter_sdk::forge::Location,
) -> Result<(), String> {
    let remote = &location.remote;
    let repository = Endpoint::new(&remote.host, remote.port, remote.transport.default_port());
    let api = Origin::parse(&location.api_base)?;
    let default_port = if api.scheme == "http" { 80 } else { 443 };
    let api = Endpoint::new(&api.host, Some(api.port), default_port);
    may_send(
        secret,
        "the pull-request strategy's secretRef",
        &[repository, api],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pull_request_strategy_gets_its_repository_and_forge_api_with_the_secrets_token() {
        let manifests = Manifests::from_yaml(
            "t",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: git-creds, namespace: apps, annotations: {promoter.dev/allowed-hosts: 'github.com, api.github.com'}}\nstringData: {token: ghp_abc}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: flux-system, namespace: apps}\nstringData: {username: git, password: flux-deploy-token}\n",
        )
        .unwrap();
        let config = serde_json::json!({"url": "https://github.com/org/config.git", "baseBranch": "main", "secretRef": {"name": "git-creds"}});
        let grant = pull_request_grant("apps", &config, &manifests).unwrap();
        assert_eq!(
            grant.origins,
            vec![Origin::parse("https://api.github.com").unwrap()]
        );
        assert_eq!(grant.credentials[0].header, "authorization");
        assert_eq!(grant.credentials[0].value.expose(), b"Bearer ghp_abc");
        assert_eq!(grant.repos[0].url, "https://github.com/org/config.git");
        assert!(
            matches!(&grant.repos[0].auth, crate::runtime::git::GitAuth::Basic { password, .. } if password.expose() == b"ghp_abc")
        );
        let missing = serde_json::json!({"url": "https://github.com/org/config.git", "secretRef": {"name": "nope"}});
        assert!(
            pull_request_grant("apps", &missing, &manifests)
                .unwrap_err()
                .contains("does not exist")
        );
    }

    #[test]
    fn a_pull_request_secret_is_granted_only_for_the_hosts_it_names() {
        let manifests = Manifests::from_yaml(
            "t",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: git-creds, namespace: apps, annotations: {promoter.dev/allowed-hosts: github.com}}\nstringData: {token: ghp_abc}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: flux-system, namespace: apps}\nstringData: {username: git, password: flux-deploy-token}\n",
        )
        .unwrap();
        // Flux's bootstrap Secret never opted in.
        let flux = serde_json::json!({"type": "gitea", "url": "https://evil.example/o/r.git", "secretRef": {"name": "flux-system"}});
        let e = pull_request_grant("apps", &flux, &manifests).unwrap_err();
        assert!(
            e.contains("Secret apps/flux-system")
                && e.contains("promoter.dev/allowed-hosts: \"evil.example\""),
            "{e}"
        );
        // github.com alone does not cover the API host.
        let github = serde_json::json!({"url": "https://github.com/org/config.git", "secretRef": {"name": "git-creds"}});
        let e = pull_request_grant("apps", &github, &manifests).unwrap_err();
        assert!(e.contains("may not be sent to api.github.com"), "{e}");
        // apiBase is a host of its own.
        let elsewhere = serde_json::json!({"url": "https://github.com/org/config.git", "apiBase": "https://evil.example", "secretRef": {"name": "git-creds"}});
        assert!(
            pull_request_grant("apps", &elsewhere, &manifests)
                .unwrap_err()
                .contains("evil.example")
        );
    }

    /// A Secret in `apps` opted in to `hosts`, holding `data` (YAML flow mapping).
    fn manifests_with_secret(hosts: &str, data: &str) -> Manifests {
        Manifests::from_yaml(
            "t",
            &format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: forge, namespace: apps, annotations: {{promoter.dev/allowed-hosts: '{hosts}'}}}}\nstringData: {data}\n"
            ),
        )
        .unwrap()
    }

    /// The first request the pull-request plugin (its own code, run natively) makes for a
    /// promotion with `config`: the look-up of an open pull request on the forge's API.
    fn plugin_calls(config: &serde_json::Value) -> String {
        use promoter_sdk::testing::{MockHost, sample_request};
        let url = config["url"].as_str().unwrap();
        let marked = "tag: 1.0.0 # {\"$promotion\": \"flux-system:podinfo:prod\"}\n";
        let host = MockHost::new()
            .with_repo(url, "main", &[("apps/values.yaml", marked)])
            .respond(promoter_sdk::HttpResponse::new(401));
        let mut request = sample_request(&config.to_string());
        request.targets.truncate(1);
        let outcome =
            promoter_sdk::promote::<promoter_pull_request::PullRequestStrategy>(&host, &request);
        assert!(outcome.is_err(), "the forge answered 401");
        let requests = host.requests();
        assert!(!requests.is_empty(), "{url}: the plugin called no API");
        requests[0].url.clone()
    }

    #[test]
    fn the_host_binds_the_token_to_the_origin_the_plugin_calls_for_every_cloud_url_shape() {
        // Cloud hosts cannot be reached from tests (no DNS override, no custom CA), so the
        // two halves meet here: the host's grant, and the plugin's first request.
        for (url, hosts, api) in [
            (
                "git@ssh.dev.azure.com:v3/acme/ops/fleet",
                "ssh.dev.azure.com, dev.azure.com",
                "https://dev.azure.com",
            ),
            (
                "acme@vs-ssh.visualstudio.com:v3/acme/ops/fleet",
                "vs-ssh.visualstudio.com, dev.azure.com",
                "https://dev.azure.com",
            ),
            (
                "https://dev.azure.com/acme/ops/_git/fleet",
                "dev.azure.com",
                "https://dev.azure.com",
            ),
            (
                "https://www.github.com/acme/fleet",
                "www.github.com, api.github.com",
                "https://api.github.com",
            ),
            (
                "https://octo.ghe.com/acme/fleet.git",
                "octo.ghe.com, api.octo.ghe.com",
                "https://api.octo.ghe.com",
            ),
        ] {
            let manifests = manifests_with_secret(
                hosts,
                "{token: pat-1, identity: \"-----BEGIN OPENSSH PRIVATE KEY-----\", known_hosts: x}",
            );
            let config = serde_json::json!({"url": url, "baseBranch": "main", "secretRef": {"name": "forge"}});
            let grant = pull_request_grant("apps", &config, &manifests)
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            let api = Origin::parse(api).unwrap();
            assert_eq!(grant.origins, vec![api.clone()], "{url}");
            assert_eq!(grant.credentials.len(), 1, "{url}");
            assert_eq!(
                grant.credentials[0].origin, api,
                "{url}: the token's origin"
            );
            let called = plugin_calls(&config);
            let called = Origin::parse(&called).unwrap();
            assert_eq!(called, api, "{url}: the plugin called another origin");
        }
    }

    #[test]
    fn a_bearer_token_with_a_newline_cannot_add_a_header_line_to_git_requests() {
        let config = serde_json::json!({"url": "https://bitbucket.example.com/scm/ops/fleet.git", "baseBranch": "main", "secretRef": {"name": "forge"}});
        let injected = manifests_with_secret(
            "bitbucket.example.com",
            r#"{token: "abc\r\nX-Injected: yes"}"#,
        );
        let refused = pull_request_grant("apps", &config, &injected).unwrap_err();
        assert!(refused.contains("control character"), "{refused}");
    }

    #[test]
    fn a_bitbucket_data_center_token_alone_goes_to_git_as_bearer_and_with_a_user_as_basic() {
        use crate::runtime::git::GitAuth;
        let config = serde_json::json!({"url": "https://bitbucket.example.com/scm/ops/fleet.git", "baseBranch": "main", "secretRef": {"name": "forge"}});
        let token_only =
            manifests_with_secret("bitbucket.example.com", "{token: http-access-token}");
        let grant = pull_request_grant("apps", &config, &token_only).unwrap();
        assert!(
            matches!(&grant.repos[0].auth, GitAuth::Bearer { token } if token.expose() == b"http-access-token"),
            "{:?}",
            grant.repos[0].auth
        );
        assert_eq!(
            grant.credentials[0].value.expose(),
            b"Bearer http-access-token"
        );
        let personal = manifests_with_secret(
            "bitbucket.example.com",
            "{username: alice, token: personal}",
        );
        let grant = pull_request_grant("apps", &config, &personal).unwrap();
        assert!(
            matches!(&grant.repos[0].auth, GitAuth::Basic { username, password } if username == "alice" && password.expose() == b"personal")
        );
        // Elsewhere a token alone stays Basic, with a user name those forges ignore.
        let gitlab = serde_json::json!({"url": "https://gitlab.com/acme/fleet.git", "baseBranch": "main", "secretRef": {"name": "forge"}});
        let grant = pull_request_grant(
            "apps",
            &gitlab,
            &manifests_with_secret("gitlab.com", "{token: glpat}"),
        )
        .unwrap();
        assert!(
            matches!(&grant.repos[0].auth, GitAuth::Basic { password, .. } if password.expose() == b"glpat")
        );
    }

    #[test]
    fn a_secret_that_cannot_authenticate_git_to_this_remote_is_refused_saying_what_to_add() {
        let ssh = serde_json::json!({"url": "git@ssh.dev.azure.com:v3/acme/ops/fleet", "baseBranch": "main", "secretRef": {"name": "forge"}});
        let token_only = manifests_with_secret("ssh.dev.azure.com, dev.azure.com", "{token: pat}");
        let e = pull_request_grant("apps", &ssh, &token_only).unwrap_err();
        assert!(
            e.contains("Secret apps/forge")
                && e.contains("SSH remote")
                && e.contains("add the private key as identity"),
            "{e}"
        );
        let https = serde_json::json!({"url": "https://dev.azure.com/acme/ops/_git/fleet", "baseBranch": "main", "secretRef": {"name": "forge"}});
        let key_only = manifests_with_secret("dev.azure.com", "{identity: key}");
        let e = pull_request_grant("apps", &https, &key_only).unwrap_err();
        assert!(e.contains("use the repository's SSH URL"), "{e}");
        // A URL whose forge API cannot be found is refused with the plugin's own words.
        let unknown =
            serde_json::json!({"url": "https://git.example.com/o/r.git", "baseBranch": "main"});
        let e = pull_request_grant("apps", &unknown, &token_only).unwrap_err();
        assert!(e.contains("set type to one of github"), "{e}");
    }

    const WEAVE_NOTIFICATION: &str = "apiVersion: pipelines.weave.works/v1alpha1\nkind: Pipeline\n\
        metadata: {name: ledger, namespace: default}\n\
        spec:\n  appRef: {apiVersion: helm.toolkit.fluxcd.io/v2, kind: HelmRelease, name: ledger}\n\
        \x20 environments:\n  - {name: dev, targets: [{namespace: dev}]}\n  - {name: prod, targets: [{namespace: prod}]}\n\
        \x20 promotion: {strategy: {notification: NOTIFICATION}}\n";

    fn notification_config(manifests: &Manifests) -> &serde_json::Value {
        &manifests.pipelines[0]
            .promotion_into("prod")
            .unwrap()
            .strategy
            .config
    }

    #[test]
    fn the_notification_address_is_the_servers_whatever_the_pipeline_wrote() {
        let address = "http://notification-controller.flux-system.svc.cluster.local./";
        let mut manifests =
            Manifests::from_yaml("p.yaml", &WEAVE_NOTIFICATION.replace("NOTIFICATION", "{}"))
                .unwrap();
        assert!(bind_events_addr(Some(address), &mut manifests).is_empty());
        assert_eq!(
            notification_config(&manifests),
            &serde_json::json!({ "address": address })
        );

        let mut manifests = Manifests::from_yaml(
            "p.yaml",
            &WEAVE_NOTIFICATION.replace("NOTIFICATION", "{address: 'http://evil.example/'}"),
        )
        .unwrap();
        let problems = bind_events_addr(Some(address), &mut manifests);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("Pipeline default/ledger: promotion into prod: notification.address cannot be set in a Pipeline"),
            "{problems:?}"
        );
        assert_eq!(
            notification_config(&manifests),
            &serde_json::json!({ "address": address })
        );
    }

    #[test]
    fn a_notification_pipeline_on_a_server_without_events_addr_is_a_problem_naming_the_flag() {
        let mut manifests =
            Manifests::from_yaml("p.yaml", &WEAVE_NOTIFICATION.replace("NOTIFICATION", "{}"))
                .unwrap();
        let problems = bind_events_addr(None, &mut manifests);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("promotion into prod"), "{problems:?}");
        assert!(problems[0].contains("--events-addr URL"), "{problems:?}");
        assert_eq!(notification_config(&manifests), &serde_json::json!({}));
        assert!(
            notification_grant(None)
                .unwrap_err()
                .contains("--events-addr")
        );
    }

    #[test]
    fn the_notification_grant_is_the_events_origin_alone_with_private_networks() {
        let grant = notification_grant(Some("http://10.96.0.15:80/")).unwrap();
        assert_eq!(
            grant.origins,
            vec![Origin::parse("http://10.96.0.15").unwrap()]
        );
        assert!(grant.private_networks);
        assert!(grant.credentials.is_empty() && grant.keys.is_empty() && grant.repos.is_empty());
    }

    #[test]
    fn events_addr_must_be_an_http_url_without_credentials() {
        assert_eq!(
            parse_events_addr(" http://notification-controller.flux-system.svc.cluster.local.")
                .unwrap(),
            "http://notification-controller.flux-system.svc.cluster.local./"
        );
        assert_eq!(
            parse_events_addr("https://nc.example:9443/events").unwrap(),
            "https://nc.example:9443/events"
        );
        for bad in [
            "notification-controller:80",
            "ftp://nc.example/",
            "http://user:pw@nc.example/",
            "http://nc.example/#x",
            "http:///",
            "",
        ] {
            let problem = parse_events_addr(bad).unwrap_err();
            assert!(problem.contains(bad.trim()), "{bad}: {problem}");
        }
    }
}
