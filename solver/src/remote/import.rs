//! Reading caches: the records of every `--cache-from` source, layers fetched lazily.

use super::CacheSpec;
use super::error::{Error, Result};
use super::export::blob_path;
use super::format::{
    CONFIG_MEDIA_TYPE, Decoded, Document, INLINE_KEY, ImportedRecord, MAX_DOCUMENT_SIZE,
};
use crate::distribution::StoreBlobs;
use crate::engine::CacheKey;
use crate::refs::Chain;
use futures::{StreamExt as _, TryStreamExt as _};
use kiln_cache::{LayerInfo, Store};
use kiln_oci::media_type::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
use kiln_oci::{Descriptor, Digest, ImageIndex, ImageManifest, Platform, sha256};
use kiln_registry_client::{Client, Reference};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tracing::{debug, info, instrument, warn};

/// Image config media types (where inline cache metadata lives).
const IMAGE_CONFIG_TYPES: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// Where one source's blobs come from.
#[derive(Debug, Clone)]
enum Origin {
    Registry(Reference),
    Local(PathBuf),
}

impl Origin {
    fn name(&self) -> String {
        match self {
            Origin::Registry(r) => r.familiar(),
            Origin::Local(d) => d.display().to_string(),
        }
    }
}

/// The imported records of all `--cache-from` sources, in order: the first source that has a
/// key wins. Only metadata is fetched up front; layer blobs come with
/// [`RemoteCache::ensure_blobs`].
#[derive(Debug, Default)]
pub struct RemoteCache {
    sources: Vec<Origin>,
    records: HashMap<CacheKey, ImportedRecord>,
    /// Each blob's layer info and the sources that list it, in order.
    blobs: HashMap<Digest, (LayerInfo, Vec<usize>)>,
    /// Cache mounts by id (the first source that has one wins).
    mounts: HashMap<String, LayerInfo>,
    /// One lock per blob being fetched, so concurrent steps download a shared layer once.
    inflight: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
}

impl RemoteCache {
    /// Reads the records of every source, in order. A source that is missing, unreadable,
    /// unauthorized or not a cache contributes nothing and a warning; this never fails.
    #[instrument(skip_all, fields(sources = specs.len()))]
    pub async fn load(
        client: &Client,
        store: &Store,
        specs: &[CacheSpec],
    ) -> (RemoteCache, Vec<String>) {
        // Sources load at once; their records merge in the order given.
        let loads: Vec<_> = specs
            .iter()
            .map(|spec| load_source(client, store, spec))
            .collect();
        let loaded = futures::future::join_all(loads).await;
        let mut cache = RemoteCache::default();
        let mut warnings = Vec::new();
        for result in loaded {
            match result {
                Ok((origin, decoded)) => {
                    info!(source = %origin.name(), records = decoded.records.len(), "cache imported");
                    cache.add(origin, decoded);
                }
                Err(w) => {
                    warn!("{w}");
                    warnings.push(w);
                }
            }
        }
        (cache, warnings)
    }

    fn add(&mut self, origin: Origin, decoded: Decoded) {
        let Decoded {
            layers,
            records,
            mounts,
        } = decoded;
        let index = self.sources.len();
        self.sources.push(origin);
        for m in mounts {
            self.mounts.entry(m.id).or_insert(m.layer);
        }
        for l in layers {
            self.blobs
                .entry(l.digest.clone())
                .or_insert_with(|| (l, Vec::new()))
                .1
                .push(index);
        }
        for r in records {
            self.records.entry(r.key.clone()).or_insert(r);
        }
    }

    /// The contents of the cache mount `id`, as a layer some source lists.
    pub fn cache_mount(&self, id: &str) -> Option<&LayerInfo> {
        self.mounts.get(id)
    }

    /// The layer chain recorded for `key`, if any source has it. Fetches nothing: the chain's
    /// blobs may be absent from the store until [`RemoteCache::ensure_blobs`].
    pub fn lookup(&self, key: &CacheKey) -> Option<Chain> {
        self.records.get(key).map(|r| r.chain.clone())
    }

    /// The whole record for `key` (inputs and description too, for `--explain-cache`).
    #[cfg(test)]
    pub fn record(&self, key: &CacheKey) -> Option<&ImportedRecord> {
        self.records.get(key)
    }

    /// Every imported record (for explaining a miss by the closest record).
    #[cfg(test)]
    pub fn records(&self) -> impl Iterator<Item = &ImportedRecord> {
        self.records.values()
    }

    /// Number of distinct keys imported.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no source gave any record.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The registry repository that lists `layer` (first source first), for cross-repository
    /// mounts when pushing an image made of cached layers. `None` for blobs only a local
    /// directory has.
    #[cfg(test)]
    pub fn source_of(&self, layer: &Digest) -> Option<&Reference> {
        let (_, sources) = self.blobs.get(layer)?;
        sources.iter().find_map(|i| match self.sources.get(*i) {
            Some(Origin::Registry(r)) => Some(r),
            _ => None,
        })
    }

    /// Fetches the layer blobs of `chain` the store lacks (several at once), verified, from the
    /// sources that list them (the next source if one fails), and records each layer's diffID.
    #[cfg(test)]
    pub async fn ensure_blobs(&self, client: &Client, store: &Store, chain: &Chain) -> Result<()> {
        let layers: Vec<&LayerInfo> = chain.layers.iter().map(|l| &l.layer).collect();
        self.fetch_layers(client, store, &layers).await
    }

    /// As [`ensure_blobs`](Self::ensure_blobs) for any layers this cache lists.
    #[instrument(skip_all, fields(layers = layers.len()))]
    pub async fn fetch_layers(
        &self,
        client: &Client,
        store: &Store,
        layers: &[&LayerInfo],
    ) -> Result<()> {
        let mut missing: Vec<&LayerInfo> = Vec::new();
        for l in layers {
            if !store.has_blob(&l.digest) && !missing.iter().any(|m| m.digest == l.digest) {
                missing.push(l);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let fetches: Vec<_> = missing
            .into_iter()
            .map(|l| self.fetch_layer(client, store, l))
            .collect();
        futures::stream::iter(fetches)
            .buffer_unordered(client.options().concurrency.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Whether some source lists this layer blob.
    pub fn lists(&self, layer: &Digest) -> bool {
        self.blobs.contains_key(layer)
    }

    /// The registry repositories of all sources, in order: pass them as `mount_from` when
    /// pushing an image or exporting a cache made of layers this store never downloaded.
    pub fn mount_sources(&self) -> Vec<Reference> {
        self.sources
            .iter()
            .filter_map(|o| match o {
                Origin::Registry(r) => Some(r.clone()),
                Origin::Local(_) => None,
            })
            .collect()
    }

    async fn fetch_layer(&self, client: &Client, store: &Store, layer: &LayerInfo) -> Result<()> {
        let Some((info, sources)) = self.blobs.get(&layer.digest) else {
            return Err(Error::UnknownBlob {
                digest: layer.digest.clone(),
            });
        };
        let lock = {
            let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(info.digest.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;
        if store.has_blob(&info.digest) {
            // Another step fetched it meanwhile.
            return Ok(());
        }
        let mut last = None;
        for i in sources {
            let result = match self.sources.get(*i) {
                Some(Origin::Registry(r)) => {
                    let desc =
                        Descriptor::new(info.media_type.as_str(), info.size, info.digest.clone());
                    client
                        .fetch_blob(r, &desc, &StoreBlobs(store.clone()))
                        .await
                        .map_err(|e| Error::registry(r, e))
                }
                Some(Origin::Local(dir)) => {
                    let (store2, dir, info2) = (store.clone(), dir.clone(), info.clone());
                    tokio::task::spawn_blocking(move || copy_from_dir(&store2, &dir, &info2))
                        .await
                        .unwrap_or_else(|e| {
                            Err(Error::io(PathBuf::new(), std::io::Error::other(e)))
                        })
                }
                None => continue,
            };
            match result {
                Ok(()) => {
                    store.record_layer(info)?;
                    debug!(digest = %info.digest, "cached layer fetched");
                    return Ok(());
                }
                Err(e) => {
                    warn!(digest = %info.digest, error = %crate::error::chain(&e), "fetching cached layer failed");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(Error::UnknownBlob {
            digest: layer.digest.clone(),
        }))
    }
}

/// One source's layers and records, or the warning that replaces them.
async fn load_source(
    client: &Client,
    store: &Store,
    spec: &CacheSpec,
) -> Result<(Origin, Decoded), String> {
    let (origin, loaded) = match spec {
        CacheSpec::Registry { reference, .. } => (
            Origin::Registry(reference.clone()),
            load_registry(client, store, reference).await,
        ),
        CacheSpec::Local { dir, .. } => {
            let d = dir.clone();
            let loaded = tokio::task::spawn_blocking(move || load_local(&d))
                .await
                .unwrap_or_else(|e| Err(Error::io(dir.clone(), std::io::Error::other(e))));
            (Origin::Local(dir.clone()), loaded)
        }
        CacheSpec::Inline => {
            return Err("cache type=inline is an export; to import inline cache, pass the image reference to --cache-from".to_owned());
        }
    };
    let decoded = loaded.and_then(|doc| {
        doc.decode().map_err(|reason| Error::Corrupt {
            origin: origin.name(),
            reason,
        })
    });
    match decoded {
        Ok(decoded) => Ok((origin, decoded)),
        Err(e) => Err(format!("cache {} ignored: {}", origin.name(), detail(&e))),
    }
}

/// What went wrong with a source, without repeating its name.
fn detail(e: &Error) -> String {
    match e {
        Error::Registry { source, .. } => crate::error::chain(source.as_ref()),
        Error::NotACache { reason, .. } => format!("not a kiln build cache: {reason}"),
        Error::Corrupt { reason, .. } => format!("invalid cache metadata: {reason}"),
        Error::Io { path, source } if source.to_string().contains(&path.display().to_string()) => {
            crate::error::chain(source)
        }
        other => crate::error::chain(other),
    }
}

/// A registry cache, or an image whose config carries inline cache metadata.
async fn load_registry(client: &Client, store: &Store, reference: &Reference) -> Result<Document> {
    let accept = [
        OCI_MANIFEST,
        DOCKER_MANIFEST,
        OCI_INDEX,
        DOCKER_MANIFEST_LIST,
    ];
    let m = client
        .get_manifest(reference, &accept)
        .await
        .map_err(|e| Error::registry(reference, e))?;
    let not_a_cache = |reason: String| Error::NotACache {
        origin: reference.familiar(),
        reason,
    };
    let config = if kiln_oci::media_type::is_index(&m.media_type) {
        // An image index: inline metadata of the host platform's image.
        let resolved = client
            .resolve(reference, &Platform::host())
            .await
            .map_err(|e| Error::registry(reference, e))?;
        resolved.config
    } else if kiln_oci::media_type::is_manifest(&m.media_type) {
        let wire: ImageManifest = serde_json::from_slice(&m.bytes).map_err(|e| Error::Corrupt {
            origin: reference.familiar(),
            reason: format!("manifest: {e}"),
        })?;
        wire.config
    } else {
        return Err(not_a_cache(format!("a manifest of type {}", m.media_type)));
    };
    let is_cache = config.media_type == CONFIG_MEDIA_TYPE;
    if !is_cache && !IMAGE_CONFIG_TYPES.contains(&config.media_type.as_str()) {
        return Err(not_a_cache(format!(
            "an artifact with config type {:?}",
            config.media_type
        )));
    }
    let bytes = fetch_small_blob(client, store, reference, &config).await?;
    if is_cache {
        return Document::parse(&bytes).map_err(|reason| Error::Corrupt {
            origin: reference.familiar(),
            reason,
        });
    }
    inline_document(&bytes)
        .ok_or_else(|| not_a_cache("an image without inline cache metadata".to_owned()))?
        .map_err(|reason| Error::Corrupt {
            origin: reference.familiar(),
            reason,
        })
}

/// The inline cache document of an image config: `None` if it has none.
fn inline_document(config: &[u8]) -> Option<Result<Document, String>> {
    let mut v: serde_json::Value = match serde_json::from_slice(config) {
        Ok(v) => v,
        Err(e) => return Some(Err(format!("image config: {e}"))),
    };
    let meta = v.as_object_mut()?.remove(INLINE_KEY)?;
    Some(Document::from_value(meta))
}

/// Downloads a config-sized blob into the store (verified) and reads it.
async fn fetch_small_blob(
    client: &Client,
    store: &Store,
    reference: &Reference,
    d: &Descriptor,
) -> Result<Vec<u8>> {
    if d.size > MAX_DOCUMENT_SIZE {
        return Err(Error::Corrupt {
            origin: reference.familiar(),
            reason: format!(
                "config blob of {} bytes exceeds {MAX_DOCUMENT_SIZE}",
                d.size
            ),
        });
    }
    client
        .fetch_blob(reference, d, &StoreBlobs(store.clone()))
        .await
        .map_err(|e| Error::registry(reference, e))?;
    Ok(store.read_blob(&d.digest)?)
}

/// A local OCI layout cache: the first manifest of `index.json` with a kiln cache config.
fn load_local(dir: &Path) -> Result<Document> {
    let origin = dir.display().to_string();
    let index_path = dir.join("index.json");
    let index = read_limited(&index_path, MAX_DOCUMENT_SIZE)?;
    let index: ImageIndex = serde_json::from_slice(&index).map_err(|e| Error::Corrupt {
        origin: origin.clone(),
        reason: format!("index.json: {e}"),
    })?;
    for entry in &index.manifests {
        if !entry.media_type.is_empty() && entry.media_type != OCI_MANIFEST {
            continue;
        }
        let bytes = read_dir_blob(dir, &entry.digest, entry.size.min(MAX_DOCUMENT_SIZE))?;
        let Ok(m) = serde_json::from_slice::<ImageManifest>(&bytes) else {
            continue;
        };
        if m.config.media_type != CONFIG_MEDIA_TYPE {
            continue;
        }
        let config = read_dir_blob(dir, &m.config.digest, m.config.size.min(MAX_DOCUMENT_SIZE))?;
        return Document::parse(&config).map_err(|reason| Error::Corrupt { origin, reason });
    }
    Err(Error::NotACache {
        origin,
        reason: "index.json lists no kiln cache manifest".to_owned(),
    })
}

fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let f = fs_err::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(Error::Corrupt {
            origin: path.display().to_string(),
            reason: format!("larger than {limit} bytes"),
        });
    }
    Ok(bytes)
}

/// Reads a small blob of a layout directory, verified against its digest.
fn read_dir_blob(dir: &Path, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
    let path = blob_path(dir, digest);
    let bytes = read_limited(&path, limit)?;
    let actual = sha256(&bytes);
    if actual != *digest {
        return Err(Error::DigestMismatch {
            path,
            expected: digest.clone(),
            actual,
        });
    }
    Ok(bytes)
}

/// Copies a layer blob from a layout directory into the store (verified by the store).
fn copy_from_dir(store: &Store, dir: &Path, info: &LayerInfo) -> Result<()> {
    let path = blob_path(dir, &info.digest);
    let f = fs_err::File::open(&path).map_err(|e| Error::io(&path, e))?;
    let mut w = store.blob_writer()?;
    // One byte more than announced is enough to tell a wrong size.
    std::io::copy(&mut f.take(info.size.saturating_add(1)), &mut w)
        .map_err(|e| Error::io(&path, e))?;
    if w.len() != info.size {
        return Err(Error::Corrupt {
            origin: path.display().to_string(),
            reason: format!("blob is {} bytes, the cache says {}", w.len(), info.size),
        });
    }
    w.commit(Some(&info.digest))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_metadata_is_found_under_its_key_only() {
        let doc = super::super::inline_metadata(&[]);
        let with = serde_json::json!({"os": "linux", INLINE_KEY: doc});
        let bytes = serde_json::to_vec(&with).unwrap_or_default();
        assert!(matches!(inline_document(&bytes), Some(Ok(_))));
        let without = br#"{"os":"linux","moby.buildkit.cache.v0":"e30="}"#;
        assert!(inline_document(without).is_none());
        let broken =
            serde_json::to_vec(&serde_json::json!({INLINE_KEY: {"layers": 3}})).unwrap_or_default();
        assert!(matches!(inline_document(&broken), Some(Err(_))));
        assert!(matches!(inline_document(b"[1,2"), Some(Err(_))));
    }
}
