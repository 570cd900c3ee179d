//! The OCI runtime binary (runc) and foreground runs: RUN steps and `kiln run`.

use crate::bundle::{check_id, write_bundle};
use crate::cgroup::{self, CgroupVersion, OomWatch};
use crate::plan::ProcessPlan;
use crate::rootfs::{MountStubs, StubLease, mkdir_all_in_root};
use crate::spec::build_spec;
use crate::user::resolve_user;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc::UnboundedSender;

/// Environment variable naming the runtime binary when `--runtime` is not given.
pub const RUNTIME_ENV: &str = "KILN_RUNTIME";

/// An OCI runtime binary (runc by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    path: PathBuf,
}

/// What to run in the foreground.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// Container id: `[A-Za-z0-9][A-Za-z0-9_.-]*`, unique among live runs under `state_dir`.
    pub id: String,
    /// The prepared (mounted) root filesystem.
    pub rootfs: PathBuf,
    /// The process and its sandbox.
    pub plan: ProcessPlan,
    /// Where bundles and runtime state live, e.g. `<store>/executor`.
    pub state_dir: PathBuf,
    /// Keep the whole output here (with [`Output::Channel`]).
    pub log_path: Option<PathBuf>,
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A piece of output, delivered as it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputChunk {
    /// The stream.
    pub stream: Stream,
    /// The bytes, unclipped.
    pub data: Vec<u8>,
}

/// Where the container's stdio goes.
#[derive(Debug)]
pub enum Output {
    /// Our own stdio (`kiln run` in the foreground); the signals sent to us are forwarded to
    /// the container's PID 1, and `plan.tty` gives a real terminal. `log_path` is not used.
    Inherit,
    /// Streamed as chunks (RUN); stdin is empty.
    Channel(UnboundedSender<OutputChunk>),
}

/// How a container process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The process's exit code, or 128+signal when a signal killed it.
    pub code: i32,
    /// The signal, when the code says one killed the process.
    pub signal: Option<i32>,
    /// Whether the OOM killer ran in the container's cgroup.
    pub oom_killed: bool,
}

impl ExitStatus {
    /// An exit status from a raw code (as runc reports it: 128+N for signal N).
    pub fn from_code(code: i32, oom_killed: bool) -> Self {
        ExitStatus {
            code,
            signal: (129..=128 + 64).contains(&code).then(|| code - 128),
            oom_killed,
        }
    }

    /// True for exit code 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

/// Something that runs a [`ProcessPlan`] in a sandbox: [`Runtime`] (an OCI runtime binary) in
/// kiln; a fake in the solver's tests.
pub trait Sandbox: Send + Sync {
    /// Runs the request in the foreground; see [`Runtime::run`].
    fn run(
        &self,
        req: RunRequest,
        output: Output,
    ) -> impl std::future::Future<Output = Result<ExitStatus>> + Send;
}

impl Sandbox for Runtime {
    fn run(
        &self,
        req: RunRequest,
        output: Output,
    ) -> impl std::future::Future<Output = Result<ExitStatus>> + Send {
        Runtime::run(self, req, output)
    }
}

fn is_executable(path: &Path) -> bool {
    fs_err::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn search_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// The runtime's state root for runs under `state_dir` (`runc --root`).
pub fn runtime_root(state_dir: &Path) -> PathBuf {
    state_dir.join("runc")
}

/// The bundle directory of container `id` under `state_dir`.
pub fn bundle_dir(state_dir: &Path, id: &str) -> PathBuf {
    state_dir.join("bundles").join(id)
}

impl Runtime {
    /// Finds the runtime: `explicit` (`--runtime`), else `$KILN_RUNTIME`, else `runc` in `PATH`.
    /// A bare name (no `/`) is looked up in `PATH`.
    pub fn detect(explicit: Option<&Path>) -> Result<Runtime> {
        let from_env = std::env::var_os(RUNTIME_ENV).filter(|v| !v.is_empty());
        let (wanted, searched) = match (explicit, &from_env) {
            (Some(p), _) => (p.to_path_buf(), format!("--runtime {}", p.display())),
            (None, Some(v)) => (
                PathBuf::from(v),
                format!("{RUNTIME_ENV}={}", v.to_string_lossy()),
            ),
            (None, None) => (PathBuf::from("runc"), "runc in PATH".to_owned()),
        };
        let is_bare = wanted.components().count() == 1 && !wanted.is_absolute();
        let found = if is_bare {
            search_path(&wanted.to_string_lossy())
        } else if is_executable(&wanted) {
            Some(wanted.clone())
        } else if explicit.is_some() || from_env.is_some() {
            return Err(Error::RuntimeNotExecutable { path: wanted });
        } else {
            None
        };
        found
            .map(|path| Runtime { path })
            .ok_or(Error::RuntimeMissing { searched })
    }

    /// A runtime at `path`, unchecked.
    pub fn from_path(path: impl Into<PathBuf>) -> Runtime {
        Runtime { path: path.into() }
    }

    /// The runtime binary.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A `runc --root <root>` command.
    pub(crate) fn command(&self, root: &Path) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.path);
        cmd.arg("--root").arg(root);
        cmd
    }

    /// The `runc run` command for a prepared bundle; runc's own messages go to
    /// `<bundle>/runtime.log` so that the container's stderr stays the container's.
    pub(crate) fn run_command(
        &self,
        root: &Path,
        bundle: &Path,
        id: &str,
        pid_file: Option<&Path>,
    ) -> std::process::Command {
        let mut cmd = self.command(root);
        cmd.arg("--log")
            .arg(bundle.join(RUNTIME_LOG))
            .args(["--log-format", "json", "run", "--bundle"])
            .arg(bundle);
        if let Some(p) = pid_file {
            cmd.arg("--pid-file").arg(p);
        }
        cmd.arg(id);
        cmd
    }

    /// Deletes container `id` (killing it), synchronously; errors are logged, not returned.
    pub(crate) fn force_delete(&self, root: &Path, id: &str) {
        let status = self
            .command(root)
            .args(["delete", "--force", id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        tracing::debug!(id, ?status, "runtime delete --force");
    }

    /// Runs `req.plan` over `req.rootfs` in the foreground and returns how it ended. Dropping the
    /// future kills and deletes the container (blocking briefly in `drop` on `runc delete`).
    #[tracing::instrument(skip_all, fields(id = %req.id))]
    pub async fn run(&self, mut req: RunRequest, output: Output) -> Result<ExitStatus> {
        check_id(&req.id)?;
        // The spec and runc need absolute paths (a relative root would be taken from the bundle).
        req.rootfs = std::path::absolute(&req.rootfs)?;
        req.state_dir = std::path::absolute(&req.state_dir)?;
        let root = runtime_root(&req.state_dir);
        fs_err::create_dir_all(&root)?;
        let bundle = bundle_dir(&req.state_dir, &req.id);
        let mut guard = Cleanup {
            runtime: self.clone(),
            root: root.clone(),
            id: req.id.clone(),
            bundle: bundle.clone(),
            stubs: None,
            finished: false,
        };
        let (watch, stubs) = prepare_bundle(&req.rootfs, &req.plan, &bundle)?;
        guard.stubs = Some(stubs);

        let cmd = self.run_command(&root, &bundle, &req.id, None);
        let interactive = req.plan.tty || req.plan.stdin;
        let sink = Sink::new(&output, req.log_path.as_deref())?;
        let status = drive(self, cmd, &output, interactive, &sink).await?;
        let outcome = interpret(self, "run", &bundle.join(RUNTIME_LOG), status, Some(&watch))?;
        if let Some(msg) = &outcome.message {
            sink.emit(Stream::Stderr, format!("{msg}\n").as_bytes())?;
        }
        guard.finished = true;
        Ok(outcome.status)
    }
}

/// Where output goes besides the channel: the log file; for [`Output::Inherit`], messages of
/// our own go to our stderr.
pub(crate) struct Sink {
    tx: Option<UnboundedSender<OutputChunk>>,
    log: Mutex<Option<fs_err::File>>,
}

impl Sink {
    pub(crate) fn new(output: &Output, log_path: Option<&Path>) -> Result<Sink> {
        let tx = match output {
            Output::Channel(tx) => Some(tx.clone()),
            Output::Inherit => None,
        };
        let log = match (log_path, &tx) {
            (Some(p), Some(_)) => Some(fs_err::File::create(p)?),
            _ => None,
        };
        Ok(Sink {
            tx,
            log: Mutex::new(log),
        })
    }

    pub(crate) fn emit(&self, stream: Stream, data: &[u8]) -> Result<()> {
        if let Some(f) = lock(&self.log).as_mut() {
            f.write_all(data)?;
        }
        match &self.tx {
            Some(tx) => {
                // A closed receiver only means nobody watches live; the log has everything.
                let _ = tx.send(OutputChunk {
                    stream,
                    data: data.to_vec(),
                });
            }
            None => {
                let _ = std::io::stderr().write_all(data);
            }
        }
        Ok(())
    }
}

/// Spawns a runtime command with the stdio `output` asks for and waits for it: pumping pipes
/// into `sink`, or forwarding signals with inherited stdio. Dropping the future kills the
/// runtime process.
pub(crate) async fn drive(
    rt: &Runtime,
    cmd: std::process::Command,
    output: &Output,
    interactive: bool,
    sink: &Sink,
) -> Result<std::process::ExitStatus> {
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    match output {
        Output::Inherit => {
            cmd.stdin(if interactive {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
            if !interactive {
                // Alone in its process group, the runtime gets ^C only through us: once.
                cmd.process_group(0);
            }
            let mut child = cmd.spawn().map_err(|e| spawn_err(rt, e))?;
            forward_signals(&mut child, interactive, true).await
        }
        Output::Channel(_) => {
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn().map_err(|e| spawn_err(rt, e))?;
            let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
            let (a, b, status) = tokio::join!(
                pump(stdout, Stream::Stdout, sink),
                pump(stderr, Stream::Stderr, sink),
                child.wait()
            );
            a?;
            b?;
            status.map_err(|e| spawn_err(rt, e))
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn spawn_err(rt: &Runtime, source: std::io::Error) -> Error {
    Error::RuntimeSpawn {
        runtime: rt.path.clone(),
        action: "run",
        source,
    }
}

/// Where runc writes its own log in a bundle.
pub(crate) const RUNTIME_LOG: &str = "runtime.log";

/// Resolves the user, creates the working directory if asked, builds the spec and writes the
/// bundle; prepares the cgroup OOM watch (moving the memory limit to it on cgroup v1).
pub(crate) fn prepare_bundle(
    rootfs: &Path,
    plan: &ProcessPlan,
    bundle: &Path,
) -> Result<(OomWatch, StubLease)> {
    let user = resolve_user(rootfs, &plan.user)?;
    if plan.create_cwd {
        mkdir_all_in_root(rootfs, &plan.cwd)?;
    }
    if bundle.exists() {
        crate::cleanup::remove_bundle(bundle)?;
    }
    let id = bundle
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut spec = build_spec(plan, &user, rootfs, bundle)?;
    let stubs = MountStubs::acquire(
        rootfs,
        spec.mounts()
            .iter()
            .flatten()
            .filter_map(|m| m.destination().to_str()),
    )?;
    let watch = OomWatch::prepare(&id, plan.memory)?;
    if cgroup::version() == CgroupVersion::V1
        && let Some(limit) = plan.memory
        && let Some(res) = spec
            .linux_mut()
            .as_mut()
            .and_then(|l| l.resources_mut().as_mut())
    {
        // The parent /kiln/<id> enforces the limit (so that its OOM eventfd fires); the
        // container's own cgroup gets one page more, so that programs reading their
        // memory.limit_in_bytes (JVMs, ...) still see the limit, and the parent is always hit
        // first.
        let shown = i64::try_from(limit.saturating_add(cgroup::V1_LEAF_SLACK)).unwrap_or(i64::MAX);
        let mut memory = oci_spec::runtime::LinuxMemoryBuilder::default().limit(shown);
        // Without swap accounting (swapaccount=0) there is no memsw file to write: Docker
        // drops the swap limit with a warning there, and so do we.
        if cgroup::v1_swap_accounting() {
            memory = memory.swap(shown);
        } else {
            tracing::warn!("no swap limit support on this host: memory limited without swap");
        }
        res.set_memory(Some(memory.build()?));
    }
    write_bundle(bundle, &spec, plan)?;
    crate::network::setup(bundle, plan)?;
    Ok((watch, stubs))
}

async fn pump(reader: Option<impl AsyncRead + Unpin>, stream: Stream, sink: &Sink) -> Result<()> {
    let Some(mut reader) = reader else {
        return Ok(());
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        sink.emit(stream, &buf[..n])?;
    }
}

/// The signals `kiln run` passes on to the container, as docker's `--sig-proxy` does: every
/// catchable one but those about kiln's own plumbing (CHLD, PIPE, URG, WINCH) and job control.
const FORWARDED: [rustix::process::Signal; 10] = {
    use rustix::process::Signal as S;
    [
        S::HUP,
        S::INT,
        S::QUIT,
        S::USR1,
        S::USR2,
        S::TERM,
        S::ALARM,
        S::VTALARM,
        S::PROF,
        S::XCPU,
    ]
};

/// Waits for `child` (the runtime), passing every signal in [`FORWARDED`] that reaches this
/// process on to it (runc hands them to the container's PID 1), so none of them ends kiln
/// before the container. With `interactive` the runtime shares the terminal's foreground
/// group and already got ^C and ^\ from it; without `proxy` (`--sig-proxy=false`) signals are
/// swallowed, so kiln still outlives them and cleans up.
pub(crate) async fn forward_signals(
    child: &mut tokio::process::Child,
    interactive: bool,
    proxy: bool,
) -> Result<std::process::ExitStatus> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut listeners = Vec::new();
    for sig in FORWARDED {
        let mut stream = signal(SignalKind::from_raw(sig.as_raw()))?;
        let tx = tx.clone();
        listeners.push(tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(sig).is_err() {
                    break;
                }
            }
        }));
    }
    drop(tx);
    let _abort = AbortOnDrop(listeners);
    loop {
        let sig = tokio::select! {
            status = child.wait() => return Ok(status?),
            Some(sig) = rx.recv() => sig,
        };
        use rustix::process::Signal as S;
        if !proxy || (interactive && (sig == S::INT || sig == S::QUIT)) {
            continue;
        }
        if let Some(pid) = child
            .id()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process(pid, sig);
        }
    }
}

/// Stops the signal listeners of [`forward_signals`] when it returns.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

/// The result of a finished run, and a message for the container's stderr (docker's wording
/// for a command that cannot be executed).
pub(crate) struct Outcome {
    pub status: ExitStatus,
    pub message: Option<String>,
}

/// The last error runc logged in its `--log` file, if any.
pub(crate) fn runtime_error(log: &Path) -> Option<String> {
    let text = fs_err::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "error" || v["level"] == "fatal")
        .find_map(|v| v["msg"].as_str().map(str::to_owned))
}

/// Maps a runtime failure message to docker's exit code and message: 127 for a command that is
/// not found, 126 for one that cannot be executed.
pub fn translate_runtime_error(msg: &str) -> Option<(i32, String)> {
    let exec = msg.find("exec: ").map(|i| &msg[i..])?;
    if exec.contains("executable file not found") || exec.contains("no such file or directory") {
        Some((127, exec.to_owned()))
    } else if exec.contains("permission denied") || exec.contains("is a directory") {
        Some((126, exec.to_owned()))
    } else {
        None
    }
}

pub(crate) fn interpret(
    rt: &Runtime,
    action: &'static str,
    runtime_log: &Path,
    status: std::process::ExitStatus,
    watch: Option<&OomWatch>,
) -> Result<Outcome> {
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(255);
    if code != 0
        && let Some(msg) = runtime_error(runtime_log)
    {
        if let Some((code, message)) = translate_runtime_error(&msg) {
            return Ok(Outcome {
                status: ExitStatus::from_code(code, false),
                message: Some(message),
            });
        }
        return Err(Error::RuntimeFailed {
            runtime: rt.path.clone(),
            action,
            message: msg,
        });
    }
    Ok(Outcome {
        status: ExitStatus::from_code(code, watch.is_some_and(OomWatch::oom_killed)),
        message: None,
    })
}

/// Removes what a run leaves: the runtime's container (when the run did not finish), cgroups
/// and the bundle.
struct Cleanup {
    runtime: Runtime,
    root: PathBuf,
    id: String,
    bundle: PathBuf,
    stubs: Option<StubLease>,
    finished: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.finished {
            tracing::debug!(id = %self.id, "run cancelled: deleting container");
            self.runtime.force_delete(&self.root, &self.id);
        }
        cgroup::remove(&self.id);
        // Dropping the lease removes the stubs when this was the last run over the rootfs.
        self.stubs.take();
        if self.bundle.exists()
            && let Err(e) = crate::cleanup::remove_bundle(&self.bundle)
        {
            tracing::warn!(error = %e, "removing bundle");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_messages_translate_to_docker_codes() {
        let m = r#"runc run failed: unable to start container process: exec: "nope": executable file not found in $PATH"#;
        assert_eq!(
            translate_runtime_error(m),
            Some((
                127,
                r#"exec: "nope": executable file not found in $PATH"#.to_owned()
            ))
        );
        let m = r#"runc run failed: unable to start container process: exec: "/etc": permission denied"#;
        assert_eq!(translate_runtime_error(m).map(|t| t.0), Some(126));
        assert_eq!(
            translate_runtime_error("runc run failed: cgroup trouble"),
            None
        );
    }

    #[test]
    fn exit_status_from_code() {
        assert_eq!(ExitStatus::from_code(137, true).signal, Some(9));
        assert_eq!(ExitStatus::from_code(3, false).signal, None);
        assert!(ExitStatus::from_code(0, false).success());
    }

    #[test]
    fn detect_explicit_and_missing() {
        let rt = Runtime::detect(Some(Path::new("/bin/busybox"))).unwrap();
        assert_eq!(rt.path(), Path::new("/bin/busybox"));
        let err = Runtime::detect(Some(Path::new("/nonexistent/runc"))).unwrap_err();
        assert!(err.to_string().contains("apt-get install runc"), "{err}");
        let err = Runtime::detect(Some(Path::new("no-such-runtime-xyz"))).unwrap_err();
        assert!(err.to_string().contains("apt-get install runc"), "{err}");
    }
}
