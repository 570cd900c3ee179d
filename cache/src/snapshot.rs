//! Snapshots: unpacked layer stacks keyed by chain ID, one directory per layer in overlay
//! lowerdir format (whiteouts as char 0/0, opaque dirs as `trusted.overlay.opaque=y`).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use kiln_oci::Digest;
use rustix::fs::RenameFlags;

use crate::apply::{ApplyMode, ApplyOptions, apply_layer_threaded};
use crate::error::{Error, Result};
use crate::index::SNAPSHOTS;
use crate::layer::LayerInfo;
use crate::store::Store;
use kiln_oci::{chain_id, sha256};

/// A stack of unpacked layers, ready to be overlay lowerdirs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Chain ID of the stack; `None` for the empty stack.
    pub chain_id: Option<Digest>,
    /// One directory per layer, bottom first.
    pub lowerdirs: Vec<PathBuf>,
}

impl Snapshot {
    /// The empty stack (`FROM scratch`).
    pub fn empty() -> Snapshot {
        Snapshot {
            chain_id: None,
            lowerdirs: Vec::new(),
        }
    }
}

impl Store {
    /// The directory of the top layer of the stack with this chain ID.
    pub fn snapshot_dir(&self, chain: &Digest) -> PathBuf {
        self.root().join("snapshots").join(chain.hex())
    }

    /// Unpacks whatever layers of the stack are missing (concurrency-safe: each is unpacked
    /// in scratch space and renamed into place; a loser of a race discards its copy) and
    /// returns the lowerdirs. Each layer's diffID is verified while unpacking.
    pub fn prepare_snapshot(&self, layers: &[LayerInfo]) -> Result<Snapshot> {
        let mut ids = Vec::new();
        let mut lowerdirs = Vec::new();
        let mut chain = None;
        for l in layers {
            ids.push(l.diff_id.clone());
            let c = chain_id(&ids).ok_or_else(|| Error::invalid("snapshot", "empty chain"))?;
            let dir = self.snapshot_dir(&c);
            if !dir.is_dir() {
                let tmp = tempfile::Builder::new()
                    .prefix("snap-")
                    .tempdir_in(self.tmp_dir())?;
                fs_err::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))?;
                let blob = self.open_blob(&l.digest)?;
                let opts = ApplyOptions {
                    mode: ApplyMode::OverlayLower,
                    lowers: lowerdirs.iter().rev().cloned().collect(),
                    ..ApplyOptions::default()
                };
                let stats = apply_layer_threaded(blob, tmp.path(), &opts)?;
                if stats.diff_id != l.diff_id {
                    return Err(Error::DigestMismatch {
                        expected: l.diff_id.clone(),
                        actual: stats.diff_id,
                    });
                }
                self.install_snapshot_dir(tmp.keep(), &c)?;
                tracing::debug!(chain = %c, layer = %l.digest, "snapshot unpacked");
            }
            lowerdirs.push(dir);
            chain = Some(c);
        }
        Ok(Snapshot {
            chain_id: chain,
            lowerdirs,
        })
    }

    /// Renames `src` to the snapshot dir of `chain` unless it exists already (then `src` is
    /// removed), and records it in the index.
    fn install_snapshot_dir(&self, src: PathBuf, chain: &Digest) -> Result<()> {
        let dir = self.snapshot_dir(chain);
        match rustix::fs::renameat_with(
            rustix::fs::CWD,
            &src,
            rustix::fs::CWD,
            &dir,
            RenameFlags::NOREPLACE,
        ) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => {
                fs_err::remove_dir_all(&src)?;
            }
            Err(e) => return Err(Error::sys("rename", &dir, e)),
        }
        self.index().write(|txn| {
            txn.open_table(SNAPSHOTS)?
                .insert(chain.to_string().as_str(), chain.hex().as_str())?;
            Ok(())
        })
    }

    /// Moves a captured overlay upperdir (already in lowerdir format) into place as the
    /// snapshot of `parent` + `layer`, avoiding a re-unpack. `upper` must be on the store's
    /// filesystem (e.g. under [`Store::tmp_dir`]).
    pub fn commit_upper_as_snapshot(
        &self,
        parent: &Snapshot,
        upper: &std::path::Path,
        layer: &LayerInfo,
    ) -> Result<Snapshot> {
        let c = match &parent.chain_id {
            None => layer.diff_id.clone(),
            Some(p) => sha256(format!("{p} {}", layer.diff_id).as_bytes()),
        };
        self.install_snapshot_dir(upper.to_owned(), &c)?;
        let mut lowerdirs = parent.lowerdirs.clone();
        lowerdirs.push(self.snapshot_dir(&c));
        Ok(Snapshot {
            chain_id: Some(c),
            lowerdirs,
        })
    }
}
