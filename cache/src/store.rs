//! The store: a versioned root directory with content-addressed blobs and the index.
//!
//! Layout (format version 1):
//! ```text
//! ROOT/format               {"version":1}
//! ROOT/blobs/sha256/HEX     content-addressed blobs (only ever complete and verified)
//! ROOT/snapshots/HEX/       unpacked layer stacks by chain ID (overlay lowerdirs)
//! ROOT/tmp/proc-PID-X/      each process's scratch on the same filesystem (renamed into
//!                           place), swept once its owner is dead (see `scratch.rs`)
//! ROOT/index.redb           the index (see `index.rs`)
//! ```

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use kiln_oci::Digest;
use serde::{Deserialize, Serialize};

use crate::digest::HashWriter;
use crate::error::{Error, Result};
use crate::index::{CACHE, Index, KV};
use crate::scratch::Scratch;
use kiln_oci::sha256;

/// The on-disk format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// A kiln store. Cheap to clone; any number of processes may open one root at once.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    pub(crate) index: Index,
    /// Created on first use: a command that writes nothing leaves no trace in tmp.
    scratch: OnceLock<Option<Scratch>>,
}

#[derive(Serialize, Deserialize)]
struct FormatFile {
    version: u32,
}

impl Store {
    /// Opens (creating if missing) the store at `root`. Refuses a store of a newer format.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let root = root.into();
        fs_err::create_dir_all(&root)?;
        let format_path = root.join("format");
        match fs_err::read(&format_path) {
            Ok(bytes) => {
                let f: FormatFile =
                    serde_json::from_slice(&bytes).map_err(|e| Error::BadFormatFile {
                        root: root.clone(),
                        reason: e.to_string(),
                    })?;
                if f.version > FORMAT_VERSION {
                    return Err(Error::NewerFormat {
                        root,
                        found: f.version,
                        supported: FORMAT_VERSION,
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs_err::create_dir_all(root.join("tmp"))?;
                let bytes = serde_json::to_vec(&FormatFile {
                    version: FORMAT_VERSION,
                })
                .map_err(|e| Error::json("format file", e))?;
                let mut tmp = tempfile::NamedTempFile::new_in(root.join("tmp"))?;
                tmp.write_all(&bytes)?;
                tmp.as_file().sync_all()?;
                // Another process may create it at the same time: both write the same content.
                tmp.persist(&format_path).map_err(|e| e.error)?;
            }
            Err(e) => return Err(e.into()),
        }
        for dir in ["blobs/sha256", "snapshots", "tmp"] {
            fs_err::create_dir_all(root.join(dir))?;
        }
        let index = Index::open(root.join("index.redb"), root.join("index.lock"))?;
        crate::scratch::sweep(&root.join("tmp"));
        tracing::debug!(root = %root.display(), "opened store");
        Ok(Store {
            inner: Arc::new(Inner {
                root,
                index,
                scratch: OnceLock::new(),
            }),
        })
    }

    /// The default root: `KILN_ROOT`, else `/var/lib/kiln` as root, else
    /// `$XDG_DATA_HOME/kiln`, else `~/.local/share/kiln`.
    pub fn default_root() -> PathBuf {
        if let Some(r) = std::env::var_os("KILN_ROOT").filter(|r| !r.is_empty()) {
            return PathBuf::from(r);
        }
        if rustix::process::geteuid().is_root() {
            return PathBuf::from("/var/lib/kiln");
        }
        if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|r| !r.is_empty()) {
            return PathBuf::from(x).join("kiln");
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
        PathBuf::from(home).join(".local/share/kiln")
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// This process's scratch space on the store's filesystem, for things later renamed into
    /// the store (created on first use; swept by a later command if the process is killed).
    pub fn tmp_dir(&self) -> PathBuf {
        let scratch = self.inner.scratch.get_or_init(|| {
            Scratch::create(&self.tmp_root())
                .inspect_err(|e| tracing::warn!("scratch directory: {e}"))
                .ok()
        });
        match scratch {
            Some(s) => s.dir().to_owned(),
            None => self.tmp_root(),
        }
    }

    /// The directory holding every process's scratch (`ROOT/tmp`).
    pub fn tmp_root(&self) -> PathBuf {
        self.inner.root.join("tmp")
    }

    pub(crate) fn index(&self) -> &Index {
        &self.inner.index
    }

    /// Whether the blob is present.
    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Where the blob lives (whether or not it is present).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.inner
            .root
            .join("blobs")
            .join(d.algorithm())
            .join(d.hex())
    }

    /// Reads a whole blob.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        match fs_err::read(self.blob_path(d)) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::BlobNotFound(d.clone())),
            Err(e) => Err(e.into()),
        }
    }

    /// Opens a blob for reading.
    pub fn open_blob(&self, d: &Digest) -> Result<fs_err::File> {
        match fs_err::File::open(self.blob_path(d)) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::BlobNotFound(d.clone())),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes a blob from memory; returns its digest.
    pub fn write_blob(&self, bytes: &[u8]) -> Result<Digest> {
        let d = sha256(bytes);
        if self.has_blob(&d) {
            return Ok(d);
        }
        let mut w = self.blob_writer()?;
        w.write_all(bytes)?;
        w.commit(Some(&d))?;
        Ok(d)
    }

    /// A streaming blob writer. Nothing is visible until [`BlobWriter::commit`] succeeds.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let tmp = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(self.tmp_dir())?;
        Ok(BlobWriter {
            store: self.clone(),
            out: HashWriter::new(io::BufWriter::with_capacity(1 << 20, tmp)),
            unsynced: 0,
            syncing: None,
        })
    }

    /// Looks up a solver cache record.
    pub fn cache_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.index().read(|txn| {
            let t = txn.open_table(CACHE)?;
            Ok(t.get(key)?.map(|v| v.value().to_vec()))
        })
    }

    /// Stores (replacing) a solver cache record.
    pub fn cache_put(&self, key: &str, value: &[u8]) -> Result<()> {
        self.index().write(|txn| {
            txn.open_table(CACHE)?.insert(key, value)?;
            Ok(())
        })
    }

    /// Removes a solver cache record; returns whether it existed.
    pub fn cache_remove(&self, key: &str) -> Result<bool> {
        self.index()
            .write(|txn| Ok(txn.open_table(CACHE)?.remove(key)?.is_some()))
    }

    /// Reads from a generic small table (`table` is any name, e.g. "context-stat").
    pub fn kv_get(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>> {
        let k = format!("{table}\0{key}");
        self.index().read(|txn| {
            let t = txn.open_table(KV)?;
            Ok(t.get(k.as_str())?.map(|v| v.value().to_vec()))
        })
    }

    /// Writes (replacing) into a generic small table.
    pub fn kv_put(&self, table: &str, key: &str, value: &[u8]) -> Result<()> {
        let k = format!("{table}\0{key}");
        self.index().write(|txn| {
            txn.open_table(KV)?.insert(k.as_str(), value)?;
            Ok(())
        })
    }

    /// Writes (replacing) many entries of a generic small table in one transaction.
    pub fn kv_put_many(&self, table: &str, entries: &[(String, Vec<u8>)]) -> Result<()> {
        self.kv_update(table, entries, &[])
    }

    /// Writes `put` and removes `remove` in a generic small table, in one transaction.
    pub fn kv_update(
        &self,
        table: &str,
        put: &[(String, Vec<u8>)],
        remove: &[String],
    ) -> Result<()> {
        if put.is_empty() && remove.is_empty() {
            return Ok(());
        }
        self.index().write(|txn| {
            let mut t = txn.open_table(KV)?;
            for (key, value) in put {
                t.insert(format!("{table}\0{key}").as_str(), value.as_slice())?;
            }
            for key in remove {
                t.remove(format!("{table}\0{key}").as_str())?;
            }
            Ok(())
        })
    }

    /// Removes from a generic small table; returns whether the key existed.
    pub fn kv_remove(&self, table: &str, key: &str) -> Result<bool> {
        let k = format!("{table}\0{key}");
        self.index()
            .write(|txn| Ok(txn.open_table(KV)?.remove(k.as_str())?.is_some()))
    }

    /// All keys and values of a generic small table, sorted by key.
    pub fn kv_list(&self, table: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let lo = format!("{table}\0");
        let hi = format!("{table}\u{1}");
        self.index().read(|txn| {
            let t = txn.open_table(KV)?;
            let mut out = Vec::new();
            for item in t.range(lo.as_str()..hi.as_str())? {
                let (k, v) = item?;
                out.push((k.value()[lo.len()..].to_owned(), v.value().to_vec()));
            }
            Ok(out)
        })
    }
}

/// Writes one blob: a temp file in the store's tmp dir, hashed as it is written, fsynced,
/// verified and renamed into place by [`BlobWriter::commit`]. Dropped uncommitted, it leaves
/// nothing visible.
pub struct BlobWriter {
    store: Store,
    out: HashWriter<io::BufWriter<tempfile::NamedTempFile>>,
    /// bytes written since writeback was last started
    unsynced: u64,
    /// background fdatasync, so disk writeback overlaps with producing the data
    syncing: Option<std::thread::JoinHandle<io::Result<()>>>,
}

/// Start background writeback every this many bytes.
const WRITEBACK_EVERY: u64 = 32 << 20;

impl BlobWriter {
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.out.count
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.out.count == 0
    }

    /// Makes the blob visible. With `expected`, a mismatch is an error and nothing is stored.
    pub fn commit(self, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        self.commit_fresh(expected).map(|(d, size, _)| (d, size))
    }

    /// [`BlobWriter::commit`], also telling whether the blob is new to the store (`false`:
    /// it was there already and this copy was dropped).
    pub fn commit_fresh(mut self, expected: Option<&Digest>) -> Result<(Digest, u64, bool)> {
        if let Some(h) = self.syncing.take() {
            h.join()
                .map_err(|_| io::Error::other("writeback thread panicked"))??;
        }
        let (buf, digest, size) = self.out.finish();
        if let Some(exp) = expected
            && *exp != digest
        {
            return Err(Error::DigestMismatch {
                expected: exp.clone(),
                actual: digest,
            });
        }
        let tmp = buf.into_inner().map_err(|e| e.into_error())?;
        let dest = self.store.blob_path(&digest);
        if dest.is_file() {
            return Ok((digest, size, false));
        }
        tmp.as_file().sync_all()?;
        tmp.persist(&dest).map_err(|e| e.error)?;
        if let Some(dir) = dest.parent() {
            fs_err::File::open(dir)?.sync_all()?;
        }
        tracing::trace!(%digest, size, "blob committed");
        Ok((digest, size, true))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.unsynced += n as u64;
        if self.unsynced >= WRITEBACK_EVERY && self.syncing.as_ref().is_none_or(|h| h.is_finished())
        {
            if let Some(h) = self.syncing.take() {
                h.join()
                    .map_err(|_| io::Error::other("writeback thread panicked"))??;
            }
            self.unsynced = 0;
            let f = self.out.inner.get_ref().as_file().try_clone()?;
            self.syncing = Some(std::thread::spawn(move || f.sync_data()));
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_roundtrip_and_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let d = s.write_blob(b"hello").unwrap();
        assert_eq!(s.read_blob(&d).unwrap(), b"hello");
        let mut w = s.blob_writer().unwrap();
        w.write_all(b"other").unwrap();
        let err = w.commit(Some(&d)).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(!s.has_blob(&sha256(b"other")));
        // dropped writer leaves nothing
        let mut w = s.blob_writer().unwrap();
        w.write_all(b"dropped").unwrap();
        drop(w);
        assert!(!s.has_blob(&sha256(b"dropped")));
        let scratch = fs_err::read_dir(s.tmp_dir()).unwrap().count();
        assert_eq!(scratch, 1, "only the scratch's lock is left");
        drop(s);
        assert_eq!(fs_err::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn blobs_of_sizes_around_the_buffer_and_writeback_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        for size in [
            0,
            1,
            4095,
            (1 << 20) - 1,
            1 << 20,
            (1 << 20) + 1,
            (33 << 20) + 12_345,
        ] {
            let data: Vec<u8> = (0..size).map(|i: usize| (i * 7 + i / 4093) as u8).collect();
            let mut w = s.blob_writer().unwrap();
            for chunk in data.chunks(100_003) {
                w.write_all(chunk).unwrap();
            }
            let (d, n) = w.commit(None).unwrap();
            assert_eq!((d.clone(), n), (sha256(&data), size as u64));
            assert_eq!(s.read_blob(&d).unwrap(), data, "{size} bytes");
        }
    }

    #[test]
    fn newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        Store::open(dir.path()).unwrap();
        fs_err::write(dir.path().join("format"), br#"{"version":99}"#).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, Error::NewerFormat { found: 99, .. }));
        assert!(err.to_string().contains("upgrade kiln"), "{err}");
    }

    #[test]
    fn cache_and_kv_tables() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.cache_get("k").unwrap(), None);
        s.cache_put("k", b"v").unwrap();
        assert_eq!(s.cache_get("k").unwrap().as_deref(), Some(&b"v"[..]));
        s.kv_put("stat", "a", b"1").unwrap();
        s.kv_put("stat", "b", b"2").unwrap();
        s.kv_put("statx", "c", b"3").unwrap();
        let l = s.kv_list("stat").unwrap();
        assert_eq!(
            l,
            vec![("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())]
        );
        assert!(s.kv_remove("stat", "a").unwrap());
        assert_eq!(s.kv_get("stat", "a").unwrap(), None);
    }
}
