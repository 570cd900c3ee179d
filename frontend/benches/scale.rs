//! Parse and lower times on very long generated Dockerfiles, to show both stay linear
//! (`cargo bench -p kiln-frontend --bench scale`; `-- 200000 1` sets the line count and the
//! number of runs).
//!
//! Shapes: 100,000 `ENV kN=vN`, 100,000 `ARG` in a stage, 100,000 global `ARG`s, 100,000
//! `LABEL`s, 10,000 stages each built on the previous one, 100,000 `ENV`s half of which use an
//! undefined variable (one build-check finding each), and a mix of all of them. Target:
//! each lowered in under a second in release mode. Plain `std::time::Instant`, the best of the runs
//! (three by default); prints figures, asserts nothing.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use kiln_frontend::lower::{ImageResolver, LowerOptions, ResolvedImage, lower};
use kiln_frontend::parser::parse;
use kiln_graph::ImageConfig;
use kiln_oci::Platform;

/// Answers every reference with an empty image.
struct Resolver;

impl ImageResolver for Resolver {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage, String> {
        Ok(ResolvedImage {
            reference: reference.to_owned(),
            digest: None,
            config: ImageConfig {
                architecture: platform.architecture.clone(),
                os: platform.os.clone(),
                ..ImageConfig::default()
            },
        })
    }
}

fn lines(n: usize, head: &str, line: impl Fn(usize) -> String) -> String {
    let mut out = String::from(head);
    for i in 0..n {
        let _ = writeln!(out, "{}", line(i));
    }
    out
}

fn shapes(n: usize) -> Vec<(&'static str, String)> {
    vec![
        (
            "ENV kN=vN",
            lines(n, "FROM busybox\n", |i| format!("ENV k{i}=v{i}")),
        ),
        (
            "ARG aN=vN in a stage",
            lines(n, "FROM busybox\n", |i| format!("ARG a{i}=v{i}")),
        ),
        (
            "global ARG aN=vN",
            lines(n, "", |i| format!("ARG a{i}=v{i}")) + "FROM busybox\n",
        ),
        (
            "LABEL lN=vN",
            lines(n, "FROM busybox\n", |i| format!("LABEL l{i}=v{i}")),
        ),
        (
            "stages FROM sN-1",
            lines(n / 10, "FROM busybox AS s0\n", |i| {
                format!(
                    "FROM s{i} AS s{}\nENV e{i}=$e{}",
                    i + 1,
                    i.saturating_sub(1)
                )
            }),
        ),
        (
            "ENV with undefined var",
            lines(n, "FROM busybox\n", |i| {
                if i % 2 == 0 {
                    format!("ENV k{i}=v{i}")
                } else {
                    format!("ENV u{i}=$undefined{i}")
                }
            }),
        ),
        (
            "mix",
            lines(n, "FROM busybox AS s0\n", |i| match i % 5 {
                0 => format!("ENV k{i}=$k{}", i.saturating_sub(5)),
                1 => format!("ARG a{i}=${{k{}}}", i - 1),
                2 => format!("LABEL l{i}=\"$a{}\"", i - 1),
                3 if i % 1000 == 3 => format!("FROM s{} AS s{}", i / 1000, i / 1000 + 1),
                3 => format!("USER u{i}"),
                // Each RUN carries the whole environment: rare, or the graph itself is quadratic.
                4 if i % 1000 == 4 => format!("RUN echo {i}"),
                _ => format!("WORKDIR /w{i}"),
            }),
        ),
    ]
}

fn best<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..runs {
        let start = Instant::now();
        let out = black_box(f());
        best = best.min(start.elapsed());
        last = Some(out);
    }
    (best, last.expect("runs > 0"))
}

fn main() {
    let numbers: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = numbers.first().copied().unwrap_or(100_000);
    let runs = numbers.get(1).copied().unwrap_or(3).max(1);
    let opts = LowerOptions::default();
    for (name, src) in shapes(n) {
        let (parse_t, ast) = best(runs, || parse(black_box(&src)));
        let ast = match ast {
            Ok(ast) => ast,
            Err(e) => {
                eprintln!("{name}: does not parse: {e} at {}", e.span);
                continue;
            }
        };
        let (lower_t, lowered) = best(runs, || lower(black_box(&ast), &opts, &Resolver));
        let outcome = match lowered {
            Ok(l) => format!("{} vertices", l.definition.vertices.len()),
            Err(e) => format!("error: {e}"),
        };
        println!(
            "{name:<22} {:>7} instructions  parse {:>9.3} ms  lower {:>9.3} ms  ({outcome})",
            ast.nodes.len(),
            parse_t.as_secs_f64() * 1e3,
            lower_t.as_secs_f64() * 1e3,
        );
    }
}
