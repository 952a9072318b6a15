//! The in-memory git behind [`MockHost::git_open`](super::MockHost): remotes seeded with
//! [`MockHost::with_repo`](super::MockHost::with_repo), working copies that clone them, and
//! the same answers the host gives (`commit` → `None` when nothing changed, `push` → `false`
//! when the remote branch already has the same files).

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use sha2::{Digest, Sha256};

use crate::git::{Author, GitError, Repository};

/// A branch's files: path → contents.
pub(super) type Tree = BTreeMap<String, Vec<u8>>;

/// A commit made in a working copy of the fake git.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitCommit {
    /// The repository URL the working copy was opened from.
    pub url: String,
    /// The local branch it was made on.
    pub branch: String,
    pub message: String,
    pub author: Author,
    /// Its (made-up, 40 hex digits) id.
    pub sha: String,
    /// Paths added, changed or removed by it, sorted.
    pub changed: Vec<String>,
}

/// A push that changed a remote branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitPush {
    pub url: String,
    pub branch: String,
    /// The commit pushed.
    pub sha: String,
}

/// The state every working copy opened from one [`MockHost`](super::MockHost) shares.
#[derive(Debug, Default)]
pub(super) struct FakeGit {
    /// url → branch → files.
    pub remotes: BTreeMap<String, BTreeMap<String, Tree>>,
    pub denied: bool,
    /// Errors the next git operations return instead of running, in order.
    pub failures: VecDeque<GitError>,
    pub opens: Vec<(String, String)>,
    pub commits: Vec<GitCommit>,
    pub pushes: Vec<GitPush>,
    /// Pushes answered with `false` (the remote branch already had the files).
    pub unchanged_pushes: usize,
}

pub(super) type Shared = Rc<RefCell<FakeGit>>;

impl FakeGit {
    fn fail(&mut self) -> Result<(), GitError> {
        match self.failures.pop_front() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// Opens a working copy of `url` at `branch`.
pub(super) fn open(git: &Shared, url: &str, branch: &str) -> Result<Box<dyn Repository>, GitError> {
    let mut state = git.borrow_mut();
    state.fail()?;
    if state.denied {
        return Err(GitError::Denied(format!(
            "repository {url} is not granted to this plugin"
        )));
    }
    check_branch(branch)?;
    let branches = state
        .remotes
        .get(url)
        .ok_or_else(|| GitError::NotFound(format!("repository {url} does not exist")))?;
    let files = branches.get(branch).cloned().ok_or_else(|| {
        let have: Vec<&str> = branches.keys().map(String::as_str).collect();
        GitError::NotFound(format!(
            "repository {url} has no branch {branch:?}; have {}",
            have.join(", ")
        ))
    })?;
    state.opens.push((url.to_string(), branch.to_string()));
    let head = sha_of(url, branch, &files, "");
    Ok(Box::new(FakeRepository {
        git: Rc::clone(git),
        url: url.to_string(),
        branch: branch.to_string(),
        head,
        committed: files.clone(),
        files,
    }))
}

/// A working copy: the files of the current commit and the (possibly edited) working files.
struct FakeRepository {
    git: Shared,
    url: String,
    /// The current local branch.
    branch: String,
    head: String,
    committed: Tree,
    files: Tree,
}

impl FakeRepository {
    fn fail(&self) -> Result<(), GitError> {
        self.git.borrow_mut().fail()
    }
}

impl Repository for FakeRepository {
    fn create_branch(&mut self, name: &str) -> Result<(), GitError> {
        self.fail()?;
        check_branch(name)?;
        self.branch = name.to_string();
        Ok(())
    }

    fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, GitError> {
        self.fail()?;
        check_path(path)?;
        Ok(self.files.get(path).cloned())
    }

    fn write_file(&mut self, path: &str, contents: &[u8]) -> Result<(), GitError> {
        self.fail()?;
        check_path(path)?;
        if self
            .files
            .keys()
            .any(|p| p.starts_with(&format!("{path}/")))
        {
            return Err(GitError::Invalid(format!("{path} is a directory")));
        }
        self.files.insert(path.to_string(), contents.to_vec());
        Ok(())
    }

    fn list_files(&self, dir: &str) -> Result<Vec<String>, GitError> {
        self.fail()?;
        let dir = dir.trim_end_matches('/');
        if dir.is_empty() {
            return Ok(self.files.keys().cloned().collect());
        }
        check_path(dir)?;
        let prefix = format!("{dir}/");
        Ok(self
            .files
            .keys()
            .filter(|p| p.starts_with(&prefix))
            .cloned()
            .collect())
    }

    fn commit(&mut self, message: &str, author: &Author) -> Result<Option<String>, GitError> {
        self.fail()?;
        if message.trim().is_empty() {
            return Err(GitError::Invalid("the commit message is empty".into()));
        }
        if author.name.trim().is_empty() || author.email.trim().is_empty() {
            return Err(GitError::Invalid(format!(
                "the author {author:?} needs a name and an email"
            )));
        }
        if self.files == self.committed {
            return Ok(None);
        }
        let changed: Vec<String> = self
            .files
            .iter()
            .filter(|(p, c)| self.committed.get(*p) != Some(*c))
            .map(|(p, _)| p.clone())
            .chain(
                self.committed
                    .keys()
                    .filter(|p| !self.files.contains_key(*p))
                    .cloned(),
            )
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let sha = sha_of(&self.head, message, &self.files, &author.to_string());
        self.head = sha.clone();
        self.committed = self.files.clone();
        self.git.borrow_mut().commits.push(GitCommit {
            url: self.url.clone(),
            branch: self.branch.clone(),
            message: message.to_string(),
            author: author.clone(),
            sha: sha.clone(),
            changed,
        });
        Ok(Some(sha))
    }

    fn push(&mut self, branch: &str) -> Result<bool, GitError> {
        let mut git = self.git.borrow_mut();
        git.fail()?;
        check_branch(branch)?;
        let remote = git.remotes.entry(self.url.clone()).or_default();
        if remote.get(branch) == Some(&self.committed) {
            git.unchanged_pushes += 1;
            return Ok(false);
        }
        remote.insert(branch.to_string(), self.committed.clone());
        git.pushes.push(GitPush {
            url: self.url.clone(),
            branch: branch.to_string(),
            sha: self.head.clone(),
        });
        Ok(true)
    }
}

/// A made-up commit id: 40 hex digits that depend on what went into the commit.
fn sha_of(parent: &str, message: &str, files: &Tree, author: &str) -> String {
    let mut hash = Sha256::new();
    for part in [parent.as_bytes(), message.as_bytes(), author.as_bytes()] {
        hash.update(part);
        hash.update([0]);
    }
    for (path, contents) in files {
        hash.update(path.as_bytes());
        hash.update([0]);
        hash.update(contents);
        hash.update([0]);
    }
    hex::encode(hash.finalize())[..40].to_string()
}

/// A path inside the working copy: relative, `/`-separated, no `.`/`..` components.
fn check_path(path: &str) -> Result<(), GitError> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.contains('\\')
        || path.contains('\0')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        || path.split('/').next() == Some(".git");
    if bad {
        Err(GitError::Invalid(format!(
            "{path:?} is not a path inside the working copy"
        )))
    } else {
        Ok(())
    }
}

/// A branch name git accepts (the rules of `git check-ref-format --branch` that matter here).
fn check_branch(name: &str) -> Result<(), GitError> {
    let bad = name.is_empty()
        || name.starts_with('-')
        || name.starts_with('/')
        || name.ends_with('/')
        || name.ends_with('.')
        || name.ends_with(".lock")
        || name.contains("..")
        || name.contains("//")
        || name.contains("@{")
        || name == "@"
        || name
            .chars()
            .any(|c| c.is_ascii_control() || " ~^:?*[\\".contains(c));
    if bad {
        Err(GitError::Invalid(format!(
            "{name:?} is not a valid branch name"
        )))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::MockHost;
    use crate::{Author, GitError, Host};

    const URL: &str = "https://git.example.com/acme/fleet.git";

    fn author() -> Author {
        Author::new("Promoter", "promoter@noreply.local")
    }

    fn seeded() -> MockHost {
        MockHost::new()
            .with_repo(
                URL,
                "main",
                &[
                    ("apps/podinfo/release.yaml", "version: 1.0.0\n"),
                    ("apps/billing/values.yml", "tag: '2.0'\n"),
                    ("README.md", "fleet\n"),
                ],
            )
            .with_repo(URL, "staging", &[("README.md", "staging\n")])
    }

    #[test]
    fn opening_clones_the_seeded_branch() {
        let host = seeded();
        let repo = host.git_open(URL, "main").unwrap();
        assert_eq!(
            repo.read_file("README.md").unwrap().as_deref(),
            Some(&b"fleet\n"[..])
        );
        assert_eq!(repo.read_file("missing.yaml").unwrap(), None);
        assert_eq!(
            repo.list_files("").unwrap(),
            [
                "README.md",
                "apps/billing/values.yml",
                "apps/podinfo/release.yaml"
            ]
        );
        assert_eq!(
            repo.list_files("apps/podinfo/").unwrap(),
            ["apps/podinfo/release.yaml"]
        );
        assert_eq!(host.git_opens(), [(URL.to_string(), "main".to_string())]);
    }

    #[test]
    fn unknown_repository_or_branch_is_not_found_and_denial_is_denied() {
        let host = seeded();
        let unknown = host.git_open("https://git.example.com/other.git", "main");
        assert!(matches!(unknown.err(), Some(GitError::NotFound(_))));
        let error = host.git_open(URL, "prod").err().unwrap();
        assert!(
            matches!(&error, GitError::NotFound(m) if m.contains("have main, staging")),
            "{error}"
        );
        let denied = seeded().deny_git().git_open(URL, "main");
        assert!(matches!(denied.err(), Some(GitError::Denied(_))));
    }

    #[test]
    fn commit_without_changes_makes_no_commit() {
        let host = seeded();
        let mut repo = host.git_open(URL, "main").unwrap();
        repo.create_branch("promotion").unwrap();
        repo.write_file("README.md", b"fleet\n").unwrap();
        assert_eq!(repo.commit("promoting version", &author()).unwrap(), None);
        assert!(host.commits().is_empty());
    }

    #[test]
    fn pushed_branch_holds_the_committed_files_and_base_is_untouched() {
        let host = seeded();
        let mut repo = host.git_open(URL, "main").unwrap();
        repo.create_branch("promotion").unwrap();
        repo.write_file("apps/podinfo/release.yaml", b"version: 1.1.0\n")
            .unwrap();
        let sha = repo
            .commit("promoting version", &author())
            .unwrap()
            .unwrap();
        assert_eq!(sha.len(), 40);
        assert!(repo.push("promotion").unwrap());

        assert_eq!(
            host.remote_file(URL, "promotion", "apps/podinfo/release.yaml")
                .as_deref(),
            Some("version: 1.1.0\n")
        );
        assert_eq!(
            host.remote_file(URL, "main", "apps/podinfo/release.yaml")
                .as_deref(),
            Some("version: 1.0.0\n")
        );
        assert_eq!(host.remote_branches(URL), ["main", "promotion", "staging"]);
        let commits = host.commits();
        assert_eq!(commits.len(), 1);
        assert_eq!(commits[0].branch, "promotion");
        assert_eq!(commits[0].changed, ["apps/podinfo/release.yaml"]);
        assert_eq!(commits[0].sha, sha);
        assert_eq!(host.pushes()[0].sha, sha);
    }

    #[test]
    fn pushing_the_same_files_again_reports_nothing_pushed() {
        let host = seeded();
        for attempt in 1..=2 {
            let mut repo = host.git_open(URL, "main").unwrap();
            repo.create_branch("promotion").unwrap();
            repo.write_file("README.md", b"promoted\n").unwrap();
            assert!(
                repo.commit("promoting version", &author())
                    .unwrap()
                    .is_some()
            );
            assert_eq!(
                repo.push("promotion").unwrap(),
                attempt == 1,
                "attempt {attempt}"
            );
        }
        assert_eq!(host.commits().len(), 2, "each working copy commits");
        assert_eq!(host.pushes().len(), 1);
        assert_eq!(host.unchanged_pushes(), 1);
    }

    #[test]
    fn uncommitted_changes_are_not_pushed() {
        let host = seeded();
        let mut repo = host.git_open(URL, "main").unwrap();
        repo.write_file("README.md", b"edited\n").unwrap();
        assert!(repo.push("copy").unwrap(), "a new branch is a change");
        assert_eq!(
            host.remote_file(URL, "copy", "README.md").as_deref(),
            Some("fleet\n")
        );
    }

    #[test]
    fn paths_outside_the_working_copy_and_bad_branch_names_are_invalid() {
        let host = seeded();
        let mut repo = host.git_open(URL, "main").unwrap();
        for path in ["../etc/passwd", "/abs", "a//b", ".git/config", ""] {
            assert!(
                matches!(repo.write_file(path, b"x"), Err(GitError::Invalid(_))),
                "{path:?}"
            );
        }
        for name in ["", "-x", "a..b", "with space", "x.lock"] {
            assert!(
                matches!(repo.create_branch(name), Err(GitError::Invalid(_))),
                "{name:?}"
            );
        }
        let nameless = Author::new("", "");
        assert!(matches!(
            repo.commit("m", &nameless),
            Err(GitError::Invalid(_))
        ));
    }

    #[test]
    fn queued_failures_hit_the_next_operations_in_order() {
        let host = seeded()
            .fail_git(GitError::Unavailable("connection reset".into()))
            .fail_git(GitError::Unauthorized("bad token".into()));
        assert!(matches!(
            host.git_open(URL, "main").err(),
            Some(GitError::Unavailable(_))
        ));
        assert!(matches!(
            host.git_open(URL, "main").err(),
            Some(GitError::Unauthorized(_))
        ));
        assert!(host.git_open(URL, "main").is_ok());
    }
}
