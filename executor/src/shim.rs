//! The supervisor of a detached container (like podman's conmon): `kiln __kiln-shim DIR RUNTIME`.

use crate::containers::now;
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
                state.restarting = false;
                let _ = container.write_state(&state);
            }
            125
        }
    };
    // `run -d --rm`: the shim is the only one there when the container exits.
    if container.config().auto_remove {
        // `wait` of a removed container still gets its status.
        container.record_last_exit(code);
    }
    if container.config().auto_remove
        && let Err(e) = container.remove(true)
    {
        let _ = writeln!(std::io::stderr(), "kiln shim: removing the container: {e}");
    }
    code
}

/// How the process of one run ended.
struct RunEnd {
    code: i32,
    oom_killed: bool,
    message: Option<String>,
}

/// Runs the container (again and again under its `--restart` policy) and records how it
/// ended; its rootfs is unmounted and its bundle removed once no run follows.
fn supervise(container: &Container) -> Result<i32> {
    let result = supervise_restarts(container);
    if result.is_err() {
        release(container);
    }
    result
}

/// The cgroup, rootfs mount and bundle of the last run. The bundle goes last: while it is
/// there, a reaper knows the mount is ours to undo.
fn release(container: &Container) {
    crate::cgroup::remove(container.id());
    container.clear_paused();
    if let Err(e) = container.unmount_rootfs() {
        tracing::warn!(error = %e, "unmounting the rootfs");
    }
    let _ = crate::cleanup::remove_bundle(&container.store().bundle(container.id()));
}

/// docker's restart manager: a policy that applies starts the process again after a delay
/// that doubles from 100 ms (at most a minute, back to 100 ms after a run of 10 s or more);
/// `stop`/`kill` (the `stopped` marker) end it, in a run or while waiting. The state says
/// `restarting` while waiting, with the last exit code and time.
fn supervise_restarts(container: &Container) -> Result<i32> {
    const FIRST_DELAY: Duration = Duration::from_millis(100);
    const MAX_DELAY: Duration = Duration::from_secs(60);
    let policy = container.config().restart;
    let mut delay = FIRST_DELAY;
    loop {
        let began = Instant::now();
        let end = run_once(container)?;
        let mut state = container.state()?;
        state.status = Status::Exited;
        state.pid = None;
        state.finished_at = Some(now());
        state.exit_code = Some(end.code);
        state.oom_killed = end.oom_killed;
        if let Some(msg) = &end.message
            && state.started_at.is_none()
        {
            state.error = Some(msg.clone());
        }
        let restart = state.started_at.is_some()
            && policy.should_restart(end.code, state.restart_count, container.manually_stopped());
        if !restart {
            release(container);
            state.restarting = false;
            container.write_state(&state)?;
            return Ok(end.code);
        }
        crate::cgroup::remove(container.id());
        container.clear_paused();
        if began.elapsed() >= Duration::from_secs(10) {
            delay = FIRST_DELAY;
        }
        state.restarting = true;
        container.write_state(&state)?;
        let until = Instant::now() + delay;
        while Instant::now() < until && !container.manually_stopped() {
            std::thread::sleep(Duration::from_millis(10).min(until - Instant::now()));
        }
        if container.manually_stopped() {
            release(container);
            let mut state = container.state()?;
            state.restarting = false;
            container.write_state(&state)?;
            return Ok(end.code);
        }
        delay = (delay * 2).min(MAX_DELAY);
        // Still `restarting` until the next run is up (or ended), never a moment "exited".
        let mut state = container.state()?;
        state.restart_count += 1;
        container.write_state(&state)?;
    }
}

/// One run of the container's process: bundle, `runc run` with stdio on the log, the pid in
/// the state once it runs. Leaves the rootfs mounted and the bundle in place.
fn run_once(container: &Container) -> Result<RunEnd> {
    let store = container.store();
    let id = container.id().to_owned();
    let bundle: PathBuf = store.bundle(&id);
    let root = store.runtime_root();
    fs_err::create_dir_all(&root)?;
    let mut plan = container.config().plan.clone();
    // Nobody reads a terminal of a detached container; its output goes to the log, and with
    // `-i` its stdin is a FIFO that `attach` writes to.
    let stdin = if plan.stdin {
        Stdio::from(open_stdin_fifo(&container.stdin_fifo())?)
    } else {
        Stdio::null()
    };
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
        .stdin(stdin)
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
            // A short process may end before the first look: the pid file says it started,
            // and its time is when (without it the runtime failed to start the process).
            if let Ok(t) = fs_err::metadata(&pid_file).and_then(|m| m.modified()) {
                let t: chrono::DateTime<chrono::Utc> = t.into();
                state.started_at = Some(t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
                state.error = None;
                container.write_state(&state)?;
            }
            break status;
        }
        if let Ok(pid) = fs_err::read_to_string(&pid_file)
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            state.status = Status::Running;
            state.pid = Some(pid);
            state.started_at = Some(now());
            state.error = None;
            state.restarting = false;
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
    )?;
    if let Some(msg) = &outcome.message {
        let _ = lock(&log).write(LogStream::Stderr, format!("{msg}\n").as_bytes());
    }
    Ok(RunEnd {
        code: outcome.status.code,
        oom_killed: outcome.status.oom_killed,
        message: outcome.message,
    })
}

/// Creates (once) and opens the stdin FIFO for reading and writing: the shim's own writer
/// keeps the process from seeing an end of input between two `attach`es.
fn open_stdin_fifo(path: &Path) -> Result<std::fs::File> {
    match rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    ) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(std::io::Error::from(e).into()),
    }
    Ok(fs_err::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?
        .into_parts()
        .0)
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
