//! docker's CLI contract for containers: exit statuses, signals, `--rm` on every path.

use crate::support::{Kiln, Runner, text};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

impl Runner {
    /// Waits until `ps -a` lists no container.
    fn wait_none(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.ids().is_empty() {
            assert!(
                Instant::now() < deadline,
                "still there: {}",
                self.k.ok(&["ps", "-a"])
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

#[test]
fn kiln_own_errors_exit_125_and_change_nothing() {
    let Some(r) = Runner::new() else { return };
    // A flag run does not have.
    let out = r.k.run(&["run", "--no-such-flag", "busybox", "true"]);
    assert_eq!(code(&out), Some(125), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--no-such-flag"));
    // An image the store does not have.
    let out = r.k.run(&["run", "--rm", "nosuchimage:1", "true"]);
    assert_eq!(code(&out), Some(125), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("unable to find image 'nosuchimage:1'"),
        "{}",
        text(&out.stderr)
    );
    assert!(r.ids().is_empty());
    // A name in use: the first container stays, no second one appears.
    r.k.ok(&["run", "--name", "taken", "busybox", "true"]);
    let out = r.k.run(&["run", "--name", "taken", "busybox", "true"]);
    assert_eq!(code(&out), Some(125), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("taken"), "{}", text(&out.stderr));
    assert_eq!(r.ids().len(), 1);
    // -d fails the same way, before anything starts.
    let out =
        r.k.run(&["run", "-d", "--name", "taken", "busybox", "true"]);
    assert_eq!(code(&out), Some(125), "{}", text(&out.stderr));
    assert_eq!(r.ids().len(), 1);
    // The container's side: a command that is not there is 127, one that cannot run 126.
    let out = r.k.run(&["run", "--rm", "busybox", "/no/such/command"]);
    assert_eq!(code(&out), Some(127), "{}", text(&out.stderr));
    let out = r.k.run(&["run", "--rm", "busybox", "/etc"]);
    assert_eq!(code(&out), Some(126), "{}", text(&out.stderr));
    // The container's own status passes through, even 125.
    let out = r.k.run(&["run", "--rm", "busybox", "sh", "-c", "exit 125"]);
    assert_eq!(code(&out), Some(125));
    let out = r.k.run(&["run", "--rm", "busybox", "sh", "-c", "exit 1"]);
    assert_eq!(code(&out), Some(1));
    // Other commands keep status 1 for their errors, and clap's 2 for bad flags.
    let out = r.k.run(&["logs", "nosuch"]);
    assert_eq!(code(&out), Some(1), "{}", text(&out.stderr));
    let out = r.k.run(&["images", "--no-such-flag"]);
    assert_eq!(code(&out), Some(2), "{}", text(&out.stderr));
}

/// `kiln run --rm` in the foreground with a shell that traps `sig`; the signal is sent to
/// kiln itself, which must pass it on and still remove the container.
fn signal_reaches_the_container(r: &Runner, sig: &str, extra: &[&str]) -> Output {
    let name = format!("sig{}", sig.to_ascii_lowercase());
    let script = format!(
        "trap 'echo got {sig}; exit 7' {sig}; trap 'echo got TERM; exit 9' TERM; \
         echo ready; while true; do sleep 0.1; done"
    );
    let mut args = vec!["run", "--rm", "--name", &name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["busybox", "sh", "-c", &script]);
    let child =
        r.k.command()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kiln run");
    r.wait_log(&name, "ready\n");
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok);
    child.wait_with_output().expect("wait")
}

#[test]
fn every_signal_reaches_a_foreground_container_and_rm_holds() {
    let Some(r) = Runner::new() else { return };
    for sig in ["USR1", "USR2", "HUP", "QUIT", "INT"] {
        let out = signal_reaches_the_container(&r, sig, &[]);
        assert_eq!(
            code(&out),
            Some(7),
            "{sig}: kiln must outlive it: {:?} {}",
            out.status,
            text(&out.stderr)
        );
        assert_eq!(text(&out.stdout), format!("ready\ngot {sig}\n"));
        assert!(r.ids().is_empty(), "{sig}: --rm: {:?}", r.ids());
    }
}

#[test]
fn without_sig_proxy_kiln_keeps_signals_to_itself() {
    let Some(r) = Runner::new() else { return };
    let name = "noproxy";
    let child =
        r.k.command()
            .args([
                "run",
                "--sig-proxy=false",
                "--name",
                name,
                "busybox",
                "sh",
                "-c",
                "trap 'echo got USR1' USR1; trap 'echo got TERM; exit 9' TERM; \
                 echo ready; while true; do sleep 0.1; done",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn kiln run");
    r.wait_log(name, "ready\n");
    let kill = |args: &[&str]| {
        assert!(
            std::process::Command::new("kill")
                .args(args)
                .status()
                .expect("kill")
                .success()
        )
    };
    kill(&["-USR1", &child.id().to_string()]);
    // Only `kiln kill` reaches it now; kiln itself still waits and reports the status.
    r.k.ok(&["kill", "-s", "TERM", name]);
    let out = child.wait_with_output().expect("wait");
    assert_eq!(code(&out), Some(9));
    assert_eq!(text(&out.stdout), "ready\ngot TERM\n");
}

#[test]
fn detached_rm_removes_the_container_once_it_exits() {
    let Some(r) = Runner::new() else { return };
    let id =
        r.k.ok(&["run", "-d", "--rm", "busybox", "sh", "-c", "exit 3"]);
    assert_eq!(id.trim().len(), 64, "{id}");
    r.wait_none();
    // Stopped or killed, the same.
    r.k.ok(&[
        "run", "-d", "--rm", "--name", "stopme", "busybox", "sleep", "100",
    ]);
    r.k.ok(&["stop", "-t", "0", "stopme"]);
    r.wait_none();
    // Without --rm it stays, as docker's does.
    r.k.ok(&["run", "-d", "--name", "stays", "busybox", "true"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !r.k.ok(&["ps", "-a"]).contains("Exited (0) ") {
        assert!(Instant::now() < deadline, "{}", r.k.ok(&["ps", "-a"]));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(r.ids().len(), 1);
}

#[test]
fn ps_inspect_and_rm_speak_docker_s_format() {
    let Some(r) = Runner::new() else { return };
    let out =
        r.k.run(&["run", "--name", "three", "busybox", "sh", "-c", "exit 3"]);
    assert_eq!(code(&out), Some(3));
    r.k.ok(&[
        "run",
        "-d",
        "--name",
        "up",
        "-v",
        "/tmp:/hosttmp:ro",
        "busybox",
        "sleep",
        "100",
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !r.k.ok(&["ps"]).contains(" up") {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    // The default table: docker's columns, relative times.
    let ps = r.k.ok(&["ps", "-a"]);
    let mut lines = ps.lines();
    let header = lines.next().unwrap();
    let cols: Vec<&str> = header
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        cols,
        [
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "CREATED",
            "STATUS",
            "PORTS",
            "NAMES"
        ],
        "{ps}"
    );
    let up = ps.lines().find(|l| l.ends_with(" up")).expect("up listed");
    assert!(up.contains(" ago ") && up.contains(" Up "), "{ps}");
    let three = ps
        .lines()
        .find(|l| l.ends_with(" three"))
        .expect("three listed");
    assert!(
        three.contains("Exited (3) ") && three.contains(" ago"),
        "{ps}"
    );
    // Without -a only the running one.
    assert_eq!(r.k.ok(&["ps", "--format", "{{.Names}}"]), "up\n");
    // --format, json, table, -q, filters.
    let line = r.k.ok(&[
        "ps",
        "-a",
        "-f",
        "name=thr",
        "--format",
        "{{.Names}} {{.State}}",
    ]);
    assert_eq!(line, "three exited\n");
    let doc: serde_json::Value =
        serde_json::from_str(&r.k.ok(&["ps", "--format", "{{json .}}"])).expect("json");
    assert_eq!(doc["Names"], "up");
    assert_eq!(doc["State"], "running");
    assert_eq!(doc["ID"].as_str().unwrap().len(), 12);
    let table =
        r.k.ok(&["ps", "-a", "--format", "table {{.Names}}\\t{{.State}}"]);
    assert!(table.starts_with("NAMES     STATE\n"), "{table:?}");
    assert_eq!(
        r.k.ok(&[
            "ps",
            "-f",
            "status=exited",
            "-f",
            "exited=3",
            "--format",
            "{{.Names}}"
        ]),
        "three\n"
    );
    assert_eq!(r.k.ok(&["ps", "-aq"]).lines().count(), 2);
    let err = r.k.fails(&["ps", "-f", "colour=red"]);
    assert!(err.contains("invalid filter 'colour'"), "{err}");
    let err = r.k.fails(&["ps", "--format", "{{.ID"]);
    assert!(err.contains("unclosed"), "{err}");
    // inspect -f with docker's field names.
    assert_eq!(
        r.k.ok(&[
            "inspect",
            "-f",
            "{{.State.ExitCode}} {{.State.Status}}",
            "three",
            "up"
        ]),
        "3 exited\n0 running\n"
    );
    let mounts = r.k.ok(&["inspect", "--format", "{{json .Mounts}}", "up"]);
    let mounts: serde_json::Value = serde_json::from_str(&mounts).expect("json");
    assert_eq!(mounts[0]["Destination"], "/hosttmp");
    assert_eq!(mounts[0]["RW"], false);
    assert_eq!(
        r.k.ok(&[
            "inspect",
            "-f",
            "{{.HostConfig.ReadonlyRootfs}} {{.Config.Image}}",
            "up"
        ]),
        "false busybox\n"
    );
    // rm goes on past a name it does not know, and says so.
    let out = r.k.run(&["rm", "nosuch", "three"]);
    assert_eq!(code(&out), Some(1));
    assert_eq!(text(&out.stdout), "three\n");
    assert_eq!(
        text(&out.stderr).trim(),
        "error: no such container: nosuch",
        "one line, no repeats"
    );
    assert_eq!(r.ids().len(), 1);
}

#[test]
fn images_take_a_reference_filters_and_format() {
    let k = Kiln::with_busybox();
    k.ok(&["tag", "busybox", "kiln/app:v1"]);
    let all = k.ok(&["images"]);
    let header: Vec<&str> = all
        .lines()
        .next()
        .unwrap()
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        header,
        ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"],
        "{all}"
    );
    assert!(all.contains(" ago "), "relative CREATED: {all}");
    let only = k.ok(&["images", "busybox", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(only, "busybox:latest\n");
    let globbed = k.ok(&[
        "images",
        "-a",
        "-f",
        "reference=kiln/*:v*",
        "--format",
        "{{.Repository}}",
    ]);
    assert_eq!(globbed, "kiln/app\n");
    assert_eq!(k.ok(&["images", "-q", "nosuch"]), "");
    let err = k.fails(&["images", "-f", "dangling=maybe"]);
    assert!(err.contains("invalid filter 'dangling=maybe'"), "{err}");
}
