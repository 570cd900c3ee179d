//! Images to and from registries: the registry client's blob storage over the store, pulls that
//! land in the image store, pushes of stored images.

use crate::error::{Error, Result};
use kiln_cache::{BlobWriter, ImageRecord, Store};
use kiln_oci::{Descriptor, Digest, Platform};
use kiln_registry_client::{BlobSink, BlobStore, Client, PushReport, Reference};
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

/// Resolves `reference` in its registry and fetches its manifest and config only: the
/// record of a base image whose layers wait until a step needs them (see
/// [`Store::stage_pulled_image`]). [`finish_pull`] makes it an image of the store.
pub async fn pull_lazily(
    client: &Client,
    store: &Store,
    reference: &Reference,
    platform: &Platform,
) -> Result<ImageRecord> {
    let blobs = StoreBlobs(store.clone());
    let what = || format!("pull {}", reference.familiar());
    let resolved = client
        .resolve(reference, platform)
        .await
        .map_err(|e| Error::other(what(), e))?;
    client
        .fetch_blob(reference, &resolved.config, &blobs)
        .await
        .map_err(|e| Error::other(what(), e))?;
    Ok(store.stage_pulled_image(&resolved.manifest_bytes, &resolved.media_type)?)
}

/// Stores a [lazily pulled](pull_lazily) image as a pull would have, under its name, once
/// every layer is in the store. `false` (and nothing stored) while some layer is not.
pub fn finish_pull(store: &Store, reference: &Reference, rec: &ImageRecord) -> Result<bool> {
    if !rec.layers.iter().all(|l| store.has_blob(&l.digest)) {
        return Ok(false);
    }
    let bytes = store.manifest_bytes(rec)?;
    let stored = store.put_pulled_image(&bytes, &rec.manifest_media_type)?;
    if reference.tag.is_some() || reference.digest.is_none() {
        store.tag(&reference.to_string(), &stored.manifest_digest)?;
    }
    Ok(true)
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
    push_except(client, store, rec, target, mount_from, &[]).await
}

/// A stored image with uncompressed layers (loaded from a docker archive) as it leaves the
/// machine: those layers compressed with the default gzip (once: the blobs are kept and the
/// next push reuses them) and the manifest that lists them; `None` when every layer is
/// compressed already or its blob is not here.
fn compressed_for_push(store: &Store, rec: &ImageRecord) -> Result<Option<(ImageRecord, Vec<u8>)>> {
    use kiln_cache::layer::media_compression;
    let plain = |d: &Descriptor| {
        media_compression(&d.media_type) == Some(kiln_oci::Compression::None)
            && store.has_blob(&d.digest)
    };
    if !rec.manifest.layers.iter().any(plain) {
        return Ok(None);
    }
    let docker = rec.manifest_media_type == kiln_oci::media_type::DOCKER_MANIFEST;
    let mut out = rec.clone();
    for d in out.manifest.layers.iter_mut().filter(|d| plain(d)) {
        let Some(diff_id) = store.diff_id_for_blob(&d.digest)? else {
            continue;
        };
        let layer = kiln_cache::LayerInfo {
            diff_id,
            digest: d.digest.clone(),
            size: d.size,
            media_type: d.media_type.clone(),
        };
        let gz = store.layer_as(&layer, kiln_cache::Encoding::GZIP)?;
        d.digest = gz.digest;
        d.size = gz.size;
        d.media_type = if docker {
            kiln_oci::media_type::DOCKER_LAYER_GZIP.to_owned()
        } else {
            gz.media_type
        };
    }
    let value = serde_json::to_value(&out.manifest).map_err(|e| Error::other("manifest", e))?;
    let bytes = kiln_oci::canonical_json(&value).map_err(|e| Error::other("manifest", e))?;
    out.manifest_digest = kiln_oci::sha256(&bytes);
    Ok(Some((out, bytes)))
}

/// [`push`], leaving out the layers in `placed` (already in the target repository).
pub async fn push_except(
    client: &Client,
    store: &Store,
    rec: &ImageRecord,
    target: &Reference,
    mount_from: &[Reference],
    placed: &[&Digest],
) -> Result<PushReport> {
    let compressed = compressed_for_push(store, rec)?;
    let (rec, bytes) = match &compressed {
        Some((rec, bytes)) => (rec, bytes.clone()),
        None => (rec, store.manifest_bytes(rec)?),
    };
    let mut blobs: Vec<Descriptor> = vec![rec.manifest.config.clone()];
    blobs.extend(
        rec.manifest
            .layers
            .iter()
            .filter(|d| !placed.contains(&&d.digest))
            .cloned(),
    );
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
