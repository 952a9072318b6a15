//! The pull-request strategy's configuration, and the small template language of its texts.
//!
//! Weave's shape and the seed design's are both accepted (`branch` is `baseBranch`):
//!
//! ```json
//! {"type": "github", "url": "https://github.com/acme/fleet", "baseBranch": "main", "secretRef": {"name": "github-token"}}
//! {"url": "https://gitlab.com/acme/fleet.git", "branch": "main"}
//! ```
//!
//! `secretRef` names the Secret whose token the host binds to the forge's API origin and to
//! the git remote; the plugin never sees it and ignores the field.
//!
//! `headBranch`, `title`, `body` and `commitMessage` are templates: `{namespace}`,
//! `{pipeline}`, `{environment}`, `{sourceEnvironment}`, `{app}`, `{version}` and
//! `{cluster}` are replaced, `{{` and `}}` stand for `{` and `}`.

use serde::Deserialize;

use crate::forge::Repo;

/// Weave's head branch: `promotion-<pipelineNamespace>-<pipelineName>-<targetEnv>`.
pub const DEFAULT_HEAD_BRANCH: &str = "promotion-{namespace}-{pipeline}-{environment}";
/// Weave's pull request title.
pub const DEFAULT_TITLE: &str = "Promote {namespace}/{pipeline} in {environment} to {version}";
/// Weave's commit message.
pub const DEFAULT_COMMIT_MESSAGE: &str = "promoting version";
/// The description's first paragraph; the metadata block follows.
pub const DEFAULT_BODY: &str = "Promotes {app} of pipeline {namespace}/{pipeline} from \
                                {sourceEnvironment} to {environment}: version {version}.";
pub const DEFAULT_AUTHOR_NAME: &str = "Promoter";
pub const DEFAULT_AUTHOR_EMAIL: &str = "promoter@noreply.local";

/// The names a template may use.
pub const VARIABLES: &[&str] = &[
    "namespace",
    "pipeline",
    "environment",
    "sourceEnvironment",
    "app",
    "version",
    "cluster",
];

/// The parsed configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Weave's forge `type` (`github`, `gitlab`, `gitea`, `bitbucket-server`,
    /// `azure-devops`); inferred from `url` when absent.
    #[serde(default, rename = "type")]
    pub forge: Option<String>,
    /// The configuration repository, as the host clones it and the forge names it.
    pub url: String,
    /// The branch pull requests target (the seed design's `branch`).
    #[serde(alias = "branch")]
    pub base_branch: String,
    /// Consumed by the host (it binds the Secret's token); ignored here.
    #[serde(default)]
    pub secret_ref: Option<SecretRef>,
    /// The forge's API root, for self-hosted forges whose API is not where `url` suggests.
    #[serde(default)]
    pub api_base: Option<String>,
    /// Azure DevOps only: the REST API version (default 7.0; Azure DevOps Server 2020
    /// needs 6.0).
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub head_branch: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    /// The description; Weave's metadata block is appended when the text lacks
    /// `<namespace>/<pipeline>/<environment>`.
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub commit_message: Option<String>,
    #[serde(default)]
    pub author: Option<AuthorConfig>,
}

/// A Secret reference: `{name}` (Weave) or a bare name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum SecretRef {
    Named { name: String },
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorConfig {
    pub name: String,
    pub email: String,
}

impl Config {
    pub fn head_branch_template(&self) -> &str {
        self.head_branch.as_deref().unwrap_or(DEFAULT_HEAD_BRANCH)
    }

    pub fn title_template(&self) -> &str {
        self.title.as_deref().unwrap_or(DEFAULT_TITLE)
    }

    pub fn body_template(&self) -> &str {
        self.body.as_deref().unwrap_or(DEFAULT_BODY)
    }

    pub fn commit_message_template(&self) -> &str {
        self.commit_message
            .as_deref()
            .unwrap_or(DEFAULT_COMMIT_MESSAGE)
    }

    pub fn author(&self) -> promoter_sdk::Author {
        match &self.author {
            Some(author) => promoter_sdk::Author::new(author.name.trim(), author.email.trim()),
            None => promoter_sdk::Author::new(DEFAULT_AUTHOR_NAME, DEFAULT_AUTHOR_EMAIL),
        }
    }

    /// The repository as the forge's API addresses it.
    pub fn repo(&self) -> Result<Repo, crate::forge::ForgeError> {
        let mut repo = Repo::new(&self.url, self.forge.as_deref(), self.api_base.as_deref())?;
        repo.api_version = self.api_version.as_deref().map(str::trim).map(String::from);
        repo.secret = match &self.secret_ref {
            Some(SecretRef::Named { name } | SecretRef::Name(name)) => Some(name.trim().into()),
            None => None,
        };
        Ok(repo)
    }
}

/// The values a template's variables stand for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vars<'a> {
    pub namespace: &'a str,
    pub pipeline: &'a str,
    pub environment: &'a str,
    pub source_environment: &'a str,
    pub app: &'a str,
    pub version: &'a str,
    /// The cluster (or target index) of this pull request; empty with a single target
    /// that names no cluster.
    pub cluster: &'a str,
}

impl Vars<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        Some(match name {
            "namespace" => self.namespace,
            "pipeline" => self.pipeline,
            "environment" => self.environment,
            "sourceEnvironment" => self.source_environment,
            "app" => self.app,
            "version" => self.version,
            "cluster" => self.cluster,
            _ => return None,
        })
    }
}

/// What validation renders templates with.
const SAMPLE: Vars<'static> = Vars {
    namespace: "flux-system",
    pipeline: "podinfo",
    environment: "prod",
    source_environment: "dev",
    app: "podinfo",
    version: "1.2.3",
    cluster: "prod-eu",
};

/// `template` with its variables replaced, or why it cannot be rendered.
pub fn render(template: &str, vars: &Vars<'_>) -> Result<String, String> {
    substitute(template, &mut |name| vars.get(name))
}

/// `template` with each `{name}` replaced by `value(name)`; `None` is an unknown variable.
fn substitute<'v>(
    template: &str,
    value: &mut dyn FnMut(&str) -> Option<&'v str>,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(at) = rest.find(['{', '}']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("{{").or_else(|| tail.strip_prefix("}}")) {
            out.push_str(&tail[..1]);
            rest = after;
            continue;
        }
        if tail.starts_with('}') {
            return Err(format!(
                "a lone '}}' at byte {}; write '}}}}' for a literal brace",
                template.len() - tail.len()
            ));
        }
        let Some(end) = tail.find('}') else {
            return Err(format!(
                "'{{' at byte {} is not closed; write '{{{{' for a literal brace",
                template.len() - tail.len()
            ));
        };
        let name = &tail[1..end];
        let value = value(name).ok_or_else(|| {
            format!(
                "unknown variable {{{name}}}; expected one of {}",
                VARIABLES
                    .iter()
                    .map(|v| format!("{{{v}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        out.push_str(value);
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// True when `template` uses the variable `name` (`{name}`, not the escaped `{{name}}`).
pub fn uses(template: &str, name: &str) -> bool {
    let mut used = false;
    let _ = substitute(template, &mut |variable| {
        used |= variable == name;
        SAMPLE.get(variable)
    });
    used
}

/// Why `name` is not a branch name git accepts (`git check-ref-format --branch`), if it is not.
pub fn branch_problem(name: &str) -> Option<String> {
    let why = if name.is_empty() {
        "it is empty"
    } else if name.starts_with('-') {
        "it starts with '-'"
    } else if name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        "it has an empty path component"
    } else if name.ends_with('.') || name.ends_with(".lock") {
        "it ends with '.' or '.lock'"
    } else if name.contains("..") || name.split('/').any(|c| c.starts_with('.')) {
        "it has '..' or a component starting with '.'"
    } else if name.contains("@{") || name == "@" {
        "it contains '@{' or is '@'"
    } else if let Some(c) = name
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(*c))
    {
        return Some(format!(
            "{name:?} is not a valid branch name: it contains {c:?}"
        ));
    } else {
        return None;
    };
    Some(format!("{name:?} is not a valid branch name: {why}"))
}

/// `7.0`, `6.0`, `7.1-preview.1`: what Azure DevOps takes as `api-version`.
fn api_version_ok(version: &str) -> bool {
    let (number, preview) = match version.split_once("-preview") {
        Some((number, rest)) => (number, Some(rest)),
        None => (version, None),
    };
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    let number_ok = number
        .split_once('.')
        .is_some_and(|(major, minor)| digits(major) && digits(minor));
    let preview_ok =
        preview.is_none_or(|rest| rest.is_empty() || rest.strip_prefix('.').is_some_and(digits));
    number_ok && preview_ok
}

/// Every semantic problem of `config`, empty when it is fine.
pub fn problems(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    match config.repo() {
        Err(error) => problems.push(error.message),
        Ok(repo) => {
            if let Some(version) = &repo.api_version {
                if repo.kind != crate::forge::ForgeKind::AzureDevOps {
                    problems.push(format!(
                        "apiVersion: only Azure DevOps takes an API version; this is {}",
                        repo.kind
                    ));
                } else if !api_version_ok(version) {
                    problems.push(format!(
                        "apiVersion: expected a version such as 7.0 or 6.0, got {version:?}"
                    ));
                }
            }
        }
    }
    if config.base_branch.trim().is_empty() {
        problems.push("baseBranch: expected the branch pull requests target, got \"\"".into());
    } else if let Some(why) = branch_problem(&config.base_branch) {
        problems.push(format!("baseBranch: {why}"));
    }
    if let Some(SecretRef::Named { name } | SecretRef::Name(name)) = &config.secret_ref
        && name.trim().is_empty()
    {
        problems.push("secretRef.name: expected the name of a Secret, got \"\"".into());
    }

    let mut check = |field: &str, template: &str, single_line: bool| -> Option<String> {
        match render(template, &SAMPLE) {
            Err(why) => {
                problems.push(format!("{field}: {why}"));
                None
            }
            Ok(text) if text.trim().is_empty() => {
                problems.push(format!("{field}: renders to an empty text"));
                None
            }
            Ok(text) if single_line && text.contains(['\n', '\r']) => {
                problems.push(format!("{field}: must be a single line"));
                None
            }
            Ok(text) => Some(text),
        }
    };
    let head = check("headBranch", config.head_branch_template(), true);
    check("title", config.title_template(), true);
    check("commitMessage", config.commit_message_template(), false);
    if let Some(body) = &config.body
        && let Err(why) = render(body, &SAMPLE)
    {
        problems.push(format!("body: {why}"));
    }
    if let Some(head) = head {
        if let Some(why) = branch_problem(&head) {
            problems.push(format!("headBranch: renders to {why}"));
        } else if head == config.base_branch {
            problems.push(format!(
                "headBranch: renders to {head:?}, the base branch; pull requests need a branch \
                 of their own"
            ));
        }
    }
    if let Some(author) = &config.author {
        if author.name.trim().is_empty() || author.name.contains(['<', '>', '\n']) {
            problems.push(format!(
                "author.name: expected a name without '<', '>' or line breaks, got {:?}",
                author.name
            ));
        }
        let email = author.email.trim();
        if !email.contains('@') || email.contains(['<', '>', '\n', ' ']) {
            problems.push(format!(
                "author.email: expected an address like promoter@example.com, got {:?}",
                author.email
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Config, String> {
        serde_json::from_str(json).map_err(|error| error.to_string())
    }

    fn problems_of(json: &str) -> Vec<String> {
        problems(&parse(json).unwrap())
    }

    #[test]
    fn weave_and_seed_shapes_parse_to_the_same_repository_and_base() {
        let weave = parse(
            r#"{"type": "github", "url": "https://github.com/acme/fleet", "baseBranch": "main",
                "secretRef": {"name": "github-token"}}"#,
        )
        .unwrap();
        let seed = parse(r#"{"url": "https://github.com/acme/fleet", "branch": "main"}"#).unwrap();
        assert_eq!(weave.base_branch, seed.base_branch);
        let mut repo = weave.repo().unwrap();
        assert_eq!(
            repo.secret.as_deref(),
            Some("github-token"),
            "named in errors"
        );
        repo.secret = None;
        assert_eq!(repo, seed.repo().unwrap());
        assert_eq!(
            weave.secret_ref,
            Some(SecretRef::Named {
                name: "github-token".into()
            })
        );
        assert!(problems(&weave).is_empty() && problems(&seed).is_empty());
    }

    #[test]
    fn misspelled_field_and_missing_base_branch_are_named() {
        let error =
            parse(r#"{"url": "https://github.com/a/b", "baseBranch": "main", "titel": "x"}"#)
                .unwrap_err();
        assert!(error.contains("unknown field `titel`"), "{error}");
        let error = parse(r#"{"url": "https://github.com/a/b"}"#).unwrap_err();
        assert!(error.contains("missing field `baseBranch`"), "{error}");
    }

    #[test]
    fn unknown_forge_and_uninferable_host_are_reported() {
        let problems = problems_of(
            r#"{"url": "https://github.com/a/b", "baseBranch": "main", "type": "svn"}"#,
        );
        assert!(problems[0].contains("type \"svn\""), "{problems:?}");
        let problems =
            problems_of(r#"{"url": "https://git.example.com/a/b.git", "baseBranch": "main"}"#);
        assert!(problems[0].contains("set type"), "{problems:?}");
        assert!(
            problems_of(r#"{"url": "https://git.example.com/a/b.git", "baseBranch": "main", "type": "gitea"}"#)
                .is_empty()
        );
    }

    #[test]
    fn an_api_version_is_for_azure_devops_and_must_look_like_one() {
        let azure = r#""url": "https://dev.azure.com/acme/ops/_git/fleet", "baseBranch": "main""#;
        assert!(problems_of(&format!(r#"{{{azure}, "apiVersion": "6.0"}}"#)).is_empty());
        assert!(problems_of(&format!(r#"{{{azure}, "apiVersion": "7.1-preview.1"}}"#)).is_empty());
        let problems = problems_of(&format!(r#"{{{azure}, "apiVersion": "latest"}}"#));
        assert!(
            problems[0].starts_with("apiVersion: expected"),
            "{problems:?}"
        );
        let problems = problems_of(
            r#"{"url": "https://github.com/a/b", "baseBranch": "main", "apiVersion": "6.0"}"#,
        );
        assert!(problems[0].contains("only Azure DevOps"), "{problems:?}");
    }

    #[test]
    fn every_template_problem_is_listed_at_once() {
        let problems = problems_of(
            r#"{"url": "https://github.com/a/b", "baseBranch": " ",
                "headBranch": "promote {version", "title": "Promote {versoin}",
                "commitMessage": "  ", "body": "}", "author": {"name": "", "email": "nobody"}}"#,
        );
        let fields: Vec<&str> = problems
            .iter()
            .map(|p| p.split(':').next().unwrap())
            .collect();
        assert_eq!(
            fields,
            [
                "baseBranch",
                "headBranch",
                "title",
                "commitMessage",
                "body",
                "author.name",
                "author.email"
            ],
            "{problems:#?}"
        );
        assert!(
            problems[2].contains("unknown variable {versoin}"),
            "{problems:?}"
        );
    }

    #[test]
    fn head_branch_must_render_to_a_branch_other_than_the_base() {
        let problems = problems_of(
            r#"{"url": "https://github.com/a/b", "baseBranch": "main", "headBranch": "promote {version}"}"#,
        );
        assert!(problems[0].contains("contains ' '"), "{problems:?}");
        let problems = problems_of(
            r#"{"url": "https://github.com/a/b", "baseBranch": "main", "headBranch": "main"}"#,
        );
        assert!(problems[0].contains("the base branch"), "{problems:?}");
    }

    #[test]
    fn templates_replace_variables_and_keep_escaped_braces() {
        let text = render("{{x}} {namespace}/{pipeline}@{version} }}", &SAMPLE).unwrap();
        assert_eq!(text, "{x} flux-system/podinfo@1.2.3 }");
        assert!(uses("a-{cluster}", "cluster"));
        assert!(!uses("a-{{cluster}}", "cluster"));
    }
}
