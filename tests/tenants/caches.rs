//! Item 10: what the host reads back from its caches is checked, not trusted as it is. A
//! cached OCI component is hashed again on every load against the pinned manifest; a
//! registry cannot make the host buffer a manifest of any size; the compiled-code cache
//! (native code) lives in a directory only the process writes, and one that others could
//! write is refused at start.

use crate::support::{scratch, write_manifests};
use sha2::Digest as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::AsyncWriteExt;

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The usual local-mode folder, plus `plugins` in plugins.yaml.
fn manifests(dir: &Path, plugins: &str) -> PathBuf {
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    write_manifests(&manifests, "http://127.0.0.1:9/never-called");
    std::fs::write(manifests.join("plugins.yaml"), plugins).unwrap();
    manifests
}

fn oci_config_map(reference: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: echo\n  namespace: flux-system\n  \
         labels: {{promoter.dev/plugin: \"true\"}}\ndata:\n  oci: \"{reference}\"\n"
    )
}

/// A CNCF Wasm artifact manifest for `wasm`, as `promoter plugin push` writes one.
fn manifest_for(wasm: &[u8]) -> Vec<u8> {
    let config = b"{}";
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.wasm.config.v0+json",
                   "digest": format!("sha256:{}", sha256_hex(config)), "size": config.len()},
        "layers": [{"mediaType": "application/wasm",
                    "digest": format!("sha256:{}", sha256_hex(wasm)), "size": wasm.len()}],
    }))
    .unwrap()
}

#[test]
fn a_compiled_cache_directory_others_can_write_is_refused_at_start() {
    let dir = scratch("tenants-cache-open");
    let manifests = manifests(&dir, "");
    let data = dir.join("data");
    let compiled = data.join("compiled");
    std::fs::create_dir_all(&compiled).unwrap();
    std::fs::set_permissions(&compiled, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = crate::support::serve_fails(&manifests, &data, &[]);
    assert!(
        err.contains(&format!("cache directory {}", compiled.display()))
            && err.contains("writable by its group or by everyone (mode 0777)")
            && err.contains("mode 0700"),
        "names the directory, what is wrong and the fix: {err}"
    );
}

#[test]
fn a_compiled_cache_directory_owned_by_another_user_is_refused_at_start() {
    let dir = scratch("tenants-cache-owner");
    let manifests = manifests(&dir, "");
    let data = dir.join("data");
    let compiled = data.join("compiled");
    std::fs::create_dir_all(&compiled).unwrap();
    std::fs::set_permissions(&compiled, std::fs::Permissions::from_mode(0o700)).unwrap();
    // Another user's directory: only root can hand one over, as these tests run.
    std::os::unix::fs::chown(&compiled, Some(65534), Some(65534))
        .expect("the tests run as root, who can give a directory to nobody (65534)");
    let err = crate::support::serve_fails(&manifests, &data, &[]);
    assert!(
        err.contains(&format!("cache directory {}", compiled.display()))
            && err.contains("owned by user 65534"),
        "{err}"
    );
}

#[test]
fn a_fresh_compiled_cache_is_private_to_the_process() {
    let dir = scratch("tenants-cache-fresh");
    let manifests = manifests(&dir, "");
    let data = dir.join("data");
    let server = crate::support::Server::start(&manifests, &data, &[]);
    for cache in ["compiled", "oci"] {
        let mode = std::fs::metadata(data.join(cache))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700, "{cache}");
    }
    drop(server);
}

#[test]
fn a_cached_oci_component_swapped_on_disk_is_refused_naming_the_plugin() {
    let echo = std::fs::read(env!("PROMOTER_WASM_FIXTURE_ECHO")).unwrap();
    let manifest = manifest_for(&echo);
    let hex = sha256_hex(&manifest);
    // Nothing listens on port 9: the registry cannot be reached, only the cache serves.
    let reference = format!("oci://127.0.0.1:9/plugins/echo:v1@sha256:{hex}");
    let dir = scratch("tenants-cache-oci");
    let manifests = manifests(&dir, &oci_config_map(&reference));
    let data = dir.join("data");
    let cached = data.join("oci/sha256");
    std::fs::create_dir_all(&cached).unwrap();
    std::fs::set_permissions(data.join("oci"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(cached.join(format!("{hex}.manifest.json")), &manifest).unwrap();
    // Another valid component in place of the one the pinned manifest names.
    let other = std::fs::read(env!("PROMOTER_WASM_FIXTURE_NOOP")).unwrap();
    std::fs::write(cached.join(format!("{hex}.wasm")), &other).unwrap();

    let err = crate::support::serve_fails(&manifests, &data, &[]);
    assert!(
        err.contains(&format!("ConfigMap flux-system/echo (plugin echo): {reference}: the cached copy"))
            && err.contains(&format!(
                "failed verification (the component hashes to sha256:{}, its manifest names layer sha256:{})",
                sha256_hex(&other),
                sha256_hex(&echo)
            ))
            && err.contains("could not be pulled again"),
        "{err}"
    );
    assert!(
        !cached.join(format!("{hex}.wasm")).exists(),
        "the swapped copy is discarded"
    );

    // The genuine component under the same manifest is served from the cache, no registry.
    std::fs::write(cached.join(format!("{hex}.wasm")), &echo).unwrap();
    std::fs::write(cached.join(format!("{hex}.manifest.json")), &manifest).unwrap();
    let server = crate::support::Server::start(&manifests, &data, &[]);
    assert!(server.logs().contains("plugin loaded"), "{}", server.logs());
}

#[tokio::test]
async fn a_registry_streaming_an_endless_manifest_is_cut_off_at_the_cap() {
    const STREAMED: usize = 64 << 20;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let Some(head) = crate::readback::read_head(&mut sock).await else {
                    return;
                };
                if head.starts_with("GET /v2/ ") {
                    let _ = sock
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
                        )
                        .await;
                    return;
                }
                // A manifest that never ends: no length, streamed until the client stops.
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/vnd.oci.image.manifest.v1+json\r\n\
                            connection: close\r\n\r\n";
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let block = vec![b' '; 64 << 10];
                while counter.load(Ordering::SeqCst) < STREAMED {
                    if sock.write_all(&block).await.is_err() {
                        return;
                    }
                    counter.fetch_add(block.len(), Ordering::SeqCst);
                }
            });
        }
    });
    let reference = format!("oci://{addr}/plugins/echo@sha256:{}", sha256_hex(b"pinned"));
    let dir = scratch("tenants-cache-manifest");
    let manifests = manifests(&dir, &oci_config_map(&reference));
    let data = dir.join("data");
    let err =
        tokio::task::spawn_blocking(move || crate::support::serve_fails(&manifests, &data, &[]))
            .await
            .unwrap();
    assert!(
        err.contains(&format!(
            "ConfigMap flux-system/echo (plugin echo): {reference}: the registry's manifest is larger than 4194304 bytes; refused unread"
        )),
        "{err}"
    );
    let streamed = sent.load(Ordering::SeqCst);
    assert!(
        streamed < 16 << 20,
        "the host stopped reading near the cap, not after {streamed} bytes"
    );
}
