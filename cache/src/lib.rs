//! kiln's content store, layers, snapshots, image store and cache index.
//!
//! See the module docs: [`store`] (blobs and the versioned root), `index` (redb tables),
//! [`layer`] (deterministic tar writer), `codec` (layer compression), [`apply`] (safe layer
//! applier), [`snapshot`] and [`mount`] (overlay lowerdirs), [`image`] (manifests, configs,
//! tags), [`archive`] (docker/OCI archives), [`gc`] (leases and garbage collection) and
//! [`testutil`] (busybox rootfs for tests). The on-disk format is described in the crate's
//! README.

pub mod apply;
pub mod archive;
pub mod codec;
pub mod digest;
mod error;
pub mod gc;
pub mod image;
mod index;
pub mod layer;
pub mod mount;
pub mod prune;
pub mod scratch;
pub mod snapshot;
pub mod store;
pub mod tarindex;
pub mod testutil;
pub mod vet;

pub use apply::{ApplyMode, ApplyOptions, ApplyStats, apply_layer, apply_layer_threaded};
pub use archive::{
    ArchiveFormat, LoadedImage, import_rootfs, import_rootfs_at, load_archive, save_archive,
};
pub use digest::parse_digest;
pub use error::{Error, Result};
pub use gc::GcStats;
pub use image::{
    HistoryEntry, ImageRecord, ImageSummary, RemoveEvent, history, inspect_json, normalize_name,
};
pub use layer::{Encoding, LayerInfo, LayerOptions, LayerSource};
pub use mount::{MountGuard, mount_overlay, mount_tmpfs, unmount};
pub use prune::{CacheEntry, DiskUsage, GcLock, ImageUsage, PruneOptions, PruneReport};
pub use scratch::SweepStats;
pub use snapshot::Snapshot;
pub use store::{BlobWriter, Store};
