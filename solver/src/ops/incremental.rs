//! Incremental COPY: a `COPY` from the build context rebuilt over the same base as its last
//! build writes only what changed, over the layer that build left.
//!
//! Every COPY of one local source (one action, no archive extraction) keeps a manifest of
//! what it wrote (index `kv` table `copy-reuse`, keyed by the step's vertex digest, the base
//! snapshot's chain ID and the context root): each destination path, for a regular file the
//! stat identity of its source (device, inode, size, mtime, ctime, mode, owner), the
//! directories it created, and the snapshot its layer is. The next build of that step mounts
//! that layer's directories over the base and copies again with the manifest in hand: a file
//! whose source identity is the recorded one is left as it is (it is that layer's file),
//! every other entry is written as always. The change lands in a fresh upperdir (the delta),
//! and the new layer's tar is written from the merged view (the previous layer with the delta
//! over it), so it is the tar a fresh copy makes, byte for byte; the snapshot is kept stacked
//! (`kiln_cache` `Store::commit_stacked_snapshot`): no unchanged file is copied again.
//!
//! Stat identity is what the context checksum's stat cache trusts too (as BuildKit's content
//! hash cache does): a file rewritten in place with the same size, mtime and ctime on the
//! same inode would be missed, which needs a clock set back by root. A file whose ctime is
//! within [`RACY_WINDOW_NS`] of the copy is never recorded (a second write in the same
//! timestamp tick would be invisible). Anything the manifest does not cover falls back to a
//! full copy: a recorded entry the source no longer has (removing it would take a whiteout,
//! which could hide the base's file of that name), a delta with whiteouts or opaque
//! directories (a type change), any error, a stack [`MAX_STACK`] deep (stacks are flattened as
//! they are made, so only a store of an older kiln has those), or fewer than half of
//! the files kept (then the stack would hold on to a layer it hardly uses).
//!
//! What a later step sees differs in one way: a directory both the previous layer and the
//! delta hold is an overlay merged directory, whose link count is 1 (as for any directory
//! several layers of an image have); names, contents, modes, owners and times are the same.

use crate::context::checksum::{RACY_WINDOW_NS, Reader, put_string};
use crate::context::walk::Meta;
use crate::refs::Ref;
use kiln_cache::Store;
use kiln_cache::snapshot::MAX_STACK;
use kiln_graph::{FileAction, FileOp};
use kiln_oci::Digest;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The `kv` table of COPY manifests: reuse key → [`Manifest`] ([`Manifest::encode`]).
const TABLE: &str = "copy-reuse";

/// FNV-1a: the manifest's tables hash tens of thousands of short paths per build, where
/// SipHash's resistance to chosen keys buys nothing (the keys are the build's own paths).
#[derive(Default)]
pub(crate) struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;
type FastSet<K> = HashSet<K, BuildHasherDefault<Fnv>>;

/// What identifies a source file's state without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ident([u64; 8]);

impl Ident {
    fn of(m: &Meta) -> Ident {
        Ident([
            m.dev,
            m.ino,
            m.size,
            m.mtime_ns as u64,
            m.ctime_ns as u64,
            m.mode.into(),
            m.uid.into(),
            m.gid.into(),
        ])
    }
}

/// What one COPY wrote.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Manifest {
    /// The snapshot (chain ID) whose top layer this copy made.
    pub(crate) chain: Option<Digest>,
    /// Every non-directory destination path; regular files written once from a source
    /// that was not racy carry its identity.
    files: FastMap<String, Option<Ident>>,
    /// Directories the copy created, with the identity of the source directory they took
    /// their mode, owner and mtime from when it can be trusted next time.
    dirs: FastMap<String, Option<Ident>>,
}

/// The first line of an encoded [`Manifest`].
const MANIFEST_MAGIC: &[u8] = b"kiln-copy-reuse 2\n";

impl Manifest {
    /// `MAGIC`, the chain, then each file and each directory: path and identity (a flag and
    /// eight numbers); strings and numbers as the stat cache's [`Reader`] reads them.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + (self.files.len() + self.dirs.len()) * 100);
        out.extend_from_slice(MANIFEST_MAGIC);
        let chain = self
            .chain
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default();
        put_string(&mut out, &chain);
        for table in [&self.files, &self.dirs] {
            out.extend_from_slice(&(table.len() as u64).to_le_bytes());
            for (path, id) in table {
                put_string(&mut out, path);
                match id {
                    Some(Ident(v)) => {
                        out.push(1);
                        for n in v {
                            out.extend_from_slice(&n.to_le_bytes());
                        }
                    }
                    None => out.push(0),
                }
            }
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<Manifest> {
        let mut r = Reader(bytes.strip_prefix(MANIFEST_MAGIC)?);
        let mut m = Manifest::default();
        let chain = r.string()?;
        if !chain.is_empty() {
            m.chain = Some(kiln_cache::parse_digest(&chain).ok()?);
        }
        for dirs in [false, true] {
            let count = r.u64()?;
            let table = if dirs { &mut m.dirs } else { &mut m.files };
            table.reserve(count.min(1 << 24) as usize);
            for _ in 0..count {
                let path = r.string()?;
                let id = match r.take(1)?[0] {
                    0 => None,
                    1 => {
                        let mut v = [0u64; 8];
                        for x in &mut v {
                            *x = r.u64()?;
                        }
                        Some(Ident(v))
                    }
                    _ => return None,
                };
                table.insert(path, id);
            }
        }
        r.0.is_empty().then_some(m)
    }
}

/// The reuse key of a file op, when it is one incremental copies handle: one COPY of a
/// local source without archive extraction.
pub(crate) fn key(
    step: &Digest,
    base: Option<&Digest>,
    op: &FileOp,
    inputs: &[Ref],
) -> Option<String> {
    let [FileAction::Copy(c)] = op.actions.as_slice() else {
        return None;
    };
    if c.extract_archive {
        return None;
    }
    let Some(Ref::Local { root, .. }) = inputs.get(c.src_input) else {
        return None;
    };
    let base = base.map_or_else(|| "scratch".to_string(), |d| d.to_string());
    let text = format!("copy-reuse-2\n{step}\n{base}\n{}", root.display());
    Some(kiln_oci::sha256(text.as_bytes()).hex().to_string())
}

/// The manifest recorded under `key` whose layer directories are still there, with them.
pub(crate) fn previous(store: &Store, key: &str) -> Option<(Manifest, Vec<PathBuf>)> {
    let raw = store.kv_get(TABLE, key).ok()??;
    let m = Manifest::decode(&raw)?;
    // Files whose source was racy then cannot be kept: with fewer than half of them
    // recorded, the attempt could not be worth it.
    let recorded = m.files.values().filter(|i| i.is_some()).count();
    if recorded == 0 || recorded * 2 < m.files.len() {
        return None;
    }
    let dirs = store.layer_dirs(m.chain.as_ref()?).ok()??;
    (dirs.len() < MAX_STACK).then_some((m, dirs))
}

/// Records what a copy wrote (its layer is the snapshot `chain`).
pub(crate) fn record(store: &Store, key: &str, reuse: &Reuse, chain: Digest) {
    let mut m = reuse.take();
    m.chain = Some(chain);
    if let Err(e) = store.kv_put(TABLE, key, &m.encode()) {
        tracing::warn!("could not record the copy manifest: {e}");
    }
}

/// A copy's manifest being made, and the previous one it may keep files of.
#[derive(Debug)]
pub(crate) struct Reuse {
    prev: Option<Manifest>,
    /// Sources changed (ctime) at or after this are not recorded.
    racy_from_ns: i64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next: Manifest,
    /// Paths written (or kept) so far.
    written: FastSet<String>,
    /// Directories something was written in (or below).
    touched: FastSet<String>,
    kept: u64,
}

impl State {
    /// Notes that something at `path` was written: its directories' times are to be set.
    fn touch(&mut self, path: &str) {
        let mut at = path;
        while let Some((parent, _)) = at.rsplit_once('/') {
            if !self.touched.insert(parent.to_string()) {
                break;
            }
            at = parent;
        }
    }
}

impl Reuse {
    /// `prev`: the manifest of the layer mounted under the destination (`None`: a full copy,
    /// only recording).
    pub(crate) fn new(prev: Option<Manifest>) -> Reuse {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        Reuse {
            prev,
            racy_from_ns: now - RACY_WINDOW_NS,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Before a regular file is written to `path` from a source with `meta`: whether the
    /// file there already is that copy (then nothing is written).
    pub(crate) fn keep_file(&self, path: &str, meta: &Meta) -> bool {
        let id = (meta.nlink == 1).then(|| Ident::of(meta));
        let mut st = self.state();
        if !st.written.insert(path.to_string()) {
            // Written twice: what is there is no longer the previous layer's.
            st.next.files.insert(path.to_string(), None);
            return false;
        }
        let recorded = self
            .prev
            .as_ref()
            .and_then(|p| p.files.get(path).copied().flatten());
        if id.is_some() && recorded == id {
            st.next.files.insert(path.to_string(), id);
            st.kept += 1;
            return true;
        }
        let id = id.filter(|_| meta.ctime_ns < self.racy_from_ns);
        st.next.files.insert(path.to_string(), id);
        st.touch(path);
        false
    }

    /// A non-directory other than a kept file was written to `path`.
    pub(crate) fn wrote(&self, path: &str) {
        let mut st = self.state();
        st.written.insert(path.to_string());
        st.next.files.insert(path.to_string(), None);
        st.touch(path);
    }

    /// An existing directory at `path`: whether the previous copy created it (then this copy
    /// makes it its own again, as it would create it).
    pub(crate) fn made_dir(&self, path: &str) -> bool {
        self.prev
            .as_ref()
            .is_some_and(|p| p.dirs.contains_key(path))
    }

    /// Before the directory `path` is made from a source directory with `meta`: whether the
    /// previous copy made it from that very source state (same identity: mode, owner and
    /// mtime are the ones it has). Then nothing is done to it unless something is written in
    /// it ([`Reuse::touched`]).
    pub(crate) fn keep_dir(&self, path: &str, meta: &Meta) -> bool {
        let Some(recorded) = self
            .prev
            .as_ref()
            .and_then(|p| p.dirs.get(path).copied().flatten())
        else {
            return false;
        };
        let id = Ident::of(meta);
        if id != recorded {
            return false;
        }
        let mut st = self.state();
        if !st.written.insert(path.to_string()) {
            st.next.dirs.insert(path.to_string(), None);
            return false;
        }
        st.next.dirs.insert(path.to_string(), Some(id));
        true
    }

    /// Whether something was written in the directory `path` or below it.
    pub(crate) fn touched(&self, path: &str) -> bool {
        self.state().touched.contains(path)
    }

    /// This copy created (or took over) the directory `path`, from a source directory with
    /// `meta` (`None`: made as the copy makes its destination or parents).
    pub(crate) fn dir(&self, path: &str, meta: Option<&Meta>) {
        let id = meta
            .filter(|m| m.ctime_ns < self.racy_from_ns)
            .map(Ident::of);
        let mut st = self.state();
        st.written.insert(path.to_string());
        st.next.dirs.insert(path.to_string(), id);
        st.touch(path);
    }

    /// Whether the previous copy wrote something this one did not (it would have to go).
    pub(crate) fn lost_entries(&self) -> bool {
        let st = self.state();
        self.prev.as_ref().is_some_and(|p| {
            p.files
                .keys()
                .chain(p.dirs.keys())
                .any(|k| !st.written.contains(k))
        })
    }

    /// Files kept from the previous layer.
    pub(crate) fn kept(&self) -> u64 {
        self.state().kept
    }

    /// Whether keeping the result stacked is worth it: at least half of the files were kept
    /// (a stack holds on to the layer below it; when most of it was copied again anyway, a
    /// layer of its own is better).
    pub(crate) fn worth_stacking(&self) -> bool {
        let kept = self.kept();
        let files = self.prev.as_ref().map_or(0, |p| p.files.len() as u64);
        kept > 0 && kept * 2 >= files
    }

    fn take(&self) -> Manifest {
        std::mem::take(&mut self.state().next)
    }
}

/// Whether a captured upperdir holds whiteouts (char 0/0) or opaque directories.
pub(crate) fn has_overlay_marks(dir: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs_err::read_dir(&d)? {
            let e = e?;
            let p = e.path();
            let md = fs_err::symlink_metadata(&p)?;
            let ft = md.file_type();
            if ft.is_char_device() && md.rdev() == 0 {
                return Ok(true);
            }
            if ft.is_dir() {
                for name in ["trusted.overlay.opaque", "user.overlay.opaque"] {
                    let mut v = [0u8; 8];
                    if let Ok(n) = rustix::fs::lgetxattr(&p, name, &mut v)
                        && v[..n] == *b"y"
                    {
                        return Ok(true);
                    }
                }
                todo.push(p);
            }
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_reads_back_and_a_cut_one_does_not() {
        let mut m = Manifest {
            chain: Some(kiln_oci::sha256(b"x")),
            ..Manifest::default()
        };
        m.files.insert(
            "data/a".into(),
            Some(Ident([1, 2, 3, 4, 5, 6, 7, u64::MAX])),
        );
        m.files.insert("data/link".into(), None);
        m.dirs.insert("data".into(), Some(Ident([9; 8])));
        m.dirs.insert("data/sub dir/ü".into(), None);
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes), Some(m.clone()));
        for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            assert_eq!(Manifest::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let empty = Manifest::default();
        assert_eq!(Manifest::decode(&empty.encode()), Some(empty));
    }
}
