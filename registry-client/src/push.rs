//! Push: HEAD before upload, cross-repository mounts, monolithic and chunked uploads, manifests.

use std::sync::Arc;

use futures::{StreamExt as _, TryStreamExt as _};
use kiln_oci::{Descriptor, Digest};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, Response, StatusCode, Url};
use tracing::{debug, info, instrument};

use crate::client::{Client, repo_scope};
use crate::deadline::{Activity, Deadline};
use crate::error::{Error, Result};
use crate::reference::Reference;
use crate::store::{BlobMaker, BlobStore};
use crate::transfer::{ChunkedBody, OnceBody, made_body, store_body};
use crate::verify::verify_bytes;

/// What happened to one blob during a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobPush {
    /// The registry already had it (HEAD said so).
    Existed,
    /// Mounted from another repository of the same registry.
    Mounted,
    /// Uploaded.
    Uploaded,
}

/// Summary of [`Client::push_image`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReport {
    /// Digest of the pushed manifest.
    pub digest: Digest,
    /// Blobs uploaded.
    pub uploaded: usize,
    /// Blobs the registry already had.
    pub skipped: usize,
    /// Blobs mounted from another repository.
    pub mounted: usize,
    /// Of the uploaded blobs, those made (layers compressed) while they uploaded.
    pub made: usize,
}

impl Client {
    /// Whether the repository has the blob (`HEAD /v2/<name>/blobs/<digest>`).
    pub async fn has_blob(&self, target: &Reference, digest: &Digest) -> Result<bool> {
        let path = format!("/v2/{}/blobs/{digest}", target.repository);
        let url = self.url(&target.registry, &path)?;
        let scope = [repo_scope(&target.repository, "pull,push")];
        let resp = self
            .request(&target.registry, &scope, Method::HEAD, &url, &|r| Ok(r))
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.status_error(&Method::HEAD, resp).await),
        }
    }

    /// Gets the blob into the target repository without sending its bytes: HEAD, then a
    /// cross-repository mount from each candidate on the same registry. `None` when neither
    /// worked (an upload session a registry opened instead of mounting is cancelled): the
    /// caller must upload it, e.g. with [`push_blob`](Self::push_blob).
    #[instrument(skip_all, fields(target = %target, digest = %digest))]
    pub async fn place_blob(
        &self,
        target: &Reference,
        digest: &Digest,
        mount_from: &[Reference],
    ) -> Result<Option<BlobPush>> {
        if self.has_blob(target, digest).await? {
            return Ok(Some(BlobPush::Existed));
        }
        for source in mount_from {
            if source.registry != target.registry || source.repository == target.repository {
                continue;
            }
            match self.mount(target, source, digest).await {
                Ok(Mount::Mounted) => return Ok(Some(BlobPush::Mounted)),
                Ok(Mount::Session(url)) => self.cancel_upload(target, &url).await,
                Err(e) => debug!(source = %source, error = %e, "mount failed"),
            }
        }
        Ok(None)
    }

    /// `DELETE` on an upload session nobody will use; a failure only leaves it to expire.
    async fn cancel_upload(&self, target: &Reference, url: &Url) {
        let scope = [repo_scope(&target.repository, "pull,push")];
        match self
            .request(&target.registry, &scope, Method::DELETE, url, &|r| Ok(r))
            .await
        {
            Ok(resp) if resp.status().is_success() => {}
            Ok(resp) => debug!(status = %resp.status(), "upload session not cancelled"),
            Err(e) => debug!(error = %e, "upload session not cancelled"),
        }
    }

    /// Makes sure the target repository has the blob: HEAD, then a cross-repository mount from
    /// each candidate on the same registry, then an upload streamed from the store.
    #[instrument(skip_all, fields(target = %target, digest = %desc.digest))]
    pub async fn push_blob(
        &self,
        target: &Reference,
        desc: &Descriptor,
        store: &dyn BlobStore,
        mount_from: &[Reference],
    ) -> Result<BlobPush> {
        let digest = &desc.digest;
        if self.has_blob(target, digest).await? {
            debug!("blob exists");
            return Ok(BlobPush::Existed);
        }
        let mut session = None;
        for source in mount_from {
            if source.registry != target.registry || source.repository == target.repository {
                continue;
            }
            match self.mount(target, source, digest).await {
                Ok(Mount::Mounted) => return Ok(BlobPush::Mounted),
                Ok(Mount::Session(url)) => {
                    session = Some(url);
                    break;
                }
                // A failed mount only costs the optimization.
                Err(e) => debug!(source = %source, error = %e, "mount failed"),
            }
        }
        self.retrying(|attempt| {
            // A retried upload restarts with a new session.
            let session = if attempt == 1 { session.take() } else { None };
            self.upload(target, desc, store, session)
        })
        .await?;
        Ok(BlobPush::Uploaded)
    }

    /// `POST …/blobs/uploads/?mount=<digest>&from=<repo>`: 201 = mounted, 202 = an upload
    /// session to use instead.
    async fn mount(
        &self,
        target: &Reference,
        source: &Reference,
        digest: &Digest,
    ) -> Result<Mount> {
        let path = format!("/v2/{}/blobs/uploads/", target.repository);
        let mut url = self.url(&target.registry, &path)?;
        url.query_pairs_mut()
            .append_pair("mount", &digest.to_string())
            .append_pair("from", &source.repository);
        let scope = [
            repo_scope(&target.repository, "pull,push"),
            repo_scope(&source.repository, "pull"),
        ];
        let resp = self
            .request(&target.registry, &scope, Method::POST, &url, &|r| {
                Ok(r.header(CONTENT_LENGTH, 0))
            })
            .await?;
        match resp.status() {
            StatusCode::CREATED => {
                debug!(from = %source.repository, "mounted");
                Ok(Mount::Mounted)
            }
            StatusCode::ACCEPTED => Ok(Mount::Session(location(&resp)?)),
            _ => Err(self.status_error(&Method::POST, resp).await),
        }
    }

    /// A request without a body (`Content-Length: 0`) under the short deadline.
    async fn send_bodyless(
        &self,
        registry: &str,
        scope: &[String],
        method: Method,
        url: Url,
    ) -> Result<Response> {
        self.send(
            registry,
            scope,
            method,
            url,
            &|r| Ok(r.header(CONTENT_LENGTH, 0)),
            &Deadline::small(&self.opts),
        )
        .await
    }

    /// `POST …/blobs/uploads/`: a new upload session.
    async fn open_session(&self, target: &Reference) -> Result<Url> {
        let registry = &target.registry;
        let scope = [repo_scope(&target.repository, "pull,push")];
        let path = format!("/v2/{}/blobs/uploads/", target.repository);
        let url = self.url(registry, &path)?;
        let resp = self
            .send_bodyless(registry, &scope, Method::POST, url)
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.status_error(&Method::POST, resp).await);
        }
        location(&resp)
    }

    /// Uploads a blob made while it uploads: attempts stream it as it is made (see
    /// [`stream_upload`](Self::stream_upload)); a retry after an attempt that got to keep the
    /// blob uploads it from the store. Returns its descriptor.
    #[instrument(skip_all, fields(target = %target, blob = %maker.name()))]
    pub async fn push_made(
        &self,
        target: &Reference,
        maker: &Arc<dyn BlobMaker>,
        store: &dyn BlobStore,
    ) -> Result<Descriptor> {
        self.retrying(|_| async {
            let made = maker.made().map_err(|error| Error::Make {
                what: maker.name(),
                error,
            })?;
            match made {
                Some(desc) => {
                    debug!(digest = %desc.digest, "made before: uploading it from the store");
                    self.upload(target, &desc, store, None).await?;
                    Ok(desc)
                }
                None => self.stream_upload(target, maker).await,
            }
        })
        .await
    }

    /// One streamed upload attempt: a session, one PATCH whose body is the blob as `maker`
    /// makes it (chunked transfer encoding: its length is unknown up front), then
    /// `PUT ?digest=` with the digest the maker ends with. The registry checks the bytes
    /// against it.
    async fn stream_upload(
        &self,
        target: &Reference,
        maker: &Arc<dyn BlobMaker>,
    ) -> Result<Descriptor> {
        let registry = &target.registry;
        let scope = [repo_scope(&target.repository, "pull,push")];
        let location = self.open_session(target).await?;
        let activity = Activity::new();
        let made = made_body(maker.clone(), &activity);
        let body = OnceBody::new(made.body);
        let build = |r: reqwest::RequestBuilder| {
            Ok(r.header(CONTENT_TYPE, "application/octet-stream")
                .body(body.take(&location)?))
        };
        let deadline = Deadline::upload(&self.opts, activity);
        let sent = match self
            .send(
                registry,
                &scope,
                Method::PATCH,
                location.clone(),
                &build,
                &deadline,
            )
            .await
        {
            Ok(resp) if resp.status() == StatusCode::ACCEPTED => location_from(&resp, &location),
            Ok(resp) => Err(self.status_error(&Method::PATCH, resp).await),
            Err(e) => Err(e),
        };
        if sent.is_err() {
            // Stop the maker whether or not the body was dropped: nothing is kept.
            drop(made.cancel);
        }
        let done = made
            .done
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        let (location, desc) = match (sent, done) {
            (Ok(location), Ok(desc)) => (location, desc),
            // The maker stopped because the upload broke: the upload's error says why.
            (Err(e), Err(_)) if made.stopped.load(std::sync::atomic::Ordering::Relaxed) => {
                return Err(e);
            }
            (_, Err(error)) => {
                return Err(Error::Make {
                    what: maker.name(),
                    error,
                });
            }
            (Err(e), Ok(_)) => return Err(e),
        };
        debug!(digest = %desc.digest, size = desc.size, "streamed");
        self.close_session(target, location, &desc.digest).await?;
        Ok(desc)
    }

    /// One upload attempt: open a session (unless given one), then PUT the whole blob or PATCH
    /// it in chunks and close with PUT.
    async fn upload(
        &self,
        target: &Reference,
        desc: &Descriptor,
        store: &dyn BlobStore,
        session: Option<Url>,
    ) -> Result<()> {
        let digest = &desc.digest;
        let registry = &target.registry;
        let scope = [repo_scope(&target.repository, "pull,push")];
        let mut location = match session {
            Some(url) => url,
            None => self.open_session(target).await?,
        };
        let size = store.blob_size(digest).map_err(|error| Error::Store {
            digest: digest.clone(),
            error,
        })?;
        if size != desc.size {
            return Err(Error::SizeMismatch {
                digest: digest.clone(),
                expected: desc.size,
                actual: size,
            });
        }
        if size > self.opts.monolithic_limit {
            let body = ChunkedBody::open(store, digest)?;
            let chunk_size = self.opts.chunk_size.max(1);
            let mut offset = 0u64;
            while offset < size {
                let len = chunk_size.min(size - offset);
                let range = format!("{offset}-{}", offset + len - 1);
                let activity = Activity::new();
                let chunk = OnceBody::new(body.next_chunk(len, &activity));
                let build = |r: reqwest::RequestBuilder| {
                    Ok(r.header(CONTENT_TYPE, "application/octet-stream")
                        .header("content-range", range.as_str())
                        .header(CONTENT_LENGTH, len)
                        .body(chunk.take(&location)?))
                };
                let deadline = Deadline::upload(&self.opts, activity);
                let resp = self
                    .send(
                        registry,
                        &scope,
                        Method::PATCH,
                        location.clone(),
                        &build,
                        &deadline,
                    )
                    .await?;
                if resp.status() != StatusCode::ACCEPTED {
                    return Err(self.status_error(&Method::PATCH, resp).await);
                }
                location = location_from(&resp, &location)?;
                offset += len;
            }
            return self.close_session(target, location, digest).await;
        }
        location
            .query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let activity = Activity::new();
        let build = |r: reqwest::RequestBuilder| {
            Ok(r.header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, size)
                .body(store_body(store, digest, &activity)?))
        };
        let deadline = Deadline::upload(&self.opts, activity.clone());
        let resp = self
            .send(registry, &scope, Method::PUT, location, &build, &deadline)
            .await?;
        self.finish(resp).await
    }

    /// Uploads a manifest under the reference's tag (or digest) with its media type; returns its
    /// digest.
    #[instrument(skip_all, fields(target = %target))]
    pub async fn put_manifest(
        &self,
        target: &Reference,
        manifest_bytes: &[u8],
        media_type: &str,
    ) -> Result<Digest> {
        let digest = kiln_oci::sha256(manifest_bytes);
        if let Some(want) = &target.digest {
            verify_bytes(
                &format!("manifest {}", target.familiar()),
                want,
                manifest_bytes,
            )?;
        }
        let path = format!(
            "/v2/{}/manifests/{}",
            target.repository,
            target.manifest_ref()
        );
        let url = self.url(&target.registry, &path)?;
        let scope = [repo_scope(&target.repository, "pull,push")];
        let body = bytes::Bytes::copy_from_slice(manifest_bytes);
        let media_type = media_type.to_owned();
        let build = move |r: reqwest::RequestBuilder| {
            Ok(r.header(CONTENT_TYPE, media_type.as_str())
                .body(body.clone()))
        };
        let resp = self
            .request(&target.registry, &scope, Method::PUT, &url, &build)
            .await?;
        if !resp.status().is_success() {
            return Err(self.status_error(&Method::PUT, resp).await);
        }
        Ok(digest)
    }

    /// Pushes an image: every blob of `blobs` (config and layers) as [`Client::push_blob`],
    /// several at once, then the manifest. `mount_from` lists repositories of the same registry
    /// that may already hold the blobs.
    pub async fn push_image(
        &self,
        target: &Reference,
        manifest_bytes: &[u8],
        media_type: &str,
        blobs: &[Descriptor],
        store: &dyn BlobStore,
        mount_from: &[Reference],
    ) -> Result<PushReport> {
        self.push_image_with_progress(
            target,
            manifest_bytes,
            media_type,
            blobs,
            store,
            mount_from,
            None,
        )
        .await
    }

    /// [`Client::push_image`], reporting each blob's outcome as it completes.
    #[allow(clippy::too_many_arguments)]
    #[instrument(skip_all, fields(target = %target))]
    pub async fn push_image_with_progress(
        &self,
        target: &Reference,
        manifest_bytes: &[u8],
        media_type: &str,
        blobs: &[Descriptor],
        store: &dyn BlobStore,
        mount_from: &[Reference],
        progress: Option<PushProgress<'_>>,
    ) -> Result<PushReport> {
        let blobs: Vec<PushBlob> = blobs.iter().cloned().map(PushBlob::Stored).collect();
        let pushed = self
            .push_blobs(target, &blobs, store, mount_from, progress)
            .await?;
        let outcomes: Vec<BlobPush> = pushed.iter().map(|p| p.outcome).collect();
        let digest = self
            .put_manifest(target, manifest_bytes, media_type)
            .await?;
        if let Some(p) = progress {
            p(PushEvent::Manifest {
                digest: digest.clone(),
            });
        }
        let count = |k| outcomes.iter().filter(|o| **o == k).count();
        let report = PushReport {
            digest,
            uploaded: count(BlobPush::Uploaded),
            skipped: count(BlobPush::Existed),
            mounted: count(BlobPush::Mounted),
            made: 0,
        };
        info!(digest = %report.digest, report.uploaded, report.skipped, report.mounted, "pushed");
        Ok(report)
    }
}

impl Client {
    /// Puts every blob of `blobs` in the target repository, several at once: stored ones as
    /// [`Client::push_blob`], made ones as [`Client::push_made`] (compressed while they
    /// upload, alongside the others). Returns each blob's descriptor (a made one's is known
    /// only now: the manifest that lists it is built after) and outcome, in `blobs`' order.
    #[instrument(skip_all, fields(target = %target))]
    pub async fn push_blobs(
        &self,
        target: &Reference,
        blobs: &[PushBlob],
        store: &dyn BlobStore,
        mount_from: &[Reference],
        progress: Option<PushProgress<'_>>,
    ) -> Result<Vec<PushedBlob>> {
        // Futures made up front (they are lazy) keep the push future `Send`.
        let pushes: Vec<_> = blobs
            .iter()
            .enumerate()
            .map(|(i, b)| async move {
                let pushed = match b {
                    PushBlob::Stored(d) => PushedBlob {
                        descriptor: d.clone(),
                        outcome: self.push_blob(target, d, store, mount_from).await?,
                        made: false,
                    },
                    PushBlob::Made(maker) => PushedBlob {
                        descriptor: self.push_made(target, maker, store).await?,
                        outcome: BlobPush::Uploaded,
                        made: true,
                    },
                };
                if let Some(p) = progress {
                    p(PushEvent::Blob {
                        digest: pushed.descriptor.digest.clone(),
                        size: pushed.descriptor.size,
                        outcome: pushed.outcome,
                    });
                }
                Ok::<_, Error>((i, pushed))
            })
            .collect();
        let mut pushed: Vec<(usize, PushedBlob)> = futures::stream::iter(pushes)
            .buffer_unordered(self.opts.concurrency.max(1))
            .try_collect()
            .await?;
        pushed.sort_by_key(|(i, _)| *i);
        Ok(pushed.into_iter().map(|(_, p)| p).collect())
    }
}

/// A blob for [`Client::push_blobs`].
#[derive(Clone)]
pub enum PushBlob {
    /// A blob of the store.
    Stored(Descriptor),
    /// A blob made while it uploads.
    Made(Arc<dyn BlobMaker>),
}

/// A blob [`Client::push_blobs`] put in the target repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedBlob {
    /// The blob.
    pub descriptor: Descriptor,
    /// How it got there.
    pub outcome: BlobPush,
    /// Whether it was made while it uploaded.
    pub made: bool,
}

/// Progress of a push, for the CLI's display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushEvent {
    /// A blob is in the target repository.
    Blob {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
        /// How it got there.
        outcome: BlobPush,
    },
    /// The manifest was uploaded.
    Manifest {
        /// Its digest.
        digest: Digest,
    },
}

/// Callback receiving [`PushEvent`]s; called from the pushing task.
pub type PushProgress<'a> = &'a (dyn Fn(PushEvent) + Send + Sync);

enum Mount {
    Mounted,
    Session(Url),
}

impl Client {
    /// Ends an upload session whose bytes were all sent: `PUT ?digest=` with no body.
    async fn close_session(
        &self,
        target: &Reference,
        mut location: Url,
        digest: &Digest,
    ) -> Result<()> {
        let scope = [repo_scope(&target.repository, "pull,push")];
        location
            .query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let resp = self
            .send_bodyless(&target.registry, &scope, Method::PUT, location)
            .await?;
        self.finish(resp).await
    }

    /// The final PUT must answer 201 Created.
    async fn finish(&self, resp: Response) -> Result<()> {
        if resp.status() == StatusCode::CREATED {
            return Ok(());
        }
        Err(self.status_error(&Method::PUT, resp).await)
    }
}

/// The absolute upload URL of a response's `Location` (relative ones resolve against the
/// request URL).
fn location(resp: &Response) -> Result<Url> {
    location_from(resp, resp.url())
}

fn location_from(resp: &Response, base: &Url) -> Result<Url> {
    resp.headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| base.join(v).ok())
        .ok_or_else(|| Error::MissingLocation {
            url: resp.url().to_string(),
        })
}
