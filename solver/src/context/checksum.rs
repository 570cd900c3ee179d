//! Content checksums of what a COPY/ADD selects, with a persistent stat cache.
//!
//! The checksum covers, for every selected entry: its path as the build names it, its type,
//! permission bits, uid/gid, symlink target, device number and the sha256 of a file's content.
//! It never covers mtime, inode or the absolute path, so the same tree gives the same digest on
//! any machine.
//!
//! A file's content digest is reused without reading the file when its (size, mtime, ctime,
//! inode, mode) are those recorded in the stat cache. The cache is one file per context root
//! (named by the sha256 of the canonical root path) in the directory given to
//! [`ContextHasher::open`], loaded on first use and written atomically by
//! [`ContextHasher::save`]. A file changed within [`RACY_WINDOW_NS`] of being hashed is not
//! recorded (the "racy clean" problem: a second write in the same timestamp tick would be
//! invisible to stat).

use super::Error;
use super::ignore::Matcher;
use super::walk::{self, Entry, EntryKind};
use kiln_oci::Digest;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use kiln_graph::LocalSource;

/// Files whose ctime is this close to the moment they were hashed are not cached.
pub const RACY_WINDOW_NS: i64 = 100_000_000;

/// Version 2: records sorted in walk order (see [`walk_order`]).
const MAGIC: &[u8; 8] = b"KILNSC02";

/// What the stat cache remembers of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
    mode: u32,
    digest: [u8; 32],
}

#[derive(Debug, Default)]
struct Table {
    file: PathBuf,
    root: String,
    records: Records,
    dirty: bool,
}

/// Compares two relative paths in the order a walk yields them: component by component, so
/// a directory is directly followed by its subtree (`a`, `a/b`, `a.txt`). As bytes with `/`
/// below every other byte.
fn walk_order(a: &str, b: &str) -> std::cmp::Ordering {
    let key = |c: u8| if c == b'/' { 0 } else { c };
    a.bytes().map(key).cmp(b.bytes().map(key))
}

/// The records of one context root, kept sorted in walk order. A walk looks paths up in
/// that same order, so a lookup is usually one comparison at a cursor; other lookups binary
/// search. Nothing is hashed and no index is built when a build changes nothing.
#[derive(Debug, Default, PartialEq, Eq)]
struct Records {
    sorted: Vec<(String, Record)>,
    /// Where the next lookup is expected.
    cursor: usize,
    /// Added since the last [`merge`](Self::merge), in any order.
    pending: Vec<(String, Record)>,
}

impl Records {
    fn len(&self) -> usize {
        self.sorted.len()
    }

    fn get(&mut self, path: &str) -> Option<&Record> {
        let at = match self.sorted.get(self.cursor) {
            Some((p, _)) if p == path => self.cursor,
            _ => self
                .sorted
                .binary_search_by(|(p, _)| walk_order(p, path))
                .ok()?,
        };
        self.cursor = at + 1;
        Some(&self.sorted[at].1)
    }

    fn insert(&mut self, path: String, record: Record) {
        self.pending.push((path, record));
    }

    /// Folds the pending records in (a pending record replaces a stored one of its path).
    fn merge(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut pending = std::mem::take(&mut self.pending);
        pending.sort_by(|a, b| walk_order(&a.0, &b.0));
        // Later inserts of one path win: keep the last of each run.
        pending.reverse();
        pending.dedup_by(|later, earlier| later.0 == earlier.0);
        pending.reverse();
        let old = std::mem::take(&mut self.sorted);
        let mut merged = Vec::with_capacity(old.len() + pending.len());
        let mut new = pending.into_iter().peekable();
        for (path, record) in old {
            while let Some((p, _)) = new.peek() {
                if walk_order(p, &path) == std::cmp::Ordering::Greater {
                    break;
                }
                merged.extend(new.next());
            }
            if merged.last().is_none_or(|(p, _)| *p != path) {
                merged.push((path, record));
            }
        }
        merged.extend(new);
        self.sorted = merged;
        self.cursor = 0;
    }

    fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.merge();
        self.sorted.retain(|(p, _)| keep(p));
        self.cursor = 0;
    }
}

/// What one checksum did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HashStats {
    /// Entries selected (files, directories, symlinks, ...).
    pub entries: usize,
    /// Files whose digest came from the stat cache.
    pub cache_hits: usize,
    /// Files whose content was read.
    pub files_read: usize,
    /// Bytes of the selected files (what BuildKit would transfer).
    pub bytes: u64,
}

/// Hashes build contexts, remembering file digests across builds.
#[derive(Debug)]
pub struct ContextHasher {
    cache_dir: PathBuf,
    tables: Mutex<HashMap<PathBuf, Table>>,
}

impl ContextHasher {
    /// A hasher whose stat cache lives in `cache_dir` (created if missing), e.g.
    /// `<store>/context-cache/`.
    pub fn open(cache_dir: &Path) -> Result<Self, Error> {
        fs_err::create_dir_all(cache_dir).map_err(|e| Error::Io {
            op: "create directory",
            path: cache_dir.to_path_buf(),
            source: e,
        })?;
        Ok(ContextHasher {
            cache_dir: cache_dir.to_path_buf(),
            tables: Mutex::new(HashMap::new()),
        })
    }

    /// The checksum of what `src` selects from the context at `root`: `src.include` are the
    /// source paths (empty = everything), `src.exclude` the `.dockerignore` patterns.
    #[tracing::instrument(skip_all, fields(root = %root.display()))]
    pub fn checksum(&self, root: &Path, src: &LocalSource) -> Result<Digest, Error> {
        let ignore = Matcher::new(&src.exclude)?;
        self.checksum_with(root, &src.include, &ignore)
    }

    /// As [`checksum`](Self::checksum) with a compiled ignore matcher.
    pub fn checksum_with(
        &self,
        root: &Path,
        include: &[String],
        ignore: &Matcher,
    ) -> Result<Digest, Error> {
        self.checksum_with_stats(root, include, ignore)
            .map(|(d, _)| d)
    }

    /// As [`checksum_with`](Self::checksum_with), also telling how many files were read.
    pub fn checksum_with_stats(
        &self,
        root: &Path,
        include: &[String],
        ignore: &Matcher,
    ) -> Result<(Digest, HashStats), Error> {
        self.checksum_listed(root, include, ignore)
            .map(|(d, stats, _)| (d, stats))
    }

    /// As [`checksum_with_stats`](Self::checksum_with_stats), also returning what the walk
    /// selected, for the copies of the same build (they need not walk the context again).
    pub fn checksum_listed(
        &self,
        root: &Path,
        include: &[String],
        ignore: &Matcher,
    ) -> Result<(Digest, HashStats, walk::Selected), Error> {
        let canonical = fs_err::canonicalize(root).map_err(|e| Error::Io {
            op: "resolve context directory",
            path: root.to_path_buf(),
            source: e,
        })?;
        let walker = walk::Walker::open(&canonical, ignore)?.recording();
        let selections = walker.select(include)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        let table = tables
            .entry(canonical.clone())
            .or_insert_with(|| load_table(&self.cache_dir, &canonical));
        // Digests from the stat cache; files it cannot vouch for are read (in parallel).
        let mut hits = 0usize;
        let mut contents: Vec<Option<[u8; 32]>> = Vec::new();
        let mut to_read: Vec<(usize, &Entry)> = Vec::new();
        for entry in selections.iter().flat_map(|s| &s.entries) {
            let mut content = None;
            if entry.meta.kind() == EntryKind::File {
                let cached = table.records.get(&entry.real).copied().filter(|r| {
                    r.size == entry.meta.size
                        && r.mtime_ns == entry.meta.mtime_ns
                        && r.ctime_ns == entry.meta.ctime_ns
                        && r.ino == entry.meta.ino
                        && r.mode == entry.meta.mode
                });
                match cached {
                    Some(r) => {
                        hits += 1;
                        content = Some(r.digest);
                    }
                    None => to_read.push((contents.len(), entry)),
                }
            }
            contents.push(content);
        }
        let misses = to_read.len();
        let read = hash_files(&walker, &to_read)?;
        for ((index, entry), digest) in to_read.iter().zip(read) {
            contents[*index] = Some(digest);
            if entry.meta.ctime_ns.max(entry.meta.mtime_ns) + RACY_WINDOW_NS < now {
                table.records.insert(
                    entry.real.clone(),
                    Record {
                        size: entry.meta.size,
                        mtime_ns: entry.meta.mtime_ns,
                        ctime_ns: entry.meta.ctime_ns,
                        ino: entry.meta.ino,
                        mode: entry.meta.mode,
                        digest,
                    },
                );
                table.dirty = true;
            }
        }
        table.records.merge();
        // A whole-context walk knows every file: forget records of files that are gone.
        let files = selections
            .iter()
            .flat_map(|s| &s.entries)
            .filter(|e| e.meta.kind() == EntryKind::File)
            .count();
        if selections.iter().any(|s| s.source == ".") && table.records.len() > files {
            let live: std::collections::HashSet<&str> = selections
                .iter()
                .flat_map(|s| &s.entries)
                .map(|e| e.real.as_str())
                .collect();
            table.records.retain(|path| live.contains(path));
            table.dirty = true;
        }
        let mut hasher = Sha256::new();
        let mut contents = contents.into_iter();
        for selection in &selections {
            put(&mut hasher, b"source");
            put(&mut hasher, selection.source.as_bytes());
            for entry in &selection.entries {
                let content = contents.next().flatten();
                hash_entry(&mut hasher, entry, content.as_ref());
            }
        }
        tracing::debug!(hits, misses, "context checksum");
        let stats = HashStats {
            entries: selections.iter().map(|s| s.entries.len()).sum(),
            cache_hits: hits,
            files_read: misses,
            bytes: selections
                .iter()
                .flat_map(|s| &s.entries)
                .filter(|e| e.meta.kind() == EntryKind::File)
                .map(|e| e.meta.size)
                .sum(),
        };
        Ok((Digest::from_hasher(hasher), stats, walker.take_selected()))
    }

    /// The files of a selection whose content differs from what the stat cache on disk (the
    /// last saved build's) recorded: `(path, true)` for a changed file, `(path, false)` for one
    /// it had no record of. Reads every selected file: for explaining a cache miss, not for
    /// the hot path.
    pub fn changed_files(
        &self,
        root: &Path,
        src: &LocalSource,
    ) -> Result<Vec<(String, bool)>, Error> {
        let ignore = Matcher::new(&src.exclude)?;
        let canonical = fs_err::canonicalize(root).map_err(|e| Error::Io {
            op: "resolve context directory",
            path: root.to_path_buf(),
            source: e,
        })?;
        let walker = walk::Walker::open(&canonical, &ignore)?;
        let selections = walker.select(&src.include)?;
        let mut stored = load_table(&self.cache_dir, &canonical);
        let files: Vec<(usize, &Entry)> = selections
            .iter()
            .flat_map(|s| &s.entries)
            .filter(|e| e.meta.kind() == EntryKind::File)
            .enumerate()
            .collect();
        let digests = hash_files(&walker, &files)?;
        let mut out = Vec::new();
        for ((_, entry), digest) in files.iter().zip(digests) {
            match stored.records.get(&entry.real).copied() {
                Some(r) if r.digest == digest => {}
                Some(_) => out.push((entry.real.clone(), true)),
                None => out.push((entry.real.clone(), false)),
            }
        }
        Ok(out)
    }

    /// Writes every stat cache that changed (temp file + rename, so readers never see a torn
    /// file).
    pub fn save(&self) -> Result<(), Error> {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        for table in tables.values_mut() {
            if !table.dirty {
                continue;
            }
            table.records.merge();
            let bytes = encode_table(table);
            let tmp = table.file.with_extension(format!(
                "tmp.{}.{}",
                std::process::id(),
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(0)
            ));
            let io = |op: &'static str, path: &Path| {
                let path = path.to_path_buf();
                move |e| Error::Io {
                    op,
                    path,
                    source: e,
                }
            };
            fs_err::write(&tmp, &bytes).map_err(io("write stat cache", &tmp))?;
            fs_err::rename(&tmp, &table.file).map_err(io("replace stat cache", &table.file))?;
            table.dirty = false;
        }
        Ok(())
    }
}

/// Length-prefixed field, so no two different entry lists hash the same byte stream.
fn put(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

fn hash_entry(h: &mut Sha256, entry: &Entry, content: Option<&[u8; 32]>) {
    let kind: &[u8] = match entry.meta.kind() {
        EntryKind::File => b"file",
        EntryKind::Dir => b"dir",
        EntryKind::Symlink => b"symlink",
        EntryKind::Special => b"special",
    };
    put(h, entry.name.as_bytes());
    put(h, kind);
    h.update((entry.meta.mode & 0o7777).to_le_bytes());
    h.update(entry.meta.uid.to_le_bytes());
    h.update(entry.meta.gid.to_le_bytes());
    match entry.meta.kind() {
        EntryKind::File => {
            h.update(entry.meta.size.to_le_bytes());
            h.update(content.unwrap_or(&[0; 32]));
        }
        EntryKind::Symlink => put(h, entry.target.as_deref().unwrap_or_default()),
        EntryKind::Special => {
            h.update((entry.meta.mode & 0o170000).to_le_bytes());
            h.update(entry.meta.rdev.to_le_bytes());
        }
        EntryKind::Dir => {}
    }
}

/// Content digests of `files`, in order, read by a few threads.
fn hash_files(
    walker: &walk::Walker<'_>,
    files: &[(usize, &Entry)],
) -> Result<Vec<[u8; 32]>, Error> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(4);
    let threads = if files.len() < 16 { 1 } else { threads };
    walk::parallel_map(files, threads, |(_, e)| hash_file(walker, e))
        .into_iter()
        .collect()
}

/// sha256 of a selected file's content.
fn hash_file(walker: &walk::Walker<'_>, entry: &Entry) -> Result<[u8; 32], Error> {
    let mut file = walker.open_file(&entry.real)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::Io {
            op: "read",
            path: walker.host_path(&entry.real),
            source: e,
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

fn cache_file(cache_dir: &Path, canonical: &Path) -> PathBuf {
    let key = kiln_oci::sha256(canonical.as_os_str().as_encoded_bytes());
    cache_dir.join(format!("{}.statcache", key.hex()))
}

/// Loads the table of a root; a missing or unreadable cache is an empty one (it only costs
/// re-reading files).
fn load_table(cache_dir: &Path, canonical: &Path) -> Table {
    let file = cache_file(cache_dir, canonical);
    let root = canonical.to_string_lossy().into_owned();
    let mut table = Table {
        file: file.clone(),
        root: root.clone(),
        ..Table::default()
    };
    match fs_err::read(&file) {
        Ok(bytes) => match decode_table(&bytes) {
            Some((stored_root, records)) if stored_root == root => table.records = records,
            // Another version's format: rebuilt by this build, nothing to warn about.
            _ if bytes.starts_with(&MAGIC[..6]) && !bytes.starts_with(MAGIC) => {}
            _ => tracing::warn!(file = %file.display(), "ignoring unreadable stat cache"),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(error = %e, "ignoring unreadable stat cache"),
    }
    table
}

fn encode_table(table: &Table) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + table.records.len() * 100);
    out.extend_from_slice(MAGIC);
    put_string(&mut out, &table.root);
    out.extend_from_slice(&(table.records.len() as u64).to_le_bytes());
    for (path, r) in &table.records.sorted {
        put_string(&mut out, path);
        out.extend_from_slice(&r.size.to_le_bytes());
        out.extend_from_slice(&r.mtime_ns.to_le_bytes());
        out.extend_from_slice(&r.ctime_ns.to_le_bytes());
        out.extend_from_slice(&r.ino.to_le_bytes());
        out.extend_from_slice(&r.mode.to_le_bytes());
        out.extend_from_slice(&r.digest);
    }
    out
}

/// Reads what the solver's binary records are made of (the stat cache's tables, the copy
/// manifests): little-endian numbers and strings with a `u32` length.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
    pub(crate) fn string(&mut self) -> Option<String> {
        let len = u32::from_le_bytes(self.array()?) as usize;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}

/// Appends `s` as [`Reader::string`] reads it (`u32` length, then the bytes).
pub(crate) fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A table as [`encode_table`] wrote it. Records are trusted to be in walk order (a file out
/// of order could only cost lookups that miss, never a wrong digest: a hit needs the path).
fn decode_table(bytes: &[u8]) -> Option<(String, Records)> {
    let mut r = Reader(bytes);
    if r.take(MAGIC.len())? != MAGIC {
        return None;
    }
    let root = r.string()?;
    let count = u64::from_le_bytes(r.array()?);
    let mut records = Vec::with_capacity(usize::try_from(count).ok()?.min(1 << 20));
    for _ in 0..count {
        let path = r.string()?;
        let record = Record {
            size: u64::from_le_bytes(r.array()?),
            mtime_ns: i64::from_le_bytes(r.array()?),
            ctime_ns: i64::from_le_bytes(r.array()?),
            ino: u64::from_le_bytes(r.array()?),
            mode: u32::from_le_bytes(r.array()?),
            digest: r.array()?,
        };
        records.push((path, record));
    }
    r.0.is_empty().then_some((
        root,
        Records {
            sorted: records,
            ..Records::default()
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(size: u64) -> Record {
        Record {
            size,
            mtime_ns: -5,
            ctime_ns: 7,
            ino: 9,
            mode: 0o100644,
            digest: [7; 32],
        }
    }

    #[test]
    fn table_round_trips_and_rejects_truncation() {
        let mut table = Table {
            root: "/ctx".into(),
            ..Table::default()
        };
        table.records.insert("a/b".into(), record(3));
        table.records.merge();
        let bytes = encode_table(&table);
        let (root, records) = decode_table(&bytes).expect("decodes");
        assert_eq!(root, "/ctx");
        assert_eq!(records, table.records);
        assert!(decode_table(&bytes[..bytes.len() - 1]).is_none());
        assert!(decode_table(b"garbage").is_none());
    }

    #[test]
    fn records_stay_in_walk_order_and_later_inserts_win() {
        let mut r = Records::default();
        for (p, n) in [("b", 1), ("a.txt", 2), ("a/c", 3), ("a", 4), ("a/c", 5)] {
            r.insert(p.into(), record(n));
        }
        r.merge();
        let paths: Vec<&str> = r.sorted.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["a", "a/c", "a.txt", "b"]);
        assert_eq!(r.get("a/c").map(|x| x.size), Some(5));
        // In order (the cursor) and out of order (binary search) alike.
        assert_eq!(r.get("a.txt").map(|x| x.size), Some(2));
        assert_eq!(r.get("a").map(|x| x.size), Some(4));
        assert_eq!(r.get("b").map(|x| x.size), Some(1));
        assert!(r.get("a/d").is_none());
        r.insert("a/b".into(), record(6));
        r.insert("b".into(), record(7));
        r.merge();
        let paths: Vec<&str> = r.sorted.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["a", "a/b", "a/c", "a.txt", "b"]);
        assert_eq!(r.get("b").map(|x| x.size), Some(7));
        r.retain(|p| p.starts_with('a'));
        assert_eq!(r.len(), 4);
    }
}
