//! The pull-request strategy end to end on GitHub Enterprise Server, GitLab, Gitea (Forgejo),
//! Bitbucket Server and Azure DevOps: the real binary and a fake of each forge that serves the repository (the
//! real `git http-backend`) and the API on one origin, checks every request against the
//! forge's documentation and refuses anything else in the forge's own error shape
//! (tests/support/forges/). Pipelines name the repository `url` alone (no `apiBase`) and
//! their Secrets hold a token alone, as users write them: Promoter must find the API from the
//! URL and authenticate git the way each forge takes a token.
//!
//! Cloud URL shapes (dev.azure.com, ssh.dev.azure.com, www.github.com, *.ghe.com) cannot be
//! reached from a test (no DNS override, no custom CA); the unit tests of
//! `promoter_sdk::forge` and the host's grant test (`plugins.rs`,
//! `the_host_binds_the_token_to_the_origin_the_plugin_calls_for_every_cloud_url_shape`)
//! cover them.

#[path = "support/forges/mod.rs"]
mod fake;
mod support;

use fake::azure::Azure;
use fake::bitbucket::{self, Bitbucket};
use fake::gitea::Gitea;
use fake::github::GitHub;
use fake::gitlab::GitLab;
use fake::{BASE, Dialect, Forge, HEAD, Rig, Setup, TOKEN, assert_files_at, promotion};
use support::{EVENTS_KEY, deployed_in_dev, git, send};

/// The requests one promotion makes, as `METHOD /path STATUS`: the first looks for an open
/// pull request and opens one (#2, after the merged #1); the next finds it, reads it in full
/// when `reread` (a description longer than the list shows), and updates it.
fn expected_requests<D: Dialect>(reread: bool) -> (Vec<String>, Vec<String>) {
    let pulls = D::PULLS;
    let find = format!("GET {pulls} 200");
    let opening = vec![find.clone(), format!("POST {pulls} 201")];
    let mut updating = vec![find];
    if reread {
        updating.push(format!("GET {pulls}/2 200"));
    }
    let (method, status) = D::UPDATE;
    updating.push(format!("{method} {pulls}/2 {status}"));
    (opening, updating)
}

fn commits_on_head(rig: &Rig) -> String {
    git(
        &rig.bare,
        &["rev-list", "--count", &format!("{BASE}..{HEAD}")],
    )
}

/// A signed event opens exactly one pull request with Weave's names whose branch changes
/// exactly the marked values; the same event again changes nothing; a newer version updates
/// the same pull request and branch (one commit, never an empty one). `between` runs on the
/// fake between the two promotions (a person editing the pull request).
async fn one_pull_request_per_environment<D: Dialect>(
    name: &str,
    setup: Setup<'_>,
    between: impl FnOnce(&mut Forge),
) -> Rig {
    let (opening, updating) = expected_requests::<D>(setup.body.is_some());
    let rig = fake::start::<D>(name, setup, |_| {}).await;

    let event =
        promoter::client::deployment_event("HelmRelease", "podinfo-dev", "podinfo", "6.5.4");
    let (status, text) = send(&rig.server, "dev", &event, Some(EVENTS_KEY)).await;
    assert_eq!(status, 202, "{text}");
    let (again, text) = send(&rig.server, "dev", &event, Some(EVENTS_KEY)).await;
    assert_eq!(
        again, 409,
        "the same event delivered twice is a replay: {text}"
    );
    let all = rig.settled("6.5.4").await;
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(
        all[0]["phase"],
        "succeeded",
        "{all:#?}\n{}",
        rig.server.logs()
    );
    assert_eq!(all[0]["attempts"], 1);
    rig.assert_nothing_refused();

    let pr = rig.the_open_one::<D>();
    assert_eq!(pr.head, HEAD, "Weave's head branch");
    assert_eq!(pr.base, BASE);
    assert_eq!(pr.title, "Promote flux-system/podinfo in test to 6.5.4");
    assert!(pr.body.contains("6.5.4"), "{}", pr.body);
    assert!(
        pr.body.contains("flux-system/podinfo/test"),
        "Weave's metadata block: {}",
        pr.body
    );
    assert_eq!(
        pr.number, 2,
        "a new one, not the merged #1 from the same branch"
    );
    assert_eq!(all[0]["outcomeUrl"], pr.url.as_str());
    let merged = &rig.views::<D>()[0];
    assert!(
        !merged.open && merged.title == "Promote an old version",
        "{merged:?}"
    );

    assert_files_at(&rig.bare, HEAD, "6.5.4");
    assert_files_at(&rig.bare, BASE, "6.5.3");
    assert_eq!(commits_on_head(&rig), "1");
    assert_eq!(
        git(&rig.bare, &["log", "-1", "--format=%s", HEAD]),
        "promoting version"
    );
    assert_eq!(rig.forge.lock().unwrap().lines(), opening);
    let pushed = git(&rig.bare, &["rev-parse", HEAD]);

    // The same event once more, and a new event for the same version: nothing happens.
    let (again, text) = send(&rig.server, "dev", &event, Some(EVENTS_KEY)).await;
    assert_eq!(again, 409, "{text}");
    let (status, text) = deployed_in_dev(&rig.server, "6.5.4").await;
    assert!(status == 200 || status == 409, "{status} {text}");
    assert_eq!(rig.server.promotions().await.len(), 1);
    assert_eq!(git(&rig.bare, &["rev-parse", HEAD]), pushed);
    assert_eq!(rig.forge.lock().unwrap().lines(), opening);

    between(&mut rig.forge.lock().unwrap());

    // A newer version: the same pull request, updated; the branch rebuilt as one commit.
    let newer = rig.promote_successfully("6.5.5").await;
    rig.assert_nothing_refused();
    let updated = rig.the_open_one::<D>();
    assert_eq!(updated.number, pr.number, "the same pull request");
    assert_eq!(
        updated.title,
        "Promote flux-system/podinfo in test to 6.5.5"
    );
    assert!(
        updated.body.contains("6.5.5") && !updated.body.contains("6.5.4"),
        "{}",
        updated.body
    );
    assert_eq!(rig.views::<D>().len(), 2, "no other pull request");
    assert_eq!(newer["outcomeUrl"], pr.url.as_str());
    assert_files_at(&rig.bare, HEAD, "6.5.5");
    assert_eq!(commits_on_head(&rig), "1", "no stacked or empty commit");
    let lines = rig.forge.lock().unwrap().lines();
    assert_eq!(lines[..opening.len()], *opening);
    assert_eq!(lines[opening.len()..], *updating);

    rig.assert_no_credential_leaked(TOKEN).await;
    let git = rig.forge.lock().unwrap().git_log.clone();
    assert!(
        git.iter().any(|l| l.contains("/git-receive-pack 200")),
        "the branch was pushed to the forge itself: {git:#?}"
    );
    rig
}

#[tokio::test]
async fn gitlab_one_merge_request_with_exactly_the_marked_values_changed_then_updated() {
    let setup = Setup::typed("gitlab");
    one_pull_request_per_environment::<GitLab>("gitlab", setup, |_| {}).await;
}

#[tokio::test]
async fn gitea_one_pull_request_with_exactly_the_marked_values_changed_then_updated() {
    let setup = Setup::typed("gitea");
    one_pull_request_per_environment::<Gitea>("gitea", setup, |_| {}).await;
}

#[tokio::test]
async fn github_enterprise_server_found_from_the_url_alone_one_pull_request_then_updated() {
    // `type: github` on a server of its own: the API is /api/v3 of the repository's origin.
    let setup = Setup::typed("github");
    one_pull_request_per_environment::<GitHub>("github-enterprise", setup, |_| {}).await;
}

#[tokio::test]
async fn bitbucket_server_inferred_from_the_url_one_pull_request_then_updated_keeping_reviewers() {
    // A token alone: git must send it as Bearer (Basic with a made-up user is refused, as
    // Bitbucket refuses it for project and repository access tokens).
    // No type: a /scm/{project}/{repo} URL is Bitbucket Server's. Someone adds a reviewer
    // between the promotions (which bumps the version); the update must send that version
    // back and keep the reviewer.
    let rig =
        one_pull_request_per_environment::<Bitbucket>("bitbucket", Setup::default(), |forge| {
            bitbucket::add_reviewer(&mut forge.pulls[1], "alice")
        })
        .await;
    let f = rig.forge.lock().unwrap();
    assert_eq!(f.pulls[1]["reviewers"][0]["user"]["name"], "alice");
    assert_eq!(f.pulls[1]["version"], 2, "created 0, reviewer 1, update 2");
}

#[tokio::test]
async fn azure_devops_inferred_from_the_url_one_pull_request_then_updated_reading_the_long_description()
 {
    // No type: a …/_git/{repo} URL is Azure DevOps'. A description longer than the 400
    // characters the list returns must be read in full before it is compared.
    let body = format!(
        "Promotes {{app}} to {{version}} in {{environment}}. {}",
        "Checked by the release train before merging. ".repeat(10)
    );
    let setup = Setup {
        body: Some(&body),
        ..Setup::default()
    };
    let rig = one_pull_request_per_environment::<Azure>("azure", setup, |_| {}).await;
    let pr = rig.the_open_one::<Azure>();
    assert!(
        pr.body.chars().count() > 400,
        "the whole description was sent"
    );
    assert!(
        pr.body.starts_with("Promotes podinfo to 6.5.5 in test."),
        "{}",
        pr.body
    );
}

/// A token the forge does not accept fails the promotion at once, saying which credential to
/// fix, without quoting it.
async fn a_wrong_token_fails_permanently<D: Dialect>(name: &str) {
    const REVOKED: &str = "revoked-pat-0000";
    // git gets the account's password, so the token is first tried by the API.
    let setup = Setup {
        token: REVOKED,
        account: true,
        ..Setup::default()
    };
    let rig = fake::start::<D>(name, setup, |_| {}).await;
    let all = rig.promote("6.5.4").await;
    let failed = promotion(&all, "6.5.4");
    assert_eq!(failed["phase"], "failed", "{all:#?}");
    assert_eq!(failed["attempts"], 1, "a rejected token is not retried");
    let error = failed["lastError"].as_str().unwrap();
    let origin = rig.forge.lock().unwrap().origin.clone();
    assert!(
        error.contains(&format!("rejected the token bound to {origin}"))
            && error.contains("the token in Secret forge-creds, the strategy's secretRef"),
        "{error}"
    );
    assert!(!error.contains(REVOKED), "{error}");
    {
        let f = rig.forge.lock().unwrap();
        assert_eq!(f.refused.len(), 1, "{:?}", f.refused);
        assert!(f.refused[0].contains("credentials"), "{:?}", f.refused);
        assert_eq!(f.pulls.len(), 1, "nothing opened");
    }
    rig.assert_no_credential_leaked(REVOKED).await;
}

#[tokio::test]
async fn bitbucket_server_rejecting_the_token_fails_the_promotion_permanently() {
    a_wrong_token_fails_permanently::<Bitbucket>("bitbucket-401").await;
}

#[tokio::test]
async fn azure_devops_rejecting_the_token_fails_the_promotion_permanently() {
    a_wrong_token_fails_permanently::<Azure>("azure-401").await;
}

/// The forge's rate limit delays the promotion by what it asked (`Retry-After: 1`, far more
/// than the 100 ms retry base), then it completes with one pull request and one commit.
async fn a_rate_limit_delays_then_completes<D: Dialect>(name: &str, forge_type: Option<&str>) {
    let setup = forge_type.map_or_else(Setup::default, Setup::typed);
    let rig = fake::start::<D>(name, setup, |f| f.rate_limit = 1).await;
    let done = rig.promote_successfully("6.5.4").await;
    assert_eq!(
        done["attempts"], 2,
        "one rate-limited attempt, then success"
    );
    rig.assert_nothing_refused();
    {
        let f = rig.forge.lock().unwrap();
        assert!(f.log[0].1.ends_with(" 429"), "{:?}", f.lines());
        let waited = f.log[1].0 - f.log[0].0;
        assert!(
            waited >= std::time::Duration::from_millis(900),
            "retried after {waited:?}, before the forge's Retry-After"
        );
    }
    rig.the_open_one::<D>();
    assert_files_at(&rig.bare, HEAD, "6.5.4");
    assert_eq!(
        commits_on_head(&rig),
        "1",
        "the retry pushed no second commit"
    );
}

#[tokio::test]
async fn gitlab_rate_limit_delays_the_promotion_which_then_completes() {
    a_rate_limit_delays_then_completes::<GitLab>("gitlab-429", Some("gitlab")).await;
}

#[tokio::test]
async fn azure_devops_rate_limit_delays_the_promotion_which_then_completes() {
    a_rate_limit_delays_then_completes::<Azure>("azure-429", None).await;
}

#[tokio::test]
async fn azure_devops_description_over_4000_characters_is_cut_keeping_the_metadata_block() {
    // Azure DevOps refuses a longer description with 400 (the fake does too), which no
    // retry could fix.
    let body = format!("{{app}} {{version}}: {}", "Release notes. ".repeat(400));
    let setup = Setup {
        body: Some(&body),
        ..Setup::default()
    };
    let rig = fake::start::<Azure>("azure-long", setup, |_| {}).await;
    rig.promote_successfully("6.5.4").await;
    rig.assert_nothing_refused();
    let pr = rig.the_open_one::<Azure>();
    assert!(pr.body.chars().count() <= 4000, "{}", pr.body.len());
    assert!(
        pr.body.starts_with("podinfo 6.5.4: Release notes."),
        "{}",
        pr.body
    );
    assert!(
        pr.body
            .trim_end()
            .ends_with("flux-system/podinfo/test\n</details>"),
        "Weave's metadata block survives: {}",
        pr.body
    );
}

/// A Pipeline Promoter cannot serve is refused when it loads, naming the fix, instead of
/// failing each promotion later.
fn refused_at_load(name: &str, url: &str, also: &[&str], setup: Setup<'_>) -> String {
    let dir = support::scratch(name);
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    fake::write_pipeline(&manifests, url, also, &setup);
    support::serve_fails(&manifests, &dir.join("data"), &[])
}

#[tokio::test]
async fn a_token_alone_for_an_ssh_remote_is_refused_at_load_saying_to_add_an_ssh_key() {
    // The API (https://dev.azure.com/acme) could take the token, but git over SSH cannot.
    let refused = refused_at_load(
        "forge-ssh-token",
        "git@ssh.dev.azure.com:v3/acme/ops/config",
        &["https://dev.azure.com"],
        Setup::default(),
    );
    assert!(
        refused.contains("Pipeline flux-system/podinfo: promotion into test")
            && refused.contains("Secret flux-system/forge-creds")
            && refused.contains("add the private key as identity"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_url_whose_forge_api_cannot_be_found_is_refused_at_load_asking_for_the_type() {
    let refused = refused_at_load(
        "forge-unknown",
        "https://git.example.com/org/config.git",
        &[],
        Setup::default(),
    );
    assert!(
        refused.contains("Pipeline flux-system/podinfo: promotion into test")
            && refused.contains("cannot tell which forge hosts")
            && refused.contains("set type to one of github, gitlab"),
        "{refused}"
    );
}
