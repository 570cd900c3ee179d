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

/// A blob made while it uploads (a layer compressed on its way out): its digest is known only
/// once all of its bytes are out. See [`Client::push_blobs`](crate::Client::push_blobs).
pub trait BlobMaker: Send + Sync {
    /// What is made, for messages (e.g. the source layer's digest).
    fn name(&self) -> String;
    /// Writes the blob's bytes into `out` as they are made, on a blocking thread, keeping
    /// the blob in the store too; returns its descriptor once the store has it. `out` is
    /// flushed once, after the last byte: that ends the upload's body (making the blob
    /// durable may follow, overlapping the registry's answer). A failed write to `out` must
    /// stop it and keep nothing.
    fn make(&self, out: &mut dyn std::io::Write) -> std::io::Result<kiln_oci::Descriptor>;
    /// The blob an earlier [`make`](Self::make) kept, if one did (a retry uploads it from
    /// the store instead of making it again).
    fn made(&self) -> std::io::Result<Option<kiln_oci::Descriptor>>;
}
