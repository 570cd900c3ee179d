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
