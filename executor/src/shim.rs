//! The supervisor of a detached container (like podman's conmon): `kiln __kiln-shim DIR RUNTIME`.

use crate::containers::{Container, ContainerState, Status, identity};
use crate::logfile::{LogStream, LogWriter};
use crate::runtime::{RUNTIME_LOG, Runtime, interpret, prepare_bundle};
use crate::{Error, Result};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The hidden first argument that makes the `kiln` binary act as a shim.
pub const SHIM_ARG: &str = "__kiln-shim";

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Entry point of the shim; call it from `main` when `args[1] == SHIM_ARG` and exit with the
/// returned code. It detaches (setsid), runs the container in the foreground with its stdio on
/// the container's log, and records pid, exit code, OOM and times in the state file.
pub fn shim_main(args: Vec<String>) -> i32 {
    let (Some(dir), Some(runtime)) = (args.get(2), args.get(3)) else {
        let _ = writeln!(std::io::stderr(), "usage: {SHIM_ARG} CONTAINER_DIR RUNTIME");
        return 2;
    };
    // Leave the caller's session so its terminal and process group signals do not reach us.
    let _ = rustix::process::setsid();
    // Keep no directory of the caller busy (it may be unmounted while we run).
    let _ = std::env::set_current_dir("/");
    let container = match Container::from_dir(Path::new(dir), Runtime::from_path(runtime)) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "kiln shim: {e}");
            return 1;
        }
    };
    let code = match supervise(&container) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %e, "shim");
            if let Ok(mut state) = container.state() {
                state.status = Status::Exited;
                state.exit_code.get_or_insert(125);
                state.error = Some(e.to_string());
                state.finished_at = Some(now());
                state.pid = None;
                let _ = container.write_state(&state);
            }
            125
        }
    };
    // `run -d --rm`: the shim is the only one there when the container exits.
    if container.config().auto_remove
        && let Err(e) = container.remove(true)
    {
        let _ = writeln!(std::io::stderr(), "kiln shim: removing the container: {e}");
    }
    code
}

fn supervise(container: &Container) -> Result<i32> {
    let store = container.store();
    let id = container.id().to_owned();
    let bundle: PathBuf = store.bundle(&id);
    let root = store.runtime_root();
    fs_err::create_dir_all(&root)?;
    let mut plan = container.config().plan.clone();
    // Nobody reads a terminal of a detached container; its output goes to the log.
    plan.tty = false;
    plan.stdin = false;
    let rootfs = container.rootfs_dir();
    let (watch, _stubs) = prepare_bundle(&rootfs, &plan, &bundle)?;
    let mut state: ContainerState = container.state()?;
    state.shim = identity(rustix::process::getpid().as_raw_nonzero().get());
    container.write_state(&state)?;

    let log = Arc::new(Mutex::new(LogWriter::open(&container.log_path())?));
    let runtime = store_runtime(container)?;
    let pid_file = bundle.join("pid");
    let mut cmd = runtime.run_command(&root, &bundle, &id, Some(&pid_file));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::RuntimeSpawn {
            runtime: runtime.path().to_path_buf(),
            action: "run",
            source,
        })?;
    // stdout and stderr are kept apart in the log (`kiln logs` gives each its own stream).
    let copiers = [
        child
            .stdout
            .take()
            .map(|r| copy_to_log(r, LogStream::Stdout, &log)),
        child
            .stderr
            .take()
            .map(|r| copy_to_log(r, LogStream::Stderr, &log)),
    ];

    let health = crate::health::HealthMonitor::start(container);
    // Report "running" as soon as the runtime has written the pid file.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if let Ok(pid) = fs_err::read_to_string(&pid_file)
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            state.status = Status::Running;
            state.pid = Some(pid);
            state.started_at = Some(now());
            container.write_state(&state)?;
            break child.wait()?;
        }
        if Instant::now() > deadline {
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(2));
    };

    drop(health);
    // The container's processes are gone: its pipes end.
    for c in copiers.into_iter().flatten() {
        let _ = c.join();
    }
    let outcome = interpret(
        &runtime,
        "run",
        &bundle.join(RUNTIME_LOG),
        status,
        Some(&watch),
    );
    crate::cgroup::remove(&id);
    // The bundle goes last: while it is there, a reaper knows the mount is ours to undo.
    if let Err(e) = container.unmount_rootfs() {
        tracing::warn!(error = %e, "unmounting the rootfs");
    }
    let _ = crate::cleanup::remove_bundle(&bundle);
    let mut state = container.state()?;
    state.status = Status::Exited;
    state.pid = None;
    state.finished_at = Some(now());
    match outcome {
        Ok(outcome) => {
            if let Some(msg) = outcome.message {
                let _ = lock(&log).write(LogStream::Stderr, format!("{msg}\n").as_bytes());
                if state.started_at.is_none() {
                    state.error = Some(msg);
                }
            }
            state.exit_code = Some(outcome.status.code);
            state.oom_killed = outcome.status.oom_killed;
            container.write_state(&state)?;
            Ok(outcome.status.code)
        }
        Err(e) => Err(e),
    }
}

fn lock(log: &Mutex<LogWriter>) -> std::sync::MutexGuard<'_, LogWriter> {
    log.lock().unwrap_or_else(|e| e.into_inner())
}

/// Copies one of the container's output pipes into the log, on a thread of its own.
fn copy_to_log(
    mut from: impl Read + Send + 'static,
    stream: LogStream,
    log: &Arc<Mutex<LogWriter>>,
) -> std::thread::JoinHandle<()> {
    let log = Arc::clone(log);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if let Err(e) = lock(&log).write(stream, &buf[..n]) {
                        tracing::warn!(error = %e, "writing the container log");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    })
}

fn store_runtime(container: &Container) -> Result<Runtime> {
    container
        .store()
        .runtime_for_shim()
        .ok_or_else(|| Error::RuntimeMissing {
            searched: "shim argument".to_owned(),
        })
}
