//! Layer compression: size and throughput of each encoding on one tar held in memory.
//!
//! `KILN_BENCH_TAR=FILE cargo bench -p kiln-cache --bench codec` (bench/codec.sh makes the tar
//! from bench/gen-context.py's tree). Prints compressed size, ratio and MB/s of tar bytes, and
//! the CPU time of the row (user + system, every thread) with the rate that time allows when
//! the row has every core to itself: on a machine shared with other work the wall-clock rate
//! says how busy the machine was, the CPU time what the encoding costs.
//! `KILN_BENCH_ENCODINGS=zstd,default` runs only the rows whose names start so;
//! `KILN_BENCH_RUNS=N` prints each row N times.

use std::time::Instant;

use kiln_cache::Encoding;
use kiln_cache::codec::compress;

/// User + system CPU seconds of this process so far, every thread (ended ones included).
fn cpu_secs() -> f64 {
    let stat = fs_err::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // Fields after the command name, which is in parentheses: utime and stime are the 12th
    // and 13th, in clock ticks (USER_HZ, 100 on Linux).
    let rest = &stat[stat.rfind(')').expect("stat has a comm") + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// Runs `f` on the tar and prints its row: bytes, ratio, wall MB/s, CPU seconds, and MB/s if
/// that CPU time were spread over all `cores` with nothing else running.
fn row(name: &str, tar: &[u8], cores: f64, f: impl Fn(&[u8]) -> Vec<u8>) {
    let (start, cpu) = (Instant::now(), cpu_secs());
    let out = f(tar);
    let (secs, cpu) = (start.elapsed().as_secs_f64(), cpu_secs() - cpu);
    let mb = tar.len() as f64 / 1e6;
    println!(
        "| {name} | {} | {:.3} | {:.0} | {cpu:.2} | {:.0} |",
        out.len(),
        out.len() as f64 / tar.len() as f64,
        mb / secs,
        mb * cores / cpu,
    );
}

fn main() {
    let path = std::env::var("KILN_BENCH_TAR").expect("KILN_BENCH_TAR=FILE (a tar)");
    let tar = fs_err::read(&path).expect("read the tar");
    let mb = tar.len() as f64 / 1e6;
    let only = std::env::var("KILN_BENCH_ENCODINGS").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|o| name.starts_with(o));
    let runs: usize = std::env::var("KILN_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
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
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    println!("tar: {mb:.1} MB, {cores} cores");
    println!("| encoding | bytes | ratio | MB/s | CPU s | CPU-bound MB/s |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, enc) in all {
        if !wanted(name) {
            continue;
        }
        for _ in 0..runs {
            row(name, &tar, cores, |tar| {
                compress(&mut &tar[..], Vec::with_capacity(tar.len()), enc).unwrap()
            });
        }
    }
    // kiln's zstd before frames: one libzstd stream, multithreaded with 2 workers.
    let name = "zstd-3 one stream, 2 workers";
    if wanted(name) {
        for _ in 0..runs {
            row(name, &tar, cores, |tar| {
                use std::io::Write;
                let mut e =
                    zstd::stream::write::Encoder::new(Vec::with_capacity(tar.len()), 3).unwrap();
                e.multithread(2).unwrap();
                e.write_all(tar).unwrap();
                e.finish().unwrap()
            });
        }
    }
}
