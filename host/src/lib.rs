//! Promoter: promotes application versions through GitOps pipelines. A Flux event comes
//! in, the host decides whether a promotion is due, and a strategy plugin — a sandboxed
//! WebAssembly component — carries it out.

pub mod admin;
pub mod builtin;
pub mod client;
pub mod cluster;
pub mod decide;
pub mod event;
pub mod execute;
pub mod ingest;
pub mod metrics;
pub mod oci;
pub mod pipeline;
pub mod plugins;
pub mod promotion;
pub mod record;
pub mod runtime;
pub mod serve;
pub mod signature;
pub mod tls;

/// Writes `path` whole or not at all (a temporary file beside it, then a rename): a crash
/// leaves a temporary file, never a short file under the final name. For the caches of
/// compiled and pulled components.
pub(crate) fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("a cache file has a folder");
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Installs the one TLS crypto provider of the whole tree (rustls with ring) as the
/// process default. Every TLS client and server in the process uses it; call this
/// first thing in `main` and in tests.
pub fn install_crypto_provider() {
    // Err means a provider is already installed (a second call, or a test harness).
    let _ = rustls::crypto::ring::default_provider().install_default();
}
