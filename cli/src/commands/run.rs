//! `kiln run` and the container lifecycle commands, with docker's flags and semantics.

use crate::cli::RunArgs;
use crate::commands::Global;
use crate::commands::image::find;
use anyhow::{Context, Result, bail};
use kiln_solver::Host;
use kiln_solver::containers::{
    ContainerConfig, HealthConfig, MountPlan, ProcessPlan, Seccomp, SeccompProfile,
};
use kiln_solver::graph::ImageConfig;
use kiln_solver::images::ImageRecord;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// Docker's default PATH, for images that set none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Parses docker's memory sizes: `64m`, `1g`, `512k`, `1048576`, `64mb`.
pub fn parse_memory(s: &str) -> Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num
        .parse()
        .with_context(|| format!("--memory {s:?}: expected a size such as 64m"))?;
    if n <= 0.0 {
        bail!("--memory {s:?}: must be positive");
    }
    Ok((n * mult as f64) as u64)
}

/// The process of a container, by docker's rules: `--entrypoint` replaces the image's and
/// resets its CMD; arguments replace CMD.
pub fn command_line(
    config: &ImageConfig,
    entrypoint: Option<&str>,
    args: &[String],
) -> Result<Vec<String>> {
    let c = &config.config;
    let (ep, default_cmd): (Vec<String>, Vec<String>) = match entrypoint {
        Some("") => (Vec::new(), Vec::new()),
        Some(e) => (vec![e.to_string()], Vec::new()),
        None => (
            c.entrypoint.clone().unwrap_or_default(),
            c.cmd.clone().unwrap_or_default(),
        ),
    };
    let cmd = if args.is_empty() {
        default_cmd
    } else {
        args.to_vec()
    };
    let full: Vec<String> = ep.into_iter().chain(cmd).collect();
    if full.is_empty() {
        bail!("no command specified: the image has no CMD or ENTRYPOINT and none was given");
    }
    Ok(full)
}

fn env_list(config: &ImageConfig, args: &RunArgs, hostname: &str) -> Result<Vec<String>> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |k: &str, v: &str, env: &mut Vec<(String, String)>| {
        if let Some(e) = env.iter_mut().find(|(ek, _)| ek == k) {
            e.1 = v.to_string();
        } else {
            env.push((k.to_string(), v.to_string()));
        }
    };
    if !config.config.env.iter().any(|e| e.starts_with("PATH=")) {
        set("PATH", DEFAULT_PATH, &mut env);
    }
    if !hostname.is_empty() {
        set("HOSTNAME", hostname, &mut env);
    }
    for e in &config.config.env {
        let (k, v) = e.split_once('=').unwrap_or((e, ""));
        set(k, v, &mut env);
    }
    let mut extra = Vec::new();
    for f in &args.env_file {
        let text = fs_err::read_to_string(f)?;
        for line in text.lines() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            extra.push(line.to_string());
        }
    }
    extra.extend(args.env.iter().cloned());
    for e in extra {
        match e.split_once('=') {
            Some(("", _)) => bail!("invalid environment variable: {e}"),
            Some((k, v)) => set(k, v, &mut env),
            None => {
                if let Ok(v) = std::env::var(&e) {
                    set(&e, &v, &mut env);
                }
            }
        }
    }
    Ok(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

fn volumes(host: &Host, specs: &[String]) -> Result<Vec<MountPlan>> {
    let mut out = Vec::new();
    for spec in specs {
        let parts: Vec<&str> = spec.split(':').collect();
        let (src, dst, opts) = match parts.as_slice() {
            [s, d] => (*s, *d, ""),
            [s, d, o] => (*s, *d, *o),
            _ => bail!("-v {spec:?}: expected SRC:DST[:ro]"),
        };
        if !dst.starts_with('/') {
            bail!("-v {spec:?}: the destination must be an absolute path");
        }
        let readonly = match opts {
            "" | "rw" => false,
            "ro" => true,
            other => bail!("-v {spec:?}: unknown option {other:?} (ro or rw)"),
        };
        let src_path = if src.starts_with('/') {
            let p = PathBuf::from(src);
            if !p.exists() {
                fs_err::create_dir_all(&p)?; // docker creates missing bind sources
            }
            p
        } else {
            if src.is_empty()
                || !src
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            {
                bail!("-v {spec:?}: {src:?} is neither an absolute path nor a valid volume name");
            }
            let p = host.volume_dir(src);
            fs_err::create_dir_all(&p)?;
            p
        };
        out.push(MountPlan::Bind {
            src: src_path,
            dst: dst.to_string(),
            readonly,
        });
    }
    Ok(out)
}

/// Applies docker's `--security-opt` values: `seccomp=PROFILE.json` (docker's profile format),
/// `seccomp=unconfined`, `no-new-privileges[=true|false]`; `:` works for `=` as in docker.
pub fn security_opts(plan: &mut ProcessPlan, opts: &[String]) -> Result<()> {
    for opt in opts {
        let (key, value) = match opt.split_once(['=', ':']) {
            Some((k, v)) => (k, Some(v)),
            None => (opt.as_str(), None),
        };
        match (key, value) {
            ("seccomp", Some("unconfined")) => plan.seccomp = Seccomp::Unconfined,
            ("seccomp", Some("builtin")) => plan.seccomp = Seccomp::Default,
            ("seccomp", Some(path)) if !path.is_empty() => {
                let data = fs_err::read(path)
                    .with_context(|| format!("--security-opt {opt}: opening seccomp profile"))?;
                let profile = SeccompProfile::from_json(&data)
                    .with_context(|| format!("--security-opt {opt}: decoding seccomp profile"))?;
                profile
                    .validate()
                    .with_context(|| format!("--security-opt {opt}"))?;
                plan.seccomp = Seccomp::Profile {
                    source: path.to_string(),
                    profile: Box::new(profile),
                };
            }
            ("no-new-privileges", None) => plan.no_new_privileges = true,
            ("no-new-privileges", Some(v)) => {
                plan.no_new_privileges = v.parse().map_err(|_| {
                    anyhow::anyhow!("--security-opt {opt}: invalid no-new-privileges value {v:?}")
                })?;
            }
            _ => bail!(
                "--security-opt {opt:?}: unsupported (seccomp=PROFILE.json|unconfined, \
                 no-new-privileges[=true|false])"
            ),
        }
    }
    Ok(())
}

/// Builds the sandbox plan for `kiln run`.
pub fn plan(host: &Host, config: &ImageConfig, args: &RunArgs) -> Result<ProcessPlan> {
    let argv = command_line(config, args.entrypoint.as_deref(), &args.command)?;
    // Without --hostname: the short container id (own namespace) or the host's name.
    let hostname = args.hostname.clone().unwrap_or_default();
    let mut plan = ProcessPlan::new(argv);
    plan.env = env_list(config, args, &hostname)?;
    plan.cwd = args
        .workdir
        .clone()
        .or_else(|| Some(config.config.working_dir.clone()).filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".to_string());
    plan.user = args
        .user
        .clone()
        .unwrap_or_else(|| config.config.user.clone());
    plan.hostname = args.hostname.clone();
    crate::commands::network::apply(host, &mut plan, config, args)?;
    plan.readonly_rootfs = args.read_only;
    plan.mounts = volumes(host, &args.volumes)?;
    for t in &args.tmpfs {
        let (dst, opts) = t.split_once(':').unwrap_or((t, ""));
        plan.mounts.push(MountPlan::Tmpfs {
            dst: dst.to_string(),
            options: opts
                .split(',')
                .filter(|o| !o.is_empty())
                .map(str::to_string)
                .collect(),
        });
    }
    plan.tty = args.tty;
    plan.stdin = args.interactive;
    plan.cap_add = args.cap_add.clone();
    plan.cap_drop = args.cap_drop.clone();
    security_opts(&mut plan, &args.security_opt)?;
    plan.privileged = args.privileged;
    plan.memory = args.memory.as_deref().map(parse_memory).transpose()?;
    plan.cpus = args.cpus;
    plan.pids_limit = args.pids_limit;
    plan.create_cwd = true;
    crate::commands::life::apply_init(&mut plan, args)?;
    Ok(plan)
}

/// The image and the sandbox plan of a container `run` or `create` makes.
pub fn prepare(host: &Host, args: &RunArgs) -> Result<(ImageRecord, ImageConfig, ProcessPlan)> {
    let rec = find(host, &args.image).map_err(|_| {
        anyhow::anyhow!(
            "unable to find image '{}' locally (kiln images lists what the store has)",
            args.image
        )
    })?;
    let config: ImageConfig =
        serde_json::from_slice(&rec.config_bytes).context("reading the image config")?;
    let plan = plan(host, &config, args)?;
    Ok((rec, config, plan))
}

/// The stored container of `args`: `plan` with the name, image, removal, signal and health
/// settings.
pub fn container_config(
    config: &ImageConfig,
    args: &RunArgs,
    plan: ProcessPlan,
) -> Result<ContainerConfig> {
    Ok(ContainerConfig {
        name: args.name.clone(),
        image: args.image.clone(),
        plan,
        auto_remove: args.rm,
        sig_proxy: args.sig_proxy,
        healthcheck: healthcheck(config, args)?,
        // Set by `life::container_config`, which `run` and `create` call.
        image_id: None,
        restart: Default::default(),
    })
}

/// docker's merge of the image's `HEALTHCHECK` with `--health-*`: each flag given replaces
/// that field; `--no-healthcheck` disables the check.
fn healthcheck(config: &ImageConfig, args: &RunArgs) -> Result<Option<HealthConfig>> {
    let any_flag = args.health_cmd.is_some()
        || args.health_interval.is_some()
        || args.health_timeout.is_some()
        || args.health_retries.is_some()
        || args.health_start_period.is_some()
        || args.health_start_interval.is_some();
    if args.no_healthcheck {
        if any_flag {
            bail!("--no-healthcheck conflicts with --health-* options");
        }
        return Ok(Some(HealthConfig {
            test: vec!["NONE".to_owned()],
            ..Default::default()
        }));
    }
    let image = config.config.healthcheck.as_ref();
    let mut h = HealthConfig {
        test: image.map(|h| h.test.clone()).unwrap_or_default(),
        interval: image.map_or(0, |h| h.interval),
        timeout: image.map_or(0, |h| h.timeout),
        start_period: image.map_or(0, |h| h.start_period),
        start_interval: image.map_or(0, |h| h.start_interval),
        retries: image.map_or(0, |h| h.retries),
    };
    if let Some(cmd) = &args.health_cmd {
        h.test = vec!["CMD-SHELL".to_owned(), cmd.clone()];
    }
    let duration = |flag: &str, v: &Option<String>, min_ms: u128| -> Result<Option<i64>> {
        let Some(v) = v else { return Ok(None) };
        let d = kiln_solver::prune::parse_duration(v).ok_or_else(|| {
            anyhow::anyhow!(
                "invalid argument {v:?} for \"--{flag}\" flag: time: invalid duration {v:?}"
            )
        })?;
        if d.as_millis() < min_ms && !d.is_zero() {
            bail!("--{flag} cannot be less than {min_ms}ms");
        }
        Ok(Some(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)))
    };
    if let Some(n) = duration("health-interval", &args.health_interval, 1)? {
        h.interval = n;
    }
    if let Some(n) = duration("health-timeout", &args.health_timeout, 1)? {
        h.timeout = n;
    }
    if let Some(n) = duration("health-start-period", &args.health_start_period, 0)? {
        h.start_period = n;
    }
    if let Some(n) = duration("health-start-interval", &args.health_start_interval, 1)? {
        h.start_interval = n;
    }
    if let Some(r) = args.health_retries {
        if r < 0 {
            bail!("--health-retries cannot be negative");
        }
        h.retries = r;
    }
    Ok((!h.test.is_empty()).then_some(h))
}

/// `kiln run`: the container is the image + a writable layer, kept in the container store
/// (`kiln ps -a`, `logs`, `inspect`, `rm`) as docker keeps it, or removed at the end with
/// `--rm`; the exit status is the process's.
pub fn run(g: &Global, args: RunArgs) -> Result<ExitCode> {
    if args.tty && !args.detach && !std::io::stdin().is_terminal() {
        // docker's wording; runc cannot give the container a terminal without ours.
        bail!("the input device is not a TTY");
    }
    let host = g.host()?;
    let (rec, config, plan) = prepare(&host, &args)?;
    let container = crate::commands::life::container_config(&args, &rec, &config, plan)?;
    if args.detach {
        return crate::commands::container::run_detached(&host, &rec, container);
    }
    let cs = host.containers_to_run()?;
    let supervised = container.restart != Default::default();
    let c = cs.create(container)?;
    if supervised {
        return crate::commands::life::run_supervised(&host, &c);
    }
    let status = host.run_attached(&rec, &c);
    if args.rm
        && let Err(e) = c.remove(true)
    {
        tracing::warn!(error = %e, container = c.id(), "removing the container");
    }
    let status = status?;
    Ok(ExitCode::from(
        u8::try_from(status.code.clamp(0, 255)).unwrap_or(1),
    ))
}
