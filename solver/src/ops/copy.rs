//! Docker's COPY/ADD rules over real directories.
//!
//! Sources are selected from `src_root` exactly as the context checksum selects them
//! ([`crate::context::walk`]): wildcards per path segment (Go's `filepath.Match`), symlinks on a
//! source path followed but clamped to the root, `.dockerignore` applied, nothing outside the
//! root ever read. A source directory copies its contents; a top-level source symlink is
//! followed; symlinks inside a copied directory are copied as symlinks; hard links within one
//! copy are kept; permissions and mtimes are kept.
//!
//! The destination is a container rootfs that may hold hostile symlinks (`/app -> /etc`,
//! `-> ../../..`). Every directory under `dest_root` is opened through [`kiln_sys::Root`]
//! (`openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`), so symlinks resolve as they would inside
//! the container and never outside it; entries are then created with `*at` calls on that
//! descriptor, and a final component that is a symlink is replaced, never written through.
//! Archive entries (`ADD app.tar.gz /`) go through the same calls, so `..` and absolute names
//! stay inside too.

use crate::context::glob::{clean, has_meta};
use crate::context::ignore::Matcher;
use crate::context::walk::{Entry, EntryKind, Meta, Walker, normalize_source, parallel_map};
use crate::ops::archive;
use kiln_graph::CopyAction;
use kiln_sys::{MkdirAll, Root};
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid};
use rustix::io::Errno;
use std::collections::HashMap;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::incremental::Reuse;

/// Errors of COPY/ADD.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A source is missing, ignored, or an ignore/`--exclude` pattern is malformed.
    #[error(transparent)]
    Source(#[from] crate::context::Error),
    /// Several sources (or a wildcard matching several) into a destination without `/`.
    #[error(
        "When using COPY with more than one source file, the destination must be a directory and end with a /"
    )]
    DestNotDirectory { dest: String },
    /// `--chmod` that is neither an octal mode nor a symbolic one.
    #[error(
        "invalid --chmod {0:?}: expected an octal mode such as 0755 or a symbolic one such as u+x,go-w"
    )]
    InvalidChmod(String),
    /// A non-directory would replace a directory (or a directory is needed where a file is).
    #[error("cannot copy to {path}: {reason}")]
    Conflict { path: String, reason: &'static str },
    /// A filesystem call failed.
    #[error("failed to {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub(super) type Result<T, E = Error> = std::result::Result<T, E>;

/// `--chown` resolved to numbers (the caller resolves names against the destination's
/// `/etc/passwd` and `/etc/group`; `--chown=user` uses the user's primary group).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyIds {
    pub uid: u32,
    pub gid: u32,
}

impl CopyIds {
    /// root:root.
    pub const ROOT: CopyIds = CopyIds { uid: 0, gid: 0 };
}

/// Owner of what one copy writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Owner {
    /// `None` keeps the source's owner.
    pub(super) uid: Option<u32>,
    pub(super) gid: Option<u32>,
}

/// What a copy wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    /// Devices, fifos.
    pub special: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Archives extracted (ADD).
    pub archives: u64,
}

/// Runs one COPY/ADD: `action.src` from `src_root` to `action.dest` inside `dest_root`.
///
/// `exclude_from_context` is `Some(.dockerignore matcher)` exactly when the source is the build
/// context. Ownership follows docker: with `ids` (`--chown`) everything copied, extracted or
/// created is owned by them; without, a context copy is owned by root (0:0) and a copy from a
/// stage or image keeps the source's owners; entries extracted from an archive (ADD) keep the
/// archive's owners; created parent directories are owned by `ids`, else root.
///
/// All sources are resolved (and missing ones reported) before anything is written.
pub fn copy(
    src_root: &Path,
    dest_root: &Path,
    action: &CopyAction,
    ids: Option<CopyIds>,
    exclude_from_context: Option<&Matcher>,
) -> Result<CopyStats> {
    copy_with(
        src_root,
        dest_root,
        action,
        ids,
        exclude_from_context,
        None,
        None,
    )
}

/// [`copy`], noting what it writes in `reuse` and leaving the files it says are already
/// there as they are (an incremental copy, [`super::incremental`]); sources `known` (what the
/// context checksum's walk of `src_root` with these ignore patterns selected) are not walked
/// again.
#[tracing::instrument(skip_all, fields(dest = %action.dest))]
pub(crate) fn copy_with(
    src_root: &Path,
    dest_root: &Path,
    action: &CopyAction,
    ids: Option<CopyIds>,
    exclude_from_context: Option<&Matcher>,
    reuse: Option<Arc<Reuse>>,
    known: Option<Arc<crate::context::walk::Selected>>,
) -> Result<CopyStats> {
    let owner = match (ids, exclude_from_context) {
        (Some(ids), _) => Owner {
            uid: Some(ids.uid),
            gid: Some(ids.gid),
        },
        (None, Some(_)) => Owner {
            uid: Some(0),
            gid: Some(0),
        },
        (None, None) => Owner {
            uid: None,
            gid: None,
        },
    };
    let chmod = action.chmod.as_deref().map(parse_chmod).transpose()?;
    let excludes = Matcher::new(&action.exclude).map_err(crate::context::Error::from)?;
    let empty = Matcher::default();
    let walker = Walker::open(src_root, exclude_from_context.unwrap_or(&empty))?.with_known(known);

    // Expand sources first: every error about sources comes before anything is written.
    // Each match: its path in the source, the part of it `--parents` keeps, its entries.
    let mut matches: Vec<(String, String, Vec<Entry>)> = Vec::new();
    for raw in &action.src {
        let source = normalize_source(raw);
        // `--parents` keeps the path below the first `./` pivot (`a/./b/c` keeps `b/c`), else
        // all of it (dockerfile_parents_test.go testCopyRelativeParents). Wildcards match one
        // segment each, so the pivot is a count of leading segments.
        let pivot = match raw.split_once("/./") {
            Some((before, _)) if action.parents => match normalize_source(before).as_str() {
                "." => 0,
                p => p.split('/').count(),
            },
            _ => 0,
        };
        let names = if source == "." {
            vec![String::new()]
        } else {
            walker.expand(&source)?
        };
        for name in names {
            match walker.select_one(&name)? {
                // `--exclude` names what a source brings, not a directory matched as a whole:
                // that one is still made, maybe empty (exclude_patterns_test.go: `ADD
                // --exclude=* dir* /6` makes an empty /6).
                Some(entries)
                    if !name.is_empty()
                        && !excludes.is_empty()
                        && excludes.matches(&name)
                        && entries
                            .first()
                            .is_some_and(|e| e.meta.kind() != EntryKind::Dir) => {}
                Some(entries) => {
                    let kept = name.splitn(pivot + 1, '/').nth(pivot).unwrap_or("");
                    let kept = kept.to_owned();
                    matches.push((name, kept, entries));
                }
                None if has_meta(&source) => {}
                None => return Err(crate::context::Error::NotFound { path: source }.into()),
            }
        }
    }

    let dest_is_dir = action.dest.ends_with('/')
        || action.dest.ends_with("/.")
        || action.dest == "."
        || action.dest.is_empty();
    if (action.src.len() > 1 || matches.len() > 1) && !dest_is_dir {
        // One wildcard source that matches several directories or archives (ADD) goes into the
        // destination one match after another, as BuildKit's file backend does (`docopy`
        // copies each match to the same path): a directory merges its content into it, an
        // archive is unpacked into it (dockerfile_add_test.go testDockerfileAddArchiveWildcard:
        // `ADD *.tar /dest`; exclude_patterns_test.go: `ADD --exclude=... dir* /5`). Several
        // files would overwrite one another there: that stays an error.
        let mut merges = action.src.len() == 1;
        for (_, _, entries) in &matches {
            let Some(top) = entries.first() else { continue };
            if !merges {
                break;
            }
            merges = match top.meta.kind() {
                EntryKind::Dir => true,
                EntryKind::File if action.extract_archive => {
                    archive::sniff_archive(&walker, top)?.is_some()
                }
                _ => false,
            };
        }
        if !merges {
            return Err(Error::DestNotDirectory {
                dest: action.dest.clone(),
            });
        }
    }
    let dest_rel = rel(&action.dest);
    let mut out = DestTree::open(dest_root, owner, chmod)?;
    out.reuse = reuse;
    let dest_exists_dir = out.open_dir(&dest_rel).is_ok();

    for (name, kept, entries) in &matches {
        let Some(top) = entries.first() else { continue };
        let base = if action.parents {
            join(&dest_rel, &parent_of(kept))
        } else {
            dest_rel.clone()
        };
        if top.meta.kind() == EntryKind::Dir {
            let target = if action.parents {
                join(&dest_rel, kept)
            } else {
                dest_rel.clone()
            };
            let mut dirs = Vec::new();
            let mut plain: Vec<(&Entry, String)> = Vec::new();
            let mut linked: Vec<(&Entry, String)> = Vec::new();
            // A destination this copy creates is made like its parents: `--chown` or 0:0, an
            // octal `--chmod` or 0755, not the source directory's owner and mode (fsutil's
            // copier makes it with MkdirAll; dockerfile_copy_test.go testCopyChownExistingDir:
            // "creates the target directory (as root)"). With `--parents` the directory is a
            // copy of the source's.
            let made_as = if action.parents {
                Some(&top.meta)
            } else {
                None
            };
            // (path, source meta, kept from the previous layer)
            if out.dir(&target, made_as)? {
                dirs.push((target.clone(), top.meta, false));
            }
            let prefix_len = if name.is_empty() { 0 } else { name.len() + 1 };
            for entry in &entries[1..] {
                let inner = &entry.name[prefix_len.min(entry.name.len())..];
                if !excludes.is_empty()
                    && (excludes.matches(inner) || excludes.matches(&entry.name))
                {
                    continue;
                }
                let path = join(&target, inner);
                if entry.meta.kind() == EntryKind::Dir {
                    if out.dir_kept(&path, &entry.meta) {
                        dirs.push((path, entry.meta, true));
                    } else if out.dir(&path, Some(&entry.meta))? {
                        dirs.push((path, entry.meta, false));
                    }
                } else if entry.meta.nlink > 1 && entry.meta.kind() == EntryKind::File {
                    // Hard links need the first copy in place: written in order, below.
                    linked.push((entry, path));
                } else {
                    plain.push((entry, path));
                }
            }
            // An incremental copy first leaves out the files the previous layer has (on this
            // thread: it is a lookup each, all under one lock).
            if out.reuse.is_some() {
                plain.retain(|(entry, path)| !out.kept(entry, path));
            }
            // Directories exist now; plain files go in parallel.
            let threads = if plain.len() < 64 { 1 } else { copy_threads() };
            let written = parallel_map(&plain, threads, |(entry, path)| {
                out.write_new(entry, path, &walker)
            });
            for ((entry, path), done) in plain.iter().zip(written) {
                if !done? {
                    out.entry(entry, path, &walker)?;
                }
            }
            for (entry, path) in &linked {
                out.entry(entry, path, &walker)?;
            }
            // Mtimes of the directories this copy created, last: writing children changed them.
            // Existing directories merged into keep their metadata; the previous layer's
            // directories an incremental copy kept only need them when something was written
            // in them.
            for (path, meta, kept) in dirs.iter().rev() {
                if *kept && !out.reuse.as_ref().is_some_and(|r| r.touched(path)) {
                    continue;
                }
                out.set_dir_times(path, meta)?;
            }
            continue;
        }
        let leaf = name.rsplit('/').next().unwrap_or(name);
        if action.extract_archive
            && top.meta.kind() == EntryKind::File
            && let Some(kind) = archive::sniff_archive(&walker, top)?
        {
            out.mkdir_all(&dest_rel)?;
            archive::extract(&mut out, &walker, top, kind, &dest_rel, ids)?;
            Counters::add(&out.stats.archives, 1);
            continue;
        }
        let target = if dest_is_dir || dest_exists_dir || action.parents {
            join(&base, leaf)
        } else {
            dest_rel.clone()
        };
        out.entry(top, &target, &walker)?;
    }
    Ok(out.stats.snapshot())
}

/// `--chmod`: an octal mode, or chmod(1)-style symbolic clauses applied to each source mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Chmod {
    Octal(u32),
    /// Clauses of (who mask, operator, permission letters).
    Symbolic(Vec<(u32, char, String)>),
}

impl Chmod {
    /// The mode for an entry whose source permission bits are `mode`.
    fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let clauses = match self {
            Chmod::Octal(m) => return *m,
            Chmod::Symbolic(c) => c,
        };
        let mut mode = mode & 0o7777;
        for (who, op, perms) in clauses {
            let mut bits = 0;
            for p in perms.chars() {
                bits |= match p {
                    'r' => 0o444,
                    'w' => 0o222,
                    'x' => 0o111,
                    'X' if is_dir || mode & 0o111 != 0 => 0o111,
                    's' => 0o6000,
                    't' => 0o1000,
                    _ => 0,
                };
            }
            // Which bits `who` may touch: its rwx columns plus its special bit.
            let mut mask = 0;
            if who & 0o700 != 0 {
                mask |= 0o4700;
            }
            if who & 0o070 != 0 {
                mask |= 0o2070;
            }
            if who & 0o007 != 0 {
                mask |= 0o1007;
            }
            let bits = bits & mask;
            mode = match op {
                '+' => mode | bits,
                '-' => mode & !bits,
                _ => (mode & !mask) | bits,
            };
        }
        mode
    }
}

/// Threads for writing files: a few, as file creation is mostly syscalls.
fn copy_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(4)
}

fn parse_chmod(s: &str) -> Result<Chmod> {
    let bad = || Error::InvalidChmod(s.to_string());
    if s.chars().all(|c| c.is_ascii_digit()) {
        return match u32::from_str_radix(s, 8) {
            Ok(m) if m <= 0o7777 && !s.is_empty() => Ok(Chmod::Octal(m)),
            _ => Err(bad()),
        };
    }
    let mut clauses = Vec::new();
    for clause in s.split(',') {
        let ops_at = clause.find(['+', '-', '=']).ok_or_else(bad)?;
        let (who_text, mut rest) = clause.split_at(ops_at);
        let mut who = 0;
        for w in who_text.chars() {
            who |= match w {
                'u' => 0o700,
                'g' => 0o070,
                'o' => 0o007,
                'a' => 0o777,
                _ => return Err(bad()),
            };
        }
        if who == 0 {
            who = 0o777;
        }
        while let Some(op) = rest.chars().next() {
            if !matches!(op, '+' | '-' | '=') {
                return Err(bad());
            }
            let perms_end = rest[1..]
                .find(['+', '-', '='])
                .map_or(rest.len(), |i| i + 1);
            let perms = &rest[1..perms_end];
            if !perms.chars().all(|c| "rwxXst".contains(c)) {
                return Err(bad());
            }
            clauses.push((who, op, perms.to_string()));
            rest = &rest[perms_end..];
        }
    }
    Ok(Chmod::Symbolic(clauses))
}

/// A destination path as a clean path relative to the root (`""` = the root).
pub(super) fn rel(path: &str) -> String {
    clean(&format!("/{path}"))
        .trim_start_matches('/')
        .to_string()
}

pub(super) fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}/{b}"),
    }
}

fn parent_of(name: &str) -> String {
    name.rsplit_once('/')
        .map(|(p, _)| p.to_string())
        .unwrap_or_default()
}

pub(super) fn split_parent(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

fn timespec(ns: i64) -> Timespec {
    Timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000),
    }
}

pub(super) fn times(mtime_ns: i64) -> Timestamps {
    Timestamps {
        last_access: timespec(mtime_ns),
        last_modification: timespec(mtime_ns),
    }
}

/// [`CopyStats`] counted from several threads.
#[derive(Debug, Default)]
pub(super) struct Counters {
    files: AtomicU64,
    dirs: AtomicU64,
    symlinks: AtomicU64,
    pub(super) hardlinks: AtomicU64,
    special: AtomicU64,
    bytes: AtomicU64,
    archives: AtomicU64,
}

impl Counters {
    pub(super) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> CopyStats {
        CopyStats {
            files: self.files.load(Ordering::Relaxed),
            dirs: self.dirs.load(Ordering::Relaxed),
            symlinks: self.symlinks.load(Ordering::Relaxed),
            hardlinks: self.hardlinks.load(Ordering::Relaxed),
            special: self.special.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            archives: self.archives.load(Ordering::Relaxed),
        }
    }
}

/// The destination rootfs, written only through descriptors resolved inside it.
pub(super) struct DestTree {
    root: PathBuf,
    root_fd: Root,
    pub(super) ids: Owner,
    pub(super) chmod: Option<Chmod>,
    /// Source (dev, inode) of multiply-linked files → where the first copy went.
    links: HashMap<(u64, u64), String>,
    pub(super) stats: Counters,
    /// An incremental copy's manifest ([`super::incremental`]).
    reuse: Option<Arc<Reuse>>,
}

impl DestTree {
    fn open(root: &Path, ids: Owner, chmod: Option<Chmod>) -> Result<Self> {
        let root_fd = Root::open(root).map_err(|e| Error::Io {
            op: "open destination",
            path: root.to_path_buf(),
            source: e.os_error(),
        })?;
        Ok(DestTree {
            root: root.to_path_buf(),
            root_fd,
            ids,
            chmod,
            links: HashMap::new(),
            stats: Counters::default(),
            reuse: None,
        })
    }

    pub(super) fn err(&self, op: &'static str, path: &str) -> impl FnOnce(Errno) -> Error {
        let path = self.root.join(path);
        move |e| Error::Io {
            op,
            path,
            source: e.into(),
        }
    }

    /// Opens a directory of the rootfs, resolving symlinks as the container would, inside it.
    pub(super) fn open_dir(&self, path: &str) -> rustix::io::Result<OwnedFd> {
        self.root_fd.open_dir(path).map_err(|e| e.errno())
    }

    fn owner(&self, meta: Option<&Meta>) -> (Option<Uid>, Option<Gid>) {
        let uid = self.ids.uid.or(meta.map(|m| m.uid)).unwrap_or(0);
        let gid = self.ids.gid.or(meta.map(|m| m.gid)).unwrap_or(0);
        (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
    }

    /// Opens `path` as a directory, creating missing components (mode 0755, owned per
    /// `--chown`) the way `mkdir -p` inside the container would: a dangling symlink on the way
    /// is followed (inside the rootfs) and its target created.
    pub(super) fn mkdir_all(&mut self, path: &str) -> Result<OwnedFd> {
        match self.open_dir(path) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) => {}
            Err(Errno::NOTDIR) => {
                return Err(Error::Conflict {
                    path: format!("/{path}"),
                    reason: "a parent is not a directory",
                });
            }
            Err(e) => return Err(self.err("open directory", path)(e)),
        }
        let (uid, gid) = self.owner(None);
        // Created parents take an octal `--chmod` too (fsutil's `copy.Copy` makes them with
        // `ci.Mode`; dockerfile_copy_test.go testCopyChmod: `COPY --chmod=777 foo
        // /parent/foo` makes /parent 0777).
        let mode = match &self.chmod {
            Some(Chmod::Octal(m)) => *m,
            _ => 0o755,
        };
        let how = MkdirAll {
            mode: Mode::from_raw_mode(mode),
            owner: uid.zip(gid),
            access: OFlags::RDONLY,
        };
        let made = self.root_fd.mkdir_all(path, &how).map_err(|e| {
            let at = e.path().to_string_lossy();
            if e.op() == kiln_sys::Op::Open && e.errno() == Errno::NOTDIR {
                return Error::Conflict {
                    path: format!("/{at}"),
                    reason: "not a directory",
                };
            }
            let op = match e.op() {
                kiln_sys::Op::Open => "open directory",
                kiln_sys::Op::Mkdir | kiln_sys::Op::Resolve => "create directory",
                other => other.as_str(),
            };
            self.err(op, &at)(e.errno())
        })?;
        Counters::add(&self.stats.dirs, made.created as u64);
        Ok(made.dir)
    }

    /// Makes `path` a directory with the source directory's mode and owner (an existing one is
    /// kept as is, merged into). Returns whether it was created.
    pub(super) fn dir(&mut self, path: &str, meta: Option<&Meta>) -> Result<bool> {
        if let Ok(fd) = self.open_dir(path) {
            // The previous layer's directory, made by the copy this one repeats: made again.
            if let Some(r) = self.reuse.as_ref().filter(|r| r.made_dir(path)) {
                r.dir(path, meta);
                self.set_dir_meta(&fd, path, meta, true)?;
                return Ok(true);
            }
            return Ok(false);
        }
        let (parent, leaf) = split_parent(path);
        let parent_fd = self.mkdir_all(parent)?;
        if leaf.is_empty() {
            return Ok(false);
        }
        self.remove_non_dir(&parent_fd, leaf, path)?;
        rustix::fs::mkdirat(&parent_fd, leaf, Mode::from_raw_mode(0o700))
            .map_err(self.err("create directory", path))?;
        let fd = rustix::fs::openat(
            &parent_fd,
            leaf,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(self.err("open directory", path))?;
        self.set_dir_meta(&fd, path, meta, false)?;
        if let Some(r) = &self.reuse {
            r.dir(path, meta);
        }
        Counters::add(&self.stats.dirs, 1);
        Ok(true)
    }

    /// Whether the directory `path` is the previous layer's, made from a source directory in
    /// the state `meta` is (an incremental copy keeps it as it is).
    fn dir_kept(&self, path: &str, meta: &Meta) -> bool {
        self.reuse.as_ref().is_some_and(|r| r.keep_dir(path, meta))
    }

    /// Owner and mode of a directory this copy makes (`only_changes`: only what differs, so
    /// an overlay copies up no directory that stays the same).
    fn set_dir_meta(
        &self,
        fd: &OwnedFd,
        path: &str,
        meta: Option<&Meta>,
        only_changes: bool,
    ) -> Result<()> {
        let (uid, gid) = self.owner(meta);
        let source_mode = meta.map_or(0o755, |m| m.mode & 0o7777);
        let mode = self
            .chmod
            .as_ref()
            .map_or(source_mode, |c| c.apply(source_mode, true));
        let now = if only_changes {
            Some(rustix::fs::fstat(fd).map_err(self.err("stat", path))?)
        } else {
            None
        };
        let same_owner = now.as_ref().is_some_and(|st| {
            Some(Uid::from_raw(st.st_uid)) == uid && Some(Gid::from_raw(st.st_gid)) == gid
        });
        if !same_owner {
            rustix::fs::fchown(fd, uid, gid).map_err(self.err("chown", path))?;
        }
        let same_mode = now
            .as_ref()
            .is_some_and(|st| Meta::from_stat(st).mode & 0o7777 == mode);
        if !same_mode || !same_owner {
            rustix::fs::fchmod(fd, Mode::from_raw_mode(mode)).map_err(self.err("chmod", path))?;
        }
        Ok(())
    }

    fn set_dir_times(&self, path: &str, meta: &Meta) -> Result<()> {
        let fd = self
            .open_dir(path)
            .map_err(self.err("open directory", path))?;
        if self.reuse.is_some() {
            // Over a previous layer: a directory whose time is right is left alone.
            let st = rustix::fs::fstat(&fd).map_err(self.err("stat", path))?;
            if Meta::from_stat(&st).mtime_ns == meta.mtime_ns {
                return Ok(());
            }
        }
        rustix::fs::futimens(&fd, &times(meta.mtime_ns)).map_err(self.err("set times of", path))
    }

    /// Removes whatever non-directory is at `leaf` (a symlink is removed, never followed); a
    /// directory there is a conflict.
    pub(super) fn remove_non_dir(&self, parent: &OwnedFd, leaf: &str, path: &str) -> Result<()> {
        match rustix::fs::statat(parent, leaf, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => {
                if FileType::from_raw_mode(Meta::from_stat(&st).mode) == FileType::Directory {
                    return Err(Error::Conflict {
                        path: format!("/{path}"),
                        reason: "a directory is in the way",
                    });
                }
                rustix::fs::unlinkat(parent, leaf, AtFlags::empty())
                    .map_err(self.err("remove", path))
            }
            Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(self.err("stat", path)(e)),
        }
    }

    /// Copies one non-directory source entry to `path`.
    fn entry(&mut self, entry: &Entry, path: &str, walker: &Walker<'_>) -> Result<()> {
        let (parent, leaf) = split_parent(path);
        if leaf.is_empty() {
            return Err(Error::Conflict {
                path: "/".into(),
                reason: "a directory is in the way",
            });
        }
        let parent_fd = self.mkdir_all(parent)?;
        if self.kept(entry, path) {
            return Ok(());
        }
        self.remove_non_dir(&parent_fd, leaf, path)?;
        let meta = entry.meta;
        if meta.nlink > 1 && meta.kind() == EntryKind::File {
            if let Some(first) = self.links.get(&(meta.dev, meta.ino)).cloned() {
                let (fp, fl) = split_parent(&first);
                let first_parent = self.open_dir(fp).map_err(self.err("open directory", fp))?;
                rustix::fs::linkat(&first_parent, fl, &parent_fd, leaf, AtFlags::empty())
                    .map_err(self.err("link", path))?;
                Counters::add(&self.stats.hardlinks, 1);
                return Ok(());
            }
            self.links.insert((meta.dev, meta.ino), path.to_string());
        }
        if meta.kind() == EntryKind::Dir {
            self.dir(path, Some(&meta))?;
            return Ok(());
        }
        self.write_at(&parent_fd, leaf, path, entry, walker)
    }

    /// Whether `path` already is this entry's copy (a file of the previous layer an
    /// incremental copy keeps); otherwise notes that it is written.
    fn kept(&self, entry: &Entry, path: &str) -> bool {
        let Some(r) = &self.reuse else { return false };
        if entry.meta.kind() == EntryKind::File {
            r.keep_file(path, &entry.meta)
        } else {
            if entry.meta.kind() != EntryKind::Dir {
                r.wrote(path);
            }
            false
        }
    }

    /// Copies a source file (not multiply linked, not [`kept`](Self::kept)) whose
    /// destination parent already exists. `Ok(false)` when the parent is missing (the caller
    /// then uses [`entry`](Self::entry), which asks [`kept`](Self::kept) again: the file is
    /// noted as written twice and not kept next time either, which only costs a copy).
    fn write_new(&self, entry: &Entry, path: &str, walker: &Walker<'_>) -> Result<bool> {
        let (parent, leaf) = split_parent(path);
        let parent_fd = match self.open_dir(parent) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(false),
            Err(e) => return Err(self.err("open directory", parent)(e)),
        };
        self.remove_non_dir(&parent_fd, leaf, path)?;
        self.write_at(&parent_fd, leaf, path, entry, walker)?;
        Ok(true)
    }

    /// Writes a non-directory entry as `leaf` of `parent_fd` (nothing is there any more).
    fn write_at(
        &self,
        parent_fd: &OwnedFd,
        leaf: &str,
        path: &str,
        entry: &Entry,
        walker: &Walker<'_>,
    ) -> Result<()> {
        let meta = entry.meta;
        let (uid, gid) = self.owner(Some(&meta));
        match meta.kind() {
            EntryKind::File => {
                let mut src = open_source(walker, entry)?;
                let mode = self
                    .chmod
                    .as_ref()
                    .map_or(meta.mode & 0o7777, |c| c.apply(meta.mode, false));
                self.write_file(
                    parent_fd,
                    leaf,
                    path,
                    &mut src,
                    uid,
                    gid,
                    mode,
                    meta.mtime_ns,
                )?;
            }
            EntryKind::Symlink => {
                let target = entry.target.clone().unwrap_or_default();
                self.symlink(parent_fd, leaf, path, &target, uid, gid, meta.mtime_ns)?;
            }
            EntryKind::Special => {
                let mode = self
                    .chmod
                    .as_ref()
                    .map_or(meta.mode & 0o7777, |c| c.apply(meta.mode, false));
                self.special(parent_fd, leaf, path, meta.mode, meta.rdev, uid, gid, mode)?;
                self.set_times_nofollow(parent_fd, leaf, path, meta.mtime_ns)?;
            }
            EntryKind::Dir => {}
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn write_file(
        &self,
        parent: &OwnedFd,
        leaf: &str,
        path: &str,
        content: &mut dyn Read,
        uid: Option<Uid>,
        gid: Option<Gid>,
        mode: u32,
        mtime_ns: i64,
    ) -> Result<()> {
        let fd = rustix::fs::openat(
            parent,
            leaf,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(self.err("create", path))?;
        let mut file = std::fs::File::from(fd);
        let n = std::io::copy(content, &mut file).map_err(|e| Error::Io {
            op: "write",
            path: self.root.join(path),
            source: e,
        })?;
        rustix::fs::fchown(&file, uid, gid).map_err(self.err("chown", path))?;
        rustix::fs::fchmod(&file, Mode::from_raw_mode(mode)).map_err(self.err("chmod", path))?;
        rustix::fs::futimens(&file, &times(mtime_ns)).map_err(self.err("set times of", path))?;
        Counters::add(&self.stats.files, 1);
        Counters::add(&self.stats.bytes, n);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn symlink(
        &self,
        parent: &OwnedFd,
        leaf: &str,
        path: &str,
        target: &[u8],
        uid: Option<Uid>,
        gid: Option<Gid>,
        mtime_ns: i64,
    ) -> Result<()> {
        rustix::fs::symlinkat(target, parent, leaf).map_err(self.err("create symlink", path))?;
        rustix::fs::chownat(parent, leaf, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(self.err("chown", path))?;
        self.set_times_nofollow(parent, leaf, path, mtime_ns)?;
        Counters::add(&self.stats.symlinks, 1);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn special(
        &self,
        parent: &OwnedFd,
        leaf: &str,
        path: &str,
        raw_mode: u32,
        rdev: u64,
        uid: Option<Uid>,
        gid: Option<Gid>,
        mode: u32,
    ) -> Result<()> {
        let file_type = FileType::from_raw_mode(raw_mode);
        rustix::fs::mknodat(parent, leaf, file_type, Mode::from_raw_mode(mode), rdev)
            .map_err(self.err("create node", path))?;
        rustix::fs::chownat(parent, leaf, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(self.err("chown", path))?;
        rustix::fs::chmodat(parent, leaf, Mode::from_raw_mode(mode), AtFlags::empty())
            .map_err(self.err("chmod", path))?;
        Counters::add(&self.stats.special, 1);
        Ok(())
    }

    fn set_times_nofollow(&self, parent: &OwnedFd, leaf: &str, path: &str, ns: i64) -> Result<()> {
        rustix::fs::utimensat(parent, leaf, &times(ns), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(self.err("set times of", path))
    }
}

pub(super) fn open_source(walker: &Walker<'_>, entry: &Entry) -> Result<std::fs::File> {
    Ok(walker.open_file(&entry.real)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chmod_octal_and_symbolic() {
        let apply = |s: &str, mode: u32, dir: bool| parse_chmod(s).map(|c| c.apply(mode, dir)).ok();
        assert_eq!(apply("755", 0o600, false), Some(0o755));
        assert_eq!(apply("0640", 0o777, false), Some(0o640));
        assert_eq!(apply("4755", 0, false), Some(0o4755));
        assert_eq!(apply("u+x", 0o644, false), Some(0o744));
        assert_eq!(apply("go-w", 0o666, false), Some(0o644));
        assert_eq!(apply("a=r", 0o777, false), Some(0o444));
        assert_eq!(apply("+x", 0o644, false), Some(0o755));
        assert_eq!(apply("u=rwx,g=rx,o=", 0o000, false), Some(0o750));
        assert_eq!(apply("a+X", 0o644, false), Some(0o644));
        assert_eq!(apply("a+X", 0o644, true), Some(0o755));
        assert_eq!(apply("a+X", 0o744, false), Some(0o755));
        assert_eq!(apply("u+s,+t", 0o755, false), Some(0o5755));
        assert_eq!(apply("u+r-w", 0o200, false), Some(0o400));
        for bad in ["", "888", "17777", "-1x", "q+x", "u+z", "u", "u+x,,"] {
            assert!(parse_chmod(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn destination_paths_are_clamped_relative_paths() {
        assert_eq!(rel("/app/"), "app");
        assert_eq!(rel("/"), "");
        assert_eq!(rel("../../etc/passwd"), "etc/passwd");
        assert_eq!(rel("/a/./b/../c"), "a/c");
    }
}
