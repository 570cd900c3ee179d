//! OCI distribution client for kiln: references, authentication, pull, push and retries.
//!
//! The client speaks the [OCI distribution protocol] over reqwest (rustls). Blobs stream
//! between the network and a caller-provided [`BlobStore`], verified against their digest on
//! the way in; nothing unverified is ever committed.
//!
//! [OCI distribution protocol]: https://github.com/opencontainers/distribution-spec
//!
//! ```no_run
//! # async fn demo(store: &dyn kiln_registry_client::BlobStore) -> kiln_registry_client::Result<()> {
//! use kiln_oci::Platform;
//! use kiln_registry_client::{Client, ClientOptions, Reference};
//! let client = Client::new(ClientOptions::default())?;
//! let base: Reference = "busybox".parse()?; // docker.io/library/busybox:latest
//! let image = client.pull(&base, &Platform::host(), store, None).await?;
//! let target: Reference = "127.0.0.1:5000/me/busybox:1".parse()?;
//! let blobs: Vec<_> = image.blobs().cloned().collect();
//! let report = client
//!     .push_image(&target, &image.manifest_bytes, &image.media_type, &blobs, store, &[])
//!     .await?;
//! assert_eq!(report.digest, image.manifest_digest);
//! # Ok(())
//! # }
//! ```

mod auth;
mod client;
mod deadline;
mod error;
mod login;
mod pull;
mod push;
mod reference;
mod store;
mod transfer;
mod verify;

pub use auth::{Credential, DOCKER_HUB_CONFIG_KEY, docker_config_dir};
pub use client::{Client, ClientOptions, INSECURE_REGISTRIES_ENV, TIMEOUTS_ENV};
pub use error::{Envelope, Error, RegistryError, Result};
pub use kiln_oci::{Descriptor, Digest};
pub use login::{Stored, login, logout, normalize_registry};

pub use pull::{
    MAX_BLOB_SIZE, MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE, Manifest, Progress, PullEvent, Resolved,
};
pub use push::{BlobPush, PushBlob, PushEvent, PushProgress, PushReport, PushedBlob};
pub use reference::{DOCKER_HUB, Reference, ReferenceError};
pub use store::{BlobMaker, BlobSink, BlobStore};
