//! The hostile-archive suite: nothing may be written outside the target.

use std::io::Cursor;
use std::path::Path;

use kiln_cache::{ApplyOptions, Error, apply_layer};
use tar::EntryType::{Char, Directory, Link, Regular, Symlink};

use crate::support::RawTar;

fn apply(tar: Vec<u8>, target: &Path) -> kiln_cache::Result<kiln_cache::ApplyStats> {
    apply_layer(Cursor::new(tar), target, &ApplyOptions::default())
}

/// A sandbox: `outside/` is what must stay untouched, `target/` is the layer root.
fn sandbox() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    let target = t.path().join("a/b/target");
    fs_err::create_dir_all(&outside).unwrap();
    fs_err::create_dir_all(&target).unwrap();
    (t, outside, target)
}

fn assert_empty(dir: &Path) {
    let n: Vec<_> = fs_err::read_dir(dir).unwrap().collect();
    assert!(n.is_empty(), "{} was written to: {n:?}", dir.display());
}

#[test]
fn dotdot_entry_is_refused() {
    let (t, _outside, target) = sandbox();
    let tar = RawTar::new()
        .entry("../../../outside/evil", Regular, "", b"x")
        .finish();
    let err = apply(tar, &target).unwrap_err();
    assert!(matches!(err, Error::UnsafeEntry { .. }), "{err}");
    assert!(err.to_string().contains(".."), "{err}");
    assert_empty(&t.path().join("outside"));
}

#[test]
fn absolute_path_is_contained() {
    let (_t, outside, target) = sandbox();
    let name = format!("{}/abs", outside.display());
    let tar = RawTar::new().entry(&name, Regular, "", b"x").finish();
    apply(tar, &target).unwrap();
    assert_empty(&outside);
    let inside = target.join(name.trim_start_matches('/'));
    assert_eq!(fs_err::read(inside).unwrap(), b"x");
}

#[test]
fn symlink_then_file_absolute_is_contained() {
    let (_t, outside, target) = sandbox();
    let tar = RawTar::new()
        .entry("link", Symlink, outside.to_str().unwrap(), b"")
        .entry("link/pwned", Regular, "", b"x")
        .finish();
    apply(tar, &target).unwrap();
    assert_empty(&outside);
    // resolved inside the root: target/<outside path>/pwned
    let inside = target
        .join(outside.strip_prefix("/").unwrap())
        .join("pwned");
    assert_eq!(fs_err::read(inside).unwrap(), b"x");
}

#[test]
fn symlink_then_file_relative_is_contained() {
    let (_t, outside, target) = sandbox();
    let tar = RawTar::new()
        .entry("rel", Symlink, "../../../outside", b"")
        .entry("rel/pwned", Regular, "", b"x")
        .finish();
    apply(tar, &target).unwrap();
    assert_empty(&outside);
    assert_eq!(fs_err::read(target.join("outside/pwned")).unwrap(), b"x");
}

#[test]
fn symlink_chain_is_contained() {
    let (_t, outside, target) = sandbox();
    let tar = RawTar::new()
        .entry("a", Symlink, "b", b"")
        .entry("b", Symlink, "c/../..", b"")
        .entry("c", Directory, "", b"")
        .entry("d", Symlink, "a/../../../../outside", b"")
        .entry("d/pwned", Regular, "", b"x")
        .finish();
    apply(tar, &target).unwrap();
    assert_empty(&outside);
    assert_eq!(fs_err::read(target.join("outside/pwned")).unwrap(), b"x");
}

#[test]
fn hardlink_to_host_etc_passwd_is_refused() {
    let (_t, _outside, target) = sandbox();
    let before = fs_err::metadata("/etc/passwd")
        .map(|m| std::os::unix::fs::MetadataExt::nlink(&m))
        .unwrap();
    let tar = RawTar::new().entry("pw", Link, "/etc/passwd", b"").finish();
    let err = apply(tar, &target).unwrap_err();
    assert!(err.to_string().contains("link"), "{err}");
    assert!(!target.join("pw").exists());
    let tar = RawTar::new()
        .entry("pw2", Link, "../../../../../../etc/passwd", b"")
        .finish();
    let err = apply(tar, &target).unwrap_err();
    assert!(matches!(err, Error::UnsafeEntry { .. }), "{err}");
    let after = fs_err::metadata("/etc/passwd")
        .map(|m| std::os::unix::fs::MetadataExt::nlink(&m))
        .unwrap();
    assert_eq!(before, after);
}

#[test]
fn hardlink_through_symlink_parent_is_contained() {
    let (_t, outside, target) = sandbox();
    fs_err::write(outside.join("secret"), b"s").unwrap();
    let tar = RawTar::new()
        .entry("esc", Symlink, outside.to_str().unwrap(), b"")
        .entry("pw", Link, "esc/secret", b"")
        .finish();
    // esc/secret resolves to target/<outside>/secret, which does not exist
    assert!(apply(tar, &target).is_err());
    let md = fs_err::metadata(outside.join("secret")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::nlink(&md), 1);
}

#[test]
fn whiteout_of_dotdot_is_refused() {
    let (t, _outside, target) = sandbox();
    fs_err::write(t.path().join("a/b/keep"), b"k").unwrap();
    let tar = RawTar::new().entry("x/.wh...", Regular, "", b"").finish();
    let err = apply(tar, &target).unwrap_err();
    assert!(matches!(err, Error::UnsafeEntry { .. }), "{err}");
    assert!(t.path().join("a/b/keep").exists());
    assert!(target.exists());
}

#[test]
fn device_nodes_are_skipped_without_privilege() {
    let (_t, _outside, target) = sandbox();
    let tar = RawTar::new().entry("dev/sda", Char, "", b"").finish();
    let opts = ApplyOptions {
        allow_devices: false,
        same_owner: false,
        ..ApplyOptions::default()
    };
    apply_layer(Cursor::new(tar), &target, &opts).unwrap();
    assert!(!target.join("dev/sda").exists());
}

#[test]
fn ten_gigabyte_claim_in_small_file_is_refused() {
    let (_t, _outside, target) = sandbox();
    let mut raw = RawTar::new();
    raw.entry_sized("big", Regular, "", &[7u8; 1024], 10 << 30);
    let err = apply(raw.buf.clone(), &target).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    let size = fs_err::metadata(target.join("big"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(size <= 1024, "wrote {size} bytes");
}

#[test]
fn gnu_sparse_entry_is_refused() {
    let (_t, _outside, target) = sandbox();
    let tar = RawTar::new()
        .entry("sparse", tar::EntryType::GNUSparse, "", b"")
        .finish();
    let err = apply(tar, &target).unwrap_err();
    assert!(err.to_string().contains("sparse"), "{err}");
}

#[test]
fn threaded_applier_reports_errors_without_hanging() {
    let (t, _outside, target) = sandbox();
    let mut raw = RawTar::new();
    raw.entry("ok", Regular, "", &vec![1u8; 3 << 20]);
    raw.entry("../../../outside/evil", Regular, "", b"x");
    raw.entry("after", Regular, "", &vec![2u8; 5 << 20]);
    let err = kiln_cache::apply_layer_threaded(
        Cursor::new(raw.finish()),
        &target,
        &ApplyOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::UnsafeEntry { .. }), "{err}");
    assert_empty(&t.path().join("outside"));
}

#[test]
fn file_over_symlink_does_not_write_through() {
    let (_t, outside, target) = sandbox();
    let victim = outside.join("victim");
    fs_err::write(&victim, b"original").unwrap();
    let tar = RawTar::new()
        .entry("link", Symlink, victim.to_str().unwrap(), b"")
        .entry("link", Regular, "", b"overwritten")
        .finish();
    apply(tar, &target).unwrap();
    assert_eq!(fs_err::read(&victim).unwrap(), b"original");
    assert_eq!(fs_err::read(target.join("link")).unwrap(), b"overwritten");
}

#[test]
fn pax_path_with_dotdot_is_refused() {
    let (t, _outside, target) = sandbox();
    let record = "30 path=../../../outside/evil\n";
    let mut raw = RawTar::new();
    raw.entry(
        "PaxHeaders/x",
        tar::EntryType::XHeader,
        "",
        record.as_bytes(),
    );
    raw.entry("harmless", Regular, "", b"x");
    let err = apply(raw.finish(), &target).unwrap_err();
    assert!(matches!(err, Error::UnsafeEntry { .. }), "{err}");
    assert_empty(&t.path().join("outside"));
}
