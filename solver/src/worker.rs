//! The real worker: ops over the store's snapshots and the sandbox. The scheduler decides what
//! runs; this decides what an op means on disk.
//!
//! invariant: every filesystem result is a layer chain in the store ([`Chain`]); a step that
//! changed nothing adds no layer. Cache records map a cache key to the chain it produced.

use crate::context::ContextHasher;
use crate::engine::{BoxError, CacheKey, Job, Worker};
use crate::error::{Error, Result};
use crate::ops;
use crate::refs::{Chain, Ref};
use kiln_cache::{Encoding, LayerInfo, Store};
use kiln_executor::Runtime;
use kiln_graph::{ExecOp, LocalSource, MountKind, Op, SourceOp, Vertex};
use kiln_oci::{Digest, sha256};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// How the worker is set up for one build.
pub struct WorkerOptions {
    pub store: Store,
    pub runtime: Runtime,
    /// Named client directories: `context` → the build context.
    pub contexts: BTreeMap<String, PathBuf>,
    /// Encoding of new layers.
    pub compression: Encoding,
    /// The build's epoch: file times in new layers are clamped to it; `None` keeps them
    /// (`--no-reproducible`). Part of the cache key of every step that writes a layer.
    pub source_date_epoch: Option<i64>,
    /// `--secret id=…`: values for `RUN --mount=type=secret` (never in a key, a layer or a log).
    pub secrets: BTreeMap<String, crate::ops::mounts::SecretSource>,
    /// `--cache-from`: records imported from registries or directories, and the client that
    /// fetches their blobs when (only when) a step needs their bytes.
    pub remote: Option<Arc<RemoteSetup>>,
    /// `--network`, `--add-host` of the RUN steps (in no key).
    pub network: crate::ops::exec::RunNetwork,
}

/// An imported remote cache and the registry client that reads it.
pub struct RemoteSetup {
    pub cache: crate::remote::RemoteCache,
    pub client: Arc<kiln_registry_client::Client>,
    /// Base images resolved without their layers
    /// ([`pull_lazily`](crate::distribution::pull_lazily)): a step that needs a layer of
    /// theirs fetches it from their registry.
    pub bases: Vec<(kiln_registry_client::Reference, kiln_cache::ImageRecord)>,
}

/// Runs ops against the store and the sandbox.
pub struct KilnWorker {
    env: ops::OpEnv,
    contexts: BTreeMap<String, PathBuf>,
    remote: Option<Arc<RemoteSetup>>,
    hasher: ContextHasher,
    /// Held while a cache mount is restored from the imported cache (one at a time, each once).
    restoring: tokio::sync::Mutex<()>,
    /// Bytes each local source selected, by vertex (for its progress line).
    transfers: std::sync::Mutex<BTreeMap<Digest, u64>>,
    /// What the checksum of each local source walked, by vertex, until its ref is made.
    listings: std::sync::Mutex<BTreeMap<Digest, Arc<crate::context::walk::Selected>>>,
}

impl KilnWorker {
    /// A worker over `opts.store`; the context stat cache lives in the store.
    pub fn new(opts: WorkerOptions) -> Result<KilnWorker> {
        let dir = opts.store.root().join("context-cache");
        let hasher = ContextHasher::open(&dir).map_err(|e| Error::other("context cache", e))?;
        Ok(KilnWorker {
            env: ops::OpEnv {
                store: opts.store,
                runtime: opts.runtime,
                compression: opts.compression,
                source_date_epoch: opts.source_date_epoch,
                secrets: opts.secrets,
                network: opts.network,
            },
            contexts: opts.contexts,
            remote: opts.remote,
            hasher,
            restoring: tokio::sync::Mutex::new(()),
            transfers: Default::default(),
            listings: Default::default(),
        })
    }

    /// Fills the cache mounts of `exec` this store has never had from the imported cache
    /// (`--cache-from` of an export with `cache-mounts=`), before the step runs. A mount that
    /// cannot be restored starts empty, as it would without the cache, with a warning.
    async fn restore_cache_mounts(&self, exec: &ExecOp) {
        let Some(remote) = &self.remote else { return };
        for m in &exec.mounts {
            let MountKind::Cache { id, .. } = &m.kind else {
                continue;
            };
            let Some(layer) = remote.cache.cache_mount(id) else {
                continue;
            };
            let _one = self.restoring.lock().await;
            if ops::mounts::cache_mount_dir(self.store(), id).exists() {
                continue;
            }
            let restored = async {
                self.ensure_layers(&[layer]).await?;
                let (store, id, layer) = (self.store().clone(), id.clone(), layer.clone());
                tokio::task::spawn_blocking(move || {
                    ops::mounts::restore_cache_mount(&store, &id, &layer)
                })
                .await
                .map_err(|e| Error::other("cache mount", e))?
            }
            .await;
            match restored {
                Ok(true) => tracing::info!(id = %id, layer = %layer.digest, "cache mount restored"),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    "cache mount {id:?}: not restored from the imported cache: {}",
                    crate::error::chain(&e)
                ),
            }
        }
    }

    /// Persists what was learned about the build context (stat cache).
    pub fn finish(&self) -> Result<()> {
        self.hasher
            .save()
            .map_err(|e| Error::other("context cache", e))
    }

    /// The context hasher (for explaining a miss).
    pub fn hasher(&self) -> &ContextHasher {
        &self.hasher
    }

    /// The named client directories.
    pub fn contexts(&self) -> &BTreeMap<String, PathBuf> {
        &self.contexts
    }

    pub(crate) fn store(&self) -> &Store {
        &self.env.store
    }

    fn context_root(&self, name: &str) -> Result<PathBuf> {
        self.contexts
            .get(name)
            .cloned()
            .ok_or_else(|| Error::other("build context", format!("no context named {name:?}")))
    }

    fn record_key(key: &CacheKey) -> String {
        format!("step/{key}")
    }

    /// Makes every blob of `chain` present in the store, fetching what a remote cache hit left
    /// out; a chain the store has whole costs nothing.
    pub async fn ensure_local(&self, chain: &Chain) -> Result<()> {
        let layers: Vec<&LayerInfo> = chain.layers.iter().map(|l| &l.layer).collect();
        self.ensure_layers(&layers).await
    }

    /// As [`ensure_local`](Self::ensure_local) for some layers: from the remote cache that
    /// lists them, else from the registry of a lazily pulled base image.
    pub async fn ensure_layers(&self, layers: &[&LayerInfo]) -> Result<()> {
        let Some(missing) = layers.iter().find(|l| !self.store().has_blob(&l.digest)) else {
            return Ok(());
        };
        let Some(remote) = &self.remote else {
            return Err(Error::other(
                "layer",
                format!("blob {} is missing from the store", missing.digest),
            ));
        };
        let (cached, bases): (Vec<&LayerInfo>, Vec<&LayerInfo>) = layers
            .iter()
            .filter(|l| !self.store().has_blob(&l.digest))
            .partition(|l| remote.cache.lists(&l.digest));
        let from_bases = futures::future::try_join_all(bases.into_iter().map(|l| async move {
            let Some((reference, _)) = remote
                .bases
                .iter()
                .find(|(_, rec)| rec.layers.iter().any(|b| b.digest == l.digest))
            else {
                return Err(Error::other(
                    "layer",
                    format!("blob {} is missing from the store", l.digest),
                ));
            };
            let desc = kiln_oci::Descriptor::new(l.media_type.as_str(), l.size, l.digest.clone());
            remote
                .client
                .fetch_blob(
                    reference,
                    &desc,
                    &crate::distribution::StoreBlobs(self.store().clone()),
                )
                .await
                .map_err(|e| Error::other(format!("pull {}", reference.familiar()), e))?;
            Ok(self.store().record_layer(l)?)
        }));
        let from_cache = async {
            remote
                .cache
                .fetch_layers(&remote.client, self.store(), &cached)
                .await
                .map_err(|e| Error::other("remote cache", e))
        };
        futures::future::try_join(from_bases, from_cache).await?;
        Ok(())
    }

    /// Pushes an image [staged](crate::ops::export::stage_image) from a chain whose layers
    /// may exist only in the remote cache's registry. A layer the store lacks is put in the
    /// target repository registry-side (it is there already, or it is mounted from a cache
    /// repository of the same registry); only a layer that cannot be is fetched, then
    /// uploaded. The report counts every blob, however it got there.
    pub async fn push_lazily(
        &self,
        client: &kiln_registry_client::Client,
        rec: &kiln_cache::ImageRecord,
        target: &kiln_registry_client::Reference,
        mount_from: &[kiln_registry_client::Reference],
    ) -> Result<kiln_registry_client::PushReport> {
        use futures::{StreamExt as _, TryStreamExt as _};
        use kiln_registry_client::BlobPush;
        let absent: Vec<&LayerInfo> = rec
            .layers
            .iter()
            .filter(|l| !self.store().has_blob(&l.digest))
            .collect();
        let placed: Vec<(&LayerInfo, Option<BlobPush>)> = futures::stream::iter(absent)
            .map(|l| async move {
                let placed = client.place_blob(target, &l.digest, mount_from).await?;
                Ok::<_, kiln_registry_client::Error>((l, placed))
            })
            .buffer_unordered(client.options().concurrency.max(1))
            .try_collect()
            .await
            .map_err(|e| Error::other(format!("push {}", target.familiar()), e))?;
        let fetch: Vec<&LayerInfo> = placed
            .iter()
            .filter(|(_, p)| p.is_none())
            .map(|(l, _)| *l)
            .collect();
        self.ensure_layers(&fetch).await?;
        let done: Vec<&Digest> = placed
            .iter()
            .filter(|(_, p)| p.is_some())
            .map(|(l, _)| &l.digest)
            .collect();
        let mut report =
            crate::distribution::push_except(client, self.store(), rec, target, mount_from, &done)
                .await?;
        for (_, p) in &placed {
            match p {
                Some(BlobPush::Mounted) => report.mounted += 1,
                Some(_) => report.skipped += 1,
                None => {}
            }
        }
        Ok(report)
    }

    /// A base image resolved without its layers, by manifest digest.
    fn lazy_base(&self, digest: Option<&Digest>) -> Option<&kiln_cache::ImageRecord> {
        let digest = digest?;
        let remote = self.remote.as_ref()?;
        remote
            .bases
            .iter()
            .map(|(_, rec)| rec)
            .find(|rec| rec.manifest_digest == *digest)
    }

    /// The chain recorded for a cache key, locally or in the imported remote cache.
    pub fn record(&self, key: &CacheKey) -> Option<Chain> {
        if let Ok(Some(bytes)) = self.store().cache_get(&Self::record_key(key))
            && let Ok(chain) = serde_json::from_slice::<Chain>(&bytes)
        {
            return Some(chain);
        }
        self.remote.as_ref().and_then(|r| r.cache.lookup(key))
    }
}

/// sha256 over length-prefixed parts (no ambiguity between `ab`+`c` and `a`+`bc`).
fn key_of(parts: &[&[u8]]) -> Digest {
    let mut buf = Vec::new();
    for p in parts {
        buf.extend_from_slice(&(p.len() as u64).to_be_bytes());
        buf.extend_from_slice(p);
    }
    sha256(&buf)
}

impl Worker for KilnWorker {
    fn fresh_status(&self, digest: &Digest) -> Option<String> {
        let bytes = *self
            .transfers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest)?;
        Some(format!(
            "transferring context: {} done",
            crate::engine::human_size(bytes)
        ))
    }

    type Output = Ref;

    async fn cache_key(
        &self,
        digest: &Digest,
        vertex: &Vertex,
        input_keys: &[CacheKey],
    ) -> Result<CacheKey, BoxError> {
        let d = digest.to_string();
        Ok(match &vertex.op {
            Op::Source(SourceOp::Image {
                reference, digest, ..
            }) => {
                let id = digest
                    .as_ref()
                    .map(|d| d.to_string())
                    .unwrap_or(reference.clone());
                key_of(&[b"image", id.as_bytes()])
            }
            Op::Source(SourceOp::Local(src)) => {
                let root = self.context_root(&src.name)?;
                let ignore = crate::context::Matcher::new(&src.exclude)?;
                let (sum, stats, listing) =
                    self.hasher.checksum_listed(&root, &src.include, &ignore)?;
                self.transfers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(digest.clone(), stats.bytes);
                self.listings
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(digest.clone(), Arc::new(listing));
                key_of(&[b"local", d.as_bytes(), sum.to_string().as_bytes()])
            }
            Op::Source(SourceOp::Http {
                url,
                checksum,
                filename,
            }) => {
                let content = match checksum {
                    Some(c) => ops::http::parse_checksum(c)?,
                    // Without a checksum the content is the key: fetch it now.
                    None => {
                        ops::http::fetch(self.store(), url, filename, None)
                            .await?
                            .digest
                    }
                };
                key_of(&[b"http", url.as_bytes(), content.to_string().as_bytes()])
            }
            Op::Exec(_) | Op::File(_) | Op::Merge => {
                let keys: Vec<String> = input_keys.iter().map(|k| k.to_string()).collect();
                let mut parts: Vec<&[u8]> = vec![b"op", d.as_bytes()];
                parts.extend(keys.iter().map(|k| k.as_bytes()));
                // A layer's file times depend on the epoch they were clamped to: the default
                // (0) adds nothing, so keys stay as they were; any other epoch, or none at all
                // (wall-clock times), keys its own records.
                let epoch = match self.env.source_date_epoch {
                    Some(0) => None,
                    Some(e) => Some(format!("epoch {e}")),
                    None => Some("wall-clock".to_string()),
                };
                if matches!(vertex.op, Op::Exec(_) | Op::File(_))
                    && let Some(e) = &epoch
                {
                    parts.push(e.as_bytes());
                }
                key_of(&parts)
            }
        })
    }

    async fn lookup(&self, key: &CacheKey, vertex: &Vertex) -> Result<Option<Ref>, BoxError> {
        match &vertex.op {
            Op::Source(SourceOp::Image {
                reference, digest, ..
            }) => {
                let step = vertex.digest();
                let chain =
                    match ops::source::image_chain(self.store(), reference, digest.as_ref(), &step)
                    {
                        Ok(chain) => chain,
                        Err(e @ Error::MissingImage { .. }) => {
                            match self.lazy_base(digest.as_ref()) {
                                Some(rec) => ops::source::chain_of(rec.layers.clone(), &step),
                                None => return Err(e.into()),
                            }
                        }
                        Err(e) => return Err(e.into()),
                    };
                Ok(Some(Ref::Layers(Arc::new(chain))))
            }
            Op::Source(SourceOp::Local(src)) => Ok(Some(Ref::Local {
                root: self.context_root(&src.name)?,
                source: src.clone(),
                listing: self
                    .listings
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&vertex.digest()),
            })),
            Op::Source(SourceOp::Http {
                url,
                checksum,
                filename,
            }) => {
                let want = checksum
                    .as_deref()
                    .map(ops::http::parse_checksum)
                    .transpose()?;
                Ok(
                    ops::http::cached(self.store(), url, filename, want.as_ref()).map(|d| {
                        Ref::Local {
                            root: d.dir,
                            source: LocalSource {
                                name: "http".to_string(),
                                include: vec![d.filename],
                                exclude: Vec::new(),
                            },
                            listing: None,
                        }
                    }),
                )
            }
            Op::Exec(_) | Op::File(_) | Op::Merge => {
                let Some(bytes) = self.store().cache_get(&Self::record_key(key))? else {
                    // Lazy remote hit: the chain's blobs are fetched only when bytes are needed.
                    if let Some(remote) = &self.remote
                        && let Some(chain) = remote.cache.lookup(key)
                    {
                        return Ok(Some(Ref::Layers(Arc::new(chain))));
                    }
                    return Ok(None);
                };
                let chain: Chain = match serde_json::from_slice(&bytes) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(%key, "ignoring unreadable cache record: {e}");
                        return Ok(None);
                    }
                };
                // A record is only usable while its blobs are all there.
                if chain
                    .layers
                    .iter()
                    .all(|l| self.store().has_blob(&l.layer.digest))
                {
                    Ok(Some(Ref::Layers(Arc::new(chain))))
                } else {
                    Ok(None)
                }
            }
        }
    }

    async fn execute(
        &self,
        job: Job<'_>,
        vertex: &Vertex,
        inputs: Vec<Ref>,
    ) -> Result<Ref, BoxError> {
        for input in &inputs {
            if let Ref::Layers(chain) = input {
                self.ensure_local(chain).await?;
            }
        }
        let out = match &vertex.op {
            Op::Exec(exec) => {
                self.restore_cache_mounts(exec).await;
                ops::exec::run(&self.env, &job, vertex, exec, inputs).await?
            }
            Op::File(file) => ops::file::run(&self.env, &job, file, inputs).await?,
            Op::Source(SourceOp::Http {
                url,
                checksum,
                filename,
            }) => {
                let want = checksum
                    .as_deref()
                    .map(ops::http::parse_checksum)
                    .transpose()?;
                let d = ops::http::fetch(self.store(), url, filename, want.as_ref()).await?;
                Ref::Local {
                    root: d.dir,
                    source: LocalSource {
                        name: "http".to_string(),
                        include: vec![d.filename],
                        exclude: Vec::new(),
                    },
                    listing: None,
                }
            }
            Op::Source(_) => {
                return Err(Box::new(Error::Unsupported(
                    "source ops are resolved by lookup".to_string(),
                )));
            }
            Op::Merge => {
                return Err(Box::new(Error::Unsupported(
                    "merge (COPY --link) is not supported yet".to_string(),
                )));
            }
        };
        Ok(out)
    }

    async fn save(&self, key: &CacheKey, vertex: &Vertex, output: &Ref) -> Result<(), BoxError> {
        if let (Op::Exec(_) | Op::File(_) | Op::Merge, Ref::Layers(chain)) = (&vertex.op, output) {
            let bytes = serde_json::to_vec(chain.as_ref())?;
            self.store().cache_put(&Self::record_key(key), &bytes)?;
        }
        Ok(())
    }
}
