//! Attached runs of stored containers: `kiln run` in the foreground (the container is kept in
//! the [`Containers`](crate::Containers) store, as docker keeps it) and `kiln exec` with its own
//! environment, working directory and user.
//!
//! A foreground container is supervised by the `kiln` process itself instead of a shim: it
//! records `running` with the pid once the runtime has written it, streams the output to the
//! caller and to the container's log, and records the exit (code, OOM kill, time). Should that
//! process be killed, [`Container::state`] reports the container as exited (code 255), exactly as
//! for a vanished shim.

use crate::containers::now;
use crate::containers::{Container, ContainerState, Status, identity};
use crate::logfile::{LogStream, LogWriter};
use crate::rootfs::StubLease;
use crate::runtime::{
    ExitStatus, Output, RUNTIME_LOG, Sink, Stream, drive, interpret, prepare_bundle,
};
use crate::user::resolve_user;
use crate::{Error, Result};
use oci_spec::runtime::{Process, Spec, UserBuilder};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// How `kiln exec` runs its process, besides the arguments: each field left empty keeps the
/// container's own setting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOptions {
    /// `K=V` entries added to (or replacing those of) the container's environment; a bare `K`
    /// is taken from the caller's environment, and skipped when unset there.
    pub env: Vec<String>,
    /// Working directory (absolute).
    pub cwd: Option<String>,
    /// `name|uid[:group|gid]`, resolved against the container's `/etc/passwd` and `/etc/group`.
    pub user: Option<String>,
    /// Allocate a terminal.
    pub tty: bool,
    /// Keep stdin open (`-i`): the caller's stdin reaches the process.
    pub stdin: bool,
    /// Where the runtime writes the process's host pid (to kill it: a health check's timeout).
    pub pid_file: Option<PathBuf>,
}

/// Sets `K=V` in an environment list, replacing an earlier `K`.
fn set_env(env: &mut Vec<String>, entry: String) {
    let key = entry.split_once('=').map_or(entry.as_str(), |(k, _)| k);
    let key = format!("{key}=");
    env.retain(|e| !e.starts_with(&key));
    env.push(entry);
}

/// The process `runc exec --process` runs: the container's own (capabilities, rlimits,
/// no_new_privs, AppArmor...) with the arguments and the options applied.
pub fn exec_process(
    base: &Process,
    rootfs: &Path,
    args: &[String],
    opts: &ExecOptions,
) -> Result<Process> {
    let mut p = base.clone();
    p.set_args(Some(args.to_vec()));
    p.set_terminal(Some(opts.tty));
    p.set_console_size(None);
    let mut env = p.env().clone().unwrap_or_default();
    if let Some(spec) = &opts.user {
        let user = resolve_user(rootfs, spec)?;
        p.set_user(
            UserBuilder::default()
                .uid(user.uid)
                .gid(user.gid)
                .additional_gids(user.additional_gids.clone())
                .build()?,
        );
        set_env(&mut env, format!("HOME={}", user.home));
    }
    for e in &opts.env {
        if e.contains('=') {
            if e.starts_with('=') {
                return Err(Error::InvalidPlan {
                    reason: format!("invalid environment variable: {e}"),
                });
            }
            set_env(&mut env, e.clone());
        } else if let Ok(v) = std::env::var(e) {
            set_env(&mut env, format!("{e}={v}"));
        }
    }
    if opts.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".to_owned());
    }
    p.set_env(Some(env));
    if let Some(cwd) = &opts.cwd {
        if !cwd.starts_with('/') {
            return Err(Error::InvalidPlan {
                reason: format!("the working directory {cwd:?} is not absolute"),
            });
        }
        p.set_cwd(PathBuf::from(cwd));
    }
    Ok(p)
}

/// Copies one output stream of the container to the sink (the caller) and the log.
async fn tee(
    reader: Option<impl AsyncRead + Unpin>,
    stream: Stream,
    sink: &Sink,
    inherit: bool,
    log: &Mutex<LogWriter>,
) -> Result<()> {
    let Some(mut reader) = reader else {
        return Ok(());
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let data = &buf[..n];
        let to = match stream {
            Stream::Stdout => LogStream::Stdout,
            Stream::Stderr => LogStream::Stderr,
        };
        log.lock()
            .unwrap_or_else(|e| e.into_inner())
            .write(to, data)?;
        if inherit {
            // The reader of our stdout may be gone (`kiln run ... | head`): the container
            // still runs to its end, as docker's does.
            let _ = match stream {
                Stream::Stdout => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(data).and_then(|()| out.flush())
                }
                Stream::Stderr => std::io::stderr().write_all(data),
            };
        } else {
            sink.emit(stream, data)?;
        }
    }
}

/// Removes the runtime state, cgroup and bundle of an attached run, whether it finished or its
/// future was dropped.
struct AttachCleanup {
    container: Container,
    bundle: PathBuf,
    stubs: Option<StubLease>,
    finished: bool,
}

impl Drop for AttachCleanup {
    fn drop(&mut self) {
        let store = self.container.store();
        if !self.finished {
            tracing::debug!(id = %self.container.id(), "attached run cancelled: deleting container");
            if let Ok(rt) = store.runtime() {
                rt.force_delete(&store.runtime_root(), self.container.id());
            }
            if let Ok(mut state) = self.container.state()
                && state.status != Status::Exited
            {
                state.status = Status::Exited;
                state.pid = None;
                state.exit_code = Some(state.exit_code.unwrap_or(137));
                state.finished_at = Some(now());
                let _ = self.container.write_state(&state);
            }
        }
        crate::cgroup::remove(self.container.id());
        tracing::trace!("cgroups removed");
        // The stubs go first: they live in the rootfs.
        self.stubs.take();
        if let Err(e) = self.container.unmount_rootfs() {
            tracing::warn!(error = %e, "unmounting the rootfs");
        }
        tracing::trace!("rootfs unmounted");
        if self.bundle.exists()
            && let Err(e) = crate::cleanup::remove_bundle(&self.bundle)
        {
            tracing::warn!(error = %e, "removing bundle");
        }
    }
}

impl Container {
    /// Runs a created container in the foreground of this process (`kiln run` without `-d`):
    /// the rootfs must be mounted at [`Container::rootfs_dir`]. The state goes `created` →
    /// `running` (with the pid) → `exited` (code, OOM kill, finish time).
    ///
    /// With [`Output::Inherit`], stdout and stderr are copied to ours and to the container's
    /// log; with a terminal (`plan.tty`, ours being one) the terminal's output is (stdin and
    /// window size go straight to the runtime). Every signal sent to us (but CHLD, PIPE, WINCH and job control)
    /// reaches the container's PID 1 unless `sig_proxy` is off. A command that
    /// cannot be found or executed ends with docker's 127/126 and message, also in the log.
    /// When it ends (or the future is dropped, which kills the container), the rootfs is
    /// unmounted; the writable layer stays until [`Container::remove`].
    pub async fn run_attached(&self, output: Output) -> Result<ExitStatus> {
        let state = self.state()?;
        if state.status != Status::Created {
            return Err(Error::StartFailed {
                id: self.id().to_owned(),
                message: "container was already started".to_owned(),
            });
        }
        let store = self.store();
        let runtime = store.runtime()?.clone();
        let root = store.runtime_root();
        fs_err::create_dir_all(&root)?;
        let bundle = store.bundle(self.id());
        let mut guard = AttachCleanup {
            container: self.clone(),
            bundle: bundle.clone(),
            stubs: None,
            finished: false,
        };
        let plan = &self.config().plan;
        let prepared = prepare_bundle(&self.rootfs_dir(), plan, &bundle);
        let (watch, stubs) = match prepared {
            Ok(p) => p,
            Err(e) => {
                self.record_failure(state, &e)?;
                guard.finished = true;
                return Err(e);
            }
        };
        guard.stubs = Some(stubs);
        tracing::debug!("bundle prepared");
        let mut state = state;
        state.shim = identity(rustix::process::getpid().as_raw_nonzero().get());
        self.write_state(&state)?;

        let log = Mutex::new(LogWriter::open(&self.log_path())?);
        let pid_file = bundle.join("pid");
        let cmd = runtime.run_command(&root, &bundle, self.id(), Some(&pid_file));
        let inherit = matches!(output, Output::Inherit);
        let sink = Sink::new(&output, None)?;
        // With a terminal, runc copies the pty to its stdout and takes the host terminal (raw
        // mode, size) from its stderr: so stdout alone is piped, to be logged as well.
        let tty = inherit && plan.tty;
        let interactive = inherit && (plan.stdin || plan.tty);
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(true).stdout(Stdio::piped());
        cmd.stderr(if tty {
            Stdio::inherit()
        } else {
            Stdio::piped()
        });
        if interactive {
            cmd.stdin(Stdio::inherit());
        } else {
            cmd.stdin(Stdio::null());
            // Alone in its process group, the runtime gets ^C only through us: once.
            cmd.process_group(0);
        }
        let mut child = cmd.spawn().map_err(|source| Error::RuntimeSpawn {
            runtime: runtime.path().to_path_buf(),
            action: "run",
            source,
        })?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let wait = async {
            if inherit {
                crate::runtime::forward_signals(&mut child, interactive, self.config().sig_proxy)
                    .await
            } else {
                Ok(child.wait().await?)
            }
        };
        let health = crate::health::HealthMonitor::start(self);
        let (status, a, b) = tokio::join!(
            self.mark_running(wait, &pid_file, &mut state),
            tee(stdout, Stream::Stdout, &sink, inherit, &log),
            tee(stderr, Stream::Stderr, &sink, inherit, &log),
        );
        drop(health);
        a?;
        b?;
        let status = status?;
        tracing::debug!("runtime exited");
        let outcome = interpret(
            &runtime,
            "run",
            &bundle.join(RUNTIME_LOG),
            status,
            Some(&watch),
        );
        guard.finished = true;
        tracing::trace!("outcome read");
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                self.record_failure(state, &e)?;
                return Err(e);
            }
        };
        if let Some(msg) = &outcome.message {
            let line = format!("{msg}\n");
            log.lock()
                .unwrap_or_else(|e| e.into_inner())
                .write(LogStream::Stderr, line.as_bytes())?;
            sink.emit(Stream::Stderr, line.as_bytes())?;
        }
        state.status = Status::Exited;
        state.pid = None;
        state.exit_code = Some(outcome.status.code);
        state.oom_killed = outcome.status.oom_killed;
        state.finished_at = Some(now());
        if state.started_at.is_none() {
            state.error.clone_from(&outcome.message);
        }
        self.write_state(&state)?;
        drop(guard);
        tracing::debug!("cleaned up");
        Ok(outcome.status)
    }

    /// Awaits `run` while recording `running` with the pid as soon as the runtime has written
    /// its pid file.
    async fn mark_running(
        &self,
        run: impl std::future::Future<Output = Result<std::process::ExitStatus>>,
        pid_file: &Path,
        state: &mut ContainerState,
    ) -> Result<std::process::ExitStatus> {
        tokio::pin!(run);
        let mut marked = false;
        loop {
            tokio::select! {
                status = &mut run => {
                    // A short process may end before the first look: the pid file's time is
                    // when it started.
                    if !marked
                        && let Ok(meta) = fs_err::metadata(pid_file)
                        && let Ok(t) = meta.modified()
                    {
                        let t: chrono::DateTime<chrono::Utc> = t.into();
                        state.started_at =
                            Some(t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
                    }
                    return status;
                }
                () = tokio::time::sleep(Duration::from_millis(2)), if !marked => {
                    if let Ok(pid) = fs_err::read_to_string(pid_file)
                        && let Ok(pid) = pid.trim().parse::<i32>()
                    {
                        state.status = Status::Running;
                        state.pid = Some(pid);
                        state.started_at = Some(now());
                        self.write_state(state)?;
                        marked = true;
                    }
                }
            }
        }
    }

    fn record_failure(&self, mut state: ContainerState, e: &Error) -> Result<()> {
        state.status = Status::Exited;
        state.pid = None;
        state.exit_code = Some(state.exit_code.unwrap_or(125));
        state.error = Some(e.to_string());
        state.finished_at = Some(now());
        self.write_state(&state)
    }

    /// Runs `args` in the running container (`runc exec --process`): the container's process
    /// settings with `opts` applied. The exit status is the process's; a command that cannot be
    /// found ends with docker's 127 and message on stderr.
    pub async fn exec_with(
        &self,
        args: &[String],
        opts: &ExecOptions,
        output: Output,
    ) -> Result<ExitStatus> {
        if self.state()?.status != Status::Running {
            return Err(Error::NotRunning {
                id: self.id().to_owned(),
            });
        }
        if args.is_empty() {
            return Err(Error::InvalidPlan {
                reason: "no command to exec".to_owned(),
            });
        }
        let store = self.store();
        let runtime = store.runtime()?;
        let config = store.bundle(self.id()).join("config.json");
        let spec = Spec::load(&config).map_err(|e| Error::StartFailed {
            id: self.id().to_owned(),
            message: format!("reading {}: {e}", config.display()),
        })?;
        let base = spec.process().clone().unwrap_or_default();
        let process = exec_process(&base, &self.rootfs_dir(), args, opts)?;
        // Unique within this process too (a health check runs beside a foreground run).
        static EXECS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let me = format!(
            "{}-{}",
            rustix::process::getpid().as_raw_nonzero().get(),
            EXECS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let process_file = self.dir().join(format!("exec-{me}.json"));
        let log = self.dir().join(format!("exec-{me}.log"));
        let _ = fs_err::remove_file(&log);
        let data = serde_json::to_vec(&process).map_err(|source| Error::Json {
            path: process_file.clone(),
            source,
        })?;
        crate::bundle::write_atomic(&process_file, &data)?;
        let mut cmd = runtime.command(&store.runtime_root());
        cmd.arg("--log")
            .arg(&log)
            .args(["--log-format", "json", "exec", "--process"])
            .arg(&process_file);
        if let Some(pid_file) = &opts.pid_file {
            cmd.arg("--pid-file").arg(pid_file);
        }
        cmd.arg(self.id());
        let sink = Sink::new(&output, None)?;
        let status = drive(runtime, cmd, &output, opts.tty || opts.stdin, &sink).await;
        let outcome = status.and_then(|s| interpret(runtime, "exec", &log, s, None));
        let _ = fs_err::remove_file(&log);
        let _ = fs_err::remove_file(&process_file);
        let outcome = outcome?;
        if let Some(msg) = &outcome.message {
            sink.emit(Stream::Stderr, format!("{msg}\n").as_bytes())?;
        }
        Ok(outcome.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::ProcessBuilder;

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs_err::create_dir_all(dir.path().join("etc")).unwrap();
        fs_err::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
        )
        .unwrap();
        fs_err::write(
            dir.path().join("etc/group"),
            "root:x:0:\napp:x:1000:\nstaff:x:50:app\n",
        )
        .unwrap();
        dir
    }

    fn base() -> Process {
        ProcessBuilder::default()
            .args(vec!["sleep".to_owned()])
            .env(vec![
                "PATH=/bin".to_owned(),
                "HOME=/root".to_owned(),
                "A=1".to_owned(),
            ])
            .cwd("/")
            .build()
            .unwrap()
    }

    #[test]
    fn exec_process_applies_env_cwd_and_user() {
        let root = rootfs();
        let opts = ExecOptions {
            env: vec!["A=2".into(), "B=x=y".into()],
            cwd: Some("/tmp".into()),
            user: Some("app".into()),
            tty: false,
            stdin: false,
            pid_file: None,
        };
        let p = exec_process(&base(), root.path(), &["id".to_owned()], &opts).unwrap();
        assert_eq!(p.args().as_deref(), Some(&["id".to_owned()][..]));
        assert_eq!(
            p.env().as_deref().unwrap(),
            ["PATH=/bin", "HOME=/home/app", "A=2", "B=x=y"]
        );
        assert_eq!(p.cwd(), Path::new("/tmp"));
        assert_eq!(p.user().uid(), 1000);
        assert_eq!(p.user().gid(), 1000);
        assert_eq!(p.user().additional_gids().as_deref(), Some(&[1000, 50][..]));
        assert_eq!(p.terminal(), Some(false));
    }

    #[test]
    fn exec_process_keeps_the_container_settings_by_default() {
        let root = rootfs();
        let b = base();
        let p = exec_process(&b, root.path(), &["ls".to_owned()], &ExecOptions::default()).unwrap();
        assert_eq!(p.env(), b.env());
        assert_eq!(p.cwd(), b.cwd());
        assert_eq!(p.user(), b.user());
    }

    #[test]
    fn exec_process_errors() {
        let root = rootfs();
        let err = |opts: ExecOptions| {
            exec_process(&base(), root.path(), &["x".to_owned()], &opts)
                .unwrap_err()
                .to_string()
        };
        let e = err(ExecOptions {
            user: Some("nope".into()),
            ..Default::default()
        });
        assert!(e.contains("unable to find user nope"), "{e}");
        let e = err(ExecOptions {
            cwd: Some("rel".into()),
            ..Default::default()
        });
        assert!(e.contains("not absolute"), "{e}");
        let e = err(ExecOptions {
            env: vec!["=v".into()],
            ..Default::default()
        });
        assert!(e.contains("invalid environment variable"), "{e}");
    }
}
