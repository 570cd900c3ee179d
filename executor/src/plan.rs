//! What to run and how: plain data, built by the solver (RUN) or the cli (`kiln run`).

use crate::seccomp::Profile;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Network mode of the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Network {
    /// Share the host's network namespace (`RUN --network=host`, and RUN's default without pasta).
    #[default]
    Host,
    /// A fresh network namespace with only the loopback interface.
    None,
    /// docker's `bridge`: a namespace of its own with outbound connectivity through a
    /// userspace NAT (pasta) and the published [`ProcessPlan::ports`] (see `network`).
    Bridge,
    /// `--network container:NAME`: the namespace of another container
    /// ([`ProcessPlan::join_netns`]).
    Container,
}

/// The seccomp filter of the sandbox (`--security-opt seccomp=...`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Seccomp {
    /// Docker's default profile ([`Profile::docker_default`]).
    #[default]
    Default,
    /// No filter (`seccomp=unconfined`).
    Unconfined,
    /// A profile in Docker's format, read from `source` (a path, for `inspect`).
    Profile {
        /// Where it came from.
        source: String,
        /// The profile.
        profile: Box<Profile>,
    },
}

/// One extra mount in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountPlan {
    /// Bind-mount a host path (file or directory).
    Bind {
        /// Host path.
        src: PathBuf,
        /// Absolute path in the container.
        dst: String,
        /// Mount read-only.
        readonly: bool,
    },
    /// A fresh tmpfs.
    Tmpfs {
        /// Absolute path in the container.
        dst: String,
        /// Extra mount options (`size=64m`, `mode=1777`, ...).
        options: Vec<String>,
    },
}

impl MountPlan {
    /// Destination inside the container.
    pub fn destination(&self) -> &str {
        match self {
            MountPlan::Bind { dst, .. } | MountPlan::Tmpfs { dst, .. } => dst,
        }
    }
}

/// A process to run in a sandbox: everything the spec is derived from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessPlan {
    /// argv; `args[0]` is looked up in the container's `PATH` by the runtime.
    pub args: Vec<String>,
    /// Environment as `K=V`.
    pub env: Vec<String>,
    /// Working directory, absolute inside the container.
    pub cwd: String,
    /// As in `USER`: "", name, uid, name:group, uid:gid.
    pub user: String,
    /// Hostname; `None` picks a default (see [`crate::build_spec`]).
    pub hostname: Option<String>,
    /// Network namespace mode.
    pub network: Network,
    /// Mount the root filesystem read-only.
    pub readonly_rootfs: bool,
    /// Extra mounts, in order.
    pub mounts: Vec<MountPlan>,
    /// Allocate a terminal.
    pub tty: bool,
    /// Keep stdin open.
    pub stdin: bool,
    /// Capabilities to add to Docker's default set (`NET_ADMIN`, `CAP_NET_ADMIN` or `ALL`).
    pub cap_add: Vec<String>,
    /// Capabilities to drop (`ALL` drops every capability).
    pub cap_drop: Vec<String>,
    /// Memory limit in bytes (swap is limited to the same figure: no swap).
    pub memory: Option<u64>,
    /// CPU quota in CPUs (1.5 = 150ms per 100ms).
    pub cpus: Option<f64>,
    /// Maximum number of processes.
    pub pids_limit: Option<i64>,
    /// Create `cwd` (owned by root, mode 0755) when missing, as RUN does for WORKDIR.
    pub create_cwd: bool,
    /// The seccomp filter.
    #[serde(default)]
    pub seccomp: Seccomp,
    /// Set `no_new_privs` (`--security-opt no-new-privileges`): setuid and file capabilities
    /// no longer raise privileges. Off by default, as in Docker and BuildKit.
    #[serde(default)]
    pub no_new_privileges: bool,
    /// `--privileged`: every capability (`cap_add`/`cap_drop` ignored, as Docker does), no
    /// seccomp, no masked or read-only paths, `/sys` writable, the host's devices.
    #[serde(default)]
    pub privileged: bool,
    /// Published ports (`-p`, `-P`), with [`Network::Bridge`].
    #[serde(default)]
    pub ports: Vec<crate::network::PortMapping>,
    /// Extra `/etc/hosts` entries (`--add-host NAME:IP`, IP already resolved).
    #[serde(default)]
    pub extra_hosts: Vec<(String, String)>,
    /// `--dns` servers (replace the host's).
    #[serde(default)]
    pub dns: Vec<String>,
    /// `--dns-search` domains.
    #[serde(default)]
    pub dns_search: Vec<String>,
    /// User networks joined at start (`--network NAME`, `network connect`), with
    /// [`Network::Bridge`].
    #[serde(default)]
    pub networks: Vec<crate::networks::NetworkAttachment>,
    /// With [`Network::Container`]: the namespace joined (a path), and the container it
    /// belongs to (for `inspect`: `container:<id>`).
    #[serde(default)]
    pub join_netns: Option<(PathBuf, String)>,
    /// With [`Network::Bridge`] and nothing published: the namespace may come from (and go
    /// back to) this process's pool of ready ones (RUN steps; see `network`).
    #[serde(default)]
    pub reuse_network: bool,
}

impl Default for ProcessPlan {
    fn default() -> Self {
        ProcessPlan {
            args: Vec::new(),
            env: Vec::new(),
            cwd: "/".to_owned(),
            user: String::new(),
            hostname: None,
            network: Network::Host,
            readonly_rootfs: false,
            mounts: Vec::new(),
            tty: false,
            stdin: false,
            cap_add: Vec::new(),
            cap_drop: Vec::new(),
            memory: None,
            cpus: None,
            pids_limit: None,
            create_cwd: false,
            seccomp: Seccomp::Default,
            no_new_privileges: false,
            privileged: false,
            ports: Vec::new(),
            extra_hosts: Vec::new(),
            dns: Vec::new(),
            dns_search: Vec::new(),
            networks: Vec::new(),
            join_netns: None,
            reuse_network: false,
        }
    }
}

impl ProcessPlan {
    /// A plan running `args` with everything else at its default.
    pub fn new<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ProcessPlan {
            args: args.into_iter().map(Into::into).collect(),
            ..ProcessPlan::default()
        }
    }
}
