//! What the host offers a plugin, behind a trait so strategies are testable natively.

use crate::git::{GitError, Repository};
use crate::http::{HttpError, HttpRequest, HttpResponse};
use crate::{HmacAlgorithm, Level};

/// Everything a strategy may ask of the host: logging, signing, outbound HTTP and git.
///
/// Inside the sandbox this is [`WasiHost`]; in native tests it is
/// [`MockHost`](crate::testing::MockHost).
pub trait Host {
    /// A log line attributed to the plugin and the promotion being run.
    fn log(&self, level: Level, message: &str);

    /// HMAC of `data` with the key the operator bound to this plugin under `key`, as
    /// lowercase hex. The key never enters the sandbox. `Err` carries the host's reason
    /// (no such key bound, or `sign` not granted).
    fn sign(&self, key: &str, algorithm: HmacAlgorithm, data: &[u8]) -> Result<String, String>;

    /// Sends one request through the host's policed `wasi:http/outgoing-handler` and
    /// reads the whole response.
    fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError>;

    /// A working copy of the repository at `url`, checked out at `branch`, cloned and
    /// authenticated by the host (the plugin needs the `git` capability and the operator's
    /// grant for the repository). It lives until the call returns.
    ///
    /// The default refuses with [`GitError::Denied`]: a host that offers no git.
    fn git_open(&self, url: &str, branch: &str) -> Result<Box<dyn Repository>, GitError> {
        let _ = branch;
        Err(GitError::Denied(format!(
            "this host offers no git; cannot open {url}"
        )))
    }

    fn trace(&self, message: &str) {
        self.log(Level::Trace, message)
    }

    fn debug(&self, message: &str) {
        self.log(Level::Debug, message)
    }

    fn info(&self, message: &str) {
        self.log(Level::Info, message)
    }

    fn warn(&self, message: &str) {
        self.log(Level::Warn, message)
    }

    fn error(&self, message: &str) {
        self.log(Level::Error, message)
    }

    /// `sign(key, sha256, data)`: the `sha256=<hex>` scheme of Flux's generic-hmac provider
    /// and most webhook receivers.
    fn sign_sha256(&self, key: &str, data: &[u8]) -> Result<String, String> {
        self.sign(key, HmacAlgorithm::Sha256, data)
    }
}

/// The host as seen from inside the sandbox: `promoter:strategy/host`,
/// `promoter:strategy/git` and `wasi:http/outgoing-handler`. [`export_strategy!`](crate::export_strategy) passes one
/// to [`Strategy::promote`](crate::Strategy::promote).
///
/// Only works when compiled for `wasm32-wasip2` and run by the Promoter host. On other
/// targets `log` panics and `sign`/`send`/`git_open` return an error saying so; use
/// [`MockHost`](crate::testing::MockHost) in native tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct WasiHost;

#[cfg(not(target_arch = "wasm32"))]
const NATIVE: &str = "WasiHost only works inside the Promoter sandbox (a wasm32-wasip2 component); \
     in native tests use promoter_sdk::testing::MockHost";

#[cfg(target_arch = "wasm32")]
impl Host for WasiHost {
    fn log(&self, level: Level, message: &str) {
        crate::bindings::promoter::strategy::host::log(level, message)
    }

    fn sign(&self, key: &str, algorithm: HmacAlgorithm, data: &[u8]) -> Result<String, String> {
        crate::bindings::promoter::strategy::host::sign(key, algorithm, data)
    }

    fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        crate::wasi_http::send(request)
    }

    fn git_open(&self, url: &str, branch: &str) -> Result<Box<dyn Repository>, GitError> {
        crate::git::open(url, branch)
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Host for WasiHost {
    fn log(&self, _: Level, _: &str) {
        panic!("{NATIVE}")
    }

    fn sign(&self, _: &str, _: HmacAlgorithm, _: &[u8]) -> Result<String, String> {
        Err(NATIVE.to_string())
    }

    fn send(&self, _: HttpRequest) -> Result<HttpResponse, HttpError> {
        Err(HttpError::Other(NATIVE.to_string()))
    }

    fn git_open(&self, _: &str, _: &str) -> Result<Box<dyn Repository>, GitError> {
        Err(GitError::Other(NATIVE.to_string()))
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn wasi_host_outside_the_sandbox_says_to_use_mock_host() {
        let error = WasiHost
            .send(HttpRequest::get("https://example.com/"))
            .unwrap_err();
        assert!(error.to_string().contains("MockHost"), "{error}");
        let error = WasiHost.sign_sha256("k", b"x").unwrap_err();
        assert!(error.contains("only works inside the Promoter sandbox"));
        let error = WasiHost
            .git_open("https://git.example/a.git", "main")
            .err()
            .expect("no git outside the sandbox");
        assert!(error.to_string().contains("MockHost"), "{error}");
    }
}
