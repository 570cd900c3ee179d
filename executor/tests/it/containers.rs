//! Detached containers over a real overlayfs: start, ps, logs, exec, stop, kill, rm, inspect.

use crate::support::{World, host_pids_with};
use kiln_executor::{
    Container, ContainerConfig, Containers, Error, Output, OutputChunk, ProcessPlan, Status,
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
    assert!(is_mounted(&rootfs));
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
