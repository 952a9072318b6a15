//! Item 9: the admin listener knows who is calling; /healthz, /readyz and /metrics stay
//! open. Local mode with `--admin-token-file`: that token or nothing, from loopback too,
//! and the CLI sends it with `--token-file`. Local mode without one: loopback peers only,
//! said at start (the peer-address rule itself is unit-tested in host/src/admin/auth.rs:
//! every peer a test can use here is loopback). Kubernetes mode (TokenReview and
//! SubjectAccessReview, one team's token against another's promotions) is in
//! tests/kubernetes.rs, beside the fake API server.

use crate::support::{Receiver, Server, deployed_in_dev, scratch, write_manifests};
use std::path::Path;

const TOKEN: &str = "admin-token-for-tests-0123456789abcdef";

/// `promoter promotions ARGS` against `server`, with no token from the environment or a
/// kubeconfig; (success, stdout, stderr).
fn cli(
    server: &Server,
    home: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_promoter"))
        .arg("promotions")
        .args(args)
        .args(["--admin", &server.admin])
        .env_remove("KUBECONFIG")
        .env_remove("PROMOTER_TOKEN_FILE")
        .env("HOME", home)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_caller_without_the_admin_token_reads_no_promotions_even_from_loopback() {
    let ci = Receiver::start(202, "queued").await;
    let dir = scratch("tenants-admin-token");
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    write_manifests(&manifests, &ci.url("/job/promote"));
    let token_file = dir.join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let token_arg = token_file.to_str().unwrap();
    let mut server = Server::start(
        &manifests,
        &dir.join("data"),
        &["--admin-token-file", token_arg],
    );
    server.admin_token = Some(TOKEN.into());
    let (code, body) = deployed_in_dev(&server, "6.5.4").await;
    assert_eq!(code, 202, "{body}");
    let all = server
        .wait_for("the promotion into test", |all| !all.is_empty())
        .await;
    let id = all[0]["id"].as_str().unwrap().to_string();

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let get = |path: &str, token: Option<&str>| {
        let mut request = client.get(format!("{}{path}", server.admin));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let prefix = &TOKEN[..TOKEN.len() - 1];
    let longer = format!("{TOKEN}x");
    for token in [
        None,
        Some("wrong-token"),
        Some(prefix),
        Some(longer.as_str()),
    ] {
        for path in ["/promotions".to_string(), format!("/promotions/{id}")] {
            let response = get(&path, token).await.unwrap();
            assert_eq!(response.status(), 401, "{token:?} {path}");
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            let body = response.text().await.unwrap();
            assert!(
                !body.contains(&id) && !body.contains("podinfo"),
                "a refusal carries no data: {body}"
            );
        }
    }
    let response = get("/promotions", Some(TOKEN)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains(&id));
    let response = get(&format!("/promotions/{id}"), Some(TOKEN))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for path in ["/healthz", "/readyz", "/metrics"] {
        let response = get(path, None).await.unwrap();
        assert_eq!(response.status(), 200, "{path} stays open");
    }

    // The CLI: refused without the token, with a hint; lists with --token-file (or its
    // environment twin).
    let (ok, _, err) = cli(&server, &dir, &["list"], &[]);
    assert!(
        !ok && err.contains("401") && err.contains("--token-file"),
        "{err}"
    );
    let (ok, out, err) = cli(&server, &dir, &["list", "--token-file", token_arg], &[]);
    assert!(ok && out.contains(&id), "{out}\n{err}");
    let (ok, out, err) = cli(
        &server,
        &dir,
        &["show", &id],
        &[("PROMOTER_TOKEN_FILE", token_arg)],
    );
    assert!(ok && out.contains("\"phase\""), "{out}\n{err}");

    // Rotated: the new token works at once, without a restart; the old one no longer.
    let rotated = "rotated-admin-token-for-tests-fedcba9876543210";
    std::fs::write(&token_file, rotated).unwrap();
    assert_eq!(get("/promotions", Some(TOKEN)).await.unwrap().status(), 401);
    assert_eq!(
        get("/promotions", Some(rotated)).await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn without_a_token_file_the_admin_api_says_it_answers_loopback_callers_only() {
    let ci = Receiver::start(202, "queued").await;
    let dir = scratch("tenants-admin-loopback");
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    write_manifests(&manifests, &ci.url("/job/promote"));
    let server = Server::start(&manifests, &dir.join("data"), &[]);
    assert!(
        server.logs().contains("answers loopback callers only"),
        "the start-up log says who the admin API answers:\n{}",
        server.logs()
    );
    // This test's connection comes from 127.0.0.1: answered, and so is the CLI.
    assert!(server.promotions().await.is_empty());
    let (ok, out, err) = cli(&server, &dir, &["list"], &[]);
    assert!(ok && out.starts_with("ID"), "{out}\n{err}");
}
