//! Git as a plugin sees it: a working copy of a repository the operator granted, run by the
//! host. The host clones, authenticates (tokens, SSH keys) and pushes; the plugin reads and
//! writes files, commits and asks for a push. Credentials never enter the sandbox.
//!
//! Open a [`Repository`] with [`Host::git_open`](crate::Host::git_open); the working copy
//! lives for one `promote` call. In native tests,
//! [`MockHost::with_repo`](crate::testing::MockHost::with_repo) seeds an in-memory remote.

use std::fmt;

/// Who a commit is by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Author {
    pub name: String,
    pub email: String,
}

impl Author {
    pub fn new(name: impl Into<String>, email: impl Into<String>) -> Self {
        Author {
            name: name.into(),
            email: email.into(),
        }
    }
}

impl fmt::Display for Author {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} <{}>", self.name, self.email)
    }
}

/// Why a git operation failed. Each case carries the host's explanation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitError {
    /// The repository is not granted to this plugin (or `git` was not granted at all).
    #[error("git access denied: {0}")]
    Denied(String),
    /// The repository or branch does not exist (or the credentials cannot see it).
    #[error("git repository or branch not found: {0}")]
    NotFound(String),
    /// The remote refused the credentials the operator bound.
    #[error("git remote refused the credentials: {0}")]
    Unauthorized(String),
    /// Network trouble or a busy remote: worth retrying.
    #[error("git remote unavailable: {0}")]
    Unavailable(String),
    /// A path outside the working copy, a bad branch name, and the like.
    #[error("invalid git operation: {0}")]
    Invalid(String),
    #[error("git failed: {0}")]
    Other(String),
}

impl GitError {
    /// The host's explanation, without the kind.
    pub fn message(&self) -> &str {
        match self {
            GitError::Denied(m)
            | GitError::NotFound(m)
            | GitError::Unauthorized(m)
            | GitError::Unavailable(m)
            | GitError::Invalid(m)
            | GitError::Other(m) => m,
        }
    }

    /// True when the same operation may succeed later ([`GitError::Unavailable`]).
    pub fn is_retryable(&self) -> bool {
        matches!(self, GitError::Unavailable(_))
    }
}

/// A working copy of one repository, opened at one branch by
/// [`Host::git_open`](crate::Host::git_open). Paths are relative to the repository's root
/// and use `/`.
pub trait Repository {
    /// Starts branch `name` at the current commit (replacing a local branch of that name)
    /// and switches to it. Uncommitted changes stay in the working copy.
    fn create_branch(&mut self, name: &str) -> Result<(), GitError>;

    /// The file's contents; `None` when it does not exist.
    fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, GitError>;

    /// Creates or replaces the file.
    fn write_file(&mut self, path: &str, contents: &[u8]) -> Result<(), GitError>;

    /// Files under `dir` (`""` for the whole tree), recursively, as paths relative to the root.
    fn list_files(&self, dir: &str) -> Result<Vec<String>, GitError>;

    /// Commits every change; `None` when nothing changed (there are no empty commits),
    /// otherwise the new commit's id.
    fn commit(&mut self, message: &str, author: &Author) -> Result<Option<String>, GitError>;

    /// Pushes the current commit to `branch` on the remote, replacing what is there, unless
    /// the remote branch already has the same files. True when something was pushed.
    fn push(&mut self, branch: &str) -> Result<bool, GitError>;
}

#[cfg(target_arch = "wasm32")]
pub(crate) use sandbox::open;

/// [`Repository`] over the `promoter:strategy/git` import.
#[cfg(target_arch = "wasm32")]
mod sandbox {
    use super::{Author, GitError, Repository};
    use crate::bindings::promoter::strategy::git as wit;

    pub(crate) fn open(url: &str, branch: &str) -> Result<Box<dyn Repository>, GitError> {
        let repository = wit::Repository::open(url, branch).map_err(GitError::from)?;
        Ok(Box::new(WasiRepository(repository)))
    }

    struct WasiRepository(wit::Repository);

    impl From<wit::GitError> for GitError {
        fn from(error: wit::GitError) -> Self {
            match error {
                wit::GitError::Denied(m) => GitError::Denied(m),
                wit::GitError::NotFound(m) => GitError::NotFound(m),
                wit::GitError::Unauthorized(m) => GitError::Unauthorized(m),
                wit::GitError::Unavailable(m) => GitError::Unavailable(m),
                wit::GitError::Invalid(m) => GitError::Invalid(m),
                wit::GitError::Other(m) => GitError::Other(m),
            }
        }
    }

    impl Repository for WasiRepository {
        fn create_branch(&mut self, name: &str) -> Result<(), GitError> {
            Ok(self.0.create_branch(name)?)
        }

        fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, GitError> {
            Ok(self.0.read_file(path)?)
        }

        fn write_file(&mut self, path: &str, contents: &[u8]) -> Result<(), GitError> {
            Ok(self.0.write_file(path, contents)?)
        }

        fn list_files(&self, dir: &str) -> Result<Vec<String>, GitError> {
            Ok(self.0.list_files(dir)?)
        }

        fn commit(&mut self, message: &str, author: &Author) -> Result<Option<String>, GitError> {
            let author = wit::Author {
                name: author.name.clone(),
                email: author.email.clone(),
            };
            Ok(self.0.commit(message, &author)?)
        }

        fn push(&mut self, branch: &str) -> Result<bool, GitError> {
            Ok(self.0.push(branch)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unavailable_is_worth_retrying() {
        assert!(GitError::Unavailable("busy".into()).is_retryable());
        for error in [
            GitError::Denied("x".into()),
            GitError::NotFound("x".into()),
            GitError::Unauthorized("x".into()),
            GitError::Invalid("x".into()),
            GitError::Other("x".into()),
        ] {
            assert!(!error.is_retryable(), "{error}");
            assert_eq!(error.message(), "x");
        }
    }

    #[test]
    fn error_text_says_what_kind_of_failure_it_is() {
        assert_eq!(
            GitError::Denied("https://git.example/a.git is not granted".into()).to_string(),
            "git access denied: https://git.example/a.git is not granted"
        );
        assert_eq!(
            Author::new("Promoter", "promoter@noreply.local").to_string(),
            "Promoter <promoter@noreply.local>"
        );
    }
}
