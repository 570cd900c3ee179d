//! The crate's error: the operation, the path and the errno, with the errno's meaning.

use std::fmt;
use std::path::{Path, PathBuf};

use rustix::io::Errno;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What was attempted when a system call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Opening the directory that serves as the root (its path is on the host).
    OpenRoot,
    /// Opening a path inside the root.
    Open,
    /// Creating a directory.
    Mkdir,
    /// Reading a symlink on the way.
    ReadLink,
    /// Following symlinks: more than 40 of them on one path.
    Resolve,
    /// Changing the owner of a created directory.
    Chown,
    /// Changing the mode of a created directory.
    Chmod,
    /// Setting an extended attribute.
    SetXattr,
    /// Asking `/proc/self/fd` for the host path of a descriptor.
    HostPath,
}

impl Op {
    /// The operation in words, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::OpenRoot => "open root",
            Op::Open => "open",
            Op::Mkdir => "create directory",
            Op::ReadLink => "read symlink",
            Op::Resolve => "resolve",
            Op::Chown => "chown",
            Op::Chmod => "chmod",
            Op::SetXattr => "set xattr",
            Op::HostPath => "find the host path of",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an errno means for a path inside a root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// `ENOENT`: the path (or a directory on the way) does not exist.
    NotFound,
    /// `ENOTDIR`: something on the way, or a directory asked for, is not a directory.
    NotADirectory,
    /// `EEXIST`: something already has that name.
    AlreadyExists,
    /// `ELOOP` or `EXDEV`: the path would leave the tree, crosses a symlink where none may be
    /// followed, or loops.
    EscapesOrLoops,
    /// `ENOSYS` or `EOPNOTSUPP`: the kernel or the filesystem cannot do it (`openat2` before
    /// Linux 5.6, xattrs on some filesystems).
    Unsupported,
    /// `EACCES` or `EPERM`.
    PermissionDenied,
    /// Any other errno; see [`Error::errno`].
    Other,
}

impl ErrorKind {
    /// The meaning of `errno`.
    pub fn of(errno: Errno) -> ErrorKind {
        match errno {
            Errno::NOENT => ErrorKind::NotFound,
            Errno::NOTDIR => ErrorKind::NotADirectory,
            Errno::EXIST => ErrorKind::AlreadyExists,
            Errno::LOOP | Errno::XDEV => ErrorKind::EscapesOrLoops,
            Errno::NOSYS | Errno::OPNOTSUPP => ErrorKind::Unsupported,
            Errno::ACCESS | Errno::PERM => ErrorKind::PermissionDenied,
            _ => ErrorKind::Other,
        }
    }
}

/// A system call on a path inside a root failed.
///
/// Callers with error enums of their own keep their messages with [`op`](Self::op),
/// [`path`](Self::path) and [`errno`](Self::errno) (or [`os_error`](Self::os_error)); the
/// conversion into [`std::io::Error`] keeps the whole message, path included.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {}", path.display(), std::io::Error::from(*errno))]
pub struct Error {
    op: Op,
    /// Relative to the root, except for [`Op::OpenRoot`] and [`Op::HostPath`].
    path: PathBuf,
    errno: Errno,
}

impl Error {
    pub(crate) fn new(op: Op, path: impl Into<PathBuf>, errno: Errno) -> Error {
        Error {
            op,
            path: path.into(),
            errno,
        }
    }

    /// What was attempted.
    pub fn op(&self) -> Op {
        self.op
    }

    /// The path it was attempted on: relative to the root (as the caller named it, or the
    /// prefix of it where creating directories failed), or on the host for
    /// [`Op::OpenRoot`] and [`Op::HostPath`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The errno as the kernel returned it.
    pub fn errno(&self) -> Errno {
        self.errno
    }

    /// What the errno means here.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::of(self.errno)
    }

    /// The errno alone as a [`std::io::Error`] (`raw_os_error` set), for callers whose own
    /// error already names the operation and the path.
    pub fn os_error(&self) -> std::io::Error {
        std::io::Error::from(self.errno)
    }
}

impl From<Error> for std::io::Error {
    /// An error of the errno's [`std::io::ErrorKind`] whose message names the operation and
    /// the path.
    fn from(e: Error) -> std::io::Error {
        std::io::Error::new(e.os_error().kind(), e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_maps_to_meaning() {
        for (errno, kind) in [
            (Errno::NOENT, ErrorKind::NotFound),
            (Errno::NOTDIR, ErrorKind::NotADirectory),
            (Errno::EXIST, ErrorKind::AlreadyExists),
            (Errno::LOOP, ErrorKind::EscapesOrLoops),
            (Errno::XDEV, ErrorKind::EscapesOrLoops),
            (Errno::NOSYS, ErrorKind::Unsupported),
            (Errno::OPNOTSUPP, ErrorKind::Unsupported),
            (Errno::ACCESS, ErrorKind::PermissionDenied),
            (Errno::PERM, ErrorKind::PermissionDenied),
            (Errno::IO, ErrorKind::Other),
        ] {
            assert_eq!(ErrorKind::of(errno), kind, "{errno:?}");
        }
    }

    #[test]
    fn messages_name_the_operation_and_the_path() {
        let e = Error::new(Op::Open, "etc/passwd", Errno::NOENT);
        assert_eq!(
            e.to_string(),
            "open etc/passwd: No such file or directory (os error 2)"
        );
        assert_eq!(e.os_error().raw_os_error(), Some(2));
        let io = std::io::Error::from(e);
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
        assert!(io.to_string().contains("etc/passwd"), "{io}");
    }
}
