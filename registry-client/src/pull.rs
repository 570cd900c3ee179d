//! Pull: manifests (resolving indexes to a platform), config and layers into the store.

use futures::{StreamExt as _, TryStreamExt as _};
use kiln_oci::media_type::{
    DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST, is_index,
};
use kiln_oci::{Descriptor, Digest, ImageIndex, ImageManifest, Platform};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use tracing::{debug, info, instrument};

use crate::client::{Client, repo_scope};
use crate::deadline::Deadline;
use crate::error::{Error, Result};
use crate::reference::Reference;
use crate::store::BlobStore;
use crate::transfer::download_into;
use crate::verify::verify_bytes;

/// Largest manifest or index accepted (the distribution spec recommends registries accept
/// 4 MiB; containerd refuses larger ones too). Manifests are read into memory.
pub const MAX_MANIFEST_SIZE: u64 = 4 * 1024 * 1024;
/// Largest image config accepted: configs are read into memory, and real ones, long history
/// included, are kilobytes.
pub const MAX_CONFIG_SIZE: u64 = 16 * 1024 * 1024;
/// Largest blob a descriptor may declare (1 TiB): anything bigger is a corrupt or hostile
/// manifest, refused before a byte is fetched.
pub const MAX_BLOB_SIZE: u64 = 1 << 40;

/// A manifest exactly as the registry served it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The digest of `bytes`.
    pub digest: Digest,
    /// The manifest's media type.
    pub media_type: String,
    /// The raw bytes, unchanged.
    pub bytes: Vec<u8>,
}

/// An image manifest resolved for one platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Digest of the platform's image manifest.
    pub manifest_digest: Digest,
    /// The image manifest's raw bytes.
    pub manifest_bytes: Vec<u8>,
    /// The image manifest's media type.
    pub media_type: String,
    /// The image config.
    pub config: Descriptor,
    /// Layers, base first.
    pub layers: Vec<Descriptor>,
    /// The index or manifest list the manifest was chosen from, if the reference named one.
    pub index: Option<Manifest>,
}

impl Resolved {
    /// Config and layers: every blob the image needs.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        std::iter::once(&self.config).chain(self.layers.iter())
    }
}

/// Progress of a pull, for the CLI's display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullEvent {
    /// The reference resolved to this manifest.
    Resolved {
        /// The image manifest's digest.
        digest: Digest,
        /// Number of blobs (config + layers).
        blobs: usize,
    },
    /// The store already has this blob.
    Skipped {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
    },
    /// A blob download (attempt) began.
    Started {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
    },
    /// Bytes received so far for a blob.
    Progress {
        /// The blob.
        digest: Digest,
        /// Bytes received in this attempt.
        done: u64,
        /// Its size.
        size: u64,
    },
    /// A blob was verified and stored.
    Done {
        /// The blob.
        digest: Digest,
    },
}

/// Callback receiving [`PullEvent`]s; called from the pulling task.
pub type Progress<'a> = &'a (dyn Fn(PullEvent) + Send + Sync);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMediaType {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
}

impl Client {
    /// Fetches a manifest (any media type in `accept`) and verifies it: against the reference's
    /// digest if it has one, else against the registry's `Docker-Content-Digest` header when it
    /// sends one (as containerd does). At most [`MAX_MANIFEST_SIZE`] bytes are read. 404 gives
    /// [`Error::ManifestNotFound`].
    #[instrument(skip_all, fields(reference = %r))]
    pub async fn get_manifest(&self, r: &Reference, accept: &[&str]) -> Result<Manifest> {
        self.get_manifest_sized(r, accept, None).await
    }

    /// [`Client::get_manifest`] of a manifest whose descriptor says it has `size` bytes.
    async fn get_manifest_sized(
        &self,
        r: &Reference,
        accept: &[&str],
        size: Option<u64>,
    ) -> Result<Manifest> {
        let what = format!("manifest {}", r.familiar());
        if let Some(declared) = size
            && declared > MAX_MANIFEST_SIZE
        {
            return Err(Error::DeclaredTooLarge {
                what,
                declared,
                limit: MAX_MANIFEST_SIZE,
            });
        }
        let path = format!("/v2/{}/manifests/{}", r.repository, r.manifest_ref());
        let url = self.url(&r.registry, &path)?;
        let scope = [repo_scope(&r.repository, "pull")];
        let accept = accept.join(", ");
        let build = move |req: reqwest::RequestBuilder| Ok(req.header(ACCEPT, accept.as_str()));
        self.retrying(|_| async {
            let deadline = Deadline::small(&self.opts);
            let mut resp = self
                .send(
                    &r.registry,
                    &scope,
                    Method::GET,
                    url.clone(),
                    &build,
                    &deadline,
                )
                .await?;
            match resp.status() {
                s if s.is_success() => {}
                StatusCode::NOT_FOUND => {
                    return Err(Error::ManifestNotFound {
                        reference: r.familiar(),
                    });
                }
                _ => return Err(self.status_error(&Method::GET, resp).await),
            }
            let header_type = resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
            let header_digest = resp
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_owned());
            if let Some(length) = resp.content_length()
                && length > MAX_MANIFEST_SIZE
            {
                return Err(Error::DeclaredTooLarge {
                    what: what.clone(),
                    declared: length,
                    limit: MAX_MANIFEST_SIZE,
                });
            }
            let mut bytes = Vec::new();
            while let Some(chunk) = deadline
                .chunk(&mut resp, &Method::GET, &what, bytes.len() as u64)
                .await?
            {
                bytes.extend_from_slice(&chunk);
                if bytes.len() as u64 > MAX_MANIFEST_SIZE {
                    return Err(Error::TooLarge {
                        what: what.clone(),
                        limit: MAX_MANIFEST_SIZE,
                    });
                }
            }
            if let Some(declared) = size
                && declared != bytes.len() as u64
            {
                return Err(Error::ManifestSize {
                    reference: r.familiar(),
                    declared,
                    actual: bytes.len() as u64,
                });
            }
            let digest = match &r.digest {
                Some(want) => {
                    verify_bytes(&what, want, &bytes)?;
                    want.clone()
                }
                None => {
                    let actual = kiln_oci::sha256(&bytes);
                    // Only sha256 names content here; a header in another algorithm cannot
                    // be checked and is ignored, like a missing one.
                    if let Some(header) = header_digest
                        && header.starts_with("sha256:")
                        && header != actual.to_string()
                    {
                        return Err(Error::HeaderDigestMismatch {
                            reference: r.familiar(),
                            header,
                            actual,
                        });
                    }
                    actual
                }
            };
            let media_type = media_type_of(header_type.as_deref(), &bytes);
            debug!(%digest, media_type, size = bytes.len(), "manifest");
            Ok(Manifest {
                digest,
                media_type,
                bytes,
            })
        })
        .await
    }

    /// The digest a tag currently points to, from a `HEAD` request (cheap: registries such as
    /// Docker Hub do not count HEADs against pull limits); `None` if it does not exist. Falls back
    /// to a GET when the registry sends no `Docker-Content-Digest`.
    pub async fn head_manifest(&self, r: &Reference) -> Result<Option<Digest>> {
        let path = format!("/v2/{}/manifests/{}", r.repository, r.manifest_ref());
        let url = self.url(&r.registry, &path)?;
        let scope = [repo_scope(&r.repository, "pull")];
        let accept = [
            OCI_INDEX,
            DOCKER_MANIFEST_LIST,
            OCI_MANIFEST,
            DOCKER_MANIFEST,
        ]
        .join(", ");
        let build = move |req: reqwest::RequestBuilder| Ok(req.header(ACCEPT, accept.as_str()));
        let resp = self
            .request(&r.registry, &scope, Method::HEAD, &url, &build)
            .await?;
        match resp.status() {
            s if s.is_success() => {}
            StatusCode::NOT_FOUND => return Ok(None),
            _ => return Err(self.status_error(&Method::HEAD, resp).await),
        }
        let header = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        if let Some(d) = header {
            return Ok(Some(d));
        }
        let all = [
            OCI_INDEX,
            DOCKER_MANIFEST_LIST,
            OCI_MANIFEST,
            DOCKER_MANIFEST,
        ];
        Ok(Some(self.get_manifest(r, &all).await?.digest))
    }

    /// Resolves a reference to the image manifest for `platform` (through an index or manifest
    /// list if the reference names one).
    #[instrument(skip_all, fields(reference = %r, %platform))]
    pub async fn resolve(&self, r: &Reference, platform: &Platform) -> Result<Resolved> {
        let all = [
            OCI_INDEX,
            DOCKER_MANIFEST_LIST,
            OCI_MANIFEST,
            DOCKER_MANIFEST,
        ];
        let first = self.get_manifest(r, &all).await?;
        let (manifest, index) = if is_index(&first.media_type) {
            let idx: ImageIndex =
                serde_json::from_slice(&first.bytes).map_err(|error| Error::InvalidManifest {
                    reference: r.familiar(),
                    error,
                })?;
            let chosen = idx.manifests.iter().find(|m| {
                !is_index(&m.media_type)
                    && m.platform.as_ref().is_some_and(|p| {
                        platform.matches(&p.os, &p.architecture, p.variant.as_deref())
                    })
            });
            let Some(chosen) = chosen else {
                let available: Vec<String> = idx
                    .manifests
                    .iter()
                    .filter_map(|m| m.platform.as_ref())
                    .map(Platform::to_string)
                    .collect();
                return Err(Error::NoMatchingPlatform {
                    reference: r.familiar(),
                    platform: platform.to_string(),
                    available: available.join(", "),
                });
            };
            let child = r.with_digest(chosen.digest.clone());
            let m = self
                .get_manifest_sized(&child, &[OCI_MANIFEST, DOCKER_MANIFEST], Some(chosen.size))
                .await?;
            (m, Some(first))
        } else {
            (first, None)
        };
        if manifest.media_type != OCI_MANIFEST && manifest.media_type != DOCKER_MANIFEST {
            return Err(Error::UnsupportedMediaType {
                media_type: manifest.media_type,
                reference: r.familiar(),
            });
        }
        let wire: ImageManifest =
            serde_json::from_slice(&manifest.bytes).map_err(|error| Error::InvalidManifest {
                reference: r.familiar(),
                error,
            })?;
        check_declared(
            &format!("config {}", wire.config.digest),
            wire.config.size,
            MAX_CONFIG_SIZE,
        )?;
        for layer in &wire.layers {
            check_declared(&format!("blob {}", layer.digest), layer.size, MAX_BLOB_SIZE)?;
        }
        Ok(Resolved {
            manifest_digest: manifest.digest,
            manifest_bytes: manifest.bytes,
            media_type: manifest.media_type,
            config: wire.config,
            layers: wire.layers,
            index,
        })
    }

    /// Downloads one blob into the store (verified while streaming; nothing is stored on a
    /// mismatch). Does nothing if the store has it.
    pub async fn fetch_blob(
        &self,
        r: &Reference,
        desc: &Descriptor,
        store: &dyn BlobStore,
    ) -> Result<()> {
        self.fetch_blob_with(r, desc, store, None).await
    }

    async fn fetch_blob_with(
        &self,
        r: &Reference,
        desc: &Descriptor,
        store: &dyn BlobStore,
        progress: Option<Progress<'_>>,
    ) -> Result<()> {
        let digest = &desc.digest;
        if store.has_blob(digest) {
            return Ok(());
        }
        check_declared(&format!("blob {digest}"), desc.size, MAX_BLOB_SIZE)?;
        let path = format!("/v2/{}/blobs/{digest}", r.repository);
        let url = self.url(&r.registry, &path)?;
        let scope = [repo_scope(&r.repository, "pull")];
        let size = desc.size;
        self.retrying(|_| async {
            let deadline = Deadline::transfer(&self.opts);
            let resp = self
                .send(
                    &r.registry,
                    &scope,
                    Method::GET,
                    url.clone(),
                    &|req| Ok(req),
                    &deadline,
                )
                .await?;
            match resp.status() {
                s if s.is_success() => {}
                StatusCode::NOT_FOUND => {
                    return Err(Error::BlobNotFound {
                        digest: digest.clone(),
                        repository: format!("{}/{}", r.registry, r.repository),
                    });
                }
                _ => return Err(self.status_error(&Method::GET, resp).await),
            }
            if let Some(p) = progress {
                p(PullEvent::Started {
                    digest: digest.clone(),
                    size,
                });
            }
            let tick = |done: u64| {
                if let Some(p) = progress {
                    p(PullEvent::Progress {
                        digest: digest.clone(),
                        done,
                        size,
                    });
                }
            };
            download_into(
                resp,
                &deadline,
                url.as_str(),
                digest,
                Some(size),
                store,
                &tick,
            )
            .await
        })
        .await?;
        if let Some(p) = progress {
            p(PullEvent::Done {
                digest: digest.clone(),
            });
        }
        Ok(())
    }

    /// Resolves `r` for `platform` and downloads the config and layers the store lacks,
    /// several at once. Returns what was resolved; the caller stores the manifest bytes.
    #[instrument(skip_all, fields(reference = %r))]
    pub async fn pull(
        &self,
        r: &Reference,
        platform: &Platform,
        store: &dyn BlobStore,
        progress: Option<Progress<'_>>,
    ) -> Result<Resolved> {
        let resolved = self.resolve(r, platform).await?;
        if let Some(p) = progress {
            p(PullEvent::Resolved {
                digest: resolved.manifest_digest.clone(),
                blobs: resolved.layers.len() + 1,
            });
        }
        let wanted: Vec<&Descriptor> = resolved
            .blobs()
            .filter(|d| {
                let have = store.has_blob(&d.digest);
                if have && let Some(p) = progress {
                    p(PullEvent::Skipped {
                        digest: d.digest.clone(),
                        size: d.size,
                    });
                }
                !have
            })
            .collect();
        // Futures made up front (they are lazy) keep the stream free of higher-ranked closures,
        // so the whole pull future stays `Send`.
        let fetches: Vec<_> = wanted
            .into_iter()
            .map(|d| self.fetch_blob_with(r, d, store, progress))
            .collect();
        futures::stream::iter(fetches)
            .buffer_unordered(self.opts.concurrency.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        info!(digest = %resolved.manifest_digest, "pulled");
        Ok(resolved)
    }
}

/// Refuses a descriptor declaring more than `limit` bytes, before anything is fetched.
fn check_declared(what: &str, declared: u64, limit: u64) -> Result<()> {
    if declared > limit {
        return Err(Error::DeclaredTooLarge {
            what: what.to_owned(),
            declared,
            limit,
        });
    }
    Ok(())
}

/// The media type from the header, or from the manifest's own fields when the header is
/// missing or generic.
fn media_type_of(header: Option<&str>, bytes: &[u8]) -> String {
    if let Some(h) = header
        && !h.is_empty()
        && h != "application/json"
        && h != "text/plain"
        && h != "application/octet-stream"
    {
        return h.to_owned();
    }
    match serde_json::from_slice::<WireMediaType>(bytes) {
        Ok(WireMediaType {
            media_type: Some(t),
            ..
        }) => t,
        Ok(WireMediaType {
            manifests: Some(_), ..
        }) => OCI_INDEX.to_owned(),
        Ok(WireMediaType {
            schema_version: Some(1),
            ..
        }) => "application/vnd.docker.distribution.manifest.v1+json".to_owned(),
        _ => OCI_MANIFEST.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_type_falls_back_to_the_body() {
        assert_eq!(media_type_of(Some(DOCKER_MANIFEST), b"{}"), DOCKER_MANIFEST);
        let idx = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(media_type_of(Some("application/json"), idx), OCI_INDEX);
        let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json"}"#;
        assert_eq!(media_type_of(None, m), DOCKER_MANIFEST_LIST);
    }
}
