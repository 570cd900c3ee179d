//! Context checksum benchmark: a generated 20,000-file / 200 MB context, hashed cold (no stat
//! cache) and warm (stat cache loaded from disk by a fresh hasher, as a new `kiln build` would).
//!
//! `cargo bench -p kiln-solver --bench context` (set `KILN_BENCH_FILES` / `KILN_BENCH_FILE_KB`
//! to change the size).

use kiln_solver::bench::{ContextHasher, Matcher};
use std::time::{Duration, Instant};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = env_or("KILN_BENCH_FILES", 20_000);
    let kb = env_or("KILN_BENCH_FILE_KB", 10);
    let work = tempfile::tempdir()?;
    let ctx = work.path().join("ctx");
    let cache = work.path().join("context-cache");
    // 100 directories of 200 files, each file distinct.
    let mut block = vec![0u8; kb * 1024];
    let started = Instant::now();
    for i in 0..files {
        let dir = ctx.join(format!("pkg{:03}/sub{}", i % 100, i % 7));
        if i < 700 {
            fs_err::create_dir_all(&dir)?;
        }
        block[..8].copy_from_slice(&(i as u64).to_le_bytes());
        fs_err::write(dir.join(format!("file{i}.dat")), &block)?;
    }
    println!(
        "generated {files} files x {kb} KiB in {:.0} ms",
        ms(started.elapsed())
    );
    // Let the racy-clean window pass, as any real edit-then-build does.
    std::thread::sleep(Duration::from_millis(300));
    let none = Matcher::default();
    let all: Vec<String> = Vec::new();

    let h = ContextHasher::open(&cache)?;
    let t = Instant::now();
    let (cold, stats) = h.checksum_with_stats(&ctx, &all, &none)?;
    let cold_ms = ms(t.elapsed());
    h.save()?;
    println!(
        "cold: {cold_ms:.1} ms ({} entries, {} files read)",
        stats.entries, stats.files_read
    );

    let mut warm = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let h = ContextHasher::open(&cache)?;
        let (d, stats) = h.checksum_with_stats(&ctx, &all, &none)?;
        warm.push(ms(t.elapsed()));
        assert_eq!(d, cold);
        assert_eq!(stats.files_read, 0);
    }
    warm.sort_by(f64::total_cmp);
    println!(
        "warm (fresh hasher, cache loaded from disk): min {:.1} ms, median {:.1} ms",
        warm[0],
        warm[warm.len() / 2]
    );

    let mut hot = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        h.checksum_with_stats(&ctx, &all, &none)?;
        hot.push(ms(t.elapsed()));
    }
    hot.sort_by(f64::total_cmp);
    println!(
        "warm (same hasher, cache in memory): min {:.1} ms, median {:.1} ms",
        hot[0],
        hot[hot.len() / 2]
    );

    let mut walk = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        kiln_solver::bench::select(&ctx, &all, &none)?;
        walk.push(ms(t.elapsed()));
    }
    walk.sort_by(f64::total_cmp);
    println!(
        "walk + lstat only: min {:.1} ms, median {:.1} ms",
        walk[0],
        walk[walk.len() / 2]
    );

    // Baseline: a plain recursive readdir + lstat of the same tree (the syscall floor).
    fn plain_walk(dir: &std::path::Path, n: &mut usize) -> std::io::Result<()> {
        for e in fs_err::read_dir(dir)? {
            let e = e?;
            let m = fs_err::symlink_metadata(e.path())?;
            *n += 1;
            if m.is_dir() {
                plain_walk(&e.path(), n)?;
            }
        }
        Ok(())
    }
    let mut base = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let mut n = 0;
        plain_walk(&ctx, &mut n)?;
        base.push(ms(t.elapsed()));
    }
    base.sort_by(f64::total_cmp);
    println!(
        "baseline single-threaded readdir + lstat: min {:.1} ms, median {:.1} ms",
        base[0],
        base[base.len() / 2]
    );

    let one = vec!["pkg007/sub0/file7.dat".to_string()];
    let mut load = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let fresh = ContextHasher::open(&cache)?;
        fresh.checksum_with_stats(&ctx, &one, &none)?;
        load.push(ms(t.elapsed()));
    }
    load.sort_by(f64::total_cmp);
    println!(
        "stat cache load + one named file: min {:.1} ms, median {:.1} ms",
        load[0],
        load[load.len() / 2]
    );
    let t = Instant::now();
    h.checksum_with_stats(&ctx, &one, &none)?;
    println!("one named file: {:.2} ms", ms(t.elapsed()));

    // COPY . /app/ of the whole context into an empty rootfs.
    let rootfs = work.path().join("rootfs");
    fs_err::create_dir_all(&rootfs)?;
    let action = kiln_solver::graph::CopyAction {
        src_input: 0,
        src: vec![".".into()],
        dest: "/app/".into(),
        chown: None,
        chmod: None,
        extract_archive: false,
        exclude: Vec::new(),
        parents: false,
        link: false,
    };
    let t = Instant::now();
    let stats = kiln_solver::bench::copy(&ctx, &rootfs, &action, None, Some(&none))?;
    println!(
        "COPY . /app/ (whole context): {:.0} ms ({} files, {} MB)",
        ms(t.elapsed()),
        stats.files,
        stats.bytes / 1_000_000
    );
    Ok(())
}
