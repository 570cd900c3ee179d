//! `ADD <url>`: a file downloaded over http(s), verified against `--checksum` when given,
//! kept in the store by content so a rebuild does not download it again.
//!
//! The cache key of a download with a checksum is the checksum (nothing is fetched to compute
//! it); without one, the file is fetched and its content digest is the key, as BuildKit does.

use crate::error::{Error, Result};
use futures::StreamExt;
use kiln_cache::Store;
use kiln_oci::{Digest, sha256};
use sha2::{Digest as _, Sha256};
use std::io::Write;
use std::path::PathBuf;

/// Where a URL's download lives: `<root>/http/<sha256(url)>/<filename>` plus its digest.
pub struct Download {
    pub dir: PathBuf,
    pub filename: String,
    pub digest: Digest,
}

fn dir_for(store: &Store, url: &str) -> PathBuf {
    store.root().join("http").join(sha256(url.as_bytes()).hex())
}

/// Parses `--checksum=sha256:<hex>`.
pub fn parse_checksum(c: &str) -> Result<Digest> {
    c.parse().map_err(|_| {
        Error::other(
            "ADD --checksum",
            format!("{c:?}: expected sha256:<64 hex digits>"),
        )
    })
}

/// The stored download of `url` if its content matches `want` (or any content when `want` is
/// None).
pub fn cached(store: &Store, url: &str, filename: &str, want: Option<&Digest>) -> Option<Download> {
    let dir = dir_for(store, url);
    let recorded: Digest = fs_err::read_to_string(dir.join(".digest"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if want.is_some_and(|w| *w != recorded) || !dir.join(filename).is_file() {
        return None;
    }
    Some(Download {
        dir,
        filename: filename.to_string(),
        digest: recorded,
    })
}

/// Downloads `url` into the store (atomically: a temp dir renamed into place), checking
/// `want` when given. The file gets mode 0600, as docker gives ADD'ed URLs.
pub async fn fetch(
    store: &Store,
    url: &str,
    filename: &str,
    want: Option<&Digest>,
) -> Result<Download> {
    let err = |m: String| Error::other(format!("ADD {url}"), m);
    let client = reqwest::Client::builder()
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| err(e.to_string()))?;
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| err(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(err(format!("server answered {}", resp.status())));
    }
    let tmp = tempfile::Builder::new()
        .prefix("http-")
        .tempdir_in(store.tmp_dir())
        .map_err(|e| err(e.to_string()))?;
    let path = tmp.path().join(filename);
    let mut file = fs_err::File::create(&path).map_err(|e| err(e.to_string()))?;
    let mut hasher = Sha256::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| err(e.to_string()))?;
        hasher.update(&chunk);
        file.write_all(&chunk).map_err(|e| err(e.to_string()))?;
    }
    file.sync_all().map_err(|e| err(e.to_string()))?;
    drop(file);
    let got = Digest::from_hasher(hasher);
    if let Some(w) = want
        && *w != got
    {
        return Err(err(format!("checksum mismatch: expected {w}, got {got}")));
    }
    rustix::fs::chmod(&path, rustix::fs::Mode::from_raw_mode(0o600))
        .map_err(|e| err(e.to_string()))?;
    fs_err::write(tmp.path().join(".digest"), got.to_string()).map_err(|e| err(e.to_string()))?;
    let dir = dir_for(store, url);
    if let Some(parent) = dir.parent() {
        fs_err::create_dir_all(parent).map_err(|e| err(e.to_string()))?;
    }
    // Replace an older download of the same URL.
    let _ = fs_err::remove_dir_all(&dir);
    let kept = tmp.keep();
    fs_err::rename(&kept, &dir).map_err(|e| err(e.to_string()))?;
    Ok(Download {
        dir,
        filename: filename.to_string(),
        digest: got,
    })
}
