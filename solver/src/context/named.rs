//! Named contexts, `--build-context NAME=VALUE` as buildx takes them: a directory, an image
//! (`docker-image://REF`), an OCI layout on disk (`oci-layout://PATH[:TAG|@DIGEST]`), or a git
//! or http(s) URL fetched like the main context. The Dockerfile reaches one by naming it as a
//! stage (which it then replaces), as a `FROM` base, or in `--from`.

use std::collections::{BTreeSet, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use kiln_cache::Store;
use kiln_graph::context_key;
use kiln_oci::{Descriptor, Digest, ImageIndex, ImageManifest};

use super::remote::ContextSource;
use crate::error::{Error, Result};

/// The most bytes of an OCI layout's `index.json`, or of a manifest in it.
const MAX_INDEX_SIZE: u64 = 4 << 20;

/// What a named context is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedSpec {
    /// A directory of the client.
    Dir(PathBuf),
    /// A git repository or an http(s) tarball, fetched when the build first needs it.
    Remote(ContextSource),
    /// An image by reference, resolved as `FROM` resolves one.
    Image(String),
    /// An image in an OCI layout directory: by tag (`org.opencontainers.image.ref.name`), by
    /// digest, or the only one it holds.
    OciLayout { dir: PathBuf, select: LayoutSelect },
}

/// Which image of an OCI layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutSelect {
    /// The only image of the layout, else the one tagged `latest`.
    Default,
    Tag(String),
    Digest(Digest),
}

/// Parses `NAME=VALUE`; returns the name as contexts are looked up ([`context_key`]).
pub fn parse_build_context(arg: &str) -> Result<(String, NamedSpec)> {
    let bad = |why: &str| Error::other(format!("--build-context {arg:?}"), why);
    let Some((name, value)) = arg.split_once('=') else {
        return Err(bad("expected NAME=VALUE"));
    };
    if name.is_empty() {
        return Err(bad("the name is empty"));
    }
    if value.is_empty() {
        return Err(bad("the value is empty"));
    }
    let key = context_key(name);
    if key.contains(char::is_whitespace) {
        return Err(bad("invalid context name"));
    }
    let spec = if let Some(r) = value.strip_prefix("docker-image://") {
        if r.is_empty() {
            return Err(bad("docker-image:// names no image"));
        }
        r.parse::<kiln_oci::Reference>()
            .map_err(|e| bad(&e.to_string()))?;
        NamedSpec::Image(r.to_owned())
    } else if let Some(rest) = value.strip_prefix("oci-layout://") {
        let (dir, select) = split_layout(rest).map_err(|e| bad(&e))?;
        NamedSpec::OciLayout { dir, select }
    } else {
        match ContextSource::parse(value) {
            ContextSource::Dir(d) => {
                if !d.is_dir() {
                    return Err(bad(&format!("{} is not a directory", d.display())));
                }
                NamedSpec::Dir(d)
            }
            ContextSource::Stdin => return Err(bad("stdin (-) cannot be a named context")),
            remote => NamedSpec::Remote(remote),
        }
    };
    Ok((key, spec))
}

/// `PATH[:TAG|@sha256:…]`; a `:` that is part of the path (no such directory without it) is
/// kept.
fn split_layout(rest: &str) -> std::result::Result<(PathBuf, LayoutSelect), String> {
    if rest.is_empty() {
        return Err("oci-layout:// names no directory".to_owned());
    }
    let (dir, select) = if let Some((d, digest)) = rest.rsplit_once('@') {
        let digest: Digest = digest
            .parse()
            .map_err(|e| format!("invalid digest {digest:?}: {e}"))?;
        (d.to_owned(), LayoutSelect::Digest(digest))
    } else {
        match rest.rsplit_once(':') {
            Some((d, tag)) if !tag.contains('/') && !Path::new(rest).is_dir() => {
                (d.to_owned(), LayoutSelect::Tag(tag.to_owned()))
            }
            _ => (rest.to_owned(), LayoutSelect::Default),
        }
    };
    let dir = PathBuf::from(dir);
    if !dir.join("index.json").is_file() {
        return Err(format!(
            "{} is not an OCI layout (no index.json)",
            dir.display()
        ));
    }
    Ok((dir, select))
}

/// Loads the image `select` names from the OCI layout `dir` into the store (its blobs
/// verified as every load's are) and returns its manifest digest. Nothing is tagged.
pub fn load_layout(store: &Store, dir: &Path, select: &LayoutSelect) -> Result<Digest> {
    let io_err = |path: PathBuf| move |e: std::io::Error| Error::Io { path, source: e };
    let index_path = dir.join("index.json");
    let index: ImageIndex = serde_json::from_slice(&read_small(&index_path)?)
        .map_err(|e| Error::other(index_path.display().to_string(), e))?;
    let desc = pick(&index, select).map_err(|e| Error::other(dir.display().to_string(), e))?;
    let blobs = reachable(dir, &desc)?;

    // The layout, reduced to that image, as the OCI archive `load` reads.
    let one = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": desc.media_type,
            "digest": desc.digest.to_string(),
            "size": desc.size,
        }],
    });
    let (reader, writer) = std::io::pipe().map_err(io_err(dir.to_path_buf()))?;
    let dir_owned = dir.to_path_buf();
    let feeder = std::thread::spawn(move || -> std::io::Result<()> {
        let mut tar = tar::Builder::new(writer);
        let mut put = |name: &str, data: &[u8]| -> std::io::Result<()> {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, name, data)
        };
        put("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        put("index.json", one.to_string().as_bytes())?;
        for d in &blobs {
            let rel = format!("blobs/{}/{}", d.algorithm(), d.hex());
            tar.append_path_with_name(dir_owned.join(&rel), &rel)?;
        }
        tar.into_inner()?.flush()
    });
    let loaded = kiln_cache::load_archive(store, reader);
    let fed = feeder
        .join()
        .map_err(|_| Error::other(dir.display().to_string(), "reading the layout panicked"))?;
    let loaded = loaded?;
    fed.map_err(io_err(dir.to_path_buf()))?;
    let img = loaded.into_iter().next().ok_or_else(|| {
        Error::other(
            dir.display().to_string(),
            format!("{} holds no image for this platform", desc.digest),
        )
    })?;
    Ok(img.record.manifest_digest)
}

fn read_small(path: &Path) -> Result<Vec<u8>> {
    let io_err = |e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let len = fs_err::metadata(path).map_err(io_err)?.len();
    if len > MAX_INDEX_SIZE {
        return Err(Error::other(
            path.display().to_string(),
            format!("{len} bytes is more than an index or manifest may have ({MAX_INDEX_SIZE})"),
        ));
    }
    fs_err::read(path).map_err(io_err)
}

/// The index entry `select` names.
fn pick(index: &ImageIndex, select: &LayoutSelect) -> std::result::Result<Descriptor, String> {
    const REF_NAME: &str = "org.opencontainers.image.ref.name";
    let tagged = |tag: &str| {
        index.manifests.iter().find(|d| {
            d.annotations.get(REF_NAME).is_some_and(|n| {
                n == tag
                    || n.rsplit_once(':')
                        .is_some_and(|(_, t)| t == tag && !t.contains('/'))
            })
        })
    };
    match select {
        LayoutSelect::Digest(want) => Ok(index
            .manifests
            .iter()
            .find(|d| d.digest == *want)
            .cloned()
            // A manifest the index does not list directly (one of a nested index).
            .unwrap_or_else(|| {
                Descriptor::new(
                    "application/vnd.oci.image.manifest.v1+json",
                    0,
                    want.clone(),
                )
            })),
        LayoutSelect::Tag(tag) => tagged(tag)
            .cloned()
            .ok_or_else(|| format!("no image tagged {tag:?} in the layout")),
        LayoutSelect::Default => match index.manifests.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err("the layout holds no image".to_owned()),
            _ => tagged("latest").cloned().ok_or_else(|| {
                "the layout holds several images and none is tagged \"latest\": name one \
                 with :TAG or @DIGEST"
                    .to_owned()
            }),
        },
    }
}

/// The blobs an image of the layout needs: its manifest (or index and theirs), configs,
/// layers. Blobs it names that the layout lacks are left for `load` to report.
fn reachable(dir: &Path, root: &Descriptor) -> Result<Vec<Digest>> {
    let mut out = BTreeSet::new();
    let mut seen = HashSet::new();
    let mut todo = vec![(root.digest.clone(), 0u32)];
    while let Some((d, depth)) = todo.pop() {
        if !seen.insert(d.clone()) {
            continue;
        }
        let path = dir.join("blobs").join(d.algorithm()).join(d.hex());
        if !path.is_file() {
            continue;
        }
        out.insert(d.clone());
        if depth > 4 {
            continue;
        }
        let bytes = read_small(&path)?;
        let v: serde_json::Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(_) => continue,
        };
        if v.get("manifests").is_some() {
            if let Ok(ix) = serde_json::from_value::<ImageIndex>(v) {
                todo.extend(ix.manifests.into_iter().map(|m| (m.digest, depth + 1)));
            }
        } else if let Ok(m) = serde_json::from_value::<ImageManifest>(v) {
            out.insert(m.config.digest);
            out.extend(m.layers.into_iter().map(|l| l.digest));
        }
    }
    // Layers and configs named but absent stay out: load names the missing blob.
    out.retain(|d| {
        dir.join("blobs")
            .join(d.algorithm())
            .join(d.hex())
            .is_file()
    });
    Ok(out.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_as_buildx_takes_them() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        assert_eq!(
            parse_build_context(&format!("Src={d}")).unwrap(),
            ("src".to_owned(), NamedSpec::Dir(dir.path().to_path_buf()))
        );
        assert_eq!(
            parse_build_context("alpine:latest=docker-image://busybox:1.36").unwrap(),
            (
                "alpine".to_owned(),
                NamedSpec::Image("busybox:1.36".to_owned())
            )
        );
        assert!(matches!(
            parse_build_context("g=https://example.com/r.git#main:sub")
                .unwrap()
                .1,
            NamedSpec::Remote(ContextSource::Git { .. })
        ));
        for bad in [
            "novalue",
            "=x",
            "x=",
            "x=docker-image://",
            "x=docker-image://UPPER",
            "x=/no/such/dir",
            "x=-",
            "x=oci-layout:///no/such/layout",
        ] {
            let e = parse_build_context(bad).unwrap_err().to_string();
            assert!(e.contains("--build-context"), "{bad}: {e}");
        }
    }

    #[test]
    fn layout_suffixes_name_a_tag_or_a_digest() {
        let dir = tempfile::tempdir().unwrap();
        fs_err::write(dir.path().join("index.json"), br#"{"manifests":[]}"#).unwrap();
        let d = dir.path().display().to_string();
        assert_eq!(split_layout(&d).unwrap().1, LayoutSelect::Default,);
        assert_eq!(
            split_layout(&format!("{d}:v1")).unwrap().1,
            LayoutSelect::Tag("v1".to_owned())
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            split_layout(&format!("{d}@{digest}")).unwrap().1,
            LayoutSelect::Digest(digest.parse().unwrap())
        );
    }
}
