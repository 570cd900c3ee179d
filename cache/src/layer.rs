//! Layers: a deterministic tar writer over a directory (or an overlayfs upperdir),
//! compressed and hashed in one pass into the blob store.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use kiln_oci::media_type::{OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD};
use kiln_oci::{Compression, Digest};
use serde::{Deserialize, Serialize};

use crate::codec::{Encoder, FixedBlocks, MemberCache, Offload, Prior, Runs};
use crate::digest::HashWriter;
use crate::error::{Error, Result};
use crate::index::{BLOB_LAYERS, LAYERS};
use crate::store::Store;
use crate::tarindex::{self, IndexEntry, TarIndex};

/// How kiln's layer writer encodes a blob: a [`Compression`] with its level and, for gzip,
/// whether blocks are compressed in parallel (the algorithm alone is [`Encoding::compression`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encoding {
    /// Plain tar.
    None,
    /// gzip at `level` (0-9).
    Gzip {
        /// Compression level 0-9.
        level: u32,
    },
    /// gzip at `level` (0-9), compressed in parallel in independent 1 MiB blocks (as pigz
    /// `--independent`); the bytes do not depend on the number of threads.
    GzipParallel {
        /// Compression level 0-9.
        level: u32,
    },
    /// gzip at libdeflate `level` (1-12), in independent blocks of 1-4 MiB cut by content and
    /// compressed in parallel, each its own gzip member (the bytes do not depend on the number
    /// of threads).
    GzipMembers {
        /// libdeflate compression level 1-12.
        level: u32,
    },
    /// zstd at `level` (1-22), in independent frames of 1-4 MiB cut by content and
    /// compressed in parallel (the bytes do not depend on the number of threads).
    Zstd {
        /// Compression level.
        level: i32,
    },
}

impl Encoding {
    /// Parallel gzip members at libdeflate level 5: smaller than Go's default gzip (BuildKit's
    /// layers) and fast on every core.
    pub const GZIP: Encoding = Encoding::GzipMembers { level: 5 };
    /// zstd at the default level 3.
    pub const ZSTD: Encoding = Encoding::Zstd { level: 3 };

    /// The compression algorithm.
    pub fn compression(&self) -> Compression {
        match self {
            Encoding::None => Compression::None,
            Encoding::Gzip { .. }
            | Encoding::GzipParallel { .. }
            | Encoding::GzipMembers { .. } => Compression::Gzip,
            Encoding::Zstd { .. } => Compression::Zstd,
        }
    }

    /// The OCI layer media type of a blob encoded so.
    pub fn media_type(&self) -> &'static str {
        match self.compression() {
            Compression::Gzip => OCI_LAYER_GZIP,
            Compression::Zstd => OCI_LAYER_ZSTD,
            _ => OCI_LAYER,
        }
    }
}

/// The `kv` table of [`Store::layer_as`]: `DIFFID ENCODING` → layer info (JSON).
const LAYER_VARIANTS: &str = "layer-variant";

/// A stable name of an encoding (a key part of layer variants).
fn encoding_tag(enc: Encoding) -> String {
    match enc {
        Encoding::None => "none".to_string(),
        Encoding::Gzip { level } => format!("gzip-{level}"),
        Encoding::GzipParallel { level } => format!("gzip-parallel-{level}"),
        Encoding::GzipMembers { level } => format!("gzip-members-{level}"),
        // Frames cut by content since the format's second version.
        Encoding::Zstd { level } => format!("zstd-frames-{level}"),
    }
}

/// The `layer-variant` key of `layer` encoded with `enc`.
fn variant_key(layer: &LayerInfo, enc: Encoding) -> String {
    format!("{} {}", layer.diff_id, encoding_tag(enc))
}

/// A new blob's writer that also hands every byte to a second writer (see
/// [`Store::layer_as_teed`]).
struct Tee<'a> {
    blob: crate::store::BlobWriter,
    tee: Option<&'a mut dyn Write>,
}

impl Tee<'_> {
    /// The blob's last byte is written: flushes the second writer (a streamed upload ends
    /// its body there, while the blob is made durable) and hands back the blob writer.
    fn end(self) -> io::Result<crate::store::BlobWriter> {
        if let Some(t) = self.tee {
            t.flush()?;
        }
        Ok(self.blob)
    }
}

impl Write for Tee<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(t) = self.tee.as_mut() {
            t.write_all(buf)?;
        }
        self.blob.write_all(buf)?;
        Ok(buf.len())
    }

    /// The blob writer only: the second writer is flushed once, at the end ([`Tee::end`]).
    fn flush(&mut self) -> io::Result<()> {
        self.blob.flush()
    }
}

/// The compression a layer media type names (`None` for one that is not a layer's).
pub fn media_compression(media_type: &str) -> Option<Compression> {
    if media_type.ends_with("+zstd") || media_type.ends_with(".zstd") {
        Some(Compression::Zstd)
    } else if media_type.ends_with("gzip") {
        Some(Compression::Gzip)
    } else if media_type.ends_with("tar") {
        Some(Compression::None)
    } else {
        None
    }
}

/// What the layer directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayerSource {
    /// A plain directory: everything in it is the layer.
    #[default]
    Directory,
    /// An overlayfs upperdir: char 0/0 devices become `.wh.NAME` whiteouts and opaque
    /// directories get a `.wh..wh..opq` marker.
    OverlayUpper,
}

/// How to write a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerOptions {
    /// Encoding of the blob.
    pub compression: Encoding,
    /// Clamp mtimes to at most this (SOURCE_DATE_EPOCH).
    pub mtime_clamp: Option<i64>,
    /// Plain directory or overlay upperdir.
    pub source: LayerSource,
}

impl Default for LayerOptions {
    fn default() -> Self {
        LayerOptions {
            compression: Encoding::GZIP,
            mtime_clamp: None,
            source: LayerSource::Directory,
        }
    }
}

/// A layer in the store: its uncompressed digest (diffID) and its blob.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LayerInfo {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// sha256 of the blob as stored (compressed).
    pub digest: Digest,
    /// Blob size in bytes.
    pub size: u64,
    /// OCI or docker media type of the blob.
    pub media_type: String,
}

/// Options of the tar writer alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct TarOptions {
    /// Clamp mtimes to at most this.
    pub mtime_clamp: Option<i64>,
    /// Plain directory or overlay upperdir.
    pub source: LayerSource,
}

/// Writes a deterministic tar of `dir` to `w`: entries sorted by name bytes, numeric ids,
/// empty user/group names, permission bits only, PAX records (sorted) for long names and
/// xattrs, hardlinks for files sharing an inode. Sockets are skipped.
pub fn write_tar(dir: &Path, opts: &TarOptions, w: &mut dyn Write) -> Result<()> {
    write_tar_counted(&[dir], opts, w).map(|_| ())
}

/// [`write_tar`] of the tree `dirs` (bottom first) make as overlay lower directories with
/// neither whiteouts nor opaque directories (plain directories only), returning how many
/// whiteouts and opaque markers it wrote.
/// Writes a layer's tar, returning how many whiteouts and opaque markers it has and its
/// index when one was made.
type WriteTar<'a> = dyn FnMut(&mut dyn Write) -> Result<(u64, Option<TarIndex>)> + 'a;

fn tar_options(opts: &LayerOptions) -> TarOptions {
    TarOptions {
        mtime_clamp: opts.mtime_clamp,
        source: opts.source,
    }
}

fn write_tar_counted(dirs: &[&Path], opts: &TarOptions, w: &mut dyn Write) -> Result<u64> {
    write_tar_indexed(dirs, opts, w, false).map(|(n, _)| n)
}

/// [`write_tar_counted`], also making the tar's [`TarIndex`] when `index` asks for one and
/// the tree can have one (no whiteouts, opaque directories or hardlinks).
fn write_tar_indexed(
    dirs: &[&Path],
    opts: &TarOptions,
    w: &mut dyn Write,
    index: bool,
) -> Result<(u64, Option<TarIndex>)> {
    let mut tw = TarWriter::new(opts, w, index);
    let mut fds = Vec::new();
    for (i, dir) in dirs.iter().enumerate().rev() {
        let fd = rustix::fs::open(
            *dir,
            open_flags(rustix::fs::OFlags::DIRECTORY),
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| Error::sys("open", *dir, e))?;
        fds.push((fd, i.min(1) as u8));
    }
    let top = dirs.last().map_or_else(|| Path::new("/"), |d| *d);
    tw.walk_fd(fds, top, b"")?;
    tw.trailer()?;
    let index = tw.take_index();
    Ok((tw.whiteouts, index))
}

/// The tar of the tree the plain directories `below` (bottom first, the top layer of a
/// snapshot whose index is `index`) make with the plain directory `upper` over them (no
/// whiteouts, no opaque directories), written from `index` and a walk of `upper` alone:
/// the bytes [`write_tar_counted`] writes for `below` + `upper`. With `keep`, also the
/// index of the result (for the stack `upper` becomes the delta of). Into `runs`, before
/// writing them, the stretches that repeat the tar `index` describes (an unchanged entry's
/// bytes are those it had there when the clamp is the same).
fn write_tar_over(
    index: &TarIndex,
    below: &[&Path],
    upper: &Path,
    opts: &TarOptions,
    w: &mut dyn Write,
    keep: bool,
    runs: Option<&Runs>,
) -> Result<Option<TarIndex>> {
    let runs = runs.filter(|_| index.clamp == opts.mtime_clamp && index.tar_len >= 1024);
    let mut below: Vec<OpenDirs> = below
        .iter()
        .map(|d| OpenDirs::open(d))
        .collect::<Result<_>>()?;
    let mut ups = Vec::new();
    let top = rustix::fs::open(
        upper,
        open_flags(rustix::fs::OFlags::DIRECTORY),
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| Error::sys("open", upper, e))?;
    list_tree(std::rc::Rc::new(top), upper, b"", &mut ups)?;
    let mut tw = TarWriter::new(opts, w, keep);
    let mut old = index.entries.iter().enumerate().peekable();
    let mut new = ups.into_iter().peekable();
    // The directory of the index a non-directory of `upper` replaced: nothing below it is
    // in the merged tree.
    let mut hidden: Option<&[u8]> = None;
    loop {
        let order = match (old.peek(), new.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((_, o)), Some(n)) => tarindex::walk_order(o.path(), &n.arch),
        };
        if order == std::cmp::Ordering::Greater {
            if let Some(n) = new.next() {
                tw.upper_entry(&n)?;
            }
            continue;
        }
        let Some((i, o)) = old.next() else { break };
        if hidden.is_some_and(|h| tarindex::is_below(o.path(), h)) {
            continue;
        }
        hidden = None;
        if order == std::cmp::Ordering::Less {
            if let Some(runs) = runs {
                runs.declare(tw.pos, o.off, index.entry_len(i));
            }
            tw.indexed_entry(o, &mut below)?;
            continue;
        }
        // The same path: the upper one is in the tree (over a directory, only its own
        // header: what both hold is merged as the walk goes on).
        if let Some(n) = new.next() {
            if o.is_dir() && n.md.kind() != rustix::fs::FileType::Directory {
                hidden = Some(o.path());
            }
            tw.upper_entry(&n)?;
        }
    }
    if let Some(runs) = runs {
        runs.declare(tw.pos, index.tar_len - 1024, 1024);
    }
    tw.trailer()?;
    Ok(tw.take_index())
}

/// The directories of one tree that [`write_tar_over`] reads files from, opened one name
/// at a time (`O_NOFOLLOW`, so no symlink is followed on the way) and kept open while the
/// walk order stays in them.
struct OpenDirs {
    root: std::os::fd::OwnedFd,
    at: PathBuf,
    /// The names from the root down to the directory open last, each with its descriptor.
    open: Vec<(Vec<u8>, std::os::fd::OwnedFd)>,
}

impl OpenDirs {
    fn open(dir: &Path) -> Result<OpenDirs> {
        let root = rustix::fs::open(
            dir,
            open_flags(rustix::fs::OFlags::DIRECTORY),
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| Error::sys("open", dir, e))?;
        Ok(OpenDirs {
            root,
            at: dir.to_path_buf(),
            open: Vec::new(),
        })
    }

    /// Opens the file at the relative path `path` for reading.
    fn open_file(&mut self, path: &[u8]) -> Result<std::fs::File> {
        let bad = || {
            Error::invalid(
                "tar index",
                format!("bad path {:?}", String::from_utf8_lossy(path)),
            )
        };
        let (parent, leaf) = match path.iter().rposition(|b| *b == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&path[..0], path),
        };
        let names: Vec<&[u8]> = if parent.is_empty() {
            Vec::new()
        } else {
            parent.split(|b| *b == b'/').collect()
        };
        if names
            .iter()
            .chain([&leaf])
            .any(|n| matches!(*n, b"" | b"." | b".."))
        {
            return Err(bad());
        }
        let same = self
            .open
            .iter()
            .zip(&names)
            .take_while(|((a, _), b)| a.as_slice() == **b)
            .count();
        self.open.truncate(same);
        for name in &names[same..] {
            let dir = self.open.last().map_or(&self.root, |(_, fd)| fd);
            let fd = rustix::fs::openat(
                dir,
                std::ffi::OsStr::from_bytes(name),
                open_flags(rustix::fs::OFlags::DIRECTORY),
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| {
                Error::sys("open", self.at.join(std::ffi::OsStr::from_bytes(parent)), e)
            })?;
            self.open.push((name.to_vec(), fd));
        }
        let dir = self.open.last().map_or(&self.root, |(_, fd)| fd);
        let fd = rustix::fs::openat(
            dir,
            std::ffi::OsStr::from_bytes(leaf),
            open_flags(rustix::fs::OFlags::empty()),
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| Error::sys("open", self.at.join(std::ffi::OsStr::from_bytes(path)), e))?;
        Ok(std::fs::File::from(fd))
    }
}

/// An entry of a plain directory tree listed for [`write_tar_over`].
struct Listed {
    /// Its path in the tree.
    arch: Vec<u8>,
    /// Its directory (open) and name in it.
    parent: std::rc::Rc<std::os::fd::OwnedFd>,
    name: std::ffi::CString,
    p: PathBuf,
    md: Stat,
}

/// Appends the entries of the tree at `dir` (open as `fd`, at `prefix` in the archive) to
/// `out` in walk order: each directory's entries sorted by name, a directory right before
/// what it holds.
fn list_tree(
    fd: std::rc::Rc<std::os::fd::OwnedFd>,
    dir: &Path,
    prefix: &[u8],
    out: &mut Vec<Listed>,
) -> Result<()> {
    let mut names = Vec::new();
    let mut list = rustix::fs::Dir::read_from(&*fd).map_err(|e| Error::sys("read", dir, e))?;
    while let Some(ent) = list.read() {
        let ent = ent.map_err(|e| Error::sys("read", dir, e))?;
        let name = ent.file_name().to_owned();
        if !matches!(name.to_bytes(), b"." | b"..") {
            names.push(name);
        }
    }
    names.sort();
    for name in names {
        let p = dir.join(std::ffi::OsStr::from_bytes(name.to_bytes()));
        let st = rustix::fs::statat(&*fd, name.as_c_str(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| Error::sys("stat", &p, e))?;
        let md = Stat::of(&st);
        let mut arch = prefix.to_vec();
        arch.extend_from_slice(name.to_bytes());
        let sub = (md.kind() == rustix::fs::FileType::Directory)
            .then(|| {
                rustix::fs::openat(
                    &*fd,
                    name.as_c_str(),
                    open_flags(rustix::fs::OFlags::DIRECTORY),
                    rustix::fs::Mode::empty(),
                )
                .map_err(|e| Error::sys("open", &p, e))
            })
            .transpose()?;
        let mut sub_prefix = arch.clone();
        sub_prefix.push(b'/');
        out.push(Listed {
            arch,
            parent: fd.clone(),
            name,
            p: p.clone(),
            md,
        });
        if let Some(sub) = sub {
            list_tree(std::rc::Rc::new(sub), &p, &sub_prefix, out)?;
        }
    }
    Ok(())
}

struct TarWriter<'a> {
    opts: TarOptions,
    out: &'a mut dyn Write,
    /// (dev, ino) → first archive path, for hardlinks
    links: HashMap<(u64, u64), Vec<u8>>,
    buf: Vec<u8>,
    /// Whiteouts and opaque markers written.
    whiteouts: u64,
    /// The index being made (`None`: not asked for, or the tree cannot have one).
    index: Option<Vec<IndexEntry>>,
    /// Bytes written so far.
    pos: u64,
    /// Where the entry being written starts.
    entry_start: u64,
}

struct Entry<'a> {
    name: &'a [u8],
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    size: u64,
    link: Option<&'a [u8]>,
    dev: Option<(u32, u32)>,
    xattrs: &'a BTreeMap<Vec<u8>, Vec<u8>>,
}

pub(crate) fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

/// What the tar writer needs of a `stat`.
#[derive(Debug, Clone, Copy)]
struct Stat {
    /// Full `st_mode`.
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    size: u64,
    nlink: u64,
    dev: u64,
    ino: u64,
    rdev: u64,
}

impl Stat {
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    fn of(st: &rustix::fs::Stat) -> Stat {
        Stat {
            mode: st.st_mode as u32,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            mtime: st.st_mtime as i64,
            size: st.st_size as u64,
            nlink: st.st_nlink as u64,
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            rdev: st.st_rdev as u64,
        }
    }

    fn kind(&self) -> rustix::fs::FileType {
        rustix::fs::FileType::from_raw_mode(self.mode)
    }

    /// An overlay whiteout (char 0/0).
    fn is_whiteout(&self) -> bool {
        self.kind() == rustix::fs::FileType::CharacterDevice && self.rdev == 0
    }
}

/// `O_RDONLY | O_NOFOLLOW | O_CLOEXEC`, plus `extra`.
fn open_flags(extra: rustix::fs::OFlags) -> rustix::fs::OFlags {
    rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC | extra
}

impl<'a> TarWriter<'a> {
    fn new(opts: &TarOptions, out: &'a mut dyn Write, index: bool) -> Self {
        TarWriter {
            opts: *opts,
            out,
            links: HashMap::new(),
            buf: vec![0u8; 256 * 1024],
            whiteouts: 0,
            index: index.then(Vec::new),
            pos: 0,
            entry_start: 0,
        }
    }

    /// Writes `bytes` of the tar.
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// The end-of-archive blocks.
    fn trailer(&mut self) -> Result<()> {
        self.put(&[0u8; 1024])
    }

    /// The index made, for a tar written with `clamp`.
    fn take_index(&mut self) -> Option<TarIndex> {
        self.index.take().map(|entries| TarIndex {
            entries,
            tag: [0; 3],
            tar_len: self.pos,
            clamp: self.opts.mtime_clamp,
            diff_id: None,
        })
    }

    /// Notes the entry `e` just written in the index (`mtime`: before clamping).
    fn record(&mut self, e: &Entry<'_>, mtime: i64, src: u8, inode: Option<(u64, u64)>) {
        if let Some(index) = &mut self.index {
            index.push(IndexEntry {
                name: e.name.to_vec(),
                kind: e.kind.as_byte(),
                src,
                mode: e.mode,
                uid: e.uid,
                gid: e.gid,
                mtime,
                size: e.size,
                link: e.link.unwrap_or_default().to_vec(),
                dev: e.dev.unwrap_or_default(),
                xattrs: e.xattrs.clone(),
                inode,
                off: self.entry_start,
            });
        }
    }

    /// Writes an entry of a snapshot's index, its data read from the snapshot's directory
    /// the index names (`below`, bottom first).
    fn indexed_entry(&mut self, o: &IndexEntry, below: &mut [OpenDirs]) -> Result<()> {
        let e = Entry {
            name: &o.name,
            kind: tar::EntryType::new(o.kind),
            mode: o.mode,
            uid: o.uid,
            gid: o.gid,
            mtime: self.clamp(o.mtime),
            size: o.size,
            link: (!o.link.is_empty()).then_some(o.link.as_slice()),
            dev: matches!(o.kind, b'3' | b'4').then_some(o.dev),
            xattrs: &o.xattrs,
        };
        if let Some(key) = o.inode {
            self.links.entry(key).or_insert_with(|| o.name.clone());
        }
        self.header(&e)?;
        self.record(&e, o.mtime, o.src, o.inode);
        if o.kind != b'0' {
            return Ok(());
        }
        let dir = below.get_mut(usize::from(o.src)).ok_or_else(|| {
            Error::invalid("tar index", "an entry of a directory the snapshot lacks")
        })?;
        let f = dir.open_file(o.path())?;
        self.copy_data(f, o.size, Path::new(std::ffi::OsStr::from_bytes(o.path())))
    }

    /// Writes an entry of the tree over a snapshot ([`write_tar_over`]): a directory's own
    /// header, anything else as the walk writes it.
    fn upper_entry(&mut self, n: &Listed) -> Result<()> {
        if n.md.kind() != rustix::fs::FileType::Directory {
            return self.entry(&n.arch, &n.parent, 1, &[], &n.name, &n.p, &n.md);
        }
        let xattrs: BTreeMap<Vec<u8>, Vec<u8>> = read_xattrs(&n.p)?
            .into_iter()
            .filter(|(k, _)| !is_overlay_xattr(k))
            .collect();
        let mut name = n.arch.clone();
        name.push(b'/');
        let e = Entry {
            name: &name,
            kind: tar::EntryType::Directory,
            mode: n.md.mode & 0o7777,
            uid: n.md.uid.into(),
            gid: n.md.gid.into(),
            mtime: self.clamp(n.md.mtime),
            size: 0,
            link: None,
            dev: None,
            xattrs: &xattrs,
        };
        self.header(&e)?;
        self.record(&e, n.md.mtime, 1, None);
        Ok(())
    }

    /// Copies `size` bytes of the file `f` (at `p`) as an entry's data, padded.
    fn copy_data(&mut self, mut f: std::fs::File, size: u64, p: &Path) -> Result<()> {
        let mut left = size;
        while left > 0 {
            let want = (self.buf.len() as u64).min(left) as usize;
            let n = f.read(&mut self.buf[..want]).map_err(|e| {
                Error::Io(io::Error::new(e.kind(), format!("{}: {e}", p.display())))
            })?;
            if n == 0 {
                return Err(Error::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} shrank while being archived", p.display()),
                )));
            }
            self.out.write_all(&self.buf[..n])?;
            self.pos += n as u64;
            left -= n as u64;
        }
        let pad = (512 - (size % 512) as usize) % 512;
        self.put(&[0u8; 512][..pad])
    }

    fn clamp(&self, mtime: i64) -> i64 {
        match self.opts.mtime_clamp {
            Some(c) if mtime > c => c,
            _ => mtime.max(0),
        }
    }

    /// One entry `name` of the directory `dir` (at `p`), over the same directory of lower
    /// layers `lower` (top first). Every call is relative to a directory's descriptor, so no
    /// path is walked again.
    #[allow(clippy::too_many_arguments)]
    fn entry(
        &mut self,
        arch: &[u8],
        dir: &std::os::fd::OwnedFd,
        src: u8,
        lower: &[(std::os::fd::OwnedFd, u8)],
        name: &std::ffi::CStr,
        p: &Path,
        md: &Stat,
    ) -> Result<()> {
        use rustix::fs::{FileType, OFlags};
        let kind = md.kind();
        let mtime = self.clamp(md.mtime);
        let mode = md.mode & 0o7777;
        if self.opts.source == LayerSource::OverlayUpper && md.is_whiteout() {
            return self.whiteout(arch, mtime);
        }
        // Files and directories are opened (their xattrs come from the descriptor); other
        // kinds are read by path.
        let flags = match kind {
            FileType::RegularFile => Some(OFlags::empty()),
            FileType::Directory => Some(OFlags::DIRECTORY),
            _ => None,
        };
        let fd = flags
            .map(|f| {
                rustix::fs::openat(dir, name, open_flags(f), rustix::fs::Mode::empty())
                    .map_err(|e| Error::sys("open", p, e))
            })
            .transpose()?;
        let xattrs = match &fd {
            Some(fd) => read_xattrs_fd(fd, p)?,
            // By the directory's descriptor: in a stack `p` names the top layer's directory,
            // the entry may be a lower one's.
            None => {
                use std::os::fd::AsRawFd;
                let mut at = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
                at.extend_from_slice(name.to_bytes());
                read_xattrs(Path::new(std::ffi::OsStr::from_bytes(&at))).map_err(|e| match e {
                    Error::Sys { op, source, .. } => Error::Sys {
                        op,
                        path: p.to_path_buf(),
                        source,
                    },
                    e => e,
                })?
            }
        };
        let opaque = self.opts.source == LayerSource::OverlayUpper
            && kind == FileType::Directory
            && ["trusted.overlay.opaque", "user.overlay.opaque"]
                .iter()
                .any(|k| xattrs.get(k.as_bytes()).map(Vec::as_slice) == Some(b"y"));
        let xattrs: BTreeMap<Vec<u8>, Vec<u8>> = xattrs
            .into_iter()
            .filter(|(k, _)| !is_overlay_xattr(k))
            .collect();
        let mut e = Entry {
            name: arch,
            kind: tar::EntryType::Regular,
            mode,
            uid: md.uid.into(),
            gid: md.gid.into(),
            mtime,
            size: 0,
            link: None,
            dev: None,
            xattrs: &xattrs,
        };
        match kind {
            FileType::Directory => {
                let mut dname = arch.to_vec();
                dname.push(b'/');
                e.name = &dname;
                e.kind = tar::EntryType::Directory;
                self.header(&e)?;
                self.record(&e, md.mtime, src, None);
                if opaque {
                    let mut wh = dname.clone();
                    wh.extend_from_slice(b".wh..wh..opq");
                    self.whiteout(&wh, mtime)?;
                }
                let fd = fd.ok_or_else(|| Error::sys("open", p, rustix::io::Errno::BADF))?;
                // As overlayfs merges: the same directory in the layers below, down to the
                // first layer where the name is not a directory.
                let mut fds = vec![(fd, src)];
                for (l, lsrc) in lower {
                    match rustix::fs::openat(
                        l,
                        name,
                        open_flags(OFlags::DIRECTORY),
                        rustix::fs::Mode::empty(),
                    ) {
                        Ok(fd) => fds.push((fd, *lsrc)),
                        Err(rustix::io::Errno::NOENT) => {}
                        Err(rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => break,
                        Err(e) => return Err(Error::sys("open", p, e)),
                    }
                }
                self.walk_fd(fds, p, &dname)
            }
            FileType::RegularFile => {
                let mut inode = None;
                if md.nlink > 1 {
                    let key = (md.dev, md.ino);
                    if let Some(first) = self.links.get(&key).cloned() {
                        // The entry names another path (which a later delta may replace).
                        self.index = None;
                        e.kind = tar::EntryType::Link;
                        e.link = Some(&first);
                        return self.header(&e);
                    }
                    self.links.insert(key, arch.to_vec());
                    inode = Some(key);
                }
                e.size = md.size;
                self.header(&e)?;
                self.record(&e, md.mtime, src, inode);
                let fd = fd.ok_or_else(|| Error::sys("open", p, rustix::io::Errno::BADF))?;
                self.copy_data(std::fs::File::from(fd), md.size, p)
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(dir, name, Vec::new())
                    .map_err(|e| Error::sys("readlink", p, e))?
                    .into_bytes();
                e.kind = tar::EntryType::Symlink;
                e.mode = 0o777;
                e.link = Some(&target);
                self.header(&e)?;
                self.record(&e, md.mtime, src, None);
                Ok(())
            }
            FileType::CharacterDevice | FileType::BlockDevice => {
                e.kind = if kind == FileType::CharacterDevice {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                };
                e.dev = Some((rustix::fs::major(md.rdev), rustix::fs::minor(md.rdev)));
                self.header(&e)?;
                self.record(&e, md.mtime, src, None);
                Ok(())
            }
            FileType::Fifo => {
                e.kind = tar::EntryType::Fifo;
                self.header(&e)?;
                self.record(&e, md.mtime, src, None);
                Ok(())
            }
            _ => {
                tracing::warn!(path = %p.display(), "skipping socket in layer");
                Ok(())
            }
        }
    }

    /// The entries of the directory `fds` (its layers, top first; at `dir`), sorted on
    /// their archive names (in an upperdir, whiteouts are renamed). A name in several layers
    /// is the top one's.
    fn walk_fd(
        &mut self,
        fds: Vec<(std::os::fd::OwnedFd, u8)>,
        dir: &Path,
        prefix: &[u8],
    ) -> Result<()> {
        let mut items: BTreeMap<Vec<u8>, (usize, std::ffi::CString, PathBuf, Stat)> =
            BTreeMap::new();
        let mut seen: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
        for (layer, (fd, _)) in fds.iter().enumerate() {
            let mut list =
                rustix::fs::Dir::read_from(fd).map_err(|e| Error::sys("read", dir, e))?;
            while let Some(ent) = list.read() {
                let ent = ent.map_err(|e| Error::sys("read", dir, e))?;
                let name = ent.file_name().to_owned();
                if matches!(name.to_bytes(), b"." | b"..") {
                    continue;
                }
                if layer > 0 && !seen.insert(name.to_bytes().to_vec()) {
                    continue;
                }
                let p = dir.join(std::ffi::OsStr::from_bytes(name.to_bytes()));
                let st =
                    rustix::fs::statat(fd, name.as_c_str(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(|e| Error::sys("stat", &p, e))?;
                let md = Stat::of(&st);
                let mut arch = prefix.to_vec();
                if self.opts.source == LayerSource::OverlayUpper && md.is_whiteout() {
                    arch.extend_from_slice(b".wh.");
                }
                arch.extend_from_slice(name.to_bytes());
                if layer == 0 && fds.len() > 1 {
                    seen.insert(name.to_bytes().to_vec());
                }
                items.insert(arch, (layer, name, p, md));
            }
        }
        for (arch, (layer, name, p, md)) in items {
            let (fd, src) = &fds[layer];
            self.entry(&arch, fd, *src, &fds[layer + 1..], &name, &p, &md)?;
        }
        Ok(())
    }

    /// An empty whiteout entry (`.wh.NAME` or `.wh..wh..opq`), counted.
    fn whiteout(&mut self, name: &[u8], mtime: i64) -> Result<()> {
        self.whiteouts += 1;
        self.index = None;
        self.header(&Entry {
            name,
            kind: tar::EntryType::Regular,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime,
            size: 0,
            link: None,
            dev: None,
            xattrs: &BTreeMap::new(),
        })
    }

    fn header(&mut self, e: &Entry<'_>) -> Result<()> {
        self.entry_start = self.pos;
        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if e.name.len() > 100 {
            pax.push((b"path".to_vec(), e.name.to_vec()));
        }
        if let Some(l) = e.link
            && l.len() > 100
        {
            pax.push((b"linkpath".to_vec(), l.to_vec()));
        }
        if e.size >= 0o77777777777 {
            pax.push((b"size".to_vec(), e.size.to_string().into_bytes()));
        }
        if e.uid > 0o7777777 {
            pax.push((b"uid".to_vec(), e.uid.to_string().into_bytes()));
        }
        if e.gid > 0o7777777 {
            pax.push((b"gid".to_vec(), e.gid.to_string().into_bytes()));
        }
        for (k, v) in e.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k);
            pax.push((key, v.clone()));
        }
        pax.sort();
        if !pax.is_empty() {
            let mut body = Vec::new();
            for (k, v) in &pax {
                body.extend_from_slice(&pax_record(k, v));
            }
            let mut h = tar::Header::new_ustar();
            set_name(&mut h, b"PaxHeaders/entry");
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(body.len() as u64);
            h.set_entry_type(tar::EntryType::XHeader);
            h.set_cksum();
            self.put(h.as_bytes())?;
            self.put(&body)?;
            let pad = (512 - body.len() % 512) % 512;
            self.put(&[0u8; 512][..pad])?;
        }
        let mut h = tar::Header::new_ustar();
        set_name(&mut h, &e.name[..e.name.len().min(100)]);
        h.set_mode(e.mode);
        h.set_uid(e.uid.min(0o7777777));
        h.set_gid(e.gid.min(0o7777777));
        h.set_mtime(e.mtime as u64);
        h.set_size(e.size.min(0o77777777777));
        h.set_entry_type(e.kind);
        if let Some(l) = e.link {
            let l = &l[..l.len().min(100)];
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l);
        }
        if let Some((ma, mi)) = e.dev {
            h.set_device_major(ma)?;
            h.set_device_minor(mi)?;
        } else {
            h.set_device_major(0)?;
            h.set_device_minor(0)?;
        }
        h.set_cksum();
        self.put(h.as_bytes())
    }
}

fn set_name(h: &mut tar::Header, name: &[u8]) {
    let field = &mut h.as_old_mut().name;
    field.fill(0);
    field[..name.len()].copy_from_slice(name);
}

fn pax_record(k: &[u8], v: &[u8]) -> Vec<u8> {
    let body = k.len() + v.len() + 3; // ' ' '=' '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} ").into_bytes();
    r.extend_from_slice(k);
    r.push(b'=');
    r.extend_from_slice(v);
    r.push(b'\n');
    r
}

/// All xattrs of the open file `fd` (at `p`), sorted by name.
fn read_xattrs_fd(fd: &std::os::fd::OwnedFd, p: &Path) -> Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut list = [0u8; 1024];
    let mut big = Vec::new();
    let names: &[u8] = match rustix::fs::flistxattr(fd, &mut list[..]) {
        Ok(0) => return Ok(out),
        Ok(n) => &list[..n],
        Err(rustix::io::Errno::NOTSUP) => return Ok(out),
        Err(rustix::io::Errno::RANGE) => {
            big.resize(64 * 1024, 0);
            let n = rustix::fs::flistxattr(fd, &mut big[..])
                .map_err(|e| Error::sys("listxattr", p, e))?;
            &big[..n]
        }
        Err(e) => return Err(Error::sys("listxattr", p, e)),
    };
    xattr_values(names, &mut out, p, |name, buf| {
        rustix::fs::fgetxattr(fd, name, buf)
    })?;
    Ok(out)
}

/// Reads the value of each name of a NUL-separated xattr name list into `out` with `get`
/// (a name gone meanwhile is skipped).
fn xattr_values(
    names: &[u8],
    out: &mut BTreeMap<Vec<u8>, Vec<u8>>,
    p: &Path,
    mut get: impl FnMut(&[u8], &mut [u8]) -> rustix::io::Result<usize>,
) -> Result<()> {
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let mut val = vec![0u8; 256];
        let len = loop {
            match get(name, &mut val[..]) {
                Ok(l) => break Some(l),
                Err(rustix::io::Errno::RANGE) => val.resize(val.len() * 4, 0),
                Err(rustix::io::Errno::NODATA) => break None,
                Err(e) => return Err(Error::sys("getxattr", p, e)),
            }
        };
        if let Some(len) = len {
            val.truncate(len);
            out.insert(name.to_vec(), val);
        }
    }
    Ok(())
}

/// All xattrs of `p` (not following symlinks), sorted by name.
pub(crate) fn read_xattrs(p: &Path) -> Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut list = vec![0u8; 1024];
    let n = loop {
        match rustix::fs::llistxattr(p, &mut list[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => list.resize(list.len() * 4, 0),
            Err(rustix::io::Errno::NOTSUP) => return Ok(out),
            Err(e) => return Err(Error::sys("listxattr", p, e)),
        }
    };
    xattr_values(&list[..n], &mut out, p, |name, buf| {
        rustix::fs::lgetxattr(p, name, buf)
    })?;
    Ok(out)
}

impl Store {
    /// Writes `dir` as a layer into the blob store: tar, compression and both digests in
    /// one pass. Records diffID ↔ blob in the index.
    pub fn create_layer(&self, dir: &Path, opts: &LayerOptions) -> Result<LayerInfo> {
        self.create_layer_counted(dir, opts).map(|(info, _)| info)
    }

    /// [`Store::create_layer`], also returning how many whiteouts and opaque markers the
    /// layer has (an overlay upperdir's deletions).
    pub fn create_layer_counted(
        &self,
        dir: &Path,
        opts: &LayerOptions,
    ) -> Result<(LayerInfo, u64)> {
        self.create_layer_indexed(dir, opts, false)
            .map(|(info, n, _)| (info, n))
    }

    /// [`Store::create_layer_counted`], with the layer's [`TarIndex`] when `index` asks for
    /// one and the tree can have one (to keep with its snapshot: [`Store::keep_tar_index`]).
    pub fn create_layer_indexed(
        &self,
        dir: &Path,
        opts: &LayerOptions,
        index: bool,
    ) -> Result<(LayerInfo, u64, Option<TarIndex>)> {
        tracing::debug!(dir = %dir.display(), "layer: writing");
        let tar_opts = tar_options(opts);
        let (info, n, mut index) = self.create_layer_of(
            opts,
            &mut |w| write_tar_indexed(&[dir], &tar_opts, w, index),
            None,
        )?;
        if let Some(index) = &mut index {
            index.set_diff_id(info.diff_id.clone());
        }
        Ok((info, n, index))
    }

    /// The layer of the tree the plain directories `dirs` (bottom first) make as overlay
    /// lower directories (a stacked snapshot's), as [`Store::create_layer`] writes the tree
    /// itself, with its [`TarIndex`] (for the stack the top directory becomes the delta of).
    /// With `index`, the tar index of the snapshot whose top layer `dirs` but the top one
    /// are ([`Store::tar_index`]), the tar is written from it and a walk of the top directory
    /// alone (the same bytes), and compressed from the previous layer's blob where it repeats
    /// that layer's tar ([`Prior`]).
    pub fn create_layer_stacked(
        &self,
        dirs: &[PathBuf],
        opts: &LayerOptions,
        index: Option<&TarIndex>,
    ) -> Result<(LayerInfo, Option<TarIndex>)> {
        let dirs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
        let tar_opts = tar_options(opts);
        tracing::debug!(
            dir = ?dirs.last(),
            layers = dirs.len(),
            from_index = index.map_or(0, TarIndex::len),
            "layer: writing"
        );
        let (info, _, mut new_index) = match (index, dirs.split_last()) {
            (Some(index), Some((upper, below))) if !below.is_empty() => {
                let runs = Runs::default();
                let prior = self.prior_layer(index, opts, runs.clone());
                let used = prior.is_some();
                let made = self.create_layer_of(
                    opts,
                    &mut |w| {
                        write_tar_over(index, below, upper, &tar_opts, w, true, Some(&runs))
                            .map(|i| (0, i))
                    },
                    prior,
                );
                match made {
                    Err(e) if used => {
                        // Whatever went wrong, the layer is written again without the
                        // previous blob (a real fault fails the same way again).
                        tracing::debug!("layer: writing again without the previous blob: {e}");
                        self.create_layer_of(
                            opts,
                            &mut |w| {
                                write_tar_over(index, below, upper, &tar_opts, w, true, None)
                                    .map(|i| (0, i))
                            },
                            None,
                        )?
                    }
                    made => made?,
                }
            }
            _ => self.create_layer_of(
                opts,
                &mut |w| write_tar_indexed(&dirs, &tar_opts, w, true),
                None,
            )?,
        };
        if let Some(index) = &mut new_index {
            index.set_diff_id(info.diff_id.clone());
        }
        Ok((info, new_index))
    }

    /// The previous layer a layer written over the tar `index` describes is compressed from
    /// where it repeats it, when its blob is here in the encoding `opts` asks for.
    fn prior_layer(&self, index: &TarIndex, opts: &LayerOptions, runs: Runs) -> Option<Prior> {
        let diff_id = index.diff_id.as_ref()?;
        let (zstd, level) = match opts.compression {
            Encoding::GzipMembers { level } => (false, level.clamp(1, 12)),
            Encoding::Zstd { level } => (true, level.clamp(-7, 22) as u32),
            _ => return None,
        };
        Prior::load(self, zstd, level, diff_id, runs)
    }

    /// Keeps `index` as the tar index of the snapshot `chain` (whose top layer's tar it
    /// describes). Best effort: a snapshot without one only writes its next stacked layer by
    /// walking.
    pub fn keep_tar_index(&self, chain: &Digest, index: &TarIndex) {
        let Some(tag) = self.snapshot_tag(chain) else {
            return;
        };
        let path = self.tar_index_path(chain);
        let kept = tempfile::NamedTempFile::new_in(self.tmp_dir())
            .map_err(Error::from)
            .and_then(|mut f| {
                f.write_all(&index.encode(tag))?;
                f.persist(&path).map_err(|e| Error::Io(e.error))?;
                Ok(())
            });
        if let Err(e) = kept {
            tracing::debug!(%chain, "tar index not kept: {e}");
        }
    }

    /// The tar index kept for the snapshot `chain`, when there is a whole one.
    pub fn tar_index(&self, chain: &Digest) -> Option<TarIndex> {
        let bytes = fs_err::read(self.tar_index_path(chain)).ok()?;
        let index = TarIndex::decode(&bytes);
        if index.is_none() {
            tracing::debug!(%chain, "ignoring a damaged tar index");
        }
        index.filter(|i| Some(i.tag) == self.snapshot_tag(chain))
    }

    fn tar_index_path(&self, chain: &Digest) -> PathBuf {
        self.root()
            .join("snapshots")
            .join(format!("{}.index", chain.hex()))
    }

    /// Writes a layer whose tar `write` writes (returning its whiteout count and index):
    /// compressed and hashed in one pass into the blob store, recorded in the index.
    fn create_layer_of(
        &self,
        opts: &LayerOptions,
        write: &mut WriteTar<'_>,
        prior: Option<Prior>,
    ) -> Result<(LayerInfo, u64, Option<TarIndex>)> {
        let whiteouts;
        let index;
        let bw = self.blob_writer()?;
        let (diff_id, digest, size) = if opts.compression == Encoding::None {
            // The blob is the tar: one hash serves as both digests.
            let mut bw = bw;
            (whiteouts, index) = write(&mut bw)?;
            let (digest, size) = bw.commit(None)?;
            (digest.clone(), digest, size)
        } else {
            // gzip members are reused by content: a rebuild that changed a few files
            // compresses only the members around them again (the bytes are the same).
            let members = match opts.compression {
                Encoding::GzipMembers { level } => {
                    Some((MemberCache::new(self.clone()), false, level.clamp(1, 12)))
                }
                Encoding::Zstd { level } => Some((
                    MemberCache::new(self.clone()),
                    true,
                    level.clamp(-7, 22) as u32,
                )),
                _ => None,
            };
            // The blob is hashed and written on a thread of its own; a parallel encoder hashes
            // the tar on another (beside its compressing workers), leaving this thread the
            // walk of the tree.
            let mut enc = Encoder::with_members(
                Offload::new(bw),
                opts.compression,
                members.as_ref().map(|m| m.0.clone()),
                prior,
            )?;
            let (bw, diff_id) = if enc.hash_input() {
                // Its blocks are cut by content or by size, never by how writes come.
                (whiteouts, index) = write(&mut enc)?;
                let (out, hashed) = enc.finish_hashed()?;
                let (diff_id, _) =
                    hashed.ok_or_else(|| Error::Io(io::Error::other("no diffID")))?;
                (out.finish()?, diff_id)
            } else {
                let mut diff = HashWriter::new(FixedBlocks::new(enc));
                (whiteouts, index) = write(&mut diff)?;
                let (blocks, diff_id, _) = diff.finish();
                (blocks.finish()?.finish()?.finish()?, diff_id)
            };
            let (digest, size) = bw.commit(None)?;
            if let Some((m, zstd, level)) = &members {
                m.record(*zstd, *level, &digest, &diff_id)?;
                let (reused, compressed) = m.counts();
                tracing::debug!(
                    reused,
                    compressed,
                    from_previous_layer = m.from_prior(),
                    "compressed blocks (gzip members, zstd frames)"
                );
            }
            (diff_id, digest, size)
        };
        let info = LayerInfo {
            diff_id,
            digest,
            size,
            media_type: opts.compression.media_type().to_owned(),
        };
        self.record_layer(&info)?;
        tracing::debug!(diff_id = %info.diff_id, digest = %info.digest, size, "layer created");
        Ok((info, whiteouts, index))
    }

    /// The layer of `layer`'s diffID as a blob encoded with `enc`: `layer` itself when it
    /// already is one (same algorithm, and for a layer kiln did not write, any level), else
    /// the blob made once by decompressing and compressing it again, kept (index `kv` table
    /// `layer-variant`) so that the next push or export reuses it. The tar is the same, so
    /// the bytes are those a layer written with `enc` in the first place has.
    pub fn layer_as(&self, layer: &LayerInfo, enc: Encoding) -> Result<LayerInfo> {
        if media_compression(&layer.media_type) == Some(enc.compression()) {
            return Ok(layer.clone());
        }
        if let Some(info) = self.layer_variant(layer, enc)? {
            return Ok(info);
        }
        self.convert_layer(layer, enc, None)
    }

    /// The blob [`Store::layer_as`] made of `layer` for `enc` and keeps, if it is here.
    pub fn layer_variant(&self, layer: &LayerInfo, enc: Encoding) -> Result<Option<LayerInfo>> {
        let Some(raw) = self.kv_get(LAYER_VARIANTS, &variant_key(layer, enc))? else {
            return Ok(None);
        };
        let info: LayerInfo =
            serde_json::from_slice(&raw).map_err(|e| Error::json("layer variant", e))?;
        Ok(self.has_blob(&info.digest).then_some(info))
    }

    /// [`Store::layer_as`] for a layer that is not encoded with `enc`, every byte of the blob
    /// also written to `tee` as it is made (a push streams them to the registry while the
    /// layer compresses), and `tee` flushed once, after the last byte, before the blob is made
    /// durable. The blob is kept and recorded as `layer_as` keeps it, once all of it is
    /// written; a failed write to `tee` stops the conversion and stores nothing. A variant
    /// made meanwhile (by another push) is copied to `tee` as it is.
    pub fn layer_as_teed(
        &self,
        layer: &LayerInfo,
        enc: Encoding,
        tee: &mut dyn Write,
    ) -> Result<LayerInfo> {
        if let Some(info) = self.layer_variant(layer, enc)? {
            io::copy(&mut self.open_blob(&info.digest)?, tee)?;
            tee.flush()?;
            return Ok(info);
        }
        self.convert_layer(layer, enc, Some(tee))
    }

    /// Decompresses `layer` and compresses it again with `enc` into a new blob (and `tee`),
    /// recorded as `layer`'s variant.
    fn convert_layer(
        &self,
        layer: &LayerInfo,
        enc: Encoding,
        tee: Option<&mut dyn Write>,
    ) -> Result<LayerInfo> {
        let src = self.open_blob(&layer.digest)?;
        let mut tar = crate::apply::decompress(src)?;
        let out = Tee {
            blob: self.blob_writer()?,
            tee,
        };
        let (diff_id, digest, size) = if enc == Encoding::None {
            let mut bw = HashWriter::new(out);
            io::copy(&mut tar, &mut bw)?;
            let (out, diff_id, _) = bw.finish();
            let (digest, size) = out.end()?.commit(None)?;
            (diff_id, digest, size)
        } else {
            let enc_w = Encoder::new(out, enc)?;
            let mut diff = HashWriter::new(FixedBlocks::new(enc_w));
            io::copy(&mut tar, &mut diff)?;
            let (blocks, diff_id, _) = diff.finish();
            let (digest, size) = blocks.finish()?.finish()?.end()?.commit(None)?;
            (diff_id, digest, size)
        };
        if diff_id != layer.diff_id {
            return Err(Error::invalid(
                "layer",
                format!(
                    "blob {} holds {diff_id}, not the diffID {} it is recorded with",
                    layer.digest, layer.diff_id
                ),
            ));
        }
        let info = LayerInfo {
            diff_id,
            digest,
            size,
            media_type: enc.media_type().to_owned(),
        };
        self.record_layer(&info)?;
        let json = serde_json::to_vec(&info).map_err(|e| Error::json("layer variant", e))?;
        self.kv_put(LAYER_VARIANTS, &variant_key(layer, enc), &json)?;
        tracing::debug!(diff_id = %info.diff_id, from = %layer.digest, to = %info.digest, "layer compressed again");
        Ok(info)
    }

    /// Records diffID ↔ blob (the blob must be in the store).
    pub fn record_layer(&self, info: &LayerInfo) -> Result<()> {
        let json = serde_json::to_vec(info).map_err(|e| Error::json("layer record", e))?;
        let keep_existing = self.layer_for_diff_id(&info.diff_id)?.is_some();
        self.index().write(|txn| {
            if !keep_existing {
                txn.open_table(LAYERS)?
                    .insert(info.diff_id.to_string().as_str(), json.as_slice())?;
            }
            txn.open_table(BLOB_LAYERS)?.insert(
                info.digest.to_string().as_str(),
                info.diff_id.to_string().as_str(),
            )?;
            Ok(())
        })
    }

    /// The layer blob recorded for a diffID, if its blob is present.
    pub fn layer_for_diff_id(&self, diff_id: &Digest) -> Result<Option<LayerInfo>> {
        let raw = self.index().read(|txn| {
            let t = txn.open_table(LAYERS)?;
            Ok(t.get(diff_id.to_string().as_str())?
                .map(|v| v.value().to_vec()))
        })?;
        let Some(raw) = raw else { return Ok(None) };
        let info: LayerInfo =
            serde_json::from_slice(&raw).map_err(|e| Error::json("layer record", e))?;
        Ok(self.has_blob(&info.digest).then_some(info))
    }

    /// The diffID recorded for a layer blob.
    pub fn diff_id_for_blob(&self, digest: &Digest) -> Result<Option<Digest>> {
        let raw = self.index().read(|txn| {
            let t = txn.open_table(BLOB_LAYERS)?;
            Ok(t.get(digest.to_string().as_str())?
                .map(|v| v.value().to_owned()))
        })?;
        raw.map(|s| crate::digest::parse_digest(&s)).transpose()
    }
}
