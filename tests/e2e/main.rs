//! End-to-end tests of the `kiln` binary: real runc, real overlayfs, real store.

mod build;
mod checks;
mod debug_shell;
mod front_door;
mod health_logs;
mod interop;
mod layers;
mod lifecycle;
mod lifecycle2;
mod network;
mod networks;
mod progress;
mod prune;
mod push;
mod registry;
mod remote_cache;
mod run;
mod store;
mod support;
