//! `kiln run` and the container lifecycle end to end: real runc, overlayfs and store.

use crate::support::{Context, Runner, text};
use serde_json::Value;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

impl Runner {
    /// `kiln run ARGS`, whatever its status.
    fn run(&self, args: &[&str]) -> Output {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        self.k.run(&all)
    }

    /// `kiln run --rm ARGS`, asserting success; stdout.
    fn out(&self, args: &[&str]) -> String {
        let mut all = vec!["run", "--rm"];
        all.extend_from_slice(args);
        self.k.ok(&all)
    }

    /// `kiln inspect NAME`'s single document.
    fn inspect(&self, name: &str) -> Value {
        let v: Value = serde_json::from_str(&self.k.ok(&["inspect", name])).expect("json");
        v[0].clone()
    }

    /// Waits until NAME's State.Status is `status`.
    fn wait_status(&self, name: &str, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // The container may not exist yet (a `kiln run` still starting).
            let out = self.k.run(&["inspect", name]);
            let doc = serde_json::from_slice::<Value>(&out.stdout)
                .map(|v| v[0].clone())
                .unwrap_or(Value::Null);
            if doc["State"]["Status"] == status {
                return doc;
            }
            assert!(Instant::now() < deadline, "never {status}: {doc}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn containers_dir(&self) -> std::path::PathBuf {
        self.k.root.path().join("containers")
    }

    /// Container directories left in the store (hidden runtime dirs excluded).
    fn stored(&self) -> Vec<String> {
        match fs_err::read_dir(self.containers_dir()) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

#[test]
fn run_without_rm_keeps_the_container_like_docker() {
    let Some(r) = Runner::new() else { return };
    let out = r.run(&[
        "--name",
        "kept",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; echo layer > /written; exit 3",
    ]);
    assert_eq!(code(&out), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err\n"), "{}", text(&out.stderr));

    let ps = r.k.ok(&["ps", "-a"]);
    let line = ps
        .lines()
        .find(|l| l.ends_with(" kept"))
        .expect("ps -a lists it");
    assert!(line.contains("Exited (3) "), "{ps}");
    assert!(
        !r.k.ok(&["ps"]).contains("kept"),
        "ps shows running ones only"
    );
    // docker's logs: the container's stdout on ours, its stderr on ours.
    let log = r.k.run(&["logs", "kept"]);
    assert_eq!(text(&log.stdout), "out\n");
    assert_eq!(text(&log.stderr), "err\n");

    let doc = r.inspect("kept");
    let st = &doc["State"];
    assert_eq!(st["Status"], "exited");
    assert_eq!(st["ExitCode"], 3);
    assert_eq!(st["OOMKilled"], false);
    assert_eq!(st["Running"], false);
    assert_eq!(st["Pid"], 0);
    let zero = "0001-01-01T00:00:00Z";
    assert_ne!(st["StartedAt"], zero);
    assert_ne!(st["FinishedAt"], zero);
    assert!(
        st["StartedAt"].as_str() <= st["FinishedAt"].as_str(),
        "{st}"
    );
    assert_eq!(doc["Name"], "/kept");

    // The name is reserved while the container exists.
    let err = r.k.fails(&["run", "--name", "kept", "busybox", "true"]);
    assert!(err.contains("already in use"), "{err}");

    // Its writable layer is kept (and the rootfs unmounted) until rm.
    let id = doc["Id"].as_str().expect("id").to_owned();
    let upper = r.containers_dir().join(&id).join("upper");
    assert_eq!(
        fs_err::read_to_string(upper.join("written")).unwrap(),
        "layer\n"
    );
    assert!(r.mounts().is_empty(), "{:?}", r.mounts());
    assert_eq!(r.k.ok(&["rm", "kept"]), "kept\n");
    assert!(!r.k.ok(&["ps", "-a"]).contains("kept"));
    assert!(r.stored().is_empty(), "{:?}", r.stored());
    r.k.ok(&["run", "--name", "kept", "--rm", "busybox", "true"]);
}

#[test]
fn run_rm_leaves_nothing_and_reserves_the_name_meanwhile() {
    let Some(r) = Runner::new() else { return };
    assert_eq!(r.out(&["--name", "gone", "busybox", "echo", "hi"]), "hi\n");
    assert!(r.stored().is_empty(), "{:?}", r.stored());
    assert!(r.k.ok(&["ps", "-aq"]).is_empty());
    assert!(r.mounts().is_empty(), "{:?}", r.mounts());
    // While a --rm container runs, it is listed and its name taken.
    let mut bg =
        r.k.command()
            .args(["run", "--rm", "--name", "busy", "busybox", "sleep", "1000"])
            .spawn()
            .expect("spawn");
    let doc = r.wait_status("busy", "running");
    assert!(doc["State"]["Pid"].as_i64().unwrap_or(0) > 0, "{doc}");
    let err =
        r.k.fails(&["run", "--rm", "--name", "busy", "busybox", "true"]);
    assert!(err.contains("already in use"), "{err}");
    assert!(r.k.ok(&["ps"]).contains("busy"));
    // Killed from another kiln process, it ends with 128+9 and disappears.
    r.k.ok(&["kill", "busy"]);
    let status = bg.wait().expect("wait");
    assert_eq!(status.code(), Some(137));
    assert!(r.stored().is_empty(), "{:?}", r.stored());
}

#[test]
fn exit_status_is_the_process_s() {
    let Some(r) = Runner::new() else { return };
    let out = r.run(&["--rm", "busybox", "sh", "-c", "exit 3"]);
    assert_eq!(code(&out), Some(3));

    let out = r.run(&[
        "--name",
        "hog",
        "--memory",
        "32m",
        "busybox",
        "sh",
        "-c",
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a)",
    ]);
    assert_eq!(code(&out), Some(137), "{}", text(&out.stderr));
    let st = &r.inspect("hog")["State"];
    assert_eq!(st["OOMKilled"], true, "{st}");
    assert_eq!(st["ExitCode"], 137);
    r.k.ok(&["rm", "hog"]);

    let out = r.run(&["--rm", "busybox", "nope"]);
    assert_eq!(code(&out), Some(127));
    let err = text(&out.stderr);
    assert!(
        err.contains(r#"exec: "nope": executable file not found in $PATH"#),
        "{err}"
    );
    let out = r.run(&["--rm", "busybox", "/etc"]);
    assert_eq!(code(&out), Some(126), "{}", text(&out.stderr));
    assert!(r.stored().is_empty(), "{:?}", r.stored());
}

#[test]
fn tty_without_a_terminal_is_refused_before_anything_is_created() {
    let Some(r) = Runner::new() else { return };
    for flags in [&["-t"][..], &["-it"]] {
        let mut args: Vec<&str> = flags.to_vec();
        args.extend(["--name", "tty", "busybox", "true"]);
        let out = r.run(&args);
        assert!(!out.status.success(), "{flags:?}");
        assert!(
            text(&out.stderr).contains("the input device is not a TTY"),
            "{flags:?}: {}",
            text(&out.stderr)
        );
    }
    assert!(r.stored().is_empty(), "{:?}", r.stored());
    // Detached, nobody reads the terminal: docker accepts -dt from scripts, and so do we.
    r.k.ok(&["run", "-d", "-t", "--name", "dt", "busybox", "true"]);
    r.k.ok(&["rm", "-f", "dt"]);
    let err = r.k.fails(&["exec", "-t", "nothing", "true"]);
    assert!(err.contains("the input device is not a TTY"), "{err}");
}

#[test]
fn entrypoint_and_cmd_follow_docker() {
    let Some(r) = Runner::new() else { return };
    let ctx = Context::new().file(
        "Dockerfile",
        "FROM busybox\nENTRYPOINT [\"echo\", \"ep\"]\nCMD [\"default\"]\n",
    );
    r.k.ok(&["build", "-q", "-t", "epcmd", ctx.arg()]);
    assert_eq!(r.out(&["epcmd"]), "ep default\n");
    assert_eq!(r.out(&["epcmd", "a", "b"]), "ep a b\n", "args replace CMD");
    assert_eq!(
        r.out(&["--entrypoint", "echo", "epcmd"]),
        "\n",
        "--entrypoint resets CMD"
    );
    assert_eq!(
        r.out(&["--entrypoint", "/bin/sh", "epcmd", "-c", "echo $0"]),
        "/bin/sh\n"
    );

    let ctx = Context::new().file(
        "Dockerfile",
        "FROM busybox\nENV WHO=shell\nCMD echo \"$0 $WHO\" && ps -o args | sed -n 2p\n",
    );
    r.k.ok(&["build", "-q", "-t", "shellcmd", ctx.arg()]);
    let out = r.out(&["shellcmd"]);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("/bin/sh shell"), "{out}");
    assert!(
        lines
            .next()
            .is_some_and(|l| l.starts_with("/bin/sh -c echo")),
        "PID 1 is the shell: {out}"
    );
    assert_eq!(r.out(&["shellcmd", "echo", "replaced"]), "replaced\n");
}

#[test]
fn env_env_file_workdir_and_user() {
    let Some(r) = Runner::new() else { return };
    let ctx = Context::new().file("vars.env", "# comment\n\nFROM_FILE=f1\nBOTH=file\n");
    let env_file = ctx.path().join("vars.env");
    let out =
        r.k.command()
            .env("PASSED", "from-host")
            .args([
                "run",
                "--rm",
                "-e",
                "A=1",
                "-e",
                "BOTH=flag",
                "-e",
                "PASSED",
            ])
            .arg("--env-file")
            .arg(&env_file)
            .args([
                "-w",
                "/made/here",
                "-u",
                "app",
                "busybox",
                "sh",
                "-c",
                "echo $A $FROM_FILE $BOTH $PASSED $HOME; pwd; id -u; id -g",
            ])
            .output()
            .expect("spawn");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "1 f1 flag from-host /home/app\n/made/here\n1000\n1000\n"
    );
    assert_eq!(
        r.out(&["-u", "65534:1000", "busybox", "id", "-u"]),
        "65534\n"
    );
    assert_eq!(r.out(&["-u", "nobody", "busybox", "id", "-g"]), "65534\n");
}

#[test]
fn read_only_network_none_volumes_and_tmpfs() {
    let Some(r) = Runner::new() else { return };
    // --read-only refuses writes, except on a --tmpfs.
    let out = r.run(&["--rm", "--read-only", "busybox", "touch", "/x"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Read-only file system"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        r.out(&[
            "--read-only",
            "--tmpfs",
            "/scratch",
            "busybox",
            "sh",
            "-c",
            "echo t > /scratch/f && cat /scratch/f && grep -c ' /scratch tmpfs ' /proc/mounts"
        ]),
        "t\n1\n"
    );

    assert_eq!(
        r.out(&["--network", "none", "busybox", "ls", "/sys/class/net"]),
        "lo\n"
    );
    let host = r.out(&["--network", "host", "busybox", "ls", "/sys/class/net"]);
    assert!(host.lines().count() > 1, "host network: {host}");

    // A named volume outlives the --rm container that wrote it.
    r.out(&[
        "-v",
        "data:/data",
        "busybox",
        "sh",
        "-c",
        "echo v1 > /data/f",
    ]);
    assert_eq!(
        r.out(&["-v", "data:/data", "busybox", "cat", "/data/f"]),
        "v1\n"
    );
    assert!(r.k.root.path().join("volumes/data/_data/f").exists());

    // A bind mount with :ro is readable, not writable.
    let ctx = Context::new().file("hostfile", "from host\n");
    let spec = format!("{}:/p:ro", ctx.arg());
    assert_eq!(
        r.out(&["-v", &spec, "busybox", "cat", "/p/hostfile"]),
        "from host\n"
    );
    let out = r.run(&[
        "--rm",
        "-v",
        &spec,
        "busybox",
        "sh",
        "-c",
        "echo x > /p/new",
    ]);
    assert!(!out.status.success());
    assert!(!ctx.path().join("new").exists());
    let spec = format!("{}:/p", ctx.arg());
    r.out(&["-v", &spec, "busybox", "sh", "-c", "echo x > /p/new"]);
    assert!(ctx.path().join("new").exists(), "rw bind writes through");
}

#[test]
fn detached_ps_logs_stop_kill_exec_inspect_rm() {
    let Some(r) = Runner::new() else { return };
    // A shell that handles TERM ends with 143 on stop, at once.
    let script = "trap 'exit 143' TERM; echo ready; while true; do sleep 0.1; done";
    let id = r.k.ok(&[
        "run", "-d", "--name", "srv", "-e", "MARK=m1", "busybox", "sh", "-c", script,
    ]);
    assert_eq!(id.trim().len(), 64, "{id}");
    let doc = r.wait_status("srv", "running");
    assert_eq!(doc["State"]["Running"], true);
    assert!(doc["State"]["Pid"].as_i64().unwrap_or(0) > 0);
    assert!(r.k.ok(&["ps"]).contains("srv"));
    r.wait_log("srv", "ready\n");

    // exec: the container's env, with -e/-w/-u applied in the runtime (no shell wrapper).
    let exec = |args: &[&str]| {
        let mut all = vec!["exec"];
        all.extend_from_slice(args);
        r.k.run(&all)
    };
    let out = exec(&["srv", "sh", "-c", "echo $MARK; pwd; id -u"]);
    assert_eq!(text(&out.stdout), "m1\n/\n0\n");
    let out = exec(&[
        "-e",
        "MARK=m2",
        "-e",
        "NEW=n",
        "-w",
        "/tmp",
        "-u",
        "app",
        "srv",
        "sh",
        "-c",
        "echo $MARK $NEW $HOME; pwd; id -u; id -g",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "m2 n /home/app\n/tmp\n1000\n1000\n");
    let out = exec(&["-u", "nope", "srv", "true"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("unable to find user nope"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(code(&exec(&["srv", "sh", "-c", "exit 5"])), Some(5));
    let out = exec(&["srv", "nope"]);
    assert_eq!(code(&out), Some(127));

    let started = Instant::now();
    assert_eq!(r.k.ok(&["stop", "-t", "10", "srv"]), "srv\n");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped on TERM"
    );
    let st = &r.inspect("srv")["State"];
    assert_eq!(st["Status"], "exited");
    assert_eq!(st["ExitCode"], 143);
    assert!(r.k.ok(&["ps", "-a"]).contains("Exited (143) "));
    assert!(!r.k.ok(&["ps"]).contains("srv"));
    let err = r.k.fails(&["exec", "srv", "true"]);
    assert!(err.contains("not running"), "{err}");

    // sleep as PID 1 ignores TERM (no handler): killed after the timeout, 137, as docker.
    r.k.ok(&["run", "-d", "--name", "sleeper", "busybox", "sleep", "1000"]);
    r.wait_status("sleeper", "running");
    r.k.ok(&["stop", "-t", "1", "sleeper"]);
    assert_eq!(r.inspect("sleeper")["State"]["ExitCode"], 137);

    // kill, and rm refusing a running container unless -f.
    r.k.ok(&["run", "-d", "--name", "victim", "busybox", "sleep", "1000"]);
    r.wait_status("victim", "running");
    let err = r.k.fails(&["rm", "victim"]);
    assert!(err.contains("running"), "{err}");
    r.k.ok(&["kill", "victim"]);
    assert_eq!(r.wait_status("victim", "exited")["State"]["ExitCode"], 137);
    r.k.ok(&["run", "-d", "--name", "forced", "busybox", "sleep", "1000"]);
    r.wait_status("forced", "running");
    r.k.ok(&["rm", "-f", "forced"]);

    r.k.ok(&["rm", "srv", "sleeper", "victim"]);
    assert!(r.stored().is_empty(), "{:?}", r.stored());
    assert!(r.mounts().is_empty(), "{:?}", r.mounts());
}

#[test]
fn failures_say_what_is_wrong() {
    let Some(r) = Runner::new() else { return };
    let err = r.k.fails(&["run", "--rm", "nosuch:1"]);
    assert!(err.contains("unable to find image"), "{err}");
    let err = r.k.fails(&["run", "--rm", "-u", "nope", "busybox", "true"]);
    assert!(err.contains("unable to find user nope"), "{err}");
    let err = r.k.fails(&[
        "--runtime",
        "/nonexistent",
        "run",
        "--rm",
        "busybox",
        "true",
    ]);
    assert!(err.contains("apt-get install runc"), "{err}");
    assert!(r.stored().is_empty(), "{:?}", r.stored());
    assert!(Path::new(&r.k.root.path()).exists());
}

#[test]
fn foreground_tty_and_signal_forwarding() {
    let Some(r) = Runner::new() else { return };
    // A real terminal from `script`'s pty (util-linux): -it gives the container one.
    let cmd = format!(
        "{} run --name ttyc -it busybox sh -c 'tty; echo $TERM; exit 6'",
        r.k.bin.display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("KILN_ROOT", r.k.root.path())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script (apt-get install bsdutils)");
    let s = text(&out.stdout);
    assert_eq!(out.status.code(), Some(6), "{s}");
    assert!(s.contains("/dev/pts/"), "{s}");
    assert!(s.contains("xterm"), "{s}");
    // The terminal's output is logged too.
    let log = r.k.ok(&["logs", "ttyc"]);
    assert!(log.contains("/dev/pts/") && log.contains("xterm"), "{log}");
    assert_eq!(r.inspect("ttyc")["State"]["ExitCode"], 6);
    r.k.ok(&["rm", "ttyc"]);

    // SIGTERM to `kiln run` reaches PID 1, whose handler decides the exit status.
    let child =
        r.k.command()
            .args([
                "run",
                "--name",
                "sig",
                "busybox",
                "sh",
                "-c",
                "trap 'echo got TERM; exit 42' TERM; echo ready; while true; do sleep 0.1; done",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
    r.wait_status("sig", "running");
    r.wait_log("sig", "ready\n");
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill")
            .success()
    );
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(42));
    assert_eq!(text(&out.stdout), "ready\ngot TERM\n");
    assert_eq!(r.inspect("sig")["State"]["ExitCode"], 42);
    r.k.ok(&["rm", "sig"]);
}

#[test]
fn a_killed_kiln_run_is_reaped_by_the_next_kiln() {
    let Some(r) = Runner::new() else { return };
    let mut child =
        r.k.command()
            .args(["run", "--name", "orphan", "busybox", "sleep", "1005"])
            .spawn()
            .expect("spawn");
    let doc = r.wait_status("orphan", "running");
    let pid = doc["State"]["Pid"].as_i64().expect("pid");
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    child.kill().expect("SIGKILL kiln");
    child.wait().expect("wait");
    // The next kiln stops what the killed one left and records it.
    let ps = r.k.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited (255) "), "{ps}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            Instant::now() < deadline,
            "container process {pid} survived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(r.mounts().is_empty(), "{:?}", r.mounts());
    let st = &r.inspect("orphan")["State"];
    assert_eq!(st["ExitCode"], 255);
    assert_eq!(st["Error"], "supervisor process vanished");
    r.k.ok(&["rm", "orphan"]);
    assert!(r.stored().is_empty(), "{:?}", r.stored());
}

#[test]
fn exec_i_passes_stdin_without_a_terminal() {
    if !crate::support::sandbox_available() {
        return;
    }
    let k = crate::support::Kiln::with_busybox();
    k.ok(&[
        "run",
        "-d",
        "--name",
        "stdin-exec",
        "busybox",
        "sleep",
        "60",
    ]);
    let mut child = k
        .command()
        .args(["exec", "-i", "stdin-exec", "sh", "-c", "tr a-z A-Z"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"piped\n").unwrap();
    let out = child.wait_with_output().unwrap();
    k.ok(&["rm", "-f", "stdin-exec"]);
    assert_eq!(crate::support::text(&out.stdout), "PIPED\n");
}

/// The sandbox probe's source: a static C program that tries the syscalls the seccomp profile
/// and the capabilities decide on, and prints `name=ok` or `name=ERRNO` for each.
const PROBE_C: &str = include_str!("sandbox_probe.c");

/// A runner whose store also has `probe:latest`: busybox plus the probe at `/probe`, compiled
/// here with `gcc -static` (fails under `KILN_REQUIRE_ALL=1` when gcc or static glibc is
/// missing, skips otherwise).
fn probe_runner() -> Option<Runner> {
    let r = Runner::new()?;
    let ctx = Context::new()
        .file("probe.c", PROBE_C)
        .file("Dockerfile", "FROM busybox\nCOPY probe /probe\n");
    let gcc = std::process::Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(ctx.path().join("probe"))
        .arg(ctx.path().join("probe.c"))
        .output();
    match gcc {
        Ok(out) if out.status.success() => {}
        other => {
            let why = format!("gcc -static cannot build the sandbox probe: {other:?}");
            if std::env::var_os("KILN_REQUIRE_ALL").is_some() {
                panic!("{why}: apt-get install gcc libc6-dev");
            }
            eprintln!("skipping: {why}");
            return None;
        }
    }
    r.k.ok(&["build", "-q", "-t", "probe", ctx.arg()]);
    Some(r)
}

/// Runs the probe with `flags` before the image and parses its report.
fn probe(r: &Runner, flags: &[&str]) -> std::collections::BTreeMap<String, String> {
    let mut args = flags.to_vec();
    args.extend([
        "probe",
        "sh",
        "-c",
        "/probe; sed -n 's/^\\(Seccomp\\|NoNewPrivs\\|CapEff\\):[[:space:]]*/\\1=/p' /proc/self/status",
    ]);
    let out = r.out(&args);
    eprintln!("probe {flags:?}:\n{out}");
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn seccomp_default_profile_denies_what_docker_denies() {
    let Some(r) = probe_runner() else { return };
    let p = probe(&r, &[]);
    assert_eq!(p["Seccomp"], "2", "a seccomp filter is loaded");
    assert_eq!(p["NoNewPrivs"], "0", "Docker's default");
    for denied in [
        "unshare_user",
        "userns_mount",
        "mount",
        "add_key",
        "keyctl",
        "perf_event_open",
        "personality_no_randomize",
        "io_uring_setup",
        "vsock",
        "clone_newuser",
    ] {
        assert_eq!(p[denied], "EPERM", "{denied}");
    }
    // clone3 says "not implemented", so that libc falls back to clone (fork_exec: system(3)).
    assert_eq!(p["clone3"], "ENOSYS");
    for allowed in [
        "personality_query",
        "personality_linux32",
        "inet",
        "clone",
        "fork_exec",
        "getrandom",
    ] {
        assert_eq!(p[allowed], "ok", "{allowed}");
    }
    // Ordinary work goes on: a shell, files, a server on a socket.
    assert_eq!(
        r.out(&[
            "--network",
            "none",
            "busybox",
            "sh",
            "-c",
            "ls / >/dev/null && cat /etc/passwd >/dev/null && mkdir -p /www && echo hi > /www/i \
             && httpd -p 127.0.0.1:8080 -h /www && wget -qO- http://127.0.0.1:8080/i"
        ]),
        "hi\n"
    );
}

#[test]
fn seccomp_unconfined_privileged_cap_add_and_profiles() {
    let Some(r) = probe_runner() else { return };
    // unconfined: the same capabilities, no filter; user namespaces make mount possible.
    let p = probe(&r, &["--security-opt", "seccomp=unconfined"]);
    assert_eq!(p["Seccomp"], "0");
    for name in [
        "unshare_user",
        "userns_mount",
        "keyctl",
        "personality_no_randomize",
        "clone_newuser",
    ] {
        assert_eq!(p[name], "ok", "{name} without a filter");
    }
    assert_eq!(p["mount"], "EPERM", "still no CAP_SYS_ADMIN");
    assert_ne!(p["clone3"], "ENOSYS");
    assert_ne!(p["io_uring_setup"], "EPERM");

    // --privileged: every capability, no filter, mount works directly, the host's devices.
    let p = probe(&r, &["--privileged"]);
    assert_eq!(p["Seccomp"], "0");
    assert_eq!(p["mount"], "ok");
    assert_eq!(p["packet"], "ok");
    // Every capability kiln itself holds (this CI sandbox may withhold CAP_SYS_RESOURCE).
    let caps = u64::from_str_radix(&p["CapEff"], 16).expect("CapEff");
    let ours = fs_err::read_to_string("/proc/self/status")
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).expect("CapBnd"))
        .expect("CapBnd");
    assert_eq!(caps, ours & ((1 << 41) - 1), "{caps:x}");
    assert!(caps.count_ones() >= 40, "{caps:x}");
    let devs = |flags: &[&str]| {
        let mut args = flags.to_vec();
        args.extend(["busybox", "ls", "/dev"]);
        r.out(&args).lines().count()
    };
    assert!(
        devs(&["--privileged"]) > devs(&[]),
        "host devices with --privileged"
    );
    let sys = r.run(&[
        "--rm",
        "--privileged",
        "busybox",
        "sh",
        "-c",
        "grep ' /sys ' /proc/mounts",
    ]);
    assert!(text(&sys.stdout).contains(" rw,"), "{}", text(&sys.stdout));

    // --cap-add SYS_ADMIN opens the syscalls it guards, and only those.
    let p = probe(&r, &["--cap-add", "SYS_ADMIN"]);
    assert_eq!(p["Seccomp"], "2");
    assert_eq!(p["mount"], "ok");
    assert_eq!(p["clone_newuser"], "ok");
    assert_eq!(p["clone3"], "EINVAL", "clone3 reaches the kernel");
    assert_eq!(p["keyctl"], "EPERM");

    // A profile of one's own, in Docker's format; and no-new-privileges.
    let ctx = Context::new().file(
        "profile.json",
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                          "errnoRet": 13, "args": null}]}"#,
    );
    let opt = format!("seccomp={}", ctx.path().join("profile.json").display());
    let out = r.run(&[
        "--rm",
        "--security-opt",
        &opt,
        "--security-opt",
        "no-new-privileges",
        "busybox",
        "sh",
        "-c",
        "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; mkdir /tmp/d",
    ]);
    assert!(!out.status.success());
    assert_eq!(text(&out.stdout), "NoNewPrivs:\t1\nSeccomp:\t2\n");
    assert!(
        text(&out.stderr).contains("Permission denied"),
        "{}",
        text(&out.stderr)
    );
    let p = probe(&r, &["--security-opt", &opt]);
    assert_eq!(p["keyctl"], "ok", "the profile allows by default");
    let out = r.run(&[
        "--name",
        "secopts",
        "--security-opt",
        &opt,
        "--security-opt",
        "no-new-privileges=true",
        "busybox",
        "true",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let hc = &r.inspect("secopts")["HostConfig"];
    assert_eq!(
        hc["SecurityOpt"],
        serde_json::json!([opt, "no-new-privileges"])
    );
    assert_eq!(hc["Privileged"], false);
    r.k.ok(&["rm", "secopts"]);

    let err = r.k.fails(&[
        "run",
        "--rm",
        "--security-opt",
        "apparmor=x",
        "busybox",
        "true",
    ]);
    assert!(err.contains("unsupported"), "{err}");
    let err = r.k.fails(&[
        "run",
        "--rm",
        "--security-opt",
        "seccomp=/nope.json",
        "busybox",
        "true",
    ]);
    assert!(err.contains("/nope.json"), "{err}");
}

#[test]
fn run_steps_get_the_default_profile() {
    let Some(r) = probe_runner() else { return };
    let ctx = Context::new().file(
        "Dockerfile",
        "FROM probe\n\
         RUN grep -q 'Seccomp:.2' /proc/self/status\n\
         RUN /probe > /report && grep -qx keyctl=EPERM /report && grep -qx fork_exec=ok /report\n\
         RUN --network=host /probe | grep -qx packet=EPERM\n",
    );
    r.k.ok(&["build", "-q", ctx.arg()]);
    // The checks above can fail: an allowed keyctl fails the step.
    let ctx = Context::new().file(
        "Dockerfile",
        "FROM probe\nRUN /probe | grep -qx keyctl=ok\n",
    );
    r.k.fails(&["build", "-q", ctx.arg()]);
}

#[test]
fn net_raw_only_off_the_host_network() {
    let Some(r) = probe_runner() else { return };
    assert_eq!(
        probe(&r, &["--network", "host"])["packet"],
        "EPERM",
        "host network: no AF_PACKET"
    );
    assert_eq!(probe(&r, &["--network", "none"])["packet"], "ok");
    assert_eq!(probe(&r, &["--cap-add", "NET_RAW"])["packet"], "ok");
    // busybox arping opens an AF_PACKET socket too.
    let out = r.run(&[
        "--rm",
        "--network",
        "host",
        "busybox",
        "arping",
        "-c",
        "1",
        "-w",
        "1",
        "-I",
        "lo",
        "127.0.0.1",
    ]);
    assert!(
        text(&out.stderr).contains("Operation not permitted"),
        "{}",
        text(&out.stderr)
    );
}

/// The runtime's containers under `root` (`runc --root ROOT list`): (id, status).
fn runc_list(root: &Path) -> Vec<(String, String)> {
    let out = std::process::Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(["list", "-q"])
        .output()
        .expect("runc list");
    let ids = text(&out.stdout);
    ids.split_whitespace()
        .map(|id| {
            let state = std::process::Command::new("runc")
                .arg("--root")
                .arg(root)
                .args(["state", id])
                .output()
                .expect("runc state");
            let v: Value = serde_json::from_slice(&state.stdout).unwrap_or(Value::Null);
            (
                id.to_owned(),
                v["status"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect()
}

fn wait_gone(pid: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "process {pid} survived");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn any_command_reaps_a_killed_kiln_run_and_spares_live_ones() {
    let Some(r) = Runner::new() else { return };
    let runc_root = r.containers_dir().join(".runc");
    let spawn = |name: &str| {
        r.k.command()
            .args(["run", "--name", name, "busybox", "sleep", "1000"])
            .spawn()
            .expect("spawn")
    };
    let mut doomed = spawn("doomed");
    let mut live = spawn("live");
    r.k.ok(&[
        "run", "-d", "--name", "detached", "busybox", "sleep", "1000",
    ]);
    let doc = r.wait_status("doomed", "running");
    let pid = doc["State"]["Pid"].as_i64().expect("pid");
    let doomed_id = doc["Id"].as_str().expect("id").to_owned();
    r.wait_status("live", "running");
    doomed.kill().expect("SIGKILL kiln");
    doomed.wait().expect("wait");
    // Killed, its kiln leaves the runc container running (until a kiln opens the store).
    assert!(
        runc_list(&runc_root).contains(&(doomed_id.clone(), "running".to_owned())),
        "{:?}",
        runc_list(&runc_root)
    );
    assert!(Path::new(&format!("/proc/{pid}")).exists());

    // A command that only opens the store reaps it.
    r.k.ok(&["images"]);
    let left = runc_list(&runc_root);
    assert!(!left.iter().any(|(id, _)| *id == doomed_id), "{left:?}");
    wait_gone(pid);
    let st = &r.inspect("doomed")["State"];
    assert_eq!(st["ExitCode"], 255);
    assert_eq!(st["Error"], "supervisor process vanished");
    assert!(
        !r.containers_dir()
            .join(".bundles")
            .join(&doomed_id)
            .exists(),
        "bundle left"
    );
    // The live foreground run and the detached one (its shim alive) are untouched.
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().all(|(_, s)| s == "running"), "{left:?}");
    assert_eq!(r.inspect("live")["State"]["Status"], "running");
    assert_eq!(r.inspect("detached")["State"]["Status"], "running");
    r.k.ok(&["rm", "-f", "live", "detached", "doomed"]);
    live.wait().expect("wait");
    assert!(r.mounts().is_empty(), "{:?}", r.mounts());
}

#[test]
fn any_command_reaps_the_run_step_of_a_killed_build() {
    let Some(r) = Runner::new() else { return };
    let runc_root = r.k.root.path().join("executor").join("runc");
    let ctx = Context::new().file("Dockerfile", "FROM busybox\nRUN sleep 1000\n");
    let mut build =
        r.k.command()
            .args(["build", "--progress=plain", ctx.arg()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(30);
    let id = loop {
        if let Some((id, status)) = runc_list(&runc_root).into_iter().next()
            && status == "running"
        {
            break id;
        }
        assert!(Instant::now() < deadline, "the RUN step never started");
        std::thread::sleep(Duration::from_millis(50));
    };
    let state = std::process::Command::new("runc")
        .arg("--root")
        .arg(&runc_root)
        .args(["state", &id])
        .output()
        .expect("runc state");
    let pid = serde_json::from_slice::<Value>(&state.stdout).expect("state")["pid"]
        .as_i64()
        .expect("pid");
    build.kill().expect("SIGKILL kiln build");
    build.wait().expect("wait");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the step outlives its kiln"
    );
    assert!(
        !r.mounts().is_empty(),
        "the step's overlay is still mounted"
    );

    r.k.ok(&["images"]);
    assert_eq!(runc_list(&runc_root), Vec::new());
    wait_gone(pid);
    assert!(r.mounts().is_empty(), "{:?}", r.mounts());
    let bundles = r.k.root.path().join("executor").join("bundles");
    assert_eq!(
        fs_err::read_dir(&bundles).map(|d| d.count()).unwrap_or(0),
        0,
        "bundles left"
    );
}
