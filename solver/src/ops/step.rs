//! A step's working area: the input chain mounted as an overlay with a fresh upperdir, and the
//! capture of that upperdir as the step's layer.

use crate::error::{Error, Result};
use crate::refs::{Chain, ChainLayer};
use kiln_cache::{LayerOptions, LayerSource, MountGuard, Snapshot, Store};
use kiln_oci::Digest;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The overlay of one step. Fields drop in order: the mount goes before its directories.
pub struct StepMount {
    mount: Option<MountGuard>,
    dir: tempfile::TempDir,
    snapshot: Snapshot,
    base: Arc<Chain>,
}

impl StepMount {
    /// Unpacks what `base` lacks and mounts it writable at a fresh rootfs.
    pub fn prepare(store: &Store, base: Arc<Chain>) -> Result<StepMount> {
        Self::prepare_over(store, base, &[])
    }

    /// [`StepMount::prepare`] with the directories `over` (bottom first) mounted over the
    /// base too: the layer an incremental copy starts from.
    pub fn prepare_over(store: &Store, base: Arc<Chain>, over: &[PathBuf]) -> Result<StepMount> {
        let snapshot = store.prepare_snapshot(&base.infos())?;
        let dir = tempfile::Builder::new()
            .prefix("step-")
            .tempdir_in(store.tmp_dir())
            .map_err(|e| Error::Io {
                path: store.tmp_dir(),
                source: e,
            })?;
        for sub in ["upper", "work", "rootfs"] {
            fs_err::create_dir(dir.path().join(sub)).map_err(|e| Error::Io {
                path: dir.path().join(sub),
                source: e,
            })?;
        }
        write_owner(dir.path())?;
        let mut step = StepMount {
            mount: None,
            snapshot,
            base,
            dir,
        };
        let mut lowers = step.snapshot.lowerdirs.clone();
        lowers.extend_from_slice(over);
        let guard = kiln_cache::mount_overlay(
            &lowers,
            Some((&step.upper(), &step.dir.path().join("work"))),
            &step.rootfs(),
        )?;
        step.mount = Some(guard);
        Ok(step)
    }

    /// Where the step's filesystem is mounted.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    fn upper(&self) -> PathBuf {
        self.dir.path().join("upper")
    }

    /// The upperdir (changes so far), for callers that clean up after the sandbox.
    pub fn upper_dir(&self) -> PathBuf {
        self.upper()
    }

    /// Unmounts and moves the upper directory (the changes so far) to `dest`, on the same
    /// filesystem: a failed step's state, kept for a debug shell.
    pub fn keep_upper(mut self, dest: &Path) -> Result<()> {
        if let Some(m) = self.mount.take() {
            m.unmount()?;
        }
        fs_err::rename(self.upper(), dest).map_err(|e| Error::Io {
            path: dest.to_path_buf(),
            source: e,
        })
    }

    /// Unmounts and turns the changes into the step's layer (none when nothing changed).
    pub fn finish(self, store: &Store, step: &Digest, opts: &LayerOptions) -> Result<Chain> {
        self.finish_counted(store, step, opts, false)
            .map(|(chain, _)| chain)
    }

    /// [`StepMount::finish`], also returning, when a layer was made, its snapshot's chain ID
    /// and how many whiteouts and opaque markers it has. With `index`, the layer's tar index
    /// is kept with its snapshot (a layer an incremental copy may stack over next time).
    pub fn finish_counted(
        mut self,
        store: &Store,
        step: &Digest,
        opts: &LayerOptions,
        index: bool,
    ) -> Result<(Chain, Option<(Digest, u64)>)> {
        if let Some(m) = self.mount.take() {
            m.unmount()?;
        }
        let upper = self.upper();
        if is_empty_dir(&upper)? {
            return Ok((self.base.as_ref().clone(), None));
        }
        let layer_opts = LayerOptions {
            source: LayerSource::OverlayUpper,
            ..opts.clone()
        };
        let (layer, whiteouts, tar_index) =
            store.create_layer_indexed(&upper, &layer_opts, index)?;
        let snap =
            store.commit_upper_indexed(&self.snapshot, &upper, &layer, tar_index.as_ref())?;
        let mut chain = self.base.as_ref().clone();
        chain.layers.push(ChainLayer {
            layer,
            step: step.clone(),
        });
        Ok((chain, snap.chain_id.map(|c| (c, whiteouts))))
    }

    /// For a step prepared over a previous layer (`below`, the snapshot whose top layer
    /// `below_dirs` are): unmounts, and makes the layer from that layer with the changes over
    /// it, merged as overlayfs would, so the tar is the one the whole tree gives; the
    /// changes are kept stacked over `below`. `None` when the changes hold whiteouts or opaque
    /// directories (that layer with them over it is not what a fresh step makes).
    /// `index`: `below`'s tar index, when it has one.
    #[allow(clippy::too_many_arguments)]
    pub fn finish_over(
        mut self,
        store: &Store,
        step: &Digest,
        opts: &LayerOptions,
        below: &Digest,
        below_dirs: &[PathBuf],
        index: Option<&kiln_cache::tarindex::TarIndex>,
    ) -> Result<Option<(Chain, Digest)>> {
        if let Some(m) = self.mount.take() {
            m.unmount()?;
        }
        let upper = self.upper();
        let marked = super::incremental::has_overlay_marks(&upper).map_err(|e| Error::Io {
            path: upper.clone(),
            source: e,
        })?;
        if marked {
            return Ok(None);
        }
        let mut dirs = below_dirs.to_vec();
        dirs.push(upper.clone());
        let layer_opts = LayerOptions {
            source: LayerSource::Directory,
            ..opts.clone()
        };
        let (layer, index) = store.create_layer_stacked(&dirs, &layer_opts, index)?;
        let snap =
            store.commit_stacked_indexed(&self.snapshot, &upper, &layer, below, index.as_ref())?;
        let mut chain = self.base.as_ref().clone();
        chain.layers.push(ChainLayer {
            layer,
            step: step.clone(),
        });
        let c = snap
            .chain_id
            .ok_or_else(|| Error::other("incremental copy", "a snapshot without a chain ID"))?;
        Ok(Some((chain, c)))
    }
}

fn is_empty_dir(p: &Path) -> Result<bool> {
    let mut it = fs_err::read_dir(p).map_err(|e| Error::Io {
        path: p.to_owned(),
        source: e,
    })?;
    Ok(it.next().is_none())
}

/// A read-only view of a chain (the source side of `COPY --from`).
pub struct ReadOnlyMount {
    mount: Option<MountGuard>,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl ReadOnlyMount {
    pub fn new(store: &Store, chain: &Chain) -> Result<ReadOnlyMount> {
        let snapshot = store.prepare_snapshot(&chain.infos())?;
        let dir = tempfile::Builder::new()
            .prefix("src-")
            .tempdir_in(store.tmp_dir())
            .map_err(|e| Error::Io {
                path: store.tmp_dir(),
                source: e,
            })?;
        write_owner(dir.path())?;
        let mnt = dir.path().join("rootfs");
        fs_err::create_dir(&mnt).map_err(|e| Error::Io {
            path: mnt.clone(),
            source: e,
        })?;
        let guard = kiln_cache::mount_overlay(&snapshot.lowerdirs, None, &mnt)?;
        Ok(ReadOnlyMount {
            mount: Some(guard),
            path: mnt,
            _dir: dir,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        if let Some(m) = self.mount.take() {
            let _ = m.unmount();
        }
    }
}

const OWNER_FILE: &str = "owner";

/// `pid starttime` of this process (pids are reused; the start time tells them apart).
fn identity(pid: u32) -> Option<String> {
    let stat = fs_err::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let start = stat.rsplit_once(')')?.1.split_whitespace().nth(19)?;
    Some(format!("{pid} {start}"))
}

fn write_owner(dir: &Path) -> Result<()> {
    let me = std::process::id();
    let id = identity(me).unwrap_or_else(|| format!("{me} 0"));
    // Through a rename: a concurrent `cleanup_stale` (any kiln command opening the store) that
    // read a half-written, empty owner would take the area for a dead process's.
    let tmp = dir.join(format!("{OWNER_FILE}.tmp"));
    fs_err::write(&tmp, id)
        .and_then(|()| fs_err::rename(&tmp, dir.join(OWNER_FILE)))
        .map_err(|e| Error::Io {
            path: dir.join(OWNER_FILE),
            source: e,
        })
}

/// Unmounts and removes the step areas a killed older kiln left at the top of the store's
/// tmp (their owner process is gone); areas of live kiln processes are left alone. Areas in
/// a process's own scratch directory go with it (`kiln_cache::scratch::sweep`).
pub fn cleanup_stale(store: &Store) {
    let Ok(entries) = fs_err::read_dir(store.tmp_root()) else {
        return;
    };
    for e in entries.flatten() {
        let dir = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("step-") || name.starts_with("src-")) {
            continue;
        }
        let alive = fs_err::read_to_string(dir.join(OWNER_FILE))
            .ok()
            .and_then(|o| {
                let pid: u32 = o.split_whitespace().next()?.parse().ok()?;
                Some(identity(pid).as_deref() == Some(o.trim()))
            })
            .unwrap_or(false);
        // An area without an owner yet may be one another process is creating right now.
        let young = !dir.join(OWNER_FILE).exists()
            && fs_err::metadata(&dir)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() < 60);
        if alive || young {
            continue;
        }
        let _ = kiln_cache::unmount(&dir.join("rootfs"));
        if let Err(err) = fs_err::remove_dir_all(&dir) {
            tracing::warn!("leftover step area {}: {err}", dir.display());
        }
    }
}
