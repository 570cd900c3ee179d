//! The solver's errors.

use std::path::PathBuf;

/// What can go wrong while running ops.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cache(#[from] kiln_cache::Error),
    #[error(transparent)]
    Executor(#[from] kiln_executor::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A `RUN` step exited non-zero.
    #[error("{command} exited with code {code}")]
    RunFailed {
        /// `RUN make` as written.
        command: String,
        code: i32,
        oom_killed: bool,
        /// The last lines the step printed.
        last_lines: Vec<String>,
        /// The id of the kept state (`kiln debug shell ID`), when it could be kept.
        kept: Option<String>,
    },
    /// A base image the build needs is not in the store.
    #[error("image {reference} ({digest}) is not in the store")]
    MissingImage { reference: String, digest: String },
    /// A cached record refers to blobs that are gone.
    #[error("cache record {key} is unusable: {reason}")]
    BadRecord { key: String, reason: String },
    #[error("copy failed: {0}")]
    Copy(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{what}: {message}")]
    Other { what: String, message: String },
}

impl Error {
    pub(crate) fn other(what: impl Into<String>, message: impl std::fmt::Display) -> Error {
        Error::Other {
            what: what.into(),
            message: message.to_string(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its sources, `: `-joined.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}
