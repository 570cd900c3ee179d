//! `kiln build`: Dockerfile → graph → solve → image.

use crate::cli::{BuildArgs, ProgressMode};
use crate::commands::debug::{parse_or_report, read_dockerfile};
use crate::commands::resolver::StoreResolver;
use crate::progress;
use crate::{Reported, commands::Global};
use anyhow::{Context, Result, bail};
use kiln_frontend::diagnostic::render;
use kiln_frontend::lower::{LowerOptions, lower};
use kiln_oci::Platform;
use kiln_solver::cache::{self, Compression};
use kiln_solver::context::find_ignore_file;
use kiln_solver::context::ignore::parse_ignore_file;
use kiln_solver::engine::{Solver, VertexOutcome};
use kiln_solver::graph::Op;
use kiln_solver::ops::export;
use kiln_solver::ops::mounts::SecretSource;
use kiln_solver::remote::{self, CacheMode, CacheSpec};
use kiln_solver::worker::{KilnWorker, RemoteSetup, WorkerOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Where the result goes (`--output`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputSpec {
    /// The store, under the `-t` names and `name=`s; `push=true` pushes them too (as
    /// `--push`).
    Image { names: Vec<String>, push: bool },
    /// Only the registry (`type=registry`): pushed under the names, not stored as an image.
    /// Layers a remote cache hit left in the registry are mounted there, never downloaded.
    Registry { names: Vec<String> },
    /// An OCI or docker archive file.
    Archive {
        format: cache::ArchiveFormat,
        dest: PathBuf,
    },
    /// The final file tree in a directory.
    Local { dest: PathBuf },
    /// The final file tree as a tar file.
    Tar { dest: PathBuf },
}

/// Parses `type=image|registry|oci|docker|local|tar[,dest=PATH][,name=REF][,push=true]` (a
/// bare path means `type=local`).
pub fn parse_output(spec: &str) -> Result<OutputSpec> {
    let mut kind = None;
    let mut dest = None;
    let mut names = Vec::new();
    let mut push = false;
    if !spec.contains('=') {
        return Ok(OutputSpec::Local {
            dest: PathBuf::from(spec),
        });
    }
    for part in spec.split(',') {
        let (k, v) = part
            .split_once('=')
            .with_context(|| format!("--output {spec:?}: expected key=value, got {part:?}"))?;
        match k.trim() {
            "type" => kind = Some(v.trim().to_string()),
            "dest" => dest = Some(PathBuf::from(v.trim())),
            "name" => names.push(v.trim().to_string()),
            "push" => {
                push = match v.trim() {
                    "true" => true,
                    "false" => false,
                    other => bail!("--output {spec:?}: push={other:?}: expected true or false"),
                }
            }
            "compression" | "oci-mediatypes" => {}
            other => bail!("--output {spec:?}: unknown key {other:?}"),
        }
    }
    let need_dest = |t: &str| {
        dest.clone()
            .with_context(|| format!("--output type={t} needs dest=PATH"))
    };
    Ok(match kind.as_deref() {
        Some("image") | None => OutputSpec::Image { names, push },
        Some("registry") => OutputSpec::Registry { names },
        Some("oci") => OutputSpec::Archive {
            format: cache::ArchiveFormat::Oci,
            dest: need_dest("oci")?,
        },
        Some("docker") => OutputSpec::Archive {
            format: cache::ArchiveFormat::Docker,
            dest: need_dest("docker")?,
        },
        Some("local") => OutputSpec::Local {
            dest: need_dest("local")?,
        },
        Some("tar") => OutputSpec::Tar {
            dest: need_dest("tar")?,
        },
        Some(other) => {
            bail!(
                "--output: unknown type {other:?} (expected image, registry, oci, docker, local or tar)"
            )
        }
    })
}

fn parse_kv(items: &[String], flag: &str, from_env: bool) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in items {
        match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                out.insert(k.to_string(), v.to_string());
            }
            None if from_env && !item.is_empty() => {
                // `--build-arg K` takes K from the environment, and is ignored when unset.
                if let Ok(v) = std::env::var(item) {
                    out.insert(item.clone(), v);
                }
            }
            _ => bail!("{flag} {item:?}: expected KEY=VALUE"),
        }
    }
    Ok(out)
}

/// `kiln build`.
pub fn build(g: &Global, args: BuildArgs) -> Result<()> {
    let started = Instant::now();
    let host = Platform::host();
    if let Some(p) = &args.platform {
        let want: Platform = p.parse().with_context(|| format!("--platform {p:?}"))?;
        if want.os != host.os || want.architecture != host.architecture {
            bail!(
                "--platform {p}: building for another platform than this machine's ({}) is not supported yet",
                host
            );
        }
    }
    let outputs: Vec<OutputSpec> = args
        .output
        .iter()
        .map(|o| parse_output(o))
        .collect::<Result<_>>()?;
    if outputs.len() > 1 {
        bail!("--output: only one output is supported at a time");
    }
    let output = outputs.into_iter().next().unwrap_or(OutputSpec::Image {
        names: Vec::new(),
        push: false,
    });
    let output_names = match &output {
        OutputSpec::Image { names, .. } | OutputSpec::Registry { names } => names.clone(),
        _ => Vec::new(),
    };
    let tags: Vec<String> = args
        .tags
        .iter()
        .chain(&output_names)
        .map(|t| crate::commands::normalize_reference(t).with_context(|| format!("-t {t:?}")))
        .collect::<Result<_>>()?;
    // Only a registry gets the image: its layers need not come to this machine.
    let push_only = matches!(output, OutputSpec::Registry { .. });
    let push = args.push || push_only || matches!(output, OutputSpec::Image { push: true, .. });
    if push && tags.is_empty() {
        bail!("pushing needs a name: -t REGISTRY/REPOSITORY:TAG (or name= in --output)");
    }

    let context = args.context.clone();
    if !context.is_dir() {
        bail!(
            "unable to prepare context: path {:?} not found or not a directory",
            context.display().to_string()
        );
    }
    let dockerfile_path = match &args.file {
        Some(p) if p == Path::new("-") => p.clone(),
        Some(p) => p.clone(),
        None => context.join("Dockerfile"),
    };
    if dockerfile_path != Path::new("-") && !dockerfile_path.is_file() {
        bail!(
            "failed to read dockerfile: open {}: no such file or directory",
            dockerfile_path.display()
        );
    }
    let (file_name, text) = read_dockerfile(&dockerfile_path)?;
    let ast = parse_or_report(&file_name, &text)?;

    let dockerignore = match find_ignore_file(&context, &dockerfile_path) {
        Some(p) => parse_ignore_file(&fs_err::read_to_string(&p)?),
        None => Vec::new(),
    };
    let store = g.store()?;
    let runtime = g.runtime()?;
    kiln_solver::executor::cleanup_stale(&store.root().join("executor")).ok();
    kiln_solver::ops::step::cleanup_stale(&store);

    let opts = LowerOptions {
        target: args.target.clone(),
        build_args: parse_kv(&args.build_args, "--build-arg", true)?,
        target_platform: host.clone(),
        build_platform: host.clone(),
        dockerignore,
        labels: parse_kv(&args.labels, "--label", false)?,
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        file_name: file_name.clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let shared_client = if args.cache_from.is_empty() {
        None
    } else {
        Some(Arc::new(g.client()?))
    };
    let resolver = StoreResolver::with_registry(
        store.clone(),
        g.insecure_registries.clone(),
        rt.handle().clone(),
        args.pull,
    )
    .with_client(shared_client.clone())
    // With a remote cache, a base image's layers may never be needed here: every step on
    // top of it can be a hit, and a registry output mounts them.
    .lazy(shared_client.is_some());
    let lowered = match lower(&ast, &opts, &resolver) {
        Ok(l) => l,
        Err(err) => {
            eprint!("{}", render(&err, &file_name, &text));
            return Err(Reported(1).into());
        }
    };
    for w in &lowered.warnings {
        match w.span {
            Some(s) => eprintln!("warning: {file_name}:{}: {}", s.line, w.message),
            None => eprintln!("warning: {}", w.message),
        }
    }
    let mut def = lowered.definition;
    apply_no_cache(&mut def, args.no_cache, &args.no_cache_filter);
    let def = Arc::new(def);

    let cache_to: Vec<CacheSpec> = args
        .cache_to
        .iter()
        .map(|s| remote::parse_cache_to(s).with_context(|| format!("--cache-to {s:?}")))
        .collect::<Result<_>>()?;
    let cache_from: Vec<CacheSpec> = args
        .cache_from
        .iter()
        .map(|s| remote::parse_cache_from(s).with_context(|| format!("--cache-from {s:?}")))
        .collect::<Result<_>>()?;
    let remote_setup = match shared_client {
        None => None,
        Some(client) => {
            let (cache, warnings) =
                rt.block_on(remote::RemoteCache::load(&client, &store, &cache_from));
            for w in warnings {
                eprintln!("warning: --cache-from: {w}");
            }
            Some(Arc::new(RemoteSetup {
                cache,
                client,
                bases: resolver.staged(),
            }))
        }
    };
    let mode = if args.quiet {
        ProgressMode::Quiet
    } else {
        progress::resolve_mode(args.progress)
    };
    let epoch = source_date_epoch()?;
    let worker = Arc::new(KilnWorker::new(WorkerOptions {
        store: store.clone(),
        runtime,
        contexts: BTreeMap::from([("context".to_string(), context.canonicalize()?)]),
        compression: Compression::GZIP,
        source_date_epoch: epoch,
        secrets: parse_secrets(&args.secrets)?,
        remote: remote_setup.clone(),
    })?);
    let jobs = args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let solver = Solver::new(worker.clone(), jobs).with_events(tx);
    let (result, summary) = rt.block_on(async {
        let render = tokio::spawn(progress::render(mode, rx));
        let solve = tokio::select! {
            r = solver.solve(def.clone()) => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        };
        drop(solver);
        let summary = render.await.unwrap_or_default();
        (solve, summary)
    });
    worker.finish().ok();
    let Some(result) = result else {
        eprintln!("build cancelled");
        return Err(Reported(130).into());
    };
    let result = match result {
        Ok(r) => r,
        Err(err) => {
            report_failure(&err, &def, &file_name);
            return Err(Reported(1).into());
        }
    };
    if args.explain_cache {
        let first_missed = def.topo_order().into_iter().find(|d| {
            result.outcomes.get(d) == Some(&VertexOutcome::Executed)
                && matches!(def.vertices[d].op, Op::Exec(_) | Op::File(_))
        });
        match first_missed {
            Some(d) => eprintln!(
                "{}",
                kiln_solver::explain::explain(
                    &store,
                    &def,
                    &result.keys,
                    &d,
                    worker.hasher(),
                    worker.contexts(),
                    &file_name
                )
            ),
            None => eprintln!("kiln: every step was cached"),
        }
    }
    kiln_solver::explain::save(&store, &def, &result.keys);
    let chain = result.root.map(|r| r.chain()).unwrap_or_default();
    if !push_only {
        rt.block_on(worker.ensure_local(&chain))?;
    }
    let inline = cache_to
        .iter()
        .any(|s| matches!(s, CacheSpec::Inline))
        .then(|| {
            remote::inline_metadata(&export_records(&def, &result.keys, &worker, CacheMode::Min))
        });
    let rec = if push_only {
        export::stage_image(&store, &def, &chain, epoch, inline)?
    } else {
        export::export_image(&store, &def, &chain, epoch, inline)?
    };
    // Base images whose layers the build fetched become images of the store, as pulled.
    for (reference, rec) in remote_setup.iter().flat_map(|r| &r.bases) {
        if let Err(e) = kiln_solver::distribution::finish_pull(&store, reference, rec) {
            tracing::warn!("{}: not stored: {e}", reference.familiar());
        }
    }
    let mount_from: Vec<kiln_solver::registry::Reference> = remote_setup
        .as_ref()
        .map(|r| r.cache.mount_sources())
        .unwrap_or_default();
    match &output {
        OutputSpec::Registry { .. } => {}
        OutputSpec::Image { .. } => {
            for t in &tags {
                let current = store.resolve(t)?.map(|r| r.manifest_digest);
                if current.as_ref() != Some(&rec.manifest_digest) {
                    store.tag(t, &rec.manifest_digest)?;
                }
            }
        }
        OutputSpec::Archive { format, dest } => {
            let names: Vec<(String, cache::ImageRecord)> = if tags.is_empty() {
                vec![(String::new(), rec.clone())]
            } else {
                tags.iter().map(|t| (t.clone(), rec.clone())).collect()
            };
            write_atomically(dest, |w| {
                Ok(cache::save_archive(&store, &names, *format, w)?)
            })?;
        }
        OutputSpec::Local { dest } => crate::commands::export_tree::to_dir(&store, &rec, dest)?,
        OutputSpec::Tar { dest } => crate::commands::export_tree::to_tar(&store, &rec, dest)?,
    }
    if push_only {
        let client = match &remote_setup {
            Some(r) => r.client.clone(),
            None => Arc::new(g.client()?),
        };
        for t in &tags {
            let target = crate::commands::registry::reference(t)?;
            let report = rt
                .block_on(worker.push_lazily(&client, &rec, &target, &mount_from))
                .with_context(|| format!("pushing {}", target.familiar()))?;
            eprintln!(
                "pushed {} {} ({} blobs uploaded, {} mounted, {} already there)",
                target.familiar(),
                report.digest,
                report.uploaded,
                report.mounted,
                report.skipped
            );
        }
    } else if push {
        crate::commands::registry::push_built(g, &store, &rec, &tags, &mount_from)?;
    }
    for spec in cache_to.iter().filter(|s| !matches!(s, CacheSpec::Inline)) {
        let records = export_records(&def, &result.keys, &worker, spec.mode());
        let client = g.client()?;
        let report = rt
            .block_on(remote::export_with(
                &client,
                &store,
                spec,
                &records,
                &mount_from,
            ))
            .with_context(|| "exporting the build cache".to_string())?;
        if !args.quiet {
            eprintln!(
                "kiln: exported {} cache records ({} layers: {} uploaded, {} already there, {} mounted)",
                report.records, report.layers, report.uploaded, report.existed, report.mounted
            );
        }
    }
    if let Some(p) = &args.iidfile {
        fs_err::write(p, rec.config_digest.to_string())?;
    }
    if let Some(p) = &args.metadata_file {
        let meta = serde_json::json!({
            "containerimage.config.digest": rec.config_digest.to_string(),
            "containerimage.digest": rec.manifest_digest.to_string(),
            "image.name": tags.join(","),
        });
        fs_err::write(p, serde_json::to_vec_pretty(&meta)?)?;
    }
    if args.quiet {
        println!("{}", rec.config_digest);
    } else {
        let names = if tags.is_empty() {
            String::new()
        } else {
            format!(
                " {}",
                tags.iter()
                    .map(|t| cache::archive::familiar_name(t))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        eprintln!(
            "kiln: built{names} {} in {:.2}s ({} steps run, {} cached)",
            rec.config_digest,
            started.elapsed().as_secs_f64(),
            summary.executed,
            summary.cached
        );
    }
    Ok(())
}

/// The cache records to export: the final image's steps (`mode=min`) or every step (`max`),
/// each with the chain it produced and its inputs' keys.
fn export_records(
    def: &kiln_solver::graph::Definition,
    keys: &BTreeMap<kiln_oci::Digest, kiln_oci::Digest>,
    worker: &KilnWorker,
    mode: CacheMode,
) -> Vec<remote::ExportRecord> {
    use kiln_solver::graph::Op;
    let steps: Vec<kiln_oci::Digest> = match mode {
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
fn apply_no_cache(def: &mut kiln_solver::graph::Definition, all: bool, stages: &[String]) {
    use kiln_solver::graph::Op;
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

/// `--secret id=ID[,src=FILE|,env=VAR]` (buildx's syntax; `type=file|env` accepted too). Without
/// src/env, the variable named ID is used when set, else the file ID.
fn parse_secrets(items: &[String]) -> Result<BTreeMap<String, SecretSource>> {
    let mut out = BTreeMap::new();
    for item in items {
        let mut id = None;
        let mut src = None;
        let mut env = None;
        for part in item.split(',') {
            match part.split_once('=') {
                Some(("id", v)) => id = Some(v.to_string()),
                Some(("src" | "source", v)) => src = Some(PathBuf::from(v)),
                Some(("env", v)) => env = Some(v.to_string()),
                Some(("type", "file" | "env")) => {}
                _ => bail!("--secret {item:?}: expected id=ID[,src=FILE|,env=VAR]"),
            }
        }
        let id = id.with_context(|| format!("--secret {item:?}: missing id="))?;
        let source = match (src, env) {
            (Some(p), None) => {
                if !p.is_file() {
                    bail!("--secret {item:?}: {} is not a file", p.display());
                }
                SecretSource::File(p)
            }
            (None, Some(v)) => SecretSource::Env(v),
            (None, None) if std::env::var_os(&id).is_some() => SecretSource::Env(id.clone()),
            (None, None) => SecretSource::File(PathBuf::from(&id)),
            (Some(_), Some(_)) => bail!("--secret {item:?}: give src= or env=, not both"),
        };
        out.insert(id, source);
    }
    Ok(out)
}

fn source_date_epoch() -> Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => {
            Ok(Some(v.trim().parse().with_context(|| {
                format!("SOURCE_DATE_EPOCH={v:?}: expected seconds since 1970")
            })?))
        }
        _ => Ok(None),
    }
}

fn write_atomically(
    dest: &Path,
    f: impl FnOnce(&mut std::io::BufWriter<&mut std::fs::File>) -> Result<()>,
) -> Result<()> {
    let dir = dest
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    {
        let mut w = std::io::BufWriter::new(tmp.as_file_mut());
        f(&mut w)?;
        use std::io::Write;
        w.flush()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(dest)
        .with_context(|| format!("writing {}", dest.display()))?;
    Ok(())
}

/// Prints a failed build the way the issue asks: the step's last output lines, then
/// `Dockerfile:LINE: RUN <cmd> exited with code N`.
fn report_failure(
    err: &kiln_solver::engine::SolveError,
    def: &kiln_solver::graph::Definition,
    file_name: &str,
) {
    let line = err
        .vertex
        .as_ref()
        .and_then(|d| def.vertices.get(d))
        .and_then(|v| v.meta.line);
    let run_failed = err
        .source
        .as_ref()
        .and_then(|s| s.downcast_ref::<kiln_solver::Error>())
        .and_then(|e| match e {
            kiln_solver::Error::RunFailed {
                command,
                code,
                oom_killed,
                last_lines,
            } => Some((command, code, oom_killed, last_lines)),
            _ => None,
        });
    let at = line
        .map(|l| format!("{file_name}:{l}: "))
        .unwrap_or_default();
    if let Some((command, code, oom, lines)) = run_failed {
        if !lines.is_empty() {
            eprintln!("------\n > {}:", err.description);
            for l in lines {
                eprintln!("   {l}");
            }
            eprintln!("------");
        }
        let oom = if *oom { " (out of memory)" } else { "" };
        eprintln!("error: {at}{command} exited with code {code}{oom}");
    } else if err.description.is_empty() {
        eprintln!("error: {at}{}", err.message);
    } else {
        eprintln!("error: {at}{}: {}", err.description, err.message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_specs_parse_as_buildx_spells_them() {
        assert_eq!(
            parse_output("type=registry,name=r.example/app:1").unwrap(),
            OutputSpec::Registry {
                names: vec!["r.example/app:1".into()]
            }
        );
        assert_eq!(
            parse_output("type=image,name=a:1,push=true").unwrap(),
            OutputSpec::Image {
                names: vec!["a:1".into()],
                push: true
            }
        );
        assert_eq!(
            parse_output("type=image").unwrap(),
            OutputSpec::Image {
                names: vec![],
                push: false
            }
        );
        assert_eq!(
            parse_output("out").unwrap(),
            OutputSpec::Local { dest: "out".into() }
        );
        let err = parse_output("type=image,push=maybe")
            .unwrap_err()
            .to_string();
        assert!(err.contains("push=\"maybe\""), "{err}");
        let err = parse_output("type=floppy").unwrap_err().to_string();
        assert!(err.contains("registry"), "{err}");
        assert!(parse_output("type=oci").is_err(), "oci needs dest");
    }
}
