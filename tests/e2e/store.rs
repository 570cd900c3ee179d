//! The store survives a killed kiln: SIGKILL during `kiln load` leaves a store that opens, a
//! consistent image list, and a retry that succeeds.

use crate::support::{Context, Kiln, text};
use std::time::Duration;

#[test]
fn sigkill_during_load_leaves_a_consistent_store() {
    let src = Kiln::empty();
    // A 48 MiB random file makes a load long enough to be interrupted.
    let ctx = Context::new();
    let rootfs = ctx.path().join("rootfs");
    fs_err::create_dir_all(rootfs.join("data")).unwrap();
    let mut big = vec![0u8; 48 << 20];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for chunk in big.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    fs_err::write(rootfs.join("data/blob"), &big).unwrap();
    let tar = ctx.path().join("rootfs.tar");
    let st = std::process::Command::new("tar")
        .args([
            "-C",
            rootfs.to_str().unwrap(),
            "-cf",
            tar.to_str().unwrap(),
            ".",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    src.ok(&["import", tar.to_str().unwrap(), "big:1"]);
    let archive = ctx.path().join("big-archive.tar");
    src.ok(&["save", "-o", archive.to_str().unwrap(), "big:1"]);

    for delay_ms in [2u64, 20, 80, 200, 400] {
        let dst = Kiln::empty();
        let mut child = dst
            .command()
            .args(["load", "-q", "-i", archive.to_str().unwrap()])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        // The store opens and lists only whole images.
        let images = dst.run(&["images", "--format", "json"]);
        assert!(
            images.status.success(),
            "after a kill at {delay_ms} ms: {}",
            text(&images.stderr)
        );
        for line in text(&images.stdout).lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let id = v["id"].as_str().unwrap().to_string();
            dst.ok(&["inspect", &id]);
        }
        // Every visible blob is whole: its content hashes to its name.
        let blobs = dst.root.path().join("blobs/sha256");
        if let Ok(dir) = fs_err::read_dir(&blobs) {
            for e in dir {
                let p = e.unwrap().path();
                let sum = std::process::Command::new("sha256sum")
                    .arg(&p)
                    .output()
                    .unwrap();
                let hex = text(&sum.stdout)
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_string();
                assert_eq!(
                    Some(hex.as_str()),
                    p.file_name().and_then(|n| n.to_str()),
                    "partial blob visible after a kill at {delay_ms} ms"
                );
            }
        }
        dst.ok(&["load", "-q", "-i", archive.to_str().unwrap()]);
        dst.ok(&["inspect", "big:1"]);
    }
}

/// Bytes of the regular files under `dir` (not following symlinks).
fn du(dir: &std::path::Path) -> u64 {
    let Ok(entries) = fs_err::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => du(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = fs_err::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A docker archive of an image with one layer of `mib` MiB of incompressible data.
fn big_archive(ctx: &Context, mib: usize) -> std::path::PathBuf {
    let src = Kiln::empty();
    let rootfs = ctx.path().join("rootfs");
    fs_err::create_dir_all(rootfs.join("data")).unwrap();
    let mut big = vec![0u8; mib << 20];
    let mut x: u64 = 0x2545f4914f6cdd1d;
    for chunk in big.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    fs_err::write(rootfs.join("data/blob"), &big).unwrap();
    drop(big);
    let tar = ctx.path().join("rootfs.tar");
    let st = std::process::Command::new("tar")
        .args([
            "-C",
            rootfs.to_str().unwrap(),
            "-cf",
            tar.to_str().unwrap(),
            ".",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    fs_err::remove_dir_all(&rootfs).unwrap();
    src.ok(&["import", tar.to_str().unwrap(), "big:1"]);
    fs_err::remove_file(&tar).unwrap();
    let archive = ctx.path().join("big-archive.tar");
    src.ok(&["save", "-o", archive.to_str().unwrap(), "big:1"]);
    archive
}

#[test]
fn scratch_of_a_killed_load_is_swept_by_the_next_command() {
    let ctx = Context::new();
    let archive = big_archive(&ctx, 200);
    let k = Kiln::empty();
    let tmp = k.root.path().join("tmp");
    let mut child = k
        .command()
        .args(["load", "-q", "-i", archive.to_str().unwrap()])
        .spawn()
        .unwrap();
    // Kill it once it has written a good part of the layer to its scratch.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while du(&tmp) < 32 << 20 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the load ended before it could be killed"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the load wrote nothing"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = du(&tmp);
    let left = names(&tmp);
    assert!(
        left.len() == 1 && left[0].starts_with(&format!("proc-{}-", child.id())),
        "the killed load's scratch is its own directory: {left:?}"
    );
    eprintln!(
        "tmp after the killed load: {} MiB in {left:?}",
        before >> 20
    );

    k.ok(&["images"]);
    assert_eq!(
        names(&tmp),
        Vec::<String>::new(),
        "the next command swept it"
    );
    eprintln!("tmp after `kiln images`: {} bytes", du(&tmp));
    k.ok(&["load", "-q", "-i", archive.to_str().unwrap()]);
    k.ok(&["inspect", "big:1"]);
    assert_eq!(
        names(&tmp),
        Vec::<String>::new(),
        "a finished load leaves no scratch"
    );
}

/// The first file named `name` under `dir`.
fn find(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    for e in fs_err::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if e.file_name().to_str() == Some(name) {
            return Some(p);
        }
        if e.file_type().is_ok_and(|t| t.is_dir())
            && let Some(f) = find(&p, name)
        {
            return Some(f);
        }
    }
    None
}

#[test]
fn scratch_of_a_live_process_is_kept() {
    if !crate::support::sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let tmp = k.root.path().join("tmp");
    // The step waits (in a cache mount the test sees) until the test has run other commands
    // on the store.
    let ctx = Context::new().file(
        "Dockerfile",
        "FROM busybox\nRUN --mount=type=cache,target=/c,id=sync \
         sh -c 'touch /c/started; while [ ! -e /c/go ]; do sleep 0.05; done' \
         && echo done > /done\n",
    );
    let mut child = k
        .command()
        .args(["build", "-q", "-t", "live", ctx.arg()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let started = loop {
        if let Some(f) = find(&k.root.path().join("cache-mounts"), "started") {
            break f;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the build ended before its step waited"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the step never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let scratch = names(&tmp);
    assert_eq!(scratch.len(), 1, "{scratch:?}");
    let upper = find(&tmp, "upper").expect("the step's upperdir");
    // Other commands open the store meanwhile: the build's scratch (its step's overlay and
    // upperdir) stays.
    k.ok(&["images"]);
    k.ok(&["images"]);
    assert_eq!(names(&tmp), scratch, "a live build's scratch was swept");
    assert!(upper.is_dir(), "a live build's step area was swept");
    fs_err::write(started.with_file_name("go"), "").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(k.ok(&["run", "--rm", "live", "cat", "/done"]), "done\n");
    assert_eq!(names(&tmp), Vec::<String>::new());
}
