//! End-to-end tests of the `kiln` binary: real runc, real overlayfs, real store.

mod build;
mod registry;
mod run;
mod remote_cache;
mod store;
mod support;
