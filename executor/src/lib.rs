//! kiln's sandboxed execution: RUN steps and `kiln run`, over an OCI runtime (runc).
//!
//! - [`ProcessPlan`] is plain data (what to run, as whom, with which mounts and limits);
//!   [`build_spec`] turns it into an OCI runtime spec with Docker's default hardening
//!   (namespaces, Docker's capabilities, its seccomp profile ([`seccomp`]), masked and
//!   read-only paths, device rules), or with `--privileged` what Docker's privileged
//!   containers get.
//! - [`Runtime::run`] writes a bundle and drives the runtime binary in the foreground, streaming
//!   output ([`Output::Channel`]) or on our own stdio ([`Output::Inherit`]); dropping the future
//!   kills and deletes the container. [`cleanup_stale`] removes what a killed kiln left.
//! - [`containers`] keeps containers (`kiln run`, `ps`, `logs`, `stop`, `rm`, `exec`,
//!   `inspect`): a foreground one is supervised by the calling process
//!   ([`Container::run_attached`]), a detached one by a shim: the `kiln` binary re-executed
//!   with [`SHIM_ARG`], which calls [`shim_main`].
//!
//! All fork and namespace work happens in the runtime binary, never in our (async) process, and
//! this crate has no `unsafe`: syscalls go through `rustix`.

mod attach;
pub mod bundle;
pub mod cgroup;
mod cleanup;
pub mod containers;
mod error;
pub mod health;
pub mod logfile;
pub mod network;
pub mod networks;
pub mod plan;
pub mod rootfs;
pub mod runtime;
pub mod seccomp;
mod shim;
pub mod spec;
pub mod user;

pub use attach::{ExecOptions, exec_process};
pub use cleanup::{cleanup_stale, cleanup_stale_with};
pub use containers::{
    Container, ContainerConfig, ContainerState, Containers, INIT_PATH, RestartName, RestartPolicy,
    Status,
};
pub use error::{Error, Result};
pub use health::{Health, HealthConfig};
pub use logfile::{LogOptions, LogStream};
pub use plan::{MountPlan, Network, ProcessPlan, Seccomp};
pub use runtime::{ExitStatus, Output, OutputChunk, RunRequest, Runtime, Sandbox, Stream};
pub use shim::{SHIM_ARG, shim_main};
pub use spec::build_spec;
pub use user::{ResolvedUser, resolve_user};
