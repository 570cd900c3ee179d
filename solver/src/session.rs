//! A build session: the one entry point from a lowered Dockerfile to its outputs.
//!
//! [`Build::new`] checks the options and imports the remote caches (`--cache-from`); the
//! build is then the frontend's [`ImageResolver`] (base images from the store, else their
//! registry; only manifests and configs when a remote cache may make their layers
//! unnecessary); [`Build::run`] solves the definition and does everything after: explain
//! records, the image (stored or only staged), base images fetched lazily becoming images of
//! the store, the output, pushes and cache export. Everything runs on the session's one tokio
//! runtime.

pub use crate::context::epoch::default_epoch;
use crate::context::named::NamedSpec;
pub use crate::context::remote::{ContextSource, FetchedContext};
use crate::error::{Error, Result};
use crate::host::{Host, tokio_runtime};
pub use crate::ops::exec::RunNetwork;
use crate::ops::export;
pub use crate::ops::export::LayerCompression;
use crate::ops::mounts::SecretSource;
use crate::remote::{self, CacheMode, CacheSpec, ExportReport};
use crate::worker::{KilnWorker, RemoteSetup, WorkerOptions};
use crate::{distribution, explain};
use kiln_cache::{ArchiveFormat, ImageRecord};
use kiln_graph::{
    Definition, ImageConfig, ImageResolver, LocalSource, NamedContext, Op, ResolvedImage,
};
use kiln_oci::{Digest, Platform};
use kiln_registry_client::{Client, Reference};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use crate::engine::{Event, EventKind, LogStream, SolveError, VertexOutcome};

/// Where the result goes (`--output`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The store, under the `-t` names and `name=`s; `push=true` pushes them too (as
    /// `--push`).
    Image { names: Vec<String>, push: bool },
    /// Only the registry (`type=registry`): pushed under the names, not stored as an image.
    /// Layers a remote cache hit left in the registry are mounted there, never downloaded.
    Registry { names: Vec<String> },
    /// An OCI archive file.
    Oci { dest: PathBuf },
    /// A docker archive file.
    Docker { dest: PathBuf },
    /// The final file tree in a directory.
    Local { dest: PathBuf },
    /// The final file tree as a tar file.
    Tar { dest: PathBuf },
}

impl Default for Output {
    fn default() -> Output {
        Output::Image {
            names: Vec::new(),
            push: false,
        }
    }
}

impl Output {
    /// Parses buildx's `type=image|registry|oci|docker|local|tar[,dest=PATH][,name=REF]
    /// [,push=true]` (a bare path means `type=local`). Errors name the spec.
    pub fn parse(spec: &str) -> std::result::Result<Output, String> {
        if !spec.contains('=') {
            return Ok(Output::Local {
                dest: PathBuf::from(spec),
            });
        }
        let (mut kind, mut dest, mut names, mut push) = (None, None, Vec::new(), false);
        for part in spec.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("--output {spec:?}: expected key=value, got {part:?}"))?;
            match k.trim() {
                "type" => kind = Some(v.trim().to_string()),
                "dest" => dest = Some(PathBuf::from(v.trim())),
                "name" => names.push(v.trim().to_string()),
                "push" => {
                    push = match v.trim() {
                        "true" => true,
                        "false" => false,
                        other => {
                            return Err(format!(
                                "--output {spec:?}: push={other:?}: expected true or false"
                            ));
                        }
                    }
                }
                // Checked by `LayerCompression::parse`.
                "compression" | "compression-level" | "force-compression" | "oci-mediatypes" => {}
                other => return Err(format!("--output {spec:?}: unknown key {other:?}")),
            }
        }
        let need_dest = |t: &str| {
            dest.clone()
                .ok_or_else(|| format!("--output type={t} needs dest=PATH"))
        };
        Ok(match kind.as_deref() {
            Some("image") | None => Output::Image { names, push },
            Some("registry") => Output::Registry { names },
            Some("oci") => Output::Oci {
                dest: need_dest("oci")?,
            },
            Some("docker") => Output::Docker {
                dest: need_dest("docker")?,
            },
            Some("local") => Output::Local {
                dest: need_dest("local")?,
            },
            Some("tar") => Output::Tar {
                dest: need_dest("tar")?,
            },
            Some(other) => {
                return Err(format!(
                    "--output: unknown type {other:?} (expected image, registry, oci, docker, local or tar)"
                ));
            }
        })
    }

    /// The `name=`s of an image or registry output.
    pub fn names(&self) -> &[String] {
        match self {
            Output::Image { names, .. } | Output::Registry { names } => names,
            _ => &[],
        }
    }
}

/// Removes this process's pooled RUN network namespaces when dropped.
struct DrainNetworkPool;

impl Drop for DrainNetworkPool {
    fn drop(&mut self) {
        kiln_executor::network::drain_pool();
    }
}

/// A `--secret` source: a file, or an environment variable of this process.
pub type Secret = SecretSource;

/// What a build is asked to do, flags already parsed.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The build context directory.
    pub context: PathBuf,
    /// The Dockerfile's name as shown in messages.
    pub file_name: String,
    /// `--jobs` (at least 1).
    pub jobs: usize,
    /// `--pull`: look base image tags up in their registry even when the store has them.
    pub pull: bool,
    /// `--secret id=…`.
    pub secrets: BTreeMap<String, Secret>,
    /// The build's epoch (`SOURCE_DATE_EPOCH`, else [`default_epoch`], else 0): image times,
    /// and the clamp of file times in new layers.
    pub source_date_epoch: Option<i64>,
    /// `--no-reproducible`: wall-clock image times and file times kept as they are (ignored
    /// when `source_date_epoch` is set).
    pub wall_clock: bool,
    /// `--cache-from` specs as written.
    pub cache_from: Vec<String>,
    /// `--cache-to` specs as written.
    pub cache_to: Vec<String>,
    /// `--output`.
    pub output: Output,
    /// `--output …,compression=…,compression-level=…,force-compression=…`.
    pub compression: LayerCompression,
    /// `-t` names and the output's `name=`s, normalized (`docker.io/library/app:1`).
    pub tags: Vec<String>,
    /// `--push`.
    pub push: bool,
    /// `--explain-cache`: say why the first step that ran missed.
    pub explain_cache: bool,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--no-cache-filter STAGE`.
    pub no_cache_filter: Vec<String>,
    /// `--build-context NAME=VALUE`, as written.
    pub build_contexts: Vec<String>,
    /// `--network` and `--add-host` of the RUN steps (BuildKit's semantics; in no cache key).
    pub network: RunNetwork,
}

/// The `.dockerignore` patterns of a build: `<Dockerfile>.dockerignore` beside the
/// Dockerfile, else `.dockerignore` in the context, else none.
pub fn dockerignore(context: &Path, dockerfile: &Path) -> Result<Vec<String>> {
    crate::context::read_ignore_patterns(context, dockerfile)
        .map_err(|e| Error::other(".dockerignore", e))
}

/// One image pushed to a registry.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The reference as docker shows it.
    pub name: String,
    /// The manifest digest.
    pub digest: Digest,
    /// Blobs uploaded, mounted from another repository, and already there.
    pub uploaded: usize,
    pub mounted: usize,
    pub skipped: usize,
}

/// What a finished build made.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// The image ID (config digest).
    pub config_digest: Digest,
    /// The manifest digest.
    pub manifest_digest: Digest,
    /// `--explain-cache`: why the first step that ran missed (or that every step was cached).
    pub explanation: Option<String>,
    /// Pushes, in order.
    pub pushed: Vec<Pushed>,
    /// Whether the pushes mounted cached layers instead of downloading them (push-only).
    pub push_only: bool,
    /// `--cache-to` exports, in order.
    pub cache_exports: Vec<ExportReport>,
}

/// Why a build did not finish.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Ctrl-C.
    #[error("build cancelled")]
    Cancelled,
    /// A step failed (or the graph was malformed).
    #[error(transparent)]
    Solve(#[from] SolveError),
    /// Something after the solve: the image, an output, a push, the cache export.
    #[error(transparent)]
    Other(#[from] Error),
}

/// One build.
pub struct Build<'h> {
    host: &'h Host,
    opts: BuildOptions,
    rt: tokio::runtime::Runtime,
    cache_to: Vec<CacheSpec>,
    /// With `--cache-from`: the imported records and the client that reads them.
    remote: Option<(remote::RemoteCache, Arc<Client>)>,
    warnings: Vec<String>,
    /// Base images resolved lazily (manifest and config only), not yet images of the store.
    staged: Mutex<Vec<(Reference, ImageRecord)>>,
    /// `--build-context`s by the name they answer to.
    named: BTreeMap<String, NamedSpec>,
    /// Named contexts loaded so far, each once.
    loaded: Mutex<BTreeMap<String, LoadedContext>>,
}

/// A named context once loaded.
enum LoadedContext {
    /// A directory (and, for a git or http context, the scratch that holds it).
    Dir {
        dir: PathBuf,
        /// Kept until the build ends: dropping it removes the directory.
        _scratch: Option<FetchedContext>,
    },
    /// An image of the store, by manifest digest (an OCI layout's, once loaded).
    Layout(Digest),
}

impl<'h> Build<'h> {
    /// Checks the options and imports the `--cache-from` records (a source that cannot be
    /// read is a [warning](Self::warnings), never a failure). Leftovers of a killed kiln are
    /// cleaned first.
    pub fn new(host: &'h Host, opts: BuildOptions) -> Result<Build<'h>> {
        let spec_err =
            |flag: &str, s: &str, e: remote::Error| Error::other(format!("{flag} {s:?}"), e);
        let cache_to = opts
            .cache_to
            .iter()
            .map(|s| remote::parse_cache_to(s).map_err(|e| spec_err("--cache-to", s, e)))
            .collect::<Result<Vec<_>>>()?;
        let cache_from = opts
            .cache_from
            .iter()
            .map(|s| remote::parse_cache_from(s).map_err(|e| spec_err("--cache-from", s, e)))
            .collect::<Result<Vec<_>>>()?;
        let push = opts.push || opts.output_pushes();
        if push && opts.tags.is_empty() {
            return Err(Error::other(
                "--push",
                "pushing needs a name: -t REGISTRY/REPOSITORY:TAG (or name= in --output)",
            ));
        }
        let mut named = BTreeMap::new();
        for arg in &opts.build_contexts {
            let (key, spec) = crate::context::named::parse_build_context(arg)?;
            if named.insert(key.clone(), spec).is_some() {
                return Err(Error::other(
                    format!("--build-context {arg:?}"),
                    format!("a context named {key:?} is given twice"),
                ));
            }
        }
        let rt = tokio_runtime()?;
        let mut warnings = Vec::new();
        let remote = if cache_from.is_empty() {
            None
        } else {
            let client = host.client()?;
            let (cache, w) = rt.block_on(remote::RemoteCache::load(
                &client,
                host.store(),
                &cache_from,
            ));
            warnings.extend(w);
            Some((cache, client))
        };
        Ok(Build {
            host,
            opts,
            rt,
            cache_to,
            remote,
            warnings,
            staged: Mutex::default(),
            named,
            loaded: Mutex::default(),
        })
    }

    /// What reading the `--cache-from` sources warned about.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Solves `def` and makes the outputs. `render` receives the progress events; it runs on
    /// the session's runtime while the solve does, and what it returns is returned with the
    /// result once the last event was sent. Ctrl-C cancels every running step.
    pub fn run<R, F, Fut>(self, def: Definition, render: F) -> (Result<BuildReport, BuildError>, R)
    where
        F: FnOnce(tokio::sync::mpsc::UnboundedReceiver<Event>) -> Fut,
        Fut: std::future::Future<Output = R> + Send + 'static,
        R: Send + Default + 'static,
    {
        let mut this = self;
        // The RUN steps' pooled network namespaces go when the build does, however it ends.
        let _pool = DrainNetworkPool;
        let mut def = def;
        apply_no_cache(&mut def, this.opts.no_cache, &this.opts.no_cache_filter);
        let def = Arc::new(def);
        let remote = this.remote.take().map(|(cache, client)| {
            Arc::new(RemoteSetup {
                cache,
                client,
                bases: this.staged(),
            })
        });
        let worker = match this.worker(remote.clone()) {
            Ok(w) => Arc::new(w),
            Err(e) => return (Err(e.into()), R::default()),
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let solver = crate::engine::Solver::new(worker.clone(), this.opts.jobs).with_events(tx);
        let (solved, rendered) = this.rt.block_on(async {
            let render = tokio::spawn(render(rx));
            let solved = tokio::select! {
                r = solver.solve(def.clone()) => Some(r),
                _ = tokio::signal::ctrl_c() => None,
            };
            drop(solver);
            (solved, render.await.unwrap_or_default())
        });
        worker.finish().ok();
        let result = match solved {
            None => Err(BuildError::Cancelled),
            Some(Err(e)) => Err(BuildError::Solve(e)),
            Some(Ok(solved)) => this
                .finish(&def, &worker, remote.as_deref(), solved)
                .map_err(BuildError::Other),
        };
        (result, rendered)
    }

    fn worker(&self, remote: Option<Arc<RemoteSetup>>) -> Result<KilnWorker> {
        let context = fs_err::canonicalize(&self.opts.context).map_err(|e| Error::Io {
            path: self.opts.context.clone(),
            source: e,
        })?;
        KilnWorker::new(WorkerOptions {
            store: self.host.store().clone(),
            runtime: self.host.runtime()?,
            contexts: self.context_dirs(context),
            compression: self.opts.compression.encoding,
            source_date_epoch: self.opts.epoch(),
            secrets: self.opts.secrets.clone(),
            remote,
            network: self.opts.network.clone(),
        })
    }

    /// The worker's directories: the main context and the named ones the build loaded.
    fn context_dirs(&self, main: PathBuf) -> BTreeMap<String, PathBuf> {
        let loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let mut dirs = BTreeMap::from([("context".to_string(), main)]);
        for (key, c) in loaded.iter() {
            if let LoadedContext::Dir { dir, .. } = c {
                dirs.insert(named_source_name(key), dir.clone());
            }
        }
        dirs
    }

    /// Loads the named context `key` (once): a directory found or fetched, an OCI layout's
    /// image put in the store.
    fn load_named(&self, key: &str, spec: &NamedSpec) -> Result<Option<NamedContext>> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if !loaded.contains_key(key) {
            let what = || format!("--build-context {key}");
            let c = match spec {
                NamedSpec::Image(_) => None,
                NamedSpec::Dir(d) => Some(LoadedContext::Dir {
                    dir: fs_err::canonicalize(d).map_err(|e| Error::other(what(), e))?,
                    _scratch: None,
                }),
                NamedSpec::Remote(src) => {
                    let f = FetchedContext::fetch(self.host, src)?;
                    Some(LoadedContext::Dir {
                        dir: f.path().to_path_buf(),
                        _scratch: Some(f),
                    })
                }
                NamedSpec::OciLayout { dir, select } => Some(LoadedContext::Layout(
                    crate::context::named::load_layout(self.host.store(), dir, select)
                        .map_err(|e| Error::other(what(), crate::error::chain(&e)))?,
                )),
            };
            if let Some(c) = c {
                loaded.insert(key.to_owned(), c);
            }
        }
        Ok(match loaded.get(key) {
            Some(LoadedContext::Dir { dir, .. }) => {
                let exclude = crate::context::read_ignore_patterns(dir, Path::new(""))
                    .map_err(|e| Error::other(format!("--build-context {key}"), e))?;
                Some(NamedContext::Local(LocalSource {
                    name: named_source_name(key),
                    include: Vec::new(),
                    exclude,
                }))
            }
            Some(LoadedContext::Layout(digest)) => {
                let rec = self
                    .host
                    .store()
                    .image_by_manifest(digest)?
                    .ok_or_else(|| Error::other(format!("--build-context {key}"), "image gone"))?;
                let r: Reference = format!("{key}@{digest}")
                    .parse()
                    .or_else(|_| format!("oci-layout@{digest}").parse())
                    .map_err(|e| Error::other(format!("--build-context {key}"), e))?;
                Some(NamedContext::Image(Box::new(resolved(&r, &rec).map_err(
                    |e| Error::other(format!("--build-context {key}"), e),
                )?)))
            }
            None => None,
        })
    }

    fn staged(&self) -> Vec<(Reference, ImageRecord)> {
        self.staged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Everything after a successful solve.
    fn finish(
        &self,
        def: &Definition,
        worker: &KilnWorker,
        remote: Option<&RemoteSetup>,
        solved: crate::engine::SolveResult<crate::refs::Ref>,
    ) -> Result<BuildReport> {
        let store = self.host.store();
        let explanation = self
            .opts
            .explain_cache
            .then(|| self.explain(def, &solved, worker));
        explain::save(store, def, &solved.keys);
        // Least recently used goes first when the build cache is trimmed.
        let used: Vec<String> = solved
            .keys
            .iter()
            .filter(|(d, _)| {
                matches!(
                    def.vertices.get(*d).map(|v| &v.op),
                    Some(Op::Exec(_) | Op::File(_))
                )
            })
            .map(|(_, k)| format!("step/{k}"))
            .collect();
        if let Err(e) = store.touch_cache(&used) {
            tracing::warn!("recording the build cache's use: {e}");
        }
        let chain = solved.root.map(|r| r.chain()).unwrap_or_default();
        let push_only = matches!(self.opts.output, Output::Registry { .. });
        if !push_only {
            self.rt.block_on(worker.ensure_local(&chain))?;
        }
        let inline = self
            .cache_to
            .iter()
            .any(|s| matches!(s, CacheSpec::Inline))
            .then(|| {
                remote::inline_metadata(&export_records(def, &solved.keys, worker, CacheMode::Min))
            });
        // Layers leave the machine with a push or in an OCI archive: compressed as asked, and
        // compressed at all when they came uncompressed (a docker archive's).
        let leaves = push_only
            || self.opts.push
            || self.opts.output_pushes()
            || matches!(self.opts.output, Output::Oci { .. });
        let chain = export::compress_chain(store, def, &chain, &self.opts.compression, leaves)?;
        let epoch = self.opts.epoch();
        let rec = if push_only {
            export::stage_image(store, def, &chain, epoch, inline)?
        } else {
            export::export_image(store, def, &chain, epoch, inline)?
        };
        // Base images whose layers the build fetched become images of the store, as pulled.
        for (reference, base) in remote.iter().flat_map(|r| &r.bases) {
            if let Err(e) = distribution::finish_pull(store, reference, base) {
                tracing::warn!("{}: not stored: {e}", reference.familiar());
            }
        }
        let mount_from: Vec<Reference> =
            remote.map(|r| r.cache.mount_sources()).unwrap_or_default();
        self.write_output(&rec)?;
        let mut pushed = Vec::new();
        if push_only || self.opts.push || self.opts.output_pushes() {
            let client = self.host.client()?;
            for t in &self.opts.tags {
                let target: Reference = t
                    .parse()
                    .map_err(|e| Error::other(format!("invalid reference {t:?}"), e))?;
                let report = if push_only {
                    self.rt
                        .block_on(worker.push_lazily(&client, &rec, &target, &mount_from))
                } else {
                    self.rt.block_on(distribution::push(
                        &client,
                        store,
                        &rec,
                        &target,
                        &mount_from,
                    ))
                }
                .map_err(|e| Error::other(format!("pushing {}", target.familiar()), e))?;
                pushed.push(Pushed {
                    name: target.familiar(),
                    digest: report.digest,
                    uploaded: report.uploaded,
                    mounted: report.mounted,
                    skipped: report.skipped,
                });
            }
        }
        let mut cache_exports = Vec::new();
        for spec in self
            .cache_to
            .iter()
            .filter(|s| !matches!(s, CacheSpec::Inline))
        {
            let mut records = export_records(def, &solved.keys, worker, spec.mode());
            if let Some(enc) = spec.compression() {
                for r in &mut records {
                    r.chain = export::compress_all(store, &r.chain, enc)?;
                }
            }
            let mounts = cache_mount_records(store, def, spec.cache_mounts())?;
            let client = self.host.client()?;
            let report = self
                .rt
                .block_on(remote::export_with(
                    &client,
                    store,
                    spec,
                    &records,
                    &mounts,
                    &mount_from,
                ))
                .map_err(|e| Error::other("exporting the build cache", e))?;
            cache_exports.push(report);
        }
        Ok(BuildReport {
            config_digest: rec.config_digest.clone(),
            manifest_digest: rec.manifest_digest.clone(),
            explanation,
            pushed,
            push_only,
            cache_exports,
        })
    }

    fn explain(
        &self,
        def: &Definition,
        solved: &crate::engine::SolveResult<crate::refs::Ref>,
        worker: &KilnWorker,
    ) -> String {
        let first_missed = def.topo_order().into_iter().find(|d| {
            solved.outcomes.get(d) == Some(&VertexOutcome::Executed)
                && matches!(def.vertices[d].op, Op::Exec(_) | Op::File(_))
        });
        match first_missed {
            Some(d) => explain::explain(
                self.host.store(),
                def,
                &solved.keys,
                &d,
                worker.hasher(),
                worker.contexts(),
                &self.opts.file_name,
            ),
            None => "kiln: every step was cached".to_string(),
        }
    }

    fn write_output(&self, rec: &ImageRecord) -> Result<()> {
        let store = self.host.store();
        let archive = |format: ArchiveFormat, dest: &Path| -> Result<()> {
            let names: Vec<(String, ImageRecord)> = if self.opts.tags.is_empty() {
                vec![(String::new(), rec.clone())]
            } else {
                self.opts
                    .tags
                    .iter()
                    .map(|t| (t.clone(), rec.clone()))
                    .collect()
            };
            crate::images::write_atomically(dest, |w| {
                Ok(kiln_cache::save_archive(store, &names, format, w)?)
            })
        };
        match &self.opts.output {
            Output::Registry { .. } => Ok(()),
            Output::Image { .. } => {
                for t in &self.opts.tags {
                    let current = store.resolve(t)?.map(|r| r.manifest_digest);
                    if current.as_ref() != Some(&rec.manifest_digest) {
                        store.tag(t, &rec.manifest_digest)?;
                    }
                }
                Ok(())
            }
            Output::Oci { dest } => archive(ArchiveFormat::Oci, dest),
            Output::Docker { dest } => archive(ArchiveFormat::Docker, dest),
            Output::Local { dest } => crate::images::flatten_to_dir(store, rec, dest),
            Output::Tar { dest } => crate::images::flatten_to_tar(store, rec, dest),
        }
    }

    fn fetch(&self, r: &Reference, platform: &Platform) -> Result<ImageRecord> {
        let client = self.host.client()?;
        let store = self.host.store();
        // With a remote cache, a base image's layers may never be needed here: every step on
        // top of it can be a hit, and a registry output mounts them.
        if self.remote.is_some() {
            let rec = self
                .rt
                .block_on(distribution::pull_lazily(&client, store, r, platform))?;
            self.staged
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((r.clone(), rec.clone()));
            Ok(rec)
        } else {
            self.rt
                .block_on(distribution::pull(&client, store, r, platform))
        }
    }
}

impl BuildOptions {
    /// The epoch layers are clamped to and images dated with; `None`: wall-clock times.
    fn epoch(&self) -> Option<i64> {
        match (self.source_date_epoch, self.wall_clock) {
            (Some(e), _) => Some(e),
            (None, true) => None,
            (None, false) => Some(0),
        }
    }

    fn output_pushes(&self) -> bool {
        matches!(
            self.output,
            Output::Registry { .. } | Output::Image { push: true, .. }
        )
    }
}

impl ImageResolver for Build<'_> {
    /// The store first; the registry when the store lacks the image (or always, for a tag,
    /// with `--pull`, falling back to the store's copy when the registry cannot be read).
    fn resolve(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> std::result::Result<ResolvedImage, String> {
        let r = parse_reference(reference)?;
        let local = self
            .host
            .store()
            .resolve(&r.to_string())
            .map_err(|e| e.to_string())?;
        let rec = match local {
            Some(rec) if !self.opts.pull || r.digest.is_some() => rec,
            Some(rec) => match self.fetch(&r, platform) {
                Ok(fresh) => fresh,
                Err(e) => {
                    tracing::warn!(
                        "{reference}: using the local image: {}",
                        crate::error::chain(&e)
                    );
                    rec
                }
            },
            None => self
                .fetch(&r, platform)
                .map_err(|e| crate::error::chain(&e))?,
        };
        resolved(&r, &rec)
    }

    fn has_named_context(&self, name: &str) -> bool {
        self.named.contains_key(name)
    }

    fn named_context(
        &self,
        name: &str,
        platform: &Platform,
    ) -> std::result::Result<Option<NamedContext>, String> {
        let Some(spec) = self.named.get(name) else {
            return Ok(None);
        };
        if let NamedSpec::Image(r) = spec {
            return self
                .resolve(r, platform)
                .map(|img| Some(NamedContext::Image(Box::new(img))));
        }
        self.load_named(name, spec)
            .map_err(|e| crate::error::chain(&e))
    }
}

/// The local source name of the named context `key`.
fn named_source_name(key: &str) -> String {
    format!("context:{key}")
}

/// Resolves base images from the store alone, and by name only when it lacks them (no digest,
/// an empty config for the platform): what `kiln debug graph` needs to work without images.
pub struct LenientResolver<'h>(pub Option<&'h Host>);

impl ImageResolver for LenientResolver<'_> {
    fn resolve(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> std::result::Result<ResolvedImage, String> {
        let r = parse_reference(reference)?;
        if let Some(host) = self.0
            && let Ok(Some(rec)) = host.store().resolve(&r.to_string())
            && let Ok(found) = resolved(&r, &rec)
        {
            return Ok(found);
        }
        Ok(ResolvedImage {
            reference: r.to_string(),
            digest: None,
            config: ImageConfig {
                os: platform.os.clone(),
                architecture: platform.architecture.clone(),
                ..Default::default()
            },
        })
    }
}

/// A `FROM` reference, with docker's wording for a bad one.
fn parse_reference(reference: &str) -> std::result::Result<Reference, String> {
    reference
        .parse()
        .map_err(|e| format!("invalid reference format {reference:?}: {e}"))
}

fn resolved(r: &Reference, rec: &ImageRecord) -> std::result::Result<ResolvedImage, String> {
    let config: ImageConfig = serde_json::from_slice(&rec.config_bytes)
        .map_err(|e| format!("{}: unreadable image config: {e}", r.familiar()))?;
    Ok(ResolvedImage {
        reference: r.to_string(),
        digest: Some(rec.manifest_digest.clone()),
        config,
    })
}

/// The cache mounts an export carries: each `RUN --mount=type=cache` id of the build that
/// `wanted` names and that holds files, as a layer of the store (deterministic, so unchanged
/// contents give the same blob and upload nothing).
fn cache_mount_records(
    store: &kiln_cache::Store,
    def: &Definition,
    wanted: &remote::CacheMounts,
) -> Result<Vec<remote::MountRecord>> {
    let ids: std::collections::BTreeSet<&str> = def
        .vertices
        .values()
        .filter_map(|v| match &v.op {
            Op::Exec(e) => Some(e.mounts.iter()),
            _ => None,
        })
        .flatten()
        .filter_map(|m| match &m.kind {
            kiln_graph::MountKind::Cache { id, .. } => Some(id.as_str()),
            _ => None,
        })
        .filter(|id| wanted.wants(id))
        .collect();
    let mut out = Vec::new();
    for id in ids {
        let dir = crate::ops::mounts::cache_mount_dir(store, id);
        let has_files = fs_err::read_dir(&dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        if !has_files {
            continue;
        }
        let layer = store.create_layer(&dir, &kiln_cache::LayerOptions::default())?;
        out.push(remote::MountRecord {
            id: id.to_owned(),
            layer,
        });
    }
    Ok(out)
}

/// The cache records to export: the final image's steps (`mode=min`) or every step (`max`),
/// each with the chain it produced and its inputs' keys.
fn export_records(
    def: &Definition,
    keys: &BTreeMap<Digest, Digest>,
    worker: &KilnWorker,
    mode: CacheMode,
) -> Vec<remote::ExportRecord> {
    let steps: Vec<Digest> = match mode {
        CacheMode::Min => export::lineage(def),
        CacheMode::Max => def
            .topo_order()
            .into_iter()
            .filter(|d| matches!(def.vertices[d].op, Op::Exec(_) | Op::File(_)))
            .collect(),
    };
    steps
        .into_iter()
        .filter_map(|d| {
            let v = &def.vertices[&d];
            let key = keys.get(&d)?.clone();
            let chain = worker.record(&key)?;
            let inputs = v
                .inputs
                .iter()
                .filter_map(|i| keys.get(i).cloned())
                .collect();
            Some(remote::ExportRecord {
                key,
                chain,
                inputs,
                description: v.meta.description.clone(),
            })
        })
        .collect()
}

/// `--no-cache` / `--no-cache-filter STAGE`: every step (of those stages) runs again. Metadata
/// only: digests, and so cache keys for later builds, stay the same.
fn apply_no_cache(def: &mut Definition, all: bool, stages: &[String]) {
    for v in def.vertices.values_mut() {
        let in_filter = v
            .meta
            .stage
            .as_ref()
            .is_some_and(|s| stages.iter().any(|f| f.eq_ignore_ascii_case(s)));
        if matches!(v.op, Op::Exec(_) | Op::File(_)) && (all || in_filter) {
            v.meta.ignore_cache = true;
        }
    }
    // What depends on a step that runs again runs again too (its input is new).
    for d in def.topo_order() {
        let dirty = def.vertices[&d]
            .inputs
            .iter()
            .any(|i| def.vertices.get(i).is_some_and(|v| v.meta.ignore_cache));
        if dirty && let Some(v) = def.vertices.get_mut(&d) {
            v.meta.ignore_cache = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_specs_parse_as_buildx_spells_them() {
        assert_eq!(
            Output::parse("type=registry,name=r.example/app:1").unwrap(),
            Output::Registry {
                names: vec!["r.example/app:1".into()]
            }
        );
        assert_eq!(
            Output::parse("type=image,name=a:1,push=true").unwrap(),
            Output::Image {
                names: vec!["a:1".into()],
                push: true
            }
        );
        assert_eq!(Output::parse("type=image").unwrap(), Output::default());
        assert_eq!(
            Output::parse("out").unwrap(),
            Output::Local { dest: "out".into() }
        );
        let err = Output::parse("type=image,push=maybe").unwrap_err();
        assert!(err.contains("push=\"maybe\""), "{err}");
        let err = Output::parse("type=floppy").unwrap_err();
        assert!(err.contains("registry"), "{err}");
        assert!(Output::parse("type=oci").is_err(), "oci needs dest");
    }
}
