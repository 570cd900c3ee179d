//! `kiln build` end to end: real sandbox, real store.

use crate::support::{Context, Kiln, sandbox_available, text};
use serde_json::Value;

/// Events of a `--progress=rawjson` build, by vertex name.
fn events(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// Names of the steps that ran (not cached) in a rawjson build.
fn ran(stderr: &str) -> Vec<String> {
    let evs = events(stderr);
    let mut names = std::collections::HashMap::new();
    for e in &evs {
        if e["event"] == "started" {
            names.insert(e["vertex"].as_str().unwrap_or("").to_string(), e["name"].as_str().unwrap_or("").to_string());
        }
    }
    evs.iter()
        .filter(|e| e["event"] == "completed")
        .filter_map(|e| names.get(e["vertex"].as_str().unwrap_or("")).cloned())
        .filter(|n| !n.is_empty())
        .collect()
}

fn cached(stderr: &str) -> Vec<String> {
    events(stderr)
        .iter()
        .filter(|e| e["event"] == "cached")
        .map(|e| e["name"].as_str().unwrap_or("").to_string())
        .collect()
}

fn build(k: &Kiln, ctx: &Context, extra: &[&str]) -> String {
    let mut args = vec!["build", "--progress=rawjson"];
    args.extend_from_slice(extra);
    args.push(ctx.arg());
    let out = k.run(&args);
    assert!(out.status.success(), "build failed:\n{}", text(&out.stderr));
    text(&out.stderr)
}

#[test]
fn run_step_builds_and_runs_and_rebuild_is_cached() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let ctx = Context::new().file(
        "Dockerfile",
        "FROM busybox\nRUN echo built > /built.txt\nCMD [\"cat\", \"/built.txt\"]\n",
    );
    let first = build(&k, &ctx, &["-t", "t1:latest"]);
    assert_eq!(ran(&first), ["[2/2] RUN echo built > /built.txt"], "{first}");
    assert_eq!(k.ok(&["run", "--rm", "t1"]), "built\n");
    let second = build(&k, &ctx, &["-t", "t1:latest"]);
    assert!(ran(&second).is_empty(), "nothing reruns: {second}");
    assert!(cached(&second).iter().any(|n| n.contains("RUN echo built")), "{second}");
    let id1 = k.ok(&["build", "-q", ctx.arg()]);
    let id2 = k.ok(&["build", "-q", ctx.arg()]);
    assert_eq!(id1, id2, "same inputs, same image ID");
    assert!(id1.trim().starts_with("sha256:"), "{id1}");
}

#[test]
fn failing_run_reports_line_and_exit_code() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let ctx = Context::new().file(
        "Dockerfile",
        "FROM busybox\n\nRUN echo first-line && echo about to fail >&2 && exit 3\nRUN echo never\n",
    );
    let err = k.fails(&["build", "--progress=plain", ctx.arg()]);
    assert!(
        err.contains("Dockerfile:3: RUN echo first-line && echo about to fail >&2 && exit 3 exited with code 3"),
        "{err}"
    );
    assert!(err.contains("about to fail"), "the step's last output lines are shown: {err}");
    assert!(!err.contains("never"), "{err}");
}

#[test]
fn unused_stage_never_runs_and_target_selects_a_stage() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let ctx = Context::new().file(
        "Dockerfile",
        "FROM busybox AS broken\nRUN exit 1\n\nFROM busybox AS good\nRUN echo good > /g\n\nFROM busybox\nRUN echo final > /f\n",
    );
    let out = build(&k, &ctx, &["-t", "final"]);
    assert_eq!(ran(&out), ["[stage-2 2/2] RUN echo final > /f"], "{out}");
    let out = build(&k, &ctx, &["--target", "good", "-t", "good"]);
    assert_eq!(ran(&out), ["[good 2/2] RUN echo good > /g"], "{out}");
    assert_eq!(k.ok(&["run", "--rm", "good", "cat", "/g"]), "good\n");
    let err = k.fails(&["build", "--target", "nope", ctx.arg()]);
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn independent_stages_overlap_in_time() {
    if !sandbox_available() {
        return;
    }
    let k = Kiln::with_busybox();
    let ctx = Context::new().file(
        "Dockerfile",
        "FROM busybox AS a\nRUN sleep 1 && echo a > /a\n\nFROM busybox AS b\nRUN sleep 1 && echo b > /b\n\nFROM busybox\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n",
    );
    let out = build(&k, &ctx, &["--jobs", "2"]);
    let evs = events(&out);
    let span = |needle: &str| {
        let v = evs
            .iter()
            .find(|e| e["event"] == "started" && e["name"].as_str().unwrap_or("").contains(needle))
            .unwrap_or_else(|| panic!("no start for {needle}: {out}"));
        let id = v["vertex"].clone();
        let start = v["timestamp_ms"].as_i64().unwrap();
        let end = evs
            .iter()
            .find(|e| e["event"] == "completed" && e["vertex"] == id)
            .unwrap()["timestamp_ms"]
            .as_i64()
            .unwrap();
        (start, end)
    };
    let (a0, a1) = span("echo a");
    let (b0, b1) = span("echo b");
    assert!(a0 < b1 && b0 < a1, "the two stages ran one after the other: a={a0}..{a1} b={b0}..{b1}");
}
