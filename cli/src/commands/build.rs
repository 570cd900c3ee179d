//! `kiln build`: flags → options; Dockerfile → graph (frontend); the session does the rest.

use crate::cli::{BuildArgs, ProgressMode};
use crate::commands::checks;
use crate::commands::debug::{parse_or_report, read_dockerfile};
use crate::progress;
use crate::{Reported, commands::Global};
use anyhow::{Context, Result, bail};
use kiln_frontend::diagnostic::render;
use kiln_frontend::lower::{LowerOptions, lower_checked};
use kiln_oci::Platform;
use kiln_solver::graph::NetworkMode;
use kiln_solver::session::{
    Build, BuildError, BuildOptions, ContextSource, FetchedContext, LayerCompression, Output,
    RunNetwork, Secret,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

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
    let gc_flag = match &args.gc_keep_storage {
        Some(s) => Some(
            kiln_solver::prune::parse_size(s)
                .ok_or_else(|| anyhow::anyhow!("--gc-keep-storage {s:?}: not a size"))?,
        ),
        None => None,
    };
    let host_platform = Platform::host();
    if let Some(p) = &args.platform {
        let want: Platform = p.parse().with_context(|| format!("--platform {p:?}"))?;
        if !want.same_os_arch(&host_platform) {
            bail!(
                "--platform {p}: building for another platform than this machine's ({host_platform}) is not supported yet"
            );
        }
    }
    if args.output.len() > 1 {
        bail!("--output: only one output is supported at a time");
    }
    let output = match args.output.first() {
        Some(o) => Output::parse(o).map_err(anyhow::Error::msg)?,
        None => Output::default(),
    };
    let compression = match args.output.first() {
        Some(o) => LayerCompression::parse(o).map_err(anyhow::Error::msg)?,
        None => LayerCompression::default(),
    };
    let tags: Vec<String> = args
        .tags
        .iter()
        .chain(output.names())
        .map(|t| crate::commands::normalize_reference(t).with_context(|| format!("-t {t:?}")))
        .collect::<Result<_>>()?;
    // The context: a directory, or stdin (`-`), a URL or a git repository, fetched into the
    // store's scratch for the length of the build.
    let host = g.host()?;
    let source = ContextSource::parse(&args.context.to_string_lossy());
    let fetched = match &source {
        ContextSource::Dir(_) => None,
        other => {
            if *other == ContextSource::Stdin && args.file.as_deref() == Some(Path::new("-")) {
                bail!("-f -: stdin is already the build context (kiln build -)");
            }
            Some(FetchedContext::fetch(&host, other).context("preparing the build context")?)
        }
    };
    let context = match &fetched {
        Some(s) => s.path().to_path_buf(),
        None => args.context.clone(),
    };
    if !context.is_dir() {
        bail!(
            "unable to prepare context: path {:?} not found or not a directory",
            context.display().to_string()
        );
    }
    // A Dockerfile as the whole source; else `-f` (relative to a fetched context: inside it),
    // else the context's own.
    let from_stdin = fetched.as_ref().and_then(|s| s.dockerfile());
    let requested = match (&args.file, from_stdin, fetched.is_some()) {
        (_, Some(from_stdin), _) => from_stdin,
        (Some(p), None, true) if p.is_relative() => context.join(p),
        (Some(p), _, _) => p.clone(),
        (None, _, _) => context.join("Dockerfile"),
    };
    let dockerfile_path = lowercase_fallback(&requested);
    if dockerfile_path != Path::new("-") && !dockerfile_path.is_file() {
        bail!(
            "failed to read dockerfile: open {}: no such file or directory",
            dockerfile_path.display()
        );
    }
    let opts = BuildOptions {
        context: context.clone(),
        file_name: String::new(),
        jobs: args.jobs.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }),
        pull: args.pull,
        secrets: parse_secrets(&args.secrets)?,
        source_date_epoch: None,
        wall_clock: args.no_reproducible,
        cache_from: args.cache_from.clone(),
        cache_to: args.cache_to.clone(),
        output,
        compression,
        tags: tags.clone(),
        push: args.push,
        explain_cache: args.explain_cache,
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        build_contexts: args.build_contexts.clone(),
        network: RunNetwork {
            mode: match args.network.as_str() {
                "default" => NetworkMode::Default,
                "none" => NetworkMode::None,
                "host" => NetworkMode::Host,
                other => bail!("network mode {other:?} not supported by buildkit"),
            },
            extra_hosts: args
                .add_host
                .iter()
                .map(|h| crate::commands::network::parse_add_host(h))
                .collect::<Result<_>>()?,
        },
    };
    let build_args = parse_kv(&args.build_args, "--build-arg", true)?;
    if let Some(v) = build_args.get(kiln_frontend::lint::CHECK_BUILD_ARG) {
        kiln_frontend::lint::CheckConfig::parse(v)
            .with_context(|| format!("--build-arg {}={v}", kiln_frontend::lint::CHECK_BUILD_ARG))?;
    }
    let labels = parse_kv(&args.labels, "--label", false)?;
    let (file_name, text) = read_dockerfile(&dockerfile_path)?;
    let ast = parse_or_report(&file_name, &text)?;
    let dockerignore = kiln_solver::session::dockerignore(&context, &requested)?;
    // The epoch: `--build-arg SOURCE_DATE_EPOCH`, else the variable, else (unless
    // --no-reproducible) the commit time of a clean git work tree, else 0.
    let source_date_epoch = match source_date_epoch(&build_args)? {
        Some(e) => Some(e),
        None if args.no_reproducible => None,
        // A fetched context (stdin, URL, git) has no work tree of its own.
        None if fetched.is_some() => Some(0),
        None => Some(kiln_solver::session::default_epoch(
            &context,
            &dockerfile_path,
            &dockerignore,
        )),
    };

    let build = Build::new(
        &host,
        BuildOptions {
            file_name: file_name.clone(),
            source_date_epoch,
            ..opts
        },
    )?;
    for w in build.warnings() {
        eprintln!("warning: --cache-from: {w}");
    }
    let lower_opts = LowerOptions {
        target: args.target.clone(),
        build_args,
        target_platform: host_platform.clone(),
        build_platform: host_platform,
        dockerignore,
        labels,
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        file_name: file_name.clone(),
        all_stages: args.check && args.target.is_none(),
    };
    let lowering = Instant::now();
    let (lowered, lint_report) = lower_checked(&ast, &lower_opts, &build);
    let lowering_ms = u64::try_from(lowering.elapsed().as_millis()).unwrap_or(0);
    if args.check {
        return check_only(lowered.map(drop), &lint_report, &file_name, &text);
    }
    let lowered = match lowered {
        Ok(l) => l,
        Err(err) => {
            checks::print_warnings(&lint_report, &file_name, &text);
            eprint!("{}", render(&err, &file_name, &text));
            return Err(Reported(1).into());
        }
    };
    if let Some(violation) = lint_report.violation() {
        checks::print_warnings(&lint_report, &file_name, &text);
        eprintln!("error: {file_name}: {violation}");
        return Err(Reported(1).into());
    }
    for w in &lowered.warnings {
        match w.span {
            Some(s) => eprintln!("warning: {file_name}:{}: {}", s.line, w.message),
            None => eprintln!("warning: {}", w.message),
        }
    }
    let def = lowered.definition;
    let failing = def.clone();
    let mode = if args.quiet {
        ProgressMode::Quiet
    } else {
        progress::resolve_mode(args.progress)
    };
    let prelude = internal_vertices(
        &file_name,
        &text,
        &lowered.stages,
        &context,
        &requested,
        lowering_ms,
    );
    let (result, summary) = build.run(def, move |rx| progress::render(mode, prelude, rx));
    let report = match result {
        Ok(r) => r,
        Err(BuildError::Cancelled) => {
            eprintln!("build cancelled");
            return Err(Reported(130).into());
        }
        Err(BuildError::Solve(err)) => {
            if mode == ProgressMode::Tty {
                progress::epilogue(mode, &summary, &[]);
            }
            checks::print_warnings(&lint_report, &file_name, &text);
            report_failure(&err, &failing, &file_name);
            if let Some(id) = super::debug_shell::kept_state(&err) {
                if args.on_error == crate::cli::OnError::Shell {
                    let step = host.failed_step(Some(&id))?;
                    super::debug_shell::shell_in(&host, &step, Vec::new(), &args.secrets)?;
                } else if !args.quiet {
                    eprintln!("kiln: the failed step's state is kept: kiln debug shell {id}");
                }
            }
            return Err(Reported(1).into());
        }
        Err(BuildError::Other(e)) => return Err(e.into()),
    };
    progress::epilogue(mode, &summary, &[export_vertex(&report, &tags)]);
    // The build cache's budget: trimmed least recently used first when no other kiln
    // process uses the store.
    if let Some(budget) = host.gc_budget(gc_flag)? {
        match host.auto_gc(budget) {
            Ok(Some(r)) if !r.records.is_empty() && !args.quiet => eprintln!(
                "kiln: build cache over its {} budget: {} records removed, {} reclaimed",
                kiln_solver::prune::human_size(budget),
                r.records.len(),
                kiln_solver::prune::human_size(r.reclaimed)
            ),
            Ok(_) => {}
            Err(e) => eprintln!("warning: trimming the build cache: {e}"),
        }
    }
    if let Some(text) = &report.explanation {
        eprintln!("{text}");
    }
    for p in &report.pushed {
        if report.push_only {
            eprintln!(
                "pushed {} {} ({} blobs uploaded, {} mounted, {} already there)",
                p.name, p.digest, p.uploaded, p.mounted, p.skipped
            );
        } else {
            eprintln!("pushed {} {}", p.name, p.digest);
        }
    }
    if !args.quiet {
        for r in &report.cache_exports {
            eprintln!(
                "kiln: exported {} cache records ({} layers: {} uploaded, {} already there, {} mounted)",
                r.records, r.layers, r.uploaded, r.existed, r.mounted
            );
        }
    }
    if let Some(p) = &args.iidfile {
        fs_err::write(p, report.config_digest.to_string())?;
    }
    if let Some(p) = &args.metadata_file {
        let meta = serde_json::json!({
            "containerimage.config.digest": report.config_digest.to_string(),
            "containerimage.digest": report.manifest_digest.to_string(),
            "image.name": tags.join(","),
        });
        fs_err::write(p, serde_json::to_vec_pretty(&meta)?)?;
    }
    if args.quiet {
        println!("{}", report.config_digest);
    } else {
        let names = if tags.is_empty() {
            String::new()
        } else {
            format!(
                " {}",
                tags.iter()
                    .map(|t| kiln_solver::images::familiar_name(t))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        eprintln!(
            "kiln: built{names} {} in {:.2}s ({} steps run, {} cached)",
            report.config_digest,
            started.elapsed().as_secs_f64(),
            summary.executed,
            summary.cached
        );
    }
    checks::print_warnings(&lint_report, &file_name, &text);
    Ok(())
}

/// The vertices BuildKit shows before the solve: reading the Dockerfile, each base image's
/// metadata (resolved while lowering), the `.dockerignore`.
fn internal_vertices(
    file_name: &str,
    text: &str,
    stages: &[kiln_frontend::lower::StageInfo],
    context: &Path,
    dockerfile: &Path,
    lowering_ms: u64,
) -> Vec<progress::Internal> {
    use kiln_solver::engine::human_size;
    let mut out = vec![progress::Internal {
        name: format!("[internal] load build definition from {file_name}"),
        lines: vec![format!(
            "transferring dockerfile: {} done",
            human_size(text.len() as u64)
        )],
        duration_ms: 0,
    }];
    let mut bases: Vec<String> = Vec::new();
    for s in stages.iter().filter(|s| s.reachable) {
        let is_stage = stages
            .iter()
            .any(|o| o.index < s.index && o.name.as_deref() == Some(&s.base.to_lowercase()));
        if is_stage || s.base == "scratch" {
            continue;
        }
        let name = crate::commands::normalize_reference(&s.base).unwrap_or_else(|_| s.base.clone());
        if !bases.contains(&name) {
            bases.push(name);
        }
    }
    let each = lowering_ms / (bases.len().max(1) as u64);
    for b in bases {
        out.push(progress::Internal {
            name: format!("[internal] load metadata for {b}"),
            lines: Vec::new(),
            duration_ms: each,
        });
    }
    let own = dockerfile.with_file_name(format!(
        "{}.dockerignore",
        dockerfile
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let ignore_size = [own, context.join(".dockerignore")]
        .iter()
        .find_map(|p| fs_err::metadata(p).ok().filter(|m| m.is_file()))
        .map_or(0, |m| m.len());
    out.push(progress::Internal {
        name: "[internal] load .dockerignore".to_owned(),
        lines: vec![format!(
            "transferring context: {} done",
            human_size(ignore_size)
        )],
        duration_ms: 0,
    });
    out
}

/// The export as BuildKit shows it: `exporting to image`, `writing image sha256:… done`,
/// `naming to NAME done`.
fn export_vertex(
    report: &kiln_solver::session::BuildReport,
    tags: &[String],
) -> progress::Internal {
    let mut lines = vec![
        "exporting layers done".to_owned(),
        format!("writing image {} done", report.config_digest),
    ];
    for t in tags {
        lines.push(format!("naming to {t} done"));
    }
    progress::Internal {
        name: "exporting to image".to_owned(),
        lines,
        duration_ms: 0,
    }
}

/// `kiln build --check`: the checks' findings without a build; exit 1 when the Dockerfile does
/// not lower or a rule fired under `error=true`.
fn check_only(
    lowered: Result<(), kiln_frontend::lower::LowerError>,
    report: &kiln_frontend::lint::Report,
    file_name: &str,
    text: &str,
) -> Result<()> {
    eprintln!("{}", checks::check_summary(report));
    for f in &report.findings {
        eprint!("warning: {}", render(f, file_name, text));
    }
    if let Err(err) = lowered {
        eprint!("{}", render(&err, file_name, text));
        return Err(Reported(1).into());
    }
    if let Some(violation) = report.violation() {
        eprintln!("error: {file_name}: {violation}");
        return Err(Reported(1).into());
    }
    Ok(())
}

/// `--secret id=ID[,src=FILE|,env=VAR]` (buildx's syntax; `type=file|env` accepted too). Without
/// src/env, the variable named ID is used when set, else the file ID.
pub(super) fn parse_secrets(items: &[String]) -> Result<BTreeMap<String, Secret>> {
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
                Secret::File(p)
            }
            (None, Some(v)) => Secret::Env(v),
            (None, None) if std::env::var_os(&id).is_some() => Secret::Env(id.clone()),
            (None, None) => Secret::File(PathBuf::from(&id)),
            (Some(_), Some(_)) => bail!("--secret {item:?}: give src= or env=, not both"),
        };
        out.insert(id, source);
    }
    Ok(out)
}

/// `SOURCE_DATE_EPOCH` as a build arg (which wins, as with buildx) or in the environment.
fn source_date_epoch(build_args: &BTreeMap<String, String>) -> Result<Option<i64>> {
    let (what, value) = match build_args.get("SOURCE_DATE_EPOCH") {
        Some(v) => ("--build-arg SOURCE_DATE_EPOCH", v.clone()),
        None => (
            "SOURCE_DATE_EPOCH",
            std::env::var("SOURCE_DATE_EPOCH").unwrap_or_default(),
        ),
    };
    if value.is_empty() {
        return Ok(None);
    }
    let secs: i64 = value
        .trim()
        .parse()
        .with_context(|| format!("{what}={value:?}: expected seconds since 1970"))?;
    if secs < 0 {
        bail!("{what}={value:?}: expected seconds since 1970");
    }
    Ok(Some(secs))
}

/// Prints a failed build the way the issue asks: the step's last output lines, then
/// `Dockerfile:LINE: RUN <cmd> exited with code N`.
fn report_failure(
    err: &kiln_solver::session::SolveError,
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
                ..
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

/// `dockerfile` next to a missing `Dockerfile` (BuildKit's dockerui does this for any path whose
/// last component is `Dockerfile`, moby/moby#10858); its `.dockerignore` stays
/// `Dockerfile.dockerignore`.
fn lowercase_fallback(requested: &Path) -> PathBuf {
    if requested.file_name() == Some(std::ffi::OsStr::new("Dockerfile")) && !requested.is_file() {
        let lower = requested.with_file_name("dockerfile");
        if lower.is_file() {
            return lower;
        }
    }
    requested.to_path_buf()
}
