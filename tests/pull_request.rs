//! The pull-request strategy end to end: the real binary, a real git server
//! (git http-backend behind basic auth) and a fake GitHub API that checks every request
//! against GitHub's documented REST API and refuses anything else.

mod support;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, patch};
use axum::{Json, Router};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use support::{
    PASSWORD, Server, USER, base64_encode, deployed_in_dev, git, git_server, scratch,
    ssh_git_server,
};

const TOKEN: &str = "ghp_test_token_123";

#[derive(Default)]
struct Forge {
    /// Create requests to stall without creating anything (the far side hangs).
    hold_creates: usize,
    /// Requests to answer with GitHub's secondary rate limit (429, Retry-After: 1).
    rate_limit: usize,
    pulls: Vec<Value>,
    /// Every request as "METHOD path".
    log: Vec<String>,
    /// Requests the fake refused, with why.
    refused: Vec<String>,
}

type Shared = Arc<Mutex<Forge>>;

/// GitHub's REST API requires these on every call (docs: "Getting started with the REST API").
fn check_headers(
    forge: &Shared,
    what: &str,
    headers: &HeaderMap,
) -> Result<(), (StatusCode, Json<Value>)> {
    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("");
    let problem = if header("authorization") != format!("Bearer {TOKEN}") {
        Some((StatusCode::UNAUTHORIZED, "Bad credentials"))
    } else if !header("accept").contains("application/vnd.github+json") {
        Some((
            StatusCode::BAD_REQUEST,
            "Accept must be application/vnd.github+json",
        ))
    } else if header("user-agent").is_empty() {
        Some((StatusCode::FORBIDDEN, "User-Agent required"))
    } else if header("x-github-api-version") != "2022-11-28" {
        Some((
            StatusCode::BAD_REQUEST,
            "X-GitHub-Api-Version must be 2022-11-28",
        ))
    } else {
        None
    };
    match problem {
        Some((status, message)) => {
            forge
                .lock()
                .unwrap()
                .refused
                .push(format!("{what}: {message}"));
            Err((status, Json(json!({"message": message}))))
        }
        None => Ok(()),
    }
}

async fn list(
    State(forge): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<axum::response::Response, (StatusCode, Json<Value>)> {
    check_headers(&forge, "GET pulls", &headers)?;
    let mut f = forge.lock().unwrap();
    if f.rate_limit > 0 {
        f.rate_limit -= 1;
        f.log.push("429".into());
        return Ok((
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            Json(json!({"message": "You have exceeded a secondary rate limit."})),
        )
            .into_response());
    }
    f.log.push(format!("GET /repos/{owner}/{repo}/pulls"));
    let head = q.get("head").cloned().unwrap_or_default();
    let base = q.get("base").cloned();
    let open: Vec<Value> = f
        .pulls
        .iter()
        .filter(|p| q.get("state").map(String::as_str) == Some("open") && p["state"] == "open")
        .filter(|p| {
            head.is_empty() || format!("{owner}:{}", p["head"]["ref"].as_str().unwrap()) == head
        })
        .filter(|p| base.as_deref().is_none_or(|b| p["base"]["ref"] == b))
        .cloned()
        .collect();
    Ok(Json(Value::Array(open)).into_response())
}

async fn create(
    State(forge): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<(StatusCode, Json<Value>), (StatusCode, Json<Value>)> {
    check_headers(&forge, "POST pulls", &headers)?;
    let held = {
        let mut f = forge.lock().unwrap();
        f.log.push(format!("POST /repos/{owner}/{repo}/pulls"));
        let held = f.hold_creates > 0;
        f.hold_creates = f.hold_creates.saturating_sub(1);
        held
    };
    if held {
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    }
    let mut f = forge.lock().unwrap();
    for field in ["title", "head", "base"] {
        if !body[field].is_string() {
            f.refused.push(format!("POST pulls without {field}"));
            return Err((
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"message": format!("{field} is missing")})),
            ));
        }
    }
    if f.pulls
        .iter()
        .any(|p| p["head"]["ref"] == body["head"] && p["state"] == "open")
    {
        return Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(
                json!({"message": "Validation Failed", "errors": [{"message": format!("A pull request already exists for {owner}:{}.", body["head"].as_str().unwrap())}]}),
            ),
        ));
    }
    let number = f.pulls.len() as u64 + 1;
    let pr = json!({
        "number": number, "state": "open",
        "html_url": format!("https://github.example/{owner}/{repo}/pull/{number}"),
        "title": body["title"], "body": body["body"],
        "head": {"ref": body["head"]}, "base": {"ref": body["base"]},
    });
    f.pulls.push(pr.clone());
    Ok((StatusCode::CREATED, Json(pr)))
}

async fn update(
    State(forge): State<Shared>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    check_headers(&forge, "PATCH pull", &headers)?;
    let mut f = forge.lock().unwrap();
    f.log
        .push(format!("PATCH /repos/{owner}/{repo}/pulls/{number}"));
    let Some(pr) = f.pulls.iter_mut().find(|p| p["number"] == number) else {
        return Err((StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))));
    };
    for field in ["title", "body"] {
        if let Some(v) = body.get(field) {
            pr[field] = v.clone();
        }
    }
    Ok(Json(pr.clone()))
}

async fn fake_github() -> (String, Shared) {
    let forge: Shared = Arc::default();
    let refused = forge.clone();
    let app = Router::new()
        .route("/repos/{owner}/{repo}/pulls", get(list).post(create))
        .route("/repos/{owner}/{repo}/pulls/{number}", patch(update))
        .fallback(move |req: axum::extract::Request| {
            let refused = refused.clone();
            async move {
                refused
                    .lock()
                    .unwrap()
                    .refused
                    .push(format!("{} {}", req.method(), req.uri()));
                (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"})))
            }
        })
        .with_state(forge.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, forge)
}

/// A git server, a fake GitHub (prepared by `forge_setup`) and Promoter serving a
/// pipeline whose promotions into test open pull requests with `token`.
async fn start_promoter(
    name: &str,
    token: &str,
    forge_setup: impl FnOnce(&mut Forge),
) -> (support::GitServer, Shared, Server) {
    let repo = git_server(&format!("{name}-git"));
    let creds = format!("stringData: {{username: {USER}, password: {PASSWORD}, token: {token}}}");
    let (forge, server) = serve(name, &repo.url, &creds, forge_setup).await;
    (repo, forge, server)
}

/// A fake GitHub (prepared by `forge_setup`) and Promoter serving a pipeline whose
/// promotions into test open pull requests on `repo_url`, with the git-creds Secret's
/// data given as YAML.
async fn serve(
    name: &str,
    repo_url: &str,
    creds: &str,
    forge_setup: impl FnOnce(&mut Forge),
) -> (Shared, Server) {
    let (api, forge) = fake_github().await;
    forge_setup(&mut forge.lock().unwrap());
    let dir = scratch(name);
    let m = dir.join("manifests");
    std::fs::create_dir_all(&m).unwrap();
    support::pull_request_pipeline(&m, repo_url, &api, creds);
    let server = Server::start(&m, &dir.join("data"), &[]);
    (forge, server)
}

#[tokio::test]
async fn a_signed_event_opens_one_pull_request_with_exactly_the_marked_value_changed_and_updates_it_later()
 {
    let (repo, forge, server) = start_promoter("pr", TOKEN, |_| {}).await;

    let (status, text) = deployed_in_dev(&server, "6.5.4").await;
    assert_eq!(status, 202, "{text}");
    let all = server
        .wait_for("pull request promotion", |all| {
            all[0]["phase"] == "succeeded" || all[0]["phase"] == "failed"
        })
        .await;
    assert_eq!(all[0]["phase"], "succeeded", "{all:#?}\n{}", server.logs());
    assert_eq!(
        all[0]["outcomeUrl"],
        "https://github.example/org/config/pull/1"
    );

    let bare = repo.root.join("org/config.git");
    let branch = "promotion-flux-system-podinfo-test";
    assert_eq!(
        git(&bare, &["show", &format!("{branch}:apps/podinfo.yaml")]) + "\n",
        "spec:\n  chart:\n    spec:\n      version: 6.5.4 # {\"$promotion\": \"flux-system:podinfo:test\"}\n",
        "only the marked value changed, every other byte kept"
    );
    assert_eq!(
        git(&bare, &["log", "-1", "--format=%s", branch]),
        "promoting version"
    );
    {
        let f = forge.lock().unwrap();
        assert!(
            f.refused.is_empty(),
            "the fake GitHub refused: {:?}",
            f.refused
        );
        assert_eq!(f.pulls.len(), 1);
        assert_eq!(
            f.pulls[0]["title"],
            "Promote flux-system/podinfo in test to 6.5.4"
        );
        assert!(
            f.pulls[0]["body"]
                .as_str()
                .unwrap()
                .contains("flux-system/podinfo/test"),
            "Weave's metadata block"
        );
        assert_eq!(
            f.log,
            vec![
                "GET /repos/org/config/pulls",
                "POST /repos/org/config/pulls"
            ]
        );
    }

    // The next version updates the same pull request and branch: still one PR.
    let (status, _) = deployed_in_dev(&server, "6.5.5").await;
    assert_eq!(status, 202);
    server
        .wait_for("second promotion", |all| {
            all.len() == 2 && all.iter().all(|p| p["phase"] == "succeeded")
        })
        .await;
    {
        let f = forge.lock().unwrap();
        assert!(f.refused.is_empty(), "{:?}", f.refused);
        assert_eq!(f.pulls.len(), 1, "no duplicate pull request");
        assert_eq!(
            f.pulls[0]["title"],
            "Promote flux-system/podinfo in test to 6.5.5"
        );
        assert_eq!(f.log.last().unwrap(), "PATCH /repos/org/config/pulls/1");
    }
    assert!(
        git(&bare, &["show", &format!("{branch}:apps/podinfo.yaml")]).contains("version: 6.5.5 #")
    );

    let logs = server.logs();
    for secret in [PASSWORD, TOKEN] {
        assert!(!logs.contains(secret), "a credential reached the logs");
    }
    let listing = serde_json::to_string(&server.promotions().await).unwrap();
    assert!(!listing.contains(TOKEN) && !listing.contains(PASSWORD));
}

#[tokio::test]
async fn a_wrong_forge_token_fails_the_promotion_permanently_with_a_clear_message() {
    let (_repo, forge, server) = start_promoter("pr-badtoken", "ghp_revoked", |_| {}).await;
    deployed_in_dev(&server, "6.5.4").await;
    let all = server
        .wait_for("failure", |all| all[0]["phase"] == "failed")
        .await;
    assert_eq!(all[0]["attempts"], 1, "an auth failure is not retried");
    let error = all[0]["lastError"].as_str().unwrap();
    assert!(error.contains("token"), "{error}");
    assert!(!error.contains("ghp_revoked"), "{error}");
    assert!(forge.lock().unwrap().pulls.is_empty());
}

#[tokio::test]
async fn a_kill_9_between_push_and_pull_request_ends_with_one_pull_request_and_no_empty_commit() {
    let (repo, forge, mut server) = start_promoter("pr-kill", TOKEN, |f| f.hold_creates = 1).await;
    deployed_in_dev(&server, "6.5.4").await;

    // Wait until the branch is pushed and the create call hangs, then kill.
    for _ in 0..200 {
        if forge
            .lock()
            .unwrap()
            .log
            .iter()
            .any(|l| l.starts_with("POST"))
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(
        forge
            .lock()
            .unwrap()
            .log
            .iter()
            .any(|l| l.starts_with("POST")),
        "{}",
        server.logs()
    );
    let bare = repo.root.join("org/config.git");
    let branch = "promotion-flux-system-podinfo-test";
    let pushed = git(&bare, &["rev-parse", branch]);
    server.kill();
    server.restart();

    let all = server
        .wait_for("resumed promotion", |all| all[0]["phase"] == "succeeded")
        .await;
    assert_eq!(all[0]["attempts"], 2);
    let f = forge.lock().unwrap();
    assert!(f.refused.is_empty(), "{:?}", f.refused);
    assert_eq!(f.pulls.len(), 1, "exactly one pull request");
    assert_eq!(
        git(&bare, &["rev-parse", branch]),
        pushed,
        "the retry pushed nothing: no empty or duplicate commit"
    );
    assert_eq!(
        git(&bare, &["rev-list", "--count", &format!("main..{branch}")]),
        "1"
    );
}

#[tokio::test]
async fn a_rate_limited_forge_delays_the_promotion_which_then_completes() {
    let (_repo, forge, server) = start_promoter("pr-429", TOKEN, |f| f.rate_limit = 1).await;
    deployed_in_dev(&server, "6.5.4").await;
    let all = server
        .wait_for("promotion after the rate limit", |all| {
            all[0]["phase"] == "succeeded"
        })
        .await;
    assert_eq!(
        all[0]["attempts"], 2,
        "one rate-limited attempt, then success"
    );
    let f = forge.lock().unwrap();
    assert_eq!(f.log.first().map(String::as_str), Some("429"));
    assert_eq!(f.pulls.len(), 1);
}

/// The Secret Weave documents for SSH: `identity` and `known_hosts` for git, `token` for
/// the forge's API.
fn ssh_creds(identity: &str, known_hosts: &str) -> String {
    format!(
        "data: {{identity: {}, known_hosts: {}, token: {}}}",
        base64_encode(identity.as_bytes()),
        base64_encode(known_hosts.as_bytes()),
        base64_encode(TOKEN.as_bytes())
    )
}

#[tokio::test]
async fn over_ssh_a_real_sshd_serves_the_clone_and_push_with_the_secrets_key_and_host_key() {
    let repo = ssh_git_server("pr-ssh-git");
    let creds = ssh_creds(&repo.identity, &repo.known_hosts);
    let (forge, server) = serve("pr-ssh", &repo.url, &creds, |_| {}).await;

    let (status, text) = deployed_in_dev(&server, "6.5.4").await;
    assert_eq!(status, 202, "{text}");
    let all = server
        .wait_for("promotion over ssh", |all| {
            all[0]["phase"] == "succeeded" || all[0]["phase"] == "failed"
        })
        .await;
    assert_eq!(
        all[0]["phase"],
        "succeeded",
        "{all:#?}\n{}\nsshd: {}",
        server.logs(),
        std::fs::read_to_string(repo.root.join("sshd.log")).unwrap_or_default()
    );
    let bare = repo.root.join("org/config.git");
    let branch = "promotion-flux-system-podinfo-test";
    assert_eq!(
        git(&bare, &["show", &format!("{branch}:apps/podinfo.yaml")]) + "\n",
        "spec:\n  chart:\n    spec:\n      version: 6.5.4 # {\"$promotion\": \"flux-system:podinfo:test\"}\n",
    );
    {
        let f = forge.lock().unwrap();
        assert!(f.refused.is_empty(), "{:?}", f.refused);
        assert_eq!(f.pulls.len(), 1);
        assert_eq!(f.pulls[0]["head"]["ref"], branch);
    }
    // sshd saw our key, not a password or an agent.
    let sshd = std::fs::read_to_string(repo.root.join("sshd.log")).unwrap();
    assert!(sshd.contains("Accepted publickey"), "{sshd}");

    // The private key is in no log line and no status; the key file the host wrote for
    // ssh is gone once the call is over.
    let key_body = repo.identity.lines().nth(1).unwrap();
    assert!(!server.logs().contains(key_body));
    let listing = serde_json::to_string(&server.promotions().await).unwrap();
    assert!(!listing.contains(key_body));
    let data = server.data_dir();
    let leftover: Vec<_> = support::files_under(&data)
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(p)
                .map(|t| t.contains(key_body))
                .unwrap_or(false)
        })
        .collect();
    assert!(
        leftover.is_empty(),
        "key material left on disk: {leftover:?}"
    );
}

#[tokio::test]
async fn over_ssh_a_host_key_that_does_not_match_known_hosts_fails_permanently_and_pushes_nothing()
{
    let repo = ssh_git_server("pr-ssh-mitm-git");
    let creds = ssh_creds(&repo.identity, &repo.wrong_known_hosts);
    let (forge, server) = serve("pr-ssh-mitm", &repo.url, &creds, |_| {}).await;

    deployed_in_dev(&server, "6.5.4").await;
    let all = server
        .wait_for("refused host key", |all| all[0]["phase"] == "failed")
        .await;
    assert_eq!(all[0]["attempts"], 1, "a host key mismatch is not retried");
    let error = all[0]["lastError"].as_str().unwrap();
    assert!(
        error.contains("known_hosts"),
        "the message names the key to fix: {error}"
    );
    let bare = repo.root.join("org/config.git");
    assert_eq!(
        git(&bare, &["branch", "--list"]),
        "* main",
        "nothing pushed"
    );
    assert!(forge.lock().unwrap().pulls.is_empty());
}

#[tokio::test]
async fn over_ssh_a_key_the_server_does_not_authorize_fails_permanently_naming_its_fingerprint() {
    let repo = ssh_git_server("pr-ssh-key-git");
    let creds = ssh_creds(&repo.stranger_identity, &repo.known_hosts);
    let (forge, server) = serve("pr-ssh-key", &repo.url, &creds, |_| {}).await;

    deployed_in_dev(&server, "6.5.4").await;
    let all = server
        .wait_for("refused key", |all| all[0]["phase"] == "failed")
        .await;
    assert_eq!(all[0]["attempts"], 1, "a refused key is not retried");
    let error = all[0]["lastError"].as_str().unwrap();
    assert!(
        error.contains("identity"),
        "the message names the key to fix: {error}"
    );
    assert!(
        error.contains("SHA256:"),
        "and its fingerprint, to find it on the forge: {error}"
    );
    let key_body = repo.stranger_identity.lines().nth(1).unwrap();
    assert!(!error.contains(key_body) && !server.logs().contains(key_body));
    assert!(forge.lock().unwrap().pulls.is_empty());
}
