//! Hostile tenants: repository content and git remotes (see main.rs).
//!
//! Repository content is untrusted (anyone who can push to the configuration repository),
//! so is the plugin that edits it, and so is the remote a Pipeline names. The plugin-side
//! attacks run the `git-editor` fixture (a plugin that reads and writes what its config
//! says through the git capability) in the host's runtime against a real git server on
//! loopback and the real `git`; the Pipeline-side ones run the real binary with the
//! built-in pull-request strategy.

use crate::support::{
    self, PASSWORD, Receiver, Server, USER, deployed_in_dev, git, git_server, scratch, serve_fails,
};
use promoter::runtime::egress::Grant;
use promoter::runtime::git::{GitAuth, GitRemote};
use promoter::runtime::limits::Limits;
use promoter::runtime::secret::Secret;
use promoter::runtime::{Plugin, Runtime, RuntimeConfig};
use std::path::Path;
use std::sync::Arc;

/// Pushes a commit made by `change` to the served repository's main branch, as anyone
/// with push access to the configuration repository could.
fn push_to_main(repo: &support::GitServer, change: impl FnOnce(&Path)) {
    let work = scratch("attacker");
    let bare = repo.root.join("org/config.git");
    git(
        &work,
        &["clone", "--quiet", bare.to_str().unwrap(), "checkout"],
    );
    let checkout = work.join("checkout");
    change(&checkout);
    git(&checkout, &["add", "--all"]);
    git(
        &checkout,
        &[
            "-c",
            "user.name=Attacker",
            "-c",
            "user.email=attacker@example.invalid",
            "commit",
            "--quiet",
            "-m",
            "innocent change",
        ],
    );
    git(&checkout, &["push", "--quiet", "origin", "main"]);
}

/// The git-editor fixture with `repo` granted (and loopback allowed: the server is there).
async fn git_editor(work: &Path, repo: &support::GitServer) -> Plugin {
    promoter::install_crypto_provider();
    let runtime = Arc::new(
        Runtime::new(RuntimeConfig {
            cache_dir: None,
            git_dir: Some(work.to_path_buf()),
            ..Default::default()
        })
        .unwrap(),
    );
    let wasm = std::fs::read(env!("PROMOTER_WASM_FIXTURE_GIT_EDITOR")).unwrap();
    let grant = Grant {
        repos: vec![GitRemote {
            url: repo.url.clone(),
            auth: GitAuth::Basic {
                username: USER.into(),
                password: Secret::from(PASSWORD),
            },
            ca: None,
        }],
        private_networks: true,
        ..Grant::default()
    };
    runtime
        .load("git-editor", &wasm, grant, Limits::default())
        .await
        .unwrap()
}

/// What the plugin made of the promotion: its details, or its error.
async fn edit(plugin: &Plugin, config: serde_json::Value) -> String {
    let mut json = support::promotion_json("hostile-1");
    json["config"] = config;
    let request = serde_json::from_value(json).unwrap();
    match plugin.promote(&request).await {
        Ok(promoter::promotion::Outcome::Done { details, .. }) => details.unwrap_or_default(),
        Ok(other) => format!("{other:?}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn a_committed_symlink_into_dot_git_cannot_switch_on_fsmonitor() {
    let repo = git_server("tenant-fsmonitor");
    push_to_main(&repo, |checkout| {
        std::os::unix::fs::symlink(".git", checkout.join("g")).unwrap();
    });
    let marker = scratch("tenant-fsmonitor-marker").join("fsmonitor-ran");
    let work = scratch("tenant-fsmonitor-work");
    let plugin = git_editor(&work, &repo).await;

    // Through the link, append `core.fsmonitor` (a command git runs on `git add`) to the
    // working copy's own configuration, then commit.
    let said = edit(
        &plugin,
        serde_json::json!({
            "url": repo.url, "branch": "main", "head": "promotion-hostile",
            "file": "g/config", "from": "[core]",
            "to": format!("[core]\n\tfsmonitor = \"touch {}\"", marker.display()),
        }),
    )
    .await;

    assert!(
        !marker.exists(),
        "the host ran the command the repository planted: {said}"
    );
    assert!(
        said.contains("g/config") && said.contains("symbolic link"),
        "the plugin is told why: {said}"
    );
    for config in support::files_under(&work)
        .into_iter()
        .filter(|p| p.ends_with(".git/config"))
    {
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(!text.contains("fsmonitor"), "{}: {text}", config.display());
    }
}

#[tokio::test]
async fn a_committed_symlink_to_a_host_file_cannot_be_read() {
    const TOKEN: &str = "service-account-token-of-the-controller";
    let host = scratch("tenant-host-secret");
    let secret = host.join("token");
    std::fs::write(&secret, TOKEN).unwrap();
    let repo = git_server("tenant-host-file");
    push_to_main(&repo, |checkout| {
        std::os::unix::fs::symlink(&secret, checkout.join("token")).unwrap();
        std::os::unix::fs::symlink(&host, checkout.join("host")).unwrap();
    });
    let plugin = git_editor(&scratch("tenant-host-file-work"), &repo).await;

    for file in ["token", "host/token"] {
        let said = edit(
            &plugin,
            serde_json::json!({
                "url": repo.url, "branch": "main", "head": "promotion-hostile",
                "file": file, "from": "nothing-to-replace", "to": "",
            }),
        )
        .await;
        assert!(!said.contains(TOKEN), "{file}: the plugin read it: {said}");
    }
    let history = git(
        &repo.root.join("org/config.git"),
        &["log", "--all", "-p", "--format=%H"],
    );
    assert!(
        !history.contains(TOKEN),
        "the host file was pushed: {history}"
    );
}

/// A Pipeline promoting into test with the pull-request strategy on `repo_url`, with
/// basic credentials from the Secret git-creds. Its owner means it for this repository and
/// forge: only the rule under test stands between the credentials and elsewhere.
fn pull_request_pipeline(dir: &Path, repo_url: &str, api: &str) {
    let creds = format!("stringData: {{username: {USER}, password: {PASSWORD}}}");
    support::pull_request_pipeline(dir, repo_url, api, &creds);
}

/// Dev reports a version; waits until the promotion into test has an error, returns it.
async fn promotion_error(server: &Server) -> String {
    let (status, body) = deployed_in_dev(server, "6.5.4").await;
    assert_eq!(status, 202, "{body}");
    let all = server
        .wait_for("the promotion's error", |all| {
            all.first().is_some_and(|p| p["lastError"].is_string())
        })
        .await;
    all[0]["lastError"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_redirect_from_the_git_remote_does_not_carry_credentials_to_another_host() {
    // The other host records what reaches it; the remote answers every request with a
    // redirect there, as a compromised or hostile forge would.
    let other = Receiver::start(200, "").await;
    let remote = Receiver::start(302, "").await;
    let location = other.url("/org/config.git/info/refs?service=git-upload-pack");
    let redirect: &[(&str, &str)] = &[("location", location.as_str())];
    remote.then_answer(&[(302, redirect); 16]);
    let api = Receiver::start(200, "[]").await;

    let dir = scratch("tenant-redirect");
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    pull_request_pipeline(&manifests, &remote.url("/org/config.git"), &api.origin());
    let server = Server::start(&manifests, &dir.join("data"), &[]);

    let error = promotion_error(&server).await;
    assert!(
        !remote.received().is_empty(),
        "the remote was asked: {error}"
    );
    let leaked: Vec<_> = other
        .received()
        .iter()
        .map(|r| {
            format!(
                "{} {} authorization={:?}",
                r.method,
                r.path,
                r.header("authorization")
            )
        })
        .collect();
    assert!(
        leaked.is_empty(),
        "git followed the redirect to another host: {leaked:?}"
    );
    assert!(error.contains("redirect"), "{error}");
    assert!(!error.contains(PASSWORD), "{error}");
}

#[tokio::test]
async fn a_pipeline_git_remote_at_a_literal_loopback_address_is_refused_without_builtin_private_networks()
 {
    let dir = scratch("tenant-git-loopback");
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    // 127.0.0.1:15000: a sidecar's admin port, say.
    let remote = "http://127.0.0.1:15000/org/config.git";
    pull_request_pipeline(&manifests, remote, "https://api.github.example");
    let said = serve_fails(&manifests, &dir.join("data"), &[]);
    assert!(
        said.contains("Pipeline flux-system/podinfo: promotion into test"),
        "{said}"
    );
    assert!(
        said.contains(remote) && said.contains("internal address 127.0.0.1"),
        "{said}"
    );
    assert!(said.contains("--builtin-private-networks"), "{said}");
}

#[tokio::test]
async fn a_pipeline_git_remote_whose_name_resolves_to_loopback_is_refused_without_builtin_private_networks()
 {
    let repo = git_server("tenant-git-localhost");
    let by_name = repo.url.replace("127.0.0.1", "localhost");
    let dir = scratch("tenant-git-localhost");
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    pull_request_pipeline(&manifests, &by_name, "https://api.github.example");
    let server = Server::start_with_env(
        &manifests,
        &dir.join("data"),
        &[],
        &[support::PRIVATE_NETWORKS_OFF],
    );

    let error = promotion_error(&server).await;
    assert!(error.contains(&by_name), "{error}");
    assert!(
        error.contains("localhost resolves to internal address"),
        "{error}"
    );
    assert!(error.contains("--builtin-private-networks"), "{error}");
    let bare = repo.root.join("org/config.git");
    assert_eq!(
        git(&bare, &["branch", "--list", "promotion-*"]),
        "",
        "nothing was pushed"
    );
}

#[tokio::test]
async fn a_remote_url_with_credentials_is_refused_without_showing_them() {
    let dir = scratch("tenant-git-userinfo");
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let remote = "https://promoter-bot:s3cret-in-the-url@git.example/org/config.git";
    pull_request_pipeline(&manifests, remote, "https://api.github.example");
    let said = serve_fails(&manifests, &dir.join("data"), &[]);
    assert!(
        said.contains("Pipeline flux-system/podinfo: promotion into test"),
        "{said}"
    );
    assert!(
        said.contains("https://***@git.example/org/config.git carries credentials"),
        "{said}"
    );
    assert!(said.contains("secretRef"), "says where they belong: {said}");
    assert!(!said.contains("s3cret-in-the-url"), "{said}");
}

#[tokio::test]
async fn a_clone_over_the_size_cap_is_refused_and_leaves_nothing_behind() {
    let repo = git_server("tenant-git-big");
    push_to_main(&repo, |checkout| {
        // 3 MiB that do not compress: a pack as large as the files.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let bytes: Vec<u8> = (0..3 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(checkout.join("big.bin"), bytes).unwrap();
    });
    let api = Receiver::start(200, "[]").await;
    let dir = scratch("tenant-git-big");
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    pull_request_pipeline(&manifests, &repo.url, &api.origin());
    let server = Server::start(&manifests, &dir.join("data"), &["--git-max-size", "1MiB"]);

    let error = promotion_error(&server).await;
    assert!(error.contains("limit of 1 MiB"), "{error}");
    assert!(error.contains("--git-max-size"), "{error}");
    let all = server
        .wait_for("the promotion to fail", |all| all[0]["phase"] == "failed")
        .await;
    assert_eq!(all[0]["attempts"], 1, "a refusal is not retried");
    let left: Vec<_> = support::files_under(&dir.join("data/git"))
        .into_iter()
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(api.received().is_empty(), "the forge was never called");
}
