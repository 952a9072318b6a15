//! Which forge hosts the configuration repository, and where its API is: what
//! [`promoter_sdk::forge::locate`] says, the same function the host binds the token with.

pub use promoter_sdk::forge::ForgeKind;
use promoter_sdk::forge::{encode, locate};

use super::ForgeError;

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
        let location = locate(url, kind, api_base).map_err(ForgeError::permanent)?;
        Ok(Repo {
            kind: location.kind,
            api_base: location.api_base,
            owner: location.owner,
            name: location.name,
            api_version: None,
            secret: None,
        })
    }

    /// The origin (`scheme://host[:port]`) of the forge's API: what the operator must grant
    /// the plugin and bind the forge token to.
    pub fn api_origin(&self) -> String {
        promoter_sdk::forge::api_origin(&self.api_base)
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
