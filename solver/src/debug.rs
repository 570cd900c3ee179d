//! Failed steps kept for a debug shell (`kiln build --on-error=shell`, `kiln debug shell`).
//!
//! When a `RUN` fails, its filesystem state is kept: the overlay upper directory as the
//! process left it (moved, not copied: one rename), the chain below it, the exec op (args,
//! env, workdir, user, mounts) and the inputs its mounts read. The chain's blobs are held by a
//! store lease (`debug/<id>`) so no prune or GC removes them while the state is kept. A shell
//! started in it sees exactly the failed process's filesystem (the kept upper directory is the
//! top lower of a fresh overlay, so the shell's own changes never alter the state) with the
//! same environment, working directory, user and `RUN --mount`s, and the failed command in its
//! history (`HISTFILE=/.kiln_history`).
//!
//! Layout: `<root>/debug/<id>/state.json` (written last, through a rename: a state without it
//! is incomplete and swept) and `<root>/debug/<id>/upper/`. Secrets are never written there:
//! the op names secret ids only and a shell gets their values from `--secret` again; what a
//! failed command itself copied out of a secret mount into the filesystem is in the state, as
//! it would be in a layer, which is why states are private to the store's owner (0700).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_executor::{ExitStatus, Network, Output, RunRequest};
use kiln_graph::{ExecOp, LocalSource};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::host::{Host, tokio_runtime};
use crate::ops::mounts::SecretSource;
use crate::refs::{Chain, Ref};

/// How many failed steps a store keeps; saving one more drops the oldest.
pub const MAX_KEPT: usize = 20;
const STATE_FILE: &str = "state.json";

/// A failed `RUN` step, kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedStep {
    /// 12 hex digits.
    pub id: String,
    /// Unix seconds.
    pub created: i64,
    /// The step as the progress showed it (`[build 2/3] RUN make`).
    pub description: String,
    /// The command as written (`make`, or the exec form joined).
    pub command: String,
    /// Its exit code.
    pub exit_code: i32,
    /// The process and its mounts.
    pub exec: ExecOp,
    /// The filesystem the step started from.
    pub base: Chain,
    /// The inputs the op's mounts refer to by index.
    pub inputs: Vec<SavedInput>,
}

/// An input of a failed step, as a shell needs it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum SavedInput {
    Layers { chain: Chain },
    Local { root: PathBuf, source: LocalSource },
}

impl SavedInput {
    fn from_ref(r: &Ref) -> SavedInput {
        match r {
            Ref::Layers(c) => SavedInput::Layers {
                chain: c.as_ref().clone(),
            },
            Ref::Local { root, source, .. } => SavedInput::Local {
                root: root.clone(),
                source: source.clone(),
            },
        }
    }

    fn to_ref(&self) -> Ref {
        match self {
            SavedInput::Layers { chain } => Ref::Layers(std::sync::Arc::new(chain.clone())),
            SavedInput::Local { root, source } => Ref::Local {
                root: root.clone(),
                source: source.clone(),
                listing: None,
            },
        }
    }
}

fn debug_dir(store: &kiln_cache::Store) -> PathBuf {
    store.root().join("debug")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Keeps a failed step: `upper` (the step's upper directory, unmounted) is moved into the
/// state. Returns the state's id.
pub(crate) fn keep(
    store: &kiln_cache::Store,
    mut step: FailedStep,
    inputs: &[Ref],
    move_upper: impl FnOnce(&Path) -> Result<()>,
) -> Result<String> {
    let root = debug_dir(store);
    fs_err::create_dir_all(&root).map_err(io(&root))?;
    let _ = rustix::fs::chmod(&root, rustix::fs::Mode::from_raw_mode(0o700));
    let seed = format!(
        "{}{}{}{:?}",
        step.description,
        std::process::id(),
        step.created,
        std::time::SystemTime::now()
    );
    step.id = kiln_oci::sha256(seed.as_bytes()).hex()[..12].to_owned();
    step.inputs = inputs.iter().map(SavedInput::from_ref).collect();
    let dir = root.join(&step.id);
    fs_err::create_dir(&dir).map_err(io(&dir))?;
    move_upper(&dir.join("upper"))?;
    // Hold every blob the state needs before it is visible.
    let mut blobs: Vec<kiln_oci::Digest> = step
        .base
        .layers
        .iter()
        .map(|l| l.layer.digest.clone())
        .collect();
    for i in &step.inputs {
        if let SavedInput::Layers { chain } = i {
            blobs.extend(chain.layers.iter().map(|l| l.layer.digest.clone()));
        }
    }
    store.lease(&lease_name(&step.id), &blobs)?;
    let json = serde_json::to_vec_pretty(&step).map_err(|e| Error::other("debug state", e))?;
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    fs_err::write(&tmp, json)
        .and_then(|()| fs_err::rename(&tmp, dir.join(STATE_FILE)))
        .map_err(io(&dir))?;
    // Only the newest are kept.
    if let Ok(all) = list(store) {
        for old in all.iter().skip(MAX_KEPT) {
            let _ = remove(store, &old.id);
        }
    }
    Ok(step.id)
}

fn lease_name(id: &str) -> String {
    format!("debug/{id}")
}

/// Every kept failed step, newest first. A directory without its state file (a save a killed
/// kiln did not finish) is removed.
pub(crate) fn list(store: &kiln_cache::Store) -> Result<Vec<FailedStep>> {
    let root = debug_dir(store);
    let Ok(entries) = fs_err::read_dir(&root) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let dir = e.path();
        match fs_err::read(dir.join(STATE_FILE)) {
            Ok(bytes) => match serde_json::from_slice::<FailedStep>(&bytes) {
                Ok(s) => out.push(s),
                Err(err) => tracing::warn!("{}: unreadable debug state: {err}", dir.display()),
            },
            Err(_) => {
                let young = fs_err::metadata(&dir)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age.as_secs() < 60);
                if !young {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let _ = store.release(&lease_name(&name));
                    let _ = fs_err::remove_dir_all(&dir);
                }
            }
        }
    }
    out.sort_by(|a, b| b.created.cmp(&a.created).then(b.id.cmp(&a.id)));
    Ok(out)
}

/// Removes a kept step and its lease.
pub(crate) fn remove(store: &kiln_cache::Store, id: &str) -> Result<()> {
    let dir = debug_dir(store).join(id);
    // The state file first: a half-removed state is no state.
    let _ = fs_err::remove_file(dir.join(STATE_FILE));
    store.release(&lease_name(id))?;
    if dir.exists() {
        fs_err::remove_dir_all(&dir).map_err(io(&dir))?;
    }
    Ok(())
}

/// What a debug shell runs and with what.
#[derive(Debug, Clone, Default)]
pub struct ShellOptions {
    /// The command (default: `/bin/sh`, else `sh`).
    pub command: Vec<String>,
    /// `--secret` values for the step's secret mounts.
    pub secrets: BTreeMap<String, SecretSource>,
    /// Give the shell a terminal (stdin is one).
    pub tty: bool,
}

impl Host {
    /// The kept failed steps, newest first.
    pub fn failed_steps(&self) -> Result<Vec<FailedStep>> {
        list(self.store())
    }

    /// The kept step whose id starts with `prefix` (the newest with no prefix).
    pub fn failed_step(&self, prefix: Option<&str>) -> Result<FailedStep> {
        let all = self.failed_steps()?;
        let found: Vec<&FailedStep> = match prefix {
            None => all.iter().take(1).collect(),
            Some(p) => all.iter().filter(|s| s.id.starts_with(p)).collect(),
        };
        match found.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Error::other(
                "debug shell",
                match prefix {
                    Some(p) => format!("no failed step {p:?} is kept (kiln debug ls lists them)"),
                    None => "no failed step is kept: a RUN that fails keeps its state".to_owned(),
                },
            )),
            _ => Err(Error::other(
                "debug shell",
                format!(
                    "{:?} names several kept steps; give more of the id",
                    prefix.unwrap_or("")
                ),
            )),
        }
    }

    /// Removes a kept failed step.
    pub fn remove_failed_step(&self, id: &str) -> Result<()> {
        remove(self.store(), id)
    }

    /// Runs a shell (or `opts.command`) in the state of `step` on this process's stdio.
    pub fn debug_shell(&self, step: &FailedStep, opts: &ShellOptions) -> Result<ExitStatus> {
        let store = self.store();
        let runtime = self.runtime()?;
        let upper_kept = debug_dir(store).join(&step.id).join("upper");
        let snapshot = store.prepare_snapshot(&step.base.infos())?;
        let scratch = tempfile::Builder::new()
            .prefix("debug-")
            .tempdir_in(store.tmp_dir())
            .map_err(io(&store.tmp_dir()))?;
        for sub in ["upper", "work", "rootfs"] {
            let p = scratch.path().join(sub);
            fs_err::create_dir(&p).map_err(io(&p))?;
        }
        // The failed command, for the shell's history (ash and bash read HISTFILE).
        let history = scratch.path().join("upper").join(".kiln_history");
        fs_err::write(&history, format!("{}\n", step.command)).map_err(io(&history))?;
        let mut lowers = snapshot.lowerdirs.clone();
        lowers.push(upper_kept);
        let rootfs = scratch.path().join("rootfs");
        let guard = kiln_cache::mount_overlay(
            &lowers,
            Some((&scratch.path().join("upper"), &scratch.path().join("work"))),
            &rootfs,
        )?;
        let inputs: Vec<Ref> = step.inputs.iter().map(SavedInput::to_ref).collect();
        let (mounts, mount_env, _held) =
            crate::ops::mounts::prepare(store, &step.exec, &inputs, &opts.secrets)?;
        let mut plan = crate::ops::exec::plan_for(
            &step.exec,
            mounts,
            // The shell keeps the host's network unless the step had none.
            &crate::session::RunNetwork {
                mode: kiln_graph::NetworkMode::Host,
                extra_hosts: Vec::new(),
            },
        )?;
        plan.env.extend(mount_env);
        plan.env.push("HISTFILE=/.kiln_history".to_owned());
        plan.args = if opts.command.is_empty() {
            vec!["/bin/sh".to_owned()]
        } else {
            opts.command.clone()
        };
        plan.tty = opts.tty;
        plan.stdin = true;
        if step.exec.network == kiln_graph::NetworkMode::None {
            plan.network = Network::None;
        }
        let req = RunRequest {
            id: format!("kiln-debug-{}-{}", step.id, std::process::id()),
            rootfs,
            plan,
            state_dir: store.root().join("executor"),
            log_path: None,
        };
        let status = tokio_runtime()?.block_on(runtime.run(req, Output::Inherit));
        let _ = guard.unmount();
        Ok(status?)
    }
}
