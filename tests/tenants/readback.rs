//! Item 7: a credential the host adds to a plugin's requests never comes back to the
//! plugin. TRACE (which echoes the request) and CONNECT are refused for every request,
//! and a server that echoes the Authorization header back, raw or in base64, in its
//! headers or body, has every bound secret value redacted before the plugin reads it.

use crate::support::{Server, base64_encode, deployed_in_dev, scratch, write_manifests};
use sha2::Digest as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "ci-token-0123456789abcdef";

/// A server that answers any request with the Authorization header it received: in
/// response headers (as is, and base64), and in the body (as is, the token after the
/// scheme, and both in base64). Counts connections.
struct Echo {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    /// Authorization headers received.
    seen: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Echo {
    async fn start() -> Echo {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (c, s) = (connections.clone(), seen.clone());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                tokio::spawn(async move {
                    let Some(head) = read_head(&mut sock).await else {
                        return;
                    };
                    let auth = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.trim()
                                .eq_ignore_ascii_case("authorization")
                                .then(|| v.trim().to_string())
                        })
                        .unwrap_or_default();
                    s.lock().unwrap().push(auth.clone());
                    let token = auth.split_once(' ').map(|(_, t)| t).unwrap_or(&auth);
                    let body = format!(
                        "you sent: {auth}\ntoken: {token}\nas base64: {}\ntoken as base64: {}\n{{\"json\": \"{}\"}}\n",
                        base64_encode(auth.as_bytes()),
                        base64_encode(token.as_bytes()),
                        auth.replace('/', "\\/"),
                    );
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-echo-authorization: {auth}\r\n\
                         x-echo-base64: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        base64_encode(auth.as_bytes()),
                        body.len()
                    );
                    let _ = sock.write_all(reply.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Echo {
            addr,
            connections,
            seen,
        }
    }

    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Reads a request up to the end of its head; `None` when the peer goes away first.
pub(crate) async fn read_head(sock: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// The local-mode folder: promotions into test run the `fetcher` plugin (the
/// forbidden-http fixture) with `config`; its grant lets it reach `echo` and binds
/// `Authorization: Bearer TOKEN` to that origin.
fn manifests(dir: &std::path::Path, echo: &Echo, config: &str) -> std::path::PathBuf {
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    write_manifests(&manifests, "http://127.0.0.1:9/never-called");
    let text = std::fs::read_to_string(manifests.join("pipeline.yaml")).unwrap();
    let text = text.replacen(
        "          clusterRef: {kind: GitopsCluster, name: test-us}\n",
        &format!(
            "          clusterRef: {{kind: GitopsCluster, name: test-us}}\n      promotion:\n        \
             strategy:\n          plugin: {{name: fetcher, config: {config}}}\n"
        ),
        1,
    );
    std::fs::write(manifests.join("pipeline.yaml"), text).unwrap();
    let wasm = std::fs::read(env!("PROMOTER_WASM_FIXTURE_FORBIDDEN_HTTP")).unwrap();
    std::fs::write(
        manifests.join("plugin.yaml"),
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fetcher\n  namespace: flux-system\n  \
             labels: {{promoter.dev/plugin: \"true\"}}\ndata:\n  sha256: {}\n  grant: |\n    \
             allow: [{origin}]\n    credentials:\n      - origin: {origin}\n        header: Authorization\n        \
             prefix: \"Bearer \"\n        secretRef: {{name: ci-token, key: token}}\nbinaryData:\n  plugin.wasm: {}\n\
             ---\napiVersion: v1\nkind: Secret\nmetadata: {{name: ci-token, namespace: flux-system}}\n\
             stringData: {{token: {TOKEN}}}\n",
            hex::encode(sha2::Sha256::digest(&wasm)),
            base64_encode(&wasm),
            origin = echo.origin(),
        ),
    )
    .unwrap();
    manifests
}

/// Dev reports 6.5.4; runs the promotion into test to its end and returns it.
pub(crate) async fn promote_into_test(server: &Server) -> serde_json::Value {
    let (code, body) = deployed_in_dev(server, "6.5.4").await;
    assert_eq!(code, 202, "{body}");
    let all = server
        .wait_for("the promotion into test to end", |all| {
            all.iter().any(|p| {
                p["targetEnvironment"] == "test"
                    && (p["phase"] == "succeeded" || p["phase"] == "failed")
            })
        })
        .await;
    all.into_iter()
        .find(|p| p["targetEnvironment"] == "test")
        .unwrap()
}

#[tokio::test]
async fn trace_cannot_make_a_server_echo_the_bound_credential_back() {
    let echo = Echo::start().await;
    let dir = scratch("tenants-readback-trace");
    let config = format!("{{url: \"{}/\", method: TRACE, show: true}}", echo.origin());
    let server = Server::start(&manifests(&dir, &echo, &config), &dir.join("data"), &[]);
    let promotion = promote_into_test(&server).await;
    assert_eq!(promotion["phase"], "failed", "{promotion:#}");
    let error = promotion["lastError"].as_str().unwrap();
    assert!(
        error.contains("capability denied") && error.contains("method TRACE is refused"),
        "{error}"
    );
    assert_eq!(
        echo.connections.load(Ordering::SeqCst),
        0,
        "nothing was sent"
    );
    assert!(!promotion.to_string().contains(TOKEN));
}

#[tokio::test]
async fn a_server_echoing_the_authorization_header_cannot_hand_the_credential_to_the_plugin() {
    let echo = Echo::start().await;
    let dir = scratch("tenants-readback-echo");
    let config = format!("{{url: \"{}/whoami\", show: true}}", echo.origin());
    let server = Server::start(&manifests(&dir, &echo, &config), &dir.join("data"), &[]);
    let promotion = promote_into_test(&server).await;
    assert_eq!(promotion["phase"], "succeeded", "{promotion:#}");
    let header = format!("Bearer {TOKEN}");
    assert_eq!(
        echo.seen.lock().unwrap().as_slice(),
        std::slice::from_ref(&header),
        "the host did send the credential to its origin"
    );
    // What the plugin read: the answer's status, headers and body, as it reported them.
    let details = promotion["outcomeDetails"].as_str().unwrap();
    let answer: serde_json::Value = serde_json::from_str(details).unwrap();
    assert_eq!(answer["status"], 200);
    let seen_by_plugin = answer.to_string();
    for form in [
        TOKEN.to_string(),
        header.clone(),
        base64_encode(TOKEN.as_bytes()),
        base64_encode(header.as_bytes()),
    ] {
        assert!(
            !seen_by_plugin.contains(&form) && !details.contains(&form),
            "the plugin read {form:?} back: {details}"
        );
    }
    let body = answer["body"].as_str().unwrap();
    assert!(
        body.starts_with("you sent: [redacted by promoter]"),
        "the answer is otherwise intact: {body}"
    );
}
