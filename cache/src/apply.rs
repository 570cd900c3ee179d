//! The layer applier: unpacks a (possibly compressed) layer tar into a directory.
//!
//! Every path is resolved inside the target by [`kiln_sys::Root`] (`openat2(RESOLVE_IN_ROOT
//! | RESOLVE_NO_MAGICLINKS)`), so `..`, absolute symlinks and symlink chains can never reach
//! outside it; the final component is always created or changed with `*at` calls that do not
//! follow symlinks. Entries naming `..` are refused; absolute entry paths are taken relative to
//! the target, as docker does.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use kiln_oci::Digest;
use kiln_sys::{MkdirAll, Root};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use crate::digest::HashReader;
use crate::error::{Error, Result};

/// How whiteouts are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApplyMode {
    /// Whiteouts delete from the target (unpacking a whole image into one directory).
    #[default]
    Flatten,
    /// Whiteouts become char 0/0 devices and opaque markers `trusted.overlay.opaque=y`, as
    /// an overlayfs lowerdir needs (each layer unpacked into its own empty directory).
    OverlayLower,
}

/// Options of [`apply_layer`].
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Whiteout handling.
    pub mode: ApplyMode,
    /// Apply the archive's uid/gid (default: when running as root).
    pub same_owner: bool,
    /// Create device nodes (default: when running as root); otherwise they are skipped
    /// with a warning.
    pub allow_devices: bool,
    /// In [`ApplyMode::OverlayLower`], the layers below this one, top first: a hardlink to a
    /// file that one of them holds copies that file up into this layer first, as applying
    /// through an overlay mount would (other tools write such links).
    pub lowers: Vec<PathBuf>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        let root = rustix::process::geteuid().is_root();
        ApplyOptions {
            mode: ApplyMode::Flatten,
            same_owner: root,
            allow_devices: root,
            lowers: Vec::new(),
        }
    }
}

/// What [`apply_layer`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyStats {
    /// Entries applied (including whiteouts).
    pub entries: u64,
    /// sha256 of the uncompressed tar stream (the diffID).
    pub diff_id: Digest,
    /// Size of the uncompressed tar stream.
    pub tar_size: u64,
}

/// Wraps `r` in a decompressor chosen from its magic bytes (gzip, zstd or plain).
pub fn decompress<'a>(r: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
    let mut br = BufReader::with_capacity(256 * 1024, r);
    let head = br.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(br))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(br)?)
    } else {
        Box::new(br)
    })
}

/// Applies a layer (gzip, zstd or plain tar, detected) to `target` (created if missing).
pub fn apply_layer(reader: impl Read, target: &Path, opts: &ApplyOptions) -> Result<ApplyStats> {
    let mut hashed = HashReader::new(decompress(reader)?);
    let entries = apply_tar(&mut hashed, target, opts)?;
    io::copy(&mut hashed, &mut io::sink())?;
    let (diff_id, tar_size) = hashed.finish();
    Ok(ApplyStats {
        entries,
        diff_id,
        tar_size,
    })
}

/// Like [`apply_layer`], with decompression and hashing on a second thread so they overlap
/// with writing files (faster on two or more cores).
pub fn apply_layer_threaded(
    reader: impl Read + Send,
    target: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyStats> {
    const CHUNK: usize = 1 << 20;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || -> Result<(Digest, u64)> {
            let mut hashed = HashReader::new(decompress(reader)?);
            loop {
                let mut buf = vec![0u8; CHUNK];
                let mut filled = 0;
                while filled < CHUNK {
                    let n = hashed.read(&mut buf[filled..])?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                if filled == 0 {
                    break;
                }
                buf.truncate(filled);
                if tx.send(buf).is_err() {
                    break; // the consumer failed; its error wins
                }
            }
            Ok(hashed.finish())
        });
        let mut chan = ChannelReader {
            rx,
            cur: Vec::new(),
            pos: 0,
        };
        let applied = apply_tar(&mut chan, target, opts);
        let drained = applied.and_then(|entries| {
            io::copy(&mut chan, &mut io::sink())?;
            Ok(entries)
        });
        drop(chan);
        let produced = producer
            .join()
            .map_err(|_| Error::Io(io::Error::other("decompression thread panicked")))?;
        let entries = drained?;
        let (diff_id, tar_size) = produced?;
        Ok(ApplyStats {
            entries,
            diff_id,
            tar_size,
        })
    })
}

struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.cur = b;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Applies an uncompressed tar stream; returns the number of entries.
fn apply_tar(tar: &mut dyn Read, target: &Path, opts: &ApplyOptions) -> Result<u64> {
    fs_err::create_dir_all(target)?;
    let root = Root::open(target).map_err(|e| Error::sys("open", target, e.errno()))?;
    let mut archive = tar::Archive::new(tar);
    let mut ap = Applier {
        root,
        opts: opts.clone(),
        created: HashSet::new(),
        dir_times: Vec::new(),
        cache: None,
        buf: vec![0u8; 256 * 1024],
        proc_ok: true,
    };
    let mut entries = 0u64;
    for entry in archive.entries()? {
        let mut entry = entry?;
        ap.entry(&mut entry)?;
        entries += 1;
    }
    // Directory mtimes last, deepest first, so creating children does not change them.
    let times = std::mem::take(&mut ap.dir_times);
    for (comps, mtime) in times.iter().rev() {
        let fd = ap.open_dir(comps, false)?;
        let ts = timestamps(*mtime);
        rustix::fs::utimensat(&fd, c".", &ts, AtFlags::empty())
            .map_err(|e| Error::sys("utimensat", join(comps), e))?;
    }
    Ok(entries)
}

type Comps = Vec<OsString>;

fn join(comps: &[OsString]) -> PathBuf {
    comps.iter().collect()
}

fn timestamps(mtime: u64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime.min(i64::MAX as u64) as i64,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Splits an entry path into normal components; refuses `..`.
fn clean(raw: &Path) -> Result<Comps> {
    let mut out = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n.to_owned()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                return Err(Error::UnsafeEntry {
                    path: raw.to_owned(),
                    reason: "path contains '..'",
                });
            }
        }
    }
    Ok(out)
}

struct Applier {
    root: Root,
    opts: ApplyOptions,
    /// paths created by this layer (for opaque dirs in Flatten mode)
    created: HashSet<Comps>,
    dir_times: Vec<(Comps, u64)>,
    /// the last resolved parent directory
    cache: Option<(Comps, OwnedFd)>,
    buf: Vec<u8>,
    proc_ok: bool,
}

impl Applier {
    /// Opens directory `comps` inside the root (symlinks resolved inside the root), creating
    /// missing directories when `create` (following dangling symlinks to their place in the
    /// root, as mkdir -p in the container would).
    fn open_dir(&self, comps: &[OsString], create: bool) -> Result<OwnedFd> {
        let flags = OFlags::PATH | OFlags::DIRECTORY;
        if comps.is_empty() {
            return rustix::fs::openat(&self.root, c".", flags | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| Error::sys("open", ".", e));
        }
        let path = join(comps);
        let opened = if create {
            let how = MkdirAll {
                mode: Mode::from_raw_mode(0o755),
                owner: None,
                access: OFlags::PATH,
            };
            self.root.mkdir_all(&path, &how).map(|made| made.dir)
        } else {
            self.root.open_at(&path, flags)
        };
        opened.map_err(|e| {
            let op = match e.op() {
                kiln_sys::Op::Open => "openat2",
                kiln_sys::Op::Mkdir => "mkdir",
                kiln_sys::Op::ReadLink => "readlink",
                other => other.as_str(),
            };
            Error::sys(op, e.path(), e.errno())
        })
    }

    fn parent(&mut self, comps: &[OsString]) -> Result<OwnedFd> {
        let pc = &comps[..comps.len() - 1];
        if let Some((c, fd)) = &self.cache
            && c.as_slice() == pc
        {
            return fd.try_clone().map_err(Error::Io);
        }
        let fd = self.open_dir(pc, true)?;
        self.cache = Some((pc.to_vec(), fd.try_clone()?));
        Ok(fd)
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let mut raw_path = entry.path()?.into_owned();
        let mut kind = entry.header().entry_type();
        if kind.is_gnu_sparse() {
            // GNU's old sparse format: the tar reader expands the holes.
            kind = tar::EntryType::Regular;
        }
        let mut xattrs = Vec::new();
        let mut sparse = PaxSparse::default();
        if let Some(exts) = entry.pax_extensions()? {
            for ext in exts {
                let ext = ext?;
                let key = ext.key_bytes();
                if let Some(field) = key.strip_prefix(b"GNU.sparse.") {
                    sparse.field(field, ext.value_bytes());
                    continue;
                }
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.")
                    && !crate::layer::is_overlay_xattr(name)
                {
                    xattrs.push((name.to_vec(), ext.value_bytes().to_vec()));
                }
            }
        }
        let sparse = if sparse.is_sparse() {
            if let Some(name) = &sparse.name {
                raw_path = PathBuf::from(OsStr::from_bytes(name));
            }
            Some(sparse.layout(&raw_path)?)
        } else {
            None
        };
        let comps = clean(&raw_path)?;
        let Some(name) = comps.last().cloned() else {
            return Ok(()); // the root itself
        };
        let h = entry.header();
        let mode = h.mode()? & 0o7777;
        let uid = h.uid()?;
        let gid = h.gid()?;
        let mtime = h.mtime()?;
        let parent = self.parent(&comps)?;
        let nb = name.as_bytes();

        // Whiteouts.
        if let Some(target) = nb.strip_prefix(b".wh.") {
            if target == b".wh..opq" {
                let pc = comps[..comps.len() - 1].to_vec();
                return self.opaque(&pc);
            }
            if target.is_empty() || target == b"." || target == b".." || target.contains(&b'/') {
                return Err(Error::UnsafeEntry {
                    path: raw_path,
                    reason: "whiteout of '.' or '..'",
                });
            }
            let tname = OsStr::from_bytes(target);
            self.cache = None;
            remove_all_at(&parent, tname, &raw_path)?;
            if self.opts.mode == ApplyMode::OverlayLower {
                rustix::fs::mknodat(&parent, tname, FileType::CharacterDevice, Mode::empty(), 0)
                    .map_err(|e| Error::sys("mknod whiteout", &raw_path, e))?;
            }
            return Ok(());
        }

        // Replace what is there, unless dir over dir.
        let existing = rustix::fs::statat(&parent, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW);
        let is_dir = kind == tar::EntryType::Directory;
        let mut kept_dir = false;
        if let Ok(st) = &existing {
            let was_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
            kept_dir = was_dir && is_dir;
            if !kept_dir {
                self.cache = None;
                remove_all_at(&parent, &name, &raw_path)?;
            }
        }
        let nf = AtFlags::SYMLINK_NOFOLLOW;
        match kind {
            tar::EntryType::Directory => {
                if !kept_dir {
                    rustix::fs::mkdirat(&parent, name.as_os_str(), Mode::from_raw_mode(0o700))
                        .map_err(|e| Error::sys("mkdir", &raw_path, e))?;
                }
                self.owner(&parent, &name, uid, gid, &raw_path)?;
                rustix::fs::chmodat(
                    &parent,
                    name.as_os_str(),
                    Mode::from_raw_mode(mode),
                    AtFlags::empty(),
                )
                .map_err(|e| Error::sys("chmod", &raw_path, e))?;
                if !xattrs.is_empty() {
                    let fd = rustix::fs::openat(
                        &parent,
                        name.as_os_str(),
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| Error::sys("open", &raw_path, e))?;
                    set_xattrs_fd(&fd, &xattrs, &raw_path)?;
                }
                self.dir_times.push((comps.clone(), mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let fd = rustix::fs::openat(
                    &parent,
                    name.as_os_str(),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| Error::sys("create", &raw_path, e))?;
                let size = entry.header().size()?;
                let mut file = std::fs::File::from(fd);
                let mut copied = 0u64;
                if let Some(layout) = &sparse {
                    copied = self.write_sparse(entry, &mut file, layout, size, &raw_path)?;
                }
                while sparse.is_none() {
                    let n = entry.read(&mut self.buf)?;
                    if n == 0 {
                        break;
                    }
                    io::Write::write_all(&mut file, &self.buf[..n]).map_err(|e| Error::Sys {
                        op: "write",
                        path: raw_path.clone(),
                        source: e,
                    })?;
                    copied += n as u64;
                }
                if copied != size && sparse.is_none() && entry.size() != copied {
                    return Err(Error::UnsupportedEntry {
                        path: raw_path,
                        reason: format!(
                            "archive truncated: header claims {size} bytes, found {copied}"
                        ),
                    });
                }
                if self.opts.same_owner {
                    rustix::fs::fchown(&file, Some(uid_of(uid)), Some(gid_of(gid)))
                        .map_err(|e| Error::sys("chown", &raw_path, e))?;
                }
                rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))
                    .map_err(|e| Error::sys("chmod", &raw_path, e))?;
                set_xattrs_fd(&file, &xattrs, &raw_path)?;
                rustix::fs::futimens(&file, &timestamps(mtime))
                    .map_err(|e| Error::sys("futimens", &raw_path, e))?;
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name()?.ok_or_else(|| {
                    Error::invalid(
                        "layer",
                        format!("symlink {} without target", raw_path.display()),
                    )
                })?;
                self.cache = None;
                rustix::fs::symlinkat(target.as_ref(), &parent, name.as_os_str())
                    .map_err(|e| Error::sys("symlink", &raw_path, e))?;
                self.owner(&parent, &name, uid, gid, &raw_path)?;
                if !xattrs.is_empty() {
                    self.set_xattrs_path(&parent, &name, &xattrs, &raw_path)?;
                }
                rustix::fs::utimensat(&parent, name.as_os_str(), &timestamps(mtime), nf)
                    .map_err(|e| Error::sys("utimensat", &raw_path, e))?;
            }
            tar::EntryType::Link => {
                let link = entry.link_name()?.ok_or_else(|| {
                    Error::invalid(
                        "layer",
                        format!("hardlink {} without target", raw_path.display()),
                    )
                })?;
                let lc = clean(&link)?;
                let Some(lname) = lc.last() else {
                    return Err(Error::UnsafeEntry {
                        path: raw_path,
                        reason: "hardlink to the root",
                    });
                };
                let bad = || Error::BadHardlink {
                    path: raw_path.clone(),
                    target: link.to_path_buf(),
                };
                if self.opts.mode == ApplyMode::OverlayLower
                    && !self.opts.lowers.is_empty()
                    && self.root.open_at(join(&lc), OFlags::PATH).is_err()
                {
                    self.cache = None;
                    self.copy_up(&lc, &raw_path)?;
                }
                let lparent = self
                    .open_dir(&lc[..lc.len() - 1], false)
                    .map_err(|_| bad())?;
                rustix::fs::linkat(
                    &lparent,
                    lname.as_os_str(),
                    &parent,
                    name.as_os_str(),
                    AtFlags::empty(),
                )
                .map_err(|_| bad())?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let ft = match kind {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let mut dev = 0;
                if ft != FileType::Fifo {
                    if !self.opts.allow_devices {
                        tracing::warn!(path = %raw_path.display(), "skipping device node (not root)");
                        return Ok(());
                    }
                    let ma = h.device_major()?.unwrap_or(0);
                    let mi = h.device_minor()?.unwrap_or(0);
                    dev = rustix::fs::makedev(ma, mi);
                }
                rustix::fs::mknodat(
                    &parent,
                    name.as_os_str(),
                    ft,
                    Mode::from_raw_mode(mode),
                    dev,
                )
                .map_err(|e| Error::sys("mknod", &raw_path, e))?;
                self.owner(&parent, &name, uid, gid, &raw_path)?;
                rustix::fs::chmodat(
                    &parent,
                    name.as_os_str(),
                    Mode::from_raw_mode(mode),
                    AtFlags::empty(),
                )
                .map_err(|e| Error::sys("chmod", &raw_path, e))?;
                if !xattrs.is_empty() {
                    self.set_xattrs_path(&parent, &name, &xattrs, &raw_path)?;
                }
                rustix::fs::utimensat(&parent, name.as_os_str(), &timestamps(mtime), nf)
                    .map_err(|e| Error::sys("utimensat", &raw_path, e))?;
            }
            tar::EntryType::XGlobalHeader => return Ok(()),
            other => {
                return Err(Error::UnsupportedEntry {
                    path: raw_path,
                    reason: format!("entry type {other:?}"),
                });
            }
        }
        if self.opts.mode == ApplyMode::Flatten {
            self.created.insert(comps);
        }
        Ok(())
    }

    /// Copies the regular file `comps` from the topmost lower layer that shows it into this
    /// layer, with the directories on the way (their metadata from that lower, so the
    /// merged view does not change). Nothing is copied when no lower shows a regular file.
    fn copy_up(&mut self, comps: &[OsString], raw: &Path) -> Result<()> {
        let nf = OFlags::PATH | OFlags::NOFOLLOW;
        for lower in self.opts.lowers.clone() {
            let Ok(root) = Root::open(&lower) else {
                continue;
            };
            // Hidden below a whiteout or an opaque directory of this lower: stop here.
            for i in 1..=comps.len() {
                let Ok(fd) = root.open_at(join(&comps[..i]), nf) else {
                    break;
                };
                let st = rustix::fs::fstat(&fd).map_err(|e| Error::sys("stat", raw, e))?;
                let ft = FileType::from_raw_mode(st.st_mode);
                if ft == FileType::CharacterDevice && st.st_rdev == 0 {
                    return Ok(());
                }
            }
            let Ok(src) = root.open_at(join(comps), OFlags::RDONLY | OFlags::NOFOLLOW) else {
                let opaque = (0..comps.len()).any(|i| {
                    root.open_dir(join(&comps[..i]))
                        .ok()
                        .and_then(|d| {
                            let mut v = [0u8; 1];
                            rustix::fs::fgetxattr(&d, "trusted.overlay.opaque", &mut v).ok()
                        })
                        .is_some()
                });
                if opaque {
                    return Ok(());
                }
                continue;
            };
            let st = rustix::fs::fstat(&src).map_err(|e| Error::sys("stat", raw, e))?;
            if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                return Ok(());
            }
            // The directories on the way, as the lower has them.
            let mut dirs_made = Vec::new();
            for i in 1..comps.len() {
                let here = join(&comps[..i]);
                if self.root.open_at(&here, OFlags::PATH).is_ok() {
                    continue;
                }
                let parent = self.open_dir(&comps[..i - 1], false)?;
                let ldir = root
                    .open_at(&here, OFlags::PATH | OFlags::DIRECTORY)
                    .map_err(|e| Error::sys("open", &here, e.errno()))?;
                let lst = rustix::fs::fstat(&ldir).map_err(|e| Error::sys("stat", &here, e))?;
                rustix::fs::mkdirat(
                    &parent,
                    comps[i - 1].as_os_str(),
                    Mode::from_raw_mode(0o700),
                )
                .map_err(|e| Error::sys("mkdir", &here, e))?;
                self.owner(
                    &parent,
                    &comps[i - 1],
                    lst.st_uid as u64,
                    lst.st_gid as u64,
                    raw,
                )?;
                rustix::fs::chmodat(
                    &parent,
                    comps[i - 1].as_os_str(),
                    Mode::from_raw_mode(lst.st_mode & 0o7777),
                    AtFlags::empty(),
                )
                .map_err(|e| Error::sys("chmod", &here, e))?;
                dirs_made.push((comps[..i].to_vec(), lst.st_mtime as u64));
            }
            let parent = self.open_dir(&comps[..comps.len() - 1], false)?;
            let name = comps[comps.len() - 1].as_os_str();
            let dst = rustix::fs::openat(
                &parent,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(|e| Error::sys("create", raw, e))?;
            let mut out = std::fs::File::from(dst);
            io::copy(&mut std::fs::File::from(src), &mut out).map_err(|e| Error::Sys {
                op: "copy up",
                path: join(comps),
                source: e,
            })?;
            if self.opts.same_owner {
                rustix::fs::fchown(
                    &out,
                    Some(uid_of(st.st_uid as u64)),
                    Some(gid_of(st.st_gid as u64)),
                )
                .map_err(|e| Error::sys("chown", raw, e))?;
            }
            rustix::fs::fchmod(&out, Mode::from_raw_mode(st.st_mode & 0o7777))
                .map_err(|e| Error::sys("chmod", raw, e))?;
            rustix::fs::futimens(&out, &timestamps(st.st_mtime as u64))
                .map_err(|e| Error::sys("futimens", raw, e))?;
            self.dir_times.extend(dirs_made);
            return Ok(());
        }
        Ok(())
    }

    /// Writes the data of a PAX sparse entry (GNU formats 0.1 and 1.0) at its offsets, leaving
    /// the holes as holes; returns the bytes of archive data consumed.
    fn write_sparse(
        &mut self,
        entry: &mut dyn Read,
        file: &mut std::fs::File,
        layout: &SparseLayout,
        stored: u64,
        raw: &Path,
    ) -> Result<u64> {
        use std::io::{Seek, SeekFrom, Write};
        let bad = |reason: String| Error::UnsupportedEntry {
            path: raw.to_owned(),
            reason,
        };
        let mut consumed = 0u64;
        let map = match &layout.map {
            Some(map) => map.clone(),
            None => {
                let (map, used) = read_sparse_map(entry, stored).map_err(|r| bad(r.to_owned()))?;
                consumed = used;
                map
            }
        };
        for &(offset, len) in &map {
            if offset
                .checked_add(len)
                .is_none_or(|end| end > layout.real_size)
            {
                return Err(bad("sparse chunk beyond the file's size".into()));
            }
            file.seek(SeekFrom::Start(offset)).map_err(Error::Io)?;
            let mut left = len;
            while left > 0 {
                let want = left.min(self.buf.len() as u64) as usize;
                let n = entry.read(&mut self.buf[..want])?;
                if n == 0 {
                    return Err(bad("archive truncated inside a sparse file".into()));
                }
                file.write_all(&self.buf[..n]).map_err(|e| Error::Sys {
                    op: "write",
                    path: raw.to_owned(),
                    source: e,
                })?;
                left -= n as u64;
            }
            consumed += len;
        }
        file.set_len(layout.real_size).map_err(|e| Error::Sys {
            op: "truncate",
            path: raw.to_owned(),
            source: e,
        })?;
        // Whatever follows the last chunk is padding of the map format; nothing may remain.
        let mut rest = 0u64;
        loop {
            let n = entry.read(&mut self.buf)?;
            if n == 0 {
                break;
            }
            rest += n as u64;
        }
        if rest != 0 {
            return Err(bad(format!("{rest} bytes after the last sparse chunk")));
        }
        Ok(consumed)
    }

    fn owner(&self, parent: &OwnedFd, name: &OsStr, uid: u64, gid: u64, raw: &Path) -> Result<()> {
        if self.opts.same_owner {
            rustix::fs::chownat(
                parent,
                name,
                Some(uid_of(uid)),
                Some(gid_of(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| Error::sys("chown", raw, e))?;
        }
        Ok(())
    }

    fn set_xattrs_path(
        &mut self,
        parent: &OwnedFd,
        name: &OsStr,
        xattrs: &[(Vec<u8>, Vec<u8>)],
        raw: &Path,
    ) -> Result<()> {
        if !self.proc_ok {
            return Ok(());
        }
        for (k, v) in xattrs {
            match kiln_sys::fd::set_xattr_nofollow(parent, name, k, v) {
                Ok(()) => {}
                Err(e) if matches!(e.errno(), Errno::PERM | Errno::NOTSUP) => {
                    tracing::warn!(path = %raw.display(), xattr = %String::from_utf8_lossy(k), "xattr not applied");
                }
                Err(e) => return Err(Error::sys("setxattr", raw, e.errno())),
            }
        }
        Ok(())
    }

    /// An opaque directory marker for the directory `pc`.
    fn opaque(&mut self, pc: &[OsString]) -> Result<()> {
        let dir = self.open_dir(pc, true)?;
        let dirfd = rustix::fs::openat(
            &dir,
            c".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::sys("open", join(pc), e))?;
        match self.opts.mode {
            ApplyMode::OverlayLower => {
                rustix::fs::fsetxattr(
                    &dirfd,
                    "trusted.overlay.opaque",
                    b"y",
                    rustix::fs::XattrFlags::empty(),
                )
                .map_err(|e| Error::sys("setxattr trusted.overlay.opaque", join(pc), e))?;
            }
            ApplyMode::Flatten => {
                self.cache = None;
                let mut names = Vec::new();
                for de in rustix::fs::Dir::read_from(&dirfd)
                    .map_err(|e| Error::sys("readdir", join(pc), e))?
                {
                    let de = de.map_err(|e| Error::sys("readdir", join(pc), e))?;
                    let n = OsStr::from_bytes(de.file_name().to_bytes()).to_owned();
                    if n == "." || n == ".." {
                        continue;
                    }
                    let mut c = pc.to_vec();
                    c.push(n.clone());
                    if !self.created.contains(&c) {
                        names.push(n);
                    }
                }
                for n in names {
                    remove_all_at(&dirfd, &n, &join(pc).join(&n))?;
                }
            }
        }
        Ok(())
    }
}

/// The `GNU.sparse.*` PAX records of one entry.
#[derive(Default)]
struct PaxSparse {
    major: Option<Vec<u8>>,
    minor: Option<Vec<u8>>,
    name: Option<Vec<u8>>,
    real_size: Option<Vec<u8>>,
    /// Format 0.1: the map as `offset,size,offset,size,...`.
    map: Option<Vec<u8>>,
    /// Format 0.0: repeated offset/numbytes records.
    old: bool,
}

/// Data runs of a sparse file: (offset, length).
type SparseMap = Vec<(u64, u64)>;

/// Where a sparse file's data goes.
struct SparseLayout {
    real_size: u64,
    /// `None`: the map leads the entry's data (format 1.0).
    map: Option<SparseMap>,
}

/// Most chunks a sparse map may list (a 1 GiB file of 4 KiB data runs between holes).
const MAX_SPARSE_CHUNKS: usize = 1 << 18;

impl PaxSparse {
    fn field(&mut self, field: &[u8], value: &[u8]) {
        let v = Some(value.to_vec());
        match field {
            b"major" => self.major = v,
            b"minor" => self.minor = v,
            b"name" => self.name = v,
            b"realsize" | b"size" => self.real_size = v,
            b"map" => self.map = v,
            b"offset" | b"numbytes" => self.old = true,
            _ => {}
        }
    }

    fn is_sparse(&self) -> bool {
        self.major.is_some() || self.map.is_some() || self.old || self.real_size.is_some()
    }

    fn layout(&self, raw: &Path) -> Result<SparseLayout> {
        let bad = |reason: &str| Error::UnsupportedEntry {
            path: raw.to_owned(),
            reason: format!("GNU sparse file: {reason}"),
        };
        let num = |v: &[u8]| -> Option<u64> { std::str::from_utf8(v).ok()?.trim().parse().ok() };
        let real_size = self
            .real_size
            .as_deref()
            .and_then(num)
            .ok_or_else(|| bad("no valid GNU.sparse.realsize"))?;
        let version = (self.major.as_deref(), self.minor.as_deref());
        match version {
            (Some(b"1"), Some(b"0")) => Ok(SparseLayout {
                real_size,
                map: None,
            }),
            (None, None) | (Some(b"0"), Some(b"1")) if self.map.is_some() && !self.old => {
                let text = self.map.as_deref().unwrap_or_default();
                let nums: Option<Vec<u64>> = text
                    .split(|b| *b == b',')
                    .filter(|p| !p.is_empty())
                    .map(num)
                    .collect();
                let nums = nums.ok_or_else(|| bad("malformed GNU.sparse.map"))?;
                if nums.len() % 2 != 0 || nums.len() / 2 > MAX_SPARSE_CHUNKS {
                    return Err(bad("malformed GNU.sparse.map"));
                }
                Ok(SparseLayout {
                    real_size,
                    map: Some(nums.chunks(2).map(|c| (c[0], c[1])).collect()),
                })
            }
            _ => Err(bad(
                "format 0.0 (repeated offset/numbytes records) is not supported",
            )),
        }
    }
}

/// Reads the map that leads a format 1.0 sparse entry's data: decimal numbers, one per line
/// (the count, then offset and size of each chunk), padded to a 512-byte block. Returns the
/// chunks and the bytes consumed.
fn read_sparse_map(
    r: &mut dyn Read,
    stored: u64,
) -> std::result::Result<(SparseMap, u64), &'static str> {
    let mut used = 0u64;
    let mut next = |used: &mut u64| -> std::result::Result<u64, &'static str> {
        let mut digits = Vec::new();
        loop {
            let mut b = [0u8; 1];
            if r.read(&mut b).map_err(|_| "unreadable sparse map")? == 0 {
                return Err("archive truncated inside a sparse map");
            }
            *used += 1;
            if *used > stored {
                return Err("sparse map longer than the entry");
            }
            if b[0] == b'\n' {
                break;
            }
            if !b[0].is_ascii_digit() || digits.len() >= 20 {
                return Err("malformed sparse map");
            }
            digits.push(b[0]);
        }
        std::str::from_utf8(&digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or("malformed sparse map")
    };
    let count = next(&mut used)? as usize;
    if count > MAX_SPARSE_CHUNKS {
        return Err("sparse map lists too many chunks");
    }
    let mut map = Vec::with_capacity(count);
    for _ in 0..count {
        let offset = next(&mut used)?;
        let len = next(&mut used)?;
        map.push((offset, len));
    }
    let pad = (512 - used % 512) % 512;
    let mut skip = vec![0u8; pad as usize];
    r.read_exact(&mut skip)
        .map_err(|_| "archive truncated inside a sparse map")?;
    Ok((map, used + pad))
}

fn uid_of(u: u64) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(u.min(u32::MAX as u64 - 1) as u32)
}

fn gid_of(g: u64) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(g.min(u32::MAX as u64 - 1) as u32)
}

fn set_xattrs_fd(fd: impl AsFd, xattrs: &[(Vec<u8>, Vec<u8>)], raw: &Path) -> Result<()> {
    for (k, v) in xattrs {
        match rustix::fs::fsetxattr(fd.as_fd(), k.as_slice(), v, rustix::fs::XattrFlags::empty()) {
            Ok(()) => {}
            Err(Errno::PERM | Errno::NOTSUP) => {
                tracing::warn!(path = %raw.display(), xattr = %String::from_utf8_lossy(k), "xattr not applied");
            }
            Err(e) => return Err(Error::sys("setxattr", raw, e)),
        }
    }
    Ok(())
}

/// Removes `name` in `dirfd` recursively without following symlinks; missing is fine.
pub(crate) fn remove_all_at(dirfd: impl AsFd, name: &OsStr, raw: &Path) -> Result<()> {
    let dirfd = dirfd.as_fd();
    let st = match rustix::fs::statat(dirfd, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(Error::sys("stat", raw, e)),
    };
    if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
        let fd = rustix::fs::openat(
            dirfd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::sys("open", raw, e))?;
        let mut children = Vec::new();
        for de in rustix::fs::Dir::read_from(&fd).map_err(|e| Error::sys("readdir", raw, e))? {
            let de = de.map_err(|e| Error::sys("readdir", raw, e))?;
            let n = OsStr::from_bytes(de.file_name().to_bytes()).to_owned();
            if n != "." && n != ".." {
                children.push(n);
            }
        }
        for c in children {
            remove_all_at(&fd, &c, &raw.join(&c))?;
        }
        rustix::fs::unlinkat(dirfd, name, AtFlags::REMOVEDIR)
            .map_err(|e| Error::sys("rmdir", raw, e))
    } else {
        rustix::fs::unlinkat(dirfd, name, AtFlags::empty())
            .map_err(|e| Error::sys("unlink", raw, e))
    }
}
