//! The strategy end to end against the SDK's fake git and a scripted forge API: what a user
//! sees in the repository and on the forge after a promotion, and after a retry.

use promoter_sdk::testing::{MockHost, sample_request};
use promoter_sdk::{
    Capability, GitError, HttpError, HttpRequest, HttpResponse, Outcome, PromotionRequest, Strategy,
};
use serde_json::{Value, json};

use crate::PullRequestStrategy;

const URL: &str = "https://github.com/acme/fleet-config.git";
const GITLAB_URL: &str = "https://gitlab.com/acme/fleet-config.git";
const HEAD: &str = "promotion-flux-system-podinfo-prod";
const TITLE: &str = "Promote flux-system/podinfo in prod to 1.2.3";
const PULLS: &str = "https://api.github.com/repos/acme/fleet-config/pulls";

const RELEASE: &str = "apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: podinfo
spec:
  chart:
    spec:
      chart: podinfo
      version: 1.0.0 # {\"$promotion\": \"flux-system:podinfo:prod\"}
  values:
    # replicas stay as they are
    replicaCount:   2
";

/// CRLF line endings and a quoted value, next to another environment's marker.
const VALUES: &str = "image:\r\n  repository: ghcr.io/stefanprodan/podinfo\r\n  \
                      tag: \"1.0.0\"   # {\"$promotion\": \"flux-system:podinfo:prod\"}\r\n\
                      dev:\r\n  tag: 0.9.0 # {\"$promotion\": \"flux-system:podinfo:dev\"}\r\n";

/// Per-cluster markers: prod-eu's, and a cluster no target is on.
const CLUSTERS: &str = "eu:
  tag: 1.0.0 # {\"$promotion\": \"flux-system:podinfo:prod:prod-eu\"}
us:
  tag: 1.0.0 # {\"$promotion\": \"flux-system:podinfo:prod:prod-us\"}
";

const NOTES: &str = "Not YAML: version: 1.0.0 # {\"$promotion\": \"flux-system:podinfo:prod\"}\n";
const OTHER: &str = "kind: ConfigMap\ndata:\n  version: 1.0.0\n";

fn seeded(url: &str) -> MockHost {
    MockHost::new().with_repo(
        url,
        "main",
        &[
            ("apps/podinfo/release.yaml", RELEASE),
            ("apps/podinfo/values.yml", VALUES),
            ("clusters/prod/tags.yaml", CLUSTERS),
            ("NOTES.md", NOTES),
            ("apps/other.yaml", OTHER),
        ],
    )
}

fn config(url: &str) -> String {
    json!({"url": url, "baseBranch": "main", "secretRef": {"name": "forge-token"}}).to_string()
}

/// The sample promotion of podinfo 1.2.3 to prod, on the management cluster only.
fn single_target(url: &str) -> PromotionRequest {
    let mut request = sample_request(&config(url));
    request.targets.truncate(1);
    request
}

fn answer(status: u16, body: Value) -> HttpResponse {
    HttpResponse::new(status)
        .with_header("Content-Type", "application/json")
        .with_body(body.to_string())
}

fn github_pull(number: u64, head: &str, title: &str, body: &str) -> Value {
    json!({
        "number": number,
        "state": "open",
        "html_url": format!("https://github.com/acme/fleet-config/pull/{number}"),
        "title": title,
        "body": body,
        "head": {"ref": head},
        "base": {"ref": "main"},
    })
}

fn find_url(head: &str) -> String {
    format!("{PULLS}?state=open&head=acme%3A{head}&base=main")
}

fn body_json(request: &HttpRequest) -> Value {
    serde_json::from_slice(&request.body).expect("JSON body")
}

fn calls(host: &MockHost) -> Vec<(String, String)> {
    host.requests()
        .into_iter()
        .map(|r| (r.method, r.url))
        .collect()
}

fn get(url: String) -> (String, String) {
    ("GET".into(), url)
}

fn post(url: &str) -> (String, String) {
    ("POST".into(), url.into())
}

fn promote(
    host: &MockHost,
    request: &PromotionRequest,
) -> Result<Outcome, promoter_sdk::PromoteError> {
    promoter_sdk::promote::<PullRequestStrategy>(host, request)
}

#[test]
fn single_target_opens_one_pull_request_changing_exactly_the_marked_values() {
    let host = seeded(URL)
        .respond(answer(200, json!([])))
        .respond(answer(201, github_pull(7, HEAD, TITLE, "")));

    let outcome = promote(&host, &single_target(URL)).unwrap();

    let Outcome::Done { url, details } = outcome else {
        panic!("expected done, got {outcome:?}")
    };
    assert_eq!(
        url.as_deref(),
        Some("https://github.com/acme/fleet-config/pull/7")
    );
    assert!(details.unwrap().contains("opened pull request #7"));

    let pushed = host.remote_files(URL, HEAD).expect("head branch pushed");
    let text = |path: &str| String::from_utf8(pushed[path].clone()).unwrap();
    assert_eq!(
        text("apps/podinfo/release.yaml"),
        RELEASE.replace("1.0.0", "1.2.3")
    );
    assert_eq!(
        text("apps/podinfo/values.yml"),
        VALUES.replace("\"1.0.0\"", "\"1.2.3\""),
        "quotes, spacing, CRLF and the dev marker stay"
    );
    assert_eq!(
        text("clusters/prod/tags.yaml"),
        CLUSTERS,
        "no cluster markers apply"
    );
    assert_eq!(text("NOTES.md"), NOTES, "only YAML files are edited");
    assert_eq!(text("apps/other.yaml"), OTHER);
    assert_eq!(
        host.remote_file(URL, "main", "apps/podinfo/release.yaml")
            .as_deref(),
        Some(RELEASE),
        "the base branch is not touched"
    );

    let commits = host.commits();
    assert_eq!(commits.len(), 1);
    assert_eq!(commits[0].message, "promoting version");
    assert_eq!(
        commits[0].author.to_string(),
        "Promoter <promoter@noreply.local>"
    );
    assert_eq!(
        commits[0].changed,
        ["apps/podinfo/release.yaml", "apps/podinfo/values.yml"]
    );
    assert_eq!(host.pushes().len(), 1);

    assert_eq!(calls(&host), [get(find_url(HEAD)), post(PULLS)]);
    let create = body_json(&host.requests()[1]);
    assert_eq!(create["title"], TITLE);
    assert_eq!(
        (create["head"].as_str(), create["base"].as_str()),
        (Some(HEAD), Some("main"))
    );
    let body = create["body"].as_str().unwrap();
    assert!(
        body.ends_with(
            "<details>\n<summary>metadata</summary>\n!!! DO NOT EDIT !!!\n\n\
             flux-system/podinfo/prod\n</details>"
        ),
        "Weave's metadata block: {body}"
    );
}

#[test]
fn base_already_at_the_version_is_done_without_commit_push_or_pull_request() {
    let host = MockHost::new().with_repo(
        URL,
        "main",
        &[(
            "apps/podinfo/release.yaml",
            &RELEASE.replace("1.0.0", "1.2.3"),
        )],
    );
    // No HTTP answer is scripted: any forge call would fail the test.
    let outcome = promote(&host, &single_target(URL)).unwrap();
    let Outcome::Done { url, details } = outcome else {
        panic!("expected done")
    };
    assert_eq!(url, None);
    assert!(details.unwrap().starts_with("already at 1.2.3"));
    assert!(host.commits().is_empty());
    assert!(host.pushes().is_empty());
    assert_eq!(host.remote_branches(URL), ["main"]);
    assert!(host.requests().is_empty());
}

#[test]
fn retry_after_push_without_pull_request_pushes_nothing_new_and_creates_one_pull_request() {
    let host = seeded(URL)
        // Attempt 1: pushed, then the forge could not be reached.
        .fail(HttpError::Connection("connection reset by peer".into()))
        // Attempt 2.
        .respond(answer(200, json!([])))
        .respond(answer(201, github_pull(7, HEAD, TITLE, "")));
    let mut request = single_target(URL);

    let error = promote(&host, &request).unwrap_err();
    assert!(error.retryable, "{error}");
    assert_eq!(host.pushes().len(), 1);

    request.attempt = 2;
    let outcome = promote(&host, &request).unwrap();
    assert_eq!(
        outcome.clone(),
        outcome.with_url("https://github.com/acme/fleet-config/pull/7")
    );
    assert_eq!(host.pushes().len(), 1, "the retry pushes nothing new");
    assert_eq!(host.unchanged_pushes(), 1);
    let creates = calls(&host)
        .into_iter()
        .filter(|(m, _)| m == "POST")
        .count();
    assert_eq!(creates, 1);
}

#[test]
fn next_version_replaces_the_branch_and_updates_the_open_pull_request() {
    let host = seeded(URL)
        .respond(answer(200, json!([])))
        .respond(answer(201, github_pull(7, HEAD, TITLE, "")));
    promote(&host, &single_target(URL)).unwrap();

    let mut next = single_target(URL);
    next.version = "1.2.4".into();
    let new_title = "Promote flux-system/podinfo in prod to 1.2.4";
    let host = host
        .respond(answer(200, json!([github_pull(7, HEAD, TITLE, "")])))
        .respond(answer(200, github_pull(7, HEAD, new_title, "")));
    let outcome = promote(&host, &next).unwrap();

    let Outcome::Done { details, .. } = outcome else {
        panic!()
    };
    assert!(details.unwrap().contains("updated pull request #7"));
    assert_eq!(host.pushes().len(), 2);
    assert_eq!(
        host.remote_file(URL, HEAD, "apps/podinfo/release.yaml"),
        Some(RELEASE.replace("1.0.0", "1.2.4"))
    );
    let update = host.requests().pop().unwrap();
    assert_eq!(
        (update.method.as_str(), update.url.as_str()),
        ("PATCH", &*format!("{PULLS}/7"))
    );
    assert_eq!(body_json(&update)["title"], new_title);
}

#[test]
fn two_clusters_get_a_pull_request_each_with_their_own_markers() {
    // The sample request's targets: one on the management cluster, one on prod-eu.
    let request = sample_request(&config(URL));
    let management = format!("{HEAD}-0");
    let eu = format!("{HEAD}-prod-eu");
    let host = seeded(URL)
        .respond(answer(200, json!([])))
        .respond(answer(201, github_pull(7, &management, "t", "")))
        .respond(answer(200, json!([])))
        .respond(answer(201, github_pull(8, &eu, "t", "")));

    let outcome = promote(&host, &request).unwrap();

    let Outcome::Done { url, details } = outcome else {
        panic!()
    };
    assert_eq!(
        url.as_deref(),
        Some("https://github.com/acme/fleet-config/pull/7")
    );
    let details = details.unwrap();
    assert!(
        details.contains("the management cluster: opened pull request #7")
            && details.contains("cluster prod-eu: opened pull request #8"),
        "{details}"
    );

    let release = RELEASE.replace("1.0.0", "1.2.3");
    for branch in [&management, &eu] {
        assert_eq!(
            host.remote_file(URL, branch, "apps/podinfo/release.yaml"),
            Some(release.clone()),
            "plain markers apply in {branch}"
        );
    }
    assert_eq!(
        host.remote_file(URL, &management, "clusters/prod/tags.yaml")
            .as_deref(),
        Some(CLUSTERS)
    );
    assert_eq!(
        host.remote_file(URL, &eu, "clusters/prod/tags.yaml"),
        Some(CLUSTERS.replacen("1.0.0", "1.2.3", 1)),
        "only prod-eu's marker, not prod-us's"
    );

    assert_eq!(
        calls(&host),
        [
            get(find_url(&management)),
            post(PULLS),
            get(find_url(&eu)),
            post(PULLS)
        ]
    );
    let titles: Vec<Value> = [1, 3]
        .map(|i| body_json(&host.requests()[i])["title"].clone())
        .into();
    assert_eq!(
        titles,
        [
            format!("{TITLE} (the management cluster)"),
            format!("{TITLE} (cluster prod-eu)")
        ]
    );
}

/// The seed's "one promotion task per deployment target" meets Weave's markers here: a
/// marker names pipeline, environment and at most a cluster, never a target's namespace, so
/// two namespaces on one cluster select exactly the same lines. Two pull requests would make
/// the same change twice and conflict; one per cluster is one per set of markers.
#[test]
fn two_namespaces_on_one_cluster_share_one_pull_request_with_that_clusters_markers() {
    let mut request = sample_request(&config(URL));
    let eu = request.targets[1].clone();
    let mut other = eu.clone();
    other.namespace = "podinfo-canary".into();
    request.targets = vec![eu, other];
    let host = seeded(URL)
        .respond(answer(200, json!([])))
        .respond(answer(201, github_pull(7, HEAD, "t", "")));

    promote(&host, &request).unwrap();

    assert_eq!(
        calls(&host),
        [get(find_url(HEAD)), post(PULLS)],
        "one pull request"
    );
    assert_eq!(
        host.remote_file(URL, HEAD, "clusters/prod/tags.yaml"),
        Some(CLUSTERS.replacen("1.0.0", "1.2.3", 1)),
        "prod-eu's marker, under Weave's branch name"
    );
    assert_eq!(body_json(&host.requests()[1])["title"], TITLE);
}

#[test]
fn rejected_forge_token_is_a_permanent_error() {
    let host = seeded(URL).respond(answer(401, json!({"message": "Bad credentials"})));
    let error = promote(&host, &single_target(URL)).unwrap_err();
    assert!(!error.retryable, "{error}");
    assert!(error.message.contains("https://api.github.com"), "{error}");
    assert!(error.message.contains("Bad credentials"), "{error}");
}

#[test]
fn gitlab_repository_gets_a_merge_request() {
    let project = "https://gitlab.com/api/v4/projects/acme%2Ffleet-config";
    let web = "https://gitlab.com/acme/fleet-config/-/merge_requests/3";
    let host = seeded(GITLAB_URL)
        .respond(answer(200, json!([])))
        .respond(answer(
            201,
            json!({"iid": 3, "title": TITLE, "description": "", "source_branch": HEAD,
               "target_branch": "main", "web_url": web}),
        ));
    let request = single_target(GITLAB_URL);

    let outcome = promote(&host, &request).unwrap();

    assert_eq!(outcome.clone(), outcome.with_url(web));
    assert_eq!(
        calls(&host),
        [
            get(format!(
                "{project}/merge_requests?state=opened&source_branch={HEAD}&target_branch=main"
            )),
            post(&format!("{project}/merge_requests"))
        ]
    );
    let create = body_json(&host.requests()[1]);
    assert_eq!(
        (create["source_branch"].as_str(), create["title"].as_str()),
        (Some(HEAD), Some(TITLE))
    );
    assert!(
        create["description"]
            .as_str()
            .unwrap()
            .contains("flux-system/podinfo/prod")
    );
    assert!(host.remote_files(GITLAB_URL, HEAD).is_some());
}

#[test]
fn unusable_marker_fails_for_good_naming_file_and_line() {
    let broken = "a: 1\nlist: [1, 2] # {\"$promotion\": \"flux-system:podinfo:prod\"}\n";
    let host = seeded(URL).with_repo(
        URL,
        "main",
        &[
            ("apps/podinfo/release.yaml", RELEASE),
            ("apps/broken.yaml", broken),
        ],
    );
    let error = promote(&host, &single_target(URL)).unwrap_err();
    assert!(!error.retryable);
    assert!(error.message.contains("apps/broken.yaml: "), "{error}");
    assert!(error.message.contains("line 2"), "{error}");
    assert!(host.commits().is_empty() && host.pushes().is_empty());
}

#[test]
fn no_marker_for_the_target_fails_for_good_saying_what_to_add() {
    let host = MockHost::new().with_repo(URL, "main", &[("apps/other.yaml", OTHER)]);
    let error = promote(&host, &single_target(URL)).unwrap_err();
    assert!(!error.retryable);
    assert!(
        error
            .message
            .contains(r#"# {"$promotion": "flux-system:podinfo:prod"}"#),
        "{error}"
    );
}

#[test]
fn unavailable_git_remote_is_retryable_and_a_denied_repository_is_not() {
    let host = seeded(URL).fail_git(GitError::Unavailable("remote hung up".into()));
    let error = promote(&host, &single_target(URL)).unwrap_err();
    assert!(error.retryable, "{error}");
    assert!(error.message.contains("remote hung up"), "{error}");

    let host = seeded(URL).deny_git();
    let error = promote(&host, &single_target(URL)).unwrap_err();
    assert!(!error.retryable);
    assert!(
        error.message.contains("must grant the repository"),
        "{error}"
    );

    let error = promote(
        &seeded(URL),
        &single_target("https://github.com/acme/missing.git"),
    )
    .unwrap_err();
    assert!(!error.retryable);
    assert!(
        error.message.contains("check url and baseBranch"),
        "{error}"
    );
}

#[test]
fn custom_texts_are_rendered_and_keep_the_metadata_block() {
    let config = json!({
        "url": URL, "branch": "main",
        "headBranch": "promote/{environment}/{app}",
        "title": "{app} {version} to {environment}",
        "body": "Bumps {app}.",
        "commitMessage": "chore: {app} {version}",
        "author": {"name": "Bot", "email": "bot@example.com"},
    });
    let mut request = single_target(URL);
    request.config = config.to_string();
    let head = "promote/prod/podinfo";
    let host = seeded(URL)
        .respond(answer(200, json!([])))
        .respond(answer(201, github_pull(9, head, "t", "")));

    promote(&host, &request).unwrap();

    let commit = &host.commits()[0];
    assert_eq!(commit.message, "chore: podinfo 1.2.3");
    assert_eq!(commit.author.to_string(), "Bot <bot@example.com>");
    assert!(host.remote_files(URL, head).is_some());
    let create = body_json(&host.requests()[1]);
    assert_eq!(create["title"], "podinfo 1.2.3 to prod");
    let body = create["body"].as_str().unwrap();
    assert!(body.starts_with("Bumps podinfo.\n\n<details>"), "{body}");
    assert!(body.contains("flux-system/podinfo/prod"), "{body}");
}

#[test]
fn metadata_asks_for_http_and_git_and_ships_a_json_schema() {
    let metadata = PullRequestStrategy::metadata();
    assert_eq!(metadata.name, "pull-request");
    assert_eq!(metadata.capabilities, [Capability::Http, Capability::Git]);
    let schema: Value = serde_json::from_str(&metadata.config_schema).unwrap();
    assert_eq!(schema["additionalProperties"], false);
    for field in [
        "type",
        "url",
        "baseBranch",
        "branch",
        "secretRef",
        "apiBase",
        "headBranch",
    ] {
        assert!(schema["properties"].get(field).is_some(), "{field}");
    }
}

#[test]
fn validate_config_lists_every_problem() {
    let problems = promoter_sdk::validate_config::<PullRequestStrategy>(
        r#"{"url": "https://git.example.com/a/b.git", "baseBranch": "", "title": "{oops}"}"#,
    )
    .err()
    .unwrap();
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(promoter_sdk::validate_config::<PullRequestStrategy>(&config(URL)).is_ok());
}
