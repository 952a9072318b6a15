//! Repository URLs: which forge, which API, which identifiers.

use crate::forge::{ForgeKind, Repo};

/// (kind, api_base, owner, name, api_repo, api_origin)
fn parts(repo: &Repo) -> (ForgeKind, &str, &str, &str, String, String) {
    (
        repo.kind,
        repo.api_base.as_str(),
        repo.owner.as_str(),
        repo.name.as_str(),
        repo.api_repo(),
        repo.api_origin(),
    )
}

fn repo(url: &str, kind: Option<&str>, api_base: Option<&str>) -> Repo {
    Repo::new(url, kind, api_base).unwrap_or_else(|error| panic!("{url}: {error}"))
}

#[test]
fn github_https_and_ssh_urls_point_at_api_github_com() {
    for url in [
        "https://github.com/acme/fleet-config.git",
        "https://github.com/acme/fleet-config",
        "git@github.com:acme/fleet-config.git",
        "ssh://git@github.com/acme/fleet-config.git",
    ] {
        assert_eq!(
            parts(&repo(url, None, None)),
            (
                ForgeKind::GitHub,
                "https://api.github.com",
                "acme",
                "fleet-config",
                "https://api.github.com/repos/acme/fleet-config".into(),
                "https://api.github.com".into()
            ),
            "{url}"
        );
    }
}

#[test]
fn github_enterprise_uses_api_v3_on_its_own_host_or_the_api_base_given() {
    let ghe = repo(
        "https://ghe.example.com/acme/fleet-config.git",
        Some("github"),
        None,
    );
    assert_eq!(ghe.api_base, "https://ghe.example.com/api/v3");
    let custom = repo(
        "git@ghe.example.com:acme/fleet-config.git",
        Some("GitHub"),
        Some("https://ghe-api.example.com:8443/api/v3/"),
    );
    assert_eq!(custom.api_base, "https://ghe-api.example.com:8443/api/v3");
    assert_eq!(custom.api_origin(), "https://ghe-api.example.com:8443");
}

#[test]
fn gitlab_nested_groups_become_one_url_encoded_project_path() {
    let r = repo(
        "https://gitlab.com/acme/platform/fleet-config.git",
        None,
        None,
    );
    assert_eq!(
        parts(&r),
        (
            ForgeKind::GitLab,
            "https://gitlab.com/api/v4",
            "acme/platform",
            "fleet-config",
            "https://gitlab.com/api/v4/projects/acme%2Fplatform%2Ffleet-config".into(),
            "https://gitlab.com".into()
        )
    );
    let self_managed = repo(
        "https://git.example.com:8443/acme/cfg",
        Some("gitlab"),
        None,
    );
    assert_eq!(self_managed.api_base, "https://git.example.com:8443/api/v4");
}

#[test]
fn gitea_under_a_sub_path_keeps_it_in_the_api_base() {
    let r = repo(
        "https://example.com/gitea/acme/fleet-config.git",
        Some("gitea"),
        None,
    );
    assert_eq!(r.api_base, "https://example.com/gitea/api/v1");
    assert_eq!(r.path(), "acme/fleet-config");
}

#[test]
fn bitbucket_server_scm_urls_give_project_key_and_slug() {
    for (url, base) in [
        (
            "https://bitbucket.example.com/scm/ops/fleet-config.git",
            "https://bitbucket.example.com/rest/api/1.0",
        ),
        (
            "https://git.example.com/bitbucket/scm/ops/fleet-config.git",
            "https://git.example.com/bitbucket/rest/api/1.0",
        ),
    ] {
        let r = repo(url, None, None);
        assert_eq!(r.kind, ForgeKind::BitbucketServer);
        assert_eq!(r.api_base, base);
        assert_eq!(
            r.api_repo(),
            format!("{base}/projects/OPS/repos/fleet-config")
        );
    }
    let ssh = repo(
        "ssh://git@bitbucket.example.com:7999/ops/fleet-config.git",
        Some("bitbucket-server"),
        None,
    );
    assert_eq!(
        ssh.api_repo(),
        "https://bitbucket.example.com/rest/api/1.0/projects/OPS/repos/fleet-config"
    );
    let personal = repo(
        "https://bitbucket.example.com/scm/~alice/dotfiles.git",
        None,
        None,
    );
    assert_eq!(personal.owner, "~alice");
    let browse = repo(
        "https://bitbucket.example.com/projects/OPS/repos/fleet-config/browse",
        Some("bitbucket-server"),
        None,
    );
    assert_eq!(browse.path(), "OPS/fleet-config");
}

#[test]
fn azure_devops_urls_give_organization_project_and_repository() {
    let api = "https://dev.azure.com/acme/Platform%20Team/_apis/git/repositories/fleet-config";
    for url in [
        "https://dev.azure.com/acme/Platform%20Team/_git/fleet-config",
        "https://acme@dev.azure.com/acme/Platform%20Team/_git/fleet-config",
        "git@ssh.dev.azure.com:v3/acme/Platform%20Team/fleet-config",
    ] {
        let r = repo(url, None, None);
        assert_eq!(
            (r.kind, r.api_base.as_str(), r.owner.as_str(), r.api_repo()),
            (
                ForgeKind::AzureDevOps,
                "https://dev.azure.com/acme",
                "Platform Team",
                api.to_string()
            ),
            "{url}"
        );
    }
    let same_name = repo("https://dev.azure.com/acme/_git/fleet", None, None);
    assert_eq!(same_name.path(), "fleet/fleet");
    let legacy = repo(
        "https://acme.visualstudio.com/DefaultCollection/Platform/_git/fleet-config",
        None,
        None,
    );
    assert_eq!(
        legacy.api_repo(),
        "https://acme.visualstudio.com/DefaultCollection/Platform/_apis/git/repositories/fleet-config"
    );
    let server = repo(
        "https://tfs.example.com/tfs/Main/Platform/_git/fleet-config",
        None,
        None,
    );
    assert_eq!(server.api_base, "https://tfs.example.com/tfs/Main");
    assert_eq!(server.path(), "Platform/fleet-config");
}

#[test]
fn an_unknown_host_without_a_type_asks_for_one() {
    let error = Repo::new("https://git.example.com/acme/fleet-config.git", None, None).unwrap_err();
    assert!(!error.retryable);
    assert!(
        error.message.contains("set type to one of github, gitlab"),
        "{error}"
    );
}

#[test]
fn an_unknown_type_lists_the_known_ones() {
    let error = Repo::new("https://github.com/acme/x", Some("bitbucket-cloud"), None).unwrap_err();
    assert!(error.message.contains("\"bitbucket-cloud\""), "{error}");
    assert!(
        error.message.contains("bitbucket-server, azure-devops"),
        "{error}"
    );
    assert_eq!("forgejo".parse::<ForgeKind>().unwrap(), ForgeKind::Gitea);
    assert_eq!(ForgeKind::AzureDevOps.as_type(), "azure-devops");
}

#[test]
fn malformed_urls_and_api_bases_are_rejected_with_the_reason() {
    for (url, kind, base, reason) in [
        ("ftp://github.com/acme/x", None, None, "has scheme \"ftp\""),
        ("github.com/acme/x", None, None, "is not a URL"),
        (
            "https://github.com/acme",
            None,
            None,
            "expected https://host/owner/repo",
        ),
        ("https://dev.azure.com/acme/fleet", None, None, "_git"),
        (
            "https://gitlab.com/acme/x",
            None,
            Some("gitlab.com/api/v4"),
            "apiBase",
        ),
        (
            "https://gitlab.com/acme/x",
            None,
            Some("https://gitlab.com/api/v4?x=1"),
            "query",
        ),
    ] {
        let error = Repo::new(url, kind, base).expect_err(url);
        assert!(error.message.contains(reason), "{url}: {error}");
    }
}
