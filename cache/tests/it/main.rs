//! Integration tests of kiln-cache (run as root: real overlayfs, skopeo, umoci).

mod archive;
mod foreign;
mod hostile;
mod images;
mod layers;
mod snapshots;
mod store;
mod support;
