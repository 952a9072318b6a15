//! Repository URLs: which forge, which API origin, which names — as host and plugins see them.

use super::*;

fn at(url: &str, kind: Option<&str>, api_base: Option<&str>) -> Location {
    locate(url, kind, api_base).unwrap_or_else(|error| panic!("{url}: {error}"))
}

/// (kind, api_base, owner, name)
fn parts(location: &Location) -> (ForgeKind, &str, &str, &str) {
    (
        location.kind,
        location.api_base.as_str(),
        location.owner.as_str(),
        location.name.as_str(),
    )
}

#[test]
fn azure_devops_ssh_remotes_call_the_organizations_api_on_dev_azure_com() {
    for url in [
        "git@ssh.dev.azure.com:v3/acme/Platform%20Team/fleet-config",
        "ssh://git@ssh.dev.azure.com/v3/acme/Platform%20Team/fleet-config",
        "acme@vs-ssh.visualstudio.com:v3/acme/Platform%20Team/fleet-config",
    ] {
        let location = at(url, None, None);
        assert_eq!(
            parts(&location),
            (
                ForgeKind::AzureDevOps,
                "https://dev.azure.com/acme",
                "Platform Team",
                "fleet-config"
            ),
            "{url}"
        );
        assert_eq!(location.api_origin(), "https://dev.azure.com", "{url}");
        assert_eq!(location.remote.transport, Transport::Ssh);
    }
}

#[test]
fn www_github_com_calls_api_github_com_and_ghe_com_its_own_api_host() {
    for url in [
        "https://www.github.com/acme/fleet",
        "https://github.com/acme/fleet.git",
        "git@github.com:acme/fleet.git",
    ] {
        let location = at(url, None, None);
        assert_eq!(
            parts(&location),
            (ForgeKind::GitHub, "https://api.github.com", "acme", "fleet"),
            "{url}"
        );
    }
    for url in [
        "https://octo.ghe.com/acme/fleet.git",
        "git@octo.ghe.com:acme/fleet.git",
    ] {
        let location = at(url, None, None);
        assert_eq!(
            parts(&location),
            (
                ForgeKind::GitHub,
                "https://api.octo.ghe.com",
                "acme",
                "fleet"
            ),
            "{url}: data residency has no /api/v3"
        );
        assert_eq!(location.api_origin(), "https://api.octo.ghe.com");
    }
    let server = at(
        "https://ghe.example.com:8443/acme/fleet",
        Some("github"),
        None,
    );
    assert_eq!(server.api_base, "https://ghe.example.com:8443/api/v3");
    assert_eq!(server.api_origin(), "https://ghe.example.com:8443");
}

#[test]
fn self_hosted_shapes_keep_their_api_roots() {
    let cases = [
        (
            "https://gitlab.com/acme/platform/fleet.git",
            None,
            (
                ForgeKind::GitLab,
                "https://gitlab.com/api/v4",
                "acme/platform",
                "fleet",
            ),
        ),
        (
            "http://127.0.0.1:3000/sub/acme/fleet.git",
            Some("gitea"),
            (
                ForgeKind::Gitea,
                "http://127.0.0.1:3000/sub/api/v1",
                "acme",
                "fleet",
            ),
        ),
        (
            "https://bitbucket.example.com/context/scm/ops/fleet.git",
            None,
            (
                ForgeKind::BitbucketServer,
                "https://bitbucket.example.com/context/rest/api/1.0",
                "OPS",
                "fleet",
            ),
        ),
        (
            "ssh://git@bitbucket.example.com:7999/ops/fleet.git",
            Some("bitbucket-server"),
            (
                ForgeKind::BitbucketServer,
                "https://bitbucket.example.com/rest/api/1.0",
                "OPS",
                "fleet",
            ),
        ),
        (
            "https://dev.azure.com/acme/ops/_git/fleet",
            None,
            (
                ForgeKind::AzureDevOps,
                "https://dev.azure.com/acme",
                "ops",
                "fleet",
            ),
        ),
        (
            "https://acme.visualstudio.com/DefaultCollection/ops/_git/fleet",
            None,
            (
                ForgeKind::AzureDevOps,
                "https://acme.visualstudio.com/DefaultCollection",
                "ops",
                "fleet",
            ),
        ),
        (
            "https://tfs.example.com/tfs/Main/ops/_git/fleet",
            None,
            (
                ForgeKind::AzureDevOps,
                "https://tfs.example.com/tfs/Main",
                "ops",
                "fleet",
            ),
        ),
    ];
    for (url, kind, expected) in cases {
        assert_eq!(parts(&at(url, kind, None)), expected, "{url}");
    }
}

#[test]
fn azure_devops_servers_default_repository_shortcut_names_the_project() {
    // `{collection}/_git/{repo}`: the project's default repository, named like the project.
    let shortcut = at(
        "https://tfs.example.com/tfs/DefaultCollection/_git/fleet",
        None,
        None,
    );
    assert_eq!(
        parts(&shortcut),
        (
            ForgeKind::AzureDevOps,
            "https://tfs.example.com/tfs/DefaultCollection",
            "fleet",
            "fleet"
        )
    );
    // With apiBase, the project is what lies between it and `_git`.
    let named = at(
        "https://tfs.example.com/tfs/Main/_git/fleet",
        None,
        Some("https://tfs.example.com/tfs/Main"),
    );
    assert_eq!(
        (named.owner.as_str(), named.name.as_str()),
        ("fleet", "fleet")
    );
    let project = at(
        "https://tfs.example.com/tfs/Main/ops/_git/fleet",
        None,
        Some("https://tfs.example.com/tfs/Main/"),
    );
    assert_eq!(
        (project.owner.as_str(), project.api_base.as_str()),
        ("ops", "https://tfs.example.com/tfs/Main")
    );
    let cloud = at("https://dev.azure.com/acme/_git/fleet", None, None);
    assert_eq!(
        (cloud.owner.as_str(), cloud.name.as_str()),
        ("fleet", "fleet")
    );
}

#[test]
fn shapes_without_an_api_are_refused_with_what_to_write() {
    for (url, kind, reason) in [
        (
            "https://git.example.com/acme/fleet.git",
            None,
            "set type to one of github",
        ),
        ("https://dev.azure.com/acme/fleet", None, "_git/{repo}"),
        (
            "git@ssh.dev.azure.com:v3/acme/fleet",
            None,
            "ssh.dev.azure.com:v3/{organization}",
        ),
        ("https://github.com/acme", None, "https://host/owner/repo"),
        ("https://github.com/", None, "has no path"),
        ("ftp://github.com/acme/x", None, "has scheme \"ftp\""),
        ("github.com/acme/x", None, "is not a URL"),
        (
            "https://github.com/acme/x",
            Some("bitbucket-cloud"),
            "\"bitbucket-cloud\"",
        ),
    ] {
        let error = locate(url, kind, None).expect_err(url);
        assert!(error.contains(reason), "{url}: {error}");
    }
}

#[test]
fn remotes_parse_with_transport_user_host_and_port() {
    let remote = RemoteUrl::parse("ssh://git@GitLab.example.com:2222/g/r.git").unwrap();
    assert_eq!(
        (
            remote.transport,
            remote.userinfo.as_deref(),
            remote.host.as_str(),
            remote.port
        ),
        (
            Transport::Ssh,
            Some("git"),
            "gitlab.example.com",
            Some(2222)
        )
    );
    assert_eq!(remote.segments, ["g", "r"]);
    let scp = RemoteUrl::parse("git@github.com:org/repo.git").unwrap();
    assert_eq!((scp.transport, scp.port_or_default()), (Transport::Ssh, 22));
    let v6 = RemoteUrl::parse("http://[::1]:9000/r.git").unwrap();
    assert_eq!((v6.host.as_str(), v6.port), ("::1", Some(9000)));
    for bad in [
        "file:///etc",
        "/srv/repo.git",
        "ext::sh -c x",
        "https:///x",
        "ssh://-oProxyCommand=x/r",
        "https://host:http/r",
    ] {
        assert!(RemoteUrl::parse(bad).is_err(), "{bad}");
    }
    // What stands before `@` is user information, whatever it looks like: the host refuses
    // it in an http(s) remote as credentials.
    let tricky = RemoteUrl::parse("http://127.0.0.1\\@example.com/r.git").unwrap();
    assert_eq!(
        (tricky.userinfo.as_deref(), tricky.host.as_str()),
        (Some("127.0.0.1\\"), "example.com")
    );
}

#[test]
fn api_origins_are_lower_case_without_the_standard_port() {
    assert_eq!(
        api_origin("https://API.GitHub.com:443/x"),
        "https://api.github.com"
    );
    assert_eq!(
        api_origin("http://127.0.0.1:8080/api/v1"),
        "http://127.0.0.1:8080"
    );
    assert_eq!(api_origin("http://[::1]:80/"), "http://[::1]");
}

#[test]
fn percent_encoding_round_trips_and_keeps_malformed_escapes() {
    assert_eq!(encode("refs/heads/a b"), "refs%2Fheads%2Fa%20b");
    assert_eq!(decode(&encode("My Project/é")), "My Project/é");
    assert_eq!(decode("100%"), "100%");
    assert_eq!(decode("%zz"), "%zz");
}
