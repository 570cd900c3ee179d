use kiln_oci::Digest;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

/// Where progress events go (the CLI renders them).
pub type ProgressSender = UnboundedSender<Event>;

/// Which output stream a log chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One progress event about one vertex (BuildKit's vertex status stream).
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub vertex: Digest,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum EventKind {
    /// The vertex will be shown (its name), before anything else about it.
    Started { name: String },
    /// The vertex's result came from the cache; it did not run.
    Cached { name: String },
    /// A chunk of the step's output, never clipped.
    Log {
        stream: LogStream,
        #[serde(serialize_with = "lossy")]
        data: Vec<u8>,
    },
    /// A status line of the step itself (e.g. a pull's progress).
    Status { message: String },
    /// The vertex finished successfully.
    Completed { duration_ms: u64 },
    /// The vertex failed.
    Failed { error: String },
    /// The vertex was cancelled because another one failed.
    Cancelled,
}

fn lossy<S: serde::Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(data))
}

impl Event {
    /// An event stamped now.
    pub fn now(vertex: Digest, kind: EventKind) -> Event {
        Event {
            vertex,
            timestamp_ms: chrono::Utc::now().timestamp_millis(),
            kind,
        }
    }
}
