//! Per-container cgroup bookkeeping that runc does not do for us: OOM detection and removal of
//! the `/kiln/<id>` parent that [`crate::spec::cgroups_path`] puts every container under.
//!
//! runc deletes the container's own cgroup when it exits, taking its counters with it, so kiln
//! owns the parent `/kiln/<id>`:
//! - cgroup v2: `memory.events` of the parent counts `oom_kill` hierarchically; the limit stays
//!   in the spec.
//! - cgroup v1: OOM counters are not hierarchical, so the memory limit is set on the parent
//!   (moved out of the spec) and an eventfd registered on its `memory.oom_control` before the
//!   container starts fires when the OOM killer runs inside it.

use crate::Result;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// On cgroup v1 the container's own cgroup gets this much more memory than its kiln parent,
/// which enforces the real limit.
pub const V1_LEAF_SLACK: u64 = 4096;

/// Which cgroup hierarchy the host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Legacy or hybrid hierarchy (one mount per controller).
    V1,
    /// Unified hierarchy.
    V2,
}

/// Detects the cgroup version from `/sys/fs/cgroup`.
pub fn version() -> CgroupVersion {
    if Path::new(CGROUP_ROOT).join("cgroup.controllers").exists() {
        CgroupVersion::V2
    } else {
        CgroupVersion::V1
    }
}

/// Whether cgroup v1 has swap accounting (`memory.memsw.*`).
pub fn v1_swap_accounting() -> bool {
    Path::new(CGROUP_ROOT)
        .join("memory/memory.memsw.limit_in_bytes")
        .exists()
}

fn parent_rel(id: &str) -> String {
    format!("kiln/{id}")
}

/// All directories (every v1 hierarchy, or the v2 one) where container `id`'s parent cgroup
/// may live.
fn parent_dirs(id: &str) -> Vec<PathBuf> {
    let rel = parent_rel(id);
    match version() {
        CgroupVersion::V2 => vec![Path::new(CGROUP_ROOT).join(rel)],
        CgroupVersion::V1 => fs_err::read_dir(CGROUP_ROOT)
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                    .map(|e| e.path().join(&rel))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Watches container `id` for OOM kills; create it before the container starts.
#[derive(Debug)]
pub struct OomWatch {
    id: String,
    version: CgroupVersion,
    eventfd: Option<OwnedFd>,
}

impl OomWatch {
    /// Prepares the parent cgroup. On v1 with a memory limit, the limit is applied here (the
    /// caller removes it from the spec) and the OOM eventfd registered.
    pub fn prepare(id: &str, memory: Option<u64>) -> Result<OomWatch> {
        let version = version();
        let mut watch = OomWatch {
            id: id.to_owned(),
            version,
            eventfd: None,
        };
        if let (CgroupVersion::V1, Some(limit)) = (version, memory) {
            let dir = Path::new(CGROUP_ROOT).join("memory").join(parent_rel(id));
            fs_err::create_dir_all(&dir)?;
            fs_err::write(dir.join("memory.limit_in_bytes"), limit.to_string())?;
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                fs_err::write(&memsw, limit.to_string())?;
            }
            let control = fs_err::File::open(dir.join("memory.oom_control"))?;
            let efd = rustix::event::eventfd(
                0,
                rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
            )
            .map_err(std::io::Error::from)?;
            let line = format!("{} {}", efd.as_fd().as_raw_fd(), control.file().as_raw_fd());
            fs_err::OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.event_control"))?
                .write_all(line.as_bytes())?;
            watch.eventfd = Some(efd);
        }
        Ok(watch)
    }

    /// Whether the OOM killer ran in the container so far.
    pub fn oom_killed(&self) -> bool {
        match self.version {
            CgroupVersion::V1 => {
                let Some(efd) = &self.eventfd else {
                    return false;
                };
                let mut buf = [0u8; 8];
                matches!(rustix::io::read(efd, &mut buf), Ok(8) if u64::from_ne_bytes(buf) > 0)
            }
            CgroupVersion::V2 => {
                let path = Path::new(CGROUP_ROOT)
                    .join(parent_rel(&self.id))
                    .join("memory.events");
                fs_err::read_to_string(path)
                    .map(|text| {
                        text.lines().any(|l| {
                            l.strip_prefix("oom_kill ")
                                .and_then(|n| n.trim().parse::<u64>().ok())
                                .is_some_and(|n| n > 0)
                        })
                    })
                    .unwrap_or(false)
            }
        }
    }
}

/// Kills every process left in container `id`'s cgroups (e.g. a half-created container whose
/// runc was killed), then removes its cgroup directories. Missing directories are fine.
pub fn remove(id: &str) {
    for parent in parent_dirs(id) {
        if !parent.exists() {
            continue;
        }
        for dir in [parent.join("ctr"), parent.clone()] {
            for _ in 0..50 {
                let procs = fs_err::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                let pids: Vec<i32> = procs
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect();
                if pids.is_empty() {
                    break;
                }
                for pid in pids {
                    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            if dir.exists()
                && let Err(e) = fs_err::remove_dir(&dir)
            {
                tracing::debug!(error = %e, "removing cgroup");
            }
        }
    }
}
