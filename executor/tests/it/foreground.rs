//! `kiln run` in the foreground ([`kiln_executor::Output::Inherit`]), through the test helper
//! binary: inherited stdio, exit codes, signal forwarding, a real terminal.

use crate::support::World;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const HELPER: &str = env!("CARGO_BIN_EXE_kiln-executor-helper");

fn helper(w: &World, tty: bool, argv: &[&str]) -> Command {
    let mut cmd = Command::new(HELPER);
    cmd.arg("run")
        .arg(w.rootfs())
        .arg(w.state_dir())
        .arg(w.new_id());
    if tty {
        cmd.arg("tty");
    }
    cmd.arg("--").args(argv);
    cmd
}

#[test]
fn inherits_stdio_and_exit_code() {
    let w = World::new();
    let out = helper(
        &w,
        false,
        &[
            "/bin/sh",
            "-c",
            "echo to-stdout; echo to-stderr >&2; exit 5",
        ],
    )
    .stdin(Stdio::null())
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "to-stdout\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "to-stderr\n");
}

fn signal_is_forwarded(sig: rustix::process::Signal, name: &str) {
    let w = World::new();
    let script = format!(
        "trap 'echo got-{name}; exit 42' {name}; echo ready; while true; do sleep 0.05; done"
    );
    let mut child = helper(&w, false, &["/bin/sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, sig).unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), format!("got-{name}"));
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(42),
        "the container's PID 1 got {name} exactly once"
    );
    assert!(lines.next().is_none());
}

#[test]
fn sigterm_is_forwarded_to_pid1() {
    signal_is_forwarded(rustix::process::Signal::TERM, "TERM");
}

#[test]
fn sigint_is_forwarded_to_pid1() {
    signal_is_forwarded(rustix::process::Signal::INT, "INT");
}

#[test]
fn tty_gives_a_real_terminal() {
    let w = World::new();
    let inner = helper(
        &w,
        true,
        &[
            "/bin/sh",
            "-c",
            "tty; [ -t 0 ] && [ -t 1 ] && echo both-ttys; stty size",
        ],
    );
    // `script` gives the helper a pseudo-terminal of its own, like an interactive shell.
    let line = std::iter::once(inner.get_program())
        .chain(inner.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::piped())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("/dev/pts/0"), "{text}");
    assert!(text.contains("both-ttys"), "{text}");
}

#[test]
fn kiln_runtime_env_picks_the_runtime() {
    let w = World::new();
    let out = helper(&w, false, &["true"])
        .env("KILN_RUNTIME", "/nonexistent/crun")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/crun"), "{err}");
    assert!(err.contains("apt-get install runc"), "{err}");
    let out = helper(&w, false, &["true"])
        .env("KILN_RUNTIME", "runc")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "a bare name is looked up in PATH"
    );
}
