//! Scratch space of the store's processes, and the sweep of what killed ones left.
//!
//! Each process that needs scratch gets its own directory `ROOT/tmp/proc-<pid>-<random>/`
//! holding a `lock` file on which it keeps an exclusive `flock` for as long as it lives.
//! Everything it creates in the store's tmp (blob writes, loads, snapshot unpacks, step
//! mounts, secret tmpfs mounts...) goes inside. The kernel drops the lock when the process
//! dies however it dies, so "the lock can be taken" means "the owner is gone": the next
//! command that opens the store unmounts and removes such a directory (one readdir of tmp and
//! one try-lock per process directory). The directory is put in place by a rename once its
//! lock is held, so no sweeper ever sees a live one unlocked.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, Mode, OFlags};

use crate::error::{Error, Result};

/// Names of per-process scratch directories start with this.
pub const PROC_PREFIX: &str = "proc-";
const LOCK: &str = "lock";

/// This process's scratch directory; removed on drop when nothing but the lock is left.
#[derive(Debug)]
pub(crate) struct Scratch {
    dir: PathBuf,
    lock: Option<OwnedFd>,
}

impl Scratch {
    /// Creates and locks a fresh scratch directory under `tmp`.
    pub(crate) fn create(tmp: &Path) -> Result<Scratch> {
        let new = tempfile::Builder::new().prefix(".new-").tempdir_in(tmp)?;
        let lock_path = new.path().join(LOCK);
        let fd = rustix::fs::open(
            &lock_path,
            OFlags::CREATE | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| Error::sys("open", &lock_path, e))?;
        rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive)
            .map_err(|e| Error::sys("flock", &lock_path, e))?;
        let suffix = new
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(".new-"))
            .unwrap_or("x")
            .to_owned();
        let dir = tmp.join(format!("{PROC_PREFIX}{}-{suffix}", std::process::id()));
        fs_err::rename(new.path(), &dir)?;
        let _ = new.keep();
        Ok(Scratch {
            dir,
            lock: Some(fd),
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let only_lock = fs_err::read_dir(&self.dir)
            .map(|d| d.flatten().all(|e| e.file_name() == LOCK))
            .unwrap_or(false);
        if only_lock {
            let _ = fs_err::remove_file(self.dir.join(LOCK));
            let _ = fs_err::remove_dir(&self.dir);
        }
        // Whatever is left is swept by the next command once the lock is released.
        self.lock.take();
    }
}

/// What a sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepStats {
    /// Scratch directories of dead processes removed.
    pub removed: Vec<PathBuf>,
    /// Mounts (step overlays, secret tmpfs) unmounted in them.
    pub unmounted: usize,
}

/// Removes the scratch directories under `tmp` whose owner is dead, unmounting what is
/// mounted in them first. A directory still holding a mount after that is left alone: it is
/// never removed through a mount.
pub fn sweep(tmp: &Path) -> SweepStats {
    let mut stats = SweepStats::default();
    // Mount points are absolute and canonical; so are the paths compared with them.
    let Ok(tmp) = fs_err::canonicalize(tmp) else {
        return stats;
    };
    let Ok(entries) = fs_err::read_dir(&tmp) else {
        return stats;
    };
    let mut mounts: Option<Vec<PathBuf>> = None;
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.to_str().is_some_and(|n| n.starts_with(PROC_PREFIX)) {
            continue;
        }
        let dir = e.path();
        // Held while removing: a concurrent sweeper sees the lock taken and skips.
        let Some(held) = claim(&dir) else {
            continue;
        };
        let mounts = mounts.get_or_insert_with(mount_points);
        let mut inside: Vec<&PathBuf> = mounts.iter().filter(|m| m.starts_with(&dir)).collect();
        inside.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
        let mut busy = false;
        for m in inside {
            match crate::mount::unmount(m) {
                Ok(()) => stats.unmounted += 1,
                Err(err) => {
                    tracing::warn!("leftover scratch mount {}: {err}", m.display());
                    busy = true;
                }
            }
        }
        if busy {
            continue;
        }
        match remove(&dir) {
            Ok(()) => stats.removed.push(dir),
            Err(err) => tracing::warn!("leftover scratch {}: {err}", dir.display()),
        }
        drop(held);
    }
    if !stats.removed.is_empty() {
        tracing::debug!(
            removed = stats.removed.len(),
            unmounted = stats.unmounted,
            "swept dead scratch"
        );
    }
    stats
}

/// `Some(lock)` (or `Some(None)` when the lock file is gone) when the owner is dead.
fn claim(dir: &Path) -> Option<Option<OwnedFd>> {
    let lock = dir.join(LOCK);
    match rustix::fs::open(&lock, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Some(Some(fd)),
            Err(_) => None,
        },
        // A directory loses its lock file only in its owner's drop, or in a sweep.
        Err(rustix::io::Errno::NOENT) => Some(None),
        Err(_) => None,
    }
}

/// Everything but the lock first, so the directory stays claimed until the end.
fn remove(dir: &Path) -> std::io::Result<()> {
    for e in fs_err::read_dir(dir)? {
        let e = e?;
        if e.file_name() == LOCK {
            continue;
        }
        let res = if e.file_type()?.is_dir() {
            fs_err::remove_dir_all(e.path())
        } else {
            fs_err::remove_file(e.path())
        };
        if let Err(err) = res
            && err.kind() != std::io::ErrorKind::NotFound
        {
            return Err(err);
        }
    }
    let _ = fs_err::remove_file(dir.join(LOCK));
    match fs_err::remove_dir(dir) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// Mount points of this mount namespace (`/proc/self/mountinfo`, octal escapes decoded).
fn mount_points() -> Vec<PathBuf> {
    let Ok(info) = fs_err::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .collect()
}

fn unescape(s: &str) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(digits) = b.get(i + 1..i + 4)
            && (b'0'..=b'3').contains(&digits[0])
            && digits.iter().all(|d| (b'0'..=b'7').contains(d))
        {
            out.push(digits.iter().fold(0u8, |v, d| v * 8 + (d - b'0')));
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    std::ffi::OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(tmp: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs_err::read_dir(tmp)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_live_owners_scratch_is_kept_and_a_dead_ones_is_swept() {
        let t = tempfile::tempdir().unwrap();
        let live = Scratch::create(t.path()).unwrap();
        fs_err::write(live.dir().join("blob-1"), b"partial").unwrap();
        // A process killed mid-write: its lock was released by the kernel, its files stay.
        let mut dead = Scratch::create(t.path()).unwrap();
        let dead_dir = dead.dir().to_owned();
        fs_err::create_dir_all(dead_dir.join("load-1/blobs")).unwrap();
        fs_err::write(dead_dir.join("load-1/blobs/x"), b"partial").unwrap();
        // Closing the lock without the drop's cleanup: what the kernel does at SIGKILL.
        dead.lock = None;
        std::mem::forget(dead);

        let dead_dir = fs_err::canonicalize(&dead_dir).unwrap();
        let stats = sweep(t.path());
        assert_eq!(stats.removed, vec![dead_dir.clone()]);
        assert!(!dead_dir.exists());
        assert_eq!(fs_err::read(live.dir().join("blob-1")).unwrap(), b"partial");
        assert_eq!(sweep(t.path()), SweepStats::default());

        let live_name = live.dir().file_name().unwrap().to_str().unwrap().to_owned();
        assert_eq!(names(t.path()), vec![live_name]);
        fs_err::remove_file(live.dir().join("blob-1")).unwrap();
        drop(live);
        assert!(
            names(t.path()).is_empty(),
            "an empty scratch goes with its owner"
        );
    }

    #[test]
    fn other_entries_are_not_the_sweeps_business() {
        let t = tempfile::tempdir().unwrap();
        fs_err::write(t.path().join("blob-legacy"), b"x").unwrap();
        fs_err::create_dir(t.path().join(".new-x")).unwrap();
        assert_eq!(sweep(t.path()), SweepStats::default());
        assert_eq!(names(t.path()), vec![".new-x", "blob-legacy"]);
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(
            unescape(r"/a\040b\011c"),
            std::ffi::OsString::from("/a b\tc")
        );
        assert_eq!(unescape(r"/plain\"), std::ffi::OsString::from(r"/plain\"));
    }
}
