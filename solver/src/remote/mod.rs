//! Shared build cache through OCI registries and local directories (issue 6).
//!
//! `--cache-to` exports cache records (a step's cache key → the layer chain it produced); a
//! later build on any machine imports them with `--cache-from`, finds its steps by key, and
//! fetches a layer blob only when something needs its bytes.
//!
//! # Format
//!
//! A cache is an OCI image manifest (`application/vnd.oci.image.manifest.v1+json`) with
//! `artifactType` [`ARTIFACT_TYPE`] (`application/vnd.kiln.cache.v1`):
//!
//! ```text
//! { "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
//!   "artifactType": "application/vnd.kiln.cache.v1",
//!   "config": { "mediaType": "application/vnd.kiln.cache.config.v1+json", "digest": …, "size": … },
//!   "layers": [ every layer blob the records use, as ordinary layer descriptors ] }
//! ```
//!
//! The config blob ([`CONFIG_MEDIA_TYPE`]) is the whole record set, self-contained:
//!
//! ```text
//! { "schemaVersion": 1,
//!   "layers":  [ { "mediaType": …, "digest": "sha256:…", "size": N, "diffID": "sha256:…" }, … ],
//!   "records": [ { "key": "sha256:…",                       // the step's cache key
//!                  "chain": [ { "layer": 0, "step": "sha256:…" }, … ],  // bottom first; index
//!                                                           // into "layers" + the vertex
//!                  "inputs": [ "sha256:…" ],                // the inputs' cache keys
//!                  "description": "RUN make" }, … ],
//!   "cacheMounts": [ { "id": "go-build", "layer": 3 }, … ] }   // only with cache-mounts=
//! ```
//!
//! `cacheMounts` (export option `cache-mounts=true|ID;ID`) carries the directories of `RUN
//! --mount=type=cache` as deterministic layers (an unchanged directory is the same blob, so it
//! uploads nothing); an import restores one into a store that has never had that cache id,
//! before the first step that mounts it.
//!
//! `layers` lists each blob once, in order of first use by the records sorted by key; the
//! manifest's `layers` are the same blobs in the same order, so the registry keeps them alive
//! and they can be mounted into other repositories. The same records always give the same
//! bytes, so re-exporting an unchanged cache changes nothing.
//!
//! - **Registry** (`type=registry,ref=…`): every blob is pushed first (HEAD, then a
//!   cross-repository mount, then an upload: a blob the registry has is never uploaded again,
//!   layers are shared with images), the manifest PUT last. The PUT is atomic at the registry
//!   and the config is self-contained, so concurrent exporters to one ref leave either record
//!   set, never a mix.
//! - **Local** (`type=local,dest=DIR` / `src=DIR`): an OCI image layout (`oci-layout`,
//!   `blobs/sha256/<hex>`, `index.json` listing the cache manifest). Blobs are written through
//!   temp files and renamed; `index.json` is replaced by rename last.
//! - **Inline** (`type=inline`): the same config document, as JSON, under the top-level key
//!   [`INLINE_KEY`] (`kiln.cache.v1`) of the pushed image's config ([`inline_metadata`]).
//!   Passing that image's reference to `--cache-from` imports it (an image index resolves to
//!   the host platform's image); the image's repository serves the layers.
//!
//! Import ([`RemoteCache::load`]) reads manifests and configs only; a missing, unauthorized,
//! corrupt or foreign reference becomes a warning and contributes no record. Layers are
//! fetched by [`RemoteCache::ensure_blobs`], verified into the store.
//!
//! invariant: a reader uses a whole record set or none; no unverified byte reaches the store.

mod error;
mod export;
mod format;
mod import;
mod spec;

pub use error::Error;
#[cfg(test)]
pub use export::export;
pub use export::{ExportReport, export_with, inline_metadata};
#[cfg(test)]
pub use format::CONFIG_MEDIA_TYPE;
pub use format::INLINE_KEY;
pub use import::RemoteCache;
pub use spec::{CacheMode, CacheMounts, CacheSpec, parse_cache_from, parse_cache_to};

use crate::engine::CacheKey;
use crate::refs::Chain;

/// One step to export: its cache key, the chain it produced, and its inputs' keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRecord {
    /// The step's cache key (`SolveResult::keys`).
    pub key: CacheKey,
    /// The layer chain the step produced (its cache record).
    pub chain: Chain,
    /// The cache keys of the step's inputs.
    pub inputs: Vec<CacheKey>,
    /// What the step is (`[build 2/3] RUN make`), for explanations.
    pub description: String,
}

/// A cache mount's contents to export: the directory of `RUN --mount=type=cache,id=ID` as a
/// layer of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRecord {
    pub id: String,
    pub layer: kiln_cache::LayerInfo,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    /// The lead drives these from the build future and shares the cache between steps.
    #[allow(dead_code)]
    fn futures_are_send_and_the_cache_is_shareable(
        client: &kiln_registry_client::Client,
        store: &kiln_cache::Store,
        cache: &RemoteCache,
        chain: &Chain,
    ) {
        assert_send(&RemoteCache::load(client, store, &[]));
        assert_send(&cache.ensure_blobs(client, store, chain));
        assert_send(&export(client, store, &CacheSpec::Inline, &[]));
        fn shareable<T: Send + Sync>() {}
        shareable::<RemoteCache>();
    }
}
