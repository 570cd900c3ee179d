//! Media types of manifests, indexes, configs and layers (OCI and docker v2 schema 2), and the
//! compression of a blob or an archive.

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI uncompressed layer.
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI gzip layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI zstd layer.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// OCI empty descriptor (`{}`), the config of artifacts that have none.
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// Docker v2 schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list (an index).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker uncompressed layer.
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker foreign (non-distributable) gzip layer.
pub const DOCKER_FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// Whether `media_type` is an image index or a docker manifest list.
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// Whether `media_type` is an image manifest (OCI or docker v2 schema 2).
pub fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// How a blob or an archive stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Not compressed (a plain tar).
    None,
    /// gzip (RFC 1952), possibly several members.
    Gzip,
    /// zstd frames.
    Zstd,
    /// bzip2 (archives for `ADD` only; no layer media type).
    Bzip2,
    /// xz (archives for `ADD` only; no layer media type).
    Xz,
}

impl Compression {
    /// The compression whose magic number starts `head` (`None` when no known magic does).
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else if head.starts_with(b"BZh") {
            Compression::Bzip2
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Compression::Xz
        } else {
            Compression::None
        }
    }

    /// The OCI layer media type of a layer compressed this way (`None` for bzip2 and xz,
    /// which no layer media type names).
    pub fn oci_layer_media_type(self) -> Option<&'static str> {
        match self {
            Compression::None => Some(OCI_LAYER),
            Compression::Gzip => Some(OCI_LAYER_GZIP),
            Compression::Zstd => Some(OCI_LAYER_ZSTD),
            Compression::Bzip2 | Compression::Xz => None,
        }
    }

    /// The compression a layer media type declares, OCI (including non-distributable) or
    /// docker; `None` for a type that is not a layer's.
    pub fn of_layer_media_type(media_type: &str) -> Option<Compression> {
        let base = media_type
            .strip_prefix("application/vnd.oci.image.layer.nondistributable.v1.")
            .map(|rest| format!("application/vnd.oci.image.layer.v1.{rest}"));
        match base.as_deref().unwrap_or(media_type) {
            OCI_LAYER | DOCKER_LAYER => Some(Compression::None),
            OCI_LAYER_GZIP | DOCKER_LAYER_GZIP | DOCKER_FOREIGN_LAYER => Some(Compression::Gzip),
            OCI_LAYER_ZSTD => Some(Compression::Zstd),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_magic_numbers() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"BZh91AY"), Compression::Bzip2);
        assert_eq!(Compression::sniff(b"\xfd7zXZ\x00\x00"), Compression::Xz);
        assert_eq!(Compression::sniff(b"ustar"), Compression::None);
        assert_eq!(Compression::sniff(b""), Compression::None);
    }

    #[test]
    fn layer_media_types_round_trip() {
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let mt = c.oci_layer_media_type().unwrap();
            assert_eq!(Compression::of_layer_media_type(mt), Some(c));
        }
        assert_eq!(
            Compression::of_layer_media_type(
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            ),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::of_layer_media_type(DOCKER_FOREIGN_LAYER),
            Some(Compression::Gzip)
        );
        assert_eq!(Compression::of_layer_media_type(OCI_CONFIG), None);
        assert_eq!(Compression::Xz.oci_layer_media_type(), None);
    }
}
