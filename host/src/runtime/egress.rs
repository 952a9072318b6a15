//! Outbound HTTP for plugins: what they may reach and with which credentials.
//!
//! Threat model: a plugin is third-party code, and the URLs a Pipeline names are tenant
//! input. Either may try to reach hosts that were not granted, internal services
//! (loopback, private ranges, the cloud metadata endpoint, a sidecar's admin port)
//! directly, through literal addresses, or through DNS names and redirects that lead
//! there; exfiltrate a credential to another origin or read it back from an echoing
//! server; or exhaust the host with huge bodies. The policy:
//!
//! - only origins (scheme, host, port) granted; `http://` only when the grant names an
//!   `http://` origin;
//! - who wrote the grant matters ([`GrantedBy`]): an address the *operator* wrote into a
//!   plugin's grant (a custom plugin's ConfigMap, `promoter run --allow`) is its own
//!   permission, literal internal IPs included, since the operator is trusted. The
//!   origins of a built-in strategy come from a *Pipeline* (the webhook's `url`, the
//!   pull-request `url`/`apiBase`): there a literal loopback, private, link-local or
//!   metadata address is refused like a name resolving to one, unless the operator
//!   allowed private networks for built-in strategies (`--builtin-private-networks`);
//! - names are resolved by the host and every address is checked: loopback, private,
//!   link-local (metadata), CGNAT, multicast and unspecified addresses are refused
//!   unless private networks are allowed for this grant; the connection goes to the
//!   checked address, so DNS cannot change its answer between check and connect;
//! - redirects are never followed by the host: the plugin sees the 3xx and any new
//!   request goes through this policy again;
//! - credentials are added by the host to requests for the origin they are bound to;
//!   a plugin cannot set those headers itself, and a request that carries a bound
//!   secret value to anywhere else is refused;
//! - TRACE, TRACK and CONNECT are refused for every request (TRACE echoes the request,
//!   credentials included; CONNECT would open a tunnel past this policy); answers are
//!   asked for and accepted only uncompressed, and every bound secret value (raw, its
//!   base64 forms, and the full header value as sent) is replaced by [`REDACTED`] in
//!   the response headers and body before the plugin sees them, so a server that
//!   echoes the request cannot hand a credential back;
//! - request and response bodies are size-capped and the whole exchange has a timeout.

use super::limits::Limits;
use super::secret::Secret;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Uri};
use http_body_util::{BodyExt, Full};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use wasmtime_wasi_http::{
    DEFAULT_FORBIDDEN_HEADERS, Error as HttpError, ForbiddenHeaderFilter, RequestOptions, WasiBody,
    WasiHttpHooks,
};

/// `scheme://host[:port]`, normalised (lowercase host, explicit port).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl Origin {
    pub fn parse(text: &str) -> Result<Origin, String> {
        let uri: Uri = text
            .parse()
            .map_err(|e| format!("origin {text:?} is not a URL: {e}"))?;
        Origin::of(&uri).ok_or_else(|| {
            format!("origin {text:?} must be http://host[:port] or https://host[:port]")
        })
    }

    pub fn of(uri: &Uri) -> Option<Origin> {
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "https" => 443,
            "http" => 80,
            _ => return None,
        };
        let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return None;
        }
        Some(Origin {
            host: host.to_ascii_lowercase(),
            port: uri.port_u16().unwrap_or(default_port),
            scheme,
        })
    }

    /// The host as an IP address, when it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let default = matches!(
            (self.scheme.as_str(), self.port),
            ("https", 443) | ("http", 80)
        );
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if default {
            write!(f, "{}://{}", self.scheme, host)
        } else {
            write!(f, "{}://{}:{}", self.scheme, host, self.port)
        }
    }
}

/// A header the host adds to every request bound for `origin`.
#[derive(Debug, Clone)]
pub struct Credential {
    pub origin: Origin,
    pub header: HeaderName,
    pub value: Secret,
}

/// Who wrote a grant's origins, which decides what a literal IP address in them may reach.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GrantedBy {
    /// The operator: a custom plugin's ConfigMap, `promoter run --allow`, the server's own
    /// `--events-addr`. Trusted: a literal address it wrote is its own permission.
    #[default]
    Operator,
    /// A Pipeline (tenant input): the origins of a built-in strategy, taken from the
    /// Pipeline's `url` or `apiBase`. A literal internal address is refused like a name
    /// that resolves to one, unless `private_networks` (the operator's
    /// `--builtin-private-networks`).
    Pipeline,
}

/// What the operator allows one plugin to do. Nothing by default.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    /// Origins the plugin may send HTTP requests to.
    pub origins: Vec<Origin>,
    /// Who wrote `origins`: see [`GrantedBy`].
    pub granted_by: GrantedBy,
    /// Let granted origins reach loopback or private addresses (in-cluster services, a
    /// Jenkins on the LAN): host names that resolve there and, for origins a Pipeline
    /// wrote, literal addresses. A literal address the operator granted never needs this.
    pub private_networks: bool,
    /// Headers the host adds for their origin (tokens, basic auth).
    pub credentials: Vec<Credential>,
    /// HMAC keys the plugin may sign with, by name.
    pub keys: std::collections::BTreeMap<String, Secret>,
    /// Repositories the plugin may open with the `git` capability, with their credentials.
    pub repos: Vec<super::git::GitRemote>,
}

/// Why the host refused something a plugin tried. Recorded per call so a failed
/// promotion is reported as a capability denial, not as whatever the plugin made of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub origin: Option<String>,
    pub reason: String,
}

/// Is this address one a plugin must not reach without an explicit grant?
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10, carrier-grade NAT
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24, IETF protocol assignments
                || o[0] >= 240 // reserved
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local, includes fd00:ec2::254
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64 can reach IPv4 internals
        }
    }
}

/// The per-plugin HTTP state shared by every call of that plugin.
pub(crate) struct EgressPolicy {
    pub plugin: Arc<str>,
    pub grant: Grant,
    /// `http` was requested by the plugin *and* granted by the operator.
    pub enabled: bool,
    pub limits: Limits,
}

impl EgressPolicy {
    /// The header names a plugin may not set: the defaults plus every header the
    /// host injects as a credential.
    fn forbidden(&self) -> ForbiddenHeaderFilter {
        let injected: Vec<HeaderName> = self
            .grant
            .credentials
            .iter()
            .map(|c| c.header.clone())
            .collect();
        Arc::new(move |name| DEFAULT_FORBIDDEN_HEADERS.contains(name) || injected.contains(name))
    }

    /// Checks a request before anything leaves the host.
    fn admit(&self, origin: &Option<Origin>) -> Result<Origin, Refusal> {
        let Some(origin) = origin.clone() else {
            return Err(Refusal {
                origin: None,
                reason: "request has no http(s) origin".into(),
            });
        };
        if !self.enabled {
            return Err(Refusal {
                origin: Some(origin.to_string()),
                reason: "plugin has no http capability (not requested, or not granted)".into(),
            });
        }
        if !self.grant.origins.contains(&origin) {
            let hint = if origin.scheme == "http"
                && self
                    .grant
                    .origins
                    .iter()
                    .any(|g| g.scheme == "https" && g.host == origin.host)
            {
                " (only https:// is granted for this host)"
            } else {
                ""
            };
            return Err(Refusal {
                origin: Some(origin.to_string()),
                reason: format!("origin {origin} is not granted{hint}"),
            });
        }
        Ok(origin)
    }

    /// Why an internal address is not allowed for this grant, and how to allow it.
    fn internal_refused(&self) -> &'static str {
        match self.grant.granted_by {
            GrantedBy::Operator => "not granted for this plugin (grant privateNetworks: true)",
            GrantedBy::Pipeline => {
                "a Pipeline's URLs may reach internal addresses only when the operator \
                 starts promoter with --builtin-private-networks \
                 (PROMOTER_BUILTIN_PRIVATE_NETWORKS=true)"
            }
        }
    }

    /// The addresses to connect to for a granted origin, after the address policy.
    async fn resolve(&self, origin: &Origin) -> Result<Vec<SocketAddr>, Refusal> {
        let refuse = |reason: String| Refusal {
            origin: Some(origin.to_string()),
            reason,
        };
        if let Some(ip) = origin.ip() {
            // A literal address the operator wrote into the grant is its own permission;
            // one a Pipeline wrote is tenant input and passes the address policy.
            if self.grant.granted_by == GrantedBy::Pipeline
                && !self.grant.private_networks
                && is_internal(ip)
            {
                return Err(refuse(format!(
                    "{ip} is an internal address (loopback, private, link-local or metadata); {}",
                    self.internal_refused()
                )));
            }
            return Ok(vec![SocketAddr::new(ip, origin.port)]);
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((origin.host.as_str(), origin.port))
            .await
            .map_err(|e| refuse(format!("cannot resolve {}: {e}", origin.host)))?
            .collect();
        if addrs.is_empty() {
            return Err(refuse(format!("{} resolves to no address", origin.host)));
        }
        if !self.grant.private_networks
            && let Some(bad) = addrs.iter().find(|a| is_internal(a.ip()))
        {
            return Err(refuse(format!(
                "{} resolves to internal address {} (loopback, private, link-local or metadata); {}",
                origin.host,
                bad.ip(),
                self.internal_refused()
            )));
        }
        Ok(addrs)
    }

    /// Secrets bound to other origins must not leave through this request.
    fn carries_foreign_secret(&self, origin: &Origin, parts: &[&[u8]]) -> bool {
        self.grant
            .credentials
            .iter()
            .filter(|c| &c.origin != origin)
            .map(|c| c.value.expose())
            .chain(self.grant.keys.values().map(|k| k.expose()))
            .filter(|secret| secret.len() >= 4)
            .any(|secret| {
                parts
                    .iter()
                    .any(|p| p.windows(secret.len()).any(|w| w == secret))
            })
    }
}

/// What a bound secret is replaced with in answers the plugin reads.
pub const REDACTED: &str = "[redacted by promoter]";

/// Methods no plugin request may use: TRACE (and IIS's TRACK) echo the request, bound
/// credentials included, back in the answer; CONNECT asks for a tunnel past this policy.
fn refused_method(method: &http::Method) -> Option<&'static str> {
    match method.as_str().to_ascii_uppercase().as_str() {
        "TRACE" | "TRACK" => Some("it echoes the request, credentials included, back"),
        "CONNECT" => Some("a tunnel would bypass the egress policy"),
        _ => None,
    }
}

impl EgressPolicy {
    /// Every bound secret value in the forms a server may echo back: each credential's
    /// full header value as sent, the token after its scheme (`Bearer x` -> `x`), the
    /// user:password inside a `Basic` value and its password, every signing key; each raw,
    /// in standard and URL-safe base64, and JSON-escaped. Longest first.
    fn secret_forms(&self) -> Vec<Vec<u8>> {
        use base64::Engine as _;
        use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
        let mut raw: Vec<Vec<u8>> = Vec::new();
        for credential in &self.grant.credentials {
            let value = credential.value.expose();
            raw.push(value.to_vec());
            if let Some(space) = value.iter().position(|b| *b == b' ') {
                let (scheme, token) = (&value[..space], value[space + 1..].trim_ascii());
                raw.push(token.to_vec());
                if scheme.eq_ignore_ascii_case(b"basic")
                    && let Ok(decoded) = STANDARD.decode(token)
                {
                    if let Some(colon) = decoded.iter().position(|b| *b == b':') {
                        raw.push(decoded[colon + 1..].to_vec());
                    }
                    raw.push(decoded);
                }
            }
        }
        raw.extend(self.grant.keys.values().map(|k| k.expose().to_vec()));
        let mut forms: Vec<Vec<u8>> = Vec::new();
        for secret in raw.into_iter().filter(|s| s.len() >= 4) {
            let encoded = [
                STANDARD_NO_PAD.encode(&secret).into_bytes(),
                URL_SAFE_NO_PAD.encode(&secret).into_bytes(),
            ];
            forms.push(secret);
            forms.extend(encoded);
        }
        let escaped: Vec<Vec<u8>> = forms
            .iter()
            .filter(|f| f.contains(&b'/'))
            .map(|f| {
                f.iter()
                    .flat_map(|b| {
                        if *b == b'/' {
                            &b"\\/"[..]
                        } else {
                            std::slice::from_ref(b)
                        }
                    })
                    .copied()
                    .collect()
            })
            .collect();
        forms.extend(escaped);
        forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        forms.dedup();
        forms
    }
}

/// `bytes` with every occurrence of each of `secrets` replaced by [`REDACTED`];
/// `None` when there was none.
fn redact(bytes: &[u8], secrets: &[Vec<u8>]) -> Option<Vec<u8>> {
    let mut out = bytes.to_vec();
    let mut changed = false;
    for secret in secrets {
        let mut at = 0;
        while let Some(found) = out[at..]
            .windows(secret.len())
            .position(|w| w == &secret[..])
        {
            let start = at + found;
            out.splice(start..start + secret.len(), REDACTED.bytes());
            at = start + REDACTED.len();
            changed = true;
        }
    }
    changed.then_some(out)
}

/// The answer's headers with bound secrets redacted; a header whose name carries one is
/// dropped. `Content-Length` is the caller's to set.
fn redact_headers(headers: &http::HeaderMap, secrets: &[Vec<u8>]) -> http::HeaderMap {
    let mut out = http::HeaderMap::new();
    for (name, value) in headers {
        if redact(name.as_str().as_bytes(), secrets).is_some() {
            continue;
        }
        let value = match redact(value.as_bytes(), secrets) {
            Some(clean) => {
                HeaderValue::from_bytes(&clean).unwrap_or(HeaderValue::from_static(REDACTED))
            }
            None => value.clone(),
        };
        out.append(name.clone(), value);
    }
    out
}

/// The wasi-http hooks of one call: the plugin's policy plus what was refused.
pub(crate) struct Egress {
    pub policy: Arc<EgressPolicy>,
    pub client: reqwest::Client,
    pub refusals: Arc<Mutex<Vec<Refusal>>>,
}

impl Egress {
    fn refuse(&self, refusal: Refusal) -> HttpError {
        tracing::warn!(
            plugin = %self.policy.plugin,
            origin = refusal.origin.as_deref().unwrap_or("-"),
            "plugin HTTP request refused: {}",
            refusal.reason
        );
        self.refusals.lock().unwrap().push(refusal);
        HttpError::HttpRequestDenied
    }
}

type SendResult = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ),
    HttpError,
>;

impl WasiHttpHooks for Egress {
    fn forbidden_header_filter(&mut self) -> ForbiddenHeaderFilter {
        self.policy.forbidden()
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let origin = Origin::of(request.uri());
        if let Some(why) = refused_method(request.method()) {
            let err = self.refuse(Refusal {
                origin: origin.as_ref().map(Origin::to_string),
                reason: format!("method {} is refused: {why}", request.method()),
            });
            return Box::new(async move { Err(err) });
        }
        let admitted = self.policy.admit(&origin);
        let origin = match admitted {
            Ok(origin) => origin,
            Err(refusal) => {
                let err = self.refuse(refusal);
                return Box::new(async move { Err(err) });
            }
        };
        let policy = self.policy.clone();
        let client = self.client.clone();
        let refusals = self.refusals.clone();
        Box::new(async move {
            let refuse = |refusal: Refusal| {
                tracing::warn!(
                    plugin = %policy.plugin,
                    origin = refusal.origin.as_deref().unwrap_or("-"),
                    "plugin HTTP request refused: {}",
                    refusal.reason
                );
                refusals.lock().unwrap().push(refusal);
                HttpError::HttpRequestDenied
            };
            let addrs = policy.resolve(&origin).await.map_err(refuse)?;

            let (parts, body) = request.into_parts();
            let limit = policy.limits.max_request_bytes;
            let body = http_body_util::Limited::new(body, limit)
                .collect()
                .await
                .map_err(|_| HttpError::HttpRequestBodySize(Some(limit as u64)))?
                .to_bytes();

            let mut headers = parts.headers;
            let header_bytes: Vec<&[u8]> = headers.values().map(|v| v.as_bytes()).collect();
            let uri_text = parts.uri.to_string();
            let mut scanned = header_bytes;
            scanned.push(uri_text.as_bytes());
            scanned.push(&body);
            if policy.carries_foreign_secret(&origin, &scanned) {
                return Err(refuse(Refusal {
                    origin: Some(origin.to_string()),
                    reason: "request carries a credential bound to another origin".into(),
                }));
            }
            for credential in policy
                .grant
                .credentials
                .iter()
                .filter(|c| c.origin == origin)
            {
                let mut value =
                    HeaderValue::from_bytes(credential.value.expose()).map_err(|_| {
                        HttpError::InternalError(Some(
                            "credential is not a valid header value".into(),
                        ))
                    })?;
                value.set_sensitive(true);
                headers.insert(credential.header.clone(), value);
            }
            headers.remove(http::header::HOST);
            // Answers are read uncompressed, so that what the plugin reads can be checked
            // for echoed credentials.
            headers.insert(
                http::header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );

            // Connect to the address we checked, never to a fresh DNS answer.
            let url =
                reqwest::Url::parse(&uri_text).map_err(|_| HttpError::HttpRequestUriInvalid)?;
            let send = client
                .request(parts.method, url)
                .headers(headers)
                .body(body)
                .send();
            let send = async {
                if origin.ip().is_none() {
                    PINNED.scope((origin.host.clone(), addrs), send).await
                } else {
                    send.await
                }
            };
            let timeout = policy.limits.http_timeout;
            let response = tokio::time::timeout(timeout, send)
                .await
                .map_err(|_| HttpError::ConnectionTimeout)?
                .map_err(|e| classify(&e))?;

            let status = response.status();
            let version = response.version();
            let headers = response.headers().clone();
            let cap = policy.limits.max_response_bytes;
            let mut response = response;
            let mut body = Vec::new();
            let read = async {
                while let Some(chunk) = response.chunk().await.map_err(|e| classify(&e))? {
                    if body.len() + chunk.len() > cap {
                        return Err(HttpError::HttpResponseBodySize(Some(cap as u64)));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(())
            };
            match tokio::time::timeout(timeout, read).await {
                Err(_) => return Err(HttpError::ConnectionReadTimeout),
                Ok(Err(HttpError::HttpResponseBodySize(size))) => {
                    tracing::warn!(plugin = %policy.plugin, origin = %origin,
                        "plugin HTTP response larger than {cap} bytes; refused");
                    refusals.lock().unwrap().push(Refusal {
                        origin: Some(origin.to_string()),
                        reason: format!("response body larger than the {cap}-byte limit"),
                    });
                    return Err(HttpError::HttpResponseBodySize(size));
                }
                Ok(other) => other?,
            }

            let encoded = headers
                .get(http::header::CONTENT_ENCODING)
                .is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"));
            if encoded {
                return Err(refuse(Refusal {
                    origin: Some(origin.to_string()),
                    reason: "the answer is compressed although only identity was accepted; \
                             it cannot be checked for echoed credentials"
                        .into(),
                }));
            }
            let secrets = policy.secret_forms();
            let mut headers = redact_headers(&headers, &secrets);
            let body = match redact(&body, &secrets) {
                Some(clean) => {
                    tracing::warn!(plugin = %policy.plugin, origin = %origin,
                        "the answer carried a bound credential back; redacted before the plugin reads it");
                    clean
                }
                None => body,
            };
            if headers.contains_key(http::header::CONTENT_LENGTH) {
                headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            }
            let mut out = http::Response::new(
                Full::new(Bytes::from(body))
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            );
            *out.status_mut() = status;
            *out.version_mut() = version;
            *out.headers_mut() = headers;
            out.headers_mut().remove(http::header::TRANSFER_ENCODING);
            let io: Box<dyn Future<Output = Result<(), HttpError>> + Send> =
                Box::new(async { Ok(()) });
            Ok((out, io))
        })
    }
}

fn classify(e: &reqwest::Error) -> HttpError {
    if e.is_timeout() {
        HttpError::ConnectionTimeout
    } else if e.is_connect() {
        HttpError::ConnectionRefused
    } else if e.is_body() || e.is_decode() {
        HttpError::HttpResponseIncomplete
    } else {
        HttpError::HttpProtocolError
    }
}

tokio::task_local! {
    /// The checked addresses for the host name of the request in flight.
    static PINNED: (String, Vec<SocketAddr>);
}

/// reqwest's resolver for plugin clients: answers only with the addresses the policy
/// checked for this request, so the connection cannot go anywhere else.
struct PinnedResolver;

impl reqwest::dns::Resolve for PinnedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let pinned = PINNED.try_with(|(host, addrs)| {
            (host.eq_ignore_ascii_case(name.as_str())).then(|| addrs.clone())
        });
        Box::pin(async move {
            match pinned {
                Ok(Some(addrs)) => Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs),
                _ => Err(format!("{} was not checked by the egress policy", name.as_str()).into()),
            }
        })
    }
}

/// One HTTP client per plugin: no proxy, no redirects, no cookies, policed DNS.
pub(crate) fn client(limits: &Limits) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(PinnedResolver))
        .connect_timeout(limits.http_timeout)
        .pool_max_idle_per_host(2)
        .build()
        .expect("building the plugin HTTP client cannot fail with these settings")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_normalise_scheme_host_and_default_port() {
        let a = Origin::parse("https://API.GitHub.com").unwrap();
        let b = Origin::parse("https://api.github.com:443/repos/x").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "https://api.github.com");
        let c = Origin::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.ip(), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(c.to_string(), "http://127.0.0.1:8080");
        assert!(Origin::parse("ftp://example.com").is_err());
        assert!(Origin::parse("example.com").is_err());
    }

    #[test]
    fn internal_addresses_include_metadata_private_and_mapped_forms() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(is_internal(internal.parse().unwrap()), "{internal}");
        }
        for public in ["1.1.1.1", "140.82.112.3", "2606:4700::1111"] {
            assert!(!is_internal(public.parse().unwrap()), "{public}");
        }
    }

    fn policy(grant: Grant) -> EgressPolicy {
        EgressPolicy {
            plugin: "test".into(),
            grant,
            enabled: true,
            limits: Limits::default(),
        }
    }

    #[test]
    fn only_granted_origins_are_admitted_and_http_needs_its_own_grant() {
        let p = policy(Grant {
            origins: vec![Origin::parse("https://ci.example.com").unwrap()],
            ..Grant::default()
        });
        assert!(
            p.admit(&Some(Origin::parse("https://ci.example.com/job").unwrap()))
                .is_ok()
        );
        let refused = p
            .admit(&Some(Origin::parse("http://ci.example.com").unwrap()))
            .unwrap_err();
        assert!(
            refused.reason.contains("only https:// is granted"),
            "{refused:?}"
        );
        let refused = p
            .admit(&Some(Origin::parse("https://evil.example.com").unwrap()))
            .unwrap_err();
        assert_eq!(refused.origin.as_deref(), Some("https://evil.example.com"));
    }

    #[test]
    fn a_plugin_without_the_http_capability_reaches_nothing() {
        let mut p = policy(Grant {
            origins: vec![Origin::parse("https://ci.example.com").unwrap()],
            ..Grant::default()
        });
        p.enabled = false;
        let refused = p
            .admit(&Some(Origin::parse("https://ci.example.com").unwrap()))
            .unwrap_err();
        assert!(refused.reason.contains("no http capability"));
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused_unless_private_networks_are_granted() {
        let origin = Origin::parse("http://localhost:9").unwrap();
        let p = policy(Grant {
            origins: vec![origin.clone()],
            ..Grant::default()
        });
        let refused = p.resolve(&origin).await.unwrap_err();
        assert!(refused.reason.contains("internal address"), "{refused:?}");
        let p = policy(Grant {
            origins: vec![origin.clone()],
            private_networks: true,
            ..Grant::default()
        });
        assert!(!p.resolve(&origin).await.unwrap().is_empty());
    }

    #[test]
    fn trace_track_and_connect_are_refused_whatever_their_case() {
        for method in ["TRACE", "trace", "TRACK", "CONNECT"] {
            let method = http::Method::from_bytes(method.as_bytes()).unwrap();
            assert!(refused_method(&method).is_some(), "{method}");
        }
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] {
            let method = http::Method::from_bytes(method.as_bytes()).unwrap();
            assert!(refused_method(&method).is_none(), "{method}");
        }
    }

    #[test]
    fn bound_secrets_are_redacted_raw_in_base64_and_as_the_header_value_sent() {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let p = policy(Grant {
            credentials: vec![
                Credential {
                    origin: Origin::parse("https://api.github.com").unwrap(),
                    header: http::header::AUTHORIZATION,
                    value: Secret::from("Bearer ghp_secret/token"),
                },
                Credential {
                    origin: Origin::parse("https://dev.azure.com").unwrap(),
                    header: http::header::AUTHORIZATION,
                    value: Secret::from(format!("Basic {}", b64(":azure-pat")).as_str()),
                },
            ],
            ..Grant::default()
        });
        let forms = p.secret_forms();
        let echoed = format!(
            "a=Bearer ghp_secret/token b=ghp_secret/token c={} d={} e=ghp_secret\\/token f=azure-pat g={}",
            b64("ghp_secret/token"),
            b64("Bearer ghp_secret/token"),
            b64(":azure-pat"),
        );
        let clean = String::from_utf8(redact(echoed.as_bytes(), &forms).unwrap()).unwrap();
        assert!(
            !clean.contains("ghp_secret") && !clean.contains("azure-pat"),
            "{clean}"
        );
        for leaked in [b64("ghp_secret/token"), b64(":azure-pat")] {
            assert!(!clean.contains(leaked.trim_end_matches('=')), "{clean}");
        }
        assert!(
            clean.starts_with(&format!("a={REDACTED} b={REDACTED}")),
            "{clean}"
        );
        assert_eq!(redact(b"nothing bound here", &forms), None);
    }

    #[tokio::test]
    async fn a_literal_internal_address_from_a_pipeline_needs_private_networks_but_the_operators_does_not()
     {
        let origin = Origin::parse("http://127.0.0.1:15000").unwrap();
        let grant = |granted_by, private_networks| Grant {
            origins: vec![origin.clone()],
            granted_by,
            private_networks,
            ..Grant::default()
        };
        let refused = policy(grant(GrantedBy::Pipeline, false))
            .resolve(&origin)
            .await
            .unwrap_err();
        assert!(
            refused.reason.contains("--builtin-private-networks"),
            "{refused:?}"
        );
        assert!(
            policy(grant(GrantedBy::Pipeline, true))
                .resolve(&origin)
                .await
                .is_ok()
        );
        assert!(
            policy(grant(GrantedBy::Operator, false))
                .resolve(&origin)
                .await
                .is_ok()
        );
    }

    #[test]
    fn a_credential_bound_to_one_origin_cannot_ride_to_another() {
        let github = Origin::parse("https://api.github.com").unwrap();
        let p = policy(Grant {
            credentials: vec![Credential {
                origin: github.clone(),
                header: http::header::AUTHORIZATION,
                value: Secret::from("Bearer ghp_secret_token"),
            }],
            ..Grant::default()
        });
        let other = Origin::parse("https://collector.example.com").unwrap();
        assert!(p.carries_foreign_secret(&other, &[b"x=Bearer ghp_secret_token"]));
        assert!(!p.carries_foreign_secret(&other, &[b"nothing to see"]));
        assert!(!p.carries_foreign_secret(&github, &[b"Bearer ghp_secret_token"]));
        let forbidden = p.forbidden();
        assert!(forbidden(&http::header::AUTHORIZATION));
        assert!(!forbidden(&HeaderName::from_static("x-custom")));
    }
}
