//! Layer compression: size and throughput of each encoding on one tar held in memory.
//!
//! `KILN_BENCH_TAR=FILE cargo bench -p kiln-cache --bench codec` (bench/codec.sh makes the tar
//! from bench/gen-context.py's tree). Prints compressed size, ratio and MB/s of tar bytes.

use std::time::Instant;

use kiln_cache::Encoding;
use kiln_cache::codec::compress;

fn main() {
    let path = std::env::var("KILN_BENCH_TAR").expect("KILN_BENCH_TAR=FILE (a tar)");
    let tar = fs_err::read(&path).expect("read the tar");
    let mb = tar.len() as f64 / 1e6;
    let only = std::env::var("KILN_BENCH_ENCODINGS").unwrap_or_default();
    let all = [
        ("gzip-parallel-1", Encoding::GzipParallel { level: 1 }),
        ("gzip-parallel-6", Encoding::GzipParallel { level: 6 }),
        ("gzip-6 (one stream)", Encoding::Gzip { level: 6 }),
        ("gzip-members-5", Encoding::GzipMembers { level: 5 }),
        ("gzip-members-6", Encoding::GzipMembers { level: 6 }),
        ("default gzip", Encoding::GZIP),
        ("zstd-3", Encoding::Zstd { level: 3 }),
        ("default zstd", Encoding::ZSTD),
    ];
    println!("tar: {mb:.1} MB");
    println!("| encoding | bytes | ratio | MB/s |");
    println!("|---|---:|---:|---:|");
    for (name, enc) in all {
        if !only.is_empty() && !only.split(',').any(|o| name.starts_with(o)) {
            continue;
        }
        let start = Instant::now();
        let out = compress(&mut &tar[..], Vec::with_capacity(tar.len()), enc).unwrap();
        let secs = start.elapsed().as_secs_f64();
        println!(
            "| {name} | {} | {:.3} | {:.0} |",
            out.len(),
            out.len() as f64 / tar.len() as f64,
            mb / secs
        );
    }
    // kiln's zstd before frames: one libzstd stream, multithreaded with 2 workers.
    if only.is_empty() || only.split(',').any(|o| "zstd-3 one stream".starts_with(o)) {
        use std::io::Write;
        let start = Instant::now();
        let mut e = zstd::stream::write::Encoder::new(Vec::with_capacity(tar.len()), 3).unwrap();
        e.multithread(2).unwrap();
        e.write_all(&tar).unwrap();
        let out = e.finish().unwrap();
        let secs = start.elapsed().as_secs_f64();
        println!(
            "| zstd-3 one stream, 2 workers | {} | {:.3} | {:.0} |",
            out.len(),
            out.len() as f64 / tar.len() as f64,
            mb / secs
        );
    }
}
