//! Plugins distributed as OCI artifacts: components published in the CNCF Wasm layout
//! (config `application/vnd.wasm.config.v0+json`, one `application/wasm` layer), pulled by a
//! digest-pinned reference `oci://REGISTRY/REPOSITORY[:TAG]@sha256:<hex>`.
//!
//! What a pull trusts: the pinned manifest digest, nothing else. The manifest's bytes must
//! hash to it, the layer's bytes must hash to the digest the manifest names, and a layer
//! whose declared size is above the cap (`--max-plugin-size`) is refused before a byte of
//! it is fetched. A tag in the reference is for people; it is only read to explain a
//! digest the registry does not have. Layer `urls` are never followed. Plain HTTP is used
//! for registries on loopback only.
//!
//! Manifests are read by the host itself with a bounded read ([`MAX_MANIFEST_BYTES`]): a
//! registry that declares or streams a larger one is refused, never buffered whole.
//!
//! A verified component is kept in `<data-dir>/oci/sha256/<manifest hex>.wasm`, beside its
//! manifest (`<manifest hex>.manifest.json`), so a restart needs no registry. The cache is
//! not trusted as it is: on every load the manifest must hash to the pinned digest and the
//! component to the layer digest that manifest names. A copy that does not is discarded
//! and pulled again; if the registry cannot be reached, the plugin is refused, saying so.

use crate::runtime::secret::Secret;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE, OciDescriptor};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::Digest as _;
use std::fmt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Config media type of a Wasm component artifact (CNCF TAG Runtime layout).
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// Layer media type of the component.
pub const LAYER_MEDIA_TYPE: &str = "application/wasm";
/// The older wasm-to-oci layer media type, accepted when pulling.
pub const LEGACY_LAYER_MEDIA_TYPE: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// Largest component pulled unless `--max-plugin-size` says otherwise.
pub const DEFAULT_MAX_SIZE: usize = 64 << 20;
/// Largest manifest read from a registry. A Wasm artifact's manifest is under 1 KiB; 4 MiB
/// is the limit Distribution itself puts on a manifest push.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

const EXPECTED: &str = "expected oci://REGISTRY/REPOSITORY[:TAG]@sha256:<64 hex digits>";

/// A pull or push that went wrong, with the reference it was about.
#[derive(Debug, thiserror::Error)]
#[error("{reference}: {problem}")]
pub struct Error {
    pub reference: String,
    pub problem: Problem,
}

#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("not an OCI reference ({0}); {EXPECTED}")]
    Syntax(String),
    #[error("not pinned by digest; {EXPECTED} (`promoter plugin push` prints it)")]
    NotPinned,
    #[error("a push names a tag, not a digest: oci://REGISTRY/REPOSITORY:TAG")]
    NotATag,
    #[error("manifest not found: {0} (HTTP 404)")]
    NotFound(String),
    #[error("digest mismatch: {0}")]
    DigestMismatch(String),
    #[error(
        "the component is {size} bytes, above the limit of {max} bytes (--max-plugin-size){when}"
    )]
    TooLarge {
        size: u64,
        max: usize,
        when: &'static str,
    },
    #[error("not a Wasm component artifact: {0}")]
    Layout(String),
    #[error(
        "the registry's manifest is larger than {MAX_MANIFEST_BYTES} bytes{}; refused unread",
        declared.map(|d| format!(" (it declares {d})")).unwrap_or_default()
    )]
    ManifestTooLarge { declared: Option<u64> },
    #[error(
        "the cached copy at {path} failed verification ({why}) and could not be pulled again: {pull}"
    )]
    CacheTampered {
        path: String,
        why: String,
        pull: Box<Problem>,
    },
    #[error("unauthorized at registry {registry}: {detail}")]
    Unauthorized { registry: String, detail: String },
    #[error("registry {registry}: {detail}")]
    Registry { registry: String, detail: String },
}

/// `oci://REGISTRY/REPOSITORY[:TAG][@sha256:HEX]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciRef {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    /// The pinned manifest digest's lowercase hex.
    pub digest: Option<String>,
}

impl fmt::Display for OciRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "oci://{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@sha256:{digest}")?;
        }
        Ok(())
    }
}

impl OciRef {
    pub fn parse(text: &str) -> Result<OciRef, Error> {
        let text = text.trim();
        let syntax = |why: &str| Error {
            reference: format!("{text:?}"),
            problem: Problem::Syntax(why.to_string()),
        };
        let rest = text
            .strip_prefix("oci://")
            .ok_or_else(|| syntax("it does not start with oci://"))?;
        let (name, digest) = match rest.split_once('@') {
            Some((name, digest)) => {
                let hex = digest
                    .strip_prefix("sha256:")
                    .ok_or_else(|| syntax("the digest does not start with sha256:"))?;
                if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    return Err(syntax("the digest is not 64 lowercase hex digits"));
                }
                (name, Some(hex.to_string()))
            }
            None => (rest, None),
        };
        let (registry, path) = name
            .split_once('/')
            .filter(|(r, p)| !r.is_empty() && !p.is_empty())
            .ok_or_else(|| syntax("it names no registry and repository"))?;
        if !registry
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        {
            return Err(syntax("the registry is not HOST[:PORT]"));
        }
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
            _ => (path, None),
        };
        let separator = |c: char| "._-/".contains(c);
        if repository.is_empty()
            || !repository
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || separator(c))
            || repository.starts_with(separator)
            || repository.ends_with(separator)
            || repository.contains("//")
        {
            return Err(syntax(
                "the repository must be lowercase letters, digits and . _ - / separators",
            ));
        }
        if let Some(tag) = tag
            && (tag.is_empty()
                || tag.len() > 128
                || tag.starts_with(['.', '-'])
                || !tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)))
        {
            return Err(syntax("the tag must be up to 128 letters, digits, . _ -"));
        }
        Ok(OciRef {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag: tag.map(str::to_string),
            digest,
        })
    }

    fn error(&self, problem: Problem) -> Error {
        Error {
            reference: self.to_string(),
            problem,
        }
    }

    /// 127.0.0.0/8, ::1 or localhost: the only registries spoken to over plain HTTP.
    pub fn is_loopback(&self) -> bool {
        let host = match self.registry.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or_default(),
            None => self.registry.split(':').next().unwrap_or_default(),
        };
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    fn client(&self) -> Result<Client, Error> {
        let protocol = if self.is_loopback() {
            ClientProtocol::HttpsExcept(vec![self.registry.clone()])
        } else {
            ClientProtocol::Https
        };
        Client::try_from(ClientConfig {
            protocol,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            platform_resolver: None,
            user_agent: concat!("promoter/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        })
        .map_err(|e| {
            self.error(Problem::Registry {
                registry: self.registry.clone(),
                detail: chain(&e),
            })
        })
    }

    fn scheme(&self) -> &'static str {
        if self.is_loopback() { "http" } else { "https" }
    }

    fn by_digest(&self, hex: &str) -> Reference {
        Reference::with_digest(
            self.registry.clone(),
            self.repository.clone(),
            format!("sha256:{hex}"),
        )
    }
}

/// Registry credentials (HTTP basic; the client turns them into a token where the
/// registry asks for one).
#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

impl Credentials {
    fn auth(credentials: Option<&Credentials>) -> RegistryAuth {
        match credentials {
            Some(c) => RegistryAuth::Basic(
                c.username.clone(),
                String::from_utf8_lossy(c.password.expose()).into_owned(),
            ),
            None => RegistryAuth::Anonymous,
        }
    }

    /// The credentials for `registry` in a pull secret: a `kubernetes.io/dockerconfigjson`
    /// Secret (`auths[registry]` with `auth`, or `username` and `password`), or a Secret with
    /// `username` and `password` keys.
    pub fn from_secret(
        secret: &crate::pipeline::Secret,
        registry: &str,
    ) -> Result<Credentials, String> {
        let at = format!("Secret {}/{}", secret.namespace, secret.name);
        let text = |v: &[u8]| String::from_utf8_lossy(v).trim().to_string();
        if let Some(json) = secret.get(".dockerconfigjson") {
            let config: serde_json::Value = serde_json::from_slice(json)
                .map_err(|e| format!("{at}: .dockerconfigjson is not JSON: {e}"))?;
            let auths = config["auths"]
                .as_object()
                .ok_or_else(|| format!("{at}: .dockerconfigjson has no auths"))?;
            let entry = auths
                .iter()
                .find(|(key, _)| same_registry(key, registry))
                .map(|(_, entry)| entry)
                .ok_or_else(|| {
                    let have: Vec<&str> = auths.keys().map(String::as_str).collect();
                    format!(
                        "{at}: .dockerconfigjson has no credentials for registry {registry} (has: {})",
                        have.join(", ")
                    )
                })?;
            let field = |k: &str| entry[k].as_str().filter(|v| !v.is_empty());
            if let (Some(username), Some(password)) = (field("username"), field("password")) {
                return Ok(Credentials {
                    username: username.to_string(),
                    password: Secret::from(password),
                });
            }
            let bad_auth =
                || format!("{at}: auths[{registry}].auth is not base64 of USER:PASSWORD");
            let auth = field("auth").ok_or_else(|| {
                format!("{at}: auths[{registry}] has neither auth nor username and password")
            })?;
            use base64::Engine as _;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| bad_auth())?;
            let at_colon = decoded
                .iter()
                .position(|b| *b == b':')
                .ok_or_else(bad_auth)?;
            return Ok(Credentials {
                username: text(&decoded[..at_colon]),
                password: Secret::new(&decoded[at_colon + 1..]),
            });
        }
        match (secret.get("username"), secret.get("password")) {
            (Some(username), Some(password)) => Ok(Credentials {
                username: text(username),
                password: Secret::new(password),
            }),
            _ => Err(format!(
                "{at} has neither .dockerconfigjson (type kubernetes.io/dockerconfigjson) nor username and password"
            )),
        }
    }
}

/// A dockerconfigjson `auths` key names `registry`: `ghcr.io`, `https://ghcr.io`,
/// `https://index.docker.io/v1/` for docker.io.
fn same_registry(key: &str, registry: &str) -> bool {
    let host = |s: &str| {
        let s = s.trim();
        let s = s
            .strip_prefix("https://")
            .or_else(|| s.strip_prefix("http://"))
            .unwrap_or(s);
        let s = s.split('/').next().unwrap_or_default().to_ascii_lowercase();
        match s.as_str() {
            "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
            _ => s,
        }
    };
    host(key) == host(registry)
}

/// Pulls components by digest-pinned reference, verifies them and caches them.
#[derive(Debug, Clone)]
pub struct Puller {
    /// `<data-dir>/oci`; `None`: nothing is cached.
    cache_dir: Option<PathBuf>,
    max_size: usize,
}

impl Default for Puller {
    fn default() -> Self {
        Puller::new(None, DEFAULT_MAX_SIZE)
    }
}

impl Puller {
    pub fn new(cache_dir: Option<PathBuf>, max_size: usize) -> Puller {
        Puller {
            cache_dir,
            max_size,
        }
    }

    /// Where the component and the manifest pinned by `hex` are cached.
    fn cached(&self, hex: &str) -> Option<(PathBuf, PathBuf)> {
        let dir = self.cache_dir.as_ref()?.join("sha256");
        Some((
            dir.join(format!("{hex}.wasm")),
            dir.join(format!("{hex}.manifest.json")),
        ))
    }

    /// The cached component pinned by `hex`: `Ok(None)` when there is none, `Err(why)`
    /// when there is one that does not verify against the pin.
    fn read_cached(
        &self,
        hex: &str,
        wasm: &Path,
        manifest: &Path,
    ) -> Result<Option<Vec<u8>>, String> {
        let (Ok(manifest), Ok(bytes)) = (std::fs::read(manifest), std::fs::read(wasm)) else {
            return Ok(None);
        };
        let actual = hex::encode(sha2::Sha256::digest(&manifest));
        if actual != hex {
            return Err(format!("its manifest hashes to sha256:{actual}"));
        }
        let layer = wasm_layer(&manifest).map_err(|e| format!("its manifest: {e}"))?;
        if bytes.len() > self.max_size {
            return Err(format!(
                "{} bytes, above --max-plugin-size {}",
                bytes.len(),
                self.max_size
            ));
        }
        let got = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)));
        if got != layer.digest {
            return Err(format!(
                "the component hashes to {got}, its manifest names layer {}",
                layer.digest
            ));
        }
        Ok(Some(bytes))
    }

    /// The component `reference` pins: from the cache (verified again), or pulled and
    /// verified.
    pub async fn fetch(
        &self,
        reference: &OciRef,
        credentials: Option<&Credentials>,
    ) -> Result<Vec<u8>, Error> {
        let hex = reference
            .digest
            .as_deref()
            .ok_or_else(|| reference.error(Problem::NotPinned))?;
        let cache = self.cached(hex);
        let mut tampered = None;
        if let Some((wasm, manifest)) = &cache {
            match self.read_cached(hex, wasm, manifest) {
                Ok(Some(bytes)) => {
                    tracing::debug!(%reference, "plugin component from the cache (verified)");
                    return Ok(bytes);
                }
                Ok(None) => {}
                Err(why) => {
                    tracing::warn!(%reference, path = %wasm.display(),
                        "cached plugin component fails verification ({why}); discarded, pulling again");
                    let _ = std::fs::remove_file(wasm);
                    let _ = std::fs::remove_file(manifest);
                    tampered = Some((wasm.display().to_string(), why));
                }
            }
        }
        let (manifest, bytes) = match self.pull(reference, hex, credentials).await {
            Ok(pulled) => pulled,
            Err(e) => {
                return Err(match tampered {
                    Some((path, why)) => reference.error(Problem::CacheTampered {
                        path,
                        why,
                        pull: Box::new(e.problem),
                    }),
                    None => e,
                });
            }
        };
        // The component is verified: a cache that cannot be written costs a pull at the
        // next start, not this load.
        if let Some((wasm, manifest_path)) = &cache {
            let written = crate::write_atomically(wasm, &bytes)
                .and_then(|()| crate::write_atomically(manifest_path, &manifest));
            if let Err(e) = written {
                tracing::warn!(%reference, "cannot cache the component at {}: {e}", wasm.display());
            }
        }
        tracing::info!(%reference, bytes = bytes.len(), "plugin component pulled");
        Ok(bytes)
    }

    async fn pull(
        &self,
        at: &OciRef,
        hex: &str,
        credentials: Option<&Credentials>,
    ) -> Result<(Vec<u8>, Vec<u8>), Error> {
        let client = at.client()?;
        let reference = at.by_digest(hex);
        let fail = |e| at.error(classify(e, at, credentials.is_some(), Op::Pull));
        let manifest = match get_manifest(&client, at, &reference, credentials).await {
            Ok(body) => body,
            Err(problem) => {
                let e = at.error(problem);
                return Err(match (&e.problem, &at.tag) {
                    (Problem::NotFound(_), Some(tag)) => {
                        explain_missing(&client, at, tag, credentials)
                            .await
                            .map(|p| at.error(p))
                            .unwrap_or(e)
                    }
                    _ => e,
                });
            }
        };
        let actual = hex::encode(sha2::Sha256::digest(&manifest));
        if actual != hex {
            return Err(at.error(Problem::DigestMismatch(format!(
                "the registry's manifest has sha256:{actual}"
            ))));
        }
        let layer = wasm_layer(&manifest).map_err(|e| at.error(Problem::Layout(e)))?;
        let size = u64::try_from(layer.size).unwrap_or(u64::MAX);
        if size > self.max_size as u64 {
            return Err(at.error(Problem::TooLarge {
                size,
                max: self.max_size,
                when: "; refused by the size its manifest declares, before download",
            }));
        }
        let mut out = Capped {
            bytes: Vec::with_capacity(size as usize),
            max: size as usize,
            exceeded: false,
        };
        let pulled = client.pull_blob(&reference, &layer, &mut out).await;
        let got = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&out.bytes)));
        let mismatch = || {
            at.error(Problem::DigestMismatch(format!(
                "layer {} has bytes hashing to {got}",
                layer.digest
            )))
        };
        match pulled {
            Err(_) if out.exceeded => Err(at.error(Problem::DigestMismatch(format!(
                "the registry sent more than the {size} bytes layer {} declares",
                layer.digest
            )))),
            Err(OciDistributionError::DigestError(_)) => Err(mismatch()),
            Err(e) => Err(fail(e)),
            Ok(()) if got != layer.digest => Err(mismatch()),
            Ok(()) => Ok((manifest, out.bytes)),
        }
    }
}

/// GETs the manifest `reference` names (by digest or tag) with a bounded read: refused
/// by a declared `Content-Length` above [`MAX_MANIFEST_BYTES`], cut off when the body
/// grows past it. oci-client's own manifest calls read any size into memory.
async fn get_manifest(
    client: &Client,
    at: &OciRef,
    reference: &Reference,
    credentials: Option<&Credentials>,
) -> Result<Vec<u8>, Problem> {
    let authenticated = credentials.is_some();
    let classified = |e| classify(e, at, authenticated, Op::Pull);
    let registry_problem = |e: &dyn std::error::Error| Problem::Registry {
        registry: at.registry.clone(),
        detail: chain(e),
    };
    // oci-client speaks the registry's token protocol; the manifest is ours to read.
    let token = client
        .auth(
            reference,
            &Credentials::auth(credentials),
            oci_client::RegistryOperation::Pull,
        )
        .await
        .map_err(classified)?;
    let target = reference
        .digest()
        .or(reference.tag())
        .unwrap_or("latest")
        .to_string();
    let url = format!(
        "{}://{}/v2/{}/manifests/{target}",
        at.scheme(),
        reference.resolve_registry(),
        reference.repository()
    );
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::limited(5))
        .user_agent(concat!("promoter/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| registry_problem(&e))?;
    let mut request = http.get(&url).header(
        http::header::ACCEPT,
        format!("{OCI_IMAGE_MEDIA_TYPE}, {OCI_IMAGE_INDEX_MEDIA_TYPE}"),
    );
    request = match (token, credentials) {
        (Some(token), _) => request.bearer_auth(token),
        (None, Some(c)) => request.basic_auth(
            &c.username,
            Some(String::from_utf8_lossy(c.password.expose())),
        ),
        (None, None) => request,
    };
    let mut response = request.send().await.map_err(|e| registry_problem(&e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(classified(OciDistributionError::ServerError {
            code: status.as_u16(),
            url,
            message: String::new(),
        }));
    }
    if let Some(declared) = response.content_length()
        && declared > MAX_MANIFEST_BYTES as u64
    {
        return Err(Problem::ManifestTooLarge {
            declared: Some(declared),
        });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| registry_problem(&e))? {
        if body.len() + chunk.len() > MAX_MANIFEST_BYTES {
            return Err(Problem::ManifestTooLarge { declared: None });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A pinned digest the registry does not have, for a reference that also names a tag:
/// where the tag points says whether the pin is wrong.
async fn explain_missing(
    client: &Client,
    at: &OciRef,
    tag: &str,
    credentials: Option<&Credentials>,
) -> Option<Problem> {
    let tagged = Reference::with_tag(at.registry.clone(), at.repository.clone(), tag.into());
    // The tagged manifest's own bytes say where the tag points (a registry's
    // Docker-Content-Digest header is not trusted).
    let manifest = get_manifest(client, at, &tagged, credentials).await.ok()?;
    let points_to = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&manifest)));
    let pinned = format!("sha256:{}", at.digest.as_deref()?);
    if points_to == pinned {
        return None;
    }
    Some(Problem::DigestMismatch(format!(
        "registry {} has no manifest {pinned} in {}; tag {tag} points to {points_to}. \
         Is the pinned digest wrong, or was it tampered with?",
        at.registry, at.repository,
    )))
}

/// The one component layer of a CNCF Wasm artifact manifest, as a descriptor without
/// `urls` (the registry is the only source).
fn wasm_layer(manifest: &[u8]) -> Result<OciDescriptor, String> {
    let value: serde_json::Value =
        serde_json::from_slice(manifest).map_err(|e| format!("the manifest is not JSON: {e}"))?;
    let media_type = value["mediaType"].as_str().unwrap_or(OCI_IMAGE_MEDIA_TYPE);
    if media_type != OCI_IMAGE_MEDIA_TYPE {
        return Err(format!(
            "the manifest's media type is {media_type}, expected {OCI_IMAGE_MEDIA_TYPE}"
        ));
    }
    let manifest: oci_client::manifest::OciImageManifest =
        serde_json::from_value(value).map_err(|e| format!("not an OCI image manifest: {e}"))?;
    if manifest.config.media_type != CONFIG_MEDIA_TYPE {
        return Err(format!(
            "config media type is {}, expected {CONFIG_MEDIA_TYPE}",
            manifest.config.media_type
        ));
    }
    let [layer] = manifest.layers.as_slice() else {
        return Err(format!(
            "{} layers, expected exactly one (the component)",
            manifest.layers.len()
        ));
    };
    if layer.media_type != LAYER_MEDIA_TYPE && layer.media_type != LEGACY_LAYER_MEDIA_TYPE {
        return Err(format!(
            "layer media type is {}, expected {LAYER_MEDIA_TYPE}",
            layer.media_type
        ));
    }
    let hex_ok = layer
        .digest
        .strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if !hex_ok || layer.size < 0 {
        return Err(format!(
            "layer digest {:?} or size {} is not a sha256 digest and a size",
            layer.digest, layer.size
        ));
    }
    Ok(OciDescriptor {
        media_type: layer.media_type.clone(),
        digest: layer.digest.clone(),
        size: layer.size,
        ..OciDescriptor::default()
    })
}

/// Publishes `wasm` (a component: see [`check_component`]) at `reference` (`oci://REGISTRY/REPOSITORY:TAG`) in the
/// CNCF Wasm layout. Returns the pinned reference, `…:TAG@sha256:<manifest digest>`.
pub async fn push(
    wasm: &[u8],
    reference: &OciRef,
    credentials: Option<&Credentials>,
) -> Result<OciRef, Error> {
    let (None, Some(tag)) = (&reference.digest, &reference.tag) else {
        return Err(reference.error(Problem::NotATag));
    };
    let sha256 = |b: &[u8]| format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)));
    let layer_digest = sha256(wasm);
    let config = serde_json::to_vec(&serde_json::json!({
        "created": jiff::Timestamp::now().to_string(),
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer_digest],
    }))
    .expect("JSON");
    let config_digest = sha256(&config);
    let descriptor = |media_type: &str, digest: &str, size: usize| OciDescriptor {
        media_type: media_type.into(),
        digest: digest.into(),
        size: size as i64,
        ..OciDescriptor::default()
    };
    let manifest = oci_client::manifest::OciImageManifest {
        schema_version: 2,
        media_type: Some(OCI_IMAGE_MEDIA_TYPE.into()),
        config: descriptor(CONFIG_MEDIA_TYPE, &config_digest, config.len()),
        layers: vec![descriptor(LAYER_MEDIA_TYPE, &layer_digest, wasm.len())],
        ..Default::default()
    };
    let manifest = serde_json::to_vec(&manifest).expect("JSON");
    let manifest_digest = hex::encode(sha2::Sha256::digest(&manifest));

    let client = reference.client()?;
    let target = Reference::with_tag(
        reference.registry.clone(),
        reference.repository.clone(),
        tag.clone(),
    );
    let fail = |e| reference.error(classify(e, reference, credentials.is_some(), Op::Push));
    client
        .store_auth_if_needed(target.resolve_registry(), &Credentials::auth(credentials))
        .await;
    client
        .push_blob(&target, wasm.to_vec(), &layer_digest)
        .await
        .map_err(fail)?;
    client
        .push_blob(&target, config, &config_digest)
        .await
        .map_err(fail)?;
    client
        .push_manifest_raw(
            &target,
            manifest,
            http::HeaderValue::from_static(OCI_IMAGE_MEDIA_TYPE),
        )
        .await
        .map_err(fail)?;
    Ok(OciRef {
        digest: Some(manifest_digest),
        ..reference.clone()
    })
}

/// A WebAssembly component, by its header: `\0asm`, then the component encoding's
/// version and layer (a core module has layer 0).
pub fn check_component(wasm: &[u8]) -> Result<(), String> {
    if !wasm.starts_with(b"\0asm") || wasm.len() < 8 {
        return Err("not WebAssembly (it does not start with \\0asm)".into());
    }
    if crate::runtime::is_core_module(wasm) {
        return Err(
            "a core WebAssembly module, not a component; build for wasm32-wasip2 \
             (or wrap it with `wasm-tools component new`)"
                .into(),
        );
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Op {
    Pull,
    Push,
}

fn classify(e: OciDistributionError, at: &OciRef, authenticated: bool, op: Op) -> Problem {
    let registry = at.registry.clone();
    let unauthorized = |registry: String| {
        let detail = match (op, authenticated) {
            (Op::Pull, false) => {
                "anonymous pull refused; name a Secret with the registry's \
                                  credentials in the plugin ConfigMap's data.pullSecret"
            }
            (Op::Pull, true) => "the credentials of data.pullSecret were refused",
            (Op::Push, false) => {
                "anonymous push refused; set PROMOTER_REGISTRY_USERNAME and \
                                  PROMOTER_REGISTRY_PASSWORD"
            }
            (Op::Push, true) => {
                "the credentials of PROMOTER_REGISTRY_USERNAME and \
                                 PROMOTER_REGISTRY_PASSWORD were refused"
            }
        };
        Problem::Unauthorized {
            registry,
            detail: detail.into(),
        }
    };
    let missing = || {
        Problem::NotFound(format!(
            "registry {} has no {} in repository {}",
            at.registry,
            at.digest
                .as_deref()
                .map_or("such manifest".to_string(), |d| format!(
                    "manifest sha256:{d}"
                )),
            at.repository
        ))
    };
    match e {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => unauthorized(registry),
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                missing()
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                unauthorized(registry)
            } else {
                Problem::Registry {
                    registry,
                    detail: envelope.to_string(),
                }
            }
        }
        OciDistributionError::ServerError { code: 404, .. } => missing(),
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        } => unauthorized(registry),
        OciDistributionError::DigestError(e) => Problem::DigestMismatch(e.to_string()),
        e => Problem::Registry {
            registry,
            detail: chain(&e),
        },
    }
}

/// An error and its sources, `: `-separated (reqwest's own message hides the cause).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// Collects a blob, refusing more than `max` bytes.
struct Capped {
    bytes: Vec<u8>,
    max: usize,
    exceeded: bool,
}

impl tokio::io::AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.bytes.len() + buf.len() > self.max {
            self.exceeded = true;
            return Poll::Ready(Err(std::io::Error::other("more bytes than declared")));
        }
        self.bytes.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_pinned_reference_parses_into_registry_repository_tag_and_digest() {
        let r = OciRef::parse(&format!(
            "oci://ghcr.io/org/team/strategy:1.2.0@sha256:{HEX}"
        ))
        .unwrap();
        assert_eq!(r.registry, "ghcr.io");
        assert_eq!(r.repository, "org/team/strategy");
        assert_eq!(r.tag.as_deref(), Some("1.2.0"));
        assert_eq!(r.digest.as_deref(), Some(HEX));
        assert_eq!(
            r.to_string(),
            format!("oci://ghcr.io/org/team/strategy:1.2.0@sha256:{HEX}")
        );
        let r = OciRef::parse(&format!("oci://127.0.0.1:5000/p@sha256:{HEX}")).unwrap();
        assert_eq!(
            (r.registry.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", None)
        );
        assert!(r.is_loopback());
        let r = OciRef::parse("oci://localhost:5000/plugins/echo:v1").unwrap();
        assert_eq!(r.repository, "plugins/echo");
        assert_eq!(r.digest, None);
    }

    #[test]
    fn malformed_references_are_refused_saying_what_is_expected() {
        for bad in [
            "ghcr.io/org/p@sha256:0",
            "oci://ghcr.io@sha256:0",
            "oci://ghcr.io/org/p@sha256:abc",
            &format!("oci://ghcr.io/org/p@md5:{HEX}"),
            &format!("oci://ghcr.io/Org/P@sha256:{HEX}"),
            &format!("oci://ghcr.io/org/p:@sha256:{HEX}"),
            &format!("oci://ghcr.io/org/p@sha256:{}", HEX.to_uppercase()),
        ] {
            let e = OciRef::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains(EXPECTED), "{bad}: {e}");
        }
    }

    #[test]
    fn only_loopback_registries_are_spoken_to_over_plain_http() {
        let loopback = |registry: &str| {
            OciRef::parse(&format!("oci://{registry}/p"))
                .unwrap()
                .is_loopback()
        };
        assert!(loopback("127.0.0.1:5000"));
        assert!(loopback("[::1]:5000"));
        assert!(loopback("localhost"));
        assert!(!loopback("ghcr.io"));
        assert!(!loopback("10.0.0.5:5000"));
        assert!(!loopback("localhost.example.com"));
    }

    fn secret(data: &[(&str, &str)]) -> crate::pipeline::Secret {
        crate::pipeline::Secret {
            namespace: "apps".into(),
            name: "regcred".into(),
            type_: None,
            labels: Default::default(),
            annotations: Default::default(),
            data: data
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    #[test]
    fn pull_secret_credentials_come_from_dockerconfigjson_or_username_and_password() {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode("bot:pa:ss");
        let json = format!(
            r#"{{"auths":{{"https://ghcr.io":{{"auth":"{auth}"}},"127.0.0.1:5000":{{"username":"u","password":"p"}}}}}}"#
        );
        let s = secret(&[(".dockerconfigjson", &json)]);
        let c = Credentials::from_secret(&s, "ghcr.io").unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.expose()),
            ("bot", &b"pa:ss"[..])
        );
        let c = Credentials::from_secret(&s, "127.0.0.1:5000").unwrap();
        assert_eq!((c.username.as_str(), c.password.expose()), ("u", &b"p"[..]));
        let e = Credentials::from_secret(&s, "quay.io").unwrap_err();
        assert!(
            e.contains("Secret apps/regcred") && e.contains("quay.io") && e.contains("ghcr.io"),
            "{e}"
        );

        let c = Credentials::from_secret(&secret(&[("username", "bot"), ("password", "pw")]), "x")
            .unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.expose()),
            ("bot", &b"pw"[..])
        );
        let e = Credentials::from_secret(&secret(&[("token", "t")]), "x").unwrap_err();
        assert!(e.contains("neither .dockerconfigjson"), "{e}");
    }

    fn manifest(config: &str, layers: &[&str]) -> Vec<u8> {
        let layers: Vec<_> = layers
            .iter()
            .map(|m| serde_json::json!({"mediaType": m, "digest": format!("sha256:{HEX}"), "size": 10}))
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_IMAGE_MEDIA_TYPE,
            "config": {"mediaType": config, "digest": format!("sha256:{HEX}"), "size": 2},
            "layers": layers,
        }))
        .unwrap()
    }

    #[test]
    fn only_the_cncf_wasm_layout_is_accepted() {
        let layer = wasm_layer(&manifest(CONFIG_MEDIA_TYPE, &[LAYER_MEDIA_TYPE])).unwrap();
        assert_eq!((layer.size, layer.urls), (10, None));
        assert!(wasm_layer(&manifest(CONFIG_MEDIA_TYPE, &[LEGACY_LAYER_MEDIA_TYPE])).is_ok());
        let e = wasm_layer(&manifest(
            "application/vnd.oci.image.config.v1+json",
            &[LAYER_MEDIA_TYPE],
        ))
        .unwrap_err();
        assert!(e.contains("config media type is application/vnd.oci.image.config.v1+json"));
        let e = wasm_layer(&manifest(CONFIG_MEDIA_TYPE, &[LAYER_MEDIA_TYPE; 2])).unwrap_err();
        assert!(e.contains("2 layers, expected exactly one"), "{e}");
        let e = wasm_layer(&manifest(
            CONFIG_MEDIA_TYPE,
            &["application/vnd.oci.image.layer.v1.tar+gzip"],
        ))
        .unwrap_err();
        assert!(e.contains("layer media type is application/vnd.oci.image.layer.v1.tar+gzip"));
        let index = serde_json::to_vec(
            &serde_json::json!({"schemaVersion": 2, "mediaType": OCI_IMAGE_INDEX_MEDIA_TYPE, "manifests": []}),
        )
        .unwrap();
        assert!(wasm_layer(&index).unwrap_err().contains("image.index"));
    }

    #[test]
    fn only_components_are_pushed() {
        assert!(check_component(b"\0asm\x0d\0\x01\0rest").is_ok());
        assert!(
            check_component(b"\0asm\x01\0\0\0")
                .unwrap_err()
                .contains("core WebAssembly module")
        );
        assert!(
            check_component(b"hello world")
                .unwrap_err()
                .contains("not WebAssembly")
        );
    }
}
