//! The build context: `.dockerignore` matching ([`ignore`]), selecting only the paths that
//! COPY/ADD reference ([`walk`]), and content checksums with a persistent stat cache
//! ([`checksum`]).

pub mod checksum;
pub mod epoch;
pub mod glob;
pub mod ignore;
pub mod named;
pub mod remote;
pub mod walk;

pub use checksum::ContextHasher;
pub use glob::BadPattern;
pub use ignore::{Matcher, read_ignore_patterns};
pub use walk::select;

use std::path::PathBuf;

/// Errors of context selection and hashing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A COPY/ADD source path that does not exist in the context (or is ignored).
    #[error("failed to compute cache key: \"/{path}\": not found")]
    NotFound { path: String },
    /// Too many symlinks while resolving a source path.
    #[error("failed to compute cache key: \"/{path}\": too many levels of symbolic links")]
    SymlinkLoop { path: String },
    /// A malformed ignore or source pattern.
    #[error(transparent)]
    Pattern(#[from] BadPattern),
    /// A filesystem call failed.
    #[error("failed to {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
