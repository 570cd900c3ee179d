//! The crate's error type.

use std::path::PathBuf;

use kiln_oci::Digest;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the content store, layers, snapshots and image formats.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem or stream error (fs-err errors already name their path).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A raw syscall failed on a path.
    #[error("{op} {path}: {source}")]
    Sys {
        /// What was attempted (e.g. "mknod", "openat2").
        op: &'static str,
        /// The path (relative to the layer root for the applier).
        path: PathBuf,
        /// The errno.
        source: std::io::Error,
    },
    /// The store on disk has a newer format than this kiln understands.
    #[error(
        "store {root} has format version {found}, this kiln supports up to {supported}: upgrade kiln or use another --root"
    )]
    NewerFormat {
        /// Store root.
        root: PathBuf,
        /// Version found on disk.
        found: u32,
        /// Highest version this build understands.
        supported: u32,
    },
    /// The format file is unreadable.
    #[error("store {root} has an invalid format file: {reason}")]
    BadFormatFile {
        /// Store root.
        root: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The redb index failed.
    #[error("index: {0}")]
    Index(#[from] redb::Error),
    /// A blob's content does not match the digest it was announced with.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The announced digest.
        expected: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// A digest string could not be parsed or uses an unsupported algorithm.
    #[error("invalid digest {0:?}")]
    InvalidDigest(String),
    /// A blob is not in the store.
    #[error("blob {0} not found in the store")]
    BlobNotFound(Digest),
    /// JSON could not be parsed or produced.
    #[error("{what}: {source}")]
    Json {
        /// What was being (de)serialized.
        what: String,
        /// The serde error.
        source: serde_json::Error,
    },
    /// Text that is not an image reference.
    #[error(transparent)]
    Reference(#[from] kiln_oci::ReferenceError),
    /// An image config whose fields do not have the types the spec gives them.
    #[error("image config {digest}: {problem}")]
    BadConfig {
        /// The config blob.
        digest: Digest,
        /// The field and what is wrong with it.
        problem: kiln_oci::ConfigError,
    },
    /// A layer archive entry tries to leave the target root or is otherwise unsafe.
    #[error("unsafe layer entry {path:?}: {reason}")]
    UnsafeEntry {
        /// The entry path as written in the archive.
        path: PathBuf,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A layer archive uses a feature the applier refuses.
    #[error("unsupported layer entry {path:?}: {reason}")]
    UnsupportedEntry {
        /// The entry path as written in the archive.
        path: PathBuf,
        /// What is unsupported.
        reason: String,
    },
    /// A hardlink whose target is not a file inside the layer root.
    #[error("hardlink {path:?} points to {target:?}, which is not a file inside the layer root")]
    BadHardlink {
        /// The entry path.
        path: PathBuf,
        /// The link target as written in the archive.
        target: PathBuf,
    },
    /// A file type in a directory cannot be put into a layer (sockets).
    #[error("cannot archive {path}: {reason}")]
    Unarchivable {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// An image name, ID or digest does not resolve.
    #[error("no such image: {0}")]
    ImageNotFound(String),
    /// A short ID matches several images.
    #[error("short image id {0} is ambiguous")]
    AmbiguousId(String),
    /// An image cannot be removed without force (docker rmi semantics).
    #[error(
        "conflict: unable to delete {reference}: image is referenced in multiple repositories ({names}), use force"
    )]
    ImageInUse {
        /// What the user asked to delete.
        reference: String,
        /// The names still pointing at it.
        names: String,
    },
    /// A layer refused at the door, and why.
    #[error("layer {layer}: {problem}")]
    BadLayer {
        /// The layer's blob digest or archive member.
        layer: String,
        /// What is wrong with it.
        problem: Box<Error>,
    },
    /// A manifest, config or archive is malformed.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was malformed (e.g. "manifest", "docker archive").
        what: &'static str,
        /// Details.
        reason: String,
    },
    /// Mounting or unmounting failed.
    #[error("{op} overlay at {target}: {source}")]
    Mount {
        /// The mount step (fsopen, fsconfig lowerdir+, fsmount, move_mount, unmount).
        op: String,
        /// The mount point.
        target: PathBuf,
        /// The errno.
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn sys(op: &'static str, path: impl Into<PathBuf>, e: rustix::io::Errno) -> Self {
        Error::Sys {
            op,
            path: path.into(),
            source: e.into(),
        }
    }

    pub(crate) fn json(what: impl Into<String>, source: serde_json::Error) -> Self {
        Error::Json {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid {
            what,
            reason: reason.into(),
        }
    }
}

macro_rules! redb_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Index(e.into())
            }
        }
    )*};
}
redb_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
