//! Images to and from registries: the registry client's blob storage over the store, pulls that
//! land in the image store, pushes of stored images.

use crate::error::{Error, Result};
use kiln_cache::{BlobWriter, ImageRecord, Store};
use kiln_registry_client::{
    BlobSink, BlobStore, Client, Descriptor, Digest, Platform, PushReport, Reference,
};
use std::io::{self, Read, Write};

/// The store as the registry client's blob storage (atomic, verified writes).
pub struct StoreBlobs(pub Store);

struct Sink(BlobWriter);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl BlobSink for Sink {
    fn commit(self: Box<Self>, expected: &Digest) -> io::Result<()> {
        self.0
            .commit(Some(expected))
            .map(|_| ())
            .map_err(io::Error::other)
    }
}

impl BlobStore for StoreBlobs {
    fn has_blob(&self, digest: &Digest) -> bool {
        self.0.has_blob(digest)
    }
    fn blob_size(&self, digest: &Digest) -> io::Result<u64> {
        Ok(fs_err::metadata(self.0.blob_path(digest))?.len())
    }
    fn open_blob(&self, digest: &Digest) -> io::Result<Box<dyn Read + Send>> {
        let f = self.0.open_blob(digest).map_err(io::Error::other)?;
        Ok(Box::new(f))
    }
    fn begin_blob(&self) -> io::Result<Box<dyn BlobSink>> {
        let w = self.0.blob_writer().map_err(io::Error::other)?;
        Ok(Box::new(Sink(w)))
    }
}

/// The registry client's platform for a graph platform.
pub fn platform(p: &crate::graph::Platform) -> Platform {
    Platform {
        os: p.os.clone(),
        architecture: p.architecture.clone(),
        variant: p.variant.clone(),
    }
}

/// Pulls `reference` into the store (what the store has is not fetched again) and tags it.
pub async fn pull(
    client: &Client,
    store: &Store,
    reference: &Reference,
    platform: &Platform,
) -> Result<ImageRecord> {
    let blobs = StoreBlobs(store.clone());
    let resolved = client
        .pull(reference, platform, &blobs, None)
        .await
        .map_err(|e| Error::other(format!("pull {}", reference.familiar()), e))?;
    let rec = store.put_pulled_image(&resolved.manifest_bytes, &resolved.media_type)?;
    if reference.tag.is_some() || reference.digest.is_none() {
        store.tag(&reference.to_string(), &rec.manifest_digest)?;
    }
    Ok(rec)
}

/// Pushes a stored image to `target`: blobs the registry has are skipped, blobs in another
/// repository of the same registry (`mount_from`) are mounted, the rest uploaded.
pub async fn push(
    client: &Client,
    store: &Store,
    rec: &ImageRecord,
    target: &Reference,
    mount_from: &[Reference],
) -> Result<PushReport> {
    let bytes = store.manifest_bytes(rec)?;
    let mut blobs: Vec<Descriptor> = vec![rec.manifest.config().clone()];
    blobs.extend(rec.manifest.layers().iter().cloned());
    client
        .push_image(
            target,
            &bytes,
            &rec.manifest_media_type,
            &blobs,
            &StoreBlobs(store.clone()),
            mount_from,
        )
        .await
        .map_err(|e| Error::other(format!("push {}", target.familiar()), e))
}
