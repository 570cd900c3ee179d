//! Overhead of one sandboxed `true` over a busybox rootfs directory, median of 20 runs, next to
//! the raw runtime (`runc run`, and `runc create` + `runc delete`) on the same bundle, to show
//! what dominates. Run as root: `cargo bench -p kiln-executor --bench overhead`.

#[path = "../tests/it/support.rs"]
mod support;

use kiln_executor::{Output, ProcessPlan, ResolvedUser, build_spec};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 20;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn runc(w: &support::World, args: &[&str]) {
    let status = Command::new(w.runtime.path())
        .arg("--root")
        .arg(w.dir.path().join("raw-runc"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "runc {args:?}");
}

fn main() {
    let w = support::World::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // kiln: Runtime::run end to end (user lookup, spec, bundle, cgroup, runc run, cleanup).
    let mut kiln = Vec::new();
    for _ in 0..RUNS {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let req = w.request(ProcessPlan::new(["true"]));
        let start = Instant::now();
        let status = rt
            .block_on(w.runtime.run(req, Output::Channel(tx)))
            .unwrap();
        kiln.push(start.elapsed());
        assert_eq!(status.code, 0);
    }

    // The same spec driven by hand, to split the runtime's share.
    let bundle = w.dir.path().join("bundles").join("rawbench");
    let plan = ProcessPlan::new(["true"]);
    let spec = build_spec(&plan, &ResolvedUser::root(), &w.rootfs(), &bundle).unwrap();
    kiln_executor::bundle::write_bundle(&bundle, &spec, &plan).unwrap();
    let b = bundle.to_str().unwrap();
    let (mut run, mut create, mut delete) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let start = Instant::now();
        runc(&w, &["run", "--bundle", b, "rawbench"]);
        run.push(start.elapsed());
        let start = Instant::now();
        runc(&w, &["create", "--bundle", b, "rawbench"]);
        create.push(start.elapsed());
        let start = Instant::now();
        runc(&w, &["delete", "--force", "rawbench"]);
        delete.push(start.elapsed());
    }
    kiln_executor::cgroup::remove("rawbench");
    let kiln = median(kiln);
    let run = median(run);
    println!("sandboxed `true`, median of {RUNS}:");
    println!("  kiln Runtime::run      {}", ms(kiln));
    println!("  runc run (same bundle) {}", ms(run));
    println!("  runc create            {}", ms(median(create)));
    println!("  runc delete --force    {}", ms(median(delete)));
    println!(
        "  kiln's own share       {} (user lookup, spec, bundle files, cgroup/OOM watch, cleanup)",
        ms(kiln.saturating_sub(run))
    );
}
