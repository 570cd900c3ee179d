//! `--output type=local|tar`: the final file tree, flattened from the image's layers.

use anyhow::{Context, Result};
use kiln_solver::cache::{self, ApplyMode, ApplyOptions, ImageRecord, Store};
use std::path::Path;

/// Unpacks every layer, whiteouts applied, into `dest`.
pub fn to_dir(store: &Store, rec: &ImageRecord, dest: &Path) -> Result<()> {
    fs_err::create_dir_all(dest)?;
    let opts = ApplyOptions {
        mode: ApplyMode::Flatten,
        ..ApplyOptions::default()
    };
    for l in &rec.layers {
        let blob = store.open_blob(&l.digest)?;
        cache::apply_layer(blob, dest, &opts)
            .with_context(|| format!("unpacking layer {}", l.digest))?;
    }
    Ok(())
}

/// Writes the flattened tree as one deterministic tar file.
pub fn to_tar(store: &Store, rec: &ImageRecord, dest: &Path) -> Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("kiln-tree-")
        .tempdir_in(store.tmp_dir())?;
    to_dir(store, rec, tmp.path())?;
    let dir = dest
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut out = tempfile::NamedTempFile::new_in(dir)?;
    cache::layer::write_tar(
        tmp.path(),
        &cache::layer::TarOptions::default(),
        out.as_file_mut(),
    )?;
    out.as_file().sync_all()?;
    out.persist(dest)
        .with_context(|| format!("writing {}", dest.display()))?;
    Ok(())
}
