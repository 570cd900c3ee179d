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
    /// Connection, TLS or protocol failure (retried before being returned).
    #[error("{method} {url} failed")]
    Http {
        /// HTTP method.
        method: String,
        /// URL requested.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
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
    /// The registry returned a manifest type this client does not understand.
    #[error("unsupported manifest media type {media_type:?} for {reference}")]
    UnsupportedMediaType {
        /// The media type received.
        media_type: String,
        /// Familiar form of the reference.
        reference: String,
    },
    /// The manifest is not valid JSON of the expected shape.
    #[error("invalid manifest for {reference}")]
    InvalidManifest {
        /// Familiar form of the reference.
        reference: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
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
    #[error("invalid token response from {realm}")]
    TokenResponse {
        /// The token endpoint.
        realm: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
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
    #[error("invalid docker config {path}")]
    Config {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
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
    #[error("blob store I/O for {digest}")]
    Store {
        /// The blob concerned.
        digest: Digest,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Other I/O (fs-err errors name their path).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    /// Whether retrying the same operation may succeed: transport errors, 5xx and 429.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Http { source, .. } => {
                !source.is_builder() && !source.is_redirect() && !is_certificate_error(source)
            }
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
}
