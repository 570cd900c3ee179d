//! overlayfs mounts through the new mount API (fsopen/fsconfig/fsmount/move_mount).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, UnmountFlags, fsconfig_create,
    fsconfig_set_string, fsmount, fsopen, move_mount,
};

use crate::error::{Error, Result};

/// Most lowerdirs given to one overlay mount; deeper chains mount their bottom part as a
/// nested read-only overlay (overlayfs allows one level of overlay-on-overlay lowers).
pub const MAX_LOWERS: usize = 128;

/// An overlay mount; unmounted (lazy detach) on drop or by [`MountGuard::unmount`].
#[derive(Debug)]
pub struct MountGuard {
    target: PathBuf,
    active: bool,
    /// nested mounts of deep chains, and scratch dirs, kept until this one is gone
    nested: Vec<MountGuard>,
    scratch: Vec<tempfile::TempDir>,
}

impl MountGuard {
    /// The mount point.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Unmounts now (lazy detach).
    pub fn unmount(mut self) -> Result<()> {
        self.active = false;
        unmount(&self.target)?;
        for n in self.nested.drain(..) {
            n.unmount()?;
        }
        Ok(())
    }

    /// Keeps the mount after the guard is gone (a detached container's rootfs); returns the
    /// mount point. Use [`unmount`] later.
    pub fn leak(mut self) -> PathBuf {
        self.active = false;
        for n in self.nested.drain(..) {
            n.leak();
        }
        for s in self.scratch.drain(..) {
            let _ = s.keep();
        }
        self.target.clone()
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if self.active
            && let Err(e) = unmount(&self.target)
        {
            tracing::warn!(target = %self.target.display(), error = %e, "unmount failed");
        }
    }
}

/// Detaches the mount at `target`; not mounted (or missing) is fine.
pub fn unmount(target: &Path) -> Result<()> {
    match rustix::mount::unmount(target, UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(Error::Mount {
            op: "unmount".into(),
            target: target.to_owned(),
            source: e.into(),
        }),
    }
}

fn empty_dir() -> Result<tempfile::TempDir> {
    let d = tempfile::Builder::new().prefix("kiln-empty-").tempdir()?;
    fs_err::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755))?;
    Ok(d)
}

/// Mounts an overlay of `lowerdirs` (bottom first) at `target`, writable with
/// `upper = Some((upperdir, workdir))`, read-only otherwise. No lowerdirs means an empty
/// lower; chains deeper than [`MAX_LOWERS`] mount their bottom part as a nested overlay.
pub fn mount_overlay(
    lowerdirs: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    target: &Path,
) -> Result<MountGuard> {
    let mut guard = MountGuard {
        target: target.to_owned(),
        active: false,
        nested: Vec::new(),
        scratch: Vec::new(),
    };
    let mut lowers: Vec<PathBuf> = lowerdirs.to_vec();
    if lowers.len() > MAX_LOWERS {
        let cut = lowers.len() - (MAX_LOWERS - 1);
        let bottom: Vec<PathBuf> = lowers.drain(..cut).collect();
        if bottom.len() > MAX_LOWERS {
            return Err(Error::Mount {
                op: format!("{} layers are too deep for", lowerdirs.len()),
                target: target.to_owned(),
                source: std::io::Error::other("chain too deep"),
            });
        }
        let mnt = tempfile::Builder::new().prefix("kiln-lower-").tempdir()?;
        let nested = mount_overlay(&bottom, None, mnt.path())?;
        lowers.insert(0, mnt.path().to_owned());
        guard.nested.push(nested);
        guard.scratch.push(mnt);
    }
    // overlayfs needs two lowers without an upper, and one with.
    let need = if upper.is_some() { 1 } else { 2 };
    while lowers.len() < need {
        let e = empty_dir()?;
        lowers.insert(0, e.path().to_owned());
        guard.scratch.push(e);
    }
    let merr = |op: &str, e: rustix::io::Errno| Error::Mount {
        op: op.to_owned(),
        target: target.to_owned(),
        source: e.into(),
    };
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| merr("fsopen", e))?;
    // lowerdir+ takes the topmost lower first.
    for l in lowers.iter().rev() {
        fsconfig_set_string(&fs, "lowerdir+", l)
            .map_err(|e| merr(&format!("fsconfig lowerdir+ {}", l.display()), e))?;
    }
    if let Some((up, work)) = upper {
        fsconfig_set_string(&fs, "upperdir", up).map_err(|e| merr("fsconfig upperdir", e))?;
        fsconfig_set_string(&fs, "workdir", work).map_err(|e| merr("fsconfig workdir", e))?;
    }
    fsconfig_create(&fs).map_err(|e| merr("fsconfig create", e))?;
    let attrs = if upper.is_some() {
        MountAttrFlags::empty()
    } else {
        MountAttrFlags::MOUNT_ATTR_RDONLY
    };
    attach(&fs, attrs, target).map_err(|(op, e)| merr(op, e))?;
    guard.active = true;
    tracing::debug!(target = %target.display(), lowers = lowerdirs.len(), rw = upper.is_some(), "overlay mounted");
    Ok(guard)
}

/// Mounts a private tmpfs (mode 0700, at most `size` bytes) at `target`: memory that no file
/// of the store ever holds (secrets). It goes when the guard drops; one a killed kiln left
/// behind under its scratch directory is unmounted by the next sweep.
pub fn mount_tmpfs(target: &Path, size: u64) -> Result<MountGuard> {
    let merr = |op: &str, e: rustix::io::Errno| Error::Mount {
        op: op.to_owned(),
        target: target.to_owned(),
        source: e.into(),
    };
    let fs = fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| merr("fsopen", e))?;
    fsconfig_set_string(&fs, "mode", "0700").map_err(|e| merr("fsconfig mode", e))?;
    fsconfig_set_string(&fs, "size", size.to_string()).map_err(|e| merr("fsconfig size", e))?;
    fsconfig_set_string(&fs, "nr_inodes", "16").map_err(|e| merr("fsconfig nr_inodes", e))?;
    fsconfig_create(&fs).map_err(|e| merr("fsconfig create", e))?;
    let attrs = MountAttrFlags::MOUNT_ATTR_NOSUID
        | MountAttrFlags::MOUNT_ATTR_NODEV
        | MountAttrFlags::MOUNT_ATTR_NOEXEC;
    attach(&fs, attrs, target).map_err(|(op, e)| merr(op, e))?;
    Ok(MountGuard {
        target: target.to_owned(),
        active: true,
        nested: Vec::new(),
        scratch: Vec::new(),
    })
}

/// Makes a configured filesystem context a mount and moves it to `target`; an error names
/// the call that failed.
fn attach(
    fs: &std::os::fd::OwnedFd,
    attrs: MountAttrFlags,
    target: &Path,
) -> std::result::Result<(), (&'static str, rustix::io::Errno)> {
    let mnt = fsmount(fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs).map_err(|e| ("fsmount", e))?;
    move_mount(
        &mnt,
        c"",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| ("move_mount", e))
}
