//! `--cache-to` / `--cache-from` values in buildx syntax.

use super::error::{Error, Result};
use kiln_cache::Encoding;
use kiln_registry_client::Reference;
use std::path::PathBuf;

/// Which steps a cache export holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// Only the steps of the final image (the default, as in buildx).
    #[default]
    Min,
    /// Every step of every stage the build ran, intermediate stages included.
    Max,
}

/// Where a cache is exported to or imported from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheSpec {
    /// An OCI artifact in a registry (`type=registry,ref=REG/REPO:TAG`). As an import, the
    /// reference may also name an image exported with inline cache metadata.
    Registry {
        /// The cache reference.
        reference: Reference,
        /// Which steps an export holds (ignored by imports).
        mode: CacheMode,
        /// `compression=gzip|zstd|uncompressed`: the compression new layers should use when
        /// they are meant for this cache (see [`CacheSpec::compression`]).
        compression: Option<String>,
        /// `cache-mounts=…`: which `RUN --mount=type=cache` directories an export carries.
        cache_mounts: CacheMounts,
    },
    /// An OCI image layout directory (`type=local,dest=DIR` / `type=local,src=DIR`).
    Local {
        /// The directory.
        dir: PathBuf,
        /// Which steps an export holds (ignored by imports).
        mode: CacheMode,
        /// `cache-mounts=…`: which `RUN --mount=type=cache` directories an export carries.
        cache_mounts: CacheMounts,
    },
    /// Cache metadata inside the pushed image's config (`type=inline`, export only); import it
    /// by passing the image reference as a registry cache.
    Inline,
}

/// Which cache mounts (`RUN --mount=type=cache,id=…`) an export carries, by `cache-mounts=`:
/// `true` (every one the build used), `false` (the default), or ids separated by `;`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CacheMounts {
    #[default]
    None,
    All,
    Ids(Vec<String>),
}

impl CacheMounts {
    /// Whether the mount `id` goes into the export.
    pub fn wants(&self, id: &str) -> bool {
        match self {
            CacheMounts::None => false,
            CacheMounts::All => true,
            CacheMounts::Ids(ids) => ids.iter().any(|i| i == id),
        }
    }

    fn parse(v: &str) -> CacheMounts {
        match v {
            "true" | "1" => CacheMounts::All,
            "false" | "0" | "" => CacheMounts::None,
            ids => CacheMounts::Ids(
                ids.split(';')
                    .map(str::trim)
                    .filter(|i| !i.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ),
        }
    }
}

impl CacheSpec {
    /// Which cache mounts an export carries.
    pub fn cache_mounts(&self) -> &CacheMounts {
        match self {
            CacheSpec::Registry { cache_mounts, .. } | CacheSpec::Local { cache_mounts, .. } => {
                cache_mounts
            }
            CacheSpec::Inline => &CacheMounts::None,
        }
    }

    /// The export mode (`Min` for inline caches).
    pub fn mode(&self) -> CacheMode {
        match self {
            CacheSpec::Registry { mode, .. } | CacheSpec::Local { mode, .. } => *mode,
            CacheSpec::Inline => CacheMode::Min,
        }
    }

    /// The layer compression the `compression=` option asks for, if any.
    pub fn compression(&self) -> Option<Encoding> {
        match self {
            CacheSpec::Registry {
                compression: Some(c),
                ..
            } => compression_of(c),
            _ => None,
        }
    }
}

fn compression_of(name: &str) -> Option<Encoding> {
    match name {
        "gzip" => Some(Encoding::GZIP),
        "zstd" => Some(Encoding::ZSTD),
        "uncompressed" => Some(Encoding::None),
        _ => None,
    }
}

/// Which flag a value came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    To,
    From,
}

/// Parses a `--cache-to` value: `type=registry,ref=REG/REPO:TAG[,mode=min|max]
/// [,compression=gzip|zstd|uncompressed]`, `type=local,dest=DIR[,mode=…]` or `type=inline`.
pub fn parse_cache_to(s: &str) -> Result<CacheSpec> {
    parse(s, Direction::To)
}

/// Parses a `--cache-from` value: `type=registry,ref=…`, `type=local,src=DIR`, or a bare
/// reference (a registry cache or an image carrying inline cache metadata).
pub fn parse_cache_from(s: &str) -> Result<CacheSpec> {
    parse(s, Direction::From)
}

/// Splits `a=b,"c=d,e",f=g` into fields (double quotes protect commas, as in CSV).
fn fields(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn parse(s: &str, dir: Direction) -> Result<CacheSpec> {
    let invalid = |reason: String| Error::InvalidSpec {
        spec: s.to_owned(),
        reason,
    };
    let s_trim = s.trim();
    if s_trim.is_empty() {
        return Err(invalid("empty value".to_owned()));
    }
    if dir == Direction::From && !s_trim.contains('=') {
        let reference: Reference = s_trim
            .parse()
            .map_err(|e: kiln_registry_client::ReferenceError| invalid(e.to_string()))?;
        return Ok(CacheSpec::Registry {
            reference,
            mode: CacheMode::Min,
            compression: None,
            cache_mounts: CacheMounts::None,
        });
    }
    let mut kind = None;
    let mut reference = None;
    let mut mode = None;
    let mut compression = None;
    let mut path = None;
    let mut cache_mounts = None;
    for field in fields(s_trim) {
        let field = field.trim();
        if field.is_empty() {
            continue;
        }
        let Some((k, v)) = field.split_once('=') else {
            return Err(invalid(format!("{field:?} is not KEY=VALUE")));
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        match k.as_str() {
            "type" => kind = Some(v.to_owned()),
            "ref" => reference = Some(v.to_owned()),
            "mode" => {
                mode = Some(match v {
                    "min" => CacheMode::Min,
                    "max" => CacheMode::Max,
                    _ => return Err(invalid(format!("mode must be min or max, not {v:?}"))),
                })
            }
            "compression" => {
                if compression_of(v).is_none() {
                    return Err(invalid(format!(
                        "compression must be gzip, zstd or uncompressed, not {v:?}"
                    )));
                }
                compression = Some(v.to_owned());
            }
            "cache-mounts" if dir == Direction::To => cache_mounts = Some(CacheMounts::parse(v)),
            "dest" if dir == Direction::To => path = Some(v.to_owned()),
            "src" if dir == Direction::From => path = Some(v.to_owned()),
            "dest" | "src" => {
                let want = if dir == Direction::To { "dest" } else { "src" };
                return Err(invalid(format!(
                    "{k}= does not apply here: a local cache is read from src= and written to dest=; use {want}="
                )));
            }
            // buildx options that describe what kiln always does.
            "oci-mediatypes" | "image-manifest" | "ignore-error" | "compression-level"
            | "force-compression" => {}
            _ => return Err(invalid(format!("unknown option {k:?}"))),
        }
    }
    let kind = kind.unwrap_or_else(|| {
        if path.is_some() && reference.is_none() {
            "local".to_owned()
        } else {
            "registry".to_owned()
        }
    });
    match kind.as_str() {
        "registry" => {
            let Some(r) = reference else {
                return Err(invalid("type=registry needs ref=REG/REPO:TAG".to_owned()));
            };
            if path.is_some() {
                return Err(invalid(
                    "type=registry takes ref=, not dest=/src=".to_owned(),
                ));
            }
            let reference: Reference = r
                .parse()
                .map_err(|e: kiln_registry_client::ReferenceError| invalid(e.to_string()))?;
            if dir == Direction::To && reference.digest.is_some() {
                return Err(invalid(
                    "an export needs a tag, not a digest, in ref=".to_owned(),
                ));
            }
            Ok(CacheSpec::Registry {
                reference,
                mode: mode.unwrap_or_default(),
                compression,
                cache_mounts: cache_mounts.unwrap_or_default(),
            })
        }
        "local" => {
            let want = if dir == Direction::To { "dest" } else { "src" };
            let Some(p) = path.filter(|p| !p.is_empty()) else {
                return Err(invalid(format!("type=local needs {want}=DIR")));
            };
            if reference.is_some() || compression.is_some() {
                return Err(invalid(format!("type=local takes {want}= and mode= only")));
            }
            Ok(CacheSpec::Local {
                dir: PathBuf::from(p),
                mode: mode.unwrap_or_default(),
                cache_mounts: cache_mounts.unwrap_or_default(),
            })
        }
        "inline" => {
            if dir == Direction::From {
                return Err(invalid(
                    "type=inline is an export; import inline cache by passing the image reference"
                        .to_owned(),
                ));
            }
            if reference.is_some()
                || path.is_some()
                || compression.is_some()
                || cache_mounts.is_some()
            {
                return Err(invalid("type=inline takes no other options".to_owned()));
            }
            if mode == Some(CacheMode::Max) {
                return Err(invalid(
                    "type=inline supports mode=min only (the image holds the final stage's layers only)"
                        .to_owned(),
                ));
            }
            Ok(CacheSpec::Inline)
        }
        "gha" | "s3" | "azblob" => Err(invalid(format!(
            "cache type {kind:?} is not supported; use registry, local or inline"
        ))),
        _ => Err(invalid(format!(
            "unknown cache type {kind:?}; use registry, local or inline"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(s: &str) -> Reference {
        match s.parse() {
            Ok(r) => r,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn registry_export_with_options() {
        let spec = parse_cache_to(
            "type=registry,ref=127.0.0.1:5000/app/cache:main,mode=max,compression=zstd",
        );
        assert_eq!(
            spec.ok(),
            Some(CacheSpec::Registry {
                reference: reference("127.0.0.1:5000/app/cache:main"),
                mode: CacheMode::Max,
                compression: Some("zstd".to_owned()),
                cache_mounts: CacheMounts::None,
            })
        );
    }

    #[test]
    fn mode_defaults_to_min_and_compression_maps() {
        let Ok(spec) = parse_cache_to("type=registry,ref=r.example/x:c,compression=gzip") else {
            panic!("should parse");
        };
        assert_eq!(spec.mode(), CacheMode::Min);
        assert_eq!(spec.compression(), Some(Encoding::GZIP));
    }

    #[test]
    fn bare_reference_imports_from_a_registry() {
        let Ok(CacheSpec::Registry { reference: r, .. }) = parse_cache_from("r.example/app:main")
        else {
            panic!("should parse as registry");
        };
        assert_eq!(r, reference("r.example/app:main"));
    }

    #[test]
    fn local_directions() {
        assert_eq!(
            parse_cache_to("type=local,dest=/tmp/c,mode=max").ok(),
            Some(CacheSpec::Local {
                dir: PathBuf::from("/tmp/c"),
                mode: CacheMode::Max,
                cache_mounts: CacheMounts::None,
            })
        );
        assert_eq!(
            parse_cache_from("type=local,src=/tmp/c").ok(),
            Some(CacheSpec::Local {
                dir: PathBuf::from("/tmp/c"),
                mode: CacheMode::Min,
                cache_mounts: CacheMounts::None,
            })
        );
        assert!(parse_cache_to("type=local,src=/tmp/c").is_err());
        assert!(parse_cache_from("type=local,dest=/tmp/c").is_err());
        assert!(parse_cache_to("type=local").is_err());
    }

    #[test]
    fn cache_mounts_are_opt_in_per_export() {
        let all = parse_cache_to("type=local,dest=/tmp/c,mode=max,cache-mounts=true").unwrap();
        assert!(all.cache_mounts().wants("go-build"));
        let some =
            parse_cache_to("type=registry,ref=r.example/x:c,cache-mounts=go-build;apt").unwrap();
        assert!(some.cache_mounts().wants("apt"));
        assert!(!some.cache_mounts().wants("npm"));
        let none = parse_cache_to("type=registry,ref=r.example/x:c").unwrap();
        assert!(!none.cache_mounts().wants("apt"));
        assert!(parse_cache_from("type=local,src=/tmp/c,cache-mounts=true").is_err());
        assert!(parse_cache_to("type=inline,cache-mounts=true").is_err());
    }

    #[test]
    fn inline_is_export_only_and_min_only() {
        assert_eq!(parse_cache_to("type=inline").ok(), Some(CacheSpec::Inline));
        assert!(parse_cache_from("type=inline").is_err());
        assert!(parse_cache_to("type=inline,mode=max").is_err());
    }

    #[test]
    fn quoted_fields_keep_commas() {
        let Ok(CacheSpec::Local { dir, .. }) = parse_cache_to("type=local,\"dest=/tmp/a,b\"")
        else {
            panic!("should parse");
        };
        assert_eq!(dir, PathBuf::from("/tmp/a,b"));
    }

    #[test]
    fn bad_values_are_errors_naming_the_problem() {
        for (input, needle) in [
            ("type=registry", "needs ref="),
            ("type=registry,ref=r.example/x:c,mode=all", "mode must be"),
            (
                "type=registry,ref=r.example/x:c,compression=lz4",
                "compression must",
            ),
            ("type=gha", "not supported"),
            ("type=nope,ref=x", "unknown cache type"),
            ("type=registry,ref=x,colour=blue", "unknown option"),
            (
                "type=registry,ref=r.example/x@sha256:0123456789012345678901234567890123456789012345678901234567890123",
                "needs a tag",
            ),
            ("", "empty"),
            ("type=registry,ref=UPPER/Case", "invalid reference"),
        ] {
            match parse_cache_to(input) {
                Ok(s) => panic!("{input:?} parsed as {s:?}"),
                Err(e) => assert!(e.to_string().contains(needle), "{input:?}: {e}"),
            }
        }
    }
}
