//! Safe access to paths inside a container's root filesystem from the host.
//!
//! Image content is untrusted: `/etc/passwd` may be a symlink to `/etc/shadow` of the host, a
//! WORKDIR may traverse `../../..`. Every lookup goes through [`kiln_sys::Root`]
//! (`openat2(RESOLVE_IN_ROOT)`), so the kernel resolves `..` and symlinks as if the rootfs were
//! `/` (Linux 5.6 or later).

use crate::{Error, Result};
use kiln_sys::{ErrorKind, Root};
use rustix::fs::{Mode, OFlags};
use std::io::Read;
use std::path::Path;

fn rootfs_err(rootfs: &Path, path: &str, err: impl Into<std::io::Error>) -> Error {
    Error::Rootfs {
        rootfs: rootfs.to_path_buf(),
        path: path.to_owned(),
        source: err.into(),
    }
}

fn open_root(rootfs: &Path) -> Result<Root> {
    Root::open(rootfs).map_err(|e| rootfs_err(rootfs, "/", e.os_error()))
}

/// Reads a regular file inside `rootfs`, resolving symlinks inside it. `Ok(None)` if it is absent.
pub fn read_file_in_root(rootfs: &Path, path: &str) -> Result<Option<String>> {
    let root = open_root(rootfs)?;
    let fd = match root.open_at(path, OFlags::RDONLY | OFlags::NONBLOCK) {
        Ok(fd) => fd,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            return Ok(None);
        }
        Err(e) => return Err(rootfs_err(rootfs, path, e.os_error())),
    };
    let stat = rustix::fs::fstat(&fd).map_err(|e| rootfs_err(rootfs, path, e))?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
        // A FIFO or device named /etc/passwd must not hang or read the host's device.
        return Ok(None);
    }
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(16 << 20)
        .read_to_string(&mut text)
        .map_err(|e| rootfs_err(rootfs, path, e))?;
    Ok(Some(text))
}

/// Creates directory `path` (and its parents) inside `rootfs` with mode 0755, owned by root,
/// resolving symlinks inside the rootfs. Existing directories are left as they are.
pub fn mkdir_all_in_root(rootfs: &Path, path: &str) -> Result<()> {
    let root = open_root(rootfs)?;
    // Clean lexically first (as WORKDIR does): `a/b/../c` creates only `a/c`.
    let mut components: Vec<&str> = Vec::new();
    for component in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if component == ".." {
            components.pop();
        } else {
            components.push(component);
        }
    }
    let mut current = String::new();
    for component in components {
        let parent = if current.is_empty() { "/" } else { &current };
        let dir = root
            .open_at(parent, OFlags::PATH | OFlags::DIRECTORY)
            .map_err(|e| rootfs_err(rootfs, parent, e.os_error()))?;
        match rustix::fs::mkdirat(&dir, component, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(rootfs_err(rootfs, &format!("{current}/{component}"), e)),
        }
        current.push('/');
        current.push_str(component);
    }
    // The final path must be a directory (it may be a symlink to one inside the rootfs).
    let target = if current.is_empty() { "/" } else { &current };
    root.open_at(target, OFlags::PATH | OFlags::DIRECTORY)
        .map(drop)
        .map_err(|e| rootfs_err(rootfs, target, e.os_error()))
}

/// Mount targets that did not exist in a rootfs before a run: the runtime creates them (empty
/// files or directories) and [`MountStubs::remove`] takes them away again afterwards, so a RUN
/// step's layer does not gain an empty `/etc/hosts` or `/proc` (BuildKit cleans up the same way).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MountStubs {
    /// (first missing ancestor, full destination) pairs.
    missing: Vec<(String, String)>,
}

fn exists_in(root: &Root, path: &str) -> bool {
    root.open_at(path, OFlags::PATH).is_ok()
}

impl MountStubs {
    /// Records which of `destinations` (absolute container paths) are missing from `rootfs`.
    pub fn record<'a>(
        rootfs: &Path,
        destinations: impl IntoIterator<Item = &'a str>,
    ) -> Result<MountStubs> {
        let root = open_root(rootfs)?;
        let mut stubs = MountStubs::default();
        for dest in destinations {
            let mut prefix = String::new();
            for component in dest.split('/').filter(|c| !c.is_empty() && *c != ".") {
                prefix.push('/');
                prefix.push_str(component);
                if !exists_in(&root, &prefix) {
                    stubs.missing.push((prefix.clone(), dest.to_owned()));
                    break;
                }
            }
        }
        Ok(stubs)
    }

    /// Removes the recorded stubs that are still empty files or empty directories, from the
    /// deepest path up to the first missing ancestor. Errors are logged, not returned.
    pub fn remove(&self, rootfs: &Path) {
        let Ok(root) = open_root(rootfs) else {
            return;
        };
        for (top, dest) in &self.missing {
            let mut path = dest.trim_end_matches('/').to_owned();
            loop {
                if !remove_if_empty(&root, &path) {
                    break;
                }
                if path == *top {
                    break;
                }
                match path.rfind('/') {
                    Some(idx) if idx > 0 => path.truncate(idx),
                    _ => break,
                }
            }
        }
    }
}

/// Runs in flight per rootfs in this process, with the union of their stubs: a stub is removed
/// only when the last run over that rootfs ends, so one run's cleanup never pulls a mount
/// target from under another run that is still starting.
static ACTIVE: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, (usize, MountStubs)>>,
> = std::sync::LazyLock::new(Default::default);

/// A run's hold on its rootfs's mount stubs; dropping it removes them if it was the last run.
#[derive(Debug)]
pub struct StubLease {
    rootfs: std::path::PathBuf,
}

impl MountStubs {
    /// Records the missing `destinations` (as [`MountStubs::record`]) and registers a run over
    /// `rootfs`; the stubs go away when the last lease on `rootfs` is dropped.
    pub fn acquire<'a>(
        rootfs: &Path,
        destinations: impl IntoIterator<Item = &'a str>,
    ) -> Result<StubLease> {
        let mut active = ACTIVE.lock().unwrap_or_else(|e| e.into_inner());
        let recorded = MountStubs::record(rootfs, destinations)?;
        let entry = active.entry(rootfs.to_path_buf()).or_default();
        entry.0 += 1;
        for stub in recorded.missing {
            if !entry.1.missing.contains(&stub) {
                entry.1.missing.push(stub);
            }
        }
        Ok(StubLease {
            rootfs: rootfs.to_path_buf(),
        })
    }
}

impl Drop for StubLease {
    fn drop(&mut self) {
        let mut active = ACTIVE.lock().unwrap_or_else(|e| e.into_inner());
        let last = match active.get_mut(&self.rootfs) {
            Some(entry) => {
                entry.0 -= 1;
                entry.0 == 0
            }
            None => false,
        };
        if last && let Some((_, stubs)) = active.remove(&self.rootfs) {
            stubs.remove(&self.rootfs);
        }
    }
}

/// Removes `path` inside the root if it is an empty regular file or an empty directory.
fn remove_if_empty(root: &Root, path: &str) -> bool {
    use rustix::fs::{AtFlags, FileType};
    let Some((parent, name)) = path.rsplit_once('/') else {
        return false;
    };
    let parent = if parent.is_empty() { "/" } else { parent };
    let Ok(dir) = root.open_at(parent, OFlags::PATH | OFlags::DIRECTORY) else {
        return false;
    };
    let Ok(stat) = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
        return false;
    };
    let result = match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile if stat.st_size == 0 => {
            rustix::fs::unlinkat(&dir, name, AtFlags::empty())
        }
        // rmdir refuses non-empty directories by itself.
        FileType::Directory => rustix::fs::unlinkat(&dir, name, AtFlags::REMOVEDIR),
        _ => return false,
    };
    if let Err(e) = &result {
        tracing::debug!(path, error = %e, "mount stub kept");
    }
    result.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs_err::create_dir_all(root.join("etc")).unwrap();
        fs_err::write(root.join("secret"), "inside").unwrap();
        // An absolute symlink pointing at the host's /etc/hostname must stay in the rootfs.
        std::os::unix::fs::symlink("/secret", root.join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("../../../../etc/hostname", root.join("etc/group")).unwrap();
        assert_eq!(
            read_file_in_root(root, "/etc/passwd").unwrap().as_deref(),
            Some("inside")
        );
        assert_eq!(read_file_in_root(root, "/etc/group").unwrap(), None);
        assert_eq!(read_file_in_root(root, "/nope/x").unwrap(), None);
    }

    #[test]
    fn mount_stubs_are_removed_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs_err::create_dir_all(root.join("etc")).unwrap();
        fs_err::write(root.join("etc/hosts"), "keep").unwrap();
        let stubs = MountStubs::record(
            root,
            ["/etc/hosts", "/etc/hostname", "/proc", "/a/b/c", "/full"],
        )
        .unwrap();
        // What the runtime would create.
        fs_err::write(root.join("etc/hostname"), "").unwrap();
        fs_err::create_dir_all(root.join("proc")).unwrap();
        fs_err::create_dir_all(root.join("a/b/c")).unwrap();
        fs_err::create_dir_all(root.join("full")).unwrap();
        fs_err::write(root.join("full/data"), "written by the step").unwrap();
        stubs.remove(root);
        assert_eq!(
            fs_err::read_to_string(root.join("etc/hosts")).unwrap(),
            "keep"
        );
        assert!(!root.join("etc/hostname").exists());
        assert!(!root.join("proc").exists());
        assert!(!root.join("a").exists());
        assert!(root.join("full/data").exists(), "non-empty stubs stay");
    }

    #[test]
    fn mkdir_all_stays_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs_err::create_dir_all(&root).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("escape")).unwrap();
        mkdir_all_in_root(&root, "/a/b/../c").unwrap();
        assert!(root.join("a/c").is_dir());
        assert!(!root.join("a/b").exists());
        // `escape` points at the host's tempdir; inside the root that path does not exist.
        assert!(mkdir_all_in_root(&root, "/escape/x").is_err());
        assert!(!dir.path().join("x").exists());
        fs_err::write(root.join("file"), "").unwrap();
        assert!(mkdir_all_in_root(&root, "/file").is_err());
    }
}
