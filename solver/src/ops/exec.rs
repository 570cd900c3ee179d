//! `RUN`: a process in the sandbox over an overlay of its input; the upperdir becomes the layer.

use super::OpEnv;
use crate::engine::Job;
use crate::error::{Error, Result};
use crate::ops::step::StepMount;
use crate::refs::{Chain, Ref};
use kiln_executor::{MountPlan, Network, Output, ProcessPlan, RunRequest};
use kiln_graph::{ExecOp, NetworkMode, SecurityMode, Vertex};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Paths the runtime creates in a rootfs when they are missing (mount points). They are the
/// sandbox's, not the step's. The executor already removes the stubs themselves through the
/// mounted rootfs; what only the solver sees is the overlay upperdir, where the parent
/// directories copied up to hold a stub (`/etc` for `/etc/hosts`) stay behind as empty
/// directories. `remove_stubs` drops those (and any stub still there) before the layer is cut.
const MOUNT_STUBS: &[&str] = &[
    "proc",
    "dev",
    "sys",
    "etc/hosts",
    "etc/resolv.conf",
    "etc/hostname",
];

static RUN_SEQ: AtomicU64 = AtomicU64::new(0);

/// Runs an exec op.
pub(crate) async fn run(
    env: &OpEnv,
    job: &Job<'_>,
    vertex: &Vertex,
    exec: &ExecOp,
    inputs: Vec<Ref>,
) -> Result<Ref> {
    let base = match exec.rootfs {
        Some(i) => inputs
            .get(i)
            .map(Ref::chain)
            .ok_or_else(|| Error::other("exec", "rootfs input out of range"))?,
        None => Arc::new(Chain::default()),
    };
    let store = env.store.clone();
    let (mounts, mount_env, _held) = {
        let store = store.clone();
        let exec = exec.clone();
        let secrets = env.secrets.clone();
        let inputs = inputs.clone();
        blocking(move || crate::ops::mounts::prepare(&store, &exec, &inputs, &secrets)).await?
    };
    let mut plan = plan_for(exec, mounts, &env.network)?;
    plan.env.extend(mount_env);
    let base_chain = base.as_ref().clone();
    let step = blocking({
        let store = store.clone();
        move || StepMount::prepare(&store, base)
    })
    .await?;
    let rootfs = step.rootfs();
    let absent = absent_stubs(&rootfs, &plan);

    let n = RUN_SEQ.fetch_add(1, Ordering::Relaxed);
    let id = format!("kiln-{}-{}-{n}", &job.key.hex()[..12], std::process::id());
    let logs = store.root().join("logs");
    let _ = fs_err::create_dir_all(&logs);
    let req = RunRequest {
        id,
        rootfs: rootfs.clone(),
        plan,
        state_dir: store.root().join("executor"),
        log_path: Some(logs.join(format!("{}.log", job.key.hex()))),
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let forward = forward_output(job.events(), job.digest.clone(), rx);
    // The sandboxed process does not hold a job slot: see `Job::outside_jobs`.
    let (status, tail) = job
        .outside_jobs(async { futures::join!(env.runtime.run(req, Output::Channel(tx)), forward) })
        .await;
    let status = status?;
    if !status.success() {
        let command = vertex
            .meta
            .description
            .split_once("] ")
            .map(|(_, c)| c.to_string())
            .unwrap_or_else(|| vertex.meta.description.clone());
        // The state is kept for a debug shell: the upper directory moves into the store.
        let failed = crate::debug::FailedStep {
            id: String::new(),
            created: chrono::Utc::now().timestamp(),
            description: vertex.meta.description.clone(),
            command: shell_command(exec),
            exit_code: status.code,
            exec: exec.clone(),
            base: base_chain,
            inputs: Vec::new(),
        };
        let kept = blocking(move || {
            remove_stubs(&step.upper_dir(), &absent);
            crate::debug::keep(&store, failed, &inputs, |dest| step.keep_upper(dest))
        })
        .await
        .map_err(|e| tracing::warn!("the failed step's state was not kept: {e}"))
        .ok();
        return Err(Error::RunFailed {
            command,
            code: status.code,
            oom_killed: status.oom_killed,
            last_lines: tail,
            kept,
        });
    }
    let opts = env.layer_options();
    let digest = job.digest.clone();
    let chain = blocking(move || {
        remove_stubs(&step.upper_dir(), &absent);
        step.finish(&store, &digest, &opts)
    })
    .await?;
    Ok(Ref::Layers(Arc::new(chain)))
}

/// How a build's RUN steps get their network (`kiln build --network`, `--add-host`). Neither
/// is part of any cache key, as in BuildKit: they change where a step runs, not what it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunNetwork {
    /// The mode of the steps without a `RUN --network` of their own.
    pub mode: NetworkMode,
    /// `--add-host NAME:IP` entries of every step's `/etc/hosts` (IP may be `host-gateway`).
    pub extra_hosts: Vec<(String, String)>,
}

impl RunNetwork {
    /// The sandbox network of a step whose `RUN --network` is `step`.
    fn resolve(&self, step: NetworkMode) -> Network {
        let mode = match step {
            NetworkMode::Default => self.mode,
            other => other,
        };
        match mode {
            NetworkMode::None => Network::None,
            NetworkMode::Host => Network::Host,
            // BuildKit's sandbox: a namespace of its own with outbound access.
            NetworkMode::Default if kiln_executor::network::pasta_available() => Network::Bridge,
            NetworkMode::Default => Network::Host,
        }
    }
}

pub(crate) fn plan_for(
    exec: &ExecOp,
    mounts: Vec<MountPlan>,
    net: &RunNetwork,
) -> Result<ProcessPlan> {
    if exec.security == SecurityMode::Insecure {
        return Err(Error::Unsupported(
            "RUN --security=insecure needs the security.insecure entitlement, which kiln does not grant"
                .to_string(),
        ));
    }
    let mut plan = ProcessPlan::new(exec.args.clone());
    plan.env = exec.env.clone();
    plan.env.extend(exec.proxy_env.iter().cloned());
    plan.cwd = if exec.cwd.is_empty() {
        "/".to_string()
    } else {
        exec.cwd.clone()
    };
    plan.user = exec.user.clone();
    plan.hostname = Some("kiln".to_string());
    plan.network = net.resolve(exec.network);
    // A step's namespace may be a pooled one (nothing is published from a step).
    plan.reuse_network = plan.network == Network::Bridge;
    for (name, ip) in &net.extra_hosts {
        let ip = if ip == "host-gateway" {
            match plan.network {
                Network::Bridge => kiln_executor::network::host_gateway()
                    .map_or_else(|| "127.0.0.1".to_owned(), |g| g.to_string()),
                _ => "127.0.0.1".to_owned(),
            }
        } else {
            ip.clone()
        };
        plan.extra_hosts.push((name.clone(), ip));
    }
    plan.mounts = mounts;
    plan.create_cwd = true;
    Ok(plan)
}

/// The command as a shell's history line: the script of `sh -c SCRIPT`, else the exec form's
/// words.
fn shell_command(exec: &ExecOp) -> String {
    match exec.args.as_slice() {
        [sh, c, script] if sh.ends_with("sh") && c == "-c" => script.clone(),
        args => args.join(" "),
    }
}

/// The mount points (relative to the rootfs) that do not exist yet, walking without following
/// symlinks.
fn absent_stubs(rootfs: &Path, plan: &ProcessPlan) -> Vec<PathBuf> {
    let mut paths: Vec<String> = MOUNT_STUBS.iter().map(|s| s.to_string()).collect();
    for m in &plan.mounts {
        paths.push(m.destination().trim_start_matches('/').to_string());
    }
    paths
        .into_iter()
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .filter(|rel| !exists_no_follow(rootfs, rel))
        .collect()
}

fn exists_no_follow(root: &Path, rel: &Path) -> bool {
    let mut cur = root.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for (i, c) in comps.iter().enumerate() {
        cur.push(c);
        match fs_err::symlink_metadata(&cur) {
            Ok(md) if i + 1 < comps.len() && !md.is_dir() => return true, // a symlink or file: not ours
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    true
}

/// Removes from the upperdir the mount stubs the runtime created (empty files or directories)
/// if any are left, and the parent directories copied up only to hold them.
fn remove_stubs(upper: &Path, absent: &[PathBuf]) {
    for rel in absent {
        let p = upper.join(rel);
        if !exists_no_follow(upper, rel) {
            continue;
        }
        match fs_err::symlink_metadata(&p) {
            Ok(md) if md.is_dir() => {
                let _ = fs_err::remove_dir(&p); // only succeeds when empty
            }
            Ok(md) if md.is_file() && md.len() == 0 => {
                let _ = fs_err::remove_file(&p);
            }
            _ => {}
        }
        // A parent copied up only for the stub is left empty: drop it too, unless it is an
        // opaque directory (the step replaced it) or holds anything.
        let mut parent = rel.parent();
        while let Some(par) = parent {
            if par.as_os_str().is_empty() {
                break;
            }
            let pp = upper.join(par);
            let opaque =
                rustix::fs::lgetxattr(&pp, "trusted.overlay.opaque", &mut [0u8; 4]).is_ok();
            if opaque || fs_err::remove_dir(&pp).is_err() {
                break;
            }
            parent = par.parent();
        }
    }
}

/// Runs blocking store work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::other("worker thread", e))?
}

/// Forwards a step's output chunks to progress events, keeping the last lines for an error.
async fn forward_output(
    job_events: Option<crate::engine::ProgressSender>,
    vertex: kiln_oci::Digest,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<kiln_executor::OutputChunk>,
) -> Vec<String> {
    const KEEP: usize = 20;
    let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut partial = Vec::new();
    while let Some(chunk) = rx.recv().await {
        partial.extend_from_slice(&chunk.data);
        while let Some(pos) = partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = partial.drain(..=pos).collect();
            tail.push_back(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
            if tail.len() > KEEP {
                tail.pop_front();
            }
        }
        if let Some(tx) = &job_events {
            let stream = match chunk.stream {
                kiln_executor::Stream::Stdout => crate::engine::LogStream::Stdout,
                kiln_executor::Stream::Stderr => crate::engine::LogStream::Stderr,
            };
            let _ = tx.send(crate::engine::Event::now(
                vertex.clone(),
                crate::engine::EventKind::Log {
                    stream,
                    data: chunk.data,
                },
            ));
        }
    }
    if !partial.is_empty() {
        tail.push_back(String::from_utf8_lossy(&partial).into_owned());
        if tail.len() > KEEP {
            tail.pop_front();
        }
    }
    tail.into()
}
