//! Cleaning what a killed kiln left behind: runtime state, processes, cgroups, bundles.

use crate::bundle::owner_is_dead;
use crate::runtime::{Runtime, runtime_root};
use crate::{Result, cgroup};
use std::path::Path;

/// Removes every run under `state_dir` whose kiln process is gone: kills and deletes its
/// container (`runc delete --force`), kills what is left in its cgroups, removes cgroups and
/// bundle. Runs of live kiln processes are left alone. Call it when kiln starts.
pub fn cleanup_stale(state_dir: &Path) -> Result<()> {
    let runtime = Runtime::detect(None).ok();
    cleanup_stale_with(runtime.as_ref(), state_dir)
}

/// [`cleanup_stale`] with an explicit runtime (`None`: only cgroups and bundles are cleaned).
pub fn cleanup_stale_with(runtime: Option<&Runtime>, state_dir: &Path) -> Result<()> {
    let bundles = state_dir.join("bundles");
    if !bundles.is_dir() {
        return Ok(());
    }
    let root = runtime_root(state_dir);
    for entry in fs_err::read_dir(&bundles)? {
        let entry = entry?;
        let bundle = entry.path();
        let id = entry.file_name().to_string_lossy().into_owned();
        if !owner_is_dead(&bundle) {
            continue;
        }
        tracing::info!(id, "cleaning up a run left by a killed kiln");
        if let Some(rt) = runtime {
            rt.force_delete(&root, &id);
        }
        cgroup::remove(&id);
        remove_bundle(&bundle)?;
    }
    Ok(())
}

/// Removes a bundle directory; one another kiln's reaper removed meanwhile is fine.
pub(crate) fn remove_bundle(bundle: &Path) -> Result<()> {
    // Its network namespace is a mount and pasta may serve it: both go first.
    crate::network::release(bundle);
    match fs_err::remove_dir_all(bundle) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => Ok(other?),
    }
}
