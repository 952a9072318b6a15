//! Plugins distributed through an OCI registry: Debian's `docker-registry` (Distribution v2)
//! on loopback, `promoter plugin push` to publish, plugin ConfigMaps with `data.oci` to pull.

mod support;

use sha2::Digest;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use support::{
    Server, base64_encode, deployed_in_dev, free_port, scratch, serve_fails, write_manifests,
};

const USER: &str = "plugin-publisher";
const PASSWORD: &str = "s3cret-registry-password";
/// bcrypt of PASSWORD (cost 4), what Distribution's htpasswd file holds.
const PASSWORD_BCRYPT: &str = "$2b$04$jW86MCjVJrUK6b.8VF8Y8.cM7TCXrweVTDl9Xk.bfywrWqUPUUVXO";

/// `docker-registry serve` on a free loopback port, storage in a scratch folder; killed on drop.
struct Registry {
    child: Option<Child>,
    root: PathBuf,
    /// `127.0.0.1:PORT`
    host: String,
}

impl Registry {
    fn start(name: &str, private: bool) -> Registry {
        let root = scratch(name);
        let port = free_port();
        let auth = if private {
            std::fs::write(root.join("htpasswd"), format!("{USER}:{PASSWORD_BCRYPT}\n")).unwrap();
            format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                root.join("htpasswd").display()
            )
        } else {
            String::new()
        };
        std::fs::write(
            root.join("config.yml"),
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: test-only-secret\n{auth}",
                root.join("storage").display()
            ),
        )
        .unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(root.join("config.yml"))
            .stdout(std::fs::File::create(root.join("registry.log")).unwrap())
            .stderr(std::fs::File::create(root.join("registry.err")).unwrap())
            .spawn()
            .expect("/usr/bin/docker-registry (Debian package docker-registry) is installed");
        let registry = Registry {
            child: Some(child),
            root,
            host: format!("127.0.0.1:{port}"),
        };
        for _ in 0..200 {
            if let Some(status) = registry.status_of("/v2/")
                && (status == 200 || status == 401)
            {
                return registry;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!("the registry did not answer /v2/:\n{}", registry.logs());
    }

    /// The HTTP status of a GET, or `None` when nothing answers.
    fn status_of(&self, path: &str) -> Option<u16> {
        let mut stream = std::net::TcpStream::connect(&self.host).ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.host).ok()?;
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.split_whitespace().nth(1)?.parse().ok()
    }

    /// Every request the registry served, one access-log line each, and its own log.
    fn logs(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.root.join(f)).unwrap_or_default();
        read("registry.log") + &read("registry.err")
    }

    /// Where the registry keeps a blob.
    fn blob_file(&self, hex: &str) -> PathBuf {
        self.root
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn echo_wasm() -> Vec<u8> {
    std::fs::read(env!("PROMOTER_WASM_FIXTURE_ECHO")).unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// `promoter plugin push FILE REFERENCE`, with registry credentials when given.
fn push(file: &Path, reference: &str, credentials: Option<(&str, &str)>) -> Result<String, String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_promoter"));
    cmd.args(["plugin", "push"])
        .arg(file)
        .arg(reference)
        .env_remove("PROMOTER_REGISTRY_USERNAME")
        .env_remove("PROMOTER_REGISTRY_PASSWORD")
        .stdin(Stdio::null());
    if let Some((user, password)) = credentials {
        cmd.env("PROMOTER_REGISTRY_USERNAME", user)
            .env("PROMOTER_REGISTRY_PASSWORD", password);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(stderr)
    }
}

/// Pushes the echo fixture as `plugins/echo:v1`; returns the pinned reference.
fn push_echo(registry: &Registry) -> String {
    let reference = push(
        Path::new(env!("PROMOTER_WASM_FIXTURE_ECHO")),
        &format!("oci://{}/plugins/echo:v1", registry.host),
        None,
    )
    .unwrap();
    let (name, digest) = reference.split_once("@sha256:").unwrap();
    assert_eq!(name, format!("oci://{}/plugins/echo:v1", registry.host));
    assert!(
        digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
        "{reference}"
    );
    reference
}

/// A plugin ConfigMap pulling `reference` as plugin `name`, plus `extra` data lines.
fn oci_config_map(cm: &str, name: &str, reference: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {cm}\n  namespace: flux-system\n  \
         labels: {{promoter.dev/plugin: \"true\"}}\n  annotations: {{promoter.dev/plugin-name: {name}}}\n\
         data:\n  oci: \"{reference}\"\n{extra}"
    )
}

/// The usual local-mode folder, promotions into test run plugin `echo`, and `plugins`
/// (plugin ConfigMaps and Secrets) in plugins.yaml.
fn manifests(dir: &Path, plugins: &str) -> PathBuf {
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    write_manifests(&manifests, "http://127.0.0.1:9/never-called");
    let text = std::fs::read_to_string(manifests.join("pipeline.yaml")).unwrap();
    let text = text.replacen(
        "          clusterRef: {kind: GitopsCluster, name: test-us}\n",
        "          clusterRef: {kind: GitopsCluster, name: test-us}\n      promotion:\n        strategy:\n          plugin: {name: echo, config: {}}\n",
        1,
    );
    std::fs::write(manifests.join("pipeline.yaml"), text).unwrap();
    std::fs::write(manifests.join("plugins.yaml"), plugins).unwrap();
    manifests
}

/// The echo plugin ran the promotion into test: its outcome is its own URL.
async fn echo_promoted(server: &Server, version: &str, count: usize) {
    let (status, text) = deployed_in_dev(server, version).await;
    assert_eq!(status, 202, "{text}");
    let all = server
        .wait_for("the echo plugin's promotion", |all| {
            all.len() == count && all.iter().all(|p| p["phase"] == "succeeded")
        })
        .await;
    let newest = all.iter().find(|p| p["version"] == version).unwrap();
    assert_eq!(newest["strategy"]["plugin"], "echo");
    assert_eq!(
        newest["outcomeUrl"],
        format!("https://example.invalid/{}", newest["id"].as_str().unwrap()),
        "{newest:#}"
    );
}

#[tokio::test]
async fn a_pushed_plugin_is_pulled_by_digest_runs_and_a_restart_needs_no_registry() {
    let mut registry = Registry::start("oci-registry", false);
    let reference = push_echo(&registry);
    let dir = scratch("oci-pull");
    let manifests = manifests(&dir, &oci_config_map("echo", "echo", &reference, ""));
    let mut server = Server::start(&manifests, &dir.join("data"), &[]);
    echo_promoted(&server, "1.0.0", 1).await;

    // Verified and cached by manifest digest: exactly the component that was pushed.
    let manifest_hex = reference.rsplit_once("@sha256:").unwrap().1;
    let cached = dir.join(format!("data/oci/sha256/{manifest_hex}.wasm"));
    assert_eq!(std::fs::read(&cached).unwrap(), echo_wasm());

    // A cached copy that no longer matches its pinned manifest is pulled again.
    let noop = std::fs::read(env!("PROMOTER_WASM_FIXTURE_NOOP")).unwrap();
    std::fs::write(&cached, &noop).unwrap();
    server.restart();
    assert!(
        server.logs().contains("fails verification"),
        "{}",
        server.logs()
    );
    assert_eq!(std::fs::read(&cached).unwrap(), echo_wasm());
    echo_promoted(&server, "1.0.1", 2).await;

    // The registry is gone; the restarted server loads the plugin from its cache.
    registry.stop();
    assert_eq!(registry.status_of("/v2/"), None, "the registry is down");
    server.restart();
    echo_promoted(&server, "1.1.0", 3).await;
}

#[tokio::test]
async fn a_tampered_digest_is_refused_naming_the_reference_and_other_plugins_keep_serving() {
    let registry = Registry::start("oci-tampered", false);
    let reference = push_echo(&registry);
    let real = reference.rsplit_once("@sha256:").unwrap().1.to_string();
    let wrong = sha256_hex(b"not the manifest");
    let tampered = reference.replace(&real, &wrong);

    // At start-up: the server refuses to run and says which reference and why.
    let dir = scratch("oci-tampered-start");
    let bad = manifests(&dir, &oci_config_map("echo", "echo", &tampered, ""));
    let err = serve_fails(&bad, &dir.join("data"), &[]);
    assert!(
        err.contains(&format!(
            "ConfigMap flux-system/echo (plugin echo): {tampered}: digest mismatch"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("tag v1 points to sha256:{real}")),
        "{err}"
    );
    assert!(
        !dir.join(format!("data/oci/sha256/{wrong}.wasm")).exists(),
        "nothing is cached under the wrong digest"
    );

    // While running: the new ConfigMap is refused, the plugins already loaded keep serving.
    let dir = scratch("oci-tampered-reload");
    let manifests = manifests(&dir, &oci_config_map("echo", "echo", &reference, ""));
    let server = Server::start(
        &manifests,
        &dir.join("data"),
        &["--watch-interval", "100ms"],
    );
    std::fs::write(
        manifests.join("more-plugins.yaml"),
        oci_config_map("echo-next", "echo-next", &tampered, ""),
    )
    .unwrap();
    for _ in 0..100 {
        if server.logs().contains("manifests not reloaded") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let logs = server.logs();
    assert!(
        logs.contains(&format!(
            "ConfigMap flux-system/echo-next (plugin echo-next): {tampered}: digest mismatch"
        )),
        "{logs}"
    );
    assert!(logs.contains("manifests not reloaded"), "{logs}");
    echo_promoted(&server, "2.0.0", 1).await;
}

#[test]
fn a_layer_tampered_with_in_the_registry_is_refused() {
    let registry = Registry::start("oci-bad-layer", false);
    let reference = push_echo(&registry);
    let layer = sha256_hex(&echo_wasm());
    let blob = registry.blob_file(&layer);
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();

    let dir = scratch("oci-bad-layer-serve");
    let manifests = manifests(&dir, &oci_config_map("echo", "echo", &reference, ""));
    let err = serve_fails(&manifests, &dir.join("data"), &[]);
    assert!(
        err.contains(&format!(
            "{reference}: digest mismatch: layer sha256:{layer} has bytes hashing to sha256:{}",
            sha256_hex(&bytes)
        )),
        "{err}"
    );
    assert!(!dir.join("data/oci/sha256").exists(), "nothing was cached");
}

#[test]
fn an_artifact_above_max_plugin_size_is_refused_before_download() {
    let registry = Registry::start("oci-large", false);
    let reference = push_echo(&registry);
    let dir = scratch("oci-large-serve");
    let manifests = manifests(&dir, &oci_config_map("echo", "echo", &reference, ""));
    let err = serve_fails(
        &manifests,
        &dir.join("data"),
        &["--max-plugin-size", "1KiB"],
    );
    assert!(
        err.contains(&format!(
            "{reference}: the component is {} bytes, above the limit of 1024 bytes (--max-plugin-size); \
             refused by the size its manifest declares, before download",
            echo_wasm().len()
        )),
        "{err}"
    );
    let layer = sha256_hex(&echo_wasm());
    let logs = registry.logs();
    assert!(
        logs.contains("GET /v2/plugins/echo/manifests/sha256:"),
        "the manifest was read: {logs}"
    );
    assert!(
        !logs.contains(&format!("\"GET /v2/plugins/echo/blobs/sha256:{layer}")),
        "the layer was not downloaded: {logs}"
    );
}

#[test]
fn a_manifest_never_pushed_is_refused_as_not_found() {
    let registry = Registry::start("oci-missing", false);
    let digest = sha256_hex(b"never pushed");
    let reference = format!(
        "oci://{}/plugins/never-pushed@sha256:{digest}",
        registry.host
    );
    let dir = scratch("oci-missing-serve");
    let manifests = manifests(&dir, &oci_config_map("echo", "echo", &reference, ""));
    let err = serve_fails(&manifests, &dir.join("data"), &[]);
    assert!(
        err.contains(&format!(
            "ConfigMap flux-system/echo (plugin echo): {reference}: manifest not found: registry {} \
             has no manifest sha256:{digest} in repository plugins/never-pushed (HTTP 404)",
            registry.host
        )),
        "{err}"
    );
}

#[test]
fn a_reference_without_a_digest_is_refused_before_any_request() {
    let registry = Registry::start("oci-unpinned", false);
    let reference = format!("oci://{}/plugins/echo:v1", registry.host);
    let dir = scratch("oci-unpinned-serve");
    let manifests = manifests(&dir, &oci_config_map("echo", "echo", &reference, ""));
    let err = serve_fails(&manifests, &dir.join("data"), &[]);
    assert!(
        err.contains(&format!("{reference}: not pinned by digest; expected oci://REGISTRY/REPOSITORY[:TAG]@sha256:<64 hex digits>")),
        "{err}"
    );
    assert!(
        !registry.logs().contains("/manifests/"),
        "{}",
        registry.logs()
    );
}

#[tokio::test]
async fn a_private_registry_is_pulled_with_the_pull_secrets_credentials() {
    let registry = Registry::start("oci-private", true);
    let file = Path::new(env!("PROMOTER_WASM_FIXTURE_ECHO"));
    let target = format!("oci://{}/plugins/echo:v1", registry.host);

    let err = push(file, &target, None).unwrap_err();
    assert!(
        err.contains(&format!(
            "{target}: unauthorized at registry {}: anonymous push refused",
            registry.host
        )),
        "{err}"
    );
    let err = push(file, &target, Some((USER, "wrong-password"))).unwrap_err();
    assert!(
        err.contains(
            "credentials of PROMOTER_REGISTRY_USERNAME and PROMOTER_REGISTRY_PASSWORD were refused"
        ),
        "{err}"
    );
    let reference = push(file, &target, Some((USER, PASSWORD))).unwrap();

    // No pull secret: refused, and the message says what to add.
    let dir = scratch("oci-private-anonymous");
    let manifests_dir = manifests(&dir, &oci_config_map("echo", "echo", &reference, ""));
    let err = serve_fails(&manifests_dir, &dir.join("data"), &[]);
    assert!(
        err.contains(&format!(
            "{reference}: unauthorized at registry {}: anonymous pull refused; name a Secret with the registry's credentials in the plugin ConfigMap's data.pullSecret",
            registry.host
        )),
        "{err}"
    );

    // A kubernetes.io/dockerconfigjson Secret in the ConfigMap's namespace.
    let dir = scratch("oci-private-secret");
    let auth = base64_encode(format!("{USER}:{PASSWORD}").as_bytes());
    let docker_config = format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, registry.host);
    let plugins = format!(
        "{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: regcred, namespace: flux-system}}\n\
         type: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: {}\n",
        oci_config_map("echo", "echo", &reference, "  pullSecret: regcred\n"),
        base64_encode(docker_config.as_bytes()),
    );
    let manifests_dir = manifests(&dir, &plugins);
    let server = Server::start(&manifests_dir, &dir.join("data"), &[]);
    echo_promoted(&server, "3.0.0", 1).await;
    assert!(!server.logs().contains(PASSWORD), "{}", server.logs());
}

#[test]
fn plugin_push_refuses_a_file_that_is_not_a_component() {
    let dir = scratch("oci-not-component");
    let module = dir.join("module.wasm");
    std::fs::write(&module, b"\0asm\x01\0\0\0").unwrap();
    let err = push(&module, "oci://127.0.0.1:9/plugins/m:v1", None).unwrap_err();
    assert!(
        err.contains(&format!(
            "{}: a core WebAssembly module, not a component",
            module.display()
        )),
        "{err}"
    );
    let text = dir.join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    let err = push(&text, "oci://127.0.0.1:9/plugins/m:v1", None).unwrap_err();
    assert!(err.contains("not WebAssembly"), "{err}");
    let err = push(
        Path::new(env!("PROMOTER_WASM_FIXTURE_ECHO")),
        "oci://127.0.0.1:9/plugins/m",
        None,
    )
    .unwrap_err();
    assert!(
        err.contains("a push names a tag, not a digest: oci://REGISTRY/REPOSITORY:TAG"),
        "{err}"
    );
}
