//! Writing a cache: to a registry as an OCI artifact, or to an OCI image layout directory.

use super::error::{Error, Result};
use super::format::{ARTIFACT_TYPE, CONFIG_MEDIA_TYPE, Document, WireLayer};
use super::{CacheSpec, ExportRecord, MountRecord};
use crate::distribution::StoreBlobs;
use kiln_cache::{Store, parse_digest};
use kiln_oci::media_type::{OCI_INDEX, OCI_MANIFEST};
use kiln_oci::{Descriptor, Digest, sha256};
use kiln_registry_client::{Client, Reference};
use serde_json::json;
use sha2::Digest as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use tracing::{debug, info, instrument};

/// What an export did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport {
    /// Digest of the cache manifest written.
    pub manifest: Digest,
    /// Records exported (after dropping duplicate keys).
    pub records: usize,
    /// Distinct layer blobs the records use.
    pub layers: usize,
    /// Blobs uploaded (config and layers) or, for a directory, copied (config, layers and
    /// manifest).
    pub uploaded: usize,
    /// Blobs the registry or directory already had.
    pub existed: usize,
    /// Blobs mounted from another repository of the registry.
    pub mounted: usize,
}

/// The image config's inline cache metadata for `records`: put it into the image config under
/// the top-level key [`INLINE_KEY`](super::INLINE_KEY). The records' layers must all be layers
/// of that image (inline caches hold the final image's steps only).
pub fn inline_metadata(records: &[ExportRecord]) -> serde_json::Value {
    Document::from_records(records).to_value()
}

/// Exports `records` to a registry or directory cache; see [`export_with`].
#[cfg(test)]
pub async fn export(
    client: &Client,
    store: &Store,
    spec: &CacheSpec,
    records: &[ExportRecord],
) -> Result<ExportReport> {
    export_with(client, store, spec, records, &[], &[]).await
}

/// Exports `records` and the cache `mounts`: every blob first (registry: HEAD, then a cross-repository mount from
/// `mount_from`, then an upload; directory: copied unless present), the manifest last, so a
/// reader sees the old cache or the new one, never a mix. Layer blobs the store lacks must
/// already be in the target repository (or mountable); otherwise the export fails.
#[instrument(skip_all, fields(records = records.len()))]
pub async fn export_with(
    client: &Client,
    store: &Store,
    spec: &CacheSpec,
    records: &[ExportRecord],
    mounts: &[MountRecord],
    mount_from: &[Reference],
) -> Result<ExportReport> {
    let doc = Document::from_records(records).with_mounts(mounts);
    let config = doc.to_bytes();
    let config_digest = sha256(&config);
    let manifest = manifest_bytes(&config_digest, config.len() as u64, doc.wire_layers());
    let layers = layer_descriptors(doc.wire_layers())?;
    let count = doc.record_count();
    match spec {
        CacheSpec::Registry { reference, .. } => {
            store.write_blob(&config)?;
            let mut blobs = vec![Descriptor::new(
                CONFIG_MEDIA_TYPE,
                config.len() as u64,
                config_digest,
            )];
            blobs.extend(layers.iter().cloned());
            let pushed = client
                .push_image(
                    reference,
                    &manifest,
                    OCI_MANIFEST,
                    &blobs,
                    &StoreBlobs(store.clone()),
                    mount_from,
                )
                .await
                .map_err(|e| {
                    match layers
                        .iter()
                        .find(|d| !store.has_blob(&d.digest))
                        .map(|d| d.digest.clone())
                    {
                        // The likely cause: a lazily imported layer nobody fetched.
                        Some(digest)
                            if matches!(e, kiln_registry_client::Error::Store { .. }) =>
                        {
                            Error::MissingBlob { digest }
                        }
                        _ => Error::registry(reference, e),
                    }
                })?;
            info!(cache = %reference, digest = %pushed.digest, records = count, "cache exported");
            Ok(ExportReport {
                manifest: pushed.digest,
                records: count,
                layers: layers.len(),
                uploaded: pushed.uploaded,
                existed: pushed.skipped,
                mounted: pushed.mounted,
            })
        }
        CacheSpec::Local { dir, .. } => {
            let store = store.clone();
            let dir = dir.clone();
            let job = tokio::task::spawn_blocking(move || {
                write_layout(&store, &dir, &config, &manifest, &layers)
            });
            let (digest, uploaded, existed) = job.await.map_err(|e| Error::Io {
                path: PathBuf::new(),
                source: std::io::Error::other(e),
            })??;
            info!(%digest, records = count, "cache exported to a directory");
            Ok(ExportReport {
                manifest: digest,
                records: count,
                layers: doc.wire_layers().len(),
                uploaded,
                existed,
                mounted: 0,
            })
        }
        CacheSpec::Inline => Err(Error::InvalidSpec {
            spec: "type=inline".to_owned(),
            reason: "inline cache metadata goes into the image config (inline_metadata), not through export".to_owned(),
        }),
    }
}

/// The cache manifest (canonical JSON: sorted keys, no white space).
fn manifest_bytes(config: &Digest, config_size: u64, layers: &[WireLayer]) -> Vec<u8> {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size}))
        .collect();
    let m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config.to_string(), "size": config_size},
        "layers": layers,
    });
    serde_json::to_vec(&m).unwrap_or_default()
}

fn layer_descriptors(layers: &[WireLayer]) -> Result<Vec<Descriptor>> {
    layers
        .iter()
        .map(|l| {
            let digest = parse_digest(&l.digest)?;
            Ok(Descriptor::new(l.media_type.as_str(), l.size, digest))
        })
        .collect()
}

/// Writes an OCI image layout: blobs first (each by temp file and rename), `index.json`
/// renamed into place last. Returns the manifest digest, blobs written and blobs present.
fn write_layout(
    store: &Store,
    dir: &Path,
    config: &[u8],
    manifest: &[u8],
    layers: &[Descriptor],
) -> Result<(Digest, usize, usize)> {
    let blobs = dir.join("blobs").join("sha256");
    fs_err::create_dir_all(&blobs).map_err(|e| Error::io(&blobs, e))?;
    let (mut written, mut existed) = (0, 0);
    for d in layers {
        let dest = blob_path(dir, &d.digest);
        if dest.is_file() {
            existed += 1;
            continue;
        }
        if !store.has_blob(&d.digest) {
            return Err(Error::MissingBlob {
                digest: d.digest.clone(),
            });
        }
        let src = store.open_blob(&d.digest)?;
        write_verified(dir, &d.digest, src)?;
        written += 1;
    }
    for bytes in [config, manifest] {
        let digest = sha256(bytes);
        if blob_path(dir, &digest).is_file() {
            existed += 1;
        } else {
            write_verified(dir, &digest, bytes)?;
            written += 1;
        }
    }
    let manifest_digest = sha256(manifest);
    let layout = dir.join("oci-layout");
    if !layout.is_file() {
        replace_file(dir, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "artifactType": ARTIFACT_TYPE,
            "digest": manifest_digest.to_string(),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    let bytes = serde_json::to_vec(&index).unwrap_or_default();
    replace_file(dir, "index.json", &bytes)?;
    debug!(dir = %dir.display(), written, existed, "layout written");
    Ok((manifest_digest, written, existed))
}

/// `DIR/blobs/sha256/<hex>`.
pub(crate) fn blob_path(dir: &Path, d: &Digest) -> PathBuf {
    dir.join("blobs").join(d.algorithm()).join(d.hex())
}

/// Copies `src` into `DIR/blobs/…` through a temp file, verifying the digest before the rename.
fn write_verified(dir: &Path, digest: &Digest, mut src: impl Read) -> Result<()> {
    let dest = blob_path(dir, digest);
    let parent = dest.parent().unwrap_or(dir).to_owned();
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(&parent)
        .map_err(|e| Error::io(&parent, e))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = src.read(&mut buf).map_err(|e| Error::io(&dest, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n])
            .map_err(|e| Error::io(tmp.path(), e))?;
    }
    let actual = Digest::from_hasher(hasher);
    if actual != *digest {
        return Err(Error::DigestMismatch {
            path: dest,
            expected: digest.clone(),
            actual,
        });
    }
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(&dest).map_err(|e| Error::io(&dest, e.error))?;
    Ok(())
}

/// Replaces `DIR/name` atomically (temp file, fsync, rename).
fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let dest = dir.join(name);
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    tmp.write_all(bytes).map_err(|e| Error::io(tmp.path(), e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(&dest).map_err(|e| Error::io(&dest, e.error))?;
    if let Ok(d) = fs_err::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
