//! Directories only this process writes, for what the host reads back as trusted: the
//! compiled-component cache (native code, loaded with `Component::deserialize`) and the
//! OCI component cache.
//!
//! The rule: the directory is a real directory (not a link), owned by the process's user,
//! and neither group- nor world-writable. It is created `0700`; one of ours that is only
//! readable by others (an older `0755`) is tightened to `0700`; anything else is refused at
//! start with what is wrong and how to fix it, never used. Files in it are read without
//! following links, and only when they are ours and writable by nobody else. Working
//! copies of repositories live elsewhere (`<data-dir>/git`), and plugins have no file
//! system, so neither repository content nor a plugin can write here.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A cache directory Promoter will not use.
#[derive(Debug, thiserror::Error)]
pub enum CacheDirError {
    #[error("cannot create cache directory {}: {source}", path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cache directory {} is {what}; Promoter loads code from it and keeps it to itself: \
         remove it (it is rebuilt) or make it a directory of the user Promoter runs as with mode 0700",
        path.display()
    )]
    Unsafe { path: PathBuf, what: String },
}

/// Creates `path` (mode 0700) or checks it: see the module's rule.
pub fn ensure_private(path: &Path) -> Result<(), CacheDirError> {
    let create = |source| CacheDirError::Create {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(create)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(create(e)),
    }
    let unsafe_dir = |what: String| CacheDirError::Unsafe {
        path: path.to_path_buf(),
        what,
    };
    let meta = std::fs::symlink_metadata(path).map_err(create)?;
    if meta.file_type().is_symlink() {
        return Err(unsafe_dir("a symbolic link".into()));
    }
    if !meta.is_dir() {
        return Err(unsafe_dir("not a directory".into()));
    }
    let me = effective_uid();
    if meta.uid() != me {
        return Err(unsafe_dir(format!(
            "owned by user {}, not by {me} (the user Promoter runs as)",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "writable by its group or by everyone (mode {mode:04o})"
        )));
    }
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(create)?;
    }
    Ok(())
}

/// The bytes of `path` when it is a regular file of ours that nobody else may write,
/// read without following a link; `Ok(None)` when there is no such file. `Err(why)` for a
/// file that is there but must not be trusted.
pub fn read_private(path: &Path) -> Result<Option<Vec<u8>>, String> {
    use std::io::Read;
    // Not a link: the path itself, then the file opened must be that same inode.
    let seen = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if !seen.is_file() {
        return Err("not a regular file (a link, say)".into());
    }
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if (meta.dev(), meta.ino()) != (seen.dev(), seen.ino()) {
        return Err("replaced while it was opened".into());
    }
    if meta.uid() != effective_uid() {
        return Err(format!("owned by user {}", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "writable by its group or by everyone (mode {:04o})",
            meta.mode() & 0o7777
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    Ok(Some(bytes))
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { geteuid() }
}

unsafe extern "C" {
    fn geteuid() -> u32;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("promoter-cache-dir-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_new_cache_directory_is_created_private_and_an_old_readable_one_is_tightened() {
        let dir = scratch("new").join("compiled");
        ensure_private(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn a_cache_directory_others_can_write_or_a_link_is_refused() {
        let root = scratch("unsafe");
        let open = root.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = ensure_private(&open).unwrap_err().to_string();
        assert!(
            e.contains("writable by its group or by everyone (mode 0777)"),
            "{e}"
        );
        let link = root.join("link");
        std::os::unix::fs::symlink(&open, &link).unwrap();
        let e = ensure_private(&link).unwrap_err().to_string();
        assert!(e.contains("a symbolic link"), "{e}");
    }

    #[test]
    fn a_cached_file_is_read_only_when_it_is_ours_alone_and_not_a_link() {
        let root = scratch("files");
        let file = root.join("x.cwasm");
        std::fs::write(&file, b"compiled").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_private(&file).unwrap().unwrap(), b"compiled");
        assert_eq!(read_private(&root.join("missing")).unwrap(), None);
        let link = root.join("y.cwasm");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(read_private(&link).is_err());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(read_private(&file).unwrap_err().contains("mode 0666"));
    }
}
