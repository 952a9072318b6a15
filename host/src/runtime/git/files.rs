//! Files of a working copy as a plugin reads and writes them: beneath the working copy's
//! root, never through a symbolic link, never into `.git`.
//!
//! Repository content is untrusted: a committed link `g -> .git` would let a write to
//! `g/config` switch on `core.fsmonitor` (a command the host's next `git add` runs), a
//! link to `/var/run/secrets/…/token` would read the service account's token. The
//! checkout already writes links as plain files (`core.symlinks=false`); here every path
//! is also resolved by the kernel beneath the root with no link followed at any step
//! (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`), so a link that appears some
//! other way is refused too. Missing directories are created one level at a time, each
//! relative to a directory opened the same way.

use super::GitFailure;
use rustix::fs::{Mode, OFlags, ResolveFlags};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

/// A relative path inside the working copy, never into `.git` (in any case: git itself
/// treats `.GIT` as `.git` on case-insensitive file systems) or out of the tree.
pub(super) fn inside(path: &str) -> Result<PathBuf, GitFailure> {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(part) if !part.eq_ignore_ascii_case(".git") => out.push(part),
            Component::CurDir => {}
            _ => {
                return Err(GitFailure::Invalid(format!(
                    "path {path:?} must be relative, inside the repository and outside .git"
                )));
            }
        }
    }
    Ok(out)
}

/// How every path below the root is resolved: beneath it, and no link at any step.
fn resolve() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

/// Why an open failed, in the plugin's terms.
fn refused(path: &str, e: rustix::io::Errno) -> GitFailure {
    match e {
        rustix::io::Errno::LOOP | rustix::io::Errno::XDEV | rustix::io::Errno::NOTDIR => {
            GitFailure::Invalid(format!(
                "path {path:?} passes through a symbolic link or a file; the host follows no \
                 link in a working copy (links are checked out as plain files)"
            ))
        }
        rustix::io::Errno::NOSYS => GitFailure::Other(format!(
            "cannot open {path}: this kernel lacks openat2 (Linux 5.6 or newer is needed)"
        )),
        e => GitFailure::Other(format!("cannot open {path}: {e}")),
    }
}

fn root_dir(root: &Path) -> Result<OwnedFd, GitFailure> {
    rustix::fs::open(
        root,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| GitFailure::Other(format!("cannot open the working copy: {e}")))
}

/// Refuses anything but a regular file (a FIFO would block, a device would be worse).
fn regular(fd: &OwnedFd, path: &str) -> Result<(), GitFailure> {
    let stat =
        rustix::fs::fstat(fd).map_err(|e| GitFailure::Other(format!("cannot stat {path}: {e}")))?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::RegularFile {
        Ok(())
    } else {
        Err(GitFailure::Invalid(format!(
            "path {path:?} is not a regular file"
        )))
    }
}

/// The file at `path` below `root`; `None` when there is none.
pub(super) fn read(root: &Path, path: &str) -> Result<Option<Vec<u8>>, GitFailure> {
    let rel = inside(path)?;
    let dir = root_dir(root)?;
    let fd = match rustix::fs::openat2(
        &dir,
        &rel,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
        resolve(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(refused(path, e)),
    };
    regular(&fd, path)?;
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .read_to_end(&mut bytes)
        .map_err(|e| GitFailure::Other(format!("cannot read {path}: {e}")))?;
    Ok(Some(bytes))
}

/// Writes `contents` to `path` below `root`, creating missing directories.
pub(super) fn write(root: &Path, path: &str, contents: &[u8]) -> Result<(), GitFailure> {
    let rel = inside(path)?;
    let Some(name) = rel.file_name() else {
        return Err(GitFailure::Invalid(format!("path {path:?} names no file")));
    };
    let mut dir = root_dir(root)?;
    for part in rel.parent().into_iter().flat_map(Path::components) {
        let open = |at: &OwnedFd| {
            rustix::fs::openat2(
                at,
                part.as_os_str(),
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
                resolve(),
            )
        };
        dir = match open(&dir) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => {
                match rustix::fs::mkdirat(&dir, part.as_os_str(), Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(GitFailure::Other(format!("cannot write {path}: {e}"))),
                }
                open(&dir).map_err(|e| refused(path, e))?
            }
            Err(e) => return Err(refused(path, e)),
        };
    }
    let fd = rustix::fs::openat2(
        &dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
        resolve(),
    )
    .map_err(|e| refused(path, e))?;
    regular(&fd, path)?;
    let mut file = std::fs::File::from(fd);
    file.set_len(0)
        .and_then(|()| file.write_all(contents))
        .map_err(|e| GitFailure::Other(format!("cannot write {path}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("promoter-files-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tree/.git")).unwrap();
        dir
    }

    #[test]
    fn paths_stay_inside_the_working_copy_and_out_of_dot_git() {
        assert_eq!(inside("./apps/a.yaml").unwrap(), Path::new("apps/a.yaml"));
        for bad in [
            "../x",
            "/etc/passwd",
            ".git/config",
            "a/../../x",
            "a/.GIT/config",
        ] {
            assert!(matches!(inside(bad), Err(GitFailure::Invalid(_))), "{bad}");
        }
    }

    #[test]
    fn no_link_is_followed_neither_out_of_the_tree_nor_into_dot_git() {
        let dir = scratch("links");
        let tree = dir.join("tree");
        std::fs::write(dir.join("host-secret"), "token").unwrap();
        std::fs::write(tree.join(".git/config"), "[core]\n").unwrap();
        std::os::unix::fs::symlink(".git", tree.join("g")).unwrap();
        std::os::unix::fs::symlink("../host-secret", tree.join("token")).unwrap();
        std::os::unix::fs::symlink("apps", tree.join("alias")).unwrap();
        std::fs::create_dir(tree.join("apps")).unwrap();

        assert!(matches!(read(&tree, "token"), Err(GitFailure::Invalid(_))));
        assert!(matches!(
            read(&tree, "g/config"),
            Err(GitFailure::Invalid(_))
        ));
        let written = write(&tree, "g/config", b"[core]\n\tfsmonitor = touch /tmp/x\n");
        assert!(
            matches!(written, Err(GitFailure::Invalid(_))),
            "{written:?}"
        );
        assert_eq!(
            std::fs::read_to_string(tree.join(".git/config")).unwrap(),
            "[core]\n"
        );
        assert!(write(&tree, "token", b"x").is_err());
        assert_eq!(
            std::fs::read_to_string(dir.join("host-secret")).unwrap(),
            "token"
        );
        // Even a link that stays in the tree is not followed.
        assert!(write(&tree, "alias/a.yaml", b"x").is_err());

        write(&tree, "apps/new/deep/a.yaml", b"v: 2\n").unwrap();
        write(&tree, "apps/new/deep/a.yaml", b"v: 3\n").unwrap();
        assert_eq!(
            read(&tree, "apps/new/deep/a.yaml").unwrap().unwrap(),
            b"v: 3\n"
        );
        assert_eq!(read(&tree, "apps/missing.yaml").unwrap(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
