//! ADD's archives: a local tar (plain, gzip, bzip2, xz or zstd) is recognised by its content,
//! never its name, and extracted into the destination through the same descriptor-relative
//! writes as any copied file ([`super::copy`]), so `..` and absolute entry names, and symlinks
//! in the rootfs, stay inside it.

use super::copy::{CopyIds, Counters, DestTree, Error, Owner, Result, join, open_source, rel};
use super::copy::{split_parent, times};
use crate::context::walk::{Entry, Meta, Walker};
use kiln_oci::Compression;
use rustix::fs::{AtFlags, Gid, Uid};
use std::io::{BufRead, BufReader, Read};

fn decompressor(file: std::fs::File, kind: Compression) -> std::io::Result<Box<dyn Read>> {
    let file = BufReader::new(file);
    Ok(match kind {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(file)),
        Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(file)),
        Compression::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(file)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(file)?),
    })
}

/// Detects a tar archive by magic bytes (never by name): the compression from the first bytes,
/// then a valid tar header in the (decompressed) first block.
pub(super) fn sniff_archive(walker: &Walker<'_>, entry: &Entry) -> Result<Option<Compression>> {
    let mut file = BufReader::new(open_source(walker, entry)?);
    let head = file.fill_buf().map_err(|e| Error::Io {
        op: "read",
        path: walker.host_path(&entry.real),
        source: e,
    })?;
    let kind = Compression::sniff(head);
    let Ok(mut reader) = decompressor(open_source(walker, entry)?, kind) else {
        return Ok(None);
    };
    let mut block = [0u8; 512];
    if reader.read_exact(&mut block).is_err() {
        return Ok(None);
    }
    Ok(is_tar_header(&block).then_some(kind))
}

/// A tar header: `ustar` magic, or (old v7 format) a valid header checksum.
fn is_tar_header(block: &[u8; 512]) -> bool {
    if &block[257..262] == b"ustar" {
        return true;
    }
    let stored = std::str::from_utf8(&block[148..156])
        .ok()
        .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' '))
        .and_then(|s| u32::from_str_radix(s, 8).ok());
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    block[0] != 0 && stored == Some(sum)
}

/// Extracts an archive into `dest` (a directory path in the rootfs). Entry names are made
/// relative and clamped (`..` cannot climb above `dest`); parents are resolved inside the
/// rootfs like any other write. Whiteout files are ordinary files here.
pub(super) fn extract(
    out: &mut DestTree,
    walker: &Walker<'_>,
    entry: &Entry,
    kind: Compression,
    dest: &str,
    chown: Option<CopyIds>,
) -> Result<()> {
    let archive_path = walker.host_path(&entry.real);
    let io = |e: std::io::Error| Error::Io {
        op: "extract",
        path: archive_path.clone(),
        source: e,
    };
    let reader = decompressor(open_source(walker, entry)?, kind).map_err(io)?;
    let mut archive = tar::Archive::new(reader);
    let mut dirs: Vec<(String, i64)> = Vec::new();
    for item in archive.entries().map_err(io)? {
        let mut item = item.map_err(io)?;
        let name_bytes = item.path_bytes().into_owned();
        let name = rel(&String::from_utf8_lossy(&name_bytes));
        if name.is_empty() {
            continue;
        }
        let path = join(dest, &name);
        let header = item.header();
        let mode = header.mode().map_err(io)? & 0o7777;
        let mtime_ns = i64::try_from(header.mtime().map_err(io)?)
            .unwrap_or(0)
            .saturating_mul(1_000_000_000);
        // Archive owners are kept unless `--chown` was given.
        let uid = chown
            .map(|c| c.uid)
            .or_else(|| header.uid().ok().and_then(|u| u32::try_from(u).ok()))
            .unwrap_or(0);
        let gid = chown
            .map(|c| c.gid)
            .or_else(|| header.gid().ok().and_then(|g| u32::try_from(g).ok()))
            .unwrap_or(0);
        let (uid, gid) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        let entry_type = header.entry_type();
        let (parent, leaf) = split_parent(&path);
        match entry_type {
            tar::EntryType::Directory => {
                let meta = Meta {
                    mode: 0o040000 | mode,
                    uid: uid.map(Uid::as_raw).unwrap_or(0),
                    gid: gid.map(Gid::as_raw).unwrap_or(0),
                    size: 0,
                    mtime_ns,
                    ctime_ns: 0,
                    ino: 0,
                    rdev: 0,
                    nlink: 1,
                    dev: 0,
                };
                let saved = out.ids;
                out.ids = Owner {
                    uid: Some(meta.uid),
                    gid: Some(meta.gid),
                };
                let chmod = out.chmod.take();
                let result = out.dir(&path, Some(&meta));
                out.ids = saved;
                out.chmod = chmod;
                result?;
                dirs.push((path, mtime_ns));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let parent_fd = out.mkdir_all(parent)?;
                out.remove_non_dir(&parent_fd, leaf, &path)?;
                out.write_file(&parent_fd, leaf, &path, &mut item, uid, gid, mode, mtime_ns)?;
            }
            tar::EntryType::Symlink => {
                let target = item
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let parent_fd = out.mkdir_all(parent)?;
                out.remove_non_dir(&parent_fd, leaf, &path)?;
                out.symlink(&parent_fd, leaf, &path, &target, uid, gid, mtime_ns)?;
            }
            tar::EntryType::Link => {
                let target = item
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let target = join(dest, &rel(&String::from_utf8_lossy(&target)));
                let (tp, tl) = split_parent(&target);
                let target_parent = out.open_dir(tp).map_err(out.err("open directory", tp))?;
                let parent_fd = out.mkdir_all(parent)?;
                out.remove_non_dir(&parent_fd, leaf, &path)?;
                rustix::fs::linkat(&target_parent, tl, &parent_fd, leaf, AtFlags::empty())
                    .map_err(out.err("link", &path))?;
                Counters::add(&out.stats.hardlinks, 1);
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let type_bits = match entry_type {
                    tar::EntryType::Char => 0o020000,
                    tar::EntryType::Block => 0o060000,
                    _ => 0o010000,
                };
                let major = u64::from(header.device_major().ok().flatten().unwrap_or(0));
                let minor = u64::from(header.device_minor().ok().flatten().unwrap_or(0));
                let rdev = rustix::fs::makedev(major as u32, minor as u32);
                let parent_fd = out.mkdir_all(parent)?;
                out.remove_non_dir(&parent_fd, leaf, &path)?;
                out.special(&parent_fd, leaf, &path, type_bits, rdev, uid, gid, mode)?;
            }
            other => {
                tracing::debug!(?other, path = %path, "skipping archive entry of unsupported type");
            }
        }
    }
    for (path, mtime_ns) in dirs.iter().rev() {
        let fd = out
            .open_dir(path)
            .map_err(out.err("open directory", path))?;
        rustix::fs::futimens(&fd, &times(*mtime_ns)).map_err(out.err("set times of", path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_headers_are_recognised_by_content() {
        let mut header = tar::Header::new_ustar();
        header.set_path("file").expect("path");
        header.set_size(0);
        header.set_cksum();
        let mut block = [0u8; 512];
        block.copy_from_slice(header.as_bytes());
        assert!(is_tar_header(&block));
        // Old v7 header: no magic, valid checksum.
        let mut old = tar::Header::new_old();
        old.set_path("file").expect("path");
        old.set_size(0);
        old.set_cksum();
        block.copy_from_slice(old.as_bytes());
        assert!(is_tar_header(&block));
        block[0] ^= 1;
        assert!(!is_tar_header(&block), "checksum no longer matches");
        assert!(!is_tar_header(&[b'x'; 512]));
        assert!(!is_tar_header(&[0; 512]));
    }
}
