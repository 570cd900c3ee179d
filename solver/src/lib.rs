//! kiln's solver: the build graph types ([`graph`], pure data) and the engine that executes a
//! graph ([`engine`]): parallel, deduplicated, cached, with progress events.

pub mod engine;
pub mod graph;
