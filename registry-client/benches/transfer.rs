//! Push and pull of an image with a 100 MB random layer through a loopback `docker-registry`,
//! and re-push of the unchanged image. Run with `cargo bench -p kiln-registry-client`.
//! Targets: ≥ 200 MB/s each way, re-push < 100 ms.

#![allow(dead_code)]

#[path = "../tests/it/support.rs"]
mod support;

use std::time::{Duration, Instant};

use kiln_oci::Platform;
use kiln_registry_client::{Client, ClientOptions, Reference};
use rand::RngCore as _;

use support::{DirStore, OrDie, Registry, build_image, tar_layer};

const LAYER_MB: usize = 100;

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .or_die("runtime");
    rt.block_on(run());
}

async fn run() {
    let default = ClientOptions::default();
    println!(
        "default options: monolithic up to {} MB, chunks of {} MB",
        default.monolithic_limit / 1_000_000,
        default.chunk_size / 1_000_000
    );
    run_with("default", default).await;
    let chunked = ClientOptions {
        monolithic_limit: 0,
        ..Default::default()
    };
    run_with("all chunked", chunked).await;
    let monolithic = ClientOptions {
        monolithic_limit: u64::MAX,
        ..Default::default()
    };
    run_with("all monolithic", monolithic).await;
}

async fn run_with(name: &str, opts: ClientOptions) {
    println!("== {name}");
    let reg = Registry::start();
    let src = DirStore::new();
    let mut data = vec![0u8; LAYER_MB * 1_000_000];
    rand::rng().fill_bytes(&mut data);
    let img = build_image(&src, "amd64", &[tar_layer(&[("random.bin", &data)])]);
    drop(data);
    let total: u64 = img.blobs().iter().map(|d| d.size).sum();
    let client = Client::new(opts.clone()).or_die("client");
    let platform: Platform = "linux/amd64".parse().or_die("platform");

    let mut push_times = Vec::new();
    let mut pull_times = Vec::new();
    let mut repush_times = Vec::new();
    for round in 0..3 {
        let target: Reference = format!("{}/bench/img{round}:v1", reg.host())
            .parse()
            .or_die("reference");
        let t = Instant::now();
        let report = client
            .push_image(
                &target,
                &img.manifest,
                &img.media_type,
                &img.blobs(),
                &src,
                &[],
            )
            .await
            .or_die("push");
        push_times.push(t.elapsed());
        assert_eq!(report.uploaded, 2);

        let dst = DirStore::new();
        let t = Instant::now();
        let resolved = client
            .pull(&target, &platform, &dst, None)
            .await
            .or_die("pull");
        pull_times.push(t.elapsed());
        assert_eq!(resolved.manifest_digest, img.digest);

        for _ in 0..5 {
            let fresh = Client::new(opts.clone()).or_die("client");
            let t = Instant::now();
            let report = fresh
                .push_image(
                    &target,
                    &img.manifest,
                    &img.media_type,
                    &img.blobs(),
                    &src,
                    &[],
                )
                .await
                .or_die("re-push");
            repush_times.push(t.elapsed());
            assert_eq!(report.uploaded, 0);
        }
    }
    let best = |v: &[Duration]| v.iter().min().copied().unwrap_or_default();
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    println!(
        "image: {:.1} MB ({} blobs)",
        total as f64 / 1e6,
        img.blobs().len()
    );
    println!(
        "push:    median {:.0} MB/s, best {:.0} MB/s",
        mbps(total, median(&mut push_times)),
        mbps(total, best(&push_times))
    );
    println!(
        "pull:    median {:.0} MB/s, best {:.0} MB/s",
        mbps(total, median(&mut pull_times)),
        mbps(total, best(&pull_times))
    );
    println!(
        "re-push: median {:.1} ms, best {:.1} ms (fresh client, {} runs)",
        median(&mut repush_times).as_secs_f64() * 1e3,
        best(&repush_times).as_secs_f64() * 1e3,
        repush_times.len()
    );
}
