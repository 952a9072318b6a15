//! Fake forge APIs for the pull-request strategy's end-to-end tests, and the rig that runs one
//! with the real git server and the real binary.
//!
//! Each fake (`gitlab`, `gitea`, `bitbucket`, `azure`) serves the few endpoints the strategy
//! needs, checked against that forge's documentation: paths, methods, required query
//! parameters and body fields, and the credential forms the forge accepts. Anything else is
//! refused with the forge's own error shape and recorded in [`Forge::refused`], so a test
//! asserts that nothing was refused. What every fake does the same way lives here: the
//! credential check, the rate limit, the JSON body check, the request log, and turning a
//! handler's [`Refusal`] into the forge's error answer.
//!
//! Like the real forge, a fake serves git (smart HTTP, the real `git http-backend`) and its
//! API on one origin: the repository at [`Dialect::REPO_PATH`], the API under
//! [`Dialect::API_ROOT`], nothing anywhere else. So a pipeline names only the repository
//! `url` and Promoter must find the API from it, as it must for a real forge; and git must
//! authenticate the way the forge accepts ([`Dialect::GIT_CREDENTIALS`]).
#![allow(dead_code)]

pub mod azure;
pub mod bitbucket;
pub mod gitea;
pub mod github;
pub mod gitlab;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path as PathParams, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::{Json, Router};
use base64::Engine;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Write;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::support::{
    EVENTS_KEY, PASSWORD, Server, USER, deployed_in_dev, scratch, seed_repository,
};

/// The forge token the fakes accept.
pub const TOKEN: &str = "forge-pat-7f3a9c1e5b";
/// Weave's head branch for promotions of flux-system/podinfo into test.
pub const HEAD: &str = "promotion-flux-system-podinfo-test";
pub const BASE: &str = "main";

/// What a fake forge holds and saw.
pub struct Forge {
    /// The only token it accepts.
    pub token: String,
    /// `http://127.0.0.1:port`.
    pub origin: String,
    /// The repository the pull requests are about (to check that branches exist).
    pub bare: PathBuf,
    /// Where `git http-backend` finds it (under [`Dialect::REPO_PATH`]).
    pub git_root: PathBuf,
    /// Every git request: `METHOD /path STATUS`.
    pub git_log: Vec<String>,
    /// The pull requests, in the forge's own JSON, oldest first.
    pub pulls: Vec<Value>,
    /// Every request: `METHOD /path STATUS`, with when it came.
    pub log: Vec<(Instant, String)>,
    /// What the fake refused, and why.
    pub refused: Vec<String>,
    /// The next this many requests get the forge's rate-limit answer.
    pub rate_limit: usize,
}

impl Forge {
    /// The log lines, without their times.
    pub fn lines(&self) -> Vec<String> {
        self.log.iter().map(|(_, line)| line.clone()).collect()
    }

    /// True when the repository has the branch (forges refuse pull requests from or into a
    /// branch they do not have).
    pub fn has_branch(&self, branch: &str) -> bool {
        std::process::Command::new("git")
            .args(["rev-parse", "--verify", "--quiet"])
            .arg(format!("refs/heads/{branch}"))
            .current_dir(&self.bare)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .is_ok_and(|out| out.status.success())
    }

    /// The next pull request number.
    pub fn next_number(&self) -> u64 {
        self.pulls.len() as u64 + 1
    }
}

pub type Shared = Arc<Mutex<Forge>>;

/// A pull request as every forge has it, read from the forge's own JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub number: u64,
    pub open: bool,
    pub title: String,
    pub body: String,
    pub head: String,
    pub base: String,
    /// Its web page.
    pub url: String,
}

impl View {
    /// A pull request in GitHub's JSON, which Gitea's mirrors: `number`, `state`, `title`,
    /// `body`, `head.ref`, `base.ref`, `html_url`.
    pub fn of_github_json(pr: &Value) -> View {
        View {
            number: pr["number"].as_u64().unwrap(),
            open: pr["state"] == "open",
            title: pr["title"].as_str().unwrap().into(),
            body: pr["body"].as_str().unwrap_or_default().into(),
            head: pr["head"]["ref"].as_str().unwrap().into(),
            base: pr["base"]["ref"].as_str().unwrap().into(),
            url: pr["html_url"].as_str().unwrap().into(),
        }
    }
}

/// A form in which a forge accepts its token.
#[derive(Debug, Clone, Copy)]
pub enum Credential {
    /// `Name: <token>`.
    Header(&'static str),
    /// `Authorization: <Scheme> <token>` (the scheme in any case).
    Scheme(&'static str),
    /// Basic auth, any user name, the token as the password.
    Basic,
    /// Basic auth with this user name (the token's owner) and the token as the password.
    BasicAs(&'static str),
}

impl Credential {
    fn carried(self, headers: &HeaderMap, token: &str) -> bool {
        let presented = match self {
            Credential::Header(name) => header(headers, name).map(str::to_string),
            Credential::Scheme(scheme) => authorization(headers, scheme).map(str::to_string),
            Credential::Basic => basic(headers).map(|(_, password)| password),
            Credential::BasicAs(owner) => basic(headers)
                .filter(|(user, _)| user == owner)
                .map(|(_, password)| password),
        };
        presented.as_deref() == Some(token)
    }
}

/// What a create asks for, in any forge's words.
#[derive(Debug, Clone)]
pub struct NewPull {
    pub head: String,
    pub base: String,
    pub title: String,
    pub body: String,
}

/// One forge's API: how it authenticates, refuses and rate-limits, its endpoints and its
/// pull requests' JSON.
pub trait Dialect: 'static {
    /// Where the git server serves the repository: this forge's clone-URL shape.
    const REPO_PATH: &'static str;
    /// The API root below the fake's origin: what the pipeline's `apiBase` is.
    const API_ROOT: &'static str;
    /// Where this repository's pull requests are listed and created, as the strategy must
    /// address them.
    const PULLS: &'static str;
    /// The method that updates one pull request (`{PULLS}/{number}`) and its success status.
    const UPDATE: (&'static str, u16);
    /// The key of the description, in requests and pull requests alike (the title's is
    /// `title` on every forge).
    const DESCRIPTION: &'static str = "description";

    /// The forms in which the forge accepts a token.
    const CREDENTIALS: &'static [Credential];
    /// The forms in which its git over HTTPS accepts a token (the account's user name and
    /// password are always accepted).
    const GIT_CREDENTIALS: &'static [Credential] = &[Credential::Basic];

    /// The forge's error answer.
    fn error(status: StatusCode, message: &str) -> Response;
    /// The forge's answer to missing or wrong credentials.
    fn unauthorized() -> Response {
        Self::error(StatusCode::UNAUTHORIZED, "Unauthorized")
    }
    /// The forge's rate-limit answer (what a proxy in front of it sends, by default).
    fn rate_limited() -> Response {
        let mut answer = Self::error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
        answer
            .headers_mut()
            .insert("retry-after", "1".parse().unwrap());
        answer
    }
    /// The endpoints, with their full paths; one pull request's parameter is `{number}`.
    fn routes() -> Router<Shared>;
    /// Refuses a request whose path parameters (or, for some forges, query or headers) do not
    /// address this repository the way the forge requires.
    fn repository(params: &HashMap<String, String>, request: &Parts) -> Result<(), Refusal>;
    /// A new open pull request numbered `number`, in the forge's JSON.
    fn pull(forge: &Forge, number: u64, new: &NewPull) -> Value;
    /// Marks `pr` merged.
    fn mark_merged(pr: &mut Value);
    /// The forge's answer to a create while `open` is open for the same branches.
    fn already_open(open: &Value) -> Response;
    /// The forge's refusal of a pull request from or into a branch the repository lacks.
    fn no_branch(branch: &str) -> Refusal;
    /// The forge's refusal of a pull request number it does not have.
    fn no_pull(number: u64) -> Refusal;
    /// The common fields of one of this forge's pull requests.
    fn view(pr: &Value) -> View;
}

/// A request for the repository's pull requests, its path checked by [`Dialect::repository`]:
/// the path parameters and the query.
pub struct Repo<D> {
    pub params: HashMap<String, String>,
    pub query: HashMap<String, String>,
    dialect: PhantomData<D>,
}

impl<D: Dialect> FromRequestParts<Shared> for Repo<D> {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Refusal> {
        let bad = |e: &dyn std::fmt::Display| Refusal::new(StatusCode::BAD_REQUEST, e.to_string());
        let PathParams(params) =
            PathParams::<HashMap<String, String>>::from_request_parts(parts, state)
                .await
                .map_err(|e| bad(&e))?;
        let Query(query) =
            Query::<HashMap<String, String>>::try_from_uri(&parts.uri).map_err(|e| bad(&e))?;
        D::repository(&params, parts)?;
        Ok(Repo {
            params,
            query,
            dialect: PhantomData,
        })
    }
}

impl<D: Dialect> Repo<D> {
    /// The pull request number in the path.
    pub fn number(&self) -> Result<u64, Refusal> {
        self.params
            .get("number")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| Refusal::new(StatusCode::NOT_FOUND, "not a pull request number"))
    }

    /// A query parameter, or its default.
    pub fn query_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.query.get(key).map_or(default, String::as_str)
    }
}

/// The repository's pull requests at `pattern` (list, create) and one of them at
/// `{pattern}/{number}`.
pub fn routes(
    pattern: &str,
    pulls: MethodRouter<Shared>,
    one: MethodRouter<Shared>,
) -> Router<Shared> {
    Router::new()
        .route(pattern, pulls)
        .route(&format!("{pattern}/{{number}}"), one)
}

/// Opens `new` (201 with the pull request), unless the repository lacks a branch or one is
/// open for the same branches already.
pub fn open<D: Dialect>(forge: &Shared, new: &NewPull) -> Answer {
    let mut f = forge.lock().unwrap();
    for branch in [&new.head, &new.base] {
        if !f.has_branch(branch) {
            return Err(D::no_branch(branch));
        }
    }
    let same = |pr: &&Value| {
        let view = D::view(pr);
        view.open && view.head == new.head && view.base == new.base
    };
    if let Some(open) = f.pulls.iter().find(same) {
        return Ok(D::already_open(open));
    }
    let pr = D::pull(&f, f.next_number(), new);
    f.pulls.push(pr.clone());
    Ok((StatusCode::CREATED, Json(pr)).into_response())
}

/// Sets the title (unless empty) and the description that `body` carries on pull request
/// `number`, answering with it; `check` may refuse first or change more.
pub fn edit<D: Dialect>(
    forge: &Shared,
    number: u64,
    body: &Value,
    check: impl FnOnce(&mut Value) -> Result<(), Refusal>,
) -> Answer {
    let mut f = forge.lock().unwrap();
    let pr = f
        .pulls
        .iter_mut()
        .find(|pr| D::view(pr).number == number)
        .ok_or_else(|| D::no_pull(number))?;
    check(pr)?;
    if let Some(text) = body["title"].as_str().filter(|t| !t.is_empty()) {
        pr["title"] = json!(text);
    }
    if let Some(text) = body[D::DESCRIPTION].as_str() {
        pr[D::DESCRIPTION] = json!(text);
    }
    let status = StatusCode::from_u16(D::UPDATE.1).unwrap();
    Ok((status, Json(pr.clone())).into_response())
}

/// A request the fake refuses: the status and the forge's message. The gate records it and
/// answers in the forge's error shape.
#[derive(Debug)]
pub struct Refusal(pub StatusCode, pub String);

impl Refusal {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal(status, message.into())
    }
}

#[derive(Clone)]
struct Refused(String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut answer = self.0.into_response();
        answer.extensions_mut().insert(Refused(self.1));
        answer
    }
}

pub type Answer = Result<Response, Refusal>;

/// The JSON object in a request body, or the refusal the forge would give.
pub fn json_body(bytes: &Bytes) -> Result<Value, Refusal> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(value) if value.is_object() => Ok(value),
        _ => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "the body is not a JSON object",
        )),
    }
}

/// `body[field]` as a string, or a refusal naming the field.
pub fn text_field<'a>(
    body: &'a Value,
    field: &str,
    status: StatusCode,
) -> Result<&'a str, Refusal> {
    body.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| Refusal::new(status, format!("{field} is missing")))
}

/// A header's value as text.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The token of `Authorization: <scheme> <token>` (scheme compared case-insensitively).
fn authorization<'a>(headers: &'a HeaderMap, scheme: &str) -> Option<&'a str> {
    let value = header(headers, "authorization")?;
    let (given, token) = value.split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then_some(token.trim())
}

/// The (user, password) of `Authorization: Basic …`.
fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let encoded = authorization(headers, "Basic")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Every request passes here: refused without the right credentials or with a body that is
/// not JSON, rate-limited when the test asked for it, else handled; a handler's [`Refusal`]
/// (or a wrong method) is recorded and answered in the forge's shape; then the request is
/// logged with the status of its answer.
async fn gate<D: Dialect>(State(forge): State<Shared>, request: Request, next: Next) -> Response {
    let what = format!("{} {}", request.method(), request.uri().path());
    if is_git(request.uri().path()) {
        return git::<D>(&forge, what, request).await;
    }
    let early = {
        let mut f = forge.lock().unwrap();
        let has_body = [Method::POST, Method::PUT, Method::PATCH].contains(request.method());
        let json = header(request.headers(), "content-type")
            .is_some_and(|t| t.starts_with("application/json"));
        if !D::CREDENTIALS
            .iter()
            .any(|c| c.carried(request.headers(), &f.token))
        {
            f.refused.push(format!("{what}: no valid credentials"));
            Some(D::unauthorized())
        } else if has_body && !json {
            f.refused
                .push(format!("{what}: Content-Type is not application/json"));
            Some(D::error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/json",
            ))
        } else if f.rate_limit > 0 {
            f.rate_limit -= 1;
            Some(D::rate_limited())
        } else {
            None
        }
    };
    let answer = match early {
        Some(answer) => answer,
        None => {
            let answer = next.run(request).await;
            let refused = answer.extensions().get::<Refused>().cloned();
            match refused {
                Some(Refused(why)) => {
                    forge.lock().unwrap().refused.push(format!("{what}: {why}"));
                    D::error(answer.status(), &why)
                }
                None if answer.status() == StatusCode::METHOD_NOT_ALLOWED => {
                    forge
                        .lock()
                        .unwrap()
                        .refused
                        .push(format!("{what}: method not allowed"));
                    D::error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
                }
                None => answer,
            }
        }
    };
    forge.lock().unwrap().log.push((
        Instant::now(),
        format!("{what} {}", answer.status().as_u16()),
    ));
    answer
}

/// A request of git's smart HTTP protocol.
fn is_git(path: &str) -> bool {
    path.ends_with("/info/refs")
        || path.ends_with("/git-upload-pack")
        || path.ends_with("/git-receive-pack")
}

/// Serves git for the repository at [`Dialect::REPO_PATH`] with `git http-backend`, to the
/// account's password or the token in a form [`Dialect::GIT_CREDENTIALS`] lists; anything
/// else is refused (and recorded) as the forge would.
async fn git<D: Dialect>(forge: &Shared, what: String, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let repo = format!("/{}", D::REPO_PATH);
    let repo = repo.trim_end_matches(".git");
    let (root, token) = {
        let f = forge.lock().unwrap();
        (f.git_root.clone(), f.token.clone())
    };
    let headers = request.headers();
    let account = basic(headers).is_some_and(|(u, p)| u == USER && p == PASSWORD);
    let refusal =
        if !(path.starts_with(&format!("{repo}/")) || path.starts_with(&format!("{repo}.git/"))) {
            Some((StatusCode::NOT_FOUND, "git: no such repository".to_string()))
        } else if !account
            && !D::GIT_CREDENTIALS
                .iter()
                .any(|c| c.carried(headers, &token))
        {
            let shown = header(headers, "authorization")
                .map_or("none", |a| a.split(' ').next().unwrap_or_default())
                .to_string();
            Some((
                StatusCode::UNAUTHORIZED,
                format!("git: credentials refused (Authorization scheme {shown})"),
            ))
        } else {
            None
        };
    if let Some((status, why)) = refusal {
        let mut f = forge.lock().unwrap();
        f.refused.push(format!("{what}: {why}"));
        f.git_log.push(format!("{what} {}", status.as_u16()));
        let mut answer = status.into_response();
        if status == StatusCode::UNAUTHORIZED {
            answer
                .headers_mut()
                .insert("www-authenticate", "Basic realm=\"git\"".parse().unwrap());
        }
        return answer;
    }
    let answer = http_backend(&root, request).await;
    forge
        .lock()
        .unwrap()
        .git_log
        .push(format!("{what} {}", answer.status().as_u16()));
    answer
}

/// Runs `git http-backend` (CGI) for one request.
async fn http_backend(root: &Path, request: Request) -> Response {
    use tokio::io::AsyncWriteExt;
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let header_text = |name: &str| header(&parts.headers, name).unwrap_or_default().to_string();
    let mut command = tokio::process::Command::new("git");
    command
        .arg("http-backend")
        .env_clear()
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or_default())
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("CONTENT_TYPE", header_text("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", USER)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", root)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    for (name, variable) in [
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "GIT_PROTOCOL"),
    ] {
        if let Some(value) = header(&parts.headers, name) {
            command.env(variable, value);
        }
    }
    let mut child = command.spawn().expect("git http-backend runs");
    let mut stdin = child.stdin.take().unwrap();
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let out = child.wait_with_output().await.unwrap().stdout;
    writer.await.unwrap();
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| (at, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|at| (at, 2)))
        .unwrap_or((out.len(), 0));
    let (head, payload) = (&out[..split.0], &out[split.0 + split.1..]);
    let mut answer = Response::new(axum::body::Body::from(payload.to_vec()));
    for line in String::from_utf8_lossy(head).lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        if key.eq_ignore_ascii_case("status") {
            let code = value.trim().split(' ').next().unwrap_or("500");
            *answer.status_mut() = StatusCode::from_bytes(code.as_bytes()).unwrap();
        } else if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(key.trim().as_bytes()),
            value.trim().parse(),
        ) {
            answer.headers_mut().append(name, value);
        }
    }
    answer
}

/// An endpoint the forge lacks, or one this fake does not serve (the strategy has no need).
async fn no_such_endpoint() -> Refusal {
    Refusal::new(StatusCode::NOT_FOUND, "no such endpoint")
}

/// Starts the fake `D` on loopback for the repository `bare`, accepting only `TOKEN`, with
/// one merged pull request from [`HEAD`] into [`BASE`] left from an earlier promotion (a
/// strategy that does not ask for open pull requests only would find and update it).
pub async fn serve<D: Dialect>(git_root: &Path, bare: &Path) -> Shared {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let mut forge = Forge {
        token: TOKEN.to_string(),
        origin,
        bare: bare.to_path_buf(),
        git_root: git_root.to_path_buf(),
        git_log: Vec::new(),
        pulls: Vec::new(),
        log: Vec::new(),
        refused: Vec::new(),
        rate_limit: 0,
    };
    let old = NewPull {
        head: HEAD.into(),
        base: BASE.into(),
        title: "Promote an old version".into(),
        body: String::new(),
    };
    let mut merged = D::pull(&forge, 1, &old);
    D::mark_merged(&mut merged);
    forge.pulls.push(merged);
    let forge: Shared = Arc::new(Mutex::new(forge));
    let app = D::routes()
        .fallback(no_such_endpoint)
        .layer(middleware::from_fn_with_state(forge.clone(), gate::<D>))
        .with_state(forge.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    forge
}

// ---- the rig: git server, fake forge, Promoter

/// A pipeline's pull-request strategy, as a test wants it.
pub struct Setup<'a> {
    /// The forge `type`; `None` has it inferred from the repository URL.
    pub forge_type: Option<&'a str>,
    /// The token in the Secret.
    pub token: &'a str,
    /// The Secret also holds the account's `username` and `password` (git then uses those);
    /// without, it holds the token alone, as most users write it.
    pub account: bool,
    /// The pull request description's template, instead of the default.
    pub body: Option<&'a str>,
}

impl<'a> Setup<'a> {
    /// The default setup with an explicit forge `type`.
    pub fn typed(forge_type: &'a str) -> Self {
        Setup {
            forge_type: Some(forge_type),
            ..Setup::default()
        }
    }
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Setup {
            forge_type: None,
            token: TOKEN,
            account: false,
            body: None,
        }
    }
}

pub struct Rig {
    /// The bare repository the fake forge serves.
    pub bare: PathBuf,
    /// Its URL on the fake forge, the pipeline's `url`.
    pub repo_url: String,
    pub forge: Shared,
    pub server: Server,
}

/// The fake `D` (prepared by `prepare`) serving the seed files under `D::REPO_PATH`, and
/// Promoter serving a pipeline dev → test whose promotions into test open pull requests on
/// it. The pipeline names the repository `url` alone: Promoter finds the API from it.
pub async fn start<D: Dialect>(
    name: &str,
    setup: Setup<'_>,
    prepare: impl FnOnce(&mut Forge),
) -> Rig {
    let root = scratch(&format!("{name}-git"));
    seed_repository(&root);
    let bare = root.join("org/config.git");
    seed(&bare);
    // The same repository where this forge's clone URLs put it.
    let alias = root.join(D::REPO_PATH);
    if alias != bare {
        std::fs::create_dir_all(alias.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&bare, &alias).unwrap();
    }
    let forge = serve::<D>(&root, &bare).await;
    prepare(&mut forge.lock().unwrap());
    let repo_url = format!("{}/{}", forge.lock().unwrap().origin, D::REPO_PATH);
    let dir = scratch(name);
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    write_pipeline(&manifests, &repo_url, &[], &setup);
    let server = Server::start(&manifests, &dir.join("data"), &[]);
    Rig {
        bare,
        repo_url,
        forge,
        server,
    }
}

/// The pipeline and its Secrets, as JSON documents (JSON is YAML); the forge Secret opts in
/// to the hosts of `repo_url` and of `also` (URLs).
pub fn write_pipeline(dir: &Path, repo_url: &str, also: &[&str], setup: &Setup<'_>) {
    let mut pull_request = json!({
        "url": repo_url, "baseBranch": BASE, "secretRef": {"name": "forge-creds"},
    });
    if let Some(forge_type) = setup.forge_type {
        pull_request["type"] = json!(forge_type);
    }
    if let Some(body) = setup.body {
        pull_request["body"] = json!(body);
    }
    let environment =
        |name: &str| json!({"name": name, "targets": [{"namespace": format!("podinfo-{name}")}]});
    let pipeline = json!({
        "apiVersion": "pipelines.weave.works/v1alpha1", "kind": "Pipeline",
        "metadata": {"name": "podinfo", "namespace": "flux-system"},
        "spec": {
            "appRef": {"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease", "name": "podinfo"},
            "environments": [environment("dev"), environment("test")],
            "promotion": {"strategy": {
                "secretRef": {"name": "podinfo-events"},
                "pull-request": pull_request,
            }},
        },
    });
    let secret = |name: &str, data: Value| {
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": "flux-system"}, "stringData": data,
        })
    };
    // The forge Secret opts in to the forge's host (repository and API alike) and `also`.
    let data = if setup.account {
        json!({"username": USER, "password": PASSWORD, "token": setup.token})
    } else {
        json!({"token": setup.token})
    };
    let mut forge_creds = secret("forge-creds", data);
    let opt_in: Value = serde_json::from_str(&format!(
        "{{{}}}",
        crate::support::allowed_hosts(&[&[repo_url][..], also].concat())
    ))
    .unwrap();
    forge_creds["metadata"]["annotations"] = opt_in;
    let events = std::str::from_utf8(EVENTS_KEY).unwrap();
    let documents = [
        pipeline,
        secret("podinfo-events", json!({"hmac-key": events})),
        forge_creds,
    ];
    let text: Vec<String> = documents.iter().map(Value::to_string).collect();
    std::fs::write(dir.join("pipeline.yaml"), text.join("\n---\n") + "\n").unwrap();
}

// ---- the configuration repository's files, before and after a promotion

/// A HelmRelease with markers for test (plain and double-quoted), for prod and for one
/// cluster of test, and unmarked versions; comments and spacing that must survive.
const RELEASE: &str = "# podinfo: only the marked values change on promotion\n\
apiVersion: helm.toolkit.fluxcd.io/v2\n\
kind: HelmRelease\n\
metadata:\n  name: podinfo   # version 6.5.3 mentioned in a comment\n\
spec:\n  chart:\n    spec:\n      chart: podinfo\n\
      version: \"6.5.3\"   # {\"$promotion\": \"flux-system:podinfo:test\"}\n\
  values:\n    image:\n\
      tag:   6.5.3 #{\"$promotion\":\"flux-system:podinfo:test\"}\n\
    prodTag: 6.5.3 # {\"$promotion\": \"flux-system:podinfo:prod\"}\n\
    euTag: 6.5.3 # {\"$promotion\": \"flux-system:podinfo:test:eu\"}\n\
    pinned: 6.5.3\n";

/// Values with CRLF line endings, a single-quoted marked value and no final newline.
const VALUES: &str = "replicas: 2\r\nimage:\r\n  tag: '6.5.3' # {\"$promotion\": \"flux-system:podinfo:test\"}\r\n  pullPolicy: IfNotPresent";

/// `apps/podinfo.yaml` (the seed of the git server), `apps/podinfo/release.yaml` and
/// `apps/podinfo/values.yml`, as they must be once test is at `version`.
pub fn promoted_files(version: &str) -> Vec<(&'static str, String)> {
    let test_marker = "{\"$promotion\": \"flux-system:podinfo:test\"}";
    vec![
        (
            "apps/podinfo.yaml",
            format!("spec:\n  chart:\n    spec:\n      version: {version} # {test_marker}\n"),
        ),
        (
            "apps/podinfo/release.yaml",
            RELEASE
                .replacen("\"6.5.3\"   #", &format!("\"{version}\"   #"), 1)
                .replacen("tag:   6.5.3 #", &format!("tag:   {version} #"), 1),
        ),
        (
            "apps/podinfo/values.yml",
            VALUES.replacen("'6.5.3'", &format!("'{version}'"), 1),
        ),
    ]
}

/// Adds the release and values files to main, byte for byte, with `git fast-import`.
fn seed(bare: &Path) {
    let mut stream = b"commit refs/heads/main\n\
        committer Seed <seed@example.invalid> 1700000000 +0000\n\
        data 18\nrelease and values\n\
        from refs/heads/main^0\n"
        .to_vec();
    for (path, text) in [
        ("apps/podinfo/release.yaml", RELEASE),
        ("apps/podinfo/values.yml", VALUES),
    ] {
        stream.extend(format!("M 100644 inline {path}\ndata {}\n", text.len()).bytes());
        stream.extend(text.bytes());
        stream.push(b'\n');
    }
    let mut import = std::process::Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(bare)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    import.stdin.take().unwrap().write_all(&stream).unwrap();
    assert!(import.wait().unwrap().success(), "git fast-import");
}

/// A file's bytes at a revision of the bare repository, exactly (no trimming).
pub fn file_at(bare: &Path, rev: &str, path: &str) -> Vec<u8> {
    let out = std::process::Command::new("git")
        .args(["cat-file", "blob", &format!("{rev}:{path}")])
        .current_dir(bare)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{rev}:{path} is not in the repository"
    );
    out.stdout
}

/// Asserts that every file on `rev` is the promoted file for `version`, byte for byte.
pub fn assert_files_at(bare: &Path, rev: &str, version: &str) {
    for (path, expected) in promoted_files(version) {
        let actual = file_at(bare, rev, path);
        assert!(
            actual == expected.as_bytes(),
            "{rev}:{path} differs from the expected promotion to {version}:\n--- expected\n{expected:?}\n--- actual\n{:?}",
            String::from_utf8_lossy(&actual)
        );
    }
}

// ---- what tests check the same way on every forge

impl Rig {
    /// The forge's pull requests, read through `D`.
    pub fn views<D: Dialect>(&self) -> Vec<View> {
        self.forge
            .lock()
            .unwrap()
            .pulls
            .iter()
            .map(D::view)
            .collect()
    }

    /// The one open pull request, asserting there is exactly one.
    pub fn the_open_one<D: Dialect>(&self) -> View {
        let open: Vec<View> = self.views::<D>().into_iter().filter(|v| v.open).collect();
        assert_eq!(open.len(), 1, "exactly one open pull request: {open:#?}");
        open.into_iter().next().unwrap()
    }

    pub fn assert_nothing_refused(&self) {
        let f = self.forge.lock().unwrap();
        assert!(
            f.refused.is_empty(),
            "the fake forge refused: {:#?}\nrequests: {:#?}\n{}",
            f.refused,
            f.lines(),
            self.server.logs()
        );
    }

    /// Neither the logs nor the promotions list hold a credential, in clear or encoded the way
    /// a header carries it.
    pub async fn assert_no_credential_leaked(&self, token: &str) {
        let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
        let secrets = [
            token.to_string(),
            PASSWORD.to_string(),
            b64(format!(":{token}")),
            b64(format!("{USER}:{token}")),
            b64(format!("{USER}:{PASSWORD}")),
        ];
        let logs = self.server.logs();
        let listing = serde_json::to_string(&self.server.promotions().await).unwrap();
        for secret in &secrets {
            assert!(
                !logs.contains(secret.as_str()),
                "a credential reached the logs"
            );
            assert!(
                !listing.contains(secret.as_str()),
                "a credential reached GET /promotions"
            );
        }
    }

    /// Flux in dev reports `version`; waits until every promotion has ended and returns them.
    pub async fn promote(&self, version: &str) -> Vec<Value> {
        let (status, text) = deployed_in_dev(&self.server, version).await;
        assert_eq!(status, 202, "{text}");
        self.settled(version).await
    }

    /// Flux in dev reports `version`; asserts that its promotion succeeds and returns it.
    pub async fn promote_successfully(&self, version: &str) -> Value {
        let all = self.promote(version).await;
        let done = promotion(&all, version).clone();
        assert_eq!(
            done["phase"],
            "succeeded",
            "{all:#?}\n{}",
            self.server.logs()
        );
        done
    }

    /// Waits until the promotion to `version` has ended (succeeded or failed).
    pub async fn settled(&self, version: &str) -> Vec<Value> {
        self.server
            .wait_for(&format!("the promotion to {version}"), |all| {
                all.iter().any(|p| {
                    p["version"] == version && (p["phase"] == "succeeded" || p["phase"] == "failed")
                })
            })
            .await
    }
}

/// The branch a full ref `refs/heads/<branch>` names.
pub fn branch_of_ref(full: &Value) -> String {
    let full = full.as_str().unwrap();
    full.strip_prefix("refs/heads/").unwrap_or(full).to_string()
}

/// The promotion to `version` in a promotions list.
pub fn promotion<'a>(all: &'a [Value], version: &str) -> &'a Value {
    all.iter()
        .find(|p| p["version"] == version)
        .unwrap_or_else(|| panic!("no promotion to {version}: {all:#?}"))
}
