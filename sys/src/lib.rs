//! kiln's one home of system calls on paths inside a root.
//!
//! A container rootfs, a layer being unpacked and a build context are all untrusted trees:
//! `/etc/passwd` may be a symlink to the host's `/etc/shadow`, a directory may be a link to
//! `../../..`. Every path kiln resolves inside such a tree goes through this crate, which asks
//! the kernel to do the resolution with `openat2` (Linux 5.6 or later):
//!
//! - [`Root`]: the tree is `/` (`RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`). Symlinks and `..`
//!   resolve as they would inside the container and never outside it. For rootfs and layers.
//! - [`Beneath`]: the tree must not be left and no symlink is followed at all
//!   (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`). For a build context,
//!   whose symlinks the walker resolves itself.
//!
//! Once a directory is open, its entries are created and changed with `*at` calls on its
//! descriptor and a single name, which need no resolution; [`fd`] holds the two operations that
//! must go through `/proc/self/fd` instead. Errors name the operation, the path and the errno,
//! and map the errno to its meaning ([`ErrorKind`]). `rustix::fs::openat2` is banned elsewhere
//! in the workspace (`clippy.toml`).

mod error;
pub mod fd;
pub mod root;

pub use error::{Error, ErrorKind, Op, Result};
pub use root::{Beneath, MadeDirs, MkdirAll, Root};
