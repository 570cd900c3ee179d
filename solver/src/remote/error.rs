//! Errors of the shared build cache.

use kiln_oci::Digest;
use std::path::PathBuf;

/// What can go wrong parsing cache options, exporting or fetching cached blobs. Import
/// problems never surface as errors: [`super::RemoteCache::load`] turns them into warnings.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `--cache-to`/`--cache-from` value that does not parse.
    #[error("invalid cache option {spec:?}: {reason}")]
    InvalidSpec {
        /// The option as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A registry request failed.
    #[error("cache {reference}")]
    Registry {
        /// The cache reference.
        reference: String,
        /// The registry client's error.
        #[source]
        source: Box<kiln_registry_client::Error>,
    },
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] kiln_cache::Error),
    /// A file of a local cache directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The reference or directory holds something that is not a kiln build cache.
    #[error("{origin} is not a kiln build cache: {reason}")]
    NotACache {
        /// The reference or directory.
        origin: String,
        /// What was found instead.
        reason: String,
    },
    /// The cache metadata is unreadable or inconsistent.
    #[error("{origin}: invalid cache metadata: {reason}")]
    Corrupt {
        /// The reference or directory.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// Content did not hash to its digest; nothing was stored.
    #[error("{path}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The file read.
        path: PathBuf,
        /// The digest it should have.
        expected: Digest,
        /// The digest it has.
        actual: Digest,
    },
    /// A layer blob the store lacks and that no cache source lists.
    #[error("layer blob {digest} is neither in the store nor in any cache source")]
    UnknownBlob {
        /// The blob.
        digest: Digest,
    },
    /// A blob an export needs is not in the store.
    #[error("layer blob {digest} is not in the store (fetch it with ensure_blobs first)")]
    MissingBlob {
        /// The blob.
        digest: Digest,
    },
}

/// Results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn registry(
        reference: &kiln_registry_client::Reference,
        source: kiln_registry_client::Error,
    ) -> Error {
        Error::Registry {
            reference: reference.familiar(),
            source: Box::new(source),
        }
    }
}
