//! Layers checked at the door: `load` and `import` refuse a layer the applier would refuse
//! later (a path with `..`, a whiteout of `.` or `..`, a hardlink out of the layer), and a
//! stream that is no tar at all, before anything of it becomes an image.

use std::io::{self, Read, Write};
use std::path::{Component, Path};

use kiln_oci::Digest;

use crate::apply::decompress;
use crate::digest::HashReader;
use crate::error::{Error, Result};

/// What [`vet_layer`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vetted {
    /// sha256 of the uncompressed tar (the diffID).
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub tar_size: u64,
    /// Entries in it.
    pub entries: u64,
}

/// Reads a layer (plain, gzip or zstd), checking every entry; the uncompressed bytes are
/// copied to `copy` as they pass (for `import`, which stores them compressed).
pub fn vet_layer(reader: impl Read, copy: impl Write) -> Result<Vetted> {
    let mut tee = Tee {
        inner: HashReader::new(decompress(reader)?),
        copy,
    };
    let mut entries = 0u64;
    {
        let mut ar = tar::Archive::new(&mut tee);
        for entry in ar.entries().map_err(not_tar)? {
            let mut entry = entry.map_err(not_tar)?;
            vet_entry(&mut entry)?;
            io::copy(&mut entry, &mut io::sink()).map_err(truncated)?;
            entries += 1;
        }
    }
    // The end-of-archive blocks and whatever padding follows.
    io::copy(&mut tee, &mut io::sink())?;
    tee.copy.flush()?;
    let (diff_id, tar_size) = tee.inner.finish();
    if tar_size == 0 {
        return Err(Error::invalid("tar archive", "empty stream"));
    }
    Ok(Vetted {
        diff_id,
        tar_size,
        entries,
    })
}

fn not_tar(e: io::Error) -> Error {
    Error::invalid(
        "tar archive",
        format!(
            "not a tar archive, or a truncated or damaged one: {}",
            printable(&e)
        ),
    )
}

/// The tar reader's message without the raw header bytes it quotes (random input would print
/// as garbage on the terminal).
fn printable(e: &io::Error) -> String {
    let text = e.to_string();
    let cut = text
        .find(|c: char| c.is_control() || c == char::REPLACEMENT_CHARACTER)
        .map_or(text.as_str(), |i| &text[..i]);
    let cut = cut.trim_end_matches([':', ' ']);
    let mut out: String = cut.chars().take(120).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

fn truncated(e: io::Error) -> Error {
    Error::invalid("tar archive", format!("truncated: {e}"))
}

fn vet_entry<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<()> {
    let path = entry.path().map_err(not_tar)?.into_owned();
    vet_path(&path)?;
    if let Some(exts) = entry.pax_extensions().map_err(not_tar)? {
        for ext in exts {
            let ext = ext.map_err(not_tar)?;
            if ext.key_bytes() == b"GNU.sparse.name" {
                use std::os::unix::ffi::OsStrExt;
                vet_path(Path::new(std::ffi::OsStr::from_bytes(ext.value_bytes())))?;
            }
        }
    }
    let name = path
        .file_name()
        .map(|n| n.as_encoded_bytes())
        .unwrap_or(b"");
    if let Some(target) = name.strip_prefix(b".wh.")
        && (target.is_empty() || target == b"." || target == b"..")
    {
        return Err(Error::UnsafeEntry {
            path,
            reason: "whiteout of '.' or '..'",
        });
    }
    if entry.header().entry_type() == tar::EntryType::Link {
        let Some(target) = entry.link_name().map_err(not_tar)? else {
            return Err(Error::invalid(
                "layer",
                format!("hardlink {} without target", path.display()),
            ));
        };
        if target.components().any(|c| c == Component::ParentDir) {
            return Err(Error::BadHardlink {
                path,
                target: target.into_owned(),
            });
        }
        if target
            .components()
            .all(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(Error::UnsafeEntry {
                path,
                reason: "hardlink to the root",
            });
        }
    }
    Ok(())
}

fn vet_path(path: &Path) -> Result<()> {
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(Error::UnsafeEntry {
            path: path.to_owned(),
            reason: "path contains '..'",
        });
    }
    Ok(())
}

struct Tee<R, W> {
    inner: HashReader<R>,
    copy: W,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(0);
            h.set_mode(0o644);
            // Raw names: the builder's own path checks would refuse what we test.
            h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
            h.set_cksum();
            b.append(&h, io::empty()).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn refuses_what_the_applier_would() {
        use tar::EntryType::{Link, Regular};
        for (entries, want) in [
            (vec![("a/../../x", Regular, "")], "'..'"),
            (vec![("d/.wh..", Regular, "")], "whiteout"),
            (vec![("d/.wh.", Regular, "")], "whiteout"),
            (
                vec![("f", Regular, ""), ("l", Link, "../../etc/passwd")],
                "hardlink",
            ),
        ] {
            let err = vet_layer(&tar_of(&entries)[..], io::sink()).unwrap_err();
            assert!(err.to_string().contains(want), "{entries:?}: {err}");
        }
        let ok = tar_of(&[("d/.wh.gone", Regular, ""), ("d/.wh..wh..opq", Regular, "")]);
        assert_eq!(vet_layer(&ok[..], io::sink()).unwrap().entries, 2);
    }

    #[test]
    fn refuses_random_bytes_and_truncated_tars() {
        let mut junk = vec![0u8; 4096];
        for (i, b) in junk.iter_mut().enumerate() {
            *b = (i * 7919 % 251) as u8 + 1;
        }
        let err = vet_layer(&junk[..], io::sink()).unwrap_err();
        assert!(err.to_string().contains("not a tar archive"), "{err}");
        let mut b = tar::Builder::new(Vec::new());
        let data = vec![7u8; 10_000];
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, "big", &data[..]).unwrap();
        let full = b.into_inner().unwrap();
        let err = vet_layer(&full[..3000], io::sink()).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        assert!(vet_layer(&[][..], io::sink()).is_err());
        let mut copy = Vec::new();
        let v = vet_layer(&full[..], &mut copy).unwrap();
        assert_eq!(copy, full);
        assert_eq!(v.tar_size, full.len() as u64);
    }
}
