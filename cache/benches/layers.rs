//! Layer export and apply throughput on a generated 200 MB, 20,000-file tree.
//!
//! `cargo bench -p kiln-cache --bench layers` (set `KILN_BENCH_MB` / `KILN_BENCH_FILES` to
//! change the size). Prints MB/s of uncompressed tar bytes, end to end.

use std::path::Path;
use std::time::Instant;

use kiln_cache::{ApplyOptions, Encoding, LayerOptions, Store, apply_layer, apply_layer_threaded};

/// CPU seconds (user + system) of this process so far, from /proc (100 Hz ticks).
fn cpu_secs() -> f64 {
    let stat = fs_err::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn env_or(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// Half the files are incompressible, half are text-like (compress ~4x).
fn generate(root: &Path, total: usize, files: usize) {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let per = total / files;
    let words = [
        "kiln ",
        "layer ",
        "overlay ",
        "digest ",
        "snapshot ",
        "blob ",
        "tar\n",
        "zstd ",
    ];
    for i in 0..files {
        let dir = root.join(format!("d{:03}/s{:02}", i % 200, (i / 200) % 10));
        if i < 2000 {
            fs_err::create_dir_all(&dir).unwrap();
        }
        let mut data = Vec::with_capacity(per);
        if i % 2 == 0 {
            while data.len() < per {
                data.extend_from_slice(&next().to_le_bytes());
            }
        } else {
            while data.len() < per {
                data.extend_from_slice(words[(next() % 8) as usize].as_bytes());
            }
        }
        data.truncate(per);
        fs_err::write(dir.join(format!("f{i}")), &data).unwrap();
    }
}

/// Where the time goes: the tar walk alone, sha256 and the compressors on memory.
fn breakdown(src: &Path, mb: usize) {
    use std::io::Write;
    let opts = kiln_cache::layer::TarOptions::default();
    let mut tar = Vec::with_capacity((mb + 16) << 20);
    kiln_cache::layer::write_tar(src, &opts, &mut tar).unwrap();
    let start = Instant::now();
    kiln_cache::layer::write_tar(src, &opts, &mut std::io::sink()).unwrap();
    let walk = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let _ = kiln_oci::sha256(&tar);
    let sha = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut z = zstd::stream::write::Encoder::new(std::io::sink(), 3).unwrap();
    z.multithread(1).unwrap();
    for c in tar.chunks(128 << 10) {
        z.write_all(c).unwrap();
    }
    z.finish().unwrap();
    let zs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut g = flate2::write::GzEncoder::new(std::io::sink(), flate2::Compression::new(1));
    for c in tar.chunks(128 << 10) {
        g.write_all(c).unwrap();
    }
    g.finish().unwrap();
    let gz = start.elapsed().as_secs_f64();
    let m = tar.len() as f64 / (1 << 20) as f64;
    println!(
        "load average: {}",
        fs_err::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "parts: tar walk {:.0} MB/s, sha256 {:.0} MB/s, zstd-3 {:.0} MB/s, gzip-1 {:.0} MB/s",
        m / walk,
        m / sha,
        m / zs,
        m / gz
    );
}

fn main() {
    let mb = env_or("KILN_BENCH_MB", 200);
    let files = env_or("KILN_BENCH_FILES", 20_000);
    let t =
        tempfile::tempdir_in(std::env::var("KILN_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into()))
            .unwrap();
    let src = t.path().join("src");
    generate(&src, mb << 20, files);
    let store = Store::open(t.path().join("store")).unwrap();
    let start = Instant::now();
    for i in 0..200 {
        store.cache_put(&format!("key-{i}"), b"value").unwrap();
    }
    let put = start.elapsed().as_secs_f64() / 200.0;
    let start = Instant::now();
    for i in 0..200 {
        store.cache_get(&format!("key-{i}")).unwrap();
    }
    let get = start.elapsed().as_secs_f64() / 200.0;
    println!(
        "index: cache_put {:.2} ms/op, cache_get {:.2} ms/op",
        put * 1e3,
        get * 1e3
    );
    breakdown(&src, mb);
    let mut zstd_layer = None;
    for (name, c) in [
        ("zstd", Encoding::ZSTD),
        ("gzip", Encoding::GZIP),
        ("none", Encoding::None),
    ] {
        let opts = LayerOptions {
            compression: c,
            ..LayerOptions::default()
        };
        // warm the page cache once
        if name == "zstd" {
            store.create_layer(&src, &opts).unwrap();
        }
        let start = Instant::now();
        let cpu = cpu_secs();
        let l = store.create_layer(&src, &opts).unwrap();
        let secs = start.elapsed().as_secs_f64();
        let cpu = cpu_secs() - cpu;
        let tar_mb = mb as f64; // payload; tar headers add < 5%
        println!(
            "export {name:5}: {:7.1} MB/s  ({secs:.2}s wall, {cpu:.2}s cpu, blob {:.1} MB)",
            tar_mb / secs,
            l.size as f64 / (1 << 20) as f64
        );
        if name == "zstd" {
            zstd_layer = Some(l);
        }
    }
    let l = zstd_layer.unwrap();
    for round in 0..2 {
        let dst = t.path().join(format!("dst{round}"));
        let apply = if round == 0 {
            apply_layer_threaded
        } else {
            |r: fs_err::File, d: &Path, o: &ApplyOptions| apply_layer(r, d, o)
        };
        let start = Instant::now();
        let cpu = cpu_secs();
        let stats = apply(
            store.open_blob(&l.digest).unwrap(),
            &dst,
            &ApplyOptions::default(),
        )
        .unwrap();
        let secs = start.elapsed().as_secs_f64();
        let cpu = cpu_secs() - cpu;
        assert_eq!(stats.diff_id, l.diff_id);
        println!(
            "apply zstd {}: {:7.1} MB/s  ({secs:.2}s wall, {cpu:.2}s cpu, {} entries)",
            if round == 0 { "threaded" } else { "inline  " },
            mb as f64 / secs,
            stats.entries
        );
    }
}
