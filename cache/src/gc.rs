//! Garbage collection: leases protect blobs and snapshots in use; everything not reachable
//! from an image or a lease (and older than a grace period) is removed.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use kiln_oci::Digest;
use redb::ReadableTable;

use crate::error::{Error, Result};
use crate::index::{BLOB_LAYERS, LAYERS, SNAPSHOTS};
use crate::store::Store;

const LEASES: &str = "lease";

/// What [`Store::gc`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcStats {
    /// Blobs deleted.
    pub blobs_removed: u64,
    /// Bytes of the deleted blobs.
    pub bytes_freed: u64,
    /// Snapshot directories deleted.
    pub snapshots_removed: u64,
    /// Leftover scratch entries (from killed processes) deleted.
    pub tmp_removed: u64,
}

impl Store {
    /// Protects `digests` (blob digests and/or snapshot chain IDs) from GC under `name`
    /// (e.g. one lease per running build), replacing an earlier lease of that name.
    pub fn lease(&self, name: &str, digests: &[Digest]) -> Result<()> {
        let v = serde_json::to_vec(digests).map_err(|e| Error::json("lease", e))?;
        self.kv_put(LEASES, name, &v)
    }

    /// Drops a lease; returns whether it existed.
    pub fn release(&self, name: &str) -> Result<bool> {
        self.kv_remove(LEASES, name)
    }

    /// [`Store::gc_with_grace`] with a one-hour grace period.
    pub fn gc(&self) -> Result<GcStats> {
        self.gc_with_grace(Duration::from_secs(3600))
    }

    /// Removes blobs and snapshots that no image, build cache record or lease keeps, and
    /// scratch leftovers, if they are older than `grace` (so a concurrent process that has
    /// written a blob but not yet recorded it does not lose it). Build cache itself is removed
    /// only by [`Store::prune_build_cache`].
    pub fn gc_with_grace(&self, grace: Duration) -> Result<GcStats> {
        let (keep_blobs, keep_snaps) = self.gc_roots(None)?;
        self.collect_except(&keep_blobs, &keep_snaps, grace)
    }

    /// Removes the blobs and snapshots not in `keep_blobs` / `keep_snaps` (hex digests), and
    /// scratch leftovers, that are older than `grace`; drops their index records.
    pub(crate) fn collect_except(
        &self,
        keep_blobs: &HashSet<String>,
        keep_snaps: &HashSet<String>,
        grace: Duration,
    ) -> Result<GcStats> {
        let now = SystemTime::now();
        let old = |md: &std::fs::Metadata| {
            md.modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age >= grace)
        };
        let mut stats = GcStats::default();
        let mut removed: Vec<String> = Vec::new();
        for e in fs_err::read_dir(self.root().join("blobs/sha256"))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let md = fs_err::symlink_metadata(e.path())?;
            if keep_blobs.contains(&name) || !old(&md) {
                continue;
            }
            fs_err::remove_file(e.path())?;
            stats.blobs_removed += 1;
            stats.bytes_freed += std::os::unix::fs::MetadataExt::blocks(&md) * 512;
            removed.push(format!("sha256:{name}"));
        }
        let mut removed_snaps = Vec::new();
        for e in fs_err::read_dir(self.root().join("snapshots"))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let md = fs_err::symlink_metadata(e.path())?;
            // A snapshot's tar index goes with it (an index without its snapshot is never read).
            if let Some(chain) = name.strip_suffix(".index") {
                if !keep_snaps.contains(chain) && old(&md) {
                    stats.bytes_freed += crate::prune::du(&e.path());
                    fs_err::remove_file(e.path())?;
                }
                continue;
            }
            let chain = name.strip_suffix(".stack").unwrap_or(&name);
            if keep_snaps.contains(chain) || !old(&md) {
                continue;
            }
            // Rename first so no reader ever sees a half-deleted snapshot.
            let doomed = self.tmp_dir().join(format!("gc-{name}"));
            stats.bytes_freed += crate::prune::du(&e.path());
            fs_err::rename(e.path(), &doomed)?;
            fs_err::remove_dir_all(&doomed)?;
            stats.snapshots_removed += 1;
            removed_snaps.push(format!("sha256:{chain}"));
        }
        for e in fs_err::read_dir(self.tmp_root())? {
            let e = e?;
            // Per-process scratch goes by its owner's liveness (`scratch::sweep`), not age.
            if e.file_name()
                .to_string_lossy()
                .starts_with(crate::scratch::PROC_PREFIX)
            {
                continue;
            }
            let md = fs_err::symlink_metadata(e.path())?;
            if !old(&md) {
                continue;
            }
            if md.is_dir() {
                fs_err::remove_dir_all(e.path())?;
            } else {
                fs_err::remove_file(e.path())?;
            }
            stats.tmp_removed += 1;
        }
        if !removed.is_empty() || !removed_snaps.is_empty() {
            let gone: HashSet<&str> = removed.iter().map(String::as_str).collect();
            self.index().write(|txn| {
                let mut bl = txn.open_table(BLOB_LAYERS)?;
                for d in &removed {
                    bl.remove(d.as_str())?;
                }
                drop(bl);
                let mut layers = txn.open_table(LAYERS)?;
                let mut stale = Vec::new();
                for item in layers.iter()? {
                    let (k, v) = item?;
                    let info: crate::layer::LayerInfo = serde_json::from_slice(v.value())
                        .map_err(|e| Error::json("layer record", e))?;
                    if gone.contains(info.digest.to_string().as_str()) {
                        stale.push(k.value().to_owned());
                    }
                }
                for k in stale {
                    layers.remove(k.as_str())?;
                }
                drop(layers);
                let mut snaps = txn.open_table(SNAPSHOTS)?;
                for c in &removed_snaps {
                    snaps.remove(c.as_str())?;
                }
                Ok(())
            })?;
        }
        tracing::info!(?stats, "gc");
        Ok(stats)
    }
}
