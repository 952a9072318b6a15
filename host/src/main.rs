use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use promoter::promotion::{Outcome, PromotionRequest};
use promoter::runtime::egress::{Grant, Origin};
use promoter::runtime::limits::{Limits, parse_duration, parse_size};
use promoter::runtime::secret::Secret;
use promoter::runtime::{Plugin, Runtime, RuntimeConfig};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Promotes application versions through GitOps pipelines with sandboxed
/// WebAssembly strategy plugins.
#[derive(Parser)]
#[command(name = "promoter", version)]
struct Cli {
    /// Log output format.
    #[arg(
        long,
        global = true,
        env = "PROMOTER_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the webhook, run promotions: manifests from a folder (local mode, --manifests)
    /// or from the Kubernetes API (Kubernetes mode, without --manifests).
    /// A flag given twice takes its last value, so a chart's extraArgs override its flags.
    #[command(args_override_self = true)]
    Serve(ServeArgs),
    /// Show promotions recorded by a running server.
    #[command(subcommand)]
    Promotions(PromotionsCommand),
    /// Approve a promotion waiting for approval (signed, as Weave's /approval path).
    Approve(ApproveArgs),
    /// Promote a chosen version into an environment now (admin API). An older version
    /// than the one there now needs --rollback.
    Promote {
        /// The pipeline: NAMESPACE/NAME, or NAME with --namespace.
        pipeline: String,
        environment: String,
        version: String,
        /// Why, recorded on the promotion.
        #[arg(long)]
        reason: Option<String>,
        /// Ask for a version older than the one in the environment now.
        #[arg(long)]
        rollback: bool,
        #[command(flatten)]
        target: PipelineArgs,
    },
    /// Run a failed promotion again (same id, a new count of attempts), or with
    /// --failed every failed one of a pipeline (into one environment).
    Retry {
        /// The promotion's id; with --failed, the pipeline (NAMESPACE/NAME or NAME).
        id: String,
        /// With --failed: only promotions into this environment.
        environment: Option<String>,
        /// Retry every failed promotion of the pipeline given instead of an id.
        #[arg(long)]
        failed: bool,
        #[command(flatten)]
        target: PipelineArgs,
    },
    /// Reject a promotion waiting for approval: it never runs.
    Reject {
        id: String,
        /// Why, recorded on the promotion.
        #[arg(long, required = true)]
        reason: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Abort a promotion that has not run (pending, waiting or held), or a failed one: it
    /// never runs (again), and an event for its version is ignored.
    Abort {
        id: String,
        /// Why, recorded on the promotion.
        #[arg(long, required = true)]
        reason: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Suspend a pipeline: events are recorded as held and nothing of it runs.
    Suspend {
        /// NAMESPACE/NAME, or NAME with --namespace.
        pipeline: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        target: PipelineArgs,
    },
    /// Resume a suspended pipeline: the newest held version per environment goes on.
    Resume {
        /// NAMESPACE/NAME, or NAME with --namespace.
        pipeline: String,
        #[command(flatten)]
        target: PipelineArgs,
    },
    /// Show, per environment, which versions arrived when, how, who approved or closed
    /// them, and the outcome.
    History {
        /// NAMESPACE/NAME, or NAME with --namespace.
        pipeline: String,
        /// Only this environment.
        environment: Option<String>,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: PipelineArgs,
    },
    /// Send Flux-shaped events, signed, for trying things out and for tests.
    #[command(subcommand)]
    Event(EventCommand),
    /// Work with strategy plugins (for plugin authors).
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Print the CustomResourceDefinitions (Pipeline, Promotion) as YAML, as the chart
    /// ships them (files/crds/): `promoter crds | kubectl apply --server-side -f -`; or
    /// write them into a folder.
    Crds {
        /// Write `pipelines.yaml` and `promotions.yaml` into this folder instead.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Folder of Kubernetes manifests (Pipeline, Secret, plugin ConfigMap), watched for
    /// changes. Without it, Promoter reads them from the Kubernetes API (in-cluster
    /// service account, or KUBECONFIG).
    #[arg(long, env = "PROMOTER_MANIFESTS")]
    manifests: Option<PathBuf>,
    /// Kubernetes mode: the controller's namespace, where plugin ConfigMaps are read
    /// (default: the service account's or kubeconfig context's namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: Option<String>,
    /// Where promotion records and compiled plugins are kept.
    #[arg(long, env = "PROMOTER_DATA_DIR", default_value = "promoter-data")]
    data_dir: PathBuf,
    /// Public listener: /promotion and /approval only (Weave's port).
    #[arg(long, env = "PROMOTER_WEBHOOK_ADDR", default_value = "0.0.0.0:8082")]
    webhook_addr: std::net::SocketAddr,
    /// Internal listener: /metrics, /healthz, /readyz (open) and /promotions (for
    /// authenticated callers: see --admin-token-file).
    #[arg(long, env = "PROMOTER_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    admin_addr: std::net::SocketAddr,
    /// Local mode: callers of the admin API (/promotions) must send this file's content as
    /// a bearer token (at least 32 characters; re-read when the file changes). Without
    /// it, the admin API answers loopback callers only. Kubernetes mode checks callers'
    /// Kubernetes tokens instead (TokenReview, SubjectAccessReview).
    #[arg(long, env = "PROMOTER_ADMIN_TOKEN_FILE", value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// PEM certificate for the webhook listener (reloaded when the file changes).
    #[arg(long, env = "PROMOTER_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for the webhook listener.
    #[arg(long, env = "PROMOTER_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Accept unsigned events for pipelines without an hmac-key Secret (not recommended).
    #[arg(long, env = "PROMOTER_ALLOW_UNSIGNED_EVENTS")]
    allow_unsigned_events: bool,
    /// Strict mode: refuse (422) an event from an environment after the first for a
    /// version no promotion into that environment was recorded and allowed to run for
    /// (not waiting for approval, not refused), so a leaf cluster's key cannot report a
    /// version its environment was never given and skip ahead. Off by default: events
    /// from environments deployed by other means (a hotfix straight into test) promote.
    #[arg(long, env = "PROMOTER_REQUIRE_PROMOTED_SOURCE")]
    require_promoted_source: bool,
    /// Refuse events whose timestamp is older than this (replay protection).
    #[arg(long, env = "PROMOTER_EVENT_MAX_AGE", default_value = "10m", value_parser = parse_duration)]
    event_max_age: Duration,
    /// Largest event body accepted.
    #[arg(long, env = "PROMOTER_MAX_BODY", default_value = "1MiB", value_parser = parse_size)]
    max_body: usize,
    /// Largest plugin component pulled from an OCI registry; a larger one is refused by
    /// the size its manifest declares, before download.
    #[arg(long, env = "PROMOTER_MAX_PLUGIN_SIZE", default_value = "64MiB", value_parser = parse_size)]
    max_plugin_size: usize,
    /// Largest git working copy a strategy may check out (files and history at depth
    /// 1); a clone or fetch past it is stopped and removed.
    #[arg(long, env = "PROMOTER_GIT_MAX_SIZE", default_value = "512MiB", value_parser = parse_size)]
    git_max_size: usize,
    /// Longest a single git command (clone, fetch, push) may run before it is killed.
    #[arg(long, env = "PROMOTER_GIT_TIMEOUT", default_value = "2m", value_parser = parse_duration)]
    git_timeout: Duration,
    /// Git working copies kept for reuse; the least recently used beyond this, and any
    /// unused for a day, are removed.
    #[arg(long, env = "PROMOTER_GIT_MAX_COPIES", default_value_t = 32)]
    git_max_copies: usize,
    /// Attempts before a promotion with retryable errors is given up.
    #[arg(long, env = "PROMOTER_MAX_ATTEMPTS", default_value_t = 8)]
    max_attempts: u32,
    /// First retry delay; doubles with each attempt, with jitter.
    #[arg(long, env = "PROMOTER_RETRY_BASE", default_value = "1s", value_parser = parse_duration)]
    retry_base: Duration,
    /// Promotions run at once.
    #[arg(long, env = "PROMOTER_WORKERS", default_value_t = 4)]
    workers: usize,
    /// Let built-in strategies reach loopback, private and link-local addresses (an
    /// in-cluster Jenkins, say): the URLs a Pipeline names, literal IPs included, and host
    /// names that resolve there. Off: such a promotion fails, naming the URL and this flag.
    #[arg(long, env = "PROMOTER_BUILTIN_PRIVATE_NETWORKS")]
    builtin_private_networks: bool,
    /// How often the manifests folder is checked for changes (Kubernetes mode: how often
    /// the Pipelines and plugin ConfigMaps, followed by watches, are checked again and
    /// their Secrets read; the Lease is renewed at least every 5 s).
    #[arg(long, env = "PROMOTER_WATCH_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    watch_interval: Duration,
    /// Promotion records (Kubernetes mode: Promotion resources) finished longer ago than
    /// this are deleted, except the newest into each environment of each pipeline
    /// (Kubernetes) or the one that put each environment's version there (local): what
    /// later decisions compare versions with.
    #[arg(long, env = "PROMOTER_KEEP_FINISHED", default_value = "720h", value_parser = parse_duration)]
    keep_finished: Duration,
    /// Kubernetes mode: how long recording an event (creating its Promotion resources)
    /// may take before the webhook answers 503 with Retry-After, so Flux retries rather
    /// than timing out (it waits 15 s). A throttled or slow API server is retried within
    /// this time; a create that lands later is found, not duplicated, when Flux retries.
    #[arg(long, env = "PROMOTER_ACCEPT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    accept_timeout: Duration,
    /// Flux notification-controller's event receiver, where the notification strategy posts
    /// (e.g. http://notification-controller.flux-system.svc.cluster.local./). Without it,
    /// pipelines using that strategy are refused.
    #[arg(long, env = "PROMOTER_EVENTS_ADDR", value_name = "URL", value_parser = promoter::plugins::parse_events_addr)]
    events_addr: Option<String>,
    /// On SIGTERM or SIGINT: how long running plugin calls get to finish. What has not
    /// finished by then is handed back (Kubernetes: another replica takes it at once;
    /// local: it runs again at the next start). Keep it below the pod's grace period.
    #[arg(long, env = "PROMOTER_DRAIN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    drain_timeout: Duration,
}

#[derive(Subcommand)]
enum PromotionsCommand {
    /// List the promotions you may read, newest first.
    List {
        #[command(flatten)]
        admin: AdminArgs,
        /// Only this namespace's promotions.
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        /// Only this pipeline's (NAME, with --namespace, or NAMESPACE/NAME).
        #[arg(long)]
        pipeline: Option<String>,
        /// Only promotions into this environment.
        #[arg(long)]
        environment: Option<String>,
        /// Only promotions in this phase (pending, waiting-approval, running, succeeded,
        /// failed, held, rejected, aborted, superseded, requested, refused).
        #[arg(long)]
        phase: Option<String>,
        /// Only promotions of this version.
        #[arg(long)]
        version: Option<String>,
        /// At most this many (newest first); all by default, fetched a page at a time.
        #[arg(long)]
        limit: Option<usize>,
        /// Print JSON (`{"promotions": [...]}`) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one promotion.
    Show {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// How the CLI reaches the admin API, and who it says it is.
#[derive(Args)]
struct AdminArgs {
    #[arg(
        long,
        env = "PROMOTER_ADMIN_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    admin: String,
    /// File holding the bearer token to send (local mode: the server's
    /// --admin-token-file; Kubernetes: e.g. the output of `kubectl create token`).
    /// Default: the pod's service-account token when in a pod, else the current
    /// kubeconfig user's token when it has one, else none.
    #[arg(long, env = "PROMOTER_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
}

/// The admin API, and the namespace of a pipeline named without one.
#[derive(Args)]
struct PipelineArgs {
    /// The namespace of a pipeline given as NAME alone.
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    #[command(flatten)]
    admin: AdminArgs,
}

impl PipelineArgs {
    /// (namespace, name) of `pipeline`: NAMESPACE/NAME, or NAME with --namespace.
    fn split(&self, pipeline: &str) -> anyhow::Result<(String, String)> {
        match (pipeline.split_once('/'), &self.namespace) {
            (Some((ns, name)), None) => Ok((ns.to_string(), name.to_string())),
            (Some((ns, name)), Some(given)) if ns == given => {
                Ok((ns.to_string(), name.to_string()))
            }
            (Some((ns, _)), Some(given)) => {
                bail!("pipeline {pipeline} is in namespace {ns}, not {given}")
            }
            (None, Some(ns)) => Ok((ns.clone(), pipeline.to_string())),
            (None, None) => bail!(
                "name the pipeline as NAMESPACE/NAME, or give --namespace: {pipeline:?} has no namespace"
            ),
        }
    }
}

impl AdminArgs {
    /// GETs `path` from the admin API with the token found; the status and body.
    async fn get(&self, path: &str) -> anyhow::Result<(u16, serde_json::Value)> {
        self.call(path, None).await
    }

    /// POSTs `body` to `path` on the admin API; the status and body.
    async fn post(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        self.call(path, Some(body)).await
    }

    async fn call(
        &self,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let url = format!("{}{path}", self.admin.trim_end_matches('/'));
        let token = promoter::client::admin_token(self.token_file.as_deref())?;
        if let Some((_, source)) = &token
            && promoter::client::is_clear_text_remote(&url)
        {
            eprintln!(
                "warning: sending the bearer token from the {source} to {} over plain HTTP",
                self.admin
            );
        }
        let token = token.as_ref().map(|(t, _)| t.as_str());
        promoter::client::admin_call(&url, token, body.as_ref())
            .await
            .with_context(|| format!("cannot reach {url}"))
    }
}

/// An admin API refusal as the CLI prints it: the reason, and what to do for a 401.
fn admin_refused(status: u16, body: &serde_json::Value) -> std::process::ExitCode {
    let reason = body["reason"]
        .as_str()
        .map_or_else(|| body.to_string(), String::from);
    eprintln!("error: HTTP {status}: {reason}");
    if status == 401 {
        eprintln!(
            "hint: send a token with --token-file FILE (PROMOTER_TOKEN_FILE): local mode, the \
             server's --admin-token-file; Kubernetes, e.g. `kubectl create token NAME > FILE`"
        );
    }
    std::process::ExitCode::from(1)
}

#[derive(Args)]
struct ApproveArgs {
    /// The pipeline, as NAMESPACE/NAME.
    pipeline: String,
    /// The environment the promotion goes into.
    environment: String,
    /// The version waiting for approval.
    revision: String,
    #[arg(
        long,
        env = "PROMOTER_WEBHOOK_URL",
        default_value = "http://127.0.0.1:8082"
    )]
    url: String,
    /// File holding the approval key: the hmac-key of the Secret the environment's
    /// approvalSecretRef names (an event key never approves).
    #[arg(long, env = "PROMOTER_APPROVAL_KEY_FILE")]
    key_file: PathBuf,
}

#[derive(Subcommand)]
enum EventCommand {
    /// Sign and post a deployment event as Flux's generic-hmac provider does.
    Send(SendArgs),
}

#[derive(Args)]
struct SendArgs {
    /// The pipeline, as NAMESPACE/NAME.
    pipeline: String,
    /// The environment that deployed (the path's source environment).
    environment: String,
    /// The version deployed.
    #[arg(long)]
    version: String,
    /// Kind of the deployed object.
    #[arg(long, default_value = "HelmRelease")]
    kind: String,
    /// Name of the deployed object (default: the pipeline's name).
    #[arg(long)]
    name: Option<String>,
    /// Namespace the object was deployed in.
    #[arg(long)]
    namespace: String,
    /// Send this file as the body instead of a generated event.
    #[arg(long)]
    body: Option<PathBuf>,
    #[arg(
        long,
        env = "PROMOTER_WEBHOOK_URL",
        default_value = "http://127.0.0.1:8082"
    )]
    url: String,
    /// File holding the hmac-key; without it the event goes unsigned.
    #[arg(long, env = "PROMOTER_HMAC_KEY_FILE")]
    key_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Print a plugin's metadata, requested capabilities and contract version.
    Inspect {
        /// A component file, or builtin:NAME for a default plugin.
        plugin: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run one promotion through the same runtime and limits as the server.
    Run(RunArgs),
    /// Publish a component to an OCI registry (CNCF Wasm layout) and print its pinned
    /// reference, oci://REGISTRY/REPOSITORY:TAG@sha256:DIGEST, for a plugin ConfigMap's
    /// data.oci. Credentials come from PROMOTER_REGISTRY_USERNAME and
    /// PROMOTER_REGISTRY_PASSWORD when set; otherwise the push is anonymous. Plain HTTP is
    /// used for loopback registries only.
    Push {
        /// The component (.wasm).
        file: PathBuf,
        /// Where to publish it: oci://REGISTRY/REPOSITORY:TAG.
        reference: String,
    },
}

#[derive(Args)]
struct RunArgs {
    /// A component file, or builtin:NAME for a default plugin.
    plugin: String,
    /// The promotion request (JSON): id, pipeline, environments, app, version, event.
    #[arg(long)]
    promotion: PathBuf,
    /// The strategy configuration (YAML or JSON); replaces the request's `config`.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Grant HTTP access to this origin (scheme://host[:port]); repeatable.
    #[arg(long = "allow", value_name = "ORIGIN")]
    allow: Vec<String>,
    /// Let granted host names resolve to loopback or private addresses.
    #[arg(long)]
    allow_private_networks: bool,
    /// Bind the contents of FILE as the signing key NAME; repeatable.
    #[arg(long = "secret", value_name = "NAME=FILE")]
    secrets: Vec<String>,
    /// Wall-clock deadline for the call.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    /// Memory limit for the instance.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    memory: usize,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    promoter::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("cannot start the async runtime");
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PROMOTER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(command: Command) -> anyhow::Result<std::process::ExitCode> {
    match command {
        Command::Serve(args) => serve(args).await,
        Command::Promotions(cmd) => promotions(cmd).await,
        Command::Approve(args) => approve(args).await,
        cmd @ (Command::Promote { .. }
        | Command::Retry { .. }
        | Command::Reject { .. }
        | Command::Abort { .. }
        | Command::Suspend { .. }
        | Command::Resume { .. }
        | Command::History { .. }) => operate(cmd).await,
        Command::Event(EventCommand::Send(args)) => send_event(args).await,
        Command::Plugin(PluginCommand::Inspect { plugin, json }) => {
            let loaded = load(&plugin, Grant::default(), Limits::default()).await?;
            let m = loaded.metadata();
            if json {
                println!("{}", serde_json::to_string_pretty(m)?);
            } else {
                let caps: Vec<String> = m
                    .capabilities
                    .iter()
                    .map(|c| {
                        serde_json::to_value(c)
                            .unwrap()
                            .as_str()
                            .unwrap()
                            .to_string()
                    })
                    .collect();
                println!("name:         {}", m.name);
                println!("version:      {}", m.version);
                println!("description:  {}", m.description);
                println!("contract:     {}", m.contract);
                println!("digest:       sha256:{}", m.digest);
                println!(
                    "capabilities: {}",
                    if caps.is_empty() {
                        "none".into()
                    } else {
                        caps.join(", ")
                    }
                );
                println!("imports:      {}", m.imports.join(", "));
                println!("config schema:");
                println!("{}", serde_json::to_string_pretty(&m.config_schema)?);
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Plugin(PluginCommand::Run(args)) => run_plugin(args).await,
        Command::Plugin(PluginCommand::Push { file, reference }) => {
            push_plugin(&file, &reference).await
        }
        Command::Crds { out } => {
            let crds = promoter::cluster::crd::crds_yaml();
            match out {
                Some(dir) => {
                    for (file, yaml) in crds {
                        let path = dir.join(file);
                        std::fs::write(&path, yaml)
                            .with_context(|| format!("cannot write {}", path.display()))?;
                    }
                }
                None => {
                    let docs: Vec<String> = crds.into_iter().map(|(_, yaml)| yaml).collect();
                    print!("{}", docs.join("---\n"));
                }
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<std::process::ExitCode> {
    let source = match args.manifests {
        Some(dir) => promoter::serve::Source::Folder(dir),
        None => promoter::serve::Source::Cluster {
            namespace: args.namespace,
        },
    };
    let settings = promoter::serve::Settings {
        source,
        data_dir: args.data_dir,
        webhook_addr: args.webhook_addr,
        admin_addr: args.admin_addr,
        tls: args.tls_cert.zip(args.tls_key),
        allow_unsigned: args.allow_unsigned_events,
        require_promoted_source: args.require_promoted_source,
        max_event_age: args.event_max_age,
        body_limit: args.max_body,
        max_plugin_size: args.max_plugin_size,
        git: promoter::runtime::git::GitLimits {
            max_bytes: args.git_max_size as u64,
            timeout: args.git_timeout,
            max_copies: args.git_max_copies,
            ..Default::default()
        },
        retry: promoter::execute::RetryPolicy {
            max_attempts: args.max_attempts.max(1),
            base: args.retry_base,
            ..Default::default()
        },
        workers: args.workers,
        builtin_private_networks: args.builtin_private_networks,
        watch_interval: args.watch_interval,
        keep_finished: args.keep_finished,
        accept_timeout: args.accept_timeout,
        events_addr: args.events_addr,
        admin_token_file: args.admin_token_file,
        drain_timeout: args.drain_timeout,
    };
    promoter::serve::run(settings).await?;
    Ok(std::process::ExitCode::SUCCESS)
}

fn split_pipeline(pipeline: &str) -> anyhow::Result<(&str, &str)> {
    pipeline
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
        .with_context(|| format!("pipeline {pipeline:?}: expected NAMESPACE/NAME"))
}

fn read_key(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read key file {}", path.display()))?;
    Ok(trim_newline(bytes))
}

fn answer(status: u16, text: &str) -> std::process::ExitCode {
    println!("HTTP {status}\n{text}");
    if (200..300).contains(&status) {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    }
}

async fn send_event(args: SendArgs) -> anyhow::Result<std::process::ExitCode> {
    let (namespace, name) = split_pipeline(&args.pipeline)?;
    let body = match &args.body {
        Some(path) => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        None => {
            let object = args.name.as_deref().unwrap_or(name);
            let event = promoter::client::deployment_event(
                &args.kind,
                &args.namespace,
                object,
                &args.version,
            );
            serde_json::to_vec(&event)?
        }
    };
    let key = args.key_file.as_deref().map(read_key).transpose()?;
    let url = format!(
        "{}/promotion/{namespace}/{name}/{}",
        args.url.trim_end_matches('/'),
        args.environment
    );
    let (status, text) = promoter::client::post_signed(&url, body, key.as_deref()).await?;
    Ok(answer(status, &text))
}

async fn approve(args: ApproveArgs) -> anyhow::Result<std::process::ExitCode> {
    let (namespace, name) = split_pipeline(&args.pipeline)?;
    let body = promoter::client::ApprovalBody {
        namespace: namespace.into(),
        name: name.into(),
        environment: args.environment.clone(),
        revision: args.revision.clone(),
        timestamp: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    };
    let key = read_key(&args.key_file)?;
    let url = format!(
        "{}/approval/{namespace}/{name}/{}/{}",
        args.url.trim_end_matches('/'),
        args.environment,
        args.revision
    );
    let (status, text) =
        promoter::client::post_signed(&url, serde_json::to_vec(&body)?, Some(&key)).await?;
    if status == 401 {
        eprintln!(
            "the server did not accept this approval's signature. Sign it with the approval key \
             of {env}: the hmac-key of the Secret its promotion's approvalSecretRef names (an \
             event key never approves). An environment without approvalSecretRef is approved \
             only with the promoter.dev/approved annotation (Kubernetes mode). The server's \
             log says which check failed.",
            env = args.environment
        );
    }
    Ok(answer(status, &text))
}

async fn promotions(cmd: PromotionsCommand) -> anyhow::Result<std::process::ExitCode> {
    match cmd {
        PromotionsCommand::List {
            admin,
            namespace,
            pipeline,
            environment,
            phase,
            version,
            limit,
            json,
        } => {
            let mut params: Vec<(&str, String)> = Vec::new();
            for (name, value) in [
                ("namespace", namespace),
                ("pipeline", pipeline),
                ("environment", environment),
                ("phase", phase),
                ("version", version),
            ] {
                if let Some(value) = value {
                    params.push((name, value));
                }
            }
            // Pages of the API's largest size, until the limit or the last page.
            let mut promotions: Vec<serde_json::Value> = Vec::new();
            let mut next: Option<String> = None;
            loop {
                let want = limit.map_or(1000, |l| l.saturating_sub(promotions.len()).min(1000));
                if want == 0 {
                    break;
                }
                let mut query = params.clone();
                query.push(("limit", want.to_string()));
                if let Some(token) = &next {
                    query.push(("continue", token.clone()));
                }
                let mut url = reqwest::Url::parse("http://admin/promotions")?;
                url.query_pairs_mut().extend_pairs(&query);
                let (status, body) = admin
                    .get(&format!("/promotions?{}", url.query().unwrap_or("")))
                    .await?;
                if status != 200 {
                    return Ok(admin_refused(status, &body));
                }
                promotions.extend(body["promotions"].as_array().cloned().unwrap_or_default());
                match body["continue"].as_str() {
                    Some(token) => next = Some(token.to_string()),
                    None => break,
                }
            }
            let body = serde_json::json!({"promotions": promotions});
            if json {
                println!("{}", serde_json::to_string_pretty(&body)?);
                return Ok(std::process::ExitCode::SUCCESS);
            }
            println!(
                "{:<52} {:<28} {:<10} {:<12} {:<17} {:>3}  RESULT",
                "ID", "PIPELINE", "ENV", "VERSION", "PHASE", "TRY"
            );
            let empty = Vec::new();
            for p in body["promotions"].as_array().unwrap_or(&empty) {
                let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
                let result = p["outcomeUrl"]
                    .as_str()
                    .or(p["lastError"].as_str())
                    .unwrap_or("");
                println!(
                    "{:<52} {:<28} {:<10} {:<12} {:<17} {:>3}  {}",
                    s(&p["id"]),
                    format!(
                        "{}/{}",
                        s(&p["pipeline"]["namespace"]),
                        s(&p["pipeline"]["name"])
                    ),
                    s(&p["targetEnvironment"]),
                    s(&p["version"]),
                    s(&p["phase"]),
                    p["attempts"].as_u64().unwrap_or(0),
                    result
                );
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        PromotionsCommand::Show { id, admin } => {
            let (status, body) = admin.get(&format!("/promotions/{id}")).await?;
            if status == 401 || status == 403 {
                return Ok(admin_refused(status, &body));
            }
            println!("{}", serde_json::to_string_pretty(&body)?);
            Ok(if status == 200 {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::from(1)
            })
        }
    }
}

/// The operator commands: each one call to the admin API.
async fn operate(cmd: Command) -> anyhow::Result<std::process::ExitCode> {
    use serde_json::json;
    let (status, body) = match &cmd {
        Command::Promote {
            pipeline,
            environment,
            version,
            reason,
            rollback,
            target,
        } => {
            let (namespace, name) = target.split(pipeline)?;
            let request = json!({
                "namespace": namespace, "pipeline": name, "environment": environment,
                "version": version, "reason": reason, "rollback": rollback,
            });
            target.admin.post("/promotions", request).await?
        }
        Command::Retry {
            id,
            environment,
            failed: true,
            target,
        } => {
            let (namespace, name) = target.split(id)?;
            let request =
                json!({"namespace": namespace, "pipeline": name, "environment": environment});
            target.admin.post("/promotions/retry", request).await?
        }
        Command::Retry {
            environment: Some(env),
            ..
        } => bail!("an environment ({env}) goes with --failed PIPELINE [ENV] only"),
        Command::Retry { id, target, .. } => {
            target
                .admin
                .post(&format!("/promotions/{id}/retry"), json!({}))
                .await?
        }
        Command::Reject { id, reason, admin } => {
            admin
                .post(
                    &format!("/promotions/{id}/reject"),
                    json!({"reason": reason}),
                )
                .await?
        }
        Command::Abort { id, reason, admin } => {
            admin
                .post(
                    &format!("/promotions/{id}/abort"),
                    json!({"reason": reason}),
                )
                .await?
        }
        Command::Suspend {
            pipeline,
            reason,
            target,
        } => {
            let (namespace, name) = target.split(pipeline)?;
            target
                .admin
                .post(
                    &format!("/pipelines/{namespace}/{name}/suspend"),
                    json!({"reason": reason}),
                )
                .await?
        }
        Command::Resume { pipeline, target } => {
            let (namespace, name) = target.split(pipeline)?;
            target
                .admin
                .post(&format!("/pipelines/{namespace}/{name}/resume"), json!({}))
                .await?
        }
        Command::History {
            pipeline,
            environment,
            target,
            ..
        } => {
            let (namespace, name) = target.split(pipeline)?;
            let query = environment
                .as_ref()
                .map(|e| format!("?environment={e}"))
                .unwrap_or_default();
            target
                .admin
                .get(&format!("/pipelines/{namespace}/{name}/history{query}"))
                .await?
        }
        _ => unreachable!("only operator commands come here"),
    };
    if !(200..300).contains(&status) {
        return Ok(admin_refused(status, &body));
    }
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    let line = |p: &serde_json::Value| {
        format!(
            "{}  {} into {}: {}",
            s(&p["id"]),
            s(&p["version"]),
            s(&p["targetEnvironment"]),
            s(&p["phase"])
        )
    };
    match &cmd {
        Command::History { json: true, .. } => println!("{}", serde_json::to_string_pretty(&body)?),
        Command::History { .. } => {
            if let Some(by) = body["suspended"].as_str() {
                println!("pipeline {} is suspended ({by})", s(&body["pipeline"]));
            }
            let empty = Vec::new();
            for env in body["environments"].as_array().unwrap_or(&empty) {
                let current = env["current"]["version"].as_str().unwrap_or("none");
                println!("\n{} (now: {current})", s(&env["name"]));
                println!(
                    "  {:<24} {:<14} {:<17} {:<12} {:<40} OUTCOME",
                    "ARRIVED", "VERSION", "HOW", "PHASE", "WHO"
                );
                for p in env["promotions"].as_array().unwrap_or(&empty) {
                    let mut who = Vec::new();
                    for (key, label) in [
                        ("requestedBy", "asked"),
                        ("approvedBy", "approved"),
                        ("retriedBy", "retried"),
                        ("closedBy", "closed"),
                    ] {
                        if let Some(by) = p[key].as_str() {
                            who.push(format!("{label}: {by}"));
                        }
                    }
                    let mut outcome = p["outcome"].as_str().unwrap_or("").to_string();
                    for key in ["reason", "closeReason"] {
                        if let Some(why) = p[key].as_str() {
                            outcome = format!("{outcome} ({why})");
                        }
                    }
                    println!(
                        "  {:<24} {:<14} {:<17} {:<12} {:<40} {}",
                        s(&p["arrived"]),
                        s(&p["version"]),
                        s(&p["how"]),
                        s(&p["phase"]),
                        if who.is_empty() {
                            "-".into()
                        } else {
                            who.join("; ")
                        },
                        outcome.trim()
                    );
                }
            }
        }
        Command::Retry { failed: true, .. } => {
            let empty = Vec::new();
            let retried = body["retried"].as_array().unwrap_or(&empty);
            println!("{} failed promotion(s) retried", retried.len());
            for p in retried {
                println!("{}", line(p));
            }
        }
        Command::Suspend { .. } | Command::Resume { .. } => println!(
            "pipeline {} {}",
            s(&body["pipeline"]),
            if body["suspended"] == true {
                "suspended"
            } else {
                "resumed"
            }
        ),
        _ => println!("{}", line(&body)),
    }
    Ok(std::process::ExitCode::SUCCESS)
}

async fn load(plugin: &str, grant: Grant, limits: Limits) -> anyhow::Result<Plugin> {
    let (name, bytes) = match plugin.strip_prefix("builtin:") {
        Some(name) => {
            let bytes = promoter::builtin::get(name).with_context(|| {
                format!(
                    "no built-in plugin {name:?}; built-in plugins: {}",
                    promoter::builtin::names().join(", ")
                )
            })?;
            (name.to_string(), bytes.to_vec())
        }
        None => {
            let bytes =
                std::fs::read(plugin).with_context(|| format!("cannot read plugin {plugin}"))?;
            let name = std::path::Path::new(plugin)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| plugin.to_string());
            (name, bytes)
        }
    };
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default())?);
    Ok(runtime.load(&name, &bytes, grant, limits).await?)
}

async fn run_plugin(args: RunArgs) -> anyhow::Result<std::process::ExitCode> {
    let text = std::fs::read_to_string(&args.promotion)
        .with_context(|| format!("cannot read {}", args.promotion.display()))?;
    let mut request: PromotionRequest = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a promotion request", args.promotion.display()))?;
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        request.config = serde_yaml_ng::from_str(&text)
            .with_context(|| format!("{} is not YAML or JSON", path.display()))?;
    }

    let mut grant = Grant {
        private_networks: args.allow_private_networks,
        ..Grant::default()
    };
    let mut problems = Vec::new();
    for origin in &args.allow {
        match Origin::parse(origin) {
            Ok(o) => grant.origins.push(o),
            Err(e) => problems.push(format!("--allow: {e}")),
        }
    }
    for binding in &args.secrets {
        let Some((name, file)) = binding.split_once('=') else {
            problems.push(format!("--secret {binding:?}: expected NAME=FILE"));
            continue;
        };
        match std::fs::read(file) {
            Ok(bytes) => {
                grant
                    .keys
                    .insert(name.to_string(), Secret::new(trim_newline(bytes)));
            }
            Err(e) => problems.push(format!("--secret {name}: cannot read {file}: {e}")),
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    let limits = Limits {
        timeout: args.timeout,
        memory_bytes: args.memory,
        ..Limits::default()
    };

    let plugin = load(&args.plugin, grant, limits).await?;
    let problems = plugin.validate_config(&request.config).await?;
    if !problems.is_empty() {
        eprintln!("plugin {} rejects the configuration:", plugin.name());
        for p in problems {
            eprintln!("  - {p}");
        }
        return Ok(std::process::ExitCode::from(2));
    }
    match plugin.promote(&request).await {
        Ok(outcome) => {
            println!("{}", serde_json::to_string_pretty(&outcome)?);
            Ok(match outcome {
                Outcome::Done { .. } => std::process::ExitCode::SUCCESS,
                Outcome::Waiting { .. } => std::process::ExitCode::from(3),
            })
        }
        Err(e) => {
            let retry = if e.is_retryable() {
                match e.retry_after() {
                    Some(after) => format!(" (retryable, after {after:?})"),
                    None => " (retryable)".into(),
                }
            } else {
                " (permanent)".into()
            };
            eprintln!("error [{}]: {e}{retry}", e.kind());
            Ok(std::process::ExitCode::from(1))
        }
    }
}

async fn push_plugin(
    file: &std::path::Path,
    reference: &str,
) -> anyhow::Result<std::process::ExitCode> {
    use promoter::oci::{Credentials, OciRef};
    let reference = OciRef::parse(reference)?;
    let wasm = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    if let Err(problem) = promoter::oci::check_component(&wasm) {
        bail!("{}: {problem}", file.display());
    }
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let credentials = match (
        env("PROMOTER_REGISTRY_USERNAME"),
        env("PROMOTER_REGISTRY_PASSWORD"),
    ) {
        (Some(username), Some(password)) => Some(Credentials {
            username,
            password: Secret::from(password.as_str()),
        }),
        (None, None) => None,
        _ => {
            bail!("set both PROMOTER_REGISTRY_USERNAME and PROMOTER_REGISTRY_PASSWORD, or neither")
        }
    };
    let pinned = promoter::oci::push(&wasm, &reference, credentials.as_ref()).await?;
    println!("{pinned}");
    Ok(std::process::ExitCode::SUCCESS)
}

/// Secret files written with `echo` end in a newline that is not part of the key.
fn trim_newline(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_serve_flag_given_twice_takes_the_last_value_so_extra_args_override_the_charts() {
        let cli = Cli::try_parse_from([
            "promoter",
            "serve",
            "--workers=4",
            "--admin-addr=0.0.0.0:8080",
            "--workers=9",
            "--admin-addr=127.0.0.1:9999",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.workers, 9);
        assert_eq!(args.admin_addr.to_string(), "127.0.0.1:9999");
    }
}
