//! Test helper standing in for the `kiln` binary, so this crate's own tests can exercise the two
//! paths that need a process of their own:
//! - `kiln-executor-helper __kiln-shim CONTAINER_DIR RUNTIME`: the shim of detached containers
//!   (the real `kiln` calls [`kiln_executor::shim_main`] the same way before parsing arguments);
//! - `kiln-executor-helper run ROOTFS STATE_DIR ID [tty] -- ARGS...`: a foreground run with
//!   [`kiln_executor::Output::Inherit`] (our stdio, signal forwarding, terminal), as `kiln run`.

use kiln_executor::{Output, ProcessPlan, RunRequest, Runtime};
use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some(kiln_executor::SHIM_ARG) => std::process::exit(kiln_executor::shim_main(args)),
        Some("run") => std::process::exit(run(&args[2..])),
        _ => {
            let _ = writeln!(std::io::stderr(), "usage: {} __kiln-shim|run ...", args[0]);
            std::process::exit(2);
        }
    }
}

fn run(args: &[String]) -> i32 {
    let Some(sep) = args.iter().position(|a| a == "--") else {
        return 2;
    };
    let (opts, argv) = (&args[..sep], &args[sep + 1..]);
    let (Some(rootfs), Some(state_dir), Some(id)) = (opts.first(), opts.get(1), opts.get(2)) else {
        return 2;
    };
    let mut plan = ProcessPlan::new(argv.iter().cloned());
    plan.tty = opts.iter().any(|o| o == "tty");
    plan.stdin = plan.tty;
    let req = RunRequest {
        id: id.clone(),
        rootfs: rootfs.into(),
        plan,
        state_dir: state_dir.into(),
        log_path: None,
    };
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(kiln_executor::Error::Io)
        .and_then(|rt| {
            let runtime = Runtime::detect(None)?;
            rt.block_on(runtime.run(req, Output::Inherit))
        });
    match result {
        Ok(status) => status.code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e}");
            125
        }
    }
}
