//! Directory trees built in code.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A temporary directory tree.
pub struct Tree {
    pub dir: tempfile::TempDir,
}

impl Tree {
    pub fn new() -> Self {
        Tree {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn file(self, rel: &str, content: &str) -> Self {
        let p = self.join(rel);
        if let Some(parent) = p.parent() {
            fs_err::create_dir_all(parent).expect("mkdir");
        }
        fs_err::write(&p, content).expect("write");
        self
    }

    pub fn mode(self, rel: &str, mode: u32) -> Self {
        fs_err::set_permissions(self.join(rel), std::fs::Permissions::from_mode(mode))
            .expect("chmod");
        self
    }

    pub fn dir(self, rel: &str) -> Self {
        fs_err::create_dir_all(self.join(rel)).expect("mkdir");
        self
    }

    pub fn symlink(self, rel: &str, target: &str) -> Self {
        let p = self.join(rel);
        if let Some(parent) = p.parent() {
            fs_err::create_dir_all(parent).expect("mkdir");
        }
        fs_err::os::unix::fs::symlink(target, &p).expect("symlink");
        self
    }
}

/// Every path under `root` (relative, sorted), symlinks not followed.
pub fn listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn go(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs_err::read_dir(dir).expect("read_dir") {
            let e = e.expect("entry");
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                out.push(format!("{rel}/"));
                go(root, &p, out);
            } else {
                out.push(rel);
            }
        }
    }
    go(root, root, &mut out);
    out.sort();
    out
}
