//! The strategy runtime: loads plugin components and runs each call in a fresh,
//! limited sandbox.
//!
//! - One [`wasmtime::Engine`] per process, with epoch interruption: a background
//!   thread advances the epoch every [`EPOCH_TICK`], and a running guest yields to
//!   the async executor at every tick, so a plugin that never returns still lets the
//!   host's timer fire and is dropped at its deadline.
//! - A component is compiled once per content digest (in memory, and on disk when a
//!   cache directory is set) and linked once into an `InstancePre`. The disk cache holds
//!   native code: its directory is private to the process ([`cache_dir`]: 0700, ours,
//!   checked at start) and a file in it is loaded only when it is ours alone.
//! - Every call gets a new store and instance with an empty WASI context: no
//!   environment, arguments, files, sockets or inherited stdio.
//! - Memory, time and concurrency are limited per plugin ([`Limits`]); outbound HTTP
//!   goes through [`egress`]; signing keys stay in the host.

pub mod cache_dir;
pub mod egress;
pub mod git;
pub mod limits;
mod output;
mod sandbox;
pub mod secret;

use crate::promotion::{Outcome, PromotionRequest, StrategyError};
use egress::{Egress, EgressPolicy, Grant, Refusal};
use limits::{Limits, MemoryLimiter};
use output::{CappedOutput, Stream};
use sandbox::{Sandbox, to_wit, trap_message};
use sha2::Digest as _;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::WasiHttpCtx;

/// The contract this host speaks.
pub const CONTRACT: &str = "promoter:strategy@0.1.0";
const STRATEGY_EXPORT: &str = "promoter:strategy/strategy@0.1.0";
const STRATEGY_EXPORT_PREFIX: &str = "promoter:strategy/strategy@";

/// How often the epoch advances: the granularity of yielding and of the deadline.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Plugin instances alive at once in the whole process. Instances come from a
/// pre-reserved pool (wasmtime's pooling allocator), which is what makes a fresh
/// sandbox per call cheap; calls beyond this wait for a free slot.
pub const POOL_INSTANCES: u32 = 64;

/// The largest memory limit a plugin may be given (the pool's slot size).
pub const MAX_PLUGIN_MEMORY: usize = 1 << 30;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
        imports: {
            "promoter:strategy/git": async | trappable,
        },
        exports: { default: async },
        with: {
            "promoter:strategy/git.repository": super::git::GitRepo,
        },
    });
}

use bindings::promoter::strategy::types as wit;

/// Why a plugin could not be loaded or a call did not return a result.
/// Every variant names the plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin {plugin}: timed out after {limit:?}")]
    Timeout { plugin: String, limit: Duration },
    #[error("plugin {plugin}: exceeded its memory limit of {limit_bytes} bytes")]
    MemoryLimit { plugin: String, limit_bytes: usize },
    #[error("plugin {plugin}: trapped: {message}")]
    Trap { plugin: String, message: String },
    #[error("plugin {plugin}: capability denied{}: {reason}", origin.as_ref().map(|o| format!(" for {o}")).unwrap_or_default())]
    CapabilityDenied {
        plugin: String,
        origin: Option<String>,
        reason: String,
    },
    #[error("plugin {plugin}: invalid component: {reason}")]
    InvalidComponent { plugin: String, reason: String },
    /// The plugin ran and reported an error of its own.
    #[error("plugin {plugin}: {error}")]
    Strategy {
        plugin: String,
        error: StrategyError,
    },
}

/// What a plugin hands back is kept in the promotion record, shown by the status API and
/// logged: a plugin cannot make it large. URLs and texts past these are cut (with `…`).
pub const MAX_URL_BYTES: usize = 2048;
pub const MAX_TEXT_BYTES: usize = 4096;
/// Config problems reported by `validate-config`, at most.
pub const MAX_PROBLEMS: usize = 50;

/// `text` cut to at most `max` bytes at a character boundary, marked with `…` when cut.
pub fn clip(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
}

impl PluginError {
    /// Whether trying the same promotion again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            PluginError::Timeout { .. } => true,
            PluginError::Strategy { error, .. } => error.retryable,
            _ => false,
        }
    }

    /// The delay the far side asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            PluginError::Strategy { error, .. } => error.retry_after,
            _ => None,
        }
    }

    /// A short machine-readable kind, for metrics and status.
    pub fn kind(&self) -> &'static str {
        match self {
            PluginError::Timeout { .. } => "timeout",
            PluginError::MemoryLimit { .. } => "memory-limit",
            PluginError::Trap { .. } => "trap",
            PluginError::CapabilityDenied { .. } => "capability-denied",
            PluginError::InvalidComponent { .. } => "invalid-component",
            PluginError::Strategy { .. } => "strategy",
        }
    }
}

/// What a plugin asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    Http,
    Sign,
    Git,
}

/// A plugin's own description of itself (the `metadata` export) plus what the host
/// learnt while loading it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub name: String,
    pub version: String,
    pub description: String,
    pub capabilities: Vec<Capability>,
    pub config_schema: serde_json::Value,
    /// The contract the component exports, e.g. `promoter:strategy@0.1.0`.
    pub contract: String,
    /// sha256 of the component bytes, hex.
    pub digest: String,
    /// The interfaces the component imports.
    pub imports: Vec<String>,
}

/// Where compiled components are kept between runs.
#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    /// Directory for compiled components (`<digest>-<engine>.cwasm`), private to the
    /// process ([`cache_dir::ensure_private`]). `None`: memory only.
    pub cache_dir: Option<PathBuf>,
    /// Where git working copies are kept. `None`: a folder under the system temp dir.
    pub git_dir: Option<PathBuf>,
}

/// The engine, the linker and the compiled components. Cheap to share behind an `Arc`.
pub struct Runtime {
    engine: Engine,
    linker: Linker<Sandbox>,
    cache_dir: Option<PathBuf>,
    engine_id: String,
    compiled: Mutex<HashMap<String, Component>>,
    ticking: Arc<AtomicBool>,
    /// One permit per pool slot, so a busy process queues instead of failing.
    pool_slots: Arc<tokio::sync::Semaphore>,
    git: Arc<git::GitCache>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticking.store(false, Ordering::Relaxed);
    }
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Runtime> {
        let mut wasm = Config::new();
        wasm.epoch_interruption(true);
        wasm.wasm_component_model(true);
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_INSTANCES)
            .total_core_instances(POOL_INSTANCES * 8)
            .total_memories(POOL_INSTANCES * 2)
            .total_tables(POOL_INSTANCES * 8)
            .total_stacks(POOL_INSTANCES)
            .max_memory_size(MAX_PLUGIN_MEMORY);
        wasm.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        bindings::Plugin::add_to_linker::<Sandbox, HasSelf<Sandbox>>(&mut linker, |s| s)?;

        let ticking = Arc::new(AtomicBool::new(true));
        {
            let engine = engine.clone();
            let ticking = ticking.clone();
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || {
                    while ticking.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })?;
        }

        let engine_id = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut h);
            format!("{:016x}", h.finish())
        };
        if let Some(dir) = &config.cache_dir {
            cache_dir::ensure_private(dir)?;
        }
        Ok(Runtime {
            engine,
            linker,
            cache_dir: config.cache_dir,
            engine_id,
            compiled: Mutex::default(),
            ticking,
            pool_slots: Arc::new(tokio::sync::Semaphore::new(POOL_INSTANCES as usize)),
            git: Arc::new(git::GitCache::new(config.git_dir.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("promoter-git-{}", std::process::id()))
            }))),
        })
    }

    /// Compiles (or finds compiled) `wasm`, links it, checks the contract and asks the
    /// plugin for its metadata. `name` is the operator's name for the plugin.
    pub async fn load(
        self: &Arc<Self>,
        name: &str,
        wasm: &[u8],
        grant: Grant,
        limits: Limits,
    ) -> Result<Plugin, PluginError> {
        let invalid = |reason: String| PluginError::InvalidComponent {
            plugin: name.to_string(),
            reason,
        };
        let mut limits = limits;
        if limits.memory_bytes > MAX_PLUGIN_MEMORY {
            tracing::warn!(
                plugin = name,
                "memory limit {} lowered to the 1GiB maximum",
                limits.memory_bytes
            );
            limits.memory_bytes = MAX_PLUGIN_MEMORY;
        }
        let digest = hex::encode(sha2::Sha256::digest(wasm));
        let component = {
            let this = self.clone();
            let digest = digest.clone();
            let wasm = wasm.to_vec();
            tokio::task::spawn_blocking(move || this.compile(&digest, &wasm))
                .await
                .map_err(|e| invalid(format!("compilation panicked: {e}")))?
                .map_err(|e| invalid(format!("{e:#}")))?
        };

        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let imports: Vec<String> = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        if !exports.iter().any(|e| e == STRATEGY_EXPORT) {
            return Err(invalid(
                match exports
                    .iter()
                    .find(|e| e.starts_with(STRATEGY_EXPORT_PREFIX))
                {
                    Some(other) => format!(
                        "it exports contract {}, this host speaks {CONTRACT}",
                        other.replace("/strategy@", "@")
                    ),
                    None => format!(
                        "it does not export {STRATEGY_EXPORT} (exports: {}); build it with promoter-sdk's export_strategy!",
                        if exports.is_empty() {
                            "none".to_string()
                        } else {
                            exports.join(", ")
                        }
                    ),
                },
            ));
        }
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| invalid(format!("{e:#}")))?;
        let pre = bindings::PluginPre::new(pre).map_err(|e| invalid(format!("{e:#}")))?;

        let mut plugin = Plugin {
            runtime: self.clone(),
            name: name.into(),
            pre,
            policy: Arc::new(EgressPolicy {
                plugin: name.into(),
                grant: Grant::default(),
                enabled: false,
                limits: limits.clone(),
            }),
            client: egress::client(&limits),
            sign_enabled: false,
            git_enabled: false,
            slots: Arc::new(tokio::sync::Semaphore::new(limits.max_instances.max(1))),
            limits,
            metadata: Metadata {
                name: String::new(),
                version: String::new(),
                description: String::new(),
                capabilities: Vec::new(),
                config_schema: serde_json::Value::Null,
                contract: CONTRACT.to_string(),
                digest,
                imports,
            },
        };
        let Reply::Metadata(meta) = plugin.invoke(Call::Metadata, None).await? else {
            unreachable!("metadata call answers with metadata")
        };
        let capabilities: Vec<Capability> = meta
            .capabilities
            .iter()
            .map(|c| match c {
                wit::Capability::Http => Capability::Http,
                wit::Capability::Sign => Capability::Sign,
                wit::Capability::Git => Capability::Git,
            })
            .collect();
        let config_schema = serde_json::from_str(&meta.config_schema)
            .map_err(|e| invalid(format!("its config schema is not JSON: {e}")))?;
        plugin.metadata = Metadata {
            name: meta.name,
            version: meta.version,
            description: meta.description,
            capabilities,
            config_schema,
            ..plugin.metadata
        };
        Ok(plugin.with_grant(grant))
    }

    fn compile(&self, digest: &str, wasm: &[u8]) -> anyhow::Result<Component> {
        if let Some(c) = self.compiled.lock().unwrap().get(digest) {
            return Ok(c.clone());
        }
        let path = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("{digest}-{}.cwasm", self.engine_id)));
        let mut component = None;
        if let Some(path) = path.as_ref() {
            // SAFETY: the file was written by `Component::serialize` of this engine
            // configuration (its hash is in the name) into a directory only this process
            // writes (checked at start: 0700, ours), and it is read only when it is a
            // regular file of ours that nobody else may write, not a link. It is read into
            // memory rather than mapped, so a file truncated under us cannot fault the
            // process. If it does not load, we recompile.
            let loaded = match cache_dir::read_private(path) {
                Ok(None) => None,
                Ok(Some(bytes)) => Some(
                    unsafe { Component::deserialize(&self.engine, bytes) }
                        .map_err(anyhow::Error::from),
                ),
                Err(why) => Some(Err(anyhow::anyhow!("not trusted: {why}"))),
            };
            match loaded.transpose() {
                Ok(c) => component = c,
                Err(e) => {
                    tracing::warn!(path = %path.display(), "discarding unusable compiled plugin: {e}");
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        let component = match component {
            Some(c) => c,
            None => {
                if is_core_module(wasm) {
                    anyhow::bail!(
                        "it is a core WebAssembly module, not a component; build it for wasm32-wasip2"
                    );
                }
                let c = Component::new(&self.engine, wasm)?;
                if let Some(path) = &path {
                    let written = c
                        .serialize()
                        .map_err(std::io::Error::other)
                        .and_then(|bytes| crate::write_atomically(path, &bytes));
                    if let Err(e) = written {
                        tracing::warn!(path = %path.display(), "cannot cache compiled plugin: {e}");
                    }
                }
                c
            }
        };
        self.compiled
            .lock()
            .unwrap()
            .insert(digest.to_string(), component.clone());
        Ok(component)
    }
}

/// A core module starts with the same magic as a component but a different layer.
/// A core WebAssembly module (version 1), not a component.
pub(crate) fn is_core_module(wasm: &[u8]) -> bool {
    wasm.len() >= 8 && &wasm[0..4] == b"\0asm" && wasm[4..8] == [1, 0, 0, 0]
}

enum Call {
    Metadata,
    Validate(String),
    Promote(wit::PromotionRequest),
}

enum Reply {
    Metadata(wit::PluginMetadata),
    Validate(Result<(), Vec<String>>),
    Promote(Result<wit::Outcome, wit::PromoteError>),
}

/// A loaded plugin with its grant and limits. Cheap to call concurrently.
pub struct Plugin {
    runtime: Arc<Runtime>,
    name: Arc<str>,
    pre: bindings::PluginPre<Sandbox>,
    policy: Arc<EgressPolicy>,
    client: reqwest::Client,
    sign_enabled: bool,
    git_enabled: bool,
    slots: Arc<tokio::sync::Semaphore>,
    limits: Limits,
    metadata: Metadata,
}

impl Plugin {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The same component with another grant: what the host enforces is the
    /// intersection of the grant and the capabilities the plugin asked for. Cheap:
    /// nothing is compiled or linked again, and the instance limit stays shared.
    pub fn with_grant(&self, grant: Grant) -> Plugin {
        let asked = &self.metadata.capabilities;
        let http = asked.contains(&Capability::Http) && !grant.origins.is_empty();
        let sign_enabled = asked.contains(&Capability::Sign) && !grant.keys.is_empty();
        let git_enabled = asked.contains(&Capability::Git) && !grant.repos.is_empty();
        Plugin {
            runtime: self.runtime.clone(),
            name: self.name.clone(),
            pre: self.pre.clone(),
            policy: Arc::new(EgressPolicy {
                plugin: self.name.clone(),
                grant,
                enabled: http,
                limits: self.limits.clone(),
            }),
            client: self.client.clone(),
            sign_enabled,
            git_enabled,
            slots: self.slots.clone(),
            limits: self.limits.clone(),
            metadata: self.metadata.clone(),
        }
    }

    /// Asks the plugin whether `config` (JSON) is acceptable. `Ok(problems)`: the
    /// plugin answered (empty = valid); `Err`: the call itself failed.
    pub async fn validate_config(
        &self,
        config: &serde_json::Value,
    ) -> Result<Vec<String>, PluginError> {
        match self
            .invoke(Call::Validate(config.to_string()), None)
            .await?
        {
            Reply::Validate(Ok(())) => Ok(Vec::new()),
            Reply::Validate(Err(mut problems)) => {
                if problems.len() > MAX_PROBLEMS {
                    let more = problems.len() - MAX_PROBLEMS;
                    problems.truncate(MAX_PROBLEMS);
                    problems.push(format!("… and {more} more"));
                }
                Ok(problems
                    .into_iter()
                    .map(|p| clip(p, MAX_TEXT_BYTES))
                    .collect())
            }
            _ => unreachable!("validate call answers with validation"),
        }
    }

    /// Runs one promotion.
    pub async fn promote(&self, request: &PromotionRequest) -> Result<Outcome, PluginError> {
        let id = request.id.clone();
        match self
            .invoke(Call::Promote(to_wit(request)), Some(id))
            .await?
        {
            Reply::Promote(Ok(wit::Outcome::Done(done))) => Ok(Outcome::Done {
                url: done.url.map(|u| clip(u, MAX_URL_BYTES)),
                details: done.details.map(|d| clip(d, MAX_TEXT_BYTES)),
            }),
            Reply::Promote(Ok(wit::Outcome::Waiting(reason))) => Ok(Outcome::Waiting {
                reason: clip(reason, MAX_TEXT_BYTES),
            }),
            Reply::Promote(Err(e)) => Err(PluginError::Strategy {
                plugin: self.name.to_string(),
                error: StrategyError {
                    message: clip(e.message, MAX_TEXT_BYTES),
                    retryable: e.retryable,
                    retry_after: e.retry_after_ms.map(Duration::from_millis),
                },
            }),
            _ => unreachable!("promote call answers with an outcome"),
        }
    }

    fn new_store(&self, promotion: Option<String>) -> (Store<Sandbox>, CappedOutput, CappedOutput) {
        let stdout = CappedOutput::new(self.limits.max_log_bytes);
        let stderr = CappedOutput::new(self.limits.max_log_bytes);
        // Empty and locked down: no env, args, preopens, network or inherited stdio.
        let wasi = WasiCtx::builder()
            .stdout(Stream(stdout.clone()))
            .stderr(Stream(stderr.clone()))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let sandbox = Sandbox {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            egress: Egress {
                policy: self.policy.clone(),
                client: self.client.clone(),
                refusals: Arc::default(),
            },
            limiter: MemoryLimiter {
                limit: self.limits.memory_bytes,
                refused: false,
            },
            sign_enabled: self.sign_enabled,
            promotion,
            log_budget: self.limits.max_log_bytes,
            git_enabled: self.git_enabled,
            git: self.runtime.git.clone(),
        };
        let mut store = Store::new(&self.runtime.engine, sandbox);
        store.limiter(|s| &mut s.limiter);
        // Yield to the executor at every epoch tick; the deadline itself is the
        // timeout around the call, which can then fire even while the guest spins.
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        (store, stdout, stderr)
    }

    async fn invoke(&self, call: Call, promotion: Option<String>) -> Result<Reply, PluginError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .expect("the instance semaphore is never closed");
        let _pool_slot = self
            .runtime
            .pool_slots
            .acquire()
            .await
            .expect("the pool semaphore is never closed");
        let (mut store, stdout, stderr) = self.new_store(promotion.clone());
        let refusals = store.data().egress.refusals.clone();
        let started = Instant::now();
        let run = async {
            let instance = self.pre.instantiate_async(&mut store).await?;
            let guest = instance.promoter_strategy_strategy();
            Ok::<_, wasmtime::Error>(match call {
                Call::Metadata => Reply::Metadata(guest.call_metadata(&mut store).await?),
                Call::Validate(config) => {
                    Reply::Validate(guest.call_validate_config(&mut store, &config).await?)
                }
                Call::Promote(request) => {
                    Reply::Promote(guest.call_promote(&mut store, &request).await?)
                }
            })
        };
        let result = tokio::time::timeout(self.limits.timeout, run).await;
        let elapsed = started.elapsed();

        self.emit_output(&promotion, "stdout", &stdout);
        let stderr_tail = self.emit_output(&promotion, "stderr", &stderr);
        let memory_refused = store.data().limiter.refused;
        let refusal = refusals.lock().unwrap().first().cloned();
        let plugin = self.name.to_string();
        let denied = |r: Refusal| PluginError::CapabilityDenied {
            plugin: plugin.clone(),
            origin: r.origin,
            reason: r.reason,
        };
        tracing::debug!(plugin = %self.name, ?elapsed, "plugin call finished");
        match result {
            Err(_) => Err(PluginError::Timeout {
                plugin,
                limit: self.limits.timeout,
            }),
            Ok(Err(_)) if memory_refused => Err(PluginError::MemoryLimit {
                plugin,
                limit_bytes: self.limits.memory_bytes,
            }),
            Ok(Err(_)) if refusal.is_some() => Err(denied(refusal.unwrap())),
            Ok(Err(e)) => Err(PluginError::Trap {
                message: clip(trap_message(&e, &stderr_tail), MAX_TEXT_BYTES),
                plugin,
            }),
            Ok(Ok(Reply::Promote(Err(_)))) if refusal.is_some() => Err(denied(refusal.unwrap())),
            Ok(Ok(reply)) => Ok(reply),
        }
    }

    /// Logs what the guest printed; returns the last stderr lines for trap messages.
    fn emit_output(
        &self,
        promotion: &Option<String>,
        stream: &str,
        out: &CappedOutput,
    ) -> Vec<String> {
        let (lines, dropped) = out.lines();
        let promotion = promotion.as_deref().unwrap_or("-");
        for line in &lines {
            tracing::info!(plugin = %self.name, promotion, stream, "{line}");
        }
        if dropped > 0 {
            tracing::warn!(plugin = %self.name, promotion, stream, "{dropped} bytes of plugin output dropped (limit {} bytes)", self.limits.max_log_bytes);
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::clip;

    #[test]
    fn long_texts_are_cut_at_a_character_boundary_and_marked() {
        assert_eq!(clip("short".into(), 10), "short");
        let cut = clip("é".repeat(100), 11);
        assert!(cut.len() <= 11 && cut.ends_with('…'), "{cut}");
        assert_eq!(cut, "éééé…");
    }
}
