//! Selecting the entries of a context that COPY/ADD reference, without ever leaving the root.
//!
//! Every directory is opened relative to its parent's descriptor with `O_NOFOLLOW`, so a symlink
//! inside the context is recorded as a symlink and never followed while walking. A source path
//! as written (`COPY link/sub/file .`) is resolved the way BuildKit scopes it: symlinks on the
//! way are followed, but inside the root (absolute targets and `..` are clamped to the root).
//! Ignore patterns are applied to the real path before anything below an excluded directory is
//! stat'ed; an excluded directory is entered only when a `!` exception could re-include
//! something in it.

use super::Error;
use super::glob::{clean, glob_match, has_meta};
use super::ignore::Matcher;
use kiln_sys::Beneath;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

/// Symlink hops allowed while resolving one source path (as Linux's `MAXSYMLINKS`).
const MAX_SYMLINK_HOPS: usize = 40;

/// The type of a selected entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    /// Device, fifo or socket (recorded with its `rdev`, never read).
    Special,
}

/// Metadata of an entry, as read by `lstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Full `st_mode` (type and permission bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub rdev: u64,
    pub nlink: u64,
    pub dev: u64,
}

impl Meta {
    /// Converts rustix's `Stat` (whose field types differ between architectures).
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    pub(crate) fn from_stat(st: &rustix::fs::Stat) -> Self {
        let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
        Meta {
            mode: st.st_mode as u32,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            size: st.st_size as u64,
            mtime_ns: ns(st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime_ns: ns(st.st_ctime as i64, st.st_ctime_nsec as i64),
            ino: st.st_ino as u64,
            rdev: st.st_rdev as u64,
            nlink: st.st_nlink as u64,
            dev: st.st_dev as u64,
        }
    }

    /// The entry type from `st_mode`.
    pub fn kind(&self) -> EntryKind {
        match FileType::from_raw_mode(self.mode) {
            FileType::RegularFile => EntryKind::File,
            FileType::Directory => EntryKind::Dir,
            FileType::Symlink => EntryKind::Symlink,
            _ => EntryKind::Special,
        }
    }
}

/// One selected entry of the context.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Path as the build names it: the source path as written (wildcards expanded) plus the
    /// path below it; `""` for the root itself.
    pub name: String,
    /// Real path relative to the context root (after following symlinks of the source path).
    pub real: String,
    pub meta: Meta,
    /// Symlink target, for symlinks.
    pub target: Option<Vec<u8>>,
}

/// One source path of a COPY/ADD: what it was written as and what it selected.
#[derive(Debug, Clone)]
pub struct Selection {
    /// The source path as written, cleaned (`.` = the whole context).
    pub source: String,
    /// Entries in walk order: depth first, each directory's children sorted by name, a
    /// directory directly followed by its subtree (so `a`, `a/b`, `a.txt`). This order is
    /// part of the context checksum.
    pub entries: Vec<Entry>,
}

fn io_err(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(rustix::io::Errno) -> Error {
    let path = path.into();
    move |e| Error::Io {
        op,
        path,
        source: e.into(),
    }
}

/// [`io_err`] for a failed [`kiln_sys`] call: its errno, under this walk's operation and path.
fn sys_err(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(kiln_sys::Error) -> Error {
    let to_error = io_err(op, path);
    move |e| to_error(e.errno())
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        let mut s = String::with_capacity(a.len() + 1 + b.len());
        s.push_str(a);
        s.push('/');
        s.push_str(b);
        s
    }
}

/// What the walks of one context root under one set of ignore patterns selected, by source
/// name ([`Walker::select_one`]). The context checksum makes it and the copies of the same
/// build use it, so a COPY of a large context does not walk it a second time; its entries are
/// the context as the checksum (the step's cache key) saw it.
#[derive(Debug, Default)]
pub struct Selected {
    by_name: HashMap<String, Option<Vec<Entry>>>,
}

impl Selected {
    /// Source names selected.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// Walks a context root and selects what `include` names.
pub(crate) struct Walker<'a> {
    root: PathBuf,
    root_fd: Beneath,
    ignore: &'a Matcher,
    /// Selections a walk of the same root with the same ignore patterns made before.
    known: Option<Arc<Selected>>,
    /// Selections made here, kept for [`Walker::take_selected`].
    made: Option<Mutex<Selected>>,
}

impl<'a> Walker<'a> {
    /// Opens `root` (which must be a directory).
    pub(crate) fn open(root: &Path, ignore: &'a Matcher) -> Result<Self, Error> {
        let fd = Beneath::open(root).map_err(sys_err("open context directory", root))?;
        Ok(Walker {
            root: root.to_path_buf(),
            root_fd: fd,
            ignore,
            known: None,
            made: None,
        })
    }

    /// Serves [`select_one`](Self::select_one) from `known` (what a walk of this root with
    /// these ignore patterns selected) where it has the name.
    pub(crate) fn with_known(mut self, known: Option<Arc<Selected>>) -> Self {
        self.known = known;
        self
    }

    /// Keeps what [`select_one`](Self::select_one) selects, for
    /// [`take_selected`](Self::take_selected).
    pub(crate) fn recording(mut self) -> Self {
        self.made = Some(Mutex::default());
        self
    }

    /// What was selected since [`recording`](Self::recording).
    pub(crate) fn take_selected(&self) -> Selected {
        self.made
            .as_ref()
            .map(|m| std::mem::take(&mut *m.lock().unwrap_or_else(|p| p.into_inner())))
            .unwrap_or_default()
    }

    pub(crate) fn host_path(&self, real: &str) -> PathBuf {
        self.root.join(real)
    }

    fn excluded(&self, real: &str) -> bool {
        !real.is_empty() && !self.ignore.is_empty() && self.ignore.matches(real)
    }

    /// Resolves a cleaned relative path inside the root, following symlinks but clamping them
    /// to the root. Returns the real relative path (`""` = root), or `None` when it does not
    /// exist (or is ignored) as the build sees the context.
    pub(crate) fn resolve(&self, path: &str) -> Result<Option<String>, Error> {
        let mut pending: Vec<String> = path
            .split('/')
            .rev()
            .filter(|c| !c.is_empty() && *c != ".")
            .map(str::to_string)
            .collect();
        let mut cur: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(component) = pending.pop() {
            if component == "." {
                continue;
            }
            if component == ".." {
                cur.pop();
                continue;
            }
            cur.push(component);
            let real = cur.join("/");
            let st =
                match rustix::fs::statat(&self.root_fd, real.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => st,
                    Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => return Ok(None),
                    Err(e) => return Err(io_err("stat", self.host_path(&real))(e)),
                };
            let meta = Meta::from_stat(&st);
            if meta.kind() == EntryKind::Symlink {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(Error::SymlinkLoop {
                        path: path.to_string(),
                    });
                }
                let target = rustix::fs::readlinkat(&self.root_fd, real.as_str(), Vec::new())
                    .map_err(io_err("read symlink", self.host_path(&real)))?;
                cur.pop();
                let target = target.as_bytes();
                if target.starts_with(b"/") {
                    cur.clear();
                }
                let target = String::from_utf8_lossy(target);
                pending.extend(
                    target
                        .split('/')
                        .rev()
                        .filter(|c| !c.is_empty() && *c != ".")
                        .map(str::to_string),
                );
                continue;
            }
            if self.excluded(&real)
                && !(meta.kind() == EntryKind::Dir && self.ignore.may_reinclude_within(&real))
            {
                return Ok(None);
            }
        }
        Ok(Some(cur.join("/")))
    }

    /// Expands one source path (wildcards per segment, as Go's `filepath.Match`) into the
    /// names it matches, sorted. A path without wildcards is returned as is.
    pub(crate) fn expand(&self, source: &str) -> Result<Vec<String>, Error> {
        if !has_meta(source) {
            return Ok(vec![source.to_string()]);
        }
        let mut candidates = vec![String::new()];
        for segment in source.split('/') {
            let mut next = Vec::new();
            if segment == "**" {
                // Zero or more directories (BuildKit's `**`, dockerfile_parents_test.go
                // testCopyRelativeParents: `/test/a/b*/./c/**/e`).
                for dir in &candidates {
                    next.push(dir.clone());
                    self.descendants(dir, &mut next)?;
                }
                let mut seen = std::collections::HashSet::new();
                next.retain(|c| seen.insert(c.clone()));
                candidates = next;
                continue;
            }
            for dir in &candidates {
                if !has_meta(segment) {
                    next.push(join(dir, segment));
                    continue;
                }
                let Some(real_dir) = self.resolve(dir)? else {
                    continue;
                };
                let Ok(fd) = self.open_dir_beneath(&real_dir) else {
                    continue;
                };
                for (name, _) in read_dir_sorted(&fd, &self.host_path(&real_dir))? {
                    let name = String::from_utf8_lossy(&name).into_owned();
                    if glob_match(segment, &name)? {
                        next.push(join(dir, &name));
                    }
                }
            }
            candidates = next;
        }
        // Keep only matches that exist as the build sees the context.
        let mut out = Vec::new();
        for c in candidates {
            if self.resolve(&c)?.is_some() {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// Every path below `dir` as the build sees it, each directory before its children.
    fn descendants(&self, dir: &str, out: &mut Vec<String>) -> Result<(), Error> {
        let Some(real_dir) = self.resolve(dir)? else {
            return Ok(());
        };
        let Ok(fd) = self.open_dir_beneath(&real_dir) else {
            return Ok(());
        };
        for (name, kind) in read_dir_sorted(&fd, &self.host_path(&real_dir))? {
            let path = join(dir, &String::from_utf8_lossy(&name));
            out.push(path.clone());
            if kind == FileType::Directory {
                self.descendants(&path, out)?;
            }
        }
        Ok(())
    }

    /// Opens a selected file (by its real path) for reading; any symlink swapped in since the
    /// walk makes this fail rather than be followed.
    pub(crate) fn open_file(&self, real: &str) -> Result<std::fs::File, Error> {
        let fd = self
            .root_fd
            .open_at(real, OFlags::RDONLY | OFlags::NOFOLLOW)
            .map_err(sys_err("open", self.host_path(real)))?;
        Ok(std::fs::File::from(fd))
    }

    /// Opens a real (symlink-free) relative directory path beneath the root.
    fn open_dir_beneath(&self, real: &str) -> Result<OwnedFd, Error> {
        self.open_dir_raw(real.as_bytes(), real)
    }

    /// [`open_dir_beneath`](Self::open_dir_beneath) by the path's bytes on disk (`real`, for
    /// errors, may have replaced bytes that are not UTF-8).
    fn open_dir_raw(&self, raw: &[u8], real: &str) -> Result<OwnedFd, Error> {
        self.root_fd
            .open_dir(OsStr::from_bytes(raw))
            .map_err(sys_err("open directory", self.host_path(real)))
    }

    /// Selects the entries one source path names (`""`/`.` = the whole context). `Ok(None)`
    /// when nothing by that name exists.
    pub(crate) fn select_one(&self, name: &str) -> Result<Option<Vec<Entry>>, Error> {
        if let Some(found) = self.known.as_ref().and_then(|k| k.by_name.get(name)) {
            return Ok(found.clone());
        }
        let found = self.walk_one(name)?;
        if let Some(made) = &self.made {
            made.lock()
                .unwrap_or_else(|p| p.into_inner())
                .by_name
                .insert(name.to_string(), found.clone());
        }
        Ok(found)
    }

    /// [`select_one`](Self::select_one) by walking.
    fn walk_one(&self, name: &str) -> Result<Option<Vec<Entry>>, Error> {
        let Some(real) = self.resolve(name)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        let (parent_real, leaf) = match real.rsplit_once('/') {
            Some((p, l)) => (p.to_string(), l.to_string()),
            None if real.is_empty() => (String::new(), ".".to_string()),
            None => (String::new(), real.clone()),
        };
        let parent = self.open_dir_beneath(&parent_real)?;
        let st = rustix::fs::statat(&parent, leaf.as_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io_err("stat", self.host_path(&real)))?;
        let meta = Meta::from_stat(&st);
        let entry = Entry {
            name: name.to_string(),
            real: real.clone(),
            meta,
            target: None,
        };
        if meta.kind() == EntryKind::Dir {
            let fd = self.open_dir_beneath(&real)?;
            let excluded = self.excluded(&real);
            out.push(entry);
            let before = out.len();
            if self.ignore.has_exclusions() {
                self.walk_dir(&fd, &real, name, &mut out)?;
            } else {
                self.walk_parallel(fd, &real, name, &mut out)?;
            }
            if excluded && out.len() == before {
                out.pop();
            }
        } else {
            out.push(entry);
        }
        // An excluded directory from which nothing was re-included does not exist for the build.
        Ok((!out.is_empty()).then_some(out))
    }

    /// Walks a directory tree with a few threads sharing a queue of directories: each
    /// directory is listed and its children stat'ed by whichever thread takes it, then the
    /// listings are put together in the order a sequential walk gives (each directory's
    /// children sorted by name, a directory followed by its subtree). Only used without `!`
    /// exceptions: an excluded entry is then never entered and never re-included.
    fn walk_parallel(
        &self,
        dir: OwnedFd,
        real: &str,
        name: &str,
        out: &mut Vec<Entry>,
    ) -> Result<(), Error> {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(4);
        let queue = DirQueue {
            state: Mutex::new(QueueState {
                pending: vec![(
                    0,
                    DirTask {
                        fd: Some(dir),
                        raw: real.as_bytes().to_vec(),
                        real: real.to_string(),
                        name: name.to_string(),
                    },
                )],
                next_id: 1,
                busy: 0,
                failed: None,
            }),
            ready: Condvar::new(),
        };
        let work = || {
            let mut done: Vec<(u32, Listing)> = Vec::new();
            while let Some((id, task)) = queue.take() {
                match self.list_dir(&task) {
                    Ok((mut listing, subdirs)) => {
                        queue.finish(subdirs, &mut listing, None);
                        done.push((id, listing));
                    }
                    Err(e) => queue.finish(Vec::new(), &mut Listing::default(), Some(e)),
                }
            }
            done
        };
        let mut listings: Vec<Listing> = Vec::new();
        std::thread::scope(|scope| {
            let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
            let mut all = work();
            for h in helpers {
                match h.join() {
                    Ok(done) => all.extend(done),
                    Err(payload) => std::panic::resume_unwind(payload),
                }
            }
            all.sort_unstable_by_key(|(id, _)| *id);
            listings = all.into_iter().map(|(_, l)| l).collect();
        });
        let state = queue.state.into_inner().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = state.failed {
            return Err(e);
        }
        // Put the listings together depth first; every entry is moved exactly once.
        out.reserve(listings.iter().map(|l| l.entries.len()).sum());
        let mut stack = vec![std::mem::take(&mut listings[0].entries).into_iter()];
        while let Some(top) = stack.last_mut() {
            let Some((entry, sub)) = top.next() else {
                stack.pop();
                continue;
            };
            out.push(entry);
            if let Some(l) = listings.get_mut(sub as usize).filter(|_| sub != NO_LISTING) {
                stack.push(std::mem::take(&mut l.entries).into_iter());
            }
        }
        Ok(())
    }

    /// Lists one directory for [`walk_parallel`](Self::walk_parallel): its children (sorted,
    /// excluded ones left out, each stat'ed) and the subdirectories still to list, each
    /// paired with the index of its entry in the listing.
    fn list_dir(&self, task: &DirTask) -> Result<(Listing, Vec<(usize, DirTask)>), Error> {
        let opened;
        let fd = match &task.fd {
            Some(fd) => fd,
            None => {
                opened = self.open_dir_raw(&task.raw, &task.real)?;
                &opened
            }
        };
        let names = read_dir_sorted(fd, &self.host_path(&task.real))?;
        let mut entries = Vec::with_capacity(names.len());
        let mut subdirs = Vec::new();
        for (child, _) in names {
            let child_str = String::from_utf8_lossy(&child);
            let child_real = join(&task.real, &child_str);
            if self.excluded(&child_real) {
                continue;
            }
            let meta = self.lstat_child(fd, &child, &child_real)?;
            let kind = meta.kind();
            let target = self.link_target(fd, &child, &child_real, kind)?;
            let child_name = join(&task.name, &child_str);
            if kind == EntryKind::Dir {
                // Opened by the thread that lists it (beneath the root, no symlinks): a wide
                // tree must not hold a descriptor per queued directory.
                let mut raw = task.raw.clone();
                if !raw.is_empty() {
                    raw.push(b'/');
                }
                raw.extend_from_slice(&child);
                subdirs.push((
                    entries.len(),
                    DirTask {
                        fd: None,
                        raw,
                        real: child_real.clone(),
                        name: child_name.clone(),
                    },
                ));
            }
            entries.push((
                Entry {
                    name: child_name,
                    real: child_real,
                    meta,
                    target,
                },
                NO_LISTING,
            ));
        }
        Ok((Listing { entries }, subdirs))
    }

    /// `lstat` of a directory's child.
    fn lstat_child(&self, dir: &OwnedFd, child: &[u8], real: &str) -> Result<Meta, Error> {
        let st = rustix::fs::statat(dir, child, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io_err("stat", self.host_path(real)))?;
        Ok(Meta::from_stat(&st))
    }

    /// A child's symlink target, when it is a symlink.
    fn link_target(
        &self,
        dir: &OwnedFd,
        child: &[u8],
        real: &str,
        kind: EntryKind,
    ) -> Result<Option<Vec<u8>>, Error> {
        if kind != EntryKind::Symlink {
            return Ok(None);
        }
        let t = rustix::fs::readlinkat(dir, child, Vec::new())
            .map_err(io_err("read symlink", self.host_path(real)))?;
        Ok(Some(t.into_bytes()))
    }

    /// Walks `dir` on this thread, appending entries to `out` depth first (children sorted by
    /// name). Entering excluded directories that a `!` exception may re-include, and leaving
    /// them out when nothing in them was.
    fn walk_dir(
        &self,
        dir: &OwnedFd,
        real: &str,
        name: &str,
        out: &mut Vec<Entry>,
    ) -> Result<(), Error> {
        for (child, dtype) in read_dir_sorted(dir, &self.host_path(real))? {
            let child_str = String::from_utf8_lossy(&child);
            let child_real = join(real, &child_str);
            let excluded = self.excluded(&child_real);
            if excluded && dtype != FileType::Directory && dtype != FileType::Unknown {
                continue;
            }
            let meta = self.lstat_child(dir, &child, &child_real)?;
            let kind = meta.kind();
            if excluded
                && (kind != EntryKind::Dir || !self.ignore.may_reinclude_within(&child_real))
            {
                continue;
            }
            let target = self.link_target(dir, &child, &child_real, kind)?;
            let child_name = join(name, &child_str);
            if kind != EntryKind::Dir {
                out.push(Entry {
                    name: child_name,
                    real: child_real,
                    meta,
                    target,
                });
                continue;
            }
            out.push(Entry {
                name: child_name.clone(),
                real: child_real.clone(),
                meta,
                target,
            });
            let fd = rustix::fs::openat(
                dir,
                child.as_slice(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(io_err("open directory", self.host_path(&child_real)))?;
            let before = out.len();
            self.walk_dir(&fd, &child_real, &child_name, out)?;
            if excluded && out.len() == before {
                out.pop();
            }
        }
        Ok(())
    }
}

/// Marks an entry of a [`Listing`] that has no listing of its own (not a directory).
const NO_LISTING: u32 = u32::MAX;

/// One directory's children as [`Walker::list_dir`] found them, each with the id of its own
/// listing when it is a directory.
#[derive(Default)]
struct Listing {
    entries: Vec<(Entry, u32)>,
}

/// The directories still to list in a parallel walk, shared by its threads.
struct DirQueue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

struct QueueState {
    pending: Vec<(u32, DirTask)>,
    next_id: u32,
    /// Threads listing a directory right now (which may add more).
    busy: usize,
    /// The first error: every thread stops taking work once it is set.
    failed: Option<Error>,
}

impl DirQueue {
    /// The next directory to list, waiting while others may still add some; `None` when the
    /// walk is over (or failed).
    fn take(&self) -> Option<(u32, DirTask)> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if s.failed.is_some() {
                return None;
            }
            if let Some(task) = s.pending.pop() {
                s.busy += 1;
                return Some(task);
            }
            if s.busy == 0 {
                return None;
            }
            s = self.ready.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Ends one listing: queues its subdirectories (linking each entry to its listing id).
    fn finish(&self, subdirs: Vec<(usize, DirTask)>, listing: &mut Listing, error: Option<Error>) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.busy -= 1;
        if let Some(e) = error {
            s.failed.get_or_insert(e);
        }
        let queued = subdirs.len();
        for (index, task) in subdirs {
            let id = s.next_id;
            s.next_id += 1;
            listing.entries[index].1 = id;
            s.pending.push((id, task));
        }
        drop(s);
        // One new directory: one waiter is enough. None: the walk may be over (or failed),
        // so every waiter must look.
        if queued == 1 {
            self.ready.notify_one();
        } else {
            self.ready.notify_all();
        }
    }
}

/// `f` over `items` on up to `threads` threads (items taken in turn from a shared counter),
/// results in the order of `items`.
pub(crate) fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    if threads < 2 || items.len() < 2 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut per_thread: Vec<Vec<(usize, R)>> = Vec::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.min(items.len()))
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        done.push((i, f(item)));
                    }
                    done
                })
            })
            .collect();
        for h in handles {
            // A panicking worker re-raises its panic here (scoped threads would anyway).
            match h.join() {
                Ok(done) => per_thread.push(done),
                Err(payload) => std::panic::resume_unwind(payload),
            }
        }
    });
    let mut all: Vec<(usize, R)> = per_thread.into_iter().flatten().collect();
    all.sort_unstable_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, r)| r).collect()
}

/// A directory left for a thread to list (opened already, or by its real path).
struct DirTask {
    fd: Option<OwnedFd>,
    /// The real path as the directory's names are on disk (`real` may have replaced bytes
    /// that are not UTF-8).
    raw: Vec<u8>,
    real: String,
    name: String,
}

/// Reads a directory's entries (without `.` and `..`), sorted by name, with their `d_type`.
pub(crate) fn read_dir_sorted(
    fd: &OwnedFd,
    path: &Path,
) -> Result<Vec<(Vec<u8>, FileType)>, Error> {
    let dir = rustix::fs::Dir::read_from(fd).map_err(io_err("read directory", path))?;
    let mut out = Vec::new();
    for entry in dir {
        let entry = entry.map_err(io_err("read directory", path))?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        out.push((name.to_vec(), entry.file_type()));
    }
    out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Normalizes a COPY/ADD source as written: cleaned, leading `/` dropped, `.` for the root.
pub fn normalize_source(source: &str) -> String {
    let c = clean(source);
    let c = c.trim_start_matches('/');
    if c.is_empty() {
        ".".to_string()
    } else {
        c.to_string()
    }
}

/// Selects the entries of `root` that the source paths `include` name (empty = everything),
/// applying `ignore`. A source path that matches nothing is an error naming it; a wildcard
/// that matches nothing selects nothing (BuildKit allows empty wildcards in COPY).
pub fn select(root: &Path, include: &[String], ignore: &Matcher) -> Result<Vec<Selection>, Error> {
    let walker = Walker::open(root, ignore)?;
    walker.select(include)
}

impl Walker<'_> {
    /// [`select`] with this walker.
    pub(crate) fn select(&self, include: &[String]) -> Result<Vec<Selection>, Error> {
        let walker = self;
        let mut sources: Vec<String> = if include.is_empty() {
            vec![".".to_string()]
        } else {
            include.iter().map(|s| normalize_source(s)).collect()
        };
        sources.sort();
        sources.dedup();
        let mut out = Vec::new();
        for source in sources {
            let mut entries = Vec::new();
            let names = if source == "." {
                vec![String::new()]
            } else {
                walker.expand(&source)?
            };
            for name in names {
                match walker.select_one(&name)? {
                    Some(found) => entries.extend(found),
                    None if has_meta(&source) => {}
                    None => {
                        return Err(Error::NotFound {
                            path: source.clone(),
                        });
                    }
                }
            }
            out.push(Selection { source, entries });
        }
        Ok(out)
    }
}
