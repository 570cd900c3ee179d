//! The storage this client pulls into and pushes from, implemented by the caller over its store.

use kiln_oci::Digest;

/// Content-addressed blob storage.
pub trait BlobStore: Send + Sync {
    /// Whether the blob is present (and committed).
    fn has_blob(&self, digest: &Digest) -> bool;
    /// The size in bytes of a present blob.
    fn blob_size(&self, digest: &Digest) -> std::io::Result<u64>;
    /// Opens a present blob for reading.
    fn open_blob(&self, digest: &Digest) -> std::io::Result<Box<dyn std::io::Read + Send>>;
    /// A writer that becomes visible only on commit, after its bytes are verified against
    /// `expected`; dropped uncommitted = nothing stored.
    fn begin_blob(&self) -> std::io::Result<Box<dyn BlobSink>>;
}

/// A blob being written; see [`BlobStore::begin_blob`].
pub trait BlobSink: std::io::Write + Send {
    /// Verifies the bytes written against `expected` and makes the blob visible.
    fn commit(self: Box<Self>, expected: &Digest) -> std::io::Result<()>;
}
