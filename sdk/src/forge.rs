//! Where a repository lives: its forge, the forge's API, the git host and the names the API
//! addresses it by — one function, [`locate`], for the host and for plugins.
//!
//! The host binds a forge token to the API origin of a pipeline's repository and a plugin
//! calls that API; when the two derive the origin differently, every call is refused (a
//! token bound to `https://ssh.dev.azure.com` is no use to a plugin calling
//! `https://dev.azure.com/org`). So both call [`locate`], and both parse remotes with
//! [`RemoteUrl::parse`].
//!
//! Shapes understood (`apiBase` overrides the API root; the project/owner still comes from
//! the URL):
//!
//! | URL | forge | API root |
//! |---|---|---|
//! | `https://github.com/o/r`, `https://www.github.com/o/r`, `git@github.com:o/r` | GitHub | `https://api.github.com` |
//! | `https://<sub>.ghe.com/o/r` (Enterprise Cloud with data residency) | GitHub | `https://api.<sub>.ghe.com` |
//! | `https://ghe.example.com/o/r` (`type: github`) | GitHub Enterprise Server | `https://ghe.example.com/api/v3` |
//! | `https://gitlab.com/g/sub/p` | GitLab | `https://gitlab.com/api/v4` |
//! | `https://git.example.com[/prefix]/o/r` (`type: gitea`) | Gitea, Forgejo | `…[/prefix]/api/v1` |
//! | `https://host[/context]/scm/{project}/{repo}.git`, `ssh://git@host:7999/{project}/{repo}` | Bitbucket Data Center | `https://host[/context]/rest/api/1.0` |
//! | `https://dev.azure.com/{org}/{project}/_git/{repo}`, `git@ssh.dev.azure.com:v3/{org}/{project}/{repo}`, `{org}@vs-ssh.visualstudio.com:v3/{org}/{project}/{repo}` | Azure DevOps | `https://dev.azure.com/{org}` |
//! | `https://{org}.visualstudio.com[/DefaultCollection]/{project}/_git/{repo}` | Azure DevOps | `https://{org}.visualstudio.com[/DefaultCollection]` |
//! | `https://server/{collection path}/{project}/_git/{repo}`, `…/{collection}/_git/{repo}` | Azure DevOps Server | the collection URL |
//!
//! `…/_git/{name}` right after the organization or collection is Azure's shortcut for the
//! project `{name}`'s default repository, which is named like the project: the name is both.

use crate::HttpUrl;
use std::fmt;
use std::str::FromStr;

/// The forges whose pull-request API Promoter speaks.
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

/// The `type` strings, for messages.
pub const TYPES: &str = "github, gitlab, gitea (or forgejo), bitbucket-server, azure-devops";

impl ForgeKind {
    /// From a Weave `type` string: `github`, `gitlab`, `gitea` (or `forgejo`),
    /// `bitbucket-server`, `azure-devops` (any case).
    pub fn from_type(name: &str) -> Result<ForgeKind, String> {
        match name.trim().to_ascii_lowercase().as_str() {
            "github" => Ok(ForgeKind::GitHub),
            "gitlab" => Ok(ForgeKind::GitLab),
            "gitea" | "forgejo" => Ok(ForgeKind::Gitea),
            "bitbucket-server" => Ok(ForgeKind::BitbucketServer),
            "azure-devops" => Ok(ForgeKind::AzureDevOps),
            _ => Err(format!(
                "type {name:?} is not a forge Promoter knows: expected one of {TYPES}"
            )),
        }
    }

    /// The forge a repository URL points at, when its host or path says so: github.com,
    /// *.ghe.com, gitlab.com, dev.azure.com or *.visualstudio.com (or a `/_git/` path), or a
    /// Bitbucket Server `/scm/{project}/{repo}` path. Anything else needs an explicit `type`.
    pub fn infer(url: &str) -> Result<ForgeKind, String> {
        let remote = RemoteUrl::parse(url).map_err(|why| invalid_url(url, &why))?;
        ForgeKind::of(&remote).ok_or_else(|| {
            format!("cannot tell which forge hosts {url:?}: set type to one of {TYPES}")
        })
    }

    fn of(remote: &RemoteUrl) -> Option<ForgeKind> {
        let host = remote.host.as_str();
        if is_github_com(host) || ghe_com(host).is_some() {
            Some(ForgeKind::GitHub)
        } else if host == "gitlab.com" || host == "www.gitlab.com" {
            Some(ForgeKind::GitLab)
        } else if host == "dev.azure.com"
            || host == "ssh.dev.azure.com"
            || host.ends_with(".visualstudio.com")
            || remote.segments.iter().any(|s| s == "_git")
        {
            Some(ForgeKind::AzureDevOps)
        } else if remote.scm_index().is_some() {
            Some(ForgeKind::BitbucketServer)
        } else {
            None
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
    type Err = String;

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

/// How git reaches a remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Https,
    Http,
    Ssh,
}

impl Transport {
    /// `https`, `http` or `ssh`.
    pub fn scheme(self) -> &'static str {
        match self {
            Transport::Https => "https",
            Transport::Http => "http",
            Transport::Ssh => "ssh",
        }
    }

    /// 443, 80 or 22.
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Https => 443,
            Transport::Http => 80,
            Transport::Ssh => 22,
        }
    }
}

/// A git remote URL taken apart: `https://…`, `http://…`, `ssh://…` (also `git+ssh://`) or
/// scp-like `[user@]host:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteUrl {
    pub transport: Transport,
    /// What stands before `@` in the authority (`git`, `user:password`), as written.
    pub userinfo: Option<String>,
    /// Lower case, without brackets around an IPv6 address.
    pub host: String,
    /// The port written in the URL (an scp-like URL has none).
    pub port: Option<u16>,
    /// Decoded path segments, `.git` dropped from the last.
    pub segments: Vec<String>,
}

impl RemoteUrl {
    /// Takes `url` apart; `Err` says why it is not a remote (without repeating the URL).
    /// Only the https, http and ssh transports; a host is a plain name or address (what
    /// git and curl read as the host must be what was checked).
    pub fn parse(url: &str) -> Result<RemoteUrl, String> {
        let url = url.trim();
        let (transport, authority, path, scp) = match url.split_once("://") {
            Some((scheme, rest)) => {
                let transport = match scheme.to_ascii_lowercase().as_str() {
                    "https" => Transport::Https,
                    "http" => Transport::Http,
                    "ssh" | "git+ssh" | "ssh+git" => Transport::Ssh,
                    _ => {
                        return Err(format!(
                            "has scheme {scheme:?}: only https://, http:// and ssh:// remotes \
                             are allowed"
                        ));
                    }
                };
                let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                let path = rest[end..].split(['?', '#']).next().unwrap_or_default();
                (transport, &rest[..end], path, false)
            }
            None => {
                // scp-like: `host:path`, `user@host:path`; the colon comes before any slash,
                // and `x::y` is git's remote-helper syntax, not a host.
                let colon = url.find(':').filter(|&c| !url[..c].contains('/'));
                let Some(colon) = colon.filter(|&c| !url[c..].starts_with("::")) else {
                    return Err(
                        "is not a URL: only https://, http:// and ssh:// remotes are \
                                allowed (or user@host:path)"
                            .into(),
                    );
                };
                (Transport::Ssh, &url[..colon], &url[colon + 1..], true)
            }
        };
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo.to_string()), host_port),
            None => (None, authority),
        };
        let (host, port) = if let Some(rest) = host_port.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or("has an unclosed [ in its host")?;
            match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if after.is_empty() => (host, None),
                None => return Err("has something after the ] of its host".into()),
            }
        } else if scp {
            (host_port, None)
        } else {
            match host_port.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            }
        };
        if host.is_empty() || host.starts_with('-') {
            return Err("has no host".into());
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:".contains(c))
        {
            return Err("has characters in its host that a host name cannot have".into());
        }
        let port = match port.filter(|p| !p.is_empty()) {
            Some(p) => Some(
                p.parse()
                    .map_err(|_| format!("has port {p:?}, not a number"))?,
            ),
            None => None,
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
        segments.retain(|s| !s.is_empty());
        Ok(RemoteUrl {
            transport,
            userinfo,
            host: host.to_ascii_lowercase(),
            port,
            segments,
        })
    }

    /// The port git connects to.
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(self.transport.default_port())
    }

    /// `host` as an origin writes it (`[v6]` bracketed).
    pub fn host_for_url(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    fn ssh(&self) -> bool {
        self.transport == Transport::Ssh
    }

    /// `https://host[:port]` of the forge's web side: an ssh remote's is https on the
    /// standard port (an ssh port says nothing about the web side).
    fn web_origin(&self) -> String {
        match (self.transport, self.port) {
            (Transport::Ssh, _) => format!("https://{}", self.host_for_url()),
            (t, Some(port)) => format!("{}://{}:{port}", t.scheme(), self.host_for_url()),
            (t, None) => format!("{}://{}", t.scheme(), self.host_for_url()),
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
}

/// A repository on a forge, as its API addresses it, and the remote git uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub kind: ForgeKind,
    /// The API root, without a trailing `/` (what `apiBase` overrides).
    pub api_base: String,
    /// GitHub and Gitea: the owner. GitLab: the namespace (`group/subgroup`). Bitbucket
    /// Server: the project key. Azure DevOps: the project.
    pub owner: String,
    /// The repository's name (Bitbucket Server: its slug).
    pub name: String,
    /// The repository URL as given (trimmed): what git clones and pushes.
    pub url: String,
    /// That URL taken apart.
    pub remote: RemoteUrl,
}

impl Location {
    /// The origin (`scheme://host[:port]`, lower case, no default port written) of the
    /// forge's API: what the host binds the forge token to and what the plugin calls.
    pub fn api_origin(&self) -> String {
        api_origin(&self.api_base)
    }
}

/// The origin of an API root `base` (`scheme://host[:port]`, lower case, the scheme's
/// standard port left out); `base` itself when it is not an http(s) URL.
pub fn api_origin(base: &str) -> String {
    let Ok(url) = HttpUrl::parse(base) else {
        return base.to_string();
    };
    let authority = url.authority.to_ascii_lowercase();
    let authority = match (url.scheme.as_str(), authority.rsplit_once(':')) {
        ("https", Some((host, "443"))) | ("http", Some((host, "80"))) if !host.ends_with(':') => {
            host.to_string()
        }
        _ => authority,
    };
    format!("{}://{authority}", url.scheme)
}

fn invalid_url(url: &str, why: &str) -> String {
    format!(
        "repository URL {url:?} {why}: expected https://host/owner/repo.git or \
         git@host:owner/repo.git"
    )
}

fn is_github_com(host: &str) -> bool {
    host == "github.com" || host == "www.github.com"
}

/// `<sub>` of GitHub Enterprise Cloud with data residency, `<sub>.ghe.com`.
fn ghe_com(host: &str) -> Option<&str> {
    let sub = host.strip_suffix(".ghe.com")?;
    (!sub.is_empty() && !sub.contains('.')).then_some(sub)
}

/// The repository at `url` on the forge `kind` (a Weave `type` string; inferred from the
/// URL when `None`), with its API at `api_base` when given. `Err` says what is wrong and
/// what to write instead.
pub fn locate(url: &str, kind: Option<&str>, api_base: Option<&str>) -> Result<Location, String> {
    let remote = RemoteUrl::parse(url).map_err(|why| invalid_url(url, &why))?;
    if remote.segments.is_empty() {
        return Err(invalid_url(url, "has no path"));
    }
    let kind = match kind.map(str::trim).filter(|k| !k.is_empty()) {
        Some(kind) => ForgeKind::from_type(kind)?,
        None => ForgeKind::of(&remote).ok_or_else(|| {
            format!("cannot tell which forge hosts {url:?}: set type to one of {TYPES}")
        })?,
    };
    let given = match api_base.map(str::trim).filter(|b| !b.is_empty()) {
        Some(base) => {
            let parsed = HttpUrl::parse(base).map_err(|problem| format!("apiBase: {problem}"))?;
            if parsed.path_and_query.contains('?') {
                return Err(format!(
                    "apiBase {base:?} has a query: expected the API root, such as \
                     https://git.example.com/api/v1"
                ));
            }
            Some((base.trim_end_matches('/').to_string(), parsed))
        }
        None => None,
    };
    // The decoded path segments of apiBase, when the repository's path starts with them.
    let base_prefix = given.as_ref().and_then(|(_, parsed)| {
        let path = parsed.path_and_query.split('?').next().unwrap_or_default();
        let root: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(decode)
            .collect();
        (root.len() <= remote.segments.len()
            && root.iter().zip(&remote.segments).all(|(r, s)| r == s))
        .then_some(root)
    });
    let bad = |expected: &str| {
        format!(
            "repository URL {url:?} does not look like a {kind} repository: expected {expected}"
        )
    };
    let segments = &remote.segments;
    let n = segments.len();
    let (default_base, owner, name) = match kind {
        ForgeKind::GitHub | ForgeKind::Gitea => {
            if n < 2 {
                return Err(bad("https://host/owner/repo"));
            }
            let base = match kind {
                ForgeKind::GitHub if is_github_com(&remote.host) => {
                    "https://api.github.com".to_string()
                }
                ForgeKind::GitHub => match ghe_com(&remote.host) {
                    Some(sub) => format!("https://api.{sub}.ghe.com"),
                    None => format!("{}/api/v3", remote.web_origin()),
                },
                _ => format!("{}{}/api/v1", remote.web_origin(), remote.prefix(n - 2)),
            };
            (base, segments[n - 2].clone(), segments[n - 1].clone())
        }
        ForgeKind::GitLab => {
            // The project path is everything after a sub-path the API root shares.
            let skip = given
                .as_ref()
                .and_then(|(_, b)| {
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
            let base = format!("{}/api/v4", remote.web_origin());
            (
                base,
                segments[skip..n - 1].join("/"),
                segments[n - 1].clone(),
            )
        }
        ForgeKind::BitbucketServer => {
            let (context, key, slug) = if let Some(i) = remote.scm_index() {
                (remote.prefix(i), &segments[i + 1], &segments[i + 2])
            } else if let Some(i) = (0..n.saturating_sub(3))
                .find(|&i| segments[i] == "projects" && segments[i + 2] == "repos")
            {
                (remote.prefix(i), &segments[i + 1], &segments[i + 3])
            } else if remote.ssh() && n == 2 {
                (String::new(), &segments[0], &segments[1])
            } else {
                return Err(bad("https://host/scm/{project}/{repo}.git"));
            };
            let key = if key.starts_with('~') {
                key.clone()
            } else {
                key.to_ascii_uppercase()
            };
            let base = format!("{}{context}/rest/api/1.0", remote.web_origin());
            (base, key, slug.clone())
        }
        ForgeKind::AzureDevOps => azure(&remote, base_prefix.as_deref().map(<[String]>::len))
            .ok_or_else(|| {
                bad(
                    "https://dev.azure.com/{organization}/{project}/_git/{repo} or \
                     git@ssh.dev.azure.com:v3/{organization}/{project}/{repo}",
                )
            })?,
    };
    Ok(Location {
        kind,
        api_base: given.map_or(default_base, |(base, _)| base),
        owner,
        name,
        url: url.trim().to_string(),
        remote,
    })
}

/// Azure DevOps: (API root, project, repository). `collection`: how many leading segments
/// of the path are the organization or collection (from `apiBase`), when known.
fn azure(remote: &RemoteUrl, collection: Option<usize>) -> Option<(String, String, String)> {
    let s = &remote.segments;
    let host = remote.host.as_str();
    let cloud_ssh = host == "ssh.dev.azure.com" || host.ends_with(".visualstudio.com");
    if remote.ssh() && cloud_ssh && s.len() == 4 && s[0] == "v3" {
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
    let root = match collection {
        Some(root) if root <= git => root,
        _ if host == "dev.azure.com" => 1,
        _ if host.ends_with(".visualstudio.com") => {
            usize::from(s[0].eq_ignore_ascii_case("DefaultCollection"))
        }
        // Server: `{collection path}/{project}/_git/{repo}`, or the default repository's
        // shortcut right after the default collection.
        _ if git > 0 && s[git - 1].eq_ignore_ascii_case("DefaultCollection") => git,
        _ => git.saturating_sub(1),
    };
    let (root, project) = match git.checked_sub(root)? {
        0 => (root, repo.clone()),
        1 => (root, s[git - 1].clone()),
        _ => return None,
    };
    Some((
        format!("{}{}", remote.web_origin(), remote.prefix(root)),
        project,
        repo,
    ))
}

/// `text` with every byte outside the unreserved set (`A-Z a-z 0-9 - . _ ~`) written as
/// `%XX`: safe as one path segment or as one query value (a `/` in a branch name becomes
/// `%2F`).
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `text` with `%XX` sequences decoded; a malformed sequence or invalid UTF-8 is kept as is.
pub fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| text.to_string())
}

#[cfg(test)]
mod tests;
