//! The host's git capability against a real git server (`git http-backend` behind basic
//! auth on loopback), driven by a fixture plugin built from this repository.

mod support;

use promoter::promotion::Outcome;
use promoter::runtime::egress::Grant;
use promoter::runtime::git::{GitAuth, GitRemote};
use promoter::runtime::limits::Limits;
use promoter::runtime::secret::Secret;
use promoter::runtime::{PluginError, Runtime, RuntimeConfig};
use std::path::Path;
use std::sync::Arc;
use support::{PASSWORD, USER, git, git_server, promotion_json, scratch};

fn grant(url: &str, password: &str) -> Grant {
    Grant {
        repos: vec![GitRemote {
            url: url.to_string(),
            auth: GitAuth::Basic {
                username: USER.into(),
                password: Secret::from(password),
            },
            ca: None,
        }],
        // The test server listens on loopback.
        private_networks: true,
        ..Grant::default()
    }
}

fn request(config: serde_json::Value) -> promoter::promotion::PromotionRequest {
    let mut json = promotion_json("git-1");
    json["config"] = config;
    serde_json::from_value(json).unwrap()
}

fn edit(url: &str) -> serde_json::Value {
    serde_json::json!({
        "url": url, "branch": "main", "head": "promotion-flux-system-podinfo-test",
        "file": "apps/podinfo.yaml", "from": "6.5.3", "to": "6.5.4"
    })
}

fn runtime(git_dir: &Path) -> Arc<Runtime> {
    promoter::install_crypto_provider();
    Arc::new(
        Runtime::new(RuntimeConfig {
            cache_dir: None,
            git_dir: Some(git_dir.to_path_buf()),
            ..Default::default()
        })
        .unwrap(),
    )
}

#[tokio::test]
async fn a_plugin_edits_commits_and_pushes_a_branch_with_credentials_it_never_sees() {
    let server = git_server("git-push");
    let work = scratch("git-work");
    let rt = runtime(&work);
    let wasm = std::fs::read(env!("PROMOTER_WASM_FIXTURE_GIT_EDITOR")).unwrap();
    let plugin = rt
        .load(
            "git-editor",
            &wasm,
            grant(&server.url, PASSWORD),
            Limits::default(),
        )
        .await
        .unwrap();

    let outcome = plugin.promote(&request(edit(&server.url))).await.unwrap();
    let Outcome::Done { details, .. } = outcome else {
        panic!("done expected")
    };
    let details = details.unwrap();
    assert!(details.contains("pushed=true"), "{details}");
    assert!(details.contains("files=apps/podinfo.yaml"), "{details}");

    let bare = server.root.join("org/config.git");
    let pushed = git(
        &bare,
        &[
            "show",
            "promotion-flux-system-podinfo-test:apps/podinfo.yaml",
        ],
    );
    assert_eq!(
        pushed,
        "spec:\n  chart:\n    spec:\n      version: 6.5.4 # {\"$promotion\": \"flux-system:podinfo:test\"}"
    );
    assert!(
        git(&bare, &["show", "main:apps/podinfo.yaml"]).contains("6.5.3"),
        "main is untouched"
    );
    assert_eq!(
        git(
            &bare,
            &[
                "log",
                "--format=%an <%ae> %s",
                "-1",
                "promotion-flux-system-podinfo-test"
            ]
        ),
        "Promoter <promoter@example.invalid> promoting version"
    );

    // The same promotion again: the working copy is reused, the branch already has
    // this tree, so nothing is pushed.
    let cached: Vec<_> = std::fs::read_dir(work.join("repos")).unwrap().collect();
    assert_eq!(
        cached.len(),
        1,
        "one cached working copy for the repository"
    );
    let outcome = plugin.promote(&request(edit(&server.url))).await.unwrap();
    let Outcome::Done { details, .. } = outcome else {
        panic!("done expected")
    };
    assert!(
        details.as_deref().unwrap().contains("pushed=false"),
        "{details:?}"
    );
    assert_eq!(
        git(
            &bare,
            &["rev-list", "--count", "promotion-flux-system-podinfo-test"]
        ),
        "2",
        "no second commit on the branch"
    );

    // Nothing in the working copy or its config holds the password.
    for entry in support::files_under(&work) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(PASSWORD),
            "{} holds the password",
            entry.display()
        );
    }
}

#[tokio::test]
async fn a_wrong_password_is_a_permanent_unauthorized_error_that_does_not_echo_it() {
    let server = git_server("git-auth");
    let rt = runtime(&scratch("git-work-auth"));
    let wasm = std::fs::read(env!("PROMOTER_WASM_FIXTURE_GIT_EDITOR")).unwrap();
    let plugin = rt
        .load(
            "git-editor",
            &wasm,
            grant(&server.url, "wrong-password"),
            Limits::default(),
        )
        .await
        .unwrap();
    let err = plugin
        .promote(&request(edit(&server.url)))
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    let text = err.to_string();
    assert!(text.contains("unauthorized"), "{text}");
    assert!(!text.contains("wrong-password"), "{text}");
}

#[tokio::test]
async fn a_repository_not_granted_cannot_be_opened() {
    let server = git_server("git-denied");
    let rt = runtime(&scratch("git-work-denied"));
    let wasm = std::fs::read(env!("PROMOTER_WASM_FIXTURE_GIT_EDITOR")).unwrap();
    let other = server.url.replace("/config.git", "/other.git");
    let plugin = rt
        .load(
            "git-editor",
            &wasm,
            grant(&other, PASSWORD),
            Limits::default(),
        )
        .await
        .unwrap();
    let err = plugin
        .promote(&request(edit(&server.url)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PluginError::CapabilityDenied { origin: Some(o), .. } if o == &server.url),
        "{err}"
    );
}
