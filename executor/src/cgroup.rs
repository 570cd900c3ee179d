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

/// The cgroup directory of container `id`'s processes in `controller` (v1) or the unified
/// hierarchy (v2).
fn leaf(id: &str, controller: &str) -> PathBuf {
    let rel = format!("{}/ctr", parent_rel(id));
    match version() {
        CgroupVersion::V2 => Path::new(CGROUP_ROOT).join(rel),
        CgroupVersion::V1 => Path::new(CGROUP_ROOT).join(controller).join(rel),
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    fs_err::read_to_string(path).ok()?.trim().parse().ok()
}

/// `key value` lines (memory.stat, cpu.stat): the value of `key`.
fn stat_value(path: &Path, key: &str) -> Option<u64> {
    let text = fs_err::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Host pids of the processes in container `id` (`top`).
pub fn procs(id: &str) -> Vec<i32> {
    let text = fs_err::read_to_string(leaf(id, "pids").join("cgroup.procs")).unwrap_or_default();
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// What container `id` uses, from its cgroup's counters (`stats`); a counter the host does
/// not have is 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time of all its processes, in nanoseconds.
    pub cpu_ns: u64,
    /// Memory in use, page cache that can be dropped not counted (as docker shows it).
    pub memory: u64,
    /// Its memory limit (`None`: none set).
    pub memory_limit: Option<u64>,
    /// Bytes read from and written to block devices.
    pub block_read: u64,
    /// Bytes written to block devices.
    pub block_write: u64,
    /// How many tasks it has.
    pub pids: u64,
}

/// Reads container `id`'s [`Usage`].
pub fn usage(id: &str) -> Usage {
    let mut u = Usage::default();
    // Limits at or above this are "none" (v1 writes LONG_MAX rounded to pages).
    let unlimited = |v: u64| v >= 1 << 62;
    match version() {
        CgroupVersion::V1 => {
            u.cpu_ns = read_u64(&leaf(id, "cpuacct").join("cpuacct.usage")).unwrap_or(0);
            let mem = leaf(id, "memory");
            let usage = read_u64(&mem.join("memory.usage_in_bytes")).unwrap_or(0);
            let inactive = stat_value(&mem.join("memory.stat"), "total_inactive_file").unwrap_or(0);
            u.memory = usage.saturating_sub(inactive);
            // kiln sets the limit on the parent (see the module's comment).
            let parent = Path::new(CGROUP_ROOT).join("memory").join(parent_rel(id));
            u.memory_limit = [mem, parent]
                .iter()
                .filter_map(|d| read_u64(&d.join("memory.limit_in_bytes")))
                .filter(|v| !unlimited(*v))
                .min();
            let io = fs_err::read_to_string(
                leaf(id, "blkio").join("blkio.throttle.io_service_bytes_recursive"),
            )
            .unwrap_or_default();
            for line in io.lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                if let [_, op, n] = f.as_slice() {
                    let n: u64 = n.parse().unwrap_or(0);
                    match *op {
                        "Read" => u.block_read += n,
                        "Write" => u.block_write += n,
                        _ => {}
                    }
                }
            }
            u.pids = read_u64(&leaf(id, "pids").join("pids.current")).unwrap_or(0);
        }
        CgroupVersion::V2 => {
            let dir = leaf(id, "");
            u.cpu_ns = stat_value(&dir.join("cpu.stat"), "usage_usec").unwrap_or(0) * 1000;
            let usage = read_u64(&dir.join("memory.current")).unwrap_or(0);
            let inactive = stat_value(&dir.join("memory.stat"), "inactive_file").unwrap_or(0);
            u.memory = usage.saturating_sub(inactive);
            u.memory_limit = read_u64(&dir.join("memory.max")).filter(|v| !unlimited(*v));
            let io = fs_err::read_to_string(dir.join("io.stat")).unwrap_or_default();
            for field in io.split_whitespace() {
                if let Some(n) = field.strip_prefix("rbytes=") {
                    u.block_read += n.parse::<u64>().unwrap_or(0);
                } else if let Some(n) = field.strip_prefix("wbytes=") {
                    u.block_write += n.parse::<u64>().unwrap_or(0);
                }
            }
            u.pids = read_u64(&dir.join("pids.current")).unwrap_or(0);
        }
    }
    u
}
