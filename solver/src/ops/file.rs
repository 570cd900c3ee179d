//! File ops (`COPY`, `ADD`, heredoc files, `WORKDIR`): actions applied to an overlay of the base;
//! the upperdir becomes the layer.

use super::OpEnv;
use crate::engine::Job;
use crate::error::{Error, Result};
use crate::ops::copy::{self, CopyIds};
use crate::ops::exec::blocking;
use crate::ops::incremental::{self, Reuse};
use crate::ops::step::{ReadOnlyMount, StepMount};
use crate::refs::{Chain, Ref};
use kiln_graph::{ChownOpt, FileAction, FileOp};
use kiln_sys::Root;
use rustix::fs::{Mode, OFlags};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

/// Runs a file op.
pub(crate) async fn run(env: &OpEnv, job: &Job<'_>, op: &FileOp, inputs: Vec<Ref>) -> Result<Ref> {
    let base = match op.base {
        Some(i) => inputs
            .get(i)
            .map(Ref::chain)
            .ok_or_else(|| Error::other("file op", "base input out of range"))?,
        None => Arc::new(Chain::default()),
    };
    let store = env.store.clone();
    let opts = env.layer_options();
    let digest = job.digest.clone();
    let op = op.clone();
    let chain = blocking(move || {
        let ids: Vec<_> = base.infos().iter().map(|l| l.diff_id.clone()).collect();
        let reuse_key = incremental::key(&digest, kiln_oci::chain_id(&ids).as_ref(), &op, &inputs);
        if let Some(key) = &reuse_key
            && let Some((prev, dirs)) = incremental::previous(&store, key)
        {
            match copy_over(
                &store, &base, &op, &inputs, &digest, &opts, key, prev, &dirs,
            ) {
                Ok(Some(chain)) => return Ok(chain),
                Ok(None) => tracing::debug!("incremental copy not possible: full copy"),
                Err(e) => tracing::debug!("incremental copy failed ({e}): full copy"),
            }
        }
        let reuse = reuse_key.as_ref().map(|_| Arc::new(Reuse::new(None)));
        let step = StepMount::prepare(&store, base)?;
        let root = step.rootfs();
        for action in &op.actions {
            apply(&store, &root, action, &inputs, reuse.clone())?;
        }
        let (chain, made) = step.finish_counted(&store, &digest, &opts, reuse_key.is_some())?;
        if let (Some(key), Some(reuse), Some((snapshot, 0))) = (&reuse_key, &reuse, made) {
            incremental::record(&store, key, reuse, snapshot);
        }
        Ok(chain)
    })
    .await?;
    Ok(Ref::Layers(Arc::new(chain)))
}

/// An incremental copy ([`incremental`]): the copy again over the layer `prev` describes
/// (`dirs`), writing only what changed. `None` when it cannot be done so.
#[allow(clippy::too_many_arguments)]
fn copy_over(
    store: &kiln_cache::Store,
    base: &Arc<Chain>,
    op: &FileOp,
    inputs: &[Ref],
    digest: &kiln_oci::Digest,
    opts: &kiln_cache::LayerOptions,
    key: &str,
    prev: incremental::Manifest,
    dirs: &[std::path::PathBuf],
) -> Result<Option<Chain>> {
    let below = prev
        .chain
        .clone()
        .ok_or_else(|| Error::other("incremental copy", "a manifest without a snapshot"))?;
    let reuse = Arc::new(Reuse::new(Some(prev)));
    // The layer below's tar index is read and checked on another thread meanwhile.
    let index = std::thread::spawn({
        let (store, below) = (store.clone(), below.clone());
        move || store.tar_index(&below)
    });
    let step = StepMount::prepare_over(store, base.clone(), dirs)?;
    let root = step.rootfs();
    for action in &op.actions {
        apply(store, &root, action, inputs, Some(reuse.clone()))?;
    }
    tracing::debug!(kept = reuse.kept(), "incremental copy: sources compared");
    if reuse.lost_entries() || !reuse.worth_stacking() {
        return Ok(None);
    }
    let kept = reuse.kept();
    let index = index.join().ok().flatten();
    let Some((chain, snapshot)) =
        step.finish_over(store, digest, opts, &below, dirs, index.as_ref())?
    else {
        return Ok(None);
    };
    tracing::debug!(kept, "incremental copy");
    incremental::record(store, key, &reuse, snapshot);
    Ok(Some(chain))
}

fn apply(
    store: &kiln_cache::Store,
    root: &Path,
    action: &FileAction,
    inputs: &[Ref],
    reuse: Option<Arc<Reuse>>,
) -> Result<()> {
    match action {
        FileAction::Copy(c) => {
            let src = inputs
                .get(c.src_input)
                .ok_or_else(|| Error::other("copy", "source input out of range"))?;
            let ids = resolve_ids(root, c.chown.as_ref())?;
            match src {
                Ref::Local {
                    root: ctx,
                    source,
                    listing,
                } => {
                    let ignore = crate::context::Matcher::new(&source.exclude)
                        .map_err(|e| Error::Copy(e.to_string()))?;
                    copy::copy_with(ctx, root, c, ids, Some(&ignore), reuse, listing.clone())
                        .map_err(|e| Error::Copy(e.to_string()))?;
                }
                Ref::Layers(chain) => {
                    let view = ReadOnlyMount::new(store, chain)?;
                    copy::copy(view.path(), root, c, ids, None)
                        .map_err(|e| Error::Copy(e.to_string()))?;
                }
            }
            Ok(())
        }
        FileAction::Mkfile {
            path,
            data,
            mode,
            chown,
        } => {
            let ids = resolve_ids(root, chown.as_ref())?;
            let (dir, name) = open_parent(root, path, ids)?;
            let fd = rustix::fs::openat(
                &dir,
                name.as_str(),
                OFlags::CREATE
                    | OFlags::WRONLY
                    | OFlags::TRUNC
                    | OFlags::NOFOLLOW
                    | OFlags::CLOEXEC,
                Mode::from_raw_mode(*mode),
            )
            .map_err(|e| io_err(path, e))?;
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(*mode)).map_err(|e| io_err(path, e))?;
            if let Some(ids) = ids {
                rustix::fs::fchown(&fd, Some(uid(ids.uid)), Some(gid(ids.gid)))
                    .map_err(|e| io_err(path, e))?;
            }
            let mut f = std::fs::File::from(fd);
            f.write_all(data.as_bytes()).map_err(|e| Error::Io {
                path: path.into(),
                source: e,
            })?;
            Ok(())
        }
        FileAction::Mkdir { path, mode, chown } => {
            let ids = resolve_ids(root, chown.as_ref())?;
            let (dir, name) = open_parent(root, path, ids)?;
            if name.is_empty() {
                return Ok(());
            }
            match rustix::fs::mkdirat(&dir, name.as_str(), Mode::from_raw_mode(*mode)) {
                Ok(()) => {
                    if let Some(ids) = ids {
                        rustix::fs::chownat(
                            &dir,
                            name.as_str(),
                            Some(uid(ids.uid)),
                            Some(gid(ids.gid)),
                            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                        )
                        .map_err(|e| io_err(path, e))?;
                    }
                    Ok(())
                }
                Err(rustix::io::Errno::EXIST) => Ok(()),
                Err(e) => Err(io_err(path, e)),
            }
        }
    }
}

fn uid(u: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(u)
}

fn gid(g: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(g)
}

fn io_err(path: &str, e: rustix::io::Errno) -> Error {
    Error::Io {
        path: path.into(),
        source: e.into(),
    }
}

/// `--chown` names resolved against the destination's /etc/passwd and /etc/group.
fn resolve_ids(root: &Path, chown: Option<&ChownOpt>) -> Result<Option<CopyIds>> {
    let Some(c) = chown else {
        return Ok(None);
    };
    let spec = match &c.group {
        Some(g) => format!("{}:{g}", c.user),
        None => c.user.clone(),
    };
    let u = kiln_executor::resolve_user(root, &spec)?;
    // `--chown=user` without a group uses the user's primary group, as docker does.
    Ok(Some(CopyIds {
        uid: u.uid,
        gid: u.gid,
    }))
}

/// Opens (creating with `mkdir -p` semantics) the parent directory of `path` inside `root`,
/// resolving every component inside the root: a symlink can never lead outside it.
fn open_parent(root: &Path, path: &str, ids: Option<CopyIds>) -> Result<(OwnedFd, String)> {
    let rootfd = Root::open(root).map_err(|e| io_err(&root.to_string_lossy(), e.errno()))?;
    let comps: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let Some((last, parents)) = comps.split_last() else {
        return Ok((rootfd.into(), String::new()));
    };
    let mut rel = String::new();
    for c in parents {
        if !rel.is_empty() {
            rel.push('/');
        }
        rel.push_str(c);
        match open_in_root(&rootfd, &rel) {
            Ok(_) => {}
            Err(rustix::io::Errno::NOENT) => {
                // Create it in its (already resolved) parent.
                let (pdir, name) = match rel.rsplit_once('/') {
                    Some((p, n)) => (open_in_root(&rootfd, p).map_err(|e| io_err(path, e))?, n),
                    None => (
                        rustix::io::dup(&rootfd).map_err(|e| io_err(path, e))?,
                        rel.as_str(),
                    ),
                };
                match rustix::fs::mkdirat(&pdir, name, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(io_err(path, e)),
                }
                if let Some(ids) = ids {
                    rustix::fs::chownat(
                        &pdir,
                        name,
                        Some(uid(ids.uid)),
                        Some(gid(ids.gid)),
                        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| io_err(path, e))?;
                }
            }
            Err(e) => return Err(io_err(path, e)),
        }
    }
    let dir = if rel.is_empty() {
        rootfd.into()
    } else {
        open_in_root(&rootfd, &rel).map_err(|e| io_err(path, e))?
    };
    Ok((dir, (*last).to_string()))
}

fn open_in_root(rootfd: &Root, rel: &str) -> rustix::io::Result<OwnedFd> {
    rootfd.open_dir(rel).map_err(|e| e.errno())
}
