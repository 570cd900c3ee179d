//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while planning, starting or managing a sandboxed process.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No OCI runtime binary could be found.
    #[error(
        "no OCI runtime found ({searched}); install one with `apt-get install runc` or pass --runtime PATH"
    )]
    RuntimeMissing {
        /// Where we looked, for the message.
        searched: String,
    },
    /// An explicitly named runtime does not exist or is not executable.
    #[error(
        "OCI runtime {path} is not an executable file; install runc with `apt-get install runc`"
    )]
    RuntimeNotExecutable {
        /// The path given with --runtime or KILN_RUNTIME.
        path: PathBuf,
    },
    /// `USER` names a user that the image's /etc/passwd lacks.
    #[error("unable to find user {user}: no matching entries in passwd file")]
    UserNotFound {
        /// The user part of `USER`.
        user: String,
    },
    /// `USER` names a group that the image's /etc/group lacks.
    #[error("unable to find group {group}: no matching entries in group file")]
    GroupNotFound {
        /// The group part of `USER`.
        group: String,
    },
    /// A uid or gid is out of range or malformed.
    #[error("invalid user specification {spec:?}: {reason}")]
    InvalidUser {
        /// The `USER` value.
        spec: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A capability name is not known.
    #[error("unknown capability {name:?}")]
    UnknownCapability {
        /// The name as given.
        name: String,
    },
    /// A published host port is taken (docker's message).
    #[error("Bind for {addr} failed: port is already allocated")]
    PortInUse {
        /// `IP:PORT` on the host.
        addr: String,
    },
    /// A network setting or its setup failed (bad `-p`, namespace, pasta).
    #[error("{reason}")]
    Network {
        /// What failed, with its cause.
        reason: String,
    },
    /// No user network has this name or id (docker's message).
    #[error("network {name} not found")]
    NoSuchNetwork {
        /// What was asked for.
        name: String,
    },
    /// A plan field is unusable (relative path, empty args, ...).
    #[error("invalid process plan: {reason}")]
    InvalidPlan {
        /// What is wrong.
        reason: String,
    },
    /// A container id or name has characters the runtime refuses.
    #[error("invalid container id {id:?}: use [A-Za-z0-9_.-], starting with a letter or digit")]
    InvalidId {
        /// The offending id.
        id: String,
    },
    /// A filesystem operation failed; the message names the path.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A path inside the rootfs could not be opened or created.
    #[error("{path} in rootfs {rootfs}: {source}")]
    Rootfs {
        /// The rootfs on the host.
        rootfs: PathBuf,
        /// The path inside the container.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Spawning or talking to the runtime binary failed.
    #[error("running {runtime} {action}: {source}")]
    RuntimeSpawn {
        /// The runtime binary.
        runtime: PathBuf,
        /// Which subcommand.
        action: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The runtime refused to create or start the container.
    #[error("{runtime} {action} failed: {message}")]
    RuntimeFailed {
        /// The runtime binary.
        runtime: PathBuf,
        /// Which subcommand.
        action: &'static str,
        /// The runtime's own error message.
        message: String,
    },
    /// The runtime spec could not be built.
    #[error("building the runtime spec: {0}")]
    Spec(#[from] oci_spec::OciSpecError),
    /// JSON (spec or state file) could not be (de)serialized.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// No container matches a name or id prefix.
    #[error("no such container: {name}")]
    NoSuchContainer {
        /// What was asked for.
        name: String,
    },
    /// An id prefix matches several containers.
    #[error("multiple containers match {name:?}: {matches:?}")]
    AmbiguousContainer {
        /// What was asked for.
        name: String,
        /// The full ids that match.
        matches: Vec<String>,
    },
    /// A container name is already taken.
    #[error("the container name {name:?} is already in use by container {id}")]
    NameInUse {
        /// The requested name.
        name: String,
        /// The container that has it.
        id: String,
    },
    /// An operation needs a running container.
    #[error("container {id} is not running")]
    NotRunning {
        /// The container id.
        id: String,
    },
    /// `rm` without force on a running container.
    #[error("cannot remove container {id}: container is running, stop it first or use force")]
    StillRunning {
        /// The container id.
        id: String,
    },
    /// `pause` of a paused container, `unpause` of one that is not.
    #[error("container {id} {message}")]
    PauseState {
        /// The container id.
        id: String,
        /// `is already paused`, `is not paused`.
        message: &'static str,
    },
    /// The supervisor of a detached container failed to start it.
    #[error("container {id} failed to start: {message}")]
    StartFailed {
        /// The container id.
        id: String,
        /// What the supervisor or runtime said.
        message: String,
    },
    /// A seccomp profile cannot be used.
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::ProfileError),
    /// A signal name or number is not known.
    #[error("invalid signal {signal:?}")]
    InvalidSignal {
        /// The signal as given.
        signal: String,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
