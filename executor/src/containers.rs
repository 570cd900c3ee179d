//! Stored containers (`kiln run [-d]`, `ps`, `logs`, `stop`, `kill`, `rm`, `exec`, `inspect`).
//! A foreground one is supervised by the `kiln run` process itself (see `attach`); a detached
//! one by a shim, below.
//!
//! Layout under the directory the caller gives (`<store>/containers`):
//! ```text
//! <id>/config.json     ContainerConfig (what to run)
//! <id>/state.json      ContainerState, rewritten atomically by the shim and by us
//! <id>/container.log   stdout and stderr, interleaved, whole
//! <id>/rootfs upper/ work/   the caller mounts the overlay at rootfs/ before start
//! .bundles/<id>/       OCI bundle while the container exists
//! .runc/               runtime state root
//! ```
//! A shim process (the current binary re-executed with [`crate::SHIM_ARG`]) supervises each
//! started container: it outlives `kiln run -d`, runs `runc run` in the foreground with stdio on
//! the log file and records pid, exit code, OOM and times in `state.json`.

use crate::bundle::{check_id, write_atomic};
use crate::plan::ProcessPlan;
use crate::runtime::{ExitStatus, Output, Runtime};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// What a detached container runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// Name (`--name`); a generated one when `None`.
    pub name: Option<String>,
    /// The image reference, for `ps` and `inspect`.
    pub image: String,
    /// The process and its sandbox.
    pub plan: ProcessPlan,
    /// `--rm`: the container is removed once it has exited (by its shim when detached).
    #[serde(default)]
    pub auto_remove: bool,
    /// `--sig-proxy` (default on): signals sent to a foreground `kiln run` reach PID 1.
    #[serde(default = "yes")]
    pub sig_proxy: bool,
    /// The image's ID (`sha256:…`), to mount its layers again on a later `start`.
    #[serde(default)]
    pub image_id: Option<String>,
    /// `--restart`: what the shim does when the process ends.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// The health check (the image's `HEALTHCHECK` merged with `--health-*`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<crate::health::HealthConfig>,
}

/// docker's restart policy names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartName {
    /// Never restart.
    #[default]
    No,
    /// Restart whatever the exit code, until stopped.
    Always,
    /// Restart after a non-zero exit, at most `max_retries` times (0: no limit).
    OnFailure,
    /// As `always` (there is no daemon restart that would tell them apart).
    UnlessStopped,
}

/// `--restart NAME[:MAX]`, supervised by the shim.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// The policy.
    pub name: RestartName,
    /// `on-failure:N`: at most N restarts (0: no limit).
    #[serde(default)]
    pub max_retries: u32,
}

impl RestartPolicy {
    /// docker's name of the policy (`no`, `always`, `on-failure`, `unless-stopped`).
    pub fn as_str(&self) -> &'static str {
        match self.name {
            RestartName::No => "no",
            RestartName::Always => "always",
            RestartName::OnFailure => "on-failure",
            RestartName::UnlessStopped => "unless-stopped",
        }
    }

    /// Whether a process that ended with `code`, after `restarts` restarts so far, is
    /// started again (never once `stop` asked for it to end).
    pub fn should_restart(&self, code: i32, restarts: u32, manually_stopped: bool) -> bool {
        if manually_stopped {
            return false;
        }
        match self.name {
            RestartName::No => false,
            RestartName::Always | RestartName::UnlessStopped => true,
            RestartName::OnFailure => {
                code != 0 && (self.max_retries == 0 || restarts < self.max_retries)
            }
        }
    }
}

fn yes() -> bool {
    true
}

/// Lifecycle status, as Docker names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, not started.
    Created,
    /// The process runs.
    Running,
    /// The process ended.
    Exited,
}

impl Status {
    /// `created`, `running` or `exited`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
        }
    }
}

/// The recorded state of a container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerState {
    /// Status.
    pub status: Status,
    /// Host pid of the container's PID 1 while running.
    pub pid: Option<i32>,
    /// Exit code once exited (128+signal when killed).
    pub exit_code: Option<i32>,
    /// Whether the OOM killer ran.
    pub oom_killed: bool,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// RFC 3339 start time.
    pub started_at: Option<String>,
    /// RFC 3339 end time.
    pub finished_at: Option<String>,
    /// Why the container failed to start, if it did.
    pub error: Option<String>,
    /// The supervising shim, `pid starttime`.
    pub shim: Option<String>,
    /// How many times the shim started the process again (`--restart`).
    #[serde(default)]
    pub restart_count: u32,
    /// The shim is waiting to start the process again (`--restart`): docker's `restarting`.
    #[serde(default)]
    pub restarting: bool,
    /// Frozen by `pause` (derived from the container's `paused` marker when read).
    #[serde(default)]
    pub paused: bool,
}

/// The store of detached containers.
#[derive(Debug, Clone)]
pub struct Containers {
    dir: PathBuf,
    runtime: Option<Runtime>,
    shim_exe: Option<PathBuf>,
}

/// One container in a [`Containers`] store.
#[derive(Debug, Clone)]
pub struct Container {
    store: Containers,
    id: String,
    name: String,
    config: ContainerConfig,
}

/// Where `--init` puts its reaper in the container (docker's path for docker-init).
pub const INIT_PATH: &str = "/sbin/docker-init";

/// Marker file: `stop` asked the process to end; the shim restarts it no more.
const STOPPED: &str = "stopped";
/// Marker file: the container's processes are frozen (`pause`).
const PAUSED: &str = "paused";

/// The current time in RFC 3339 with nanoseconds, as docker writes its times.
pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// 64 random hex digits: a container's or a network's ID.
pub(crate) fn random_id() -> Result<String> {
    let mut bytes = [0u8; 32];
    fs_err::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl ContainerState {
    /// The state of a container just created: not started, no exit yet.
    fn created() -> ContainerState {
        ContainerState {
            status: Status::Created,
            pid: None,
            exit_code: None,
            oom_killed: false,
            created_at: now(),
            started_at: None,
            finished_at: None,
            error: None,
            shim: None,
            restart_count: 0,
            restarting: false,
            paused: false,
        }
    }

    /// docker's `State.Status`: `created`, `running`, `paused`, `restarting` or `exited`.
    pub fn docker_status(&self) -> &'static str {
        match self.status {
            Status::Running if self.paused => "paused",
            Status::Exited if self.restarting => "restarting",
            other => other.as_str(),
        }
    }

    /// Whether docker counts the container as running (`ps` without `-a`): running, paused or
    /// between two runs of its restart policy.
    pub fn is_up(&self) -> bool {
        self.status == Status::Running || (self.status == Status::Exited && self.restarting)
    }
}

/// Reads a JSON state file.
pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = fs_err::read(path)?;
    serde_json::from_slice(&text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a JSON state file atomically (readers see the old or the new whole file).
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let data = serde_json::to_vec_pretty(value).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })?;
    write_atomic(path, &data)
}

#[derive(Serialize, Deserialize)]
struct StoredConfig {
    id: String,
    name: String,
    config: ContainerConfig,
}

/// Whether the process recorded as `pid starttime` still runs.
fn alive(identity: &str) -> bool {
    let Some(pid) = identity.split_whitespace().next() else {
        return false;
    };
    let Ok(stat) = fs_err::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let start = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(19));
    identity.split_whitespace().nth(1) == start
}

/// `pid starttime` of a process.
pub(crate) fn identity(pid: i32) -> Option<String> {
    let stat = fs_err::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let start = stat.rsplit_once(')')?.1.split_whitespace().nth(19)?;
    Some(format!("{pid} {start}"))
}

impl Containers {
    /// Opens (creating) the store at `dir`; the runtime is found as [`Runtime::detect`] does
    /// without `--runtime` (use [`Containers::with_runtime`] to pick one).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Containers> {
        // Absolute: the shim gets it as an argument and runs from `/`.
        let dir = std::path::absolute(dir.into())?;
        fs_err::create_dir_all(&dir)?;
        Ok(Containers {
            dir,
            runtime: Runtime::detect(None).ok(),
            shim_exe: None,
        })
    }

    /// Uses `runtime` for every container operation.
    pub fn with_runtime(mut self, runtime: Runtime) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Starts shims with `exe` instead of the current executable (tests, or a `kiln` binary
    /// elsewhere). The executable must call [`crate::shim_main`] when its first argument is
    /// [`crate::SHIM_ARG`].
    pub fn with_shim_exe(mut self, exe: impl Into<PathBuf>) -> Self {
        self.shim_exe = Some(exe.into());
        self
    }

    pub(crate) fn runtime(&self) -> Result<&Runtime> {
        self.runtime.as_ref().ok_or_else(|| Error::RuntimeMissing {
            searched: "runc in PATH".to_owned(),
        })
    }

    pub(crate) fn runtime_for_shim(&self) -> Option<Runtime> {
        self.runtime.clone()
    }

    pub(crate) fn runtime_root(&self) -> PathBuf {
        self.dir.join(".runc")
    }

    pub(crate) fn bundle(&self, id: &str) -> PathBuf {
        self.dir.join(".bundles").join(id)
    }

    /// Creates a container (status `created`) with its own directories; mount the overlay at
    /// [`Container::rootfs_dir`] before [`Container::start_detached`].
    pub fn create(&self, config: ContainerConfig) -> Result<Container> {
        let id = random_id()?;
        let name = config
            .name
            .clone()
            .unwrap_or_else(|| format!("kiln_{}", &id[..12]));
        check_id(&name)?;
        let mut config = config;
        for n in &mut config.plan.networks {
            n.container_name = name.clone();
        }
        if let Some(other) = self.list(true)?.into_iter().find(|c| c.name == name) {
            return Err(Error::NameInUse { name, id: other.id });
        }
        let dir = self.dir.join(&id);
        for sub in ["rootfs", "upper", "work"] {
            fs_err::create_dir_all(dir.join(sub))?;
        }
        // The state first: a container is listed once its config exists, and a concurrent
        // `list` must find its state then.
        write_json(&dir.join("state.json"), &ContainerState::created())?;
        write_json(
            &dir.join("config.json"),
            &StoredConfig {
                id: id.clone(),
                name: name.clone(),
                config: config.clone(),
            },
        )?;
        Ok(Container {
            store: self.clone(),
            id,
            name,
            config,
        })
    }

    fn load(&self, id: &str) -> Result<Container> {
        let stored: StoredConfig = read_json(&self.dir.join(id).join("config.json"))?;
        Ok(Container {
            store: self.clone(),
            id: stored.id,
            name: stored.name,
            config: stored.config,
        })
    }

    /// Containers, newest first; only running ones unless `all`.
    pub fn list(&self, all: bool) -> Result<Vec<Container>> {
        let mut out = Vec::new();
        for entry in fs_err::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !entry.path().join("config.json").exists() {
                continue;
            }
            let Ok(container) = self.load(&name) else {
                continue;
            };
            // One being created or removed by another process right now: not listed.
            let Ok(state) = container.state() else {
                continue;
            };
            if all || state.is_up() {
                out.push((state.created_at.clone(), container));
            }
        }
        out.sort_by(|a, b| b.0.cmp(&a.0));
        Ok(out.into_iter().map(|(_, c)| c).collect())
    }

    /// Finishes the containers whose supervisor died (a killed `kiln run`, a killed shim): kills
    /// what the runtime still runs for them, removes their cgroups, bundle and rootfs mount,
    /// and records them as exited with code 255 (what [`Container::state`] already reports).
    /// Returns how many it reaped.
    ///
    /// Cheap enough for every command that opens the store: a supervisor writes a bundle
    /// (owned by it, see `bundle::owner_is_dead`) before it starts a container and removes it
    /// last, so only the entries of `.bundles` and of the runtime's state root are looked at,
    /// not every container. Containers of live supervisors (`kiln run -d` shims, foreground
    /// `kiln run`s) are left alone.
    pub fn reap_orphans(&self) -> Result<usize> {
        let mut candidates = std::collections::BTreeSet::new();
        for dir in [self.dir.join(".bundles"), self.runtime_root()] {
            let Ok(entries) = fs_err::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if check_id(&name).is_ok() && entry.path().is_dir() {
                    candidates.insert(name);
                }
            }
        }
        let mut reaped = 0;
        for id in candidates {
            if self.reap_if_orphaned(&id)? {
                reaped += 1;
            }
        }
        Ok(reaped)
    }

    /// Reaps container `id` (see [`Containers::reap_orphans`]) when its supervisor is gone;
    /// true when it recorded the container as exited.
    fn reap_if_orphaned(&self, id: &str) -> Result<bool> {
        let bundle = self.bundle(id);
        let container = self.load(id).ok();
        let raw = container
            .as_ref()
            .and_then(|c| read_json::<ContainerState>(&c.state_path()).ok());
        let supervisor_alive = |s: &Option<ContainerState>| {
            s.as_ref()
                .and_then(|s| s.shim.as_deref())
                .is_some_and(alive)
        };
        let orphaned = if bundle.exists() {
            crate::bundle::owner_is_dead(&bundle)
        } else {
            // Runtime state without a bundle: judged by the recorded supervisor.
            !supervisor_alive(&raw)
        };
        if !orphaned || supervisor_alive(&raw) {
            return Ok(false);
        }
        tracing::info!(id, "reaping a container whose supervisor died");
        if self.runtime_root().join(id).exists()
            && let Ok(runtime) = self.runtime()
        {
            runtime.force_delete(&self.runtime_root(), id);
        }
        crate::cgroup::remove(id);
        let Some(container) = container else {
            crate::cleanup::remove_bundle(&bundle)?;
            return Ok(false);
        };
        // The rootfs first: the stubs the supervisor made in it are gone with the mount.
        container.unmount_rootfs()?;
        crate::cleanup::remove_bundle(&bundle)?;
        // Re-read: a supervisor that ended normally wrote its own record just before.
        let mut state: ContainerState = read_json(&container.state_path())?;
        if state.status == Status::Exited {
            return Ok(false);
        }
        state.status = Status::Exited;
        state.exit_code = Some(255);
        state.pid = None;
        state.finished_at = Some(now());
        state.error = Some("supervisor process vanished".to_owned());
        container.write_state(&state)?;
        Ok(true)
    }

    /// `rename`: gives container `c` the name `new` (refused when another container has it).
    pub fn rename(&self, c: &Container, new: &str) -> Result<()> {
        check_id(new)?;
        if let Some(other) = self.list(true)?.into_iter().find(|o| o.name == new) {
            return Err(Error::NameInUse {
                name: new.to_owned(),
                id: other.id,
            });
        }
        let path = c.dir().join("config.json");
        let mut stored: StoredConfig = read_json(&path)?;
        stored.name = new.to_owned();
        stored.config.name = Some(new.to_owned());
        write_json(&path, &stored)
    }

    /// The container with this name, full id or unique id prefix.
    pub fn get(&self, name_or_id: &str) -> Result<Container> {
        let all = self.list(true)?;
        if let Some(c) = all
            .iter()
            .find(|c| c.name == name_or_id || c.id == name_or_id)
        {
            return Ok(c.clone());
        }
        let matches: Vec<&Container> = all
            .iter()
            .filter(|c| !name_or_id.is_empty() && c.id.starts_with(name_or_id))
            .collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Error::NoSuchContainer {
                name: name_or_id.to_owned(),
            }),
            many => Err(Error::AmbiguousContainer {
                name: name_or_id.to_owned(),
                matches: many.iter().map(|c| c.id.clone()).collect(),
            }),
        }
    }
}

impl Container {
    /// Full id (64 hex digits).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it runs.
    pub fn config(&self) -> &ContainerConfig {
        &self.config
    }

    /// The container's directory.
    pub fn dir(&self) -> PathBuf {
        self.store.dir.join(&self.id)
    }

    /// Where the caller mounts the root filesystem (overlay) before start.
    pub fn rootfs_dir(&self) -> PathBuf {
        self.dir().join("rootfs")
    }

    /// The overlay upper directory: the container's writable layer.
    pub fn upper_dir(&self) -> PathBuf {
        self.dir().join("upper")
    }

    /// The overlay work directory.
    pub fn work_dir(&self) -> PathBuf {
        self.dir().join("work")
    }

    /// The log file (stdout and stderr interleaved).
    pub fn log_path(&self) -> PathBuf {
        self.dir().join("container.log")
    }

    fn state_path(&self) -> PathBuf {
        self.dir().join("state.json")
    }

    /// The current state. A `running` container whose shim has vanished (host reboot, shim
    /// killed) is reported as exited with code 255.
    pub fn state(&self) -> Result<ContainerState> {
        let mut state: ContainerState = read_json(&self.state_path())?;
        if state.status == Status::Running && !state.shim.as_deref().is_some_and(alive) {
            // The shim records the end before it exits; re-read once to avoid that race.
            state = read_json(&self.state_path())?;
            if state.status == Status::Running {
                state.status = Status::Exited;
                state.exit_code = Some(255);
                state.pid = None;
                state.error = Some("supervisor process vanished".to_owned());
            }
        }
        if state.restarting && !state.shim.as_deref().is_some_and(alive) {
            state = read_json(&self.state_path())?;
            if state.restarting && !state.shim.as_deref().is_some_and(alive) {
                state.restarting = false;
            }
        }
        state.paused = state.status == Status::Running && self.marker(PAUSED).exists();
        Ok(state)
    }

    fn marker(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    /// Whether `stop` asked for the process to end for good (no restart policy applies).
    pub(crate) fn manually_stopped(&self) -> bool {
        self.marker(STOPPED).exists()
    }

    /// Forgets the pause marker (the process ended).
    pub(crate) fn clear_paused(&self) {
        let _ = fs_err::remove_file(self.marker(PAUSED));
    }

    /// Starts the container under a shim and returns once it runs (or has already ended).
    pub fn start_detached(&self) -> Result<ContainerState> {
        let runtime = self.store.runtime()?;
        let previous = self.state()?;
        if previous.status == Status::Exited && !previous.restarting {
            // `start` of a stopped container: a new run of the same one, as docker's.
            self.reset_for_start(&previous)?;
        } else if previous.status != Status::Created {
            return Err(Error::StartFailed {
                id: self.id.clone(),
                message: "container was already started".to_owned(),
            });
        }
        let _ = fs_err::remove_file(self.marker(STOPPED));
        let exe = match &self.store.shim_exe {
            Some(exe) => exe.clone(),
            None => std::env::current_exe()?,
        };
        let mut child = std::process::Command::new(&exe)
            .arg(crate::SHIM_ARG)
            .arg(self.dir())
            .arg(runtime.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                fs_err::File::create(self.dir().join("shim.log"))?
                    .into_parts()
                    .0,
            )
            .spawn()
            .map_err(|source| Error::RuntimeSpawn {
                runtime: exe.clone(),
                action: "shim",
                source,
            })?;
        // Reap the shim's first process when it exits so no zombie is left behind.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last_seen: Option<ContainerState> = None;
        loop {
            let state: ContainerState = match read_json(&self.state_path()) {
                Ok(s) => s,
                // `run -d --rm` of a command that ended at once: its shim removed it already.
                Err(_) if !self.dir().exists() => {
                    let mut s = last_seen.unwrap_or_else(ContainerState::created);
                    s.status = Status::Exited;
                    return Ok(s);
                }
                Err(e) => return Err(e),
            };
            last_seen = Some(state.clone());
            match state.status {
                Status::Running => return Ok(state),
                Status::Exited => {
                    return match state.error.clone() {
                        Some(message) => Err(Error::StartFailed {
                            id: self.id.clone(),
                            message,
                        }),
                        None => Ok(state),
                    };
                }
                Status::Created if Instant::now() > deadline => {
                    let message =
                        fs_err::read_to_string(self.dir().join("shim.log")).unwrap_or_default();
                    return Err(Error::StartFailed {
                        id: self.id.clone(),
                        message: format!("supervisor did not report a start: {message}"),
                    });
                }
                Status::Created => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    /// Makes an exited container startable again: `created`, its last run forgotten but its
    /// creation time, restart count and log kept.
    pub fn reset_for_start(&self, previous: &ContainerState) -> Result<()> {
        let mut state = ContainerState::created();
        state.created_at = previous.created_at.clone();
        state.restart_count = previous.restart_count;
        self.write_state(&state)
    }

    /// Waits until the container has exited, up to `timeout`; true if it has.
    pub fn wait_exited(&self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.removed() {
                // `--rm`: its shim removed it once it had exited.
                return Ok(true);
            }
            let state = self.state()?;
            if state.status != Status::Running {
                return Ok(state.status == Status::Exited);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` (name such as `TERM`/`SIGKILL`, or number) to the container's PID 1.
    pub fn kill(&self, signal: &str) -> Result<()> {
        let sig = parse_signal(signal)?;
        let state = self.state()?;
        if !state.is_up() {
            return Err(Error::NotRunning {
                id: self.id.clone(),
            });
        }
        // As docker's: a container signalled by hand is not restarted by its policy, and one
        // between two runs is only told so.
        fs_err::write(self.marker(STOPPED), b"")?;
        if state.status != Status::Running {
            return Ok(());
        }
        let runtime = self.store.runtime()?;
        let out = runtime
            .command(&self.store.runtime_root())
            .args(["kill", &self.id, &sig.to_string()])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| Error::RuntimeSpawn {
                runtime: runtime.path().to_path_buf(),
                action: "kill",
                source,
            })?;
        if !out.status.success() {
            // The process may have just ended, its runtime state gone before the supervisor
            // recorded the exit: give the supervisor a moment.
            if self.wait_exited(Duration::from_secs(2))? {
                return Err(Error::NotRunning {
                    id: self.id.clone(),
                });
            }
            return Err(Error::RuntimeFailed {
                runtime: runtime.path().to_path_buf(),
                action: "kill",
                message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        if state.paused {
            // The signal is delivered once the processes thaw.
            self.runtime_action("resume")?;
            self.clear_paused();
        }
        Ok(())
    }

    /// Runs `runc ACTION ID` (pause, resume) for this container.
    fn runtime_action(&self, action: &'static str) -> Result<()> {
        let runtime = self.store.runtime()?;
        let out = runtime
            .command(&self.store.runtime_root())
            .args([action, &self.id])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| Error::RuntimeSpawn {
                runtime: runtime.path().to_path_buf(),
                action,
                source,
            })?;
        if !out.status.success() {
            return Err(Error::RuntimeFailed {
                runtime: runtime.path().to_path_buf(),
                action,
                message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(())
    }

    /// `pause`: freezes every process of the container (the cgroup freezer, `runc pause`).
    pub fn pause(&self) -> Result<()> {
        let state = self.state()?;
        if state.status != Status::Running {
            return Err(Error::NotRunning {
                id: self.id.clone(),
            });
        }
        if state.paused {
            return Err(Error::PauseState {
                id: self.id.clone(),
                message: "is already paused",
            });
        }
        self.runtime_action("pause")?;
        fs_err::write(self.marker(PAUSED), b"")?;
        Ok(())
    }

    /// `unpause`: thaws a paused container (`runc resume`).
    pub fn unpause(&self) -> Result<()> {
        let state = self.state()?;
        if !state.paused {
            return Err(Error::PauseState {
                id: self.id.clone(),
                message: "is not paused",
            });
        }
        self.runtime_action("resume")?;
        self.clear_paused();
        Ok(())
    }

    /// Waits until the container has exited and its shim will not start it again (stopped
    /// for good, or its restart policy gave up), up to `timeout`; true if so.
    pub fn wait_stopped(&self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.removed() {
                return Ok(true);
            }
            let state = self.state()?;
            if state.status == Status::Exited && !state.restarting {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// After a `stopped` marker was left for a container between two runs: waits (up to 10
    /// s) until its shim gave up or the next run, already on its way, is up; the state then
    /// (`None` when it was removed).
    fn settle(&self) -> Result<Option<ContainerState>> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.removed() {
                return Ok(None);
            }
            let state = self.state()?;
            if state.status == Status::Running || !state.restarting || Instant::now() > deadline {
                return Ok(Some(state));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Where the status of a `--rm` container is kept once it is removed (for `wait`).
    fn last_exit_path(&self) -> PathBuf {
        self.store.dir.join(".exits").join(&self.id)
    }

    /// Before a `--rm` container is removed: keeps its exit code for a minute, for a `wait`
    /// that did not see it exit (older records are dropped now).
    pub(crate) fn record_last_exit(&self, code: i32) {
        let dir = self.store.dir.join(".exits");
        if let Ok(entries) = fs_err::read_dir(&dir) {
            for e in entries.flatten() {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > Duration::from_secs(60));
                if old {
                    let _ = fs_err::remove_file(e.path());
                }
            }
        }
        let _ = fs_err::create_dir_all(&dir)
            .and_then(|()| fs_err::write(self.last_exit_path(), code.to_string()));
    }

    /// `wait`: blocks until the current (or next, for a created container) run has ended and
    /// returns its exit code; `None` when the container was removed meanwhile (`--rm`).
    pub fn wait(&self) -> Result<Option<i32>> {
        let mut last = None;
        let mut seen_up = false;
        loop {
            if self.removed() {
                let kept = fs_err::read_to_string(self.last_exit_path())
                    .ok()
                    .and_then(|c| c.trim().parse().ok());
                return Ok(kept.or(last));
            }
            let state = match self.state() {
                Ok(s) => s,
                // Removed (`--rm`) between the check and the read.
                Err(_) if self.removed() => continue,
                Err(e) => return Err(e),
            };
            seen_up |= state.status == Status::Running;
            last = state.exit_code;
            match state.status {
                Status::Exited if state.restarting && !seen_up => {}
                Status::Exited => return Ok(state.exit_code),
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then SIGKILL after `timeout`; returns the final state (exit code 143 when the
    /// process ended on SIGTERM). A PID 1 without a SIGTERM handler ignores it (as in Docker)
    /// and ends with 137 after the timeout.
    pub fn stop(&self, timeout: Duration) -> Result<ContainerState> {
        let mut last = self.state()?;
        if last.status == Status::Exited && last.restarting {
            // Between two runs: the shim only needs to be told, unless the next run is
            // already starting, which is then stopped as any running one.
            fs_err::write(self.marker(STOPPED), b"")?;
            if let Some(now) = self.settle()? {
                last = now;
            }
        }
        if last.status == Status::Running {
            match self.kill("TERM") {
                Ok(()) | Err(Error::NotRunning { .. }) => {}
                Err(e) => return Err(e),
            }
            if !self.wait_exited(timeout)? {
                match self.kill("KILL") {
                    Ok(()) | Err(Error::NotRunning { .. }) => {}
                    Err(e) => return Err(e),
                }
                self.wait_exited(Duration::from_secs(10))?;
            }
            self.wait_stopped(Duration::from_secs(10))?;
        }
        if self.removed() {
            return Ok(ContainerState {
                status: Status::Exited,
                pid: None,
                ..last
            });
        }
        self.state()
    }

    /// Whether the container was removed meanwhile (by its shim, for `--rm`).
    fn removed(&self) -> bool {
        !self.dir().join("state.json").exists()
    }

    /// Removes the container: refuses a running one unless `force` (which kills it), unmounts
    /// the rootfs (lazily) and deletes its directories and runtime state.
    pub fn remove(&self, force: bool) -> Result<()> {
        if self.state()?.is_up() {
            if !force {
                return Err(Error::StillRunning {
                    id: self.id.clone(),
                });
            }
            // Killed during a restart's wait, the next run may be on its way: kill that too.
            for _ in 0..3 {
                match self.kill("KILL") {
                    Ok(()) | Err(Error::NotRunning { .. }) => {}
                    Err(e) => return Err(e),
                }
                if self.wait_stopped(Duration::from_secs(3))? {
                    break;
                }
            }
            if self.removed() {
                return Ok(());
            }
        }
        // runc keeps a container's state in `<root>/<id>`: without it there is nothing to delete
        // (and no runc process to start, ~10 ms).
        if self.store.runtime_root().join(&self.id).exists()
            && let Ok(runtime) = self.store.runtime()
        {
            runtime.force_delete(&self.store.runtime_root(), &self.id);
        }
        crate::cgroup::remove(&self.id);
        self.unmount_rootfs()?;
        let bundle = self.store.bundle(&self.id);
        if bundle.exists() {
            crate::cleanup::remove_bundle(&bundle)?;
        }
        match fs_err::remove_dir_all(self.dir()) {
            // A `--rm` container's shim may be removing it at the same time.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => Ok(r?),
        }
    }

    /// Unmounts (lazily) the root filesystem, if mounted: an exited container keeps only its
    /// writable layer ([`Container::upper_dir`]), as docker's do.
    pub fn unmount_rootfs(&self) -> Result<()> {
        match rustix::mount::unmount(self.rootfs_dir(), rustix::mount::UnmountFlags::DETACH) {
            Ok(()) | Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(Error::Rootfs {
                rootfs: self.rootfs_dir(),
                path: "/".to_owned(),
                source: e.into(),
            }),
        }
    }

    /// Copies the log (both streams) to `out`; with `follow`, keeps copying until the
    /// container has exited.
    pub fn logs(&self, follow: bool, out: &mut dyn Write) -> Result<()> {
        let opts = crate::LogOptions {
            follow,
            ..Default::default()
        };
        self.logs_to(&opts, out, None)
    }

    /// `kiln logs`: the log's stdout entries to `stdout` and its stderr entries to `stderr` (or
    /// to `stdout` too when `None`), as `opts` selects; with `opts.follow`, until the container
    /// has exited.
    pub fn logs_to(
        &self,
        opts: &crate::LogOptions,
        stdout: &mut dyn Write,
        stderr: Option<&mut dyn Write>,
    ) -> Result<()> {
        let path = self.log_path();
        let mut stderr = stderr;
        let mut reader = crate::logfile::LogReader::new(opts);
        loop {
            let exited = self.state()?.status != Status::Running;
            reader.drain(&path, stdout, &mut stderr)?;
            // The state was read before the last drain, so nothing written before the exit is
            // missed.
            if !opts.follow || exited {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The log's length now: where [`Container::follow_output`] starts for output to come.
    pub fn log_len(&self) -> u64 {
        fs_err::metadata(self.log_path())
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// `attach`, `start -a`: what the container writes to its log from byte `offset` on (see
    /// [`Container::log_len`]), stdout entries to `stdout` and stderr ones to `stderr`, until
    /// its process has ended (or it was removed, `--rm`); returns the exit code, when known.
    pub fn follow_output(
        &self,
        offset: u64,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
    ) -> Result<Option<i32>> {
        let path = self.log_path();
        let opts = crate::LogOptions::default();
        let mut reader = crate::logfile::LogReader::at(&opts, offset);
        let mut stderr = Some(stderr);
        loop {
            let state = if self.removed() {
                None
            } else {
                self.state().ok()
            };
            let ended = state.as_ref().is_none_or(|s| s.status == Status::Exited);
            reader.drain(&path, stdout, &mut stderr)?;
            // The state was read before the last drain: nothing written before the end is
            // missed.
            if ended {
                return Ok(state.and_then(|s| s.exit_code));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Host pids of the container's processes (`top`).
    pub fn processes(&self) -> Vec<i32> {
        crate::cgroup::procs(&self.id)
    }

    /// The container's resource counters (`stats`); zero when it does not run.
    pub fn usage(&self) -> crate::cgroup::Usage {
        crate::cgroup::usage(&self.id)
    }

    /// Bytes received and sent on the container's own network interfaces (not `lo`); zero
    /// for the host's network, as docker shows it.
    pub fn net_io(&self) -> (u64, u64) {
        if self.config.plan.network == crate::Network::Host {
            return (0, 0);
        }
        let Some(pid) = self.state().ok().and_then(|s| s.pid) else {
            return (0, 0);
        };
        let text = fs_err::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
        let mut rx = 0u64;
        let mut tx = 0u64;
        for line in text.lines().skip(2) {
            let Some((name, counters)) = line.split_once(':') else {
                continue;
            };
            if name.trim() == "lo" {
                continue;
            }
            let f: Vec<u64> = counters
                .split_whitespace()
                .map(|n| n.parse().unwrap_or(0))
                .collect();
            rx += f.first().copied().unwrap_or(0);
            tx += f.get(8).copied().unwrap_or(0);
        }
        (rx, tx)
    }

    /// The FIFO a shim gives the process as stdin when it was created with `-i`; `attach`
    /// writes to it.
    pub fn stdin_fifo(&self) -> PathBuf {
        self.dir().join("stdin")
    }

    /// Runs `args` in the running container (`runc exec`), with the container's environment,
    /// user and working directory; see [`Container::exec_with`] to change them.
    pub async fn exec(&self, args: &[String], tty: bool, output: Output) -> Result<ExitStatus> {
        let opts = crate::ExecOptions {
            tty,
            ..Default::default()
        };
        self.exec_with(args, &opts, output).await
    }

    /// Docker-style `inspect` document.
    pub fn inspect(&self) -> Result<serde_json::Value> {
        let s = self.state()?;
        let zero = "0001-01-01T00:00:00Z";
        let plan = &self.config.plan;
        Ok(serde_json::json!({
            "Id": self.id,
            "Name": format!("/{}", self.name),
            "Created": s.created_at,
            "Image": self.config.image,
            "Path": plan.args.first().cloned().unwrap_or_default(),
            "Args": plan.args.iter().skip(1).collect::<Vec<_>>(),
            "LogPath": self.log_path(),
            "RestartCount": s.restart_count,
            "State": {
                "Status": s.docker_status(),
                "Running": s.is_up(),
                "Paused": s.paused,
                "Restarting": s.status == Status::Exited && s.restarting,
                "OOMKilled": s.oom_killed,
                "Dead": false,
                "Pid": s.pid.unwrap_or(0),
                "ExitCode": s.exit_code.unwrap_or(0),
                "Error": s.error.clone().unwrap_or_default(),
                "StartedAt": s.started_at.clone().unwrap_or_else(|| zero.to_owned()),
                "FinishedAt": s.finished_at.clone().unwrap_or_else(|| zero.to_owned()),
                "Health": self.health(),
            },
            "Config": {
                "Hostname": plan.hostname.clone().unwrap_or_else(|| self.id[..12].to_owned()),
                "User": plan.user,
                "Env": plan.env,
                "Cmd": plan.args,
                "WorkingDir": plan.cwd,
                "Tty": plan.tty,
                "OpenStdin": plan.stdin,
                "Image": self.config.image,
                "Healthcheck": self.config.healthcheck,
            },
            "HostConfig": {
                "NetworkMode": network_mode(plan),
                "ReadonlyRootfs": plan.readonly_rootfs,
                "Memory": plan.memory.unwrap_or(0),
                "NanoCpus": plan.cpus.map(|c| (c * 1e9) as i64).unwrap_or(0),
                "PidsLimit": plan.pids_limit,
                "CapAdd": plan.cap_add,
                "CapDrop": plan.cap_drop,
                "Privileged": plan.privileged,
                "SecurityOpt": security_opts(plan),
                "AutoRemove": self.config.auto_remove,
                "RestartPolicy": {
                    "Name": self.config.restart.as_str(),
                    "MaximumRetryCount": self.config.restart.max_retries,
                },
                "Init": plan.mounts.iter().any(|m| m.destination() == INIT_PATH),
                "PortBindings": self.ports_json(),
            },
            "NetworkSettings": { "Ports": self.ports_json(), "Networks": self.networks_json() },
            "Mounts": plan.mounts.iter().filter(|m| m.destination() != INIT_PATH).map(|m| match m {
                crate::MountPlan::Bind { src, dst, readonly } => serde_json::json!({
                    "Type": "bind", "Source": src, "Destination": dst, "RW": !readonly,
                }),
                crate::MountPlan::Tmpfs { dst, .. } => serde_json::json!({
                    "Type": "tmpfs", "Source": "", "Destination": dst, "RW": true,
                }),
            }).collect::<Vec<_>>(),
        }))
    }

    /// The container's published ports (`-p`, `-P`), host ports as chosen at creation.
    pub fn ports(&self) -> &[crate::network::PortMapping] {
        &self.config.plan.ports
    }

    /// docker's `NetworkSettings.Networks`: per user network, the address while running.
    pub fn networks_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for n in &self.config.plan.networks {
            let e = crate::networks::endpoint_of(&n.dir, &self.id);
            let net = crate::networks::UserNetwork::open(&n.dir).ok();
            map.insert(
                n.name.clone(),
                serde_json::json!({
                    "Aliases": n.aliases,
                    "NetworkID": n.id,
                    "EndpointID": e.as_ref().map(|_| format!("{}{}", &n.id[..32.min(n.id.len())], &self.id[..32])).unwrap_or_default(),
                    "Gateway": e.as_ref().and(net.as_ref()).map(|n| n.record().gateway.to_string()).unwrap_or_default(),
                    "IPAddress": e.as_ref().map(|e| e.ip.to_string()).unwrap_or_default(),
                    "IPPrefixLen": e.as_ref().and(net.as_ref()).map_or(0, |n| n.record().subnet.prefix),
                    "MacAddress": e.as_ref().map(|e| e.mac.clone()).unwrap_or_default(),
                    "IPAMConfig": n.ip.map(|ip| serde_json::json!({"IPv4Address": ip.to_string()})),
                }),
            );
        }
        serde_json::Value::Object(map)
    }

    /// Replaces the user networks the container joins at start (`network connect` and
    /// `disconnect`); the stored config is rewritten atomically.
    pub fn set_networks(
        &mut self,
        networks: Vec<crate::networks::NetworkAttachment>,
    ) -> Result<()> {
        let mut config = self.config.clone();
        config.plan.networks = networks;
        write_json(
            &self.dir().join("config.json"),
            &StoredConfig {
                id: self.id.clone(),
                name: self.name.clone(),
                config: config.clone(),
            },
        )?;
        self.config = config;
        Ok(())
    }

    /// The bundle of the container (its namespace at `netns` while it runs).
    pub fn bundle_dir(&self) -> PathBuf {
        self.store.bundle(&self.id)
    }

    /// docker's `NetworkSettings.Ports`: `{"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}`.
    pub fn ports_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for p in self.ports() {
            let entry = map
                .entry(p.container_key())
                .or_insert_with(|| serde_json::Value::Array(Vec::new()));
            if let serde_json::Value::Array(list) = entry {
                list.push(serde_json::json!({
                    "HostIp": p.host_ip.to_string(),
                    "HostPort": p.host_port.to_string(),
                }));
            }
        }
        serde_json::Value::Object(map)
    }

    pub(crate) fn write_state(&self, state: &ContainerState) -> Result<()> {
        write_json(&self.state_path(), state)
    }

    pub(crate) fn store(&self) -> &Containers {
        &self.store
    }

    /// Opens the container stored in directory `dir` (as the shim gets it).
    pub(crate) fn from_dir(dir: &Path, runtime: Runtime) -> Result<Container> {
        let store_dir = dir.parent().unwrap_or(Path::new("/")).to_path_buf();
        let id = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let store = Containers {
            dir: store_dir,
            runtime: Some(runtime),
            shim_exe: None,
        };
        store.load(&id)
    }
}

/// docker's `HostConfig.NetworkMode`: `bridge`, `host`, `none`, the first user network's name
/// or `container:<id>`.
fn network_mode(plan: &ProcessPlan) -> String {
    match plan.network {
        crate::Network::Host => "host".to_owned(),
        crate::Network::None => "none".to_owned(),
        crate::Network::Bridge => plan
            .networks
            .first()
            .map_or_else(|| "bridge".to_owned(), |n| n.name.clone()),
        crate::Network::Container => format!(
            "container:{}",
            plan.join_netns.as_ref().map_or("", |(_, id)| id.as_str())
        ),
    }
}

/// The `--security-opt` values that give `plan` its security settings, as `inspect` shows
/// them in `HostConfig.SecurityOpt`.
fn security_opts(plan: &ProcessPlan) -> Vec<String> {
    let mut opts = Vec::new();
    match &plan.seccomp {
        crate::Seccomp::Default => {}
        crate::Seccomp::Unconfined => opts.push("seccomp=unconfined".to_owned()),
        crate::Seccomp::Profile { source, .. } => opts.push(format!("seccomp={source}")),
    }
    if plan.no_new_privileges {
        opts.push("no-new-privileges".to_owned());
    }
    opts
}

/// Parses `TERM`, `SIGTERM`, `term` or `15` into a signal number.
pub fn parse_signal(signal: &str) -> Result<i32> {
    use rustix::process::Signal;
    let s = signal.trim().to_ascii_uppercase();
    let s = s.strip_prefix("SIG").unwrap_or(&s);
    let known = [
        ("HUP", Signal::HUP),
        ("INT", Signal::INT),
        ("QUIT", Signal::QUIT),
        ("KILL", Signal::KILL),
        ("USR1", Signal::USR1),
        ("USR2", Signal::USR2),
        ("TERM", Signal::TERM),
        ("STOP", Signal::STOP),
        ("CONT", Signal::CONT),
        ("ALRM", Signal::ALARM),
        ("WINCH", Signal::WINCH),
    ];
    if let Some((_, sig)) = known.iter().find(|(n, _)| *n == s) {
        return Ok(sig.as_raw());
    }
    match s.parse::<i32>() {
        Ok(n) if (1..=64).contains(&n) => Ok(n),
        _ => Err(Error::InvalidSignal {
            signal: signal.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert_eq!(parse_signal("TERM").unwrap(), 15);
        assert_eq!(parse_signal("sigkill").unwrap(), 9);
        assert_eq!(parse_signal("2").unwrap(), 2);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("0").is_err());
    }

    #[test]
    fn configs_stored_before_rm_and_sig_proxy_keep_docker_defaults() {
        let old = serde_json::json!({
            "name": "old",
            "image": "busybox",
            "plan": serde_json::to_value(ProcessPlan::new(["true"])).unwrap(),
        });
        let c: ContainerConfig = serde_json::from_value(old).unwrap();
        assert!(!c.auto_remove);
        assert!(c.sig_proxy);
    }

    #[test]
    fn create_list_get_without_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let store = Containers::open(dir.path()).unwrap();
        let config = ContainerConfig {
            name: Some("web".into()),
            image: "busybox".into(),
            plan: ProcessPlan::new(["sleep", "1"]),
            auto_remove: false,
            sig_proxy: true,
            image_id: None,
            restart: RestartPolicy::default(),
            healthcheck: None,
        };
        let c = store.create(config.clone()).unwrap();
        assert_eq!(c.id().len(), 64);
        assert!(c.rootfs_dir().is_dir() && c.upper_dir().is_dir() && c.work_dir().is_dir());
        assert!(matches!(store.create(config), Err(Error::NameInUse { .. })));
        assert!(
            store.list(false).unwrap().is_empty(),
            "created is not running"
        );
        assert_eq!(store.list(true).unwrap().len(), 1);
        assert_eq!(store.get("web").unwrap().id(), c.id());
        assert_eq!(store.get(&c.id()[..6]).unwrap().name(), "web");
        assert!(matches!(
            store.get("zzz"),
            Err(Error::NoSuchContainer { .. })
        ));
        let doc = c.inspect().unwrap();
        assert_eq!(doc["State"]["Status"], "created");
        assert_eq!(doc["State"]["FinishedAt"], "0001-01-01T00:00:00Z");
        assert_eq!(doc["Name"], "/web");
        c.remove(false).unwrap();
        assert!(store.list(true).unwrap().is_empty());
    }
}
