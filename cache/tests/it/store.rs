//! Store concurrency and crash safety.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kiln_cache::{ArchiveFormat, Store, load_archive, save_archive};
use kiln_oci::sha256;

/// Runs this test binary's test `name` in a child process with `env` set.
fn child(name: &str, env: &[(&str, &Path)]) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([name, "--exact", "--nocapture", "--test-threads=1"]);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

#[test]
fn helper_cache_writer() {
    let Some(root) = std::env::var_os("KILN_TEST_CACHE_WRITER") else {
        return;
    };
    let s = Store::open(root).unwrap();
    for i in 0..100 {
        s.cache_put(&format!("child-{i}"), b"c").unwrap();
    }
}

#[test]
fn two_processes_share_one_store() {
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path()).unwrap();
    let mut kid = child(
        "store::helper_cache_writer",
        &[("KILN_TEST_CACHE_WRITER", t.path())],
    )
    .spawn()
    .unwrap();
    let threads: Vec<_> = (0..2)
        .map(|th| {
            let root = t.path().to_owned();
            std::thread::spawn(move || {
                let s = Store::open(root).unwrap();
                for i in 0..100 {
                    s.cache_put(&format!("t{th}-{i}"), b"p").unwrap();
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    assert!(kid.wait().unwrap().success());
    for i in 0..100 {
        assert!(s.cache_get(&format!("child-{i}")).unwrap().is_some());
        assert!(s.cache_get(&format!("t0-{i}")).unwrap().is_some());
        assert!(s.cache_get(&format!("t1-{i}")).unwrap().is_some());
    }
}

#[test]
fn helper_loader() {
    let (Some(root), Some(archive)) = (
        std::env::var_os("KILN_TEST_LOAD_STORE"),
        std::env::var_os("KILN_TEST_LOAD_ARCHIVE"),
    ) else {
        return;
    };
    let s = Store::open(root).unwrap();
    let f = fs_err::File::open(archive).unwrap();
    load_archive(&s, f).unwrap();
}

/// Every visible blob hashes to its name; every image entry is complete.
fn check_consistent(s: &Store) {
    for e in fs_err::read_dir(s.root().join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let bytes = fs_err::read(e.path()).unwrap();
        assert_eq!(
            sha256(&bytes).hex(),
            e.file_name().to_str().unwrap(),
            "partial blob visible"
        );
    }
    for img in s.images().unwrap() {
        let rec = s
            .resolve(&img.manifest_digest.to_string())
            .unwrap()
            .expect("listed image resolves");
        for l in &rec.layers {
            assert!(s.has_blob(&l.digest));
        }
    }
}

#[test]
fn sigkill_during_load_leaves_a_consistent_store() {
    let t = tempfile::tempdir().unwrap();
    // A source image with a big incompressible layer so the load takes a while.
    let src = Store::open(t.path().join("src")).unwrap();
    let dir = t.path().join("rootfs");
    fs_err::create_dir_all(&dir).unwrap();
    let mut data = vec![0u8; 48 << 20];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    fs_err::write(dir.join("big"), &data).unwrap();
    let layer = src
        .create_layer(
            &dir,
            &kiln_cache::LayerOptions {
                compression: kiln_cache::Encoding::None,
                ..Default::default()
            },
        )
        .unwrap();
    let cfg = kiln_cache::image::minimal_config(
        std::slice::from_ref(&layer),
        "1970-01-01T00:00:00Z",
        "test",
        serde_json::json!({}),
    )
    .unwrap();
    let rec = src.put_image(&cfg, &[layer]).unwrap();
    let archive = t.path().join("img.tar");
    save_archive(
        &src,
        &[("docker.io/library/big:1".into(), rec)],
        ArchiveFormat::Docker,
        fs_err::File::create(&archive).unwrap(),
    )
    .unwrap();

    let root = t.path().join("dst");
    Store::open(&root).unwrap();
    let mut interrupted = 0;
    for delay_ms in [5u64, 30, 80, 150, 300] {
        let mut kid = child(
            "store::helper_loader",
            &[
                ("KILN_TEST_LOAD_STORE", &root),
                ("KILN_TEST_LOAD_ARCHIVE", &archive),
            ],
        )
        .spawn()
        .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        kid.kill().unwrap(); // SIGKILL
        kid.wait().unwrap();
        let s = Store::open(&root).unwrap();
        check_consistent(&s);
        if s.resolve("docker.io/library/big:1").unwrap().is_none() {
            interrupted += 1;
        }
    }
    assert!(interrupted > 0, "no kill landed before the load finished");
    // A retry succeeds and the image is listed.
    let s = Store::open(&root).unwrap();
    let loaded = load_archive(&s, fs_err::File::open(&archive).unwrap()).unwrap();
    assert_eq!(loaded[0].names, vec!["docker.io/library/big:1".to_owned()]);
    check_consistent(&s);
    assert!(s.resolve("docker.io/library/big:1").unwrap().is_some());
}
