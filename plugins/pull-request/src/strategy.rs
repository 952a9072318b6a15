//! One promotion, step by step, each step find-or-create so a retry picks up where an
//! attempt stopped.
//!
//! For each pull request to open (one, or one per cluster of the target environment):
//!
//! 1. open a working copy of `url` at `baseBranch` (the host clones and authenticates);
//! 2. start the head branch there (a retry rebuilds it from the base, so it never stacks
//!    commits from earlier attempts);
//! 3. set every marked scalar of every `*.yaml`/`*.yml` file to the version, writing only the
//!    files whose text changed;
//! 4. commit; nothing to commit means the base branch already has the version at every marker:
//!    the promotion is done, nothing is pushed and no pull request is opened (an open pull
//!    request left by an earlier promotion is not touched);
//! 5. push the head branch, replacing what is there; the host answers "nothing pushed" when
//!    the remote branch already has the same files (a retry after a push), and we go on;
//! 6. find the open pull request from the head branch into the base and bring its title and
//!    body up to date, or create it ([`forge::ensure_pr`]).

use promoter_sdk::{Author, GitError, Host, Outcome, PromoteError, PromotionRequest, Repository};

use crate::config::{self, Config, Vars};
use crate::forge::{self, Action, Repo};
use crate::markers::{self, MarkerTarget};

/// One pull request to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Whose markers apply: the environment's, and the cluster's when it has one.
    pub target: MarkerTarget,
    /// `cluster prod-eu`, `the management cluster`; `None` when this is the only pull request.
    pub label: Option<String>,
    pub head: String,
    pub title: String,
    pub body: String,
    pub commit_message: String,
}

/// What one plan came to.
enum Step {
    /// The base branch already has the version at every marker.
    AlreadyAt,
    Opened {
        pull_request: forge::PullRequest,
        action: Action,
    },
}

/// Carries the promotion out.
pub(crate) fn promote(
    host: &dyn Host,
    request: &PromotionRequest,
    config: &Config,
) -> Result<Outcome, PromoteError> {
    if request.version.trim().is_empty() {
        return Err(PromoteError::permanent(format!(
            "promotion {}: the version to promote is empty",
            request.id
        )));
    }
    let repo = config.repo()?;
    let author = config.author();
    let plans = plans(request, config)?;
    let mut steps = Vec::with_capacity(plans.len());
    for plan in &plans {
        steps.push(run(host, request, config, &repo, &author, plan)?);
    }
    Ok(outcome(request, config, &plans, &steps))
}

/// The pull requests to open: one per distinct cluster of `request.targets` when there are
/// several (targets without a `clusterRef` share one, on the management cluster), else one
/// with Weave's names.
pub(crate) fn plans(
    request: &PromotionRequest,
    config: &Config,
) -> Result<Vec<Plan>, PromoteError> {
    // (cluster name, index of its first target)
    let mut groups: Vec<(Option<&str>, usize)> = Vec::new();
    for (index, target) in request.targets.iter().enumerate() {
        let cluster = target.cluster.as_ref().map(|c| c.name.as_str());
        if !groups.iter().any(|(c, _)| *c == cluster) {
            groups.push((cluster, index));
        }
    }
    if groups.is_empty() {
        groups.push((None, 0));
    }
    let several = groups.len() > 1;
    let (ns, name, env) = (
        request.pipeline.namespace.as_str(),
        request.pipeline.name.as_str(),
        request.target_environment.as_str(),
    );
    let metadata = format!(
        "<details>\n<summary>metadata</summary>\n!!! DO NOT EDIT !!!\n\n{ns}/{name}/{env}\n</details>"
    );
    let mut plans = Vec::with_capacity(groups.len());
    for (cluster, index) in groups {
        // What tells this pull request's branch from the others': the cluster, or the
        // position of the first target on the management cluster.
        let key = cluster.map_or_else(|| index.to_string(), str::to_string);
        let vars = Vars {
            namespace: ns,
            pipeline: name,
            environment: env,
            source_environment: &request.source_environment,
            app: &request.app.name,
            version: &request.version,
            cluster: if several {
                &key
            } else {
                cluster.unwrap_or_default()
            },
        };
        let render = |field: &str, template: &str| {
            config::render(template, &vars).map_err(|why| {
                PromoteError::permanent(format!("promotion {}: {field}: {why}", request.id))
            })
        };
        let label = several.then(|| match cluster {
            Some(cluster) => format!("cluster {cluster}"),
            None => "the management cluster".to_string(),
        });

        let mut head = render("headBranch", config.head_branch_template())?;
        let mut title = render("title", config.title_template())?;
        let mut body = render("body", config.body_template())?;
        if let Some(label) = &label {
            if !config::uses(config.head_branch_template(), "cluster") {
                head = format!("{head}-{key}");
            }
            if !config::uses(config.title_template(), "cluster") {
                title = format!("{title} ({label})");
            }
            if !config::uses(config.body_template(), "cluster") {
                body = format!("{body}\n\nThis pull request is for {label}.");
            }
        }
        if !body.contains(&format!("{ns}/{name}/{env}")) {
            body = if body.trim().is_empty() {
                metadata.clone()
            } else {
                format!("{}\n\n{metadata}", body.trim_end())
            };
        }
        if let Some(why) = config::branch_problem(&head) {
            return Err(PromoteError::permanent(format!(
                "promotion {}: headBranch: renders to {why}",
                request.id
            )));
        }
        let mut target = MarkerTarget::new(ns, name, env);
        if let Some(cluster) = cluster {
            target = target.on_cluster(cluster);
        }
        plans.push(Plan {
            target,
            label,
            head,
            title,
            body,
            commit_message: render("commitMessage", config.commit_message_template())?,
        });
    }
    Ok(plans)
}

/// Steps 1 to 6 for one plan.
fn run(
    host: &dyn Host,
    request: &PromotionRequest,
    config: &Config,
    repo: &Repo,
    author: &Author,
    plan: &Plan,
) -> Result<Step, PromoteError> {
    let (url, base, head) = (&config.url, &config.base_branch, &plan.head);
    let failed = |what: &str| {
        let what = format!("{what} in {url}");
        move |error: GitError| git_failed(url, &what, error)
    };
    let mut git = host
        .git_open(url, base)
        .map_err(failed(&format!("opening branch {base}")))?;
    git.create_branch(head)
        .map_err(failed(&format!("starting branch {head} at {base}")))?;

    let changed = edit(git.as_mut(), config, plan, &request.version)?;
    if changed.is_empty() {
        host.info(&format!(
            "{url} {base} is already at {} for {}",
            request.version,
            marker_name(&plan.target)
        ));
        return Ok(Step::AlreadyAt);
    }
    let commit = git
        .commit(&plan.commit_message, author)
        .map_err(failed(&format!("committing on {head}")))?;
    let Some(commit) = commit else {
        return Ok(Step::AlreadyAt);
    };
    host.info(&format!(
        "committed {commit} on {head}: {} file(s) set to {} ({})",
        changed.len(),
        request.version,
        changed.join(", ")
    ));
    let pushed = git
        .push(head)
        .map_err(failed(&format!("pushing branch {head}")))?;
    host.info(&if pushed {
        format!("pushed {head} to {url}")
    } else {
        format!("{url} {head} already has these changes; nothing pushed")
    });

    let ensured = forge::ensure_pr(host, repo, head, base, &plan.title, &plan.body)?;
    host.info(&format!(
        "{} pull request #{} {}",
        action_word(ensured.action),
        ensured.pull_request.number,
        ensured.pull_request.url
    ));
    Ok(Step::Opened {
        pull_request: ensured.pull_request,
        action: ensured.action,
    })
}

/// Sets the plan's markers in every YAML file of the working copy. Returns the paths written;
/// errors name every file and line whose markers cannot be applied.
fn edit(
    git: &mut dyn Repository,
    config: &Config,
    plan: &Plan,
    version: &str,
) -> Result<Vec<String>, PromoteError> {
    let (url, base) = (&config.url, &config.base_branch);
    let paths = git
        .list_files("")
        .map_err(|e| git_failed(url, &format!("listing the files of {base} in {url}"), e))?;
    let mut problems = Vec::new();
    let mut changed = Vec::new();
    let mut matched = 0;
    for path in paths.iter().filter(|p| is_yaml(p)) {
        let read = |e| git_failed(url, &format!("reading {path} in {url}"), e);
        let Some(bytes) = git.read_file(path).map_err(read)? else {
            continue;
        };
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(error) => {
                if error.as_bytes().windows(10).any(|w| w == b"$promotion") {
                    problems.push(format!(
                        "{path}: holds a promotion marker but is not UTF-8 text"
                    ));
                }
                continue;
            }
        };
        match markers::apply(&text, &plan.target, version) {
            Ok(edit) => {
                matched += edit.matched;
                if edit.text != text {
                    git.write_file(path, edit.text.as_bytes())
                        .map_err(|e| git_failed(url, &format!("writing {path} in {url}"), e))?;
                    changed.push(path.clone());
                }
            }
            Err(error) => problems.push(format!("{path}: {error}")),
        }
    }
    if !problems.is_empty() {
        return Err(PromoteError::permanent(format!(
            "promotion markers for {} in {url} ({base}) cannot be applied: {}",
            marker_name(&plan.target),
            problems.join("; ")
        )));
    }
    if matched == 0 {
        return Err(PromoteError::permanent(format!(
            "no YAML file of {url} ({base}) has a promotion marker for {}: add a comment \
             # {{\"$promotion\": \"{}\"}} after each value to set",
            marker_name(&plan.target),
            marker_name(&MarkerTarget {
                cluster: None,
                ..plan.target.clone()
            })
        )));
    }
    Ok(changed)
}

fn is_yaml(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.ends_with(".yaml") || lower.ends_with(".yml")
}

/// `ns:name:env` or `ns:name:env[:cluster]` as a marker names it.
fn marker_name(target: &MarkerTarget) -> String {
    let plain = format!(
        "{}:{}:{}",
        target.namespace, target.name, target.environment
    );
    match &target.cluster {
        Some(cluster) => format!("{plain} (or {plain}:{cluster})"),
        None => plain,
    }
}

fn action_word(action: Action) -> &'static str {
    match action {
        Action::Created => "opened",
        Action::Updated => "updated",
        Action::Unchanged => "found open",
    }
}

/// A failed git operation; only [`GitError::Unavailable`] is worth retrying.
fn git_failed(url: &str, what: &str, error: GitError) -> PromoteError {
    let hint = match &error {
        GitError::Denied(_) => format!(
            "; the operator must grant the repository {url} to this plugin (and the plugin the \
             git capability)"
        ),
        GitError::Unauthorized(_) => {
            format!("; check the credentials bound to {url} (the Pipeline's secretRef)")
        }
        GitError::NotFound(_) => "; check url and baseBranch, and that the credentials bound \
                                  to the repository can see it"
            .to_string(),
        _ => String::new(),
    };
    let message = format!("{what}: {error}{hint}");
    if error.is_retryable() {
        PromoteError::retryable(message)
    } else {
        PromoteError::permanent(message)
    }
}

fn outcome(request: &PromotionRequest, config: &Config, plans: &[Plan], steps: &[Step]) -> Outcome {
    let mut url = None;
    let mut notes = Vec::with_capacity(steps.len());
    for (plan, step) in plans.iter().zip(steps) {
        let note = match step {
            Step::AlreadyAt => format!(
                "already at {}: {} ({}) has it at every marker",
                request.version, config.url, config.base_branch
            ),
            Step::Opened {
                pull_request,
                action,
            } => {
                url.get_or_insert_with(|| pull_request.url.clone());
                format!(
                    "{} pull request #{} from {} into {}: {}",
                    action_word(*action),
                    pull_request.number,
                    plan.head,
                    config.base_branch,
                    pull_request.url
                )
            }
        };
        notes.push(match &plan.label {
            Some(label) => format!("{label}: {note}"),
            None => note,
        });
    }
    let outcome = Outcome::done().with_details(notes.join("; "));
    match url {
        Some(url) => outcome.with_url(url),
        None => outcome,
    }
}
