//! The crate's error type.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use kiln_oci::Digest;
use serde::Deserialize;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One entry of the registry's error envelope (`{"errors":[{"code":…,"message":…}]}`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct RegistryError {
    /// Machine-readable code such as `MANIFEST_UNKNOWN` or `DENIED`.
    #[serde(default)]
    pub code: String,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
}

/// The registry's error envelope, displayed as `CODE: message; CODE: message`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope(pub Vec<RegistryError>);

impl Envelope {
    /// Parses an error body; anything that is not an envelope gives an empty one.
    pub fn parse(body: &[u8]) -> Envelope {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(default)]
            errors: Vec<RegistryError>,
        }
        Envelope(
            serde_json::from_slice::<Wire>(body)
                .map(|w| w.errors)
                .unwrap_or_default(),
        )
    }

    /// Whether any entry has this code.
    pub fn has_code(&self, code: &str) -> bool {
        self.0.iter().any(|e| e.code == code)
    }
}

impl fmt::Display for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no error details");
        }
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", e.code, e.message)?;
        }
        Ok(())
    }
}

/// Everything that can go wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text is not a valid image reference.
    #[error("invalid reference {input:?}: {reason}")]
    InvalidReference {
        /// The text given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Connection, TLS or protocol failure (retried before being returned). The transport's
    /// cause chain is part of the message (`GET …: connect 127.0.0.1:5999: connection
    /// refused`), so it is not also exposed as [`std::error::Error::source`]: printers that
    /// walk sources would repeat it.
    #[error("{method} {url}: {}", transport_cause(transport))]
    Http {
        /// HTTP method.
        method: String,
        /// URL requested.
        url: String,
        /// The transport error.
        transport: reqwest::Error,
    },
    /// An environment setting does not parse.
    #[error("{name}={value:?}: {reason}")]
    InvalidSetting {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The HTTP client could not be set up (TLS roots, proxy settings).
    #[error("setting up the HTTP client: {}", transport_cause(transport))]
    Setup {
        /// The builder's error.
        transport: reqwest::Error,
    },
    /// No status line and headers arrived in time: the idle timeout passed with nothing
    /// received, or a small request's overall deadline.
    #[error("{method} {url}: no response within {}", Seconds(*after))]
    NoResponse {
        /// HTTP method.
        method: String,
        /// URL requested.
        url: String,
        /// How long was waited.
        after: Duration,
    },
    /// A response body stopped arriving: no byte within the idle timeout.
    #[error("{what} stalled after {received} bytes: no data for {}", Seconds(*idle))]
    Stalled {
        /// `blob sha256:…`, `manifest registry/repo:tag`.
        what: String,
        /// Bytes received before the stall.
        received: u64,
        /// The idle timeout.
        idle: Duration,
    },
    /// A small request (manifest, token) was still arriving at its overall deadline.
    #[error("{what} not received within {} ({received} bytes so far)", Seconds(*after))]
    Deadline {
        /// `manifest registry/repo:tag`, `token from <realm>`.
        what: String,
        /// Bytes received by then.
        received: u64,
        /// The overall deadline.
        after: Duration,
    },
    /// The registry answered with an unexpected status.
    #[error("{method} {url}: status {status}: {envelope}")]
    Status {
        /// HTTP method.
        method: String,
        /// URL requested.
        url: String,
        /// HTTP status code.
        status: u16,
        /// The registry's error envelope.
        envelope: Envelope,
        /// The delay the registry asked for with `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// The manifest (tag or digest) does not exist.
    #[error("manifest for {reference} not found")]
    ManifestNotFound {
        /// Familiar form of the reference.
        reference: String,
    },
    /// The blob does not exist in the repository.
    #[error("blob {digest} not found in {repository}")]
    BlobNotFound {
        /// The blob's digest.
        digest: Digest,
        /// `registry/repository`.
        repository: String,
    },
    /// Authentication or authorization failed.
    #[error("access to {registry} denied (status {status}) using {credential}: {envelope}")]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// 401 or 403.
        status: u16,
        /// Which credential was tried (never the secret itself).
        credential: String,
        /// The registry's error envelope.
        envelope: Envelope,
    },
    /// Content did not hash to its digest; it was discarded.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was fetched (URL or reference).
        what: String,
        /// The digest asked for.
        expected: Digest,
        /// The digest of the bytes received.
        actual: String,
    },
    /// Content was not the size its descriptor says; it was discarded.
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The blob's digest.
        digest: Digest,
        /// Size from the descriptor.
        expected: u64,
        /// Bytes received (or at least this many).
        actual: u64,
    },
    /// A descriptor (or `Content-Length`) declares more bytes than kiln accepts for its kind;
    /// nothing was fetched or allocated for it.
    #[error("{what} declares {declared} bytes, more than the {limit} accepted")]
    DeclaredTooLarge {
        /// `manifest registry/repo:tag`, `config sha256:…`, `blob sha256:…`.
        what: String,
        /// The size declared.
        declared: u64,
        /// The limit for its kind.
        limit: u64,
    },
    /// A manifest chosen from an index is not the size the index says.
    #[error("manifest {reference}: index says {declared} bytes, registry sent {actual}")]
    ManifestSize {
        /// Familiar form of the reference (with the digest).
        reference: String,
        /// Size from the index's descriptor.
        declared: u64,
        /// Bytes received.
        actual: u64,
    },
    /// A manifest pulled by tag does not hash to the digest the registry's
    /// `Docker-Content-Digest` header gives: it was discarded (containerd refuses these too).
    #[error(
        "manifest {reference}: registry says Docker-Content-Digest {header}, but the manifest's sha256 is {actual}"
    )]
    HeaderDigestMismatch {
        /// Familiar form of the reference.
        reference: String,
        /// The header's value.
        header: String,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// The registry returned a manifest type this client does not understand.
    #[error("unsupported manifest media type {media_type:?} for {reference}")]
    UnsupportedMediaType {
        /// The media type received.
        media_type: String,
        /// Familiar form of the reference.
        reference: String,
    },
    /// The manifest is not valid JSON of the expected shape.
    #[error("invalid manifest for {reference}: {error}")]
    InvalidManifest {
        /// Familiar form of the reference.
        reference: String,
        /// The parse error (part of the message, not a `source()`).
        error: serde_json::Error,
    },
    /// An index has no entry for the requested platform.
    #[error("no manifest for platform {platform} in {reference} (available: {available})")]
    NoMatchingPlatform {
        /// Familiar form of the reference.
        reference: String,
        /// The platform asked for.
        platform: String,
        /// Comma-separated platforms in the index.
        available: String,
    },
    /// A response body exceeded a limit.
    #[error("{what} exceeds {limit} bytes")]
    TooLarge {
        /// What was being read.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// The `WWW-Authenticate` header could not be understood.
    #[error("unsupported authentication challenge from {registry}: {header:?}")]
    Challenge {
        /// The registry host.
        registry: String,
        /// The header value.
        header: String,
    },
    /// The token endpoint answered with something unusable.
    #[error("invalid token response from {realm}: {error}")]
    TokenResponse {
        /// The token endpoint.
        realm: String,
        /// The parse error (part of the message, not a `source()`).
        error: serde_json::Error,
    },
    /// Looking up credentials (config.json or a credential helper) failed.
    #[error("credentials for {registry}: {reason}")]
    Credential {
        /// The registry host.
        registry: String,
        /// What went wrong (never contains a secret).
        reason: String,
    },
    /// docker's config.json is not valid JSON.
    #[error("invalid docker config {}: {error}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// The parse error (part of the message, not a `source()`).
        error: serde_json::Error,
    },
    /// The registry's upload answer lacked a usable `Location`.
    #[error("{url}: upload response without a valid Location header")]
    MissingLocation {
        /// The URL that answered.
        url: String,
    },
    /// A chunk upload had to be re-sent mid-stream; the upload restarts.
    #[error("upload to {url} interrupted")]
    UploadInterrupted {
        /// The upload session.
        url: String,
    },
    /// Reading from or writing to the blob store failed.
    #[error("blob store I/O for {digest}: {error}")]
    Store {
        /// The blob concerned.
        digest: Digest,
        /// The I/O error (part of the message, not a `source()`).
        error: std::io::Error,
    },
    /// Making a blob while it uploads failed (see [`BlobMaker`](crate::BlobMaker)).
    #[error("making {what} for upload: {error}")]
    Make {
        /// What was being made.
        what: String,
        /// The I/O error (part of the message, not a `source()`).
        error: std::io::Error,
    },
    /// Other I/O (fs-err errors name their path).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    /// Whether retrying the same operation may succeed: transport errors, 5xx and 429.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Http { transport, .. } => {
                !transport.is_builder()
                    && !transport.is_redirect()
                    && !is_certificate_error(transport)
            }
            Error::NoResponse { .. } | Error::Stalled { .. } | Error::Deadline { .. } => true,
            Error::Status { status, .. } => *status == 429 || *status >= 500,
            Error::UploadInterrupted { .. } => true,
            _ => false,
        }
    }

    /// The delay the registry asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A duration as people write it: `200ms`, `30s`, `1.5s`, `2m`.
pub(crate) struct Seconds(pub(crate) Duration);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms < 1000 {
            write!(f, "{ms}ms")
        } else if ms.is_multiple_of(60_000) {
            write!(f, "{}m", ms / 60_000)
        } else if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{:.1}s", self.0.as_secs_f64())
        }
    }
}

/// A transport error's cause chain in one line, without the wrappers that only name a stage
/// (`client error (Connect)`) or repeat the URL: `connect 127.0.0.1:5999: connection refused`,
/// `resolve reg.invalid: failed to lookup address information: name or service not known`,
/// `connection closed before message completed`.
pub(crate) fn transport_cause(e: &reqwest::Error) -> String {
    let addr = e.url().map(|u| {
        let host = u.host_str().unwrap_or_default();
        match u.port_or_known_default() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        }
    });
    let host = e
        .url()
        .and_then(|u| u.host_str())
        .unwrap_or_default()
        .to_owned();
    let mut parts: Vec<String> = Vec::new();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        let text = match c.downcast_ref::<std::io::Error>() {
            Some(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                "unexpected EOF".to_owned()
            }
            Some(io) => sentence_case(&without_os_code(&io.to_string())),
            None => sentence_case(&c.to_string()),
        };
        cur = c.source();
        match text.as_str() {
            "tcp connect error" => {
                parts.push(format!("connect {}", addr.clone().unwrap_or_default()));
            }
            "dns error" => parts.push(format!("resolve {host}")),
            // Wrappers that only name the stage already named.
            "error resolving DNS" => {}
            t if t.starts_with("client error (") => {}
            _ => parts.push(text),
        }
    }
    let staged = parts
        .first()
        .is_some_and(|p| p.starts_with("connect ") || p.starts_with("resolve "));
    if e.is_connect() && !staged {
        parts.insert(0, format!("connect {}", addr.unwrap_or_default()));
    }
    if parts.is_empty() {
        // No sources: reqwest's own text, minus the URL the caller already names.
        let top = e.to_string();
        let top = top.split(" for url (").next().unwrap_or(&top).to_owned();
        parts.push(top);
    }
    let mut line = String::new();
    for p in parts {
        if line.contains(&p) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&p);
    }
    line
}

/// `Connection refused (os error 111)` → `Connection refused`.
fn without_os_code(s: &str) -> String {
    match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_owned(),
        _ => s.to_owned(),
    }
}

/// Lowercases a leading capital unless it starts an acronym (`TLS`, `UnknownIssuer` stays).
fn sentence_case(s: &str) -> String {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(a), Some(b)) if a.is_ascii_uppercase() && b.is_ascii_lowercase() => {
            let mut out = a.to_ascii_lowercase().to_string();
            out.push_str(&s[1..]);
            out
        }
        _ => s.to_owned(),
    }
}

/// Whether a transport error is a TLS certificate rejection (retrying cannot help).
fn is_certificate_error(e: &reqwest::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = source {
        if err.to_string().to_ascii_lowercase().contains("certificate") {
            return true;
        }
        source = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_parses_and_displays() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"nope"}}]}"#;
        let env = Envelope::parse(body);
        assert!(env.has_code("MANIFEST_UNKNOWN"));
        assert_eq!(env.to_string(), "MANIFEST_UNKNOWN: manifest unknown");
        assert_eq!(Envelope::parse(b"<html>").to_string(), "no error details");
    }

    #[test]
    fn durations_read_as_people_write_them() {
        let s = |ms| Seconds(Duration::from_millis(ms)).to_string();
        assert_eq!(s(200), "200ms");
        assert_eq!(s(30_000), "30s");
        assert_eq!(s(1_500), "1.5s");
        assert_eq!(s(120_000), "2m");
    }

    #[test]
    fn os_codes_and_capitals_are_dropped() {
        assert_eq!(
            sentence_case(&without_os_code("Connection refused (os error 111)")),
            "connection refused"
        );
        assert_eq!(sentence_case("TLS handshake eof"), "TLS handshake eof");
    }
}
