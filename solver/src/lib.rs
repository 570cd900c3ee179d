//! kiln's solver: the build graph types ([`graph`], pure data) and the engine that executes a
//! graph ([`engine`]): parallel, deduplicated, cached, with progress events.

pub mod context;
pub mod distribution;
pub mod engine;
mod error;
pub mod explain;
pub use kiln_graph as graph;
pub mod ops;
pub mod refs;
pub mod remote;
pub mod worker;

pub use error::{Error, Result};
/// The lower crates, for the CLI (which depends on the frontend and the solver only).
pub use kiln_cache as cache;
pub use kiln_executor as executor;
pub use kiln_registry_client as registry;
