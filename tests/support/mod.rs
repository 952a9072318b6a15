//! Peers for end-to-end tests: loopback HTTP receivers that record what reaches them.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Statuses (and headers) a [`Receiver`] answers next, in order.
pub type Script = Arc<Mutex<std::collections::VecDeque<(u16, Vec<(String, String)>)>>>;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A scripted "status" that resets the connection instead of answering.
pub const RESET: u16 = 0;
/// A scripted "status" that never answers (past any client's timeout).
pub const STALL: u16 = 1;
/// A scripted header that delays the answer by its value in milliseconds (not sent).
pub const DELAY_MS: &str = "delay-ms";

/// A minimal HTTP/1.1 server on 127.0.0.1 that counts connections (so a test can prove
/// that nothing connected), records requests and answers each with `status` and `body`.
pub struct Receiver {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<Mutex<Vec<Received>>>,
    /// Requests still to be held without an answer (a stalled far side).
    pub hold: Arc<AtomicUsize>,
    /// Statuses for the next requests, in order; afterwards the default status.
    pub script: Script,
}

impl Receiver {
    pub async fn start(status: u16, body: &'static str) -> Receiver {
        Receiver::start_holding(status, body, 0).await
    }

    /// Like `start`, but the first `held` requests are recorded and never answered.
    pub async fn start_holding(status: u16, body: &'static str, held: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let hold = Arc::new(AtomicUsize::new(held));
        let script: Script = Arc::default();
        let (c, r, h, sc) = (
            connections.clone(),
            requests.clone(),
            hold.clone(),
            script.clone(),
        );
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let r = r.clone();
                let h = h.clone();
                let sc = sc.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let (head_end, content_length) = loop {
                        let Ok(n) = sock.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_string();
                            let len = head
                                .lines()
                                .find_map(|l| {
                                    let (k, v) = l.split_once(':')?;
                                    k.trim()
                                        .eq_ignore_ascii_case("content-length")
                                        .then(|| v.trim().parse().ok())?
                                })
                                .unwrap_or(0usize);
                            break (end + 4, len);
                        }
                    };
                    while buf.len() < head_end + content_length {
                        let Ok(n) = sock.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let head = String::from_utf8_lossy(&buf[..head_end - 4]).to_string();
                    let mut lines = head.lines();
                    let request_line = lines.next().unwrap_or_default();
                    let mut parts = request_line.split_whitespace();
                    let method = parts.next().unwrap_or_default().to_string();
                    let path = parts.next().unwrap_or_default().to_string();
                    let headers = lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                        .collect();
                    let received = buf[head_end..].to_vec();
                    r.lock().unwrap().push(Received {
                        method,
                        path,
                        headers,
                        body: received,
                    });
                    let held = h
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    if held {
                        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                        return;
                    }
                    let (status, extra) = sc
                        .lock()
                        .unwrap()
                        .pop_front()
                        .unwrap_or((status, Vec::new()));
                    if status == RESET {
                        // An RST instead of an answer: the far side crashed mid-request.
                        let _ = sock.set_zero_linger();
                        drop(sock);
                        return;
                    }
                    if status == STALL {
                        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                        return;
                    }
                    // A scripted ("delay-ms", N): answer after N ms (a slow far side).
                    let (delay, extra): (Vec<_>, Vec<_>) =
                        extra.into_iter().partition(|(k, _)| k == DELAY_MS);
                    if let Some((_, ms)) = delay.first() {
                        let ms = ms.parse().expect("delay-ms is a number");
                        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                    }
                    let extra: String =
                        extra.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\ncontent-type: text/plain\r\n{extra}connection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(reply.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Receiver {
            addr,
            connections,
            requests,
            hold,
            script,
        }
    }

    /// The next requests get these statuses (and headers), in order.
    pub fn then_answer(&self, answers: &[(u16, &[(&str, &str)])]) {
        let mut script = self.script.lock().unwrap();
        for (status, headers) in answers {
            script.push_back((
                *status,
                headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }

    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// A promotion request as the server would build it, for `id`.
pub fn promotion_json(id: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "attempt": 1,
        "pipeline": {"namespace": "flux-system", "name": "podinfo"},
        "sourceEnvironment": "dev",
        "targetEnvironment": "test",
        "targets": [{"namespace": "podinfo-test"}],
        "app": {"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease", "name": "podinfo"},
        "version": "6.5.4",
        "config": {},
        "event": {
            "kind": "HelmRelease", "name": "podinfo", "namespace": "podinfo-dev",
            "reason": "UpgradeSucceeded", "severity": "info",
            "message": "Helm upgrade succeeded for release podinfo-dev/podinfo.v2 with chart podinfo@6.5.4",
            "timestamp": "2026-11-23T10:00:00Z", "reportingController": "helm-controller",
            "metadata": {"revision": "6.5.4"}
        }
    })
}

/// Runs `promoter serve` expecting it to refuse to start within 30 s; returns what it
/// printed. A server that starts after all (an unfixed host, say) is stopped and the test
/// fails, rather than hanging.
pub fn serve_fails(manifests: &std::path::Path, data: &std::path::Path, extra: &[&str]) -> String {
    let log = data.with_extension("refusal.log");
    if let Some(parent) = log.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_promoter"))
        .args(["serve", "--manifests"])
        .arg(manifests)
        .arg("--data-dir")
        .arg(data)
        .args([
            "--webhook-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .args(extra)
        .env_remove("POD_NAMESPACE")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    for _ in 0..300 {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success(), "serve must refuse to start");
            return std::fs::read_to_string(&log).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "serve started; it must refuse:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// A free port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every file below `dir`, recursively.
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A scratch directory, new for each call.
pub fn scratch(name: &str) -> std::path::PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "promoter-test-{}-{name}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `promoter serve` in local mode, as a child process on loopback ports.
pub struct Server {
    pub child: std::process::Child,
    pub webhook: String,
    pub admin: String,
    pub log: std::path::PathBuf,
    /// Sent as a bearer token to the admin API by [`Server::promotions`]: local mode's
    /// `--admin-token-file` content, or (Kubernetes mode) a token the fake API server
    /// knows, [`CLUSTER_ADMIN_TOKEN`] by default.
    pub admin_token: Option<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// Kubernetes mode: the token the fake API server (tests/kubernetes.rs) reviews as a
/// cluster administrator's (group system:masters), which `Server::promotions` sends.
pub const CLUSTER_ADMIN_TOKEN: &str = "cluster-admin-token-for-tests";

impl Server {
    pub fn start(manifests: &std::path::Path, data: &std::path::Path, extra: &[&str]) -> Server {
        let mut args = vec!["--manifests", manifests.to_str().unwrap()];
        args.extend(extra);
        Server::launch(data, &args, &[])
    }

    /// Like `start`, with environment variables for the server (they override the
    /// tests' defaults, e.g. [`PRIVATE_NETWORKS_OFF`]).
    pub fn start_with_env(
        manifests: &std::path::Path,
        data: &std::path::Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mut args = vec!["--manifests", manifests.to_str().unwrap()];
        args.extend(extra);
        Server::launch(data, &args, env)
    }

    /// Kubernetes mode: no --manifests; the API server is the kubeconfig's.
    pub fn start_in_cluster(
        kubeconfig: &std::path::Path,
        data: &std::path::Path,
        extra: &[&str],
    ) -> Server {
        let mut server =
            Server::launch(data, extra, &[("KUBECONFIG", kubeconfig.to_str().unwrap())]);
        server.admin_token = Some(CLUSTER_ADMIN_TOKEN.into());
        server
    }

    /// Kubernetes mode as the replica (pod) `pod`.
    pub fn start_replica(
        kubeconfig: &std::path::Path,
        data: &std::path::Path,
        pod: &str,
        extra: &[&str],
    ) -> Server {
        let env = [
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("POD_NAME", pod),
        ];
        let mut server = Server::launch(data, extra, &env);
        server.admin_token = Some(CLUSTER_ADMIN_TOKEN.into());
        server
    }

    /// Like `start`, for a server that may refuse its manifests: `Err` with its output
    /// when it exits instead of listening.
    pub fn try_start(
        manifests: &std::path::Path,
        data: &std::path::Path,
        extra: &[&str],
    ) -> Result<Server, String> {
        let mut args = vec!["--manifests", manifests.to_str().unwrap()];
        args.extend(extra);
        Server::try_launch(data, &args, &[])
    }

    fn launch(data: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Server::try_launch(data, extra, env).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_launch(
        data: &std::path::Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Server, String> {
        promoter::install_crypto_provider();
        let log = data.with_extension("log");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // A port found free can be taken (by another test's client, say) before the
        // server binds it; then it starts again on other ports.
        for _ in 0..5 {
            let (webhook_port, admin_port) = (free_port(), free_port());
            let mut args: Vec<String> = vec![
                "serve".into(),
                "--data-dir".into(),
                data.display().to_string(),
                "--webhook-addr".into(),
                format!("127.0.0.1:{webhook_port}"),
                "--admin-addr".into(),
                format!("127.0.0.1:{admin_port}"),
                "--retry-base".into(),
                "100ms".into(),
            ];
            args.extend(extra.iter().map(|s| s.to_string()));
            let logged_before = std::fs::metadata(&log).map_or(0, |m| m.len() as usize);
            let mut server = Server {
                child: Server::spawn(&args, &env, &log),
                webhook: format!("http://127.0.0.1:{webhook_port}"),
                admin: format!("http://127.0.0.1:{admin_port}"),
                log: log.clone(),
                admin_token: None,
                args,
                env: env.clone(),
            };
            match server.ready() {
                Ok(()) => return Ok(server),
                Err(_) if server.logs()[logged_before..].contains("Address already in use") => {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        panic!(
            "no free ports for the server after 5 tries:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn spawn(
        args: &[String],
        env: &[(String, String)],
        log: &std::path::Path,
    ) -> std::process::Child {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_promoter"))
            .args(args)
            .env_remove("POD_NAMESPACE")
            .env("PROMOTER_LOG", "info")
            // The peers of these tests listen on 127.0.0.1: the operator's switch for private
            // networks is on unless a test turns it off (`PRIVATE_NETWORKS_OFF`) to see the
            // refusal.
            .env("PROMOTER_BUILTIN_PRIVATE_NETWORKS", "true")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap()
    }

    fn wait_ready(&mut self) {
        if let Err(e) = self.ready() {
            panic!("{e}");
        }
    }

    /// Waits until both listeners accept connections; Err if the server exits first.
    fn ready(&mut self) -> Result<(), String> {
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("server exited with {status}:\n{}", self.logs()));
            }
            if std::net::TcpStream::connect(self.admin.trim_start_matches("http://")).is_ok()
                && std::net::TcpStream::connect(self.webhook.trim_start_matches("http://")).is_ok()
            {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("server did not start:\n{}", self.logs());
    }

    /// The `--manifests` folder the server watches.
    pub fn manifests_dir(&self) -> std::path::PathBuf {
        let at = self.args.iter().position(|a| a == "--manifests").unwrap();
        self.args[at + 1].clone().into()
    }

    /// The `--data-dir` the server was started with.
    pub fn data_dir(&self) -> std::path::PathBuf {
        let at = self.args.iter().position(|a| a == "--data-dir").unwrap();
        self.args[at + 1].clone().into()
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` (e.g. SIGTERM, as the kubelet does to stop a pod) to the server.
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, signal).unwrap();
    }

    /// Waits up to `within` for the server to exit: how long it took, and its status.
    pub fn wait_exit(
        &mut self,
        within: std::time::Duration,
    ) -> Option<(std::time::Duration, std::process::ExitStatus)> {
        let started = std::time::Instant::now();
        while started.elapsed() < within {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some((started.elapsed(), status));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        None
    }

    /// Starts again with the same ports, folders and flags.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Server::spawn(&self.args, &self.env, &self.log);
        self.wait_ready();
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every promotion, newest first: the admin API's pages, followed to the end.
    pub async fn promotions(&self) -> Vec<serde_json::Value> {
        let mut all = Vec::new();
        let mut url = format!("{}/promotions?limit=1000", self.admin);
        loop {
            let (status, body) = promoter::client::admin_get(&url, self.admin_token.as_deref())
                .await
                .unwrap();
            assert_eq!(status, 200, "GET {url}: {body}");
            all.extend(body["promotions"].as_array().unwrap().iter().cloned());
            match body["continue"].as_str() {
                Some(token) => {
                    url = format!("{}/promotions?limit=1000&continue={token}", self.admin)
                }
                None => return all,
            }
        }
    }

    /// Waits until `pred` holds for the promotions list, or panics with the logs.
    pub async fn wait_for(
        &self,
        what: &str,
        pred: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        for _ in 0..600 {
            let all = self.promotions().await;
            if pred(&all) {
                return all;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!(
            "timed out waiting for {what}: {:#?}\n{}",
            self.promotions().await,
            self.logs()
        );
    }

    /// `GET /readyz` (or `/healthz`): the status and body.
    pub async fn probe(&self, path: &str) -> (u16, String) {
        let answer = reqwest::get(format!("{}{path}", self.admin)).await.unwrap();
        (answer.status().as_u16(), answer.text().await.unwrap())
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---- local mode: a pipeline dev -> test (two targets) -> prod (manual) calling a CI receiver

use promoter::client::{FluxEventBody, post_signed};
use std::path::Path;

/// The server as an operator installs it: built-in plugins may not reach private networks.
pub const PRIVATE_NETWORKS_OFF: (&str, &str) = ("PROMOTER_BUILTIN_PRIVATE_NETWORKS", "false");

pub const EVENTS_KEY: &[u8] = b"events-key-for-tests";
pub const CI_KEY: &[u8] = b"ci-key-for-tests";
/// Signs approvals of promotions into prod (`approvalSecretRef: podinfo-approvals`); no
/// event key may equal it.
pub const APPROVAL_KEY: &[u8] = b"approval-key-for-tests";

pub fn write_manifests(dir: &Path, hook_url: &str) {
    std::fs::write(
        dir.join("pipeline.yaml"),
        format!(
            r#"apiVersion: pipelines.weave.works/v1alpha1
kind: Pipeline
metadata:
  name: podinfo
  namespace: flux-system
spec:
  appRef:
    apiVersion: helm.toolkit.fluxcd.io/v2
    kind: HelmRelease
    name: podinfo
  environments:
    - name: dev
      targets:
        - namespace: podinfo-dev
    - name: test
      targets:
        - namespace: podinfo-test
          clusterRef: {{kind: GitopsCluster, name: test-eu}}
        - namespace: podinfo-test
          clusterRef: {{kind: GitopsCluster, name: test-us}}
    - name: prod
      targets:
        - namespace: podinfo-prod
      promotion:
        manual: true
        approvalSecretRef: {{name: podinfo-approvals}}
  promotion:
    secretRef: {{name: podinfo-events}}
    webhook:
      url: {hook_url}
      secretRef: {{name: ci-hmac}}
---
apiVersion: v1
kind: Secret
metadata: {{name: podinfo-events, namespace: flux-system}}
stringData: {{hmac-key: {events}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: podinfo-approvals, namespace: flux-system}}
stringData: {{hmac-key: {approvals}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: ci-hmac, namespace: flux-system}}
data: {{hmac-key: {ci}}}
"#,
            events = std::str::from_utf8(EVENTS_KEY).unwrap(),
            approvals = std::str::from_utf8(APPROVAL_KEY).unwrap(),
            ci = base64_encode(CI_KEY),
        ),
    )
    .unwrap();
}

/// `dir/pipeline.yaml`: Pipeline flux-system/podinfo (dev → test) whose promotions into test
/// use the pull-request strategy (`type: github`) on `repo_url` with its API at `api`, its
/// event Secret, and Secret `git-creds` holding `creds` (a `stringData: {…}` or `data: {…}`
/// line), opted in to the repository's and the API's hosts.
pub fn pull_request_pipeline(dir: &Path, repo_url: &str, api: &str, creds: &str) {
    std::fs::write(
        dir.join("pipeline.yaml"),
        format!(
            r#"apiVersion: pipelines.weave.works/v1alpha1
kind: Pipeline
metadata: {{name: podinfo, namespace: flux-system}}
spec:
  appRef: {{apiVersion: helm.toolkit.fluxcd.io/v2, kind: HelmRelease, name: podinfo}}
  environments:
    - name: dev
      targets: [{{namespace: podinfo-dev}}]
    - name: test
      targets: [{{namespace: podinfo-test}}]
  promotion:
    strategy:
      secretRef: {{name: podinfo-events}}
      pull-request:
        type: github
        url: "{repo_url}"
        baseBranch: main
        apiBase: {api}
        secretRef: {{name: git-creds}}
---
apiVersion: v1
kind: Secret
metadata: {{name: podinfo-events, namespace: flux-system}}
stringData: {{hmac-key: {events}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: git-creds, namespace: flux-system, annotations: {{{hosts}}}}}
{creds}
"#,
            events = std::str::from_utf8(EVENTS_KEY).unwrap(),
            hosts = allowed_hosts(&[repo_url, api]),
        ),
    )
    .unwrap();
}

/// The annotation by which a Secret opts in to be sent to the hosts of `urls`
/// (`promoter.dev/allowed-hosts`), as `key: "value"` for a YAML or JSON mapping.
pub fn allowed_hosts(urls: &[&str]) -> String {
    use promoter::pipeline::consent::{ALLOWED_HOSTS, Endpoint};
    let mut hosts: Vec<String> = Vec::new();
    for url in urls {
        let entry = Endpoint::of_url(url)
            .unwrap_or_else(|| panic!("{url} names no host"))
            .entry();
        if !hosts.contains(&entry) {
            hosts.push(entry);
        }
    }
    format!("\"{ALLOWED_HOSTS}\": \"{}\"", hosts.join(", "))
}

/// Rewrites the pipeline so promotions into test use the plugin `name` with `{url}`.
pub fn use_custom_plugin(manifests: &std::path::Path, name: &str, url: &str) {
    let text = std::fs::read_to_string(manifests.join("pipeline.yaml")).unwrap();
    let text = text.replacen(
        "          clusterRef: {kind: GitopsCluster, name: test-us}\n",
        &format!(
            "          clusterRef: {{kind: GitopsCluster, name: test-us}}\n      promotion:\n        strategy:\n          plugin:\n            name: {name}\n            config: {{url: \"{url}\"}}\n"
        ),
        1,
    );
    std::fs::write(manifests.join("pipeline.yaml"), text).unwrap();
}

pub fn base64_encode(bytes: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub async fn start(name: &str, receiver: &Receiver, extra: &[&str]) -> Server {
    let dir = scratch(name);
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    write_manifests(&manifests, &receiver.url("/job/promote"));
    Server::start(&manifests, &dir.join("data"), extra)
}

pub fn event_url(server: &Server, env: &str) -> String {
    format!("{}/promotion/flux-system/podinfo/{env}", server.webhook)
}

pub async fn send(
    server: &Server,
    env: &str,
    event: &FluxEventBody,
    key: Option<&[u8]>,
) -> (u16, String) {
    post_signed(
        &event_url(server, env),
        serde_json::to_vec(event).unwrap(),
        key,
    )
    .await
    .unwrap()
}

/// A signed approval of `revision` into the example pipeline's prod, posted to the public
/// listener as Weave's approval webhook is (signed with `key`).
pub async fn approve_prod(server: &Server, revision: &str, key: &[u8]) -> (u16, String) {
    let approval = serde_json::to_vec(&promoter::client::ApprovalBody {
        namespace: "flux-system".into(),
        name: "podinfo".into(),
        environment: "prod".into(),
        revision: revision.into(),
        timestamp: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    })
    .unwrap();
    let url = format!(
        "{}/approval/flux-system/podinfo/prod/{revision}",
        server.webhook
    );
    post_signed(&url, approval, Some(key)).await.unwrap()
}

// ---- a real git server: git http-backend behind basic auth, on loopback

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub const USER: &str = "promoter-bot";
pub const PASSWORD: &str = "s3cret-git-password";

pub struct GitServer {
    child: Child,
    pub root: PathBuf,
    pub url: String,
}

impl Drop for GitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A bare repository `org/config.git` with `apps/podinfo.yaml` on main, served over HTTP.
pub fn git_server(name: &str) -> GitServer {
    let root = scratch(name);
    seed_repository(&root);
    let mut child = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/support/git_http.py"
        ))
        .arg(&root)
        .args([USER, PASSWORD])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs the test git server");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().expect("the git server prints its port");
    GitServer {
        child,
        url: format!("http://127.0.0.1:{port}/org/config.git"),
        root,
    }
}

/// `root/org/config.git`, a bare repository with `apps/podinfo.yaml` (one marker) on main.
pub fn seed_repository(root: &Path) {
    let seed = root.join("seed");
    std::fs::create_dir_all(seed.join("apps")).unwrap();
    std::fs::write(
        seed.join("apps/podinfo.yaml"),
        "spec:\n  chart:\n    spec:\n      version: 6.5.3 # {\"$promotion\": \"flux-system:podinfo:test\"}\n",
    )
    .unwrap();
    git(&seed, &["init", "--quiet", "--initial-branch=main"]);
    git(&seed, &["add", "."]);
    git(
        &seed,
        &[
            "-c",
            "user.name=Seed",
            "-c",
            "user.email=seed@example.invalid",
            "commit",
            "--quiet",
            "-m",
            "seed",
        ],
    );
    std::fs::create_dir_all(root.join("org")).unwrap();
    git(
        &root.join("org"),
        &[
            "init",
            "--quiet",
            "--bare",
            "--initial-branch=main",
            "config.git",
        ],
    );
    git(
        &seed,
        &[
            "push",
            "--quiet",
            root.join("org/config.git").to_str().unwrap(),
            "main",
        ],
    );
}

/// The same repository served over SSH by a real OpenSSH `sshd` on loopback, as a forge
/// does: key authentication only, and a forced command that serves only git's two
/// transport commands with forge-style paths (`ssh://user@host:port/org/config.git`).
pub struct SshGitServer {
    child: Child,
    pub root: PathBuf,
    pub url: String,
    /// The client's private key (OpenSSH format): what goes in the Secret's `identity`.
    pub identity: String,
    /// `[127.0.0.1]:port ssh-ed25519 …`: what goes in the Secret's `known_hosts`.
    pub known_hosts: String,
    /// A known_hosts line for the same address but another server's key.
    pub wrong_known_hosts: String,
    /// A private key the server does not authorize.
    pub stranger_identity: String,
}

impl Drop for SshGitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) -> (String, String) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "promoter-test", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen (openssh-client) is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        std::fs::read_to_string(path).unwrap(),
        std::fs::read_to_string(path.with_extension("pub")).unwrap(),
    )
}

pub fn ssh_git_server(name: &str) -> SshGitServer {
    use std::os::unix::fs::PermissionsExt;
    let root = scratch(name);
    seed_repository(&root);
    let (_, host_pub) = keygen(&root.join("host_key"));
    let (_, other_pub) = keygen(&root.join("other_host_key"));
    let (identity, client_pub) = keygen(&root.join("client_key"));
    let (stranger_identity, _) = keygen(&root.join("stranger_key"));
    std::fs::write(root.join("authorized_keys"), &client_pub).unwrap();
    let shell = root.join("git-serve.sh");
    std::fs::write(
        &shell,
        format!(
            "#!/bin/sh\n\
             # Only git's transport commands, with the forge-style path mapped under the root.\n\
             set -f\n\
             set -- $SSH_ORIGINAL_COMMAND\n\
             case \"$1\" in git-upload-pack|git-receive-pack) ;; *) echo \"refused: $1\" >&2; exit 1;; esac\n\
             path=$(printf '%s' \"$2\" | tr -d \"'\")\n\
             exec \"$1\" \"{}$path\"\n",
            root.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&shell, std::fs::Permissions::from_mode(0o755)).unwrap();
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string();
    let port = free_port();
    let config = root.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {root}/host_key\nPidFile none\n\
             AuthorizedKeysFile {root}/authorized_keys\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nAllowUsers {user}\n\
             ForceCommand {shell}\nPermitTTY no\nAllowTcpForwarding no\nX11Forwarding no\n",
            root = root.display(),
            shell = shell.display(),
        ),
    )
    .unwrap();
    // sshd started as root wants its privilege-separation directory.
    let _ = std::fs::create_dir_all("/run/sshd");
    let child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stderr(std::fs::File::create(root.join("sshd.log")).unwrap())
        .spawn()
        .expect("/usr/sbin/sshd (openssh-server) is installed");
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let line = |public: &str| {
        let mut parts = public.split_whitespace();
        format!(
            "[127.0.0.1]:{port} {} {}\n",
            parts.next().unwrap(),
            parts.next().unwrap()
        )
    };
    SshGitServer {
        child,
        url: format!("ssh://{user}@127.0.0.1:{port}/org/config.git"),
        identity,
        known_hosts: line(&host_pub),
        wrong_known_hosts: line(&other_pub),
        stranger_identity,
        root,
    }
}

/// Flux in dev reports `podinfo` upgraded to `version`, signed with the pipeline's key.
pub async fn deployed_in_dev(server: &Server, version: &str) -> (u16, String) {
    let event =
        promoter::client::deployment_event("HelmRelease", "podinfo-dev", "podinfo", version);
    send(server, "dev", &event, Some(EVENTS_KEY)).await
}

/// Dev reports `version`; the promotion into test runs the custom plugin `fetcher`
/// (`use_custom_plugin`), which calls the receiver's /custom, and the host adds the
/// credential the operator's grant binds (token `t0ken-for-ci`).
pub async fn fetcher_promotes_with_its_credential(server: &Server, ci: &Receiver, version: &str) {
    let (code, body) = deployed_in_dev(server, version).await;
    assert_eq!(code, 202, "{body}");
    let all = server
        .wait_for("custom promotion", |all| {
            all.iter().any(|p| p["phase"] == "succeeded")
        })
        .await;
    assert_eq!(all[0]["strategy"]["plugin"], "fetcher");
    let got = ci.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/custom");
    assert_eq!(
        got[0].header("authorization"),
        Some("Bearer t0ken-for-ci"),
        "the host added the bound credential"
    );
}

/// Prometheus' own linter must accept /metrics.
pub fn check_with_promtool(metrics: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed; .ci/run installs it");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
