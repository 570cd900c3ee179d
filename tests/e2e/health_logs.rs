//! Health checks while a container runs (`HEALTHCHECK`, `--health-*`, `--no-healthcheck`) and
//! `kiln logs` with stdout and stderr kept apart, `--tail`, `--since`, `-t`.

use crate::support::{Context, Runner, build, text};
use std::time::Duration;

impl Runner {
    /// Waits until `ps` shows `name` with a status ending in `suffix`.
    fn wait_health(&self, name: &str, suffix: &str) {
        self.until(&format!("{name} {suffix}"), || {
            self.status(name).ends_with(suffix)
        });
    }

    fn health(&self, name: &str) -> serde_json::Value {
        serde_json::from_str(&self.inspect_f(name, "{{json .State.Health}}")).expect("health json")
    }
}

#[test]
fn the_images_healthcheck_runs_while_the_container_lives() {
    let Some(r) = Runner::new() else { return };
    let ctx = Context::new().file(
        "Dockerfile",
        "FROM busybox\n\
         HEALTHCHECK --interval=200ms --retries=2 CMD test -f /tmp/ok && echo fine\n\
         CMD [\"sleep\", \"60\"]\n",
    );
    build(&r.k, &ctx, &["-t", "hc"]);
    r.k.ok(&["run", "-d", "--name", "web", "hc"]);
    // No /tmp/ok: two failures make it unhealthy.
    r.wait_health("web", "(unhealthy)");
    assert!(r.status("web").starts_with("Up "), "{}", r.status("web"));
    let h = r.health("web");
    assert_eq!(h["Status"], "unhealthy");
    assert!(h["FailingStreak"].as_u64().unwrap() >= 2, "{h}");
    assert_eq!(h["Log"].as_array().unwrap().last().unwrap()["ExitCode"], 1);
    assert_eq!(
        r.k.ok(&["ps", "-q", "-f", "health=unhealthy"]).trim().len(),
        12
    );
    // The check passes once the file is there.
    r.k.ok(&["exec", "web", "touch", "/tmp/ok"]);
    r.wait_health("web", "(healthy)");
    let h = r.health("web");
    assert_eq!(h["FailingStreak"], 0);
    let last = h["Log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["ExitCode"], 0);
    assert_eq!(last["Output"], "fine\n");
    assert!(h["Log"].as_array().unwrap().len() <= 5);
    assert!(
        r.k.ok(&["ps", "-q", "-f", "health=unhealthy"])
            .trim()
            .is_empty()
    );
    let cfg =
        r.k.ok(&["inspect", "-f", "{{json .Config.Healthcheck}}", "web"]);
    assert!(cfg.contains("\"Interval\":200000000"), "{cfg}");

    // --no-healthcheck: no checks, no health in ps or inspect.
    r.k.ok(&["run", "-d", "--name", "plain", "--no-healthcheck", "hc"]);
    std::thread::sleep(Duration::from_millis(700));
    let s = r.status("plain");
    assert!(s.starts_with("Up ") && !s.contains('('), "{s}");
    let h =
        r.k.ok(&["inspect", "-f", "{{json .State.Health}}", "plain"]);
    assert_eq!(h.trim(), "null");
}

#[test]
fn health_flags_override_the_image_and_a_slow_check_times_out() {
    let Some(r) = Runner::new() else { return };
    // --health-cmd on an image without a HEALTHCHECK, passing at once.
    r.k.ok(&[
        "run",
        "-d",
        "--name",
        "ok",
        "--health-cmd",
        "true",
        "--health-interval",
        "200ms",
        "busybox",
        "sleep",
        "60",
    ]);
    r.wait_health("ok", "(healthy)");
    // A check slower than its timeout is killed and counts as a failure.
    r.k.ok(&[
        "run",
        "-d",
        "--name",
        "slow",
        "--health-cmd",
        "sleep 30",
        "--health-timeout",
        "300ms",
        "--health-interval",
        "200ms",
        "--health-retries",
        "1",
        "busybox",
        "sleep",
        "60",
    ]);
    r.wait_health("slow", "(unhealthy)");
    let h = r.health("slow");
    let last = h["Log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["ExitCode"], -1);
    assert!(
        last["Output"]
            .as_str()
            .unwrap()
            .contains("exceeded timeout"),
        "{h}"
    );
    // The timed-out check's process was killed: only PID 1 and ps itself are left.
    let ps = r.k.ok(&["exec", "slow", "ps", "-o", "args"]);
    assert!(!ps.contains("sleep 30"), "{ps}");

    // A conflict is refused before anything is created.
    let before = r.k.ok(&["ps", "-aq"]);
    let out = r.k.run(&[
        "run",
        "--no-healthcheck",
        "--health-cmd",
        "true",
        "busybox",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--no-healthcheck conflicts with --health-* options"),
        "{}",
        text(&out.stderr)
    );
    let bad =
        r.k.run(&["run", "--health-interval", "soon", "busybox", "true"]);
    assert_eq!(bad.status.code(), Some(125), "{}", text(&bad.stderr));
    assert_eq!(r.k.ok(&["ps", "-aq"]), before);
}

#[test]
fn logs_keep_stdout_and_stderr_apart() {
    let Some(r) = Runner::new() else { return };
    let out = r.k.run(&[
        "run",
        "--name",
        "fg",
        "busybox",
        "sh",
        "-c",
        "echo out1; echo err1 >&2; echo out2; echo err2 >&2",
    ]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "out1\nout2\n");
    let logs = r.k.run(&["logs", "fg"]);
    assert_eq!(text(&logs.stdout), "out1\nout2\n");
    assert_eq!(text(&logs.stderr), "err1\nerr2\n");
    // --tail: the last lines (the order between two pipes is not defined, so one stream here).
    r.k.ok(&["run", "--name", "seq", "busybox", "seq", "1", "5"]);
    assert_eq!(r.k.ok(&["logs", "--tail", "2", "seq"]), "4\n5\n");
    assert_eq!(r.k.ok(&["logs", "--tail", "all", "seq"]), "1\n2\n3\n4\n5\n");
    let tail = r.k.run(&["logs", "-n", "0", "fg"]);
    assert!(tail.stdout.is_empty() && tail.stderr.is_empty());
    // -t: an RFC 3339 time before each line.
    let stamped = r.k.ok(&["logs", "-t", "fg"]);
    for line in stamped.lines() {
        let (time, rest) = line.split_once(' ').expect("a timestamp");
        // 2026-12-03T09:00:00.123456789Z
        let b = time.as_bytes();
        assert!(
            time.len() == 30 && b[4] == b'-' && b[10] == b'T' && time.ends_with('Z'),
            "{stamped}"
        );
        assert!(rest.starts_with("out"), "{stamped}");
    }
    // --since: nothing was written in the future; --until: everything before now.
    // Unix seconds, five minutes from now.
    let later = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300)
        .to_string();
    let since = r.k.run(&["logs", "--since", &later, "fg"]);
    assert!(since.stdout.is_empty() && since.stderr.is_empty());
    assert_eq!(r.k.ok(&["logs", "--until", &later, "fg"]), "out1\nout2\n");
    assert_eq!(r.k.ok(&["logs", "--since", "10m", "fg"]), "out1\nout2\n");
    let bad = r.k.fails(&["logs", "--since", "yesterday", "fg"]);
    assert!(bad.contains("invalid value for --since"), "{bad}");

    // A detached container's log, followed to its end.
    r.k.ok(&[
        "run",
        "-d",
        "--name",
        "bg",
        "busybox",
        "sh",
        "-c",
        "echo a; echo b >&2; sleep 0.5; echo c",
    ]);
    let follow = r.k.run(&["logs", "-f", "bg"]);
    assert_eq!(text(&follow.stdout), "a\nc\n");
    assert_eq!(text(&follow.stderr), "b\n");
}
