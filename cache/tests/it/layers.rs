//! Deterministic layer writer and applier round trips.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use kiln_cache::layer::{TarOptions, write_tar};
use kiln_cache::{ApplyOptions, Encoding, LayerOptions, LayerSource, Store, apply_layer};

use crate::support::{file, is_root};

fn tree(root: &Path) {
    file(root, "etc/hostname", b"kiln\n");
    file(root, "bin/tool", b"#!/bin/sh\necho hi\n");
    fs_err::set_permissions(
        root.join("bin/tool"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    let long = format!("deep/{}/{}", "d".repeat(80), "f".repeat(90));
    file(root, &long, b"long name");
    std::os::unix::fs::symlink("../etc/hostname", root.join("bin/link")).unwrap();
    std::os::unix::fs::symlink("x".repeat(150), root.join("bin/longlink")).unwrap();
    fs_err::hard_link(root.join("etc/hostname"), root.join("etc/hostname2")).unwrap();
    fs_err::create_dir_all(root.join("empty")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    rustix::fs::lsetxattr(
        root.join("etc/hostname"),
        "user.kiln",
        b"v1",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    if is_root() {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("null"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        )
        .unwrap();
        rustix::fs::chownat(
            rustix::fs::CWD,
            root.join("bin/tool"),
            Some(rustix::fs::Uid::from_raw(1000)),
            Some(rustix::fs::Gid::from_raw(1001)),
            rustix::fs::AtFlags::empty(),
        )
        .unwrap();
        fs_err::set_permissions(
            root.join("bin/tool"),
            std::fs::Permissions::from_mode(0o4755),
        )
        .unwrap();
    }
}

fn set_mtimes(root: &Path, secs: i64) {
    let out = std::process::Command::new("find")
        .arg(root)
        .args(["-exec", "touch", "-h", "-d"])
        .arg(format!("@{secs}"))
        .args(["{}", "+"])
        .status()
        .unwrap();
    assert!(out.success());
}

fn tar_bytes(root: &Path, clamp: Option<i64>) -> Vec<u8> {
    let mut out = Vec::new();
    write_tar(
        root,
        &TarOptions {
            mtime_clamp: clamp,
            source: LayerSource::Directory,
        },
        &mut out,
    )
    .unwrap();
    out
}

#[test]
fn same_input_gives_same_digest_for_every_compression() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    tree(&src);
    let store = Store::open(t.path().join("store")).unwrap();
    for c in [Encoding::None, Encoding::GZIP, Encoding::ZSTD] {
        let opts = LayerOptions {
            compression: c,
            ..LayerOptions::default()
        };
        let a = store.create_layer(&src, &opts).unwrap();
        let b = store.create_layer(&src, &opts).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.media_type, c.media_type());
        if c == Encoding::None {
            assert_eq!(a.diff_id, a.digest);
        } else {
            assert_ne!(a.diff_id, a.digest);
        }
        assert_eq!(
            store
                .layer_for_diff_id(&a.diff_id)
                .unwrap()
                .map(|l| l.diff_id),
            Some(a.diff_id.clone())
        );
        assert_eq!(
            store.diff_id_for_blob(&a.digest).unwrap(),
            Some(a.diff_id.clone())
        );
    }
}

#[test]
fn clamped_copy_with_other_mtimes_gives_same_digest() {
    let t = tempfile::tempdir().unwrap();
    let a = t.path().join("a");
    let b = t.path().join("b");
    tree(&a);
    tree(&b);
    set_mtimes(&a, 2_000_000_000);
    set_mtimes(&b, 1_900_000_000);
    assert_ne!(tar_bytes(&a, None), tar_bytes(&b, None));
    assert_eq!(
        tar_bytes(&a, Some(1_000_000_000)),
        tar_bytes(&b, Some(1_000_000_000))
    );
}

#[test]
fn tar_is_well_formed_for_gnu_tar() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    tree(&src);
    let bytes = tar_bytes(&src, Some(0));
    fs_err::write(t.path().join("l.tar"), &bytes).unwrap();
    let out = std::process::Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(t.path().join("l.tar"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains(&"f".repeat(90)), "{listing}");
    assert!(
        listing.contains("etc/hostname2 link to etc/hostname"),
        "{listing}"
    );
    assert!(listing.contains("prw-------"), "{listing}");
    // sorted: bin/ before etc/
    let names: Vec<&str> = listing
        .lines()
        .map(|l| l.split_whitespace().nth(5).unwrap_or(""))
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(
        names.iter().position(|n| *n == "bin/"),
        Some(0),
        "{listing}"
    );
    let _ = sorted;
}

#[test]
fn apply_round_trip_preserves_everything() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    tree(&src);
    set_mtimes(&src, 1_500_000_000);
    let bytes = tar_bytes(&src, None);
    let dst = t.path().join("dst");
    let stats = apply_layer(
        std::io::Cursor::new(bytes.clone()),
        &dst,
        &ApplyOptions::default(),
    )
    .unwrap();
    assert_eq!(stats.diff_id, kiln_oci::sha256(&bytes));
    assert_eq!(stats.tar_size, bytes.len() as u64);
    // Re-archiving the unpacked tree gives the same bytes.
    assert_eq!(tar_bytes(&dst, None), bytes);
    let m = fs_err::metadata(dst.join("bin/tool")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o4755);
    assert_eq!(
        fs_err::read_link(dst.join("bin/link")).unwrap(),
        Path::new("../etc/hostname")
    );
    assert_eq!(
        fs_err::metadata(dst.join("etc/hostname")).unwrap().ino(),
        fs_err::metadata(dst.join("etc/hostname2")).unwrap().ino()
    );
    let mut v = [0u8; 8];
    let n = rustix::fs::lgetxattr(dst.join("etc/hostname"), "user.kiln", &mut v[..]).unwrap();
    assert_eq!(&v[..n], b"v1");
    assert_eq!(
        fs_err::metadata(dst.join("etc")).unwrap().mtime(),
        1_500_000_000
    );
    if is_root() {
        assert_eq!(m.uid(), 1000);
        assert_eq!(m.gid(), 1001);
        let n = fs_err::symlink_metadata(dst.join("null")).unwrap();
        assert_eq!(n.rdev(), rustix::fs::makedev(1, 3));
    }
}

#[test]
fn compressed_layers_apply_with_detection() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    tree(&src);
    let store = Store::open(t.path().join("store")).unwrap();
    for c in [Encoding::None, Encoding::GZIP, Encoding::ZSTD] {
        let l = store
            .create_layer(
                &src,
                &LayerOptions {
                    compression: c,
                    ..LayerOptions::default()
                },
            )
            .unwrap();
        let dst = t.path().join(format!("dst-{}", c.media_type().len()));
        let stats = apply_layer(
            store.open_blob(&l.digest).unwrap(),
            &dst,
            &ApplyOptions::default(),
        )
        .unwrap();
        assert_eq!(stats.diff_id, l.diff_id);
        assert_eq!(fs_err::read(dst.join("etc/hostname")).unwrap(), b"kiln\n");
    }
}

#[test]
fn whiteouts_delete_in_flatten_mode() {
    use tar::EntryType::{Directory, Regular};
    let t = tempfile::tempdir().unwrap();
    let dst = t.path().join("dst");
    file(&dst, "gone", b"1");
    file(&dst, "dir/old", b"1");
    file(&dst, "dir/sub/old2", b"1");
    file(&dst, "keep", b"1");
    let tar = crate::support::RawTar::new()
        .entry(".wh.gone", Regular, "", b"")
        .entry("dir/", Directory, "", b"")
        .entry("dir/.wh..wh..opq", Regular, "", b"")
        .entry("dir/new", Regular, "", b"n")
        .finish();
    apply_layer(std::io::Cursor::new(tar), &dst, &ApplyOptions::default()).unwrap();
    assert!(!dst.join("gone").exists());
    assert!(dst.join("keep").exists());
    let names: Vec<String> = fs_err::read_dir(dst.join("dir"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["new".to_owned()]);
}

#[test]
fn entries_replace_what_is_there_whatever_its_type() {
    use tar::EntryType::{Directory, Regular};
    let t = tempfile::tempdir().unwrap();
    let dst = t.path().join("dst");
    file(&dst, "var", b"a file where the layer has a directory");
    file(
        &dst,
        "etc/passwd/inner",
        b"a directory where the layer has a file",
    );
    let tar = crate::support::RawTar::new()
        .entry("var/", Directory, "", b"")
        .entry("var/log/", Directory, "", b"")
        .entry("var/log/x", Regular, "", b"x")
        .entry("etc/passwd", Regular, "", b"root")
        .finish();
    apply_layer(std::io::Cursor::new(tar), &dst, &ApplyOptions::default()).unwrap();
    assert!(fs_err::metadata(dst.join("var")).unwrap().is_dir());
    assert_eq!(fs_err::read(dst.join("var/log/x")).unwrap(), b"x");
    assert_eq!(fs_err::read(dst.join("etc/passwd")).unwrap(), b"root");
}

#[test]
fn overlay_upper_whiteouts_become_tar_whiteouts() {
    if !is_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let up = t.path().join("up");
    fs_err::create_dir_all(up.join("opaque")).unwrap();
    file(&up, "opaque/new", b"n");
    rustix::fs::lsetxattr(
        up.join("opaque"),
        "trusted.overlay.opaque",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::lsetxattr(
        up.join("opaque"),
        "trusted.overlay.origin",
        b"zz",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        up.join("deleted"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )
    .unwrap();
    let mut out = Vec::new();
    write_tar(
        &up,
        &TarOptions {
            mtime_clamp: Some(0),
            source: LayerSource::OverlayUpper,
        },
        &mut out,
    )
    .unwrap();
    let mut ar = tar::Archive::new(std::io::Cursor::new(out));
    let mut names = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let has_overlay_xattr = e
            .pax_extensions()
            .unwrap()
            .map(|x| {
                x.into_iter()
                    .any(|p| p.unwrap().key().unwrap().contains("overlay"))
            })
            .unwrap_or(false);
        assert!(!has_overlay_xattr);
        names.push(e.path().unwrap().to_string_lossy().into_owned());
    }
    assert_eq!(
        names,
        vec![
            ".wh.deleted",
            "opaque/",
            "opaque/.wh..wh..opq",
            "opaque/new"
        ]
    );
}

#[test]
fn threaded_apply_matches_inline_apply() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    tree(&src);
    for i in 0..50 {
        file(&src, &format!("many/f{i}"), &vec![i as u8; 40_000 * i]);
    }
    let store = Store::open(t.path().join("store")).unwrap();
    let l = store
        .create_layer(
            &src,
            &LayerOptions {
                compression: Encoding::ZSTD,
                mtime_clamp: Some(5),
                ..Default::default()
            },
        )
        .unwrap();
    let a = t.path().join("a");
    let b = t.path().join("b");
    let sa = apply_layer(
        store.open_blob(&l.digest).unwrap(),
        &a,
        &ApplyOptions::default(),
    )
    .unwrap();
    let sb = kiln_cache::apply_layer_threaded(
        store.open_blob(&l.digest).unwrap(),
        &b,
        &ApplyOptions::default(),
    )
    .unwrap();
    assert_eq!(sa, sb);
    assert_eq!(sa.diff_id, l.diff_id);
    assert_eq!(tar_bytes(&a, None), tar_bytes(&b, None));
}

/// Files of varied text, ~12 MB in all.
fn many_files(root: &Path) {
    let mut x: u64 = 99;
    for i in 0..600 {
        let mut data = Vec::with_capacity(20_000);
        while data.len() < 20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.extend_from_slice(format!("line {} value {}\n", x % 977, x >> 40).as_bytes());
        }
        file(root, &format!("d{}/f{i:04}", i % 7), &data);
    }
}

#[test]
fn a_rebuild_after_one_edit_reuses_members_and_equals_a_fresh_layer() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    many_files(&src);
    let opts = LayerOptions {
        mtime_clamp: Some(0),
        ..LayerOptions::default()
    };
    let old = Store::open(t.path().join("old")).unwrap();
    let first = old.create_layer(&src, &opts).unwrap();
    let members = |s: &Store| s.kv_list("gz-member").unwrap().len();
    let n = members(&old);
    assert!(n >= 8, "{n} members");
    // One file grows in the middle of the tree.
    let edited = src.join("d6/f0300");
    let mut text = fs_err::read(&edited).unwrap();
    text.extend_from_slice(b"one more line\n");
    fs_err::write(&edited, text).unwrap();
    let second = old.create_layer(&src, &opts).unwrap();
    assert_ne!(first.digest, second.digest);
    let new_members = members(&old) - n;
    assert!(
        new_members <= 3,
        "{new_members} of {n} members compressed again"
    );
    // Byte for byte what a store that never saw the first layer writes.
    let fresh = Store::open(t.path().join("fresh")).unwrap();
    let again = fresh.create_layer(&src, &opts).unwrap();
    assert_eq!(again, second);
    assert_eq!(
        fs_err::read(old.blob_path(&second.digest)).unwrap(),
        fs_err::read(fresh.blob_path(&again.digest)).unwrap()
    );
    // A cached member whose blob is gone is compressed again, same bytes.
    fs_err::remove_file(old.blob_path(&first.digest)).unwrap();
    fs_err::remove_file(old.blob_path(&second.digest)).unwrap();
    let third = old.create_layer(&src, &opts).unwrap();
    assert_eq!(third, second);
}

/// A writer that takes `left` bytes and then fails, as an upload that broke mid-stream.
struct Breaks {
    got: Vec<u8>,
    left: usize,
}

impl std::io::Write for Breaks {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() > self.left {
            return Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "upload stopped",
            ));
        }
        self.left -= buf.len();
        self.got.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_teed_conversion_writes_the_bytes_layer_as_makes_and_keeps_them_only_when_whole() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    many_files(&src);
    let plain_opts = LayerOptions {
        compression: Encoding::None,
        ..LayerOptions::default()
    };
    // What layer_as makes in a store of its own...
    let reference = Store::open(t.path().join("reference")).unwrap();
    let plain = reference.create_layer(&src, &plain_opts).unwrap();
    let want = reference.layer_as(&plain, Encoding::GZIP).unwrap();
    let want_bytes = reference.read_blob(&want.digest).unwrap();

    let store = Store::open(t.path().join("store")).unwrap();
    assert_eq!(store.create_layer(&src, &plain_opts).unwrap(), plain);
    // ...a tee that breaks halfway stops the conversion: no blob, no variant.
    let blobs = || {
        fs_err::read_dir(t.path().join("store/blobs/sha256"))
            .unwrap()
            .count()
    };
    let before = blobs();
    let mut broken = Breaks {
        got: Vec::new(),
        left: want_bytes.len() / 2,
    };
    let err = store
        .layer_as_teed(&plain, Encoding::GZIP, &mut broken)
        .unwrap_err();
    assert!(err.to_string().contains("upload stopped"), "{err}");
    assert_eq!(broken.got, want_bytes[..broken.got.len()]);
    assert_eq!(blobs(), before, "a broken conversion left a blob");
    assert_eq!(store.layer_variant(&plain, Encoding::GZIP).unwrap(), None);
    assert!(!store.has_blob(&want.digest));
    // A whole one gives the tee and the store layer_as's bytes, recorded as its variant.
    let mut whole = Breaks {
        got: Vec::new(),
        left: usize::MAX,
    };
    let got = store
        .layer_as_teed(&plain, Encoding::GZIP, &mut whole)
        .unwrap();
    assert_eq!(got, want);
    assert_eq!(whole.got, want_bytes);
    assert_eq!(store.read_blob(&got.digest).unwrap(), want_bytes);
    assert_eq!(
        store.layer_variant(&plain, Encoding::GZIP).unwrap(),
        Some(want.clone())
    );
    assert_eq!(store.layer_as(&plain, Encoding::GZIP).unwrap(), want);
    assert_eq!(
        store.diff_id_for_blob(&want.digest).unwrap(),
        Some(plain.diff_id.clone())
    );
    // Once kept, a teed call sends the kept blob.
    let mut again = Breaks {
        got: Vec::new(),
        left: usize::MAX,
    };
    assert_eq!(
        store
            .layer_as_teed(&plain, Encoding::GZIP, &mut again)
            .unwrap(),
        want
    );
    assert_eq!(again.got, want_bytes);
}

#[test]
fn big_and_small_files_in_deep_directories_are_archived_whole_in_name_order() {
    // Deep directories of small files and of files of a few MiB (several of the walk's
    // reads each).
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("tree");
    let mut want = Vec::new();
    let mut dir = String::new();
    for level in 0..4 {
        dir.push_str(&format!("d{level}/"));
        for i in 0..6 {
            let size = if i % 2 == 0 { 3 << 20 } else { 100 + i * level };
            let data: Vec<u8> = (0..size).map(|b| (b * 31 + i + level) as u8).collect();
            let path = format!("{dir}f{i}");
            file(&root, &path, &data);
            want.push((path, data));
        }
    }
    let tar = tar_bytes(&root, None);
    let mut got = Vec::new();
    for e in tar::Archive::new(&tar[..]).entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        got.push((path, data));
    }
    want.sort();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "every file, whole, in name order");
    // The parallel encoders see the tar in the walk's writes (headers, then each file's data):
    // the blob is that same tar compressed as one stream (members and frames cut by content).
    let s = Store::open(t.path().join("s")).unwrap();
    let opts = |compression| LayerOptions {
        compression,
        mtime_clamp: None,
        source: LayerSource::Directory,
    };
    let plain = s.create_layer(&root, &opts(Encoding::None)).unwrap();
    assert_eq!(s.read_blob(&plain.digest).unwrap(), tar);
    for enc in [
        Encoding::GZIP,
        Encoding::ZSTD,
        Encoding::GzipParallel { level: 6 },
    ] {
        let layer = s.create_layer(&root, &opts(enc)).unwrap();
        assert_eq!(layer.diff_id, plain.diff_id, "{enc:?}");
        let streamed = kiln_cache::codec::compress(&mut &tar[..], Vec::new(), enc).unwrap();
        assert!(
            s.read_blob(&layer.digest).unwrap() == streamed,
            "{enc:?}: the blob is the tar compressed as a stream"
        );
    }
}
