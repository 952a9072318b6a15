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

/// Installs the one TLS crypto provider of the whole tree (rustls with ring) as the
/// process default. Every TLS client and server in the process uses it; call this
/// first thing in `main` and in tests.
pub fn install_crypto_provider() {
    // Err means a provider is already installed (a second call, or a test harness).
    let _ = rustls::crypto::ring::default_provider().install_default();
}
