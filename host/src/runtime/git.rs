//! The `git` capability: working copies the host keeps on the plugin's behalf.
//!
//! The host runs the real `git` with a scrubbed environment: no user or system git
//! configuration, no credential helpers, no prompts. Credentials reach git through
//! per-command environment variables (an `http.extraHeader` for HTTPS, a key file for
//! SSH), never through URLs, arguments or files in the working copy, and never the
//! plugin. A repository's working copy is kept under the data directory and reused:
//! the next promotion fetches into it instead of cloning again. One call at a time
//! uses a given repository.
//!
//! Repository content and the plugin are untrusted, so nothing in a working copy can
//! reach outside it or make git run anything:
//! - every git command runs with hooks off, fsmonitor off, links checked out as plain
//!   files, no redirects, and only the https, http and ssh transports, set through
//!   the command's own configuration (`GIT_CONFIG_COUNT`), which outranks the
//!   repository's `.git/config`;
//! - the plugin's file operations resolve beneath the working copy, following no link
//!   and never into `.git` ([`files`]);
//! - the remote passes the address policy of plugin HTTP, resolved and pinned by the
//!   host, and a URL with credentials in it is refused ([`remote`]);
//! - each git command has a time limit and the working copy a size limit; past either,
//!   the command and everything it started are killed and the copy is removed
//!   ([`GitLimits`]);
//! - working copies live in their own 0700 directory (apart from the compiled-code and
//!   OCI caches); ones unused for a day, or beyond the newest [`GitLimits::max_copies`],
//!   are removed.

mod files;
mod remote;

pub use remote::redact;

use super::secret::Secret;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::process::Command;

/// How the host authenticates to a remote.
#[derive(Debug, Clone, Default)]
pub enum GitAuth {
    #[default]
    None,
    /// HTTPS basic auth (`username`/`password` of Weave's Secret, or a token as password).
    Basic { username: String, password: Secret },
    /// HTTPS `Authorization: Bearer <token>`: Bitbucket Data Center's project and repository
    /// HTTP access tokens, which belong to no user and refuse Basic.
    Bearer { token: Secret },
    /// SSH with a private key (`identity`) and the remote's `known_hosts`.
    Ssh {
        identity: Secret,
        known_hosts: Option<Secret>,
    },
}

/// A repository the operator granted, with its credentials.
#[derive(Debug, Clone)]
pub struct GitRemote {
    pub url: String,
    pub auth: GitAuth,
    /// PEM bundle to trust for HTTPS (Weave's `caFile`).
    pub ca: Option<Secret>,
}

/// `https://Host/a/b.git/` and `https://host/a/b` name the same repository.
pub fn same_repository(a: &str, b: &str) -> bool {
    fn norm(u: &str) -> String {
        let u = u.trim().trim_end_matches('/');
        let u = u.strip_suffix(".git").unwrap_or(u);
        match u.split_once("://") {
            Some((scheme, rest)) => {
                let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
                format!(
                    "{}://{}/{}",
                    scheme.to_ascii_lowercase(),
                    host.to_ascii_lowercase(),
                    path
                )
            }
            None => u.to_string(),
        }
    }
    norm(a) == norm(b)
}

/// Checks a remote before any promotion uses it (when a Pipeline is loaded): an https,
/// http or ssh URL without credentials in it, and not a literal internal address unless
/// `private_networks`. Names behind the URL are checked when a promotion opens it.
pub fn check_remote(url: &str, private_networks: bool) -> Result<(), GitFailure> {
    let remote = remote::parse(url)?;
    if let Ok(ip) = remote.host.parse() {
        let addrs = [std::net::SocketAddr::new(ip, remote.port)];
        remote.refuse_internal(url, &addrs, private_networks)?;
    }
    Ok(())
}

/// What went wrong, in the contract's terms (the last two are the host's limits).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitFailure {
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Other(String),
    /// The working copy grew past [`GitLimits::max_bytes`]; it was removed.
    #[error(
        "git remote {remote}: the working copy grew past the host's limit of {} MiB, so it \
         was stopped and removed; the operator sets the limit with `promoter serve \
         --git-max-size` (PROMOTER_GIT_MAX_SIZE)",
        limit_bytes >> 20
    )]
    TooLarge { remote: String, limit_bytes: u64 },
    /// A git command ran past [`GitLimits::timeout`]; it and its children were killed.
    #[error(
        "{what}: no result within {}, so it was stopped; the operator sets the limit \
         with `promoter serve --git-timeout` (PROMOTER_GIT_TIMEOUT)",
        humantime::format_duration(*limit)
    )]
    TimedOut { what: String, limit: Duration },
}

/// What the host allows git to take.
#[derive(Debug, Clone)]
pub struct GitLimits {
    /// Largest working copy (checked-out files and `.git` together).
    pub max_bytes: u64,
    /// Longest a single git command (clone, fetch, push, …) may run.
    pub timeout: Duration,
    /// Working copies kept for reuse; the least recently used beyond this are removed.
    pub max_copies: usize,
    /// A working copy unused for this long is removed.
    pub max_idle: Duration,
}

impl Default for GitLimits {
    fn default() -> GitLimits {
        GitLimits {
            // A configuration repository is mostly YAML: far below this at depth 1.
            max_bytes: 512 << 20,
            timeout: Duration::from_secs(120),
            max_copies: 32,
            max_idle: Duration::from_secs(24 * 3600),
        }
    }
}

/// Working copies by repository, and the lock that gives one call at a time each.
#[derive(Default)]
pub struct GitCache {
    root: PathBuf,
    limits: GitLimits,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl GitCache {
    /// Working copies under `root`, which is made 0700: repository content of one
    /// tenant is no business of another local user.
    pub fn new(root: PathBuf, limits: GitLimits) -> std::io::Result<GitCache> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&root)?;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))?;
        // Key files a killed process left behind: nothing uses them any more.
        let _ = std::fs::remove_dir_all(root.join("secrets"));
        Ok(GitCache {
            root,
            limits,
            locks: Mutex::default(),
        })
    }

    fn lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap()
            .entry(key.to_string())
            .or_default()
            .clone()
    }

    /// Removes working copies unused for [`GitLimits::max_idle`] and, beyond the newest
    /// [`GitLimits::max_copies`], the least recently used; never one in use.
    fn evict(&self) {
        let Ok(entries) = std::fs::read_dir(self.root.join("repos")) else {
            return;
        };
        let mut copies: Vec<(SystemTime, String, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let used = e.metadata().and_then(|m| m.modified()).ok()?;
                Some((used, e.file_name().to_string_lossy().into_owned(), e.path()))
            })
            .collect();
        copies.sort_by_key(|c| std::cmp::Reverse(c.0));
        let now = SystemTime::now();
        for (i, (used, key, path)) in copies.into_iter().enumerate() {
            let idle = now.duration_since(used).unwrap_or_default();
            if i < self.limits.max_copies && idle <= self.limits.max_idle {
                continue;
            }
            if let Ok(_busy) = self.lock(&key).try_lock_owned() {
                tracing::info!(repository = %key, ?idle, "removing a git working copy no longer used");
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }
}

/// One open repository: a working copy held for the rest of the call.
pub struct GitRepo {
    dir: PathBuf,
    remote: GitRemote,
    secrets_dir: PathBuf,
    limits: GitLimits,
    /// `http.curloptResolve`: the remote's host pinned to the addresses checked.
    pin: Option<String>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

/// Bytes of the files below `dir` (links counted as links, never followed).
fn size_of(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}

/// Kills a git command's whole process group (git starts `git-remote-https`, `ssh`,
/// `index-pack`…) unless disarmed after the command ended by itself.
struct ProcessGroup(Option<rustix::process::Pid>);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// The last line of git's stderr that says something: not git's advice after an ssh
/// failure, nor ssh's banner of at-signs.
fn last_said(stderr: &str) -> String {
    const BOILERPLATE: [&str; 3] = [
        "fatal: could not read from remote repository.",
        "please make sure you have the correct access rights",
        "and the repository exists.",
    ];
    stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('@'))
        .rfind(|l| !BOILERPLATE.contains(&l.to_ascii_lowercase().as_str()))
        .unwrap_or("")
        .to_string()
}

fn classify(stderr: &str, what: &str) -> GitFailure {
    let s = stderr.to_ascii_lowercase();
    let said = last_said(stderr);
    let message = format!("{what}: {said}");
    if ["301", "302", "303", "307", "308"]
        .iter()
        .any(|code| s.contains(&format!("returned error: {code}")))
    {
        GitFailure::Other(format!(
            "{message}; the remote answered with a redirect, which the host never follows \
             (it would carry the credentials elsewhere): name the repository's final URL"
        ))
    } else if s.contains("authentication failed")
        || s.contains("401")
        || s.contains("403")
        || s.contains("permission denied")
        || s.contains("could not read username")
    {
        GitFailure::Unauthorized(message)
    } else if s.contains("not found")
        || s.contains("couldn't find remote ref")
        || s.contains("does not appear to be a git repository")
        || s.contains("404")
    {
        GitFailure::NotFound(message)
    } else if s.contains("could not resolve")
        || s.contains("connection refused")
        || s.contains("timed out")
        || s.contains("connection reset")
        || s.contains("connection closed by")
        || s.contains(" 50")
        || s.contains("unable to access")
    {
        GitFailure::Unavailable(message)
    } else {
        GitFailure::Other(message)
    }
}

/// What ssh said when it, not git, failed: the server's host key did not verify, or the
/// server refused the key. Named after the Secret's keys, so the operator knows which
/// credential to fix; `None` when ssh did not fail (git's own classification applies).
fn classify_ssh(
    stderr: &str,
    what: &str,
    has_known_hosts: bool,
    key_fingerprint: Option<&str>,
) -> Option<GitFailure> {
    let s = stderr.to_ascii_lowercase();
    if s.contains("host key verification failed") {
        // `No ED25519 host key is known for [127.0.0.1]:2222 and you have requested …`
        let host = stderr
            .lines()
            .find_map(|l| {
                l.split_once(" host key is known for ")?
                    .1
                    .split_whitespace()
                    .next()
            })
            .or_else(|| {
                stderr
                    .lines()
                    .find_map(|l| l.strip_prefix("Host key for ")?.split_whitespace().next())
            })
            .unwrap_or("the server");
        let presented = stderr
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("SHA256:"))
            .map(|fp| format!(" ({})", fp.trim_end_matches('.')))
            .unwrap_or_default();
        let why = if s.contains("remote host identification has changed")
            || s.contains("has changed and you have requested strict checking")
        {
            format!(
                "the host key {host} presented{presented} does not match the one in \
                 `known_hosts` of the Secret bound to this repository; refusing to connect"
            )
        } else if has_known_hosts {
            format!(
                "`known_hosts` of the Secret bound to this repository has no key for {host}; \
                 refusing to connect"
            )
        } else {
            format!(
                "the Secret bound to this repository has no `known_hosts`, so the host key of \
                 {host} cannot be verified; add the server's public host key to the Secret \
                 as `known_hosts`"
            )
        };
        return Some(GitFailure::Other(format!(
            "{what}: SSH host key verification failed: {why}"
        )));
    }
    if let Some(problem) = stderr.lines().find_map(|l| {
        // `Load key "/…/identity": invalid format` (the path is ours, not the operator's)
        let rest = l.trim().strip_prefix("Load key ")?;
        Some(
            rest.rsplit_once("\": ")
                .map_or(rest, |(_, p)| p)
                .to_string(),
        )
    }) {
        return Some(GitFailure::Unauthorized(format!(
            "{what}: `identity` of the Secret bound to this repository is not a usable \
             OpenSSH private key without a passphrase ({problem})"
        )));
    }
    if s.contains("permission denied (publickey") {
        let key = key_fingerprint
            .map(|fp| format!("the key {fp}"))
            .unwrap_or_else(|| "the key".into());
        return Some(GitFailure::Unauthorized(format!(
            "{what}: the SSH server refused {key} (`identity` of the Secret bound to this \
             repository): {}",
            last_said(stderr)
        )));
    }
    None
}

/// `value` as one word for `sh` (GIT_SSH_COMMAND is run by the shell).
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}

/// A private key as ssh reads it: LF line ends and a final newline (OpenSSH refuses a
/// key whose last line has no newline, a common result of pasting it into a Secret).
fn normalized_key(key: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(key.len() + 1);
    for (i, b) in key.iter().enumerate() {
        if *b == b'\r' && key.get(i + 1) == Some(&b'\n') {
            continue;
        }
        out.push(*b);
    }
    while out.last().is_some_and(|b| b.is_ascii_whitespace()) {
        out.pop();
    }
    out.push(b'\n');
    out
}

fn valid_branch(name: &str) -> Result<(), GitFailure> {
    let ok = !name.is_empty()
        && !name.starts_with('-')
        && !name.contains("..")
        && !name.ends_with('/')
        && !name.ends_with(".lock")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if ok {
        Ok(())
    } else {
        Err(GitFailure::Invalid(format!(
            "{name:?} is not a branch name this host accepts"
        )))
    }
}

/// The key files live as long as the call that opened the repository.
impl Drop for GitRepo {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.secrets_dir);
    }
}

impl GitRepo {
    /// Opens `url` at `branch` for a plugin whose grant lists `granted`; internal
    /// addresses only when `private_networks`.
    pub async fn open(
        cache: &GitCache,
        granted: &[GitRemote],
        url: &str,
        branch: &str,
        private_networks: bool,
    ) -> Result<GitRepo, GitFailure> {
        let remote = granted
            .iter()
            .find(|r| same_repository(&r.url, url))
            .cloned()
            .ok_or_else(|| {
                GitFailure::Denied(format!(
                    "repository {} is not granted to this plugin",
                    redact(url)
                ))
            })?;
        valid_branch(branch)?;
        let parsed = remote::parse(&remote.url)?;
        let addrs = parsed.resolve(&remote.url, private_networks).await?;
        use sha2::Digest;
        let key = hex::encode(&sha2::Sha256::digest(remote.url.as_bytes())[..12]);
        let guard = cache.lock(&key).lock_owned().await;
        let repo = GitRepo {
            dir: cache.root.join("repos").join(&key),
            remote,
            secrets_dir: cache.root.join("secrets").join(&key),
            limits: cache.limits.clone(),
            pin: parsed.pin(&addrs),
            _guard: guard,
        };
        repo.write_secrets()?;
        let ready = repo.check_out(branch).await;
        if ready.is_err() && repo.dir.exists() {
            // Half a clone, or one past a limit: nothing of it is kept.
            let _ = std::fs::remove_dir_all(&repo.dir);
        }
        ready?;
        // Marks the copy as just used, for eviction.
        if let Ok(dir) = std::fs::File::open(&repo.dir) {
            let _ = dir.set_modified(SystemTime::now());
        }
        cache.evict();
        Ok(repo)
    }

    /// Brings the working copy to the remote's `branch`: fetched into the cached copy,
    /// or cloned afresh.
    async fn check_out(&self, branch: &str) -> Result<(), GitFailure> {
        if self.dir.join(".git").exists() {
            let fetched = self
                .git_watched(
                    Some(&self.dir),
                    &[
                        "fetch",
                        "--depth",
                        "1",
                        "origin",
                        &format!("+refs/heads/{branch}:refs/remotes/origin/{branch}"),
                    ],
                    "fetch",
                )
                .await;
            match fetched {
                Ok(_) => {
                    self.git_watched(
                        Some(&self.dir),
                        &[
                            "checkout",
                            "--force",
                            "-B",
                            branch,
                            &format!("refs/remotes/origin/{branch}"),
                        ],
                        "checkout",
                    )
                    .await?;
                    self.git(&["clean", "-ffdx"], "clean").await?;
                    return self.within_size();
                }
                Err(e @ (GitFailure::TooLarge { .. } | GitFailure::TimedOut { .. })) => {
                    return Err(e);
                }
                // A cached copy that cannot be brought up to date is cloned afresh.
                Err(_) => {
                    let _ = std::fs::remove_dir_all(&self.dir);
                }
            }
        }
        std::fs::create_dir_all(self.dir.parent().unwrap())
            .map_err(|e| GitFailure::Other(format!("cannot create the working copy: {e}")))?;
        let dir = self.dir.display().to_string();
        self.git_watched(
            None,
            &[
                "clone",
                "--depth",
                "1",
                "--single-branch",
                "--no-recurse-submodules",
                "--branch",
                branch,
                "--",
                &self.remote.url,
                &dir,
            ],
            "clone",
        )
        .await?;
        self.within_size()
    }

    fn within_size(&self) -> Result<(), GitFailure> {
        if size_of(&self.dir) > self.limits.max_bytes {
            return Err(self.too_large());
        }
        Ok(())
    }

    fn too_large(&self) -> GitFailure {
        GitFailure::TooLarge {
            remote: redact(&self.remote.url),
            limit_bytes: self.limits.max_bytes,
        }
    }

    fn write_secrets(&self) -> Result<(), GitFailure> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        use std::os::unix::fs::PermissionsExt;
        let write = |name: &str, bytes: &[u8]| -> Result<PathBuf, GitFailure> {
            let failed = |e: std::io::Error| {
                GitFailure::Other(format!("cannot write the repository's {name} file: {e}"))
            };
            std::fs::create_dir_all(&self.secrets_dir).map_err(failed)?;
            std::fs::set_permissions(&self.secrets_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(failed)?;
            let path = self.secrets_dir.join(name);
            let _ = std::fs::remove_file(&path);
            // Created 0600, so the key is never readable by others, not even for a moment.
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| f.write_all(bytes))
                .map_err(failed)?;
            Ok(path)
        };
        if let Some(ca) = &self.remote.ca {
            write("ca.pem", ca.expose())?;
        }
        if let GitAuth::Ssh {
            identity,
            known_hosts,
        } = &self.remote.auth
        {
            write("identity", &normalized_key(identity.expose()))?;
            if let Some(k) = known_hosts {
                write("known_hosts", k.expose())?;
            }
        }
        Ok(())
    }

    /// A git command with a scrubbed environment and the remote's credentials.
    fn command(&self, cwd: Option<&Path>) -> Command {
        let mut cmd = Command::new("git");
        cmd.env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("HOME", &self.secrets_dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "/bin/false")
            .env("LC_ALL", "C")
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null());
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        // Command-line scope: outranks anything in the working copy's `.git/config`.
        let mut config: Vec<(String, String)> = [
            // Only the transports the remote check understands.
            ("protocol.allow", "never"),
            ("protocol.https.allow", "always"),
            ("protocol.http.allow", "always"),
            ("protocol.ssh.allow", "always"),
            ("protocol.file.allow", "never"),
            // Nothing a repository (or a write into it) can make git run.
            ("core.hooksPath", "/dev/null"),
            ("core.fsmonitor", "false"),
            ("core.untrackedCache", "false"),
            ("submodule.recurse", "false"),
            ("fetch.recurseSubmodules", "false"),
            // Links are checked out as plain files holding the target's name.
            ("core.symlinks", "false"),
            ("core.protectNTFS", "true"),
            ("core.protectHFS", "true"),
            // A redirect would take the Authorization header to whatever host it names.
            ("http.followRedirects", "false"),
            ("credential.helper", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if let Some(pin) = &self.pin {
            config.push(("http.curloptResolve".into(), pin.clone()));
        }
        match &self.remote.auth {
            GitAuth::None => {}
            GitAuth::Basic { username, password } => {
                use base64::Engine;
                let mut raw = format!("{username}:").into_bytes();
                raw.extend_from_slice(password.expose());
                let header = format!(
                    "Authorization: Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                );
                config.push(("http.extraHeader".into(), header));
            }
            GitAuth::Bearer { token } => {
                let header = format!(
                    "Authorization: Bearer {}",
                    String::from_utf8_lossy(token.expose())
                );
                config.push(("http.extraHeader".into(), header));
            }
            GitAuth::Ssh { known_hosts, .. } => {
                // No ssh configuration of the machine or the user (ssh finds the user's
                // through the password database, not HOME), no agent, no prompts; only the
                // Secret's key, and only the Secret's known_hosts (the machine-wide file
                // when the Secret has none). The host key is always checked.
                let path =
                    |name: &str| shell_quote(&self.secrets_dir.join(name).display().to_string());
                let global = if known_hosts.is_some() {
                    " -o GlobalKnownHostsFile=/dev/null"
                } else {
                    ""
                };
                cmd.env(
                    "GIT_SSH_COMMAND",
                    format!(
                        "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o IdentityAgent=none \
                         -o BatchMode=yes -o ConnectTimeout=30 -o StrictHostKeyChecking=yes \
                         -o UserKnownHostsFile={}{global}",
                        path("identity"),
                        path("known_hosts"),
                    ),
                );
            }
        }
        if self.remote.ca.is_some() {
            config.push((
                "http.sslCAInfo".into(),
                self.secrets_dir.join("ca.pem").display().to_string(),
            ));
        }
        cmd.env("GIT_CONFIG_COUNT", config.len().to_string());
        for (i, (k, v)) in config.iter().enumerate() {
            cmd.env(format!("GIT_CONFIG_KEY_{i}"), k)
                .env(format!("GIT_CONFIG_VALUE_{i}"), v);
        }
        cmd
    }

    /// Runs git for at most [`GitLimits::timeout`]; with `watch`, also stops it when the
    /// working copy grows past [`GitLimits::max_bytes`].
    async fn run(
        &self,
        cwd: Option<&Path>,
        args: &[&str],
        what: &str,
        watch: bool,
    ) -> Result<String, GitFailure> {
        let mut cmd = self.command(cwd);
        cmd.args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| GitFailure::Other(format!("cannot run git: {e}")))?;
        let mut group = ProcessGroup(
            child
                .id()
                .and_then(|id| rustix::process::Pid::from_raw(id as i32)),
        );
        let grown = async {
            if !watch {
                return std::future::pending().await;
            }
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let dir = self.dir.clone();
                let size = tokio::task::spawn_blocking(move || size_of(&dir))
                    .await
                    .unwrap_or(0);
                if size > self.limits.max_bytes {
                    return;
                }
            }
        };
        let out = tokio::select! {
            out = tokio::time::timeout(self.limits.timeout, child.wait_with_output()) => out,
            () = grown => return Err(self.too_large()),
        };
        let shown = redact(&self.remote.url);
        let out = match out {
            Ok(out) => out.map_err(|e| GitFailure::Other(format!("cannot run git: {e}")))?,
            Err(_) => {
                return Err(GitFailure::TimedOut {
                    what: format!("git {what} {shown}"),
                    limit: self.limits.timeout,
                });
            }
        };
        group.0 = None;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
        }
        let stderr = remote::redact_all(&String::from_utf8_lossy(&out.stderr), &self.remote.url);
        let what = format!("git {what} {shown}");
        if let GitAuth::Ssh { known_hosts, .. } = &self.remote.auth {
            let fingerprint = if stderr
                .to_ascii_lowercase()
                .contains("permission denied (publickey")
            {
                self.identity_fingerprint().await
            } else {
                None
            };
            if let Some(failure) = classify_ssh(
                &stderr,
                &what,
                known_hosts.is_some(),
                fingerprint.as_deref(),
            ) {
                return Err(failure);
            }
        }
        Err(classify(&stderr, &what))
    }

    async fn git_watched(
        &self,
        cwd: Option<&Path>,
        args: &[&str],
        what: &str,
    ) -> Result<String, GitFailure> {
        self.run(cwd, args, what, true).await
    }

    /// `SHA256:…` of the Secret's key (public: what a forge lists for a deploy key).
    async fn identity_fingerprint(&self) -> Option<String> {
        let out = Command::new("ssh-keygen")
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .arg("-l")
            .arg("-f")
            .arg(self.secrets_dir.join("identity"))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .find(|w| w.starts_with("SHA256:"))
            .map(String::from)
    }

    async fn git(&self, args: &[&str], what: &str) -> Result<String, GitFailure> {
        self.run(Some(&self.dir), args, what, false).await
    }

    pub async fn create_branch(&self, name: &str) -> Result<(), GitFailure> {
        valid_branch(name)?;
        self.git(&["checkout", "-B", name], "checkout")
            .await
            .map(|_| ())
    }

    pub fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, GitFailure> {
        files::read(&self.dir, path)
    }

    pub fn write_file(&self, path: &str, contents: &[u8]) -> Result<(), GitFailure> {
        files::write(&self.dir, path, contents)
    }

    pub async fn list_files(&self, dir: &str) -> Result<Vec<String>, GitFailure> {
        let mut args = vec![
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ];
        if !dir.is_empty() {
            files::inside(dir)?;
            args.push("--");
            args.push(dir);
        }
        let out = self.git(&args, "ls-files").await?;
        Ok(out
            .split('\0')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect())
    }

    /// `None` when nothing changed: no empty commits.
    pub async fn commit(
        &self,
        message: &str,
        name: &str,
        email: &str,
    ) -> Result<Option<String>, GitFailure> {
        self.git(&["add", "--all"], "add").await?;
        let status = self.git(&["status", "--porcelain"], "status").await?;
        if status.is_empty() {
            return Ok(None);
        }
        let author_name = format!("user.name={name}");
        let author_email = format!("user.email={email}");
        self.git(
            &[
                "-c",
                &author_name,
                "-c",
                &author_email,
                "commit",
                "--quiet",
                "--no-verify",
                "-m",
                message,
            ],
            "commit",
        )
        .await?;
        self.git(&["rev-parse", "HEAD"], "rev-parse")
            .await
            .map(Some)
    }

    /// Pushes HEAD to `branch` unless the remote branch already has the same tree.
    pub async fn push(&self, branch: &str) -> Result<bool, GitFailure> {
        valid_branch(branch)?;
        let remote_ref = format!("refs/remotes/origin/{branch}");
        let fetched = self
            .git_watched(
                Some(&self.dir),
                &[
                    "fetch",
                    "--depth",
                    "1",
                    "origin",
                    &format!("+refs/heads/{branch}:{remote_ref}"),
                ],
                "fetch",
            )
            .await;
        if let Err(e @ (GitFailure::TooLarge { .. } | GitFailure::TimedOut { .. })) = fetched {
            return Err(e);
        }
        if fetched.is_ok() {
            let ours = self.git(&["rev-parse", "HEAD^{tree}"], "rev-parse").await?;
            let theirs = self
                .git(
                    &["rev-parse", &format!("{remote_ref}^{{tree}}")],
                    "rev-parse",
                )
                .await?;
            if ours == theirs {
                return Ok(false);
            }
        }
        self.git(
            &[
                "push",
                "--force",
                "origin",
                &format!("HEAD:refs/heads/{branch}"),
            ],
            "push",
        )
        .await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_urls_compare_without_case_suffix_or_slash() {
        assert!(same_repository(
            "https://GitHub.com/org/repo.git",
            "https://github.com/org/repo/"
        ));
        assert!(!same_repository(
            "https://github.com/org/repo",
            "https://github.com/org/other"
        ));
        assert!(
            !same_repository("https://github.com/Org/repo", "https://github.com/org/repo"),
            "paths keep their case"
        );
    }

    const ADVICE: &str = "fatal: Could not read from remote repository.\n\nPlease make sure \
                          you have the correct access rights\nand the repository exists.\n";

    #[test]
    fn ssh_failures_name_the_secret_key_to_fix_and_not_git_advice() {
        let what = "git clone ssh://git@h/o/r.git";
        let refused = format!("git@h: Permission denied (publickey).\r\n{ADVICE}");
        let Some(GitFailure::Unauthorized(m)) =
            classify_ssh(&refused, what, true, Some("SHA256:abc"))
        else {
            panic!()
        };
        assert!(m.contains("refused the key SHA256:abc (`identity`"), "{m}");
        assert!(m.ends_with("Permission denied (publickey)."), "{m}");

        let unknown = format!(
            "No ED25519 host key is known for [h]:2222 and you have requested strict \
             checking.\r\nHost key verification failed.\r\n{ADVICE}"
        );
        let Some(GitFailure::Other(m)) = classify_ssh(&unknown, what, true, None) else {
            panic!()
        };
        assert!(m.contains("SSH host key verification failed"), "{m}");
        assert!(m.contains("`known_hosts` of the Secret"), "{m}");
        assert!(m.contains("[h]:2222"), "{m}");
        let Some(GitFailure::Other(m)) = classify_ssh(&unknown, what, false, None) else {
            panic!()
        };
        assert!(m.contains("has no `known_hosts`"), "{m}");

        let changed = format!(
            "@@@@\r\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\n\
             The fingerprint for the ED25519 key sent by the remote host is\r\n\
             SHA256:O1xN7.\r\nHost key for [h]:2222 has changed and you have requested \
             strict checking.\r\nHost key verification failed.\r\n{ADVICE}"
        );
        let Some(GitFailure::Other(m)) = classify_ssh(&changed, what, true, None) else {
            panic!()
        };
        assert!(
            m.contains("[h]:2222 presented (SHA256:O1xN7) does not match"),
            "{m}"
        );

        let bad_key =
            format!("Load key \"/data/git/secrets/x/identity\": invalid format\r\n{refused}");
        let Some(GitFailure::Unauthorized(m)) = classify_ssh(&bad_key, what, true, None) else {
            panic!()
        };
        assert!(m.contains("not a usable OpenSSH private key"), "{m}");
        assert!(
            m.contains("(invalid format)") && !m.contains("/data/git"),
            "{m}"
        );

        let missing = format!("fatal: '/o/r.git' does not appear to be a git repository\n{ADVICE}");
        assert_eq!(classify_ssh(&missing, what, true, None), None);
        assert_eq!(
            classify(&missing, what),
            GitFailure::NotFound(format!(
                "{what}: fatal: '/o/r.git' does not appear to be a git repository"
            ))
        );
    }

    #[test]
    fn key_files_and_paths_survive_the_shell_and_ssh() {
        assert_eq!(shell_quote("/a b/it's"), "'/a b/it'\\''s'");
        assert_eq!(
            normalized_key(b"-----BEGIN\r\nx\r\n-----END"),
            b"-----BEGIN\nx\n-----END\n"
        );
        assert_eq!(normalized_key(b"k\n\n"), b"k\n");
    }

    fn cache(name: &str, limits: GitLimits) -> (PathBuf, GitCache) {
        let root =
            std::env::temp_dir().join(format!("promoter-gitcache-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let cache = GitCache::new(root.clone(), limits).unwrap();
        (root, cache)
    }

    #[test]
    fn working_copies_live_in_a_private_directory_and_old_ones_are_evicted() {
        use std::os::unix::fs::PermissionsExt;
        let (root, cache) = cache(
            "evict",
            GitLimits {
                max_copies: 2,
                max_idle: Duration::from_secs(3600),
                ..GitLimits::default()
            },
        );
        let mode = std::fs::metadata(&root).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let now = SystemTime::now();
        let copy = |key: &str, age_secs: u64| {
            let dir = root.join("repos").join(key);
            std::fs::create_dir_all(dir.join(".git")).unwrap();
            std::fs::File::open(&dir)
                .unwrap()
                .set_modified(now - Duration::from_secs(age_secs))
                .unwrap();
        };
        copy("newest", 0);
        copy("recent", 60);
        copy("third", 120);
        copy("stale", 7200);
        copy("busy", 7200);
        let busy = cache.lock("busy");
        let _held = busy.try_lock().unwrap();
        cache.evict();
        let mut left: Vec<String> = std::fs::read_dir(root.join("repos"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["busy", "newest", "recent"],
            "one in use is never removed"
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[tokio::test]
    async fn a_remote_that_never_answers_is_stopped_at_the_time_limit() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts and keeps every connection open without a word.
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                held.push(sock);
            }
        });
        let (root, cache) = cache(
            "stall",
            GitLimits {
                timeout: Duration::from_secs(1),
                ..GitLimits::default()
            },
        );
        let url = format!("http://{addr}/org/config.git");
        let remote = GitRemote {
            url: url.clone(),
            auth: GitAuth::None,
            ca: None,
        };
        let started = std::time::Instant::now();
        let Err(failure) = GitRepo::open(&cache, &[remote], &url, "main", true).await else {
            panic!("a silent remote cannot be cloned")
        };
        assert!(matches!(failure, GitFailure::TimedOut { .. }), "{failure}");
        assert!(failure.to_string().contains("--git-timeout"), "{failure}");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(
            !root.join("repos").exists()
                || std::fs::read_dir(root.join("repos"))
                    .unwrap()
                    .next()
                    .is_none(),
            "nothing left behind"
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn branch_names_that_git_options_could_hide_in_are_refused() {
        assert!(valid_branch("promotion-flux-system-podinfo-prod").is_ok());
        for bad in ["", "-f", "a..b", "x.lock", "a b", "a/"] {
            assert!(valid_branch(bad).is_err(), "{bad}");
        }
    }
}
