//! End-to-end tests of the `kiln` binary: real runc, real overlayfs, real store.

mod build;
mod front_door;
mod interop;
mod network;
mod registry;
mod remote_cache;
mod run;
mod store;
mod support;
