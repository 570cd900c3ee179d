//! Fixtures built in code.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Writes `path` with `content`, creating parents.
pub fn file(root: &Path, path: &str, content: &[u8]) {
    let p = root.join(path);
    fs_err::create_dir_all(p.parent().unwrap()).unwrap();
    fs_err::write(&p, content).unwrap();
    fs_err::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// A raw tar writer where entry names are written byte for byte (no sanitizing), for
/// hostile archives.
pub struct RawTar {
    pub buf: Vec<u8>,
}

impl RawTar {
    pub fn new() -> Self {
        RawTar { buf: Vec::new() }
    }

    pub fn entry(
        &mut self,
        name: &str,
        kind: tar::EntryType,
        link: &str,
        data: &[u8],
    ) -> &mut Self {
        self.entry_sized(name, kind, link, data, data.len() as u64)
    }

    pub fn entry_sized(
        &mut self,
        name: &str,
        kind: tar::EntryType,
        link: &str,
        data: &[u8],
        size: u64,
    ) -> &mut Self {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_size(size);
        h.set_entry_type(kind);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        if kind == tar::EntryType::GNUSparse {
            let g = h.as_gnu_mut().unwrap();
            g.realsize = *b"00000000000\0";
            g.realsize[..11].copy_from_slice(b"12000000000");
        }
        h.set_cksum();
        self.buf.write_all(h.as_bytes()).unwrap();
        self.buf.write_all(data).unwrap();
        let pad = (512 - data.len() % 512) % 512;
        self.buf.write_all(&vec![0u8; pad]).unwrap();
        self
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let mut b = self.buf.clone();
        b.extend_from_slice(&[0u8; 1024]);
        b
    }
}

/// Whether a command exists (tests needing it fail loudly under KILN_REQUIRE_ALL=1).
pub fn have(cmd: &str) -> bool {
    let ok = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok && std::env::var_os("KILN_REQUIRE_ALL").is_some() {
        panic!("{cmd} is required (KILN_REQUIRE_ALL=1)");
    }
    ok
}

pub fn is_root() -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root && std::env::var_os("KILN_REQUIRE_ALL").is_some() {
        panic!("root is required (KILN_REQUIRE_ALL=1)");
    }
    root
}

/// Stores `tar` as an uncompressed layer blob and records it.
pub fn layer_from_tar(s: &kiln_cache::Store, tar: Vec<u8>) -> kiln_cache::LayerInfo {
    let mut w = s.blob_writer().unwrap();
    std::io::Write::write_all(&mut w, &tar).unwrap();
    let (d, size) = w.commit(None).unwrap();
    let info = kiln_cache::LayerInfo {
        diff_id: d.clone(),
        digest: d,
        size,
        media_type: kiln_cache::Encoding::None.media_type().into(),
    };
    s.record_layer(&info).unwrap();
    info
}
