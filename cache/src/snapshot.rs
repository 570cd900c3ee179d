//! Snapshots: unpacked layer stacks keyed by chain ID, one directory per layer in overlay
//! lowerdir format (whiteouts as char 0/0, opaque dirs as `trusted.overlay.opaque=y`).
//!
//! A layer made incrementally from the layer below it in another chain (a COPY rebuilt after
//! a few files changed) is kept *stacked*: `snapshots/HEX.stack/` holds `delta/` (only what
//! changed, no whiteouts or opaque directories) and `below` (the chain ID of the snapshot
//! whose top layer it goes over). Its directories are those of `below`'s top layer followed by
//! `delta`, so mounting them gives the layer's tree without copying the unchanged files. A
//! full `snapshots/HEX/` always wins over a stack; a stack whose `below` is gone is not used
//! (the layer is unpacked from its blob instead). A stack made over a stack is flattened:
//! the deltas below are merged under the new one (files linked, not copied), so a stack is one
//! delta over a full snapshot however many edits made it; [`MAX_STACK`] bounds what is read.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kiln_oci::Digest;
use rustix::fs::RenameFlags;

use crate::apply::{ApplyMode, ApplyOptions, apply_layer_threaded};
use crate::error::{Error, Result};
use crate::index::SNAPSHOTS;
use crate::layer::LayerInfo;
use crate::store::Store;
use crate::tarindex::TarIndex;
use kiln_oci::{chain_id, sha256};

/// Layer directories a stacked snapshot may have at most (the previous layer's plus deltas).
pub const MAX_STACK: usize = 8;

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

    /// The directory of a stacked snapshot (see the module docs).
    fn stack_dir(&self, chain: &Digest) -> PathBuf {
        self.root()
            .join("snapshots")
            .join(format!("{}.stack", chain.hex()))
    }

    /// The directories of the top layer of the snapshot `chain`, bottom first: its unpacked
    /// directory, or for a stacked snapshot the directories of the layer it goes over and its
    /// delta; `None` when it is not there (or a stack lost what it goes over).
    pub fn layer_dirs(&self, chain: &Digest) -> Result<Option<Vec<PathBuf>>> {
        self.layer_dirs_at(chain, 0)
    }

    fn layer_dirs_at(&self, chain: &Digest, depth: usize) -> Result<Option<Vec<PathBuf>>> {
        let full = self.snapshot_dir(chain);
        if full.is_dir() {
            return Ok(Some(vec![full]));
        }
        if depth >= MAX_STACK {
            return Ok(None);
        }
        let stack = self.stack_dir(chain);
        let below = match fs_err::read_to_string(stack.join("below")) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Ok(below) = crate::digest::parse_digest(below.trim()) else {
            return Ok(None);
        };
        let Some(mut dirs) = self.layer_dirs_at(&below, depth + 1)? else {
            return Ok(None);
        };
        dirs.push(stack.join("delta"));
        Ok(Some(dirs))
    }

    /// The full snapshot at the bottom of the stack `chain`.
    fn stack_base(&self, chain: &Digest) -> Result<Option<Digest>> {
        let mut at = chain.clone();
        for _ in 0..=MAX_STACK {
            if self.snapshot_dir(&at).is_dir() {
                return Ok(Some(at));
            }
            let text = match fs_err::read_to_string(self.stack_dir(&at).join("below")) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            at = crate::digest::parse_digest(text.trim())?;
        }
        Ok(None)
    }

    /// The chain IDs (hex) a kept snapshot needs besides itself: those its stack goes over.
    pub(crate) fn stack_below(&self, chain_hex: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut at = chain_hex.to_string();
        while out.len() < MAX_STACK && !self.root().join("snapshots").join(&at).is_dir() {
            let path = self
                .root()
                .join("snapshots")
                .join(format!("{at}.stack"))
                .join("below");
            let Ok(text) = fs_err::read_to_string(path) else {
                break;
            };
            let Ok(below) = crate::digest::parse_digest(text.trim()) else {
                break;
            };
            at = below.hex().to_string();
            out.push(at.clone());
        }
        out
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
            if let Some(dirs) = self.layer_dirs(&c)? {
                lowerdirs.extend(dirs);
            } else {
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
                lowerdirs.push(dir);
            }
            chain = Some(c);
        }
        Ok(Snapshot {
            chain_id: chain,
            lowerdirs,
        })
    }

    /// Renames `src` to the snapshot dir of `chain` unless it exists already (then `src` is
    /// removed), and records it in the index.
    /// Returns whether `src` became the snapshot.
    fn install_snapshot_dir(&self, src: PathBuf, chain: &Digest) -> Result<bool> {
        let dir = self.snapshot_dir(chain);
        let installed = match rustix::fs::renameat_with(
            rustix::fs::CWD,
            &src,
            rustix::fs::CWD,
            &dir,
            RenameFlags::NOREPLACE,
        ) {
            Ok(()) => true,
            Err(rustix::io::Errno::EXIST) => {
                fs_err::remove_dir_all(&src)?;
                false
            }
            Err(e) => return Err(Error::sys("rename", &dir, e)),
        };
        self.index().write(|txn| {
            txn.open_table(SNAPSHOTS)?
                .insert(chain.to_string().as_str(), chain.hex().as_str())?;
            Ok(())
        })?;
        Ok(installed)
    }

    /// What tells this very snapshot directory of `chain` (full or stacked) from any made
    /// before or after under the same name: its inode and change time.
    pub(crate) fn snapshot_tag(&self, chain: &Digest) -> Option<[u64; 3]> {
        use std::os::unix::fs::MetadataExt;
        let md = fs_err::symlink_metadata(self.snapshot_dir(chain))
            .or_else(|_| fs_err::symlink_metadata(self.stack_dir(chain)))
            .ok()?;
        Some([md.ino(), md.ctime() as u64, md.ctime_nsec() as u64])
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
        self.commit_upper_indexed(parent, upper, layer, None)
    }

    /// [`Store::commit_upper_as_snapshot`], keeping `index` (the layer's tar index) with the
    /// snapshot when this call made it.
    pub fn commit_upper_indexed(
        &self,
        parent: &Snapshot,
        upper: &std::path::Path,
        layer: &LayerInfo,
        index: Option<&TarIndex>,
    ) -> Result<Snapshot> {
        let c = match &parent.chain_id {
            None => layer.diff_id.clone(),
            Some(p) => sha256(format!("{p} {}", layer.diff_id).as_bytes()),
        };
        if self.install_snapshot_dir(upper.to_owned(), &c)?
            && let Some(index) = index
        {
            self.keep_tar_index(&c, index);
        }
        let mut lowerdirs = parent.lowerdirs.clone();
        lowerdirs.push(self.snapshot_dir(&c));
        Ok(Snapshot {
            chain_id: Some(c),
            lowerdirs,
        })
    }

    /// The chain ID of `parent` + `layer`.
    pub fn child_chain(parent: &Snapshot, layer: &LayerInfo) -> Digest {
        match &parent.chain_id {
            None => layer.diff_id.clone(),
            Some(p) => sha256(format!("{p} {}", layer.diff_id).as_bytes()),
        }
    }

    /// Keeps `delta` (a captured upperdir with no whiteouts or opaque directories, on the
    /// store's filesystem) as the snapshot of `parent` + `layer`, stacked over the top layer
    /// of the snapshot `below` (whose directories must be there): the layer's tree is
    /// `below`'s top layer with `delta` over it. Nothing happens when the snapshot exists.
    pub fn commit_stacked_snapshot(
        &self,
        parent: &Snapshot,
        delta: &std::path::Path,
        layer: &LayerInfo,
        below: &Digest,
    ) -> Result<Snapshot> {
        self.commit_stacked_indexed(parent, delta, layer, below, None)
    }

    /// [`Store::commit_stacked_snapshot`], keeping `index` (the layer's tar index, made for
    /// the stack `delta` becomes the delta of) with the snapshot when this call made it.
    pub fn commit_stacked_indexed(
        &self,
        parent: &Snapshot,
        delta: &std::path::Path,
        layer: &LayerInfo,
        below: &Digest,
        index: Option<&TarIndex>,
    ) -> Result<Snapshot> {
        let c = Self::child_chain(parent, layer);
        if let Some(existing) = self.layer_dirs(&c)? {
            fs_err::remove_dir_all(delta)?;
            let mut lowerdirs = parent.lowerdirs.clone();
            lowerdirs.extend(existing);
            return Ok(Snapshot {
                chain_id: Some(c),
                lowerdirs,
            });
        }
        let Some(mut dirs) = self.layer_dirs(below)? else {
            return Err(Error::invalid(
                "snapshot",
                format!("stacked snapshot {c}: {below} is missing"),
            ));
        };
        let tmp = tempfile::Builder::new()
            .prefix("stack-")
            .tempdir_in(self.tmp_dir())?;
        fs_err::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))?;
        fs_err::rename(delta, tmp.path().join("delta"))?;
        // A stack over a stack is flattened: the deltas below are merged under the new one
        // (what a higher delta has wins, as in the overlay), so that every stack is one delta
        // over a full snapshot however many edits it took.
        let mut below = below.clone();
        if dirs.len() > 1 {
            let base = self.stack_base(&below)?.ok_or_else(|| {
                Error::invalid(
                    "snapshot",
                    format!("stacked snapshot {c}: {below} has no base"),
                )
            })?;
            for older in dirs[1..].iter().rev() {
                merge_under(older, &tmp.path().join("delta"))?;
            }
            below = base;
            dirs.truncate(1);
        }
        fs_err::write(tmp.path().join("below"), format!("{below}\n"))?;
        let src = tmp.keep();
        let dest = self.stack_dir(&c);
        let installed = match rustix::fs::renameat_with(
            rustix::fs::CWD,
            &src,
            rustix::fs::CWD,
            &dest,
            RenameFlags::NOREPLACE,
        ) {
            Ok(()) => true,
            Err(rustix::io::Errno::EXIST) => {
                fs_err::remove_dir_all(&src)?;
                false
            }
            Err(e) => return Err(Error::sys("rename", &dest, e)),
        };
        self.index().write(|txn| {
            txn.open_table(SNAPSHOTS)?
                .insert(c.to_string().as_str(), c.hex().as_str())?;
            Ok(())
        })?;
        if installed && let Some(index) = index {
            self.keep_tar_index(&c, index);
        }
        let mut lowerdirs = parent.lowerdirs.clone();
        lowerdirs.extend(dirs);
        lowerdirs.push(dest.join("delta"));
        Ok(Snapshot {
            chain_id: Some(c),
            lowerdirs,
        })
    }
}

/// Merges the delta `src` under the delta `dst` (both plain trees of a stack, neither with
/// whiteouts nor opaque directories): what `dst` has wins; a file only `src` has is linked
/// into `dst` (the same inode: deltas are immutable, so nothing is copied; a RUN over the
/// stack sees its link count one higher); a directory only `src` has is made with its mode,
/// owner, extended attributes and mtime.
fn merge_under(src: &Path, dst: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    for e in fs_err::read_dir(src)? {
        let e = e?;
        let from = e.path();
        let to = dst.join(e.file_name());
        let md = fs_err::symlink_metadata(&from)?;
        let there = match fs_err::symlink_metadata(&to) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        match (md.is_dir(), there) {
            (true, Some(t)) if t.is_dir() => merge_under(&from, &to)?,
            (_, Some(_)) => {}
            (false, None) => fs_err::hard_link(&from, &to)?,
            (true, None) => {
                fs_err::create_dir(&to)?;
                merge_under(&from, &to)?;
                std::os::unix::fs::lchown(&to, Some(md.uid()), Some(md.gid()))?;
                fs_err::set_permissions(&to, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
                for (k, v) in crate::layer::read_xattrs(&from)? {
                    if crate::layer::is_overlay_xattr(&k) {
                        continue;
                    }
                    rustix::fs::lsetxattr(&to, &k[..], &v, rustix::fs::XattrFlags::empty())
                        .map_err(|e| Error::sys("setxattr", &to, e))?;
                }
                let at = |s: i64, ns: i64| rustix::fs::Timespec {
                    tv_sec: s,
                    tv_nsec: ns as _,
                };
                let times = rustix::fs::Timestamps {
                    last_access: at(md.atime(), md.atime_nsec()),
                    last_modification: at(md.mtime(), md.mtime_nsec()),
                };
                rustix::fs::utimensat(
                    rustix::fs::CWD,
                    &to,
                    &times,
                    rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| Error::sys("utimensat", &to, e))?;
            }
        }
    }
    Ok(())
}
