//! Which forge hosts the configuration repository, and where its API is.

use std::fmt;
use std::str::FromStr;

use promoter_sdk::HttpUrl;

use super::ForgeError;
use super::percent::{decode, encode};

/// The forges whose pull-request API this plugin speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForgeKind {
    GitHub,
    GitLab,
    /// Gitea and Forgejo (same API).
    Gitea,
    /// Bitbucket Server / Data Center (not Bitbucket Cloud).
    BitbucketServer,
    /// Azure DevOps Services and Server.
    AzureDevOps,
}

const TYPES: &str = "github, gitlab, gitea (or forgejo), bitbucket-server, azure-devops";

impl ForgeKind {
    /// From a Weave `type` string: `github`, `gitlab`, `gitea` (or `forgejo`),
    /// `bitbucket-server`, `azure-devops` (any case).
    pub fn from_type(name: &str) -> Result<ForgeKind, ForgeError> {
        match name.trim().to_ascii_lowercase().as_str() {
            "github" => Ok(ForgeKind::GitHub),
            "gitlab" => Ok(ForgeKind::GitLab),
            "gitea" | "forgejo" => Ok(ForgeKind::Gitea),
            "bitbucket-server" => Ok(ForgeKind::BitbucketServer),
            "azure-devops" => Ok(ForgeKind::AzureDevOps),
            _ => Err(ForgeError::permanent(format!(
                "type {name:?} is not a forge this plugin knows: expected one of {TYPES}"
            ))),
        }
    }

    /// The forge a repository URL points at, when its host or path says so: github.com,
    /// gitlab.com, dev.azure.com or *.visualstudio.com (or a `/_git/` path), or a Bitbucket
    /// Server `/scm/{project}/{repo}` path. Anything else needs an explicit `type`.
    pub fn infer(url: &str) -> Result<ForgeKind, ForgeError> {
        let git = GitUrl::parse(url)?;
        let host = git.host.as_str();
        if host == "github.com" || host == "www.github.com" {
            Ok(ForgeKind::GitHub)
        } else if host == "gitlab.com" || host == "www.gitlab.com" {
            Ok(ForgeKind::GitLab)
        } else if host == "dev.azure.com"
            || host == "ssh.dev.azure.com"
            || host.ends_with(".visualstudio.com")
            || git.segments.iter().any(|s| s == "_git")
        {
            Ok(ForgeKind::AzureDevOps)
        } else if git.scm_index().is_some() {
            Ok(ForgeKind::BitbucketServer)
        } else {
            Err(ForgeError::permanent(format!(
                "cannot tell which forge hosts {url:?}: set type to one of {TYPES}"
            )))
        }
    }

    /// The Weave `type` string.
    pub fn as_type(self) -> &'static str {
        match self {
            ForgeKind::GitHub => "github",
            ForgeKind::GitLab => "gitlab",
            ForgeKind::Gitea => "gitea",
            ForgeKind::BitbucketServer => "bitbucket-server",
            ForgeKind::AzureDevOps => "azure-devops",
        }
    }
}

impl FromStr for ForgeKind {
    type Err = ForgeError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        ForgeKind::from_type(name)
    }
}

impl fmt::Display for ForgeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ForgeKind::GitHub => "GitHub",
            ForgeKind::GitLab => "GitLab",
            ForgeKind::Gitea => "Gitea",
            ForgeKind::BitbucketServer => "Bitbucket Server",
            ForgeKind::AzureDevOps => "Azure DevOps",
        })
    }
}

/// A repository on a forge, as its API addresses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    pub kind: ForgeKind,
    /// The API root, without a trailing `/` (what `apiBase` overrides): GitHub
    /// `https://api.github.com` (Enterprise: `https://<host>/api/v3`), GitLab
    /// `https://<host>/api/v4`, Gitea `https://<host>/api/v1`, Bitbucket Server
    /// `https://<host>/rest/api/1.0`, Azure DevOps `https://dev.azure.com/{org}` (Server:
    /// the collection URL).
    pub api_base: String,
    /// GitHub and Gitea: the owner. GitLab: the namespace (`group/subgroup`). Bitbucket
    /// Server: the project key. Azure DevOps: the project.
    pub owner: String,
    /// The repository's name (Bitbucket Server: its slug).
    pub name: String,
    /// Azure DevOps: the REST API version to ask for (`apiVersion`); `None` is 7.0.
    pub api_version: Option<String>,
    /// The Secret the strategy's `secretRef` names (whose token the host binds), to name
    /// in errors.
    pub secret: Option<String>,
}

impl Repo {
    /// The repository at `url` (`https://host/owner/repo(.git)`, `ssh://git@host/owner/repo`
    /// or `git@host:owner/repo.git`), on the forge `kind` (a Weave `type` string; inferred
    /// from the URL when `None`), with its API at `api_base` when given (self-hosted forges
    /// whose API is not where the URL suggests).
    pub fn new(url: &str, kind: Option<&str>, api_base: Option<&str>) -> Result<Repo, ForgeError> {
        let kind = match kind.map(str::trim).filter(|k| !k.is_empty()) {
            Some(kind) => ForgeKind::from_type(kind)?,
            None => ForgeKind::infer(url)?,
        };
        let git = GitUrl::parse(url)?;
        let api_base = match api_base.map(str::trim).filter(|b| !b.is_empty()) {
            Some(base) => {
                let parsed = HttpUrl::parse(base)
                    .map_err(|problem| ForgeError::permanent(format!("apiBase: {problem}")))?;
                if parsed.path_and_query.contains('?') {
                    return Err(ForgeError::permanent(format!(
                        "apiBase {base:?} has a query: expected the API root, such as \
                         https://git.example.com/api/v1"
                    )));
                }
                Some(base.trim_end_matches('/').to_string())
            }
            None => None,
        };
        let bad = |expected: &str| {
            ForgeError::permanent(format!(
                "repository URL {url:?} does not look like a {kind} repository: expected {expected}"
            ))
        };
        let segments = &git.segments;
        let n = segments.len();
        let (default_base, owner, name) = match kind {
            ForgeKind::GitHub | ForgeKind::Gitea => {
                if n < 2 {
                    return Err(bad("https://host/owner/repo"));
                }
                let base = match kind {
                    ForgeKind::GitHub
                        if git.host == "github.com" || git.host == "www.github.com" =>
                    {
                        "https://api.github.com".to_string()
                    }
                    ForgeKind::GitHub => format!("{}/api/v3", git.web_origin()),
                    _ => format!("{}{}/api/v1", git.web_origin(), git.prefix(n - 2)),
                };
                (base, segments[n - 2].clone(), segments[n - 1].clone())
            }
            ForgeKind::GitLab => {
                // The project path is everything after a sub-path the API root shares.
                let skip = api_base
                    .as_deref()
                    .and_then(|b| HttpUrl::parse(b).ok())
                    .and_then(|b| {
                        let root = b.path_and_query.strip_suffix("/api/v4")?.to_string();
                        let root: Vec<&str> = root.split('/').filter(|s| !s.is_empty()).collect();
                        (segments.len() > root.len() + 1
                            && root.iter().zip(segments).all(|(r, s)| decode(r) == *s))
                        .then_some(root.len())
                    })
                    .unwrap_or(0);
                if n < skip + 2 {
                    return Err(bad("https://host/group/project"));
                }
                let base = format!("{}/api/v4", git.web_origin());
                (
                    base,
                    segments[skip..n - 1].join("/"),
                    segments[n - 1].clone(),
                )
            }
            ForgeKind::BitbucketServer => {
                let (context, key, slug) = if let Some(i) = git.scm_index() {
                    (git.prefix(i), &segments[i + 1], &segments[i + 2])
                } else if let Some(i) = (0..n.saturating_sub(3))
                    .find(|&i| segments[i] == "projects" && segments[i + 2] == "repos")
                {
                    (git.prefix(i), &segments[i + 1], &segments[i + 3])
                } else if git.ssh && n == 2 {
                    (String::new(), &segments[0], &segments[1])
                } else {
                    return Err(bad("https://host/scm/{project}/{repo}.git"));
                };
                let key = if key.starts_with('~') {
                    key.clone()
                } else {
                    key.to_ascii_uppercase()
                };
                let base = format!("{}{context}/rest/api/1.0", git.web_origin());
                (base, key, slug.clone())
            }
            ForgeKind::AzureDevOps => {
                let (base, project, name) = git.azure().ok_or_else(|| {
                    bad("https://dev.azure.com/{organization}/{project}/_git/{repo}")
                })?;
                (base, project, name)
            }
        };
        Ok(Repo {
            kind,
            api_base: api_base.unwrap_or(default_base),
            owner,
            name,
            api_version: None,
            secret: None,
        })
    }

    /// The origin (`scheme://host[:port]`) of the forge's API: what the operator must grant
    /// the plugin and bind the forge token to.
    pub fn api_origin(&self) -> String {
        match HttpUrl::parse(&self.api_base) {
            Ok(url) => format!("{}://{}", url.scheme, url.authority.to_ascii_lowercase()),
            Err(_) => self.api_base.clone(),
        }
    }

    /// The repository's own API URL, under which its pull requests live: GitHub and Gitea
    /// `{base}/repos/{owner}/{name}`, GitLab `{base}/projects/{url-encoded path}`, Bitbucket
    /// Server `{base}/projects/{KEY}/repos/{slug}`, Azure DevOps
    /// `{base}/{project}/_apis/git/repositories/{name}`.
    pub fn api_repo(&self) -> String {
        let (owner, name) = (encode(&self.owner), encode(&self.name));
        match self.kind {
            ForgeKind::GitHub | ForgeKind::Gitea => {
                format!("{}/repos/{owner}/{name}", self.api_base)
            }
            ForgeKind::GitLab => format!("{}/projects/{}", self.api_base, encode(&self.path())),
            ForgeKind::BitbucketServer => {
                format!("{}/projects/{owner}/repos/{name}", self.api_base)
            }
            ForgeKind::AzureDevOps => {
                format!("{}/{owner}/_apis/git/repositories/{name}", self.api_base)
            }
        }
    }

    /// `owner/name`, for messages (and GitLab's project path).
    pub fn path(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

/// A git remote URL taken apart: `https://…`, `http://…`, `ssh://…` or scp-like `user@host:path`.
struct GitUrl {
    /// `https` or `http`; `https` for ssh remotes (the forge's web side).
    scheme: &'static str,
    /// Lower case, without user info or port.
    host: String,
    /// The port of an http(s) URL (an ssh port says nothing about the web side).
    port: Option<String>,
    /// Decoded path segments, `.git` dropped from the last.
    segments: Vec<String>,
    ssh: bool,
}

impl GitUrl {
    fn parse(url: &str) -> Result<GitUrl, ForgeError> {
        let url = url.trim();
        let invalid = |why: &str| {
            ForgeError::permanent(format!(
                "repository URL {url:?} {why}: expected https://host/owner/repo.git or \
                 git@host:owner/repo.git"
            ))
        };
        let (scheme, ssh, rest) = if let Some((scheme, rest)) = url.split_once("://") {
            match scheme.to_ascii_lowercase().as_str() {
                "https" => ("https", false, rest),
                "http" => ("http", false, rest),
                "ssh" | "git+ssh" | "ssh+git" => ("https", true, rest),
                _ => return Err(invalid(&format!("has scheme {scheme:?}"))),
            }
        } else if let Some((authority, path)) = url.split_once(':')
            && !authority.contains('/')
        {
            // scp-like: [user@]host:path
            return GitUrl::from_parts("https", true, authority, path)
                .ok_or_else(|| invalid("has no host or no path"));
        } else {
            return Err(invalid("is not a URL"));
        };
        let rest = rest.split(['?', '#']).next().unwrap_or_default();
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        GitUrl::from_parts(scheme, ssh, authority, path)
            .ok_or_else(|| invalid("has no host or no path"))
    }

    fn from_parts(scheme: &'static str, ssh: bool, authority: &str, path: &str) -> Option<GitUrl> {
        let host_port = authority.rsplit('@').next().unwrap_or_default();
        let (host, port) = match host_port.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => (host, Some(port.to_string())),
            _ => (host_port, None),
        };
        let mut segments: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(decode)
            .collect();
        if let Some(last) = segments.last_mut()
            && let Some(stripped) = last.strip_suffix(".git")
        {
            *last = stripped.to_string();
        }
        if host.is_empty() || segments.is_empty() || segments.last().is_some_and(String::is_empty) {
            return None;
        }
        Some(GitUrl {
            scheme,
            host: host.to_ascii_lowercase(),
            port: if ssh { None } else { port },
            segments,
            ssh,
        })
    }

    /// `https://host[:port]` of the forge's web side.
    fn web_origin(&self) -> String {
        match &self.port {
            Some(port) => format!("{}://{}:{port}", self.scheme, self.host),
            None => format!("{}://{}", self.scheme, self.host),
        }
    }

    /// The first `count` segments as a path prefix (`/a/b`, or empty), re-encoded.
    fn prefix(&self, count: usize) -> String {
        self.segments[..count]
            .iter()
            .map(|s| format!("/{}", encode(s)))
            .collect()
    }

    /// Where Bitbucket Server's `scm` segment is, in `…/scm/{project}/{repo}`.
    fn scm_index(&self) -> Option<usize> {
        let n = self.segments.len();
        (n >= 3 && self.segments[n - 3] == "scm").then(|| n - 3)
    }

    /// Azure DevOps: (API root, project, repository) from `{root}/{project}/_git/{repo}`,
    /// `{root}/_git/{repo}` (project named like the repository) or the ssh form
    /// `ssh.dev.azure.com:v3/{organization}/{project}/{repo}`.
    fn azure(&self) -> Option<(String, String, String)> {
        let s = &self.segments;
        if self.ssh && s.len() == 4 && s[0] == "v3" {
            return Some((
                format!("https://dev.azure.com/{}", encode(&s[1])),
                s[2].clone(),
                s[3].clone(),
            ));
        }
        let git = s.iter().position(|x| x == "_git")?;
        if git + 2 != s.len() {
            return None;
        }
        let repo = s[git + 1].clone();
        // The organization (dev.azure.com) or collection (Server) that roots the API.
        let root = if self.host == "dev.azure.com" {
            1
        } else if self.host.ends_with(".visualstudio.com") {
            usize::from(s[0].eq_ignore_ascii_case("DefaultCollection"))
        } else {
            git.saturating_sub(1)
        };
        let (root, project) = match git.checked_sub(root)? {
            0 => (root, repo.clone()),
            1 => (root, s[git - 1].clone()),
            _ => return None,
        };
        Some((
            format!("{}{}", self.web_origin(), self.prefix(root)),
            project,
            repo,
        ))
    }
}
