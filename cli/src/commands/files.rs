//! `cp`, `diff`, `export`: a container's filesystem, with docker's path rules.

use crate::cli::{CpArgs, ExportArgs};
use crate::commands::Global;
use crate::commands::container::get;
use anyhow::{Context, Result, bail};
use kiln_solver::Host;
use kiln_solver::container_fs::PathKind;
use kiln_solver::containers::Container;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// docker's `splitCpArg`: `NAME:PATH` names a container path unless the argument is an
/// absolute local path or starts with `.` (`./a:b` is a local file).
fn split_cp_arg(arg: &str) -> (Option<&str>, &str) {
    if arg.starts_with('/') {
        return (None, arg);
    }
    match arg.split_once(':') {
        Some((c, p)) if !c.starts_with('.') && !c.is_empty() => (Some(c), p),
        _ => (None, arg),
    }
}

/// The last name of a path (`/a/b/` → `b`).
fn base_name(path: &str) -> String {
    Path::new(path.trim_end_matches('/'))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The parent of a path, `/` for a top-level one.
fn parent_of(path: &str) -> String {
    let p = Path::new(path.trim_end_matches('/'));
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_string_lossy().into_owned(),
        _ if path.starts_with('/') => "/".to_owned(),
        _ => ".".to_owned(),
    }
}

/// `SRC/.`: the contents of a directory, not the directory.
fn contents_only(path: &str) -> bool {
    path == "/" || path.ends_with("/.") || path == "."
}

/// `kiln cp`.
pub fn cp(g: &Global, args: &CpArgs) -> Result<ExitCode> {
    let (src_c, src) = split_cp_arg(&args.src);
    let (dst_c, dst) = split_cp_arg(&args.dst);
    let host = g.host()?;
    let cs = host.containers()?;
    match (src_c, dst_c) {
        (Some(_), Some(_)) => bail!("copying between containers is not supported"),
        (None, None) => bail!("must specify at least one container source"),
        (Some(name), None) => copy_out(&host, &get(&cs, name)?, src, dst)?,
        (None, Some(name)) => copy_in(&host, &get(&cs, name)?, src, dst)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Container → host (or a tar stream on stdout for `-`).
fn copy_out(host: &Host, c: &Container, src: &str, dst: &str) -> Result<()> {
    let src = if src.is_empty() { "/" } else { src };
    let kind = host.container_path_kind(c, src)?;
    if kind == PathKind::Missing {
        bail!("Could not find the file {src} in container {}", c.name());
    }
    if dst == "-" {
        let name = (!contents_only(src)).then(|| base_name(src));
        host.copy_from_container(c, src, name.as_deref(), std::io::stdout().lock())?;
        return Ok(());
    }
    let dst_meta = fs_err::metadata(dst).ok();
    let (into, name) = match (kind, &dst_meta) {
        (PathKind::Dir, Some(m)) if m.is_dir() => (
            PathBuf::from(dst),
            (!contents_only(src)).then(|| base_name(src)),
        ),
        (PathKind::Dir, Some(_)) => {
            bail!("cannot copy a directory to a file: {dst} is not a directory")
        }
        (_, Some(m)) if m.is_dir() => (PathBuf::from(dst), Some(base_name(src))),
        (_, None) if dst.ends_with('/') => {
            bail!("destination directory {dst} does not exist")
        }
        _ => (PathBuf::from(parent_of(dst)), Some(base_name(dst))),
    };
    if !into.is_dir() {
        bail!("destination directory {} does not exist", into.display());
    }
    let (reader, writer) = std::io::pipe()?;
    let target = into.clone();
    let unpacker = std::thread::spawn(move || -> std::io::Result<()> {
        let mut a = tar::Archive::new(reader);
        a.set_preserve_permissions(true);
        a.set_preserve_mtime(true);
        a.set_overwrite(true);
        a.unpack(&target)
    });
    let written = host.copy_from_container(c, src, name.as_deref(), writer);
    let unpacked = unpacker
        .join()
        .map_err(|_| anyhow::anyhow!("unpacking into {} panicked", into.display()))?;
    written?;
    unpacked.with_context(|| format!("copying into {}", into.display()))?;
    Ok(())
}

/// Host (or a tar stream on stdin for `-`) → container.
fn copy_in(host: &Host, c: &Container, src: &str, dst: &str) -> Result<()> {
    let kind = host.container_path_kind(c, dst)?;
    if src == "-" {
        if kind != PathKind::Dir {
            bail!("destination \"{}:{dst}\" must be a directory", c.name());
        }
        host.copy_to_container(c, dst, std::io::stdin().lock(), true)?;
        return Ok(());
    }
    let meta = fs_err::symlink_metadata(src)?;
    let (into, name) = match kind {
        PathKind::Dir if meta.is_dir() && contents_only(src) => (dst.to_owned(), String::new()),
        PathKind::Dir => (dst.to_owned(), base_name(src)),
        PathKind::Other if meta.is_dir() => {
            bail!("cannot copy a directory to a file: {dst} is not a directory")
        }
        PathKind::Missing if dst.ends_with('/') => {
            bail!(
                "destination directory {dst} does not exist in container {}",
                c.name()
            )
        }
        _ => (parent_of(dst), base_name(dst)),
    };
    let (reader, writer) = std::io::pipe()?;
    let src_path = PathBuf::from(src);
    let is_dir = meta.is_dir();
    let packer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut b = tar::Builder::new(writer);
        b.follow_symlinks(false);
        if is_dir {
            b.append_dir_all(if name.is_empty() { "." } else { &name }, &src_path)?;
        } else {
            b.append_path_with_name(&src_path, &name)?;
        }
        b.into_inner()?.flush()
    });
    let applied = host.copy_to_container(c, &into, reader, false);
    let packed = packer
        .join()
        .map_err(|_| anyhow::anyhow!("reading {src} panicked"))?;
    applied?;
    packed.with_context(|| format!("reading {src}"))?;
    Ok(())
}

/// `kiln diff`: `A /path`, `C /path`, `D /path`.
pub fn diff(g: &Global, name: &str) -> Result<()> {
    let host = g.host()?;
    let c = get(&host.containers()?, name)?;
    let mut out = std::io::stdout().lock();
    for change in host.container_changes(&c)? {
        writeln!(out, "{} {}", change.kind, change.path)?;
    }
    Ok(())
}

/// `kiln export`: the container's filesystem as a tar archive.
pub fn export(g: &Global, args: &ExportArgs) -> Result<()> {
    let host = g.host()?;
    let c = get(&host.containers()?, &args.container)?;
    match &args.output {
        Some(path) => {
            // Written beside and renamed: no half-written archive is left on failure.
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let mut tmp = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("creating a file in {}", dir.display()))?;
            host.export_container(&c, std::io::BufWriter::new(tmp.as_file_mut()))?;
            tmp.persist(path)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        None => {
            let out = std::io::stdout();
            if out.is_terminal() {
                bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
            }
            host.export_container(&c, std::io::BufWriter::new(out.lock()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cp_arguments_split_as_docker_s() {
        assert_eq!(split_cp_arg("web:/etc/hosts"), (Some("web"), "/etc/hosts"));
        assert_eq!(split_cp_arg("/abs/a:b"), (None, "/abs/a:b"));
        assert_eq!(split_cp_arg("./a:b"), (None, "./a:b"));
        assert_eq!(split_cp_arg("file"), (None, "file"));
        assert_eq!(split_cp_arg("-"), (None, "-"));
        assert_eq!(base_name("/a/b/"), "b");
        assert_eq!(parent_of("/a"), "/");
        assert_eq!(parent_of("x"), ".");
        assert!(contents_only("/d/.") && !contents_only("/d"));
    }
}
