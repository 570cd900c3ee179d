//! What needs a path through `/proc/self/fd`: the host path of a descriptor, and the xattrs of
//! a name in an opened directory (Linux has no `lsetxattrat`).

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use rustix::fs::XattrFlags;

use crate::error::{Error, Op, Result};

fn proc_path(fd: impl AsFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
}

/// The path on the host of what `fd` refers to, as the kernel names it.
pub fn host_path(fd: impl AsFd) -> Result<PathBuf> {
    let link = proc_path(fd);
    let target =
        rustix::fs::readlink(&link, Vec::new()).map_err(|e| Error::new(Op::HostPath, &link, e))?;
    Ok(PathBuf::from(OsString::from_vec(target.into_bytes())))
}

/// Sets xattr `key` to `value` on `name` in the directory `dir` without following a symlink
/// at `name`: the descriptor pins the directory, so nothing on the way is resolved again.
pub fn set_xattr_nofollow(dir: impl AsFd, name: &OsStr, key: &[u8], value: &[u8]) -> Result<()> {
    rustix::fs::lsetxattr(proc_path(dir).join(name), key, value, XattrFlags::empty())
        .map_err(|e| Error::new(Op::SetXattr, Path::new(name), e))
}
