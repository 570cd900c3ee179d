//! A step's working area: the input chain mounted as an overlay with a fresh upperdir, and the
//! capture of that upperdir as the step's layer.

use crate::error::{Error, Result};
use crate::graph::Digest;
use crate::worker::{Chain, ChainLayer};
use kiln_cache::{LayerOptions, LayerSource, MountGuard, Snapshot, Store};
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
        let mut step = StepMount {
            mount: None,
            snapshot,
            base,
            dir,
        };
        let guard = kiln_cache::mount_overlay(
            &step.snapshot.lowerdirs,
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

    /// Unmounts and turns the changes into the step's layer (none when nothing changed).
    pub fn finish(mut self, store: &Store, step: &Digest, opts: &LayerOptions) -> Result<Chain> {
        if let Some(m) = self.mount.take() {
            m.unmount()?;
        }
        let upper = self.upper();
        if is_empty_dir(&upper)? {
            return Ok(self.base.as_ref().clone());
        }
        let layer_opts = LayerOptions {
            source: LayerSource::OverlayUpper,
            ..opts.clone()
        };
        let layer = store.create_layer(&upper, &layer_opts)?;
        store.commit_upper_as_snapshot(&self.snapshot, &upper, &layer)?;
        let mut chain = self.base.as_ref().clone();
        chain.layers.push(ChainLayer {
            layer,
            step: step.clone(),
        });
        Ok(chain)
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
    dir: tempfile::TempDir,
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
        let guard = kiln_cache::mount_overlay(&snapshot.lowerdirs, None, dir.path())?;
        Ok(ReadOnlyMount {
            mount: Some(guard),
            dir,
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        if let Some(m) = self.mount.take() {
            let _ = m.unmount();
        }
    }
}
