//! A container's filesystem for `cp`, `export` and `diff`: tar streams of a tree inside it, a
//! tar stream unpacked into it, and its changes against its image.
//!
//! Everything inside the container is untrusted: the starting point is resolved in its root
//! with `kiln_sys::Root` (symlinks resolve as they would inside it), and the walk below it
//! goes one name at a time through `*at` calls with `O_NOFOLLOW`, so a symlink, even one
//! swapped in during the walk, is archived as a link and never followed out of the tree.
//! Writes go through the safe applier (`kiln_cache::apply_layer`).

use crate::containers::Container;
use crate::error::{Error, Result};
use crate::host::Host;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What a path inside a container is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// Nothing there.
    Missing,
    /// A directory (symlinks resolved).
    Dir,
    /// Anything else.
    Other,
}

/// One line of `diff`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `A` added, `C` changed, `D` deleted.
    pub kind: char,
    /// The path in the container (absolute).
    pub path: String,
}

fn io(path: impl Into<PathBuf>, e: impl Into<std::io::Error>) -> Error {
    Error::Io {
        path: path.into(),
        source: e.into(),
    }
}

fn open_root(rootfs: &Path) -> Result<kiln_sys::Root> {
    kiln_sys::Root::open(rootfs).map_err(|e| Error::other("opening the container's root", e))
}

/// Splits a container path into its parent and last name (`None` for `/`, `.` or empty).
fn split(path: &str) -> (String, Option<String>) {
    let trimmed = path.trim_end_matches('/');
    let p = Path::new(trimmed);
    match p.file_name() {
        Some(name) if trimmed != "." && !trimmed.ends_with("/.") => (
            p.parent()
                .map(|x| x.to_string_lossy().into_owned())
                .unwrap_or_default(),
            Some(name.to_string_lossy().into_owned()),
        ),
        _ => (trimmed.to_owned(), None),
    }
}

fn kind_in(root: &kiln_sys::Root, path: &str) -> PathKind {
    match root.open_at(path, OFlags::PATH) {
        Err(_) => PathKind::Missing,
        Ok(fd) => match rustix::fs::fstat(&fd) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => PathKind::Dir,
            _ => PathKind::Other,
        },
    }
}

/// Writes one entry (and, for a directory, everything below it) named `name` in the open
/// directory `dir` to `b` as `tar_path`.
fn append_entry<W: Write>(
    b: &mut tar::Builder<W>,
    dir: BorrowedFd<'_>,
    name: &OsStr,
    tar_path: &Path,
) -> Result<()> {
    let at = |e: rustix::io::Errno| io(tar_path, e);
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(at)?;
    let kind = FileType::from_raw_mode(st.st_mode);
    let mut h = tar::Header::new_gnu();
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(u64::from(st.st_uid));
    h.set_gid(u64::from(st.st_gid));
    h.set_mtime(u64::try_from(st.st_mtime).unwrap_or(0));
    h.set_size(0);
    let tar_err = |e: std::io::Error| io(tar_path, e);
    match kind {
        FileType::Directory => {
            h.set_entry_type(tar::EntryType::Directory);
            if !tar_path.as_os_str().is_empty() {
                b.append_data(&mut h, tar_path, std::io::empty())
                    .map_err(tar_err)?;
            }
            let fd = rustix::fs::openat(
                dir,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(at)?;
            append_children(b, fd, tar_path)?;
        }
        FileType::RegularFile => {
            let fd = rustix::fs::openat(
                dir,
                name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(at)?;
            let size = u64::try_from(st.st_size).unwrap_or(0);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(size);
            // Exactly `size` bytes even if the file changes meanwhile.
            let data = std::fs::File::from(fd)
                .take(size)
                .chain(std::io::repeat(0))
                .take(size);
            b.append_data(&mut h, tar_path, data).map_err(tar_err)?;
        }
        FileType::Symlink => {
            let target = rustix::fs::readlinkat(dir, name, Vec::new()).map_err(at)?;
            h.set_entry_type(tar::EntryType::Symlink);
            b.append_link(&mut h, tar_path, OsStr::from_bytes(target.as_bytes()))
                .map_err(tar_err)?;
        }
        FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo => {
            h.set_entry_type(match kind {
                FileType::CharacterDevice => tar::EntryType::Char,
                FileType::BlockDevice => tar::EntryType::Block,
                _ => tar::EntryType::Fifo,
            });
            let dev = st.st_rdev;
            h.set_device_major(rustix::fs::major(dev))
                .map_err(tar_err)?;
            h.set_device_minor(rustix::fs::minor(dev))
                .map_err(tar_err)?;
            b.append_data(&mut h, tar_path, std::io::empty())
                .map_err(tar_err)?;
        }
        // Sockets have no place in an archive (docker skips them too).
        _ => {}
    }
    Ok(())
}

/// Writes everything in directory `fd` to `b` under `prefix`, names sorted.
fn append_children<W: Write>(b: &mut tar::Builder<W>, fd: OwnedFd, prefix: &Path) -> Result<()> {
    let mut names = Vec::new();
    let dir = rustix::fs::Dir::read_from(&fd).map_err(|e| io(prefix, e))?;
    for entry in dir {
        let entry = entry.map_err(|e| io(prefix, e))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    names.sort();
    for name in names {
        let name = OsStr::from_bytes(&name);
        append_entry(b, fd.as_fd(), name, &prefix.join(name))?;
    }
    Ok(())
}

/// A tar stream of `path` in the tree at `rootfs` (a container's root): named `name` (the
/// path's own name when `None`), or only its contents when `path` is `/` or ends in `/.`.
pub fn tar_path(rootfs: &Path, path: &str, name: Option<&str>, out: impl Write) -> Result<()> {
    let root = open_root(rootfs)?;
    let mut b = tar::Builder::new(out);
    let (parent, last) = split(path);
    let missing = |e: kiln_sys::Error| {
        Error::other(format!("Could not find the file {path} in container"), e)
    };
    match last {
        Some(last) => {
            let dir = root
                .open_at(&parent, OFlags::PATH | OFlags::DIRECTORY)
                .map_err(missing)?;
            let tar_name = PathBuf::from(name.unwrap_or(&last));
            rustix::fs::statat(&dir, last.as_str(), AtFlags::SYMLINK_NOFOLLOW).map_err(|e| {
                Error::other(format!("Could not find the file {path} in container"), e)
            })?;
            append_entry(&mut b, dir.as_fd(), OsStr::new(&last), &tar_name)?;
        }
        None => {
            let dir = root.open_dir(&parent).map_err(missing)?;
            append_children(&mut b, dir, Path::new(name.unwrap_or("")))?;
        }
    }
    b.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(|e| io(path, e))?;
    Ok(())
}

/// `diff`: the entries of `upper` (a container's writable layer) as added, changed or
/// deleted against `lowerdirs` (its image, top first), in the order of a walk with names
/// sorted. The `mount_points` (absolute) are left out while they are the empty file or
/// directory made for a mount: docker keeps those in its init layer.
pub fn changes(
    upper: &Path,
    lowerdirs: &[PathBuf],
    mount_points: &[String],
) -> Result<Vec<Change>> {
    let lowers: Vec<kiln_sys::Beneath> = lowerdirs
        .iter()
        .filter_map(|d| kiln_sys::Beneath::open(d).ok())
        .collect();
    let mut out = Vec::new();
    let walk = Walk {
        upper,
        lowers: &lowers,
        mount_points,
    };
    walk.dir(Path::new(""), &mut out)?;
    Ok(out)
}

struct Walk<'a> {
    upper: &'a Path,
    lowers: &'a [kiln_sys::Beneath],
    mount_points: &'a [String],
}

impl Walk<'_> {
    /// Whether `path` is a mount point's stub: named in `mount_points`, an empty file or an
    /// empty directory.
    fn stub(&self, shown: &str, path: &Path, meta: &std::fs::Metadata) -> bool {
        if !self
            .mount_points
            .iter()
            .any(|m| m.trim_end_matches('/') == shown)
        {
            return false;
        }
        if meta.is_dir() {
            fs_err::read_dir(path).is_ok_and(|mut d| d.next().is_none())
        } else {
            meta.is_file() && meta.len() == 0
        }
    }

    fn dir(&self, rel: &Path, out: &mut Vec<Change>) -> Result<()> {
        let (upper, lowers) = (self.upper, self.lowers);
        let dir = upper.join(rel);
        let mut names: Vec<_> = fs_err::read_dir(&dir)
            .map_err(|e| io(&dir, e))?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        names.sort();
        for name in names {
            let rel = rel.join(&name);
            let path = upper.join(&rel);
            let meta = fs_err::symlink_metadata(&path).map_err(|e| io(&path, e))?;
            let shown = format!("/{}", rel.display());
            if is_whiteout(&meta) {
                out.push(Change {
                    kind: 'D',
                    path: shown,
                });
                continue;
            }
            if self.stub(&shown, &path, &meta) {
                continue;
            }
            let lower = lower_meta(lowers, &rel);
            if meta.is_dir() {
                let at = out.len();
                self.dir(&rel, out)?;
                // A directory copied up (for the mount points kiln creates at start, say) and
                // left as the image has it is no change: docker keeps those in an init layer.
                let same = lower.as_ref().is_some_and(|l| {
                    l.st_mode == meta.mode() && l.st_uid == meta.uid() && l.st_gid == meta.gid()
                });
                if !(same && out.len() == at) {
                    let kind = if lower.is_some() { 'C' } else { 'A' };
                    out.insert(at, Change { kind, path: shown });
                }
                continue;
            }
            let kind = if lower.is_some() { 'C' } else { 'A' };
            out.push(Change { kind, path: shown });
        }
        Ok(())
    }
}

fn is_whiteout(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// The image's entry at `rel` (its layers, top first): the first layer that knows the path
/// decides (a whiteout there hides it).
fn lower_meta(lowers: &[kiln_sys::Beneath], rel: &Path) -> Option<rustix::fs::Stat> {
    for lower in lowers {
        if let Ok(fd) = lower.open_at(rel, OFlags::PATH | OFlags::NOFOLLOW) {
            return rustix::fs::fstat(&fd).ok().filter(|st| {
                !(FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice
                    && st.st_rdev == 0)
            });
        }
    }
    None
}

impl Host {
    /// What `path` is inside container `c` (`cp`'s destination rules).
    pub fn container_path_kind(&self, c: &Container, path: &str) -> Result<PathKind> {
        self.with_rootfs(c, |rootfs| Ok(kind_in(&open_root(rootfs)?, path)))
    }

    /// `cp CONTAINER:PATH …`: a tar stream of `path` (see [`tar_path`]).
    pub fn copy_from_container(
        &self,
        c: &Container,
        path: &str,
        name: Option<&str>,
        out: impl Write,
    ) -> Result<()> {
        self.with_rootfs(c, |rootfs| tar_path(rootfs, path, name, out))
    }

    /// `cp … CONTAINER:DIR`: unpacks the tar stream `tar` into directory `dir` of container
    /// `c` with the safe applier (nothing lands outside the container's root); files are
    /// owned by root unless `keep_owner`.
    pub fn copy_to_container(
        &self,
        c: &Container,
        dir: &str,
        tar: impl Read,
        keep_owner: bool,
    ) -> Result<()> {
        self.with_rootfs(c, |rootfs| {
            let root = open_root(rootfs)?;
            if kind_in(&root, dir) != PathKind::Dir {
                return Err(Error::other(
                    format!("Could not find the file {dir} in container {}", c.name()),
                    "no such directory",
                ));
            }
            let target = root
                .real_path(dir)
                .map_err(|e| Error::other("resolving the destination", e))?;
            let opts = kiln_cache::ApplyOptions {
                same_owner: keep_owner,
                ..Default::default()
            };
            kiln_cache::apply_layer(tar, &target, &opts)?;
            Ok(())
        })
    }

    /// `export`: the whole filesystem of container `c` as a tar stream.
    pub fn export_container(&self, c: &Container, out: impl Write) -> Result<()> {
        self.with_rootfs(c, |rootfs| tar_path(rootfs, "/", None, out))
    }

    /// `diff`: what container `c` added, changed and deleted against its image.
    pub fn container_changes(&self, c: &Container) -> Result<Vec<Change>> {
        let mut lowers = self.container_lowerdirs(c)?;
        lowers.reverse();
        // What kiln (runc) mounts in every container, and this one's own mounts.
        let mut mount_points: Vec<String> = [
            "/dev",
            "/proc",
            "/sys",
            "/etc/hosts",
            "/etc/hostname",
            "/etc/resolv.conf",
        ]
        .map(str::to_owned)
        .to_vec();
        mount_points.extend(
            c.config()
                .plan
                .mounts
                .iter()
                .map(|m| m.destination().to_owned()),
        );
        changes(&c.upper_dir(), &lowers, &mount_points)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_parent_and_name() {
        assert_eq!(split("/etc/hosts"), ("/etc".into(), Some("hosts".into())));
        assert_eq!(split("/etc/"), ("/".into(), Some("etc".into())));
        assert_eq!(split("/etc/."), ("/etc/.".into(), None));
        assert_eq!(split("/"), ("".into(), None));
    }

    #[test]
    fn a_symlink_out_of_the_tree_is_archived_as_a_link_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs_err::create_dir_all(root.join("d")).unwrap();
        fs_err::write(root.join("d/f"), b"inside").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("d/out")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("top")).unwrap();
        let mut tar = Vec::new();
        tar_path(&root, "/d", None, &mut tar).unwrap();
        let mut a = tar::Archive::new(&tar[..]);
        let names: Vec<(String, tar::EntryType)> = a
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().entry_type(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("d".to_owned(), tar::EntryType::Directory),
                ("d/f".to_owned(), tar::EntryType::Regular),
                ("d/out".to_owned(), tar::EntryType::Symlink),
            ]
        );
        // `top/passwd` resolves inside the root, where there is no /etc.
        let mut tar = Vec::new();
        assert!(tar_path(&root, "/top/passwd", None, &mut tar).is_err());
    }
}
