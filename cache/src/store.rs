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

    /// `len` bytes of the blob `d` from `off`, into `buf` (its contents are dropped):
    /// read around the page cache (`O_DIRECT`, in aligned blocks) where the filesystem allows,
    /// as blobs are written, so that reading back parts of a blob (reused gzip members) fills
    /// no page-cache pages; else an ordinary read. Returns the buffer and where in it the
    /// bytes start.
    pub(crate) fn read_blob_range(
        &self,
        d: &Digest,
        off: u64,
        len: usize,
        mut buf: Vec<u8>,
    ) -> io::Result<(Vec<u8>, usize)> {
        use rustix::fs::{Mode, OFlags};
        let path = self.blob_path(d);
        let align = DIRECT_ALIGN as u64;
        let direct = rustix::fs::open(
            &path,
            OFlags::RDONLY | OFlags::DIRECT | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()
        .filter(|_| direct_io());
        if let Some(fd) = direct {
            let start = off / align * align;
            let end = (off + len as u64).div_ceil(align) * align;
            let n = (end - start) as usize;
            buf.clear();
            buf.resize(n + DIRECT_ALIGN, 0);
            let skew = buf.as_ptr().align_offset(DIRECT_ALIGN);
            let want = (off - start) as usize + len;
            let mut got = 0;
            let mut refused = false;
            while got < want {
                match rustix::io::pread(&fd, &mut buf[skew + got..skew + n], start + got as u64) {
                    Ok(0) => break,
                    Ok(k) => got += k,
                    Err(rustix::io::Errno::INTR) => {}
                    Err(rustix::io::Errno::INVAL) if got == 0 => {
                        refused = true;
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if !refused {
                if got < want {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                return Ok((buf, skew + (off - start) as usize));
            }
        }
        let f = fs_err::File::open(&path)?;
        buf.clear();
        buf.resize(len, 0);
        std::os::unix::fs::FileExt::read_exact_at(f.file(), &mut buf, off)?;
        Ok((buf, 0))
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
            out: HashWriter::new(BlobFile::new(tmp)),
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

    /// Writes (replacing) entries of several generic small tables, `(table, key, value)`,
    /// in one transaction.
    pub fn kv_put_tables(&self, entries: &[(&str, String, Vec<u8>)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.index().write(|txn| {
            let mut t = txn.open_table(KV)?;
            for (table, key, value) in entries {
                t.insert(format!("{table}\0{key}").as_str(), value.as_slice())?;
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
    out: HashWriter<BlobFile>,
    /// bytes written since writeback was last started
    unsynced: u64,
    /// background fdatasync, so disk writeback overlaps with producing the data
    syncing: Option<std::thread::JoinHandle<io::Result<()>>>,
}

/// A blob's temp file, written around the page cache (`O_DIRECT`) in aligned chunks when the
/// filesystem allows: no page-cache pages are filled (on this VM filling fresh pages cost
/// more than the copy: a 107 MB layer blob took 0.2 s of system time buffered). The last
/// partial block goes through the ordinary descriptor. Without `O_DIRECT` (tmpfs, some overlays), or if a
/// direct write is refused, it is an ordinary buffered file.
pub(crate) struct BlobFile {
    tmp: tempfile::NamedTempFile,
    direct: Option<std::fs::File>,
    /// The chunk being filled: `buf[start..start + len]`, `start` aligned in memory.
    buf: Vec<u8>,
    start: usize,
    len: usize,
    /// File offset of the chunk.
    pos: u64,
}

/// Whether blobs are written and parts of them read around the page cache (`O_DIRECT`) where
/// the filesystem allows: yes unless `KILN_BLOB_DIRECT=0` (for comparing the two).
fn direct_io() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("KILN_BLOB_DIRECT").is_none_or(|v| v != "0"))
}

/// Alignment of direct writes (memory, offset and length).
const DIRECT_ALIGN: usize = 4096;
/// Bytes per direct write.
const DIRECT_CHUNK: usize = 4 << 20;

impl BlobFile {
    fn new(tmp: tempfile::NamedTempFile) -> Self {
        use rustix::fs::{Mode, OFlags};
        let direct = rustix::fs::open(
            tmp.path(),
            OFlags::WRONLY | OFlags::DIRECT | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()
        .filter(|_| direct_io())
        .map(std::fs::File::from);
        let (buf, start) = if direct.is_some() {
            let buf = vec![0u8; DIRECT_CHUNK + DIRECT_ALIGN];
            let start = buf.as_ptr().align_offset(DIRECT_ALIGN);
            (buf, start)
        } else {
            (Vec::with_capacity(1 << 20), 0)
        };
        BlobFile {
            tmp,
            direct,
            buf,
            start,
            len: 0,
            pos: 0,
        }
    }

    fn file(&self) -> &std::fs::File {
        self.tmp.as_file()
    }

    fn capacity(&self) -> usize {
        if self.direct.is_some() {
            DIRECT_CHUNK
        } else {
            self.buf.capacity().max(1)
        }
    }

    fn window(&self) -> &[u8] {
        if self.direct.is_some() {
            &self.buf[self.start..self.start + self.len]
        } else {
            &self.buf[..]
        }
    }

    /// Writes out the first `n` bytes of the chunk (`n` aligned when direct).
    fn write_out(&mut self, n: usize) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let at = self.pos;
        if let Some(d) = &self.direct {
            let chunk = &self.buf[self.start..self.start + n];
            match d.write_all_at(chunk, at) {
                Ok(()) => {}
                // Refused (an odd device or filesystem): buffered from here on.
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                    self.tmp.as_file().write_all_at(chunk, at)?;
                    let mut rest = Vec::with_capacity(1 << 20);
                    rest.extend_from_slice(&self.buf[self.start + n..self.start + self.len]);
                    self.direct = None;
                    self.buf = rest;
                    self.start = 0;
                    self.pos += n as u64;
                    self.len = self.buf.len();
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
            self.buf
                .copy_within(self.start + n..self.start + self.len, self.start);
        } else {
            self.tmp.as_file().write_all_at(&self.buf[..n], at)?;
            self.buf.drain(..n);
        }
        self.pos += n as u64;
        self.len -= n;
        Ok(())
    }

    /// Everything written out; the temp file back.
    fn finish(mut self) -> io::Result<tempfile::NamedTempFile> {
        if self.direct.is_some() {
            let aligned = self.len / DIRECT_ALIGN * DIRECT_ALIGN;
            if aligned > 0 {
                self.write_out(aligned)?;
            }
        }
        if self.len > 0 {
            use std::os::unix::fs::FileExt;
            let tail = self.window().to_vec();
            self.tmp.as_file().write_all_at(&tail, self.pos)?;
        }
        Ok(self.tmp)
    }
}

impl Write for BlobFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let cap = self.capacity();
        let take = (cap - self.len).min(data.len());
        if self.direct.is_some() {
            self.buf[self.start + self.len..self.start + self.len + take]
                .copy_from_slice(&data[..take]);
        } else {
            self.buf.extend_from_slice(&data[..take]);
        }
        self.len += take;
        if self.len == cap {
            self.write_out(cap)?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Start a background `fdatasync` every this many bytes, direct or not. Direct writes are
/// not yet durable either: on this VM the commit's fsync of a 106 MB blob written with
/// `O_DIRECT` took 120-155 ms (about 1.2 ms per MB since the last sync, the disk's cache
/// flushed), all of it a wait at the end of the layer; synced every 16 MiB while it is
/// written, the last one took 7-10 ms and a one-file edit of the big COPY was 70-90 ms
/// faster (medians of 6, interleaved; 8-64 MiB measured alike).
const WRITEBACK_EVERY: u64 = 16 << 20;

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
        let tmp = buf.finish()?;
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
            let f = self.out.inner.file().try_clone()?;
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
    fn blobs_of_sizes_around_the_direct_chunks_and_writeback_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        for size in [
            0,
            1,
            DIRECT_ALIGN - 1,
            DIRECT_ALIGN,
            DIRECT_ALIGN + 1,
            DIRECT_CHUNK - 1,
            DIRECT_CHUNK,
            DIRECT_CHUNK + 1,
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
    fn ranges_of_a_blob_read_back_at_any_offset_and_length() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..3 * DIRECT_ALIGN + 123)
            .map(|i: usize| (i * 31 + i / 4099) as u8)
            .collect();
        let d = s.write_blob(&data).unwrap();
        let len = data.len();
        for (off, n) in [
            (0, 1),
            (0, len),
            (DIRECT_ALIGN - 1, 2),
            (5_000, 7_000),
            (len - 5, 5),
            (DIRECT_ALIGN, DIRECT_ALIGN),
        ] {
            let (buf, at) = s
                .read_blob_range(&d, off as u64, n, Vec::new())
                .unwrap_or_else(|e| panic!("{off}+{n}: {e}"));
            assert_eq!(&buf[at..at + n], &data[off..off + n], "{off}+{n}");
        }
        let past = s.read_blob_range(&d, (len - 5) as u64, 6, Vec::new());
        assert_eq!(past.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
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
