//! kiln's solver: runs a build graph ([`graph`], pure data) on this machine.
//!
//! The CLI opens a [`Host`] (the store, the OCI runtime, registry settings) and reaches
//! everything through it: a [`session::Build`] runs a lowered Dockerfile from cache lookups
//! to pushed images; [`images`], [`containers`] and [`registry`] serve the other commands.
//! [`engine`] is the scheduler (parallel, deduplicated, cached) with its progress events. The
//! crates below (cache, executor, registry client) stay behind these modules.

mod context;
mod distribution;
pub mod engine;
mod error;
mod explain;
mod host;
mod ops;
mod refs;
mod remote;
mod worker;

pub mod container_fs;
pub mod containers;
pub mod debug;
pub mod images;
pub mod prune;
pub mod registry;
pub mod session;

pub use error::{Error, Result};
pub use host::{Host, HostOptions};
pub use kiln_graph as graph;

/// Internals the benchmarks time on their own; not an API.
#[doc(hidden)]
pub mod bench {
    pub use crate::context::{ContextHasher, Matcher, select};
    pub use crate::ops::copy::copy;
}

#[cfg(test)]
mod tests;
