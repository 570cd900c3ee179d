//! Detached containers over a real overlayfs: start, ps, logs, exec, stop, kill, rm, inspect.

use crate::support::{World, host_pids_with};
use kiln_executor::{
    Container, ContainerConfig, Containers, Error, ExecOptions, Output, OutputChunk, ProcessPlan,
    Status,
};
use std::path::Path;
use std::time::{Duration, Instant};

fn store(w: &World) -> Containers {
    Containers::open(w.dir.path().join("containers"))
        .unwrap()
        .with_runtime(w.runtime.clone())
        .with_shim_exe(env!("CARGO_BIN_EXE_kiln-executor-helper"))
}

/// Mounts the container's overlay (busybox rootfs as the lower layer), as the lead's cli does.
fn mount_overlay(w: &World, c: &Container) {
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        w.rootfs().display(),
        c.upper_dir().display(),
        c.work_dir().display()
    );
    rustix::mount::mount(
        "overlay",
        c.rootfs_dir(),
        "overlay",
        rustix::mount::MountFlags::empty(),
        Some(std::ffi::CString::new(opts).unwrap().as_c_str()),
    )
    .expect("overlayfs mount");
}

fn create(w: &World, s: &Containers, name: &str, plan: ProcessPlan) -> Container {
    let c = s
        .create(ContainerConfig {
            name: Some(format!("{name}-{}", w.new_id())),
            image: "busybox".into(),
            plan,
            auto_remove: false,
            sig_proxy: true,
            image_id: None,
            restart: Default::default(),
            healthcheck: None,
        })
        .unwrap();
    mount_overlay(w, &c);
    c
}

fn is_mounted(path: &Path) -> bool {
    let mounts = fs_err::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_string_lossy();
    mounts.lines().any(|l| l.split(' ').nth(4) == Some(&*p))
}

fn wait_for_log(c: &Container, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut out = Vec::new();
        c.logs(false, &mut out).unwrap();
        let text = String::from_utf8_lossy(&out).into_owned();
        if text.contains(needle) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn exec_capture(c: &Container, args: &[&str]) -> (i32, String, String) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<OutputChunk>();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let status = c.exec(&args, false, Output::Channel(tx)).await.unwrap();
    let (mut out, mut err) = (String::new(), String::new());
    while let Ok(chunk) = rx.try_recv() {
        match chunk.stream {
            kiln_executor::Stream::Stdout => out.push_str(&String::from_utf8_lossy(&chunk.data)),
            kiln_executor::Stream::Stderr => err.push_str(&String::from_utf8_lossy(&chunk.data)),
        }
    }
    (status.code, out, err)
}

/// A PID 1 that forwards SIGTERM to its worker and exits with the worker's status.
const SERVER: &str = "echo started; echo data > /written; sleep 1000 & child=$!; \
    trap 'kill -TERM $child; wait $child; exit $?' TERM; wait $child";

#[tokio::test]
async fn detached_lifecycle() {
    let w = World::new();
    let s = store(&w);
    let mut plan = ProcessPlan::new(["/bin/sh", "-c", SERVER]);
    plan.env = vec!["MARK=detached".into()];
    let c = create(&w, &s, "life", plan);
    assert_eq!(c.state().unwrap().status, Status::Created);

    let state = c.start_detached().unwrap();
    assert_eq!(state.status, Status::Running);
    assert!(matches!(c.start_detached(), Err(Error::StartFailed { .. })));
    let pid = state.pid.unwrap();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    assert!(
        s.list(false).unwrap().iter().any(|x| x.id() == c.id()),
        "ps shows it"
    );
    assert_eq!(s.get(c.name()).unwrap().id(), c.id());
    assert!(wait_for_log(&c, "started").contains("started\n"));

    let doc = c.inspect().unwrap();
    assert_eq!(doc["State"]["Status"], "running");
    assert_eq!(doc["State"]["Pid"], pid);
    assert_ne!(doc["State"]["StartedAt"], "0001-01-01T00:00:00Z");

    // exec sees the container's environment and filesystem.
    let (code, out, _) = exec_capture(&c, &["/bin/sh", "-c", "echo $MARK; cat /written"]).await;
    assert_eq!((code, out.as_str()), (0, "detached\ndata\n"));
    let (code, _, _) = exec_capture(&c, &["/bin/sh", "-c", "exit 7"]).await;
    assert_eq!(code, 7);
    let (code, _, err) = exec_capture(&c, &["nope"]).await;
    assert_eq!(code, 127);
    assert!(
        err.contains(r#"exec: "nope": executable file not found in $PATH"#),
        "{err}"
    );
    // The writable layer is the overlay's upper directory.
    assert_eq!(
        fs_err::read_to_string(c.upper_dir().join("written")).unwrap(),
        "data\n"
    );

    let started = Instant::now();
    let state = c.stop(Duration::from_secs(10)).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped on SIGTERM, not the timeout"
    );
    assert_eq!(state.status, Status::Exited);
    assert_eq!(state.exit_code, Some(143));
    let doc = c.inspect().unwrap();
    assert_eq!(doc["State"]["Status"], "exited");
    assert_eq!(doc["State"]["ExitCode"], 143);
    assert_eq!(doc["State"]["OOMKilled"], false);
    assert_ne!(doc["State"]["FinishedAt"], "0001-01-01T00:00:00Z");
    assert!(!s.list(false).unwrap().iter().any(|x| x.id() == c.id()));
    assert!(
        s.list(true).unwrap().iter().any(|x| x.id() == c.id()),
        "ps -a shows it"
    );
    assert!(host_pids_with("sleep 1000").iter().all(|p| *p != pid));

    let mut out = Vec::new();
    c.logs(true, &mut out).unwrap();
    // sh reports the job it reaped ("Terminated") after the first line.
    assert!(String::from_utf8_lossy(&out).starts_with("started\n"));

    let rootfs = c.rootfs_dir();
    assert!(
        !is_mounted(&rootfs),
        "an exited container keeps only its writable layer"
    );
    assert!(c.upper_dir().join("written").exists());
    c.remove(false).unwrap();
    assert!(!is_mounted(&rootfs), "rm unmounts the rootfs");
    assert!(!rootfs.exists());
    assert!(matches!(s.get(c.id()), Err(Error::NoSuchContainer { .. })));
}

#[tokio::test]
async fn stop_sleep_as_pid1_needs_sigkill() {
    let w = World::new();
    let s = store(&w);
    let c = create(&w, &s, "sleeper", ProcessPlan::new(["sleep", "1000"]));
    c.start_detached().unwrap();
    let started = Instant::now();
    let state = c.stop(Duration::from_secs(1)).unwrap();
    // PID 1 without a handler ignores SIGTERM, as in Docker: killed after the timeout.
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(state.exit_code, Some(137));
    c.remove(false).unwrap();
}

#[tokio::test]
async fn detached_oom_is_recorded() {
    let w = World::new();
    let s = store(&w);
    let mut plan = ProcessPlan::new([
        "/bin/sh",
        "-c",
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a)",
    ]);
    plan.memory = Some(32 << 20);
    let c = create(&w, &s, "hog", plan);
    c.start_detached().unwrap();
    assert!(c.wait_exited(Duration::from_secs(30)).unwrap());
    let doc = c.inspect().unwrap();
    assert_eq!(doc["State"]["ExitCode"], 137);
    assert_eq!(doc["State"]["OOMKilled"], true);
    c.remove(false).unwrap();
}

#[tokio::test]
async fn kill_and_force_remove() {
    let w = World::new();
    let s = store(&w);
    let c = create(&w, &s, "victim", ProcessPlan::new(["sleep", "1001"]));
    c.start_detached().unwrap();
    assert!(matches!(c.remove(false), Err(Error::StillRunning { .. })));
    c.kill("KILL").unwrap();
    assert!(c.wait_exited(Duration::from_secs(10)).unwrap());
    assert_eq!(c.state().unwrap().exit_code, Some(137));
    assert!(matches!(c.kill("TERM"), Err(Error::NotRunning { .. })));

    let c2 = create(&w, &s, "forced", ProcessPlan::new(["sleep", "1002"]));
    c2.start_detached().unwrap();
    c2.remove(true).unwrap();
    assert!(host_pids_with("sleep 1002").is_empty());
    assert!(!c2.dir().exists());
    c.remove(false).unwrap();
}

#[tokio::test]
async fn start_failure_is_reported() {
    let w = World::new();
    let s = store(&w);
    let c = create(&w, &s, "broken", ProcessPlan::new(["nope"]));
    let err = c.start_detached().unwrap_err();
    assert!(
        err.to_string()
            .contains(r#"exec: "nope": executable file not found"#),
        "{err}"
    );
    assert_eq!(c.inspect().unwrap()["State"]["ExitCode"], 127);
    let mut user = ProcessPlan::new(["true"]);
    user.user = "ghost".into();
    let c2 = create(&w, &s, "nouser", user);
    let err = c2.start_detached().unwrap_err();
    assert!(
        err.to_string().contains("unable to find user ghost"),
        "{err}"
    );
    c.remove(false).unwrap();
    c2.remove(false).unwrap();
}

#[tokio::test]
async fn logs_follow_until_exit() {
    let w = World::new();
    let s = store(&w);
    let c = create(
        &w,
        &s,
        "chatty",
        ProcessPlan::new([
            "/bin/sh",
            "-c",
            "echo first; sleep 1; echo second >&2; exit 4",
        ]),
    );
    c.start_detached().unwrap();
    let mut out = Vec::new();
    c.logs(true, &mut out).unwrap();
    assert_eq!(String::from_utf8_lossy(&out), "first\nsecond\n");
    assert_eq!(c.state().unwrap().exit_code, Some(4));
    c.remove(false).unwrap();
}

/// Runs `c` attached with its output on a channel: (status, stdout, stderr).
async fn attached_capture(c: &Container) -> kiln_executor::Result<(i32, String, String)> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<OutputChunk>();
    let status = c.run_attached(Output::Channel(tx)).await?;
    let (mut out, mut err) = (String::new(), String::new());
    while let Ok(chunk) = rx.try_recv() {
        match chunk.stream {
            kiln_executor::Stream::Stdout => out.push_str(&String::from_utf8_lossy(&chunk.data)),
            kiln_executor::Stream::Stderr => err.push_str(&String::from_utf8_lossy(&chunk.data)),
        }
    }
    Ok((status.code, out, err))
}

#[tokio::test]
async fn attached_run_keeps_state_log_and_writable_layer() {
    let w = World::new();
    let s = store(&w);
    let c = create(
        &w,
        &s,
        "fg",
        ProcessPlan::new([
            "/bin/sh",
            "-c",
            "echo out; echo err >&2; echo kept > /kept; exit 3",
        ]),
    );
    let (code, out, err) = attached_capture(&c).await.unwrap();
    assert_eq!((code, out.as_str(), err.as_str()), (3, "out\n", "err\n"));
    let st = c.state().unwrap();
    assert_eq!(st.status, Status::Exited);
    assert_eq!(st.exit_code, Some(3));
    assert_eq!(st.pid, None);
    assert!(
        st.started_at.is_some() && st.finished_at.is_some(),
        "{st:?}"
    );
    assert!(st.started_at <= st.finished_at);
    let mut log = Vec::new();
    c.logs(false, &mut log).unwrap();
    let log = String::from_utf8_lossy(&log);
    assert!(log.contains("out\n") && log.contains("err\n"), "{log}");
    assert!(!is_mounted(&c.rootfs_dir()), "unmounted once exited");
    assert_eq!(
        fs_err::read_to_string(c.upper_dir().join("kept")).unwrap(),
        "kept\n"
    );
    let bundles = w.dir.path().join("containers/.bundles");
    assert!(
        !bundles.join(c.id()).exists(),
        "no bundle left behind after an attached run"
    );
    assert!(matches!(
        c.run_attached(Output::Channel(tokio::sync::mpsc::unbounded_channel().0))
            .await,
        Err(Error::StartFailed { .. })
    ));
    assert!(s.list(true).unwrap().iter().any(|x| x.id() == c.id()));
    c.remove(false).unwrap();
    assert!(!c.dir().exists());
}

#[tokio::test]
async fn attached_run_is_running_with_a_pid_until_killed() {
    let w = World::new();
    let s = store(&w);
    let c = create(&w, &s, "fgsleep", ProcessPlan::new(["sleep", "1003"]));
    let task = {
        let c = c.clone();
        tokio::spawn(async move { attached_capture(&c).await })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        let st = c.state().unwrap();
        if let Some(pid) = st.pid {
            assert_eq!(st.status, Status::Running);
            break pid;
        }
        assert!(Instant::now() < deadline, "never running: {st:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(host_pids_with("sleep 1003").contains(&pid));
    assert_eq!(c.inspect().unwrap()["State"]["Pid"], pid);
    assert!(s.list(false).unwrap().iter().any(|x| x.id() == c.id()));
    // Another process (`kiln kill`) reaches it through the shared runtime root.
    s.get(c.name()).unwrap().kill("KILL").unwrap();
    let (code, _, _) = task.await.unwrap().unwrap();
    assert_eq!(code, 137);
    assert_eq!(c.state().unwrap().exit_code, Some(137));
    assert!(host_pids_with("sleep 1003").is_empty());
    c.remove(false).unwrap();
}

#[tokio::test]
async fn attached_run_failures_are_recorded() {
    let w = World::new();
    let s = store(&w);
    let c = create(&w, &s, "fgnope", ProcessPlan::new(["nope"]));
    let (code, _, err) = attached_capture(&c).await.unwrap();
    assert_eq!(code, 127);
    assert!(
        err.contains(r#"exec: "nope": executable file not found in $PATH"#),
        "{err}"
    );
    assert_eq!(c.state().unwrap().exit_code, Some(127));
    let mut user = ProcessPlan::new(["true"]);
    user.user = "ghost".into();
    let c2 = create(&w, &s, "fgghost", user);
    let e = attached_capture(&c2).await.unwrap_err();
    assert!(e.to_string().contains("unable to find user ghost"), "{e}");
    let st = c2.state().unwrap();
    assert_eq!(st.status, Status::Exited);
    assert!(st.error.unwrap_or_default().contains("ghost"));
    assert!(!is_mounted(&c2.rootfs_dir()));
    c.remove(false).unwrap();
    c2.remove(false).unwrap();
}

#[tokio::test]
async fn exec_with_env_cwd_and_user() {
    let w = World::new();
    let s = store(&w);
    let mut plan = ProcessPlan::new(["sleep", "1004"]);
    plan.env = vec!["KEEP=container".into(), "OVER=old".into()];
    let c = create(&w, &s, "execopts", plan);
    c.start_detached().unwrap();
    let run = |opts: ExecOptions, script: &'static str| {
        let c = c.clone();
        async move {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<OutputChunk>();
            let args = vec!["/bin/sh".to_owned(), "-c".to_owned(), script.to_owned()];
            let status = c.exec_with(&args, &opts, Output::Channel(tx)).await;
            let mut out = String::new();
            while let Ok(chunk) = rx.try_recv() {
                out.push_str(&String::from_utf8_lossy(&chunk.data));
            }
            status.map(|s| (s.code, out))
        }
    };
    let (code, out) = run(
        ExecOptions {
            env: vec!["OVER=new".into(), "ADDED=1".into()],
            cwd: Some("/tmp".into()),
            user: Some("app".into()),
            tty: false,
            stdin: false,
            pid_file: None,
        },
        "echo $KEEP $OVER $ADDED; pwd; id -u; id -g; id -G; echo $HOME",
    )
    .await
    .unwrap();
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "container new 1\n/tmp\n1000\n1000\n1000 10\n/home/app\n"
    );
    let (_, out) = run(ExecOptions::default(), "id -u; pwd; echo $OVER")
        .await
        .unwrap();
    assert_eq!(out, "0\n/\nold\n", "defaults are the container's");
    let (_, out) = run(
        ExecOptions {
            user: Some("65534:10".into()),
            ..Default::default()
        },
        "id -u; id -g",
    )
    .await
    .unwrap();
    assert_eq!(out, "65534\n10\n");
    let e = run(
        ExecOptions {
            user: Some("nope".into()),
            ..Default::default()
        },
        "true",
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("unable to find user nope"), "{e}");
    c.remove(true).unwrap();
}

#[tokio::test]
async fn kill_racing_the_exit_is_not_an_error() {
    let w = World::new();
    let s = store(&w);
    for i in 0..5 {
        let c = create(&w, &s, &format!("race{i}"), ProcessPlan::new(["true"]));
        c.start_detached().unwrap();
        // Whether it still runs or has just ended, kill either works or says "not running".
        match c.kill("KILL") {
            Ok(()) | Err(Error::NotRunning { .. }) => {}
            Err(e) => panic!("kill racing the exit: {e}"),
        }
        c.remove(true).unwrap();
    }
}
