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

/// A size as BuildKit's progress shows it (docker's `units.HumanSize`: decimal units, four
/// significant digits): `32B`, `1.234kB`, `1.42MB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["kB", "MB", "GB", "TB", "PB", "EB"];
    if bytes < 1000 {
        return format!("{bytes}B");
    }
    let mut v = bytes as f64 / 1000.0;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    let int_digits = if v >= 100.0 {
        3
    } else if v >= 10.0 {
        2
    } else {
        1
    };
    let text = format!("{v:.*}", 4 - int_digits);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}{}", UNITS[unit])
}

#[cfg(test)]
mod size_tests {
    use super::human_size;

    #[test]
    fn sizes_read_like_buildkit() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(32), "32B");
        assert_eq!(human_size(1234), "1.234kB");
        assert_eq!(human_size(1_420_000), "1.42MB");
        assert_eq!(human_size(10_000), "10kB");
        assert_eq!(human_size(999_999), "1000kB");
        assert_eq!(human_size(123_456_789), "123.5MB");
    }
}
