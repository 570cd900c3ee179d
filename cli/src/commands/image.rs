//! Image commands: images, tag, rmi, history, inspect, load, save, import.

use crate::cli::{ArchiveFormat, ImagesArgs};
use anyhow::{Context, Result, bail};
use kiln_solver::Host;
use kiln_solver::images::{self, familiar_name};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

/// Finds an image by name, ID or digest, with docker's wording when it is missing.
pub fn find(host: &Host, name: &str) -> Result<images::ImageRecord> {
    let store = host.images();
    match store.resolve(name)? {
        Some(rec) => Ok(rec),
        None => bail!("no such image: {name}"),
    }
}

fn human_size(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + units[i]
    }
}

/// `kiln images`.
pub fn images(host: &Host, args: &ImagesArgs) -> Result<()> {
    let filters = image_filters(args)?;
    let mut list = host.images().list()?;
    // An image stays when one of its names passes every filter (for -q and json).
    list.retain(|s| {
        let names = if s.names.is_empty() {
            vec!["<none>:<none>".to_string()]
        } else {
            s.names.iter().map(|n| familiar_name(n)).collect()
        };
        names.iter().any(|n| {
            let (repo, tag) = split_tag(n);
            filters
                .iter()
                .all(|f| f.keeps(&repo, &tag, s.names.is_empty()))
        })
    });
    let mut out = std::io::stdout().lock();
    if args.quiet {
        for s in &list {
            writeln!(
                out,
                "{}",
                if args.no_trunc {
                    s.id.to_string()
                } else {
                    s.id.short()
                }
            )?;
        }
        return Ok(());
    }
    if args.format.as_deref() == Some("json") {
        for s in &list {
            writeln!(out, "{}", serde_json::to_string(s)?)?;
        }
        return Ok(());
    }
    let template = crate::format::Template::parse(
        args.format
            .as_deref()
            .unwrap_or("table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"),
    )?;
    let mut rows = Vec::new();
    for s in &list {
        let id = if args.no_trunc {
            s.id.to_string()
        } else {
            s.id.short()
        };
        let created = s.created.clone().unwrap_or_default();
        let since = if created.is_empty() {
            "N/A".to_owned()
        } else {
            format!(
                "{} ago",
                crate::format::human_duration(crate::format::seconds_since(&created))
            )
        };
        let names = if s.names.is_empty() {
            vec!["<none>:<none>".to_string()]
        } else {
            s.names.iter().map(|n| familiar_name(n)).collect()
        };
        for n in names {
            let (repo, tag) = split_tag(&n);
            if !filters
                .iter()
                .all(|f| f.keeps(&repo, &tag, s.names.is_empty()))
            {
                continue;
            }
            rows.push(serde_json::json!({
                "Repository": repo,
                "Tag": tag,
                "ID": id,
                "Digest": s.manifest_digest.to_string(),
                "CreatedAt": created,
                "CreatedSince": since,
                "Size": human_size(s.size),
            }));
        }
    }
    let text = template.render_all(&rows, |f| match f {
        "ID" => "IMAGE ID".to_owned(),
        "CreatedSince" => "CREATED".to_owned(),
        "CreatedAt" => "CREATED AT".to_owned(),
        other => other.to_uppercase(),
    })?;
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// What `images REPO[:TAG]` and `--filter` keep.
#[derive(Debug, PartialEq)]
enum ImageFilter {
    /// `REPO[:TAG]` or `reference=REPO[:TAG]`, `*` matching within one path component.
    Reference(String),
    Dangling(bool),
}

impl ImageFilter {
    fn keeps(&self, repo: &str, tag: &str, dangling: bool) -> bool {
        match self {
            ImageFilter::Dangling(d) => *d == dangling,
            ImageFilter::Reference(r) => {
                let (want_repo, want_tag) = match r.rsplit_once(':') {
                    Some((a, t)) if !t.contains('/') => (a, Some(t)),
                    _ => (r.as_str(), None),
                };
                glob(want_repo, repo) && want_tag.is_none_or(|t| glob(t, tag))
            }
        }
    }
}

/// `*` matches any run of characters but `/`, as docker's reference filter (path.Match).
fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, rest)) => {
            let Some(tail) = s.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len())
                .take_while(|&i| !tail[..i].contains('/'))
                .filter(|&i| tail.is_char_boundary(i))
                .any(|i| glob(rest, &tail[i..]))
        }
    }
}

fn image_filters(args: &ImagesArgs) -> Result<Vec<ImageFilter>> {
    let mut out = Vec::new();
    if let Some(r) = &args.reference {
        out.push(ImageFilter::Reference(r.clone()));
    }
    for f in &args.filters {
        out.push(match f.split_once('=') {
            Some(("reference", r)) => ImageFilter::Reference(r.to_owned()),
            Some(("dangling", "true")) => ImageFilter::Dangling(true),
            Some(("dangling", "false")) => ImageFilter::Dangling(false),
            Some(("dangling", v)) => {
                bail!("invalid filter 'dangling={v}' (true or false)")
            }
            _ => bail!("invalid filter {f:?} (reference=PATTERN, dangling=true|false)"),
        });
    }
    Ok(out)
}

fn split_tag(name: &str) -> (String, String) {
    let (before_digest, _) = name.split_once('@').unwrap_or((name, ""));
    match before_digest.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r.to_string(), t.to_string()),
        _ => (before_digest.to_string(), "<none>".to_string()),
    }
}

/// `kiln tag`.
pub fn tag(host: &Host, source: &str, target: &str) -> Result<()> {
    let rec = find(host, source)?;
    let name = images::normalize_name(target)?;
    host.images().tag(&name, &rec.manifest_digest)?;
    Ok(())
}

/// `kiln rmi`.
pub fn rmi(host: &Host, names: &[String], force: bool) -> Result<()> {
    let mut failed = false;
    for img in names {
        match host.images().remove(img, force) {
            Ok(events) => {
                for e in events {
                    match e {
                        images::RemoveEvent::Untagged(n) => {
                            println!("Untagged: {}", familiar_name(&n))
                        }
                        images::RemoveEvent::Deleted(d) => println!("Deleted: {d}"),
                    }
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    if failed {
        return Err(crate::Reported(1).into());
    }
    Ok(())
}

/// `kiln history`.
pub fn history(host: &Host, image: &str, no_trunc: bool) -> Result<()> {
    let rec = find(host, image)?;
    let entries = images::history(&rec)?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<14} {:<22} {:<46} {:<10} COMMENT",
        "IMAGE", "CREATED", "CREATED BY", "SIZE"
    )?;
    for e in entries {
        let id =
            e.id.map(|d| if no_trunc { d.to_string() } else { d.short() })
                .unwrap_or_else(|| "<missing>".to_string());
        let mut by = e.created_by.clone();
        if !no_trunc && by.chars().count() > 45 {
            by = by.chars().take(44).collect::<String>() + "…";
        }
        writeln!(
            out,
            "{id:<14} {:<22} {by:<46} {:<10} {}",
            e.created.unwrap_or_default(),
            human_size(e.size),
            e.comment
        )?;
    }
    Ok(())
}

/// `kiln inspect` for images (containers are tried first by the caller).
pub fn inspect_image(host: &Host, name: &str) -> Result<serde_json::Value> {
    let rec = find(host, name)?;
    Ok(host.images().inspect(&rec)?)
}

/// `kiln load`.
pub fn load(host: &Host, input: Option<&Path>, quiet: bool) -> Result<()> {
    let reader: Box<dyn std::io::Read + Send> = match input {
        Some(p) if p != Path::new("-") => Box::new(fs_err::File::open(p)?),
        _ => {
            if std::io::stdin().is_terminal() {
                bail!("requested load from stdin, but stdin is a terminal: use -i FILE or a pipe");
            }
            Box::new(std::io::stdin())
        }
    };
    let loaded = host.images().load(reader).context("loading the archive")?;
    if !quiet {
        for l in loaded {
            if l.names.is_empty() {
                println!("Loaded image ID: {}", l.record.config_digest);
            }
            for n in l.names {
                println!("Loaded image: {}", familiar_name(&n));
            }
        }
    }
    Ok(())
}

/// `kiln save`.
pub fn save(
    host: &Host,
    names: &[String],
    output: Option<&PathBuf>,
    format: ArchiveFormat,
) -> Result<()> {
    let mut list = Vec::new();
    for i in names {
        let rec = find(host, i)?;
        // Saved by ID, an image goes out unnamed.
        let name = images::normalize_name(i).unwrap_or_default();
        list.push((name, rec));
    }
    let fmt = match format {
        ArchiveFormat::Docker => images::ArchiveFormat::Docker,
        ArchiveFormat::Oci => images::ArchiveFormat::Oci,
    };
    match output {
        Some(p) => host.images().save_to(&list, fmt, p)?,
        None => {
            if std::io::stdout().is_terminal() {
                bail!(
                    "cowardly refusing to write an archive to a terminal: use -o FILE or redirect"
                );
            }
            host.images().save(&list, fmt, std::io::stdout().lock())?;
        }
    }
    Ok(())
}

/// `kiln import`.
pub fn import(host: &Host, file: &Path, reference: &str) -> Result<()> {
    let name = match reference {
        "" => String::new(),
        r => images::normalize_name(r)?,
    };
    let reader: Box<dyn std::io::Read + Send> = if file == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        Box::new(fs_err::File::open(file)?)
    };
    // SOURCE_DATE_EPOCH dates the image, so the same tar gives the same image ID anywhere.
    let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => Some(v.trim().parse::<i64>().map_err(|_| {
            anyhow::anyhow!("SOURCE_DATE_EPOCH={v:?}: expected seconds since 1970")
        })?),
        _ => None,
    };
    let rec = host.images().import_at(reader, &name, epoch)?;
    println!("{}", rec.config_digest);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_filters_match_as_docker_s() {
        let f = ImageFilter::Reference("busybox".into());
        assert!(f.keeps("busybox", "latest", false));
        assert!(!f.keeps("busybox2", "latest", false));
        let f = ImageFilter::Reference("kiln/*:v*".into());
        assert!(f.keeps("kiln/app", "v1", false));
        assert!(!f.keeps("kiln/app/x", "v1", false));
        assert!(!f.keeps("kiln/app", "latest", false));
        assert!(ImageFilter::Dangling(true).keeps("<none>", "<none>", true));
        assert!(!ImageFilter::Dangling(true).keeps("a", "b", false));
    }
}
