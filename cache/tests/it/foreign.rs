//! Layers as other tools write them, made here by GNU tar (the archiver behind many image
//! tools' layers): sparse files in each of its formats, long names, xattrs, device nodes,
//! opaque directories that gain files in the same layer, and hardlinks to a lower layer.

use std::io::Cursor;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use kiln_cache::{ApplyOptions, Store, apply_layer, mount_overlay};

use crate::support::{have, is_root, layer_from_tar};

/// `tar -c` of `dir`'s contents with GNU tar and `flags`.
fn gnu_tar(dir: &Path, flags: &[&str]) -> Vec<u8> {
    let out = Command::new("tar")
        .args(flags)
        .arg("--numeric-owner")
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg("-")
        .arg(".")
        .output()
        .expect("tar");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A file of `size` bytes that is a hole but for `data` at each offset.
fn sparse_file(path: &Path, size: u64, chunks: &[(u64, &[u8])]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = fs_err::File::create(path).unwrap();
    for (off, data) in chunks {
        f.seek(SeekFrom::Start(*off)).unwrap();
        f.write_all(data).unwrap();
    }
    f.set_len(size).unwrap();
}

fn applied(tar: Vec<u8>) -> (tempfile::TempDir, std::path::PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let target = t.path().join("target");
    apply_layer(Cursor::new(tar), &target, &ApplyOptions::default()).unwrap();
    (t, target)
}

#[test]
fn sparse_files_in_every_gnu_tar_format_unpack_with_their_holes() {
    if !have("tar") {
        return;
    }
    let src = tempfile::tempdir().unwrap();
    let size = 64 << 20;
    let chunks: &[(u64, &[u8])] = &[
        (0, b"head"),
        (8 << 20, b"middle"),
        ((64 << 20) - 4, b"tail"),
    ];
    sparse_file(&src.path().join("disk.img"), size, chunks);
    fs_err::write(src.path().join("plain"), b"plain\n").unwrap();
    for flags in [
        &["--sparse", "--format=gnu"][..],
        &["--sparse", "--format=posix", "--sparse-version=1.0"][..],
        &["--sparse", "--format=posix", "--sparse-version=0.1"][..],
    ] {
        let tar = gnu_tar(src.path(), flags);
        assert!(
            tar.len() < 1 << 20,
            "{flags:?}: the archive itself is sparse"
        );
        let (_t, target) = applied(tar);
        let img = target.join("disk.img");
        let meta = fs_err::metadata(&img).unwrap();
        assert_eq!(meta.len(), size, "{flags:?}");
        let bytes = fs_err::read(&img).unwrap();
        for (off, data) in chunks {
            let off = *off as usize;
            assert_eq!(&bytes[off..off + data.len()], *data, "{flags:?} at {off}");
        }
        assert!(bytes[4..1000].iter().all(|b| *b == 0), "{flags:?}");
        assert_eq!(fs_err::read(target.join("plain")).unwrap(), b"plain\n");
        assert!(
            !target.join("GNUSparseFile.0").exists(),
            "{flags:?}: the real name is used"
        );
    }
    // Format 0.0 (one offset/numbytes record per chunk) is refused with a clear error.
    let tar = gnu_tar(
        src.path(),
        &["--sparse", "--format=posix", "--sparse-version=0.0"],
    );
    let t = tempfile::tempdir().unwrap();
    let err = apply_layer(Cursor::new(tar), t.path(), &ApplyOptions::default()).unwrap_err();
    assert!(err.to_string().contains("format 0.0"), "{err}");
}

#[test]
fn long_names_xattrs_and_devices() {
    if !have("tar") || !is_root() {
        return;
    }
    let src = tempfile::tempdir().unwrap();
    let long_dir = "d".repeat(120);
    let long = format!("{long_dir}/{}", "f".repeat(200));
    fs_err::create_dir_all(src.path().join(&long_dir)).unwrap();
    fs_err::write(src.path().join(&long), b"long\n").unwrap();
    std::os::unix::fs::symlink(&long, src.path().join("link-to-long")).unwrap();
    fs_err::write(src.path().join("tagged"), b"x").unwrap();
    rustix::fs::setxattr(
        src.path().join("tagged").as_path(),
        "user.kiln",
        b"yes",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.path().join("null").as_path(),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    for flags in [&["--format=gnu"][..], &["--format=posix", "--xattrs"][..]] {
        let (_t, target) = applied(gnu_tar(src.path(), flags));
        assert_eq!(
            fs_err::read(target.join(&long)).unwrap(),
            b"long\n",
            "{flags:?}"
        );
        assert_eq!(
            fs_err::read_link(target.join("link-to-long")).unwrap(),
            Path::new(&long)
        );
        let dev = fs_err::symlink_metadata(target.join("null")).unwrap();
        assert_eq!(dev.rdev(), rustix::fs::makedev(1, 3), "{flags:?}");
        if flags.contains(&"--xattrs") {
            let mut v = [0u8; 8];
            let n =
                rustix::fs::getxattr(target.join("tagged").as_path(), "user.kiln", &mut v).unwrap();
            assert_eq!(&v[..n], b"yes");
        }
    }
}

/// GNU tar writes a hardlink as a link entry naming the first path it archived; a layer
/// tool that archives only what changed can name a file that lives in a lower layer.
/// Applied as an overlay lowerdir, kiln copies that file up, as an overlay mount would.
#[test]
fn hardlinks_to_a_lower_layer_and_opaque_dirs_that_gain_files() {
    if !have("tar") || !is_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path().join("s")).unwrap();
    let one = t.path().join("one");
    fs_err::create_dir_all(one.join("usr/bin")).unwrap();
    fs_err::create_dir_all(one.join("opq")).unwrap();
    fs_err::write(one.join("usr/bin/tool"), b"tool\n").unwrap();
    fs_err::set_permissions(
        one.join("usr/bin"),
        std::os::unix::fs::PermissionsExt::from_mode(0o750),
    )
    .unwrap();
    fs_err::write(one.join("opq/old"), b"old\n").unwrap();
    let l1 = layer_from_tar(&s, gnu_tar(&one, &["--format=gnu"]));

    // Layer two: GNU tar of `usr/bin/tool` and its hardlink `usr/local/tool2`, with the
    // first member dropped (the file is unchanged, so it lives in layer one), plus an opaque
    // `opq/` that also gains a file.
    let two = t.path().join("two");
    fs_err::create_dir_all(two.join("usr/bin")).unwrap();
    fs_err::create_dir_all(two.join("usr/local")).unwrap();
    fs_err::create_dir_all(two.join("opq")).unwrap();
    fs_err::write(two.join("usr/bin/tool"), b"tool\n").unwrap();
    fs_err::hard_link(two.join("usr/bin/tool"), two.join("usr/local/tool2")).unwrap();
    fs_err::write(two.join("opq/.wh..wh..opq"), b"").unwrap();
    fs_err::write(two.join("opq/new"), b"new\n").unwrap();
    let out = Command::new("tar")
        .args(["--format=gnu", "--numeric-owner", "-C"])
        .arg(&two)
        .args([
            "-cf",
            "-",
            "--no-recursion",
            "opq",
            "opq/.wh..wh..opq",
            "opq/new",
            "usr/bin/tool",
            "usr/local",
            "usr/local/tool2",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    // Drop the `usr/bin/tool` member: keep the link entry that names it.
    let mut kept = Vec::new();
    let mut ar = tar::Archive::new(Cursor::new(out.stdout));
    let mut b = tar::Builder::new(Vec::new());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().into_owned();
        if path == Path::new("usr/bin/tool") {
            continue;
        }
        kept.push(path.clone());
        let mut h = e.header().clone();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        if h.entry_type() == tar::EntryType::Link {
            assert_eq!(
                e.link_name().unwrap().unwrap(),
                Path::new("usr/bin/tool"),
                "GNU tar linked to the first member"
            );
        }
        b.append_data(&mut h, &path, Cursor::new(data)).unwrap();
    }
    let l2 = layer_from_tar(&s, b.into_inner().unwrap());
    let snap = s.prepare_snapshot(&[l1, l2]).unwrap();
    let mnt = t.path().join("mnt");
    fs_err::create_dir_all(&mnt).unwrap();
    let g = mount_overlay(&snap.lowerdirs, None, &mnt).unwrap();
    assert_eq!(
        fs_err::read(mnt.join("usr/local/tool2")).unwrap(),
        b"tool\n"
    );
    assert_eq!(fs_err::read(mnt.join("usr/bin/tool")).unwrap(), b"tool\n");
    let a = fs_err::metadata(mnt.join("usr/bin/tool")).unwrap();
    let b = fs_err::metadata(mnt.join("usr/local/tool2")).unwrap();
    assert_eq!(a.ino(), b.ino(), "one file, two names");
    assert_eq!(
        fs_err::metadata(mnt.join("usr/bin")).unwrap().mode() & 0o7777,
        0o750,
        "the copied-up directory keeps the lower's mode"
    );
    assert!(
        !mnt.join("opq/old").exists(),
        "opaque hides the lower's files"
    );
    assert_eq!(fs_err::read(mnt.join("opq/new")).unwrap(), b"new\n");
    g.unmount().unwrap();
}
