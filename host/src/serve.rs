//! `promoter serve`: manifests from a folder (local mode) or from the Kubernetes API
//! (Kubernetes mode), re-read for changes; promotions in an embedded database (local
//! mode) or as Promotion resources (Kubernetes mode); the webhook and admin listeners;
//! the worker.

use crate::execute::{Executor, PluginResolver, Prepared, RetryPolicy};
use crate::metrics::Metrics;
use crate::pipeline::Manifests;
use crate::plugins::Registry;
use crate::promotion::PromotionRequest;
use crate::record::{LocalStore, Promotion, Store};
use crate::runtime::{Runtime, RuntimeConfig};
use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// Everything `serve` is told on the command line, validated at start-up.
#[derive(Debug, Clone)]
pub struct Settings {
    pub source: Source,
    pub data_dir: PathBuf,
    pub webhook_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub allow_unsigned: bool,
    /// Refuse an event from environment N (after the first) for a version no promotion
    /// into N was recorded and allowed to run for (`--require-promoted-source`).
    pub require_promoted_source: bool,
    pub max_event_age: Duration,
    pub body_limit: usize,
    /// Largest plugin component pulled from an OCI registry (checked against the size its
    /// manifest declares, before download).
    pub max_plugin_size: usize,
    /// Limits of git working copies and commands (their own directory under `data_dir`).
    pub git: crate::runtime::git::GitLimits,
    pub retry: RetryPolicy,
    pub workers: usize,
    pub builtin_private_networks: bool,
    pub watch_interval: Duration,
    /// Kubernetes mode: how long finished Promotion resources are kept.
    pub keep_finished: Duration,
    /// Kubernetes mode: how long recording an event (creating its Promotions) may take
    /// before the webhook answers 503 with Retry-After; below Flux's 15 s timeout.
    pub accept_timeout: Duration,
    /// Flux notification-controller's event receiver, where the notification strategy
    /// posts (checked with [`crate::plugins::parse_events_addr`]). `None`: pipelines using
    /// that strategy are refused at load.
    pub events_addr: Option<String>,
    /// Local mode: the admin API's bearer token is this file's content. `None`: the admin
    /// API answers loopback callers only. (Kubernetes mode checks Kubernetes tokens.)
    pub admin_token_file: Option<PathBuf>,
    /// On SIGTERM/SIGINT, how long running plugin calls get before they are handed back.
    pub drain_timeout: Duration,
}

/// Where Pipelines, Secrets and plugin ConfigMaps come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Local mode: a folder of manifests. Any problem stops the load (at start-up) or
    /// keeps the previous manifests in force (on a change).
    Folder(PathBuf),
    /// Kubernetes mode: the API server. A Pipeline with problems is left out, and said so
    /// in its status; the others stay in force.
    Cluster {
        /// The controller's namespace (plugin ConfigMaps); default: the client's.
        namespace: Option<String>,
    },
}

/// A connected [`Source`].
enum Catalog {
    Folder(PathBuf),
    Cluster(Box<crate::cluster::source::Cluster>),
}

impl Catalog {
    async fn connect(source: &Source, metrics: &Metrics) -> anyhow::Result<Catalog> {
        Ok(match source {
            Source::Folder(dir) => Catalog::Folder(dir.clone()),
            Source::Cluster { namespace } => {
                let requests = metrics.kubernetes_requests.clone();
                let cluster =
                    crate::cluster::source::Cluster::connect(namespace.clone(), requests).await?;
                Catalog::Cluster(Box::new(cluster))
            }
        })
    }

    fn describe(&self) -> String {
        match self {
            Catalog::Folder(dir) => dir.display().to_string(),
            Catalog::Cluster(c) => format!(
                "the Kubernetes API (plugins from namespace {})",
                c.namespace()
            ),
        }
    }

    async fn load(&self, registry: &Registry) -> anyhow::Result<Manifests> {
        match self {
            Catalog::Folder(dir) => load(dir, registry).await.map(|(m, _)| m),
            Catalog::Cluster(cluster) => load_cluster(cluster, registry).await,
        }
    }
}

/// Reads the cluster, then again with the Secrets the first read found named, until
/// every Secret looked up has been read (or found missing).
async fn load_cluster(
    cluster: &crate::cluster::source::Cluster,
    registry: &Registry,
) -> anyhow::Result<Manifests> {
    use crate::cluster::source::without_invalid;
    // The Secrets the last read needed: usually all this one needs, in one pass.
    let mut secrets = cluster.secrets_wanted();
    // Secrets are named by Pipelines and plugin ConfigMaps, never by Secrets: two reads
    // suffice; the bound is a guard.
    for _ in 0..4 {
        let snapshot = cluster.read(&secrets).await?;
        let (mut manifests, problems) = Manifests::from_objects(&snapshot.objects);
        let mut problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
        problems.extend(registry.bind_host_settings(&mut manifests));
        problems.extend(registry.sync(&manifests).await);
        problems.extend(registry.validate(&manifests).await);
        problems.extend(crate::pipeline::key_problems(&manifests));
        // The keys events are signed with, and the credentials strategies are granted,
        // are looked up per event and per promotion; looking for them now names them.
        let unavailable = unavailable_secrets(&manifests, registry, &snapshot.forbidden);
        let needed = manifests.secrets_looked_up();
        if needed.is_subset(&secrets) {
            cluster.want_secrets(needed);
            without_invalid(&mut manifests, &problems);
            manifests.loaded();
            cluster.observed(&snapshot.objects, &problems, &unavailable);
            return Ok(manifests);
        }
        secrets.extend(needed);
    }
    bail!("the Secrets Pipelines and plugins name kept changing while they were read")
}

/// What each Pipeline needs from Secrets and cannot have: the key its events are
/// signed with, its strategies' credentials. The Pipeline stays in force (events are
/// answered with the precise refusal) and its status says what is missing.
fn unavailable_secrets(
    manifests: &Manifests,
    registry: &Registry,
    forbidden: &std::collections::BTreeSet<(String, String)>,
) -> Vec<String> {
    let mut out = Vec::new();
    for pipeline in &manifests.pipelines {
        let ns = &pipeline.namespace;
        let not_readable = |name: &str| forbidden.contains(&(ns.clone(), name.to_string()));
        let hint = "Promoter's service account may not read it (the chart grants get on Secrets \
                    only in the namespaces listed in rbac.secrets.namespaces)";
        // (Secret, what its hmac-key signs)
        let keys = pipeline.environments.iter().flat_map(|env| {
            let events = pipeline
                .hmac_secret_for(&env.name)
                .map(|name| (name, format!("events from {}", env.name)));
            let approvals = pipeline
                .approval_secret_for(&env.name)
                .map(|name| (name, format!("approvals into {}", env.name)));
            events.into_iter().chain(approvals)
        });
        for (name, signs) in keys {
            let why = match manifests.secret(ns, name) {
                Some(secret) if secret.hmac_key().is_some() => continue,
                Some(_) => "has no hmac-key".to_string(),
                None if not_readable(name) => hint.to_string(),
                None => "does not exist".to_string(),
            };
            out.push(format!(
                "Pipeline {pipeline}: Secret {name}, the hmac-key for {signs}, {why}"
            ));
        }
        for (env, strategy) in pipeline.strategies() {
            if let Err(e) = registry.granted(ns, strategy, manifests) {
                let mut message = format!("Pipeline {pipeline}: promotion into {env}: {e}");
                if forbidden
                    .iter()
                    .any(|(n, s)| n == ns && e.contains(s.as_str()))
                {
                    message.push_str(&format!("; {hint}"));
                }
                out.push(message);
            }
        }
    }
    out
}

/// State shared by the listeners, the worker and the watcher.
pub struct Shared {
    catalog: RwLock<Arc<Manifests>>,
    source: Catalog,
    pub store: Store,
    pub metrics: Metrics,
    pub registry: Arc<Registry>,
    pub executor: Arc<Executor>,
    pub settings: Settings,
    /// Set on SIGTERM/SIGINT: `/readyz` fails while the process drains.
    pub draining: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// The manifests in force.
    pub fn catalog(&self) -> Arc<Manifests> {
        self.catalog.read().unwrap().clone()
    }

    /// Kubernetes mode: the client the Pipelines are read with.
    pub fn kube_client(&self) -> Option<kube::Client> {
        match &self.source {
            Catalog::Cluster(cluster) => Some(cluster.client().clone()),
            Catalog::Folder(_) => None,
        }
    }

    /// Why `pipeline` is suspended, if it is: its `spec.suspend`, or (local mode) the
    /// admin API's `suspend`.
    pub fn suspension(&self, pipeline: &crate::pipeline::Pipeline) -> Option<String> {
        if pipeline.suspend {
            return Some("spec.suspend is true".to_string());
        }
        match &self.store {
            Store::Local(s) => s
                .suspended(&pipeline.reference())
                .map(|by| format!("suspended by {by}")),
            Store::Resources(_) => None,
        }
    }
}

struct Resolver {
    shared: std::sync::OnceLock<std::sync::Weak<Shared>>,
}

impl PluginResolver for Resolver {
    fn suspended(&self, p: &Promotion) -> bool {
        let Some(shared) = self.shared.get().and_then(std::sync::Weak::upgrade) else {
            return false;
        };
        let catalog = shared.catalog();
        catalog
            .pipeline(&p.pipeline.namespace, &p.pipeline.name)
            .is_some_and(|pipeline| shared.suspension(pipeline).is_some())
    }

    fn manual(&self, p: &Promotion) -> bool {
        let Some(shared) = self.shared.get().and_then(std::sync::Weak::upgrade) else {
            return true;
        };
        let catalog = shared.catalog();
        catalog
            .pipeline(&p.pipeline.namespace, &p.pipeline.name)
            .and_then(|pipeline| pipeline.environment(&p.target_environment))
            .and_then(|env| env.promotion.as_ref())
            .is_none_or(|promotion| promotion.manual)
    }

    fn prepare(&self, p: &Promotion) -> Result<Prepared, String> {
        let shared = self
            .shared
            .get()
            .and_then(std::sync::Weak::upgrade)
            .ok_or("the server is shutting down")?;
        let catalog = shared.catalog();
        let (namespace, name) = (&p.pipeline.namespace, &p.pipeline.name);
        let pipeline = catalog
            .pipeline(namespace, name)
            .ok_or_else(|| format!("pipeline {namespace}/{name} is no longer in force"))?;
        let env = pipeline.environment(&p.target_environment).ok_or_else(|| {
            format!(
                "pipeline {namespace}/{name}: environment {:?} not found; have {}",
                p.target_environment,
                pipeline.environment_names().join(", ")
            )
        })?;
        let promotion = env.promotion.as_ref().ok_or_else(|| {
            format!(
                "pipeline {namespace}/{name}: no promotion is configured into environment {}",
                env.name
            )
        })?;
        let plugin = shared
            .registry
            .granted(namespace, &promotion.strategy, &catalog)
            .map_err(|e| {
                format!(
                    "Pipeline {namespace}/{name}: promotion into {}: {e}",
                    env.name
                )
            })?;
        let request = PromotionRequest {
            id: p.id.clone(),
            attempt: p.attempts,
            pipeline: p.pipeline.clone(),
            // A request made with kubectl may leave it out: the environment before.
            source_environment: match p.source_environment.as_str() {
                "" => pipeline
                    .position(&env.name)
                    .and_then(|i| i.checked_sub(1))
                    .map(|i| pipeline.environments[i].name.clone())
                    .unwrap_or_default(),
                given => given.to_string(),
            },
            target_environment: env.name.clone(),
            targets: env.targets.clone(),
            app: pipeline.app_ref.clone(),
            version: p.version.clone(),
            config: promotion.strategy.config.clone(),
            event: p.event.clone(),
        };
        Ok(Prepared {
            plugin,
            request,
            strategy: promotion.strategy.clone(),
        })
    }
}

/// Loads the folder and checks it against the installed plugins; every problem at once.
async fn load(dir: &Path, registry: &Registry) -> anyhow::Result<(Manifests, Vec<String>)> {
    let mut manifests = Manifests::load_dir(dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    let host_problems = registry.bind_host_settings(&mut manifests);
    let plugin_problems = registry.sync(&manifests).await;
    let mut problems = host_problems;
    problems.extend(registry.validate(&manifests).await);
    problems.extend(crate::pipeline::key_problems(&manifests));
    problems.extend(plugin_problems.iter().cloned());
    if !problems.is_empty() {
        bail!(
            "{} problem(s) in manifests {}:\n  {}",
            problems.len(),
            dir.display(),
            problems.join("\n  ")
        );
    }
    Ok((manifests, plugin_problems))
}

/// Newest modification time of any file under `dir`, and how many there are.
fn fingerprint(dir: &Path) -> (Option<SystemTime>, usize) {
    let mut newest = None;
    let mut count = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else {
                count += 1;
                newest = newest.max(meta.modified().ok());
            }
        }
    }
    (newest, count)
}

/// Flux's notification-controller gives up on a webhook after this long.
const FLUX_TIMEOUT: Duration = Duration::from_secs(15);

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    if settings.accept_timeout.is_zero() || settings.accept_timeout >= FLUX_TIMEOUT {
        bail!(
            "--accept-timeout {}: must be above zero and below the {} Flux's \
             notification-controller waits for an answer (the default, 10s, leaves it time \
             to read the 503 and retry)",
            humantime::format_duration(settings.accept_timeout),
            humantime::format_duration(FLUX_TIMEOUT)
        );
    }
    std::fs::create_dir_all(&settings.data_dir).with_context(|| {
        format!(
            "cannot create data directory {}",
            settings.data_dir.display()
        )
    })?;
    let runtime = Arc::new(Runtime::new(RuntimeConfig {
        cache_dir: Some(settings.data_dir.join("compiled")),
        git_dir: Some(settings.data_dir.join("git")),
        git_limits: settings.git.clone(),
    })?);
    // Verified components are re-hashed on every load; the directory is private anyway.
    let oci_cache = settings.data_dir.join("oci");
    crate::runtime::cache_dir::ensure_private(&oci_cache)?;
    let registry = Arc::new(
        Registry::new(runtime, settings.builtin_private_networks)
            .await?
            .with_events_addr(settings.events_addr.clone())
            .with_oci(crate::oci::Puller::new(
                Some(oci_cache),
                settings.max_plugin_size,
            )),
    );
    let metrics = Metrics::new();
    let source = Catalog::connect(&settings.source, &metrics).await?;
    let admin_auth = match (&source, &settings.admin_token_file) {
        (Catalog::Folder(_), None) => crate::admin::auth::Auth::loopback_only(),
        (Catalog::Folder(_), Some(file)) => crate::admin::auth::Auth::token_file(file)?,
        (Catalog::Cluster(_), Some(file)) => bail!(
            "--admin-token-file {} is for local mode; in Kubernetes mode admin callers \
             send their own Kubernetes token (e.g. `kubectl create token`), checked with \
             TokenReview and SubjectAccessReview",
            file.display()
        ),
        (Catalog::Cluster(cluster), None) => {
            crate::admin::auth::Auth::kubernetes(cluster.client().clone())
        }
    };
    tracing::info!("{}", admin_auth.describe());
    // Taken before loading, so that a change from here on (even while loading, or before
    // the watch task first runs) is a change to the watch.
    let loaded_from = match &source {
        Catalog::Folder(dir) => Some(fingerprint(dir)),
        Catalog::Cluster(_) => None,
    };
    let manifests = source.load(&registry).await?;
    tracing::info!(
        pipelines = manifests.pipelines.len(),
        plugins = %registry.names().join(","),
        "manifests loaded from {}",
        source.describe()
    );
    let store = match &source {
        Catalog::Folder(_) => Store::Local(LocalStore::open(&settings.data_dir)?),
        Catalog::Cluster(cluster) => {
            let store = crate::record::resources::ResourceStore::open(
                cluster.client().clone(),
                replica_identity(),
                settings.accept_timeout,
                cluster.promotion_feed(),
            )
            .await?;
            Store::Resources(Arc::new(store))
        }
    };
    let resolver = Arc::new(Resolver {
        shared: std::sync::OnceLock::new(),
    });
    let executor = Executor::new(
        store.clone(),
        resolver.clone(),
        metrics.clone(),
        settings.retry.clone(),
        settings.workers,
    );
    let shared = Arc::new(Shared {
        catalog: RwLock::new(Arc::new(manifests)),
        source,
        store,
        metrics,
        registry,
        executor: executor.clone(),
        settings: settings.clone(),
        draining: std::sync::atomic::AtomicBool::new(false),
    });
    let _ = resolver.shared.set(Arc::downgrade(&shared));

    let webhook = tokio::net::TcpListener::bind(settings.webhook_addr)
        .await
        .with_context(|| format!("cannot listen on --webhook-addr {}", settings.webhook_addr))?;
    let admin = tokio::net::TcpListener::bind(settings.admin_addr)
        .await
        .with_context(|| format!("cannot listen on --admin-addr {}", settings.admin_addr))?;
    tracing::info!(
        webhook = %webhook.local_addr()?,
        admin = %admin.local_addr()?,
        tls = settings.tls.is_some(),
        "listening"
    );

    tokio::spawn(executor.clone().run());
    // Kubernetes mode: the sync that holds the Lease, stopped before the Lease is released.
    let mut syncing: Option<tokio::task::JoinHandle<()>> = None;
    tokio::spawn(watch(shared.clone(), loaded_from));
    if matches!(shared.source, Catalog::Cluster(_)) {
        if let Store::Resources(store) = &shared.store {
            let worker = executor.clone();
            tokio::spawn(store.clone().follow(move || worker.wake()));
        }
        syncing = Some(tokio::spawn(cluster_sync(shared.clone())));
    }
    tokio::spawn(forget_old_events(shared.clone()));
    if let Store::Local(store) = &shared.store {
        tokio::spawn(prune_finished(store.clone(), shared.settings.keep_finished));
    }
    // With the peer address of each connection: the loopback rule reads it.
    let admin_app = crate::admin::router(shared.clone(), admin_auth)
        .into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(admin, admin_app).await {
            tracing::error!("admin listener failed: {e}");
        }
    });
    let app = crate::ingest::router(shared.clone());
    // SIGTERM (a pod stopping) or SIGINT: readiness fails at once, the webhook stops
    // accepting and finishes what it took in, running plugin calls get the drain timeout.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let why = stop_signal().await;
        tracing::info!("{why}: draining (readiness fails, the webhook stops accepting)");
        let _ = stop.send(true);
    });
    let stopped = {
        let mut stopping = stopping.clone();
        async move {
            let _ = stopping.wait_for(|s| *s).await;
        }
    };
    let serving = async {
        match &settings.tls {
            None => axum::serve(webhook, app)
                .with_graceful_shutdown(stopped)
                .await
                .map_err(anyhow::Error::from),
            Some((cert, key)) => {
                let resolver = Arc::new(crate::tls::ReloadingCert::new(cert.clone(), key.clone())?);
                serve_tls(webhook, app, Arc::new(resolver.server_config()), stopped).await
            }
        }
    };
    // A client trickling its request must not hold the drain past its bound: requests still
    // open the drain timeout after the signal are dropped (their events were not accepted).
    let webhook = async {
        let mut stopping = stopping.clone();
        let cut = async {
            let _ = stopping.wait_for(|s| *s).await;
            tokio::time::sleep(settings.drain_timeout).await;
        };
        tokio::select! {
            served = serving => served,
            () = cut => {
                tracing::warn!("webhook requests still open after the drain timeout were dropped");
                Ok(())
            }
        }
    };
    let drain = async {
        let mut stopping = stopping.clone();
        let _ = stopping.wait_for(|s| *s).await;
        shared
            .draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let started = std::time::Instant::now();
        let handed_back = executor.drain(settings.drain_timeout).await;
        (started, handed_back)
    };
    let (served, (started, handed_back)) = tokio::join!(webhook, drain);
    served?;
    // The Lease, released once this replica has stopped writing status: another replica
    // reports the Pipelines at its next sync, not after the Lease runs out.
    if let (Some(sync), Catalog::Cluster(cluster), Store::Resources(store)) =
        (syncing, &shared.source, &shared.store)
    {
        sync.abort();
        let _ = sync.await;
        let leadership = crate::cluster::lease::Leadership::new(
            cluster.client().clone(),
            cluster.namespace(),
            store.replica(),
        );
        match tokio::time::timeout(Duration::from_secs(5), leadership.release()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("cannot release the lease: {e}"),
            Err(_) => tracing::warn!("the API server did not answer the lease release"),
        }
    }
    tracing::info!(
        handed_back = handed_back.len(),
        "drained in {:.1}s; stopping",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Waits for SIGTERM or SIGINT; which one.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("a SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// Every few minutes, drops the digests of events older than the event window (plus the
/// clock skew allowed, with a margin of an hour): such events are refused by their
/// timestamp before their digest is looked at.
async fn forget_old_events(shared: Arc<Shared>) {
    let keep = shared.settings.max_event_age + Duration::from_secs(3600);
    let period = Duration::from_secs(300);
    // The first pass one period after start-up, not during it.
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        every.tick().await;
        let before = crate::record::now_ms().saturating_sub(keep.as_millis() as u64);
        if let Err(e) = shared.store.forget_events_before(before).await {
            tracing::warn!("cannot forget old event digests: {e}");
        }
    }
}

/// Local mode, every five minutes (the first pass a minute after start): deletes the
/// records finished longer than `--keep-finished` ago, except the promotion that put each
/// environment's version there.
async fn prune_finished(store: LocalStore, keep: Duration) {
    let period = Duration::from_secs(300);
    let first = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut every = tokio::time::interval_at(first, period);
    loop {
        every.tick().await;
        match store.prune(keep).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                deleted = n,
                "finished promotions past --keep-finished deleted"
            ),
            Err(e) => tracing::warn!("cannot delete old finished promotions: {e}"),
        }
    }
}

/// This replica's name in Promotion claims and the Lease: the pod's name.
fn replica_identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    })
}

/// Kubernetes mode, every sync (the watch interval, at most 5 s): takes or renews the
/// Lease; its holder writes the Pipelines' status and Events and prunes finished
/// Promotions, within the renew deadline of the renewal (a slow API server cannot keep
/// it writing once another replica may hold the Lease); then Promotions created as
/// requests are checked.
async fn cluster_sync(shared: Arc<Shared>) {
    use crate::cluster::lease::{Leadership, RENEW_DEADLINE};
    use tokio::time::{Instant, timeout, timeout_at};
    let (Catalog::Cluster(cluster), Store::Resources(store)) = (&shared.source, &shared.store)
    else {
        return;
    };
    let leadership = Leadership::new(
        cluster.client().clone(),
        cluster.namespace(),
        store.replica(),
    );
    let every = shared.settings.watch_interval.min(Duration::from_secs(5));
    let mut leading = false;
    // The installed CRDs: at start, then every few minutes (a fix applied is seen then,
    // or at once after a restart).
    const CRD_RECHECK: Duration = Duration::from_secs(300);
    let mut crds_checked: Option<tokio::time::Instant> = None;
    loop {
        if crds_checked.is_none_or(|at| at.elapsed() >= CRD_RECHECK) {
            cluster.check_crds().await;
            crds_checked = Some(tokio::time::Instant::now());
        }
        let asked = Instant::now();
        // Everything this sync writes is sent before the deadline.
        let deadline = asked + RENEW_DEADLINE;
        let lead = match timeout(RENEW_DEADLINE, leadership.lead()).await {
            Ok(Ok(lead)) => lead,
            Ok(Err(e)) => {
                tracing::warn!("cannot take or renew the lease: {e}");
                false
            }
            Err(_) => {
                tracing::warn!(
                    "the API server did not answer the lease renewal within {}",
                    humantime::format_duration(RENEW_DEADLINE)
                );
                false
            }
        };
        if lead {
            let work = async {
                cluster.report(&store.list()).await;
                store.prune(shared.settings.keep_finished).await;
            };
            if timeout_at(deadline, work).await.is_err() {
                tracing::warn!(
                    "the Pipelines' status and pruning were cut short {} after the lease \
                     renewal (the API server is slow); the rest waits for the next sync",
                    humantime::format_duration(RENEW_DEADLINE)
                );
            }
        } else if leading {
            tracing::info!("lost the lease: another replica reports the Pipelines' status");
            cluster.forget_reported();
        }
        leading = lead;
        // Promotions created as requests (kubectl), checked against the Pipelines in force;
        // bounded too, so that the next renewal is not held up.
        let catalog = shared.catalog();
        let admit = store.admit_requests(|ns, name| catalog.pipeline(ns, name).cloned());
        if timeout_at(deadline, admit).await.is_err() {
            tracing::warn!("checking requested Promotions was cut short (the API server is slow)");
        }
        tokio::time::sleep_until(asked + every).await;
    }
}

/// Reloads the manifests when they change (a folder: when a file in it changes from
/// `seen`, its state when last loaded; the cluster: every interval); an invalid folder
/// keeps the last good state.
async fn watch(shared: Arc<Shared>, mut seen: Option<(Option<SystemTime>, usize)>) {
    loop {
        tokio::time::sleep(shared.settings.watch_interval).await;
        if let Catalog::Folder(dir) = &shared.source {
            let now = Some(fingerprint(dir));
            if now == seen {
                continue;
            }
            seen = now;
        }
        match shared.source.load(&shared.registry).await {
            Ok(manifests) => {
                let before = shared.catalog().pipelines.len();
                if seen.is_some() || before != manifests.pipelines.len() {
                    tracing::info!(pipelines = manifests.pipelines.len(), "manifests reloaded");
                }
                *shared.catalog.write().unwrap() = Arc::new(manifests);
            }
            Err(e) => {
                tracing::error!("manifests not reloaded; the previous ones stay in force: {e:#}")
            }
        }
    }
}

async fn serve_tls(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    config: Arc<rustls::ServerConfig>,
    stopped: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(stopped);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stopped => break,
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, "TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => return,
                };
            let service = TowerToHyperService::new(app);
            let builder = Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
    // The listener is closed; open connections finish their requests, then close.
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
