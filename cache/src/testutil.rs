//! Test base images made from Debian's `busybox-static` (`/bin/busybox`), never downloaded:
//! a rootfs with `/bin/busybox`, its applet symlinks, `/etc/passwd` (root, nobody),
//! `/etc/group` and `/tmp`.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::image::{ImageRecord, minimal_config};
use crate::layer::{Encoding, LayerOptions, LayerSource, TarOptions, write_tar};
use crate::store::Store;

/// Where the busybox binary is taken from.
pub const BUSYBOX: &str = "/bin/busybox";

/// Fills `dir` with a busybox rootfs.
pub fn busybox_rootfs(dir: &Path) -> Result<()> {
    for d in ["bin", "etc", "root", "home", "dev", "proc", "sys"] {
        fs_err::create_dir_all(dir.join(d))?;
    }
    fs_err::create_dir_all(dir.join("tmp"))?;
    fs_err::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    fs_err::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    fs_err::copy(BUSYBOX, dir.join("bin/busybox"))?;
    fs_err::set_permissions(
        dir.join("bin/busybox"),
        std::fs::Permissions::from_mode(0o755),
    )?;
    let out = std::process::Command::new(BUSYBOX).arg("--list").output()?;
    if !out.status.success() {
        return Err(Error::invalid("busybox", "`busybox --list` failed"));
    }
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        let link = dir.join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", &link)?;
        }
    }
    fs_err::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    fs_err::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    Ok(())
}

/// Writes an uncompressed, deterministic tar of a busybox rootfs (all mtimes 0).
pub fn busybox_rootfs_tar(mut w: impl Write) -> Result<()> {
    let dir = tempfile::tempdir()?;
    busybox_rootfs(dir.path())?;
    write_tar(
        dir.path(),
        &TarOptions {
            mtime_clamp: Some(0),
            source: LayerSource::Directory,
        },
        &mut w,
    )?;
    w.flush()?;
    Ok(())
}

/// Stores a one-layer busybox image (`Cmd ["sh"]`, a `PATH`) and tags it with `name`
/// (already normalized) unless empty.
pub fn busybox_image(store: &Store, name: &str) -> Result<ImageRecord> {
    let dir = tempfile::tempdir()?;
    busybox_rootfs(dir.path())?;
    let layer = store.create_layer(
        dir.path(),
        &LayerOptions {
            compression: Encoding::GZIP,
            mtime_clamp: Some(0),
            source: LayerSource::Directory,
        },
    )?;
    let config = minimal_config(
        std::slice::from_ref(&layer),
        "1970-01-01T00:00:00Z",
        "kiln testutil busybox",
        serde_json::json!({
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"],
        }),
    )?;
    let rec = store.put_image(&config, &[layer])?;
    if !name.is_empty() {
        store.tag(name, &rec.manifest_digest)?;
    }
    Ok(rec)
}
