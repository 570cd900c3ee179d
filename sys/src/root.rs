//! Directories treated as a root: every path below them is resolved by the kernel.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Gid, Mode, OFlags, ResolveFlags, Uid};
use rustix::io::Errno;

use crate::error::{Error, Op, Result};

/// Dangling symlinks [`Root::mkdir_all`] follows on one path (as Linux's `MAXSYMLINKS`).
const MAX_DANGLING_HOPS: usize = 40;

/// The one `openat2` call of the workspace; `""` is `dir` itself.
#[allow(clippy::disallowed_methods)]
fn openat2(
    dir: BorrowedFd<'_>,
    path: &Path,
    flags: OFlags,
    resolve: ResolveFlags,
) -> Result<OwnedFd> {
    let name = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    rustix::fs::openat2(dir, name, flags | OFlags::CLOEXEC, Mode::empty(), resolve)
        .map_err(|e| Error::new(Op::Open, path, e))
}

/// Opens the directory that will serve as a root, by its host path (symlinks followed: the
/// host's own paths are trusted).
fn open_host_dir(path: &Path, access: OFlags) -> Result<OwnedFd> {
    rustix::fs::open(
        path,
        access | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::new(Op::OpenRoot, path, e))
}

/// A directory opened as `/` of a container, a layer or a rootfs: paths are resolved with
/// `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`, so `..`, absolute paths and symlinks (absolute or
/// relative, chained) resolve as they would inside it and can never reach outside it.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
}

/// How [`Root::mkdir_all`] opens directories and makes the ones it creates.
#[derive(Debug, Clone, Copy)]
pub struct MkdirAll {
    /// Mode of created directories (for mkdir(2): the umask applies unless `owner` is given).
    pub mode: Mode,
    /// Owner of created directories. With one, each created directory is chowned and then
    /// given exactly `mode` (not masked by the umask, no set-gid inherited from its parent);
    /// without, it is left as mkdir(2) made it.
    pub owner: Option<(Uid, Gid)>,
    /// How directories are opened: `OFlags::PATH` (descriptors that only anchor `*at` calls,
    /// needing no read permission) or `OFlags::RDONLY` (descriptors that can also be listed or
    /// have their times set). A directory created with an owner is opened `RDONLY`.
    pub access: OFlags,
}

/// What [`Root::mkdir_all`] opened and did.
#[derive(Debug)]
pub struct MadeDirs {
    /// The directory asked for.
    pub dir: OwnedFd,
    /// How many directories were created on the way (the last one included).
    pub created: usize,
}

impl Root {
    /// Opens the directory at `path` on the host (`O_PATH`) as a root.
    pub fn open(path: impl AsRef<Path>) -> Result<Root> {
        open_host_dir(path.as_ref(), OFlags::PATH).map(|fd| Root { fd })
    }

    /// Opens `path` inside the root with `flags` (`O_CLOEXEC` is added). A leading `/` and
    /// `..` both stop at the root; `""` is the root itself. Creates nothing: files are created
    /// with `*at` calls on an opened parent.
    pub fn open_at(&self, path: impl AsRef<Path>, flags: OFlags) -> Result<OwnedFd> {
        let path = path.as_ref();
        let bytes = path.as_os_str().as_bytes();
        let start = bytes.iter().position(|b| *b != b'/').unwrap_or(bytes.len());
        let relative = Path::new(OsStr::from_bytes(&bytes[start..]));
        openat2(
            self.fd.as_fd(),
            relative,
            flags,
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
    }

    /// Opens directory `path` inside the root for reading (`O_RDONLY | O_DIRECTORY`).
    pub fn open_dir(&self, path: impl AsRef<Path>) -> Result<OwnedFd> {
        self.open_at(path, OFlags::RDONLY | OFlags::DIRECTORY)
    }

    /// The path on the host that `path` inside the root resolves to (through
    /// `/proc/self/fd`), for handing to something that takes host paths (a bind mount).
    pub fn real_path(&self, path: impl AsRef<Path>) -> Result<PathBuf> {
        let fd = self.open_at(path, OFlags::PATH)?;
        crate::fd::host_path(&fd)
    }

    /// Opens directory `path`, creating what is missing the way `mkdir -p` inside the
    /// container would: symlinks on the way resolve inside the root, and a dangling one is
    /// followed and its target created. Components are taken as they are (a `..` is
    /// resolved by the kernel, physically). Errors name the prefix of `path` (or of a
    /// symlink's target joined with the rest) where they happened.
    pub fn mkdir_all(&self, path: impl AsRef<Path>, how: &MkdirAll) -> Result<MadeDirs> {
        let flags = how.access | OFlags::DIRECTORY;
        let mut path = path.as_ref().as_os_str().as_bytes().to_vec();
        let mut created = 0;
        let mut hops = 0;
        'path: loop {
            match self.open_at(bytes_path(&path), flags) {
                Ok(dir) => return Ok(MadeDirs { dir, created }),
                Err(e) if e.errno() == Errno::NOENT => {}
                Err(e) => return Err(e),
            }
            let mut dir = self.open_at("", flags)?;
            let components: Vec<&[u8]> = path
                .split(|b| *b == b'/')
                .filter(|c| !c.is_empty())
                .collect();
            let mut prefix: Vec<u8> = Vec::with_capacity(path.len());
            for (i, component) in components.iter().enumerate() {
                let parent_len = prefix.len();
                push_component(&mut prefix, component);
                let name = OsStr::from_bytes(component);
                match self.open_at(bytes_path(&prefix), flags) {
                    Ok(fd) => {
                        dir = fd;
                        continue;
                    }
                    Err(e) if e.errno() == Errno::NOENT => {}
                    Err(e) => return Err(e),
                }
                match rustix::fs::mkdirat(&dir, name, how.mode) {
                    Ok(()) => {}
                    Err(Errno::EXIST) => {
                        // A dangling symlink: create its target, resolved in the root (not
                        // cleaned lexically, so its `..` are resolved physically).
                        hops += 1;
                        if hops > MAX_DANGLING_HOPS {
                            return Err(Error::new(Op::Resolve, bytes_path(&prefix), Errno::LOOP));
                        }
                        let target = rustix::fs::readlinkat(&dir, name, Vec::new())
                            .map_err(|e| Error::new(Op::ReadLink, bytes_path(&prefix), e))?;
                        let target = target.as_bytes();
                        let mut next = Vec::with_capacity(path.len() + target.len());
                        if !target.starts_with(b"/") {
                            next.extend_from_slice(&prefix[..parent_len]);
                        }
                        push_component(&mut next, trim_slashes(target));
                        for rest in &components[i + 1..] {
                            push_component(&mut next, rest);
                        }
                        path = next;
                        continue 'path;
                    }
                    Err(e) => return Err(Error::new(Op::Mkdir, bytes_path(&prefix), e)),
                }
                dir = open_created(&dir, name, bytes_path(&prefix), how)?;
                created += 1;
            }
            return Ok(MadeDirs { dir, created });
        }
    }
}

/// Opens the directory `mkdir_all` just created and gives it its owner and mode.
fn open_created(parent: &OwnedFd, name: &OsStr, path: &Path, how: &MkdirAll) -> Result<OwnedFd> {
    let access = if how.owner.is_some() {
        OFlags::RDONLY
    } else {
        how.access
    };
    let fd = rustix::fs::openat(
        parent,
        name,
        access | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::new(Op::Open, path, e))?;
    if let Some((uid, gid)) = how.owner {
        rustix::fs::fchown(&fd, Some(uid), Some(gid))
            .map_err(|e| Error::new(Op::Chown, path, e))?;
        rustix::fs::fchmod(&fd, how.mode).map_err(|e| Error::new(Op::Chmod, path, e))?;
    }
    Ok(fd)
}

fn bytes_path(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

/// Appends `/component` (no `/` at the start, nor for an empty component).
fn push_component(path: &mut Vec<u8>, component: &[u8]) {
    if component.is_empty() {
        return;
    }
    if !path.is_empty() {
        path.push(b'/');
    }
    path.extend_from_slice(component);
}

fn trim_slashes(path: &[u8]) -> &[u8] {
    let start = path.iter().position(|b| *b != b'/').unwrap_or(path.len());
    &path[start..]
}

impl AsFd for Root {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<Root> for OwnedFd {
    fn from(root: Root) -> OwnedFd {
        root.fd
    }
}

/// A directory that paths must stay beneath, following no symlink on the way
/// (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`): `..` above it, absolute
/// paths and any symlink fail ([`ErrorKind::EscapesOrLoops`](crate::ErrorKind)). For trees whose
/// symlinks the caller resolves itself, such as a build context.
#[derive(Debug)]
pub struct Beneath {
    fd: OwnedFd,
}

impl Beneath {
    /// Opens the directory at `path` on the host (`O_RDONLY`, so it can be listed).
    pub fn open(path: impl AsRef<Path>) -> Result<Beneath> {
        open_host_dir(path.as_ref(), OFlags::RDONLY).map(|fd| Beneath { fd })
    }

    /// Opens `path` (relative, symlink-free; `""` is the directory itself) with `flags`
    /// (`O_CLOEXEC` is added). Any bytes are a name: pass `OsStr::from_bytes` for names that
    /// are not UTF-8.
    pub fn open_at(&self, path: impl AsRef<Path>, flags: OFlags) -> Result<OwnedFd> {
        openat2(
            self.fd.as_fd(),
            path.as_ref(),
            flags,
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
    }

    /// Opens directory `path` for reading (`O_RDONLY | O_DIRECTORY`).
    pub fn open_dir(&self, path: impl AsRef<Path>) -> Result<OwnedFd> {
        self.open_at(path, OFlags::RDONLY | OFlags::DIRECTORY)
    }
}

impl AsFd for Beneath {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

    /// `outside/` next to the root `root/`, which holds hostile symlinks.
    fn sandbox() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("a/b/root");
        fs_err::create_dir_all(root.join("etc")).unwrap();
        fs_err::create_dir_all(t.path().join("outside")).unwrap();
        fs_err::write(t.path().join("outside/secret"), "host").unwrap();
        fs_err::write(root.join("secret"), "inside").unwrap();
        (t, root)
    }

    fn read(fd: OwnedFd) -> String {
        std::io::read_to_string(std::fs::File::from(fd)).unwrap()
    }

    #[test]
    fn symlinks_and_dotdot_resolve_inside_the_root() {
        let (t, root) = sandbox();
        let outside = t.path().join("outside");
        symlink("../../../../outside/secret", root.join("etc/up")).unwrap();
        symlink(outside.join("secret"), root.join("etc/abs")).unwrap();
        symlink("/secret", root.join("etc/passwd")).unwrap();
        symlink("../../../../../..", root.join("etc/top")).unwrap();
        let r = Root::open(&root).unwrap();
        assert_eq!(
            read(r.open_at("/etc/passwd", OFlags::RDONLY).unwrap()),
            "inside"
        );
        assert_eq!(
            read(r.open_at("etc/top/secret", OFlags::RDONLY).unwrap()),
            "inside"
        );
        assert_eq!(
            read(r.open_at("../../../secret", OFlags::RDONLY).unwrap()),
            "inside"
        );
        for hostile in ["etc/up", "etc/abs"] {
            let e = r.open_at(hostile, OFlags::RDONLY).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::NotFound, "{hostile}: {e}");
            assert_eq!((e.op(), e.path()), (Op::Open, Path::new(hostile)));
        }
        let e = r.open_dir("secret").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotADirectory, "{e}");
        // "" and "/" are the root itself.
        let real = r.real_path("").unwrap();
        assert_eq!(real, fs_err::canonicalize(&root).unwrap());
        assert_eq!(r.real_path("/etc/top").unwrap(), real);
        assert_eq!(r.real_path("etc/passwd").unwrap(), real.join("secret"));
        let e = Root::open(root.join("secret")).unwrap_err();
        assert_eq!((e.op(), e.kind()), (Op::OpenRoot, ErrorKind::NotADirectory));
    }

    const PLAIN: MkdirAll = MkdirAll {
        mode: Mode::from_raw_mode(0o755),
        owner: None,
        access: OFlags::PATH,
    };

    #[test]
    fn mkdir_all_follows_dangling_symlinks_inside_the_root() {
        let (t, root) = sandbox();
        let outside = t.path().join("outside");
        // Absolute, relative-escaping and chained dangling links all land inside the root.
        symlink(outside.join("new"), root.join("abs")).unwrap();
        symlink("../../../../outside/rel", root.join("etc/rel")).unwrap();
        symlink("chain2", root.join("chain1")).unwrap();
        symlink("/made/by/chain", root.join("chain2")).unwrap();
        let r = Root::open(&root).unwrap();
        let made = r.mkdir_all("abs/x", &PLAIN).unwrap();
        assert_eq!(made.created, outside.components().count() + 1);
        let inside = root.join(outside.strip_prefix("/").unwrap());
        assert!(inside.join("new/x").is_dir());
        r.mkdir_all("etc/rel/y", &PLAIN).unwrap();
        assert!(root.join("outside/rel/y").is_dir());
        let made = r.mkdir_all("chain1/z", &PLAIN).unwrap();
        assert_eq!(made.created, 4);
        assert!(root.join("made/by/chain/z").is_dir());
        assert_eq!(
            fs_err::read_dir(&outside).unwrap().count(),
            1,
            "only the secret"
        );
        // Existing directories: nothing created, the directory opened.
        let again = r.mkdir_all("chain1/z", &PLAIN).unwrap();
        assert_eq!(again.created, 0);
        assert_eq!(
            crate::fd::host_path(&again.dir).unwrap(),
            fs_err::canonicalize(root.join("made/by/chain/z")).unwrap()
        );
    }

    #[test]
    fn mkdir_all_reports_where_it_stopped() {
        let (_t, root) = sandbox();
        symlink("loop", root.join("loop")).unwrap();
        symlink("b", root.join("a")).unwrap();
        symlink("a", root.join("b")).unwrap();
        let r = Root::open(&root).unwrap();
        let e = r.mkdir_all("secret/x", &PLAIN).unwrap_err();
        assert_eq!(
            (e.op(), e.kind()),
            (Op::Open, ErrorKind::NotADirectory),
            "{e}"
        );
        // A link to itself is not dangling for the kernel: it loops.
        let e = r.mkdir_all("loop/x", &PLAIN).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::EscapesOrLoops, "{e}");
        let e = r.mkdir_all("a/x", &PLAIN).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::EscapesOrLoops, "{e}");
    }

    #[test]
    fn mkdir_all_with_an_owner_sets_owner_and_exact_mode() {
        let (_t, root) = sandbox();
        let r = Root::open(&root).unwrap();
        let how = MkdirAll {
            mode: Mode::from_raw_mode(0o751),
            owner: Some((Uid::from_raw(7), Gid::from_raw(8))),
            access: OFlags::RDONLY,
        };
        let made = r.mkdir_all("/p/q", &how).unwrap();
        assert_eq!(made.created, 2);
        for p in ["p", "p/q"] {
            let md = fs_err::metadata(root.join(p)).unwrap();
            assert_eq!((md.uid(), md.gid()), (7, 8), "{p}");
            assert_eq!(md.permissions().mode() & 0o7777, 0o751, "{p}");
        }
        // RDONLY: the descriptor can be listed.
        assert!(rustix::fs::Dir::read_from(&made.dir).is_ok());
        let md = fs_err::metadata(root.join("etc")).unwrap();
        assert_eq!(
            md.uid(),
            rustix::process::geteuid().as_raw(),
            "existing: untouched"
        );
    }

    #[test]
    fn beneath_follows_no_symlink_and_never_climbs() {
        let (_t, root) = sandbox();
        symlink("secret", root.join("link")).unwrap();
        symlink("etc", root.join("dirlink")).unwrap();
        let b = Beneath::open(&root).unwrap();
        assert_eq!(read(b.open_at("secret", OFlags::RDONLY).unwrap()), "inside");
        assert!(rustix::fs::Dir::read_from(b.open_dir("").unwrap()).is_ok());
        for (path, kind) in [
            ("link", ErrorKind::EscapesOrLoops),
            ("dirlink/x", ErrorKind::EscapesOrLoops),
            ("../root/secret", ErrorKind::EscapesOrLoops),
            ("/etc", ErrorKind::EscapesOrLoops),
            ("missing", ErrorKind::NotFound),
        ] {
            let e = b.open_at(path, OFlags::RDONLY).unwrap_err();
            assert_eq!(e.kind(), kind, "{path}: {e}");
        }
        // Names are bytes, not UTF-8.
        let name = OsStr::from_bytes(b"caf\xe9");
        fs_err::create_dir(root.join(name)).unwrap();
        assert!(b.open_dir(name).is_ok());
    }

    #[test]
    fn xattrs_are_set_on_the_name_not_through_it() {
        let (t, root) = sandbox();
        symlink(t.path().join("outside/secret"), root.join("link")).unwrap();
        let r = Root::open(&root).unwrap();
        let dir = r.open_at("", OFlags::PATH | OFlags::DIRECTORY).unwrap();
        crate::fd::set_xattr_nofollow(&dir, OsStr::new("secret"), b"trusted.kiln", b"1").unwrap();
        let mut value = [0u8; 8];
        let n = rustix::fs::lgetxattr(root.join("secret"), "trusted.kiln", &mut value).unwrap();
        assert_eq!(&value[..n], b"1");
        // On the symlink itself (user.* is refused on symlinks): never on the host's file.
        let e = crate::fd::set_xattr_nofollow(&dir, OsStr::new("link"), b"user.kiln", b"1")
            .unwrap_err();
        assert_eq!(
            (e.op(), e.kind()),
            (Op::SetXattr, ErrorKind::PermissionDenied),
            "{e}"
        );
        let host = t.path().join("outside/secret");
        assert!(rustix::fs::lgetxattr(&host, "user.kiln", &mut value).is_err());
    }
}
