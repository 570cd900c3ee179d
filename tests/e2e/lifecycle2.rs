//! docker's container lifecycle beyond run/stop/rm, through the real binary: create, start,
//! restart, wait, attach, cp, diff, export, top, stats, rename, pause/unpause, `--restart`
//! and `--init`.

use crate::support::{Runner, text};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Output, Stdio};

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

#[test]
fn create_start_wait_and_start_again() {
    let Some(r) = Runner::new() else { return };
    let id = r.k.ok(&[
        "create",
        "--name",
        "c1",
        "busybox",
        "sh",
        "-c",
        "echo hi; exit 3",
    ]);
    assert_eq!(id.trim().len(), 64, "create prints the full ID: {id}");
    assert_eq!(r.status("c1"), "Created");
    assert_eq!(r.inspect_f("c1", "{{.State.Status}}"), "created");
    assert!(r.k.ok(&["ps", "-q"]).is_empty(), "created is not running");
    assert_eq!(r.k.ok(&["start", "c1"]).trim(), "c1");
    assert_eq!(r.k.ok(&["wait", "c1"]).trim(), "3");
    assert!(
        r.status("c1").starts_with("Exited (3) "),
        "{}",
        r.status("c1")
    );
    // A stopped container starts again: same container, the log grows.
    let out = r.k.run(&["start", "-a", "c1"]);
    assert_eq!(code(&out), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hi\n");
    assert_eq!(r.k.ok(&["logs", "c1"]), "hi\nhi\n");
    assert_eq!(r.inspect_f("c1", "{{.Id}}"), id.trim());
    // `start -a` of a created container runs it in the foreground.
    r.k.ok(&[
        "create",
        "--name",
        "c2",
        "busybox",
        "sh",
        "-c",
        "echo fg; exit 4",
    ]);
    let out = r.k.run(&["start", "-a", "c2"]);
    assert_eq!(
        (code(&out), text(&out.stdout)),
        (Some(4), "fg\n".to_owned())
    );
    // A `--rm` container's status, whether `wait` sees it exit or finds it removed.
    r.k.ok(&[
        "run",
        "-d",
        "--rm",
        "--name",
        "gone",
        "busybox",
        "sh",
        "-c",
        "sleep 0.3; exit 6",
    ]);
    assert_eq!(r.k.ok(&["wait", "gone"]).trim(), "6");
    // Unknown containers: the others still go, status 1.
    let out = r.k.run(&["wait", "c2", "nosuch"]);
    assert_eq!(code(&out), Some(1));
    assert_eq!(text(&out.stdout), "4\n");
    assert!(text(&out.stderr).contains("no such container: nosuch"));
}

#[test]
fn create_takes_run_s_flags_and_errors_exit_125() {
    let Some(r) = Runner::new() else { return };
    let out = r.k.run(&["create", "--bogus", "busybox"]);
    assert_eq!(code(&out), Some(125), "{}", text(&out.stderr));
    let out = r.k.run(&["container", "create", "nosuchimage:1"]);
    assert_eq!(code(&out), Some(125), "{}", text(&out.stderr));
    r.k.ok(&[
        "container",
        "create",
        "--name",
        "e",
        "-e",
        "A=1",
        "-w",
        "/tmp",
        "busybox",
        "sh",
        "-c",
        "echo $A $PWD",
    ]);
    let out = r.k.run(&["container", "start", "-a", "e"]);
    assert_eq!(text(&out.stdout), "1 /tmp\n", "{}", text(&out.stderr));
    let out = r.k.run(&["create", "--name", "e", "busybox", "true"]);
    assert_eq!(code(&out), Some(125));
    assert!(text(&out.stderr).contains("already in use"));
    assert_eq!(r.k.ok(&["container", "wait", "e"]).trim(), "0");
    // docker's `container VERB` names of the other container commands.
    assert_eq!(
        r.k.ok(&["container", "ls", "-a", "--format", "{{.Names}}"]),
        "e\n"
    );
    assert_eq!(
        r.k.ok(&["container", "run", "--rm", "busybox", "echo", "hi"]),
        "hi\n"
    );
    assert_eq!(r.k.ok(&["container", "rm", "e"]), "e\n");
    let out = r.k.run(&["container", "run", "--bogus", "busybox"]);
    assert_eq!(code(&out), Some(125));
}

#[test]
fn restart_policy_on_failure_restarts_up_to_its_count() {
    let Some(r) = Runner::new() else { return };
    r.k.ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "echo run; exit 1",
    ]);
    r.until("two restarts, then exited for good", || {
        r.inspect_f("flaky", "{{.RestartCount}} {{.State.Status}}") == "2 exited"
    });
    assert_eq!(r.k.ok(&["logs", "flaky"]), "run\nrun\nrun\n");
    assert_eq!(
        r.inspect_f(
            "flaky",
            "{{.HostConfig.RestartPolicy.Name}} {{.HostConfig.RestartPolicy.MaximumRetryCount}} {{.State.ExitCode}}"
        ),
        "on-failure 2 1"
    );
    // In the foreground: the first run's output and status; the shim goes on with the policy.
    let out = r.k.run(&[
        "run",
        "--name",
        "fg",
        "--restart",
        "on-failure:1",
        "busybox",
        "sh",
        "-c",
        "echo fg; exit 3",
    ]);
    assert_eq!(code(&out), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "fg\n");
    r.until("the foreground run's restart", || {
        r.inspect_f("fg", "{{.RestartCount}} {{.State.Status}}") == "1 exited"
    });
    assert_eq!(r.k.ok(&["logs", "fg"]), "fg\nfg\n");
    // A success is not restarted by on-failure.
    r.k.ok(&[
        "run",
        "-d",
        "--name",
        "fine",
        "--restart",
        "on-failure",
        "busybox",
        "true",
    ]);
    assert_eq!(r.k.ok(&["wait", "fine"]).trim(), "0");
    r.until("the shim is done", || {
        r.inspect_f("fine", "{{.State.Status}}") == "exited"
    });
    assert_eq!(r.inspect_f("fine", "{{.RestartCount}}"), "0");
}

#[test]
fn restart_always_backs_off_shows_restarting_and_stop_ends_it() {
    let Some(r) = Runner::new() else { return };
    r.k.ok(&[
        "run",
        "-d",
        "--name",
        "loop",
        "--restart",
        "always",
        "busybox",
        "sh",
        "-c",
        "exit 2",
    ]);
    r.until("Restarting (2) in ps", || {
        r.status("loop").starts_with("Restarting (2) ")
    });
    // Restarting counts as up for `ps`, as docker's.
    assert!(r.k.ok(&["ps"]).contains("loop"));
    r.until("restarted twice", || {
        r.inspect_f("loop", "{{.RestartCount}}")
            .parse::<u32>()
            .unwrap()
            >= 2
    });
    r.k.ok(&["stop", "loop"]);
    let after = r.inspect_f("loop", "{{.State.Status}} {{.State.Restarting}}");
    assert_eq!(after, "exited false");
    assert!(
        r.status("loop").starts_with("Exited (2) "),
        "{}",
        r.status("loop")
    );
    assert!(!r.k.ok(&["ps"]).contains("loop"));
    // `start` gives the policy back.
    r.k.ok(&["start", "loop"]);
    r.until("restarting again", || {
        r.inspect_f("loop", "{{.State.Status}}") == "restarting"
    });
    r.k.ok(&["rm", "-f", "loop"]);
    assert!(r.k.ok(&["ps", "-aq"]).is_empty());
}

#[test]
fn invalid_restart_policies_get_docker_s_messages_and_change_nothing() {
    let Some(r) = Runner::new() else { return };
    for (policy, message) in [
        (
            "sometimes",
            "invalid restart policy: unknown policy 'sometimes'; use one of 'no', 'always', 'on-failure', or 'unless-stopped'",
        ),
        (
            "always:3",
            "invalid restart policy: maximum retry count can only be used with 'on-failure'",
        ),
        (
            "on-failure:x",
            "invalid restart policy format: maximum retry count must be an integer",
        ),
        (
            ":1",
            "invalid restart policy format: no policy provided before colon",
        ),
    ] {
        for verb in [&["run", "-d"][..], &["create"]] {
            let args = [verb, &["--restart", policy, "busybox", "true"]].concat();
            let out = r.k.run(&args);
            assert_eq!(code(&out), Some(125), "{args:?}");
            assert!(text(&out.stderr).contains(message), "{}", text(&out.stderr));
        }
    }
    let out =
        r.k.run(&["run", "--rm", "--restart", "always", "busybox", "true"]);
    assert_eq!(code(&out), Some(125));
    assert!(
        text(&out.stderr).contains("conflicting options: cannot specify both --restart and --rm"),
        "{}",
        text(&out.stderr)
    );
    assert!(r.k.ok(&["ps", "-aq"]).is_empty());
}

#[test]
fn init_is_pid_1_forwards_signals_and_reaps_zombies() {
    let Some(r) = Runner::new() else { return };
    let out = r.k.run(&[
        "run",
        "--rm",
        "--init",
        "busybox",
        "sh",
        "-c",
        "tr '\\0' ' ' < /proc/1/cmdline",
    ]);
    assert_eq!(code(&out), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("/sbin/docker-init -- sh -c"),
        "{}",
        text(&out.stdout)
    );
    // A shell that is not PID 1 dies of SIGTERM: tini passed it on.
    r.k.ok(&[
        "run", "-d", "--init", "--name", "sig", "busybox", "sleep", "1000",
    ]);
    r.k.ok(&["kill", "-s", "TERM", "sig"]);
    assert_eq!(r.k.ok(&["wait", "sig"]).trim(), "143");
    assert_eq!(r.inspect_f("sig", "{{.HostConfig.Init}}"), "true");
    // An orphan that ends is reaped by tini; PID 1 `sleep` itself would never reap it.
    r.k.ok(&[
        "run",
        "-d",
        "--init",
        "--name",
        "z",
        "busybox",
        "sh",
        "-c",
        "(true &); touch /forked; exec sleep 1000",
    ]);
    r.until("no zombie left", || {
        let out = r.k.run(&[
            "exec",
            "z",
            "sh",
            "-c",
            "test -e /forked && ! grep -q ' Z ' /proc/[0-9]*/stat && echo clean",
        ]);
        text(&out.stdout).trim() == "clean"
    });
}

#[test]
fn attach_follows_the_output_and_feeds_stdin() {
    let Some(r) = Runner::new() else { return };
    r.k.ok(&[
        "run",
        "-d",
        "-i",
        "--name",
        "echoer",
        "busybox",
        "sh",
        "-c",
        "while read l; do echo \"got $l\"; [ \"$l\" = quit ] && exit 7; done",
    ]);
    let mut child =
        r.k.command()
            .args(["attach", "echoer"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("attach");
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    writeln!(stdin, "hello").unwrap();
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "got hello\n");
    writeln!(stdin, "quit").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(7));
    let out = r.k.run(&["attach", "echoer"]);
    assert_ne!(code(&out), Some(0));
    assert!(text(&out.stderr).contains("you cannot attach to a stopped container"));
}

#[test]
fn cp_copies_both_ways_without_leaving_the_container_s_root() {
    let Some(r) = Runner::new() else { return };
    let host = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let outside_path = outside.path().to_str().unwrap().to_owned();
    // /evil points at a path that also exists on the host: inside the container it is the
    // container's own.
    let script = format!(
        "mkdir -p /data/sub {outside_path} && echo hello > /data/sub/f && ln -s {outside_path} /evil && ln -s /etc/hostname /data/link"
    );
    r.k.ok(&["run", "--name", "files", "busybox", "sh", "-c", &script]);
    // Out, a directory to a new path: the path gets its contents (container exited).
    let dst = host.path().join("copy");
    r.k.ok(&["cp", "files:/data", dst.to_str().unwrap()]);
    assert_eq!(
        fs_err::read_to_string(dst.join("sub/f")).unwrap(),
        "hello\n"
    );
    assert_eq!(
        fs_err::read_link(dst.join("link")).unwrap(),
        Path::new("/etc/hostname"),
        "a symlink is copied as one"
    );
    // Into an existing directory: under its own name.
    r.k.ok(&["cp", "files:/data/sub/f", host.path().to_str().unwrap()]);
    assert_eq!(
        fs_err::read_to_string(host.path().join("f")).unwrap(),
        "hello\n"
    );
    // In, through the symlink: lands in the container's directory, never the host's.
    let src = host.path().join("h.txt");
    fs_err::write(&src, "from host\n").unwrap();
    r.k.ok(&["cp", src.to_str().unwrap(), "files:/evil/"]);
    assert!(
        fs_err::read_dir(outside.path()).unwrap().next().is_none(),
        "cp wrote outside the container"
    );
    let back = host.path().join("back.txt");
    r.k.ok(&[
        "cp",
        &format!("files:{outside_path}/h.txt"),
        back.to_str().unwrap(),
    ]);
    assert_eq!(fs_err::read_to_string(&back).unwrap(), "from host\n");
    // Tar streams: out on stdout, in from stdin.
    let out = r.k.run(&["cp", "files:/data", "-"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut names: Vec<String> = tar::Archive::new(&out.stdout[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["data", "data/link", "data/sub", "data/sub/f"]);
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(6);
    h.set_mode(0o644);
    h.set_uid(1234);
    h.set_gid(0);
    h.set_mtime(0);
    tar.append_data(&mut h, "streamed.txt", &b"tared\n"[..])
        .unwrap();
    let data = tar.into_inner().unwrap();
    let mut child =
        r.k.command()
            .args(["cp", "-", "files:/tmp"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
    child.stdin.take().unwrap().write_all(&data).unwrap();
    assert!(child.wait().unwrap().success());
    let got = host.path().join("streamed.txt");
    r.k.ok(&["cp", "files:/tmp/streamed.txt", got.to_str().unwrap()]);
    assert_eq!(fs_err::read_to_string(&got).unwrap(), "tared\n");
    // A running container: what cp puts in, its process sees.
    r.k.ok(&["run", "-d", "--name", "live", "busybox", "sleep", "1000"]);
    std::os::unix::fs::chown(&src, Some(1234), Some(1234)).unwrap();
    r.k.ok(&["cp", src.to_str().unwrap(), "live:/tmp/in.txt"]);
    assert_eq!(
        r.k.ok(&["exec", "live", "cat", "/tmp/in.txt"]),
        "from host\n"
    );
    // A host file copied in belongs to root, as docker's; a tar stream keeps its owners.
    let owner = |path: &str| r.k.ok(&["exec", "live", "stat", "-c", "%u", path]);
    assert_eq!(owner("/tmp/in.txt"), "0\n");
    let mut child =
        r.k.command()
            .args(["cp", "-", "live:/tmp"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
    child.stdin.take().unwrap().write_all(&data).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(owner("/tmp/streamed.txt"), "1234\n");
    // Bad paths: docker's errors.
    let err =
        r.k.fails(&["cp", "files:/nope", host.path().to_str().unwrap()]);
    assert!(
        err.contains("Could not find the file /nope in container files"),
        "{err}"
    );
    let err = r.k.fails(&["cp", "files:/a", "live:/b"]);
    assert!(
        err.contains("copying between containers is not supported"),
        "{err}"
    );
    let err = r.k.fails(&["cp", "a", "b"]);
    assert!(
        err.contains("must specify at least one container source"),
        "{err}"
    );
}

#[test]
fn diff_lists_what_the_container_changed_in_docker_s_order() {
    let Some(r) = Runner::new() else { return };
    r.k.ok(&[
        "run",
        "--name",
        "d",
        "busybox",
        "sh",
        "-c",
        "mkdir /new && touch /new/f && rm /bin/ls && echo x > /etc/motd-x",
    ]);
    assert_eq!(
        r.k.ok(&["diff", "d"]),
        "C /bin\nD /bin/ls\nC /etc\nA /etc/motd-x\nA /new\nA /new/f\n"
    );
    r.k.ok(&["run", "--name", "clean", "busybox", "true"]);
    assert_eq!(r.k.ok(&["container", "diff", "clean"]), "");
    // While it runs: the mount points kiln made (/etc/hosts, /proc, …) are no change.
    r.k.ok(&[
        "run",
        "-d",
        "--name",
        "up",
        "busybox",
        "sh",
        "-c",
        "echo x > /etc/mine && touch /ready && exec sleep 1000",
    ]);
    r.until("the change is made", || {
        r.k.ok(&["diff", "up"]).contains("A /ready")
    });
    assert_eq!(r.k.ok(&["diff", "up"]), "C /etc\nA /etc/mine\nA /ready\n");
}

#[test]
fn export_writes_the_container_s_filesystem() {
    let Some(r) = Runner::new() else { return };
    r.k.ok(&[
        "run",
        "--name",
        "x",
        "busybox",
        "sh",
        "-c",
        "echo mine > /mine && rm /bin/ls",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.tar");
    r.k.ok(&["export", "-o", file.to_str().unwrap(), "x"]);
    let read = |bytes: &[u8]| -> Vec<String> {
        tar::Archive::new(bytes)
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    };
    let names = read(&fs_err::read(&file).unwrap());
    assert!(names.iter().any(|n| n == "mine"), "{names:?}");
    assert!(names.iter().any(|n| n == "bin/busybox"), "{names:?}");
    assert!(
        !names.iter().any(|n| n == "bin/ls"),
        "deleted files are not exported"
    );
    let out = r.k.run(&["export", "x"]);
    assert!(out.status.success());
    assert_eq!(read(&out.stdout), names);
}

#[test]
fn top_shows_the_container_s_processes_in_ps_columns() {
    let Some(r) = Runner::new() else { return };
    r.k.ok(&["run", "-d", "--name", "t", "busybox", "sleep", "1000"]);
    let pid = r.inspect_f("t", "{{.State.Pid}}");
    let out = r.k.ok(&["top", "t"]);
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 1, "{out}");
    assert_eq!(rows[0].split_whitespace().nth(1), Some(pid.as_str()));
    assert!(rows[0].ends_with("sleep 1000"), "{out}");
    let out = r.k.ok(&["top", "t", "-o", "pid,comm"]);
    assert_eq!(
        out.lines()
            .nth(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec![pid.as_str(), "sleep"])
    );
    r.k.ok(&["stop", "-t", "0", "t"]);
    let err = r.k.fails(&["top", "t"]);
    assert!(err.contains("is not running"), "{err}");
}

#[test]
fn stats_no_stream_reports_the_cgroup_s_usage() {
    let Some(r) = Runner::new() else { return };
    r.k.ok(&[
        "run",
        "-d",
        "--name",
        "s",
        "-m",
        "64m",
        "busybox",
        "sh",
        "-c",
        "sleep 1000 & wait",
    ]);
    r.until("both processes run", || {
        r.k.ok(&["top", "s"]).lines().count() == 3
    });
    let out = r.k.ok(&["stats", "--no-stream", "s"]);
    let mut lines = out.lines();
    let header = lines.next().unwrap();
    for col in [
        "CONTAINER ID",
        "NAME",
        "CPU %",
        "MEM USAGE / LIMIT",
        "MEM %",
        "NET I/O",
        "BLOCK I/O",
        "PIDS",
    ] {
        assert!(header.contains(col), "{header}");
    }
    let row = lines.next().unwrap();
    assert!(row.contains(" s "), "{row}");
    let out = r.k.ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}}|{{.MemUsage}}|{{.PIDs}}|{{.CPUPerc}}",
        "s",
    ]);
    let fields: Vec<&str> = out.trim().split('|').collect();
    assert_eq!(fields[0], "s");
    assert!(fields[1].ends_with(" / 64MiB"), "{out}");
    assert!(
        !fields[1].starts_with("0B "),
        "some memory is in use: {out}"
    );
    assert_eq!(fields[2], "2");
    assert!(fields[3].ends_with('%'), "{out}");
}

#[test]
fn rename_moves_the_name_and_refuses_a_taken_one() {
    let Some(r) = Runner::new() else { return };
    let id = r.k.ok(&["create", "--name", "old", "busybox", "true"]);
    r.k.ok(&["create", "--name", "taken", "busybox", "true"]);
    r.k.ok(&["rename", "old", "new"]);
    assert_eq!(
        r.inspect_f("new", "{{.Id}} {{.Name}}"),
        format!("{} /new", id.trim())
    );
    assert!(r.k.run(&["inspect", "old"]).status.code() != Some(0));
    let out = r.k.run(&["rename", "new", "taken"]);
    assert_eq!(code(&out), Some(1));
    let taken = r.inspect_f("taken", "{{.Id}}");
    assert!(
        text(&out.stderr).contains(&format!(
            "Conflict. The container name \"/taken\" is already in use by container \"{taken}\". You have to remove (or rename) that container to be able to reuse that name."
        )),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("failed to rename container named new"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(r.inspect_f("new", "{{.Name}}"), "/new");
    r.k.ok(&["container", "rename", "new", "newer"]);
    r.k.ok(&["start", "-a", "newer"]);
}

/// Whether container `id`'s processes are frozen, from its cgroup.
fn frozen(id: &str) -> bool {
    let v1 = format!("/sys/fs/cgroup/freezer/kiln/{id}/ctr/freezer.state");
    if let Ok(state) = fs_err::read_to_string(&v1) {
        return state.trim() == "FROZEN";
    }
    let v2 = format!("/sys/fs/cgroup/kiln/{id}/ctr/cgroup.freeze");
    fs_err::read_to_string(v2)
        .map(|s| s.trim() == "1")
        .unwrap_or(false)
}

#[test]
fn pause_freezes_and_unpause_thaws() {
    let Some(r) = Runner::new() else { return };
    let id =
        r.k.ok(&["run", "-d", "--name", "p", "busybox", "sleep", "1000"]);
    let id = id.trim();
    assert_eq!(r.k.ok(&["pause", "p"]).trim(), "p");
    assert!(frozen(id));
    assert!(r.status("p").ends_with(" (Paused)"), "{}", r.status("p"));
    assert!(r.status("p").starts_with("Up "), "{}", r.status("p"));
    assert_eq!(
        r.inspect_f("p", "{{.State.Status}} {{.State.Paused}}"),
        "paused true"
    );
    assert!(r.k.fails(&["pause", "p"]).contains("is already paused"));
    r.k.ok(&["unpause", "p"]);
    assert!(!frozen(id));
    assert!(!r.status("p").contains("Paused"), "{}", r.status("p"));
    assert_eq!(r.inspect_f("p", "{{.State.Status}}"), "running");
    assert!(r.k.fails(&["unpause", "p"]).contains("is not paused"));
    // A paused container still stops.
    r.k.ok(&["pause", "p"]);
    r.k.ok(&["stop", "-t", "1", "p"]);
    assert!(
        r.status("p").starts_with("Exited (137) "),
        "{}",
        r.status("p")
    );
    assert!(r.k.fails(&["pause", "p"]).contains("is not running"));
}

#[test]
fn restart_runs_the_container_again() {
    let Some(r) = Runner::new() else { return };
    r.k.ok(&[
        "run",
        "-d",
        "--name",
        "rs",
        "busybox",
        "sh",
        "-c",
        "echo start; exec sleep 1000",
    ]);
    r.until("first start logged", || {
        r.k.ok(&["logs", "rs"]) == "start\n"
    });
    let first = r.inspect_f("rs", "{{.State.Pid}}");
    assert_eq!(r.k.ok(&["restart", "-t", "0", "rs"]).trim(), "rs");
    r.until("second start logged", || {
        r.k.ok(&["logs", "rs"]) == "start\nstart\n"
    });
    assert_eq!(r.inspect_f("rs", "{{.State.Status}}"), "running");
    assert_ne!(r.inspect_f("rs", "{{.State.Pid}}"), first);
    // A stopped one just starts.
    r.k.ok(&["stop", "-t", "0", "rs"]);
    r.k.ok(&["container", "restart", "rs"]);
    assert_eq!(r.inspect_f("rs", "{{.State.Status}}"), "running");
}
