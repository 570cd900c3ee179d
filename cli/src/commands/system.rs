//! `kiln system df|prune`, `kiln builder prune`, `kiln image prune`, `kiln container prune`
//! and `kiln volume …`: the store's disk, as docker shows and reclaims it.

use anyhow::{Result, bail};
use kiln_solver::Host;
use kiln_solver::prune::{PruneOptions, human_size, parse_duration, parse_size};
use std::io::{BufRead, IsTerminal, Write};

use super::Global;

/// docker's `[y/N]` prompt; `force` answers yes. Without a terminal nothing is removed
/// unless `-f` is given, as docker does when it reads no answer.
pub(crate) fn confirm(warning: &str, force: bool) -> Result<bool> {
    if force {
        return Ok(true);
    }
    eprint!("{warning}\nAre you sure you want to continue? [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    if !std::io::stdin().is_terminal() && std::io::stdin().lock().read_line(&mut answer)? == 0 {
        eprintln!();
        return Ok(false);
    }
    if answer.is_empty() {
        std::io::stdin().lock().read_line(&mut answer)?;
    }
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes"))
}

fn exclusive(host: &Host) -> Result<()> {
    host.lock_exclusive(|| {
        eprintln!("kiln: waiting for the other kiln processes of this store to finish…")
    })?;
    Ok(())
}

fn pct(part: u64, whole: u64) -> String {
    match (part * 100).checked_div(whole) {
        Some(p) => format!("{p}%"),
        None => "0%".to_owned(),
    }
}

/// `kiln system df [-v]`.
pub fn df(g: &Global, verbose: bool) -> Result<()> {
    let host = g.host()?;
    let u = host.system_usage()?;
    let d = &u.disk;
    let active_images = d
        .images
        .iter()
        .filter(|i| u.images_in_use.contains(&i.id.to_string()))
        .count();
    let running = u.containers.iter().filter(|c| c.running).count();
    let vol_total: u64 = d.volumes.values().sum();
    let used_vols: std::collections::HashSet<&str> = u
        .containers
        .iter()
        .flat_map(|c| c.volumes.iter().map(String::as_str))
        .collect();
    let vol_reclaim: u64 = d
        .volumes
        .iter()
        .filter(|(n, _)| !used_vols.contains(n.as_str()))
        .map(|(_, b)| b)
        .sum();
    let stopped_bytes = if u.containers.iter().all(|c| !c.running) {
        d.container_bytes
    } else {
        0
    };
    let cache = d.build_cache_bytes();
    println!(
        "{:<16}{:<10}{:<10}{:<10}RECLAIMABLE",
        "TYPE", "TOTAL", "ACTIVE", "SIZE"
    );
    let row = |t: &str, total: usize, active: usize, size: u64, rec: u64| {
        println!(
            "{:<16}{:<10}{:<10}{:<10}{} ({})",
            t,
            total,
            active,
            human_size(size),
            human_size(rec),
            pct(rec, size)
        );
    };
    row(
        "Images",
        d.images.len(),
        active_images,
        d.images_bytes,
        u.images_reclaimable(),
    );
    row(
        "Containers",
        u.containers.len(),
        running,
        d.container_bytes,
        stopped_bytes,
    );
    row(
        "Local Volumes",
        d.volumes.len(),
        used_vols.len(),
        vol_total,
        vol_reclaim,
    );
    println!(
        "{:<16}{:<10}{:<10}{:<10}{}",
        "Build Cache",
        d.cache.len(),
        0,
        human_size(cache),
        human_size(cache)
    );
    if verbose {
        println!("\nImages space usage:\n");
        println!(
            "{:<40}{:<14}{:<12}{:<12}{:<12}CONTAINERS",
            "REPOSITORY:TAG", "IMAGE ID", "SIZE", "SHARED SIZE", "UNIQUE SIZE"
        );
        for i in &d.images {
            let name = i
                .names
                .first()
                .map(|n| kiln_solver::images::familiar_name(n))
                .unwrap_or_else(|| "<none>:<none>".to_owned());
            let users = u
                .containers
                .iter()
                .filter(|c| {
                    host.images()
                        .resolve(&c.image)
                        .ok()
                        .flatten()
                        .is_some_and(|r| r.config_digest == i.id)
                })
                .count();
            println!(
                "{:<40}{:<14}{:<12}{:<12}{:<12}{}",
                name,
                &i.id.hex()[..12],
                human_size(i.size),
                human_size(i.shared),
                human_size(i.size - i.shared),
                users
            );
        }
        println!("\nContainers space usage:\n");
        println!("{:<14}{:<30}{:<10}NAMES", "CONTAINER ID", "IMAGE", "STATUS");
        for c in &u.containers {
            println!(
                "{:<14}{:<30}{:<10}{}",
                &c.id[..12.min(c.id.len())],
                c.image,
                if c.running { "running" } else { "exited" },
                c.name
            );
        }
        println!("\nLocal Volumes space usage:\n");
        println!("{:<30}{:<8}SIZE", "VOLUME NAME", "LINKS");
        for (n, b) in &d.volumes {
            let links = u
                .containers
                .iter()
                .filter(|c| c.volumes.contains(n))
                .count();
            println!("{:<30}{:<8}{}", n, links, human_size(*b));
        }
        println!("\nBuild cache usage: {}\n", human_size(cache));
        println!(
            "{:<14}{:<12}{:<22}{:<8}",
            "CACHE ID", "SIZE", "LAST USED", "LAYERS"
        );
        for e in &d.cache {
            let id = e.key.trim_start_matches("step/sha256:");
            let last = chrono::DateTime::from_timestamp_millis(e.last_used)
                .filter(|_| e.last_used > 0)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_else(|| "-".to_owned());
            let size = e.layers.last().map(|l| l.size).unwrap_or(0);
            println!(
                "{:<14}{:<12}{:<22}{:<8}",
                &id[..12.min(id.len())],
                human_size(size),
                last,
                e.layers.len()
            );
        }
        println!(
            "\n(build cache: {} cache-only blobs, {} unpacked snapshots, {} cache mounts, {} kept failed steps, {} index and scratch)",
            human_size(d.cache_blob_bytes),
            human_size(d.snapshot_bytes),
            human_size(d.cache_mount_bytes),
            human_size(d.debug_bytes),
            human_size(d.internal_bytes)
        );
    }
    Ok(())
}

/// The options of `builder prune` from its flags.
pub fn builder_options(
    all: bool,
    keep_storage: Option<&str>,
    filters: &[String],
) -> Result<PruneOptions> {
    let mut opts = PruneOptions {
        all,
        cache_mounts: all,
        ..PruneOptions::default()
    };
    if let Some(k) = keep_storage {
        opts.keep_storage =
            Some(parse_size(k).ok_or_else(|| anyhow::anyhow!("--keep-storage {k:?}: not a size"))?);
    }
    for f in filters {
        match f.split_once('=') {
            Some(("until", d)) => {
                opts.until = Some(parse_duration(d).ok_or_else(|| {
                    anyhow::anyhow!("--filter {f:?}: not a duration (like 24h, 90m, 7d)")
                })?)
            }
            _ => bail!("--filter {f:?}: invalid filter (kiln takes until=DURATION)"),
        }
    }
    Ok(opts)
}

/// `kiln builder prune`.
pub fn builder_prune(g: &Global, opts: PruneOptions, force: bool) -> Result<()> {
    let warning = if opts.all {
        "WARNING! This will remove all build cache."
    } else {
        "WARNING! This will remove all dangling build cache."
    };
    if !confirm(warning, force)? {
        return Ok(());
    }
    let host = g.host()?;
    exclusive(&host)?;
    let r = host.prune_build_cache(&opts)?;
    if !r.records.is_empty() {
        println!("Deleted build cache objects:");
        for k in &r.records {
            println!("{}", k.trim_start_matches("step/sha256:"));
        }
        println!();
    }
    println!("Total reclaimed space: {}", human_size(r.reclaimed));
    Ok(())
}

/// `kiln image prune [-a]`.
pub fn image_prune(g: &Global, all: bool, force: bool) -> Result<()> {
    let warning = if all {
        "WARNING! This will remove all images without at least one container associated to them."
    } else {
        "WARNING! This will remove all dangling images."
    };
    if !confirm(warning, force)? {
        return Ok(());
    }
    let host = g.host()?;
    exclusive(&host)?;
    let bytes = print_image_prune(&host, all)?;
    println!("Total reclaimed space: {}", human_size(bytes));
    Ok(())
}

fn print_image_prune(host: &Host, all: bool) -> Result<u64> {
    let (events, bytes) = host.prune_images(all)?;
    if !events.is_empty() {
        println!("Deleted Images:");
        for e in &events {
            match e {
                kiln_solver::images::RemoveEvent::Untagged(n) => {
                    println!("untagged: {}", kiln_solver::images::familiar_name(n))
                }
                kiln_solver::images::RemoveEvent::Deleted(d) => println!("deleted: {d}"),
            }
        }
        println!();
    }
    Ok(bytes)
}

/// `kiln container prune`.
pub fn container_prune(g: &Global, force: bool) -> Result<()> {
    if !confirm("WARNING! This will remove all stopped containers.", force)? {
        return Ok(());
    }
    let host = g.host()?;
    let (ids, bytes) = host.prune_containers()?;
    print_list("Deleted Containers:", &ids);
    println!("Total reclaimed space: {}", human_size(bytes));
    Ok(())
}

pub(crate) fn print_list(title: &str, items: &[String]) {
    if !items.is_empty() {
        println!("{title}");
        for i in items {
            println!("{i}");
        }
        println!();
    }
}

/// `kiln volume prune`.
pub fn volume_prune(g: &Global, force: bool) -> Result<()> {
    if !confirm(
        "WARNING! This will remove all local volumes not used by at least one container.",
        force,
    )? {
        return Ok(());
    }
    let host = g.host()?;
    let (names, bytes) = host.prune_volumes()?;
    print_list("Deleted Volumes:", &names);
    println!("Total reclaimed space: {}", human_size(bytes));
    Ok(())
}

/// `kiln system prune [-a] [--volumes]`.
pub fn system_prune(g: &Global, all: bool, volumes: bool, force: bool) -> Result<()> {
    let mut w = String::from(
        "WARNING! This will remove:\n  - all stopped containers\n  - all networks not used by at least one container\n",
    );
    if volumes {
        w.push_str("  - all volumes not used by at least one container\n");
    }
    if all {
        w.push_str("  - all images without at least one container associated to them\n  - all build cache\n");
    } else {
        w.push_str("  - all dangling images\n  - unused build cache\n");
    }
    if !confirm(w.trim_end(), force)? {
        return Ok(());
    }
    let host = g.host()?;
    exclusive(&host)?;
    let mut total = 0;
    let (ids, bytes) = host.prune_containers()?;
    print_list("Deleted Containers:", &ids);
    total += bytes;
    print_list(
        "Deleted Networks:",
        &crate::commands::networks::prune(&host)?,
    );
    if volumes {
        let (names, bytes) = host.prune_volumes()?;
        print_list("Deleted Volumes:", &names);
        total += bytes;
    }
    total += print_image_prune(&host, all)?;
    let r = host.prune_build_cache(&PruneOptions {
        all,
        cache_mounts: all,
        ..PruneOptions::default()
    })?;
    if !r.records.is_empty() {
        println!("Deleted build cache objects:");
        for k in &r.records {
            println!("{}", k.trim_start_matches("step/sha256:"));
        }
        println!();
    }
    total += r.reclaimed;
    println!("Total reclaimed space: {}", human_size(total));
    Ok(())
}

/// `kiln volume create|ls|inspect|rm`.
pub fn volume(g: &Global, cmd: crate::cli::VolumeCommand) -> Result<()> {
    use crate::cli::VolumeCommand as V;
    let host = g.host()?;
    match cmd {
        V::Create { name } => {
            host.create_volume(&name)?;
            println!("{name}");
        }
        V::Ls { quiet } => {
            let vols = host.volumes()?;
            if !quiet {
                println!("{:<10}VOLUME NAME", "DRIVER");
            }
            for n in vols.keys() {
                if quiet {
                    println!("{n}");
                } else {
                    println!("{:<10}{n}", "local");
                }
            }
        }
        V::Inspect { names } => {
            let vols = host.volumes()?;
            let mut out = Vec::new();
            for n in &names {
                let Some((size, users)) = vols.get(n) else {
                    bail!("get {n}: no such volume");
                };
                out.push(serde_json::json!({
                    "Name": n,
                    "Driver": "local",
                    "Mountpoint": host.volume_dir(n),
                    "Scope": "local",
                    "UsageData": {"Size": size, "RefCount": users.len()},
                }));
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        V::Rm { names } => {
            let mut failed = None;
            for n in &names {
                match host.remove_volume(n) {
                    Ok(_) => println!("{n}"),
                    Err(e) => {
                        eprintln!("Error response from daemon: {e}");
                        failed = Some(e);
                    }
                }
            }
            if failed.is_some() {
                return Err(crate::Reported(1).into());
            }
        }
        V::Prune { force } => volume_prune(g, force)?,
    }
    Ok(())
}
