//! Parse + lower speed on a generated 5,000-instruction Dockerfile
//! (`cargo bench -p kiln-frontend --bench lower`). Target: median under 20 ms.
//!
//! Plain `std::time::Instant`, median of several runs; prints figures, asserts nothing.

use std::hint::black_box;
use std::time::{Duration, Instant};

use kiln_frontend::lower::{ImageResolver, LowerOptions, ResolvedImage, lower};
use kiln_frontend::parser::parse;
use kiln_graph::{History, ImageConfig, RootFs, RunConfig};
use kiln_oci::Platform;

/// Answers every reference with the same small image, as a warm local store would.
struct Resolver;

impl ImageResolver for Resolver {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage, String> {
        Ok(ResolvedImage {
            reference: format!("docker.io/library/{reference}"),
            digest: "sha256:0000000000000000000000000000000000000000000000000000000000000000"
                .parse()
                .ok(),
            config: ImageConfig {
                architecture: platform.architecture.clone(),
                os: platform.os.clone(),
                config: RunConfig {
                    env: vec!["PATH=/usr/local/bin:/usr/bin:/bin".to_owned()],
                    ..RunConfig::default()
                },
                rootfs: RootFs {
                    kind: "layers".into(),
                    diff_ids: vec!["sha256:00".into()],
                },
                history: vec![History {
                    created_by: "ADD rootfs /".into(),
                    ..History::default()
                }],
                ..ImageConfig::default()
            },
        })
    }
}

/// A Dockerfile of `n` instructions: stages that build on each other, RUNs with mounts and
/// heredocs, COPYs from the context and from stages, ENV/ARG/LABEL/WORKDIR/EXPOSE.
fn generate(n: usize) -> String {
    let mut out = String::from(
        "# syntax=docker/dockerfile:1\nARG BASE=alpine:3.20\nFROM ${BASE} AS stage0\n",
    );
    let mut count = 3;
    let mut stage = 0;
    while count < n {
        let i = count;
        let line = match i % 12 {
            0 => {
                stage += 1;
                if stage % 2 == 0 {
                    format!("FROM stage{} AS stage{stage}\n", stage - 1)
                } else {
                    format!("FROM --platform=$BUILDPLATFORM ${{BASE}} AS stage{stage}\n")
                }
            }
            1 => format!(
                "RUN --mount=type=cache,target=/var/cache/apk apk add --no-cache curl-{i} && echo \"done {i}\"\n"
            ),
            2 => format!("COPY --chown=1000:1000 src/{i} /app/{i}/\n"),
            3 => format!("ENV KEY_{i}=value{i} OTHER_{i}=\"quoted $KEY_{i}\"\n"),
            4 => format!("LABEL org.example.{i}=\"label {i}\" version={i}\n"),
            5 => format!("RUN <<EOF\nset -e\necho heredoc {i}\nEOF\n"),
            6 => format!("ARG VERSION_{i}=1.{i}\n"),
            7 => format!("WORKDIR /app/{i}\n"),
            8 if stage > 0 => format!("COPY --from=stage{} /app /from/{i}\n", stage - 1),
            8 => format!("COPY ctx/{i} /ctx/\n"),
            9 => format!("EXPOSE {}\n", 1000 + i % 60000),
            10 => format!("RUN echo $VERSION_{} > /v{i}\n", i - 4),
            _ => format!("CMD [\"/bin/app\", \"--port\", \"{i}\"]\n"),
        };
        out.push_str(&line);
        count += 1;
    }
    out
}

fn main() {
    let src = generate(5_000);
    let instructions = parse(&src).map(|a| a.nodes.len()).unwrap_or(0);
    let opts = LowerOptions::default();
    let mut times: Vec<Duration> = Vec::new();
    let mut vertices = 0;
    for _ in 0..21 {
        let start = Instant::now();
        let lowered = parse(&src)
            .map_err(|e| e.to_string())
            .and_then(|ast| lower(black_box(&ast), &opts, &Resolver).map_err(|e| e.to_string()));
        times.push(start.elapsed());
        match lowered {
            Ok(l) => vertices = l.definition.vertices.len(),
            Err(e) => {
                eprintln!("lowering failed: {e}");
                return;
            }
        }
    }
    times.sort();
    let median = times[times.len() / 2];
    // The lowering alone, on an already parsed tree.
    let mut lower_only: Vec<Duration> = Vec::new();
    if let Ok(ast) = parse(&src) {
        for _ in 0..21 {
            let start = Instant::now();
            let l = lower(black_box(&ast), &opts, &Resolver);
            lower_only.push(start.elapsed());
            drop(black_box(l));
        }
    }
    lower_only.sort();
    // Of which: computing the vertex digests (the solver's canonical JSON + sha256).
    if let Ok(Ok(l)) = parse(&src).map(|ast| lower(&ast, &opts, &Resolver)) {
        let mut digests: Vec<Duration> = Vec::new();
        for _ in 0..21 {
            let start = Instant::now();
            for v in l.definition.vertices.values() {
                black_box(v.digest());
            }
            digests.push(start.elapsed());
        }
        digests.sort();
        println!(
            "vertex digests alone ({} vertices): median {:.2} ms",
            l.definition.vertices.len(),
            digests[digests.len() / 2].as_secs_f64() * 1e3
        );
    }
    if let Some(m) = lower_only.get(lower_only.len() / 2) {
        println!("lower alone: median {:.2} ms", m.as_secs_f64() * 1e3);
    }
    println!(
        "parse+lower {instructions} instructions ({vertices} vertices): median {:.2} ms, min {:.2} ms, max {:.2} ms (target < 20 ms)",
        median.as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
    );
}
