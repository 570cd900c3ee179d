//! The engine: computes cache keys, looks them up, and runs what missed, in parallel.

mod progress;
mod scheduler;

pub use progress::{Event, EventKind, LogStream, ProgressSender, human_size};
pub use scheduler::{
    BoxError, CacheKey, Job, SolveError, SolveResult, Solver, VertexOutcome, Worker,
};
