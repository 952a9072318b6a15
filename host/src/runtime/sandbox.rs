//! One call's sandbox: the store's data and the host functions a plugin imports.

use super::bindings::promoter::strategy::git as wit_git;
use super::bindings::promoter::strategy::host as wit_host;
use super::bindings::promoter::strategy::types as wit;
use super::egress::{Egress, Refusal};
use super::git::{GitCache, GitFailure, GitRepo};
use super::limits::MemoryLimiter;
use crate::promotion::PromotionRequest;
use std::sync::Arc;
use wasmtime::component::Resource;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// The store's data: one per call, dropped with it.
pub(crate) struct Sandbox {
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub table: ResourceTable,
    pub egress: Egress,
    pub limiter: MemoryLimiter,
    pub sign_enabled: bool,
    pub promotion: Option<String>,
    pub log_budget: usize,
    /// `git` was requested by the plugin and repositories were granted.
    pub git_enabled: bool,
    pub git: Arc<GitCache>,
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Sandbox {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.egress,
        }
    }
}

impl wit::Host for Sandbox {}

impl wit_host::Host for Sandbox {
    fn log(&mut self, level: wit_host::Level, message: String) {
        let plugin = self.egress.policy.plugin.clone();
        let promotion = self.promotion.as_deref().unwrap_or("-");
        if self.log_budget < message.len() {
            if self.log_budget > 0 {
                tracing::warn!(%plugin, promotion, "plugin log budget exhausted; further lines dropped");
            }
            self.log_budget = 0;
            return;
        }
        self.log_budget -= message.len();
        match level {
            wit_host::Level::Trace => tracing::trace!(%plugin, promotion, "{message}"),
            wit_host::Level::Debug => tracing::debug!(%plugin, promotion, "{message}"),
            wit_host::Level::Info => tracing::info!(%plugin, promotion, "{message}"),
            wit_host::Level::Warn => tracing::warn!(%plugin, promotion, "{message}"),
            wit_host::Level::Error => tracing::error!(%plugin, promotion, "{message}"),
        }
    }

    fn sign(
        &mut self,
        key: String,
        algorithm: wit_host::HmacAlgorithm,
        data: Vec<u8>,
    ) -> Result<String, String> {
        let policy = &self.egress.policy;
        let refuse = |reason: String| {
            self.egress.refusals.lock().unwrap().push(Refusal {
                origin: None,
                reason: reason.clone(),
            });
            Err(reason)
        };
        if !self.sign_enabled {
            return refuse(format!(
                "plugin {} may not sign: the sign capability was not requested or no key is bound",
                policy.plugin
            ));
        }
        let Some(secret) = policy.grant.keys.get(&key) else {
            let bound: Vec<&str> = policy.grant.keys.keys().map(String::as_str).collect();
            return refuse(format!(
                "no signing key named {key:?} is bound to plugin {}; bound keys: {}",
                policy.plugin,
                bound.join(", ")
            ));
        };
        let algorithm = match algorithm {
            wit_host::HmacAlgorithm::Sha256 => crate::signature::Algorithm::Sha256,
            wit_host::HmacAlgorithm::Sha384 => crate::signature::Algorithm::Sha384,
            wit_host::HmacAlgorithm::Sha512 => crate::signature::Algorithm::Sha512,
        };
        Ok(crate::signature::sign_hex(
            algorithm,
            secret.expose(),
            &data,
        ))
    }
}

/// The guest's own words when it panicked (Rust prints them to stderr before
/// aborting), else the trap and the last lines it wrote.
pub(crate) fn trap_message(error: &wasmtime::Error, stderr: &[String]) -> String {
    let trap = match error.downcast_ref::<wasmtime::Trap>() {
        Some(t) => t.to_string(),
        None => format!("{error:#}")
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
    };
    if let Some(at) = stderr.iter().rposition(|l| l.contains("panicked at")) {
        let said: Vec<&str> = stderr[at + 1..]
            .iter()
            .map(String::as_str)
            .filter(|l| !l.starts_with("note:"))
            .collect();
        if !said.is_empty() {
            return format!("{} ({trap})", said.join(" "));
        }
    }
    let tail: Vec<&str> = stderr
        .iter()
        .rev()
        .take(3)
        .rev()
        .map(String::as_str)
        .collect();
    if tail.is_empty() {
        trap
    } else {
        format!("{trap}; stderr: {}", tail.join(" | "))
    }
}

pub(crate) fn to_wit(r: &PromotionRequest) -> wit::PromotionRequest {
    wit::PromotionRequest {
        id: r.id.clone(),
        attempt: r.attempt,
        pipeline: wit::PipelineRef {
            namespace: r.pipeline.namespace.clone(),
            name: r.pipeline.name.clone(),
        },
        source_environment: r.source_environment.clone(),
        target_environment: r.target_environment.clone(),
        targets: r
            .targets
            .iter()
            .map(|t| wit::DeploymentTarget {
                namespace: t.namespace.clone(),
                cluster: t.cluster.as_ref().map(|c| wit::ClusterRef {
                    api_version: c.api_version.clone(),
                    kind: c.kind.clone(),
                    name: c.name.clone(),
                    namespace: c.namespace.clone(),
                }),
            })
            .collect(),
        app: wit::AppRef {
            api_version: r.app.api_version.clone(),
            kind: r.app.kind.clone(),
            name: r.app.name.clone(),
        },
        version: r.version.clone(),
        config: r.config.to_string(),
        event: wit::EventInfo {
            kind: r.event.kind.clone(),
            name: r.event.name.clone(),
            namespace: r.event.namespace.clone(),
            reason: r.event.reason.clone(),
            severity: r.event.severity.clone(),
            message: r.event.message.clone(),
            timestamp: r.event.timestamp.clone(),
            reporting_controller: r.event.reporting_controller.clone(),
            metadata: r
                .event
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        },
    }
}

impl From<GitFailure> for wit_git::GitError {
    fn from(f: GitFailure) -> Self {
        match f {
            GitFailure::Denied(m) => wit_git::GitError::Denied(m),
            GitFailure::NotFound(m) => wit_git::GitError::NotFound(m),
            GitFailure::Unauthorized(m) => wit_git::GitError::Unauthorized(m),
            GitFailure::Unavailable(m) => wit_git::GitError::Unavailable(m),
            GitFailure::Invalid(m) => wit_git::GitError::Invalid(m),
            GitFailure::Other(m) => wit_git::GitError::Other(m),
            e @ GitFailure::TooLarge { .. } => wit_git::GitError::Denied(e.to_string()),
            e @ GitFailure::TimedOut { .. } => wit_git::GitError::Unavailable(e.to_string()),
        }
    }
}

impl Sandbox {
    fn repo(&self, r: &Resource<GitRepo>) -> wasmtime::Result<&GitRepo> {
        Ok(self.table.get(r)?)
    }
}

impl wit_git::Host for Sandbox {}

impl wit_git::HostRepository for Sandbox {
    async fn open(
        &mut self,
        url: String,
        branch: String,
    ) -> wasmtime::Result<Result<Resource<GitRepo>, wit_git::GitError>> {
        let shown = super::git::redact(&url);
        let refused = |reason: String, this: &Self| {
            this.egress.refusals.lock().unwrap().push(Refusal {
                origin: Some(shown.clone()),
                reason: reason.clone(),
            });
            tracing::warn!(plugin = %this.egress.policy.plugin, repository = %shown, "git refused: {reason}");
            Ok(Err(wit_git::GitError::Denied(reason)))
        };
        if !self.git_enabled {
            return refused(
                "plugin has no git capability (not requested, or no repository granted)".into(),
                self,
            );
        }
        let grant = &self.egress.policy.grant;
        let (granted, private_networks) = (grant.repos.clone(), grant.private_networks);
        match GitRepo::open(&self.git, &granted, &url, &branch, private_networks).await {
            Ok(repo) => Ok(Ok(self.table.push(repo)?)),
            // Refusals of the host's policy and limits are reported as such, whatever the
            // plugin makes of them.
            Err(e @ (GitFailure::Denied(_) | GitFailure::TooLarge { .. })) => {
                refused(e.to_string(), self)
            }
            Err(e) => Ok(Err(e.into())),
        }
    }

    async fn create_branch(
        &mut self,
        repo: Resource<GitRepo>,
        name: String,
    ) -> wasmtime::Result<Result<(), wit_git::GitError>> {
        Ok(self
            .repo(&repo)?
            .create_branch(&name)
            .await
            .map_err(Into::into))
    }

    async fn read_file(
        &mut self,
        repo: Resource<GitRepo>,
        path: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, wit_git::GitError>> {
        Ok(self.repo(&repo)?.read_file(&path).map_err(Into::into))
    }

    async fn write_file(
        &mut self,
        repo: Resource<GitRepo>,
        path: String,
        contents: Vec<u8>,
    ) -> wasmtime::Result<Result<(), wit_git::GitError>> {
        Ok(self
            .repo(&repo)?
            .write_file(&path, &contents)
            .map_err(Into::into))
    }

    async fn list_files(
        &mut self,
        repo: Resource<GitRepo>,
        dir: String,
    ) -> wasmtime::Result<Result<Vec<String>, wit_git::GitError>> {
        Ok(self.repo(&repo)?.list_files(&dir).await.map_err(Into::into))
    }

    async fn commit(
        &mut self,
        repo: Resource<GitRepo>,
        message: String,
        author: wit_git::Author,
    ) -> wasmtime::Result<Result<Option<String>, wit_git::GitError>> {
        Ok(self
            .repo(&repo)?
            .commit(&message, &author.name, &author.email)
            .await
            .map_err(Into::into))
    }

    async fn push(
        &mut self,
        repo: Resource<GitRepo>,
        branch: String,
    ) -> wasmtime::Result<Result<bool, wit_git::GitError>> {
        Ok(self.repo(&repo)?.push(&branch).await.map_err(Into::into))
    }

    async fn drop(&mut self, repo: Resource<GitRepo>) -> wasmtime::Result<()> {
        self.table.delete(repo)?;
        Ok(())
    }
}
