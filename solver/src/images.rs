//! Images for the CLI's image commands (`images`, `tag`, `rmi`, `history`, `inspect`, `load`,
//! `save`, `import`, `pull`, `push`): the store's images and their registries, and nothing
//! else of the store.

use crate::distribution;
use crate::error::{Error, Result};
use crate::host::{Host, tokio_runtime};
use kiln_cache::{ApplyMode, ApplyOptions, Store};
use kiln_oci::{Digest, Platform};
use kiln_registry_client::{PushReport, Reference};
use std::io::{Read, Write};
use std::path::Path;

pub use kiln_cache::archive::familiar_name;
pub use kiln_cache::{
    ArchiveFormat, HistoryEntry, ImageRecord, ImageSummary, LoadedImage, RemoveEvent, history,
    normalize_name,
};

/// The images of a host's store.
pub struct Images<'h>(&'h Host);

impl Host {
    /// The store's images.
    pub fn images(&self) -> Images<'_> {
        Images(self)
    }
}

impl Images<'_> {
    fn store(&self) -> &Store {
        self.0.store()
    }

    /// An image by name (as given or as docker normalizes it: `app` is
    /// `docker.io/library/app:latest`), full or short ID, or manifest digest. Every command
    /// finds images through here, so they all accept the same names.
    pub fn resolve(&self, name_or_id: &str) -> Result<Option<ImageRecord>> {
        Ok(self.find(name_or_id)?.map(|(rec, _)| rec))
    }

    /// [`Images::resolve`], with the key the store knows the image by (the normalized name
    /// when it was found by name).
    fn find(&self, name_or_id: &str) -> Result<Option<(ImageRecord, String)>> {
        if let Some(rec) = self.store().resolve(name_or_id)? {
            return Ok(Some((rec, name_or_id.to_owned())));
        }
        let Ok(full) = normalize_name(name_or_id) else {
            return Ok(None);
        };
        Ok(self.store().resolve(&full)?.map(|rec| (rec, full)))
    }

    /// Every image, with its names and size.
    pub fn list(&self) -> Result<Vec<ImageSummary>> {
        Ok(self.store().images()?)
    }

    /// Points `name` (normalized) at the image with manifest `manifest`.
    pub fn tag(&self, name: &str, manifest: &Digest) -> Result<()> {
        Ok(self.store().tag(name, manifest)?)
    }

    /// `rmi`: untags the name, and deletes the image when no name is left (or with `force`).
    pub fn remove(&self, name_or_id: &str, force: bool) -> Result<Vec<RemoveEvent>> {
        let key = match self.find(name_or_id)? {
            Some((_, key)) => key,
            None => name_or_id.to_owned(),
        };
        Ok(self.store().remove_image(&key, force)?)
    }

    /// docker's `inspect` document of an image.
    pub fn inspect(&self, rec: &ImageRecord) -> Result<serde_json::Value> {
        let names = self.store().names_for(&rec.manifest_digest)?;
        Ok(kiln_cache::inspect_json(self.store(), rec, &names))
    }

    /// `load`: the images of a docker or OCI archive (plain or compressed).
    pub fn load(&self, archive: impl Read + Send) -> Result<Vec<LoadedImage>> {
        Ok(kiln_cache::load_archive(self.store(), archive)?)
    }

    /// `save`: an archive of the images under their names.
    pub fn save(
        &self,
        images: &[(String, ImageRecord)],
        format: ArchiveFormat,
        out: impl Write,
    ) -> Result<()> {
        Ok(kiln_cache::save_archive(self.store(), images, format, out)?)
    }

    /// `save -o FILE`: as [`save`](Self::save), into `dest` through a temp file beside it
    /// (never a half-written archive).
    pub fn save_to(
        &self,
        images: &[(String, ImageRecord)],
        format: ArchiveFormat,
        dest: &Path,
    ) -> Result<()> {
        write_atomically(dest, |w| self.save(images, format, w))
    }

    /// `import`: a root filesystem tarball as a one-layer image named `name`.
    pub fn import(&self, rootfs: impl Read + Send, name: &str) -> Result<ImageRecord> {
        self.import_at(rootfs, name, None)
    }

    /// As [`import`](Self::import), created at `epoch` (`SOURCE_DATE_EPOCH`; `None`: now).
    pub fn import_at(
        &self,
        rootfs: impl Read + Send,
        name: &str,
        epoch: Option<i64>,
    ) -> Result<ImageRecord> {
        Ok(kiln_cache::import_rootfs_at(
            self.store(),
            rootfs,
            name,
            epoch,
        )?)
    }

    /// `pull`: fetches what the store lacks of the image for `platform` and tags it.
    pub fn pull(&self, reference: &Reference, platform: &Platform) -> Result<ImageRecord> {
        let client = self.0.client()?;
        tokio_runtime()?.block_on(distribution::pull(
            &client,
            self.store(),
            reference,
            platform,
        ))
    }

    /// `push`: the image's blobs the registry lacks, then its manifest.
    pub fn push(&self, rec: &ImageRecord, target: &Reference) -> Result<PushReport> {
        let client = self.0.client()?;
        tokio_runtime()?.block_on(distribution::push(&client, self.store(), rec, target, &[]))
    }
}

/// The image's file tree, every layer unpacked in order (whiteouts applied), into `dest`.
pub(crate) fn flatten_to_dir(store: &Store, rec: &ImageRecord, dest: &Path) -> Result<()> {
    fs_err::create_dir_all(dest).map_err(|e| Error::Io {
        path: dest.to_path_buf(),
        source: e,
    })?;
    let opts = ApplyOptions {
        mode: ApplyMode::Flatten,
        ..ApplyOptions::default()
    };
    for l in &rec.layers {
        let blob = store.open_blob(&l.digest)?;
        kiln_cache::apply_layer(blob, dest, &opts)
            .map_err(|e| Error::other(format!("unpacking layer {}", l.digest), e))?;
    }
    Ok(())
}

/// The image's flattened file tree as one deterministic tar file.
pub(crate) fn flatten_to_tar(store: &Store, rec: &ImageRecord, dest: &Path) -> Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("kiln-tree-")
        .tempdir_in(store.tmp_dir())
        .map_err(|e| Error::Io {
            path: store.tmp_dir(),
            source: e,
        })?;
    flatten_to_dir(store, rec, tmp.path())?;
    write_atomically(dest, |w| {
        Ok(kiln_cache::layer::write_tar(
            tmp.path(),
            &kiln_cache::layer::TarOptions::default(),
            w,
        )?)
    })
}

/// Writes `dest` through a temp file beside it, renamed into place once complete.
pub(crate) fn write_atomically(
    dest: &Path,
    f: impl FnOnce(&mut std::io::BufWriter<&mut std::fs::File>) -> Result<()>,
) -> Result<()> {
    use std::io::Write;
    let dir = dest
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io(dir))?;
    {
        let mut w = std::io::BufWriter::new(tmp.as_file_mut());
        f(&mut w)?;
        w.flush().map_err(io(dest))?;
    }
    tmp.as_file().sync_all().map_err(io(dest))?;
    tmp.persist(dest).map_err(|e| Error::Io {
        path: dest.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}
