//! `RUN --mount`: bind (from a stage, image or the context), cache, tmpfs and secret mounts,
//! turned into sandbox mounts for one step. What they hold never becomes part of the step's
//! layer: they are mounts over the rootfs, and their empty mount points are removed after the
//! run like the runtime's own stubs.

use crate::error::{Error, Result};
use crate::ops::step::{ReadOnlyMount, StepMount};
use crate::refs::Ref;
use kiln_cache::{MountGuard, Store};
use kiln_executor::MountPlan;
use kiln_graph::{CacheSharing, CopyAction, ExecOp, MountKind};
use rustix::fs::{FlockOperation, Mode, OFlags};
use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a secret's value comes from (`kiln build --secret id=X,src=FILE|env=VAR`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

/// Things that must live as long as the step runs: read-only views, writable scratch mounts,
/// materialized context files, cache-mount locks and secret files.
#[derive(Default)]
pub struct Held {
    views: Vec<ReadOnlyMount>,
    scratch: Vec<StepMount>,
    /// secret tmpfs mounts; dropped (unmounted) before their mount points in `dirs`
    secrets: Vec<MountGuard>,
    dirs: Vec<tempfile::TempDir>,
    locks: Vec<OwnedFd>,
}

/// Turns the op's mounts into sandbox mounts plus extra `K=V` environment (secrets as env).
pub fn prepare(
    store: &Store,
    exec: &ExecOp,
    inputs: &[Ref],
    secrets: &BTreeMap<String, SecretSource>,
) -> Result<(Vec<MountPlan>, Vec<String>, Held)> {
    let mut held = Held::default();
    let mut plans = Vec::new();
    let mut env = Vec::new();
    for m in &exec.mounts {
        match &m.kind {
            MountKind::Tmpfs { size } => plans.push(MountPlan::Tmpfs {
                dst: m.target.clone(),
                options: size.map(|s| vec![format!("size={s}")]).unwrap_or_default(),
            }),
            MountKind::Bind {
                input,
                source,
                readonly,
            } => {
                let input = input
                    .and_then(|i| inputs.get(i))
                    .ok_or_else(|| Error::other("RUN --mount=type=bind", "no source input"))?;
                let root = materialize(store, input, !*readonly, &mut held)?;
                let src = resolve_inside(&root, source)?;
                plans.push(MountPlan::Bind {
                    src,
                    dst: m.target.clone(),
                    readonly: *readonly,
                });
            }
            MountKind::Cache {
                id,
                sharing,
                from,
                source,
                readonly,
                mode,
                uid,
                gid,
            } => {
                let dir = cache_dir(store, id, *sharing, *mode, *uid, *gid, &mut held)?;
                if let Some(i) = from
                    && let Some(seed) = inputs.get(*i)
                    && is_empty(&dir)
                {
                    // A new cache mount starts with the content of `from`/`source`.
                    let root = materialize(store, seed, false, &mut held)?;
                    let src = resolve_inside(&root, source)?;
                    copy_tree(&src, &dir)?;
                }
                plans.push(MountPlan::Bind {
                    src: dir,
                    dst: m.target.clone(),
                    readonly: *readonly,
                });
            }
            MountKind::Secret {
                id,
                required,
                mode,
                uid,
                gid,
                env: as_env,
            } => {
                let Some(value) = secret_value(secrets, id)? else {
                    if *required {
                        return Err(Error::other(
                            "RUN --mount=type=secret",
                            format!(
                                "secret {id} not found: pass it with --secret id={id},src=FILE"
                            ),
                        ));
                    }
                    continue;
                };
                if let Some(var) = as_env {
                    env.push(format!("{var}={}", String::from_utf8_lossy(&value)));
                    continue;
                }
                // The value lives in a private tmpfs, never in a file of the store's disk.
                let dir = tempfile::Builder::new()
                    .prefix("secret-")
                    .tempdir_in(store.tmp_dir())
                    .map_err(|e| io(store.tmp_dir(), e))?;
                let tmpfs = kiln_cache::mount_tmpfs(dir.path(), value.len() as u64 + 4096)?;
                held.dirs.push(dir);
                let file = tmpfs.target().join("secret");
                held.secrets.push(tmpfs);
                fs_err::write(&file, &value).map_err(|e| io(file.clone(), e))?;
                rustix::fs::chmod(&file, Mode::from_raw_mode(*mode))
                    .map_err(|e| io(file.clone(), e.into()))?;
                rustix::fs::chown(
                    &file,
                    Some(rustix::fs::Uid::from_raw(*uid)),
                    Some(rustix::fs::Gid::from_raw(*gid)),
                )
                .map_err(|e| io(file.clone(), e.into()))?;
                plans.push(MountPlan::Bind {
                    src: file,
                    dst: m.target.clone(),
                    readonly: true,
                });
            }
            MountKind::Ssh { id, required } => {
                if *required {
                    return Err(Error::Unsupported(format!(
                        "RUN --mount=type=ssh (id {id}) needs SSH agent forwarding, which kiln does not support yet"
                    )));
                }
            }
        }
    }
    Ok((plans, env, held))
}

fn io(path: PathBuf, source: std::io::Error) -> Error {
    Error::Io { path, source }
}

fn secret_value(secrets: &BTreeMap<String, SecretSource>, id: &str) -> Result<Option<Vec<u8>>> {
    match secrets.get(id) {
        None => Ok(None),
        Some(SecretSource::File(p)) => Ok(Some(fs_err::read(p).map_err(|e| io(p.clone(), e))?)),
        Some(SecretSource::Env(var)) => Ok(std::env::var(var).ok().map(String::into_bytes)),
    }
}

/// A directory holding the input's files for the step's lifetime.
fn materialize(store: &Store, input: &Ref, writable: bool, held: &mut Held) -> Result<PathBuf> {
    match input {
        Ref::Layers(chain) if writable => {
            // Writes to a read-write bind go to a scratch upperdir and are thrown away.
            let m = StepMount::prepare(store, Arc::clone(chain))?;
            let p = m.rootfs();
            held.scratch.push(m);
            Ok(p)
        }
        Ref::Layers(chain) => {
            let v = ReadOnlyMount::new(store, chain)?;
            let p = v.path().to_path_buf();
            held.views.push(v);
            Ok(p)
        }
        Ref::Local { root, source, .. } => {
            // Only what the context selection allows (never .dockerignore'd files).
            let dir = tempfile::Builder::new()
                .prefix("bind-")
                .tempdir_in(store.tmp_dir())
                .map_err(|e| io(store.tmp_dir(), e))?;
            let ignore = crate::context::Matcher::new(&source.exclude)
                .map_err(|e| Error::Copy(e.to_string()))?;
            let src = if source.include.is_empty() {
                vec![".".to_string()]
            } else {
                source.include.clone()
            };
            let action = CopyAction {
                src_input: 0,
                src,
                dest: "/".to_string(),
                chown: None,
                chmod: None,
                extract_archive: false,
                exclude: Vec::new(),
                parents: true,
                link: false,
            };
            crate::ops::copy::copy(root, dir.path(), &action, None, Some(&ignore))
                .map_err(|e| Error::Copy(e.to_string()))?;
            let p = dir.path().to_path_buf();
            held.dirs.push(dir);
            Ok(p)
        }
    }
}

/// `rel` inside `root`, symlinks resolved without leaving it.
fn resolve_inside(root: &Path, rel: &str) -> Result<PathBuf> {
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() || rel == "." {
        return Ok(root.to_path_buf());
    }
    let rootfd = kiln_sys::Root::open(root).map_err(|e| io(root.to_path_buf(), e.os_error()))?;
    let real = rootfd
        .real_path(rel)
        .map_err(|e| io(root.join(rel), e.os_error()))?;
    let canon_root = fs_err::canonicalize(root).map_err(|e| io(root.to_path_buf(), e))?;
    if !real.starts_with(&canon_root) {
        return Err(Error::other(
            "mount source",
            format!("{rel} resolves outside its root"),
        ));
    }
    Ok(real)
}

/// Where the cache mount `id` keeps its files: `<root>/cache-mounts/<sha256(id)>/data`.
pub(crate) fn cache_mount_dir(store: &Store, id: &str) -> PathBuf {
    let name = kiln_oci::sha256(id.as_bytes()).hex();
    store.root().join("cache-mounts").join(name).join("data")
}

/// Fills the cache mount `id`, which must not exist yet, from `layer` (a blob of the store):
/// unpacked beside it, then renamed into place, so a step sees all of it or none.
pub(crate) fn restore_cache_mount(
    store: &Store,
    id: &str,
    layer: &kiln_cache::LayerInfo,
) -> Result<bool> {
    let dir = cache_mount_dir(store, id);
    if dir.exists() {
        return Ok(false);
    }
    let base = dir.parent().unwrap_or(&dir).to_path_buf();
    fs_err::create_dir_all(&base).map_err(|e| io(base.clone(), e))?;
    let tmp = tempfile::Builder::new()
        .prefix("restore-")
        .tempdir_in(&base)
        .map_err(|e| io(base.clone(), e))?;
    let target = tmp.path().join("data");
    let stats = kiln_cache::apply::apply_layer(
        store.open_blob(&layer.digest)?,
        &target,
        &kiln_cache::apply::ApplyOptions::default(),
    )?;
    if stats.diff_id != layer.diff_id {
        return Err(Error::other(
            format!("cache mount {id:?}"),
            format!(
                "layer {} has diffID {}, not {}",
                layer.digest, stats.diff_id, layer.diff_id
            ),
        ));
    }
    match fs_err::rename(&target, &dir) {
        Ok(()) => Ok(true),
        // Another process restored or created it meanwhile: theirs is as good.
        Err(_) if dir.exists() => Ok(false),
        Err(e) => Err(io(dir, e)),
    }
}

/// The persistent directory of a cache mount; `locked` waits for other users, `private` uses
/// a fresh directory while another step holds the shared one.
#[allow(clippy::too_many_arguments)]
fn cache_dir(
    store: &Store,
    id: &str,
    sharing: CacheSharing,
    mode: u32,
    uid: u32,
    gid: u32,
    held: &mut Held,
) -> Result<PathBuf> {
    let dir = cache_mount_dir(store, id);
    let base = dir.parent().unwrap_or(&dir).to_path_buf();
    if !dir.exists() {
        fs_err::create_dir_all(&dir).map_err(|e| io(dir.clone(), e))?;
        set_owner_and_mode(&dir, mode, uid, gid)?;
    }
    if sharing == CacheSharing::Shared {
        return Ok(dir);
    }
    let lock_path = base.join("lock");
    let lock = rustix::fs::open(
        &lock_path,
        OFlags::CREATE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| io(lock_path.clone(), e.into()))?;
    match sharing {
        CacheSharing::Locked => {
            rustix::fs::flock(&lock, FlockOperation::LockExclusive)
                .map_err(|e| io(lock_path, e.into()))?;
            held.locks.push(lock);
            Ok(dir)
        }
        _ => {
            if rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive).is_ok() {
                held.locks.push(lock);
                Ok(dir)
            } else {
                let d = tempfile::Builder::new()
                    .prefix("cache-private-")
                    .tempdir_in(store.tmp_dir())
                    .map_err(|e| io(store.tmp_dir(), e))?;
                // The stand-in for a busy private cache is a new cache: it starts with the
                // requested owner and mode too.
                let p = d.path().to_path_buf();
                held.dirs.push(d);
                set_owner_and_mode(&p, mode, uid, gid)?;
                Ok(p)
            }
        }
    }
}

/// `RUN --mount=type=cache,uid=,gid=,mode=` on a new cache directory (BuildKit makes it with
/// that owner and mode: dockerfile_mount_test.go testCacheMountUser).
fn set_owner_and_mode(dir: &Path, mode: u32, uid: u32, gid: u32) -> Result<()> {
    rustix::fs::chown(
        dir,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )
    .map_err(|e| io(dir.to_path_buf(), e.into()))?;
    // After chown, which may clear set-id bits.
    rustix::fs::chmod(dir, Mode::from_raw_mode(mode)).map_err(|e| io(dir.to_path_buf(), e.into()))
}

fn is_empty(dir: &Path) -> bool {
    fs_err::read_dir(dir)
        .map(|mut it| it.next().is_none())
        .unwrap_or(false)
}

/// Seeds a cache mount: `cp -a src/. dst/` through the COPY implementation.
fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let action = CopyAction {
        src_input: 0,
        src: vec![".".to_string()],
        dest: "/".to_string(),
        chown: None,
        chmod: None,
        extract_archive: false,
        exclude: Vec::new(),
        parents: false,
        link: false,
    };
    crate::ops::copy::copy(src, dst, &action, None, None)
        .map_err(|e| Error::Copy(e.to_string()))?;
    Ok(())
}
