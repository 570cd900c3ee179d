//! Snapshots and overlay mounts (root only).

use kiln_cache::mount::MAX_LOWERS;
use kiln_cache::{Encoding, LayerOptions, LayerSource, Store, mount_overlay, unmount};
use kiln_oci::chain_id;

use crate::support::{RawTar, file, is_root, layer_from_tar};

#[test]
fn whiteouts_hide_lower_files_when_mounted_and_upper_is_captured() {
    if !is_root() {
        return;
    }
    use tar::EntryType::{Directory, Regular};
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path().join("s")).unwrap();
    let l1 = layer_from_tar(
        &s,
        RawTar::new()
            .entry("a/", Directory, "", b"")
            .entry("a/gone", Regular, "", b"1")
            .entry("a/stay", Regular, "", b"1")
            .entry("d/", Directory, "", b"")
            .entry("d/old", Regular, "", b"1")
            .finish(),
    );
    let l2 = layer_from_tar(
        &s,
        RawTar::new()
            .entry("a/", Directory, "", b"")
            .entry("a/.wh.gone", Regular, "", b"")
            .entry("d/", Directory, "", b"")
            .entry("d/.wh..wh..opq", Regular, "", b"")
            .entry("d/new", Regular, "", b"2")
            .finish(),
    );
    let snap = s.prepare_snapshot(&[l1.clone(), l2.clone()]).unwrap();
    assert_eq!(
        snap.chain_id,
        chain_id(&[l1.diff_id.clone(), l2.diff_id.clone()])
    );
    assert_eq!(snap.lowerdirs.len(), 2);
    // idempotent
    assert_eq!(s.prepare_snapshot(&[l1.clone(), l2.clone()]).unwrap(), snap);

    let mnt = t.path().join("mnt");
    fs_err::create_dir_all(&mnt).unwrap();
    let g = mount_overlay(&snap.lowerdirs, None, &mnt).unwrap();
    assert!(!mnt.join("a/gone").exists());
    assert!(mnt.join("a/stay").exists());
    assert!(!mnt.join("d/old").exists());
    assert_eq!(fs_err::read(mnt.join("d/new")).unwrap(), b"2");
    assert!(
        fs_err::write(mnt.join("x"), b"ro").is_err(),
        "read-only mount"
    );
    g.unmount().unwrap();
    assert!(!mnt.join("a").exists());

    // writable: delete a lower file, add one, capture the upper as a layer
    let up = s.tmp_dir().join("up");
    let work = s.tmp_dir().join("work");
    fs_err::create_dir_all(&up).unwrap();
    fs_err::create_dir_all(&work).unwrap();
    let g = mount_overlay(&snap.lowerdirs, Some((&up, &work)), &mnt).unwrap();
    fs_err::remove_file(mnt.join("a/stay")).unwrap();
    file(&mnt, "added", b"3");
    drop(g);
    let l3 = s
        .create_layer(
            &up,
            &LayerOptions {
                compression: Encoding::ZSTD,
                mtime_clamp: Some(0),
                source: LayerSource::OverlayUpper,
            },
        )
        .unwrap();
    let snap3 = s.commit_upper_as_snapshot(&snap, &up, &l3).unwrap();
    assert_eq!(
        snap3.chain_id,
        chain_id(&[l1.diff_id.clone(), l2.diff_id.clone(), l3.diff_id.clone()])
    );
    let g = mount_overlay(&snap3.lowerdirs, None, &mnt).unwrap();
    assert!(!mnt.join("a/stay").exists());
    assert!(mnt.join("added").exists());
    let leaked = g.leak();
    assert!(mnt.join("added").exists(), "leaked mount stays");
    unmount(&leaked).unwrap();
    assert!(!mnt.join("added").exists());
    unmount(&leaked).unwrap(); // not mounted is fine

    // The captured layer unpacked fresh gives the same view.
    let s2 = Store::open(t.path().join("s2")).unwrap();
    let layers: Vec<_> = [&l1, &l2]
        .iter()
        .map(|l| layer_from_tar(&s2, s.read_blob(&l.digest).unwrap()))
        .collect();
    let mut w = s2.blob_writer().unwrap();
    std::io::Write::write_all(&mut w, &s.read_blob(&l3.digest).unwrap()).unwrap();
    w.commit(Some(&l3.digest)).unwrap();
    let snap_b = s2
        .prepare_snapshot(&[layers[0].clone(), layers[1].clone(), l3.clone()])
        .unwrap();
    let g = mount_overlay(&snap_b.lowerdirs, None, &mnt).unwrap();
    assert!(!mnt.join("a/stay").exists());
    assert!(!mnt.join("a/gone").exists());
    assert_eq!(fs_err::read(mnt.join("added")).unwrap(), b"3");
    g.unmount().unwrap();
}

#[test]
fn empty_and_deep_chains_mount() {
    if !is_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let mnt = t.path().join("mnt");
    fs_err::create_dir_all(&mnt).unwrap();
    let g = mount_overlay(&[], None, &mnt).unwrap();
    assert_eq!(fs_err::read_dir(&mnt).unwrap().count(), 0);
    g.unmount().unwrap();
    let mut dirs = Vec::new();
    for i in 0..MAX_LOWERS + 20 {
        let d = t.path().join(format!("l{i}"));
        file(&d, &format!("f{i}"), b"x");
        dirs.push(d);
    }
    let g = mount_overlay(&dirs, None, &mnt).unwrap();
    assert!(mnt.join("f0").exists());
    assert!(mnt.join(format!("f{}", MAX_LOWERS + 19)).exists());
    drop(g);
    assert!(!mnt.join("f0").exists());
}

#[test]
fn concurrent_prepare_of_one_chain() {
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path().join("s")).unwrap();
    let d = t.path().join("d");
    for i in 0..200 {
        file(&d, &format!("dir{}/f{i}", i % 7), b"data");
    }
    let l = s.create_layer(&d, &LayerOptions::default()).unwrap();
    let hs: Vec<_> = (0..4)
        .map(|_| {
            let s = s.clone();
            let l = l.clone();
            std::thread::spawn(move || s.prepare_snapshot(&[l]).unwrap())
        })
        .collect();
    let snaps: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(snaps.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(fs_err::read_dir(&snaps[0].lowerdirs[0]).unwrap().count(), 7);
    let left: Vec<_> = fs_err::read_dir(s.tmp_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["lock"], "losers cleaned up");
}

#[test]
fn a_stacked_layer_is_the_tar_of_its_merged_tree_and_its_snapshot_mounts_so() {
    if !is_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path().join("s")).unwrap();
    // The previous layer, and a delta over it: a file replaced, one added in an old and in
    // a new directory, a directory over a lower file, a file over a lower directory.
    let below = s.tmp_dir().join("below");
    file(&below, "a/keep", b"1");
    file(&below, "a/edit", b"old");
    file(&below, "b/deep/x", b"x");
    file(&below, "f-then-dir", b"f");
    file(&below, "dir-then-f/inside", b"i");
    let delta = s.tmp_dir().join("delta");
    file(&delta, "a/edit", b"new, longer");
    file(&delta, "a/added", b"2");
    file(&delta, "c/new", b"3");
    file(&delta, "f-then-dir/in", b"d");
    file(&delta, "dir-then-f", b"now a file");
    let opts = LayerOptions {
        mtime_clamp: Some(0),
        ..LayerOptions::default()
    };
    let l0 = s.create_layer(&below, &opts).unwrap();
    let snap0 = s
        .commit_upper_as_snapshot(&kiln_cache::Snapshot::empty(), &below, &l0)
        .unwrap();
    let below_chain = snap0.chain_id.clone().unwrap();
    let dirs = s.layer_dirs(&below_chain).unwrap().unwrap();
    let mut stacked_dirs = dirs.clone();
    stacked_dirs.push(delta.clone());
    let stacked = s
        .create_layer_stacked(&stacked_dirs, &opts, None)
        .unwrap()
        .0;
    // The reference: the same directories merged by overlayfs, tarred as a plain tree.
    let mnt = t.path().join("mnt");
    fs_err::create_dir_all(&mnt).unwrap();
    let g = mount_overlay(&stacked_dirs, None, &mnt).unwrap();
    let merged = s.create_layer(&mnt, &opts).unwrap();
    g.unmount().unwrap();
    assert_eq!(stacked.diff_id, merged.diff_id);
    assert_eq!(stacked.digest, merged.digest);

    let snap = s
        .commit_stacked_snapshot(
            &kiln_cache::Snapshot::empty(),
            &delta,
            &stacked,
            &below_chain,
        )
        .unwrap();
    assert_eq!(snap.lowerdirs.len(), 2, "the layer below and the delta");
    let again = s.prepare_snapshot(std::slice::from_ref(&stacked)).unwrap();
    assert_eq!(again, snap);
    let g = mount_overlay(&again.lowerdirs, None, &mnt).unwrap();
    assert_eq!(fs_err::read(mnt.join("a/edit")).unwrap(), b"new, longer");
    assert_eq!(fs_err::read(mnt.join("a/keep")).unwrap(), b"1");
    assert_eq!(fs_err::read(mnt.join("dir-then-f")).unwrap(), b"now a file");
    assert!(!mnt.join("f-then-dir/inside").exists());
    g.unmount().unwrap();

    // GC keeps what a kept stack goes over; without its layer below, a stack is unpacked.
    s.lease(
        "test",
        &[snap.chain_id.clone().unwrap(), stacked.digest.clone()],
    )
    .unwrap();
    s.gc_with_grace(std::time::Duration::ZERO).unwrap();
    assert!(
        s.layer_dirs(&below_chain).unwrap().is_some(),
        "kept for the stack"
    );
    assert_eq!(
        s.prepare_snapshot(std::slice::from_ref(&stacked)).unwrap(),
        snap
    );
    fs_err::remove_dir_all(s.snapshot_dir(&below_chain)).unwrap();
    assert!(
        s.layer_dirs(snap.chain_id.as_ref().unwrap())
            .unwrap()
            .is_none()
    );
    let unpacked = s.prepare_snapshot(std::slice::from_ref(&stacked)).unwrap();
    assert_eq!(unpacked.lowerdirs.len(), 1, "unpacked from its blob");
    let g = mount_overlay(&unpacked.lowerdirs, None, &mnt).unwrap();
    assert_eq!(fs_err::read(mnt.join("a/edit")).unwrap(), b"new, longer");
    assert_eq!(fs_err::read(mnt.join("b/deep/x")).unwrap(), b"x");
    g.unmount().unwrap();
}

#[test]
fn snapshot_sizes_are_walked_once_and_follow_snapshots_made_and_removed() {
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path().join("s")).unwrap();
    let d = t.path().join("d");
    for i in 0..50 {
        file(&d, &format!("dir{}/f{i}", i % 5), &vec![b'x'; 10_000]);
    }
    let l = s.create_layer(&d, &LayerOptions::default()).unwrap();
    let empty = s.disk_usage().unwrap().snapshot_bytes;
    let snap = s.prepare_snapshot(std::slice::from_ref(&l)).unwrap();
    let walked = kiln_cache::prune::du(&t.path().join("s/snapshots"));
    let first = s.disk_usage().unwrap().snapshot_bytes;
    assert_eq!(first, walked, "the first look walks the snapshot");
    assert!(first >= empty + 50 * 10_000, "{first}");
    // Remembered: the same figure without walking (a file slipped into the immutable
    // snapshot is not seen), and walked again once the snapshot is another directory.
    fs_err::write(snap.lowerdirs[0].join("dir0/extra"), vec![b'y'; 100_000]).unwrap();
    assert_eq!(s.disk_usage().unwrap().snapshot_bytes, first);
    let dir = snap.lowerdirs[0].clone();
    let moved = t.path().join("moved");
    fs_err::rename(&dir, &moved).unwrap();
    assert_eq!(
        s.disk_usage().unwrap().snapshot_bytes,
        empty,
        "a removed snapshot counts 0"
    );
    assert!(
        s.kv_list("snapshot-du").unwrap().is_empty(),
        "and is forgotten"
    );
    fs_err::rename(&moved, &dir).unwrap();
    assert!(s.disk_usage().unwrap().snapshot_bytes >= first + 100_000);
}

#[test]
fn a_stack_over_a_stack_is_flattened_into_one_delta_with_the_same_tree() {
    use std::os::unix::fs::PermissionsExt;
    if !is_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path().join("s")).unwrap();
    let opts = LayerOptions::default();
    let base = s.tmp_dir().join("base");
    file(&base, "a/keep", b"1");
    file(&base, "a/edit", b"old");
    file(&base, "b/x", b"x");
    let l0 = s.create_layer(&base, &opts).unwrap();
    let snap0 = s
        .commit_upper_as_snapshot(&kiln_cache::Snapshot::empty(), &base, &l0)
        .unwrap();
    let base_chain = snap0.chain_id.clone().unwrap();
    // Two edits, each a delta over what the one before made.
    let d1 = s.tmp_dir().join("d1");
    file(&d1, "a/edit", b"first edit");
    file(&d1, "a/only-in-d1", b"d1");
    file(&d1, "n1/new1", b"n1");
    fs_err::set_permissions(d1.join("n1"), std::fs::Permissions::from_mode(0o711)).unwrap();
    std::os::unix::fs::lchown(d1.join("n1"), Some(1234), Some(5678)).unwrap();
    let old = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 1_000_000,
            tv_nsec: 0,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: 1_000_000,
            tv_nsec: 0,
        },
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        d1.join("n1"),
        &old,
        rustix::fs::AtFlags::empty(),
    )
    .unwrap();
    let mut dirs1 = s.layer_dirs(&base_chain).unwrap().unwrap();
    dirs1.push(d1.clone());
    let l1 = s.create_layer_stacked(&dirs1, &opts, None).unwrap().0;
    let snap1 = s
        .commit_stacked_snapshot(&kiln_cache::Snapshot::empty(), &d1, &l1, &base_chain)
        .unwrap();
    let chain1 = snap1.chain_id.clone().unwrap();
    let d2 = s.tmp_dir().join("d2");
    file(&d2, "a/edit", b"second edit, longer");
    file(&d2, "n2/new2", b"n2");
    let mut dirs2 = s.layer_dirs(&chain1).unwrap().unwrap();
    assert_eq!(dirs2.len(), 2);
    dirs2.push(d2.clone());
    let l2 = s.create_layer_stacked(&dirs2, &opts, None).unwrap().0;
    let snap2 = s
        .commit_stacked_snapshot(&kiln_cache::Snapshot::empty(), &d2, &l2, &chain1)
        .unwrap();
    let chain2 = snap2.chain_id.clone().unwrap();
    let flat = s.layer_dirs(&chain2).unwrap().unwrap();
    assert_eq!(flat.len(), 2, "one merged delta over the base: {flat:?}");
    assert_eq!(flat, snap2.lowerdirs);
    // The flattened tree is the tree the layer was made of, byte for byte.
    assert_eq!(s.create_layer_stacked(&flat, &opts, None).unwrap().0, l2);
    let mnt = t.path().join("mnt");
    fs_err::create_dir_all(&mnt).unwrap();
    let g = mount_overlay(&flat, None, &mnt).unwrap();
    assert_eq!(
        fs_err::read(mnt.join("a/edit")).unwrap(),
        b"second edit, longer"
    );
    assert_eq!(fs_err::read(mnt.join("a/only-in-d1")).unwrap(), b"d1");
    assert_eq!(fs_err::read(mnt.join("a/keep")).unwrap(), b"1");
    assert_eq!(fs_err::read(mnt.join("n1/new1")).unwrap(), b"n1");
    assert_eq!(fs_err::read(mnt.join("n2/new2")).unwrap(), b"n2");
    g.unmount().unwrap();
    // GC keeps only the base for it; the delta of the first edit can go.
    s.lease("test", &[chain2.clone(), l2.digest.clone()])
        .unwrap();
    s.gc_with_grace(std::time::Duration::ZERO).unwrap();
    assert_eq!(s.layer_dirs(&chain2).unwrap().unwrap(), flat);
}

fn set_mtime(p: &std::path::Path, secs: i64) {
    let t = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

#[test]
fn a_stacked_layer_written_from_the_tar_index_is_the_tar_a_walk_writes() {
    if !is_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path().join("s")).unwrap();
    let at = |secs| LayerOptions {
        mtime_clamp: Some(secs),
        ..LayerOptions::default()
    };
    // Files, directories, a symlink, a fifo, an extended attribute, times on both sides of
    // the clamps used below.
    let base = s.tmp_dir().join("base");
    file(&base, "a/keep", b"1");
    file(&base, "a/edit", b"old");
    file(&base, "b/deep/x", &vec![b'x'; 70_000]);
    file(&base, "dir-then-f/inside", b"i");
    file(&base, "f-then-dir", b"f");
    file(&base, "z/last", b"z");
    std::os::unix::fs::symlink("a/keep", base.join("link")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        base.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    rustix::fs::setxattr(
        base.join("a/keep"),
        "user.kiln",
        b"v",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    set_mtime(&base.join("a/keep"), 1_000);
    set_mtime(&base.join("b/deep"), 2_000_000_000);
    let (l0, _, index) = s
        .create_layer_indexed(&base, &at(1_500_000_000), true)
        .unwrap();
    let index = index.expect("a plain tree has an index");
    assert_eq!(index.len(), 13);
    let snap0 = s
        .commit_upper_indexed(&kiln_cache::Snapshot::empty(), &base, &l0, Some(&index))
        .unwrap();
    let chain0 = snap0.chain_id.clone().unwrap();
    assert_eq!(s.tar_index(&chain0).map(|i| i.len()), Some(13));

    // Edit one: a changed file, new files in old and new directories, a file over a
    // directory, a directory over a file. Written with another clamp than the index's.
    let d1 = s.tmp_dir().join("d1");
    file(&d1, "a/edit", b"new, longer");
    file(&d1, "a/added", b"2");
    file(&d1, "c/new", b"3");
    file(&d1, "dir-then-f", b"now a file");
    file(&d1, "f-then-dir/in", b"d");
    let mut dirs1 = s.layer_dirs(&chain0).unwrap().unwrap();
    dirs1.push(d1.clone());
    let (walked, _) = s.create_layer_stacked(&dirs1, &at(0), None).unwrap();
    let (l1, index1) = s
        .create_layer_stacked(&dirs1, &at(0), s.tar_index(&chain0).as_ref())
        .unwrap();
    assert_eq!(l1, walked, "the index and a walk write the same tar");
    let (walked_late, _) = s
        .create_layer_stacked(&dirs1, &at(1_800_000_000), None)
        .unwrap();
    let (l1_late, _) = s
        .create_layer_stacked(&dirs1, &at(1_800_000_000), s.tar_index(&chain0).as_ref())
        .unwrap();
    assert_eq!(l1_late, walked_late);
    assert_ne!(
        l1_late.diff_id, l1.diff_id,
        "the clamp is applied as it is written"
    );
    let snap1 = s
        .commit_stacked_indexed(
            &kiln_cache::Snapshot::empty(),
            &d1,
            &l1,
            &chain0,
            index1.as_ref(),
        )
        .unwrap();
    let chain1 = snap1.chain_id.clone().unwrap();
    assert!(s.tar_index(&chain1).is_some());

    // Edit two, over the (flattened) stack: the index of edit one's merged tree is used.
    let d2 = s.tmp_dir().join("d2");
    file(&d2, "a/edit", b"second");
    file(&d2, "b/deep/y", b"y");
    file(&d2, "zz", b"after all");
    let mut dirs2 = s.layer_dirs(&chain1).unwrap().unwrap();
    assert_eq!(dirs2.len(), 2);
    dirs2.push(d2.clone());
    let (walked2, _) = s.create_layer_stacked(&dirs2, &at(0), None).unwrap();
    let (l2, index2) = s
        .create_layer_stacked(&dirs2, &at(0), s.tar_index(&chain1).as_ref())
        .unwrap();
    assert_eq!(l2, walked2);
    let snap2 = s
        .commit_stacked_indexed(
            &kiln_cache::Snapshot::empty(),
            &d2,
            &l2,
            &chain1,
            index2.as_ref(),
        )
        .unwrap();
    let chain2 = snap2.chain_id.clone().unwrap();
    let flat = s.layer_dirs(&chain2).unwrap().unwrap();
    let (again, _) = s.create_layer_stacked(&flat, &at(0), None).unwrap();
    assert_eq!(
        again, l2,
        "the committed stack is the tree its index describes"
    );

    // A tree with hardlinks has no index; GC removes an index with its snapshot.
    let linked = s.tmp_dir().join("linked");
    file(&linked, "one", b"1");
    fs_err::hard_link(linked.join("one"), linked.join("two")).unwrap();
    let (_, _, none) = s.create_layer_indexed(&linked, &at(0), true).unwrap();
    assert!(none.is_none());
    let index_file = |c: &kiln_oci::Digest| {
        t.path()
            .join("s/snapshots")
            .join(format!("{}.index", c.hex()))
    };
    assert!(index_file(&chain0).is_file());
    s.gc_with_grace(std::time::Duration::ZERO).unwrap();
    assert!(!index_file(&chain0).exists() && !index_file(&chain2).exists());
    assert!(s.layer_dirs(&chain0).unwrap().is_none());

    // An index is only read for the snapshot directory it was kept for.
    let base = s.tmp_dir().join("base2");
    file(&base, "a/keep", b"1");
    let (l, _, index) = s.create_layer_indexed(&base, &at(0), true).unwrap();
    let snap = s
        .commit_upper_indexed(&kiln_cache::Snapshot::empty(), &base, &l, index.as_ref())
        .unwrap();
    let c = snap.chain_id.clone().unwrap();
    assert!(s.tar_index(&c).is_some());
    let kept = fs_err::read(index_file(&c)).unwrap();
    fs_err::remove_dir_all(s.snapshot_dir(&c)).unwrap();
    s.prepare_snapshot(std::slice::from_ref(&l)).unwrap();
    fs_err::write(index_file(&c), &kept).unwrap();
    assert!(s.tar_index(&c).is_none(), "made again: another directory");
}

/// Bytes that compress somewhat and that no two files share.
fn varied(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i % 4 == 0 {
                (x >> 20) as u8
            } else {
                b'a' + (x % 13) as u8
            }
        })
        .collect()
}

#[test]
fn a_layer_over_the_previous_one_takes_its_blocks_and_is_the_layer_a_fresh_store_writes() {
    if !is_root() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path().join("s")).unwrap();
    let fresh = Store::open(t.path().join("fresh")).unwrap();
    for enc in [Encoding::GZIP, Encoding::ZSTD] {
        let opts = LayerOptions {
            mtime_clamp: Some(0),
            compression: enc,
            ..LayerOptions::default()
        };
        // 12 MB in 300 files: several content-defined blocks.
        let base = s.tmp_dir().join(format!("base-{}", enc.media_type().len()));
        for i in 0..300u64 {
            file(
                &base,
                &format!("d{}/f{i:03}", i / 40),
                &varied(i, 40_000 + i as usize),
            );
        }
        let (l0, _, index) = s.create_layer_indexed(&base, &opts, true).unwrap();
        let snap0 = s
            .commit_upper_indexed(&kiln_cache::Snapshot::empty(), &base, &l0, index.as_ref())
            .unwrap();
        let chain0 = snap0.chain_id.clone().unwrap();
        let index0 = s.tar_index(&chain0).expect("an index");
        // Edits: a file early in the tar grows, one in the middle is new; and, with the
        // clamp the previous layer was written with, then another.
        let d1 = s.tmp_dir().join(format!("d1-{}", enc.media_type().len()));
        file(
            &d1,
            "d0/f002",
            &[varied(2, 40_002), b"more\n".to_vec()].concat(),
        );
        file(&d1, "d3/f150b", b"new");
        let mut dirs = s.layer_dirs(&chain0).unwrap().unwrap();
        dirs.push(d1.clone());
        for clamp in [Some(0), Some(1)] {
            let opts = LayerOptions {
                mtime_clamp: clamp,
                ..opts.clone()
            };
            let (over, _) = s.create_layer_stacked(&dirs, &opts, Some(&index0)).unwrap();
            // The same tree written in a store that has no earlier layer to take from.
            let merged = t.path().join(format!("merged-{}", over.diff_id.hex()));
            fs_err::create_dir_all(&merged).unwrap();
            for dir in &dirs {
                copy_tree(dir, &merged);
            }
            let (walked, _) = fresh
                .create_layer_indexed(&merged, &opts, false)
                .map(|(l, n, _)| (l, n))
                .unwrap();
            assert_eq!(over, walked, "{enc:?} clamp {clamp:?}");
            assert_eq!(
                s.read_blob(&over.digest).unwrap(),
                fresh.read_blob(&walked.digest).unwrap()
            );
        }
    }
}

/// Copies the tree `from` over `to` (files, directories, modes, times).
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}
