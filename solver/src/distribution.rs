//! Images to and from registries: the registry client's blob storage over the store, pulls that
//! land in the image store, pushes of stored images.

use crate::error::{Error, Result};
use kiln_cache::{BlobWriter, ImageRecord, Store};
use kiln_oci::{Descriptor, Digest, Platform};
use kiln_registry_client::{
    BlobMaker, BlobPush, BlobSink, BlobStore, Client, PushBlob, PushReport, Reference,
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

/// A layer stored uncompressed (loaded from a docker archive, or imported) as it leaves the
/// machine: compressed with the default gzip while it uploads, the blob kept and recorded as
/// [`Store::layer_as`] keeps it, so the next push or export reuses it.
struct Compressing {
    store: Store,
    layer: kiln_cache::LayerInfo,
    /// The layer's descriptor in the manifest.
    stored: Descriptor,
    /// The manifest is docker's: the blob gets docker's gzip layer media type.
    docker: bool,
}

impl Compressing {
    fn descriptor(&self, gz: kiln_cache::LayerInfo) -> Descriptor {
        Descriptor {
            media_type: if self.docker {
                kiln_oci::media_type::DOCKER_LAYER_GZIP.to_owned()
            } else {
                gz.media_type
            },
            digest: gz.digest,
            size: gz.size,
            ..self.stored.clone()
        }
    }
}

impl BlobMaker for Compressing {
    fn name(&self) -> String {
        format!("layer {} as gzip", self.layer.digest)
    }
    fn make(&self, out: &mut dyn Write) -> io::Result<Descriptor> {
        let gz = self
            .store
            .layer_as_teed(&self.layer, kiln_cache::Encoding::GZIP, out)
            .map_err(io::Error::other)?;
        tracing::debug!(from = %self.layer.digest, to = %gz.digest, "layer compressed while it uploaded");
        Ok(self.descriptor(gz))
    }
    fn made(&self) -> io::Result<Option<Descriptor>> {
        let gz = self
            .store
            .layer_variant(&self.layer, kiln_cache::Encoding::GZIP)
            .map_err(io::Error::other)?;
        Ok(gz.map(|gz| self.descriptor(gz)))
    }
}

/// How a manifest layer goes out: as stored, as the gzip variant kept from an earlier push,
/// or compressed while it uploads (stored uncompressed, with no variant yet).
fn layer_push(store: &Store, d: &Descriptor, docker: bool) -> Result<PushBlob> {
    use kiln_cache::layer::media_compression;
    if media_compression(&d.media_type) != Some(kiln_oci::Compression::None)
        || !store.has_blob(&d.digest)
    {
        return Ok(PushBlob::Stored(d.clone()));
    }
    let Some(diff_id) = store.diff_id_for_blob(&d.digest)? else {
        return Ok(PushBlob::Stored(d.clone()));
    };
    let compressing = Compressing {
        store: store.clone(),
        layer: kiln_cache::LayerInfo {
            diff_id,
            digest: d.digest.clone(),
            size: d.size,
            media_type: d.media_type.clone(),
        },
        stored: d.clone(),
        docker,
    };
    Ok(
        match compressing.made().map_err(|e| Error::other("layer", e))? {
            Some(kept) => PushBlob::Stored(kept),
            None => PushBlob::Made(std::sync::Arc::new(compressing)),
        },
    )
}

/// [`push`], leaving out the layers in `placed` (already in the target repository). Layers
/// stored uncompressed go out as gzip (see [`layer_push`]); the manifest, which lists the
/// compressed digests, is built once every blob is in and pushed last.
pub async fn push_except(
    client: &Client,
    store: &Store,
    rec: &ImageRecord,
    target: &Reference,
    mount_from: &[Reference],
    placed: &[&Digest],
) -> Result<PushReport> {
    let what = || format!("push {}", target.familiar());
    let docker = rec.manifest_media_type == kiln_oci::media_type::DOCKER_MANIFEST;
    let mut blobs = vec![PushBlob::Stored(rec.manifest.config.clone())];
    // Manifest index of each pushed layer.
    let mut pushed_layers = Vec::new();
    for (i, d) in rec.manifest.layers.iter().enumerate() {
        if placed.contains(&&d.digest) {
            continue;
        }
        blobs.push(layer_push(store, d, docker)?);
        pushed_layers.push(i);
    }
    let pushed = client
        .push_blobs(target, &blobs, &StoreBlobs(store.clone()), mount_from, None)
        .await
        .map_err(|e| Error::other(what(), e))?;
    let mut manifest = rec.manifest.clone();
    for (i, p) in pushed_layers.iter().zip(&pushed[1..]) {
        let layer = &mut manifest.layers[*i];
        layer.media_type = p.descriptor.media_type.clone();
        layer.digest = p.descriptor.digest.clone();
        layer.size = p.descriptor.size;
    }
    let bytes = if manifest.layers == rec.manifest.layers {
        store.manifest_bytes(rec)?
    } else {
        let value = serde_json::to_value(&manifest).map_err(|e| Error::other("manifest", e))?;
        kiln_oci::canonical_json(&value).map_err(|e| Error::other("manifest", e))?
    };
    let digest = client
        .put_manifest(target, &bytes, &rec.manifest_media_type)
        .await
        .map_err(|e| Error::other(what(), e))?;
    let count = |k| pushed.iter().filter(|p| p.outcome == k).count();
    let report = PushReport {
        digest,
        uploaded: count(BlobPush::Uploaded),
        skipped: count(BlobPush::Existed),
        mounted: count(BlobPush::Mounted),
        made: pushed.iter().filter(|p| p.made).count(),
    };
    tracing::info!(digest = %report.digest, report.uploaded, report.made, report.skipped, report.mounted, "pushed");
    Ok(report)
}
