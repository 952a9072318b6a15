//! Who is calling the admin listener, and what they may read.
//!
//! Threat model: the admin listener is internal, but "internal" is a network boundary
//! that tenants share: a pod of team A can reach the Service, a laptop on the office
//! network can reach a local-mode server bound to 0.0.0.0. Promotions name pipelines,
//! versions, pull requests and errors of every tenant; none of that is for whoever can
//! open a connection. So everything on the admin listener except `/healthz`, `/readyz`
//! and `/metrics` (probes and Prometheus, which carry no tenant data beyond counters)
//! passes [`authenticate`] first, and each handler then asks [`Authenticated::may`]
//! about the namespace of what it is about to show.
//!
//! Three schemes, one per way Promoter runs, chosen at start (never per request):
//! 1. Kubernetes mode: `Authorization: Bearer <token>`, checked with a TokenReview
//!    (authentication.k8s.io/v1); each read checked with a SubjectAccessReview
//!    (authorization.k8s.io/v1) for the verb on `promotions.promoter.dev` in the
//!    namespace of what is read, as kube-rbac-proxy does. Reviews are cached for
//!    [`REVIEW_TTL`] (keyed by the token's SHA-256, and by user + groups + namespace +
//!    verb), so a revoked grant stops working within seconds and a listing of many
//!    namespaces costs one review per namespace, not per promotion.
//! 2. Local mode with `--admin-token-file`: the same bearer header, compared in constant
//!    time (SHA-256 of both sides, so the length does not leak either) with the file's
//!    content, re-read when the file changes. The token holder may read everything: local
//!    mode has one operator.
//! 3. Local mode without a token file: callers whose connection comes from a loopback
//!    address only (the peer address of the TCP connection, never a header), as the
//!    start-up log says.
//!
//! Answers: no or unaccepted token → 401 with `WWW-Authenticate: Bearer`; a caller who
//! may not do what they asked → 403 naming the verb, resource and namespace; the API
//! server unreachable → 503. Never data in a refusal.
//!
//! [`Caller`] is the one answer to "who is this", recorded in the request's span. Write
//! operations to come (manual promotions, retries, a dashboard) take the same
//! [`Authenticated`] extractor and ask `may` with their own [`Verb`] (create, update), so
//! there is one scheme for the CLI, the dashboard and every route.

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::hash::Hash;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tracing::Instrument;

/// How long a TokenReview or SubjectAccessReview answer is reused.
pub const REVIEW_TTL: Duration = Duration::from_secs(10);
/// Most answers kept per cache: random tokens sprayed at the listener cannot grow memory
/// past this (expired answers go first, then everything).
const MAX_CACHED: usize = 4096;
/// Shortest token accepted from `--admin-token-file`: 128 bits as hex.
pub const MIN_TOKEN_LEN: usize = 32;
/// The API group and resource every admin read is about.
pub const GROUP: &str = "promoter.dev";
pub const RESOURCE: &str = "promotions";

/// Who is calling, as the admin listener established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Local mode: presented the token of `--admin-token-file`.
    Token,
    /// Kubernetes mode: a user (or service account) the API server vouched for.
    KubernetesUser { name: String, groups: Vec<String> },
    /// Local mode without a token file: a connection from a loopback address.
    Loopback,
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Token => f.write_str("holder of the admin token"),
            Caller::KubernetesUser { name, .. } => write!(f, "user {name}"),
            Caller::Loopback => f.write_str("loopback caller"),
        }
    }
}

/// What a caller asks to do to promotions in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Get,
    List,
    /// Ask for a promotion (`promoter promote`).
    Create,
    /// Change one: approve, retry, reject, abort.
    Patch,
    /// Suspend or resume a Pipeline: `patch` on `pipelines.pipelines.weave.works` (the
    /// field the controller then sets), besides `patch` on promotions.
    PatchPipelines,
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Verb {
    /// (API group, resource) the verb is about.
    pub fn resource(self) -> (&'static str, &'static str) {
        match self {
            Verb::PatchPipelines => ("pipelines.weave.works", "pipelines"),
            _ => (GROUP, RESOURCE),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Create => "create",
            Verb::Patch | Verb::PatchPipelines => "patch",
        }
    }
}

/// Why a request was not answered.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("a bearer token is required (Authorization: Bearer <token>): {0}")]
    NoToken(&'static str),
    #[error("the bearer token was not accepted")]
    TokenNotAccepted,
    #[error(
        "the admin API answers loopback callers only: this server was started without \
         --admin-token-file"
    )]
    NotLoopback,
    /// A loopback connection whose Host header names something else: a web page whose
    /// name was rebound to 127.0.0.1 (DNS rebinding) calling from the operator's browser.
    #[error(
        "the admin API answers loopback callers only, and this request's Host header names \
         {0:?}, not a loopback address or localhost"
    )]
    ForeignHost(String),
    #[error(
        "{caller} may not {verb} {}.{} in namespace {namespace}",
        verb.resource().1,
        verb.resource().0
    )]
    Forbidden {
        caller: String,
        verb: Verb,
        namespace: String,
    },
    #[error("cannot check the caller with the Kubernetes API: {0}")]
    Unavailable(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let reason = self.to_string();
        match self {
            Refusal::NoToken(_) | Refusal::TokenNotAccepted => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                axum::Json(json!({"reason": reason})),
            )
                .into_response(),
            Refusal::NotLoopback | Refusal::ForeignHost(_) => {
                (StatusCode::FORBIDDEN, axum::Json(json!({"reason": reason}))).into_response()
            }
            Refusal::Forbidden {
                verb, namespace, ..
            } => (
                StatusCode::FORBIDDEN,
                axum::Json(json!({
                    "reason": reason, "verb": verb.as_str(), "group": verb.resource().0,
                    "resource": verb.resource().1, "namespace": namespace,
                })),
            )
                .into_response(),
            // The detail (what the API server said) goes to the log only: it is about
            // Promoter's own service account, not for an unauthenticated caller.
            Refusal::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({
                    "reason": "cannot check the caller with the Kubernetes API now; \
                               the server's log says why"
                })),
            )
                .into_response(),
        }
    }
}

/// A problem with the admin settings, found at start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("--admin-token-file {path}: cannot read it: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "--admin-token-file {path}: the token has {len} characters; use at least \
         {MIN_TOKEN_LEN} random ones, e.g. `openssl rand -hex 32 > {path}`"
    )]
    TooShort { path: PathBuf, len: usize },
}

/// The scheme this server checks callers with; cheap to clone.
#[derive(Clone)]
pub struct Auth(Arc<Scheme>);

enum Scheme {
    Loopback,
    TokenFile(TokenFile),
    Kubernetes(Kubernetes),
}

impl Auth {
    /// Local mode without a token file.
    pub fn loopback_only() -> Auth {
        Auth(Arc::new(Scheme::Loopback))
    }

    /// Local mode with `--admin-token-file`: read now, so a bad file stops the start.
    pub fn token_file(path: &Path) -> Result<Auth, SetupError> {
        let file = TokenFile::open(path)?;
        Ok(Auth(Arc::new(Scheme::TokenFile(file))))
    }

    /// Kubernetes mode: reviews through `client` (Promoter's own service account).
    pub fn kubernetes(client: kube::Client) -> Auth {
        Auth(Arc::new(Scheme::Kubernetes(Kubernetes {
            client,
            identities: Expiring::default(),
            decisions: Expiring::default(),
        })))
    }

    /// For the start-up log: who the admin API answers.
    pub fn describe(&self) -> String {
        match &*self.0 {
            Scheme::Loopback => "no --admin-token-file: the admin API answers loopback callers \
                                 only (127.0.0.1, ::1); /healthz, /readyz and /metrics are open"
                .into(),
            Scheme::TokenFile(f) => format!(
                "the admin API wants the bearer token of {} (re-read when it changes); \
                 /healthz, /readyz and /metrics are open",
                f.path.display()
            ),
            Scheme::Kubernetes(_) => format!(
                "the admin API wants a Kubernetes bearer token (TokenReview) and get/list on \
                 {RESOURCE}.{GROUP} in the namespace read (SubjectAccessReview); /healthz, \
                 /readyz and /metrics are open"
            ),
        }
    }

    /// Who is calling: from the `Authorization` header, or the connection's peer address.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        peer: Option<SocketAddr>,
    ) -> Result<Caller, Refusal> {
        match &*self.0 {
            Scheme::Loopback => match peer {
                Some(peer) if is_loopback(peer) => match foreign_host(headers) {
                    None => Ok(Caller::Loopback),
                    Some(host) => Err(Refusal::ForeignHost(host)),
                },
                _ => Err(Refusal::NotLoopback),
            },
            Scheme::TokenFile(file) => {
                let token = bearer(headers)?;
                if file.matches(token) {
                    Ok(Caller::Token)
                } else {
                    Err(Refusal::TokenNotAccepted)
                }
            }
            Scheme::Kubernetes(k) => k.review_token(bearer(headers)?).await,
        }
    }

    /// Whether `caller` may `verb` promotions in `namespace`.
    pub async fn may(&self, caller: &Caller, verb: Verb, namespace: &str) -> Result<bool, Refusal> {
        match (caller, &*self.0) {
            // Local mode has one operator: the token holder, or whoever is on the machine.
            (Caller::Token | Caller::Loopback, Scheme::Loopback | Scheme::TokenFile(_)) => Ok(true),
            (Caller::KubernetesUser { name, groups }, Scheme::Kubernetes(k)) => {
                k.review_access(name, groups, verb, namespace).await
            }
            // A caller of one scheme is never judged by another's rules.
            _ => Ok(false),
        }
    }
}

/// The peer-address rule of local mode without a token file: loopback, IPv4 or IPv6,
/// also when an IPv4 peer reaches a dual-stack socket as `::ffff:127.0.0.1`.
pub fn is_loopback(peer: SocketAddr) -> bool {
    peer.ip().to_canonical().is_loopback()
}

/// The Host header, when it names anything but a loopback address or `localhost`: a
/// browser sends the name of the page's origin, so a page on a name rebound to 127.0.0.1
/// is told apart from a local client (curl, the CLI, a probe).
fn foreign_host(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?;
    let Ok(text) = host.to_str() else {
        return Some(String::from_utf8_lossy(host.as_bytes()).into_owned());
    };
    let name = match text.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => text,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    let loopback = name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback());
    (!loopback).then(|| text.to_string())
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Result<&str, Refusal> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(Refusal::NoToken("no Authorization header"))?;
    let value = value
        .to_str()
        .map_err(|_| Refusal::NoToken("the Authorization header is not text"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(Refusal::NoToken("the Authorization header is not Bearer"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Refusal::NoToken("the Authorization header is not Bearer"));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(Refusal::NoToken("the bearer token is empty"));
    }
    Ok(token)
}

/// A caller established by [`authenticate`]; handlers take it as an extractor.
#[derive(Clone)]
pub struct Authenticated {
    pub caller: Caller,
    auth: Auth,
}

impl Authenticated {
    /// Whether the caller may `verb` promotions in `namespace`.
    pub async fn may(&self, verb: Verb, namespace: &str) -> Result<bool, Refusal> {
        self.auth.may(&self.caller, verb, namespace).await
    }

    /// Like [`may`](Self::may), a refusal naming what is missing when not.
    pub async fn require(&self, verb: Verb, namespace: &str) -> Result<(), Refusal> {
        if self.may(verb, namespace).await? {
            return Ok(());
        }
        Err(Refusal::Forbidden {
            caller: self.caller.to_string(),
            verb,
            namespace: namespace.to_string(),
        })
    }

    /// The namespaces among `namespaces` where the caller may `verb` promotions (one
    /// review per namespace, at most a few at once).
    pub async fn allowed_in(
        &self,
        verb: Verb,
        namespaces: BTreeSet<String>,
    ) -> Result<BTreeSet<String>, Refusal> {
        use futures_util::{StreamExt, TryStreamExt};
        let answers: Vec<(String, bool)> = futures_util::stream::iter(namespaces)
            .map(|ns| async move {
                let ok = self.may(verb, &ns).await?;
                Ok::<_, Refusal>((ns, ok))
            })
            .buffer_unordered(8)
            .try_collect()
            .await?;
        Ok(answers
            .into_iter()
            .filter_map(|(ns, ok)| ok.then_some(ns))
            .collect())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Authenticated>()
            .cloned()
            .ok_or_else(|| {
                // A route outside the authenticating layer: a programming error, refused.
                tracing::error!(
                    "admin route {} is not behind the auth layer",
                    parts.uri.path()
                );
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            })
    }
}

/// The layer in front of every admin route but health and metrics: establishes the
/// [`Caller`], records it in the request's span, refuses with 401/403/503.
pub async fn authenticate(State(auth): State<Auth>, mut request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| *peer);
    let span = tracing::info_span!(
        "admin",
        method = %request.method(),
        path = %request.uri().path(),
        peer = peer.map(tracing::field::display),
        caller = tracing::field::Empty,
    );
    match auth.authenticate(request.headers(), peer).await {
        Ok(caller) => {
            span.record("caller", tracing::field::display(&caller));
            request
                .extensions_mut()
                .insert(Authenticated { caller, auth });
            let response = next.run(request).instrument(span.clone()).await;
            // An audit line per authenticated call: who read what, and the answer (at
            // debug when it was an answer, so a polling dashboard does not flood the log).
            let status = response.status().as_u16();
            span.in_scope(|| match status {
                200..300 => tracing::debug!(status, "answered"),
                _ => tracing::info!(status, "answered"),
            });
            response
        }
        Err(refusal) => {
            span.in_scope(|| match &refusal {
                Refusal::Unavailable(_) => tracing::warn!("refused: {refusal}"),
                _ => tracing::info!("refused: {refusal}"),
            });
            refusal.into_response()
        }
    }
}

/// Answers kept for a while, a bounded number of them.
struct Expiring<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K, V> Default for Expiring<K, V> {
    fn default() -> Self {
        Expiring {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash, V: Clone> Expiring<K, V> {
    fn get(&self, key: &K, now: Instant) -> Option<V> {
        let entries = self.entries.lock().unwrap();
        let (at, value) = entries.get(key)?;
        (now.duration_since(*at) < REVIEW_TTL).then(|| value.clone())
    }

    fn put(&self, key: K, value: V, now: Instant) {
        let mut entries = self.entries.lock().unwrap();
        if entries.len() >= MAX_CACHED {
            entries.retain(|_, (at, _)| now.duration_since(*at) < REVIEW_TTL);
            if entries.len() >= MAX_CACHED {
                entries.clear();
            }
        }
        entries.insert(key, (now, value));
    }
}

/// Local mode's token file: the SHA-256 of its content, re-read when it changes.
struct TokenFile {
    path: PathBuf,
    state: Mutex<Loaded>,
}

struct Loaded {
    /// Modification time and length when last read.
    stamp: Option<(SystemTime, u64)>,
    /// `None` when the file, changed, could not be read or held too short a token:
    /// every caller is refused until it is fixed.
    digest: Option<[u8; 32]>,
}

impl TokenFile {
    fn open(path: &Path) -> Result<TokenFile, SetupError> {
        let digest = read_token(path)?;
        Ok(TokenFile {
            path: path.to_path_buf(),
            state: Mutex::new(Loaded {
                stamp: stamp(path),
                digest: Some(digest),
            }),
        })
    }

    fn matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        let mut state = self.state.lock().unwrap();
        let now = stamp(&self.path);
        if now != state.stamp {
            state.stamp = now;
            state.digest = match read_token(&self.path) {
                Ok(digest) => {
                    tracing::info!("admin token re-read from {}", self.path.display());
                    Some(digest)
                }
                Err(e) => {
                    tracing::error!("{e}; every admin caller is refused until it is fixed");
                    None
                }
            };
        }
        let Some(digest) = state.digest else {
            return false;
        };
        bool::from(sha256(presented.as_bytes()).ct_eq(&digest))
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The token in `path` (surrounding whitespace, such as `echo`'s newline, is not part of
/// it), as its SHA-256.
fn read_token(path: &Path) -> Result<[u8; 32], SetupError> {
    let text = std::fs::read(path).map_err(|source| SetupError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let token = text.trim_ascii();
    if token.len() < MIN_TOKEN_LEN {
        return Err(SetupError::TooShort {
            path: path.to_path_buf(),
            len: token.len(),
        });
    }
    Ok(sha256(token))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// Kubernetes mode: TokenReview and SubjectAccessReview, their answers cached briefly.
struct Kubernetes {
    client: kube::Client,
    /// Token digest → the user it belongs to (`None`: not authenticated).
    identities: Expiring<[u8; 32], Option<(String, Vec<String>)>>,
    /// (user, groups, namespace, verb) → allowed.
    decisions: Expiring<(String, Vec<String>, String, Verb), bool>,
}

impl Kubernetes {
    async fn review_token(&self, token: &str) -> Result<Caller, Refusal> {
        use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
        let key = sha256(token.as_bytes());
        let who = match self.identities.get(&key, Instant::now()) {
            Some(who) => who,
            None => {
                let review = TokenReview {
                    spec: TokenReviewSpec {
                        token: token.to_string(),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                let api = kube::Api::<TokenReview>::all(self.client.clone());
                let answer = api
                    .create(&kube::api::PostParams::default(), &review)
                    .await
                    .map_err(|e| Refusal::Unavailable(format!("TokenReview: {e}")))?;
                let status = answer.status.unwrap_or_default();
                let who = match (status.authenticated, status.user) {
                    (Some(true), Some(user)) => user
                        .username
                        .filter(|name| !name.is_empty())
                        .map(|name| (name, user.groups.unwrap_or_default())),
                    _ => None,
                };
                if who.is_none()
                    && let Some(error) = status.error
                {
                    tracing::debug!("TokenReview: not authenticated: {error}");
                }
                self.identities.put(key, who.clone(), Instant::now());
                who
            }
        };
        match who {
            Some((name, groups)) => Ok(Caller::KubernetesUser { name, groups }),
            None => Err(Refusal::TokenNotAccepted),
        }
    }

    async fn review_access(
        &self,
        user: &str,
        groups: &[String],
        verb: Verb,
        namespace: &str,
    ) -> Result<bool, Refusal> {
        use k8s_openapi::api::authorization::v1::{
            ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
        };
        let key = (
            user.to_string(),
            groups.to_vec(),
            namespace.to_string(),
            verb,
        );
        if let Some(allowed) = self.decisions.get(&key, Instant::now()) {
            return Ok(allowed);
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(namespace.to_string()),
                    verb: Some(verb.as_str().to_string()),
                    group: Some(verb.resource().0.to_string()),
                    resource: Some(verb.resource().1.to_string()),
                    ..Default::default()
                }),
                user: Some(user.to_string()),
                groups: Some(groups.to_vec()),
                ..Default::default()
            },
            ..Default::default()
        };
        let api = kube::Api::<SubjectAccessReview>::all(self.client.clone());
        let answer = api
            .create(&kube::api::PostParams::default(), &review)
            .await
            .map_err(|e| Refusal::Unavailable(format!("SubjectAccessReview: {e}")))?;
        let allowed = answer.status.is_some_and(|s| s.allowed);
        self.decisions.put(key, allowed, Instant::now());
        Ok(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        headers
    }

    #[test]
    fn only_loopback_peers_count_as_loopback_whatever_the_address_family() {
        for peer in [
            "127.0.0.1:40000",
            "127.9.9.9:1",
            "[::1]:2",
            "[::ffff:127.0.0.1]:3",
        ] {
            assert!(is_loopback(peer.parse().unwrap()), "{peer}");
        }
        for peer in [
            "10.0.0.7:40000",
            "192.168.1.2:1",
            "0.0.0.0:1",
            "[::]:1",
            "[fe80::1]:1",
            "[::ffff:10.0.0.7]:3",
            "[2001:db8::1]:4",
        ] {
            assert!(!is_loopback(peer.parse().unwrap()), "{peer}");
        }
    }

    #[tokio::test]
    async fn without_a_token_file_a_remote_peer_is_refused_whatever_headers_it_sends() {
        let auth = Auth::loopback_only();
        let remote: SocketAddr = "10.1.2.3:5555".parse().unwrap();
        // Headers a proxy (or the caller) sets are not the connection's peer.
        let mut spoofed = with_bearer("anything");
        spoofed.insert("x-forwarded-for", "127.0.0.1".parse().unwrap());
        spoofed.insert("x-real-ip", "127.0.0.1".parse().unwrap());
        spoofed.insert("forwarded", "for=127.0.0.1".parse().unwrap());
        spoofed.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        let got = auth.authenticate(&spoofed, Some(remote)).await;
        assert!(matches!(got, Err(Refusal::NotLoopback)), "{got:?}");
        // No peer known (not a TCP connection): not loopback either.
        let got = auth.authenticate(&HeaderMap::new(), None).await;
        assert!(matches!(got, Err(Refusal::NotLoopback)), "{got:?}");
        let local: SocketAddr = "127.0.0.1:5555".parse().unwrap();
        let got = auth.authenticate(&HeaderMap::new(), Some(local)).await;
        assert_eq!(got.unwrap(), Caller::Loopback);
    }

    #[test]
    fn a_bearer_header_is_required_in_its_usual_shape() {
        assert_eq!(bearer(&with_bearer("abc")).unwrap(), "abc");
        let mut lower = HeaderMap::new();
        lower.insert(header::AUTHORIZATION, "bearer abc".parse().unwrap());
        assert_eq!(bearer(&lower).unwrap(), "abc");
        for value in ["Basic YWxhZGRpbjpvcGVuc2VzYW1l", "Bearer ", "Bearer", "abc"] {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            assert!(bearer(&headers).is_err(), "{value:?}");
        }
        assert!(bearer(&HeaderMap::new()).is_err());
    }

    #[tokio::test]
    async fn the_token_file_is_compared_whole_and_re_read_when_it_changes() {
        let dir = std::env::temp_dir().join(format!("promoter-admin-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        let first = "0123456789abcdef0123456789abcdef";
        std::fs::write(&path, format!("{first}\n")).unwrap();
        let auth = Auth::token_file(&path).unwrap();
        let local: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let ok = auth.authenticate(&with_bearer(first), Some(local)).await;
        assert_eq!(ok.unwrap(), Caller::Token);
        for wrong in [&first[..31], "0123456789abcdef0123456789abcdeF", "x"] {
            let got = auth.authenticate(&with_bearer(wrong), Some(local)).await;
            assert!(matches!(got, Err(Refusal::TokenNotAccepted)), "{wrong}");
        }
        // Loopback is no substitute for the token once a file is configured.
        let got = auth.authenticate(&HeaderMap::new(), Some(local)).await;
        assert!(matches!(got, Err(Refusal::NoToken(_))), "{got:?}");

        let second = "fedcba9876543210fedcba9876543210-rotated";
        std::fs::write(&path, second).unwrap();
        let got = auth.authenticate(&with_bearer(first), Some(local)).await;
        assert!(
            matches!(got, Err(Refusal::TokenNotAccepted)),
            "old token after rotation"
        );
        let ok = auth.authenticate(&with_bearer(second), Some(local)).await;
        assert_eq!(ok.unwrap(), Caller::Token);

        // Emptied by mistake: nobody gets in (an empty token must never match).
        std::fs::write(&path, "").unwrap();
        let got = auth.authenticate(&with_bearer(second), Some(local)).await;
        assert!(got.is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_short_or_missing_token_file_stops_the_start_and_says_how_to_make_one() {
        let dir = std::env::temp_dir().join(format!("promoter-admin-short-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "secret\n").unwrap();
        let err = Auth::token_file(&path).err().unwrap().to_string();
        assert!(
            err.contains("at least 32") && err.contains("openssl rand"),
            "{err}"
        );
        let err = Auth::token_file(&dir.join("missing"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("cannot read"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cached_answers_expire_and_the_cache_stays_bounded() {
        let cache: Expiring<u32, bool> = Expiring::default();
        let t0 = Instant::now();
        cache.put(1, true, t0);
        assert_eq!(cache.get(&1, t0 + Duration::from_secs(9)), Some(true));
        assert_eq!(cache.get(&1, t0 + REVIEW_TTL), None);
        for i in 0..(MAX_CACHED as u32 + 10) {
            cache.put(i, false, t0);
        }
        assert!(cache.entries.lock().unwrap().len() <= MAX_CACHED);
    }

    #[test]
    fn a_forbidden_answer_names_the_verb_resource_and_namespace_and_nothing_else() {
        let refusal = Refusal::Forbidden {
            caller: "user alice".into(),
            verb: Verb::List,
            namespace: "team-b".into(),
        };
        let response = refusal.into_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let unauthenticated = Refusal::TokenNotAccepted.into_response();
        assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            unauthenticated.headers()[header::WWW_AUTHENTICATE],
            "Bearer"
        );
    }
}
