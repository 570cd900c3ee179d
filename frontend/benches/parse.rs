//! Parse speed on a generated 5,000-instruction Dockerfile (`cargo bench -p kiln-frontend`).
//!
//! Plain `std::time::Instant`, median of several runs; prints figures, asserts nothing.

use std::hint::black_box;
use std::time::{Duration, Instant};

use kiln_frontend::instructions::Instruction;
use kiln_frontend::parser::{dump, parse};

/// A Dockerfile of `n` instructions mixing every common shape: stages, continuations, flags,
/// exec form, key=value lists and heredocs.
fn generate(n: usize) -> String {
    let mut out =
        String::from("# syntax=docker/dockerfile:1\n# escape=\\\n\nARG BASE=alpine:3.20\n");
    let mut count = 1;
    let mut stage = 0;
    while count < n {
        let i = count;
        let line = match i % 10 {
            0 => {
                stage += 1;
                format!("FROM --platform=$BUILDPLATFORM ${{BASE}} AS stage{stage}\n")
            }
            1 => format!(
                "RUN --mount=type=cache,target=/var/cache/apk apk add --no-cache \\\n    curl \\\n    # a comment\n    git-{i} && echo \"done {i}\"\n"
            ),
            2 => format!("COPY --from=stage{stage} --chown=1000:1000 --link src/{i} /app/{i}/\n"),
            3 => format!(
                "ENV KEY_{i}=value{i} OTHER_{i}=\"quoted value {i}\" PATH=/usr/local/bin:$PATH\n"
            ),
            4 => format!("LABEL org.example.{i}=\"label {i}\" version={i}\n"),
            5 => format!("RUN <<EOF\nset -e\necho heredoc {i}\nEOF\n"),
            6 => format!("CMD [\"/bin/app\", \"--port\", \"{i}\"]\n"),
            7 => format!("WORKDIR /app/{i}\n"),
            8 => format!("ARG VERSION_{i}=1.{i}\n"),
            _ => format!(
                "HEALTHCHECK --interval=30s --retries=3 CMD curl -f http://localhost:{i}/ || exit 1\n"
            ),
        };
        out.push_str(&line);
        count += 1;
    }
    out
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        black_box(f());
        samples.push(start.elapsed());
    }
    median(samples)
}

fn main() {
    let src = generate(5_000);
    let ast = match parse(&src) {
        Ok(ast) => ast,
        Err(e) => {
            eprintln!("generated Dockerfile does not parse: {e} at {}", e.span);
            std::process::exit(1);
        }
    };
    let runs = 31;
    let parse_t = time(runs, || parse(black_box(&src)));
    let typed_t = time(runs, || {
        ast.nodes
            .iter()
            .map(Instruction::from_node)
            .filter(Result::is_ok)
            .count()
    });
    let dump_t = time(runs, || dump(black_box(&ast)));
    println!(
        "parse: {} instructions, {} lines, {} bytes",
        ast.nodes.len(),
        src.lines().count(),
        src.len()
    );
    println!(
        "parse            median of {runs}: {:>8.3} ms",
        parse_t.as_secs_f64() * 1e3
    );
    println!(
        "typed layer      median of {runs}: {:>8.3} ms",
        typed_t.as_secs_f64() * 1e3
    );
    println!(
        "dump             median of {runs}: {:>8.3} ms",
        dump_t.as_secs_f64() * 1e3
    );
}
